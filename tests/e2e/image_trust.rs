//! Hostile images and registries against the store and the pull: an image
//! that claims another image's layer digest, and a registry that serves
//! tampered layer bytes. What the store records and what a program sees
//! must be only what was checked (DESIGN.md "Trust").

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::harness::temp_dir;
use crate::mounts::{cmd, require_privileges, run, Run, RCFS};
use crate::registry::{tar_layer, write_layout, FaultProxy, Item, Registry};

const T: Duration = Duration::from_secs(180);

/// `rcfs --root STORE args...`.
fn rcfs(store: &Path, args: &[&str]) -> Command {
    let mut c = cmd(RCFS, ["--root".to_owned(), store.display().to_string()]);
    c.args(args);
    c
}

fn pull(store: &Path, image: &str) -> Run {
    run(&mut rcfs(store, &["pull", "--tls-verify=false", image]), T)
}

/// Reads `files` of `image` through a mount of it (unmounted after).
fn read_through_mount(store: &Path, image: &str, mnt: &Path, files: &[&str]) -> Vec<String> {
    std::fs::create_dir_all(mnt).unwrap();
    let m = mnt.to_str().unwrap();
    run(
        &mut rcfs(store, &["mount", "--tls-verify=false", image, m]),
        T,
    )
    .expect_ok("rcfs mount");
    let got = files
        .iter()
        .map(|f| std::fs::read_to_string(mnt.join(f)).unwrap_or_else(|e| format!("<{e}>")))
        .collect();
    run(&mut cmd(RCFS, ["umount", m]), T).expect_ok("rcfs umount");
    got
}

/// A base layer with busybox and `who` in /etc/hostname, and a top layer
/// with an /etc/motd and a /usr/bin/id of `who`.
fn layers(who: &str) -> Vec<Vec<u8>> {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    vec![
        tar_layer(&[
            Item::Dir("bin", 0o755),
            Item::File("bin/busybox", busybox, 0o755),
            Item::Symlink("bin/sh", "busybox"),
            Item::Dir("etc", 0o755),
            Item::File("etc/hostname", format!("{who} base\n").into_bytes(), 0o644),
        ]),
        tar_layer(&[
            Item::Dir("etc", 0o755),
            Item::File("etc/motd", format!("{who} motd\n").into_bytes(), 0o644),
            Item::Dir("usr/bin", 0o755),
            Item::File(
                "usr/bin/id",
                format!("#!/bin/sh\necho {who} id\n").into_bytes(),
                0o755,
            ),
        ]),
    ]
}

