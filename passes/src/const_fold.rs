//! `const-fold`: evaluate weight-only subgraphs at compile time.
//!
//! What: a node is *weight-only* when it is a `param`, a `constant` or an
//! `iota` of static length, or when every operand is weight-only and all its
//! results have static shapes (a transposed weight, a concatenation of
//! weights, a LoRA merge `W + B·A`, a scalar computed from constants). Each
//! weight-only compute node that feeds something that is not folded (or a
//! stage output) is computed once, now, by the reference evaluator on its
//! cone (params read through [`PassContext::weight`]), and its uses are
//! redirected to a new source:
//! - a result of at most [`MAX_CONSTANT_ELEMS`] elements becomes a
//!   `constant` node;
//! - a larger one becomes a new weight: a `param` named
//!   `folded.<k>.<label>` (`k` a counter that makes the name fresh, `label`
//!   the node's label or mnemonic) whose tensor goes to
//!   [`PassContext::derived`], so it ends up in the artifact. A result equal
//!   to a derived weight already there (the same fused weights folded in
//!   another stage, e.g. a decode program's prefill and step) reuses that
//!   weight's name, so the artifact stores it once.
//!
//! The cones are computed in f64 and each result is rounded once to its
//! dtype (the correctly rounded value of the exact result). Nodes of the
//! folded cones that are left without users (the interior of the cone, and
//! params/constants only it read) are removed.
//!
//! Why: model builders express weight preprocessing as graph ops (qkv-fusion
//! concatenates Q/K/V weights, importers transpose or reshape weights, LoRA
//! adds `B·A`); left in the graph they would be recomputed on every run.
//!
//! When it does not apply:
//! - sources themselves (params, constants, iotas) are never folded, nor is
//!   anything that depends on a stage input or on a symbolic dimension;
//! - params count as foldable only when their tensor can be read: when the
//!   context has no checkpoint (and the param is not a derived weight),
//!   subgraphs reading params stay, while constants-only subgraphs still fold;
//! - **size rule**: a node is folded only when each of its results has at
//!   most [`MAX_CONSTANT_ELEMS`] elements, or when its results take at most
//!   [`GROWTH_FACTOR`] times the bytes of the distinct sources (params,
//!   constants, iotas) its cone reads. So transposes, reshapes, concats,
//!   merges and dtype casts (bf16→f32 doubles the bytes) fold, but an
//!   `expand` that would materialise a large broadcast of a bias, or an outer
//!   product building a big table from two short vectors, stays as code: it
//!   is cheap to compute and would only bloat the artifact. Such a node's
//!   foldable operands are folded instead.

use crate::pass::{Pass, PassContext, PassError};
use omnic_ir::eval::tensor::round_to;
use omnic_ir::eval::{evaluate, Data, Precision, Tensor, WeightStore};
use omnic_ir::{Annotation, Graph, Literal, Op, TensorType, ValueRef};
use petgraph::stable_graph::NodeIndex;
use petgraph::Direction;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Results with at most this many elements become `constant` nodes.
pub const MAX_CONSTANT_ELEMS: usize = 64;

/// A larger result is folded only when its bytes are at most this factor
/// times the bytes of the sources its cone reads (see the size rule above).
pub const GROWTH_FACTOR: usize = 2;

const NAME: &str = "const-fold";

pub struct ConstFold;

/// The static shape of a type, or `None` when a dimension is symbolic.
pub fn static_shape(ty: &TensorType) -> Option<Vec<usize>> {
    ty.shape.iter().map(|d| d.as_const().and_then(|v| usize::try_from(v).ok())).collect()
}

fn bytes(ty: &TensorType) -> usize {
    static_shape(ty).map_or(0, |s| s.iter().product::<usize>() * ty.dtype.size_bytes())
}

/// The weight-only nodes of `g` (see the module doc), given the graph's
/// topological `order`. `readable(name)` says whether param `name` counts.
pub fn weight_only_nodes(g: &Graph, order: &[NodeIndex], readable: &dyn Fn(&str) -> bool) -> HashSet<NodeIndex> {
    let mut wo = HashSet::new();
    for &n in order {
        let node = g.node(n);
        let static_results = node.outputs.iter().all(|t| static_shape(t).is_some());
        let ok = match &node.op {
            Op::Input { .. } => false,
            Op::Param { name, .. } => static_results && readable(name),
            Op::Constant(_) => true,
            Op::Iota { len, .. } => len.as_const().is_some(),
            _ => static_results && g.operands(n).iter().all(|v| wo.contains(&v.node)),
        };
        if ok {
            wo.insert(n);
        }
    }
    wo
}

