//! Published TCP ports of a container whose network slirp4netns connects
//! (podman's rootlessport, in spirit): `rcfs run` (or the monitor) listens
//! on the host's port, and for each connection opens one to the container's
//! port from inside its network namespace (a thread that joined it), then
//! copies both ways with `splice` through a pipe (no copy through user
//! memory). slirp4netns's own forwarding goes through its TCP stack, at a
//! third of the speed.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::net::Publish;

/// Connections forwarded at once, all ports together (each takes two
/// threads of this process, outside the container's cgroups); more are
/// closed.
const MAX_CONNECTIONS: usize = 256;

/// The listeners of a container's published ports; they stop taking
/// connections when this process ends (with the container).
pub struct Forwarder {
    _threads: Vec<std::thread::JoinHandle<()>>,
}

/// Binds each of `ports` on the host (an error, before the container
/// starts, when one is taken) and forwards what comes to the container's
/// network namespace `netns`, port by port.
pub fn start(netns: OwnedFd, ports: &[Publish]) -> Result<Forwarder> {
    let netns = Arc::new(netns);
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut threads = Vec::new();
    let mut listeners = Vec::new();
    for p in ports {
        if p.udp {
            anyhow::bail!(
                "-p {}/udp: the slirp4netns network publishes TCP ports only: use --net pasta",
                p.host
            );
        }
        let ip =
            p.ip.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let addr = SocketAddr::new(ip, p.host);
        let listener = TcpListener::bind(addr)
            .with_context(|| format!("cannot publish port {addr}: it is taken, or not yours"))?;
        listeners.push((listener, p.ctr));
    }
    // The threads take no signal: those sent to rcfs run are for its
    // signal thread to pass on (threads inherit this mask).
    let old = nix::sys::signal::SigSet::all()
        .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)?;
    for (listener, ctr) in listeners {
        let (netns, open) = (netns.clone(), open.clone());
        threads.push(
            std::thread::Builder::new()
                .name("rcfs-port".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        let Ok(conn) = conn else {
                            // Out of fds, say: not a busy loop.
                            std::thread::sleep(std::time::Duration::from_millis(100));
                            continue;
                        };
                        // Bounded: each takes two threads.
                        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                            open.fetch_sub(1, Ordering::SeqCst);
                            continue;
                        }
                        let (netns, count) = (netns.clone(), open.clone());
                        let spawned = std::thread::Builder::new()
                            .name("rcfs-port-conn".into())
                            .spawn(move || {
                                if let Err(e) = forward(conn, netns.as_fd(), ctr) {
                                    log::debug!("published port {ctr}: {e}");
                                }
                                count.fetch_sub(1, Ordering::SeqCst);
                            });
                        if spawned.is_err() {
                            open.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                }),
        );
    }
    let _ = old.thread_set_mask();
    let threads = threads.into_iter().collect::<std::io::Result<Vec<_>>>()?;
    Ok(Forwarder { _threads: threads })
}

/// Connects to the container's `port` from this thread, moved into its
/// network namespace for good, and copies `outside` to it and back.
fn forward(outside: TcpStream, netns: BorrowedFd<'_>, port: u16) -> Result<()> {
    nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)
        .context("joining the container's network")?;
    // The container's address, as podman's rootlessport: never its
    // loopback, which its services may trust (a database's "trust
    // 127.0.0.1") and keep for themselves.
    let to = SocketAddr::from((crate::net::SLIRP_ADDR, port));
    let inside = TcpStream::connect_timeout(&to, std::time::Duration::from_secs(10))
        .with_context(|| format!("connecting to port {port} in the container"))?;
    let _ = outside.set_nodelay(true);
    let _ = inside.set_nodelay(true);
    let (o2, i2) = (outside.try_clone()?, inside.try_clone()?);
    let back = std::thread::Builder::new()
        .name("rcfs-port-back".into())
        .spawn(move || pump(&i2, &o2))?;
    let r = pump(&outside, &inside);
    let _ = back.join();
    r
}

/// Copies `from` to `to` until `from` ends, then ends `to`'s writing.
fn pump(from: &TcpStream, to: &TcpStream) -> Result<()> {
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // A pipe as large as a user may make (1 MiB by default; 64 KiB
    // without): fewer, larger splices.
    // SAFETY: fcntl on our pipe.
    unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    let r = splice_all(from.as_fd(), &rd, &wr, to.as_fd());
    let _ = to.shutdown(std::net::Shutdown::Write);
    r
}

fn splice_all(from: BorrowedFd<'_>, rd: &OwnedFd, wr: &OwnedFd, to: BorrowedFd<'_>) -> Result<()> {
    const CHUNK: usize = 1 << 20;
    loop {
        // SAFETY: splice between fds we hold, no offsets.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                wr.as_raw_fd(),
                std::ptr::null_mut(),
                CHUNK,
                libc::SPLICE_F_MOVE,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if n == 0 {
            return Ok(());
        }
        let mut left = n as usize;
        while left > 0 {
            // SAFETY: as above.
            let m = unsafe {
                libc::splice(
                    rd.as_raw_fd(),
                    std::ptr::null_mut(),
                    to.as_raw_fd(),
                    std::ptr::null_mut(),
                    left,
                    libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE,
                )
            };
            if m < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            if m == 0 {
                anyhow::bail!("the other side closed");
            }
            left -= m as usize;
        }
    }
}
