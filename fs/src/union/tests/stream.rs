//! A union over a layer still arriving: names the stream has passed are
//! found at once, the rest wait for it, and loading the directory later
//! keeps what was looked up early.

use super::*;
use crate::cache::BlockCache;
use crate::image::cas::{temp_cas, Cas};
use crate::image::toc::{DataIn, Toc, TocEntry, TocJson};
use crate::layer::{ImageLayer, Stream};
use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

/// A stream of one layer and what has been pushed to it.
struct Feed {
    files: Arc<Cas>,
    cache: Arc<BlockCache>,
    stream: Arc<Stream>,
    entries: Vec<TocEntry>,
}

impl Feed {
    fn new(t: &Path, id: &str) -> Feed {
        let files = Arc::new(temp_cas(t, &format!("files-{id}")));
        let cache = Arc::new(BlockCache::new(1 << 20, None, 0, Some(files.clone())));
        let stream = Stream::new(id.into(), cache.clone());
        Feed {
            files,
            cache,
            stream,
            entries: Vec::new(),
        }
    }
    fn push(&mut self, e: TocEntry) {
        self.stream.push(&e);
        self.entries.push(e);
    }
    fn dir(&mut self, name: &str) {
        self.push(TocEntry {
            kind: "dir".into(),
            name: format!("{name}/"),
            mode: 0o755,
            ..Default::default()
        });
    }
    fn file(&mut self, name: &str, data: &str) {
        let mut w = self.files.writer().unwrap();
        w.write_all(data.as_bytes()).unwrap();
        let digest = w.commit(None, false).unwrap();
        self.push(TocEntry {
            kind: "reg".into(),
            name: name.into(),
            mode: 0o644,
            size: data.len() as i64,
            digest: if data.is_empty() {
                String::new()
            } else {
                digest.to_string()
            },
            ..Default::default()
        });
    }
    fn hardlink(&mut self, name: &str, target: &str) {
        self.push(TocEntry {
            kind: "hardlink".into(),
            name: name.into(),
            link_name: target.into(),
            ..Default::default()
        });
    }
    /// Ends the stream with the layer of everything pushed.
    fn finish(&self) {
        let json = TocJson {
            version: 1,
            entries: self.entries.clone(),
            tar_split_digest: None,
        };
        let toc = Toc::parse(&json, DataIn::Store).unwrap();
        let id = self.stream.layer().id().to_owned();
        let layer = ImageLayer::new(id, toc, None, self.cache.clone(), false).unwrap();
        self.stream.finish(Ok(Arc::new(layer)));
    }
}

fn union_of(fx: &Fx, lowers: Vec<Arc<dyn Layer>>) -> Arc<Union> {
    Arc::new(
        Union::new(Config {
            lowers,
            upper: Some(UpperConfig {
                upper: fx.root.join("upper"),
                work: fx.root.join("work"),
            }),
            metacopy: true,
            fsync: false,
        })
        .unwrap(),
    )
}

/// Runs `f` on another thread; its result arrives on the receiver.
fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

const WAIT: Duration = Duration::from_millis(150);

