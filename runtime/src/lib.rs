//! rcfs container runtime.
//!
//! Starts a container rootless: a new user namespace (the caller's uid mapped
//! to 0, subuid ranges through newuidmap/newgidmap when configured), a new
//! mount namespace, the rcfs union filesystem mounted as the container's root,
//! `pivot_root`, `/proc`, `/dev` and `/sys`, then the image's entrypoint in new
//! pid, uts and ipc namespaces. Built in issue [3]; this crate holds only this
//! description until then.
