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
//!
//! Lazy views ([`view`]) make the DAG position-dependent: every value is
//! evaluated at coordinates (linear expressions of the loops), memoised per
//! (value, coordinates). A first walk collects the operand reads and may
//! refine the iteration space (one loop becomes two); then the body is
//! emitted. Reads with linear coordinates are `ins` operands (a slice of
//! the operand where a coordinate is one loop plus an offset, so that its
//! size along that loop is the loop's extent); non-linear ones are
//! `tensor.extract`s. With a refined space the results are computed in the
//! finer shape and collapsed (written through an expanded result buffer
//! when they are kernel results).

use super::view::{self, Ix, Lin, Source, Space};
use super::{identity_map, scalar, storage, Ct, Func, Operand, TVal, Val, S};
use crate::error::Result;
use omnic_ir::{Dim, Op, ValueRef};
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

/// A value at coordinates (memo key of the body).
type At = (ValueRef, Vec<Ix>);

/// Coordinates of operand `u` (shape `us`) of a node of shape `ns` read at
/// `idx` (NumPy broadcasting: a size-1 dimension reads index 0).
fn broadcast_ix(f: &Func, idx: &[Ix], ns: &[Dim], us: &[Dim]) -> Result<Vec<Ix>> {
    let (rn, ru) = (ns.len(), us.len());
    if ru > rn || idx.len() != rn {
        return Err(f.internal(format!("operand of shape {us:?} does not broadcast to {ns:?}")));
    }
    let mut c = Vec::with_capacity(ru);
    for (i, d) in us.iter().enumerate() {
        let j = rn - ru + i;
        if *d == ns[j] || super::simplify(d) == super::simplify(&ns[j]) {
            c.push(idx[j].clone());
        } else if d.is_const(1) {
            c.push(Ix::Lin(Lin::konst(0)));
        } else {
            return Err(f.internal(format!("operand of shape {us:?} does not broadcast to {ns:?}")));
        }
    }
    Ok(c)
}

/// Whether lazy node `n` is a view (movement) rather than elementwise.
fn is_view(f: &Func, n: NodeIndex) -> bool {
    !super::is_lazy(&f.g.node(n).op)
}

