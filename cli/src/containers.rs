//! Containers in the store: `containers/NAME/` holds a container's upper
//! and work dirs, its mountpoint and `container.json`, its record (what it
//! runs, and whether and how it ended). `rcfs ps` lists them and `rcfs rm`
//! removes them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rcfs_fs::image::store::Store;
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
    /// The `rcfs run` process while it runs.
    pub pid: u32,
    /// Set when it ended.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// How it was made, for `rcfs start`.
    #[serde(default)]
    pub options: Option<crate::run::RunOptions>,
}

/// Where containers live in `store`.
pub fn dir(store: &Store) -> PathBuf {
    store.root.join("containers")
}

/// Writes `rec` into container dir `d` (whole, by rename).
pub fn write(d: &Path, rec: &Record) -> Result<()> {
    let tmp = d.join(".container.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(rec)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, d.join("container.json"))?;
    Ok(())
}

/// The dir and record of the container `name`.
pub fn load(store: &Store, name: &str) -> Result<(PathBuf, Record)> {
    crate::run::check_name(name)?;
    let d = dir(store).join(name);
    match std::fs::read(d.join("container.json")) {
        Ok(b) => {
            let rec = serde_json::from_slice(&b)
                .with_context(|| format!("{}: a broken record", d.display()))?;
            Ok((d, rec))
        }
        Err(_) => bail!("no container {name} in {}", dir(store).display()),
    }
}

/// Whether the container of `rec` still runs: its `rcfs run` process is
/// alive and is an rcfs.
pub fn running(rec: &Record) -> bool {
    rec.exit_code.is_none()
        && std::fs::read(format!("/proc/{}/cmdline", rec.pid))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("rcfs"))
}

/// Every container of the store with a record.
pub fn list(store: &Store) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir(store)) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        if let Ok(bytes) = std::fs::read(e.path().join("container.json")) {
            if let Ok(r) = serde_json::from_slice::<Record>(&bytes) {
                out.push(r);
            }
        }
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// `rcfs ps`.
pub fn ps(store: &Store, all: bool, json: bool) -> Result<()> {
    let recs: Vec<Record> = list(store)?
        .into_iter()
        .filter(|r| all || running(r))
        .collect();
    if json {
        let v: Vec<serde_json::Value> = recs
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["running"] = running(r).into();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<40} {:<24} {:<12} COMMAND",
        "NAME", "IMAGE", "CREATED", "STATUS"
    );
    for r in &recs {
        let status = match (running(r), r.exit_code) {
            (true, _) => "running".to_owned(),
            (false, Some(c)) => format!("exited ({c})"),
            (false, None) => "exited (?)".to_owned(),
        };
        println!(
            "{:<20} {:<40} {:<24} {:<12} {}",
            r.name,
            r.image,
            // To the second, as the column has room for.
            r.created.get(..19).unwrap_or(&r.created).replace('T', " "),
            status,
            r.command.join(" ")
        );
    }
    Ok(())
}

/// Removes `d` from a child in a user namespace where the caller is root
/// (with its subuid ranges); whether that worked.
fn remove_in_namespace(d: &Path) -> bool {
    // SAFETY: `rcfs rm` has a single thread.
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
        let (d, rec) = load(store, n)?;
        if running(&rec) {
            bail!(
                "container {n} is running (rcfs run, pid {}): stop it first",
                rec.pid
            );
        }
        if let Err(e) = std::fs::remove_dir_all(&d) {
            // Files the container gave ids of the caller's subuid range:
            // removable as root of a user namespace with those ids mapped.
            if nix::unistd::geteuid().is_root() || !remove_in_namespace(&d) {
                return Err(e).with_context(|| format!("cannot remove {}", d.display()));
            }
        }
        println!("{n}");
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
    let (d, rec) = load(store, name)?;
    if running(&rec) {
        bail!(
            "container {name} is running (rcfs run, pid {}): commit it once it has stopped",
            rec.pid
        );
    }
    let by_id = match &rec.image_id {
        Some(id) => store.find(id)?,
        None => None,
    };
    let img = match by_id {
        Some(i) => i,
        None => crate::image::find(store, &rec.image)?.with_context(|| {
            format!(
                "the image of container {name}, {}, is no longer in the store: pull it again",
                rec.image
            )
        })?,
    };
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
