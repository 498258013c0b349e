//! `rcfs commit`: a container's changes as a new image, one zstd:chunked
//! layer on top of its image's layers.
//!
//! The container's upper dir is that layer: its entries in name order,
//! each with the attributes, xattrs and data the container saw. They are
//! read through a [`Union`] of the image's layers and the upper dir, so a
//! file whose copy-up was metadata only gets its bytes from the layer below
//! and rcfs's bookkeeping xattrs (`user.rcfs.*`, overlay markers) stay out.
//! Deletions, which the upper dir already spells as OCI whiteouts
//! (`.wh.NAME`, or a 0/0 device for names too long for the prefix), become
//! `.wh.NAME` entries; an opaque directory gets `.wh..wh..opq` (whether it
//! was marked by that file or by an overlay xattr). Hard links in the upper
//! dir stay hard links.
//!
//! The new config has the layer's diff_id added and a history entry; the
//! manifest is OCI, with the image's layer descriptors as they were (Docker
//! media types spelled the OCI way), so the image runs at once and pushes
//! with `rcfs push`, its lower layers mounted or fetched from the image's
//! origin.
//!
//! The walk goes through directory fds only (`O_NOFOLLOW` lookups), like
//! everything else that reads an upper dir: a container may have left
//! symlinks anywhere in it.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use super::convert::{
    layer_descriptor, read_config, store_layer, toc_entry, write_image, CHUNKED_MEDIA_TYPE,
};
use super::digest::Digest;
use super::open::{open_layers, CacheOptions};
use super::store::{ImageRecord, LayerKey, Store};
use super::toc::{rfc3339, TocEntry};
use crate::error::layer_error;
use crate::layer::{Kind, Layer, Time};
use crate::sys::DirFd;
use crate::union::{Config, Union, UpperConfig, ROOT_INO};
use crate::whiteout::{self, OPAQUE_MARKER};

/// How to commit.
#[derive(Debug, Clone)]
pub struct CommitOptions {
    /// zstd level.
    pub level: i32,
    /// The history entry's `created_by` (what made the layer).
    pub created_by: String,
    /// The history entry's `comment` (`rcfs commit -m`).
    pub comment: Option<String>,
    /// The config's and the history entry's `author`.
    pub author: Option<String>,
    /// Paths a runtime makes as mount targets when the image lacks them
    /// (`proc`, `etc/hosts`): left out while they are still what it made,
    /// an empty directory or file that no image layer has.
    pub mount_targets: Vec<String>,
}

/// What a commit wrote.
#[derive(Debug, Clone)]
pub struct Committed {
    pub image: ImageRecord,
    /// The new layer's blob digest and compressed size.
    pub layer: Digest,
    pub layer_size: u64,
    /// Entries in the new layer (whiteouts and opaque markers included).
    pub entries: u64,
    /// Deletions and opaque directories among them.
    pub whiteouts: u64,
    /// Regular files with data, and their bytes.
    pub files: u64,
    pub bytes: u64,
}

/// Docker's spelling of a layer media type, the OCI way (an OCI manifest
/// may not list Docker media types).
fn oci_media_type(t: &str) -> String {
    let Some(rest) = t.strip_prefix("application/vnd.docker.image.rootfs.") else {
        return t.to_owned();
    };
    let (foreign, comp) = match rest.strip_prefix("foreign.diff.tar") {
        Some(c) => (true, c),
        None => (false, rest.strip_prefix("diff.tar").unwrap_or(rest)),
    };
    let comp = comp.strip_prefix('.').map(|c| format!("+{c}"));
    format!(
        "application/vnd.oci.image.layer.{}v1.tar{}",
        if foreign { "nondistributable." } else { "" },
        comp.unwrap_or_default()
    )
}

/// A directory still to write, with the union inode it is.
struct Pending {
    dir: DirFd,
    ino: u64,
    /// Its path with a trailing `/` (empty for the root).
    prefix: String,
}

/// The walk over the upper dir, writing the layer as it goes.
struct Walk<'a> {
    union: &'a Union,
    lowers: &'a [Arc<dyn Layer>],
    mount_targets: &'a [String],
    w: super::chunked::ChunkedWriter<super::cas::CasWriter<'a>>,
    /// First path of each hard-linked upper file, by (dev, ino).
    links: HashMap<(u64, u64), String>,
    entries: u64,
    whiteouts: u64,
    files: u64,
    bytes: u64,
}

fn utf8(prefix: &str, name: &OsStr) -> io::Result<String> {
    std::str::from_utf8(name.as_bytes())
        .map(|n| format!("{prefix}{n}"))
        .map_err(|_| {
            layer_error(
                libc::EINVAL,
                format!(
                    "'{prefix}{}' is not UTF-8, which a zstd:chunked layer cannot name; \
                     rename or remove it in the container and commit again",
                    String::from_utf8_lossy(name.as_bytes())
                ),
            )
        })
}

