//! The comparison fixture: the same layers under kernel overlayfs and under
//! the subject (rcfs), the same operations on both, and equal results.
//!
//! A [`Fixture`] owns a temp dir holding two identical copies of a case's
//! layers (lower layers top-first, plus an optional pre-filled upper dir) and
//! both mounts; dropping it unmounts both before the temp dir goes. Each test
//! builds its own fixture, so tests run in parallel without sharing anything.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::layers::{Layer, Reader};
use crate::mounts::{self, Impl, Mount, Watchdog, CASE_DEADLINE};
use crate::ops::Ops;
use crate::snapshot::{self, Snapshot};

/// Both mounts of one case. Fields drop in order: mounts before the dir.
pub struct Fixture {
    _watchdog: Watchdog,
    pub kernel: Mount,
    pub subject: Mount,
    pub imp: Impl,
    /// The kernel's and the subject's layer dirs, for remounting.
    kernel_dirs: Dirs,
    subject_dirs: Dirs,
    pub dir: TempDir,
}

/// Lower dirs (top first) and upper/work dirs of one mount.
struct Dirs {
    lowers: Vec<PathBuf>,
    upper_work: Option<(PathBuf, PathBuf)>,
}

impl Dirs {
    fn upper_work(&self) -> Option<(&Path, &Path)> {
        self.upper_work
            .as_ref()
            .map(|(u, w)| (u.as_path(), w.as_path()))
    }
}

/// A new temp dir for one test (under $TMPDIR or /tmp).
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("rcfs-e2e-")
        .tempdir()
        .expect("creating a temp dir")
}

/// Writes `lowers` (top first) and `upper` under `base` for `reader`;
/// returns (lower dirs, upper, work, mount point).
pub fn lay_out(
    base: &Path,
    lowers: &[Layer],
    upper: Option<&Layer>,
    reader: Reader,
) -> (Vec<PathBuf>, PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(base).unwrap();
    let mut lower_dirs = Vec::new();
    for (i, layer) in lowers.iter().enumerate() {
        let d = base.join(format!("lower{i}"));
        std::fs::create_dir(&d).unwrap();
        layer.write(&d, reader);
        lower_dirs.push(d);
    }
    let (u, w, m) = (base.join("upper"), base.join("work"), base.join("mnt"));
    for d in [&u, &w, &m] {
        std::fs::create_dir(d).unwrap();
    }
    if let Some(layer) = upper {
        layer.write(&u, reader);
    }
    (lower_dirs, u, w, m)
}

impl Fixture {
    /// Lower layers top first, and what the upper dir holds before mounting.
    pub fn new(lowers: &[Layer], upper: &Layer) -> Fixture {
        Fixture::build(lowers, Some(upper))
    }

    /// No upper dir: a read-only mount.
    pub fn read_only(lowers: &[Layer]) -> Fixture {
        Fixture::build(lowers, None)
    }

    fn build(lowers: &[Layer], upper: Option<&Layer>) -> Fixture {
        let imp = Impl::from_env();
        Fixture::with_subject(lowers, upper, |l, uw, m| Mount::subject(imp, l, uw, m))
    }

    /// Like [`Fixture::new`], with FUSE passthrough off: every read and
    /// write is served by rcfs, which gives overlayfs's semantics for files
    /// open while they are copied up (see `inodes::passthrough_*`).
    pub fn without_passthrough(lowers: &[Layer], upper: &Layer) -> Fixture {
        let imp = Impl::from_env();
        Fixture::with_subject(lowers, Some(upper), |l, uw, m| {
            Mount::subject_args(imp, l, uw, m, false, &["--no-passthrough"])
        })
    }

