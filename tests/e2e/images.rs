//! Images end to end: images built here, pushed with skopeo to a real
//! registry on loopback as gzip, zstd and zstd:chunked, pulled and mounted
//! by rcfs, and compared byte for byte (and attribute for attribute) with
//! the tree `umoci unpack` makes of the same image. Failures are injected by
//! a proxy in front of the registry.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::harness::temp_dir;
use crate::mounts::{cmd, require_privileges, run, Run, RCFS};
use crate::registry::{standard_layers, unpack_reference, write_layout, FaultProxy, Registry};
use crate::snapshot::{diff, snapshot};

pub(crate) const T: Duration = Duration::from_secs(180);

/// `rcfs --root STORE args...`.
pub(crate) fn rcfs(store: &Path, args: &[&str]) -> Command {
    let mut c = cmd(RCFS, ["--root".to_owned(), store.display().to_string()]);
    c.args(args);
    c
}

/// A mounted image, unmounted when dropped.
pub(crate) struct ImageMount {
    store: PathBuf,
    pub(crate) mnt: PathBuf,
}

impl ImageMount {
    pub(crate) fn new(store: &Path, image: &str, mnt: &Path, extra: &[&str]) -> ImageMount {
        std::fs::create_dir_all(mnt).unwrap();
        let mut args = vec!["mount", image, mnt.to_str().unwrap()];
        args.extend_from_slice(extra);
        run(&mut rcfs(store, &args), T).expect_ok("rcfs mount IMAGE");
        ImageMount {
            store: store.to_owned(),
            mnt: mnt.to_owned(),
        }
    }

    /// `rcfs stats` as name → value.
    pub(crate) fn stats(&self) -> std::collections::HashMap<String, u64> {
        let r = run(
            &mut rcfs(&self.store, &["stats", self.mnt.to_str().unwrap()]),
            T,
        )
        .expect_ok("rcfs stats");
        r.stdout
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect()
    }
}

impl Drop for ImageMount {
    fn drop(&mut self) {
        let _ = run(&mut cmd(RCFS, ["umount", self.mnt.to_str().unwrap()]), T);
    }
}

/// A registry with one image built from `layers` pushed as `format`, and
/// the layout and reference tree of that image.
pub(crate) struct Case {
    dir: tempfile::TempDir,
    pub(crate) registry: Registry,
    pub(crate) layout: PathBuf,
    reference: PathBuf,
}

impl Case {
    pub(crate) fn new(seed: u64) -> Case {
        require_privileges();
        let dir = temp_dir();
        let layout = dir.path().join("layout");
        write_layout(&layout, "v1", &standard_layers(seed));
        let reference = unpack_reference(&layout, "v1", &dir.path().join("bundle"));
        Case {
            registry: Registry::start(),
            layout,
            reference,
            dir,
        }
    }

    pub(crate) fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub(crate) fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The mount's tree equals the reference tree.
    pub(crate) fn assert_same_tree(&self, mnt: &Path) {
        let (want, got) = (snapshot(&self.reference), snapshot(mnt));
        let d = diff("umoci unpack", &want, "rcfs", &got);
        assert!(
            d.is_empty(),
            "the mounted image differs from the unpacked one:\n{d}"
        );
    }
}

pub(crate) fn pull(store: &Path, image: &str, extra: &[&str]) -> Run {
    let mut args = vec!["pull", "--tls-verify=false", image];
    args.extend_from_slice(extra);
    run(&mut rcfs(store, &args), T)
}

