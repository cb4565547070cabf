//! Naive per-op implementations. Obviously correct first, fast never:
//! plain loops over row-major indices, accumulation in f64.

use super::tensor::{round_to, Data, Tensor};
use crate::dtype::DType;
use crate::op::{BinaryOp, CmpOp, ReduceOp, UnaryOp};

pub type KResult = Result<Tensor, String>;

/// Row-major strides.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Concrete broadcast of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(format!("shapes {a:?} and {b:?} do not broadcast"));
        };
    }
    Ok(out)
}

/// For every flat index of `out`, the flat index into a tensor of shape
/// `inp` broadcast to `out`.
pub fn bcast_index(inp: &[usize], out: &[usize]) -> Vec<usize> {
    let n: usize = out.iter().product();
    let off = out.len() - inp.len();
    let is = strides(inp);
    let os = strides(out);
    (0..n)
        .map(|f| {
            let mut idx = 0;
            for (j, &d) in inp.iter().enumerate() {
                if d != 1 {
                    let c = (f / os[off + j]) % out[off + j];
                    idx += c * is[j];
                }
            }
            idx
        })
        .collect()
}

/// Build a tensor of `dtype` from f64 values, rounding to the dtype.
pub fn make_float(dtype: DType, shape: Vec<usize>, v: Vec<f64>, keep_f64: bool) -> Tensor {
    let v = v.into_iter().map(|x| round_to(dtype, x, keep_f64)).collect();
    Tensor { dtype, shape, data: Data::F(v) }
}

/// Same elements, possibly reordered by `idx` (for data-movement ops).
pub fn gather_flat(x: &Tensor, shape: Vec<usize>, idx: &[usize]) -> Tensor {
    let data = match &x.data {
        Data::F(v) => Data::F(idx.iter().map(|&i| v[i]).collect()),
        Data::I(v) => Data::I(idx.iter().map(|&i| v[i]).collect()),
        Data::B(v) => Data::B(idx.iter().map(|&i| v[i]).collect()),
    };
    Tensor { dtype: x.dtype, shape, data }
}

