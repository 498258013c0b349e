//! Unit tests of the union, on host directory layers, without a mount;
//! the fixture and helpers every case shares.

mod copyup;
mod inodes;
mod merge;
mod readahead;
mod stream;

pub(super) use super::*;
pub(super) use crate::layer::DirLayer;
use std::ffi::OsString;
pub(super) use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// The parent dir of `p`, open, and `p`'s name (for the xattr helpers).
fn parent_fd(p: &Path) -> (OwnedFd, OsString) {
    let dir = crate::sys::open_at(
        nix::fcntl::AT_FDCWD,
        p.parent().unwrap().as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .unwrap();
    (dir, p.file_name().unwrap().to_owned())
}

pub(super) fn xget(p: &Path, name: &str) -> Option<Vec<u8>> {
    let (d, n) = parent_fd(p);
    crate::sys::xattr::get(d.as_fd(), &n, libc::AT_SYMLINK_NOFOLLOW, OsStr::new(name)).unwrap()
}

pub(super) fn xset(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (d, n) = parent_fd(p);
    crate::sys::xattr::set(
        d.as_fd(),
        &n,
        libc::AT_SYMLINK_NOFOLLOW,
        OsStr::new(name),
        value,
        0,
    )
}

/// Layers under a temp dir: `l0` is the top lower layer.
pub(super) struct Fx {
    _t: tempfile::TempDir,
    root: PathBuf,
}

impl Fx {
    fn new(layers: usize) -> Fx {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        for i in 0..layers {
            fs::create_dir(root.join(format!("l{i}"))).unwrap();
        }
        fs::create_dir(root.join("upper")).unwrap();
        fs::create_dir(root.join("work")).unwrap();
        Fx { _t: t, root }
    }
    fn put(&self, rel: &str, data: &str) {
        let p = self.root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
    fn union(&self, layers: usize, metacopy: bool) -> Union {
        let lowers: Vec<Arc<dyn Layer>> = (0..layers)
            .map(|i| {
                Arc::new(DirLayer::new(&self.root.join(format!("l{i}"))).unwrap()) as Arc<dyn Layer>
            })
            .collect();
        Union::new(Config {
            lowers,
            upper: Some(UpperConfig {
                upper: self.root.join("upper"),
                work: self.root.join("work"),
            }),
            metacopy,
            fsync: true,
        })
        .unwrap()
    }
    fn upper(&self, rel: &str) -> PathBuf {
        self.root.join("upper").join(rel)
    }
}

pub(super) const ME: Caller = Caller { uid: 0, gid: 0 };

/// The listing's names, sorted by name (readdir order is by cookie).
pub(super) fn names(u: &Union, ino: u64) -> Vec<String> {
    let list = u.list_dir(ino).unwrap();
    assert!(
        list.windows(2).all(|w| w[0].cookie < w[1].cookie),
        "listing must be in cookie order"
    );
    let mut names: Vec<String> = list
        .iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub(super) fn path_ino(u: &Union, path: &str) -> u64 {
    let mut ino = ROOT_INO;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        ino = u.lookup(ino, OsStr::new(c)).unwrap().ino;
    }
    ino
}

pub(super) fn read_all(u: &Union, ino: u64) -> String {
    let f = u.open(ino, libc::O_RDONLY, Defer::Nothing).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read_at(&mut buf, out.len() as u64).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(out).unwrap()
}

pub(super) fn marker(p: &Path) -> Option<Vec<u8>> {
    xget(p, crate::whiteout::METACOPY_XATTR)
}