#[test]
fn zstd_chunked_image_is_mounted_lazily_and_reads_what_was_pushed() {
    let c = Case::new(1);
    c.registry.push(&c.layout, "v1", "lazy", "zstd:chunked");
    let proxy = FaultProxy::start(c.registry.port);
    let image = format!("{}/lazy:v1", proxy.host());
    let r = pull(&c.store(), &image, &[]).expect_ok("rcfs pull");
    assert!(r.stderr.contains("2 lazy"), "{}", r.stderr);
    let after_pull = proxy.faults.bytes.load(Ordering::SeqCst);
    assert!(
        after_pull < 200_000,
        "a lazy pull fetches tables of contents only: {after_pull} bytes"
    );

    let m = ImageMount::new(&c.store(), &image, &c.path("mnt"), &[]);
    // One small file: a few requests and bytes, not the 6 MB file next to it.
    let got = std::fs::read_to_string(m.mnt.join("etc/hostname")).unwrap();
    assert_eq!(got, "top 1\n");
    let s = m.stats();
    assert!(
        s["bytes_fetched"] < 700_000,
        "the file and at most 512 KiB read ahead: {s:?}"
    );
    assert!(s["requests"] >= 1, "{s:?}");
    let listed = std::fs::read_dir(m.mnt.join("usr/share/data"))
        .unwrap()
        .count();
    assert_eq!(
        listed,
        300 - 1 + 2,
        "f002 whited out; big.bin and f000-link added"
    );
    // Everything, compared with umoci's unpacking of the same image.
    c.assert_same_tree(&m.mnt);
    let s = m.stats();
    let blob_total: u64 = std::fs::read_dir(c.layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        s["bytes_fetched"] <= blob_total,
        "each byte about once: {s:?}, all blobs {blob_total}"
    );
    assert_eq!(s["digest_errors"], 0);
    // Hard links are one inode.
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        std::fs::metadata(m.mnt.join("usr/share/data/f000")).unwrap(),
        std::fs::metadata(m.mnt.join("usr/share/data/f000-link")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    // Unmounted, the server is gone with its stats socket.
    let run_dir = c.store().join("run");
    drop(m);
    let left: Vec<_> = std::fs::read_dir(&run_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn gzip_and_zstd_images_are_indexed_and_served_as_pushed() {
    for (i, format) in ["gzip", "zstd"].into_iter().enumerate() {
        let c = Case::new(10 + i as u64);
        let image = c.registry.push(&c.layout, "v1", "plain", format);
        let r = pull(&c.store(), &image, &[]).expect_ok("rcfs pull");
        assert!(
            r.stderr.contains("2 fetched whole"),
            "{format}: {}",
            r.stderr
        );
        let m = ImageMount::new(&c.store(), &image, &c.path("mnt"), &[]);
        c.assert_same_tree(&m.mnt);
        assert_eq!(
            m.stats()["requests"],
            0,
            "{format}: all data was in the store"
        );
    }
}

/// A lazy layer's first start is kept as its start order: the next mount
/// with an empty cache fetches what that start read before anything asks
/// for it, and the same reads then wait for nothing.
#[test]
fn a_lazy_layers_first_start_is_fetched_first_by_the_next_mount() {
    let c = Case::new(22);
    c.registry.push(&c.layout, "v1", "lazy", "zstd:chunked");
    let proxy = FaultProxy::start(c.registry.port);
    let image = format!("{}/lazy:v1", proxy.host());
    pull(&c.store(), &image, &[]).expect_ok("rcfs pull");
    let start = [
        "etc/hostname",
        "usr/share/data/f005",
        "usr/share/data/f012",
        "new.txt",
    ];
    let records = || -> Vec<String> {
        std::fs::read_dir(c.store().join("layers/sha256"))
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect()
    };
    assert!(records().iter().all(|r| !r.contains("start_order")));
    {
        let m = ImageMount::new(&c.store(), &image, &c.path("mnt"), &[]);
        for f in start {
            std::fs::read(m.mnt.join(f)).unwrap();
        }
    }
    assert_eq!(
        records()
            .iter()
            .filter(|r| r.contains("start_order"))
            .count(),
        2,
        "{:?}",
        records()
    );
    // An empty cache: the next mount fetches the start by itself.
    run(&mut rcfs(&c.store(), &["gc", "--all"]), T).expect_ok("rcfs gc --all");
    let m = ImageMount::new(&c.store(), &image, &c.path("mnt"), &[]);
    // Until its fetches have been still for 1.5 s (each layer's start is
    // fetched by the mount's pool, however busy the machine is).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = (0, std::time::Instant::now());
    while std::time::Instant::now() < deadline {
        let n = m.stats()["requests"];
        if n != last.0 {
            last = (n, std::time::Instant::now());
        } else if n > 0 && last.1.elapsed() > Duration::from_millis(1500) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = m.stats();
    assert!(before["bytes_fetched"] > 0, "{before:?}");
    for f in start {
        assert_eq!(
            std::fs::read(m.mnt.join(f)).unwrap(),
            std::fs::read(c.path("bundle/rootfs").join(f)).unwrap()
        );
    }
    let after = m.stats();
    // The start's bytes (new.txt's 100 KB of them) were there before it
    // asked. (A few small files' chunks are still fetched again at times:
    // under investigation, so only bytes are held to here.)
    assert!(before["bytes_fetched"] >= 100_000, "{before:?}");
    assert!(
        after["bytes_fetched"] - before["bytes_fetched"] < 2_000,
        "the start's files were there before it asked: {before:?} {after:?} {:?}",
        records()
    );
}

/// The store's trees (the binary index a mount reads): made at the pull,
/// one per layer, 0600; one short, damaged or gone is built again from
/// the layer's TOC, and the image reads the same. Damage found while
/// mounted gives EIO (never another answer), says so, and the next mount
/// is whole again.
#[test]
fn a_short_damaged_or_missing_tree_is_built_again() {
    use std::os::unix::fs::PermissionsExt;
    let c = Case::new(21);
    let lazy = c.registry.push(&c.layout, "v1", "lazy", "zstd:chunked");
    let plain = c.registry.push(&c.layout, "v1", "plain", "gzip");
    let trees_dir = c.store().join("trees");
    let trees = || {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&trees_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    for image in [&lazy, &plain] {
        pull(&c.store(), image, &[]).expect_ok("rcfs pull");
    }
    let made = trees();
    assert_eq!(made.len(), 4, "two layers of two images: {made:?}");
    for t in &made {
        let md = std::fs::metadata(t).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o600, "{t:?}");
    }
    let sizes: Vec<u64> = made
        .iter()
        .map(|t| std::fs::metadata(t).unwrap().len())
        .collect();
    // Short, and gone: built again at the mount, silently.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&made[0])
        .unwrap();
    f.set_len(sizes[0] / 2).unwrap();
    std::fs::remove_file(&made[1]).unwrap();
    for image in [&lazy, &plain] {
        let m = ImageMount::new(&c.store(), image, &c.path("mnt"), &[]);
        c.assert_same_tree(&m.mnt);
    }
    assert_eq!(trees(), made);
    let again: Vec<u64> = made
        .iter()
        .map(|t| std::fs::metadata(t).unwrap().len())
        .collect();
    assert_eq!(again, sizes);
    // Damaged where the root's entries are (the uid of the root's first
    // child, past the 256-byte header and the root's 96-byte record):
    // found when the root is first listed.
    for t in &made {
        let mut b = std::fs::read(t).unwrap();
        b[256 + 96 + 16] ^= 1;
        std::fs::write(t, &b).unwrap();
    }
    // A listing of the root reads the top layer's root first: its damage
    // fails the listing (and the tree goes), then the next layer's.
    for image in [&lazy, &plain] {
        let mut failed = 0;
        loop {
            let m = ImageMount::new(&c.store(), image, &c.path("mnt"), &[]);
            // (Entries hold the directory open: counted, not kept.)
            let listed = std::fs::read_dir(&m.mnt)
                .and_then(|d| d.map(|e| e.map(|_| ())).collect::<Result<Vec<_>, _>>());
            match listed {
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{image}: {e}");
                    failed += 1;
                    assert!(failed <= 2, "{image}: a damaged tree stayed");
                }
                Ok(_) => {
                    c.assert_same_tree(&m.mnt);
                    break;
                }
            }
        }
        assert_eq!(
            failed, 2,
            "{image}: each of its two layers' damage was found"
        );
    }
    assert_eq!(trees(), made);
    // gc keeps the trees of images it keeps, and drops the others'.
    run(&mut rcfs(&c.store(), &["rmi", &plain]), T).expect_ok("rcfs rmi");
    run(&mut rcfs(&c.store(), &["gc"]), T).expect_ok("rcfs gc");
    assert_eq!(trees().len(), 2, "{:?}", trees());
    let m = ImageMount::new(&c.store(), &lazy, &c.path("mnt"), &[]);
    c.assert_same_tree(&m.mnt);
}

/// With `--unverified-streaming` (the files of a layer are served before
/// its digest is checked).
#[test]
fn a_tar_image_mounts_at_once_and_its_files_are_readable_as_they_arrive() {
    let c = Case::new(12);
    c.registry.push(&c.layout, "v1", "streamed", "gzip");
    let proxy = FaultProxy::start(c.registry.port);
    // The base layer's first 3 MiB (busybox and /etc, not the 6 MB file
    // after them nor the 300 files after that) arrive; the rest waits.
    proxy
        .faults
        .hold_blobs_after
        .store(3 << 20, Ordering::SeqCst);
    let image = format!("{}/streamed:v1", proxy.host());
    let m = ImageMount::new(
        &c.store(),
        &image,
        &c.path("mnt"),
        &["--tls-verify=false", "--unverified-streaming"],
    );
    assert_eq!(
        std::fs::read_to_string(m.mnt.join("etc/hostname")).unwrap(),
        "top 12\n"
    );
    let busybox = m.mnt.join("bin/busybox");
    let out = run(&mut cmd(busybox.to_str().unwrap(), ["echo", "ran"]), T).expect_ok("busybox");
    assert_eq!(out.stdout, "ran\n");
    // Not streamed yet: waits.
    let late = m.mnt.join("usr/share/data/f100");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read_to_string(late));
    });
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
    let listed = run(&mut rcfs(&c.store(), &["images"]), T).expect_ok("images");
    assert!(
        !listed.stdout.contains("streamed"),
        "recorded before its layers were: {}",
        listed.stdout
    );
    let s = m.stats();
    assert!(s["pull_layers_pending"] >= 1, "{s:?}");
    assert_eq!(s["pull_layers"], 2, "{s:?}");
    proxy.faults.release.store(true, Ordering::SeqCst);
    let got = rx.recv_timeout(T).unwrap().unwrap();
    assert_eq!(got, "small file 100 of 12\n".repeat(100 % 7 + 1));
    c.assert_same_tree(&m.mnt);
    // Recorded once every layer is: a later mount needs no pull.
    let t0 = std::time::Instant::now();
    while !run(&mut rcfs(&c.store(), &["images"]), T)
        .expect_ok("images")
        .stdout
        .contains("streamed")
    {
        assert!(t0.elapsed() < T, "the image was never recorded");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(m.stats()["pull_layers_pending"], 0);
    drop(m);
    let requests = proxy.faults.requests.load(Ordering::SeqCst);
    let m = ImageMount::new(&c.store(), &image, &c.path("mnt"), &[]);
    c.assert_same_tree(&m.mnt);
    assert_eq!(proxy.faults.requests.load(Ordering::SeqCst), requests);
}

/// By default a tar layer mounted while it streams is served once it has
/// streamed whole and its digest was checked: a read of a file that has
/// arrived waits for that, then gets what was pushed.
#[test]
fn a_tar_image_mounted_while_pulled_serves_a_layer_once_its_digest_is_checked() {
    let c = Case::new(14);
    c.registry.push(&c.layout, "v1", "checked", "gzip");
    let proxy = FaultProxy::start(c.registry.port);
    // busybox and /etc of the base layer arrive; the rest waits.
    proxy
        .faults
        .hold_blobs_after
        .store(3 << 20, Ordering::SeqCst);
    let image = format!("{}/checked:v1", proxy.host());
    let m = ImageMount::new(&c.store(), &image, &c.path("mnt"), &["--tls-verify=false"]);
    let busybox = m.mnt.join("bin/busybox");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read(busybox).map(|b| b.len()));
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(1000)).is_err(),
        "a file of a layer whose digest was not checked yet was served"
    );
    assert!(m.stats()["pull_layers_pending"] >= 1);
    proxy.faults.release.store(true, Ordering::SeqCst);
    let got = rx.recv_timeout(T).unwrap().unwrap();
    assert_eq!(got as u64, std::fs::metadata("/bin/busybox").unwrap().len());
    c.assert_same_tree(&m.mnt);
}

