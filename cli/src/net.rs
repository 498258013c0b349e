//! A container's private network (`--net private`): the init is forked into
//! a network namespace of its own, and pasta (Debian's `passt`), run
//! against it before the container starts, gives it an interface with the
//! host's address and routes, carries its connections out through the
//! host's sockets, and forwards published ports (`-p`) in. As in podman's
//! pasta mode, the gateway's address reaches the host's loopback: the
//! container's `/etc/hosts` names it `host.containers.internal`.

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;

use anyhow::{bail, Context, Result};
use rcfs_fs::sys;

/// A published port: `-p [IP:]HOST:CTR[/tcp|udp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub ip: Option<std::net::IpAddr>,
    pub host: u16,
    pub ctr: u16,
    pub udp: bool,
}

impl Publish {
    /// Parses podman's `-p` form (one port, not a range).
    pub fn parse(v: &str) -> Result<Publish> {
        let bad =
            || anyhow::anyhow!("invalid -p {v:?}: give [IP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]");
        let (spec, proto) = match v.rsplit_once('/') {
            Some((s, "tcp")) => (s, false),
            Some((s, "udp")) => (s, true),
            Some(_) => return Err(bad()),
            None => (v, false),
        };
        let (addr, ports) = match spec.rsplit_once(':') {
            Some((rest, ctr)) => match rest.rsplit_once(':') {
                Some((ip, host)) => (Some(ip), (host, ctr)),
                None => (None, (rest, ctr)),
            },
            None => bail!("invalid -p {v:?}: give both ports, HOSTPORT:CONTAINERPORT"),
        };
        let ip =
            match addr {
                Some(a) => Some(a.trim_matches(['[', ']']).parse().map_err(|_| {
                    anyhow::anyhow!("invalid -p {v:?}: {a:?} is not an IP address")
                })?),
                None => None,
            };
        let port = |p: &str| p.parse::<u16>().ok().filter(|&n| n > 0).ok_or_else(bad);
        Ok(Publish {
            ip,
            host: port(ports.0)?,
            ctr: port(ports.1)?,
            udp: proto,
        })
    }

    /// As pasta's `-t`/`-u` take it: `[ADDR/]PORT:TARGET`.
    fn pasta_spec(&self) -> String {
        match self.ip {
            Some(ip) => format!("{ip}/{}:{}", self.host, self.ctr),
            None => format!("{}:{}", self.host, self.ctr),
        }
    }
}

/// What connects a container's own network to the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// slirp4netns (podman 4's default): starts in a few ms; published
    /// ports go through [`crate::portfwd`].
    Slirp,
    /// pasta (podman 5's default): the host's address and routes, ports
    /// forwarded by pasta itself; some 30 ms to start.
    Pasta,
}

impl Backend {
    fn program(self) -> &'static str {
        match self {
            Backend::Slirp => "slirp4netns",
            Backend::Pasta => "pasta",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Backend::Slirp => "slirp4netns",
            Backend::Pasta => "passt",
        }
    }
}

/// slirp4netns's network: the container's address, the gateway (which
/// reaches the host's loopback) and its DNS forwarder.
pub const SLIRP_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
pub const SLIRP_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const SLIRP_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);

/// The process that connects a container's network (pasta or
/// slirp4netns), and the forwarder of its published ports; stopped when
/// dropped (it holds the namespace's tap device, so it would not end on
/// its own), and when the process that started it dies (its parent-death
/// signal).
pub struct Pasta {
    backend: Backend,
    _ports: Option<crate::portfwd::Forwarder>,
    child: std::process::Child,
    /// Where pasta writes its pid once the namespace is set up (its
    /// `--pid` file is this pipe's write end, as `/proc/self/fd/N`).
    ready: std::fs::File,
    /// What pasta said on stderr (a memfd).
    said: std::fs::File,
}

impl Drop for Pasta {
    fn drop(&mut self) {
        // SIGKILL: pasta is pid 1 of a pid namespace of its own, which
        // takes no signal it has no handler for. Not waited for: its
        // teardown (tens of ms) is no one's wait; reaped if it is done.
        let _ = self.child.kill();
        let _ = self.child.try_wait();
    }
}

/// The fds pasta finds its readiness pipe and the container's network
/// namespace on.
const READY_FD: i32 = 3;
const NETNS_FD: i32 = 4;

