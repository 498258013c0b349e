//! `rcfs commit` end to end, and containers of one image side by side:
//! a container's changes become a zstd:chunked layer whose entries (read
//! with `tar -t`) are what it changed, spelled as OCI layers spell them;
//! the new image runs at once, pushes, and runs from the registry in a
//! store that never saw it; several containers of an image run at once on
//! one cache.

use std::path::Path;
use std::sync::atomic::Ordering;

use crate::containers::{code, Fixture};
use crate::mounts::{cmd, run, Run};
use crate::registry::FaultProxy;

const T: std::time::Duration = std::time::Duration::from_secs(180);

/// The blob of the top layer of the image whose manifest digest is
/// `manifest` in `store`, and that manifest.
pub(crate) fn top_layer(store: &Path, manifest: &str) -> (std::path::PathBuf, serde_json::Value) {
    let blobs = store.join("blobs/sha256");
    let hex = manifest.trim().trim_start_matches("sha256:");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(hex)).unwrap()).unwrap();
    let layers = m["layers"].as_array().unwrap();
    let top = layers.last().unwrap()["digest"].as_str().unwrap();
    (blobs.join(top.trim_start_matches("sha256:")), m)
}

/// `tar -t` (with `-v`: `tar -tv`) of a zstd layer blob.
pub(crate) fn tar_list(blob: &Path, verbose: bool) -> Vec<String> {
    let flags = if verbose { "--zstd -tvf" } else { "--zstd -tf" };
    let mut c = cmd("tar", flags.split(' ').map(str::to_owned));
    c.arg(blob);
    let r = run(&mut c, T).expect_ok("tar -t");
    let mut v: Vec<String> = r.stdout.lines().map(str::to_owned).collect();
    v.sort();
    v
}

const CHANGES: &str = "busybox rm /usr/share/data/f003; \
    busybox rm -rf /opaque; busybox mkdir /opaque; echo fresh > /opaque/fresh; \
    echo added > /added; busybox ln /added /added-link; busybox ln -s /added /sym; \
    busybox mkfifo /fifo; \
    busybox chmod 600 /usr/share/data/big.bin; \
    echo more >> /usr/share/data/f001";

const CHECK: &str = "busybox cat /added /opaque/fresh; busybox ls /opaque; \
    busybox test -e /usr/share/data/f003 && echo f003 || echo no f003; \
    busybox stat -c '%a %h' /usr/share/data/big.bin /added; \
    busybox tail -c 5 /usr/share/data/f001; busybox readlink /sym; \
    busybox test -p /fifo && echo fifo; \
    busybox md5sum /usr/share/data/big.bin | busybox cut -c1-32";

