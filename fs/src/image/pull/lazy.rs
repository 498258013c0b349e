//! An image's layers one at a time, for a reader that asks for them by
//! digest and serves only what needs no download of a whole layer (the
//! Additional Layer Store, [`crate::als`]): the manifest and config are
//! fetched and checked once; a layer is then servable if the store has it
//! (under a key rcfs checked) or if it is zstd:chunked, in which case its
//! table of contents is fetched, checked and recorded as a lazy pull's is.
//! Any other layer is left to the asker (podman then pulls it itself).

use std::io::{self, Read};
use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};

use super::{
    annotation, fail, fetch_checked, fetch_toc, find_manifest, now_rfc3339, Progress,
    RegistryBlobs, TOC_CHECKSUM, TOC_POSITION,
};
use crate::image::blob::BlobSource;
use crate::image::digest::Digest;
use crate::image::registry::{Registry, RegistryBlob};
use crate::image::store::{ImageRecord, LayerKey, LayerRecord, Origin, Store};

/// An image whose manifest and config were fetched and checked.
#[derive(Debug)]
pub struct LazyImage {
    /// The name the asker's name resolved to.
    pub name: String,
    pub origin: Origin,
    pub registry: Arc<Registry>,
    manifest: Vec<u8>,
    config: Vec<u8>,
    /// The manifest's layers, bottom first.
    pub layers: Vec<LazyLayer>,
}

/// One layer of a [`LazyImage`], as its manifest and config name it.
#[derive(Debug, Clone)]
pub struct LazyLayer {
    pub blob: Digest,
    pub size: u64,
    pub media_type: String,
    /// The TOC digest its annotation names (zstd:chunked).
    pub toc: Option<Digest>,
    /// Its uncompressed digest, as the (checked) config names it.
    pub diff_id: Digest,
    desc: Descriptor,
}

/// A layer the store can serve, and what it is keyed by.
#[derive(Debug, Clone)]
pub struct Servable {
    pub key: LayerKey,
    pub record: LayerRecord,
    /// Bytes fetched to make it servable (its TOC); 0 if the store had it.
    pub fetched: u64,
}

/// The manifest and config of `name` (see [`find_manifest`]), checked.
pub fn find_lazy_image(
    name: &str,
    insecure: bool,
    progress: &dyn Progress,
) -> io::Result<LazyImage> {
    let found = find_manifest(name, insecure, progress)
        .map_err(|e| fail(format!("cannot find {name}: {e}")))?;
    let manifest: ImageManifest = serde_json::from_slice(&found.manifest).map_err(|e| {
        fail(format!(
            "{}: not an image manifest rcfs can read: {e}",
            found.name
        ))
    })?;
    let cfg_d = Digest::parse(manifest.config().digest().as_ref())?;
    let config = fetch_checked(
        &RegistryBlobs(found.registry.clone()),
        &cfg_d,
        "image config",
    )?;
    LazyImage::from_parts(found, &manifest, config)
}

