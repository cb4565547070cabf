//! Fused elementwise generics.
//!
//! A lazy value (unary, binary, compare, where, cast, expand, iota) becomes
//! a tensor only when something that is not elementwise reads it or it is a
//! kernel result. Then one `linalg.generic` over its shape computes it
//! together with every other needed lazy value of the same shape whose
//! inputs are available: the body evaluates the DAG of lazy ops under them
//! per element, reading materialised tensors (arguments, results of other
//! ops, earlier generics) through broadcasting indexing maps and inlining
//! one-element literals as constants. Because elementwise ops commute with
//! broadcasting, a value of shape `[4, 1]` under one of shape `[4, 8]` is
//! simply recomputed per column; a lazy value already materialised is read
//! back instead of recomputed.

use super::{broadcast_map, identity_map, scalar, storage, Ct, Func, Operand, TVal, Val, S};
use crate::error::Result;
use omnic_ir::{Op, ValueRef};
use petgraph::stable_graph::NodeIndex;
use std::collections::{HashMap, HashSet};

/// Whether every non-lazy input under lazy value `v` is available.
fn computable(f: &Func, v: ValueRef, seen: &mut HashSet<NodeIndex>) -> bool {
    if !seen.insert(v.node) {
        return true;
    }
    f.g.operands(v.node).into_iter().all(|u| match f.env.get(&u) {
        Some(Val::Lazy) => computable(f, u, seen),
        Some(_) => true,
        None => false,
    })
}

/// Compute lazy value `v` (and its needed same-shape companions) with one
/// generic; afterwards they are tensors in the environment.
pub(super) fn materialize(f: &mut Func, v: ValueRef) -> Result<()> {
    let ty = f.ty(v)?;
    let shape = ty.shape.clone();
    let pos = |f: &Func, n: NodeIndex| f.pos.get(&n).copied().unwrap_or(usize::MAX);
    let mut outs = vec![v];
    let mut cands: Vec<ValueRef> = f.need.iter().copied().filter(|w| *w != v && matches!(f.env.get(w), Some(Val::Lazy))).collect();
    cands.sort_by_key(|w| (pos(f, w.node), w.port));
    for w in cands {
        if f.ty(w)?.shape == shape && computable(f, w, &mut HashSet::new()) {
            outs.push(w);
        }
    }
    outs.sort_by_key(|w| (pos(f, w.node), w.port));

    // The lazy DAG under the outputs and its tensor leaves.
    let mut lazy: Vec<NodeIndex> = Vec::new();
    let mut leaves: Vec<(ValueRef, TVal)> = Vec::new();
    let mut seen: HashSet<NodeIndex> = HashSet::new();
    let mut stack: Vec<NodeIndex> = outs.iter().map(|w| w.node).collect();
    while let Some(n) = stack.pop() {
        if !seen.insert(n) {
            continue;
        }
        lazy.push(n);
        for u in f.g.operands(n) {
            match f.env.get(&u) {
                Some(Val::Lazy) => stack.push(u.node),
                Some(Val::Tensor(t)) => {
                    if !leaves.iter().any(|(l, _)| *l == u) {
                        leaves.push((u, t.clone()));
                    }
                }
                Some(Val::Scalar(_)) => {}
                None => return Err(f.internal(format!("operand of node {} is not available", n.index()))),
            }
        }
    }
    lazy.sort_by_key(|&n| pos(f, n));
    leaves.sort_by_key(|(l, _)| (pos(f, l.node), l.port));

    let rank = shape.len();
    let mut ins = Vec::with_capacity(leaves.len());
    for (_, t) in &leaves {
        let m = broadcast_map(&t.ty.shape, &shape).ok_or_else(|| f.internal(format!("operand of shape {:?} does not broadcast to {:?}", t.ty.shape, shape)))?;
        ins.push(Operand::new(t, m));
    }
    let mut outs_ops = Vec::with_capacity(outs.len());
    for &w in &outs {
        let wt = f.ty(w)?;
        let e = f.empty(&shape, storage(wt.dtype))?;
        outs_ops.push(Operand::new(&TVal { ssa: e, ty: wt }, identity_map(rank)));
    }

    let block = f.begin_body(ins.len() + outs_ops.len())?;
    let mut vals: HashMap<ValueRef, S> = HashMap::new();
    for ((l, t), arg) in leaves.iter().zip(&block) {
        let s = scalar::load(f, arg, t.ty.dtype);
        vals.insert(*l, s);
    }
    for &n in &lazy {
        let s = compute(f, n, &vals, &shape)?;
        vals.insert(ValueRef::new(n, 0), s);
    }
    let mut yields = Vec::with_capacity(outs.len());
    for &w in &outs {
        let s = vals.get(&w).cloned().ok_or_else(|| f.internal("output not computed"))?;
        let dt = f.ty(w)?.dtype;
        yields.push(scalar::store(f, &s, dt)?);
    }
    let results = f.end_generic(rank, &vec![true; rank], &ins, &outs_ops, &block, &yields)?;
    for (w, r) in outs.into_iter().zip(results) {
        let wt = f.ty(w)?;
        f.env.insert(w, Val::Tensor(TVal { ssa: r, ty: wt }));
    }
    Ok(())
}

