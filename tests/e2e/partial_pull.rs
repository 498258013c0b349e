//! A full pull of a zstd:chunked image goes by its chunks, as podman 5's
//! partial pulls do: each layer's tar is put back together from its
//! tar-split and its files (each chunk checked against the layer's TOC),
//! hashed, and recorded only under the diff_id the image's config names;
//! what the store holds is not fetched again.

use std::path::Path;
use std::sync::atomic::Ordering;

use crate::images::{pull, rcfs, Case, ImageMount, T};
use crate::mounts::{cmd, run};
use crate::registry::{http, FaultProxy};

/// The layer records in `store` whose names start with `prefix`.
fn records(store: &Path, prefix: &str) -> usize {
    std::fs::read_dir(store.join("layers/sha256"))
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            n.to_str().unwrap().starts_with(prefix)
        })
        .count()
}

/// The config of `repo`'s `manifest`, parsed.
fn config_of(c: &Case, repo: &str, manifest: &serde_json::Value) -> serde_json::Value {
    let (st, config) = http(
        &c.registry.host(),
        "GET",
        &format!(
            "/v2/{repo}/blobs/{}",
            manifest["config"]["digest"].as_str().unwrap()
        ),
        &[],
        &[],
    );
    assert_eq!(st, 200);
    serde_json::from_slice(&config).unwrap()
}

/// `IMAGE` converted by rcfs (its blobs carry a tar-split; Debian 12's
/// skopeo writes none) and pushed as `NAME:v1`; the same layers as gzip
/// (recompressed by skopeo: the same tars, other blobs) as `NAME-gz:v1`.
fn push_converted(c: &Case, name: &str) -> (String, String) {
    let conv = c.path("conv");
    let src = format!("oci:{}:v1", c.layout.display());
    let chunked = format!("{}/{name}:v1", c.registry.host());
    run(&mut rcfs(&conv, &["pull", "-q", &src]), T).expect_ok("pull of the layout");
    run(&mut rcfs(&conv, &["convert", &src, &chunked]), T).expect_ok("rcfs convert");
    run(
        &mut rcfs(&conv, &["push", "--tls-verify=false", &chunked]),
        T,
    )
    .expect_ok("rcfs push");
    let gz = format!("{}/{name}-gz:v1", c.registry.host());
    run(
        &mut cmd(
            "skopeo",
            [
                "copy",
                "-q",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                "--dest-compress-format",
                "gzip",
                &format!("docker://{chunked}"),
                &format!("docker://{gz}"),
            ],
        ),
        T,
    )
    .expect_ok("skopeo copy as gzip");
    (chunked, gz)
}

