//! Pulling an image into the store.
//!
//! From a registry: the manifest (an index is resolved to this host's
//! platform), the config, and for each layer the least that serves it:
//! a zstd:chunked layer pulled lazily needs only its table of contents (one
//! range request, checked against the manifest annotation); any other layer
//! (or every layer with `--full`) is streamed once and indexed
//! ([`super::index`]). Layers the store already has are not fetched again:
//! a layer is found by what was checked of it ([`LayerKey`]), so an image
//! that merely names another image's layer digest does not get that layer.
//! From an OCI layout dir or a docker-archive file every layer is indexed.
//!
//! Every byte is checked before it is recorded; a failure leaves the index
//! as it was (objects already stored are verified content, shared, and
//! reclaimed by `rcfs gc` if nothing uses them).

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde::Deserialize;

use super::auth;
use super::blob::BlobSource;
use super::digest::{Digest, Hasher};
use super::index::{index_layer_with, Compression, Indexed};
use super::reference::Source;
use super::registries::Registries;
use super::registry::{ClientOptions, Registry, RegistryBlob};
use super::store::{ImageRecord, LayerFormat, LayerKey, LayerRecord, Origin, Store};
use super::toc::{DataIn, Toc, TocEntry, TocJson};
use crate::error::layer_error;

mod lazy;
mod local;
mod partial;
pub use lazy::{find_lazy_image, LazyImage, LazyLayer, Servable};
use local::{pull_archive, pull_layout};

/// Annotation keys of zstd:chunked layers, newer spelling first.
const TOC_CHECKSUM: [&str; 2] = [
    "io.github.containers.zstd-chunked.manifest-checksum",
    "io.containers.zstd-chunked.manifest-checksum",
];
const TOC_POSITION: [&str; 2] = [
    "io.github.containers.zstd-chunked.manifest-position",
    "io.containers.zstd-chunked.manifest-position",
];

/// The largest compressed and uncompressed TOC rcfs accepts (50 MiB each,
/// containers/storage's limit before 1.56; it parses to at most about
/// 1 KiB per entry, see `toc::MAX_ENTRIES`).
const MAX_TOC: u64 = 50 << 20;
const MAX_TOC_JSON: u64 = 50 << 20;
/// The largest config (containers/image's limit; manifests: see
/// `registry::MAX_MANIFEST`).
const MAX_DOC: u64 = 4 << 20;

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Fetch only tables of contents where layers allow (zstd:chunked).
    pub lazy: bool,
    /// `--tls-verify=false`: plain HTTP and unchecked TLS.
    pub insecure: bool,
    /// Layers fetched at once.
    pub jobs: usize,
    /// A pull while mounted ([`super::live`]): a streamed layer's files
    /// are served as they arrive, before the layer's digest is checked.
    /// Off by default: nothing unverified reaches a program.
    pub unverified_streaming: bool,
}

/// What happened to one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerOutcome {
    /// The store had it.
    Reused,
    /// Its table of contents was fetched (this many bytes); data comes on
    /// first read.
    Lazy { toc_bytes: u64 },
    /// Streamed and indexed (this many compressed bytes).
    Indexed { bytes: u64 },
    /// A zstd:chunked layer fetched by its chunks (this many compressed
    /// bytes, with its TOC and tar-split; what the store held was not
    /// fetched), its tar rebuilt, checked against its diff_id and indexed.
    Chunks { bytes: u64 },
}

/// Progress reports while pulling (a terminal shows bars).
pub trait Progress: Sync {
    fn layer_start(&self, digest: &Digest, size: u64, what: &str);
    fn layer_bytes(&self, digest: &Digest, done: u64);
    /// Layer `layer` is in the store (recorded under that key).
    fn layer_done(&self, layer: &LayerKey, outcome: &LayerOutcome);
    fn note(&self, msg: &str);
    /// The image's manifest and config are in hand: it is `name`, from
    /// `origin`, with `layers` (bottom first) and `config` (the config
    /// blob), before any layer is pulled.
    fn image(&self, name: &str, origin: Option<&Origin>, layers: &[Digest], config: &[u8]) {
        let _ = (name, origin, layers, config);
    }
    /// An entry of a layer being indexed, its data already stored.
    fn entry(&self, layer: &Digest, entry: &TocEntry) {
        let _ = (layer, entry);
    }
}