/// Lets the evaluator read weights through the pass context.
struct ContextWeights<'a, 'w>(&'a PassContext<'w>);

impl WeightStore for ContextWeights<'_, '_> {
    fn weight(&self, name: &str) -> Result<Tensor, String> {
        self.0.weight(name)
    }
}

/// The nodes `root` is computed from (itself included), operands before
/// users. A depth-first post-order of its own, because the cone may hold
/// sources an earlier fold of this run created (not in the graph's order).
fn cone(g: &Graph, root: NodeIndex) -> Vec<NodeIndex> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut stack = vec![(root, false)];
    while let Some((n, operands_done)) = stack.pop() {
        if operands_done {
            out.push(n);
        } else if seen.insert(n) {
            stack.push((n, true));
            stack.extend(g.operands(n).into_iter().filter(|v| !seen.contains(&v.node)).map(|v| (v.node, false)));
        }
    }
    out
}

/// A copy of `cone` as a graph of its own whose outputs `r<p>` are the
/// results `ports` of `root`.
fn cone_graph(g: &Graph, cone: &[NodeIndex], root: NodeIndex, ports: &[u32]) -> Graph {
    let mut sub = Graph::new();
    let mut map = HashMap::new();
    for &n in cone {
        let node = g.node(n);
        let ops: Vec<ValueRef> = g.operands(n).iter().map(|v| ValueRef::new(map[&v.node], v.port)).collect();
        let m = sub.add_unchecked(node.op.clone(), &ops, node.outputs.clone());
        map.insert(n, m);
    }
    sub.outputs = ports.iter().map(|&p| (format!("r{p}"), ValueRef::new(map[&root], p))).collect();
    sub
}

/// Round float values to the dtype (the cone ran in f64).
fn rounded(mut t: Tensor) -> Tensor {
    let dtype = t.dtype;
    if let Data::F(v) = &mut t.data {
        v.iter_mut().for_each(|x| *x = round_to(dtype, *x, false));
    }
    t
}

/// A weight name not used by `g` nor by a derived weight.
fn fresh_name(g: &Graph, cx: &PassContext, counter: &mut usize, label: &str) -> String {
    let taken: HashSet<String> = g.params().into_iter().map(|(n, _)| n).collect();
    loop {
        let name = format!("folded.{}.{label}", *counter);
        *counter += 1;
        if !taken.contains(&name) && !cx.derived.contains_key(&name) {
            return name;
        }
    }
}

