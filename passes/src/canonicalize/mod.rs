//! `canonicalize`: bounded e-graph rewriting of tensor algebra.
//!
//! What: the transposes, reshapes, `add`/`sub`/`mul`/`div`, `neg`,
//! `matmul` and `linear` of a stage, with the numel-1 constants they use,
//! go into an `egg` e-graph (`to_egraph.rs`; everything else is an opaque
//! leaf and is never touched). The rules of `rules.rs` run to saturation
//! or to a limit, the cheapest equivalent form is extracted (`cost.rs`)
//! and written back (`from_egraph.rs`). Typical results: transpose pairs
//! cancel or compose, reshape chains collapse, `x·1`, `x+0`, `-(-x)`
//! disappear, scalar scales merge and move into `linear` weights, and
//! `matmul(x, transpose(w))` becomes `linear(x, w)`.
//!
//! Why: model builders emit these patterns when they mirror PyTorch code
//! literally (`q * scale`, `x.transpose().transpose()`, `view` chains);
//! removing them first gives later passes (fusion, layout, codegen)
//! fewer, larger ops to match, and scale folding moves work from every
//! step to compile time (`const-fold` folds `w·c` into a new weight).
//!
//! Guarantees: every rule is type-checked with the IR's inference (no
//! output type or name changes; a type conflict in the e-graph is an
//! error, not a guess); original nodes are reused wherever the extracted
//! form contains them, so annotations (block, roles) and labels survive,
//! roles of a replaced root move to its replacement, and new nodes take
//! the block and label of the node they are built under; where nothing
//! is rewritable the graph is left exactly as it was.
//!
//! Limits (per stage): [`ITER_LIMIT`] iterations, [`NODE_BUDGET`] e-nodes
//! beyond the initial e-graph, [`TIME_LIMIT`] wall time. Stopping early is
//! safe (every union is an equality): the pass just finds less. The time
//! limit makes results depend on machine speed only for very large
//! stages; the fixtures saturate well within it.
//!
//! Statistics (`--stats`, summed over stages): `stop reason: saturated |
//! iteration limit | node limit | time limit` (number of stages that
//! stopped so), `e-nodes` (final e-graph size), `iterations`, `rewrites
//! applied` (new unions by rules), `nodes created`, `operands rewired`,
//! `values replaced`, `nodes removed`.
//!
//! When it does not apply: ops outside the language, multi-result nodes,
//! nodes whose declared type differs from the inferred one, constants
//! with more than one element (they are opaque leaves; a rule needing a
//! scalar does not fire), and any rewrite whose result type would differ.

mod analysis;
mod cost;
mod from_egraph;
mod lang;
mod rules;
#[cfg(test)]
mod tests;
mod to_egraph;

use crate::pass::{Pass, PassContext, PassError};
use cost::RuntimeCost;
use egg::{Extractor, Language, Runner, StopReason};
use lang::TensorLang;
use omnic_ir::{Annotation, Graph, Op, ValueRef};
use petgraph::stable_graph::NodeIndex;
use std::collections::HashSet;
use std::time::Duration;

/// Rule iterations per stage.
pub const ITER_LIMIT: usize = 8;
/// E-nodes the e-graph may grow by beyond its initial size.
pub const NODE_BUDGET: usize = 10_000;
/// Wall time for rewriting one stage.
pub const TIME_LIMIT: Duration = Duration::from_millis(200);

const NAME: &str = "canonicalize";

pub struct Canonicalize;

fn failed(message: String) -> PassError {
    PassError::Failed { pass: NAME.into(), message }
}

fn invalid(source: omnic_ir::IrError) -> PassError {
    PassError::Invalid { pass: NAME.into(), source }
}

fn stop_name(r: &Option<StopReason>) -> &'static str {
    match r {
        Some(StopReason::Saturated) => "saturated",
        Some(StopReason::IterationLimit(_)) => "iteration limit",
        Some(StopReason::NodeLimit(_)) => "node limit",
        Some(StopReason::TimeLimit(_)) => "time limit",
        Some(StopReason::Other(_)) | None => "other",
    }
}