pub fn erf(x: f64) -> f64 {
    // Abramowitz–Stegun 7.1.26 is too coarse for an oracle; use the series for
    // small |x| and the continued fraction (via erfc) for large |x|.
    if x.is_nan() {
        return f64::NAN;
    }
    if x.is_infinite() {
        // The continued fraction below would give ∞·0 = NaN.
        return x.signum();
    }
    let ax = x.abs();
    // Switch at 1.5: the alternating series loses up to 6e-15 to
    // cancellation near 2.5, while the continued fraction is accurate to
    // ~1e-16 from 1.5 on (converging in ~100 terms there).
    let r = if ax < 1.5 {
        // Maclaurin series: erf x = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
        let mut sum = 0.0;
        let mut term = ax; // x^(2n+1)/n!
        let x2 = ax * ax;
        let mut n = 0.0;
        loop {
            let t = term / (2.0 * n + 1.0);
            sum += t;
            if t.abs() < 1e-17 * sum.abs() {
                break;
            }
            n += 1.0;
            term *= -x2 / n;
            if n > 200.0 {
                break;
            }
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // Lentz continued fraction for erfc.
        let x2 = ax * ax;
        let mut f = ax;
        let tiny = 1e-300;
        let mut c = f;
        let mut d = 0.0;
        for k in 1..300 {
            let a = k as f64 / 2.0;
            d = ax + a * d;
            d = if d.abs() < tiny { tiny } else { d };
            c = ax + a / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        let erfc = (-x2).exp() / (f * std::f64::consts::PI.sqrt());
        1.0 - erfc
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

pub fn unary_f(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Recip => 1.0 / x,
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Erf => erf(x),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Silu => x / (1.0 + (-x).exp()),
        UnaryOp::Gelu => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        UnaryOp::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::Square => x * x,
    }
}

pub fn unary(op: UnaryOp, x: &Tensor, keep: bool) -> KResult {
    let v = x.floats()?.iter().map(|&a| unary_f(op, a)).collect();
    Ok(make_float(x.dtype, x.shape.clone(), v, keep))
}

fn wrap_int(dtype: DType, v: i64) -> i64 {
    if dtype == DType::I32 {
        v as i32 as i64
    } else {
        v
    }
}

/// `p^e` modulo 2^64 by squaring, for any exponent (`i64::wrapping_pow`
/// takes a u32, and truncating the exponent changes the result).
fn wrapping_ipow(p: i64, mut e: u64) -> i64 {
    let (mut base, mut r) = (p, 1i64);
    while e > 0 {
        if e & 1 == 1 {
            r = r.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        e >>= 1;
    }
    r
}

pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor, keep: bool) -> KResult {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let ia = bcast_index(&a.shape, &shape);
    let ib = bcast_index(&b.shape, &shape);
    match (&a.data, &b.data) {
        (Data::F(x), Data::F(y)) => {
            let v = ia
                .iter()
                .zip(&ib)
                .map(|(&i, &j)| {
                    let (p, q) = (x[i], y[j]);
                    match op {
                        BinaryOp::Add => p + q,
                        BinaryOp::Sub => p - q,
                        BinaryOp::Mul => p * q,
                        BinaryOp::Div => p / q,
                        BinaryOp::Pow => p.powf(q),
                        BinaryOp::Max => p.max(q),
                        BinaryOp::Min => p.min(q),
                    }
                })
                .collect();
            Ok(make_float(a.dtype, shape, v, keep))
        }
        (Data::I(x), Data::I(y)) => {
            let mut out = Vec::with_capacity(ia.len());
            for (&i, &j) in ia.iter().zip(&ib) {
                let (p, q) = (x[i], y[j]);
                let r = match op {
                    BinaryOp::Add => p.wrapping_add(q),
                    BinaryOp::Sub => p.wrapping_sub(q),
                    BinaryOp::Mul => p.wrapping_mul(q),
                    BinaryOp::Div => {
                        if q == 0 {
                            return Err("integer division by zero".into());
                        }
                        // Truncating; MIN / -1 wraps (plain `/` panics).
                        p.wrapping_div(q)
                    }
                    BinaryOp::Pow => {
                        if q < 0 {
                            return Err("integer power with negative exponent".into());
                        }
                        wrapping_ipow(p, q as u64)
                    }
                    BinaryOp::Max => p.max(q),
                    BinaryOp::Min => p.min(q),
                };
                out.push(wrap_int(a.dtype, r));
            }
            Ok(Tensor { dtype: a.dtype, shape, data: Data::I(out) })
        }
        _ => Err(format!("binary {} on {} and {}", op.name(), a.dtype, b.dtype)),
    }
}

pub fn compare(op: CmpOp, a: &Tensor, b: &Tensor) -> KResult {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let ia = bcast_index(&a.shape, &shape);
    let ib = bcast_index(&b.shape, &shape);
    let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
    let (xi, yi) = match (&a.data, &b.data) {
        (Data::I(p), Data::I(q)) => (Some(p), Some(q)),
        _ => (None, None),
    };
    let v = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| {
            let ord = match (xi, yi) {
                (Some(p), Some(q)) => p[i].partial_cmp(&q[j]),
                _ => x[i].partial_cmp(&y[j]),
            };
            use std::cmp::Ordering::*;
            match (op, ord) {
                (CmpOp::Ne, None) => true,
                (_, None) => false,
                (CmpOp::Eq, Some(o)) => o == Equal,
                (CmpOp::Ne, Some(o)) => o != Equal,
                (CmpOp::Lt, Some(o)) => o == Less,
                (CmpOp::Le, Some(o)) => o != Greater,
                (CmpOp::Gt, Some(o)) => o == Greater,
                (CmpOp::Ge, Some(o)) => o != Less,
            }
        })
        .collect();
    Ok(Tensor { dtype: DType::Bool, shape, data: Data::B(v) })
}

pub fn where_(c: &Tensor, a: &Tensor, b: &Tensor) -> KResult {
    let s1 = broadcast_shape(&a.shape, &b.shape)?;
    let shape = broadcast_shape(&c.shape, &s1)?;
    let ic = bcast_index(&c.shape, &shape);
    let ia = bcast_index(&a.shape, &shape);
    let ib = bcast_index(&b.shape, &shape);
    let cv = c.bools()?;
    let data = match (&a.data, &b.data) {
        (Data::F(x), Data::F(y)) => Data::F((0..ic.len()).map(|f| if cv[ic[f]] { x[ia[f]] } else { y[ib[f]] }).collect()),
        (Data::I(x), Data::I(y)) => Data::I((0..ic.len()).map(|f| if cv[ic[f]] { x[ia[f]] } else { y[ib[f]] }).collect()),
        (Data::B(x), Data::B(y)) => Data::B((0..ic.len()).map(|f| if cv[ic[f]] { x[ia[f]] } else { y[ib[f]] }).collect()),
        _ => return Err("where: branches differ in dtype".into()),
    };
    Ok(Tensor { dtype: a.dtype, shape, data })
}

pub fn cast(x: &Tensor, to: DType, keep: bool) -> KResult {
    let data = match (&x.data, to) {
        (Data::F(v), t) if t.is_float() => Data::F(v.iter().map(|&a| round_to(t, a, keep)).collect()),
        (Data::F(v), t) if t.is_int() => Data::I(v.iter().map(|&a| wrap_int(t, a.trunc() as i64)).collect()),
        (Data::F(v), _) => Data::B(v.iter().map(|&a| a != 0.0).collect()),
        (Data::I(v), t) if t.is_float() => Data::F(v.iter().map(|&a| round_to(t, a as f64, keep)).collect()),
        (Data::I(v), t) if t.is_int() => Data::I(v.iter().map(|&a| wrap_int(t, a)).collect()),
        (Data::I(v), _) => Data::B(v.iter().map(|&a| a != 0).collect()),
        (Data::B(v), t) if t.is_float() => Data::F(v.iter().map(|&a| a as u8 as f64).collect()),
        (Data::B(v), t) if t.is_int() => Data::I(v.iter().map(|&a| a as i64).collect()),
        (Data::B(v), _) => Data::B(v.clone()),
    };
    Ok(Tensor { dtype: to, shape: x.shape.clone(), data })
}

pub fn reduce(op: ReduceOp, x: &Tensor, axes: &[usize], keep_dims: bool, keep: bool) -> KResult {
    let kshape: Vec<usize> = x.shape.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect();
    let oshape: Vec<usize> = if keep_dims {
        kshape.clone()
    } else {
        x.shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
    };
    let on: usize = kshape.iter().product();
    let count: usize = axes.iter().map(|&a| x.shape[a]).product();
    let ks = strides(&kshape);
    let xs = strides(&x.shape);
    let out_index = |f: usize| -> usize {
        let mut o = 0;
        for j in 0..x.shape.len() {
            if !axes.contains(&j) {
                o += ((f / xs[j]) % x.shape[j]) * ks[j];
            }
        }
        o
    };
    match &x.data {
        Data::F(v) => {
            let init = match op {
                ReduceOp::Sum | ReduceOp::Mean => 0.0,
                ReduceOp::Max => f64::NEG_INFINITY,
                ReduceOp::Min => f64::INFINITY,
            };
            let mut acc = vec![init; on];
            for (f, &a) in v.iter().enumerate() {
                let o = out_index(f);
                acc[o] = match op {
                    ReduceOp::Sum | ReduceOp::Mean => acc[o] + a,
                    ReduceOp::Max => acc[o].max(a),
                    ReduceOp::Min => acc[o].min(a),
                };
            }
            if op == ReduceOp::Mean {
                acc.iter_mut().for_each(|a| *a /= count as f64);
            }
            Ok(make_float(x.dtype, oshape, acc, keep))
        }
        Data::I(v) => {
            let init = match op {
                ReduceOp::Sum | ReduceOp::Mean => 0,
                ReduceOp::Max => i64::MIN,
                ReduceOp::Min => i64::MAX,
            };
            let mut acc = vec![init; on];
            for (f, &a) in v.iter().enumerate() {
                let o = out_index(f);
                acc[o] = match op {
                    ReduceOp::Sum | ReduceOp::Mean => acc[o].wrapping_add(a),
                    ReduceOp::Max => acc[o].max(a),
                    ReduceOp::Min => acc[o].min(a),
                };
            }
            Ok(Tensor { dtype: x.dtype, shape: oshape, data: Data::I(acc.into_iter().map(|a| wrap_int(x.dtype, a)).collect()) })
        }
        Data::B(_) => Err("reduce over bool".into()),
    }
}

/// (outer, len, inner) decomposition around `axis`.
fn around(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}

pub fn softmax(x: &Tensor, axis: usize, keep: bool) -> KResult {
    let v = x.floats()?;
    let (o, n, i) = around(&x.shape, axis);
    let mut out = vec![0.0; v.len()];
    for a in 0..o {
        for c in 0..i {
            let at = |k: usize| a * n * i + k * i + c;
            let m = (0..n).map(|k| v[at(k)]).fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = (0..n).map(|k| (v[at(k)] - m).exp()).sum();
            for k in 0..n {
                out[at(k)] = (v[at(k)] - m).exp() / s;
            }
        }
    }
    Ok(make_float(x.dtype, x.shape.clone(), out, keep))
}

pub fn layer_norm(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f64, rms: bool, keep: bool) -> KResult {
    let v = x.floats()?;
    let d = *x.shape.last().ok_or("norm of a scalar")?;
    let w = w.map(|t| t.floats()).transpose()?;
    let b = b.map(|t| t.floats()).transpose()?;
    let mut out = vec![0.0; v.len()];
    for (row, o) in v.chunks(d.max(1)).zip(out.chunks_mut(d.max(1))) {
        let mean = if rms { 0.0 } else { row.iter().sum::<f64>() / d as f64 };
        let var = row.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for k in 0..d {
            let mut y = (row[k] - mean) * inv;
            if let Some(w) = w {
                y *= w[k];
            }
            if let Some(b) = b {
                y += b[k];
            }
            o[k] = y;
        }
    }
    Ok(make_float(x.dtype, x.shape.clone(), out, keep))
}

pub fn group_norm(x: &Tensor, wb: Option<(&Tensor, &Tensor)>, groups: usize, eps: f64, keep: bool) -> KResult {
    let v = x.floats()?;
    let (n, c) = (x.shape[0], x.shape[1]);
    if c % groups != 0 {
        return Err(format!("{c} channels do not split into {groups} groups"));
    }
    let sp: usize = x.shape[2..].iter().product();
    let cg = c / groups;
    let (w, b) = match wb {
        Some((w, b)) => (Some(w.floats()?), Some(b.floats()?)),
        None => (None, None),
    };
    let mut out = vec![0.0; v.len()];
    for s in 0..n {
        for g in 0..groups {
            let base = s * c * sp + g * cg * sp;
            let seg = &v[base..base + cg * sp];
            let m = seg.iter().sum::<f64>() / seg.len() as f64;
            let var = seg.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / seg.len() as f64;
            let inv = 1.0 / (var + eps).sqrt();
            for ch in 0..cg {
                let cc = g * cg + ch;
                for p in 0..sp {
                    let f = base + ch * sp + p;
                    let mut y = (v[f] - m) * inv;
                    if let (Some(w), Some(b)) = (w, b) {
                        y = y * w[cc] + b[cc];
                    }
                    out[f] = y;
                }
            }
        }
    }
    Ok(make_float(x.dtype, x.shape.clone(), out, keep))
}

pub fn matmul(a: &Tensor, b: &Tensor, keep: bool) -> KResult {
    let (ra, rb) = (a.shape.len(), b.shape.len());
    let (m, k) = (a.shape[ra - 2], a.shape[ra - 1]);
    let (k2, n) = (b.shape[rb - 2], b.shape[rb - 1]);
    if k != k2 {
        return Err(format!("matmul contraction {k} vs {k2}"));
    }
    let batch = broadcast_shape(&a.shape[..ra - 2], &b.shape[..rb - 2])?;
    let ia = bcast_index(&a.shape[..ra - 2], &batch);
    let ib = bcast_index(&b.shape[..rb - 2], &batch);
    let (x, y) = (a.floats()?, b.floats()?);
    let mut out = vec![0.0; ia.len() * m * n];
    for (bi, (&pa, &pb)) in ia.iter().zip(&ib).enumerate() {
        let xa = &x[pa * m * k..(pa + 1) * m * k];
        let yb = &y[pb * k * n..(pb + 1) * k * n];
        let o = &mut out[bi * m * n..(bi + 1) * m * n];
        for i in 0..m {
            for kk in 0..k {
                let s = xa[i * k + kk];
                for j in 0..n {
                    o[i * n + j] += s * yb[kk * n + j];
                }
            }
        }
    }
    let mut shape = batch;
    shape.push(m);
    shape.push(n);
    Ok(make_float(a.dtype, shape, out, keep))
}

pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, keep: bool) -> KResult {
    let k = *x.shape.last().ok_or("linear of a scalar")?;
    let (n, k2) = (w.shape[0], w.shape[1]);
    if k != k2 {
        return Err(format!("linear: input K = {k}, weight K = {k2}"));
    }
    let (xv, wv) = (x.floats()?, w.floats()?);
    let bv = b.map(|t| t.floats()).transpose()?;
    let rows = xv.len().checked_div(k).unwrap_or_else(|| x.shape[..x.shape.len() - 1].iter().product());
    let mut out = vec![0.0; rows * n];
    for r in 0..rows {
        let xr = &xv[r * k..(r + 1) * k];
        for j in 0..n {
            let wr = &wv[j * k..(j + 1) * k];
            let mut s: f64 = xr.iter().zip(wr).map(|(p, q)| p * q).sum();
            if let Some(bv) = bv {
                s += bv[j];
            }
            out[r * n + j] = s;
        }
    }
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("rank ≥ 1") = n;
    Ok(make_float(x.dtype, shape, out, keep))
}

pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scale: Option<f64>, causal: bool, keep: bool) -> KResult {
    let (bsz, h, sq, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
    let (hk, sk, dv) = (k.shape[1], k.shape[2], v.shape[3]);
    if hk == 0 || h % hk != 0 {
        return Err(format!("{h} query heads vs {hk} kv heads"));
    }
    let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
    let (qv, kv, vv) = (q.floats()?, k.floats()?, v.floats()?);
    let score_shape = [bsz, h, sq, sk];
    let mi = mask.map(|m| (bcast_index(&m.shape, &score_shape), m));
    let mut out = vec![0.0; bsz * h * sq * dv];
    let mut s = vec![0.0; sk];
    for b in 0..bsz {
        for hh in 0..h {
            let kh = hh / (h / hk);
            for i in 0..sq {
                let qr = &qv[((b * h + hh) * sq + i) * d..][..d];
                for j in 0..sk {
                    let kr = &kv[((b * hk + kh) * sk + j) * d..][..d];
                    let mut dot: f64 = qr.iter().zip(kr).map(|(x, y)| x * y).sum::<f64>() * scale;
                    if let Some((idx, m)) = &mi {
                        dot += m.floats()?[idx[((b * h + hh) * sq + i) * sk + j]];
                    }
                    if causal && j + sq > i + sk {
                        dot = f64::NEG_INFINITY;
                    }
                    s[j] = dot;
                }
                let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut z = 0.0;
                for x in s.iter_mut() {
                    *x = if mx == f64::NEG_INFINITY { 0.0 } else { (*x - mx).exp() };
                    z += *x;
                }
                let o = &mut out[((b * h + hh) * sq + i) * dv..][..dv];
                for j in 0..sk {
                    let p = if z > 0.0 { s[j] / z } else { 0.0 };
                    let vr = &vv[((b * hk + kh) * sk + j) * dv..][..dv];
                    for c in 0..dv {
                        o[c] += p * vr[c];
                    }
                }
            }
        }
    }
    Ok(make_float(q.dtype, vec![bsz, h, sq, dv], out, keep))
}

#[allow(clippy::too_many_arguments)]
pub fn conv(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: &[usize],
    padding: &[usize],
    dilation: &[usize],
    groups: usize,
    keep: bool,
) -> KResult {
    let sp = w.shape.len() - 2;
    let (n, cin) = (x.shape[0], x.shape[1]);
    let (cout, cin_g) = (w.shape[0], w.shape[1]);
    if cin_g * groups != cin || cout % groups != 0 {
        return Err(format!("conv channels: input {cin}, weight {:?}, groups {groups}", w.shape));
    }
    let ins = &x.shape[2..];
    let ks = &w.shape[2..];
    let mut outs = Vec::with_capacity(sp);
    for i in 0..sp {
        let span = dilation[i] * (ks[i] - 1) + 1;
        let padded = ins[i] + 2 * padding[i];
        if padded < span {
            return Err(format!("kernel larger than padded input on spatial axis {i}"));
        }
        outs.push((padded - span) / stride[i] + 1);
    }
    let (xv, wv) = (x.floats()?, w.floats()?);
    let bv = b.map(|t| t.floats()).transpose()?;
    let on: usize = outs.iter().product();
    let kn: usize = ks.iter().product();
    let in_n: usize = ins.iter().product();
    let (os, kst, is) = (strides(&outs), strides(ks), strides(ins));
    let cout_g = cout / groups;
    let mut out = vec![0.0; n * cout * on];
    let mut pos = vec![0usize; sp];
    let mut kpos = vec![0usize; sp];
    for s in 0..n {
        for o in 0..cout {
            let g = o / cout_g;
            for p in 0..on {
                for i in 0..sp {
                    pos[i] = (p / os[i]) % outs[i];
                }
                let mut acc = bv.map(|b| b[o]).unwrap_or(0.0);
                for c in 0..cin_g {
                    let ci = g * cin_g + c;
                    let xbase = (s * cin + ci) * in_n;
                    let wbase = (o * cin_g + c) * kn;
                    'k: for kk in 0..kn {
                        let mut xi = 0usize;
                        for i in 0..sp {
                            kpos[i] = (kk / kst[i]) % ks[i];
                            let coord = (pos[i] * stride[i] + kpos[i] * dilation[i]) as isize - padding[i] as isize;
                            if coord < 0 || coord as usize >= ins[i] {
                                continue 'k;
                            }
                            xi += coord as usize * is[i];
                        }
                        acc += xv[xbase + xi] * wv[wbase + kk];
                    }
                }
                out[(s * cout + o) * on + p] = acc;
            }
        }
    }
    let mut shape = vec![n, cout];
    shape.extend(outs);
    Ok(make_float(x.dtype, shape, out, keep))
}

