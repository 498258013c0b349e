//! `rcfs convert`: an image whose layers are zstd:chunked, written into the
//! store from any image the store has (its layers read through the same
//! [`ImageLayer`]s a mount uses, so a lazily pulled image is fetched as it
//! is converted).
//!
//! Each layer keeps its entries (names, attributes, xattrs, hard links,
//! whiteouts and opaque markers as plain entries) and its bytes; only the
//! order may change: with a trace (`rcfs mount --record-trace`), the files
//! a start read come first in their layer, in the order they were read, so
//! that a lazy start fetches them with few requests. The config keeps
//! everything but `rootfs.diff_ids`, which name the new tars.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use base64::Engine;

use super::cas::CasWriter;
use super::chunked::{format_ranges, ChunkedBlob, ChunkedWriter, START_KEY, START_ORDER_KEY};
use super::digest::Digest;
use super::open::{data_of, open_layers, stored_toc, CacheOptions};
use super::pull::decompress_toc;
use super::store::{ImageRecord, LayerFormat, LayerKey, LayerRecord, Origin, Store};
use super::toc::{rfc3339, DataIn, Source, Toc, TocEntry, TocJson, NONE};
use crate::error::layer_error;
use crate::layer::{Attr, ImageLayer, Kind, Layer};
use crate::union::OpenFile;

/// How to convert.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// zstd level (podman uses 3 by default for zstd:chunked).
    pub level: i32,
    /// Paths in the order a program first opened them (see
    /// [`parse_trace`]).
    pub trace: Vec<String>,
    /// Pieces (path, offset, length) in the order it first read them.
    pub reads: Vec<(String, u64, u64)>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            level: 3,
            trace: Vec::new(),
            reads: Vec::new(),
        }
    }
}

/// The opens and reads a trace file (`rcfs mount --record-trace`) lists:
/// a line is a path, or `/read OFFSET LEN PATH`.
pub fn parse_trace(text: &str) -> (Vec<String>, Vec<(String, u64, u64)>) {
    let (mut opens, mut reads) = (Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.is_empty()) {
        match line.strip_prefix("/read ") {
            Some(rest) => {
                let mut it = rest.splitn(3, ' ');
                let parsed = (|| {
                    let off = it.next()?.parse().ok()?;
                    let len = it.next()?.parse().ok()?;
                    Some((it.next()?.to_owned(), off, len))
                })();
                reads.extend(parsed);
            }
            None => opens.push(line.to_owned()),
        }
    }
    (opens, reads)
}

/// The blob ranges of the chunks of `toc` (a layer just written) that the
/// pieces of `reads` cover, in that order, each once, neighbours joined.
fn start_order(toc: &Toc, reads: &[(String, u64, u64)]) -> Vec<(u64, u64)> {
    let mut seen = HashSet::new();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (path, off, len) in reads {
        let Some(idx) = toc.lookup(path.trim_start_matches('/').as_bytes()) else {
            continue;
        };
        let n = toc.node(idx);
        if n.file == NONE {
            continue;
        }
        for c in toc.files[n.file as usize].chunks.iter() {
            if c.offset + c.len <= *off || c.offset >= off + len {
                continue;
            }
            if let Source::Blob { start, end } = c.source {
                if !seen.insert(start) {
                    continue;
                }
                match out.last_mut() {
                    Some(last) if last.1 == start => last.1 = end,
                    _ => out.push((start, end)),
                }
            }
        }
    }
    out
}

/// Entry `idx` of `toc` as a TOC entry (`first_name`: where its data went
/// first, for hard links).
fn entry_of(toc: &Toc, idx: u32, path: &str, first_name: Option<&str>) -> TocEntry {
    let n = toc.node(idx);
    toc_entry(
        &n.attr,
        path,
        first_name,
        n.target.as_deref(),
        n.xattrs.iter().map(|(k, v)| (&k[..], &v[..])),
    )
}

