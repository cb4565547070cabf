//! Threading for the kernels.
//!
//! Decision: rayon, with a pool of exactly the requested size. Every kernel
//! takes `threads` (0 = [`default_threads`], the number of physical cores).
//! `threads == 1` runs inline on the calling thread with no rayon at all.
//! Otherwise the kernel runs inside a rayon pool of `threads` workers: the
//! current pool when the caller is already a worker of a pool of that size
//! (so a scheduler may own its pool and call kernels from it), else a
//! process-wide pool built once per distinct size and cached. Inside the
//! pool, work is split with rayon's parallel iterators, and the `gemm`
//! crate's own parallelism (`Parallelism::Rayon`) uses the same pool.
//! Rayon was chosen over `std::thread::scope` because it composes with
//! `gemm`'s threading, keeps workers (and their thread-local scratch) alive
//! across calls, and balances uneven tasks (causal attention) by stealing.

use super::KernelError;
use rayon::prelude::*;
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

fn pool(op: &'static str, threads: usize) -> Result<Arc<rayon::ThreadPool>, KernelError> {
    type Pools = Mutex<Vec<(usize, Arc<rayon::ThreadPool>)>>;
    static POOLS: OnceLock<Pools> = OnceLock::new();
    let pools = POOLS.get_or_init(|| Mutex::new(Vec::new()));
    let mut pools = pools.lock().map_err(|_| KernelError::new(op, "thread pool cache poisoned"))?;
    if let Some((_, p)) = pools.iter().find(|(n, _)| *n == threads) {
        return Ok(p.clone());
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("omnic-k{threads}-{i}"))
        .build()
        .map_err(|e| KernelError::new(op, format!("cannot start {threads} threads: {e}")))?;
    let p = Arc::new(p);
    pools.push((threads, p.clone()));
    Ok(p)
}

/// Runs `f(threads)` with `threads` resolved, inside a rayon pool of that
/// size when it is more than one (see the module doc).
pub(crate) fn run<R: Send>(op: &'static str, threads: usize, f: impl FnOnce(usize) -> R + Send) -> Result<R, KernelError> {
    let t = resolve(threads);
    if t == 1 || (rayon::current_thread_index().is_some() && rayon::current_num_threads() == t) {
        return Ok(f(t));
    }
    Ok(pool(op, t)?.install(|| f(t)))
}

/// Calls `f(i, chunk_i)` for the consecutive `chunk`-sized pieces of
/// `data` (the last may be shorter), in parallel when `threads > 1`; stops
/// at (and returns) an error. Must be called inside [`run`].
pub(crate) fn for_each_chunk<T: Send>(
    threads: usize,
    data: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) -> Result<(), KernelError> + Sync + Send,
) -> Result<(), KernelError> {
    let chunk = chunk.max(1);
    if threads <= 1 || data.len() <= chunk {
        data.chunks_mut(chunk).enumerate().try_for_each(|(i, c)| f(i, c))
    } else {
        data.par_chunks_mut(chunk).enumerate().try_for_each(|(i, c)| f(i, c))
    }
}

#[cfg(test)]
#[path = "tests/threads.rs"]
mod tests;
