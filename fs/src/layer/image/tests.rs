//! The image layer against a blob in memory that counts requests and can
//! corrupt or cut what it serves.

use std::io::{Cursor, Read};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::fetch::READ_AHEAD;
use super::*;
use crate::image::digest::Digest;
use crate::image::toc::{DataIn, TocEntry, TocJson};

/// A blob in memory.
#[derive(Debug, Default)]
struct MockBlob {
    data: Vec<u8>,
    requests: AtomicU64,
    bytes: AtomicU64,
    /// Every range asked for.
    ranges: Mutex<Vec<(u64, u64)>>,
    /// Flip the byte at this offset in what is served.
    flip: Mutex<Option<u64>>,
    /// Fail every request.
    down: AtomicBool,
    /// Hold requests until this is false.
    slow: AtomicBool,
}

impl BlobSource for MockBlob {
    fn open_range(&self, start: u64, end: u64) -> io::Result<Box<dyn Read + Send>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.ranges.lock().unwrap().push((start, end));
        while self.slow.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(io::Error::other("connection refused"));
        }
        let mut v = self.data[start as usize..end as usize].to_vec();
        if let Some(at) = *self.flip.lock().unwrap() {
            if (start..end).contains(&at) {
                v[(at - start) as usize] ^= 0xff;
            }
        }
        self.bytes.fetch_add(v.len() as u64, Ordering::SeqCst);
        Ok(Box::new(Cursor::new(v)))
    }
    fn describe(&self) -> String {
        "mock blob".into()
    }
}

/// Files (name, bytes, chunk size or 0 for one chunk) as a blob of zstd
/// frames and its table of contents.
fn build(files: &[(&str, Vec<u8>, usize)]) -> (Vec<u8>, TocJson) {
    let mut blob = b"HEADERS".to_vec();
    let mut entries = vec![TocEntry {
        kind: "dir".into(),
        name: "./".into(),
        mode: 0o755,
        ..Default::default()
    }];
    for (name, data, chunk) in files {
        let mut e = TocEntry {
            kind: "reg".into(),
            name: (*name).into(),
            mode: 0o644,
            size: data.len() as i64,
            ..Default::default()
        };
        if data.is_empty() {
            entries.push(e);
            continue;
        }
        e.digest = Digest::of(data).to_string();
        e.offset = blob.len() as i64;
        let pieces: Vec<&[u8]> = if *chunk == 0 {
            vec![&data[..]]
        } else {
            data.chunks(*chunk).collect()
        };
        let mut group = Vec::new();
        let mut at = 0;
        for p in &pieces {
            let mut c = if group.is_empty() {
                e.clone()
            } else {
                TocEntry {
                    kind: "chunk".into(),
                    name: (*name).into(),
                    ..Default::default()
                }
            };
            if pieces.len() > 1 {
                c.offset = blob.len() as i64;
                c.chunk_offset = at;
                c.chunk_size = p.len() as i64;
                c.chunk_digest = Digest::of(p).to_string();
                if p.iter().all(|b| *b == 0) {
                    c.chunk_type = "zeros".into();
                }
            }
            blob.extend_from_slice(&zstd::bulk::compress(p, 3).unwrap());
            at += p.len() as i64;
            group.push(c);
        }
        group[0].end_offset = blob.len() as i64;
        entries.extend(group);
    }
    (
        blob,
        TocJson {
            version: 1,
            entries,
            tar_split_digest: None,
        },
    )
}

fn layer(files: &[(&str, Vec<u8>, usize)], cache: Arc<BlockCache>) -> (ImageLayer, Arc<MockBlob>) {
    let (data, json) = build(files);
    let toc = Toc::parse(
        &json,
        DataIn::Blob {
            data_end: data.len() as u64,
        },
    )
    .unwrap();
    let blob = Arc::new(MockBlob {
        data,
        ..Default::default()
    });
    let l = ImageLayer::new(
        "sha256:test".into(),
        toc,
        Some(blob.clone() as Arc<dyn BlobSource>),
        cache,
        false,
    )
    .unwrap();
    (l, blob)
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| ((i * 7 + i / 251) as u8).wrapping_add(seed))
        .collect()
}

