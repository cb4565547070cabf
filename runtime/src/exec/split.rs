//! Generated kernels on several threads: a kernel step whose manifest entry
//! carries [`KernelSplit`]s (decided at compile time: every result has an
//! axis that the kernel's ops map row by row from the arguments that have
//! it) is cut into `threads` blocks of rows along one of those axes (the
//! one with the most rows, preferring blocks that need no staging, see
//! [`choose`]), and each block is one call of the kernel on
//! sub-descriptors, run by [`crate::kernels::threads::parallel_for`].
//!
//! A block of a sliced operand is handed over in place when it is
//! contiguous (every axis before the split axis has extent 1: the pointer
//! advances, the size shrinks). Otherwise (`[1, 8, seq, 64]` split along
//! `seq`) the block is staged in a per-thread scratch buffer: gathered
//! from the argument before the call, scattered into the result after it.
//! Kernels read only `aligned` and `sizes` of their descriptors and assume
//! dense row-major data, so both forms satisfy the kernel ABI
//! (see [`super::code`]); the per-element arithmetic is the same as in one
//! whole call, so results are bit-identical to the single-threaded run.
//!
//! Small kernels (fewer than [`MIN_ELEMS`] result elements, or fewer rows
//! than two) run whole on the calling thread, as with `threads == 1`.

use super::code::{call_kernel, KernelPtr};
use super::descriptor;
use crate::artifact::manifest::KernelSplit;
use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Kernels writing fewer result elements than this run whole.
pub const MIN_ELEMS: usize = 1 << 14;

/// One memref operand of a kernel call (arguments first, then results).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Operand<'a> {
    /// Address of the first element (dense row-major).
    pub addr: usize,
    pub shape: &'a [usize],
    /// Bytes per element.
    pub elem: usize,
}

/// Where one operand's block lives for one call.
#[derive(Clone, Copy)]
enum Place {
    /// The whole operand (not sliced).
    Whole,
    /// In place at this address.
    At(usize),
    /// Staged at this offset of the thread's scratch buffer; `outer`
    /// pieces of `len` bytes, `stride` bytes apart in the operand, the
    /// first at `off`.
    Staged { scratch: usize, outer: usize, stride: usize, off: usize, len: usize },
}

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