/// Starts pasta against the network namespace of the container's init
/// `pid`, with `ports` published; [`Pasta::ready`] says when it has set the
/// namespace up (meanwhile the union is mounted). Call while this process
/// is the one that holds the container to the end (`rcfs run` or the
/// monitor): pasta dies with it.
pub fn spawn(
    backend: Backend,
    pid: nix::unistd::Pid,
    ports: &[Publish],
    host_loopback: bool,
    dns_forward: Option<Ipv4Addr>,
) -> Result<Pasta> {
    // The namespace as an fd of ours: pasta, with the capabilities it
    // keeps, may not open /proc/PID/ns of an init that is not dumpable; it
    // joins the network namespace only (it acts in its owner's user
    // namespace: ours, or one nested in it), and stays while we hold it.
    let netns = std::fs::File::open(format!("/proc/{}/ns/net", pid.as_raw()))
        .context("cannot open the container's network namespace")?;
    let mut c = std::process::Command::new(program(backend)?);
    // Nothing of the caller's environment.
    c.env_clear();
    let forwarder = match backend {
        Backend::Slirp => {
            // The host's loopback is the caller's (its databases, tunnels,
            // agents): reached only when asked, as in podman.
            if !host_loopback {
                c.arg("--disable-host-loopback");
            }
            c.args([
                "--configure",
                "--mtu=65520",
                "--enable-sandbox",
                "--enable-seccomp",
            ])
            .arg(format!("--ready-fd={READY_FD}"))
            .args(["--netns-type=path"])
            .arg(format!("/proc/self/fd/{NETNS_FD}"))
            .arg("tap0");
            Some(crate::portfwd::start(
                OwnedFd::from(netns.try_clone()?),
                ports,
            )?)
        }
        Backend::Pasta => {
            pasta_args(&mut c, ports, dns_forward);
            if !host_loopback {
                c.arg("--no-map-gw");
            }
            None
        }
    };
    spawn_with(backend, c, netns, forwarder)
}

/// Where `backend`'s program is: found in PATH, but for root only in an
/// absolute dir that root owns and no one else may write.
fn program(backend: Backend) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let root = rcfs_runtime::real_root();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        if root
            && (!dir.is_absolute()
                || !std::fs::metadata(&dir).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0))
        {
            continue;
        }
        let p = dir.join(backend.program());
        if std::fs::metadata(&p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0) {
            return Ok(p);
        }
    }
    bail!(
        "a container's own network needs {}, which is not installed: apt-get install {} (or \
         run with --net host, or --net none)",
        backend.program(),
        backend.package()
    )
}

/// pasta's arguments: ready on READY_FD, the namespace on NETNS_FD.
fn pasta_args(c: &mut std::process::Command, ports: &[Publish], dns_forward: Option<Ipv4Addr>) {
    // In the foreground: pasta goes to the background only when started
    // from a terminal, and rcfs must stop it when the container ends.
    c.args(["--config-net", "--quiet", "--foreground", "--pid"])
        .arg(format!("/proc/self/fd/{READY_FD}"));
    // pasta as root (real root, or the user's own namespace's root) would
    // change to nobody, who cannot join the container's namespaces.
    if nix::unistd::geteuid().is_root() {
        c.args(["--runas", "0:0"]);
    }
    // No ports follow the container's or the host's listeners on their
    // own (pasta's default scans for them): only what -p publishes.
    let (tcp, udp): (Vec<&Publish>, Vec<&Publish>) = ports.iter().partition(|p| !p.udp);
    for (flag, list) in [("-t", &tcp), ("-u", &udp)] {
        if list.is_empty() {
            c.args([flag, "none"]);
        }
        for p in list {
            c.args([flag, &p.pasta_spec()]);
        }
    }
    c.args(["-T", "none", "-U", "none"]);
    if let Some(gw) = dns_forward {
        c.arg("--dns-forward").arg(gw.to_string());
    }
    c.args(["--no-netns-quit", "--netns"])
        .arg(format!("/proc/self/fd/{NETNS_FD}"));
}