pub fn upsample_nearest(x: &Tensor, scale: &[usize]) -> KResult {
    let mut shape = x.shape.clone();
    for (i, &f) in scale.iter().enumerate() {
        shape[2 + i] *= f;
    }
    let os = strides(&shape);
    let xs = strides(&x.shape);
    let n: usize = shape.iter().product();
    let idx: Vec<usize> = (0..n)
        .map(|f| {
            let mut xi = 0;
            for j in 0..shape.len() {
                let mut c = (f / os[j]) % shape[j];
                if j >= 2 {
                    c /= scale[j - 2];
                }
                xi += c * xs[j];
            }
            xi
        })
        .collect();
    Ok(gather_flat(x, shape, &idx))
}

pub fn pad(x: &Tensor, pads: &[(usize, usize)], value: f64) -> KResult {
    let shape: Vec<usize> = x.shape.iter().zip(pads).map(|(d, (a, b))| d + a + b).collect();
    let os = strides(&shape);
    let xs = strides(&x.shape);
    let n: usize = shape.iter().product();
    let mut src: Vec<Option<usize>> = Vec::with_capacity(n);
    for f in 0..n {
        let mut xi = Some(0usize);
        for j in 0..shape.len() {
            let c = (f / os[j]) % shape[j];
            if c < pads[j].0 || c >= pads[j].0 + x.shape[j] {
                xi = None;
                break;
            }
            xi = xi.map(|v| v + (c - pads[j].0) * xs[j]);
        }
        src.push(xi);
    }
    let data = match &x.data {
        Data::F(v) => Data::F(src.iter().map(|s| s.map_or(value, |i| v[i])).collect()),
        Data::I(v) => Data::I(src.iter().map(|s| s.map_or(value as i64, |i| v[i])).collect()),
        Data::B(v) => Data::B(src.iter().map(|s| s.map_or(value != 0.0, |i| v[i])).collect()),
    };
    Ok(Tensor { dtype: x.dtype, shape, data })
}

