//! Which generated kernels may run on several threads, cut into blocks of
//! rows ([`KernelSplit`], used by the runtime's executor).
//!
//! A kernel is *separable along* a symbolic dimension `d` (a dimension of
//! its first result, e.g. `seq`) when calling it on rows `lo..hi` of `d`
//! (every operand that has `d` sliced to those rows, the others whole)
//! computes exactly rows `lo..hi` of every result. Checked per op, for the
//! axis of `d` in each value (its *row axis*; none when the value does not
//! mention `d`'s symbols):
//! - every result has a row axis;
//! - `d`'s symbols appear in no other dimension of any argument, result or
//!   intermediate (so every size the kernel computes from its descriptors
//!   that involves them is `d` itself, read from a sliced operand, and
//!   the kernel sees one consistent row count), nor in attributes (split
//!   sizes, slice bounds);
//! - an op whose output has no row axis reads no operand that has one (no
//!   reduction over the rows);
//! - an op whose output has row axis `p` maps it consistently: elementwise
//!   ops and `expand` read it at the broadcast-aligned axis (or not at all:
//!   a broadcast operand), reductions / `softmax` / norms work over other
//!   axes (a norm's weight and bias have no row axis), `concat` / `split` /
//!   `slice` / `pad` do not cut along it, `transpose` permutes it, and a
//!   `reshape` keeps it with every dimension before it (up to extents of 1);
//!   `upsample_nearest` only on its batch or channel axis;
//! - `gather`, `group_norm`, `iota` (whose values are row indices) and
//!   anything else: not separable, unless they do not involve the rows.
//!
//! Every non-constant dimension of the first result is tried; each one
//! that passes gives a [`KernelSplit`] (the runtime picks one per call from
//! the run-time sizes). The per-element arithmetic of a block is the same
//! as in the whole call, so split runs are bit-identical.

use crate::cpu::lower::{simplify, KernelPlan};
use omnic_ir::{Dim, Graph, Op, ValueRef};
use omnic_runtime::artifact::manifest::KernelSplit;

/// The axes along which `plan`'s kernel is separable (see the module doc).
pub fn kernel_splits(g: &Graph, plan: &KernelPlan) -> Vec<KernelSplit> {
    let Some(first) = plan.results.first().and_then(|&r| g.value_type(r).ok()) else { return Vec::new() };
    let mut tried: Vec<Dim> = Vec::new();
    let mut out = Vec::new();
    for d in &first.shape {
        let d = simplify(d);
        if d.as_const().is_some() || tried.contains(&d) {
            continue;
        }
        if let Some(s) = split_along(g, plan, &d) {
            out.push(s);
        }
        tried.push(d);
    }
    out
}

/// The split along dimension `d`, if the kernel is separable along it.
fn split_along(g: &Graph, plan: &KernelPlan, d: &Dim) -> Option<KernelSplit> {
    let mut syms = Vec::new();
    d.symbols(&mut syms);
    if syms.is_empty() {
        return None;
    }
    let rows = Rows { g, d, syms };
    let args: Vec<Option<usize>> = plan.args.iter().map(|&v| rows.axis(v)).collect::<Option<_>>()?;
    let results: Vec<Option<usize>> = plan.results.iter().map(|&v| rows.axis(v)).collect::<Option<_>>()?;
    if results.iter().any(Option::is_none) {
        return None;
    }
    for &m in &plan.members {
        let node = g.node(m);
        let outs: Vec<Option<usize>> = (0..node.outputs.len()).map(|p| rows.axis(ValueRef::new(m, p as u32))).collect::<Option<_>>()?;
        let operands = g.operands(m);
        let mut ins = Vec::with_capacity(operands.len());
        for &v in &operands {
            let a = rows.axis(v)?;
            // An iota computed inside the kernel holds row indices: they would restart at 0 in each block.
            if a.is_some() && matches!(g.node(v.node).op, Op::Iota { .. }) {
                return None;
            }
            ins.push(a);
        }
        let p = *outs.first()?;
        let out_rank = node.outputs.first()?.shape.len();
        if outs.iter().any(|&o| o != p) || !rows.op_ok(&node.op, p, out_rank, &ins, &operands) {
            return None;
        }
    }
    let u32s = |v: Vec<Option<usize>>| v.into_iter().map(|a| a.map(|a| a as u32)).collect();
    Some(KernelSplit { args: u32s(args), results: u32s(results) })
}

