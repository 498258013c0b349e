//! Named volumes and `--mount`: `rcfs volume create/ls/rm`, `-v NAME:/path`
//! and `--mount type=bind|volume|tmpfs,...` with podman's meanings.
//!
//! A volume is a dir of the store, `volumes/NAME/_data` (as podman keeps
//! them), made on first use; `volumes/` and `NAME/` are 0700 like every
//! store dir, `_data` 0755 and the user's (the container's root's). A
//! container's binds are resolved before it starts: its record keeps the
//! host paths, so that it starts again on the same data.

use std::os::fd::AsFd;

use anyhow::{bail, Context, Result};
use rcfs_fs::image::store::Store;

use crate::run::RunOptions;

/// The dir a volume's data is in.
const DATA: &str = "_data";

fn volumes_dir(store: &Store) -> Result<std::os::fd::OwnedFd> {
    store.own_dir("volumes").with_context(|| {
        format!(
            "cannot open the volumes of the store {}",
            store.root.display()
        )
    })
}

/// The host path of the volume `name`'s data, made if it is not there.
pub fn data_dir(store: &Store, name: &str) -> Result<std::path::PathBuf> {
    check_name(name)?;
    let vols = volumes_dir(store)?;
    match crate::containers::make_dir_mode(vols.as_fd(), name, 0o700) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(e).with_context(|| format!("cannot make volume {name}")),
    }
    let dir = crate::containers::open_dir(vols.as_fd(), name)
        .with_context(|| format!("cannot open volume {name}"))?;
    match crate::containers::make_dir_mode(dir.as_fd(), DATA, 0o755) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            // A dir, not a symlink that would lead the bind elsewhere.
            let st = nix::sys::stat::fstatat(
                dir.as_fd(),
                DATA,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
            if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                bail!("volume {name}: its {DATA} is not a directory");
            }
        }
        Err(e) => return Err(e).with_context(|| format!("cannot make volume {name}'s data dir")),
    }
    Ok(store.root.join("volumes").join(name).join(DATA))
}

fn check_name(name: &str) -> Result<()> {
    crate::run::check_name(name).map_err(|_| {
        anyhow::anyhow!(
            "invalid volume name {name:?}: use letters, digits, '_', '.' and '-', starting with \
             a letter or digit"
        )
    })
}

