//! `moe-fusion`: the per-expert form of a sparse mixture-of-experts MLP
//! becomes one fused `moe` op.
//!
//! What: importers express a top-k routed MoE MLP (transformers
//! `Qwen3MoeSparseMoeBlock`, see `models/src/qwen/moe.rs`) in its dense,
//! unfused form, on tokens `x [T, H]` with router logits `l [T, E]`:
//!
//! ```text
//! p = softmax(l, axis 1);  (v, i) = topk(p, k);  [v = v / reduce_sum(v, [1], keep)]
//! r = reduce_sum(where(reshape(i, [T,k,1]) == reshape(iota(E), [1,1,E]), reshape(v, [T,k,1]), 0), [1])
//! y = Σ_e expert_e(x) · slice(r, 1, e, e+1)       (a chain of adds, in any shape)
//! expert_e(x) = linear(act(linear(x, Wg_e)) · linear(x, Wu_e), Wd_e)
//! ```
//!
//! Every expert runs on every token and the unselected ones are weighted by
//! zero. The pass replaces the whole subgraph (routing, the `E` experts,
//! the weighting and the sum) by
//! `y = moe(x, l, stack(Wg), stack(Wu), stack(Wd)) {top_k=k, norm_topk, act}`
//! where `stack(W)` is `concat(reshape(W_0, [1, …]), …, axis 0)`: weight-only,
//! so `const-fold` (run after this pass) turns each stack into one derived
//! weight and the per-expert weights leave the artifact. The router linear
//! producing `l` stays (its logits are often a model output too).
//!
//! Why: the fused op routes, groups the tokens by expert and runs only the
//! selected experts' GEMMs, `k/E` of the dense work, in one runtime kernel
//! call (no per-expert steps). Its result equals the unfused sum: the
//! skipped terms are exact zeros, and the fused op sums the selected
//! experts in the same ascending expert order.
//!
//! Recognition is structural, from the `topk` node: softmax over the last
//! axis of a rank-2 logits value, the optional top-k renormalisation, the
//! dense routing-weight construction above, exactly one `slice` of the
//! routing weights per expert, each feeding one `mul` with a gated MLP of
//! the same input, the same activation and static weights of one shape, and
//! a tree of `add`s summing exactly those `E` products. The new nodes take
//! the block of the sum and the label of the routing softmax (the MoE
//! module, e.g. `model.layers.0.mlp`); the stacked weights are labelled
//! `<module>.experts.{gate,up,down}_proj.weight`.
//!
//! When it does not apply:
//! - any interior value of the pattern (routing weights, an expert's hidden
//!   state or output, a partial sum, the top-k values or indices) has
//!   another user or is a stage output: it would have to stay computed;
//! - the sum misses an expert or adds something else, an expert's
//!   weights are not weight-only with static shapes, experts differ in
//!   activation, input or inner size, or the routing deviates from the
//!   pattern (other axes, a non-zero fill, another comparison);
//! - mixed dtypes (the fused op needs one float dtype for all operands).

use crate::const_fold::{static_shape, weight_only_nodes};
use crate::pass::{Pass, PassContext, PassError};
use omnic_ir::{Annotation, BinaryOp, CmpOp, Dim, Graph, IrError, Op, ReduceOp, UnaryOp, ValueRef};
use petgraph::stable_graph::NodeIndex;
use std::collections::HashSet;

const NAME: &str = "moe-fusion";

pub struct MoeFusion;

/// A recognised per-expert MoE subgraph.
struct Found {
    x: ValueRef,
    logits: ValueRef,
    top_k: usize,
    norm_topk: bool,
    act: UnaryOp,
    /// Per expert, in expert order: gate, up and down weights.
    weights: Vec<[ValueRef; 3]>,
    /// The value the fused op replaces (the root of the sum).
    root: ValueRef,
    /// Every interior node of the pattern, removed once unused.
    interior: Vec<NodeIndex>,
    /// Sources only the pattern may read (expert ids, the zero fill):
    /// removed when left unused.
    sources: Vec<NodeIndex>,
    label: Option<String>,
}

/// The single user node of `v`, when `v` has exactly one use and is not a
/// stage output.
fn sole_user(g: &Graph, v: ValueRef) -> Option<NodeIndex> {
    if g.use_count(v) != 1 || g.outputs.iter().any(|(_, o)| *o == v) {
        return None;
    }
    let users = g.users(v.node);
    match users.as_slice() {
        [u] => Some(*u),
        // Other ports of the same node may have other users; find the one reading `v`.
        _ => users.into_iter().find(|&u| g.operands(u).contains(&v)),
    }
}