fn read_all(l: &ImageLayer, path: &str) -> io::Result<Vec<u8>> {
    let size = l.stat(Path::new(path))?.size as usize;
    let f = l.open(Path::new(path))?;
    let mut buf = vec![0u8; size + 10];
    let mut at = 0;
    while at < size {
        let n = f.read_at(&mut buf[at..(at + 100_000).min(size + 10)], at as u64)?;
        assert!(n > 0);
        at += n;
    }
    buf.truncate(at);
    Ok(buf)
}

#[test]
fn serves_metadata_without_fetching_and_bytes_once() {
    let big = pattern(1_000_000, 1);
    let mut sparse = pattern(200_000, 2);
    sparse[50_000..150_000].fill(0);
    let files = vec![
        ("etc/hostname", b"box\n".to_vec(), 0),
        ("usr/big", big.clone(), 65_536),
        ("sparse", sparse.clone(), 50_000),
        ("empty", vec![], 0),
    ];
    let cache = Arc::new(BlockCache::in_memory(64 << 20));
    let (l, blob) = layer(&files, cache.clone());
    let mut names = Vec::new();
    l.read_dir(Path::new(""), &mut |n, k, a| {
        names.push((n.to_owned(), k, a()?.size));
        Ok(())
    })
    .unwrap();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        names
            .iter()
            .map(|n| n.0.to_str().unwrap())
            .collect::<Vec<_>>(),
        ["empty", "etc", "sparse", "usr"]
    );
    assert_eq!(
        (names[0].2, names[1].1, names[2].2),
        (0, Kind::Dir, 200_000)
    );
    assert_eq!(l.stat(Path::new("usr/big")).unwrap().size, 1_000_000);
    assert_eq!(
        blob.requests.load(Ordering::SeqCst),
        0,
        "metadata needs no data"
    );

    // A small read in the middle fetches the chunks it covers, in one request.
    let f = l.open(Path::new("usr/big")).unwrap();
    let mut buf = vec![0u8; 100_000];
    assert_eq!(f.read_at(&mut buf, 300_000).unwrap(), 100_000);
    assert_eq!(&buf[..], &big[300_000..400_000]);
    let t = l.tree();
    let chunks = t
        .file(t.node(t.lookup(b"usr/big").unwrap().unwrap()).unwrap().file)
        .unwrap()
        .chunks;
    let (Source::Blob { start, .. }, Source::Blob { end, .. }) =
        (chunks.get(4).source, chunks.get(6).source)
    else {
        panic!()
    };
    let first = blob.ranges.lock().unwrap()[0];
    assert!(
        first.0 == start && first.1 >= end,
        "the three chunks it covers, in one request: {first:?}"
    );
    assert!(
        first.1 - end <= READ_AHEAD,
        "and no more than the read-ahead past them: {first:?}"
    );
    assert_eq!(read_all(&l, "usr/big").unwrap(), big);
    assert_eq!(read_all(&l, "sparse").unwrap(), sparse);
    assert_eq!(read_all(&l, "etc/hostname").unwrap(), b"box\n");
    assert_eq!(read_all(&l, "empty").unwrap(), b"");
    let (fetched, requests) = (
        blob.bytes.load(Ordering::SeqCst),
        blob.requests.load(Ordering::SeqCst),
    );
    // Reading it all again fetches nothing.
    assert_eq!(read_all(&l, "usr/big").unwrap(), big);
    assert_eq!(read_all(&l, "sparse").unwrap(), sparse);
    assert_eq!(blob.requests.load(Ordering::SeqCst), requests);
    assert_eq!(blob.bytes.load(Ordering::SeqCst), fetched);
    assert!(
        fetched < blob.data.len() as u64 + 1,
        "each byte at most once: {fetched}"
    );
}