thread_local! {
    /// Staging space of this thread (grows to the largest block seen, then reused).
    static SCRATCH: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// The rows `lo..hi` of each block when `n` rows are cut into `chunks`.
pub fn block(n: usize, chunks: usize, i: usize) -> (usize, usize) {
    (n * i / chunks, n * (i + 1) / chunks)
}

/// The best of the kernel's splits for this call, or `None` to run it
/// whole: the most blocks (up to `threads`), then no staging, then the
/// most rows.
pub(crate) fn choose(splits: &[KernelSplit], ops: &[Operand<'_>], n_args: usize, threads: usize) -> Option<(usize, Vec<Option<usize>>)> {
    let staged = |axes: &[Option<usize>]| ops.iter().zip(axes).any(|(o, a)| a.is_some_and(|a| o.shape[..a].iter().product::<usize>() > 1));
    let extent = |axes: &[Option<usize>]| ops.iter().zip(axes).find_map(|(o, a)| a.map(|a| o.shape[a])).unwrap_or(0);
    splits.iter().filter_map(|s| plan(s, ops, n_args, threads)).max_by_key(|(c, axes)| (*c, !staged(axes), extent(axes)))
}

/// How many blocks to cut a call into by `split` (`None`: not usable):
/// the split axis must have the same extent in every sliced operand, the
/// results at least [`MIN_ELEMS`] elements and the axis at least 2 rows.
pub(crate) fn plan(split: &KernelSplit, ops: &[Operand<'_>], n_args: usize, threads: usize) -> Option<(usize, Vec<Option<usize>>)> {
    if threads <= 1 || split.args.len() != n_args || split.args.len() + split.results.len() != ops.len() {
        return None;
    }
    let axes: Vec<Option<usize>> = split.args.iter().chain(&split.results).map(|a| a.map(|a| a as usize)).collect();
    let mut n = None;
    for (op, ax) in ops.iter().zip(&axes) {
        if let Some(a) = *ax {
            let e = *op.shape.get(a)?;
            if n.is_some_and(|n| n != e) {
                return None;
            }
            n = Some(e);
        }
    }
    let n = n?;
    let elems: usize = ops[n_args..].iter().map(|o| o.shape.iter().product::<usize>()).sum();
    if elems < MIN_ELEMS || n < 2 || axes[n_args..].iter().any(Option::is_none) {
        return None;
    }
    Some((threads.min(n), axes))
}

/// Run kernel `f` on `ops` cut into row blocks over `threads` workers.
/// Returns `Ok(false)` (nothing called) when the call should run whole.
/// `Err(msg)` when the pool or a call failed.
///
/// # Safety
/// As [`call_kernel`]: `f` is a loaded kernel taking `ops.len()` memrefs
/// (the first `n_args` arguments, then results), each operand a live dense
/// buffer of its shape, results distinct from everything else, and
/// every split valid for the kernel (compile-time analysis).
pub(crate) unsafe fn run(f: KernelPtr, splits: &[KernelSplit], ops: &[Operand<'_>], n_args: usize, threads: usize) -> Result<bool, String> {
    let Some((chunks, axes)) = choose(splits, ops, n_args, threads) else { return Ok(false) };
    let failed = AtomicUsize::new(0);
    let one = |i: usize| {
        // SAFETY: forwarded from the caller; blocks of different `i` write
        // disjoint rows of every result.
        if let Err(n) = unsafe { call_block(f, ops, &axes, n_args, chunks, i) } {
            failed.store(n, Ordering::Relaxed);
        }
    };
    crate::kernels::threads::parallel_for(threads, chunks, one).map_err(|e| e.to_string())?;
    match failed.load(Ordering::Relaxed) {
        0 => Ok(true),
        n => Err(format!("{n} memref arguments; at most {} are supported", super::code::MAX_KERNEL_ARGS)),
    }
}

/// Call the kernel on block `i` of `chunks`.
unsafe fn call_block(f: KernelPtr, ops: &[Operand<'_>], axes: &[Option<usize>], n_args: usize, chunks: usize, i: usize) -> Result<(), usize> {
    let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(ops.len());
    let mut places: Vec<Place> = Vec::with_capacity(ops.len());
    let mut scratch_bytes = 0usize;
    for (op, ax) in ops.iter().zip(axes) {
        let Some(a) = *ax else {
            shapes.push(op.shape.to_vec());
            places.push(Place::Whole);
            continue;
        };
        let n = op.shape[a];
        let (lo, hi) = block(n, chunks, i);
        let outer: usize = op.shape[..a].iter().product();
        let row: usize = op.shape[a + 1..].iter().product::<usize>() * op.elem;
        let mut sh = op.shape.to_vec();
        sh[a] = hi - lo;
        shapes.push(sh);
        if outer == 1 {
            places.push(Place::At(op.addr + lo * row));
        } else {
            let len = (hi - lo) * row;
            places.push(Place::Staged { scratch: scratch_bytes, outer, stride: n * row, off: lo * row, len });
            scratch_bytes += (outer * len).div_ceil(64) * 64;
        }
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() * 64 < scratch_bytes {
            s.resize(scratch_bytes.div_ceil(64), Line([0; 64]));
        }
        let base = s.as_mut_ptr().cast::<u8>();
        let mut descs: Vec<Vec<i64>> = Vec::with_capacity(ops.len());
        for (k, (op, place)) in ops.iter().zip(&places).enumerate() {
            let ptr = match *place {
                Place::Whole => op.addr as *mut u8,
                Place::At(a) => a as *mut u8,
                Place::Staged { scratch, outer, stride, off, len } => {
                    // SAFETY: `scratch..scratch + outer·len` lies in this thread's buffer.
                    let dst = unsafe { base.add(scratch) };
                    if k < n_args {
                        for o in 0..outer {
                            // SAFETY: piece `o` of the block lies inside the
                            // operand (off + len ≤ stride) and inside the scratch.
                            unsafe { std::ptr::copy_nonoverlapping((op.addr + o * stride + off) as *const u8, dst.add(o * len), len) };
                        }
                    }
                    dst
                }
            };
            descs.push(descriptor(ptr, &shapes[k]));
        }
        let mut ptrs: Vec<*mut c_void> = descs.iter_mut().map(|d| d.as_mut_ptr().cast::<c_void>()).collect();
        // SAFETY: every descriptor points at a live dense block of its shape.
        unsafe { call_kernel(f, &mut ptrs) }?;
        for (op, place) in ops.iter().zip(&places).skip(n_args) {
            if let Place::Staged { scratch, outer, stride, off, len } = *place {
                for o in 0..outer {
                    // SAFETY: as for the gather; blocks of other calls write other rows.
                    unsafe { std::ptr::copy_nonoverlapping(base.add(scratch + o * len), (op.addr + o * stride + off) as *mut u8, len) };
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
#[path = "tests/split.rs"]
mod tests;