fn out(n: NodeIndex) -> ValueRef {
    ValueRef::new(n, 0)
}

/// `reshape(v)` as the sole user of `v`, with its result shape.
fn sole_reshape(g: &Graph, v: ValueRef) -> Option<(NodeIndex, Vec<Dim>)> {
    let r = sole_user(g, v)?;
    match &g.node(r).op {
        Op::Reshape { shape } => Some((r, shape.clone())),
        _ => None,
    }
}

fn is_zero_constant(g: &Graph, v: ValueRef) -> bool {
    matches!(&g.node(v.node).op, Op::Constant(lit) if lit.values.iter().all(|&x| x == 0.0))
}

/// `v` is `reshape(iota(E))` to `[1, 1, E]`.
fn is_expert_ids(g: &Graph, v: ValueRef, e: usize) -> bool {
    let Op::Reshape { shape } = &g.node(v.node).op else { return false };
    if shape.as_slice() != [Dim::from(1usize), Dim::from(1usize), Dim::from(e)] {
        return false;
    }
    let Some(src) = g.operands(v.node).first().copied() else { return false };
    matches!(&g.node(src.node).op, Op::Iota { len, .. } if len.as_const() == Some(e as i64))
}

/// The gated MLP `linear(act(linear(x, Wg)) · linear(x, Wu), Wd)` producing
/// `y`: `(x, act, [Wg, Wu, Wd], interior nodes)`.
fn gated_mlp(g: &Graph, y: ValueRef, wo: &HashSet<NodeIndex>) -> Option<(ValueRef, UnaryOp, [ValueRef; 3], Vec<NodeIndex>)> {
    let down = y.node;
    let (Op::Linear { bias: false }, 0) = (&g.node(down).op, y.port) else { return None };
    let [m, wd] = g.operands(down)[..] else { return None };
    sole_user(g, m)?;
    let (Op::Binary(BinaryOp::Mul), 0) = (&g.node(m.node).op, m.port) else { return None };
    let [a, u] = g.operands(m.node)[..] else { return None };
    // `act(gate) · up`, either operand order.
    let (act_v, up_v) = if matches!(g.node(a.node).op, Op::Unary(_)) { (a, u) } else { (u, a) };
    let Op::Unary(act) = g.node(act_v.node).op else { return None };
    let [gate_v] = g.operands(act_v.node)[..] else { return None };
    for v in [act_v, up_v, gate_v] {
        sole_user(g, v)?;
    }
    let (Op::Linear { bias: false }, Op::Linear { bias: false }) = (&g.node(gate_v.node).op, &g.node(up_v.node).op) else { return None };
    let [x, wg] = g.operands(gate_v.node)[..] else { return None };
    let [x2, wu] = g.operands(up_v.node)[..] else { return None };
    if x != x2 || [wg, wu, wd].iter().any(|w| !wo.contains(&w.node) || g.value_type(*w).ok().and_then(static_shape).is_none()) {
        return None;
    }
    Some((x, act, [wg, wu, wd], vec![down, m.node, act_v.node, gate_v.node, up_v.node]))
}

/// The values summed by the add tree rooted at the sole user chain of
/// `leaves`: returns the root and the add nodes when the adds sum exactly
/// the leaves (each once) and nothing else.
fn add_tree(g: &Graph, leaves: &[ValueRef]) -> Option<(ValueRef, Vec<NodeIndex>)> {
    if let [only] = leaves {
        return Some((*only, Vec::new()));
    }
    let mut summed: HashSet<ValueRef> = leaves.iter().copied().collect();
    let mut adds = Vec::new();
    let mut frontier: Vec<ValueRef> = leaves.to_vec();
    while let Some(v) = frontier.pop() {
        let Some(u) = sole_user(g, v) else { continue };
        if adds.contains(&u) || !matches!(g.node(u).op, Op::Binary(BinaryOp::Add)) {
            continue;
        }
        if g.operands(u).iter().all(|o| summed.contains(o)) {
            adds.push(u);
            summed.insert(out(u));
            frontier.push(out(u));
        }
    }
    // A tree over n leaves has n − 1 adds; its root is the one add whose
    // result is not summed further.
    if adds.len() != leaves.len() - 1 {
        return None;
    }
    let consumed: HashSet<ValueRef> = adds.iter().flat_map(|&a| g.operands(a)).collect();
    let roots: Vec<NodeIndex> = adds.iter().copied().filter(|&a| !consumed.contains(&out(a))).collect();
    let [root] = roots[..] else { return None };
    // Every leaf and inner add is consumed by exactly one add of the tree.
    if leaves.iter().any(|l| !consumed.contains(l)) || consumed.len() != 2 * adds.len() {
        return None;
    }
    Some((out(root), adds))
}

