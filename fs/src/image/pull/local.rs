//! Pulling from files on this host: an OCI image layout directory
//! (`oci:DIR[:TAG]`, as skopeo writes them) and a `docker save` tarball
//! (`docker-archive:FILE`). Layers are streamed and indexed whole (there is
//! no range access to keep them lazy).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageIndex};
use serde::Deserialize;

use super::{
    annotation, fail, fetch_checked, finish, is_index, pick_platform, Blobs, Progress, PullOptions,
    PullReport, MAX_DOC,
};
use crate::image::blob::{BlobSource, FileBlob};
use crate::image::digest::Digest;
use crate::image::index::{Compression, HashingReader};
use crate::image::reference::Reference;
use crate::image::store::Store;

/// Blobs in an OCI layout dir (`blobs/sha256/HEX`).
struct LayoutBlobs(PathBuf);

impl Blobs for LayoutBlobs {
    fn open(&self, d: &Digest) -> io::Result<Box<dyn Read + Send>> {
        let p = self.0.join("blobs/sha256").join(d.hex());
        File::open(&p)
            .map(|f| Box::new(io::BufReader::with_capacity(1 << 20, f)) as Box<dyn Read + Send>)
            .map_err(|e| fail(format!("{}: {e}", p.display())))
    }
    fn ranged(&self, _: &Digest) -> Option<Arc<dyn BlobSource>> {
        None
    }
}

#[derive(Deserialize)]
struct LayoutIndex {
    manifests: Vec<Descriptor>,
}

pub(super) fn pull_layout(
    store: &Store,
    dir: &Path,
    tag: Option<&str>,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> io::Result<PullReport> {
    let shown = match tag {
        Some(t) => format!("oci:{}:{t}", dir.display()),
        None => format!("oci:{}", dir.display()),
    };
    let idx_path = dir.join("index.json");
    let idx_bytes = std::fs::read(&idx_path).map_err(|e| {
        fail(format!(
            "{shown}: cannot read {} ({e}); is it an OCI image layout?",
            idx_path.display()
        ))
    })?;
    let idx: LayoutIndex = serde_json::from_slice(&idx_bytes)
        .map_err(|e| fail(format!("{}: {e}", idx_path.display())))?;
    let tag_of = |d: &Descriptor| annotation(d, &["org.opencontainers.image.ref.name"]).cloned();
    let chosen = match tag {
        Some(t) => idx
            .manifests
            .iter()
            .find(|d| tag_of(d).as_deref() == Some(t)),
        None if idx.manifests.len() == 1 => idx.manifests.first(),
        None => None,
    };
    let Some(desc) = chosen else {
        let tags: Vec<String> = idx.manifests.iter().filter_map(tag_of).collect();
        return Err(fail(format!(
            "{shown}: no such image in the layout (tags: {})",
            tags.join(", ")
        )));
    };
    let blobs = LayoutBlobs(dir.to_owned());
    let d = Digest::parse(desc.digest().as_ref())?;
    let mut bytes = fetch_checked(&blobs, &d, "manifest")?;
    if is_index(desc.media_type().as_ref(), &bytes) {
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| fail(format!("{shown}: {e}")))?;
        let m = pick_platform(&index, &shown)?;
        bytes = fetch_checked(&blobs, &Digest::parse(m.digest().as_ref())?, "manifest")?;
    }
    let full = PullOptions {
        lazy: false,
        ..opts.clone()
    };
    finish(store, &blobs, shown, bytes, None, &full, progress)
}

/// A docker-archive's `manifest.json` entry.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Members of a tar file by name: offset and size of their data.
fn tar_members(file: &mut File) -> io::Result<HashMap<String, (u64, u64)>> {
    let mut out = HashMap::new();
    let mut ar = tar::Archive::new(&mut *file);
    for e in ar.entries()? {
        let e = e?;
        let name = e
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        out.insert(name, (e.raw_file_position(), e.size()));
    }
    Ok(out)
}

