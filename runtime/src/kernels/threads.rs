//! Threading for the kernels.
//!
//! Two mechanisms, both sized by `threads` (0 = [`default_threads`], the
//! number of physical cores; 1 = inline on the calling thread, no pool):
//!
//! * [`parallel_for`] / [`for_each_chunk`]: the hot kernels (packed GEMM,
//!   attention, split generated kernels, conv loops) fork-join on a
//!   [`SpinPool`] of that size: the caller is thread 0, the other workers
//!   spin briefly between jobs, so the chain of short parallel steps of a
//!   forward pass does not pay an OS wake-up per step (see
//!   [`super::spin_pool`] for why and how).
//! * [`run`]: a rayon pool of exactly that size, for the `gemm` crate's own
//!   parallelism (`Parallelism::Rayon`, the non-AVX-512 paths) and other
//!   rayon users: the current pool when the caller is already a worker of a
//!   pool of that size, else a process-wide pool built once per size.

use super::spin_pool::SpinPool;
use super::KernelError;
use std::sync::{Arc, Mutex, OnceLock};

/// Physical cores available to this process: distinct (package, core)
/// pairs of `/proc/cpuinfo` on Linux, capped by
/// `std::thread::available_parallelism` (affinity / cgroup limits), which
/// is also the fallback elsewhere. At least 1; computed once.
pub fn default_threads() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        let avail = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let physical = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| physical_cores(&s));
        physical.map_or(avail, |p| p.min(avail)).max(1)
    })
}

/// Distinct `(physical id, core id)` pairs in a `/proc/cpuinfo` text.
fn physical_cores(cpuinfo: &str) -> Option<usize> {
    let mut cores = std::collections::BTreeSet::new();
    let (mut pkg, mut core) = (None, None);
    for line in cpuinfo.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let (Some(p), Some(c)) = (pkg.take(), core.take()) {
                cores.insert((p, c));
            }
            continue;
        }
        let mut kv = line.splitn(2, ':');
        let (k, v) = (kv.next().unwrap_or("").trim(), kv.next().unwrap_or("").trim());
        match k {
            "physical id" => pkg = v.parse::<u64>().ok(),
            "core id" => core = v.parse::<u64>().ok(),
            _ => {}
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

/// `threads` with 0 replaced by [`default_threads`].
pub fn resolve(threads: usize) -> usize {
    if threads == 0 {
        default_threads()
    } else {
        threads
    }
}

/// Pools by size: a process-wide cache of `P`s, one per thread count, each
/// built once by `build` (which says why it could not start).
type PoolCache<P> = OnceLock<Mutex<Vec<(usize, Arc<P>)>>>;

fn cached<P>(cache: &'static PoolCache<P>, op: &'static str, threads: usize, build: impl FnOnce() -> Result<P, String>) -> Result<Arc<P>, KernelError> {
    let pools = cache.get_or_init(|| Mutex::new(Vec::new()));
    let mut pools = pools.lock().map_err(|_| KernelError::new(op, "thread pool cache poisoned"))?;
    if let Some((_, p)) = pools.iter().find(|(n, _)| *n == threads) {
        return Ok(p.clone());
    }
    let p = Arc::new(build().map_err(|e| KernelError::new(op, format!("cannot start {threads} threads: {e}")))?);
    pools.push((threads, p.clone()));
    Ok(p)
}

fn pool(op: &'static str, threads: usize) -> Result<Arc<rayon::ThreadPool>, KernelError> {
    static POOLS: PoolCache<rayon::ThreadPool> = OnceLock::new();
    cached(&POOLS, op, threads, || {
        rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(move |i| format!("omnic-k{threads}-{i}")).build().map_err(|e| e.to_string())
    })
}

/// Runs `f(threads)` with `threads` resolved, inside a rayon pool of that
/// size when it is more than one (see the module doc).
pub(crate) fn run<R: Send>(op: &'static str, threads: usize, f: impl FnOnce(usize) -> R + Send) -> Result<R, KernelError> {
    let t = resolve(threads);
    if t == 1 {
        return Ok(f(t));
    }
    // Rayon's workers need the cores the spinning pool's may be holding.
    super::spin_pool::quiesce();
    if rayon::current_thread_index().is_some() && rayon::current_num_threads() == t {
        return Ok(f(t));
    }
    Ok(pool(op, t)?.install(|| f(t)))
}

/// Calls `f(i, chunk_i)` for the consecutive `chunk`-sized pieces of
/// `data` (the last may be shorter), on `threads` threads of the spinning
/// pool when more than one ([`parallel_for`]); returns the first error.
pub(crate) fn for_each_chunk<T: Send>(
    threads: usize,
    data: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) -> Result<(), KernelError> + Sync + Send,
) -> Result<(), KernelError> {
    let chunk = chunk.max(1);
    if threads <= 1 || data.len() <= chunk {
        return data.chunks_mut(chunk).enumerate().try_for_each(|(i, c)| f(i, c));
    }
    let len = data.len();
    let base = SharedMut(data.as_mut_ptr());
    try_parallel_for(threads, len.div_ceil(chunk), |i| {
        let b = base;
        let lo = i * chunk;
        let n = chunk.min(len - lo);
        // SAFETY: chunk i is elements lo..lo+n of `data` (in bounds),
        // disjoint from every other task's chunk; `data` is borrowed
        // mutably for the whole call.
        let c = unsafe { std::slice::from_raw_parts_mut(b.0.add(lo), n) };
        f(i, c)
    })
}

/// The process-wide spinning pool of `threads` threads (built once per size).
fn spin_pool(op: &'static str, threads: usize) -> Result<Arc<SpinPool>, KernelError> {
    static POOLS: PoolCache<SpinPool> = OnceLock::new();
    cached(&POOLS, op, threads, || SpinPool::new(threads).map_err(|e| e.to_string()))
}

/// Calls `f(i)` for every `i in 0..n`, spread over up to `threads` threads
/// (0 = [`default_threads`]) of the spinning pool ([`SpinPool`]; the caller
/// is one of them and returns when all are done). Tasks run in any order
/// and concurrently, so `f` must only write disjoint data. Inside another
/// `parallel_for` task it runs inline.
pub fn parallel_for(threads: usize, n: usize, f: impl Fn(usize) + Sync) -> Result<(), KernelError> {
    let t = resolve(threads);
    if t <= 1 || n <= 1 {
        (0..n).for_each(f);
        return Ok(());
    }
    spin_pool("parallel_for", t)?.run(n, &f).map_err(|e| KernelError::new("parallel_for", e))
}

/// [`parallel_for`] for tasks that can fail: the first error is returned
/// (the other tasks still run).
pub fn try_parallel_for(threads: usize, n: usize, f: impl Fn(usize) -> Result<(), KernelError> + Sync) -> Result<(), KernelError> {
    let first: Mutex<Option<KernelError>> = Mutex::new(None);
    parallel_for(threads, n, |i| {
        if let Err(e) = f(i) {
            if let Ok(mut g) = first.lock() {
                g.get_or_insert(e);
            }
        }
    })?;
    match first.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

/// A raw pointer that tasks of one `parallel_for` share to write disjoint
/// parts of one slice.
pub(crate) struct SharedMut<T>(pub *mut T);
impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedMut<T> {}
// SAFETY: users write disjoint elements only (each call site says why).
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

#[cfg(test)]
#[path = "tests/threads.rs"]
mod tests;