/// `rcfs volume create [NAME]`: prints its name (a new id without one).
pub fn create(store: &Store, name: Option<&str>) -> Result<()> {
    let name = name.map_or_else(crate::run::new_id, str::to_owned);
    let vols = volumes_dir(store)?;
    check_name(&name)?;
    if nix::sys::stat::fstatat(
        vols.as_fd(),
        name.as_str(),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok()
    {
        bail!("volume {name} exists already");
    }
    data_dir(store, &name)?;
    println!("{name}");
    Ok(())
}

/// The names of the store's volumes, sorted.
fn names(store: &Store) -> Result<Vec<String>> {
    let vols = volumes_dir(store)?;
    let mut out: Vec<String> = rcfs_fs::sys::DirFd::open(vols.as_fd(), std::ffi::OsStr::new("."))?
        .entries()?
        .into_iter()
        .filter_map(|(n, _)| n.to_str().map(str::to_owned))
        .filter(|n| n != "." && n != "..")
        .collect();
    out.sort();
    Ok(out)
}

/// `rcfs volume ls`.
pub fn ls(store: &Store, quiet: bool) -> Result<()> {
    if !quiet {
        println!("{:<10} VOLUME NAME", "DRIVER");
    }
    for n in names(store)? {
        if quiet {
            println!("{n}");
        } else {
            println!("{:<10} {n}", "local");
        }
    }
    Ok(())
}

/// The containers whose binds include the volume `name`.
fn users(store: &Store, name: &str) -> Result<Vec<String>> {
    let data = store.root.join("volumes").join(name).join(DATA);
    let prefix = format!("{}:", data.display());
    Ok(crate::containers::list(store)?
        .into_iter()
        .filter(|(r, _)| {
            r.options
                .as_ref()
                .is_some_and(|o| o.volumes.iter().any(|v| v.starts_with(&prefix)))
        })
        .map(|(r, _)| r.name)
        .collect())
}

/// `rcfs volume rm NAME...`: refused while a container uses it.
pub fn rm(store: &Store, names: &[String]) -> Result<()> {
    let vols = volumes_dir(store)?;
    for n in names {
        check_name(n)?;
        crate::containers::open_dir(vols.as_fd(), n).with_context(|| format!("no volume {n}"))?;
        let used = users(store, n)?;
        if !used.is_empty() {
            bail!(
                "volume {n} is used by container(s) {}: remove them first (rcfs rm)",
                used.join(", ")
            );
        }
        crate::containers::remove_all(&store.root.join("volumes").join(n))
            .with_context(|| format!("cannot remove volume {n}"))?;
        println!("{n}");
    }
    Ok(())
}

/// `opts` with its named volumes (`-v NAME:/path`, `--mount type=volume`)
/// made and given as their dirs, and `--mount`s as `-v` and `--tmpfs`.
pub fn resolve(store: &Store, opts: &RunOptions) -> Result<RunOptions> {
    let mut out = opts.clone();
    out.mounts.clear();
    out.volumes.clear();
    let mut volumes = opts.volumes.clone();
    for m in &opts.mounts {
        match parse_mount(m)? {
            Mount::Bind(v) => volumes.push(v),
            Mount::Tmpfs(t) => out.tmpfs.push(t),
        }
    }
    for v in volumes {
        match v.split_once(':') {
            Some((name, rest)) if !name.starts_with('/') => {
                if name.is_empty() {
                    bail!("invalid volume {v:?}: give HOST-PATH:PATH or VOLUME:PATH (rcfs has no anonymous volumes)");
                }
                let dir = data_dir(store, name)?;
                out.volumes.push(format!("{}:{rest}", dir.display()));
            }
            _ => out.volumes.push(v),
        }
    }
    Ok(out)
}

/// A `--mount`, as the `-v` or `--tmpfs` it amounts to.
#[derive(Debug, PartialEq, Eq)]
enum Mount {
    Bind(String),
    Tmpfs(String),
}

/// `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly]…`.
fn parse_mount(v: &str) -> Result<Mount> {
    let mut kind = None;
    let (mut source, mut target, mut ro) = (None, None, false);
    let mut tmpfs_opts = Vec::new();
    for field in v.split(',') {
        let (k, val) = field.split_once('=').unwrap_or((field, ""));
        match k {
            "type" => kind = Some(val),
            "source" | "src" => source = Some(val),
            "target" | "destination" | "dst" => target = Some(val),
            "readonly" | "ro" => {
                ro = match val {
                    "" | "true" | "1" => true,
                    "false" | "0" => false,
                    _ => bail!("invalid --mount {v:?}: readonly={val}?"),
                }
            }
            "tmpfs-size" => tmpfs_opts.push(format!("size={val}")),
            "tmpfs-mode" => tmpfs_opts.push(format!("mode={val}")),
            _ => bail!(
                "--mount {v:?}: rcfs does not support {k:?} (type, source, target, readonly, \
                 tmpfs-size, tmpfs-mode)"
            ),
        }
    }
    let Some(target) = target.filter(|t| t.starts_with('/')) else {
        bail!("invalid --mount {v:?}: give target=/PATH");
    };
    let ro = if ro { ":ro" } else { "" };
    match kind {
        Some("bind") => {
            let Some(source) = source.filter(|s| s.starts_with('/')) else {
                bail!("invalid --mount {v:?}: a bind needs source=/HOST/PATH");
            };
            Ok(Mount::Bind(format!("{source}:{target}{ro}")))
        }
        Some("volume") => match source.filter(|s| !s.is_empty()) {
            Some(name) => Ok(Mount::Bind(format!("{name}:{target}{ro}"))),
            None => {
                bail!("invalid --mount {v:?}: give source=VOLUME (rcfs has no anonymous volumes)")
            }
        },
        Some("tmpfs") => {
            if source.is_some() {
                bail!("invalid --mount {v:?}: a tmpfs has no source");
            }
            // podman's --mount tmpfs is exec unless noexec is given.
            tmpfs_opts.push("exec".into());
            Ok(Mount::Tmpfs(format!("{target}:{}", tmpfs_opts.join(","))))
        }
        _ => bail!("invalid --mount {v:?}: give type=bind, type=volume or type=tmpfs"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_as_podman_takes_them() {
        assert_eq!(
            parse_mount("type=bind,source=/srv,target=/data,readonly").unwrap(),
            Mount::Bind("/srv:/data:ro".into())
        );
        assert_eq!(
            parse_mount("type=volume,src=cache,dst=/cache").unwrap(),
            Mount::Bind("cache:/cache".into())
        );
        assert_eq!(
            parse_mount("type=tmpfs,target=/scratch,tmpfs-size=1m").unwrap(),
            Mount::Tmpfs("/scratch:size=1m,exec".into())
        );
        for bad in [
            "type=bind,target=/x",
            "type=bind,source=rel,target=/x",
            "type=tmpfs,source=/a,target=/x",
            "type=nfs,target=/x",
            "type=bind,source=/a,target=/x,bind-propagation=shared",
            "type=volume,source=v",
            "type=volume,target=/anon",
        ] {
            assert!(parse_mount(bad).is_err(), "{bad}");
        }
    }
}