/// The pattern around `topk` node `tk`, if it matches (see the module doc).
fn find(g: &Graph, tk: NodeIndex, wo: &HashSet<NodeIndex>) -> Option<Found> {
    let Op::TopK { k } = g.node(tk).op else { return None };
    let [p] = g.operands(tk)[..] else { return None };
    let Op::Softmax { axis: 1 } = g.node(p.node).op else { return None };
    sole_user(g, p)?;
    let [logits] = g.operands(p.node)[..] else { return None };
    let lt = g.value_type(logits).ok()?;
    let [_, e] = &lt.shape[..] else { return None };
    let e = usize::try_from(e.as_const()?).ok()?;
    let (vals, idx) = (ValueRef::new(tk, 0), ValueRef::new(tk, 1));
    let mut interior = vec![p.node, tk];

    // Optional renormalisation `v / reduce_sum(v, [1], keep)`.
    let is_sum = |u: NodeIndex| matches!(&g.node(u).op, Op::Reduce { op: ReduceOp::Sum, axes, keep_dims: true } if axes.as_slice() == [1]);
    let sum = g.users(tk).into_iter().find(|&u| g.operands(u).contains(&vals) && is_sum(u));
    let (weights_v, norm_topk) = match sum {
        Some(sum) => {
            if g.use_count(vals) != 2 || g.outputs.iter().any(|(_, o)| *o == vals) {
                return None;
            }
            let div = sole_user(g, out(sum))?;
            if !matches!(g.node(div).op, Op::Binary(BinaryOp::Div)) || g.operands(div)[..] != [vals, out(sum)] {
                return None;
            }
            interior.extend([sum, div]);
            (out(div), true)
        }
        None => (vals, false),
    };
    let (rv, rv_shape) = sole_reshape(g, weights_v)?;
    let (ri, ri_shape) = sole_reshape(g, idx)?;
    let tk1 = |s: &[Dim]| s.len() == 3 && s[1] == Dim::from(k) && s[2] == Dim::from(1usize);
    if !tk1(&rv_shape) || !tk1(&ri_shape) {
        return None;
    }
    let hit = sole_user(g, out(ri))?;
    let Op::Compare(CmpOp::Eq) = g.node(hit).op else { return None };
    let [a, ids] = g.operands(hit)[..] else { return None };
    if a != out(ri) || !is_expert_ids(g, ids, e) {
        return None;
    }
    let wh = sole_user(g, out(hit))?;
    let Op::Where = g.node(wh).op else { return None };
    let [c, tv, zero] = g.operands(wh)[..] else { return None };
    if c != out(hit) || tv != out(rv) || !is_zero_constant(g, zero) || sole_user(g, out(rv)) != Some(wh) {
        return None;
    }
    let red = sole_user(g, out(wh))?;
    let Op::Reduce { op: ReduceOp::Sum, axes, keep_dims: false } = &g.node(red).op else { return None };
    if axes.as_slice() != [1] {
        return None;
    }
    interior.extend([rv, ri, hit, wh, red]);
    let mut sources = vec![ids.node, zero.node];
    sources.extend(g.operands(ids.node).iter().map(|v| v.node));
    let route = out(red);
    if g.outputs.iter().any(|(_, o)| *o == route) {
        return None;
    }

    // One slice of the routing weights per expert, each weighting one expert MLP.
    let slices = g.users(red);
    if slices.len() != e || g.use_count(route) != e {
        return None;
    }
    let mut per_expert: Vec<Option<(ValueRef, [ValueRef; 3])>> = vec![None; e];
    let mut common: Option<(ValueRef, UnaryOp, Vec<usize>)> = None;
    for s in slices {
        let Op::Slice { axis: 1, start, end } = &g.node(s).op else { return None };
        let ex = usize::try_from(start.as_const()?).ok()?;
        if ex >= e || end.as_const()? != ex as i64 + 1 || per_expert[ex].is_some() {
            return None;
        }
        let mul = sole_user(g, out(s))?;
        let Op::Binary(BinaryOp::Mul) = g.node(mul).op else { return None };
        let [a, b] = g.operands(mul)[..] else { return None };
        let y = if a == out(s) { b } else { a };
        if y == out(s) || sole_user(g, y) != Some(mul) {
            return None;
        }
        let (x, act, ws, nodes) = gated_mlp(g, y, wo)?;
        let shapes: Vec<usize> = ws.iter().flat_map(|w| g.value_type(*w).ok().and_then(static_shape).unwrap_or_default()).collect();
        match &common {
            None => common = Some((x, act, shapes)),
            Some((x0, a0, s0)) if *x0 == x && *a0 == act && *s0 == shapes => {}
            Some(_) => return None,
        }
        interior.push(s);
        interior.extend(nodes);
        per_expert[ex] = Some((out(mul), ws));
    }
    let (x, act, _) = common?;
    let per_expert: Vec<(ValueRef, [ValueRef; 3])> = per_expert.into_iter().collect::<Option<_>>()?;
    let products: Vec<ValueRef> = per_expert.iter().map(|(m, _)| *m).collect();
    let (root, adds) = add_tree(g, &products)?;
    interior.extend(products.iter().map(|m| m.node));
    interior.extend(adds);
    // The MoE module: the experts' common prefix (`….mlp` of `….mlp.experts.0.down_proj`), else the router's scope.
    let down_label = per_expert.first().and_then(|(m, _)| g.operands(m.node).iter().find_map(|v| g.node(v.node).label.clone()));
    let label = down_label.and_then(|l| l.split_once(".experts.").map(|(m, _)| m.to_string())).or_else(|| g.node(p.node).label.clone());
    let weights = per_expert.into_iter().map(|(_, w)| w).collect();
    Some(Found { x, logits, top_k: k, norm_topk, act, weights, root, interior, sources, label })
}

