//! Hostile images and registries against the store and the pull: an image
//! that claims another image's layer digest, and a registry that serves
//! tampered layer bytes. What the store records and what a program sees
//! must be only what was checked (DESIGN.md "Trust").

use std::path::Path;
use std::process::Command;
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
            .contains("(2 lazy, 0 fetched whole, 0 already in the store)"),
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
