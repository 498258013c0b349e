//! Opening a stored image's layers for a mount: each layer's table of
//! contents is read back from the store (and checked again), and becomes
//! an [`ImageLayer`] whose data comes from the store or, for layers pulled
//! lazily, from the registry the image came from, through one shared
//! [`BlockCache`].

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
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            mem_bytes: 16 << 20,
            disk_bytes: 10 << 30,
            prefetch: false,
            trace: None,
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
    let comp = store
        .blobs
        .read(&Digest::parse(&rec.toc)?)?
        .ok_or_else(missing)?;
    let json = decompress_toc(&comp, rec.toc_len)?;
    let parsed: TocJson = serde_json::from_slice(&json)
        .map_err(|e| layer_error(libc::EIO, format!("layer {d}: stored TOC: {e}")))?;
    let (data, source): (DataIn, Option<Arc<dyn BlobSource>>) = match rec.format {
        LayerFormat::Indexed => (DataIn::Store, None),
        LayerFormat::ZstdChunked => {
            // The blob itself when the store has it (images rcfs
            // converted), else by range from the registry.
            let source: Arc<dyn BlobSource> = match store.blobs.open_object(d)? {
                Some(f) => Arc::new(FileBlob::new(f, format!("stored blob {}", d.short()))),
                None => match registry {
                    Some(reg) => Arc::new(RegistryBlob {
                        registry: reg.clone(),
                        digest: *d,
                    }),
                    None => {
                        return Err(layer_error(
                            libc::EIO,
                            format!("layer {d} is lazy but {image} has no registry to fetch from"),
                        ))
                    }
                },
            };
            (
                DataIn::Blob {
                    data_end: rec.data_end,
                },
                Some(source),
            )
        }
    };
    let toc =
        Toc::parse(&parsed, data).map_err(|e| layer_error(libc::EIO, format!("layer {d}: {e}")))?;
    let layer = Arc::new(
        ImageLayer::new(d.to_string(), toc, source, cache.clone(), opts.prefetch)
            .with_trace(opts.trace.clone())
            .with_start(rec.start_bytes, &rec.start_order),
    );
    Ok((rec, layer))
}