/// Progress that shows nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn layer_start(&self, _: &Digest, _: u64, _: &str) {}
    fn layer_bytes(&self, _: &Digest, _: u64) {}
    fn layer_done(&self, _: &LayerKey, _: &LayerOutcome) {}
    fn note(&self, _: &str) {}
}

/// The result of a pull.
#[derive(Debug, Clone)]
pub struct PullReport {
    pub image: ImageRecord,
    pub layers: Vec<(Digest, u64, LayerOutcome)>,
}

impl PullReport {
    /// Bytes fetched from the source for layers.
    pub fn bytes_fetched(&self) -> u64 {
        self.layers
            .iter()
            .map(|(_, _, o)| match o {
                LayerOutcome::Reused => 0,
                LayerOutcome::Lazy { toc_bytes } => *toc_bytes,
                LayerOutcome::Indexed { bytes } | LayerOutcome::Chunks { bytes } => *bytes,
            })
            .sum()
    }
}

fn fail(msg: String) -> io::Error {
    layer_error(libc::EIO, msg)
}

/// The host's platform as OCI names it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        a => a,
    }
}

/// Where a manifest's layers come from.
trait Blobs: Sync {
    /// The whole blob `d`.
    fn open(&self, d: &Digest) -> io::Result<Box<dyn Read + Send>>;
    /// A range source for lazy layers (registries only).
    fn ranged(&self, d: &Digest) -> Option<Arc<dyn BlobSource>>;
}

struct RegistryBlobs(Arc<Registry>);

impl Blobs for RegistryBlobs {
    fn open(&self, d: &Digest) -> io::Result<Box<dyn Read + Send>> {
        self.0.blob(d, None)
    }
    fn ranged(&self, d: &Digest) -> Option<Arc<dyn BlobSource>> {
        Some(Arc::new(RegistryBlob {
            registry: self.0.clone(),
            digest: *d,
        }))
    }
}

/// Reads at most `max` bytes of `r`; more is an error.
fn read_limited(mut r: impl Read, max: u64, what: &str) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    r.by_ref().take(max + 1).read_to_end(&mut v)?;
    if v.len() as u64 > max {
        return Err(fail(format!(
            "{what} is larger than {max} bytes; refusing it"
        )));
    }
    Ok(v)
}

/// A document fetched whole and checked against its digest.
fn fetch_checked(blobs: &dyn Blobs, d: &Digest, what: &str) -> io::Result<Vec<u8>> {
    let v = read_limited(blobs.open(d)?, MAX_DOC, what)?;
    if Digest::of(&v) != *d {
        return Err(fail(format!(
            "{what} {d} does not match its digest (corrupt or tampered)"
        )));
    }
    Ok(v)
}

#[derive(Deserialize)]
struct MediaTypeOnly {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    if media_type.contains("index") || media_type.contains("manifest.list") {
        return true;
    }
    serde_json::from_slice::<MediaTypeOnly>(bytes)
        .map(|m| {
            m.media_type.contains("index") || m.media_type.contains("list") || m.manifests.is_some()
        })
        .unwrap_or(false)
}

/// The manifest for this host in `index`.
fn pick_platform(index: &ImageIndex, name: &str) -> io::Result<Descriptor> {
    let arch = host_arch();
    let mut seen = Vec::new();
    for m in index.manifests() {
        match m.platform() {
            Some(p) => {
                let (os, a) = (p.os().to_string(), p.architecture().to_string());
                if os == "linux" && a == arch {
                    return Ok(m.clone());
                }
                seen.push(format!("{os}/{a}"));
            }
            None if index.manifests().len() == 1 => return Ok(m.clone()),
            None => {}
        }
    }
    Err(fail(format!(
        "{name} has no image for linux/{arch} (it has: {})",
        if seen.is_empty() {
            "none with a platform".to_owned()
        } else {
            seen.join(", ")
        }
    )))
}

fn annotation<'a>(d: &'a Descriptor, keys: &[&str]) -> Option<&'a String> {
    let a = d.annotations().as_ref()?;
    keys.iter().find_map(|k| a.get(*k))
}

/// A zstd:chunked layer's TOC, fetched and checked.
struct FetchedToc {
    /// The layer's record, served lazily.
    rec: LayerRecord,
    /// Compressed bytes fetched (0: the store had it).
    bytes: u64,
    toc: Toc,
    /// The digest of the layer's tar-split, as the TOC names it.
    tar_split: Option<String>,
}

