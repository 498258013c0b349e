//! Containers in the store: `containers/NAME/` holds a container's upper
//! and work dirs, its mountpoint, `container.json`, its record (what it
//! runs, and whether and how it ended), and `lock`, which the `rcfs run`
//! of the container holds while it runs. `rcfs ps` lists them and `rcfs rm`
//! removes them.
//!
//! Everything here is the store user's alone: `containers/` and each
//! container dir are 0700, records 0600 (a record holds the `-e` values,
//! and what `rcfs start` will run). Container dirs are reached through the
//! fd of `containers/`, one name at a time, never following a symlink.
//! A name is claimed by making its dir (`mkdir` fails if it exists), and a
//! container runs exactly while its lock is held: an open-file-description
//! lock that goes when the last process holding it does, so a killed
//! `rcfs run`, or a pid used again by another process, cannot make a stopped
//! container look running or a running one stopped.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rcfs_fs::image::cas::own_dir;
use rcfs_fs::image::store::Store;
use rcfs_fs::sys;
use serde::{Deserialize, Serialize};

/// What `container.json` says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub image: String,
    /// The image's manifest digest when it was in the store at the start
    /// (a later pull may move its name to another image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    pub command: Vec<String>,
    pub created: String,
    /// When it was last started (RFC 3339; `created` in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// The `rcfs run` process of its last start (for people: whether it
    /// runs is its lock's to say).
    pub pid: u32,
    /// Set when it ended.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// How it was made, for `rcfs start`.
    #[serde(default)]
    pub options: Option<crate::run::RunOptions>,
}

const RECORD: &str = "container.json";
const RECORD_TMP: &str = ".container.json.tmp";
const LOCK: &str = "lock";

/// The store's `containers/` dir (0700), open.
fn containers_dir(store: &Store) -> Result<OwnedFd> {
    store.own_dir("containers").with_context(|| {
        format!(
            "cannot open the containers of the store {}",
            store.root.display()
        )
    })
}

/// Opens the container dir `name` of `containers`: ours, and closed to
/// everyone else (see [`own_dir`]).
pub(crate) fn open_dir(containers: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    let fd = sys::open_at(
        containers,
        name.as_ref(),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )?;
    own_dir(&fd, &format!("container {name}"))?;
    Ok(fd)
}