/// Record every tensor read under `v` at `idx` (phase one: which operands
/// the generic reads, at which coordinates; may ask `space` to refine).
fn collect(f: &Func, space: &mut Space, seen: &mut HashSet<At>, reads: &mut Vec<(At, TVal)>, v: ValueRef, idx: Vec<Ix>) -> Result<()> {
    let key = (v, idx);
    if seen.contains(&key) {
        return Ok(());
    }
    seen.insert(key.clone());
    let (v, idx) = key;
    match f.env.get(&v) {
        Some(Val::Tensor(t)) => reads.push(((v, idx), t.clone())),
        Some(Val::Scalar(_)) => {}
        Some(Val::Lazy) => {
            let n = v.node;
            if is_view(f, n) {
                let src = view::remap(f.g, space, n, v.port, &idx);
                if space.failed {
                    space.failed_at.get_or_insert(n);
                    return Ok(());
                }
                match src {
                    Some(Source::One(u, c)) => collect(f, space, seen, reads, u, c)?,
                    Some(Source::Select(_, pieces)) => {
                        for (_, u, c) in pieces {
                            collect(f, space, seen, reads, u, c)?;
                        }
                    }
                    None => return Err(f.internal(format!("view node {} cannot be remapped", n.index()))),
                }
            } else {
                let ns = f.ty(v)?.shape;
                for u in f.g.operands(n) {
                    let us = f.ty(u)?.shape;
                    let c = broadcast_ix(f, &idx, &ns, &us)?;
                    collect(f, space, seen, reads, u, c)?;
                }
            }
        }
        None => return Err(f.internal(format!("operand of node {} is not available", v.node.index()))),
    }
    Ok(())
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

    // The iteration space: each result dimension is one loop, or several
    // when a reshape under the outputs needs its coordinate divided (see
    // `view`). `groups[j]` holds the extents of dimension j's loops.
    let mut groups: Vec<Vec<Option<i64>>> = shape.iter().map(|d| vec![d.as_const()]).collect();
    let mut rounds = 0;
    let (ext, reads, out_ix) = loop {
        let ext: Vec<Option<i64>> = groups.iter().flatten().copied().collect();
        let out_ix = out_coords(&groups);
        let mut space = Space { ext: ext.clone(), refine: None, failed: false, failed_at: None };
        let mut seen = HashSet::new();
        let mut reads = Vec::new();
        for &o in &outs {
            collect(f, &mut space, &mut seen, &mut reads, o, out_ix.clone())?;
        }
        if let Some(n) = space.failed_at {
            f.bad_view = Some(n);
            return Err(f.internal(format!("view node {} cannot be remapped", n.index())));
        }
        match space.refine {
            Some((k, m)) if rounds < 16 => {
                rounds += 1;
                let mut at = 0;
                for g in groups.iter_mut() {
                    if k < at + g.len() {
                        let i = k - at;
                        let n = g[i].ok_or_else(|| f.internal("refining a symbolic loop"))?;
                        g[i] = Some(n / m);
                        g.insert(i + 1, Some(m));
                        break;
                    }
                    at += g.len();
                }
            }
            _ => break (ext, reads, out_ix),
        }
    };
    let rank = ext.len();
    let refined = rank != shape.len();

    let fine_shape: Vec<Dim> = {
        let mut s = Vec::with_capacity(rank);
        for (j, g) in groups.iter().enumerate() {
            for e in g {
                s.push(match e {
                    Some(c) => Dim::Const(*c),
                    None => shape[j].clone(),
                });
            }
        }
        s
    };
    // Operands read through indexing maps (linear coordinates); the rest are
    // read with `tensor.extract` in the body.
    let mut ins = Vec::new();
    let mut mapped: Vec<At> = Vec::new();
    let mut slices: HashMap<(String, Vec<Dim>, Vec<Dim>), TVal> = HashMap::new();
    for ((u, c), t) in &reads {
        let lins: Option<Vec<&Lin>> = c.iter().map(|x| if let Ix::Lin(l) = x { Some(l) } else { None }).collect();
        let Some(lins) = lins else { continue };
        // Per axis: the slice of the operand read and the coordinate in it.
        // A coordinate that is one loop (plus an offset) reads a slice of
        // exactly the loop's extent: linalg takes loop bounds from operand
        // sizes along plain loop dimensions, so those must agree.
        let mut offs = Vec::with_capacity(lins.len());
        let mut sizes = Vec::with_capacity(lins.len());
        let mut exprs = Vec::with_capacity(lins.len());
        for (l, d) in lins.iter().zip(&t.ty.shape) {
            match l.terms.iter().next() {
                Some((&k, &1)) if l.terms.len() == 1 => {
                    offs.push(super::simplify(&l.sym.add(&Dim::Const(l.c))));
                    sizes.push(fine_shape[k].clone());
                    exprs.push(format!("d{k}"));
                }
                _ => {
                    offs.push(l.sym.clone());
                    sizes.push(super::simplify(&d.sub(&l.sym)));
                    exprs.push(l.text());
                }
            }
        }
        let m = format!("affine_map<({}) -> ({})>", (0..rank).map(|j| format!("d{j}")).collect::<Vec<_>>().join(", "), exprs.join(", "));
        let whole = offs.iter().all(|o| o.is_const(0)) && sizes.iter().zip(&t.ty.shape).all(|(a, b)| super::simplify(a) == super::simplify(b));
        if whole {
            ins.push(Operand::new(t, m));
        } else {
            let key = (t.ssa.clone(), offs.clone(), sizes.clone());
            let view = match slices.get(&key) {
                Some(v) => v.clone(),
                None => {
                    let o = f.sizes(&offs)?;
                    let sz = f.sizes(&sizes)?;
                    let ty = omnic_ir::TensorType::new(t.ty.dtype, sizes.clone());
                    let v = f.fresh();
                    f.top.push(format!(
                        "{v} = tensor.extract_slice {}[{}] [{}] [{}] : {} to {}",
                        t.ssa,
                        o.join(", "),
                        sz.join(", "),
                        vec!["1"; o.len()].join(", "),
                        t.mlir_ty(),
                        super::tensor_ty(&ty)
                    ));
                    let tv = TVal { ssa: v, ty };
                    slices.insert(key, tv.clone());
                    tv
                }
            };
            ins.push(Operand::new(&view, m));
        }
        mapped.push((*u, c.clone()));
    }
    let reassoc = {
        let mut k = 0;
        let parts: Vec<String> = groups
            .iter()
            .map(|g| {
                let r: Vec<String> = (k..k + g.len()).map(|i| i.to_string()).collect();
                k += g.len();
                format!("[{}]", r.join(", "))
            })
            .collect();
        format!("[{}]", parts.join(", "))
    };
    let mut outs_ops = Vec::with_capacity(outs.len());
    for &w in &outs {
        let wt = f.ty(w)?;
        if refined {
            let x = f.empty(&fine_shape, storage(wt.dtype))?;
            let fine_ty = super::tensor_of(&fine_shape, storage(wt.dtype));
            outs_ops.push(Operand { ssa: x, ty: fine_ty, map: identity_map(rank), elem: storage(wt.dtype).to_string() });
        } else {
            let e = f.empty(&shape, storage(wt.dtype))?;
            outs_ops.push(Operand::new(&TVal { ssa: e, ty: wt }, identity_map(rank)));
        }
    }

    let block = f.begin_body(ins.len() + outs_ops.len())?;
    let mut b = Body { vals: HashMap::new(), dims: HashMap::new(), space: Space { ext: ext.clone(), refine: None, failed: false, failed_at: None }, rank };
    for (at, arg) in mapped.iter().zip(&block) {
        let dt = f.ty(at.0)?.dtype;
        let s = scalar::load(f, arg, dt);
        b.vals.insert(at.clone(), s);
    }
    let mut yields = Vec::with_capacity(outs.len());
    for &w in &outs {
        let s = emit(f, &mut b, w, out_ix.clone())?;
        let dt = f.ty(w)?.dtype;
        yields.push(scalar::store(f, &s, dt)?);
    }
    let results = f.end_generic(rank, &vec![true; rank], &ins, &outs_ops, &block, &yields)?;
    for (w, r) in outs.into_iter().zip(results) {
        let wt = f.ty(w)?;
        let ssa = if refined {
            let c = f.fresh();
            f.top.push(format!(
                "{c} = tensor.collapse_shape {r} {reassoc} : {} into {}",
                super::tensor_of(&fine_shape, storage(wt.dtype)),
                super::tensor_ty(&wt)
            ));
            f.fine.insert(c.clone(), (r.clone(), fine_shape.clone(), reassoc.clone()));
            c
        } else {
            r
        };
        f.env.insert(w, Val::Tensor(TVal { ssa, ty: wt }));
    }
    Ok(())
}

