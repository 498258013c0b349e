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
            .contains("(0 lazy, 0 fetched whole, 2 fetched by chunks, 0 already in the store)"),
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
    drop(m);

    // The other way round: the gzip blobs streamed whole (their diff_ids
    // checked) serve the zstd:chunked image too.
    let other = c.path("store2");
    pull(&other, &via("by-chunks-gz"), &["--full"]).expect_ok("pull --full of gzip");
    let r = pull(&other, &via("by-chunks"), &["--full"]).expect_ok("pull --full");
    assert!(r.stderr.contains("2 already in the store"), "{}", r.stderr);
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

/// A skippable zstd frame holding `payload`.
fn skippable(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x50, 0x2a, 0x4d, 0x18];
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// A layer whose tar-split does not rebuild its tar (one file's CRC-64 is
/// wrong; TOC, annotations and the tar itself are consistent, so the
/// blob still decompresses to the config's diff_id): the pull says so,
/// streams that layer whole (blob digest and diff_id checked) and
/// succeeds; the image is served as pushed.
#[test]
fn a_layer_whose_tar_split_does_not_rebuild_its_tar_is_streamed_whole() {
    use rcfs_fs::image::digest::Digest;
    let c = Case::new(1919);
    push_converted(&c, "crc");
    let mut manifest = c.registry.manifest("crc", "v1");
    let layer = &manifest["layers"][0];
    let (st, blob) = http(
        &c.registry.host(),
        "GET",
        &format!("/v2/crc/blobs/{}", layer["digest"].as_str().unwrap()),
        &[],
        &[],
    );
    assert_eq!(st, 200);
    let a = layer["annotations"].as_object().unwrap().clone();
    let pos = |k: &str| -> Vec<usize> {
        a[k].as_str()
            .unwrap()
            .split(':')
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let (toc_at, split_at) = (
        pos("io.github.containers.zstd-chunked.manifest-position"),
        pos("io.github.containers.zstd-chunked.tarsplit-position"),
    );
    let mut toc: serde_json::Value =
        serde_json::from_slice(&zstd::decode_all(&blob[toc_at[0]..toc_at[0] + toc_at[1]]).unwrap())
            .unwrap();
    let lines = zstd::decode_all(&blob[split_at[0]..split_at[0] + split_at[1]]).unwrap();
    let mut wrong = 0;
    let lines: Vec<String> = String::from_utf8(lines)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if wrong == 0 && v["type"] == 1 && v["payload"].is_string() {
                assert_ne!(v["payload"], "AAAAAAAAAAA=");
                v["payload"] = "AAAAAAAAAAA=".into();
                wrong += 1;
            }
            v.to_string()
        })
        .collect();
    assert_eq!(wrong, 1);
    let lines = (lines.join("\n") + "\n").into_bytes();
    let split = zstd::encode_all(&lines[..], 3).unwrap();
    toc["tarSplitDigest"] = Digest::of(&split).to_string().into();
    let toc_json = serde_json::to_vec(&toc).unwrap();
    let toc_z = zstd::encode_all(&toc_json[..], 3).unwrap();
    let mut tampered = blob[..toc_at[0] - 8].to_vec();
    tampered.extend(skippable(&toc_z));
    let split_offset = tampered.len() + 8;
    tampered.extend(skippable(&split));
    // The footer as it was (rcfs reads the annotations).
    tampered.extend_from_slice(&blob[split_at[0] + split_at[1]..]);
    let d = c.registry.put_blob("crc", &tampered);
    let l = &mut manifest["layers"][0];
    l["digest"] = d.clone().into();
    l["size"] = tampered.len().into();
    let an = l["annotations"].as_object_mut().unwrap();
    an.insert(
        "io.github.containers.zstd-chunked.manifest-checksum".into(),
        Digest::of(&toc_z).to_string().into(),
    );
    an.insert(
        "io.github.containers.zstd-chunked.manifest-position".into(),
        format!("{}:{}:{}:1", toc_at[0], toc_z.len(), toc_json.len()).into(),
    );
    an.insert(
        "io.github.containers.zstd-chunked.tarsplit-position".into(),
        format!("{split_offset}:{}:{}", split.len(), lines.len()).into(),
    );
    if an.contains_key("io.github.containers.zstd-chunked.tarsplit-checksum") {
        an.insert(
            "io.github.containers.zstd-chunked.tarsplit-checksum".into(),
            Digest::of(&split).to_string().into(),
        );
    }
    c.registry.put_manifest("crc", "tampered", &manifest);

    let store = c.store();
    let image = format!("{}/crc:tampered", c.registry.host());
    let r = pull(&store, &image, &["--full"]).expect_ok("pull --full");
    assert!(
        r.stderr
            .contains("does not have the CRC-64 the tar-split records")
            && r.stderr.contains("fetching the layer whole instead")
            && r.stderr
                .contains("(0 lazy, 1 fetched whole, 1 fetched by chunks, 0 already in the store)"),
        "{}",
        r.stderr
    );
    // Streamed whole: recorded under its blob digest (hashed) and its
    // diff_id (checked).
    let hex = d.trim_start_matches("sha256:");
    assert_eq!(records(&store, hex), 1);
    assert_eq!(records(&store, "diff-"), 2);
    let m = ImageMount::new(&store, &image, &c.path("mnt"), &[]);
    c.assert_same_tree(&m.mnt);
}