struct Rows<'g> {
    g: &'g Graph,
    /// The row dimension (simplified).
    d: &'g Dim,
    /// Its symbols.
    syms: Vec<String>,
}

impl Rows<'_> {
    fn mentions(&self, x: &Dim) -> bool {
        let mut s = Vec::new();
        x.symbols(&mut s);
        s.iter().any(|s| self.syms.contains(s))
    }

    /// `Some(row axis)` of a value (`Some(None)`: it does not involve the
    /// rows); `None` when the rows' symbols appear in it otherwise.
    fn axis(&self, v: ValueRef) -> Option<Option<usize>> {
        let t = self.g.value_type(v).ok()?;
        let mut found = None;
        for (i, x) in t.shape.iter().enumerate() {
            if !self.mentions(x) {
                continue;
            }
            if found.is_some() || simplify(x) != *self.d {
                return None;
            }
            found = Some(i);
        }
        Some(found)
    }

    fn rank(&self, v: ValueRef) -> Option<usize> {
        self.g.value_type(v).ok().map(|t| t.shape.len())
    }

    /// Whether an op whose outputs have row axis `p` and whose operands
    /// have row axes `ins` computes each block of rows from the same
    /// block of its operands.
    fn op_ok(&self, op: &Op, p: Option<usize>, out_rank: usize, ins: &[Option<usize>], operands: &[ValueRef]) -> bool {
        let Some(p) = p else {
            // Rows may not be reduced away (nor otherwise folded into a value without them).
            return ins.iter().all(Option::is_none);
        };
        let first = |want: usize| ins.first() == Some(&Some(want));
        match op {
            Op::Unary(_) | Op::Cast(_) => first(p),
            Op::Binary(_) | Op::Compare(_) | Op::Where | Op::Expand { .. } => {
                ins.iter().zip(operands).all(|(a, &v)| {
                    let Some(r) = self.rank(v) else { return false };
                    match *a {
                        // Broadcast (a constant 1 or a missing dimension there): passed whole.
                        None => true,
                        Some(q) => p + r >= out_rank && q == p + r - out_rank,
                    }
                })
            }
            Op::Reduce { axes, keep_dims, .. } => {
                let q = if *keep_dims {
                    Some(p)
                } else {
                    let Some(r) = operands.first().and_then(|&v| self.rank(v)) else { return false };
                    (0..r).filter(|a| !axes.contains(a)).nth(p)
                };
                q.is_some_and(|q| !axes.contains(&q) && first(q))
            }
            Op::Softmax { axis } => p != *axis && first(p),
            Op::LayerNorm { .. } | Op::RmsNorm { .. } => {
                let Some(r) = operands.first().and_then(|&v| self.rank(v)) else { return false };
                p + 1 < r && first(p) && ins[1..].iter().all(Option::is_none)
            }
            Op::Transpose { perm } => perm.get(p).is_some_and(|&q| first(q)),
            Op::Concat { axis } => p != *axis && ins.iter().all(|&a| a == Some(p)),
            Op::Split { axis, sizes } => p != *axis && !sizes.iter().any(|s| self.mentions(s)) && first(p),
            Op::Slice { axis, start, end } => p != *axis && !self.mentions(start) && !self.mentions(end) && first(p),
            Op::Pad { pads, .. } => pads.get(p) == Some(&(0, 0)) && first(p),
            Op::UpsampleNearest { .. } => p < 2 && first(p),
            Op::Reshape { shape } => {
                let (Some(&Some(q)), Some(&src)) = (ins.first(), operands.first()) else { return false };
                let Ok(src_ty) = self.g.value_type(src) else { return false };
                let lead = |s: &[Dim]| s.iter().map(simplify).filter(|x| !x.is_const(1)).collect::<Vec<_>>();
                lead(&shape[..p.min(shape.len())]) == lead(&src_ty.shape[..q])
            }
            _ => false,
        }
    }
}

#[cfg(test)]
#[path = "tests/parallel.rs"]
mod tests;
