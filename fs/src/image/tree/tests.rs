//! The binary tree against the TOC it was built from, and what a damaged
//! one does.
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;
use crate::image::toc::{Toc, TocEntry, TocJson};

fn entry(kind: &str, name: &str) -> TocEntry {
    TocEntry {
        kind: kind.into(),
        name: name.into(),
        mode: 0o755,
        mod_time: Some("2023-05-01T10:20:30.123456789Z".into()),
        ..Default::default()
    }
}

fn reg(name: &str, data: &[u8], start: i64, end: i64) -> TocEntry {
    TocEntry {
        size: data.len() as i64,
        digest: if data.is_empty() {
            String::new()
        } else {
            Digest::of(data).to_string()
        },
        offset: start,
        end_offset: end,
        mode: 0o4644,
        uid: 12,
        gid: 34,
        ..entry("reg", name)
    }
}

const DATA: DataIn = DataIn::Blob { data_end: 100_000 };

/// A layer with what a tree must keep: nested and empty dirs, a dir
/// whose parents are made up, many names in one dir (out of order), hard
/// links, symlinks, devices, xattrs, whiteouts, chunked files with runs of
/// zeros, an empty file.
fn sample() -> (Toc, Digest) {
    let mut entries = vec![
        TocEntry {
            xattrs: Some(HashMap::from([(
                "user.root".to_string(),
                "cm9vdA==".to_string(),
            )])),
            ..entry("dir", "./")
        },
        entry("dir", "etc/"),
        reg("etc/passwd", b"root:x:0:0", 10, 20),
        TocEntry {
            link_name: "/etc/passwd".into(),
            ..entry("hardlink", "etc/passwd-")
        },
        TocEntry {
            link_name: "../usr/lib".into(),
            ..entry("symlink", "etc/lib")
        },
        reg("etc/empty", b"", 0, 0),
        entry("dir", "tmp/"),
        TocEntry {
            dev_major: 1,
            dev_minor: 3,
            ..entry("char", "dev/null")
        },
        entry("fifo", "dev/fifo"),
        reg("usr/.wh.gone", b"", 0, 0),
        TocEntry {
            xattrs: Some(HashMap::from([
                ("trusted.overlay.opaque".to_string(), "eQ==".to_string()),
                ("user.a".to_string(), "".to_string()),
            ])),
            ..entry("dir", "usr/share/deep/er/")
        },
    ];
    let mut at = 100;
    for i in (0..300).rev() {
        entries.push(reg(&format!("usr/bin/f{i:03}"), &[i as u8; 7], at, at + 5));
        at += 5;
    }
    let mut big = reg("usr/big", &[1u8; 300], at, at + 300);
    big.chunk_size = 100;
    big.chunk_digest = Digest::of(&[1u8; 100]).to_string();
    entries.push(big);
    entries.push(TocEntry {
        kind: "chunk".into(),
        name: "usr/big".into(),
        offset: at + 100,
        chunk_offset: 100,
        chunk_size: 100,
        chunk_type: "zeros".into(),
        ..Default::default()
    });
    entries.push(TocEntry {
        kind: "chunk".into(),
        name: "usr/big".into(),
        offset: at + 150,
        chunk_offset: 200,
        chunk_size: 100,
        chunk_digest: Digest::of(&[1u8; 100]).to_string(),
        ..Default::default()
    });
    let json = TocJson {
        version: 1,
        entries,
        tar_split_digest: None,
    };
    let toc = Toc::parse(&json, DATA).unwrap();
    (toc, Digest::of(b"the toc"))
}

fn open(bytes: Vec<u8>, toc: &Digest) -> Result<Tree, String> {
    Tree::open(
        Bytes::Owned(bytes),
        "a test layer".into(),
        Expect {
            toc: *toc,
            data: DATA,
        },
        None,
    )
}