#[test]
fn a_corrupt_or_missing_blob_gives_eio_and_caches_nothing() {
    let data = pattern(300_000, 3);
    let cache = Arc::new(BlockCache::in_memory(64 << 20));
    let (l, blob) = layer(&[("f", data.clone(), 100_000)], cache.clone());
    let Source::Blob { start, .. } = l.tree().file(0).unwrap().chunks.get(1).source else {
        panic!()
    };
    *blob.flip.lock().unwrap() = Some(start + 20);
    let f = l.open(Path::new("f")).unwrap();
    let mut buf = vec![0u8; 300_000];
    let err = f.read_at(&mut buf, 0).unwrap_err();
    assert_eq!(crate::error::errno_of(&err), libc::EIO, "{err}");
    assert!(
        cache.stats.digest_errors.load(Ordering::SeqCst)
            + cache.stats.fetch_errors.load(Ordering::SeqCst)
            > 0
    );
    // The bytes before the bad chunk are fine and served.
    assert_eq!(f.read_at(&mut buf[..1000], 0).unwrap(), 1000);
    assert_eq!(&buf[..1000], &data[..1000]);
    // Once the blob is right again, the bad chunk is fetched again: it was never cached.
    *blob.flip.lock().unwrap() = None;
    assert_eq!(read_all(&l, "f").unwrap(), data);

    let (l, blob) = layer(
        &[("g", data.clone(), 0)],
        Arc::new(BlockCache::in_memory(1 << 20)),
    );
    blob.down.store(true, Ordering::SeqCst);
    let err = l
        .open(Path::new("g"))
        .unwrap()
        .read_at(&mut buf, 0)
        .unwrap_err();
    assert!(err.to_string().contains("connection refused"), "{err}");
    assert!(err.to_string().contains("file 'g'"), "{err}");
    blob.down.store(false, Ordering::SeqCst);
    assert_eq!(read_all(&l, "g").unwrap(), data);
}

