//! Type and shape inference: the result types of an op from its operand
//! types. Messages name operands by position and show their shapes; the
//! verifier adds the op and value names.

use crate::dtype::DType;
use crate::op::{Op, TensorType};
use crate::shape::{broadcast, shape_str, Dim, Shape};

fn s(t: &TensorType) -> String {
    shape_str(&t.shape)
}

fn need_float(t: &TensorType, what: &str) -> Result<(), String> {
    if t.dtype.is_float() {
        Ok(())
    } else {
        Err(format!("{what} must be a float tensor, found {t}"))
    }
}

fn same_dtype(a: &TensorType, b: &TensorType, what: &str) -> Result<(), String> {
    if a.dtype == b.dtype {
        Ok(())
    } else {
        Err(format!("{what}: dtypes differ ({} vs {})", a.dtype, b.dtype))
    }
}

fn check_axis(axis: usize, rank: usize, what: &str) -> Result<(), String> {
    if axis < rank {
        Ok(())
    } else {
        Err(format!("{what} axis {axis} out of range for rank {rank}"))
    }
}

fn bcast(a: &TensorType, b: &TensorType) -> Result<Shape, String> {
    broadcast(&a.shape, &b.shape).ok_or_else(|| format!("shapes {} and {} do not broadcast", s(a), s(b)))
}

/// Last-axis parameter vector check for norms (`w` of shape `[D]`).
fn check_vec(x: &TensorType, p: &TensorType, what: &str) -> Result<(), String> {
    let d = x.shape.last().ok_or_else(|| format!("{what}: operand 0 must have rank ≥ 1"))?;
    if p.shape.len() != 1 || &p.shape[0] != d {
        return Err(format!("{what} has shape {} but operand 0 {} needs [{d}]", s(p), s(x)));
    }
    same_dtype(x, p, what)
}

