//! Branch-free f32 `exp` and `tanh` built from `arith` ops, so that LLVM's
//! loop vectorizer can vectorise the elementwise loops using them (a call to
//! libm's `expf` / `tanhf` keeps a loop scalar, and made GELU-tanh and SiLU
//! the most expensive kernels of a transformer).
//!
//! Accuracy against the correctly rounded result (checked against the
//! evaluator in `codegen/tests/`):
//! - [`exp`]: Cephes `expf` (range reduction by `ln 2` in two parts, degree-6
//!   polynomial), ≈2 ulp; the power of two is applied in two halves, so the
//!   whole f32 range is right: `+inf` above ≈88.72, gradual underflow to 0
//!   below ≈−87.3, NaN in → NaN out;
//! - [`tanh`]: Cephes `tanhf`: an odd polynomial for `|x| < 0.625`, else
//!   `1 − 2/(e^{2|x|} + 1)` with the sign of `x`; ≈2 ulp;
//!
//! `erf` stays libm's `erff`: GELU's `1 + erf(x/√2)` cancels for negative x,
//! so it needs erf to ~1 ulp near −1, which the short polynomials do not
//! give. f64 compute values keep the `math` dialect ops (libm), as do the
//! other transcendental ops (only used by small embedding kernels).

use super::{Ct, Func, S};

fn op(f: &mut Func, name: &str, xs: &[&S]) -> S {
    let t = xs[0].t;
    let args: Vec<&str> = xs.iter().map(|x| x.v.as_str()).collect();
    f.v(t, format!("{name} {} : {}", args.join(", "), t.mlir()))
}

fn mul(f: &mut Func, a: &S, b: &S) -> S {
    op(f, "arith.mulf", &[a, b])
}

fn add(f: &mut Func, a: &S, b: &S) -> S {
    op(f, "arith.addf", &[a, b])
}

/// `c[0] + x·(c[1] + x·(c[2] + …))` (Horner).
fn horner(f: &mut Func, x: &S, c: &[f64]) -> S {
    let mut p = f.cf(Ct::F32, c[c.len() - 1]);
    for &k in c[..c.len() - 1].iter().rev() {
        let m = mul(f, &p, x);
        let kc = f.cf(Ct::F32, k);
        p = add(f, &m, &kc);
    }
    p
}

/// `2^k` for an i32 `k` in [−126, 127], as f32 bits.
fn pow2(f: &mut Func, k: &S) -> S {
    let bias = f.ci(Ct::I32, 127);
    let sh = f.ci(Ct::I32, 23);
    let e = f.v(Ct::I32, format!("arith.addi {}, {} : i32", k.v, bias.v));
    let bits = f.v(Ct::I32, format!("arith.shli {}, {} : i32", e.v, sh.v));
    f.v(Ct::F32, format!("arith.bitcast {} : i32 to f32", bits.v))
}

/// `e^x` for an f32 value (see the module doc).
pub(super) fn exp(f: &mut Func, x: &S) -> S {
    // Clamp (NaN propagates through maximumf/minimumf): below −104 the result
    // is 0 and above 88.8 it is +inf either way.
    let lo = f.cf(Ct::F32, -104.0);
    let hi = f.cf(Ct::F32, 88.8);
    let a = op(f, "arith.maximumf", &[x, &lo]);
    let xc = op(f, "arith.minimumf", &[&a, &hi]);
    // n = round(x·log2 e) with the 1.5·2²³ trick; its integer is in t's low bits.
    let log2e = f.cf(Ct::F32, std::f64::consts::LOG2_E);
    let magic = f.cf(Ct::F32, 12582912.0);
    let xl = mul(f, &xc, &log2e);
    let t = add(f, &xl, &magic);
    let n = op(f, "arith.subf", &[&t, &magic]);
    let tb = f.v(Ct::I32, format!("arith.bitcast {} : f32 to i32", t.v));
    let mb = f.ci(Ct::I32, 12582912.0f32.to_bits() as i64);
    let ni = f.v(Ct::I32, format!("arith.subi {}, {} : i32", tb.v, mb.v));
    // r = x − n·ln 2 (ln 2 in two parts).
    let c1 = f.cf(Ct::F32, -0.693_359_375);
    let c2 = f.cf(Ct::F32, 2.121_944_4e-4);
    let n1 = mul(f, &n, &c1);
    let r1 = add(f, &xc, &n1);
    let n2 = mul(f, &n, &c2);
    let r = add(f, &r1, &n2);
    // e^r ≈ 1 + r + r²·P(r).
    let p = horner(f, &r, &[0.5, 0.166_666_65, 4.166_579_6e-2, 8.333_452e-3, 1.398_199_9e-3, 1.987_569_1e-4]);
    let r2 = mul(f, &r, &r);
    let pr2 = mul(f, &p, &r2);
    let one = f.cf(Ct::F32, 1.0);
    let s = add(f, &pr2, &r);
    let e = add(f, &s, &one);
    // × 2^n in two halves (n ∈ [−150, 129]; each half is a normal power).
    let one_i = f.ci(Ct::I32, 1);
    let h1 = f.v(Ct::I32, format!("arith.shrsi {}, {} : i32", ni.v, one_i.v));
    let h2 = f.v(Ct::I32, format!("arith.subi {}, {} : i32", ni.v, h1.v));
    let p1 = pow2(f, &h1);
    let p2 = pow2(f, &h2);
    let e1 = mul(f, &e, &p1);
    mul(f, &e1, &p2)
}

/// `tanh x` for an f32 value (see the module doc).
pub(super) fn tanh(f: &mut Func, x: &S) -> S {
    let ax = op(f, "math.absf", &[x]);
    // Small |x|: x + x·z·P(z), z = x².
    let z = mul(f, x, x);
    let p = horner(f, &z, &[-3.333_328_194_22e-1, 1.333_144_220_36e-1, -5.373_971_555_31e-2, 2.063_908_879_54e-2, -5.704_988_727_45e-3]);
    let xz = mul(f, x, &z);
    let xzp = mul(f, &xz, &p);
    let small = add(f, x, &xzp);
    // Large |x|: 1 − 2/(e^{2|x|} + 1), sign of x.
    let ax2 = add(f, &ax, &ax);
    let e = exp(f, &ax2);
    let one = f.cf(Ct::F32, 1.0);
    let two = f.cf(Ct::F32, 2.0);
    let den = add(f, &e, &one);
    let q = op(f, "arith.divf", &[&two, &den]);
    let t = op(f, "arith.subf", &[&one, &q]);
    let large = op(f, "math.copysign", &[&t, x]);
    let lim = f.cf(Ct::F32, 0.625);
    let c = f.v(Ct::I1, format!("arith.cmpf olt, {}, {} : f32", ax.v, lim.v));
    f.v(Ct::F32, format!("arith.select {}, {}, {} : f32", c.v, small.v, large.v))
}