pub fn transpose(x: &Tensor, perm: &[usize]) -> KResult {
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let os = strides(&shape);
    let xs = strides(&x.shape);
    let n: usize = shape.iter().product();
    let idx: Vec<usize> = (0..n)
        .map(|f| perm.iter().enumerate().map(|(j, &p)| ((f / os[j]) % shape[j]) * xs[p]).sum())
        .collect();
    Ok(gather_flat(x, shape, &idx))
}

pub fn expand(x: &Tensor, shape: Vec<usize>) -> KResult {
    let b = broadcast_shape(&x.shape, &shape)?;
    if b != shape {
        return Err(format!("cannot expand {:?} to {shape:?}", x.shape));
    }
    let idx = bcast_index(&x.shape, &shape);
    Ok(gather_flat(x, shape, &idx))
}

pub fn concat(xs: &[&Tensor], axis: usize) -> KResult {
    let first = xs[0];
    let mut shape = first.shape.clone();
    shape[axis] = xs.iter().map(|t| t.shape[axis]).sum();
    let (outer, _, inner) = around(&shape, axis);
    let mut parts: Vec<(usize, Vec<usize>)> = Vec::new(); // (tensor, flat indices)
    let mut idx: Vec<(usize, usize)> = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for (t, x) in xs.iter().enumerate() {
            let len = x.shape[axis];
            for k in 0..len * inner {
                idx.push((t, o * len * inner + k));
            }
        }
    }
    parts.clear();
    let data = match &first.data {
        Data::F(_) => Data::F(idx.iter().map(|&(t, i)| xs[t].floats().map(|v| v[i])).collect::<Result<_, _>>()?),
        Data::I(_) => Data::I(idx.iter().map(|&(t, i)| xs[t].ints().map(|v| v[i])).collect::<Result<_, _>>()?),
        Data::B(_) => Data::B(idx.iter().map(|&(t, i)| xs[t].bools().map(|v| v[i])).collect::<Result<_, _>>()?),
    };
    Ok(Tensor { dtype: first.dtype, shape, data })
}

