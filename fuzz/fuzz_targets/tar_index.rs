//! A tar layer from an image (plain, or gzip when the first byte is odd):
//! indexed into a store as `rcfs pull` does, file contents and all.
//! Hostile entries (names, links, sparse maps, sizes) must give an error or
//! a bounded result, never a panic or unbounded disk or memory.
#![no_main]

use std::os::fd::AsFd;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rcfs_fs::image::cas::Cas;
use rcfs_fs::image::index::{index_layer, Compression};

struct Store {
    _dir: tempfile::TempDir,
    files: Cas,
}

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::File::open(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let tmp = std::fs::File::open(dir.path().join("tmp")).unwrap();
        let files = Cas::open(root.as_fd(), "files", tmp.as_fd()).unwrap();
        Store { _dir: dir, files }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let comp = if first & 1 == 1 {
        Compression::Gzip
    } else {
        Compression::None
    };
    let _ = index_layer(rest, comp, &store().files, &mut |_| {});
});
