//! Background fetches of one mount: a few threads sharing two queues, so
//! that reading ahead over a network keeps several requests in flight
//! (each costs a round trip; one at a time, a start that opens hundreds of
//! files waits for hundreds of them).
//!
//! * `urgent` jobs: what reads made likely soon (the start of the files a
//!   program is about to open, the rest of a file it began reading);
//! * `idle` jobs: whole layers (`--prefetch`), taken only when no urgent
//!   job waits.
//!
//! While any read is fetching (`foreground`), workers start no idle job:
//! a read that waits never shares the link with a whole layer's prefetch.
//! Urgent jobs run at once: they are what reads will wait for next.
//! The pool belongs to the mount's [`super::BlockCache`]; dropping it ends
//! the queues, and the workers finish the job at hand and exit.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::lock::{Condvar, Mutex, Rank};

/// A job: it holds what it needs weakly, so a queued job keeps no layer
/// alive.
pub type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queues {
    urgent: VecDeque<Job>,
    idle: VecDeque<Job>,
    closed: bool,
}

/// What the workers share.
struct Shared {
    /// Guards both queues; taken alone, never while a job runs.
    queues: Mutex<Queues>,
    ready: Condvar,
    /// Reads fetching now.
    foreground: AtomicUsize,
}

/// See the module doc. Workers start with the jobs, one per job queued
/// until there are `n`: a mount that fetches nothing (an image all in the
/// store) starts none.
pub struct FetchPool {
    shared: Arc<Shared>,
    /// Guards the list; taken alone, after the queues are let go.
    workers: Mutex<Vec<JoinHandle<()>>>,
    max: usize,
    /// All `max` workers are running: queueing takes no lock to find out.
    full: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for FetchPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FetchPool(up to {} workers)", self.max)
    }
}

/// Counts a read as fetching while it lives.
pub struct Foreground<'a>(&'a AtomicUsize);

impl Drop for Foreground<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FetchPool {
    /// A pool of up to `n` workers.
    pub fn new(n: usize) -> FetchPool {
        let shared = Arc::new(Shared {
            queues: Mutex::new(Rank::FetchQueue, Queues::default()),
            ready: Condvar::default(),
            foreground: AtomicUsize::new(0),
        });
        FetchPool {
            shared,
            workers: Mutex::new(Rank::FetchWorkers, Vec::new()),
            max: n,
            full: std::sync::atomic::AtomicBool::new(n == 0),
        }
    }

    /// Starts one more worker unless all are running.
    fn grow(&self) {
        if self.full.load(Ordering::Relaxed) {
            return;
        }
        let mut w = self.workers.lock();
        if w.len() >= self.max {
            self.full.store(true, Ordering::Relaxed);
            return;
        }
        let s = self.shared.clone();
        if let Ok(h) = std::thread::Builder::new()
            .name(format!("rcfs-fetch-{}", w.len()))
            .spawn(move || worker(&s))
        {
            w.push(h);
        }
    }

    /// Queues a job that reads made likely soon.
    pub fn urgent(&self, job: Job) {
        self.push(job, true);
    }

    /// Queues a job for when nothing else waits.
    pub fn idle(&self, job: Job) {
        self.push(job, false);
    }

    fn push(&self, job: Job, urgent: bool) {
        let mut q = self.shared.queues.lock();
        if q.closed {
            return;
        }
        if urgent {
            q.urgent.push_back(job);
        } else {
            q.idle.push_back(job);
        }
        drop(q);
        self.grow();
        self.shared.ready.notify_one();
    }

    /// Marks a read as fetching until the guard drops.
    pub fn foreground(&self) -> Foreground<'_> {
        self.shared.foreground.fetch_add(1, Ordering::Relaxed);
        Foreground(&self.shared.foreground)
    }

    /// Jobs waiting (urgent, idle).
    pub fn queued(&self) -> (usize, usize) {
        let q = self.shared.queues.lock();
        (q.urgent.len(), q.idle.len())
    }
}

fn worker(s: &Shared) {
    loop {
        let job = {
            let mut q = s.queues.lock();
            loop {
                if q.closed {
                    return;
                }
                if let Some(j) = q.urgent.pop_front() {
                    break j;
                }
                // Reading ahead is what reads will wait for next; a whole
                // layer can wait for the reads (without holding a worker
                // an urgent job may need).
                if q.idle.is_empty() {
                    s.ready.wait(&mut q);
                } else if s.foreground.load(Ordering::Relaxed) == 0 {
                    break q.idle.pop_front().expect("not empty");
                } else {
                    s.ready
                        .wait_until(&mut q, Instant::now() + Duration::from_millis(2));
                }
            }
        };
        job();
    }
}

impl Drop for FetchPool {
    fn drop(&mut self) {
        {
            let mut q = self.shared.queues.lock();
            q.closed = true;
            q.urgent.clear();
            q.idle.clear();
        }
        self.shared.ready.notify_all();
        let me = std::thread::current().id();
        let workers = std::mem::take(&mut *self.workers.lock());
        for w in workers {
            // The last owner may be a worker finishing its job: it exits by
            // itself once this returns.
            if w.thread().id() != me {
                let _ = w.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn idle_jobs_wait_for_reads_and_run_in_parallel_and_the_pool_stops() {
        let pool = FetchPool::new(4);
        let done = Arc::new(AtomicU64::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let fg = pool.foreground();
        for _ in 0..8 {
            let (d, r, m) = (done.clone(), running.clone(), most.clone());
            pool.idle(Box::new(move || {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
                r.fetch_sub(1, Ordering::SeqCst);
                d.fetch_add(1, Ordering::SeqCst);
            }));
        }
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            done.load(Ordering::SeqCst),
            0,
            "nothing runs while a read fetches"
        );
        drop(fg);
        let t0 = std::time::Instant::now();
        while done.load(Ordering::SeqCst) < 8 {
            assert!(t0.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(most.load(Ordering::SeqCst) > 1, "jobs ran side by side");
        drop(pool);
    }
}