impl Pass for ConstFold {
    fn name(&self) -> &'static str {
        NAME
    }
    fn summary(&self) -> &'static str {
        "evaluate weight-only subgraphs at compile time (small results become constants, large ones derived weights)"
    }
    fn run_on_graph(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, PassError> {
        let order = g.topo_order().map_err(|e| PassError::Invalid { pass: NAME.into(), source: e })?;
        let has_checkpoint = cx.weights.is_some();
        let wo = weight_only_nodes(g, &order, &|name| has_checkpoint || cx.derived.contains_key(name));

        // Sources each weight-only node reads, and which nodes pass the size rule.
        let mut leaves: HashMap<NodeIndex, BTreeSet<NodeIndex>> = HashMap::new();
        let mut accepted = HashSet::new();
        for &n in order.iter().filter(|n| wo.contains(n)) {
            let node = g.node(n);
            if node.op.is_source() {
                leaves.insert(n, BTreeSet::from([n]));
                continue;
            }
            let mut ls = BTreeSet::new();
            for v in g.operands(n) {
                if let Some(l) = leaves.get(&v.node) {
                    ls.extend(l.iter().copied());
                }
            }
            let small = node.outputs.iter().all(|t| static_shape(t).is_some_and(|s| s.iter().product::<usize>() <= MAX_CONSTANT_ELEMS));
            let src_bytes: usize = ls.iter().flat_map(|&l| g.node(l).outputs.iter()).map(bytes).sum();
            let out_bytes: usize = node.outputs.iter().map(bytes).sum();
            if small || out_bytes <= GROWTH_FACTOR.saturating_mul(src_bytes) {
                accepted.insert(n);
            }
            leaves.insert(n, ls);
        }

        // Fold the accepted nodes some result of which is read by a node
        // that stays (or is a stage output); the rest of each cone dies.
        let mut to_fold: Vec<(NodeIndex, Vec<u32>)> = Vec::new();
        for &n in order.iter().filter(|n| accepted.contains(n)) {
            let mut ports: BTreeSet<u32> =
                g.g.edges_directed(n, Direction::Outgoing)
                    .filter(|e| !accepted.contains(&petgraph::visit::EdgeRef::target(e)))
                    .map(|e| e.weight().port)
                    .collect();
            ports.extend(g.outputs.iter().filter(|(_, v)| v.node == n).map(|(_, v)| v.port));
            if !ports.is_empty() {
                to_fold.push((n, ports.into_iter().collect()));
            }
        }

        let mut counter = cx.derived.len();
        let (mut derived, mut constants) = (0, 0);
        let mut touched: HashSet<NodeIndex> = HashSet::new();
        for (n, ports) in to_fold {
            let nodes = cone(g, n);
            let sub = cone_graph(g, &nodes, n, &ports);
            let label = g.node(n).label.clone();
            let results = evaluate(&sub, &HashMap::new(), &ContextWeights(cx), Precision::F64).map_err(|e| PassError::Failed {
                pass: NAME.into(),
                message: format!("evaluating `{}`{}: {e}", g.node(n).op.mnemonic(), label.as_deref().map(|l| format!(" ({l})")).unwrap_or_default()),
            })?;
            touched.extend(nodes);
            for p in ports {
                let t = results
                    .get(&format!("r{p}"))
                    .cloned()
                    .ok_or_else(|| PassError::Failed { pass: NAME.into(), message: format!("result {p} of `{}` was not computed", g.node(n).op.mnemonic()) })?;
                let t = rounded(t);
                let ty = g.node(n).outputs[p as usize].clone();
                let op = if t.numel() <= MAX_CONSTANT_ELEMS {
                    constants += 1;
                    Op::Constant(Literal { dtype: t.dtype, shape: t.shape.clone(), values: t.to_f64_vec() })
                } else {
                    // The same folded tensor from another stage (prefill and
                    // decode step fuse the same weights) is stored once.
                    // Comparing stops at the first differing element.
                    let same = cx.derived.iter().find(|(_, u)| u.dtype == t.dtype && u.shape == t.shape && u.data == t.data).map(|(k, _)| k.clone());
                    let name = match same {
                        Some(name) => name,
                        None => {
                            derived += 1;
                            let name = fresh_name(g, cx, &mut counter, label.as_deref().unwrap_or(g.node(n).op.mnemonic()));
                            cx.derived.insert(name.clone(), t);
                            name
                        }
                    };
                    Op::Param { name, ty: ty.clone() }
                };
                let m = g.add_unchecked(op, &[], vec![ty]);
                // The block stays; roles describe result 0 only.
                let anns: Vec<Annotation> = g.node(n).annotations.iter().filter(|a| p == 0 || matches!(a, Annotation::Block(_))).cloned().collect();
                let new = g.node_mut(m);
                new.annotations = anns;
                new.label = label.clone();
                g.replace_all_uses(ValueRef::new(n, p), ValueRef::new(m, 0));
            }
        }

        // Remove what the folds left without users, users before operands.
        let mut folded = 0;
        for &n in order.iter().rev().filter(|n| touched.contains(n)) {
            let used = g.g.edges_directed(n, Direction::Outgoing).next().is_some() || g.outputs.iter().any(|(_, v)| v.node == n);
            if !used {
                folded += !g.node(n).op.is_source() as i64;
                g.remove_node(n);
            }
        }
        cx.stat(NAME, "nodes folded", folded);
        cx.stat(NAME, "weights derived", derived);
        cx.stat(NAME, "constants created", constants);
        Ok(folded > 0 || derived + constants > 0)
    }
}

#[cfg(test)]
#[path = "const_fold_tests.rs"]
mod tests;