/// gc takes nothing from a pull under way: it refuses while one runs (the
/// layer the pull has recorded belongs to no image yet), and the image the
/// pull records afterwards is whole.
#[test]
fn gc_takes_nothing_from_a_pull_under_way() {
    let c = Case::new(21);
    c.registry.push(&c.layout, "v1", "pulling", "gzip");
    let proxy = FaultProxy::start(c.registry.port);
    // The top layer arrives whole; the base layer's first 3 MiB, and the
    // rest once released.
    proxy
        .faults
        .hold_blobs_after
        .store(3 << 20, Ordering::SeqCst);
    let image = format!("{}/pulling:v1", proxy.host());
    let mut pulling = rcfs(&c.store(), &["pull", "--tls-verify=false", &image])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let records = c.store().join("layers/sha256");
    let recorded = || {
        std::fs::read_dir(&records)
            .map(|d| d.filter_map(|e| e.ok()).count())
            .unwrap_or(0)
    };
    let t0 = std::time::Instant::now();
    while recorded() == 0 {
        assert!(t0.elapsed() < T, "the pull recorded no layer");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = recorded();
    let r = run(&mut rcfs(&c.store(), &["gc"]), T);
    assert!(
        !r.success() && r.stderr.contains("being pulled"),
        "gc ran under a pull: {}",
        r.stderr
    );
    assert!(recorded() >= before);
    proxy.faults.release.store(true, Ordering::SeqCst);
    assert!(pulling.wait().unwrap().success());
    run(&mut rcfs(&c.store(), &["gc"]), T).expect_ok("gc after the pull");
    let m = ImageMount::new(&c.store(), &image, &c.path("mnt"), &[]);
    c.assert_same_tree(&m.mnt);
}

#[test]
fn what_images_share_is_fetched_once() {
    let c = Case::new(20);
    let a = c.registry.push(&c.layout, "v1", "first", "gzip");
    // Image B: the same base layer, another top layer.
    let mut layers = standard_layers(20);
    layers[1] = crate::registry::tar_layer(&[crate::registry::Item::File(
        "other.txt",
        b"b\n".to_vec(),
        0o644,
    )]);
    let layout_b = c.path("layout-b");
    write_layout(&layout_b, "v1", &layers);
    let b = c.registry.push(&layout_b, "v1", "second", "gzip");
    pull(&c.store(), &a, &[]).expect_ok("pull A");
    let r = pull(&c.store(), &b, &[]).expect_ok("pull B");
    assert!(r.stderr.contains("1 already in the store"), "{}", r.stderr);
    let images = run(&mut rcfs(&c.store(), &["images", "--json"]), T).expect_ok("images");
    assert!(
        images.stdout.contains("/first:v1") && images.stdout.contains("/second:v1"),
        "{}",
        images.stdout
    );
    // Removing A and collecting keeps B whole.
    run(&mut rcfs(&c.store(), &["rmi", &a]), T).expect_ok("rmi");
    run(&mut rcfs(&c.store(), &["gc"]), T).expect_ok("gc");
    let m = ImageMount::new(&c.store(), &b, &c.path("mnt"), &[]);
    assert!(
        std::fs::read(m.mnt.join("usr/share/data/big.bin")).unwrap()
            == crate::registry::noise(6 << 20, 20)
    );
    // Not while an image is mounted: it could remove what the mount reads.
    let r = run(&mut rcfs(&c.store(), &["gc"]), T);
    assert!(
        !r.success() && r.stderr.contains("are mounted"),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read_to_string(m.mnt.join("other.txt")).unwrap(),
        "b\n"
    );
}

#[test]
fn bad_registries_and_bytes_give_clear_errors_and_leave_the_store_as_it_was() {
    let c = Case::new(30);
    c.registry.push(&c.layout, "v1", "img", "gzip");
    // Other content, so skopeo cannot reuse the gzip blobs for it.
    let lazy_layout = c.path("layout-lazy");
    write_layout(&lazy_layout, "v1", &standard_layers(31));
    c.registry.push(&lazy_layout, "v1", "lazy", "zstd:chunked");
    let proxy = FaultProxy::start(c.registry.port);
    let store = c.store();
    let images = || {
        run(&mut rcfs(&store, &["images", "--json"]), T)
            .expect_ok("images")
            .stdout
    };

    proxy.faults.down.store(true, Ordering::SeqCst);
    let r = pull(&store, &format!("{}/img:v1", proxy.host()), &[]);
    assert!(
        !r.success() && r.stderr.contains("cannot reach registry"),
        "{}",
        r.stderr
    );
    proxy.faults.down.store(false, Ordering::SeqCst);

    let r = pull(&store, &format!("{}/img:nosuchtag", proxy.host()), &[]);
    assert!(!r.success() && r.stderr.contains("404"), "{}", r.stderr);
    let r = pull(&store, "127.0.0.1:1/img:v1", &[]);
    assert!(
        !r.success() && r.stderr.contains("cannot reach registry"),
        "{}",
        r.stderr
    );

    proxy.faults.flip_blobs.store(true, Ordering::SeqCst);
    let r = pull(&store, &format!("{}/img:v1", proxy.host()), &[]);
    assert!(
        !r.success() && r.stderr.contains("does not match its digest"),
        "{}",
        r.stderr
    );
    assert_eq!(images().trim(), "[]", "nothing recorded");
    assert_eq!(
        std::fs::read_dir(store.join("layers/sha256"))
            .unwrap()
            .count(),
        0,
        "no layer records"
    );
    proxy.faults.flip_blobs.store(false, Ordering::SeqCst);

    // Two 503s, then the registry answers: retried, not failed.
    proxy.faults.unavailable.store(2, Ordering::SeqCst);
    pull(&store, &format!("{}/img:v1", proxy.host()), &[]).expect_ok("pull after 503s");
    assert_eq!(proxy.faults.unavailable.load(Ordering::SeqCst), 0);

    // A lazy mount whose blob comes back corrupt: EIO, never wrong bytes;
    // then right once the registry is.
    let lazy = format!("{}/lazy:v1", proxy.host());
    // A table of contents that does not match its annotation.
    proxy.faults.flip_blobs.store(true, Ordering::SeqCst);
    let r = pull(&store, &lazy, &[]);
    assert!(
        !r.success() && r.stderr.contains("does not match"),
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr.matches("does not match").count(),
        1,
        "said once: {}",
        r.stderr
    );
    proxy.faults.flip_blobs.store(false, Ordering::SeqCst);
    let r = pull(&store, &lazy, &[]).expect_ok("lazy pull");
    assert!(r.stderr.contains("2 lazy"), "{}", r.stderr);
    let m = ImageMount::new(&store, &lazy, &c.path("mnt"), &[]);
    proxy.faults.flip_blobs.store(true, Ordering::SeqCst);
    match std::fs::read(m.mnt.join("usr/share/data/big.bin")) {
        Ok(_) => panic!("a corrupt blob was served"),
        Err(err) => assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}"),
    }
    assert!(m.stats()["digest_errors"] + m.stats()["fetch_errors"] > 0);
    proxy.faults.flip_blobs.store(false, Ordering::SeqCst);
    proxy.faults.resets.store(1, Ordering::SeqCst);
    assert!(
        std::fs::read(m.mnt.join("usr/share/data/big.bin")).unwrap()
            == crate::registry::noise(6 << 20, 31)
    );
}

