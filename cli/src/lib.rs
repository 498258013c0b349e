//! The rcfs command line, as a library the binaries stay thin over.
//!
//! * [`als`] — `rcfs als`: the store as podman's Additional Layer Store.
//! * [`mount`] — checks a mount request, mounts a union and serves it, in the
//!   foreground or from a background process that outlives the command.
//! * [`image`] — `pull`, `images`, `rmi`, `gc`, `inspect`.
//! * [`run`] — `rcfs run`: a rootless container on the image's union.
//! * [`containers`] — their records: `rcfs ps`, `rcfs rm`.
//! * [`detach`] — `rcfs run -d`'s monitor and the container's log, `rcfs logs`.
//! * [`control`] — a running container's control socket: `rcfs kill`,
//!   `stop`, `wait`, and what `rcfs exec` joins.
//! * [`exec`] — `rcfs exec`: a command in a running container.
//! * [`net`] — a container's own network (slirp4netns or pasta), `-p`,
//!   `/etc/hosts`; [`portfwd`] — published ports over slirp4netns.
//! * [`volume`] — named volumes (`rcfs volume`), `-v NAME:/path`, `--mount`.
//! * [`seccomp`] — the container's seccomp program, kept in the store.
//! * [`stats`] — an image mount's cache counters, over a unix socket.
//! * [`overlay_args`] — fuse-overlayfs's command line (`rcfs-overlay`).

pub mod als;
pub mod containers;
pub mod control;
pub mod deferred;
pub mod detach;
pub mod exec;
pub mod image;
pub mod mount;
pub mod net;
pub mod overlay_args;
pub mod portfwd;
pub mod relay;
pub mod run;
pub mod seccomp;
pub mod stats;
pub mod volume;