/// A TOC entry for a file with attributes `a` at `path` (directories get
/// their trailing `/` here): a hard link to `first_name` when given, a
/// symlink to `target`, with `xattrs` (name, value).
pub(crate) fn toc_entry<'a>(
    a: &Attr,
    path: &str,
    first_name: Option<&str>,
    target: Option<&[u8]>,
    xattrs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> TocEntry {
    let mut e = TocEntry {
        name: path.to_owned(),
        mode: i64::from(a.perm),
        uid: i64::from(a.uid),
        gid: i64::from(a.gid),
        mod_time: rfc3339(a.mtime),
        ..Default::default()
    };
    let xattrs: HashMap<String, String> = xattrs
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                base64::engine::general_purpose::STANDARD.encode(v),
            )
        })
        .collect();
    if !xattrs.is_empty() {
        e.xattrs = Some(xattrs);
    }
    e.kind = match a.kind {
        Kind::Dir => {
            e.name.push('/');
            "dir"
        }
        Kind::File => match first_name {
            Some(f) => {
                e.link_name = f.to_owned();
                "hardlink"
            }
            None => {
                e.size = a.size as i64;
                "reg"
            }
        },
        Kind::Symlink => {
            e.link_name = String::from_utf8_lossy(target.unwrap_or_default()).into_owned();
            "symlink"
        }
        Kind::CharDev | Kind::BlockDev => {
            let (major, minor) = a.major_minor();
            e.dev_major = i64::from(major);
            e.dev_minor = i64::from(minor);
            if a.kind == Kind::CharDev {
                "char"
            } else {
                "block"
            }
        }
        Kind::Fifo => "fifo",
        Kind::Socket => "fifo",
    }
    .into();
    e
}

/// The entries of `toc` in the order to write them: with `first` (paths),
/// those files and their parent dirs first, then everything else depth
/// first, names sorted (parents always before children).
fn order(toc: &Toc, first: &[String]) -> Vec<u32> {
    let mut out = Vec::with_capacity(toc.nodes.len());
    let mut done: HashSet<u32> = HashSet::new();
    done.insert(0);
    let push_with_parents = |idx: u32, out: &mut Vec<u32>, done: &mut HashSet<u32>| {
        let mut chain = Vec::new();
        let mut i = idx;
        while i != 0 && !done.contains(&i) {
            chain.push(i);
            i = toc.node(i).parent;
        }
        for i in chain.into_iter().rev() {
            done.insert(i);
            out.push(i);
        }
    };
    for p in first {
        let p = p.trim_start_matches('/');
        if let Some(idx) = toc.lookup(p.as_bytes()) {
            if toc.node(idx).attr.kind == Kind::File {
                push_with_parents(idx, &mut out, &mut done);
            }
        }
    }
    let mut stack = vec![0u32];
    while let Some(d) = stack.pop() {
        let mut kids = toc.node(d).children.clone();
        kids.sort_by(|a, b| toc.node(*b).name.cmp(&toc.node(*a).name));
        for &k in kids.iter().rev() {
            if done.insert(k) {
                out.push(k);
            }
        }
        // Depth first: visit subdirectories in name order.
        for &k in &kids {
            if toc.node(k).attr.kind == Kind::Dir {
                stack.push(k);
            }
        }
    }
    out
}