#[test]
fn names_the_stream_passed_are_found_before_it_ends() {
    let fx = Fx::new(0);
    let mut feed = Feed::new(&fx.root, "sha256:s0");
    let u = union_of(&fx, vec![Arc::new(feed.stream.layer())]);
    feed.dir("bin");
    feed.file("bin/sh", "a shell");
    let sh = path_ino(&u, "bin/sh");
    assert_eq!(read_all(&u, sh), "a shell");

    // Not passed yet: waits for the entry.
    let u2 = u.clone();
    let etc = spawn(move || u2.lookup(ROOT_INO, OsStr::new("etc")).map(|s| s.ino));
    // Never there: waits for the end.
    let u3 = u.clone();
    let nope = spawn(move || u3.lookup(ROOT_INO, OsStr::new("nope")).map(|s| s.ino));
    // A listing waits for the end.
    let u4 = u.clone();
    let listing = spawn(move || names(&u4, ROOT_INO));
    assert!(etc.recv_timeout(WAIT).is_err(), "etc is not there yet");
    feed.dir("etc");
    let etc = etc.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert!(nope.recv_timeout(WAIT).is_err(), "the stream has not ended");
    assert!(listing.try_recv().is_err(), "the stream has not ended");
    feed.file("etc/passwd", "root:x:0:0");
    feed.finish();
    let e = nope
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    assert_eq!(
        listing.recv_timeout(Duration::from_secs(5)).unwrap(),
        ["bin", "etc"]
    );
    // Loading took over the nodes looked up early.
    assert_eq!(path_ino(&u, "bin/sh"), sh);
    assert_eq!(path_ino(&u, "etc"), etc);
    assert_eq!(names(&u, path_ino(&u, "bin")), ["sh"]);
    assert_eq!(read_all(&u, path_ino(&u, "etc/passwd")), "root:x:0:0");
}

#[test]
fn a_layer_above_decides_first_and_hard_links_stay_one_file() {
    let fx = Fx::new(1);
    fx.put("l0/base", "from below");
    fx.put("l0/gone", "whited out above");
    fx.put("l0/d/old", "hidden by an opaque dir");
    let mut top = Feed::new(&fx.root, "sha256:top");
    let below: Arc<dyn Layer> = Arc::new(DirLayer::new(&fx.root.join("l0")).unwrap());
    let u = union_of(&fx, vec![Arc::new(top.stream.layer()), below]);
    top.file("f", "linked");
    top.file(".wh.gone", "");
    top.dir("d");
    top.file("d/.wh..wh..opq", "");
    top.file("d/new", "above");
    top.dir("own");
    top.file("own/x", "only above");
    // In the top layer, and nothing below can be hidden: found at once.
    let f = path_ino(&u, "f");
    assert_eq!(read_all(&u, f), "linked");
    assert_eq!(read_all(&u, path_ino(&u, "own/x")), "only above");
    // A dir in both: whether the top layer hides the one below is known
    // only at its end.
    let u2 = u.clone();
    let d = spawn(move || u2.lookup(ROOT_INO, OsStr::new("d")).map(|s| s.ino));
    // Only below: the top layer may still list it, so this waits too.
    let u3 = u.clone();
    let base = spawn(move || u3.lookup(ROOT_INO, OsStr::new("base")).map(|s| s.ino));
    assert!(d.recv_timeout(WAIT).is_err());
    assert!(base.try_recv().is_err());
    top.hardlink("g", "f");
    top.finish();
    let d = d.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    base.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(names(&u, d), ["new"]);
    let e = u.lookup(ROOT_INO, OsStr::new("gone")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    assert_eq!(names(&u, ROOT_INO), ["base", "d", "f", "g", "own"]);
    // `f` was looked up before its second name arrived: still one file.
    let g = path_ino(&u, "g");
    assert_eq!(g, f);
    assert_eq!(u.getattr(f).unwrap().attr.nlink, 2);
}

#[test]
fn a_failed_stream_fails_what_waits_for_it() {
    let fx = Fx::new(0);
    let mut feed = Feed::new(&fx.root, "sha256:s1");
    let u = union_of(&fx, vec![Arc::new(feed.stream.layer())]);
    feed.file("early", "here");
    let u2 = u.clone();
    let late = spawn(move || u2.lookup(ROOT_INO, OsStr::new("late")).map(|s| s.ino));
    assert!(late.recv_timeout(WAIT).is_err());
    feed.stream.finish(Err("connection reset".into()));
    let e = late
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap_err();
    assert_eq!(crate::error::errno_of(&e), libc::EIO);
    assert!(e.to_string().contains("connection reset"), "{e}");
    // What arrived stays readable.
    assert_eq!(read_all(&u, path_ino(&u, "early")), "here");
    assert!(u.list_dir(ROOT_INO).is_err());
}
