//! rcfs on blobs podman 5's own tools wrote. tests/fixtures/podman5-chunked
//! is a two-layer image that skopeo 1.18 (the containers/image of podman
//! 5.4) compressed as zstd:chunked, TOC and tar-split included (its
//! README.md says how it was made), holding what layers can hold: files cut
//! into several chunks and a run of zeros, an empty file, a hard link,
//! symlinks, xattrs, setuid/setgid bits, other owners, a name longer than
//! 100 bytes and one that is not UTF-8, a whiteout, an opaque dir and a
//! changed file. It is uploaded to the test registry byte for byte (the
//! manifest keeps the digest skopeo gave it), pulled by rcfs by its chunks
//! and lazily, and each mount's tree must equal listing.jsonl there: the
//! tree podman 5.4 itself extracted from the same image, as listing.py
//! lists it.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rcfs_fs::image::digest::Digest;
use serde_json::{json, Value};

use crate::harness::temp_dir;
use crate::images::{pull, ImageMount};
use crate::mounts::require_privileges;
use crate::registry::Registry;
use crate::snapshot::FileKind;
use crate::sys;

/// The fixture's OCI layout.
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/podman5-chunked")
}

/// The fixture's blob `digest` (`sha256:HEX`).
fn blob(digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(fixture().join("blobs/sha256").join(hex)).unwrap()
}

/// The fixture's image uploaded to `reg` as `repo:v1`: its config and
/// layer blobs, then its manifest's bytes as skopeo wrote them. The
/// manifest and config, parsed.
pub(crate) fn upload(reg: &Registry, repo: &str) -> (Value, Value) {
    let index: Value =
        serde_json::from_slice(&std::fs::read(fixture().join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let bytes = blob(digest);
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    for d in std::iter::once(&manifest["config"]).chain(layers) {
        let d = d["digest"].as_str().unwrap();
        assert_eq!(reg.put_blob(repo, &blob(d)), d);
    }
    assert_eq!(reg.put_manifest_bytes(repo, "v1", &bytes), digest);
    let config = serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap()));
    (manifest, config.unwrap())
}

/// `bytes` as listing.py writes names, link targets and xattr values:
/// UTF-8 as it is, a backslash as `\\`, each byte that is not UTF-8 as
/// `\xNN`.
fn text(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(&chunk.valid().replace('\\', "\\\\"));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The listing of the tree at `root` (without the root), as listing.py
/// makes it: entries by path.
fn listing(root: &Path) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, Value>) {
    for de in std::fs::read_dir(root.join(rel)).unwrap() {
        let child = rel.join(de.unwrap().file_name());
        let full = root.join(&child);
        let st = sys::lstat(&full).unwrap();
        let kind = FileKind::of(&st);
        let name = match kind {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::CharDev(..) => "chardev",
            FileKind::BlockDev(..) => "blockdev",
        };
        let path = text(child.as_os_str().as_bytes());
        let mut e = json!({
            "path": path, "type": name, "mode": format!("{:o}", st.st_mode & 0o7777),
            "uid": st.st_uid, "gid": st.st_gid, "mtime": st.st_mtime,
        });
        if kind == FileKind::File {
            let data = std::fs::read(&full).unwrap();
            e["size"] = st.st_size.into();
            e["nlink"] = st.st_nlink.into();
            e["sha256"] = Digest::of(&data).hex().into();
        }
        if kind == FileKind::Symlink {
            e["target"] = text(sys::readlink(&full).unwrap().as_os_str().as_bytes()).into();
        }
        let mut xattrs = serde_json::Map::new();
        let names = match sys::llistxattr(&full) {
            Ok(names) => names,
            Err(sys::Errno::ENOTSUP) => Vec::new(),
            Err(err) => panic!("llistxattr {path}: {err:?}"),
        };
        for n in names.into_iter().filter(|n| !n.starts_with("security.")) {
            let v = sys::lgetxattr(&full, &n).unwrap();
            xattrs.insert(n, text(&v).into());
        }
        e["xattrs"] = xattrs.into();
        out.insert(path, e);
        if kind == FileKind::Dir {
            walk(root, &child, out);
        }
    }
}

/// podman 5's tree of the fixture's image (listing.jsonl), by path.
fn podman_listing() -> BTreeMap<String, Value> {
    let lines = std::fs::read_to_string(fixture().join("listing.jsonl")).unwrap();
    let podman: BTreeMap<String, Value> = lines
        .lines()
        .map(|l| {
            let e: Value = serde_json::from_str(l).unwrap();
            (e["path"].as_str().unwrap().to_owned(), e)
        })
        .collect();
    // The listing still holds the cases this test is for.
    for p in [
        "data/caf\\xe9",
        "data/hard-link",
        "data/holes.bin",
        "data/xattrs",
    ] {
        assert!(podman.contains_key(p), "listing.jsonl lists {p}");
    }
    assert!(!podman.contains_key("data/to-delete") && !podman.contains_key("opaque/old-1"));
    podman
}

