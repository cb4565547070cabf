//! `qkv-fusion`: horizontal fusion of `linear`s that read the same value.
//!
//! What: a group of ≥ 2 `linear`s with the same input `x`,
//! `yᵢ = x · Wᵢᵀ + bᵢ`, becomes one `linear` over the concatenated weights
//! and a `split` of its last axis:
//! `[y₁ … yₙ] = split(linear(x, concat(W₁ … Wₙ, axis 0), concat(b₁ … bₙ, axis 0)), sizes = rows(Wᵢ))`;
//! the split's results replace the original linears' uses. This covers Q/K/V
//! of attention, FLUX's `add_q/k/v_proj`, gate/up of gated MLPs, and FLUX
//! single blocks' `to_q/k/v` + `proj_mlp` (which share their input and fuse
//! into one group of four).
//!
//! Why: one GEMM with `N = Σ Nᵢ` columns reads `x` once and keeps the
//! machine busier than `n` narrow GEMMs. The weight concatenations are
//! weight-only, so `const-fold` (run after this pass) turns them into one
//! derived weight each and nothing is concatenated at run time.
//!
//! Grouping: linears are grouped by input value, block annotation, bias-ness
//! and weight (and bias) dtype, in topological order. Mixed bias: linears
//! with a bias fuse only with other linears with a bias, those without only
//! with those without (each kind needs ≥ 2 members); padding a missing bias
//! with zeros would invent a weight and cost an add for nothing.
//! Annotations: the new `concat`/`linear`/`split` nodes keep the group's
//! block; their label is the members' labels folded into one, e.g.
//! `blocks.0.attn.to_q+to_k+to_v` (common module prefix, then the differing
//! suffixes joined by `+`), the weight concat `….weight`, the bias concat
//! `….bias` (which names the derived weights `const-fold` makes).
//!
//! When it does not apply:
//! - a single linear, or linears on different inputs (different values, even
//!   if equal — run `cse` first to merge duplicates);
//! - weights or biases with a symbolic dimension, or that are not weight-only
//!   (they depend on a stage input: concatenating them would cost a copy of
//!   every weight on every run);
//! - linears whose input is itself weight-only (`const-fold` folds those
//!   whole; this also guarantees the fused weights cannot depend on a member
//!   of the group, so fusion never creates a cycle);
//! - linears in different blocks (block-granular passes such as caching and
//!   offloading need each block's ops to stay in the block);
//! - linears carrying a role annotation (a role names a node's first result,
//!   which a split can only give one member).

use crate::const_fold::{static_shape, weight_only_nodes};
use crate::pass::{Pass, PassContext, PassError};
use omnic_ir::{Annotation, DType, Dim, Graph, IrError, Op, ValueRef};
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;

const NAME: &str = "qkv-fusion";

pub struct QkvFusion;

/// What linears must share to fuse.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    x: ValueRef,
    block: Option<u32>,
    bias: Option<DType>,
    weight: DType,
}

/// One linear of a group.
struct Member {
    node: NodeIndex,
    w: ValueRef,
    b: Option<ValueRef>,
    rows: usize,
}

/// Labels of a group folded into one: the common `.`-separated prefix, then
/// the differing suffixes joined by `+`. `None` when no member has a label.
pub fn fused_label(labels: &[Option<String>]) -> Option<String> {
    let ls: Vec<&str> = labels.iter().flatten().map(String::as_str).collect();
    let first = *ls.first()?;
    if ls.iter().all(|l| *l == first) {
        return Some(first.to_string());
    }
    let parts: Vec<Vec<&str>> = ls.iter().map(|l| l.split('.').collect()).collect();
    let common = (0..).take_while(|&i| parts.iter().all(|p| i < p.len() - 1 && p[i] == parts[0][i])).count();
    let suffixes: Vec<String> = parts.iter().map(|p| p[common..].join(".")).collect();
    let joined = suffixes.join("+");
    Some(if common == 0 { joined } else { format!("{}.{joined}", parts[0][..common].join(".")) })
}

/// The member for linear `n`, with its grouping key, or `None` when it may not fuse.
fn member(g: &Graph, n: NodeIndex, wo: &std::collections::HashSet<NodeIndex>) -> Option<(Key, Member)> {
    let node = g.node(n);
    let Op::Linear { bias } = node.op else { return None };
    if node.annotations.iter().any(|a| matches!(a, Annotation::Role(_))) {
        return None;
    }
    let ops = g.operands(n);
    let (x, w, b) = (*ops.first()?, *ops.get(1)?, if bias { Some(*ops.get(2)?) } else { None });
    if wo.contains(&x.node) || !wo.contains(&w.node) || b.is_some_and(|b| !wo.contains(&b.node)) {
        return None;
    }
    let wt = g.value_type(w).ok()?;
    let shape = static_shape(wt)?;
    let &[rows, _] = shape.as_slice() else { return None };
    let bias_dtype = match b {
        Some(b) => {
            let bt = g.value_type(b).ok()?;
            static_shape(bt)?;
            Some(bt.dtype)
        }
        None => None,
    };
    Some((Key { x, block: node.block(), bias: bias_dtype, weight: wt.dtype }, Member { node: n, w, b, rows }))
}