/// Result types of `op` applied to operands of types `ins`.
pub fn infer(op: &Op, ins: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    let (lo, hi) = op.arity();
    if ins.len() < lo || ins.len() > hi {
        let want = if lo == hi { format!("{lo}") } else if hi == usize::MAX { format!("at least {lo}") } else { format!("{lo} to {hi}") };
        return Err(format!("expects {want} operands, got {}", ins.len()));
    }
    let one = |t: TensorType| Ok(vec![t]);
    match op {
        Op::Input { ty, .. } | Op::Param { ty, .. } => one(ty.clone()),
        Op::Constant(lit) => {
            let n: usize = lit.shape.iter().product();
            if n != lit.values.len() {
                return Err(format!("literal of shape {:?} needs {n} values, has {}", lit.shape, lit.values.len()));
            }
            one(TensorType::new(lit.dtype, lit.shape.iter().map(|&d| Dim::from(d)).collect()))
        }
        Op::Iota { len, dtype } => {
            if *dtype == DType::Bool {
                return Err("iota cannot produce bool".into());
            }
            one(TensorType::new(*dtype, vec![len.clone()]))
        }
        Op::Unary(_) => {
            need_float(ins[0], "operand 0")?;
            one(ins[0].clone())
        }
        Op::Binary(_) => {
            same_dtype(ins[0], ins[1], "operands 0 and 1")?;
            if ins[0].dtype == DType::Bool {
                return Err("arithmetic on bool operands".into());
            }
            one(TensorType::new(ins[0].dtype, bcast(ins[0], ins[1])?))
        }
        Op::Compare(_) => {
            same_dtype(ins[0], ins[1], "operands 0 and 1")?;
            one(TensorType::new(DType::Bool, bcast(ins[0], ins[1])?))
        }
        Op::Where => {
            if ins[0].dtype != DType::Bool {
                return Err(format!("condition must be bool, found {}", ins[0]));
            }
            same_dtype(ins[1], ins[2], "operands 1 and 2")?;
            let sh = bcast(ins[1], ins[2])?;
            let sh = broadcast(&ins[0].shape, &sh)
                .ok_or_else(|| format!("condition {} does not broadcast with {}", s(ins[0]), shape_str(&sh)))?;
            one(TensorType::new(ins[1].dtype, sh))
        }
        Op::Cast(to) => one(TensorType::new(*to, ins[0].shape.clone())),
        Op::Reduce { op: rop, axes, keep_dims } => {
            let x = ins[0];
            if axes.is_empty() {
                return Err("reduce needs at least one axis".into());
            }
            for w in axes.windows(2) {
                if w[0] >= w[1] {
                    return Err(format!("reduce axes {axes:?} must be sorted and unique"));
                }
            }
            for &a in axes {
                check_axis(a, x.rank(), "reduce")?;
            }
            if x.dtype == DType::Bool {
                return Err(format!("cannot reduce a bool tensor, found {x}"));
            }
            if matches!(rop, crate::op::ReduceOp::Mean) {
                need_float(x, "mean operand")?;
            }
            let mut sh = Vec::new();
            for (i, d) in x.shape.iter().enumerate() {
                if axes.contains(&i) {
                    if *keep_dims {
                        sh.push(Dim::Const(1));
                    }
                } else {
                    sh.push(d.clone());
                }
            }
            one(TensorType::new(x.dtype, sh))
        }
        Op::Softmax { axis } => {
            need_float(ins[0], "operand 0")?;
            check_axis(*axis, ins[0].rank(), "softmax")?;
            one(ins[0].clone())
        }
        Op::LayerNorm { .. } | Op::RmsNorm { .. } => {
            need_float(ins[0], "operand 0")?;
            if ins[0].rank() == 0 {
                return Err("norm of a scalar".into());
            }
            for (i, p) in ins.iter().enumerate().skip(1) {
                check_vec(ins[0], p, &format!("operand {i}"))?;
            }
            one(ins[0].clone())
        }
        Op::GroupNorm { groups, .. } => {
            let x = ins[0];
            need_float(x, "operand 0")?;
            if x.rank() < 2 {
                return Err(format!("group_norm needs [N, C, ...], found {}", s(x)));
            }
            if *groups == 0 {
                return Err("group_norm with 0 groups".into());
            }
            if let Some(c) = x.shape[1].as_const() {
                if c % i64::try_from(*groups).map_err(|_| format!("groups {groups} too large"))? != 0 {
                    return Err(format!("{c} channels do not split into {groups} groups"));
                }
            }
            for (i, p) in ins.iter().enumerate().skip(1) {
                if p.shape.len() != 1 || p.shape[0] != x.shape[1] {
                    return Err(format!("operand {i} has shape {} but channels are [{}]", s(p), x.shape[1]));
                }
                same_dtype(x, p, &format!("operand {i}"))?;
            }
            one(x.clone())
        }
        Op::MatMul => {
            let (a, b) = (ins[0], ins[1]);
            same_dtype(a, b, "operands 0 and 1")?;
            if a.rank() < 2 || b.rank() < 2 {
                return Err(format!("matmul needs rank ≥ 2, found {} and {}", s(a), s(b)));
            }
            let (ra, rb) = (a.rank(), b.rank());
            if a.shape[ra - 1] != b.shape[rb - 2] {
                return Err(format!(
                    "contraction dims differ: {} · {} ({} vs {})",
                    s(a),
                    s(b),
                    a.shape[ra - 1],
                    b.shape[rb - 2]
                ));
            }
            let mut sh = broadcast(&a.shape[..ra - 2], &b.shape[..rb - 2])
                .ok_or_else(|| format!("batch dims of {} and {} do not broadcast", s(a), s(b)))?;
            sh.push(a.shape[ra - 2].clone());
            sh.push(b.shape[rb - 1].clone());
            one(TensorType::new(a.dtype, sh))
        }
        Op::Linear { bias } => {
            let (x, w) = (ins[0], ins[1]);
            need_float(x, "operand 0")?;
            same_dtype(x, w, "input and weight")?;
            if x.rank() < 1 || w.rank() != 2 {
                return Err(format!("linear needs x [*, K] and w [N, K], found {} and {}", s(x), s(w)));
            }
            let k = &x.shape[x.rank() - 1];
            if &w.shape[1] != k {
                return Err(format!("input {} has K = {k} but weight {} has K = {}", s(x), s(w), w.shape[1]));
            }
            if *bias {
                let b = ins[2];
                same_dtype(x, b, "input and bias")?;
                if b.shape.len() != 1 || b.shape[0] != w.shape[0] {
                    return Err(format!("bias {} does not match weight {} (needs [{}])", s(b), s(w), w.shape[0]));
                }
            }
            let mut sh = x.shape.clone();
            *sh.last_mut().expect("rank ≥ 1") = w.shape[0].clone();
            one(TensorType::new(x.dtype, sh))
        }
        Op::Attention { mask, .. } => {
            let (q, k, v) = (ins[0], ins[1], ins[2]);
            for (i, t) in [q, k, v].iter().enumerate() {
                need_float(t, &format!("operand {i}"))?;
                if t.rank() != 4 {
                    return Err(format!("operand {i} must be [B, H, S, D], found {}", s(t)));
                }
            }
            same_dtype(q, k, "q and k")?;
            same_dtype(q, v, "q and v")?;
            if q.shape[3] != k.shape[3] {
                return Err(format!("q {} and k {} differ in head dim", s(q), s(k)));
            }
            if k.shape[..3] != v.shape[..3] {
                return Err(format!("k {} and v {} differ in batch, heads or length", s(k), s(v)));
            }
            if q.shape[0] != k.shape[0] {
                return Err(format!("q {} and k {} differ in batch", s(q), s(k)));
            }
            match (q.shape[1].as_const(), k.shape[1].as_const()) {
                (Some(h), Some(hk)) if hk == 0 || h % hk != 0 => {
                    return Err(format!("q heads {h} not a multiple of kv heads {hk}"))
                }
                (None, _) | (_, None) if q.shape[1] != k.shape[1] => {
                    return Err(format!("symbolic head counts must match: q {} vs k {}", s(q), s(k)))
                }
                _ => {}
            }
            let out = vec![q.shape[0].clone(), q.shape[1].clone(), q.shape[2].clone(), v.shape[3].clone()];
            if *mask {
                let m = ins[3];
                need_float(m, "mask")?;
                let scores = vec![q.shape[0].clone(), q.shape[1].clone(), q.shape[2].clone(), k.shape[2].clone()];
                match broadcast(&m.shape, &scores) {
                    Some(b) if b == scores => {}
                    _ => return Err(format!("mask {} does not broadcast to scores {}", s(m), shape_str(&scores))),
                }
            }
            one(TensorType::new(q.dtype, out))
        }
        Op::Conv { stride, padding, dilation, groups, bias } => {
            let (x, w) = (ins[0], ins[1]);
            need_float(x, "operand 0")?;
            same_dtype(x, w, "input and weight")?;
            let sp = w.rank().saturating_sub(2);
            if !(sp == 2 || sp == 3) || x.rank() != w.rank() {
                return Err(format!("conv needs x [N, C, *S] and w [O, C/g, *K] with 2 or 3 spatial dims, found {} and {}", s(x), s(w)));
            }
            if stride.len() != sp || padding.len() != sp || dilation.len() != sp {
                return Err(format!("stride/padding/dilation need {sp} entries each"));
            }
            if *groups == 0 || stride.contains(&0) || dilation.contains(&0) {
                return Err("groups, stride and dilation must be positive".into());
            }
            let cin_g = &w.shape[1];
            let cin = cin_g.mul(&Dim::Const(*groups as i64));
            if x.shape[1] != cin {
                return Err(format!("input {} has {} channels but weight {} with groups={groups} needs {cin}", s(x), x.shape[1], s(w)));
            }
            if let Some(o) = w.shape[0].as_const() {
                if o % i64::try_from(*groups).map_err(|_| format!("groups {groups} too large"))? != 0 {
                    return Err(format!("{o} output channels do not split into {groups} groups"));
                }
            }
            if *bias {
                let b = ins[2];
                same_dtype(x, b, "input and bias")?;
                if b.shape.len() != 1 || b.shape[0] != w.shape[0] {
                    return Err(format!("bias {} does not match weight {}", s(b), s(w)));
                }
            }
            let mut sh = vec![x.shape[0].clone(), w.shape[0].clone()];
            for i in 0..sp {
                let k = w.shape[2 + i].as_const().ok_or("kernel size must be static")?;
                // Checked: sizes may come from untrusted text and must not panic.
                let overflow = || format!("conv sizes overflow i64 along spatial axis {i}");
                let (dil, pad, st) = (i64::try_from(dilation[i]), i64::try_from(padding[i]), i64::try_from(stride[i]));
                let (Ok(dil), Ok(pad), Ok(st)) = (dil, pad, st) else { return Err(overflow()) };
                let span = k.checked_sub(1).and_then(|k1| dil.checked_mul(k1)).and_then(|v| v.checked_add(1)).ok_or_else(overflow)?;
                let delta = pad.checked_mul(2).and_then(|p2| p2.checked_sub(span)).ok_or_else(overflow)?;
                let n = x.shape[2 + i].add(&Dim::Const(delta));
                let d = if st == 1 {
                    n.add(&Dim::Const(1))
                } else if let Some(nv) = n.as_const() {
                    if nv < 0 {
                        return Err(format!("kernel larger than padded input along spatial axis {i}"));
                    }
                    Dim::Const(nv / st + 1)
                } else {
                    // (n + 2p - span)/s + 1 written as (n + 2p - span + s)/s, so a
                    // patchify conv (k = s, p = 0) gives the plain `n/s`.
                    n.add(&Dim::Const(st)).div(st)
                };
                if let Some(v) = d.as_const() {
                    if v <= 0 {
                        return Err(format!("kernel larger than padded input along spatial axis {i}"));
                    }
                }
                sh.push(d);
            }
            one(TensorType::new(x.dtype, sh))
        }
        Op::UpsampleNearest { scale } => {
            let x = ins[0];
            if x.rank() != scale.len() + 2 {
                return Err(format!("upsample with {} scales needs rank {}, found {}", scale.len(), scale.len() + 2, s(x)));
            }
            let mut sh = x.shape.clone();
            for (i, &f) in scale.iter().enumerate() {
                if f == 0 {
                    return Err("upsample scale 0".into());
                }
                sh[2 + i] = sh[2 + i].mul(&Dim::Const(f as i64));
            }
            one(TensorType::new(x.dtype, sh))
        }
        Op::Pad { pads, .. } => {
            let x = ins[0];
            if pads.len() != x.rank() {
                return Err(format!("pad has {} entries for rank-{} operand {}", pads.len(), x.rank(), s(x)));
            }
            let sh = x
                .shape
                .iter()
                .zip(pads)
                .map(|(d, (a, b))| {
                    let n = a.checked_add(*b).and_then(|n| i64::try_from(n).ok());
                    n.map(|n| d.add(&Dim::Const(n))).ok_or_else(|| format!("padding {a}+{b} overflows i64"))
                })
                .collect::<Result<_, _>>()?;
            one(TensorType::new(x.dtype, sh))
        }
        Op::Reshape { shape } => {
            let x = ins[0];
            let a = Dim::product(&x.shape);
            let b = Dim::product(shape);
            if a != b {
                return Err(format!("cannot reshape {} ({a} elements) to {} ({b} elements)", s(x), shape_str(shape)));
            }
            one(TensorType::new(x.dtype, shape.clone()))
        }
        Op::Transpose { perm } => {
            let x = ins[0];
            let mut seen = vec![false; x.rank()];
            if perm.len() != x.rank() {
                return Err(format!("permutation {perm:?} for rank-{} operand {}", x.rank(), s(x)));
            }
            for &p in perm {
                if p >= x.rank() || seen[p] {
                    return Err(format!("{perm:?} is not a permutation of 0..{}", x.rank()));
                }
                seen[p] = true;
            }
            one(TensorType::new(x.dtype, perm.iter().map(|&p| x.shape[p].clone()).collect()))
        }
        Op::Expand { shape } => {
            let x = ins[0];
            match broadcast(&x.shape, shape) {
                Some(b) if &b == shape => one(TensorType::new(x.dtype, shape.clone())),
                _ => Err(format!("cannot expand {} to {}", s(x), shape_str(shape))),
            }
        }
        Op::Concat { axis } => {
            let x = ins[0];
            check_axis(*axis, x.rank(), "concat")?;
            let mut len = Dim::Const(0);
            for (i, t) in ins.iter().enumerate() {
                same_dtype(x, t, &format!("operand {i}"))?;
                if t.rank() != x.rank() {
                    return Err(format!("operand {i} {} has a different rank than operand 0 {}", s(t), s(x)));
                }
                for (j, (a, b)) in x.shape.iter().zip(&t.shape).enumerate() {
                    if j != *axis && a != b {
                        return Err(format!("operand {i} {} differs from operand 0 {} on axis {j}", s(t), s(x)));
                    }
                }
                len = len.add(&t.shape[*axis]);
            }
            let mut sh = x.shape.clone();
            sh[*axis] = len;
            one(TensorType::new(x.dtype, sh))
        }
        Op::Split { axis, sizes } => {
            let x = ins[0];
            check_axis(*axis, x.rank(), "split")?;
            if sizes.is_empty() {
                return Err("split into zero pieces".into());
            }
            let total = sizes.iter().fold(Dim::Const(0), |a, d| a.add(d));
            if total != x.shape[*axis] {
                return Err(format!("split sizes sum to {total} but axis {axis} of {} is {}", s(x), x.shape[*axis]));
            }
            Ok(sizes
                .iter()
                .map(|d| {
                    let mut sh = x.shape.clone();
                    sh[*axis] = d.clone();
                    TensorType::new(x.dtype, sh)
                })
                .collect())
        }
        Op::Slice { axis, start, end } => {
            let x = ins[0];
            check_axis(*axis, x.rank(), "slice")?;
            if let (Some(a), Some(b)) = (start.as_const(), end.as_const()) {
                if a < 0 || b < a {
                    return Err(format!("slice {a}..{b} is empty or reversed"));
                }
                if let Some(n) = x.shape[*axis].as_const() {
                    if b > n {
                        return Err(format!("slice {a}..{b} out of bounds for axis {axis} of {}", s(x)));
                    }
                }
            }
            let mut sh = x.shape.clone();
            sh[*axis] = end.sub(start);
            one(TensorType::new(x.dtype, sh))
        }
        Op::Gather { axis } => {
            let (x, idx) = (ins[0], ins[1]);
            check_axis(*axis, x.rank(), "gather")?;
            if !idx.dtype.is_int() {
                return Err(format!("indices must be integer, found {idx}"));
            }
            let mut sh: Shape = x.shape[..*axis].to_vec();
            sh.extend(idx.shape.iter().cloned());
            sh.extend(x.shape[*axis + 1..].iter().cloned());
            one(TensorType::new(x.dtype, sh))
        }
        Op::TopK { k } => {
            let x = ins[0];
            if x.rank() == 0 {
                return Err("topk of a scalar".into());
            }
            if *k == 0 {
                return Err(format!("k = 0 for topk of {}", s(x)));
            }
            if let Some(n) = x.shape[x.rank() - 1].as_const() {
                if *k as i64 > n || *k == 0 {
                    return Err(format!("k = {k} out of range for last axis of {}", s(x)));
                }
            }
            let mut sh = x.shape.clone();
            *sh.last_mut().expect("rank ≥ 1") = Dim::Const(*k as i64);
            Ok(vec![TensorType::new(x.dtype, sh.clone()), TensorType::new(DType::I64, sh)])
        }
        Op::Moe { top_k, .. } => infer_moe(*top_k, ins),
    }
}