/// Names rcfs serves otherwise than podman 5, a known fault not fixed yet:
/// (podman's name, rcfs's). rcfs's TOCs hold names as UTF-8 strings, so a
/// name that is not UTF-8 comes out with U+FFFD for each bad byte: in a
/// layer rcfs indexes (`read_entries` in fs/src/image/index.rs takes
/// `String::from_utf8_lossy` of the tar's path; `TocEntry::name` in
/// fs/src/image/toc.rs is a `String`), and lazily as the TOC that podman's
/// compressor wrote spells it (Go's JSON); only the tar-split keeps the
/// bytes. podman extracts the tar's bytes. The entry must be the same in
/// all else; once rcfs serves the bytes, this test fails until the pair
/// is taken out.
const RENAMED: &[(&str, &str)] = &[("data/caf\\xe9", "data/caf\u{fffd}")];

/// The tree mounted at `mnt` lists as podman 5's does, field for field
/// (but for [`RENAMED`]).
pub(crate) fn assert_podmans_tree(mnt: &Path) {
    let (want, mut got) = (podman_listing(), listing(mnt));
    for (podman, rcfs) in RENAMED {
        let Some(mut e) = got.remove(*rcfs) else {
            panic!("rcfs no longer serves {podman} as {rcfs}: take it out of RENAMED");
        };
        e["path"] = (*podman).into();
        got.insert((*podman).to_owned(), e);
    }
    let mut out = String::new();
    for k in want
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (want.get(k), got.get(k)) {
            (w, g) if w == g => {}
            (w, g) => out.push_str(&format!(
                "  {k}:\n    podman 5: {}\n    rcfs:     {}\n",
                w.map_or("(none)".into(), Value::to_string),
                g.map_or("(none)".into(), Value::to_string)
            )),
        }
    }
    assert!(
        out.is_empty(),
        "the mounted image differs from podman 5.4's extraction of it \
         (tests/fixtures/podman5-chunked/listing.jsonl):\n{out}"
    );
}

/// `rcfs pull --full` rebuilds each of the fixture's tars from its
/// tar-split and its chunks (no layer falls back to being fetched whole),
/// records it under the config's diff_id, and the image mounts from the
/// store alone (the registry stopped) as the tree podman 5 extracts.
#[test]
fn podman5_chunked_image_pulled_by_its_chunks_is_the_tree_podman_extracts() {
    require_privileges();
    let dir = temp_dir();
    let reg = Registry::start();
    let (manifest, config) = upload(&reg, "podman5");
    assert!(manifest["layers"].as_array().unwrap().iter().all(|l| {
        l["annotations"]["io.github.containers.zstd-chunked.tarsplit-position"].is_string()
    }));
    let store = dir.path().join("store");
    let image = format!("{}/podman5:v1", reg.host());
    let r = pull(&store, &image, &["--full"]).expect_ok("rcfs pull --full");
    assert!(
        r.stderr.matches("fetched by its chunks").count() == 2
            && !r.stderr.contains("fetching the layer whole instead")
            && r.stderr
                .contains("(0 lazy, 0 fetched whole, 2 fetched by chunks, 0 already in the store)"),
        "both layers by their chunks: {}",
        r.stderr
    );
    for d in config["rootfs"]["diff_ids"].as_array().unwrap() {
        let hex = d.as_str().unwrap().strip_prefix("sha256:").unwrap();
        let rec = store.join(format!("layers/sha256/diff-{hex}.json"));
        let rec: Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
        assert_eq!(
            (rec["format"].as_str(), rec["diff_id"].as_str()),
            (Some("indexed"), d.as_str())
        );
    }
    drop(reg);
    let m = ImageMount::new(&store, &image, &dir.path().join("mnt"), &[]);
    assert_podmans_tree(&m.mnt);
    assert_eq!(m.stats()["requests"], 0, "all data was in the store");
}

/// A lazy `rcfs pull` of the fixture's image fetches its TOCs only; the
/// mount fetches each file's chunks as they are read, and gives the tree
/// podman 5 extracts.
#[test]
fn podman5_chunked_image_mounted_lazily_is_the_tree_podman_extracts() {
    require_privileges();
    let dir = temp_dir();
    let reg = Registry::start();
    upload(&reg, "podman5");
    let store = dir.path().join("store");
    let image = format!("{}/podman5:v1", reg.host());
    let r = pull(&store, &image, &[]).expect_ok("rcfs pull");
    assert!(r.stderr.contains("2 lazy"), "{}", r.stderr);
    let m = ImageMount::new(&store, &image, &dir.path().join("mnt"), &[]);
    assert_podmans_tree(&m.mnt);
    let s = m.stats();
    assert!(s["requests"] > 0 && s["digest_errors"] == 0, "{s:?}");
}
