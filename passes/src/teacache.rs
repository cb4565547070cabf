//! `teacache`: a step-skipping cache for the block stack of a denoise loop
//! (TeaCache, Liu et al., arXiv 2411.19108, as vLLM-Omni applies it).
//!
//! What: splits the body stage of a `denoise` control at the importer's
//! annotations into three stages and records a TeaCache policy in the
//! control:
//! - `<body>.pre`: everything the block stack's inputs and the first
//!   block's modulated input (`role(modulated_input)`) depend on: the
//!   embeddings, the conditioning and block 0's modulation. Its outputs are
//!   the modulated input, the streams entering the stack
//!   (`role(residual_in)`) and whatever the later stages read from it;
//! - `<body>.blocks`: the rest of what the streams leaving the stack
//!   (`role(residual_out)`) depend on;
//! - `<body>.post`: the rest (output head).
//!
//! Every node lands in exactly one stage, so running the three in turn
//! computes exactly what the body computed (weights and constants are
//! repeated in the stages that read them; values crossing stages are
//! stage outputs / inputs named `body%k` / `body%k#p` after their
//! text-form name in the body). Roles on a multi-result node apply to all its results:
//! FLUX's last single block splits the joint stream into text and image,
//! and both are residual streams. Each stream leaving the stack is paired
//! with the stream of the same type entering it; its residual (out − in)
//! is what the runtime caches (both streams of dual-stream models).
//!
//! At run time (`omnic_runtime::program::denoise`) each model call runs
//! `pre`, accumulates the polynomial-rescaled relative L1 change of the
//! modulated input per guidance branch, and runs `blocks` or adds the
//! cached residuals, then `post`.
//!
//! Options: `threshold` (default 0.25; the runtime can override it; 0
//! never skips), `coefficients` (comma-separated, highest power first).
//! Without coefficients the model family chooses them
//! (`program.metadata["family"]`): `flux` and `longcat` (FLUX.1's blocks)
//! take the published FLUX.1 polynomial, `qwenimage` the Qwen-Image one;
//! any other family needs a calibration (`omnic calibrate teacache`,
//! `omnic_runtime::program::teacache_calibrate`) and is refused without one.
//!
//! When it does not apply: the control is not `denoise` or already has a
//! cache (unchanged). It fails with a clear error when the body lacks the
//! annotations (one live `modulated_input`, at least one `residual_in` and
//! `residual_out`), when the output head reads something computed inside
//! the stack other than the residual streams, or when the graph already
//! carries dispatch regions (run it before `dispatch-formation`).

use crate::pass::{Pass, PassContext, PassError};
use omnic_ir::eval::{evaluate, Precision, Tensor, WeightStore};
use omnic_ir::shape::Dim;
use omnic_ir::verify::{value_names, value_ref_name, verify_graph};
use omnic_ir::{Annotation, CachePolicy, Control, Graph, Op, Program, Role, Stage, TeaCacheSpec, ValueRef};
use petgraph::stable_graph::NodeIndex;
use petgraph::Direction;
use std::collections::{BTreeSet, HashMap, HashSet};

/// TeaCache4FLUX's rescaling polynomial (FLUX.1-dev), highest power first.
pub const FLUX_COEFFICIENTS: [f64; 5] = [498.651651, -283.781631, 55.8554382, -3.82021401, 0.264230861];
/// The Qwen-Image rescaling polynomial, highest power first.
pub const QWEN_IMAGE_COEFFICIENTS: [f64; 5] = [-450.0, 280.0, -45.0, 3.2, -0.02];
/// Threshold when none is given (TeaCache4FLUX's 0.25: about 1.5× fewer stack evaluations).
pub const DEFAULT_THRESHOLD: f64 = 0.25;

/// The published coefficients for a model family, if any.
pub fn family_coefficients(family: &str) -> Option<&'static [f64]> {
    match family {
        "flux" | "longcat" => Some(&FLUX_COEFFICIENTS),
        "qwenimage" => Some(&QWEN_IMAGE_COEFFICIENTS),
        _ => None,
    }
}

#[derive(Clone, Debug)]
pub struct TeaCache {
    pub threshold: f64,
    /// Overrides the family's coefficients.
    pub coefficients: Option<Vec<f64>>,
}