    /// Like [`Fixture::new`], but the subject is mounted by `mount` (given
    /// lower dirs, upper and work dirs, mount point), e.g. through another
    /// command line.
    pub fn with_subject(
        lowers: &[Layer],
        upper: Option<&Layer>,
        mount: impl FnOnce(&[PathBuf], Option<(&Path, &Path)>, &Path) -> Mount,
    ) -> Fixture {
        mounts::require_privileges();
        let imp = Impl::from_env();
        let dir = temp_dir();
        let (kl, ku, kw, km) = lay_out(&dir.path().join("kernel"), lowers, upper, Reader::Kernel);
        let (sl, su, sw, sm) = lay_out(
            &dir.path().join("subject"),
            lowers,
            upper,
            Reader::Subject(imp),
        );
        let watchdog = Watchdog::new(&sm, CASE_DEADLINE);
        let kernel = Mount::kernel(&kl, upper.map(|_| (ku.as_path(), kw.as_path())), &km);
        let subject = mount(&sl, upper.map(|_| (su.as_path(), sw.as_path())), &sm);
        let has_upper = upper.is_some();
        Fixture {
            _watchdog: watchdog,
            kernel,
            subject,
            imp,
            kernel_dirs: Dirs {
                lowers: kl,
                upper_work: has_upper.then_some((ku, kw)),
            },
            subject_dirs: Dirs {
                lowers: sl,
                upper_work: has_upper.then_some((su, sw)),
            },
            dir,
        }
    }

    /// Unmounts both mounts and mounts them again over the same dirs (the
    /// subject with [`Mount::subject`]): what was written must read back the
    /// same from the upper dir alone.
    pub fn remount(&mut self) {
        self.remount_with(false)
    }

    /// [`Fixture::remount`], the subject with `allow_other` if asked.
    pub fn remount_with(&mut self, allow_other: bool) {
        self.kernel
            .unmount()
            .expect_ok("unmounting kernel overlayfs");
        let kernel = Mount::kernel(
            &self.kernel_dirs.lowers,
            self.kernel_dirs.upper_work(),
            &self.kernel.root,
        );
        // The old Mount is unmounted; dropping it would take the new one down.
        std::mem::forget(std::mem::replace(&mut self.kernel, kernel));
        self.subject
            .unmount()
            .expect_ok(&format!("unmounting {}", self.name()));
        assert!(
            mounts::wait_daemons_gone(&self.subject.root, std::time::Duration::from_secs(5)),
            "{} daemon still running 5 s after unmount",
            self.name()
        );
        let subject = Mount::subject_with(
            self.imp,
            &self.subject_dirs.lowers,
            self.subject_dirs.upper_work(),
            &self.subject.root,
            allow_other,
        );
        std::mem::forget(std::mem::replace(&mut self.subject, subject));
    }

    pub fn name(&self) -> String {
        format!("{:?}", self.imp)
    }

    /// The subject's lower dir `i` (0 is the top).
    pub fn subject_lower(&self, i: usize) -> &Path {
        &self.subject_dirs.lowers[i]
    }

    /// The kernel mount's lower dir `i` (0 is the top).
    pub fn kernel_lower(&self, i: usize) -> &Path {
        &self.kernel_dirs.lowers[i]
    }

    /// The subject's upper dir.
    pub fn subject_upper(&self) -> &Path {
        self.subject
            .upper
            .as_deref()
            .expect("fixture has an upper dir")
    }

    /// Runs `case` on the kernel mount, then on the subject's; fails the test
    /// unless both logs and both merged trees afterwards are equal. Returns
    /// the subject's log for further, subject-only assertions.
    pub fn check(&self, case: impl Fn(&mut Ops)) -> Vec<String> {
        let mut k = Ops::new(&self.kernel.root);
        case(&mut k);
        let mut s = Ops::new(&self.subject.root);
        case(&mut s);
        let ksnap = snapshot::snapshot(&self.kernel.root);
        let ssnap = snapshot::snapshot(&self.subject.root);
        let mut report = log_diff("kernel", &k.log, &self.name(), &s.log);
        let tree = snapshot::diff("kernel", &ksnap, &self.name(), &ssnap);
        if !tree.is_empty() {
            report.push_str(&format!("merged trees differ after the case:\n{tree}"));
        }
        assert!(
            report.is_empty(),
            "{} differs from kernel overlayfs:\n{}",
            self.name(),
            squeeze(&report)
        );
        s.log
    }

    /// Compares the two merged trees as they are now.
    pub fn check_trees(&self) {
        let tree = snapshot::diff(
            "kernel",
            &self.snapshot_kernel(),
            &self.name(),
            &self.snapshot_subject(),
        );
        assert!(
            tree.is_empty(),
            "{} merged tree differs from kernel overlayfs:\n{tree}",
            self.name()
        );
    }

