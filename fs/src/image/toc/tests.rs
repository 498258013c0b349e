//! Tables of contents: what is built and what is refused.
use super::*;

fn reg(name: &str, data: &[u8], start: i64, end: i64) -> TocEntry {
    TocEntry {
        kind: "reg".into(),
        name: name.into(),
        mode: 0o644,
        size: data.len() as i64,
        digest: if data.is_empty() {
            String::new()
        } else {
            Digest::of(data).to_string()
        },
        offset: start,
        end_offset: end,
        mod_time: Some("2023-05-01T10:20:30.123456789Z".into()),
        ..Default::default()
    }
}

fn toc(entries: Vec<TocEntry>) -> Result<Toc, BadToc> {
    Toc::parse(
        &TocJson {
            version: 1,
            entries,
            tar_split_digest: None,
        },
        DataIn::Blob { data_end: 10_000 },
    )
}

#[test]
fn builds_a_tree_with_made_up_parents_hard_links_and_chunks() {
    let mut entries = vec![
        TocEntry {
            kind: "dir".into(),
            name: "./".into(),
            mode: 0o700,
            ..Default::default()
        },
        reg("./usr/bin/a", b"hello", 10, 20),
        TocEntry {
            kind: "hardlink".into(),
            name: "usr/bin/b".into(),
            link_name: "./usr/bin/a".into(),
            ..Default::default()
        },
        TocEntry {
            kind: "symlink".into(),
            name: "usr/lib64".into(),
            link_name: "lib".into(),
            ..Default::default()
        },
        TocEntry {
            kind: "dir".into(),
            name: "usr/".into(),
            mode: 0o750,
            uid: 7,
            ..Default::default()
        },
    ];
    let mut big = reg("big", &[1u8; 300], 100, 400);
    big.chunk_size = 100;
    big.chunk_digest = Digest::of(&[1u8; 100]).to_string();
    entries.push(big);
    entries.push(TocEntry {
        kind: "chunk".into(),
        name: "big".into(),
        offset: 200,
        chunk_offset: 100,
        chunk_size: 100,
        chunk_type: "zeros".into(),
        ..Default::default()
    });
    entries.push(TocEntry {
        kind: "chunk".into(),
        name: "big".into(),
        offset: 250,
        chunk_offset: 200,
        chunk_size: 100,
        chunk_digest: Digest::of(&[1u8; 100]).to_string(),
        ..Default::default()
    });
    let t = toc(entries).unwrap();
    assert_eq!(t.node(0).attr.perm, 0o700);
    let bin = t.lookup(b"usr/bin").unwrap();
    assert_eq!(
        t.node(bin).attr.mtime,
        Time(1_682_936_430_123_456_789),
        "a dir the TOC does not list gets the layer's newest time"
    );
    let usr = t.lookup(b"usr").unwrap();
    assert_eq!(
        (t.node(usr).attr.perm, t.node(usr).attr.uid),
        (0o750, 7),
        "a later dir entry describes an implied parent"
    );
    let a = t.lookup(b"usr/bin/a").unwrap();
    let b = t.lookup(b"usr/bin/b").unwrap();
    assert_eq!(t.node(a).attr.file_id, t.node(b).attr.file_id);
    assert_eq!(t.node(b).attr.nlink, 2);
    assert_eq!(t.node(b).attr.size, 5);
    assert_eq!(t.path_of(b), b"usr/bin/b");
    assert_eq!(
        t.node(t.lookup(b"usr/lib64").unwrap()).target.as_deref(),
        Some(&b"lib"[..])
    );
    assert_eq!(t.node(a).attr.mtime, Time(1_682_936_430_123_456_789));
    let f = &t.files[t.node(t.lookup(b"big").unwrap()).file as usize];
    assert_eq!(f.chunks.len(), 3);
    assert_eq!(
        f.chunks[0].source,
        Source::Blob {
            start: 100,
            end: 200
        }
    );
    assert_eq!(f.chunks[1].source, Source::Zeros);
    assert_eq!(
        f.chunks[2].source,
        Source::Blob {
            start: 250,
            end: 400
        }
    );
    assert_ne!(t.node(usr).attr.file_id, t.node(a).attr.file_id);
}