impl Default for TeaCache {
    fn default() -> Self {
        TeaCache { threshold: DEFAULT_THRESHOLD, coefficients: None }
    }
}

/// The body split at its block stack.
#[derive(Clone, Debug)]
pub struct Split {
    pub pre: Graph,
    pub blocks: Graph,
    pub post: Graph,
    /// Output of `pre` holding the modulated input.
    pub modulated: String,
    /// (output of `pre` entering the stack, output of `blocks` leaving it).
    pub residuals: Vec<(String, String)>,
}

/// `roots` and everything they depend on.
fn ancestors(g: &Graph, roots: impl IntoIterator<Item = NodeIndex>) -> HashSet<NodeIndex> {
    let mut seen = HashSet::new();
    let mut stack: Vec<NodeIndex> = roots.into_iter().collect();
    while let Some(n) = stack.pop() {
        if seen.insert(n) {
            stack.extend(g.g.neighbors_directed(n, Direction::Incoming));
        }
    }
    seen
}

/// Name of body value `v` where it crosses between stages: `body%k` or
/// `body%k#p` (its text-form name in the body).
fn cross_name(g: &Graph, names: &HashMap<NodeIndex, usize>, v: ValueRef) -> String {
    format!("body{}", value_ref_name(g, names, v))
}

/// Symbols a node needs bound: in its result types and dimension attributes.
fn node_symbols(op: &Op, types: &[omnic_ir::TensorType], out: &mut Vec<String>) {
    let dims: Vec<&Dim> = match op {
        Op::Iota { len, .. } => vec![len],
        Op::Reshape { shape } | Op::Expand { shape } => shape.iter().collect(),
        Op::Split { sizes, .. } => sizes.iter().collect(),
        Op::Slice { start, end, .. } => vec![start, end],
        Op::Input { ty, .. } | Op::Param { ty, .. } => ty.shape.iter().collect(),
        _ => vec![],
    };
    dims.into_iter().chain(types.iter().flat_map(|t| t.shape.iter())).for_each(|d| d.symbols(out));
}

/// Builds one stage from the body's nodes in `set`.
struct Builder<'g> {
    g: &'g Graph,
    names: &'g HashMap<NodeIndex, usize>,
    out: Graph,
    map: HashMap<NodeIndex, NodeIndex>,
    inputs: HashMap<String, NodeIndex>,
}

impl<'g> Builder<'g> {
    fn new(g: &'g Graph, names: &'g HashMap<NodeIndex, usize>) -> Self {
        Builder { g, names, out: Graph::new(), map: HashMap::new(), inputs: HashMap::new() }
    }

    fn input(&mut self, name: &str, ty: &omnic_ir::TensorType) -> NodeIndex {
        if let Some(&n) = self.inputs.get(name) {
            return n;
        }
        let n = self.out.add_unchecked(Op::Input { name: name.to_string(), ty: ty.clone() }, &[], vec![ty.clone()]);
        self.inputs.insert(name.to_string(), n);
        n
    }

    /// The value `v` of the body inside this stage: a node of the stage, a
    /// repeated source, or a stage input.
    fn value(&mut self, v: ValueRef) -> Result<ValueRef, String> {
        if let Some(&n) = self.map.get(&v.node) {
            return Ok(ValueRef::new(n, v.port));
        }
        let node = self.g.node(v.node);
        let n = match &node.op {
            Op::Input { name, ty } => self.input(name, ty),
            op if op.is_source() => {
                let n = self.out.add_unchecked(op.clone(), &[], node.outputs.clone());
                let nw = self.out.node_mut(n);
                nw.annotations = node.annotations.clone();
                nw.label = node.label.clone();
                self.map.insert(v.node, n);
                return Ok(ValueRef::new(n, v.port));
            }
            _ => {
                let ty = self.g.value_type(v).map_err(|e| e.to_string())?.clone();
                return Ok(ValueRef::new(self.input(&cross_name(self.g, self.names, v), &ty), 0));
            }
        };
        Ok(ValueRef::new(n, v.port))
    }