    /// Runs `case` on the subject only (for behaviour the kernel does not
    /// share); returns its log.
    pub fn on_subject(&self, case: impl Fn(&mut Ops)) -> Vec<String> {
        let mut s = Ops::new(&self.subject.root);
        case(&mut s);
        s.log
    }

    /// Runs `case` on the kernel mount only; returns its log.
    pub fn on_kernel(&self, case: impl Fn(&mut Ops)) -> Vec<String> {
        let mut k = Ops::new(&self.kernel.root);
        case(&mut k);
        k.log
    }

    pub fn snapshot_subject(&self) -> Snapshot {
        snapshot::snapshot(&self.subject.root)
    }

    pub fn snapshot_kernel(&self) -> Snapshot {
        snapshot::snapshot(&self.kernel.root)
    }
}

/// "" if the logs are equal, else both logs with differing lines marked.
pub fn log_diff(a_name: &str, a: &[String], b_name: &str, b: &[String]) -> String {
    if a == b {
        return String::new();
    }
    let mut out = String::from("operation results differ (`!` marks differing lines):\n");
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (
            a.get(i).map(String::as_str).unwrap_or("<none>"),
            b.get(i).map(String::as_str).unwrap_or("<none>"),
        );
        if x == y {
            out.push_str(&format!("    {x}\n"));
        } else {
            out.push_str(&format!("  ! {a_name}: {x}\n  ! {b_name}: {y}\n"));
        }
    }
    out
}

/// Panics unless `snap` has no problems (duplicates, d_type/d_ino).
pub fn assert_no_problems(name: &str, snap: &Snapshot) {
    assert!(snap.problems.is_empty(), "{name}: {:#?}", snap.problems);
}

/// The layers most mutation cases start from: files, dirs and symlinks in
/// the lower layers only, in the upper dir only, and in both.
///
/// * lower only: `lf`, `tf` (top lower layer), `ld/` (`ld/f`, `ld/sub/g`),
///   `ledir/` (empty), `lsym -> lf`, `owned` (1000:1000, 0640, user.x),
///   `wd/` (its entries `x`, `y` whited out by the top layer: empty)
/// * upper only: `uf`, `ud/` (`ud/f`), `uedir/` (empty), `usym -> uf`
/// * both: `both`, `md/` (`md/lf`, `md/tf` lower; `md/uf` upper; `md/both`
///   in both)
pub fn standard() -> (Vec<Layer>, Layer) {
    let bottom = Layer::new()
        .file("lf", "lower file\n")
        .file("both", "both, lower version\n")
        .file("ld/f", "ld/f lower\n")
        .file("ld/sub/g", "ld/sub/g lower\n")
        .dir("ledir")
        .file("md/lf", "md/lf lower\n")
        .file("md/both", "md/both lower\n")
        .symlink("lsym", "lf")
        .file("wd/x", "whited out\n")
        .file("wd/y", "whited out\n")
        .file_mode("owned", "owned by 1000\n", 0o640)
        .owner("owned", 1000, 1000)
        .xattr("owned", "user.x", "lower xattr");
    let top = Layer::new()
        .file("tf", "top lower file\n")
        .whiteout("wd/x")
        .whiteout("wd/y")
        .file("md/tf", "md/tf top\n");
    let upper = Layer::new()
        .file("uf", "upper file\n")
        .file("both", "both, upper version\n")
        .file("ud/f", "ud/f upper\n")
        .dir("uedir")
        .file("md/uf", "md/uf upper\n")
        .file("md/both", "md/both upper\n")
        .symlink("usym", "uf");
    (vec![top, bottom], upper)
}

/// A fixture over [`standard`] layers.
pub fn standard_fixture() -> Fixture {
    let (lowers, upper) = standard();
    Fixture::new(&lowers, &upper)
}

/// Shortens runs of one character (long test names) to `c×N`, for reports.
pub fn squeeze(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let mut j = i;
        while j < chars.len() && chars[j] == chars[i] {
            j += 1;
        }
        if j - i >= 16 {
            out.push_str(&format!("{}×{}", chars[i], j - i));
        } else {
            out.extend(&chars[i..j]);
        }
        i = j;
    }
    out
}