#[test]
fn oci_layout_and_docker_archive_sources() {
    let c = Case::new(40);
    let oci = format!("oci:{}:v1", c.layout.display());
    pull(&c.store(), &oci, &[]).expect_ok("pull oci:");
    let m = ImageMount::new(&c.store(), &oci, &c.path("mnt"), &[]);
    c.assert_same_tree(&m.mnt);
    drop(m);
    let archive = c.path("image.tar");
    run(
        &mut cmd(
            "skopeo",
            [
                "copy".to_owned(),
                "-q".into(),
                oci.clone(),
                format!("docker-archive:{}:demo/arch:v2", archive.display()),
            ],
        ),
        T,
    )
    .expect_ok("skopeo to docker-archive");
    let r = pull(
        &c.store(),
        &format!("docker-archive:{}", archive.display()),
        &[],
    )
    .expect_ok("pull docker-archive:");
    assert!(r.stderr.contains("docker.io/demo/arch:v2"), "{}", r.stderr);
    let m = ImageMount::new(&c.store(), "docker.io/demo/arch:v2", &c.path("mnt2"), &[]);
    c.assert_same_tree(&m.mnt);
}

#[test]
fn an_image_mount_with_an_upper_dir_copies_up() {
    let c = Case::new(50);
    let image = c.registry.push(&c.layout, "v1", "rw", "zstd:chunked");
    let (upper, work) = (c.path("upper"), c.path("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    // Not pulled yet: mount pulls it lazily.
    let m = ImageMount::new(
        &c.store(),
        &image,
        &c.path("mnt"),
        &[
            "--tls-verify=false",
            "--upper",
            upper.to_str().unwrap(),
            "--work",
            work.to_str().unwrap(),
        ],
    );
    let f = m.mnt.join("usr/share/data/big.bin");
    let mut data = std::fs::read(&f).unwrap();
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(b"tail")
        .unwrap();
    data.extend_from_slice(b"tail");
    assert!(std::fs::read(&f).unwrap() == data);
    std::fs::remove_file(m.mnt.join("etc/hostname")).unwrap();
    drop(m);
    assert!(std::fs::read(upper.join("usr/share/data/big.bin")).unwrap() == data);
    assert!(
        std::fs::symlink_metadata(upper.join("etc/.wh.hostname")).is_ok()
            || std::fs::symlink_metadata(upper.join("etc/hostname")).is_ok()
    );
}

#[test]
fn an_unprivileged_user_pulls_and_mounts_into_its_own_store() {
    let c = Case::new(60);
    let image = c.registry.push(&c.layout, "v1", "rootless", "zstd:chunked");
    let _ = Command::new("chmod").args(["666", "/dev/fuse"]).status();
    let home = c.path("home");
    std::fs::create_dir_all(home.join("mnt")).unwrap();
    std::os::unix::fs::chown(c.dir.path(), Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::chown(home.join("mnt"), Some(65534), Some(65534)).unwrap();
    // The 6 MB file twice: fetched lazily, then (a new mount) from the
    // store file it became, which a rootless server reads through a
    // mapping (no passthrough).
    let script = format!(
        "set -e; {rcfs} pull --tls-verify=false {image}; {rcfs} mount {image} {mnt}; cat {mnt}/etc/hostname; \
         sha256sum {mnt}/{big}; \
         {rcfs} stats {mnt} | grep -q requests; {rcfs} umount {mnt}; test -d {home}/.local/share/rcfs/blobs/sha256; \
         {rcfs} mount {image} {mnt}; sha256sum {mnt}/{big}; dd if={mnt}/{big} bs=1000 skip=5000 count=3 status=none | sha256sum; \
         {rcfs} umount {mnt}",
        rcfs = RCFS,
        mnt = home.join("mnt").display(),
        home = home.display(),
        big = "usr/share/data/big.bin",
    );
    let mut sh = Command::new("setpriv");
    sh.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "sh",
        "-c",
        &script,
    ]);
    sh.env("HOME", &home).env_remove("XDG_DATA_HOME");
    let r = run(&mut sh, T).expect_ok("rootless pull + mount");
    assert!(r.stdout.contains("top 60"), "{}", r.stdout);
    let big = crate::registry::noise(6 << 20, 60);
    let whole = rcfs_fs::image::digest::Digest::of(&big).hex();
    let piece = rcfs_fs::image::digest::Digest::of(&big[5_000_000..5_003_000]).hex();
    let sums: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.len() == 64)
        .collect();
    assert_eq!(sums, [&whole, &whole, &piece], "{}", r.stdout);
}