#[test]
fn a_full_pull_of_a_chunked_image_rebuilds_each_tar_and_fetches_only_what_the_store_lacks() {
    let c = Case::new(1717);
    push_converted(&c, "by-chunks");
    let proxy = FaultProxy::start(c.registry.port);
    let via = |name: &str| format!("{}/{name}:v1", proxy.host());
    let store = c.store();

    // A lazy start reads the 6 MiB file: its chunks are in the store.
    pull(&store, &via("by-chunks"), &[]).expect_ok("lazy pull");
    {
        let m = ImageMount::new(&store, &via("by-chunks"), &c.path("mnt-lazy"), &[]);
        std::fs::read(m.mnt.join("usr/share/data/big.bin")).unwrap();
    }
    let manifest = c.registry.manifest("by-chunks", "v1");
    let blobs: u64 = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    let before = proxy.faults.bytes.load(Ordering::SeqCst);
    let r = pull(&store, &via("by-chunks"), &["--full"]).expect_ok("pull --full");
    let fetched = proxy.faults.bytes.load(Ordering::SeqCst) - before;
    assert_eq!(
        r.stderr.matches("fetched by its chunks").count(),
        2,
        "both layers by chunks: {}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("(0 lazy, 2 fetched whole, 0 already in the store)"),
        "{}",
        r.stderr
    );
    // The big file (noise: its chunks barely compress) came with the lazy
    // start, not again.
    assert!(
        fetched + (5 << 20) < blobs,
        "{fetched} bytes fetched of {blobs}: the cached chunks were fetched again"
    );
    assert!(fetched > 0);
    // Recorded under the config's diff_ids (checked), indexed: served
    // from the store, the same tree as umoci's unpack of the image.
    assert_eq!(records(&store, "diff-"), 2);
    let config = config_of(&c, "by-chunks", &manifest);
    for d in config["rootfs"]["diff_ids"].as_array().unwrap() {
        let hex = d.as_str().unwrap().trim_start_matches("sha256:");
        let rec: serde_json::Value = serde_json::from_slice(
            &std::fs::read(store.join(format!("layers/sha256/diff-{hex}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (rec["format"].as_str(), rec["diff_id"].as_str()),
            (Some("indexed"), d.as_str())
        );
    }
    proxy.faults.down.store(true, Ordering::SeqCst);
    {
        let m = ImageMount::new(&store, &via("by-chunks"), &c.path("mnt-full"), &[]);
        c.assert_same_tree(&m.mnt);
    }
    proxy.faults.down.store(false, Ordering::SeqCst);

    // The same tars as gzip blobs: their diff_ids are in the store.
    let before = proxy.faults.requests.load(Ordering::SeqCst);
    let r = pull(&store, &via("by-chunks-gz"), &["--full"]).expect_ok("pull --full of gzip");
    assert!(r.stderr.contains("2 already in the store"), "{}", r.stderr);
    let log = proxy.faults.log.lock().unwrap()[before as usize..].join("\n");
    assert!(!log.contains("/blobs/"), "no blob fetched: {log}");
    let m = ImageMount::new(&store, &via("by-chunks-gz"), &c.path("mnt-gz"), &[]);
    c.assert_same_tree(&m.mnt);
}

/// An image whose config names another diff_id for its top layer than
/// the tar its chunks and tar-split make (a tampered config, or a TOC and
/// tar-split that do not match the tar): the layer is not recorded from
/// its chunks; rcfs says so, fetches it whole, finds the tar is not what
/// the config names either, and the pull fails with nothing recorded of
/// that layer. The checked base layer stays.
#[test]
fn a_chunked_layer_whose_tar_is_not_the_configs_diff_id_is_not_recorded() {
    let c = Case::new(1818);
    push_converted(&c, "honest");
    let mut manifest = c.registry.manifest("honest", "v1");
    let mut config = config_of(&c, "honest", &manifest);
    config["rootfs"]["diff_ids"][1] = format!("sha256:{}", "ab".repeat(32)).into();
    let bytes = serde_json::to_vec(&config).unwrap();
    let d = c.registry.put_blob("honest", &bytes);
    manifest["config"]["digest"] = d.into();
    manifest["config"]["size"] = bytes.len().into();
    c.registry.put_manifest("honest", "tampered", &manifest);

    let store = c.store();
    let image = format!("{}/honest:tampered", c.registry.host());
    let r = pull(&store, &image, &["--full"]);
    assert!(!r.status.success(), "the pull must fail: {}", r.stderr);
    assert!(
        r.stderr.contains("fetching the layer whole instead")
            && r.stderr.contains("the image config says"),
        "{}",
        r.stderr
    );
    let top = manifest["layers"][1]["digest"].as_str().unwrap();
    let top_hex = top.trim_start_matches("sha256:");
    assert_eq!(records(&store, "diff-"), 1, "only the base layer");
    assert_eq!(records(&store, top_hex), 0);
    assert_eq!(records(&store, &format!("diff-{}", "ab".repeat(32))), 0);
    let r = run(&mut rcfs(&store, &["images"]), T).expect_ok("rcfs images");
    assert!(!r.stdout.contains("tampered"), "{}", r.stdout);
}