impl Walk<'_> {
    /// Whether upper entry `name` of `dir` (at `path`, `st` its lstat) is a
    /// mount target a runtime made (see [`CommitOptions::mount_targets`]).
    fn made_mount_target(
        &self,
        dir: &DirFd,
        name: &OsStr,
        path: &str,
        st: &libc::stat,
    ) -> io::Result<bool> {
        if !self.mount_targets.iter().any(|t| t == path) {
            return Ok(false);
        }
        let empty = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => st.st_size == 0,
            libc::S_IFDIR => DirFd::open(dir.as_fd(), name)?.entries()?.is_empty(),
            _ => false,
        };
        Ok(empty
            && !self
                .lowers
                .iter()
                .any(|l| l.stat(std::path::Path::new(path)).is_ok()))
    }

    /// An empty `.wh.` entry (a whiteout or opaque marker) at `path`.
    fn marker(&mut self, path: String, mtime: Time) -> io::Result<()> {
        self.w.add(
            TocEntry {
                kind: "reg".into(),
                name: path,
                mode: 0o644,
                mod_time: rfc3339(mtime),
                ..Default::default()
            },
            None,
        )?;
        self.entries += 1;
        self.whiteouts += 1;
        Ok(())
    }

    /// Writes the entries of `p` and returns its subdirectories, in order.
    fn dir(&mut self, p: &Pending) -> io::Result<Vec<Pending>> {
        let mut names: Vec<OsString> = p.dir.entries()?.into_iter().map(|(n, _)| n).collect();
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let st = match p.dir.stat(&name) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                r => r?,
            };
            let mtime = Time::from_timespec(st.st_mtime, st.st_mtime_nsec);
            let chr00 = st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0;
            match whiteout::classify(&name, chr00) {
                whiteout::Kind::Opaque => {
                    self.marker(format!("{}{OPAQUE_MARKER}", p.prefix), mtime)?;
                    continue;
                }
                whiteout::Kind::Whiteout(n) => {
                    let wh = whiteout::whiteout_name(n);
                    self.marker(utf8(&p.prefix, &wh)?, mtime)?;
                    continue;
                }
                whiteout::Kind::Entry => {}
            }
            let path = utf8(&p.prefix, &name)?;
            if self.made_mount_target(&p.dir, &name, &path, &st)? {
                continue;
            }
            let stat = match self.union.lookup(p.ino, &name) {
                // Gone, or hidden by the union (an entry it refuses).
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                r => r?,
            };
            let a = &stat.attr;
            let xattrs: Vec<(Vec<u8>, Vec<u8>)> = self
                .union
                .listxattr(stat.ino)?
                .into_iter()
                .map(|n| Ok((n.as_bytes().to_vec(), self.union.getxattr(stat.ino, &n)?)))
                .collect::<io::Result<_>>()?;
            let xattrs = xattrs.iter().map(|(k, v)| (&k[..], &v[..]));
            let target = match a.kind {
                Kind::Symlink => Some(self.union.readlink(stat.ino)?),
                _ => None,
            };
            let target = target.as_ref().map(|t| t.as_bytes());
            let key = (st.st_dev, st.st_ino);
            let first = (a.kind != Kind::Dir && st.st_nlink > 1)
                .then(|| self.links.get(&key).cloned())
                .flatten();
            let e = toc_entry(a, &path, first.as_deref(), target, xattrs);
            self.entries += 1;
            if e.kind == "reg" && st.st_nlink > 1 {
                self.links.insert(key, path.clone());
            }
            if e.kind == "reg" && e.size > 0 {
                let file =
                    self.union
                        .open(stat.ino, libc::O_RDONLY, crate::union::Defer::Nothing)?;
                let size = e.size as u64;
                let mut r = file.into_reader().take(size);
                self.w.add(e, Some(&mut r))?;
                if r.limit() > 0 {
                    return Err(layer_error(
                        libc::EIO,
                        format!("{path} shrank while it was committed"),
                    ));
                }
                self.files += 1;
                self.bytes += size;
                continue;
            }
            self.w.add(e, None)?;
            if a.kind == Kind::Dir {
                let dir = DirFd::open(p.dir.as_fd(), &name)?;
                let opaque = whiteout::is_opaque_dir(&dir.xattr_names().unwrap_or_default(), |x| {
                    dir.xattr(x).ok().flatten()
                });
                // An opaque xattr without the marker file: write the marker
                // (with it, the listing below writes it).
                if opaque
                    && dir
                        .stat(OsStr::new(OPAQUE_MARKER))
                        .is_err_and(|e| e.raw_os_error() == Some(libc::ENOENT))
                {
                    self.marker(format!("{path}/{OPAQUE_MARKER}"), a.mtime)?;
                }
                subdirs.push(Pending {
                    dir,
                    ino: stat.ino,
                    prefix: format!("{path}/"),
                });
            }
        }
        Ok(subdirs)
    }
}