/// The coordinates of the result in the loops of `groups`.
fn out_coords(groups: &[Vec<Option<i64>>]) -> Vec<Ix> {
    let mut k = 0;
    let mut c = Vec::with_capacity(groups.len());
    for g in groups {
        let mut l = Lin::konst(0);
        let mut stride = 1i64;
        for i in (0..g.len()).rev() {
            l.terms.insert(k + i, stride);
            stride *= g[i].unwrap_or(1);
        }
        k += g.len();
        c.push(Ix::Lin(l));
    }
    c
}

/// State of the body being emitted.
struct Body {
    vals: HashMap<At, S>,
    /// `linalg.index k` values.
    dims: HashMap<usize, String>,
    space: Space,
    rank: usize,
}

/// An `index` value equal to coordinate `x` in the body.
fn ix_value(f: &mut Func, b: &mut Body, x: &Ix) -> Result<String> {
    let dim = |f: &mut Func, b: &mut Body, k: usize| -> String {
        if let Some(v) = b.dims.get(&k) {
            return v.clone();
        }
        let v = f.v(Ct::Index, format!("linalg.index {k} : index")).v;
        b.dims.insert(k, v.clone());
        v
    };
    match x {
        Ix::Lin(l) => {
            let mut acc: Option<String> = None;
            for (&k, &a) in &l.terms {
                let d = dim(f, b, k);
                let t = if a == 1 {
                    d
                } else {
                    let av = f.idx(a);
                    f.v(Ct::Index, format!("arith.muli {d}, {av} : index")).v
                };
                acc = Some(match acc {
                    None => t,
                    Some(p) => f.v(Ct::Index, format!("arith.addi {p}, {t} : index")).v,
                });
            }
            if l.has_sym() {
                let sv = f.dim(&l.sym)?;
                acc = Some(match acc {
                    None => sv,
                    Some(p) => f.v(Ct::Index, format!("arith.addi {p}, {sv} : index")).v,
                });
            }
            Ok(match acc {
                None => f.idx(l.c),
                Some(p) if l.c == 0 => p,
                Some(p) => {
                    let cv = f.idx(l.c);
                    f.v(Ct::Index, format!("arith.addi {p}, {cv} : index")).v
                }
            })
        }
        Ix::Expr(e) => {
            let ds: Vec<String> = (0..b.rank).map(|k| dim(f, b, k)).collect();
            let names: Vec<String> = (0..b.rank).map(|k| format!("d{k}")).collect();
            Ok(f.v(Ct::Index, format!("affine.apply affine_map<({}) -> ({e})>({})", names.join(", "), ds.join(", "))).v)
        }
    }
}

