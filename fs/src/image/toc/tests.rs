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

/// A table of contents whose blob data ends far out (for big chunks).
fn toc_in_big_blob(entries: Vec<TocEntry>) -> Result<Toc, BadToc> {
    Toc::parse(
        &TocJson {
            version: 1,
            entries,
            tar_split_digest: None,
        },
        DataIn::Blob { data_end: 1 << 40 },
    )
}

#[test]
fn refuses_chunks_paths_and_xattrs_over_the_limits() {
    let max = MAX_CHUNK as i64;
    let big = |size: i64, start: i64, end: i64| TocEntry {
        size,
        ..reg("big", b"x", start, end)
    };
    // One chunk, all in one frame: its bytes, and its frame.
    let err = toc_in_big_blob(vec![big(max + 1, 100, 200)]).unwrap_err();
    assert!(err.to_string().contains("limit of 64 MiB"), "{err}");
    assert!(err.to_string().contains("--full"), "{err}");
    let err = toc_in_big_blob(vec![big(10, 100, 100 + max + 1)]).unwrap_err();
    assert!(err.to_string().contains("compressed"), "{err}");
    assert!(toc_in_big_blob(vec![big(max, 100, 100 + max)]).is_ok());
    // Chunk entries: each one's size.
    let chunked = |first: i64| {
        vec![
            TocEntry {
                chunk_size: first,
                chunk_digest: Digest::of(b"a").to_string(),
                ..big(first + 5, 100, 200)
            },
            TocEntry {
                kind: "chunk".into(),
                name: "big".into(),
                offset: 200,
                chunk_offset: first,
                chunk_size: 5,
                chunk_digest: Digest::of(b"b").to_string(),
                ..Default::default()
            },
        ]
    };
    let mut c = chunked(max + 1);
    c[0].end_offset = 300;
    let err = toc_in_big_blob(c).unwrap_err();
    assert!(err.to_string().contains("limit of 64 MiB"), "{err}");
    let mut c = chunked(max);
    c[0].end_offset = 300;
    assert!(toc_in_big_blob(c).is_ok());
    // A run of zeros costs no fetch, and has no limit.
    let mut c = chunked(max + 1);
    c[0].chunk_type = "zeros".into();
    c[0].end_offset = 300;
    assert!(toc_in_big_blob(c).is_ok());

    let long = format!("{}/x", "d/".repeat(MAX_PATH / 2));
    let err = toc(vec![reg(&long, b"x", 1, 2)]).unwrap_err();
    assert!(err.to_string().contains("longer than 4096"), "{err}");
    let with_xattrs = |n: usize, name_len: usize, value_len: usize| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(vec![7u8; value_len]);
        let x = (0..n)
            .map(|i| (format!("user.{i}{}", "n".repeat(name_len)), b64.clone()))
            .collect();
        vec![TocEntry {
            xattrs: Some(x),
            ..reg("a", b"x", 1, 2)
        }]
    };
    assert!(toc(with_xattrs(MAX_XATTRS, 1, 100)).is_ok());
    assert!(toc(with_xattrs(1, 240, MAX_XATTR_VALUE)).is_ok());
    for (n, name, value, want) in [
        (MAX_XATTRS + 1, 1, 1, "more than 128 xattrs"),
        (1, 260, 1, "longer than 255"),
        (1, 1, MAX_XATTR_VALUE + 1, "over 65536"),
    ] {
        let err = toc(with_xattrs(n, name, value)).unwrap_err();
        assert!(err.to_string().contains(want), "{err}");
    }
}

#[test]
fn json_over_the_entry_limit_or_too_deep_is_refused_as_it_is_read() {
    // Just under the limit parses; one more is refused by the reader.
    let mut json = String::from(r#"{"version":1,"entries":["#);
    for i in 0..MAX_ENTRIES {
        json.push_str(&format!(r#"{{"type":"dir","name":"{i:x}"}},"#));
    }
    json.pop();
    json.push_str("]}");
    let ok: TocJson = serde_json::from_str(&json).unwrap();
    assert_eq!(ok.entries.len(), MAX_ENTRIES);
    json.truncate(json.len() - 2);
    json.push_str(r#",{"type":"dir","name":"one-more"}]}"#);
    let err = serde_json::from_str::<TocJson>(&json).unwrap_err();
    assert!(
        err.to_string().contains("more than 1048576 entries"),
        "{err}"
    );
    // Deep nesting: serde_json's recursion limit (128) is on (no
    // `unbounded_depth`) for what is read, and what is not read is skipped
    // without recursion: no stack overflow either way.
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let err = serde_json::from_str::<serde_json::Value>(&nested).unwrap_err();
    assert!(err.to_string().contains("recursion limit"), "{err}");
    let deep = format!(r#"{{"version":1,"unknown":{nested},"entries":[]}}"#);
    assert!(serde_json::from_str::<TocJson>(&deep).is_ok());
    let deep = format!(
        r#"{{"version":1,"entries":[{{"type":"reg","name":"a","xattrs":{}}}]}}"#,
        "{\"a\":".repeat(100_000)
    );
    assert!(serde_json::from_str::<TocJson>(&deep).is_err());
}