pub fn slice(x: &Tensor, axis: usize, start: usize, end: usize) -> KResult {
    if start > end || end > x.shape[axis] {
        return Err(format!("slice {start}..{end} out of bounds for axis {axis} of {:?}", x.shape));
    }
    let (outer, len, inner) = around(&x.shape, axis);
    let mut idx = Vec::with_capacity(outer * (end - start) * inner);
    for o in 0..outer {
        for k in start..end {
            for i in 0..inner {
                idx.push((o * len + k) * inner + i);
            }
        }
    }
    let mut shape = x.shape.clone();
    shape[axis] = end - start;
    Ok(gather_flat(x, shape, &idx))
}

pub fn gather(x: &Tensor, ind: &Tensor, axis: usize) -> KResult {
    let iv = ind.ints()?;
    let (outer, len, inner) = around(&x.shape, axis);
    let mut idx = Vec::with_capacity(outer * iv.len() * inner);
    for o in 0..outer {
        for &j0 in iv {
            let j = if j0 < 0 { j0 + len as i64 } else { j0 };
            if j < 0 || j as usize >= len {
                return Err(format!("gather index {j0} out of range for axis {axis} of length {len}"));
            }
            for i in 0..inner {
                idx.push((o * len + j as usize) * inner + i);
            }
        }
    }
    let mut shape = x.shape[..axis].to_vec();
    shape.extend(&ind.shape);
    shape.extend(&x.shape[axis + 1..]);
    Ok(gather_flat(x, shape, &idx))
}