/// The operand's compute value: computed earlier in the body, a leaf, or
/// an inlined literal.
fn operand(f: &mut Func, u: ValueRef, vals: &HashMap<ValueRef, S>) -> Result<S> {
    if let Some(s) = vals.get(&u) {
        return Ok(s.clone());
    }
    match f.env.get(&u) {
        Some(Val::Scalar(x)) => {
            let x = *x;
            let dt = f.ty(u)?.dtype;
            Ok(match super::compute(dt) {
                Ct::F32 => f.cf(Ct::F32, x),
                t => f.ci(t, x as i64),
            })
        }
        _ => Err(f.internal(format!("operand of node {} not computed", u.node.index()))),
    }
}

/// One lazy node on scalars.
fn compute(f: &mut Func, n: NodeIndex, vals: &HashMap<ValueRef, S>, shape: &[omnic_ir::Dim]) -> Result<S> {
    let g = f.g;
    let node = g.node(n);
    let dt = node.outputs.first().map(|t| t.dtype).ok_or_else(|| f.internal("lazy node without a result"))?;
    let operands = g.operands(n);
    let mut xs = Vec::with_capacity(operands.len());
    for &u in &operands {
        xs.push(operand(f, u, vals)?);
    }
    let in_dt = |i: usize| g.value_type(operands[i]).map(|t| t.dtype);
    Ok(match (&node.op, xs.as_slice()) {
        (Op::Unary(u), [x]) => {
            let y = scalar::unary(f, *u, x);
            scalar::round(f, y, dt)
        }
        (Op::Binary(b), [x, y]) => {
            let z = scalar::binary(f, *b, x, y);
            scalar::round(f, z, dt)
        }
        (Op::Compare(c), [x, y]) => scalar::compare(f, *c, x, y),
        (Op::Where, [c, a, b]) => scalar::select(f, c, a, b),
        (Op::Cast(to), [x]) => scalar::cast(f, x, in_dt(0)?, *to),
        (Op::Expand { .. }, [x]) => x.clone(),
        (Op::Iota { len, .. }, []) => {
            // Rank 1: aligned with the last loop, or index 0 when broadcast.
            let rank = shape.len();
            let i = if rank > 0 && shape[rank - 1] == *len {
                f.v(Ct::Index, format!("linalg.index {} : index", rank - 1))
            } else {
                S { v: f.idx(0), t: Ct::Index }
            };
            let i64v = f.v(Ct::I64, format!("arith.index_cast {} : index to i64", i.v));
            match super::compute(dt) {
                Ct::F32 => {
                    let x = f.v(Ct::F32, format!("arith.sitofp {} : i64 to f32", i64v.v));
                    scalar::round(f, x, dt)
                }
                Ct::I32 => f.v(Ct::I32, format!("arith.trunci {} : i64 to i32", i64v.v)),
                _ => i64v,
            }
        }
        (op, _) => return Err(f.internal(format!("`{}` in an elementwise generic", op.mnemonic()))),
    })
}