/// Writes one layer as a zstd:chunked blob into the store; returns its
/// record and diff_id.
fn convert_layer(
    store: &Store,
    layer: &ImageLayer,
    toc: &Toc,
    opts: &ConvertOptions,
) -> io::Result<(
    LayerRecord,
    Digest,
    std::collections::BTreeMap<String, String>,
)> {
    let sink = store.blobs.writer()?;
    let mut w = ChunkedWriter::new(sink, opts.level);
    let mut first_name: HashMap<u32, String> = HashMap::new();
    // The traced files of this layer: where the last one ends is how much
    // of the blob a start needs.
    let mut traced: HashSet<u32> = opts
        .trace
        .iter()
        .filter_map(|p| toc.lookup(p.trim_start_matches('/').as_bytes()))
        .filter(|&i| toc.node(i).attr.kind == Kind::File)
        .collect();
    let mut start_bytes = 0;
    for idx in order(toc, &opts.trace) {
        if traced.remove(&idx) && traced.is_empty() {
            start_bytes = u64::MAX;
        }
        let path_bytes = toc.path_of(idx);
        let path = String::from_utf8(path_bytes.clone()).map_err(|_| {
            layer_error(
                libc::EINVAL,
                format!(
                    "layer {}: '{}' is not UTF-8, which a TOC cannot name",
                    layer.id(),
                    String::from_utf8_lossy(&path_bytes)
                ),
            )
        })?;
        let n = toc.node(idx);
        let prior = (n.file != NONE)
            .then(|| first_name.get(&n.file).cloned())
            .flatten();
        let e = entry_of(toc, idx, &path, prior.as_deref());
        if e.kind == "reg" {
            first_name.insert(n.file, path.clone());
            if e.size > 0 {
                let file = layer.open(Path::new(std::ffi::OsStr::from_bytes(&path_bytes)))?;
                w.add(e, Some(&mut OpenFile::Lower(file).into_reader()))?;
                if start_bytes == u64::MAX {
                    start_bytes = w.written();
                }
                continue;
            }
        }
        w.add(e, None)?;
        if start_bytes == u64::MAX {
            start_bytes = w.written();
        }
    }
    let (sink, mut info) = w.finish()?;
    if start_bytes > 0 {
        info.annotations
            .insert(START_KEY.to_owned(), start_bytes.to_string());
    }
    let mut order = Vec::new();
    if !opts.reads.is_empty() {
        let json = decompress_toc(&info.toc, info.toc_len)?;
        let written: TocJson = serde_json::from_slice(&json).map_err(io::Error::other)?;
        let written = Toc::parse(
            &written,
            DataIn::Blob {
                data_end: info.data_end,
            },
        )
        .map_err(|e| layer_error(libc::EIO, format!("the converted layer's TOC: {e}")))?;
        order = start_order(&written, &opts.reads);
        if !order.is_empty() {
            info.annotations
                .insert(START_ORDER_KEY.to_owned(), format_ranges(&order));
        }
    }
    let (files, bytes) = toc.data_size();
    let rec = store_layer(
        store,
        sink,
        &info,
        (files as u64, bytes),
        start_bytes,
        order,
    )?;
    Ok((rec, info.diff_id, info.annotations))
}

/// Records a zstd:chunked blob written by a [`ChunkedWriter`] into `sink`
/// (`info` from its `finish`; `data`: its regular files and their bytes)
/// as a layer of the store.
pub(crate) fn store_layer(
    store: &Store,
    sink: CasWriter<'_>,
    info: &ChunkedBlob,
    data: (u64, u64),
    start_bytes: u64,
    start_order: Vec<(u64, u64)>,
) -> io::Result<LayerRecord> {
    let got = sink.commit(info.digest, true)?;
    debug_assert_eq!(got, info.digest);
    let toc_d = Digest::of(&info.toc);
    store.blobs.put(&toc_d, &info.toc)?;
    let rec = LayerRecord {
        digest: info.digest.to_string(),
        media_type: CHUNKED_MEDIA_TYPE.into(),
        size: info.size,
        format: LayerFormat::ZstdChunked,
        toc: toc_d.to_string(),
        toc_len: info.toc_len,
        data_end: info.data_end,
        files: data.0,
        bytes: data.1,
        start_bytes,
        start_order,
        diff_id: None,
        tar_size: None,
    };
    // Keyed by the blob digest: rcfs wrote the blob and hashed it.
    store.put_layer(&LayerKey::Blob(info.digest), &rec)?;
    Ok(rec)
}

