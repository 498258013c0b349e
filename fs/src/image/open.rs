//! Opening a stored image's layers for a mount: each layer's tree is
//! mapped from the store (built from its table of contents the first time,
//! or again when the stored one is damaged), and becomes an
//! [`ImageLayer`] whose data comes from the store or, for layers pulled
//! lazily, from the registry the image came from, through one shared
//! [`BlockCache`]. What this costs does not grow with the layer: a mount
//! reads a tree's header, and each directory when it is first looked up.

use std::io;
use std::sync::Arc;

use super::auth;
use super::blob::{BlobSource, FileBlob};
use super::digest::Digest;
use super::pull::decompress_toc;
use super::reference::Reference;
use super::registry::{ClientOptions, Registry, RegistryBlob};
use super::store::{ImageRecord, LayerFormat, LayerKey, LayerRecord, Origin, Store};
use super::toc::{DataIn, Toc, TocJson};
use super::tree::{self, Tree};
use crate::cache::BlockCache;
use crate::error::layer_error;
use crate::layer::{ImageLayer, Layer, Trace};

/// How a mounted image fetches and caches.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Bytes of chunks kept in memory.
    pub mem_bytes: u64,
    /// Bytes of fetched chunks kept on disk (the store's `cache/`).
    pub disk_bytes: u64,
    /// Fetch whole layers in the background.
    pub prefetch: bool,
    /// Record the order in which files are first opened.
    pub trace: Option<Arc<Trace>>,
    /// Keep what this mount's start reads as the start order of each lazy
    /// layer that has none (a mount's, not a whole-image reader's such as
    /// `convert`).
    pub learn_start: bool,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            mem_bytes: 16 << 20,
            disk_bytes: 10 << 30,
            prefetch: false,
            trace: None,
            learn_start: false,
        }
    }
}

/// An image's layers, top first, and the cache they share.
pub type OpenImage = (Vec<Arc<dyn Layer>>, Arc<BlockCache>);

/// The layers of `img`, top first, and the cache they share.
pub fn open_image(store: &Store, img: &ImageRecord, opts: &CacheOptions) -> io::Result<OpenImage> {
    let (layers, cache) = open_layers(store, img, opts)?;
    Ok((
        layers
            .into_iter()
            .map(|(_, l)| l as Arc<dyn Layer>)
            .collect(),
        cache,
    ))
}

/// The layers of `img` with their records, top first, and their cache.
#[allow(clippy::type_complexity)]
pub fn open_layers(
    store: &Store,
    img: &ImageRecord,
    opts: &CacheOptions,
) -> io::Result<(Vec<(LayerRecord, Arc<ImageLayer>)>, Arc<BlockCache>)> {
    let cache = new_cache(store, opts);
    let registry = registry_for(img.origin.as_ref());
    let mut layers = Vec::new();
    for key in img.layer_keys()?.iter().rev() {
        layers.push(open_layer(
            store,
            &img.name,
            key,
            registry.as_ref(),
            &cache,
            opts,
        )?);
    }
    Ok((layers, cache))
}

/// The cache a mount's layers share.
pub fn new_cache(store: &Store, opts: &CacheOptions) -> Arc<BlockCache> {
    Arc::new(BlockCache::new(
        opts.mem_bytes,
        Some(store.cache.clone()),
        opts.disk_bytes,
        Some(store.files.clone()),
    ))
}

/// A client for the registry an image came from, if it came from one.
pub fn registry_for(origin: Option<&Origin>) -> Option<Arc<Registry>> {
    let o = origin?;
    let r = Reference {
        registry: o.registry.clone(),
        repository: o.repository.clone(),
        tag: None,
        digest: None,
    };
    let copts = ClientOptions {
        insecure: o.insecure,
        credentials: auth::lookup(&auth::auth_files(), &o.registry, &o.repository),
        // A reader waits for these: fewer, quicker retries.
        attempts: 3,
        ..Default::default()
    };
    Some(Arc::new(Registry::new(&r, copts)))
}

/// Stored layer `key` of image `image` (named for errors), with its
/// record; a lazy layer's data comes from `registry`.
pub fn open_layer(
    store: &Store,
    image: &str,
    key: &LayerKey,
    registry: Option<&Arc<Registry>>,
    cache: &Arc<BlockCache>,
    opts: &CacheOptions,
) -> io::Result<(LayerRecord, Arc<ImageLayer>)> {
    let d = key.blob();
    let missing = || {
        layer_error(
            libc::EIO,
            format!("layer {d} of {image} is missing from the store; pull the image again"),
        )
    };
    let rec = store.layer(key)?.ok_or_else(missing)?;
    // The blob itself when the store has it (images rcfs converted), else
    // by range from the registry.
    let stored = match rec.format {
        LayerFormat::Indexed => None,
        LayerFormat::ZstdChunked => store.blobs.open_object(d)?,
    };
    let remote = rec.format == LayerFormat::ZstdChunked && stored.is_none();
    let source: Option<Arc<dyn BlobSource>> = match (stored, registry) {
        (Some(f), _) => Some(Arc::new(FileBlob::new(
            f,
            format!("stored blob {}", d.short()),
        ))),
        _ if !remote => None,
        (None, Some(reg)) => Some(Arc::new(RegistryBlob {
            registry: reg.clone(),
            digest: *d,
        })),
        (None, None) => {
            return Err(layer_error(
                libc::EIO,
                format!("layer {d} is lazy but {image} has no registry to fetch from"),
            ))
        }
    };
    let tree = layer_tree(store, &rec, data_of(&rec))?;
    let mut layer =
        ImageLayer::with_tree(d.to_string(), tree, source, cache.clone(), opts.prefetch)
            .with_trace(opts.trace.clone())
            .with_start(rec.start_bytes, &rec.start_order);
    // A lazy layer nobody told the order of its start: this mount's start
    // tells the next one.
    if opts.learn_start && remote && rec.start_bytes == 0 && rec.start_order.is_empty() {
        layer = layer.with_start_log(start_log(&store.root, *key));
    }
    let layer = Arc::new(layer);
    Ok((rec, layer))
}