#[test]
fn a_committed_container_runs_pushes_and_holds_its_whiteouts() {
    let f = Fixture::new(90, "gzip");
    let img = f.image.as_str();
    let before = f.run(&[
        "--rm",
        img,
        "/bin/sh",
        "-c",
        "busybox md5sum /usr/share/data/big.bin | busybox cut -c1-32",
    ]);
    assert_eq!(code(&before), Some(0), "{}", before.stderr);
    let r = f.run(&["--name", "c1", img, "/bin/sh", "-c", CHANGES]);
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    let dest = format!("{}/committed:v1", f.registry.host());
    let r = f
        .rcfs(&["commit", "-m", "a test", "c1", &dest])
        .expect_ok("commit");
    assert!(r.stderr.contains("committed c1 as"), "{}", r.stderr);

    // The new layer, as tar sees it: what changed, no more.
    let (blob, manifest) = top_layer(&f.store(), &r.stdout);
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        3,
        "{manifest}"
    );
    let top = &manifest["layers"][2];
    assert_eq!(
        top["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert!(
        top["annotations"]["io.github.containers.zstd-chunked.manifest-checksum"].is_string(),
        "a zstd:chunked layer: {top}"
    );
    assert_eq!(
        tar_list(&blob, false),
        [
            "added",
            "added-link",
            "etc/",
            "fifo",
            "opaque/",
            "opaque/.wh..wh..opq",
            "opaque/fresh",
            "sym",
            "usr/",
            "usr/share/",
            "usr/share/data/",
            "usr/share/data/.wh.f003",
            "usr/share/data/big.bin",
            "usr/share/data/f001",
        ],
        "the mount targets rcfs run made (proc, dev, sys, etc/hosts, etc/resolv.conf) stay out"
    );
    let long = tar_list(&blob, true);
    let line = |name: &str| {
        long.iter()
            .find(|l| l.contains(&format!(" {name}")))
            .unwrap_or_else(|| panic!("{name} in {long:?}"))
            .clone()
    };
    assert!(
        line("usr/share/data/big.bin").starts_with("-rw-------"),
        "{long:?}"
    );
    assert!(
        line("added-link").ends_with("added-link link to added"),
        "{long:?}"
    );
    assert!(line("sym").starts_with('l'), "{long:?}");
    assert!(line("fifo").starts_with('p'), "{long:?}");

    // It runs at once, from the store.
    let md5 = before.stdout.trim();
    let want = format!("added\nfresh\nfresh\nno f003\n600 1\n644 2\nmore\n/added\nfifo\n{md5}\n");
    let r = f.run(&["--rm", &dest, "/bin/sh", "-c", CHECK]);
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, want, "{}", r.stderr);

    // It pushes, and runs from the registry in a store that never had it.
    f.rcfs(&["push", "--tls-verify=false", &dest])
        .expect_ok("push");
    let fresh = f.dir.path().join("fresh-store");
    let mut c = cmd(
        crate::mounts::RCFS,
        ["--root".to_owned(), fresh.display().to_string()],
    );
    c.args([
        "run",
        "--rm",
        "--tls-verify=false",
        &dest,
        "/bin/sh",
        "-c",
        CHECK,
    ]);
    let r = run(&mut c, T);
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, want, "{}", r.stderr);

    // What a container wrote goes with rm.
    f.rcfs(&["rm", "c1"]).expect_ok("rm");
    let r = f.run(&[
        "--name",
        "c1",
        "--rm",
        img,
        "/bin/sh",
        "-c",
        "busybox test -e /added",
    ]);
    assert_eq!(code(&r), Some(1), "{}", r.stderr);

    // Bad input: no such container.
    let r = f.rcfs(&["commit", "nope", "x:v1"]);
    assert!(
        !r.success() && r.stderr.contains("no container nope"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_unprivileged_user_commits_a_container() {
    let f = Fixture::new(91, "zstd:chunked");
    let home = f.dir.path().join("home");
    let r = f.run_rootless(
        &home,
        &[
            "--name",
            "u1",
            &f.image,
            "/bin/sh",
            "-c",
            "echo mine > /mine; busybox rm /new.txt",
        ],
    );
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    let r = f
        .rcfs_rootless(&home, &["commit", "u1", "localhost/mine:v1"])
        .expect_ok("commit as uid 65534");
    let store = home.join(".local/share/rcfs");
    let (blob, _) = top_layer(&store, &r.stdout);
    // etc/ too: the container's /etc/hosts mount target went in it (and
    // stays out of the layer).
    assert_eq!(tar_list(&blob, false), [".wh.new.txt", "etc/", "mine"]);
    let long = tar_list(&blob, true);
    // Its files are root's in the container: 0/0 in the layer.
    assert!(
        long.iter()
            .any(|l| l.contains(" 0/0 ") && l.ends_with(" .wh.new.txt")),
        "{long:?}"
    );
    assert!(
        long.iter()
            .any(|l| l.contains(" 0/0 ") && l.ends_with(" mine")),
        "{long:?}"
    );
    let r = f.run_rootless(
        &home,
        &[
            "--rm",
            "localhost/mine:v1",
            "/bin/sh",
            "-c",
            "busybox cat /mine; busybox ls /new.txt",
        ],
    );
    assert_eq!(code(&r), Some(1), "{}", r.stderr);
    assert_eq!(r.stdout, "mine\n", "{}", r.stderr);
}

/// Three containers of one lazily pulled image at once: each waits until
/// all three run (a bind-mounted dir is their meeting place), then reads
/// the image's 6 MB file. A fourth, later, fetches nothing: what the others
/// fetched is in the store's cache.
#[test]
fn containers_of_one_image_run_at_once_on_one_cache() {
    let f = Fixture::new(92, "zstd:chunked");
    let proxy = FaultProxy::start(f.registry.port);
    let image = f.image.replace(&f.registry.host(), &proxy.host());
    let meet = f.dir.path().join("meet");
    std::fs::create_dir_all(&meet).unwrap();
    let bind = format!("{}:/meet", meet.display());
    let script = "busybox touch /meet/$(busybox hostname); \
        for i in $(busybox seq 300); do \
          [ $(busybox ls /meet | busybox wc -l) -ge 3 ] && break; busybox sleep 0.1; done; \
        busybox ls /meet | busybox wc -l; \
        busybox md5sum /usr/share/data/big.bin | busybox cut -c1-32";
    let children: Vec<_> = (0..3)
        .map(|i| {
            let mut c = cmd(
                crate::mounts::RCFS,
                ["--root".to_owned(), f.store().display().to_string()],
            );
            c.args(["run", "--rm", "--tls-verify=false", "--hostname"]);
            c.arg(format!("c{i}"));
            c.args(["-v", &bind, &image, "/bin/sh", "-c", script]);
            std::thread::spawn(move || run(&mut c, T))
        })
        .collect();
    let runs: Vec<Run> = children.into_iter().map(|c| c.join().unwrap()).collect();
    let mut sums = Vec::new();
    for r in &runs {
        assert_eq!(code(r), Some(0), "{}", r.stderr);
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines[0], "3", "all three ran at once: {}", r.stdout);
        sums.push(lines[1].to_owned());
    }
    assert!(sums.iter().all(|s| s == &sums[0]), "{sums:?}");
    let after = proxy.faults.bytes.load(Ordering::SeqCst);
    let r = f.run(&[
        "--rm",
        &image,
        "/bin/sh",
        "-c",
        "busybox md5sum /usr/share/data/big.bin | busybox cut -c1-32",
    ]);
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    assert_eq!(r.stdout.trim(), sums[0]);
    let more = proxy.faults.bytes.load(Ordering::SeqCst) - after;
    assert!(
        more < 64 << 10,
        "a later container reads what the others fetched from the cache: {more} more bytes"
    );
}