/// The TOC of a zstd:chunked layer: fetched by range, checked, parsed.
fn fetch_toc(
    store: &Store,
    src: &dyn BlobSource,
    desc: &Descriptor,
    checksum: &str,
    position: &str,
) -> io::Result<FetchedToc> {
    let d = desc.digest().to_string();
    let bad = |m: &str| fail(format!("layer {d}: {m}"));
    let want = Digest::parse(checksum).map_err(|e| bad(&e.to_string()))?;
    let p: Vec<u64> = position
        .split(':')
        .map(|n| {
            n.parse()
                .map_err(|_| bad(&format!("bad TOC position '{position}'")))
        })
        .collect::<io::Result<_>>()?;
    let [offset, len, ulen, typ] = p[..] else {
        return Err(bad(&format!("bad TOC position '{position}'")));
    };
    if typ != 1
        || len == 0
        || len > MAX_TOC
        || ulen > MAX_TOC_JSON
        || offset < 8
        || offset.checked_add(len).is_none_or(|end| end > desc.size())
    {
        return Err(bad(&format!(
            "TOC position '{position}' is outside what rcfs accepts (blob of {} bytes)",
            desc.size()
        )));
    }
    let mut fetched = 0;
    let comp = match store.blobs.read(&want)? {
        Some(c) => c,
        None => {
            fetched = len;
            let c = src.read_range(offset, offset + len)?;
            if Digest::of(&c) != want {
                return Err(bad(
                    "the table of contents does not match the manifest's checksum",
                ));
            }
            store.blobs.put(&want, &c)?;
            c
        }
    };
    let json = decompress_toc(&comp, ulen).map_err(|e| bad(&e.to_string()))?;
    let parsed: TocJson = serde_json::from_slice(&json)
        .map_err(|e| bad(&format!("the table of contents is not valid JSON: {e}")))?;
    let toc = Toc::parse(
        &parsed,
        DataIn::Blob {
            data_end: offset - 8,
        },
    )
    .map_err(|e| bad(&e.to_string()))?;
    let (files, bytes) = toc.data_size();
    let rec = LayerRecord {
        digest: d,
        media_type: desc.media_type().to_string(),
        size: desc.size(),
        format: LayerFormat::ZstdChunked,
        toc: want.to_string(),
        toc_len: ulen,
        data_end: offset - 8,
        files: files as u64,
        bytes,
        start_bytes: annotation(desc, &[super::chunked::START_KEY])
            .and_then(|v| v.parse().ok())
            .filter(|&n| n <= offset - 8)
            .unwrap_or(0),
        start_order: annotation(desc, &[super::chunked::START_ORDER_KEY])
            .map(|v| super::chunked::parse_ranges(v, offset - 8))
            .unwrap_or_default(),
        diff_id: None,
        tar_size: None,
    };
    store_tree(store, &rec, &toc);
    Ok(FetchedToc {
        rec,
        bytes: fetched,
        toc,
        tar_split: parsed.tar_split_digest,
    })
}

/// Decompresses a TOC frame (some have no content size in their header)
/// to at most `max` bytes.
pub fn decompress_toc(comp: &[u8], max: u64) -> io::Result<Vec<u8>> {
    let dec = zstd::stream::read::Decoder::new(comp)?;
    let v = read_limited(dec, max.max(1), "the table of contents")?;
    Ok(v)
}