impl LazyImage {
    /// Image `name` as the store recorded it (manifest and config from its
    /// `blobs/`, checked when stored), if it has it.
    pub fn from_store(store: &Store, name: &str) -> io::Result<Option<LazyImage>> {
        let Some(img) = store.find(name)? else {
            return Ok(None);
        };
        let Some(origin) = img.origin.clone() else {
            return Ok(None);
        };
        let manifest_bytes = store.image_blob(&img, "manifest", &img.manifest)?;
        let config = store.image_blob(&img, "config", &img.config)?;
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| fail(format!("{name}: its stored manifest: {e}")))?;
        let registry = crate::image::open::registry_for(Some(&origin))
            .ok_or_else(|| fail(format!("{name}: no registry")))?;
        let found = super::FoundManifest {
            name: img.name.clone(),
            manifest: manifest_bytes,
            origin,
            registry,
        };
        LazyImage::from_parts(found, &manifest, config).map(Some)
    }

    fn from_parts(
        found: super::FoundManifest,
        manifest: &ImageManifest,
        config: Vec<u8>,
    ) -> io::Result<LazyImage> {
        let parsed: ImageConfiguration = serde_json::from_slice(&config).map_err(|e| {
            fail(format!(
                "{}: its config is not an image config: {e}",
                found.name
            ))
        })?;
        let diff_ids = parsed.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(fail(format!(
                "{}: the manifest has {} layers, its config {}",
                found.name,
                manifest.layers().len(),
                diff_ids.len()
            )));
        }
        let layers = manifest
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(desc, diff)| {
                let blob = Digest::parse(desc.digest().as_ref())?;
                let diff_id = Digest::parse(diff)
                    .map_err(|e| fail(format!("layer {blob}: its diff_id: {e}")))?;
                let toc = annotation(desc, &TOC_CHECKSUM)
                    .filter(|_| annotation(desc, &TOC_POSITION).is_some())
                    .map(|s| Digest::parse(s))
                    .transpose()
                    .map_err(|e| fail(format!("layer {blob}: its TOC checksum: {e}")))?;
                Ok(LazyLayer {
                    blob,
                    size: desc.size(),
                    media_type: desc.media_type().to_string(),
                    toc,
                    diff_id,
                    desc: desc.clone(),
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(LazyImage {
            name: found.name,
            origin: found.origin,
            registry: found.registry,
            manifest: found.manifest,
            config,
            layers,
        })
    }

    /// The layer an asker names by `key`: its blob digest (podman 4), or
    /// its TOC digest (podman 5 asks so for zstd:chunked layers).
    pub fn find(&self, key: &Digest) -> Option<usize> {
        self.layers
            .iter()
            .position(|l| l.blob == *key || l.toc.as_ref() == Some(key))
    }

    /// Layer `i` made servable from `store`: found there under a key rcfs
    /// checked, or, for a zstd:chunked layer, its TOC fetched, checked and
    /// recorded (unless not `fetch`). `None`: it would have to be fetched
    /// whole (or its TOC fetched).
    pub fn servable(&self, store: &Store, i: usize, fetch: bool) -> io::Result<Option<Servable>> {
        let l = &self.layers[i];
        let stored = [
            Some(LayerKey::Blob(l.blob)),
            Some(LayerKey::Diff {
                diff: l.diff_id,
                blob: l.blob,
            }),
            l.toc.map(|toc| LayerKey::Toc { toc, blob: l.blob }),
        ];
        for key in stored.into_iter().flatten() {
            if let Some(record) = store.layer(&key)? {
                let mut s = Servable {
                    key,
                    record,
                    fetched: 0,
                };
                if fetch && s.record.tar_size.is_none() {
                    self.learn_tar_size(store, i, &mut s);
                }
                return Ok(Some(s));
            }
        }
        let (true, Some(toc), Some(sum), Some(pos)) = (
            fetch,
            l.toc,
            annotation(&l.desc, &TOC_CHECKSUM),
            annotation(&l.desc, &TOC_POSITION),
        ) else {
            return Ok(None);
        };
        let src: Arc<dyn BlobSource> = Arc::new(RegistryBlob {
            registry: self.registry.clone(),
            digest: l.blob,
        });
        let f = fetch_toc(store, &*src, &l.desc, sum, pos)?;
        let key = LayerKey::Toc { toc, blob: l.blob };
        let mut s = Servable {
            key,
            record: f.rec,
            fetched: f.bytes,
        };
        self.learn_tar_size(store, i, &mut s);
        store.put_layer(&key, &s.record)?;
        Ok(Some(s))
    }

    /// Notes the size of layer `i`'s tar in its record (`s`, kept in the
    /// store), from the tar-split a zstd:chunked layer carries: one range
    /// request. Best effort: without it the size stays unknown.
    fn learn_tar_size(&self, store: &Store, i: usize, s: &mut Servable) {
        let l = &self.layers[i];
        let Some(position) = super::partial::tar_split_position(&l.desc) else {
            return;
        };
        let src = RegistryBlob {
            registry: self.registry.clone(),
            digest: l.blob,
        };
        let size =
            super::partial::fetch_tar_split(&src, &l.desc, None, position).and_then(|comp| {
                let lines = zstd::stream::read::Decoder::new(&comp[..])?
                    .take(super::partial::MAX_TAR_SPLIT_JSON);
                crate::image::chunked::tar_size(std::io::BufReader::new(lines))
            });
        match size {
            Ok(n) => {
                s.record.tar_size = Some(n);
                if let Err(e) = store.put_layer(&s.key, &s.record) {
                    log::warn!("layer {}: cannot keep its tar's size: {e}", l.blob);
                }
            }
            Err(e) => log::warn!("layer {}: its tar-split: {e}", l.blob),
        }
    }

    /// Records the image in `store` (as `rcfs pull --lazy` would), once
    /// each layer has its key there (`keys`, bottom first): `rcfs images`
    /// lists it and `rcfs gc` keeps its layers.
    pub fn record(&self, store: &Store, keys: &[LayerKey]) -> io::Result<()> {
        let cfg_d = Digest::of(&self.config);
        store.blobs.put(&cfg_d, &self.config)?;
        let m_d = Digest::of(&self.manifest);
        store.blobs.put(&m_d, &self.manifest)?;
        let (layers, layer_tocs, layer_diffs) = ImageRecord::layers_of(keys);
        store.add_image(ImageRecord {
            name: self.name.clone(),
            manifest: m_d.to_string(),
            config: cfg_d.to_string(),
            layers,
            layer_tocs,
            layer_diffs,
            origin: Some(self.origin.clone()),
            pulled: now_rfc3339(),
            size: self.layers.iter().map(|l| l.size).sum(),
        })
    }
}