#[test]
fn a_tree_answers_what_its_toc_does() {
    let (toc, d) = sample();
    let tree = open(build(&toc, &d, DATA).unwrap(), &d).unwrap();
    assert_eq!(
        tree.counts(),
        (
            toc.nodes.len() as u32,
            toc.files.len() as u32,
            toc.data_size().1
        )
    );
    assert_eq!(tree.lookup(b"").unwrap(), Some(0));
    for (i, n) in toc.nodes.iter().enumerate() {
        let path = toc.path_of(i as u32);
        let id = tree.lookup(&path).unwrap().expect("every path is found");
        let t = tree.node(id).unwrap();
        assert_eq!(t.name, &n.name[..]);
        assert_eq!(t.attr, n.attr, "{}", String::from_utf8_lossy(&path));
        assert_eq!(t.target, n.target.as_deref());
        let xattrs: Vec<(&[u8], &[u8])> = n.xattrs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        assert_eq!(t.xattrs().collect::<Vec<_>>(), xattrs);
        assert_eq!(tree.path_of(id).unwrap(), path);
        // Children: the same names, sorted.
        let mut names: Vec<&[u8]> = n.children.iter().map(|&c| &toc.node(c).name[..]).collect();
        names.sort();
        let got: Vec<&[u8]> = tree.children(&t).unwrap().map(|c| c.name).collect();
        assert_eq!(got, names);
        assert_eq!(t.file, n.file);
        if n.file != NONE {
            let (tf, f) = (tree.file(t.file).unwrap(), &toc.files[n.file as usize]);
            assert_eq!((tf.size, tf.digest), (f.size, f.digest));
            let chunks: Vec<Chunk> = tf.chunks.iter_from(0).collect();
            assert_eq!(&chunks[..], &f.chunks[..]);
            let links: Vec<Vec<u8>> = tf.links().map(|l| tree.path_of(l).unwrap()).collect();
            let want: Vec<Vec<u8>> = f.links.iter().map(|&l| toc.path_of(l)).collect();
            assert_eq!(links, want);
        }
    }
    for missing in [
        &b"nope"[..],
        b"etc/passwd/x",
        b"usr/bin/f300",
        b"usr/bin/f",
        b"etc/lib/x",
    ] {
        assert_eq!(tree.lookup(missing).unwrap(), None);
    }
    // Blob order: every chunk in the blob, by offset, each found again.
    let mut starts = Vec::new();
    for i in 0..tree.order_len() {
        let (s, f, c) = tree.order(i);
        assert!(tree.order_chunk(s, f, c).is_some());
        assert!(tree.order_chunk(s + 1, f, c).is_none());
        starts.push(s);
    }
    assert_eq!(starts.len(), 300 + 1 + 2);
    assert!(starts.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(tree.order_from(starts[7]), 7);
    assert_eq!(tree.order_from(starts[7] + 1), 8);
}

#[test]
fn a_short_or_foreign_tree_is_not_opened() {
    let (toc, d) = sample();
    let good = build(&toc, &d, DATA).unwrap();
    for cut in [0, 8, HEADER_LEN - 1, HEADER_LEN + 5, good.len() - 1] {
        let e = open(good[..cut].to_vec(), &d).unwrap_err();
        assert!(!e.is_empty());
    }
    let mut longer = good.clone();
    longer.push(0);
    assert!(open(longer, &d)
        .unwrap_err()
        .contains("bytes where the header says"));
    assert!(open(good.clone(), &Digest::of(b"another"))
        .unwrap_err()
        .contains("another table of contents"));
    let other = Tree::open(
        Bytes::Owned(good.clone()),
        "x".into(),
        Expect {
            toc: d,
            data: DataIn::Blob { data_end: 99 },
        },
        None,
    );
    assert!(other.unwrap_err().contains("placement"));
    let mut other = good.clone();
    other[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
    assert!(open(other, &d)
        .unwrap_err()
        .contains(&format!("version {}", VERSION + 1)));
    // Any flipped bit of the header, or of the root's record.
    for at in (0..HEADER_LEN + NODE_LEN).step_by(7) {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        assert!(open(bad, &d).is_err(), "a flip at {at} went unseen");
    }
}

/// A flipped byte anywhere past the header makes what reads it fail with
/// EIO (and asks once for the file to go), never a wrong answer or a
/// panic; what does not read it still works.
#[test]
fn damage_is_found_where_it_is_read() {
    let (toc, d) = sample();
    let good = build(&toc, &d, DATA).unwrap();
    let reference = open(good.clone(), &d).unwrap();
    let walk = |t: &Tree| -> std::io::Result<Vec<String>> {
        let mut out = Vec::new();
        for i in 0..toc.nodes.len() {
            let path = toc.path_of(i as u32);
            let Some(id) = t.lookup(&path)? else {
                out.push(format!("{path:?} missing"));
                continue;
            };
            let n = t.node(id)?;
            out.push(format!(
                "{path:?} {:?} {:?} {:?}",
                n.attr,
                n.target,
                n.xattrs().collect::<Vec<_>>()
            ));
            for c in t.children(&n)? {
                out.push(format!("child {:?}", c.name));
            }
            if n.file != NONE {
                let f = t.file(n.file)?;
                out.push(format!(
                    "{} {:?} {:?}",
                    f.size,
                    f.digest,
                    f.chunks.iter_from(0).collect::<Vec<_>>()
                ));
                for l in f.links() {
                    out.push(format!("link {:?}", t.path_of(l)?));
                }
            }
        }
        Ok(out)
    };
    let want = walk(&reference).unwrap();
    let order_start = HEADER_LEN
        + toc.nodes.len() * NODE_LEN
        + toc.files.len() * FILE_LEN
        + reference.h.chunks as usize * CHUNK_LEN
        + reference.h.links as usize * LINK_LEN;
    let order_end = order_start + reference.order_len() * ORDER_LEN;
    // Every 29th byte (a prime: each field's bytes are reached).
    const STEP: usize = 29;
    let (mut seen, mut flips) = (0, 0);
    for at in (HEADER_LEN..good.len()).step_by(STEP) {
        // The blob order is only a hint; checked where it is used.
        if (order_start..order_end).contains(&at) {
            continue;
        }
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let t = match Tree::open(
            Bytes::Owned(bad),
            "a test layer".into(),
            Expect { toc: d, data: DATA },
            Some(Box::new(move || {
                c.fetch_add(1, Ordering::Relaxed);
            })),
        ) {
            Ok(t) => t,
            Err(_) => {
                seen += 1;
                continue;
            }
        };
        flips += 1;
        match walk(&t) {
            Ok(got) => assert_eq!(got, want, "a flip at {at} changed an answer"),
            Err(e) => {
                assert_eq!(crate::error::errno_of(&e), libc::EIO);
                assert!(e.to_string().contains("damaged"), "{e}");
                assert_eq!(calls.load(Ordering::Relaxed), 1);
                seen += 1;
            }
        }
    }
    // Every flip is in bytes some answer depends on (names, records,
    // strings): each was seen.
    assert!(flips > 500, "{flips}");
    assert_eq!(
        seen,
        (HEADER_LEN..good.len())
            .step_by(STEP)
            .filter(|a| !(order_start..order_end).contains(a))
            .count()
    );
}

#[test]
fn a_damaged_blob_order_entry_is_skipped() {
    let (toc, d) = sample();
    let mut bytes = build(&toc, &d, DATA).unwrap();
    let t = open(bytes.clone(), &d).unwrap();
    let at = t.h.order_off + 3 * ORDER_LEN;
    bytes[at + 8..at + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let t = open(bytes, &d).unwrap();
    let (s, f, c) = t.order(3);
    assert!(t.order_chunk(s, f, c).is_none());
}

/// An entry whose parent field was changed to name another directory,
/// one already checked, is refused wherever it is reached from (here, as a
/// hard link's name), never read as that directory's.
#[test]
fn an_entry_claiming_a_checked_directory_as_parent_is_refused() {
    let (toc, d) = sample();
    let good = build(&toc, &d, DATA).unwrap();
    let t = open(good.clone(), &d).unwrap();
    let x = t.lookup(b"usr/big").unwrap().unwrap();
    let q = t.lookup(b"etc").unwrap().unwrap();
    let mut bad = good;
    let at = HEADER_LEN + x as usize * NODE_LEN;
    bad[at..at + 4].copy_from_slice(&q.to_le_bytes());
    let t = open(bad, &d).unwrap();
    // etc's children are checked first.
    assert!(t.lookup(b"etc/passwd").unwrap().is_some());
    let e = t.node(x).unwrap_err();
    assert_eq!(crate::error::errno_of(&e), libc::EIO);
    assert!(t.path_of(x).is_err());
}

/// A path as deep as a TOC may make (a chain of directories), reached
/// first from its far end (a hard link's name): checked upwards without
/// recursion.
#[test]
fn the_deepest_entry_is_checked_without_recursion() {
    let mut name = String::new();
    let mut entries = Vec::new();
    for _ in 0..2040 {
        name.push_str("d/");
        entries.push(entry("dir", &name));
    }
    let file = format!("{name}f");
    entries.push(reg(&file, b"deep", 10, 20));
    entries.push(TocEntry {
        link_name: file.clone(),
        ..entry("hardlink", "top")
    });
    let json = TocJson {
        version: 1,
        entries,
        tar_split_digest: None,
    };
    let toc = Toc::parse(&json, DATA).unwrap();
    let d = Digest::of(b"deep");
    let t = open(build(&toc, &d, DATA).unwrap(), &d).unwrap();
    let f = t.file(0).unwrap();
    let names: Vec<Vec<u8>> = f.links().map(|l| t.path_of(l).unwrap()).collect();
    assert_eq!(names, vec![file.into_bytes(), b"top".to_vec()]);
}