    /// Copy the nodes of `set` (in `order`), then name `outputs`.
    fn build(mut self, order: &[NodeIndex], set: &HashSet<NodeIndex>, outputs: &[(String, ValueRef)]) -> Result<Graph, String> {
        for &n in order.iter().filter(|n| set.contains(n)) {
            let node = self.g.node(n);
            let operands = self.g.operands(n).into_iter().map(|v| self.value(v)).collect::<Result<Vec<_>, _>>()?;
            let m = self.out.add_unchecked(node.op.clone(), &operands, node.outputs.clone());
            let nw = self.out.node_mut(m);
            nw.annotations = node.annotations.clone();
            nw.label = node.label.clone();
            self.map.insert(n, m);
        }
        for (name, v) in outputs {
            let w = self.value(*v)?;
            self.out.outputs.push((name.clone(), w));
        }
        // Symbols the stage uses must be bound by its inputs: add the body
        // inputs that bind the missing ones.
        let mut needed = Vec::new();
        let mut bound = HashSet::new();
        for n in self.out.g.node_indices() {
            let node = self.out.node(n);
            node_symbols(&node.op, &node.outputs, &mut needed);
            if let Op::Input { ty, .. } = &node.op {
                bound.extend(ty.shape.iter().filter_map(|d| if let Dim::Sym(s) = d { Some(s.to_string()) } else { None }));
            }
        }
        for s in needed.into_iter().collect::<BTreeSet<_>>() {
            if bound.contains(&s) {
                continue;
            }
            let binder = self.g.inputs().into_iter().find_map(|(name, n)| match &self.g.node(n).op {
                Op::Input { ty, .. } if ty.shape.iter().any(|d| matches!(d, Dim::Sym(x) if **x == *s)) => Some((name, ty.clone())),
                _ => None,
            });
            let Some((name, ty)) = binder else { return Err(format!("no body input binds the symbol `{s}`")) };
            self.input(&name, &ty);
            bound.extend(ty.shape.iter().filter_map(|d| if let Dim::Sym(x) = d { Some(x.to_string()) } else { None }));
        }
        verify_graph(&self.out).map_err(|e| format!("split stage does not verify: {e}"))?;
        Ok(self.out)
    }
}

