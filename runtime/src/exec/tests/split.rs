use super::*;

/// A kernel of the ABI on rank-`r` f32 memrefs: `r0 = 2·a0 + a1` with `a1`
/// of shape `[last]` broadcast along the last axis (reads only `aligned`
/// and `sizes`, as generated kernels do). Rank 3 and 4 entry points.
unsafe fn scale_add(r: usize, a: *mut i64, b: *mut i64, out: *mut i64) {
    // SAFETY: descriptors of the test's buffers.
    unsafe {
        let sizes = |d: *mut i64, k: usize| *d.add(3 + k) as usize;
        let n: usize = (0..r).map(|k| sizes(a, k)).product();
        let last = sizes(a, r - 1);
        assert_eq!(sizes(b, 0), last);
        assert_eq!((0..r).map(|k| sizes(out, k)).product::<usize>(), n);
        let (pa, pb, po) = (*a.add(1) as *const f32, *b.add(1) as *const f32, *out.add(1) as *mut f32);
        for i in 0..n {
            *po.add(i) = 2.0 * *pa.add(i) + *pb.add(i % last);
        }
    }
}

extern "C" fn scale_add3(a: *mut i64, b: *mut i64, out: *mut i64) {
    // SAFETY: called with rank-3 descriptors.
    unsafe { scale_add(3, a, b, out) }
}

extern "C" fn scale_add4(a: *mut i64, b: *mut i64, out: *mut i64) {
    // SAFETY: called with rank-4 descriptors.
    unsafe { scale_add(4, a, b, out) }
}

fn check(f: extern "C" fn(*mut i64, *mut i64, *mut i64), shape: &[usize], axis: u32, threads: usize) -> bool {
    let n: usize = shape.iter().product();
    let last = shape[shape.len() - 1];
    let a: Vec<f32> = (0..n).map(|i| (i as f32) * 0.25 - 3.0).collect();
    let b: Vec<f32> = (0..last).map(|i| i as f32 * 100.0).collect();
    let mut out = vec![f32::NAN; n];
    let bshape = [last];
    let ops = [
        Operand { addr: a.as_ptr() as usize, shape, elem: 4 },
        Operand { addr: b.as_ptr() as usize, shape: &bshape, elem: 4 },
        Operand { addr: out.as_mut_ptr() as usize, shape, elem: 4 },
    ];
    let split = KernelSplit { args: vec![Some(axis), None], results: vec![Some(axis)] };
    let f = KernelPtr::from_fn_addr(f as usize);
    // SAFETY: live buffers of their shapes; the kernel is row-separable along `axis`.
    let done = unsafe { run(f, &[split], &ops, 2, threads) }.unwrap();
    if done {
        for i in 0..n {
            assert_eq!(out[i].to_bits(), (2.0 * a[i] + b[i % last]).to_bits(), "element {i} of {shape:?} split along {axis}");
        }
    }
    done
}

#[test]
fn contiguous_blocks_in_place() {
    // [1, rows, 64] along axis 1: blocks are contiguous.
    for threads in [2, 3, 4] {
        assert!(check(scale_add3, &[1, 301, 64], 1, threads));
    }
}

#[test]
fn strided_blocks_are_staged() {
    // [2, 8, rows, 64] along axis 2: 16 pieces per block, gathered and scattered.
    for threads in [2, 3] {
        assert!(check(scale_add4, &[2, 8, 77, 64], 2, threads));
    }
    // Along axis 0 with a leading extent > 1 on a rank-3 operand.
    assert!(check(scale_add3, &[5, 40, 128], 1, 2));
}

#[test]
fn small_or_single_threaded_calls_run_whole() {
    // One thread, too few elements, or a single row: nothing is called.
    assert!(!check(scale_add3, &[1, 320, 64], 1, 1));
    assert!(!check(scale_add3, &[1, 4, 64], 1, 2));
    assert!(!check(scale_add3, &[1, 1, 1 << 16], 1, 2));
}

#[test]
fn plan_refuses_inconsistent_splits() {
    let s1 = [1usize, 300, 64];
    let s2 = [1usize, 299, 64];
    let ops = [Operand { addr: 0, shape: &s1, elem: 4 }, Operand { addr: 0, shape: &s2, elem: 4 }];
    // Extents differ along the axis.
    assert!(plan(&KernelSplit { args: vec![Some(1)], results: vec![Some(1)] }, &ops, 1, 2).is_none());
    // A result without an axis, an axis out of range, a wrong arity.
    let ok = [Operand { addr: 0, shape: &s1, elem: 4 }, Operand { addr: 0, shape: &s1, elem: 4 }];
    assert!(plan(&KernelSplit { args: vec![Some(1)], results: vec![None] }, &ok, 1, 2).is_none());
    assert!(plan(&KernelSplit { args: vec![Some(3)], results: vec![Some(1)] }, &ok, 1, 2).is_none());
    assert!(plan(&KernelSplit { args: vec![], results: vec![Some(1)] }, &ok, 1, 2).is_none());
    assert_eq!(plan(&KernelSplit { args: vec![Some(1)], results: vec![Some(1)] }, &ok, 1, 4).map(|p| p.0), Some(4));
}

#[test]
fn blocks_cover_the_rows_once() {
    for n in [2usize, 7, 320] {
        for c in 1..=4.min(n) {
            let mut next = 0;
            for i in 0..c {
                let (lo, hi) = block(n, c, i);
                assert_eq!(lo, next);
                assert!(hi > lo);
                next = hi;
            }
            assert_eq!(next, n);
        }
    }
}

#[test]
fn choose_prefers_more_blocks_then_in_place() {
    // [1, 2, 300, 64]: axis 1 has 2 rows (in place), axis 2 has 300 (staged).
    let sh = [1usize, 2, 300, 64];
    let ops = [Operand { addr: 0, shape: &sh, elem: 4 }, Operand { addr: 0, shape: &sh, elem: 4 }];
    let along = |a: u32| KernelSplit { args: vec![Some(a)], results: vec![Some(a)] };
    let splits = [along(1), along(2)];
    // Two threads: both give 2 blocks; axis 1 needs no staging.
    assert_eq!(choose(&splits, &ops, 1, 2).map(|(c, axes)| (c, axes[0])), Some((2, Some(1))));
    // Four threads: only axis 2 gives 4 blocks.
    assert_eq!(choose(&splits, &ops, 1, 4).map(|(c, axes)| (c, axes[0])), Some((4, Some(2))));
}
