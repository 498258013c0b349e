//! Several threads on one mount at once: racing copy-ups of one file and
//! of one parent dir. Each thread works on its own bytes or names, so the
//! end state is the same whatever the interleaving, and must equal the
//! kernel's.

use std::collections::BTreeMap;

use crate::harness::{standard, Fixture};
use crate::sys;

const THREADS: usize = 8;

/// Counts results by outcome ("ok", "EIO", ...), for a deterministic log.
fn tally(results: Vec<sys::SysResult<()>>) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for r in results {
        let k = match r {
            Ok(()) => "ok".to_string(),
            Err(e) => sys::errno_name(e),
        };
        *t.entry(k).or_insert(0) += 1;
    }
    t
}

#[test]
fn concurrent_writes_copy_up_one_lower_file_once() {
    let (mut lowers, upper) = standard();
    lowers[1] = lowers[1]
        .clone()
        .big_file("shared", 256 << 10)
        .big_file("deep/er/shared", 256 << 10);
    let fix = Fixture::new(&lowers, &upper);
    fix.check(|c| {
        for file in ["shared", "deep/er/shared"] {
            let path = c.p(file);
            let results: Vec<_> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..THREADS)
                    .map(|t| {
                        let path = &path;
                        s.spawn(move || {
                            let mut out = Vec::new();
                            for round in 0..8 {
                                let r = sys::open(path, libc::O_RDWR, 0).and_then(|fd| {
                                    let off = ((round * THREADS + t) * 4096) as i64;
                                    sys::pwrite(&fd, &[b'a' + t as u8; 4096], off).map(drop)
                                });
                                out.push(r);
                            }
                            out
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap())
                    .collect()
            });
            c.note(&format!("{file}: pwrite results"), tally(results));
            c.read(file).ok();
        }
    });
}

#[test]
fn concurrent_creates_copy_up_one_lower_dir() {
    let fix = Fixture::new(&standard().0, &standard().1);
    fix.check(|c| {
        let root = c.p("");
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> =
                (0..THREADS)
                    .map(|t| {
                        let root = &root;
                        s.spawn(move || {
                            let mut out = Vec::new();
                            for i in 0..10 {
                                for dir in ["ld/sub", "md", "wd", "ledir"] {
                                    let p = root.join(dir).join(format!("t{t}-{i}"));
                                    out.push(
                                        sys::open(
                                            &p,
                                            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                                            0o644,
                                        )
                                        .and_then(|fd| {
                                            sys::write(&fd, format!("{dir}/t{t}-{i}").as_bytes())
                                                .map(drop)
                                        }),
                                    );
                                }
                                // Readers racing the writers.
                                out.push(std::fs::read_dir(root.join("ld")).map(drop).map_err(
                                    |e| sys::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                                ));
                            }
                            out
                        })
                    })
                    .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        c.note("create results", tally(results));
        for d in ["ld/sub", "md", "wd", "ledir"] {
            c.readdir(d).ok();
        }
    });
}