/// Add `op` with block and label set.
fn add(g: &mut Graph, op: Op, operands: &[ValueRef], block: Option<u32>, label: Option<String>) -> Result<ValueRef, IrError> {
    let n = g.add(op, operands)?;
    let node = g.node_mut(n);
    node.annotations.extend(block.map(Annotation::Block));
    node.label = label;
    Ok(out(n))
}

/// Replace the found subgraph by the fused op.
fn fuse(g: &mut Graph, f: &Found) -> Result<(), IrError> {
    let block = g.node(f.root.node).block();
    let mut stacks = Vec::with_capacity(3);
    for (which, name) in ["gate_proj", "up_proj", "down_proj"].iter().enumerate() {
        let label = f.label.as_ref().map(|l| format!("{l}.experts.{name}.weight"));
        let mut parts = Vec::with_capacity(f.weights.len());
        for ws in &f.weights {
            let w = ws[which];
            let mut shape = vec![Dim::from(1usize)];
            shape.extend(g.value_type(w)?.shape.iter().cloned());
            parts.push(add(g, Op::Reshape { shape }, &[w], block, label.clone())?);
        }
        stacks.push(add(g, Op::Concat { axis: 0 }, &parts, block, label)?);
    }
    let op = Op::Moe { top_k: f.top_k, norm_topk: f.norm_topk, act: f.act };
    let y = add(g, op, &[f.x, f.logits, stacks[0], stacks[1], stacks[2]], block, f.label.clone())?;
    let roles: Vec<Annotation> = g.node(f.root.node).annotations.iter().filter(|a| matches!(a, Annotation::Role(_))).cloned().collect();
    g.node_mut(y.node).annotations.extend(roles);
    g.replace_all_uses(f.root, y);
    // Remove the interior, users first (every interior node is now unused
    // once the nodes reading it are gone).
    let mut left: Vec<NodeIndex> = f.interior.clone();
    while !left.is_empty() {
        let before = left.len();
        left.retain(|&n| {
            let used = !g.users(n).is_empty() || g.outputs.iter().any(|(_, o)| o.node == n);
            if !used {
                g.remove_node(n);
            }
            used
        });
        if left.len() == before {
            return Err(IrError::Graph(format!("{NAME}: {} matched nodes are still in use after fusion", left.len())));
        }
    }
    for &n in &f.sources {
        if g.contains(n) && g.users(n).is_empty() && !g.outputs.iter().any(|(_, o)| o.node == n) {
            g.remove_node(n);
        }
    }
    Ok(())
}

impl Pass for MoeFusion {
    fn name(&self) -> &'static str {
        NAME
    }
    fn summary(&self) -> &'static str {
        "fuse a per-expert MoE MLP (routing, experts, weighted sum) into one moe op over stacked expert weights"
    }
    fn run_on_graph(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, PassError> {
        let invalid = |e| PassError::Invalid { pass: NAME.into(), source: e };
        let order = g.topo_order().map_err(invalid)?;
        let wo = weight_only_nodes(g, &order, &|_| true);
        let found: Vec<Found> = order.iter().filter_map(|&n| find(g, n, &wo)).collect();
        for f in &found {
            fuse(g, f).map_err(invalid)?;
        }
        cx.stat(NAME, "moe blocks fused", found.len() as i64);
        cx.stat(NAME, "experts fused", found.iter().map(|f| f.weights.len() as i64).sum());
        Ok(!found.is_empty())
    }
}
