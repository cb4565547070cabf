use super::*;
use crate::kernels::testutil::Rng;
use std::cmp::Ordering;

/// The IR evaluator's rule: a stable sort, NaN largest, ties by index.
fn naive(x: &[f32], n: usize, k: usize) -> (Vec<f32>, Vec<i64>) {
    let fcmp = |a: f32, b: f32| match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    };
    let (mut vals, mut inds) = (Vec::new(), Vec::new());
    for r in 0..x.len() / n {
        let row = &x[r * n..(r + 1) * n];
        let mut ord: Vec<usize> = (0..n).collect();
        ord.sort_by(|&a, &b| fcmp(row[b], row[a]).then(a.cmp(&b)));
        vals.extend(ord[..k].iter().map(|&j| row[j]));
        inds.extend(ord[..k].iter().map(|&j| j as i64));
    }
    (vals, inds)
}

fn check(x: &[f32], n: usize, k: usize) {
    let (wv, wi) = naive(x, n, k);
    for threads in [1, 2, 3] {
        let mut v = vec![0.0f32; wv.len()];
        let mut ix = vec![-1i64; wi.len()];
        topk(x, n, k, &mut v, &mut ix, threads).unwrap();
        assert_eq!(ix, wi, "indices n {n} k {k} t{threads}");
        let bits = |s: &[f32]| s.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&v), bits(&wv), "values n {n} k {k} t{threads}");
    }
}

#[test]
fn random_rows_small_and_large_k() {
    let mut rng = Rng::new(1);
    let x = rng.vec(7 * 301);
    for k in [1, 2, 5, 31, 32, 33, 100, 300, 301] {
        check(&x, 301, k);
    }
    check(&x[..1], 1, 1);
    let big = rng.vec(3 * 70_000);
    check(&big, 70_000, 10);
    check(&big, 70_000, 500);
    let many = rng.vec(5000 * 16); // many short rows: split over threads
    check(&many, 16, 4);
}

#[test]
fn ties_nan_infinities_and_signed_zero() {
    let nan = f32::NAN;
    let neg_nan = -f32::NAN;
    let row = [1.0, 3.0, nan, 3.0, -0.0, f32::INFINITY, 0.0, neg_nan, f32::NEG_INFINITY, 1.0, -0.0, 3.0];
    for k in 0..=row.len() {
        check(&row, row.len(), k);
    }
    let (mut v, mut ix) = (vec![0.0; 5], vec![0; 5]);
    topk(&row, row.len(), 5, &mut v, &mut ix, 1).unwrap();
    assert_eq!(ix, vec![2, 7, 5, 1, 3]);
    // All equal: identity order; k > INSERTION_MAX_K too.
    let same = vec![0.5f32; 100];
    check(&same, 100, 40);
    check(&same, 100, 3);
    let mut dup = vec![0.0f32; 64];
    for (i, x) in dup.iter_mut().enumerate() {
        *x = (i % 4) as f32 * if i % 2 == 0 { 1.0 } else { -1.0 };
    }
    check(&dup, 64, 50);
    check(&dup, 64, 7);
}

#[test]
fn rejects_bad_sizes() {
    let (mut v, mut ix) = (vec![0.0; 2], vec![0; 2]);
    assert!(topk(&[1.0, 2.0], 2, 3, &mut v, &mut ix, 1).unwrap_err().to_string().contains("k = 3"));
    assert!(topk(&[1.0, 2.0, 3.0], 2, 1, &mut v, &mut ix, 1).is_err());
    topk(&[], 0, 0, &mut [], &mut [], 1).unwrap();
}
