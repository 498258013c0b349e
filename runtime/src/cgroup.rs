//! Resource limits for a container: `--memory`, `--cpus`, `--pids-limit`
//! with podman's meanings, through cgroup v2 (the unified hierarchy, where
//! the caller may write: root, or a delegated subtree) or v1 (where the
//! caller may write: root). When a limit cannot be applied, asking for it is
//! an error, never ignored.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// What to limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Bytes of memory (and of memory + swap: no swapping past it).
    pub memory: Option<u64>,
    /// CPUs' worth of time per period.
    pub cpus: Option<f64>,
    /// Processes and threads.
    pub pids: Option<u64>,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.memory.is_some() || self.cpus.is_some() || self.pids.is_some()
    }
}

/// `--memory`: a number of bytes with an optional b, k, m or g suffix.
pub fn parse_memory(v: &str) -> Result<u64, String> {
    let v = v.trim().to_ascii_lowercase();
    let (num, mul) = match v.chars().last() {
        Some('b') => (&v[..v.len() - 1], 1),
        Some('k') => (&v[..v.len() - 1], 1 << 10),
        Some('m') => (&v[..v.len() - 1], 1 << 20),
        Some('g') => (&v[..v.len() - 1], 1 << 30),
        _ => (&v[..], 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid --memory {v:?}: give bytes, or a number with k, m or g"))?;
    n.checked_mul(mul)
        .filter(|&b| b >= 6 << 20)
        .ok_or_else(|| format!("--memory {v}: at least 6m, as podman requires"))
}

/// The cgroups a container was put in; removed by [`Cgroups::remove`].
#[derive(Debug, Default)]
pub struct Cgroups {
    dirs: Vec<PathBuf>,
}

const ROOT: &str = "/sys/fs/cgroup";

/// Makes the cgroup dir `d` (and its missing parents) 0755, whatever the
/// umask: a cgroup others may write to is one they can move into and escape
/// their own limits by. One found with write access for others (made by an
/// older rcfs) is closed too.
fn make_cgroup_dir(d: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(d)?;
    let mut dir = d;
    // Ours below the hierarchy's root: each `rcfs` dir on the way.
    while let Some(parent) = dir.parent() {
        if dir
            .file_name()
            .is_some_and(|n| n == "rcfs" || n.to_string_lossy().starts_with("rcfs-"))
        {
            let st = fs::symlink_metadata(dir)?;
            if st.permissions().mode() & 0o022 != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
            }
        }
        dir = parent;
    }
    Ok(())
}

fn write(dir: &Path, file: &str, v: &str) -> io::Result<()> {
    fs::write(dir.join(file), v)
        .map_err(|e| io::Error::other(format!("{}: {e}", dir.join(file).display())))
}

impl Cgroups {
    /// Puts process `pid` (the container's init, before it runs anything)
    /// in new cgroups named `name` with `limits`.
    pub fn apply(name: &str, pid: i32, limits: &Limits) -> io::Result<Cgroups> {
        let mut cg = Cgroups::default();
        let r = if Path::new(ROOT).join("cgroup.controllers").exists() {
            cg.apply_v2(Path::new(ROOT), name, pid, limits)
        } else {
            cg.apply_v1(name, pid, limits)
        };
        if let Err(e) = r {
            cg.remove();
            return Err(io::Error::other(format!(
                "cannot apply the resource limits ({e}); as an ordinary user they need a \
                 cgroup v2 subtree delegated to you (a systemd user session)"
            )));
        }
        Ok(cg)
    }

    fn apply_v2(&mut self, root: &Path, name: &str, pid: i32, l: &Limits) -> io::Result<()> {
        // Ours: the cgroup this process is in (root: the top), with the
        // controllers handed down to a child for the container.
        let own = fs::read_to_string("/proc/self/cgroup")?
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
            .unwrap_or_default();
        let base = if nix::unistd::geteuid().is_root() {
            root.join("rcfs")
        } else {
            root.join(own.trim_start_matches('/'))
        };
        make_cgroup_dir(&base)?;
        let wanted: Vec<&str> = [
            l.memory.map(|_| "memory"),
            l.cpus.map(|_| "cpu"),
            l.pids.map(|_| "pids"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut dir = root.to_path_buf();
        for comp in base
            .strip_prefix(root)
            .unwrap_or(Path::new(""))
            .components()
        {
            let enable: Vec<String> = wanted.iter().map(|c| format!("+{c}")).collect();
            write(&dir, "cgroup.subtree_control", &enable.join(" "))?;
            dir.push(comp);
        }
        write(
            &base,
            "cgroup.subtree_control",
            &wanted
                .iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(" "),
        )?;
        let leaf = base.join(format!("rcfs-{name}"));
        {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new().mode(0o755).create(&leaf)?;
        }
        self.dirs.push(leaf.clone());
        if let Some(m) = l.memory {
            write(&leaf, "memory.max", &m.to_string())?;
            if leaf.join("memory.swap.max").exists() {
                write(&leaf, "memory.swap.max", "0")?;
            }
        }
        if let Some(c) = l.cpus {
            write(
                &leaf,
                "cpu.max",
                &format!("{} 100000", (c * 100_000.0) as u64),
            )?;
        }
        if let Some(p) = l.pids {
            write(&leaf, "pids.max", &p.to_string())?;
        }
        write(&leaf, "cgroup.procs", &pid.to_string())
    }

    fn apply_v1(&mut self, name: &str, pid: i32, l: &Limits) -> io::Result<()> {
        let root = Path::new(ROOT);
        let leaf = |ctl: &str| root.join(ctl).join("rcfs").join(format!("rcfs-{name}"));
        let mut made = |ctl: &str| -> io::Result<PathBuf> {
            let d = leaf(ctl);
            make_cgroup_dir(&d)?;
            self.dirs.push(d.clone());
            Ok(d)
        };
        let mut dirs = Vec::new();
        if let Some(m) = l.memory {
            let d = made("memory")?;
            write(&d, "memory.limit_in_bytes", &m.to_string())?;
            if d.join("memory.memsw.limit_in_bytes").exists() {
                write(&d, "memory.memsw.limit_in_bytes", &m.to_string())?;
            }
            dirs.push(d);
        }
        if let Some(c) = l.cpus {
            let ctl = if root.join("cpu,cpuacct").exists() {
                "cpu,cpuacct"
            } else {
                "cpu"
            };
            let d = made(ctl)?;
            write(&d, "cpu.cfs_period_us", "100000")?;
            write(
                &d,
                "cpu.cfs_quota_us",
                &((c * 100_000.0) as u64).to_string(),
            )?;
            dirs.push(d);
        }
        if let Some(p) = l.pids {
            let d = made("pids")?;
            write(&d, "pids.max", &p.to_string())?;
            dirs.push(d);
        }
        for d in dirs {
            write(&d, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// The container's cgroup dirs (a process joins by writing its pid to
    /// each one's `cgroup.procs`).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Removes the cgroups (empty once the container is gone).
    pub fn remove(&mut self) {
        for d in self.dirs.drain(..).rev() {
            let _ = fs::remove_dir(&d);
        }
    }
}

impl Drop for Cgroups {
    /// Removed on every way out of a run.
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cgroups made for a container go when their value does, on every
    /// way out of a run (an early `?` return included), with no call to
    /// remember; each is 0755 and holds the limit. Needs root (CI runs as
    /// root).
    #[test]
    fn a_containers_cgroups_go_when_they_are_dropped() {
        use std::os::unix::fs::PermissionsExt;
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs the tests as root"
            );
            return;
        }
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let name = format!("unit-{}", std::process::id());
        let limits = Limits {
            pids: Some(17),
            ..Limits::default()
        };
        let cg = Cgroups::apply(&name, child.id() as i32, &limits).unwrap();
        let dirs = cg.dirs.clone();
        assert!(!dirs.is_empty());
        for d in &dirs {
            assert_eq!(fs::read_to_string(d.join("pids.max")).unwrap().trim(), "17");
            let mode = fs::metadata(d).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o755, "{}", d.display());
            let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap();
            assert!(
                procs.lines().any(|l| l == child.id().to_string()),
                "{procs}"
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let failed_run = |cg: Cgroups| -> io::Result<()> {
            let _cg = cg;
            Err(io::Error::other("the container's wait failed"))
        };
        assert!(failed_run(cg).is_err());
        for d in &dirs {
            assert!(!d.exists(), "{} is left", d.display());
        }
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("64m"), Ok(64 << 20));
        assert_eq!(parse_memory("1G"), Ok(1 << 30));
        assert_eq!(parse_memory("8388608"), Ok(8 << 20));
        assert!(parse_memory("1k").is_err());
        assert!(parse_memory("lots").is_err());
    }
}