/// Finding 12 (store poisoning): an untrusted image whose zstd:chunked
/// layer descriptor claims the blob digest of a trusted image's layer,
/// with annotations pointing at its own TOC (its registry serves its own
/// blob under that digest), is pulled and read. A later pull of the
/// trusted image must not take the attacker's record for its layer: it
/// fetches and checks its own TOC, and its mount shows its own files.
#[test]
fn an_image_claiming_another_images_layer_digest_does_not_poison_the_store() {
    require_privileges();
    let dir = temp_dir();
    let reg = Registry::start();
    let store = dir.path().join("store");
    let (trusted_layout, evil_layout) = (dir.path().join("trusted"), dir.path().join("evil"));
    write_layout(&trusted_layout, "v1", &layers("trusted"));
    write_layout(&evil_layout, "v1", &layers("evil"));
    let trusted = reg.push(&trusted_layout, "v1", "trusted", "zstd:chunked");
    reg.push(&evil_layout, "v1", "evil", "zstd:chunked");

    // The attacker's manifest: its own layers, but the top one names the
    // trusted top layer's blob digest (linked into its repository, so the
    // registry takes the manifest), keeping its own TOC annotations.
    let trusted_top = reg.manifest("trusted", "v1")["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut m = reg.manifest("evil", "v1");
    let evil_top = m["layers"][1]["digest"].as_str().unwrap().to_owned();
    assert_ne!(trusted_top, evil_top);
    let annotations = m["layers"][1]["annotations"].as_object().unwrap();
    assert!(
        annotations.keys().any(|k| k.contains("manifest-checksum")),
        "a zstd:chunked layer: {annotations:?}"
    );
    m["layers"][1]["digest"] = trusted_top.clone().into();
    reg.mount_blob("evil", &trusted_top, "trusted");
    reg.put_manifest("evil", "poisoned", &m);
    // Its registry serves the attacker's blob under the claimed digest.
    let proxy = FaultProxy::start(reg.port);
    proxy.faults.rewrite.lock().unwrap().push((
        format!("/v2/evil/blobs/{trusted_top}"),
        format!("/v2/evil/blobs/{evil_top}"),
    ));
    let evil = format!("{}/evil:poisoned", proxy.host());

    // Pulled and run once: its files are read (and their chunks cached).
    pull(&store, &evil).expect_ok("rcfs pull of the attacker's image");
    let got = read_through_mount(
        &store,
        &evil,
        &dir.path().join("mnt-evil"),
        &["etc/motd", "usr/bin/id"],
    );
    assert_eq!(got, ["evil motd\n", "#!/bin/sh\necho evil id\n"]);

    // The trusted image gets its own layers, checked, and its own files.
    let r = pull(&store, &trusted).expect_ok("rcfs pull of the trusted image");
    assert!(
        r.stderr
            .contains("(2 lazy, 0 fetched whole, 0 fetched by chunks, 0 already in the store)"),
        "the trusted image's top layer was taken from the attacker's record: {}",
        r.stderr
    );
    let got = read_through_mount(
        &store,
        &trusted,
        &dir.path().join("mnt-trusted"),
        &["etc/motd", "usr/bin/id", "etc/hostname"],
    );
    assert_eq!(
        got,
        [
            "trusted motd\n",
            "#!/bin/sh\necho trusted id\n",
            "trusted base\n"
        ]
    );
    // Both stay in the store, each with its own record.
    let r = pull(&store, &trusted).expect_ok("rcfs pull again");
    assert!(r.stderr.contains("2 already in the store"), "{}", r.stderr);
    let got = read_through_mount(&store, &evil, &dir.path().join("mnt-evil"), &["etc/motd"]);
    assert_eq!(got, ["evil motd\n"]);
}

/// `data` as gzip of stored (uncompressed) blocks: its size depends only
/// on the length of `data`, so two layers of equal length are two blobs of
/// equal size.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The size of the file at the end of [`base_layer`].
const BIG: usize = 8 << 20;

/// A base layer with busybox, what a container start looks up, a script
/// `bin/run-me` that prints `says` (padded, so both versions of the layer
/// have one length), and then a large file: a start finds all it needs
/// long before the layer's end.
fn base_layer(says: &str) -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut script = format!("#!/bin/busybox sh\necho {says}\n").into_bytes();
    script.resize(200, b'\n');
    let etc = |s: &str| s.as_bytes().to_vec();
    tar_layer(&[
        Item::Dir("bin", 0o755),
        Item::File("bin/busybox", busybox, 0o755),
        Item::Symlink("bin/sh", "busybox"),
        Item::File("bin/run-me", script, 0o755),
        Item::Dir("dev", 0o755),
        Item::Dir("proc", 0o755),
        Item::Dir("sys", 0o755),
        Item::Dir("tmp", 0o1777),
        Item::Dir("etc", 0o755),
        Item::File("etc/passwd", etc("root:x:0:0:root:/:/bin/sh\n"), 0o644),
        Item::File("etc/group", etc("root:x:0:\n"), 0o644),
        Item::File("etc/hosts", etc("127.0.0.1 localhost\n"), 0o644),
        Item::File("etc/resolv.conf", etc(""), 0o644),
        Item::File("etc/hostname", etc("base\n"), 0o644),
        Item::Dir("usr/share", 0o755),
        Item::File("usr/share/big.bin", crate::registry::noise(BIG, 13), 0o644),
    ])
}

