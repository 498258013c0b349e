//! Data paths beyond read/write: reads at odd offsets of a big lower file,
//! shared mmap, and executing files from the mount (containers do).

use crate::harness::{standard, Fixture};
use crate::layers::Layer;
use crate::sys;

#[test]
fn reads_at_odd_offsets_of_a_big_lower_file() {
    let bottom = Layer::new().big_file("big", (3 << 20) + 12345);
    let fix = Fixture::new(&[bottom], &Layer::new());
    fix.check(|c| {
        if let Ok(fd) = c.open("big", libc::O_RDONLY, 0, "O_RDONLY") {
            for (off, len) in [
                (0, 1),
                (4095, 2),
                (131_071, 131_074),
                ((1 << 20) - 3, 7),
                ((1 << 20) + 1, 1 << 20),
                ((3 << 20) + 12340, 100), // short read at end of file
                ((3 << 20) + 12345, 10),  // at end of file
                (10 << 20, 10),           // past end of file
            ] {
                c.pread(&fd, len, off).ok();
            }
        }
    });
}

#[test]
fn shared_mmap_of_lower_and_upper_files() {
    let (mut lowers, upper) = standard();
    lowers[1] = lowers[1].clone().big_file("mapped", 64 << 10);
    let fix = Fixture::new(&lowers, &upper);
    fix.check(|c| {
        // Read-only mapping of a lower file: no copy-up.
        if let Ok(fd) = c.open("lf", libc::O_RDONLY, 0, "O_RDONLY") {
            let r = sys::fstat(&fd).and_then(|st| {
                let len = st.st_size as usize;
                // PROT_WRITE + MAP_SHARED on an O_RDONLY fd: EACCES.
                sys::with_shared_mapping(&fd, len, |_| {})
            });
            c.rec_ok("mmap shared rw of O_RDONLY fd".into(), r).ok();
        }
        for p in ["mapped", "uf", "md/both"] {
            if let Ok(fd) = c.open(p, libc::O_RDWR, 0, "O_RDWR") {
                let len = sys::fstat(&fd).map(|st| st.st_size as usize).unwrap_or(0);
                let r = sys::with_shared_mapping(&fd, len, |m| {
                    m[0] = b'M';
                    let mid = m.len() / 2;
                    m[mid] = b'M';
                });
                c.rec_with(format!("mmap {p} and poke"), r, |before| {
                    format!("{:?}", crate::snapshot::Content::of(before))
                })
                .ok();
            }
            c.read(p).ok();
        }
    });
}

#[test]
fn exec_files_from_the_mount() {
    let true_bin = std::fs::read("/bin/true").expect("reading /bin/true");
    let bottom = Layer::new()
        .file_mode("bin/true", &true_bin, 0o755)
        .file_mode(
            "bin/sleep",
            std::fs::read("/bin/sleep").expect("reading /bin/sleep"),
            0o755,
        )
        .file_mode("bin/script", "#!/bin/sh\necho \"script $1\"\n", 0o755)
        .file_mode("bin/noexec", "#!/bin/sh\n", 0o644);
    let fix = Fixture::new(&[bottom], &Layer::new());
    fix.check(|c| {
        let run = |c: &mut crate::ops::Ops, label: &str, p: &str| {
            let out = std::process::Command::new(c.p(p)).arg("arg").output();
            let v = match out {
                Ok(o) => format!("{} {:?}", o.status, String::from_utf8_lossy(&o.stdout)),
                Err(e) => format!("spawn error {:?}", e.raw_os_error()),
            };
            c.note(label, v);
        };
        run(c, "exec lower binary", "bin/true");
        run(c, "exec lower script", "bin/script");
        run(c, "exec 0644 file", "bin/noexec");
        c.chmod("bin/true", 0o700).ok(); // copy-up
        run(c, "exec copied-up binary", "bin/true");
        c.write_file("bin/script", "#!/bin/sh\necho \"rewritten $1\"\n")
            .ok();
        run(c, "exec rewritten script", "bin/script");
        // Opening a running executable for writing: ETXTBSY.
        if let Ok(mut child) = std::process::Command::new(c.p("bin/sleep"))
            .arg("5")
            .spawn()
        {
            std::thread::sleep(std::time::Duration::from_millis(100));
            c.open("bin/sleep", libc::O_WRONLY, 0, "O_WRONLY while running")
                .ok();
            let _ = child.kill();
            let _ = child.wait();
        }
    });
}

