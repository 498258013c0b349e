//! The precondition of every fork and namespace change here: the process
//! has one thread. A child forked from a threaded process may only call
//! async-signal-safe functions (another thread may hold a lock it needs,
//! the allocator's among them), and `unshare` of a user or mount namespace
//! fails in a threaded process. So the functions that need it check it,
//! and a caller that broke it gets an error, not a hang or worse.

use std::io;

/// How many threads this process has (`Threads:` of `/proc/self/status`).
pub fn count() -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::other("/proc/self/status has no thread count"))
}

/// Fails unless this process has one thread; `what` says what needed it.
pub fn ensure_single(what: &str) -> io::Result<()> {
    match count()? {
        1 => Ok(()),
        n => Err(io::Error::other(format!(
            "internal error: {what} needs a single-threaded process, and this one has {n} threads"
        ))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_threads() {
        // The harness runs other tests on threads that come and go, so the
        // count is compared with what /proc lists, not with a count taken
        // before: a thread of ours that is running makes two at least.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
            rx.recv()
        });
        let tid = tid_rx.recv().unwrap();
        assert!(std::path::Path::new(&format!("/proc/self/task/{tid}")).exists());
        assert!(super::count().unwrap() >= 2);
        assert!(super::ensure_single("a test").is_err());
        tx.send(()).unwrap();
        t.join().unwrap().unwrap();
    }

    /// The helpers that fork or change namespaces refuse a threaded
    /// caller with an error, instead of forking a child that may hang on a
    /// lock another thread held.
    #[test]
    fn the_fork_and_namespace_helpers_refuse_a_threaded_process() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        assert!(super::count().unwrap() >= 2);
        let single = |e: std::io::Error| e.to_string().contains("single-threaded");
        assert!(crate::Container::fork(false).err().is_some_and(single));
        assert!(crate::Container::fork(true).err().is_some_and(single));
        assert!(crate::ns::enter_user_namespace().err().is_some_and(single));
        tx.send(()).unwrap();
        t.join().unwrap().unwrap();
    }
}
