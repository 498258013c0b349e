//! The seccomp program of a container's command (`--security-opt
//! seccomp=...`, see `rcfs_runtime::seccomp`), compiled once per profile
//! and kept in the store: libseccomp takes some 15 ms to generate the BPF
//! of podman's profile, which a warm start would otherwise pay every time.
//!
//! The programs live in the store's `seccomp/` (0700), one file (0600) per
//! key, named by the sha256 of [`ProfileText::cache_key`] (the profile, the
//! command's capabilities, the architecture, the kernel release and
//! libseccomp's version). Only the store's owner can write there (the store
//! is 0700 and theirs); a file that is not a program is compiled again.
//! At most [`MAX_PROGRAMS`] are kept: past that the dir is emptied first.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

use anyhow::{Context, Result};
use rcfs_fs::image::digest::Digest;
use rcfs_fs::image::store::Store;
use rcfs_runtime::seccomp::{self, Profile};

/// The most programs kept (a profile each, per kernel and libseccomp).
pub const MAX_PROGRAMS: usize = 32;

/// The program for `--security-opt seccomp=OPT` (`None`: the option not
/// given, the default profile); `None` when unconfined.
pub fn program(store: &Store, opt: Option<&str>) -> Result<Option<Vec<u8>>> {
    let Some(text) = seccomp::choose(opt).map_err(anyhow::Error::msg)? else {
        return Ok(None);
    };
    let dir = store.root.join("seccomp");
    let path = dir.join(format!(
        "{}.bpf",
        Digest::of(text.cache_key().as_bytes()).hex()
    ));
    if let Some(p) = cached(&path) {
        return Ok(Some(p));
    }
    let profile = text.parse().map_err(anyhow::Error::msg)?;
    let p = compile(&profile, opt)?;
    if let Err(e) = keep(&dir, &path, &p) {
        log::warn!(
            "cannot keep the seccomp program in {}: {e:#} (it is compiled again next time)",
            dir.display()
        );
    }
    Ok(Some(p))
}

fn compile(profile: &Profile, opt: Option<&str>) -> Result<Vec<u8>> {
    seccomp::program(profile).with_context(|| match opt {
        Some(p) => format!("the seccomp profile {p} (--security-opt seccomp=FILE|unconfined)"),
        None => "the default seccomp profile".to_owned(),
    })
}

/// The program kept at `path`, if it is one.
fn cached(path: &std::path::Path) -> Option<Vec<u8>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut out = Vec::new();
    f.take(4096 * 8 + 1).read_to_end(&mut out).ok()?;
    seccomp::check_program(&out).ok()?;
    Some(out)
}

/// Writes `program` to `path` in `dir` (made 0700), whole or not at all.
fn keep(dir: &std::path::Path, path: &std::path::Path, program: &[u8]) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let n = std::fs::read_dir(dir)?.count();
            if n >= MAX_PROGRAMS {
                for e in std::fs::read_dir(dir)?.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Err(e) => return Err(e.into()),
    }
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(program)?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    Ok(())
}
