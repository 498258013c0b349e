//! A process in the mount may be hostile and race the server: it can keep
//! an fd of a file, remove the file, put a symlink to a host file in its
//! place, and then change the file through its fd. The server (root, with
//! `allow_other`) must change the file the fd is open on, never what now
//! holds its old name. Kernel overlayfs holds in every case here; the same
//! script runs on both, as an unprivileged user inside the mount, against
//! a root-only canary outside the mount.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::harness::Fixture;
use crate::layers::Layer;
use crate::mounts::{Impl, Mount};
use crate::sys::{self, run_as, Step};

const NOBODY: u32 = 65534;

/// A root-only dir with a root-only file outside every mount: what an
/// attacker would aim the server at.
struct Canary {
    dir: PathBuf,
    file: PathBuf,
}

impl Canary {
    fn new(base: &Path) -> Canary {
        let dir = base.join("canary");
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, b"root only").unwrap();
        std::fs::write(dir.join("f"), b"root only too").unwrap();
        for p in [&file, &dir.join("f")] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Canary { dir, file }
    }

    /// Panics if anything of the canary changed.
    fn assert_untouched(&self, fs: &str) {
        for p in [&self.file, &self.dir.join("f")] {
            let m = std::fs::symlink_metadata(p).unwrap();
            assert_eq!(
                m.mode() & 0o7777,
                0o600,
                "{fs}: the host file {} had its mode changed through the mount",
                p.display()
            );
            assert_eq!(
                (m.uid(), m.gid()),
                (0, 0),
                "{fs}: {} changed owner",
                p.display()
            );
            assert!(
                sys::llistxattr(p).unwrap().is_empty(),
                "{fs}: the host file {} got xattrs through the mount",
                p.display()
            );
            assert!(m.len() > 0, "{fs}: {} was truncated", p.display());
        }
    }
}

/// A fixture whose subject allows other users, with a world-writable dir
/// `pub` in the lower layer and one `up` in the upper dir.
fn fixture() -> Fixture {
    let lower = Layer::new().dir_mode("pub", 0o777).file("pub/keep", "k");
    let upper = Layer::new().dir_mode("up", 0o777);
    let imp = Impl::from_env();
    let fix = Fixture::with_subject(&[lower], Some(&upper), |l, uw, m| {
        Mount::subject_with(imp, l, uw, m, true)
    });
    std::fs::set_permissions(fix.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    fix
}

/// The kept-fd attack in directory `dir` of the mount at `root`: create a
/// file, keep fds (opened for writing, and O_PATH), remove it, put a
/// symlink to the canary in its place, then change the file through the
/// fds. Returns each step's result.
fn kept_fd_attack(root: &Path, dir: &str, canary: &Canary) -> Vec<i64> {
    let f = root.join(dir).join("victim");
    let steps = vec![
        Step::Open(Step::path(&f), libc::O_CREAT | libc::O_RDWR, 0o600),
        Step::OpenPath(Step::path(&f)),
        Step::Unlink(Step::path(&f)),
        Step::Symlink(Step::path(&canary.file), Step::path(&f)),
        Step::Fchmod(0, 0o777),
        Step::ProcChmod(1, 0o666),
        Step::Fsetxattr(0, Step::name("user.evil"), b"1".to_vec()),
        Step::Futimens(0, 1),
        Step::Ftruncate(0, 0),
        Step::FstatMode(0),
        Step::FstatMode(1),
    ];
    run_as(NOBODY, &steps)
}

/// The same with the file's directory removed and replaced by a symlink
/// to the canary's directory: `DIR/NAME` on the host must stay untouched.
fn kept_fd_in_removed_dir_attack(root: &Path, dir: &str, canary: &Canary) -> Vec<i64> {
    let d = root.join(dir).join("d");
    let f = d.join("f");
    let steps = vec![
        Step::Mkdir(Step::path(&d), 0o777),
        Step::Open(Step::path(&f), libc::O_CREAT | libc::O_RDWR, 0o600),
        Step::OpenPath(Step::path(&f)),
        Step::Unlink(Step::path(&f)),
        Step::Rmdir(Step::path(&d)),
        Step::Symlink(Step::path(&canary.dir), Step::path(&d)),
        Step::Fchmod(1, 0o777),
        Step::ProcChmod(2, 0o666),
        Step::Fsetxattr(1, Step::name("user.evil"), b"1".to_vec()),
        Step::Ftruncate(1, 0),
        Step::FstatMode(1),
    ];
    run_as(NOBODY, &steps)
}

#[test]
fn changes_through_a_kept_fd_never_reach_what_took_the_files_name() {
    let fix = fixture();
    let canary = Canary::new(fix.dir.path());
    // In a lower dir (copied up first) and in an upper one.
    for dir in ["pub", "up"] {
        let k = kept_fd_attack(&fix.kernel.root, dir, &canary);
        canary.assert_untouched("kernel overlayfs");
        let s = kept_fd_attack(&fix.subject.root, dir, &canary);
        canary.assert_untouched(&fix.name());
        // The fds changed the removed file itself, still a regular file.
        assert_eq!(
            s[9] as u32 & libc::S_IFMT,
            libc::S_IFREG,
            "{}: fstat of the kept fd: {s:?}",
            fix.name()
        );
        assert_eq!(
            s,
            k,
            "{}: results of the kept-fd script in {dir} differ from kernel overlayfs",
            fix.name()
        );
        let k = kept_fd_in_removed_dir_attack(&fix.kernel.root, dir, &canary);
        canary.assert_untouched("kernel overlayfs");
        let s = kept_fd_in_removed_dir_attack(&fix.subject.root, dir, &canary);
        canary.assert_untouched(&fix.name());
        assert_eq!(
            s,
            k,
            "{}: results of the removed-dir script in {dir} differ from kernel overlayfs",
            fix.name()
        );
    }
}
