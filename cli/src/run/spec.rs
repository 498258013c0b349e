//! The container's spec: what the init is told to run and how (from the
//! image config and `rcfs run`'s options), and the `/etc` files of its
//! network.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use oci_spec::image::ImageConfiguration;
use rcfs_runtime::Spec;

use super::options::{capabilities, rlimits, tmpfs_of};
use super::{Place, RunOptions};

/// The init's spec from the image config and the options.
pub(crate) fn spec_of(
    config: &ImageConfiguration,
    opts: &RunOptions,
    name: &str,
    rootfs: &Path,
) -> Result<Spec> {
    let c = config.config().clone().unwrap_or_default();
    let mut args: Vec<String> = match &opts.entrypoint {
        Some(e) => e.clone(),
        None => c.entrypoint().clone().unwrap_or_default(),
    };
    if !opts.args.is_empty() {
        args.extend(opts.args.iter().cloned());
    } else if opts.entrypoint.is_none() {
        // A new entrypoint drops the image's Cmd, as podman does.
        args.extend(c.cmd().clone().unwrap_or_default());
    }
    if args.is_empty() {
        bail!(
            "{} has no entrypoint or cmd: give a command (rcfs run IMAGE CMD ...)",
            opts.image
        );
    }
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |k: String, v: String| {
        if env.insert(k.clone(), v).is_none() {
            order.push(k);
        }
    };
    set(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    // As podman: TERM (with or without -t), and `container` for programs
    // that ask whether they are in one (podman says "podman"; rcfs the
    // name systemd knows for any OCI runtime's); the image's Env and -e
    // come over them.
    set("TERM".into(), "xterm".into());
    set("container".into(), "oci".into());
    for kv in c.env().clone().unwrap_or_default() {
        if let Some((k, v)) = kv.split_once('=') {
            set(k.into(), v.into());
        }
    }
    set(
        "HOSTNAME".into(),
        opts.hostname.clone().unwrap_or_else(|| name.into()),
    );
    for kv in &opts.env {
        match kv.split_once('=') {
            Some((k, v)) => set(k.into(), v.into()),
            None => {
                if let Ok(v) = std::env::var(kv) {
                    set(kv.clone(), v);
                }
            }
        }
    }
    let env = order
        .iter()
        .map(|k| format!("{k}={}", env[k]))
        .collect::<Vec<_>>();
    let cwd = opts
        .workdir
        .clone()
        .or_else(|| c.working_dir().clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        bail!("the working directory {cwd:?} is not absolute");
    }
    let user = opts
        .user
        .clone()
        .or_else(|| c.user().clone().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "0".into());
    let host_files = rcfs_runtime::MOUNT_TARGETS
        .into_iter()
        // The container's hostname is its own (network_files).
        .filter(|t| t.starts_with("etc/") && *t != "etc/hostname")
        .map(|t| PathBuf::from("/").join(t))
        .filter(|p| p.is_file())
        .map(|p| {
            let inside = p.display().to_string();
            (p, inside)
        })
        .collect();
    Ok(Spec {
        root: rootfs.to_owned(),
        args,
        env,
        cwd,
        hostname: opts.hostname.clone().unwrap_or_else(|| name.into()),
        user,
        net_none: opts.net_none,
        net_private: opts.net_private,
        stdin: opts.interactive,
        tty: opts.tty,
        host_files,
        binds: opts
            .volumes
            .iter()
            .map(|v| rcfs_runtime::Bind::parse(v))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?,
        seccomp: None,
        init: opts.init,
        caps: capabilities(opts)?,
        group_add: opts.group_add.clone(),
        read_only: opts.read_only,
        tmpfs: opts
            .tmpfs
            .iter()
            .map(|t| tmpfs_of(t))
            .collect::<Result<_>>()?,
        rlimits: rlimits(opts)?,
        devices: opts
            .devices
            .iter()
            .map(|d| rcfs_runtime::Device::parse(d))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?,
        shm_size: opts.shm_size,
        wait_go: false,
    })
}

/// The container's `/etc/hosts` and `/etc/resolv.conf` where they are its
/// own (a network of its own, `--add-host`, `--dns`), written in its dir;
/// otherwise the host's, as `spec_of` has them.
pub(super) fn network_files(mut spec: Spec, opts: &RunOptions, place: &Place<'_>) -> Result<Spec> {
    let mut own = |file: &str, text: &str| -> Result<()> {
        crate::net::write_etc_file(place.fd, file, text)?;
        let inside = format!("/etc/{file}");
        spec.host_files.retain(|(_, i)| *i != inside);
        spec.host_files.push((place.dir.join(file), inside));
        Ok(())
    };
    if opts.net_private || opts.net_none || !opts.add_host.is_empty() {
        let add = opts
            .add_host
            .iter()
            .map(|h| crate::net::parse_add_host(h))
            .collect::<Result<Vec<_>>>()?;
        own(
            "hosts",
            &crate::net::hosts_text(&spec.hostname, net_of(opts), opts.host_loopback, &add),
        )?;
    }
    // Without a newline, as podman writes it.
    own("hostname", &spec.hostname.clone())?;
    let dns = dns_servers(opts)?;
    let forward = match net_of(opts) {
        Some(crate::net::Backend::Pasta) => crate::net::dns_forward(),
        // slirp4netns's DNS forwarder reaches any nameserver of the host's.
        Some(crate::net::Backend::Slirp) => {
            crate::net::loopback_dns().then_some(crate::net::SLIRP_DNS)
        }
        None => None,
    };
    if let Some(text) = crate::net::resolv_text(&dns, forward) {
        own("resolv.conf", &text)?;
    }
    Ok(spec)
}

/// What connects the container's own network, if it has one.
fn net_of(opts: &RunOptions) -> Option<crate::net::Backend> {
    match (opts.net_private, opts.net_slirp) {
        (false, _) => None,
        (true, true) => Some(crate::net::Backend::Slirp),
        (true, false) => Some(crate::net::Backend::Pasta),
    }
}

/// `--dns` as addresses.
pub(super) fn dns_servers(opts: &RunOptions) -> Result<Vec<std::net::IpAddr>> {
    opts.dns
        .iter()
        .map(|d| {
            d.parse()
                .map_err(|_| anyhow::anyhow!("invalid --dns {d:?}: give an IP address"))
        })
        .collect()
}
