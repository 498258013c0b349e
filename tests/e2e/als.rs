//! `rcfs als` as podman's Additional Layer Store, checked with Debian's
//! podman 4.3 itself (overlay driver, a storage of its own in the test's
//! dir, `--storage-opt overlay.additionallayerstore=MNT:ref`): as root,
//! and rootless with the store run inside `podman unshare` (as
//! stargz-store documents). podman must take zstd:chunked layers from the
//! store without pulling them (its layer's `diff` is a symlink into the
//! store), run the image, see through its own overlay mount the tree
//! podman 5 extracts from tests/fixtures/podman5-chunked (whiteouts and
//! opaque dirs in overlay form), save it (which reads `blob`), and remove
//! it (every use released); a gzip layer it pulls itself; a store that
//! was killed gives podman an error that names it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::containers::Fixture;
use crate::mounts::{mount_info, run, Run, RCFS};
use crate::podman5::{assert_podmans_tree, upload};
use crate::podman_compare::User;
use crate::registry::{noise, standard_layers, write_layout};

const T: Duration = Duration::from_secs(180);

/// A running `rcfs als`, stopped (and its mount gone) when dropped.
struct Store {
    child: Child,
    mnt: PathBuf,
    log: PathBuf,
    /// How to unmount it: `umount`, or for a user's store `podman unshare
    /// umount`.
    unmount: Box<dyn Fn()>,
}

