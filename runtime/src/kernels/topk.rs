//! Top-k along the last axis (the IR's `TopK`): for each row of `n`
//! elements, the `k` largest values in descending order and their i64
//! indices. Ties keep the lower index first; NaN is larger than every
//! number (as in PyTorch) and NaNs tie with each other; `-0.0` and `0.0`
//! tie. Values are copied bit-exactly from the input.
//!
//! Each element becomes a `u64` key — an order-preserving map of the f32
//! (NaN → maximum, `-0.0` → `0.0`) in the high half, the bit-inverted index
//! in the low half — so keys are distinct and one integer comparison
//! implements the whole order. Small `k` (≤ [`INSERTION_MAX_K`]) keeps a
//! sorted buffer of `k` keys while scanning the row (no scratch, O(n) for
//! random data); larger `k` fills thread-local scratch with the row's
//! keys, selects with `select_nth_unstable` and sorts the `k` winners.
//! Rows are spread over the threads (see [`super::threads`]).

use super::{threads, KernelError};
use rayon::prelude::*;
use std::cell::RefCell;

const OP: &str = "topk";
/// Largest `k` handled by the insertion buffer.
pub const INSERTION_MAX_K: usize = 32;

thread_local! {
    static KEYS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Order-preserving u32 image of an f32: NaN largest, ±0 equal.
#[inline]
fn fkey(v: f32) -> u32 {
    if v.is_nan() {
        return u32::MAX;
    }
    let b = (v + 0.0).to_bits(); // -0.0 + 0.0 = +0.0
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

#[inline]
fn key(v: f32, i: usize) -> u64 {
    ((fkey(v) as u64) << 32) | (!(i as u32)) as u64
}

#[inline]
fn index_of(key: u64) -> usize {
    (!(key as u32)) as usize
}

/// `values [rows, k]`, `indices [rows, k]` = top-k of each `n`-element row
/// of `x [rows, n]`.
pub fn topk(x: &[f32], n: usize, k: usize, values: &mut [f32], indices: &mut [i64], threads: usize) -> Result<(), KernelError> {
    if k > n {
        return Err(KernelError::new(OP, format!("k = {k} > row length {n}")));
    }
    if n > u32::MAX as usize {
        return Err(KernelError::new(OP, format!("rows of {n} elements exceed 2³² − 1")));
    }
    if n == 0 || k == 0 {
        return if values.is_empty() && indices.is_empty() {
            Ok(())
        } else {
            Err(KernelError::new(OP, format!("{} values / {} indices for k = {k}", values.len(), indices.len())))
        };
    }
    if !x.len().is_multiple_of(n) || values.len() != x.len() / n * k || indices.len() != values.len() {
        return Err(KernelError::new(OP, format!("input {} elements (rows of {n}), {} values, {} indices, k = {k}", x.len(), values.len(), indices.len())));
    }
    let rows = x.len() / n;
    threads::run(OP, threads, |t| {
        // Enough rows per task to amortise scheduling (~64 Ki elements).
        let per = (65536 / n).clamp(1, rows.div_ceil(t).max(1));
        let job = |ri: usize, vals: &mut [f32], inds: &mut [i64]| {
            let r0 = ri * per;
            for (r, (v, ix)) in vals.chunks_mut(k).zip(inds.chunks_mut(k)).enumerate() {
                row(&x[(r0 + r) * n..(r0 + r + 1) * n], v, ix);
            }
        };
        if t <= 1 || rows <= per {
            values.chunks_mut(per * k).zip(indices.chunks_mut(per * k)).enumerate().for_each(|(i, (v, ix))| job(i, v, ix));
        } else {
            values.par_chunks_mut(per * k).zip(indices.par_chunks_mut(per * k)).enumerate().for_each(|(i, (v, ix))| job(i, v, ix));
        }
    })
}

fn row(x: &[f32], vals: &mut [f32], inds: &mut [i64]) {
    let k = vals.len();
    let emit = |keys: &[u64], vals: &mut [f32], inds: &mut [i64]| {
        for ((&kk, v), ix) in keys.iter().zip(vals.iter_mut()).zip(inds.iter_mut()) {
            let i = index_of(kk);
            *v = x[i];
            *ix = i as i64;
        }
    };
    if k <= INSERTION_MAX_K {
        let mut buf = [0u64; INSERTION_MAX_K];
        let mut len = 0;
        for (i, &v) in x.iter().enumerate() {
            let kv = key(v, i);
            if len == k {
                if kv <= buf[k - 1] {
                    continue;
                }
                len -= 1;
            }
            // Insert keeping `buf[..len]` descending.
            let mut p = len;
            while p > 0 && buf[p - 1] < kv {
                buf[p] = buf[p - 1];
                p -= 1;
            }
            buf[p] = kv;
            len += 1;
        }
        emit(&buf[..k], vals, inds);
        return;
    }
    let mut with_keys = |keys: &mut Vec<u64>| {
        keys.clear();
        keys.extend(x.iter().enumerate().map(|(i, &v)| key(v, i)));
        if k < keys.len() {
            keys.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        }
        keys[..k].sort_unstable_by(|a, b| b.cmp(a));
        emit(&keys[..k], vals, inds);
    };
    KEYS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut keys) => with_keys(&mut keys),
        Err(_) => with_keys(&mut Vec::new()),
    });
}

#[cfg(test)]
#[path = "tests/topk.rs"]
mod tests;