/// Streams layer `desc` whole and indexes it.
fn index_whole(
    store: &Store,
    blobs: &dyn Blobs,
    desc: &Descriptor,
    diff_id: Option<&String>,
    chunked: bool,
    progress: &dyn Progress,
) -> io::Result<(LayerRecord, u64)> {
    let d = Digest::parse(desc.digest().as_ref())?;
    let mt = desc.media_type().to_string();
    let comp = Compression::of_media_type(&mt).ok_or_else(|| {
        fail(format!("layer {d} has media type '{mt}', which is not a layer rcfs can read (tar, tar+gzip, tar+zstd)"))
    })?;
    let reader = blobs.open(&d)?;
    // The download goes on (up to 32 MiB ahead) while what came is
    // decompressed, hashed and written.
    let ix = std::thread::scope(|s| {
        index_layer_with(
            super::blob::read_ahead(s, reader, 1 << 20, 32),
            comp,
            &store.files,
            &mut |n| progress.layer_bytes(&d, n),
            &mut |e| progress.entry(&d, e),
        )
    })
    .map_err(|e| fail(format!("layer {d}: {e}")))?;
    if ix.blob_digest != d {
        return Err(fail(format!(
            "layer {d} does not match its digest (got {}): corrupt or truncated download; nothing was recorded",
            ix.blob_digest
        )));
    }
    if ix.blob_size != desc.size() {
        log::warn!(
            "layer {d}: {} bytes, the manifest says {}",
            ix.blob_size,
            desc.size()
        );
    }
    if let Some(want) = diff_id {
        if *want != ix.diff_id.to_string() {
            match zero_padding_explains(&ix.tar_hash, want) {
                Some(n) if chunked => log::warn!(
                    "layer {d}: its tar's digest {} is not the config's diff_id {want}, but is once \
                     the {n} zero bytes that end a tar are added: zstd:chunked blobs from podman \
                     before 5.0 leave them out; the blob's own digest was checked",
                    ix.diff_id
                ),
                _ => {
                    return Err(fail(format!(
                        "layer {d}: the uncompressed tar has digest {}, the image config says {want} \
                         (its rootfs.diff_ids): the image is corrupt or tampered; nothing was recorded",
                        ix.diff_id
                    )))
                }
            }
        }
    }
    let mut rec = record_indexed(store, &d, mt, &ix)?;
    rec.diff_id = diff_id.filter(|w| **w == ix.diff_id.to_string()).cloned();
    Ok((rec, ix.blob_size))
}

/// Builds and stores the tree of layer `rec` from its TOC as it arrives
/// (what a mount reads; a mount builds it itself if this fails).
fn store_tree(store: &Store, rec: &LayerRecord, toc: &Toc) {
    if let Err(e) = super::open::ensure_tree(store, rec, super::open::data_of(rec), Some(toc)) {
        log::warn!("layer {}: {e}", rec.digest);
    }
}

/// Stores what indexing layer `d` (media type `mt`) gave, and its record.
fn record_indexed(store: &Store, d: &Digest, mt: String, ix: &Indexed) -> io::Result<LayerRecord> {
    // The files were written without a flush each: one for all of them
    // before the layer is recorded (an indexed layer has no blob to fetch
    // them from again).
    store.files.sync()?;
    let json = serde_json::to_vec(&ix.toc).map_err(io::Error::other)?;
    // Check what we wrote parses as we will read it.
    let toc = Toc::parse(&ix.toc, DataIn::Store).map_err(|e| fail(format!("layer {d}: {e}")))?;
    let comp = zstd::bulk::compress(&json, 3)?;
    let toc_d = Digest::of(&comp);
    store.blobs.put(&toc_d, &comp)?;
    let rec = LayerRecord {
        digest: d.to_string(),
        media_type: mt,
        size: ix.blob_size,
        format: LayerFormat::Indexed,
        toc: toc_d.to_string(),
        toc_len: json.len() as u64,
        data_end: 0,
        files: ix.files,
        bytes: ix.bytes,
        start_bytes: 0,
        start_order: Vec::new(),
        diff_id: None,
        tar_size: None,
    };
    store_tree(store, &rec, &toc);
    Ok(rec)
}

/// How many zero bytes (whole 512-byte blocks, up to a 10 KiB tar
/// record) added to the uncompressed tar hashed so far as `tar` give the
/// diff_id `want`: what zstd:chunked blobs from podman before 5.0 leave
/// out (FORMATS.md, "Pitfall").
fn zero_padding_explains(tar: &Hasher, want: &str) -> Option<usize> {
    let mut h = tar.clone();
    (1..=20).find_map(|blocks| {
        h.update(&[0u8; 512]);
        (h.clone().finish().to_string() == want).then_some(blocks * 512)
    })
}