/// Nodes with at least one use or naming an output.
fn used_nodes(g: &Graph) -> HashSet<NodeIndex> {
    g.g.node_indices().filter(|&n| !g.users(n).is_empty() || g.outputs.iter().any(|(_, v)| v.node == n)).collect()
}

/// Remove nodes that had uses before the rewrite and have none now
/// (inputs stay: they are the signature), then their newly dead operands.
fn remove_dead(g: &mut Graph, had_uses: &HashSet<NodeIndex>) -> i64 {
    let mut work: Vec<NodeIndex> = had_uses.iter().copied().collect();
    work.sort();
    let mut removed = 0;
    while let Some(n) = work.pop() {
        if !g.contains(n) || matches!(g.node(n).op, Op::Input { .. }) || !g.users(n).is_empty() || g.outputs.iter().any(|(_, v)| v.node == n) {
            continue;
        }
        let preds: Vec<NodeIndex> = g.operands(n).iter().map(|v| v.node).filter(|p| had_uses.contains(p)).collect();
        g.remove_node(n);
        removed += 1;
        work.extend(preds);
    }
    removed
}

/// Redirect the uses of `root` to `v` and move `root`'s roles along.
fn replace(g: &mut Graph, root: ValueRef, v: ValueRef) {
    g.replace_all_uses(root, v);
    let roles: Vec<Annotation> = g.node(root.node).annotations.iter().filter(|a| matches!(a, Annotation::Role(_))).cloned().collect();
    let target = g.node_mut(v.node);
    for r in roles {
        if !target.annotations.contains(&r) {
            target.annotations.push(r);
        }
    }
}

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        NAME
    }
    fn summary(&self) -> &'static str {
        "simplify transposes, reshapes, identities and scales by bounded e-graph rewriting"
    }
    fn run_on_graph(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, PassError> {
        let rules = rules::rules().map_err(failed)?;
        let region = to_egraph::region(g).map_err(invalid)?;
        let initial = region.egraph.total_size();
        let runner = Runner::default()
            .with_egraph(region.egraph)
            .with_iter_limit(ITER_LIMIT)
            .with_node_limit(initial + NODE_BUDGET)
            .with_time_limit(TIME_LIMIT)
            .run(&rules);
        let applied: usize = runner.iterations.iter().flat_map(|it| it.applied.values()).sum();
        cx.stat(NAME, &format!("stop reason: {}", stop_name(&runner.stop_reason)), 1);
        cx.stat(NAME, "iterations", runner.iterations.len() as i64);
        cx.stat(NAME, "rewrites applied", applied as i64);
        let mut eg = runner.egraph;
        eg.rebuild();
        cx.stat(NAME, "e-nodes", eg.total_size() as i64);
        if eg.analysis.conflicts > 0 {
            return Err(failed(format!("{} e-class merges joined different types (a rule is unsound)", eg.analysis.conflicts)));
        }

        let original: HashSet<TensorLang> = region.originals.iter().map(|(e, _)| e.clone().map_children(|c| eg.find(c))).collect();
        let extractor = Extractor::new(&eg, RuntimeCost { egraph: &eg, original: &original });
        let pick = |c| extractor.find_best_node(c).clone();
        let mut work = g.clone();
        let had_uses = used_nodes(&work);
        let mut rb = from_egraph::Rebuild::new(&mut work, &eg, &pick, &region.originals);
        let mut replaced = Vec::new();
        for &root in &region.roots {
            let class = *region.class_of.get(&root).ok_or_else(|| failed(format!("root node {} has no e-class", root.node.index())))?;
            let v = rb.root(root, class)?;
            if v != root {
                replaced.push((root, v));
            }
        }
        let (created, rewired) = (rb.created, rb.rewired);
        for &(root, v) in &replaced {
            replace(&mut work, root, v);
        }
        let removed = remove_dead(&mut work, &had_uses);
        cx.stat(NAME, "nodes created", created);
        cx.stat(NAME, "operands rewired", rewired);
        cx.stat(NAME, "values replaced", replaced.len() as i64);
        cx.stat(NAME, "nodes removed", removed);
        let changed = created + rewired + removed > 0 || !replaced.is_empty();
        if changed {
            omnic_ir::verify::verify_graph(&work).map_err(invalid)?;
            *g = work;
        }
        Ok(changed)
    }
}