/// The regular files of each layer of `oci:LAYOUT:TAG` (bottom first), in
/// tar order, decompressed with plain zstd.
fn layer_files(layout: &Path) -> Vec<Vec<String>> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(
                l["mediaType"],
                "application/vnd.oci.image.layer.v1.tar+zstd"
            );
            let tar_bytes =
                zstd::stream::decode_all(&blob(l["digest"].as_str().unwrap())[..]).unwrap();
            let mut ar = tar::Archive::new(&tar_bytes[..]);
            ar.entries()
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.header().entry_type() == tar::EntryType::Regular && e.size() > 0)
                .map(|e| e.path().unwrap().to_string_lossy().into_owned())
                .collect()
        })
        .collect()
}

#[test]
fn convert_with_a_trace_push_and_pull_lazily_and_other_tools_read_it() {
    let c = Case::new(70);
    let src = c.registry.push(&c.layout, "v1", "src", "gzip");
    let store = c.store();
    pull(&store, &src, &[]).expect_ok("pull");
    // What a start reads, recorded.
    let trace = c.path("trace.txt");
    {
        let m = ImageMount::new(
            &store,
            &src,
            &c.path("mnt"),
            &["--record-trace", trace.to_str().unwrap()],
        );
        for f in [
            "etc/hostname",
            "usr/share/data/f100",
            "bin/busybox",
            "etc/hostname",
        ] {
            std::fs::read(m.mnt.join(f)).unwrap();
        }
    }
    let text = std::fs::read_to_string(&trace).unwrap();
    let (lines, reads): (Vec<String>, Vec<String>) = text
        .lines()
        .map(str::to_owned)
        .partition(|l| !l.starts_with("/read "));
    assert_eq!(
        lines,
        ["etc/hostname", "usr/share/data/f100", "bin/busybox"],
        "first opens, each once"
    );
    // And the first read of each chunk the server read for them.
    assert!(
        reads.contains(&"/read 0 7 etc/hostname".to_owned()),
        "{reads:?}"
    );

    let dst = format!("{}/converted:v1", c.registry.host());
    let r = run(
        &mut rcfs(
            &store,
            &["convert", "--trace", trace.to_str().unwrap(), &src, &dst],
        ),
        T,
    )
    .expect_ok("convert");
    assert!(r.stderr.contains("2 zstd:chunked layers"), "{}", r.stderr);
    {
        // Served from the store's blobs, lazily.
        let m = ImageMount::new(&store, &dst, &c.path("mnt2"), &[]);
        c.assert_same_tree(&m.mnt);
    }
    run(&mut rcfs(&store, &["push", "--tls-verify=false", &dst]), T).expect_ok("push");

    // Other tools read it as an ordinary tar+zstd image, with the traced
    // files first in their layers.
    let copy = c.path("copy");
    run(
        &mut cmd(
            "skopeo",
            [
                "copy".to_owned(),
                "-q".into(),
                "--src-tls-verify=false".into(),
                format!("docker://{dst}"),
                format!("oci:{}:v1", copy.display()),
            ],
        ),
        T,
    )
    .expect_ok("skopeo copy from the registry");
    // (Debian's umoci reads no zstd: skopeo decompresses the layers for it.)
    let copy_gz = c.path("copy-gz");
    run(
        &mut cmd(
            "skopeo",
            [
                "copy".to_owned(),
                "-q".into(),
                "--dest-compress".into(),
                "--dest-compress-format".into(),
                "gzip".into(),
                format!("oci:{}:v1", copy.display()),
                format!("oci:{}:v1", copy_gz.display()),
            ],
        ),
        T,
    )
    .expect_ok("skopeo recompressing the conversion as gzip");
    let unpacked = unpack_reference(&copy_gz, "v1", &c.path("bundle2"));
    let d = diff(
        "umoci unpack of the original",
        &snapshot(&c.reference),
        "umoci unpack of rcfs's conversion",
        &snapshot(&unpacked),
    );
    assert!(d.is_empty(), "{d}");
    // The base layer says where the start's reads are, in their order.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copy.join("index.json")).unwrap()).unwrap();
    let m_hex = index["manifests"][0]["digest"].as_str().unwrap()[7..].to_owned();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copy.join("blobs/sha256").join(m_hex)).unwrap())
            .unwrap();
    let order = manifest["layers"][1]["annotations"]["io.github.rcfs.start-order"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(order.contains('+'), "{manifest}");
    let files = layer_files(&copy);
    // (The base layer has its own etc/hostname, which the top one hides.)
    assert_eq!(
        &files[0][..3],
        ["etc/hostname", "usr/share/data/f100", "bin/busybox"],
        "base layer order: {:?}",
        &files[0][..4]
    );
    assert_eq!(files[1][0], "etc/hostname");

    // A fresh store pulls it lazily and a start fetches little.
    let proxy = FaultProxy::start(c.registry.port);
    let image = format!("{}/converted:v1", proxy.host());
    let store2 = c.path("store2");
    let r = pull(&store2, &image, &[]).expect_ok("lazy pull of the conversion");
    assert!(r.stderr.contains("2 lazy"), "{}", r.stderr);
    let m = ImageMount::new(&store2, &image, &c.path("mnt3"), &[]);
    for f in &lines {
        std::fs::read(m.mnt.join(f)).unwrap();
    }
    let s = m.stats();
    let busybox = std::fs::metadata("/bin/busybox").unwrap().len();
    assert!(
        s["bytes_fetched"] < busybox + (1 << 20),
        "the start's files and little more: {s:?}"
    );
    c.assert_same_tree(&m.mnt);
}