/// Pulls the layers of `manifest`, `jobs` at a time.
fn pull_layers(
    store: &Store,
    blobs: &dyn Blobs,
    manifest: &ImageManifest,
    config: &ImageConfiguration,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> io::Result<Vec<(LayerKey, u64, LayerOutcome)>> {
    let diff_ids = config.rootfs().diff_ids();
    let layers = manifest.layers();
    let results: Vec<io::Result<(LayerKey, u64, LayerOutcome)>> = {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let out = parking_lot::Mutex::new(HashMap::new());
        std::thread::scope(|s| {
            for _ in 0..opts.jobs.clamp(1, 8).min(layers.len().max(1)) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(desc) = layers.get(i) else { break };
                    let r = pull_one(store, blobs, desc, diff_ids.get(i), opts, progress);
                    out.lock().insert(i, r);
                });
            }
        });
        let mut out = out.into_inner();
        (0..layers.len())
            .map(|i| out.remove(&i).expect("every layer ran"))
            .collect()
    };
    results.into_iter().collect()
}

fn pull_one(
    store: &Store,
    blobs: &dyn Blobs,
    desc: &Descriptor,
    diff_id: Option<&String>,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> io::Result<(LayerKey, u64, LayerOutcome)> {
    let d = Digest::parse(desc.digest().as_ref())?;
    let chunked = annotation(desc, &TOC_CHECKSUM).zip(annotation(desc, &TOC_POSITION));
    let diff = diff_id
        .map(|s| Digest::parse(s).map_err(|e| fail(format!("layer {d}: its diff_id: {e}"))))
        .transpose()?;
    let ranged = match (chunked, blobs.ranged(&d)) {
        (Some((sum, pos)), Some(src)) => {
            let toc = Digest::parse(sum)
                .map_err(|e| fail(format!("layer {d}: its TOC checksum: {e}")))?;
            Some((toc, sum, pos, src))
        }
        _ => None,
    };
    // A full pull of a zstd:chunked layer with a tar-split goes by its
    // chunks (what the store holds is not fetched again), as podman 5's.
    let split = partial::tar_split_position(desc).filter(|_| !opts.lazy && diff.is_some());
    // What was hashed whole serves every image that names its digest; a
    // tar rebuilt and hashed, every image whose config names its diff_id;
    // a lazy layer only images that name the same TOC and blob.
    let reusable = [
        Some(LayerKey::Blob(d)),
        diff.map(|diff| LayerKey::Diff { diff, blob: d }),
        ranged
            .as_ref()
            .filter(|_| opts.lazy)
            .map(|r| LayerKey::Toc { toc: r.0, blob: d }),
    ];
    for key in reusable.into_iter().flatten() {
        if store.layer(&key)?.is_some() {
            let o = LayerOutcome::Reused;
            progress.layer_done(&key, &o);
            return Ok((key, desc.size(), o));
        }
    }
    let by_toc = match ranged {
        Some((toc, sum, pos, src)) if opts.lazy || split.is_some() => {
            progress.layer_start(&d, desc.size(), "table of contents");
            Some((toc, fetch_toc(store, &*src, desc, sum, pos)?, src))
        }
        _ => None,
    };
    let (key, rec, outcome) = match (by_toc, split, diff) {
        (Some((toc, f, _)), _, _) if opts.lazy => (
            LayerKey::Toc { toc, blob: d },
            f.rec,
            LayerOutcome::Lazy { toc_bytes: f.bytes },
        ),
        (Some((_, f, src)), Some(position), Some(diff)) => {
            match partial::pull_by_chunks(
                store,
                src,
                desc,
                f.toc,
                f.tar_split.as_deref(),
                position,
                &diff,
                progress,
            ) {
                Ok((rec, n)) => (
                    LayerKey::Diff { diff, blob: d },
                    rec,
                    LayerOutcome::Chunks { bytes: f.bytes + n },
                ),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    log::warn!("{e}; fetching the layer whole instead");
                    whole(store, blobs, desc, diff_id, progress)?
                }
                Err(e) => return Err(e),
            }
        }
        _ => whole(store, blobs, desc, diff_id, progress)?,
    };
    store.put_layer(&key, &rec)?;
    // A tar hashed to the config's diff_id also serves images that name
    // it by another blob (the same layer compressed otherwise).
    if let (LayerKey::Blob(_), Some(diff)) = (key, rec.diff_id.as_deref().map(Digest::parse)) {
        store.put_layer(
            &LayerKey::Diff {
                diff: diff?,
                blob: d,
            },
            &rec,
        )?;
    }
    progress.layer_done(&key, &outcome);
    Ok((key, desc.size(), outcome))
}

