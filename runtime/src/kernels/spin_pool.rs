//! A fork-join pool whose workers spin between jobs.
//!
//! Why not rayon for the hot kernels: a forward pass is a chain of short
//! parallel steps (a GEMM of 1–4 ms, then a generated kernel on the calling
//! thread, then the next GEMM). Rayon's idle workers go to sleep within
//! microseconds and must be woken by the OS for every step (tens of µs on
//! a VM, plus a cold start), and the caller only waits while they work. Here,
//! as in OpenMP runtimes, the caller is thread 0 of the job and the other
//! `threads − 1` workers spin on the job ticket for [`SPIN`] after their last
//! job before they block on a condition variable, so back-to-back steps
//! start at once. On an idle pool the spinning stops after [`SPIN`], and at
//! once after [`quiesce`] (the rayon paths call it, so spinning workers do
//! not take cores from rayon's).
//!
//! Job protocol (one job at a time per pool): the caller publishes a
//! pointer to the job (task function and count, on its stack), then a
//! *ticket* `(epoch, claims)` in one `AtomicU64`. Anyone claims by a
//! compare-exchange on the ticket that checks the epoch (so a worker that
//! saw an older job can never claim in a later one) and only then reads the
//! job; a claim `i < n` runs task `i`, a claim `i ≥ n` tells the claimer
//! the job is drained. Every claim, run or not, ends with `done += 1`. The
//! caller runs tasks too; once it has drained the job it closes the ticket
//! (swap, which also returns the number of claims `c`) and waits for
//! `done == c`, so no thread touches the job after `run` returns. Nested
//! calls (from inside a task) and calls while the pool is busy with another
//! caller run inline.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long an idle worker keeps spinning before it blocks.
pub const SPIN: Duration = Duration::from_millis(2);

/// Bumped by [`quiesce`]: spinning workers that see it change block at once.
static QUIESCE: AtomicU64 = AtomicU64::new(0);

/// Tells every pool's spinning workers to block now (until their next
/// job): called before work on other threads (rayon) that needs the cores.
pub fn quiesce() {
    QUIESCE.fetch_add(1, Relaxed);
}

/// Bits of the ticket holding the task index; the rest is the epoch.
const INDEX_BITS: u32 = 24;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
/// Most tasks in one job (larger counts are chunked by the caller); the
/// rest of the index range leaves room for the draining claims.
pub const MAX_TASKS: usize = (INDEX_MASK / 2) as usize;

thread_local! {
    /// Set on pool workers and while a thread runs a job's tasks.
    static IN_JOB: Cell<bool> = const { Cell::new(false) };
}

type TaskFn = dyn Fn(usize) + Sync;

/// A published job, on the caller's stack (lifetime of `f` erased: valid
/// until the caller has seen every claim finish).
struct Job {
    f: *const TaskFn,
    n: usize,
}