#[test]
fn concurrent_readers_of_a_missing_chunk_cause_one_fetch() {
    let data = pattern(500_000, 4);
    let cache = Arc::new(BlockCache::in_memory(64 << 20));
    let (l, blob) = layer(&[("f", data.clone(), 0)], cache.clone());
    let l = Arc::new(l);
    blob.slow.store(true, Ordering::SeqCst);
    let readers: Vec<_> = (0..8)
        .map(|i| {
            let l = l.clone();
            std::thread::spawn(move || {
                let mut b = vec![0u8; 1000];
                l.open(Path::new("f"))
                    .unwrap()
                    .read_at(&mut b, i * 1000)
                    .unwrap();
                b
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(100));
    blob.slow.store(false, Ordering::SeqCst);
    for (i, r) in readers.into_iter().enumerate() {
        assert_eq!(r.join().unwrap(), &data[i * 1000..i * 1000 + 1000]);
    }
    assert_eq!(blob.requests.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats.joined.load(Ordering::SeqCst), 7);
}

#[test]
fn a_read_waiting_on_a_stuck_fetch_gets_eio_in_bounded_time() {
    let data = pattern(500_000, 5);
    let cache =
        Arc::new(BlockCache::in_memory(64 << 20).with_fetch_wait(Duration::from_millis(300)));
    let (l, blob) = layer(&[("f", data.clone(), 0)], cache.clone());
    let l = Arc::new(l);
    blob.slow.store(true, Ordering::SeqCst);
    // The first read fetches, and is stuck in its request.
    let first = {
        let l = l.clone();
        std::thread::spawn(move || {
            let mut b = vec![0u8; 1000];
            l.open(Path::new("f"))
                .unwrap()
                .read_at(&mut b, 0)
                .map(|_| b)
        })
    };
    while blob.requests.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The second joins it, and gives up after the wait, with EIO.
    let t0 = Instant::now();
    let mut b = vec![0u8; 1000];
    let err = l
        .open(Path::new("f"))
        .unwrap()
        .read_at(&mut b, 1000)
        .unwrap_err();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(crate::error::errno_of(&err), libc::EIO, "{err}");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(err.to_string().contains("did not end in time"), "{err}");
    assert_eq!(cache.stats.fetch_timeouts.load(Ordering::SeqCst), 1);
    let shown = cache.stats.render();
    assert!(shown.contains("fetch_timeouts 1\n"), "{shown}");
    assert!(shown.contains("last_fetch_error file 'f'"), "{shown}");
    // The stuck fetch ends; the first read has its bytes.
    blob.slow.store(false, Ordering::SeqCst);
    assert_eq!(first.join().unwrap().unwrap(), &data[..1000]);
}

#[test]
fn identical_content_in_two_layers_is_fetched_once_and_disk_cache_is_checked() {
    let t = tempfile::tempdir().unwrap();
    let chunks = Arc::new(crate::image::cas::temp_cas(t.path(), "cache"));
    let data = pattern(3 << 20, 5);
    let cache = Arc::new(BlockCache::new(
        1 << 20,
        Some(chunks.clone()),
        1 << 30,
        None,
    ));
    let (a, blob_a) = layer(&[("a", data.clone(), 0)], cache.clone());
    let (b, blob_b) = layer(&[("other/name", data.clone(), 0)], cache.clone());
    assert_eq!(read_all(&a, "a").unwrap(), data);
    assert_eq!(read_all(&b, "other/name").unwrap(), data);
    assert_eq!(blob_a.requests.load(Ordering::SeqCst), 1);
    assert_eq!(
        blob_b.requests.load(Ordering::SeqCst),
        0,
        "same content, other layer: from the cache"
    );
    // A big one-chunk file on disk opens as a host file.
    assert!(b.open(Path::new("other/name")).unwrap().host_fd().is_some());
    // A new process's cache finds it on disk; if it was tampered with, it
    // is refetched, not served.
    let d = Digest::of(&data);
    let path = t.path().join("cache/sha256").join(d.hex());
    let mut bad = std::fs::read(&path).unwrap();
    bad[10] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    // (However quick the write, it leaves another mtime than the check
    // marked: what a change of a byte in place does over any longer time.)
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let cache2 = Arc::new(BlockCache::new(1 << 20, Some(chunks), 1 << 30, None));
    let (c, blob_c) = layer(&[("c", data.clone(), 0)], cache2.clone());
    assert!(
        c.open(Path::new("c")).unwrap().host_fd().is_none(),
        "a corrupt object is not handed to the kernel"
    );
    assert_eq!(read_all(&c, "c").unwrap(), data);
    assert_eq!(blob_c.requests.load(Ordering::SeqCst), 1);
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn the_disk_cache_stays_within_its_budget() {
    let t = tempfile::tempdir().unwrap();
    let chunks = Arc::new(crate::image::cas::temp_cas(t.path(), "cache"));
    let cache = Arc::new(BlockCache::new(0, Some(chunks.clone()), 1 << 20, None));
    let files: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| (format!("f{i}"), pattern(300_000, i as u8)))
        .collect();
    let spec: Vec<(&str, Vec<u8>, usize)> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.clone(), 0))
        .collect();
    let (l, _) = layer(&spec, cache.clone());
    for (n, d) in &files {
        assert_eq!(&read_all(&l, n).unwrap(), d);
    }
    let on_disk: u64 = chunks.list().unwrap().iter().map(|(_, s)| s).sum();
    assert!(on_disk <= 1 << 20, "{on_disk}");
    assert!(cache.stats.evicted.load(Ordering::SeqCst) >= 6);
    // Evicted files are fetched again when read.
    assert_eq!(read_all(&l, "f0").unwrap(), files[0].1);
}

/// What an earlier process left in the disk cache is read without being
/// listed (a mount that fetches nothing never reads the cache's
/// directory), and counts against the budget once this process adds to it.
#[test]
fn an_earlier_processs_cache_is_used_at_once_and_kept_within_the_budget() {
    let t = tempfile::tempdir().unwrap();
    let chunks = Arc::new(crate::image::cas::temp_cas(t.path(), "cache"));
    let files: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| (format!("f{i}"), pattern(300_000, 50 + i as u8)))
        .collect();
    let spec: Vec<(&str, Vec<u8>, usize)> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.clone(), 0))
        .collect();
    // An earlier process with a large budget fills the cache.
    {
        let cache = Arc::new(BlockCache::new(0, Some(chunks.clone()), 1 << 30, None));
        let (l, _) = layer(&spec[..6], cache);
        for (n, d) in &files[..6] {
            assert_eq!(&read_all(&l, n).unwrap(), d);
        }
    }
    let left: u64 = chunks.list().unwrap().iter().map(|(_, s)| s).sum();
    assert!(left >= 6 * 300_000, "{left}");
    // This one reads what is there without a request...
    let cache = Arc::new(BlockCache::new(0, Some(chunks.clone()), 1 << 20, None));
    let (l, blob) = layer(&spec, cache.clone());
    assert_eq!(read_all(&l, "f0").unwrap(), files[0].1);
    assert_eq!(blob.requests.load(Ordering::SeqCst), 0);
    // ...and what it adds makes room within its budget, the earlier
    // process's least recently used first.
    for (n, d) in &files[6..] {
        assert_eq!(&read_all(&l, n).unwrap(), d);
    }
    let on_disk: u64 = chunks.list().unwrap().iter().map(|(_, s)| s).sum();
    assert!(on_disk <= 1 << 20, "{on_disk}");
    assert_eq!(cache.usage().1, on_disk);
}

