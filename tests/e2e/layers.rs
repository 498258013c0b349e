//! Layer trees described once and written out for each filesystem under test.
//!
//! A case says what its layers hold (files, dirs, symlinks, hard links,
//! fifos, xattrs, owners, whiteouts, opaque dirs) as a [`Layer`]; the harness
//! writes the same description into the kernel overlayfs's directories and
//! into the subject's. Only the *spelling* of whiteouts and opaque markers
//! differs between the two copies: the kernel only understands char 0/0
//! whiteouts and `trusted.overlay.opaque`, so the kernel copy always uses
//! those, while the subject's copy uses the spelling the case asked for.
//! Every entry's atime/mtime is then set to [`LAYER_TIME`], so an untouched
//! (or faithfully copied-up) entry has the same times under both mounts.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::mounts::Impl;
use crate::sys;

/// atime and mtime of every entry of a written layer (2017-07-14).
pub const LAYER_TIME: i64 = 1_500_000_000;

/// How a whiteout is spelled in a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutForm {
    /// OCI image spec: an empty file `.wh.NAME` beside NAME.
    Oci,
    /// overlayfs: a char device 0/0 named NAME.
    CharDev,
    /// Whatever the reader itself writes into an upper dir: OCI for rcfs,
    /// char 0/0 for fuse-overlayfs (as root) and the kernel.
    Native,
}

/// How an opaque directory is marked in a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpaqueForm {
    /// OCI image spec: an empty file `.wh..wh..opq` inside the dir.
    Oci,
    /// overlayfs: xattr `trusted.overlay.opaque=y` on the dir.
    TrustedXattr,
    /// unprivileged overlayfs: xattr `user.overlay.opaque=y` on the dir.
    UserXattr,
    /// Whatever the reader itself writes into an upper dir.
    Native,
}

/// Which filesystem will read a written layer; decides marker spellings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    Kernel,
    Subject(Impl),
}

impl Reader {
    fn whiteout(self, asked: WhiteoutForm) -> WhiteoutForm {
        match (self, asked) {
            (Reader::Kernel, _) => WhiteoutForm::CharDev,
            (Reader::Subject(Impl::Rcfs), WhiteoutForm::Native) => WhiteoutForm::Oci,
            (Reader::Subject(Impl::FuseOverlayfs), WhiteoutForm::Native) => WhiteoutForm::CharDev,
            (Reader::Subject(_), form) => form,
        }
    }

    fn opaque(self, asked: OpaqueForm) -> OpaqueForm {
        match (self, asked) {
            (Reader::Kernel, _) => OpaqueForm::TrustedXattr,
            (Reader::Subject(Impl::Rcfs), OpaqueForm::Native) => OpaqueForm::Oci,
            (Reader::Subject(Impl::FuseOverlayfs), OpaqueForm::Native) => OpaqueForm::TrustedXattr,
            (Reader::Subject(_), form) => form,
        }
    }
}

#[derive(Clone, Debug)]
enum Item {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    Sparse {
        path: String,
        len: u64,
        extents: Vec<(u64, Vec<u8>)>,
    },
    Symlink {
        path: String,
        target: String,
    },
    HardLink {
        path: String,
        existing: String,
    },
    Fifo {
        path: String,
    },
    Whiteout {
        path: String,
        form: WhiteoutForm,
    },
    Opaque {
        path: String,
        form: OpaqueForm,
    },
    Xattr {
        path: String,
        name: String,
        value: Vec<u8>,
    },
    Owner {
        path: String,
        uid: u32,
        gid: u32,
    },
}

/// One layer's contents, applied in order. Parent directories are created
/// (mode 0755, root-owned) as needed.
#[derive(Clone, Debug, Default)]
pub struct Layer {
    items: Vec<Item>,
}

impl Layer {
    pub fn new() -> Layer {
        Layer::default()
    }

    pub fn dir(self, path: &str) -> Layer {
        self.dir_mode(path, 0o755)
    }