impl Store {
    /// Starts `cmd` (an `rcfs als` command line) and waits for its mount.
    fn start(mut cmd: Command, mnt: &Path, log: &Path, unmount: Box<dyn Fn()>) -> Store {
        let out = std::fs::File::create(log).unwrap();
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd.spawn().expect("starting rcfs als");
        let s = Store {
            child,
            mnt: mnt.to_owned(),
            log: log.to_owned(),
            unmount,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !s.log().contains("serving layers at") {
            assert!(
                Instant::now() < deadline,
                "rcfs als did not start: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The uses podman holds of each layer directory, as the store last
    /// logged them.
    fn uses(&self) -> std::collections::BTreeMap<String, i64> {
        let mut out = std::collections::BTreeMap::new();
        for line in self.log().lines() {
            let Some((_, rest)) = line.split_once("rcfs_fs::als] layer ") else {
                continue;
            };
            let Some((layer, n)) = rest.rsplit_once(" (") else {
                continue;
            };
            let layer = layer
                .trim_end_matches(": used")
                .trim_end_matches(": released");
            out.insert(layer.to_owned(), n.trim_end_matches(')').parse().unwrap());
        }
        out
    }

    /// Stops it the way a user would (unmounting), and waits for it.
    fn stop(mut self) -> std::process::ExitStatus {
        (self.unmount)();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "rcfs als did not end: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mnt)
            .stderr(Stdio::null())
            .status();
    }
}

/// podman as root, with the overlay driver and a storage of its own
/// under `dir`, looking layers up in the store at `mnt` first.
fn podman(dir: &Path, mnt: &Path, args: &[&str]) -> Run {
    let mut c = Command::new("podman");
    podman_args(&mut c, dir, mnt);
    c.args(args);
    run(&mut c, T)
}

fn podman_args(c: &mut Command, dir: &Path, mnt: &Path) {
    let p = |n: &str| dir.join(n).display().to_string();
    c.args(["--root", &p("root"), "--runroot", &p("runroot")])
        .args(["--tmpdir", &p("tmp"), "--storage-driver", "overlay"])
        .args(["--storage-opt"])
        .arg(format!(
            "overlay.additionallayerstore={}:ref",
            mnt.display()
        ))
        .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
        .args(["--runtime", "runc"]);
}

/// The options `podman run` needs as root here: its default limits are
/// above what a process without CAP_SYS_RESOURCE may set.
fn limits() -> Vec<String> {
    let mut nofile = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) };
    let n = nofile.rlim_max.min(1 << 20);
    vec![
        "--ulimit".into(),
        format!("nofile={n}:{n}"),
        "--ulimit".into(),
        "nproc=10000:10000".into(),
    ]
}

/// Layer diff dirs of podman's storage under `root` that are symlinks into
/// the store at `mnt` (layers it took from there), and those that are not.
fn layer_diffs(root: &Path, mnt: &Path) -> (usize, usize) {
    let (mut from_store, mut own) = (0, 0);
    for e in std::fs::read_dir(root.join("overlay")).unwrap().flatten() {
        let diff = e.path().join("diff");
        match std::fs::read_link(&diff) {
            Ok(t) if t.starts_with(mnt) => from_store += 1,
            Ok(t) => panic!("{} links to {}", diff.display(), t.display()),
            Err(_) if diff.is_dir() => own += 1,
            Err(_) => {}
        }
    }
    (from_store, own)
}

/// What the standard image's files say, run by `sh -c` in a container
/// (its /etc/hostname, the file the top layer changes, is podman's own in
/// a container).
const CHECK: &str = "ls /opaque; test -e /usr/share/data/f002 || echo f002 gone; \
    stat -c %h /usr/share/data/f000; sha256sum /new.txt | cut -c1-64";

fn expected(seed: u64) -> String {
    let sum = rcfs_fs::image::digest::Digest::of(&noise(100_000, seed + 1)).hex();
    format!("visible\nf002 gone\n2\n{sum}\n")
}

#[test]
fn podman_as_root_takes_chunked_layers_from_rcfs_als() {
    let f = Fixture::new(190, "zstd:chunked");
    let dir = f.dir.path();
    let gz_layout = dir.join("gz-layout");
    write_layout(&gz_layout, "v1", &standard_layers(191));
    let gz = f.registry.push(&gz_layout, "v1", "gz", "gzip");
    upload(&f.registry, "podman5");
    let p5 = format!("{}/podman5:v1", f.registry.host());
    let mnt = dir.join("als");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut c = Command::new(RCFS);
    c.arg("--root")
        .arg(f.store())
        .args(["als", "--tls-verify=false"])
        .arg(&mnt);
    let m2 = mnt.clone();
    let als = Store::start(
        c,
        &mnt,
        &dir.join("als.log"),
        Box::new(move || {
            let _ = Command::new("umount").arg(&m2).status();
        }),
    );
    assert_eq!(
        mount_info(&mnt).map(|m| m.0),
        Some("fuse.rcfs-als".to_owned())
    );
    let pod = dir.join("podman");

    // Both zstd:chunked layers come from the store: podman's layer dirs
    // link there, and the image runs.
    podman(&pod, &mnt, &["pull", "-q", "--tls-verify=false", &f.image]).expect_ok("podman pull");
    assert_eq!(
        layer_diffs(&pod.join("root"), &mnt),
        (2, 0),
        "{}",
        als.log()
    );
    let mut args: Vec<String> = vec!["run".into(), "--rm".into(), "--net=host".into()];
    args.extend(limits());
    args.extend([f.image.clone(), "/bin/sh".into(), "-c".into(), CHECK.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = podman(&pod, &mnt, &args).expect_ok("podman run");
    assert_eq!(r.stdout, expected(190));
    let r = podman(&pod, &mnt, &["image", "mount", &f.image]).expect_ok("podman image mount");
    let hostname = Path::new(r.stdout.trim()).join("etc/hostname");
    assert_eq!(std::fs::read_to_string(hostname).unwrap(), "top 190\n");
    podman(&pod, &mnt, &["image", "unmount", &f.image]).expect_ok("podman image unmount");

    // podman's own overlay mount of podman 5's image (whiteouts, opaque
    // dirs, hard links, xattrs, zero chunks) is the tree podman 5 extracts.
    podman(&pod, &mnt, &["pull", "-q", "--tls-verify=false", &p5]).expect_ok("podman pull");
    assert_eq!(layer_diffs(&pod.join("root"), &mnt), (4, 0));
    let r = podman(&pod, &mnt, &["image", "mount", &p5]).expect_ok("podman image mount");
    assert_podmans_tree(Path::new(r.stdout.trim()));
    podman(&pod, &mnt, &["image", "unmount", &p5]).expect_ok("podman image unmount");

    // podman save reads each layer's blob, unpacks it and saves it
    // packed again (gzip): unpacked, the registry's blob byte for byte.
    let archive = dir.join("saved.tar");
    let out = archive.to_str().unwrap();
    podman(
        &pod,
        &mnt,
        &["save", "--format", "oci-archive", "-o", out, &f.image],
    )
    .expect_ok("podman save");
    let mut saved = std::collections::BTreeSet::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    for e in ar.entries().unwrap() {
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e.unwrap(), &mut data).unwrap();
        if data.starts_with(&[0x1f, 0x8b]) {
            let mut tar = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&data[..]), &mut tar)
                .unwrap();
            saved.insert(rcfs_fs::image::digest::Digest::of(&tar).hex());
        }
    }
    let get = |path: &str| {
        let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
        let (status, body) = crate::registry::http(&f.registry.host(), "GET", path, &accept, b"");
        assert_eq!(status, 200, "{path}");
        body
    };
    let manifest: serde_json::Value = serde_json::from_slice(&get("/v2/ctr/manifests/v1")).unwrap();
    let want: std::collections::BTreeSet<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let blob = get(&format!("/v2/ctr/blobs/{}", l["digest"].as_str().unwrap()));
            let tar = zstd::stream::decode_all(&blob[..]).unwrap();
            rcfs_fs::image::digest::Digest::of(&tar).hex()
        })
        .collect();
    assert_eq!(saved, want);

    // A gzip layer is not the store's to serve: podman pulls it itself.
    podman(&pod, &mnt, &["pull", "-q", "--tls-verify=false", &gz]).expect_ok("podman pull gzip");
    assert_eq!(layer_diffs(&pod.join("root"), &mnt), (4, 2));
    assert!(als.log().contains("not zstd:chunked"), "{}", als.log());

    // Removing the images releases every use podman took.
    podman(&pod, &mnt, &["rmi", "-a"]).expect_ok("podman rmi");
    let uses = als.uses();
    assert_eq!(uses.len(), 4, "{}", als.log());
    assert!(uses.values().all(|n| *n == 0), "{uses:?}\n{}", als.log());

    // The store is in rcfs's own list of images (its layers kept by gc).
    let r = f.rcfs(&["images"]).expect_ok("rcfs images");
    assert!(
        r.stdout.contains("ctr") && r.stdout.contains("podman5"),
        "{}",
        r.stdout
    );

    // A store that was killed: podman, starting a container on its
    // layers, says which path it cannot reach.
    podman(&pod, &mnt, &["pull", "-q", "--tls-verify=false", &f.image]).expect_ok("podman pull");
    let mut als = als;
    als.child.kill().unwrap();
    als.child.wait().unwrap();
    let mut args: Vec<String> = vec!["run".into(), "--rm".into(), "--net=host".into()];
    args.extend(limits());
    args.extend([f.image.clone(), "/bin/true".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = podman(&pod, &mnt, &args);
    assert!(
        !r.success() && r.stderr.contains("transport endpoint is not connected"),
        "{}",
        r.stderr
    );
}

#[test]
fn rootless_podman_takes_layers_from_rcfs_als_in_podman_unshare() {
    let f = Fixture::new(192, "zstd:chunked");
    let u = User::new("rcfs-e2e-als", f.dir.path());
    let dir = u.home.clone();
    let mnt = dir.join("als");
    std::fs::create_dir_all(&mnt).unwrap();
    let _ = Command::new("chown")
        .args(["-R", &format!("{}:", u.name), dir.to_str().unwrap()])
        .status();
    let pod = dir.join("podman");
    let user_podman = |args: &[&str]| -> Run {
        let mut c = u.cmd("podman");
        podman_args(&mut c, &pod, &mnt);
        c.args(args);
        run(&mut c, T)
    };
    // The store runs in podman's user and mount namespaces: its files'
    // owners are the container's, and its mount is where podman mounts.
    let mut c = u.cmd("podman");
    c.args(["unshare", RCFS, "als", "--tls-verify=false"])
        .arg(&mnt);
    let unmount = {
        let mut um = u.cmd("podman");
        um.args(["unshare", "umount"]).arg(&mnt);
        std::sync::Mutex::new(um)
    };
    let als = Store::start(
        c,
        &mnt,
        &dir.join("als.log"),
        Box::new(move || {
            let _ = unmount.lock().unwrap().status();
        }),
    );
    user_podman(&["pull", "-q", "--tls-verify=false", &f.image]).expect_ok("podman pull");
    assert_eq!(
        layer_diffs(&pod.join("root"), &mnt),
        (2, 0),
        "{}",
        als.log()
    );
    let r = user_podman(&[
        "run",
        "--rm",
        "--net=host",
        &f.image,
        "/bin/sh",
        "-c",
        &format!("{CHECK}; stat -c %u:%g /etc/hostname; id -u"),
    ])
    .expect_ok("podman run");
    assert_eq!(r.stdout, format!("{}0:0\n0\n", expected(192)));
    user_podman(&["rmi", "-a"]).expect_ok("podman rmi");
    assert!(als.uses().values().all(|n| *n == 0), "{}", als.log());
    // Stopped by unmounting: it ends, and leaves nothing mounted.
    assert!(als.stop().success());
}
