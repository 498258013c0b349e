//! Reading ahead across the files of a directory.

use super::*;
use crate::layer::{self, LowerFile};
use std::ffi::OsString;
use std::io;

/// A host directory layer that records what is asked of it ahead.
#[derive(Debug)]
struct Recording {
    inner: DirLayer,
    layer: usize,
    asked: Arc<parking_lot::Mutex<Vec<(usize, String, u64)>>>,
}

impl Layer for Recording {
    fn stat(&self, path: &Path) -> io::Result<Attr> {
        self.inner.stat(path)
    }
    fn read_dir(
        &self,
        path: &Path,
        each: &mut layer::EntryVisitor<'_>,
    ) -> io::Result<Vec<OsString>> {
        self.inner.read_dir(path, each)
    }
    fn readlink(&self, path: &Path) -> io::Result<OsString> {
        self.inner.readlink(path)
    }
    fn list_xattrs(&self, path: &Path) -> io::Result<Vec<OsString>> {
        self.inner.list_xattrs(path)
    }
    fn get_xattr(&self, path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
        self.inner.get_xattr(path, name)
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn LowerFile>> {
        self.inner.open(path)
    }
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn statfs(&self) -> io::Result<layer::FsStats> {
        self.inner.statfs()
    }
    fn links_of(&self, file_id: u64) -> io::Result<Vec<PathBuf>> {
        self.inner.links_of(file_id)
    }
    fn will_need(&self, path: &Path, len: u64) -> io::Result<()> {
        let p = path.to_string_lossy().into_owned();
        self.asked.lock().push((self.layer, p, len));
        self.inner.will_need(path, len)
    }
}

#[test]
fn read_ahead_asks_the_next_files_of_the_directory_in_readdir_order() {
    let fx = Fx::new(2);
    for i in 0..20 {
        fx.put(&format!("l1/d/f{i:02}"), "lower");
    }
    fx.put("l0/d/f05", &"x".repeat(300 * 1024)); // hides l1's, is large
    fs::create_dir_all(fx.root.join("l1/d/sub")).unwrap();
    let asked = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let lowers: Vec<Arc<dyn Layer>> = (0..2)
        .map(|i| {
            Arc::new(Recording {
                inner: DirLayer::new(&fx.root.join(format!("l{i}"))).unwrap(),
                layer: i,
                asked: asked.clone(),
            }) as Arc<dyn Layer>
        })
        .collect();
    let u = Union::new(Config {
        lowers,
        upper: Some(UpperConfig {
            upper: fx.root.join("upper"),
            work: fx.root.join("work"),
        }),
        metacopy: true,
        fsync: true,
    })
    .unwrap();
    let d = path_ino(&u, "d");
    // f07 copied up with its data: nothing left below to read ahead.
    let f07 = path_ino(&u, "d/f07");
    drop(u.open(f07, libc::O_RDWR, Defer::Nothing).unwrap());
    // f09 chmod'ed: a metacopy, its data still below.
    let f09 = path_ino(&u, "d/f09");
    let chmod = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    u.setattr(f09, &chmod, None).unwrap();

    let all = u.list_dir(d).unwrap();
    let files: Vec<DirEntry> = all
        .iter()
        .filter(|e| e.kind == Kind::File)
        .cloned()
        .collect();
    assert_eq!(files.len(), 20);
    let (dir, c) = u.position(files[0].ino).unwrap();
    assert_eq!((dir, c), (d, files[0].cookie));
    let sub = all.iter().find(|e| e.kind == Kind::Dir).unwrap();
    assert_eq!(u.position(sub.ino), None, "a directory is not read ahead");

    // The 20 entries after the first file, in readdir order, 12 at most
    // per call.
    let mut got = u.read_ahead(d, c, 12);
    assert_eq!(got.len(), 12);
    got.extend(u.read_ahead(d, *got.last().unwrap(), 12));
    let want: Vec<u64> = all.iter().map(|e| e.cookie).filter(|&x| x > c).collect();
    assert_eq!(got, want);
    assert!(u.read_ahead(d, *want.last().unwrap(), 12).is_empty());

    // Each file whose data is below, once, from the layer that holds it.
    let mut asked = asked.lock().clone();
    asked.sort();
    let mut expect: Vec<(usize, String, u64)> = files[1..]
        .iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .filter(|n| n != "f07")
        .map(|n| match n.as_str() {
            "f05" => (0, format!("d/{n}"), READ_AHEAD_BYTES),
            _ => (1, format!("d/{n}"), 5),
        })
        .collect();
    expect.sort();
    assert_eq!(asked, expect);
}