pub fn topk(x: &Tensor, k: usize) -> Result<(Tensor, Tensor), String> {
    use std::cmp::Ordering;
    let n = *x.shape.last().ok_or("topk of a scalar")?;
    if k > n {
        return Err(format!("k = {k} > {n}"));
    }
    // A total order on elements: integers compare exactly (not through f64,
    // which merges values above 2^53); NaN is larger than every number (as
    // in PyTorch) and equal to NaN, so the sort never sees an inconsistent
    // comparison.
    let fcmp = |a: f64, b: f64| match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    };
    let cmp = |i: usize, j: usize| -> Ordering {
        match &x.data {
            Data::F(v) => fcmp(v[i], v[j]),
            Data::I(v) => v[i].cmp(&v[j]),
            Data::B(v) => v[i].cmp(&v[j]),
        }
    };
    let rows = x.data.len().checked_div(n).unwrap_or(0);
    let mut sel = Vec::with_capacity(rows * k);
    for r in 0..rows {
        let mut ord: Vec<usize> = (0..n).collect();
        ord.sort_by(|&a, &b| cmp(r * n + b, r * n + a).then(a.cmp(&b)));
        sel.extend(ord[..k].iter().map(|&j| (r * n + j, j as i64)));
    }
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("rank ≥ 1") = k;
    let flat: Vec<usize> = sel.iter().map(|s| s.0).collect();
    let vals = gather_flat(x, shape.clone(), &flat);
    let inds = Tensor::from_i64(DType::I64, &shape, sel.iter().map(|s| s.1).collect());
    Ok((vals, inds))
}
