use super::*;
use crate::kernels::gemm_packed::pack_panels;
use crate::kernels::testutil::{assert_close, Rng};

/// Naive f64 `split(concat(x_i)·wᵀ + b)`: per result section its values
/// and `Σ|terms|` (for the tolerance).
fn naive(rows: usize, ks: &[usize], xs: &[Vec<f32>], ns: &[usize], w: &[f32], b: Option<&[f32]>) -> Vec<(Vec<f64>, Vec<f64>)> {
    let k: usize = ks.iter().sum();
    let mut out = Vec::new();
    let mut noff = 0;
    for &nn in ns {
        let (mut y, mut mag) = (vec![0.0; rows * nn], vec![0.0; rows * nn]);
        for i in 0..rows {
            for j in 0..nn {
                let col = noff + j;
                let mut s = b.map_or(0.0, |b| b[col] as f64);
                let mut m = s.abs();
                let mut koff = 0;
                for (x, &kk) in xs.iter().zip(ks) {
                    for p in 0..kk {
                        let t = x[i * kk + p] as f64 * w[col * k + koff + p] as f64;
                        s += t;
                        m += t.abs();
                    }
                    koff += kk;
                }
                y[i * nn + j] = s;
                mag[i * nn + j] = m;
            }
        }
        out.push((y, mag));
        noff += nn;
    }
    out
}

/// Runs `LinearSections` through [`run`] (packed or not) and compares each
/// result section with the naive reference.
#[allow(clippy::too_many_arguments)]
fn check(rng: &mut Rng, lead: &[usize], ks: &[usize], ns: &[usize], bias: bool, packed: bool, threads: usize, ctx: &str) {
    let rows: usize = lead.iter().product();
    let (k, n): (usize, usize) = (ks.iter().sum(), ns.iter().sum());
    let xs: Vec<Vec<f32>> = ks.iter().map(|&kk| rng.vec(rows * kk)).collect();
    let w = rng.vec(n * k);
    let b = rng.vec(n);
    let mut wp = vec![f32::NAN; n * k];
    pack_panels(&w, n, k, &mut wp);
    let x_shapes: Vec<Vec<usize>> = ks.iter().map(|&kk| [lead, &[kk]].concat()).collect();
    let y_shapes: Vec<Vec<usize>> = ns.iter().map(|&nn| [lead, &[nn]].concat()).collect();
    let (w_shape, b_shape) = ([n, k], [n]);
    let mut args: Vec<TensorRef> = xs.iter().zip(&x_shapes).map(|(x, s)| TensorRef::from_f32(s, x)).collect();
    args.push(TensorRef::from_f32(&w_shape, if packed { &wp } else { &w }));
    if bias {
        args.push(TensorRef::from_f32(&b_shape, &b));
    }
    let mut ys: Vec<Vec<f32>> = ns.iter().map(|&nn| vec![f32::NAN; rows * nn]).collect();
    {
        let mut res: Vec<TensorMut> = ys.iter_mut().zip(&y_shapes).map(|(y, s)| TensorMut::from_f32(s, y)).collect();
        run(bias, ks.len(), &args, &mut res, packed, threads).unwrap();
    }
    let want = naive(rows, ks, &xs, ns, &w, bias.then_some(&b[..]));
    for (o, (y, (wv, mag))) in ys.iter().zip(&want).enumerate() {
        assert_close(y, wv, mag, 1e-5, &format!("{ctx}: result section {o}"));
    }
}

#[test]
fn sections_match_the_unfused_linear() {
    let mut rng = Rng::new(21);
    // (leading dims, input sections K_i, output sections N_o): sections
    // crossing KC = 256, an empty input section, a ragged last panel
    // (N_o not a multiple of 32 only for the last section), rows around MR = 14.
    let cases: [(&[usize], &[usize], &[usize]); 7] = [
        (&[1, 20], &[512, 2048 / 8], &[64]),
        (&[3, 5], &[300, 7], &[32, 64, 17]),
        (&[29], &[13], &[64, 64, 64, 40]),
        (&[14], &[1, 0, 257], &[96, 5]),
        (&[2, 1], &[40, 40, 40], &[32]),
        (&[1], &[3], &[32, 0, 1]),
        (&[0, 4], &[8, 8], &[32, 8]),
    ];
    for (lead, ks, ns) in cases {
        for bias in [false, true] {
            for packed in [false, true] {
                for threads in [1, 3] {
                    let ctx = format!("lead {lead:?} ks {ks:?} ns {ns:?} bias {bias} packed {packed} t{threads}");
                    check(&mut rng, lead, ks, ns, bias, packed, threads, &ctx);
                }
            }
        }
    }
}

#[test]
fn unpacked_sections_take_any_widths() {
    // The plain-weight path has no panel constraint on the output sections.
    let mut rng = Rng::new(5);
    check(&mut rng, &[7], &[5, 11], &[3, 30, 9], true, false, 2, "unpacked 3/30/9");
}

#[test]
fn sections_reject_bad_operands() {
    let (x0, x1, w) = (vec![0f32; 6], vec![0f32; 4], vec![0f32; 5 * 40]);
    let (s0, s1, ws) = ([2, 3], [2, 2], [40, 5]);
    let args = [TensorRef::from_f32(&s0, &x0), TensorRef::from_f32(&s1, &x1), TensorRef::from_f32(&ws, &w)];
    // Packed: the first output section is not a multiple of 32 wide.
    let (mut y0, mut y1) = (vec![0f32; 2 * 8], vec![0f32; 2 * 32]);
    let (r0, r1) = ([2, 8], [2, 32]);
    let e = run(false, 2, &args, &mut [TensorMut::from_f32(&r0, &mut y0), TensorMut::from_f32(&r1, &mut y1)], true, 1).unwrap_err();
    assert!(e.to_string().contains("output section 0 is 8 columns wide"), "{e}");
    // Result sections that do not add up to N.
    let e = run(false, 2, &args, &mut [TensorMut::from_f32(&r0, &mut y0)], false, 1).unwrap_err();
    assert!(e.to_string().contains("result sections [8] add up to N = 8"), "{e}");
    // Input sections that do not add up to K.
    let e = run(false, 1, &[args[0], args[2]], &mut [TensorMut::from_f32(&r0, &mut y0), TensorMut::from_f32(&r1, &mut y1)], false, 1).unwrap_err();
    assert!(e.to_string().contains("input sections [3] add up to K = 3"), "{e}");
    // Leading dims that disagree.
    let s1b = [1, 2];
    let x1b = vec![0f32; 2];
    let bad = [TensorRef::from_f32(&s0, &x0), TensorRef::from_f32(&s1b, &x1b), TensorRef::from_f32(&ws, &w)];
    let e = run(false, 2, &bad, &mut [TensorMut::from_f32(&r1, &mut y1)], false, 1).unwrap_err();
    assert!(e.to_string().contains("input section 1 has shape [1, 2]"), "{e}");
    // Wrong arity.
    let e = run(true, 2, &args, &mut [TensorMut::from_f32(&r1, &mut y1)], false, 1).unwrap_err();
    assert!(e.to_string().contains("3 operands and 1 results, expected 4"), "{e}");
}