/// Layer `desc` streamed whole and indexed, recorded under its blob digest.
fn whole(
    store: &Store,
    blobs: &dyn Blobs,
    desc: &Descriptor,
    diff_id: Option<&String>,
    progress: &dyn Progress,
) -> io::Result<(LayerKey, LayerRecord, LayerOutcome)> {
    let d = Digest::parse(desc.digest().as_ref())?;
    let chunked = annotation(desc, &TOC_CHECKSUM).is_some();
    progress.layer_start(&d, desc.size(), "layer");
    let (rec, n) = index_whole(store, blobs, desc, diff_id, chunked, progress)?;
    Ok((LayerKey::Blob(d), rec, LayerOutcome::Indexed { bytes: n }))
}

/// Now, as the store records times.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Pulls a manifest (already fetched and checked) with its config and
/// layers, and records the image as `name`.
#[allow(clippy::too_many_arguments)]
fn finish(
    store: &Store,
    blobs: &dyn Blobs,
    name: String,
    manifest_bytes: Vec<u8>,
    origin: Option<Origin>,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> io::Result<PullReport> {
    let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| fail(format!("{name}: not an image manifest rcfs can read: {e}")))?;
    let cfg_d = Digest::parse(manifest.config().digest().as_ref())?;
    let cfg_bytes = match store.blobs.read(&cfg_d)? {
        Some(b) => b,
        None => fetch_checked(blobs, &cfg_d, "image config")?,
    };
    let config: ImageConfiguration = serde_json::from_slice(&cfg_bytes)
        .map_err(|e| fail(format!("{name}: its config is not an image config: {e}")))?;
    if config.rootfs().diff_ids().len() != manifest.layers().len() {
        return Err(fail(format!(
            "{name}: the manifest has {} layers, its config {}",
            manifest.layers().len(),
            config.rootfs().diff_ids().len()
        )));
    }
    let digests = manifest
        .layers()
        .iter()
        .map(|l| Digest::parse(l.digest().as_ref()).map_err(io::Error::from))
        .collect::<io::Result<Vec<_>>>()?;
    progress.image(&name, origin.as_ref(), &digests, &cfg_bytes);
    let layers = pull_layers(store, blobs, &manifest, &config, opts, progress)?;
    store.blobs.put(&cfg_d, &cfg_bytes)?;
    let m_d = Digest::of(&manifest_bytes);
    store.blobs.put(&m_d, &manifest_bytes)?;
    let keys: Vec<LayerKey> = layers.iter().map(|(k, _, _)| *k).collect();
    let (layer_digests, layer_tocs, layer_diffs) = ImageRecord::layers_of(&keys);
    let image = ImageRecord {
        name,
        manifest: m_d.to_string(),
        config: cfg_d.to_string(),
        layers: layer_digests,
        layer_tocs,
        layer_diffs,
        origin,
        pulled: now_rfc3339(),
        size: manifest.layers().iter().map(|l| l.size()).sum(),
    };
    store.add_image(image.clone())?;
    let layers = layers
        .into_iter()
        .map(|(k, n, o)| (*k.blob(), n, o))
        .collect();
    Ok(PullReport { image, layers })
}