/// Split a model graph at its block stack (see the module doc).
pub fn split_block_stack(g: &Graph) -> Result<Split, String> {
    let order = g.topo_order().map_err(|e| e.to_string())?;
    let names = value_names(g).map_err(|e| e.to_string())?;
    if g.g.node_indices().any(|n| g.node(n).annotations.iter().any(|a| matches!(a, Annotation::Dispatch(_) | Annotation::Buffer { .. }))) {
        return Err("the graph already has dispatch regions or buffers: run teacache before dispatch-formation and memory-plan".into());
    }
    let live = ancestors(g, g.outputs.iter().map(|(_, v)| v.node));
    let with_role = |r: Role| -> Vec<NodeIndex> { order.iter().copied().filter(|n| live.contains(n) && g.node(*n).has_role(&r)).collect() };
    let values =
        |ns: &[NodeIndex]| -> Vec<ValueRef> { ns.iter().flat_map(|&n| (0..g.node(n).outputs.len() as u32).map(move |p| ValueRef::new(n, p))).collect() };
    let m_nodes = with_role(Role::ModulatedInput);
    let [m_node] = m_nodes[..] else {
        return Err(format!("expected exactly one live value with role(modulated_input), found {}", m_nodes.len()));
    };
    if g.node(m_node).outputs.len() != 1 {
        return Err("the role(modulated_input) node has several results".into());
    }
    let (rin, rout) = (with_role(Role::ResidualIn), with_role(Role::ResidualOut));
    if rin.is_empty() || rout.is_empty() {
        return Err("the graph has no live role(residual_in) / role(residual_out) values marking its block stack".into());
    }
    let is_compute = |n: &NodeIndex| !g.node(*n).op.is_source();
    let pre: HashSet<NodeIndex> = ancestors(g, rin.iter().copied().chain([m_node])).into_iter().filter(is_compute).collect();
    if rout.iter().any(|n| pre.contains(n)) {
        return Err("a role(residual_out) value is computed before the block stack starts".into());
    }
    let blocks: HashSet<NodeIndex> = ancestors(g, rout.iter().copied()).into_iter().filter(|n| is_compute(n) && !pre.contains(n)).collect();
    let post: HashSet<NodeIndex> = live.iter().copied().filter(|n| is_compute(n) && !pre.contains(n) && !blocks.contains(n)).collect();
    let vname = |v: ValueRef| cross_name(g, &names, v);
    let ty = |v: ValueRef| g.value_type(v).map_err(|e| e.to_string());

    // Pair each stream leaving the stack with one of the same type entering it.
    let ins = values(&rin);
    let mut used = vec![false; ins.len()];
    let mut pairs = Vec::new();
    for o in values(&rout) {
        let to = ty(o)?;
        let mut found = None;
        for (i, &v) in ins.iter().enumerate() {
            if !used[i] && ty(v)? == to {
                found = Some(i);
                break;
            }
        }
        let Some(i) = found else { return Err(format!("role(residual_out) value {} ({to}) has no role(residual_in) value of the same type", vname(o))) };
        used[i] = true;
        pairs.push((ins[i], o));
    }
    let outs: HashSet<ValueRef> = pairs.iter().map(|(_, o)| *o).collect();

    // Values crossing stage boundaries, in body order.
    let pos: HashMap<NodeIndex, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let key = |v: ValueRef| (pos[&v.node], v.port, v);
    let mut from_pre: BTreeSet<(usize, u32, ValueRef)> = BTreeSet::new();
    let mut from_blocks: BTreeSet<(usize, u32, ValueRef)> = BTreeSet::new();
    from_pre.insert(key(ValueRef::new(m_node, 0)));
    for (i, o) in &pairs {
        from_pre.insert(key(*i));
        from_blocks.insert(key(*o));
    }
    for &n in blocks.iter().chain(&post) {
        for v in g.operands(n) {
            if pre.contains(&v.node) {
                from_pre.insert(key(v));
            } else if blocks.contains(&v.node) && post.contains(&n) {
                if !outs.contains(&v) {
                    return Err(format!("the output head reads {} from inside the block stack, which is not a residual stream", vname(v)));
                }
                from_blocks.insert(key(v));
            }
        }
    }
    for (name, v) in &g.outputs {
        if pre.contains(&v.node) {
            from_pre.insert(key(*v));
        } else if blocks.contains(&v.node) && !outs.contains(v) {
            return Err(format!("output `{name}` is computed inside the block stack (import without intermediates)"));
        } else if blocks.contains(&v.node) {
            from_blocks.insert(key(*v));
        }
    }
    let named = |set: &BTreeSet<(usize, u32, ValueRef)>| -> Vec<(String, ValueRef)> { set.iter().map(|&(_, _, v)| (vname(v), v)).collect() };
    let pre_g = Builder::new(g, &names).build(&order, &pre, &named(&from_pre))?;
    let blocks_g = Builder::new(g, &names).build(&order, &blocks, &named(&from_blocks))?;
    let post_g = Builder::new(g, &names).build(&order, &post, &g.outputs)?;
    Ok(Split {
        pre: pre_g,
        blocks: blocks_g,
        post: post_g,
        modulated: vname(ValueRef::new(m_node, 0)),
        residuals: pairs.iter().map(|(i, o)| (vname(*i), vname(*o))).collect(),
    })
}

/// Evaluate one model call of a denoise program's body (the body stage, or
/// its TeaCache split run in turn without skipping) on named inputs.
pub fn evaluate_denoise_body(p: &Program, inputs: &HashMap<String, Tensor>, w: &dyn WeightStore, prec: Precision) -> Result<HashMap<String, Tensor>, String> {
    let Control::Denoise(d) = &p.control else { return Err("the program has no denoise control".into()) };
    let stage = |n: &str| p.stage(n).map(|s| &s.graph).ok_or_else(|| format!("no stage `{n}`"));
    let run = |n: &str, env: &HashMap<String, Tensor>| evaluate(stage(n)?, env, w, prec).map_err(|e| format!("stage `{n}`: {e}"));
    match d.teacache() {
        None => run(&d.body, inputs),
        Some(t) => {
            let mut env = inputs.clone();
            env.extend(run(&t.pre, &env)?);
            env.extend(run(&t.blocks, &env)?);
            run(&t.post, &env)
        }
    }
}