/// Reads the first MiB of `name` in order, as `cat` would: the reader of
/// a whole file.
fn read_first_mib(l: &ImageLayer, name: &str) {
    let f = l.open(Path::new(name)).unwrap();
    let mut b = vec![0u8; 128 << 10];
    for k in 0..8 {
        f.read_at(&mut b, k * (128 << 10)).unwrap();
    }
}

/// A program's pages (a library it maps) are read here and there: each
/// read fetches what it covers and a little read-ahead in the blob, not
/// the whole file, however long the mount then stays idle.
#[test]
fn reads_here_and_there_fetch_what_they_cover_not_the_whole_file() {
    let data = pattern(8 << 20, 9);
    let cache = Arc::new(BlockCache::in_memory(64 << 20));
    let (l, blob) = layer(&[("lib.so", data.clone(), 100_000)], cache);
    let f = l.open(Path::new("lib.so")).unwrap();
    let mut b = vec![0u8; 4096];
    for at in [4 << 20, 200_000, 6 << 20] {
        f.read_at(&mut b, at).unwrap();
        assert_eq!(&b[..], &data[at as usize..at as usize + 4096]);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let fetched = blob.bytes.load(Ordering::SeqCst);
    assert!(
        fetched < 4 << 20,
        "three reads of a page fetched {fetched} of {} bytes",
        blob.data.len()
    );
}

#[test]
fn background_fetch_gets_the_rest_of_a_file_and_stops_with_the_layer() {
    let data = pattern(2_000_000, 6);
    let cache = Arc::new(BlockCache::in_memory(64 << 20));
    let (l, blob) = layer(&[("f", data.clone(), 100_000)], cache.clone());
    read_first_mib(&l, "f");
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while blob.bytes.load(Ordering::SeqCst) < blob.data.len() as u64 - 7
        && Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let requests = blob.requests.load(Ordering::SeqCst);
    assert_eq!(read_all(&l, "f").unwrap(), data);
    assert_eq!(
        blob.requests.load(Ordering::SeqCst),
        requests,
        "the rest came in the background"
    );
    drop(l); // joins its thread
}

#[test]
fn a_read_fetches_the_files_that_follow_it_in_the_blob_in_the_same_request() {
    let files: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("f{i:02}"), pattern(10_000, i as u8)))
        .collect();
    let spec: Vec<(&str, Vec<u8>, usize)> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.clone(), 0))
        .collect();
    let cache = Arc::new(BlockCache::in_memory(64 << 20));
    let (l, blob) = layer(&spec, cache);
    for (n, d) in &files {
        assert_eq!(&read_all(&l, n).unwrap(), d);
    }
    let requests = blob.requests.load(Ordering::SeqCst);
    assert!(
        requests <= 4,
        "20 small files next to each other: {requests} requests"
    );
}

#[test]
fn a_file_fetched_whole_in_chunks_becomes_a_host_file() {
    let t = tempfile::tempdir().unwrap();
    let chunks = Arc::new(crate::image::cas::temp_cas(t.path(), "cache"));
    let mut data = pattern(3 << 20, 7);
    data[1 << 20..(1 << 20) + 200_000].fill(0);
    let cache = Arc::new(BlockCache::new(1 << 20, Some(chunks), 1 << 30, None));
    let (l, _) = layer(&[("f", data.clone(), 100_000)], cache);
    assert!(l.open(Path::new("f")).unwrap().host_fd().is_none());
    read_first_mib(&l, "f");
    // The rest comes in the background, then the file is put together.
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    let f = loop {
        let f = l.open(Path::new("f")).unwrap();
        if f.host_fd().is_some() || Instant::now() > deadline {
            break f;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(f.host_fd().is_some(), "not put together");
    let mut all = vec![0u8; data.len()];
    assert_eq!(f.read_at(&mut all, 0).unwrap(), data.len());
    assert!(all == data);
}

#[test]
fn a_start_asks_for_what_was_read_first_then_the_rest_in_blob_order() {
    const K: u64 = 1 << 10;
    let order = [(500 * K, 510 * K), (515 * K, 530 * K), (100 * K, 110 * K)];
    assert_eq!(
        start_jobs(600 * K, &order),
        [
            // Near neighbours in one request; a jump back starts another.
            (500 * K, 530 * K),
            (100 * K, 110 * K),
            (0, 256 * K),
            (256 * K, 512 * K),
            (512 * K, 600 * K),
        ]
    );
    assert!(start_jobs(0, &[]).is_empty());
}

#[test]
fn a_start_fetches_each_byte_once_and_serves_it() {
    let cache = Arc::new(BlockCache::new(64 << 20, None, 0, None));
    let names: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
    let files: Vec<(&str, Vec<u8>, usize)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), pattern(40_000, i as u8), 0))
        .collect();
    let (l, blob) = layer(&files, cache);
    let src: Vec<(u64, u64)> = (0..6)
        .map(|f| match l.tree().file(f).unwrap().chunks.get(0).source {
            Source::Blob { start, end } => (start, end),
            _ => unreachable!(),
        })
        .collect();
    let (first, data_end) = (src[0].0, src[5].1);
    let l = l.with_start(data_end, &[src[4], src[1]]);
    let t0 = Instant::now();
    while blob.bytes.load(Ordering::SeqCst) < data_end - first {
        assert!(t0.elapsed().as_secs() < 10, "the start was not fetched");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let before = blob.requests.load(Ordering::SeqCst);
    for (name, data, _) in &files {
        assert_eq!(&read_all(&l, name).unwrap(), data, "{name}");
    }
    assert_eq!(blob.requests.load(Ordering::SeqCst), before, "all there");
    // f4, f1, and the rest in one request (which may take the bytes of f4
    // and f1 along rather than make three).
    assert!(before <= 3, "{:?}", blob.ranges.lock().unwrap());
    assert!(blob.bytes.load(Ordering::SeqCst) <= 2 * (data_end - first));
}