/// Starts `c` (pasta or slirp4netns) with its readiness pipe and `netns`
/// in place.
fn spawn_with(
    backend: Backend,
    mut c: std::process::Command,
    netns: std::fs::File,
    forwarder: Option<crate::portfwd::Forwarder>,
) -> Result<Pasta> {
    let ns_fd = netns.as_raw_fd();
    let said = {
        // SAFETY: memfd_create with a C string; a new fd, owned here.
        let fd = unsafe { libc::memfd_create(c"rcfs-pasta".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("memfd for pasta's messages");
        }
        // SAFETY: as above.
        std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let wr_fd = wr.as_raw_fd();
    // SAFETY: between fork and exec only async-signal-safe calls: prctl,
    // dup2, fcntl.
    unsafe {
        c.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Out of the way first (either may be 3 or 4; these copies go
            // at exec), then in place without close-on-exec.
            let high = [
                libc::fcntl(wr_fd, libc::F_DUPFD_CLOEXEC, 10),
                libc::fcntl(ns_fd, libc::F_DUPFD_CLOEXEC, 10),
            ];
            if high.iter().any(|&f| f < 0)
                || libc::dup2(high[0], READY_FD) < 0
                || libc::dup2(high[1], NETNS_FD) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = c
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(said.try_clone()?)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "a container's own network needs {}, which is not installed: apt-get \
                 install {} (or run with --net host, or --net none)",
                backend.program(),
                backend.package()
            ),
            _ => anyhow::Error::from(e).context(format!("cannot run {}", backend.program())),
        })?;
    drop((wr, netns));
    Ok(Pasta {
        backend,
        _ports: forwarder,
        child,
        ready: std::fs::File::from(rd),
        said,
    })
}

impl Pasta {
    /// Waits (10 s at most) until pasta has set the container's network
    /// up; an error with what pasta said when it could not.
    pub fn ready(&self) -> Result<()> {
        use std::io::{Read, Seek};
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut fds = [nix::poll::PollFd::new(
                self.ready.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("waiting for {}", self.backend.program()))
                }
                Ok(0) if left.is_zero() => {
                    bail!(
                        "{} did not set up the container's network within 10 s",
                        self.backend.program()
                    )
                }
                Ok(_) => {}
            }
            let mut buf = [0u8; 32];
            let n = match (&self.ready).read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                r => r.with_context(|| format!("waiting for {}", self.backend.program()))?,
            };
            got.extend_from_slice(&buf[..n]);
            // pasta writes its pid and a newline, slirp4netns "1".
            let done = match self.backend {
                Backend::Pasta => got.ends_with(b"\n"),
                Backend::Slirp => got == b"1",
            };
            if done {
                return Ok(());
            }
            if n == 0 || got.len() > 64 {
                break;
            }
        }
        // pasta ended (or wrote nonsense): say what it said.
        let mut text = Vec::new();
        let mut said = &self.said;
        said.rewind()?;
        said.take(64 << 10).read_to_end(&mut text)?;
        let why = String::from_utf8_lossy(&text);
        let why: String = why
            .lines()
            .filter(|l| !l.contains("syslog") && !l.trim().is_empty())
            .map(|l| l.chars().filter(|c| !c.is_control()).collect::<String>())
            .collect::<Vec<_>>()
            .join("; ");
        let hint = if why.contains("tun") {
            " (pasta needs /dev/net/tun, usable by you: chmod 666 /dev/net/tun, as most \
             systems have it)"
        } else if why.contains("interface") || why.contains("route") {
            " (the host has no network pasta can use: run with --net none, or --net host)"
        } else {
            ""
        };
        bail!(
            "{} could not connect the container's network: {why}{hint}",
            self.backend.program()
        );
    }
}

/// The host's default IPv4 gateway (from `/proc/net/route`): pasta gives
/// the container the same one, and maps it to the host's loopback.
fn default_gateway() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 || f[1] != "00000000" {
            return None;
        }
        let g = u32::from_str_radix(f[2], 16).ok()?;
        Some(Ipv4Addr::from(u32::from_be(g)))
    })
}

/// `--add-host NAME:IP`: (name, ip).
pub fn parse_add_host(v: &str) -> Result<(String, std::net::IpAddr)> {
    let (name, ip) = v
        .split_once(':')
        .with_context(|| format!("invalid --add-host {v:?}: give NAME:IP"))?;
    let ip = ip
        .trim_matches(['[', ']'])
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid --add-host {v:?}: {ip:?} is not an IP address"))?;
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("invalid --add-host {v:?}: a bad name");
    }
    Ok((name.to_owned(), ip))
}

/// The container's `/etc/hosts`, as podman writes it: the host's entries,
/// the `--add-host` ones, `host.containers.internal` (with a network of its
/// own: pasta's gateway, which reaches the host's loopback) and the
/// container's own address (the one pasta gives it: the host's) with its
/// hostname.
pub fn hosts_text(
    hostname: &str,
    net: Option<Backend>,
    host_loopback: bool,
    add: &[(String, std::net::IpAddr)],
) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open("/etc/hosts") {
        let _ = f.take(64 << 10).read_to_string(&mut text);
    }
    if !text.lines().any(|l| {
        let mut w = l.split_whitespace();
        w.next() == Some("127.0.0.1") && w.any(|n| n == "localhost")
    }) {
        text.insert_str(
            0,
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        );
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for (name, ip) in add {
        text.push_str(&format!("{ip}\t{name}\n"));
    }
    // host.containers.internal: the gateway where it reaches the host's
    // loopback, else (slirp4netns, as podman) the host's own address.
    let (gw, own) = match (net, host_loopback) {
        (Some(Backend::Pasta), true) => (default_gateway(), default_address()),
        (Some(Backend::Pasta), false) => (None, default_address()),
        (Some(Backend::Slirp), true) => (Some(SLIRP_GATEWAY), Some(SLIRP_ADDR)),
        (Some(Backend::Slirp), false) => (default_address(), Some(SLIRP_ADDR)),
        (None, _) => (None, None),
    };
    if let Some(gw) = gw {
        text.push_str(&format!(
            "{gw}\thost.containers.internal host.docker.internal\n"
        ));
    }
    let own = own.map_or_else(|| "127.0.1.1".to_owned(), |a| a.to_string());
    text.push_str(&format!("{own}\t{hostname}\n"));
    text
}