fn parse_list(s: &str) -> Result<Vec<f64>, String> {
    s.split(',').map(|x| x.trim().parse::<f64>().map_err(|_| format!("`{x}` is not a number"))).collect()
}

impl Pass for TeaCache {
    fn name(&self) -> &'static str {
        "teacache"
    }
    fn summary(&self) -> &'static str {
        "split a denoise loop's model at its block stack and skip the stack while the modulated input barely changes (TeaCache)"
    }
    fn run_on_graph(&self, _g: &mut Graph, _cx: &mut PassContext) -> Result<bool, PassError> {
        Ok(false)
    }
    fn with_options(&self, options: &[(String, String)]) -> Result<Box<dyn Pass>, PassError> {
        let fail = |m: String| PassError::Failed { pass: "teacache".into(), message: m };
        let mut out = self.clone();
        for (k, v) in options {
            match k.as_str() {
                "threshold" => {
                    out.threshold = v.parse::<f64>().ok().filter(|t| t.is_finite()).ok_or_else(|| fail(format!("threshold `{v}` is not a finite number")))?
                }
                "coefficients" => {
                    let c = parse_list(v).map_err(|e| fail(format!("coefficients: {e}")))?;
                    if c.iter().any(|x| !x.is_finite()) {
                        return Err(fail("coefficients must be finite".into()));
                    }
                    out.coefficients = Some(c);
                }
                other => return Err(fail(format!("unknown option `{other}` (expected `threshold` or `coefficients`)"))),
            }
        }
        Ok(Box::new(out))
    }
    fn run(&self, p: &mut Program, cx: &mut PassContext) -> Result<bool, PassError> {
        let fail = |m: String| PassError::Failed { pass: self.name().into(), message: m };
        let Control::Denoise(d) = &p.control else { return Ok(false) };
        if d.cache.is_some() {
            return Ok(false);
        }
        let coefficients = match &self.coefficients {
            Some(c) => c.clone(),
            None => {
                let fam = p.metadata.get("family").map(String::as_str).unwrap_or("(none)");
                family_coefficients(fam)
                    .ok_or_else(|| {
                        fail(format!(
                            "model family `{fam}` has no published TeaCache coefficients; calibrate the rescaling polynomial \
                             (`omnic calibrate teacache DIR -o FILE`, then `omnic compile DIR --teacache \
                             --teacache-coefficients FILE`) or pass `teacache{{coefficients=c4,c3,c2,c1,c0}}`"
                        ))
                    })?
                    .to_vec()
            }
        };
        let body = d.body.clone();
        let idx = p.stages.iter().position(|s| s.name == body).ok_or_else(|| fail(format!("no body stage `{body}`")))?;
        let split = split_block_stack(&p.stages[idx].graph).map_err(|m| fail(format!("stage `{body}`: {m}")))?;
        let [pre, blocks, post] = ["pre", "blocks", "post"].map(|s| format!("{body}.{s}"));
        for n in [&pre, &blocks, &post] {
            if p.stage(n).is_some() {
                return Err(fail(format!("stage `{n}` already exists")));
            }
        }
        for (what, g) in [("pre nodes", &split.pre), ("block-stack nodes", &split.blocks), ("post nodes", &split.post)] {
            cx.stat(self.name(), what, g.op_count() as i64);
        }
        cx.stat(self.name(), "residual streams", split.residuals.len() as i64);
        let stages = [(pre.clone(), split.pre), (blocks.clone(), split.blocks), (post.clone(), split.post)].map(|(name, graph)| Stage { name, graph });
        p.stages.splice(idx..idx + 1, stages);
        if let Control::Denoise(d) = &mut p.control {
            d.cache = Some(CachePolicy::TeaCache(TeaCacheSpec {
                threshold: self.threshold,
                coefficients,
                pre,
                blocks,
                post,
                modulated: split.modulated,
                residuals: split.residuals,
            }));
        }
        Ok(true)
    }
}