/// Root's `rcfs mount IMAGE --allow-other` hands the image to every user:
/// its setuid files and device nodes are not honoured (nosuid,nodev)
/// unless asked with --suid / --dev. (Before, another user read a
/// root-only block device through the image's node and got uid 0 through
/// its setuid binary.)
#[test]
fn root_image_mounts_are_nosuid_nodev_unless_asked() {
    require_privileges();
    let dir = temp_dir();
    let mut b = tar::Builder::new(Vec::new());
    let mut entry =
        |path: &str, kind: tar::EntryType, mode: u32, dev: Option<(u32, u32)>, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            if let Some((major, minor)) = dev {
                h.set_device_major(major).unwrap();
                h.set_device_minor(minor).unwrap();
            }
            b.append_data(&mut h, path, data).unwrap();
        };
    entry("dev", tar::EntryType::Directory, 0o755, None, b"");
    entry("dev/null", tar::EntryType::Char, 0o666, Some((1, 3)), b"");
    entry("dev/loop0", tar::EntryType::Block, 0o666, Some((7, 0)), b"");
    entry("bin", tar::EntryType::Directory, 0o755, None, b"");
    let sh = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    entry("bin/id", tar::EntryType::Regular, 0o4755, None, &sh);
    let layer = b.into_inner().unwrap();
    let layout = dir.path().join("layout");
    write_layout(&layout, "v1", &[layer]);
    let store = dir.path().join("store");
    let image = format!("oci:{}:v1", layout.display());
    pull(&store, &image, &[]).expect_ok("pull oci:");
    let opts = |mnt: &Path| -> Vec<String> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        info.lines()
            .rev()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .find(|f| f.get(4) == Some(&mnt.to_str().unwrap()))
            .map(|f| f[5].split(',').map(str::to_owned).collect())
            .unwrap_or_else(|| panic!("{} is not mounted", mnt.display()))
    };
    let m = ImageMount::new(&store, &image, &dir.path().join("m1"), &["--allow-other"]);
    let o = opts(&m.mnt);
    for want in ["nosuid", "nodev"] {
        assert!(
            o.iter().any(|x| x == want),
            "root's image mount is not {want}: {o:?}"
        );
    }
    // The node is there, but opens as no device.
    let node = std::fs::symlink_metadata(m.mnt.join("dev/null")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &node.file_type()
    ));
    let e = std::fs::File::open(m.mnt.join("dev/null")).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EACCES),
        "open of a nodev node: {e}"
    );
    drop(m);
    let m = ImageMount::new(
        &store,
        &image,
        &dir.path().join("m2"),
        &["--allow-other", "--suid", "--dev"],
    );
    let o = opts(&m.mnt);
    for unwanted in ["nosuid", "nodev"] {
        assert!(
            !o.iter().any(|x| x == unwanted),
            "--suid --dev: still {unwanted}: {o:?}"
        );
    }
    std::fs::File::open(m.mnt.join("dev/null")).expect("--dev: the image's /dev/null opens");
}