/// Where the file data of stored layer `rec` is.
pub fn data_of(rec: &LayerRecord) -> DataIn {
    match rec.format {
        LayerFormat::Indexed => DataIn::Store,
        LayerFormat::ZstdChunked => DataIn::Blob {
            data_end: rec.data_end,
        },
    }
}

/// The table of contents of stored layer `rec`, read back from the store
/// (checked against its digest) and parsed for data placed as `data`.
pub fn stored_toc(store: &Store, rec: &LayerRecord, data: DataIn) -> io::Result<Toc> {
    let d = &rec.digest;
    let comp = store
        .blobs
        .read(&Digest::parse(&rec.toc)?)?
        .ok_or_else(|| {
            layer_error(
                libc::EIO,
                format!("the TOC of layer {d} is missing from the store; pull the image again"),
            )
        })?;
    let json = decompress_toc(&comp, rec.toc_len)?;
    let parsed: TocJson = serde_json::from_slice(&json)
        .map_err(|e| layer_error(libc::EIO, format!("layer {d}: stored TOC: {e}")))?;
    Toc::parse(&parsed, data).map_err(|e| layer_error(libc::EIO, format!("layer {d}: {e}")))
}

/// The tree of stored layer `rec` (data placed as `data`): the store's,
/// mapped, when it is there and sound; else built from the TOC (`toc`
/// when the caller has it parsed already) and stored for the next mount.
pub fn layer_tree(store: &Store, rec: &LayerRecord, data: DataIn) -> io::Result<Tree> {
    ensure_tree(store, rec, data, None)
}

/// See [`layer_tree`]; `toc` is the layer's TOC if the caller has it.
pub fn ensure_tree(
    store: &Store,
    rec: &LayerRecord,
    data: DataIn,
    toc: Option<&Toc>,
) -> io::Result<Tree> {
    let toc_digest = Digest::parse(&rec.toc)?;
    let name = tree::file_name(&toc_digest, data);
    let what = format!("layer {}", rec.digest);
    let expect = tree::Expect {
        toc: toc_digest,
        data,
    };
    let stored = store.open_tree(&name).unwrap_or_else(|e| {
        log::warn!("cannot open the store's index of {what} ({e}); building it again");
        None
    });
    if let Some(f) = stored {
        let opened = crate::sys::Mapping::of(&f)
            .map_err(|e| e.to_string())
            .and_then(|m| {
                // Looked up here and there: no read-ahead around each page.
                m.advise_random();
                Tree::open(
                    tree::Bytes::Mapped(m),
                    what.clone(),
                    expect,
                    Some(store.tree_remover(&name)),
                )
            });
        match opened {
            Ok(t) => return Ok(t),
            Err(e) => {
                log::warn!("the store's index of {what} is not usable ({e}); building it again")
            }
        }
    }
    let parsed;
    let toc = match toc {
        Some(t) => t,
        None => {
            parsed = stored_toc(store, rec, data)?;
            &parsed
        }
    };
    let bytes = tree::build(toc, &toc_digest, data)
        .map_err(|e| layer_error(libc::EIO, format!("{what}: {e}")))?;
    // A store that cannot take it (a full disk) still mounts, from memory.
    if let Err(e) = store.put_tree(&name, &bytes) {
        log::warn!("cannot store the index of {what}: {e}");
    }
    Tree::open(
        tree::Bytes::Owned(bytes),
        what.clone(),
        expect,
        Some(store.tree_remover(&name)),
    )
    .map_err(|e| layer_error(libc::EIO, format!("{what}: {e}")))
}

/// Keeps what a start read as the start order of layer `key` of the store
/// at `root`, unless something else gave it one meanwhile (best effort: a
/// start that cannot be kept is only logged).
fn start_log(root: &std::path::Path, key: LayerKey) -> crate::layer::StartLog {
    let root = root.to_owned();
    crate::layer::StartLog::new(Box::new(move |ranges| {
        let keep = || -> io::Result<()> {
            let store = Store::open(&root)?;
            let _l = store.lock_exclusive()?;
            if let Some(mut rec) = store.layer(&key)? {
                if rec.start_bytes == 0 && rec.start_order.is_empty() {
                    rec.start_order = ranges;
                    store.put_layer(&key, &rec)?;
                }
            }
            Ok(())
        };
        if let Err(e) = keep() {
            log::warn!("layer {key}: cannot keep the order of its start: {e}");
        }
    }))
}