    pub fn dir_mode(mut self, path: &str, mode: u32) -> Layer {
        self.items.push(Item::Dir {
            path: path.into(),
            mode,
        });
        self
    }

    pub fn file(self, path: &str, data: impl AsRef<[u8]>) -> Layer {
        self.file_mode(path, data, 0o644)
    }

    pub fn file_mode(mut self, path: &str, data: impl AsRef<[u8]>, mode: u32) -> Layer {
        self.items.push(Item::File {
            path: path.into(),
            data: data.as_ref().to_vec(),
            mode,
        });
        self
    }

    /// A file of `len` bytes of a position-dependent pattern (no zero runs).
    pub fn big_file(self, path: &str, len: usize) -> Layer {
        self.file(path, pattern(len, path.len() as u8))
    }

    /// A sparse file `len` bytes long: `extents` (offset, bytes) hold data,
    /// the rest is holes.
    pub fn sparse_file(mut self, path: &str, len: u64, extents: &[(u64, &[u8])]) -> Layer {
        self.items.push(Item::Sparse {
            path: path.into(),
            len,
            extents: extents.iter().map(|(o, d)| (*o, d.to_vec())).collect(),
        });
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Layer {
        self.items.push(Item::Symlink {
            path: path.into(),
            target: target.into(),
        });
        self
    }

    pub fn hardlink(mut self, path: &str, existing: &str) -> Layer {
        self.items.push(Item::HardLink {
            path: path.into(),
            existing: existing.into(),
        });
        self
    }

    pub fn fifo(mut self, path: &str) -> Layer {
        self.items.push(Item::Fifo { path: path.into() });
        self
    }

    /// An OCI whiteout `.wh.NAME` for `path`.
    pub fn whiteout(self, path: &str) -> Layer {
        self.whiteout_form(path, WhiteoutForm::Oci)
    }

    pub fn whiteout_form(mut self, path: &str, form: WhiteoutForm) -> Layer {
        self.items.push(Item::Whiteout {
            path: path.into(),
            form,
        });
        self
    }

    /// Makes dir `path` (created if missing) opaque, OCI spelling.
    pub fn opaque(self, path: &str) -> Layer {
        self.opaque_form(path, OpaqueForm::Oci)
    }

    pub fn opaque_form(mut self, path: &str, form: OpaqueForm) -> Layer {
        self.items.push(Item::Opaque {
            path: path.into(),
            form,
        });
        self
    }

    pub fn xattr(mut self, path: &str, name: &str, value: impl AsRef<[u8]>) -> Layer {
        self.items.push(Item::Xattr {
            path: path.into(),
            name: name.into(),
            value: value.as_ref().to_vec(),
        });
        self
    }

    pub fn owner(mut self, path: &str, uid: u32, gid: u32) -> Layer {
        self.items.push(Item::Owner {
            path: path.into(),
            uid,
            gid,
        });
        self
    }

    /// Writes the layer into the existing, empty directory `root`.
    pub fn write(&self, root: &Path, reader: Reader) {
        for item in &self.items {
            write_item(root, item, reader);
        }
        set_times(root);
    }
}

/// `len` bytes of a pattern that depends on position and `seed`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    // The pattern repeats every 7 * 256 bytes; build one period and copy it
    // (a byte loop is slow in the unoptimised test build).
    let period: Vec<u8> = (0..7 * 256)
        .map(|i| ((i / 7) as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect();
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let n = (len - out.len()).min(period.len());
        out.extend_from_slice(&period[..n]);
    }
    out
}

fn parent_dirs(root: &Path, rel: &str) -> PathBuf {
    let full = root.join(rel);
    if let Some(parent) = full.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
    }
    full
}

fn ok<T>(what: &str, path: &Path, r: sys::SysResult<T>) -> T {
    r.unwrap_or_else(|e| panic!("writing layer: {what} {}: {e}", path.display()))
}