/// Add `op` with block and label set.
fn add(g: &mut Graph, op: Op, operands: &[ValueRef], block: Option<u32>, label: Option<String>) -> Result<NodeIndex, IrError> {
    let n = g.add(op, operands)?;
    let node = g.node_mut(n);
    node.annotations.extend(block.map(Annotation::Block));
    node.label = label;
    Ok(n)
}

/// Replace the group's linears by concat → linear → split.
fn fuse(g: &mut Graph, key: &Key, members: &[Member]) -> Result<(), IrError> {
    let label = fused_label(&members.iter().map(|m| g.node(m.node).label.clone()).collect::<Vec<_>>());
    let sub = |s: &str| label.as_ref().map(|l| format!("{l}.{s}"));
    let ws: Vec<ValueRef> = members.iter().map(|m| m.w).collect();
    let wcat = add(g, Op::Concat { axis: 0 }, &ws, key.block, sub("weight"))?;
    let mut operands = vec![key.x, ValueRef::new(wcat, 0)];
    if key.bias.is_some() {
        let bs: Vec<ValueRef> = members.iter().filter_map(|m| m.b).collect();
        operands.push(ValueRef::new(add(g, Op::Concat { axis: 0 }, &bs, key.block, sub("bias"))?, 0));
    }
    let lin = add(g, Op::Linear { bias: key.bias.is_some() }, &operands, key.block, label.clone())?;
    let rank = g.value_type(ValueRef::new(lin, 0))?.rank();
    let sizes: Vec<Dim> = members.iter().map(|m| Dim::from(m.rows)).collect();
    let split = add(g, Op::Split { axis: rank.saturating_sub(1), sizes }, &[ValueRef::new(lin, 0)], key.block, label)?;
    for (i, m) in members.iter().enumerate() {
        g.replace_all_uses(ValueRef::new(m.node, 0), ValueRef::new(split, i as u32));
        g.remove_node(m.node);
    }
    Ok(())
}

impl Pass for QkvFusion {
    fn name(&self) -> &'static str {
        NAME
    }
    fn summary(&self) -> &'static str {
        "fuse linears that share their input into one linear over concatenated weights and a split"
    }
    fn run_on_graph(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, PassError> {
        let invalid = |e| PassError::Invalid { pass: NAME.into(), source: e };
        let order = g.topo_order().map_err(invalid)?;
        let wo = weight_only_nodes(g, &order, &|_| true);
        let mut index: HashMap<Key, usize> = HashMap::new();
        let mut groups: Vec<(Key, Vec<Member>)> = Vec::new();
        for &n in &order {
            let Some((key, m)) = member(g, n, &wo) else { continue };
            let i = *index.entry(key.clone()).or_insert_with(|| {
                groups.push((key, Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push(m);
        }
        let (mut fused_groups, mut fused_linears) = (0, 0);
        for (key, members) in groups.iter().filter(|(_, ms)| ms.len() >= 2) {
            fuse(g, key, members).map_err(invalid)?;
            fused_groups += 1;
            fused_linears += members.len() as i64;
        }
        cx.stat(NAME, "groups fused", fused_groups);
        cx.stat(NAME, "linears fused", fused_linears);
        Ok(fused_groups > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::fused_label;

    fn label(ls: &[&str]) -> Option<String> {
        fused_label(&ls.iter().map(|l| Some(l.to_string())).collect::<Vec<_>>())
    }

    #[test]
    fn labels_fold_to_prefix_and_suffixes() {
        assert_eq!(label(&["b.0.attn.to_q", "b.0.attn.to_k", "b.0.attn.to_v"]).as_deref(), Some("b.0.attn.to_q+to_k+to_v"));
        assert_eq!(label(&["s.0.proj_mlp", "s.0.attn.to_q"]).as_deref(), Some("s.0.proj_mlp+attn.to_q"));
        assert_eq!(label(&["gate", "up"]).as_deref(), Some("gate+up"));
        assert_eq!(label(&["a.b", "a.b.c"]).as_deref(), Some("a.b+b.c"));
        assert_eq!(label(&["same", "same"]).as_deref(), Some("same"));
        assert_eq!(fused_label(&[None, Some("x.q".into()), Some("x.k".into())]).as_deref(), Some("x.q+k"));
        assert_eq!(fused_label(&[None, None]), None);
    }
}