#[test]
fn refuses_what_could_serve_wrong_bytes_or_names() {
    let cases: Vec<(Vec<TocEntry>, &str)> = vec![
        (vec![reg("../etc/passwd", b"x", 1, 2)], ".."),
        (vec![reg("a/../../b", b"x", 1, 2)], ".."),
        (vec![reg(&"n".repeat(256), b"x", 1, 2)], "longer"),
        (vec![reg("a", b"x", 1, 2), reg("a", b"y", 2, 3)], "twice"),
        (
            vec![reg("a", b"x", 1, 2), reg("a/b", b"y", 2, 3)],
            "not a directory",
        ),
        (
            vec![reg("a", b"xy", 1, 5), reg("b", b"y", 4, 6)],
            "overlaps",
        ),
        (vec![reg("a", b"x", 9_999, 10_001)], "outside"),
        (vec![reg("a", b"x", 5, 5)], "empty or inverted"),
        (
            vec![TocEntry {
                digest: String::new(),
                ..reg("a", b"x", 1, 2)
            }],
            "no digest",
        ),
        (
            vec![TocEntry {
                kind: "hardlink".into(),
                name: "h".into(),
                link_name: "nowhere".into(),
                ..Default::default()
            }],
            "no regular file",
        ),
        (
            vec![TocEntry {
                kind: "weird".into(),
                name: "w".into(),
                ..Default::default()
            }],
            "unknown type",
        ),
        (
            vec![TocEntry {
                kind: "chunk".into(),
                name: "c".into(),
                ..Default::default()
            }],
            "follows no",
        ),
        (
            vec![TocEntry {
                mode: 0o100644,
                ..reg("a", b"x", 1, 2)
            }],
            "mode",
        ),
        (
            vec![TocEntry {
                chunk_size: 1,
                chunk_digest: Digest::of(b"x").to_string(),
                ..reg("a", b"xy", 1, 5)
            }],
            "cover 1 of its 2",
        ),
        (
            vec![TocEntry {
                mod_time: Some("yesterday".into()),
                ..reg("a", b"x", 1, 2)
            }],
            "modtime",
        ),
    ];
    for (entries, want) in cases {
        let err = toc(entries.clone()).unwrap_err().to_string();
        assert!(err.contains(want), "{entries:?}: {err}");
    }
    let err = Toc::parse(
        &TocJson {
            version: 2,
            ..Default::default()
        },
        DataIn::Store,
    )
    .unwrap_err();
    assert!(err.to_string().contains("version 2"));
}

#[test]
fn json_round_trips_in_the_zstd_chunked_spelling() {
    let e = TocEntry {
        link_name: "t".into(),
        dev_major: 1,
        chunk_offset: 5,
        ..reg("a", b"x", 1, 2)
    };
    let s = serde_json::to_string(&e).unwrap();
    for key in [
        "\"type\":\"reg\"",
        "\"linkName\"",
        "\"devMajor\"",
        "\"endOffset\"",
        "\"chunkOffset\"",
        "\"modtime\"",
    ] {
        assert!(s.contains(key), "{s}");
    }
    assert!(
        !s.contains("chunkSize") && !s.contains("uid"),
        "zeros are omitted: {s}"
    );
    assert_eq!(serde_json::from_str::<TocEntry>(&s).unwrap(), e);
}

#[test]
fn an_unlisted_root_gets_the_newest_time() {
    let t = toc(vec![reg("a", b"x", 1, 2)]).unwrap();
    assert_eq!(t.node(0).attr.mtime, Time(1_682_936_430_123_456_789));
}

#[test]
fn device_numbers_are_the_dev_t_that_stat_and_fuse_use() {
    let dev = |name: &str, major, minor| TocEntry {
        kind: "char".into(),
        name: name.into(),
        mode: 0o666,
        dev_major: major,
        dev_minor: minor,
        ..Default::default()
    };
    let t = toc(vec![dev("null", 1, 3), dev("big", 259, 70000)]).unwrap();
    let null = &t.node(t.lookup(b"null").unwrap()).attr;
    let host = std::fs::metadata("/dev/null").unwrap();
    assert_eq!(
        u64::from(null.rdev),
        std::os::unix::fs::MetadataExt::rdev(&host),
        "1:3 is /dev/null's number"
    );
    assert_eq!(null.major_minor(), (1, 3));
    let big = &t.node(t.lookup(b"big").unwrap()).attr;
    assert_eq!(big.major_minor(), (259, 70000));
}