struct Shared {
    /// `(epoch << INDEX_BITS) | claims so far`; claims `INDEX_MASK` = closed.
    ticket: AtomicU64,
    /// The current job; read only by a thread holding a claim of its epoch.
    job: AtomicPtr<Job>,
    done: AtomicUsize,
    panicked: AtomicBool,
    busy: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

/// A pool of `threads − 1` spinning workers plus the calling thread.
pub struct SpinPool {
    shared: Arc<Shared>,
    threads: usize,
}

impl SpinPool {
    /// Starts `threads − 1` workers (none for 1).
    pub fn new(threads: usize) -> std::io::Result<SpinPool> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            ticket: AtomicU64::new(INDEX_MASK),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        for i in 1..threads {
            let s = shared.clone();
            std::thread::Builder::new().name(format!("omnic-spin{threads}-{i}")).spawn(move || worker(&s, 0))?;
        }
        Ok(SpinPool { shared, threads })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(i)` for `i in 0..n` on the pool and the calling thread;
    /// returns when all have finished. `Err` when a task panicked.
    pub fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) -> Result<(), String> {
        if n == 0 {
            return Ok(());
        }
        let nested = IN_JOB.with(|c| c.get());
        if self.threads == 1 || n == 1 || nested || self.shared.busy.compare_exchange(false, true, Acquire, Relaxed).is_err() {
            return catch_unwind(AssertUnwindSafe(|| (0..n).for_each(f))).map_err(|_| "a task panicked".to_string());
        }
        let mut result = Ok(());
        for lo in (0..n).step_by(MAX_TASKS) {
            let m = MAX_TASKS.min(n - lo);
            let g = |i: usize| f(lo + i);
            if let Err(e) = self.job(m, &g) {
                result = Err(e);
                break;
            }
        }
        self.shared.busy.store(false, Release);
        result
    }

    /// One published job of `n ≤ MAX_TASKS` tasks (the caller holds `busy`).
    fn job(&self, n: usize, f: &(dyn Fn(usize) + Sync)) -> Result<(), String> {
        let s = &*self.shared;
        let epoch = (s.ticket.load(Acquire) >> INDEX_BITS) + 1;
        // SAFETY (lifetime erasure): `job` is only dereferenced by holders
        // of a claim of this epoch, and this function returns only after
        // every such claim has finished (`done == claims`).
        let f: *const TaskFn = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const TaskFn>(f) };
        let mut job = Job { f, n };
        s.job.store(&mut job, Release);
        s.done.store(0, Relaxed);
        s.panicked.store(false, Relaxed);
        s.ticket.store(epoch << INDEX_BITS, SeqCst);
        if s.sleepers.load(SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|p| p.into_inner());
            s.wake.notify_all();
        }
        IN_JOB.with(|c| c.set(true));
        work(s, epoch);
        IN_JOB.with(|c| c.set(false));
        // Drained: close, then wait for every claim to finish.
        let claims = (s.ticket.swap((epoch << INDEX_BITS) | INDEX_MASK, AcqRel) & INDEX_MASK) as usize;
        let mut spins = 0u32;
        while s.done.load(Acquire) < claims {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        s.job.store(std::ptr::null_mut(), Relaxed);
        if s.panicked.load(Acquire) {
            Err("a task panicked".into())
        } else {
            Ok(())
        }
    }
}

/// Claims and runs tasks of job `epoch` until it is drained or closed.
fn work(s: &Shared, epoch: u64) {
    loop {
        let t = s.ticket.load(Acquire);
        if t >> INDEX_BITS != epoch || t & INDEX_MASK == INDEX_MASK {
            return;
        }
        if s.ticket.compare_exchange_weak(t, t + 1, AcqRel, Relaxed).is_err() {
            continue;
        }
        let i = (t & INDEX_MASK) as usize;
        // SAFETY: we hold claim i of `epoch`, so the job published for it
        // (Release store before the ticket; our CAS acquires it) is alive
        // until our `done` increment below.
        let job = unsafe { &*s.job.load(Acquire) };
        let drained = i >= job.n;
        if !drained {
            // SAFETY: as above; `f` outlives the claim.
            let r = catch_unwind(AssertUnwindSafe(|| unsafe { (*job.f)(i) }));
            if r.is_err() {
                s.panicked.store(true, Release);
            }
        }
        s.done.fetch_add(1, Release);
        if drained {
            return;
        }
    }
}

/// A worker's loop; `seen` is the epoch of the pool at its creation (a
/// job posted before the thread got going is still seen as new).
fn worker(s: &Shared, mut seen: u64) {
    IN_JOB.with(|c| c.set(true));
    loop {
        // Spin for a new epoch, then block.
        let start = Instant::now();
        let quiet = QUIESCE.load(Relaxed);
        let mut spins = 0u32;
        let epoch = loop {
            let e = s.ticket.load(Acquire) >> INDEX_BITS;
            if e != seen {
                break e;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && (start.elapsed() > SPIN || QUIESCE.load(Relaxed) != quiet) {
                let mut g = s.lock.lock().unwrap_or_else(|p| p.into_inner());
                s.sleepers.fetch_add(1, SeqCst);
                while s.ticket.load(SeqCst) >> INDEX_BITS == seen {
                    g = s.wake.wait(g).unwrap_or_else(|p| p.into_inner());
                }
                s.sleepers.fetch_sub(1, SeqCst);
                drop(g);
                spins = 0;
            } else {
                std::hint::spin_loop();
            }
        };
        seen = epoch;
        work(s, epoch);
    }
}

#[cfg(test)]
#[path = "tests/spin_pool.rs"]
mod tests;