#[test]
fn a_prefetched_file_copies_without_a_request() {
    // What a copy-up does before it takes the node's copy lock: after
    // prefetch, the copy under the lock reads only what is here.
    let big = pattern(3_000_000, 7);
    let files = vec![("usr/big", big.clone(), 65_536)];
    let cache = Arc::new(BlockCache::in_memory(64 << 20));
    let (l, blob) = layer(&files, cache);
    let f = l.open(Path::new("usr/big")).unwrap();
    f.prefetch().unwrap();
    let requests = blob.requests.load(Ordering::SeqCst);
    assert!(requests > 0);
    let dst = tempfile::tempfile().unwrap();
    f.copy_to(&dst, big.len() as u64, false).unwrap();
    assert_eq!(
        blob.requests.load(Ordering::SeqCst),
        requests,
        "the copy fetched"
    );
    let mut copied = Vec::new();
    std::io::Read::read_to_end(&mut &dst, &mut copied).unwrap();
    assert_eq!(copied, big);
}

/// `fetch_all` fetches every chunk the cache lacks in requests of about
/// [`READ_AHEAD`], not one per file; a file cut in chunks that the store's
/// files hold whole (a layer indexed before had it) is not fetched, and
/// reads of it come from there.
#[test]
fn fetch_all_gets_what_is_missing_in_few_requests_and_skips_files_held_whole() {
    let t = tempfile::tempdir().unwrap();
    let chunks = Arc::new(crate::image::cas::temp_cas(t.path(), "cache"));
    let files = Arc::new(crate::image::cas::temp_cas(t.path(), "files"));
    // Bytes that do not compress: the blob is as big as its files.
    let noise = |n: usize, seed: u64| -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    };
    let held = noise(3 << 20, 9);
    files.put(&Digest::of(&held), &held).unwrap();
    let small: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| (format!("s{i:03}"), noise(10_000 + i, i as u64 + 100)))
        .collect();
    let mut list: Vec<(&str, Vec<u8>, usize)> = vec![("held", held.clone(), 100_000)];
    list.extend(small.iter().map(|(n, d)| (n.as_str(), d.clone(), 0)));
    list.push(("big", noise(2 << 20, 3), 100_000));
    let cache = Arc::new(BlockCache::new(1 << 20, Some(chunks), 1 << 30, Some(files)));
    let (l, blob) = layer(&list, cache);
    l.fetch_all();
    let want: u64 = blob.data.len() as u64;
    for (name, data, _) in &list {
        assert!(read_all(&l, name).unwrap() == *data, "{name}");
    }
    let (requests, bytes) = (
        blob.requests.load(Ordering::SeqCst),
        blob.bytes.load(Ordering::SeqCst),
    );
    // The held file's ~3 MiB of frames were not fetched.
    assert!(bytes + (2 << 20) < want, "{bytes} of {want} bytes fetched");
    let most = bytes / READ_AHEAD + 4;
    assert!(requests <= most, "{requests} requests for {bytes} bytes");
    assert!(l.open(Path::new("held")).unwrap().host_fd().is_some());
}