/// Pulls `name` (a registry name, `oci:DIR[:TAG]` or
/// `docker-archive:FILE`) into `store`.
pub fn pull(
    store: &Store,
    name: &str,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> io::Result<PullReport> {
    // No gc while the new image's objects and layer records are in the
    // store and the image is not (yet).
    let _in_use = store.lock_in_use()?;
    match Source::parse(name, "docker.io") {
        Ok(Source::OciLayout { dir, tag }) => {
            pull_layout(store, &dir, tag.as_deref(), opts, progress)
        }
        Ok(Source::DockerArchive { file }) => pull_archive(store, &file, opts, progress),
        Ok(Source::Registry(_)) | Err(_) => pull_registry(store, name, opts, progress),
    }
}

fn pull_registry(
    store: &Store,
    name: &str,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> io::Result<PullReport> {
    let found = find_manifest(name, opts.insecure, progress)?;
    // The image is listed under the name the user's name resolved to, not
    // the mirror's.
    finish(
        store,
        &RegistryBlobs(found.registry),
        found.name,
        found.manifest,
        Some(found.origin),
        opts,
        progress,
    )
}

/// An image's manifest for this host, as the first source that has it
/// gave it.
pub(crate) struct FoundManifest {
    /// The name the user's name resolved to.
    pub name: String,
    /// The platform manifest (an index resolved), unparsed.
    pub manifest: Vec<u8>,
    pub origin: Origin,
    pub registry: Arc<Registry>,
}

/// Looks `name` up in its sources (registries.conf: short names, mirrors),
/// in order, and gives the first platform manifest found.
pub(crate) fn find_manifest(
    name: &str,
    insecure: bool,
    progress: &dyn Progress,
) -> io::Result<FoundManifest> {
    let conf = Registries::load().map_err(fail)?;
    let candidates = conf.candidates(name).map_err(fail)?;
    let auth_files = auth::auth_files();
    let mut errors = Vec::new();
    for cand in &candidates {
        let endpoints = conf.endpoints(cand, insecure).map_err(fail)?;
        for ep in endpoints {
            let r = &ep.reference;
            let copts = ClientOptions {
                insecure: ep.insecure,
                credentials: auth::lookup(&auth_files, &r.registry, &r.repository),
                ..Default::default()
            };
            let reg = Arc::new(Registry::new(r, copts));
            let got = reg.manifest(&r.manifest_ref()).and_then(|(bytes, mt)| {
                if !is_index(&mt, &bytes) {
                    return Ok(bytes);
                }
                let index: ImageIndex = serde_json::from_slice(&bytes)
                    .map_err(|e| fail(format!("{r}: not an image index rcfs can read: {e}")))?;
                let m = pick_platform(&index, &r.to_string())?;
                Ok(reg.manifest(m.digest().as_ref())?.0)
            });
            match got {
                Ok(manifest) => {
                    return Ok(FoundManifest {
                        name: cand.canonical(),
                        manifest,
                        origin: Origin {
                            registry: r.registry.clone(),
                            repository: r.repository.clone(),
                            insecure: ep.insecure,
                        },
                        registry: reg,
                    })
                }
                Err(e) => {
                    if ep.mirror {
                        progress.note(&format!(
                            "mirror {} failed ({e}); trying the next source",
                            r.registry
                        ));
                    }
                    errors.push(format!("{r}: {e}"));
                }
            }
        }
    }
    // The caller names the image that could not be pulled: this says
    // where it was looked for (the name it resolved to, unless that is the
    // name given) and why.
    Err(fail(match errors.len() {
        1 => {
            let e = errors.remove(0);
            e.strip_prefix(&format!("{name}: "))
                .map_or_else(|| e.clone(), str::to_owned)
        }
        0 => "no source to pull it from".to_owned(),
        _ => format!("no source could give it:\n  {}", errors.join("\n  ")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{Descriptor, MediaType};

    /// A blob that must never be read.
    #[derive(Debug)]
    struct Untouchable;

    impl BlobSource for Untouchable {
        fn open_range(&self, start: u64, end: u64) -> io::Result<Box<dyn Read + Send>> {
            panic!("read [{start}, {end}) of a blob whose TOC position was refused")
        }

        fn describe(&self) -> String {
            "untouchable".into()
        }
    }

    /// A TOC position from an image's annotation is checked before anything
    /// is read or allocated: an offset + length that overflows u64, one
    /// past the blob's end, inside the first frame, or a TOC over the limit.
    #[test]
    fn a_toc_position_outside_the_blob_is_refused_before_any_read() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(&t.path().join("store")).unwrap();
        let desc = Descriptor::new(
            MediaType::ImageLayerZstd,
            1000,
            oci_spec::image::Digest::try_from(Digest::of(b"layer").to_string()).unwrap(),
        );
        let checksum = Digest::of(b"toc").to_string();
        for position in [
            format!("{}:10:100:1", u64::MAX - 5),
            "18446744073709551615:18446744073709551615:1:1".into(),
            "990:11:100:1".into(),
            "4:10:100:1".into(),
            format!("100:{}:100:1", MAX_TOC + 1),
            "100:0:100:1".into(),
            "100:10:100:2".into(),
            "100:10:100".into(),
            "100:-1:100:1".into(),
        ] {
            let err = fetch_toc(&store, &Untouchable, &desc, &checksum, &position)
                .err()
                .unwrap_or_else(|| panic!("{position} accepted"));
            assert!(
                err.to_string().contains("outside what rcfs accepts")
                    || err.to_string().contains("bad TOC position"),
                "{position}: {err}"
            );
        }
    }
}