/// The compute value of `v` at `idx` in the body (phase two).
fn emit(f: &mut Func, b: &mut Body, v: ValueRef, idx: Vec<Ix>) -> Result<S> {
    let key = (v, idx);
    if let Some(s) = b.vals.get(&key) {
        return Ok(s.clone());
    }
    let (v, idx) = key.clone();
    let s = match f.env.get(&v).cloned() {
        Some(Val::Scalar(x)) => {
            let dt = f.ty(v)?.dtype;
            match super::compute(dt) {
                Ct::F32 => f.cf(Ct::F32, x),
                t => f.ci(t, x as i64),
            }
        }
        Some(Val::Tensor(t)) => {
            let is: Vec<String> = idx.iter().map(|x| ix_value(f, b, x)).collect::<Result<_>>()?;
            let st = super::storage_ct(t.ty.dtype);
            let e = f.v(st, format!("tensor.extract {}[{}] : {}", t.ssa, is.join(", "), t.mlir_ty()));
            scalar::load(f, &e.v, t.ty.dtype)
        }
        Some(Val::Lazy) => {
            let n = v.node;
            if is_view(f, n) {
                match view::remap(f.g, &mut b.space, n, v.port, &idx) {
                    Some(Source::One(u, c)) => emit(f, b, u, c)?,
                    Some(Source::Select(coord, pieces)) => {
                        let mut vals = Vec::with_capacity(pieces.len());
                        for (k, u, c) in pieces {
                            vals.push((k, emit(f, b, u, c)?));
                        }
                        let cv = ix_value(f, b, &coord)?;
                        let (_, mut acc) = vals.pop().ok_or_else(|| f.internal("concat without operands"))?;
                        while let Some((k, s)) = vals.pop() {
                            let kv = f.idx(k);
                            let c = f.v(Ct::I1, format!("arith.cmpi eq, {cv}, {kv} : index"));
                            acc = scalar::select(f, &c, &s, &acc);
                        }
                        acc
                    }
                    None => return Err(f.internal(format!("view node {} cannot be remapped", n.index()))),
                }
            } else {
                let ns = f.ty(v)?.shape;
                let mut xs = Vec::new();
                for u in f.g.operands(n) {
                    let us = f.ty(u)?.shape;
                    let c = broadcast_ix(f, &idx, &ns, &us)?;
                    xs.push(emit(f, b, u, c)?);
                }
                let iota = match &f.g.node(n).op {
                    Op::Iota { .. } => {
                        let x = idx.first().cloned().unwrap_or(Ix::Lin(Lin::konst(0)));
                        Some(ix_value(f, b, &x)?)
                    }
                    _ => None,
                };
                compute(f, n, xs, iota)?
            }
        }
        None => return Err(f.internal(format!("value of node {} is not available", v.node.index()))),
    };
    b.vals.insert(key, s.clone());
    Ok(s)
}

/// One lazy node on scalars.
fn compute(f: &mut Func, n: NodeIndex, xs: Vec<S>, iota: Option<String>) -> Result<S> {
    let g = f.g;
    let node = g.node(n);
    let dt = node.outputs.first().map(|t| t.dtype).ok_or_else(|| f.internal("lazy node without a result"))?;
    let operands = g.operands(n);
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
        (Op::Iota { .. }, []) => {
            // Its coordinate (index 0 where broadcast).
            let i = S { v: iota.ok_or_else(|| f.internal("iota without a coordinate"))?, t: Ct::Index };
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