/// Blobs of a docker-archive, by the digests `pull_archive` computed.
struct ArchiveBlobs {
    path: PathBuf,
    by_digest: HashMap<Digest, (u64, u64)>,
    /// The synthesized config (docker-archive configs are stored as is).
    docs: HashMap<Digest, Vec<u8>>,
}

impl Blobs for ArchiveBlobs {
    fn open(&self, d: &Digest) -> io::Result<Box<dyn Read + Send>> {
        if let Some(doc) = self.docs.get(d) {
            return Ok(Box::new(io::Cursor::new(doc.clone())));
        }
        let (off, size) = *self
            .by_digest
            .get(d)
            .ok_or_else(|| fail(format!("{}: no blob {d}", self.path.display())))?;
        let blob = FileBlob::new(File::open(&self.path)?, self.path.display().to_string());
        let end = off.checked_add(size).ok_or_else(|| {
            fail(format!(
                "{}: blob {d} is said to hold {size} bytes at {off}",
                self.path.display()
            ))
        })?;
        blob.open_range(off, end)
    }
    fn ranged(&self, _: &Digest) -> Option<Arc<dyn BlobSource>> {
        None
    }
}

pub(super) fn pull_archive(
    store: &Store,
    path: &Path,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> io::Result<PullReport> {
    let shown = format!("docker-archive:{}", path.display());
    let mut file = File::open(path).map_err(|e| fail(format!("{shown}: {e}")))?;
    let members =
        tar_members(&mut file).map_err(|e| fail(format!("{shown}: not a tar archive: {e}")))?;
    let read_member = |file: &mut File, name: &str| -> io::Result<Vec<u8>> {
        let (off, size) = *members
            .get(name)
            .ok_or_else(|| fail(format!("{shown}: has no {name}")))?;
        if size > MAX_DOC {
            return Err(fail(format!("{shown}: {name} is too large")));
        }
        file.seek(SeekFrom::Start(off))?;
        let mut v = vec![0u8; size as usize];
        file.read_exact(&mut v)?;
        Ok(v)
    };
    let images: Vec<ArchiveImage> =
        serde_json::from_slice(&read_member(&mut file, "manifest.json")?)
            .map_err(|e| fail(format!("{shown}: manifest.json: {e}")))?;
    let [img] = &images[..] else {
        return Err(fail(format!(
            "{shown}: holds {} images; rcfs reads archives of one",
            images.len()
        )));
    };
    let cfg = read_member(&mut file, &img.config)?;
    let mut by_digest = HashMap::new();
    let mut layer_descs = Vec::new();
    for l in &img.layers {
        let (off, size) = *members
            .get(l.trim_start_matches("./"))
            .ok_or_else(|| fail(format!("{shown}: has no layer {l}")))?;
        file.seek(SeekFrom::Start(off))?;
        let mut head = [0u8; 4];
        let n = file.read(&mut head)?;
        let comp = Compression::sniff(&head[..n]);
        // The layer's digest: hashed here, as the archive lists none.
        file.seek(SeekFrom::Start(off))?;
        let (d, _) = HashingReader::new((&mut file).take(size)).finish()?;
        by_digest.insert(d, (off, size));
        let mt = match comp {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        };
        layer_descs
            .push(serde_json::json!({"mediaType": mt, "digest": d.to_string(), "size": size}));
    }
    let cfg_d = Digest::of(&cfg);
    let manifest = crate::image::convert::oci_manifest(&cfg_d, cfg.len(), &layer_descs);
    let bytes = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
    let name = img
        .repo_tags
        .as_ref()
        .and_then(|t| t.first())
        .and_then(|t| Reference::parse(t, "docker.io").ok())
        .map(|r| r.canonical())
        .unwrap_or(shown);
    let blobs = ArchiveBlobs {
        path: path.to_owned(),
        by_digest,
        docs: HashMap::from([(cfg_d, cfg)]),
    };
    let full = PullOptions {
        lazy: false,
        ..opts.clone()
    };
    finish(store, &blobs, name, bytes, None, &full, progress)
}