/// An image of gzip layers `layers` (plain tars, bottom first) pushed as
/// `repo:v1` by hand; the manifest's digest.
fn push_gzip_image(reg: &Registry, repo: &str, layers: &[Vec<u8>]) -> String {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let gz = gzip_stored(l);
        let d = reg.put_blob(repo, &gz);
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": gz.len()}));
        diff_ids.push(rcfs_fs::image::digest::Digest::of(l).to_string());
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": rcfs_fs::image::pull::host_arch(), "os": "linux",
        "config": {"Cmd": ["/bin/run-me"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let cd = reg.put_blob(repo, &config);
    reg.put_manifest(
        repo,
        "v1",
        &serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": descs,
        }),
    )
}

/// Finding 13 (unverified bytes reach programs): a registry serves a
/// tampered base layer (another valid gzip tar of the same size, with a
/// trojan `bin/run-me`) under the genuine layer's digest, for an image
/// run by its genuine manifest digest. The layer's files must not be
/// served before its digest is checked: the command never runs the
/// trojan, and rcfs fails naming the digest mismatch.
#[test]
fn a_tampered_streamed_layer_never_reaches_the_command() {
    require_privileges();
    let dir = temp_dir();
    let reg = Registry::start();
    let (genuine, evil) = (base_layer("genuine"), base_layer("PWNED"));
    assert_eq!(genuine.len(), evil.len());
    let top = tar_layer(&[
        Item::Dir("etc", 0o755),
        Item::File("etc/motd", b"top\n".to_vec(), 0o644),
    ]);
    let manifest = push_gzip_image(&reg, "img", &[genuine.clone(), top]);
    let good = reg.manifest("img", "v1")["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let bad = reg.put_blob("img", &gzip_stored(&evil));
    let proxy = FaultProxy::start(reg.port);
    let image = format!("{}/img@{manifest}", proxy.host());
    let run_image = |store: &Path| {
        run(
            &mut rcfs(
                store,
                &["run", "--rm", "--tls-verify=false", &image, "/bin/run-me"],
            ),
            T,
        )
    };

    // The genuine image runs (and streams: nothing was in the store).
    let r = run_image(&dir.path().join("store-genuine")).expect_ok("rcfs run of the genuine image");
    assert_eq!(r.stdout.trim(), "genuine");

    // The registry swaps the base layer's bytes.
    proxy.faults.rewrite.lock().unwrap().push((
        format!("/v2/img/blobs/{good}"),
        format!("/v2/img/blobs/{bad}"),
    ));
    // What a start needs arrives at once; the end of the layer (the large
    // file, and the point where its digest can be checked) a while later.
    let gz_len = gzip_stored(&evil).len();
    proxy
        .faults
        .hold_blobs_after
        .store((gz_len - BIG / 2) as u64, Ordering::SeqCst);
    for attempt in 0..3 {
        let store = dir.path().join(format!("store-tampered-{attempt}"));
        proxy.faults.release.store(false, Ordering::SeqCst);
        let faults = proxy.faults.clone();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(3));
            faults.release.store(true, Ordering::SeqCst);
        });
        let r = run_image(&store);
        release.join().unwrap();
        assert!(
            !r.stdout.contains("PWNED") && !r.stderr.contains("PWNED"),
            "the tampered layer's program ran: {r:?}"
        );
        assert!(!r.success(), "{r:?}");
        assert!(
            r.stderr
                .contains(&format!("layer {good} does not match its digest")),
            "the error names the mismatch: {}",
            r.stderr
        );
        assert!(
            r.stderr
                .contains("rcfs run: the image could not be pulled: "),
            "the last word is the cause: {}",
            r.stderr
        );
        // Nothing of it is recorded.
        let images = run(&mut rcfs(&store, &["images"]), T).expect_ok("rcfs images");
        assert!(!images.stdout.contains("/img"), "{}", images.stdout);
    }
}