fn write_item(root: &Path, item: &Item, reader: Reader) {
    match item {
        Item::Dir { path, mode } => {
            let full = parent_dirs(root, path);
            if !full.is_dir() {
                ok("mkdir", &full, sys::mkdir(&full, 0o755));
            }
            ok("chmod", &full, sys::chmod(&full, *mode));
        }
        Item::File { path, data, mode } => {
            let full = parent_dirs(root, path);
            std::fs::write(&full, data)
                .unwrap_or_else(|e| panic!("writing {}: {e}", full.display()));
            ok("chmod", &full, sys::chmod(&full, *mode));
        }
        Item::Sparse { path, len, extents } => {
            use std::os::unix::fs::FileExt;
            let full = parent_dirs(root, path);
            let f = std::fs::File::create(&full)
                .unwrap_or_else(|e| panic!("creating {}: {e}", full.display()));
            f.set_len(*len).unwrap();
            for (off, data) in extents {
                f.write_all_at(data, *off).unwrap();
            }
        }
        Item::Symlink { path, target } => {
            let full = parent_dirs(root, path);
            ok("symlink", &full, sys::symlink(Path::new(target), &full));
        }
        Item::HardLink { path, existing } => {
            let full = parent_dirs(root, path);
            ok("link", &full, sys::link(&root.join(existing), &full));
        }
        Item::Fifo { path } => {
            let full = parent_dirs(root, path);
            ok("mkfifo", &full, sys::mknod(&full, libc::S_IFIFO | 0o644, 0));
        }
        Item::Whiteout { path, form } => {
            let full = parent_dirs(root, path);
            match reader.whiteout(*form) {
                WhiteoutForm::Oci => {
                    let name = full.file_name().expect("whiteout of a named entry");
                    let mut marker = b".wh.".to_vec();
                    marker.extend_from_slice(name.as_bytes());
                    let marker = full.with_file_name(std::ffi::OsStr::from_bytes(&marker));
                    std::fs::write(&marker, b"")
                        .unwrap_or_else(|e| panic!("writing {}: {e}", marker.display()));
                }
                WhiteoutForm::CharDev => {
                    ok(
                        "mknod whiteout",
                        &full,
                        sys::mknod(&full, libc::S_IFCHR, sys::makedev(0, 0)),
                    );
                }
                WhiteoutForm::Native => unreachable!("resolved by Reader::whiteout"),
            }
        }
        Item::Opaque { path, form } => {
            let full = parent_dirs(root, path);
            if !full.is_dir() {
                ok("mkdir", &full, sys::mkdir(&full, 0o755));
            }
            match reader.opaque(*form) {
                OpaqueForm::Oci => {
                    let marker = full.join(".wh..wh..opq");
                    std::fs::write(&marker, b"")
                        .unwrap_or_else(|e| panic!("writing {}: {e}", marker.display()));
                }
                OpaqueForm::TrustedXattr => {
                    ok(
                        "setxattr",
                        &full,
                        sys::lsetxattr(&full, "trusted.overlay.opaque", b"y", 0),
                    );
                }
                OpaqueForm::UserXattr => {
                    ok(
                        "setxattr",
                        &full,
                        sys::lsetxattr(&full, "user.overlay.opaque", b"y", 0),
                    );
                }
                OpaqueForm::Native => unreachable!("resolved by Reader::opaque"),
            }
        }
        Item::Xattr { path, name, value } => {
            let full = root.join(path);
            ok("setxattr", &full, sys::lsetxattr(&full, name, value, 0));
        }
        Item::Owner { path, uid, gid } => {
            let full = root.join(path);
            ok("lchown", &full, sys::lchown(&full, *uid, *gid));
        }
    }
}

/// Sets atime and mtime of everything under `root` (and `root`) to
/// [`LAYER_TIME`], children before their directory.
fn set_times(root: &Path) {
    fn walk(p: &Path) {
        let st = sys::lstat(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            let mut names: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            for child in names {
                walk(&child);
            }
        }
        let t = sys::timespec(LAYER_TIME, 0);
        ok(
            "utimensat",
            p,
            sys::utimensat(p, [t, t], libc::AT_SYMLINK_NOFOLLOW),
        );
    }
    walk(root);
}
