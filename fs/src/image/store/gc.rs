//! `rcfs gc`: what no image needs goes.

use std::io;
use std::os::fd::AsFd;

use nix::fcntl::FlockArg;

use super::{Digest, LayerFormat, LayerKey, Store};
use crate::sys;

impl Store {
    /// Removes what no image needs: manifests, configs, layer records and
    /// TOCs of removed images, and stored files no layer lists. Chunks in
    /// the cache stay (the cache's budget bounds them) unless `all`.
    pub fn gc(&self, all: bool) -> io::Result<GcReport> {
        let _mounts = self
            .lock_file("mounts.lock", FlockArg::LockExclusiveNonblock)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!(
                            "images of the store at {} are mounted, or being pulled, converted or \
                         committed: let those finish and unmount the images first (rcfs umount), \
                         since gc could remove what they read or write",
                            self.root.display()
                        ),
                    )
                } else {
                    e
                }
            })?;
        let _l = self.lock_exclusive()?;
        let idx = self.index()?;
        let mut keep_blobs = std::collections::HashSet::new();
        let mut keep_layers = std::collections::HashSet::new();
        for i in &idx.images {
            for d in [&i.manifest, &i.config].into_iter().chain(&i.layers) {
                if let Ok(d) = Digest::parse(d) {
                    keep_blobs.insert(d);
                }
            }
            keep_layers.extend(i.layer_keys()?.iter().map(LayerKey::file_name));
        }
        // A layer indexed whole is also recorded under its checked diff_id
        // (for images that name the same tar by another blob): kept with it.
        let mut diffs = Vec::new();
        for name in &keep_layers {
            if let Some(diff) = self.layer_unchecked(name)?.and_then(|r| r.diff_id) {
                diffs.push(LayerKey::diff_file_name(&Digest::parse(&diff)?));
            }
        }
        keep_layers.extend(diffs);
        // Index manifests of kept images are not tracked: they go.
        let mut report = GcReport::default();
        let mut keep_files = std::collections::HashSet::new();
        for name in self.record_names()? {
            if !keep_layers.contains(&name) {
                self.remove_record(&name)?;
                report.layers += 1;
                continue;
            }
            let Some(rec) = self.layer_unchecked(&name)? else {
                continue;
            };
            let toc = Digest::parse(&rec.toc)?;
            keep_blobs.insert(toc);
            if rec.format == LayerFormat::Indexed {
                if let Some(comp) = self.blobs.read(&toc)? {
                    let json = zstd::bulk::decompress(&comp, rec.toc_len as usize)?;
                    let toc: crate::image::toc::TocJson =
                        serde_json::from_slice(&json).map_err(io::Error::other)?;
                    for e in toc.entries {
                        if let Ok(d) = Digest::parse(&e.digest) {
                            keep_files.insert(d);
                        }
                    }
                }
            }
        }
        for (d, size) in self.blobs.list()? {
            if !keep_blobs.contains(&d) {
                self.blobs.remove(&d)?;
                report.objects += 1;
                report.bytes += size;
            }
        }
        // Trees of TOCs that went (each is built again when needed).
        let trees = sys::DirFd::open(self.trees.as_fd(), ".".as_ref())?;
        for (name, _) in trees.entries()? {
            let keep = name
                .to_str()
                .and_then(crate::image::tree::toc_of_file_name)
                .is_some_and(|d| keep_blobs.contains(&d));
            if !keep {
                self.tree_remover(&name.to_string_lossy())();
            }
        }
        for (d, size) in self.files.list()? {
            if !keep_files.contains(&d) {
                self.files.remove(&d)?;
                report.objects += 1;
                report.bytes += size;
            }
        }
        if all {
            for (d, size) in self.cache.list()? {
                self.cache.remove(&d)?;
                report.objects += 1;
                report.bytes += size;
            }
        }
        // Temp files of writers that died (not ours: we hold the lock, and
        // writers of objects hold it shared... objects are written without
        // it, so only old ones go).
        let tmp = sys::DirFd::open(self.tmp.as_fd(), ".".as_ref())?;
        let now = std::time::SystemTime::now();
        for (name, _) in tmp.entries()? {
            if let Ok(st) = tmp.stat(&name) {
                let age = now
                    .duration_since(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(st.st_mtime as u64),
                    )
                    .unwrap_or_default();
                if age > std::time::Duration::from_secs(24 * 3600) {
                    let _ = nix::unistd::unlinkat(
                        self.tmp.as_fd(),
                        name.as_os_str(),
                        nix::unistd::UnlinkatFlags::NoRemoveDir,
                    );
                }
            }
        }
        Ok(report)
    }
}

/// What `gc` removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    pub layers: u64,
    pub objects: u64,
    pub bytes: u64,
}