/// The media type of a zstd:chunked layer (a zstd tar, to those who do
/// not know the format).
pub(crate) const CHUNKED_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The manifest descriptor of a layer written by [`store_layer`].
pub(crate) fn layer_descriptor(
    rec: &LayerRecord,
    annotations: &std::collections::BTreeMap<String, String>,
) -> serde_json::Value {
    serde_json::json!({
        "mediaType": rec.media_type, "digest": rec.digest, "size": rec.size, "annotations": annotations,
    })
}

/// An OCI image manifest of the config `cfg_d` (`cfg_len` bytes) and the
/// layer descriptors `layers` (bottom first).
pub(crate) fn oci_manifest(
    cfg_d: &Digest,
    cfg_len: usize,
    layers: &[serde_json::Value],
) -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_d.to_string(), "size": cfg_len},
        "layers": layers,
    })
}

/// Stores `cfg` and an OCI manifest of it and the layers `descs` (bottom
/// first, their records under `keys`), and records them as the image
/// `name` (fetching layers it serves lazily from `origin`).
pub(crate) fn write_image(
    store: &Store,
    name: &str,
    cfg: &serde_json::Value,
    descs: &[serde_json::Value],
    keys: &[LayerKey],
    origin: Option<Origin>,
) -> io::Result<ImageRecord> {
    debug_assert!(descs
        .iter()
        .zip(keys)
        .all(|(d, k)| d["digest"].as_str() == Some(&k.blob().to_string())));
    let (layers, layer_tocs, layer_diffs) = ImageRecord::layers_of(keys);
    let cfg_bytes = serde_json::to_vec(cfg).map_err(io::Error::other)?;
    let cfg_d = Digest::of(&cfg_bytes);
    store.blobs.put(&cfg_d, &cfg_bytes)?;
    let manifest = oci_manifest(&cfg_d, cfg_bytes.len(), descs);
    let m_bytes = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
    let m_d = Digest::of(&m_bytes);
    store.blobs.put(&m_d, &m_bytes)?;
    let image = ImageRecord {
        name: name.to_owned(),
        manifest: m_d.to_string(),
        config: cfg_d.to_string(),
        layers,
        layer_tocs,
        layer_diffs,
        origin,
        pulled: super::pull::now_rfc3339(),
        size: descs.iter().map(|d| d["size"].as_u64().unwrap_or(0)).sum(),
    };
    store.add_image(image.clone())?;
    Ok(image)
}

/// The config of `img`, parsed.
pub(crate) fn read_config(store: &Store, img: &ImageRecord) -> io::Result<serde_json::Value> {
    let bytes = store.image_blob(img, "config", &img.config)?;
    serde_json::from_slice(&bytes).map_err(io::Error::other)
}

/// Converts `src` into an image called `dst` in the store.
pub fn convert(
    store: &Store,
    src: &ImageRecord,
    dst: &str,
    opts: &ConvertOptions,
    progress: &dyn Fn(usize, usize),
) -> io::Result<ImageRecord> {
    // No gc under the source's layers, nor before the new image is
    // recorded.
    let _in_use = store.lock_in_use()?;
    let (layers, _cache) = open_layers(
        store,
        src,
        &CacheOptions {
            mem_bytes: 8 << 20,
            ..Default::default()
        },
    )?;
    let mut descs = Vec::new();
    let mut keys = Vec::new();
    let mut diff_ids = Vec::new();
    let total = layers.len();
    // Bottom first, as in the manifest.
    for (i, (src_rec, layer)) in layers.iter().rev().enumerate() {
        progress(i, total);
        let toc = stored_toc(store, src_rec, data_of(src_rec))?;
        let (rec, diff_id, annotations) = convert_layer(store, layer, &toc, opts)?;
        descs.push(layer_descriptor(&rec, &annotations));
        keys.push(LayerKey::Blob(Digest::parse(&rec.digest)?));
        diff_ids.push(diff_id.to_string());
    }
    progress(total, total);
    let mut cfg = read_config(store, src)?;
    cfg["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": diff_ids});
    write_image(store, dst, &cfg, &descs, &keys, None)
}