#[test]
fn opening_a_file_reads_the_next_files_of_its_directory_ahead() {
    const N: usize = 40;
    const LEN: usize = 64 * 1024;
    let mut bottom = Layer::new();
    for i in 0..N {
        bottom = bottom.big_file(&format!("d/f{i:02}"), LEN);
    }
    let fix = Fixture::new(&[bottom], &Layer::new());
    let lower = fix.subject_lower(0).join("d");
    let merged = fix.subject.root.join("d");
    // Readdir order, as a program that opens the files one by one meets them.
    let names: Vec<String> = std::fs::read_dir(&merged)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), N);
    let cached = |n: &str| sys::cached_pages(&lower.join(n)).unwrap();
    for n in &names {
        sys::evict(&lower.join(n)).unwrap();
        assert_eq!(
            cached(n),
            0,
            "{n} is still in the page cache after eviction"
        );
    }

    let fd = sys::open(&merged.join(&names[0]), libc::O_RDONLY, 0).unwrap();
    assert_eq!(sys::read_to_end(&fd).unwrap().len(), LEN);
    // The read-ahead runs in the background, and its reads take what the
    // disk takes (long on a loaded machine): wait for the next 8 files.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let ahead = || -> Vec<usize> { names[1..9].iter().map(|n| cached(n)).collect() };
    while ahead().iter().any(|&p| p != LEN / 4096) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let ahead = ahead();
    assert!(
        ahead.iter().all(|&p| p == LEN / 4096),
        "pages cached of the 8 files after the one opened: {ahead:?}"
    );
    // Only ahead: the files far behind in readdir order are left alone.
    let far: Vec<usize> = names[N - 10..].iter().map(|n| cached(n)).collect();
    assert!(
        far.iter().all(|&p| p == 0),
        "pages cached of the last 10 files: {far:?}"
    );
}

/// Without passthrough, a small lower file opened for reading comes into
/// the page cache with its OPEN (no READ needed); a large one does not.
/// What is read stays right across a copy-up and writes.
#[test]
fn small_files_come_with_their_open_without_passthrough() {
    let bottom = Layer::new()
        .file("small", "x".repeat(10_000))
        .big_file("big", 200_000)
        .file("empty", "");
    let fix = Fixture::without_passthrough(&[bottom], &Layer::new());
    let m = &fix.subject.root;
    // cached_pages opens the file, then maps it: no read has happened.
    assert_eq!(sys::cached_pages(&m.join("small")).unwrap(), 3);
    assert_eq!(sys::cached_pages(&m.join("big")).unwrap(), 0);
    assert_eq!(sys::cached_pages(&m.join("empty")).unwrap(), 0);
    fix.check(|c| {
        let Ok(r) = c.open("small", libc::O_RDONLY, 0, "O_RDONLY") else {
            return;
        };
        c.pread(&r, 20, 0).ok();
        if let Ok(w) = c.open("small", libc::O_RDWR, 0, "O_RDWR") {
            c.pwrite(&w, b"yyy", 5).ok();
            c.pwrite(&w, b"tail", 10_000).ok();
        }
        c.pread(&r, 20, 0).ok();
        c.pread(&r, 20, 9_995).ok();
        if let Ok(again) = c.open("small", libc::O_RDONLY, 0, "O_RDONLY") {
            c.pread(&again, 20, 0).ok();
        }
    });
}

/// Without passthrough, reads of a lower file are spliced from its page
/// cache into the reply (the patched fuser's `splice_from`). O_DIRECT
/// reads reach the server at the offsets and lengths they were made with:
/// odd ones, across and past the end, and of a dir layer's file that was
/// cut shorter after the kernel learnt its size, all give the file's bytes.
#[test]
fn direct_reads_of_a_lower_file_give_its_bytes_at_any_offset() {
    const LEN: usize = (1 << 20) + 4321;
    let bottom = Layer::new().big_file("big", LEN);
    let fix = Fixture::without_passthrough(&[bottom], &Layer::new());
    let want = crate::layers::pattern(LEN, 3);
    let m = &fix.subject.root;
    let fd = sys::open(&m.join("big"), libc::O_RDONLY | libc::O_DIRECT, 0).unwrap();
    for (off, len) in [
        (0usize, 1usize << 20),
        (1, 200_000),
        (4097, 65_537),
        (131_071, 131_074),
        (LEN - 10, 100_000), // across the end
        (LEN - 9000, 9000),  // to the end exactly
        (LEN + 5, 20_000),   // past the end
    ] {
        let got = sys::pread(&fd, len, off as i64).unwrap();
        let end = (off + len).min(LEN).max(off.min(LEN));
        assert!(
            got == want[off.min(LEN)..end],
            "{len} bytes at {off}: {} bytes read, not the file's {}",
            got.len(),
            end - off.min(LEN)
        );
    }
    // The host's lower file cut to 50,000 bytes: the mount still says the
    // old size, a read gets what the file now holds.
    sys::truncate(&fix.subject_lower(0).join("big"), 50_000).unwrap();
    let got = sys::pread(&fd, 300_000, 10_000).unwrap();
    assert!(
        got == want[10_000..50_000],
        "{} bytes read after the cut",
        got.len()
    );
}