/// Commits the container whose upper and work dirs are `upper`, made from
/// `src`, as the image `dst`.
pub fn commit(
    store: &Store,
    src: &ImageRecord,
    upper: &UpperConfig,
    dst: &str,
    opts: &CommitOptions,
) -> io::Result<Committed> {
    // No gc under the source's layers, nor before the new image is
    // recorded.
    let _in_use = store.lock_in_use()?;
    let (layers, _cache) = open_layers(store, src, &CacheOptions::default())?;
    let lowers: Vec<Arc<dyn Layer>> = layers
        .iter()
        .map(|(_, l)| l.clone() as Arc<dyn Layer>)
        .collect();
    let union = Union::new(Config {
        lowers: lowers.clone(),
        upper: Some(upper.clone()),
        metacopy: true,
        fsync: true,
    })?;
    // The upper dir itself is the store's (or --upper's): the path is ours.
    let root = DirFd::from_fd(crate::sys::open_at(
        nix::fcntl::AT_FDCWD,
        upper.upper.as_os_str(),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )?);
    let mut walk = Walk {
        union: &union,
        lowers: &lowers,
        mount_targets: &opts.mount_targets,
        w: super::chunked::ChunkedWriter::new(store.blobs.writer()?, opts.level),
        links: HashMap::new(),
        entries: 0,
        whiteouts: 0,
        files: 0,
        bytes: 0,
    };
    // Depth first, names in order, parents before their entries; the fds
    // held are those of the directories on the way down.
    let mut stack = vec![Pending {
        dir: root,
        ino: ROOT_INO,
        prefix: String::new(),
    }];
    while let Some(p) = stack.pop() {
        let subdirs = walk.dir(&p)?;
        drop(p);
        stack.extend(subdirs.into_iter().rev());
    }
    union.finish_flushes();
    let Walk {
        w,
        entries,
        whiteouts,
        files,
        bytes,
        ..
    } = walk;
    let (sink, info) = w.finish()?;
    let rec = store_layer(store, sink, &info, (files, bytes), 0, Vec::new())?;
    debug_assert_eq!(rec.media_type, CHUNKED_MEDIA_TYPE);

    let manifest: serde_json::Value =
        serde_json::from_slice(&store.image_blob(src, "manifest", &src.manifest)?)
            .map_err(io::Error::other)?;
    let mut descs: Vec<serde_json::Value> =
        manifest["layers"].as_array().cloned().unwrap_or_default();
    for d in &mut descs {
        if let Some(t) = d["mediaType"].as_str() {
            d["mediaType"] = oci_media_type(t).into();
        }
    }
    descs.push(layer_descriptor(&rec, &info.annotations));

    let mut cfg = read_config(store, src)?;
    let now = super::pull::now_rfc3339();
    match cfg["rootfs"]["diff_ids"].as_array_mut() {
        Some(ids) => ids.push(info.diff_id.to_string().into()),
        None => {
            return Err(layer_error(
                libc::EIO,
                format!("the config of {} has no rootfs.diff_ids", src.name),
            ))
        }
    }
    cfg["created"] = now.clone().into();
    if let Some(a) = &opts.author {
        cfg["author"] = a.clone().into();
    }
    // One history entry per layer when the image keeps a history (an entry
    // for the new layer alone would not line up with the layers).
    if let Some(h) = cfg["history"].as_array_mut() {
        let mut e = serde_json::json!({"created": now, "created_by": opts.created_by});
        if let Some(c) = &opts.comment {
            e["comment"] = c.clone().into();
        }
        if let Some(a) = &opts.author {
            e["author"] = a.clone().into();
        }
        h.push(e);
    }
    let mut keys = src.layer_keys()?;
    keys.push(LayerKey::Blob(info.digest));
    let image = write_image(store, dst, &cfg, &descs, &keys, src.origin.clone())?;
    Ok(Committed {
        image,
        layer: info.digest,
        layer_size: rec.size,
        entries,
        whiteouts,
        files,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::oci_media_type;

    #[test]
    fn docker_media_types_are_spelled_the_oci_way() {
        assert_eq!(
            oci_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(
            oci_media_type("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        );
        assert_eq!(
            oci_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }
}