/// `moe`: `(x [T, H], logits [T, E], w_gate [E, I, H], w_up [E, I, H], w_down [E, H, I]) → [T, H]`.
fn infer_moe(top_k: usize, ins: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    let names = ["x", "logits", "w_gate", "w_up", "w_down"];
    let ranks = [2, 2, 3, 3, 3];
    for (i, t) in ins.iter().enumerate() {
        need_float(t, names[i])?;
        same_dtype(ins[0], t, &format!("x and {}", names[i]))?;
        if t.rank() != ranks[i] {
            return Err(format!("{} must have rank {}, found {}", names[i], ranks[i], s(t)));
        }
    }
    let (x, logits, wg, wu, wd) = (ins[0], ins[1], ins[2], ins[3], ins[4]);
    let (t, h, e, inner) = (&x.shape[0], &x.shape[1], &logits.shape[1], &wg.shape[1]);
    if &logits.shape[0] != t {
        return Err(format!("logits {} and x {} differ in token count", s(logits), s(x)));
    }
    let want_up = vec![e.clone(), inner.clone(), h.clone()];
    if wg.shape != want_up || wu.shape != want_up {
        return Err(format!("w_gate {} and w_up {} must both be [E, I, H] = {} for x {} and logits {}", s(wg), s(wu), shape_str(&want_up), s(x), s(logits)));
    }
    let want_down = vec![e.clone(), h.clone(), inner.clone()];
    if wd.shape != want_down {
        return Err(format!("w_down {} must be [E, H, I] = {}", s(wd), shape_str(&want_down)));
    }
    if top_k == 0 {
        return Err("moe with top_k = 0".into());
    }
    if let Some(n) = e.as_const() {
        if top_k as i64 > n {
            return Err(format!("top_k = {top_k} exceeds the {n} experts of logits {}", s(logits)));
        }
    }
    Ok(vec![TensorType::new(x.dtype, vec![t.clone(), h.clone()])])
}