/// Makes the dir `name` in `dir` with exactly `mode` (mkdir, then fchmod:
/// the umask may have taken bits).
pub(crate) fn make_dir_mode(dir: BorrowedFd<'_>, name: &str, mode: u32) -> io::Result<()> {
    let mode = nix::sys::stat::Mode::from_bits_truncate(mode);
    nix::sys::stat::mkdirat(dir, name, mode)?;
    let fd = sys::open_at(dir, name.as_ref(), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    Ok(nix::sys::stat::fchmod(&fd, mode)?)
}

/// A container this process has claimed: it holds the container's lock,
/// so no other `rcfs run`, `start`, `rm` or `commit` uses it meanwhile.
/// The lock goes when every copy of its fd is closed (the container's
/// init, forked with it, keeps it for as long as the container runs).
pub struct Claimed {
    pub name: String,
    /// The container dir's path (for the mount, which takes paths; in the
    /// store's 0700 dirs, where no one else can change what it names).
    pub path: PathBuf,
    dir: OwnedFd,
    _lock: OwnedFd,
}

/// Takes the lock of the container dir `dir`; `Ok(false)` when another
/// process holds it (the container runs).
fn take_lock(dir: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    let fd = sys::open_at(dir, LOCK.as_ref(), libc::O_RDWR | libc::O_CREAT, 0o600)?;
    // SAFETY: a plain flock struct, all zero but what is set.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: fcntl on an fd we own, with a valid flock struct.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) } != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(fd))
}

/// Whether the container dir `dir` is in use (its lock is held by a
/// process); a dir without a lock file (made by an older rcfs, which is
/// not running it now) is not.
fn locked(dir: BorrowedFd<'_>) -> io::Result<bool> {
    let fd = match sys::open_at(dir, LOCK.as_ref(), libc::O_RDONLY, 0) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
        Err(e) => return Err(e),
    };
    // SAFETY: as in take_lock.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: as in take_lock; F_OFD_GETLK only fills `fl` in.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

impl Claimed {
    /// Claims the new container `name`: makes its dir (0700; failing if
    /// the name is taken, by whoever made it first) and, in it, the
    /// mountpoint `rootfs/` and the union's `upper/` (0755: the container's
    /// `/` shows its mode) and `work/` (0700).
    pub fn new_container(store: &Store, name: &str) -> Result<Claimed> {
        crate::run::check_name(name)?;
        let containers = containers_dir(store)?;
        let path = store.root.join("containers").join(name);
        match nix::sys::stat::mkdirat(
            containers.as_fd(),
            name,
            nix::sys::stat::Mode::from_bits_truncate(0o700),
        ) {
            Ok(()) => {}
            Err(nix::errno::Errno::EEXIST) => bail!(
                "a container named {name} exists already ({}): remove it or choose another --name",
                path.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot make {}", path.display())),
        }
        let dir = open_dir(containers.as_fd(), name)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let lock = take_lock(dir.as_fd())
            .with_context(|| format!("cannot lock {}", path.display()))?
            .with_context(|| format!("container {name} was claimed by another rcfs meanwhile"))?;
        for (d, mode) in [("rootfs", 0o755), ("upper", 0o755), ("work", 0o700)] {
            make_dir_mode(dir.as_fd(), d, mode)
                .with_context(|| format!("cannot make {}", path.join(d).display()))?;
        }
        Ok(Claimed {
            name: name.to_owned(),
            path,
            dir,
            _lock: lock,
        })
    }

    /// Claims the existing container `name` and reads its record; fails if
    /// it runs, saying what to do (`then`).
    pub fn existing(store: &Store, name: &str, then: &str) -> Result<(Claimed, Record)> {
        crate::run::check_name(name)?;
        let containers = containers_dir(store)?;
        let path = store.root.join("containers").join(name);
        let dir = match open_dir(containers.as_fd(), name) {
            Ok(d) => d,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                bail!(
                    "no container {name} in {}",
                    path.parent().unwrap_or(&path).display()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        let rec = read_record(dir.as_fd(), name)?;
        let Some(lock) =
            take_lock(dir.as_fd()).with_context(|| format!("cannot lock {}", path.display()))?
        else {
            bail!(
                "container {name} is running (rcfs run, pid {}): {then}",
                rec.pid
            );
        };
        Ok((
            Claimed {
                name: name.to_owned(),
                path,
                dir,
                _lock: lock,
            },
            rec,
        ))
    }

    /// Its record as it is now.
    pub fn read(&self) -> Result<Record> {
        read_record(self.dir.as_fd(), &self.name)
    }

    /// The container dir, open.
    pub fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// Writes `rec` as the container's record (whole, by rename; 0600).
    pub fn write(&self, rec: &Record) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(rec)?;
        let save = || -> io::Result<()> {
            let d = self.dir.as_fd();
            // A leftover temp file (a crash) may have any mode: start anew.
            match nix::unistd::unlinkat(d, RECORD_TMP, nix::unistd::UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(e.into()),
            }
            let mut f = File::from(sys::open_at(
                d,
                RECORD_TMP.as_ref(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                0o600,
            )?);
            f.write_all(&bytes)?;
            nix::fcntl::renameat(d, RECORD_TMP, d, RECORD)?;
            Ok(())
        };
        save().with_context(|| format!("cannot write {}", self.path.join(RECORD).display()))
    }
}

/// Reads the record of the container dir `dir`.
fn read_record(dir: BorrowedFd<'_>, name: &str) -> Result<Record> {
    let mut bytes = Vec::new();
    let read = sys::open_at(dir, RECORD.as_ref(), libc::O_RDONLY, 0)
        .and_then(|fd| File::from(fd).take(1 << 20).read_to_end(&mut bytes));
    if let Err(e) = read {
        bail!("container {name} has no readable record: {e}");
    }
    serde_json::from_slice(&bytes).with_context(|| format!("container {name}: a broken record"))
}

/// The container dir of `name`, open (ours, closed to others).
pub fn open(store: &Store, name: &str) -> Result<OwnedFd> {
    crate::run::check_name(name)?;
    let containers = containers_dir(store)?;
    open_dir(containers.as_fd(), name).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => anyhow::anyhow!(
            "no container {name} in {}",
            store.root.join("containers").display()
        ),
        _ => anyhow::Error::from(e).context(format!("cannot open container {name}")),
    })
}

/// The image the container of `rec` was made from: by the manifest it
/// was started with, else by name.
fn image_of(store: &Store, rec: &Record) -> Result<rcfs_fs::image::store::ImageRecord> {
    let by_id = match &rec.image_id {
        Some(id) => store.find(id)?,
        None => None,
    };
    match by_id {
        Some(i) => Ok(i),
        None => crate::image::find(store, &rec.image)?.with_context(|| {
            format!(
                "the image of container {}, {}, is no longer in the store: pull it again",
                rec.name, rec.image
            )
        }),
    }
}

/// The config of the image the container of `rec` was made from.
pub fn image_config(store: &Store, rec: &Record) -> Result<oci_spec::image::ImageConfiguration> {
    let img = image_of(store, rec)?;
    let config = store.image_blob(&img, "config", &img.config)?;
    serde_json::from_slice(&config).context("the image's config is not an image config")
}

/// The record of the container `name`, and whether it runs.
pub fn load(store: &Store, name: &str) -> Result<(Record, bool)> {
    crate::run::check_name(name)?;
    let containers = containers_dir(store)?;
    let dir = match open_dir(containers.as_fd(), name) {
        Ok(d) => d,
        Err(_) => bail!(
            "no container {name} in {}",
            store.root.join("containers").display()
        ),
    };
    let rec = read_record(dir.as_fd(), name)?;
    let running = locked(dir.as_fd()).unwrap_or(false);
    Ok((rec, running))
}

/// Every container of the store with a record, and whether it runs.
pub fn list(store: &Store) -> Result<Vec<(Record, bool)>> {
    let containers = containers_dir(store)?;
    let mut out = Vec::new();
    for (name, _) in sys::DirFd::open(containers.as_fd(), OsStr::new("."))?.entries()? {
        let Some(name) = name.to_str() else { continue };
        if crate::run::check_name(name).is_err() {
            continue;
        }
        let Ok(dir) = open_dir(containers.as_fd(), name) else {
            continue;
        };
        if let Ok(r) = read_record(dir.as_fd(), name) {
            out.push((r, locked(dir.as_fd()).unwrap_or(false)));
        }
    }
    out.sort_by(|(a, _), (b, _)| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// `rcfs ps`.
pub fn ps(store: &Store, all: bool, json: bool) -> Result<()> {
    let recs: Vec<(Record, bool)> = list(store)?
        .into_iter()
        .filter(|(_, running)| all || *running)
        .collect();
    if json {
        let v: Vec<serde_json::Value> = recs
            .iter()
            .map(|(r, running)| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["running"] = (*running).into();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<40} {:<16} {:<26} COMMAND",
        "NAME", "IMAGE", "CREATED", "STATUS"
    );
    for (r, running) in &recs {
        let status = status(r, *running);
        // What another process wrote is shown, not obeyed: no control
        // characters reach the terminal.
        let shown = |t: &str| {
            t.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect::<String>()
        };
        let command = match &r.options {
            Some(o) if r.command.is_empty() => o.entrypoint.clone().unwrap_or_default().join(" "),
            _ => r.command.join(" "),
        };
        println!(
            "{:<20} {:<40} {:<16} {:<26} {}",
            r.name,
            shown(&r.image),
            ago(&r.created).map_or_else(|| "?".to_owned(), |a| format!("{a} ago")),
            status,
            shown(&command)
        );
    }
    Ok(())
}

/// Seconds since the RFC 3339 time `t`.
fn seconds_since(t: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()?;
    let d = time::OffsetDateTime::now_utc() - t;
    Some(d.whole_seconds().max(0) as u64)
}

/// How long ago `t` was, as podman says it ("5 seconds", "About a minute").
fn ago(t: &str) -> Option<String> {
    let s = seconds_since(t)?;
    Some(match s {
        0..=59 => format!("{s} second{}", if s == 1 { "" } else { "s" }),
        60..=119 => "About a minute".to_owned(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".to_owned(),
        7200..=86399 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86400),
    })
}

/// A container's state as `rcfs ps` shows it, podman's way: `Up 5
/// seconds`, `Exited (0) 2 minutes ago`.
fn status(r: &Record, running: bool) -> String {
    if running {
        return format!(
            "Up {}",
            ago(r.started.as_ref().unwrap_or(&r.created)).unwrap_or_default()
        );
    }
    let code = r
        .exit_code
        .map_or_else(|| "?".to_owned(), |c| c.to_string());
    match r.finished.as_deref().and_then(ago) {
        Some(a) => format!("Exited ({code}) {a} ago"),
        None => format!("Exited ({code})"),
    }
}

/// `rcfs inspect NAME` of a container: its record as JSON, with podman's
/// field names where they overlap.
pub fn inspect(store: &Store, name: &str) -> Result<()> {
    let (r, running) = load(store, name)?;
    let o = r.options.clone().unwrap_or_default();
    let labels: serde_json::Map<String, serde_json::Value> = o
        .labels
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
    let status = if running { "running" } else { "exited" };
    let v = serde_json::json!([{
        "Id": r.name,
        "Name": r.name,
        "Created": r.created,
        "Path": r.command.first(),
        "Args": r.command.get(1..).unwrap_or_default(),
        "State": {
            "Status": status,
            "Running": running,
            "ExitCode": r.exit_code.unwrap_or(0),
            "StartedAt": r.started.as_ref().unwrap_or(&r.created),
            "FinishedAt": r.finished,
            "ConmonPid": if running { Some(r.pid) } else { None },
        },
        "Image": r.image_id,
        "ImageName": r.image,
        "Config": {
            "Hostname": o.hostname.clone().unwrap_or_else(|| r.name.clone()),
            "User": o.user,
            "Env": o.env,
            "Cmd": if o.args.is_empty() { None } else { Some(&o.args) },
            "Entrypoint": o.entrypoint,
            "WorkingDir": o.workdir,
            "Labels": labels,
            "StopSignal": o.stop_signal,
        },
        "HostConfig": {
            "AutoRemove": o.rm,
            "Binds": o.volumes,
            "CapAdd": o.cap_add,
            "CapDrop": o.cap_drop,
            "GroupAdd": o.group_add,
            "ReadonlyRootfs": o.read_only,
            "Init": o.init,
            "NetworkMode": match (o.net_none, o.net_private, o.net_slirp) {
                (true, _, _) => "none",
                (_, true, true) => "slirp4netns",
                (_, true, false) => "pasta",
                _ => "host",
            },
            "PortBindings": o.publish,
            "UsernsMode": if o.keep_id { "keep-id" } else { "" },
        },
    }]);
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// Removes `d` from a child in a user namespace where the caller is root
/// (with its subuid ranges); whether that worked.
fn remove_in_namespace(d: &std::path::Path) -> bool {
    if rcfs_runtime::threads::ensure_single("removing in a user namespace").is_err() {
        return false;
    }
    // SAFETY: a single thread (checked).
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let ok =
                rcfs_runtime::enter_user_namespace().is_ok() && std::fs::remove_dir_all(d).is_ok();
            std::process::exit(if ok { 0 } else { 1 });
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => matches!(
            nix::sys::wait::waitpid(child, None),
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0))
        ),
        Err(_) => false,
    }
}

/// `rcfs rm`: removes stopped containers (their upper dirs too).
pub fn rm(store: &Store, names: &[String]) -> Result<()> {
    for n in names {
        // Held while it goes: no `rcfs start` of it meanwhile.
        let (c, _) = Claimed::existing(store, n, "stop it first")?;
        remove_all(&c.path)?;
        println!("{n}");
    }
    Ok(())
}

/// Removes the tree `d` of the store (a container's dir, a volume).
pub(crate) fn remove_all(d: &std::path::Path) -> Result<()> {
    if let Err(e) = std::fs::remove_dir_all(d) {
        // Files the container gave ids of the caller's subuid range:
        // removable as root of a user namespace with those ids mapped.
        if nix::unistd::geteuid().is_root() || !remove_in_namespace(d) {
            return Err(e).with_context(|| format!("cannot remove {}", d.display()));
        }
    }
    Ok(())
}

/// `rcfs commit`: the stopped container `name`'s changes as the image
/// `dest`, a new zstd:chunked layer on top of its image's layers.
pub fn commit(
    store: &Store,
    name: &str,
    dest: &str,
    message: Option<String>,
    author: Option<String>,
) -> Result<()> {
    // Held while it is read: no `rcfs start` of it meanwhile.
    let (c, rec) = Claimed::existing(store, name, "commit it once it has stopped")?;
    if rec.options.as_ref().is_some_and(|o| o.keep_id) {
        // Its upper dir holds the ids of the user's namespace, not the
        // container's (the user's own files would be recorded as root's).
        bail!(
            "container {name} ran with --userns=keep-id, whose files rcfs commit cannot record \
             with the owners the container gave them: commit a container run without it"
        );
    }
    let d = &c.path;
    let img = image_of(store, &rec)?;
    let dest = crate::image::canonical_name(dest);
    // Read the upper dir with the ids the container gave its files: as
    // root of a user namespace that maps them as `rcfs run` did.
    if !nix::unistd::geteuid().is_root() {
        rcfs_runtime::enter_user_namespace()
            .context("cannot enter a user namespace to read the container's files")?;
    }
    let t0 = std::time::Instant::now();
    let c = rcfs_fs::image::commit::commit(
        store,
        &img,
        &rcfs_fs::union::UpperConfig {
            upper: d.join("upper"),
            work: d.join("work"),
        },
        &dest,
        &rcfs_fs::image::commit::CommitOptions {
            level: 3,
            created_by: format!("rcfs commit {name}"),
            comment: message,
            author,
            mount_targets: rcfs_runtime::MOUNT_TARGETS.map(str::to_owned).to_vec(),
        },
    )
    .with_context(|| format!("cannot commit {name}"))?;
    eprintln!(
        "committed {name} as {dest} in {:.1}s: a layer of {} entries ({} whiteouts, {} files, {}), {} compressed",
        t0.elapsed().as_secs_f64(),
        c.entries,
        c.whiteouts,
        c.files,
        crate::image::human(c.bytes),
        crate::image::human(c.layer_size),
    );
    println!("{}", c.image.manifest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name is claimed by one `mkdir`: of many runs that ask for it at
    /// the same moment, exactly one gets it, each time; the others are
    /// told it exists. (Looking before making let several through.)
    #[test]
    fn of_runs_claiming_one_name_at_once_exactly_one_gets_it() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(&t.path().join("store")).unwrap();
        for round in 0..20 {
            let name = format!("same{round}");
            let go = std::sync::Barrier::new(8);
            let got: Vec<Result<Claimed>> = std::thread::scope(|s| {
                let claims: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            go.wait();
                            Claimed::new_container(&store, &name)
                        })
                    })
                    .collect();
                claims.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let won = got.iter().filter(|r| r.is_ok()).count();
            assert_eq!(won, 1, "round {round}: {won} runs got the name");
            for e in got.iter().filter_map(|r| r.as_ref().err()) {
                assert!(e.to_string().contains("exists already"), "{e:#}");
            }
        }
    }
}