/// The host's IPv4 address on its default route's interface: the one
/// pasta gives the container.
fn default_address() -> Option<Ipv4Addr> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let iface = routes.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[1] == "00000000").then(|| f[0].to_owned())
    })?;
    nix::ifaddrs::getifaddrs().ok()?.find_map(|a| {
        (a.interface_name == iface)
            .then(|| a.address?.as_sockaddr_in().map(|s| s.ip()))
            .flatten()
    })
}

/// The host's `/etc/resolv.conf` (64 KiB at most).
fn host_resolv() -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open("/etc/resolv.conf") {
        let _ = f.take(64 << 10).read_to_string(&mut text);
    }
    text
}

/// The nameserver of a resolv.conf line, if it is one on the host's
/// loopback (systemd-resolved's 127.0.0.53, dnsmasq's 127.0.0.1), which
/// a container's own network cannot reach.
fn loopback_nameserver(line: &str) -> bool {
    let mut w = line.split_whitespace();
    w.next() == Some("nameserver")
        && w.next()
            .and_then(|a| a.parse::<std::net::IpAddr>().ok())
            .is_some_and(|a| a.is_loopback())
}

/// Where a container with a network of its own sends DNS queries that
/// pasta forwards to the host's first nameserver: the gateway, when the
/// host's resolv.conf names a nameserver on its loopback.
pub fn dns_forward() -> Option<Ipv4Addr> {
    loopback_dns().then(default_gateway).flatten()
}

/// Whether the host's resolv.conf names a nameserver on its loopback.
pub fn loopback_dns() -> bool {
    host_resolv().lines().any(loopback_nameserver)
}

/// The container's `/etc/resolv.conf` when it is not the host's: the
/// `--dns` servers, or the host's with nameservers on its loopback replaced
/// by `forward` (see [`dns_forward`]).
pub fn resolv_text(dns: &[std::net::IpAddr], forward: Option<Ipv4Addr>) -> Option<String> {
    if !dns.is_empty() {
        return Some(dns.iter().map(|s| format!("nameserver {s}\n")).collect());
    }
    let gw = forward?;
    let mut said = false;
    let mut text = String::new();
    for line in host_resolv().lines() {
        if loopback_nameserver(line) {
            if !std::mem::replace(&mut said, true) {
                text.push_str(&format!("nameserver {gw}\n"));
            }
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    Some(text)
}

/// Writes `text` as `name` in the container dir `dir` (0644: the
/// container's users read it), for the init to bind over the root's file.
pub fn write_etc_file(dir: BorrowedFd<'_>, name: &str, text: &str) -> Result<()> {
    let _ = nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
    let fd = sys::open_at(
        dir,
        name.as_ref(),
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        0o644,
    )
    .with_context(|| format!("cannot write the container's /etc/{name}"))?;
    nix::sys::stat::fchmod(&fd, nix::sys::stat::Mode::from_bits_truncate(0o644))?;
    std::fs::File::from(fd).write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs_as_podman_takes_them() {
        let p = Publish::parse("8080:80").unwrap();
        assert_eq!((p.ip, p.host, p.ctr, p.udp), (None, 8080, 80, false));
        assert_eq!(p.pasta_spec(), "8080:80");
        let p = Publish::parse("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(p.pasta_spec(), "127.0.0.1/8080:80");
        assert!(p.udp);
        let p = Publish::parse("[::1]:8080:80").unwrap();
        assert_eq!(p.pasta_spec(), "::1/8080:80");
        for bad in [
            "80",
            "x:80",
            "8080:80/sctp",
            "0:80",
            "1.2.3:8080:80",
            "70000:80",
        ] {
            assert!(Publish::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_add_host("db:10.0.0.5").unwrap(),
            ("db".to_owned(), "10.0.0.5".parse().unwrap())
        );
        assert!(parse_add_host("db").is_err() && parse_add_host("d b:1.2.3.4").is_err());
    }
}
