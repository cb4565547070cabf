//! `memory-plan`: liveness-based buffer assignment for activations.
//!
//! What: walks the dispatch schedule ([`omnic_ir::regions::schedule`]:
//! regions in order, and any compute op outside a region as a step of its
//! own) and gives every *materialised* value a buffer: a region's outputs
//! (values used by a later step or returned by the stage). Values internal
//! to a region stay in registers and get none; stage inputs, weights,
//! constants and iotas are not activations and get none either. A value
//! lives from the step that writes it to the last step that reads it
//! (stage outputs to the end). Buffers are assigned greedily in schedule
//! order: a step's outputs take the lowest-numbered free buffer of the
//! same size, else a new buffer; buffers whose values are dead after the
//! step are freed after it (never during it: a kernel reads its inputs
//! while it writes its outputs, so there is no in-place reuse).
//!
//! Sizes are symbolic (`batch·img_seq·128` bytes), so the plan reuses a
//! buffer only for a value whose byte size is *the same expression*
//! (canonical [`Dim`] equality): the plan is then valid at every binding of
//! the symbols and code generation allocates each buffer at run time from
//! its size expression. (Planning offsets at one concrete binding would
//! share more, but would have to be redone for every shape.)
//!
//! The result is stored on the IR as `#buffer(id)` annotations on the
//! nodes defining materialised values (`#buffer(id, result=p)` for result
//! `p` of a multi-result node); [`read_plan`] gives codegen the buffers with
//! their sizes and values back, and checks the annotations against the
//! schedule (no two values of a buffer are live at once, sizes agree).
//!
//! Why: a DiT block creates hundreds of activations of a handful of sizes;
//! without reuse every one of them needs memory of its own.
//!
//! When it does not apply: stages without compute ops get no buffers. Run
//! it after `dispatch-formation` (without regions every op's result is
//! materialised) and last: passes that change the graph afterwards do not
//! maintain the plan (rerunning `memory-plan` rebuilds it from scratch).
//!
//! Statistics, at a binding of the symbols (the pass context's `dims`,
//! which `omnic opt` fills from `--dims` or a fixture's `io.safetensors`;
//! any other symbol is bound to [`DEFAULT_DIM`]): `buffers`, `peak
//! activation bytes` (the plan's footprint: the sum of its buffers' sizes),
//! `peak live bytes` (the most bytes live at one step, a lower bound for any
//! plan), `sum of materialised bytes` (region outputs without reuse), `sum
//! of intermediate bytes` (every compute op's results, as an unfused,
//! unplanned run would hold them) and `peak per 100 intermediate bytes`
//! (the ratio, rounded up).

use crate::pass::{Pass, PassContext, PassError};
use omnic_ir::regions::{region_outputs, schedule, Step};
use omnic_ir::shape::Bindings;
use omnic_ir::{Annotation, Dim, Graph, IrError, Program, TensorType, ValueRef};
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::{BTreeMap, BTreeSet, HashMap};

const NAME: &str = "memory-plan";

/// Value of every symbol the pass context does not bind, for statistics.
pub const DEFAULT_DIM: i64 = 64;

pub struct MemoryPlan;

/// A materialised value and its live range, in schedule steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Live {
    pub value: ValueRef,
    /// Byte size as a symbolic expression.
    pub bytes: Dim,
    /// The step that writes it.
    pub def: usize,
    /// The last step that reads it (the number of steps for stage outputs).
    pub last_use: usize,
}

/// Byte size of a tensor type.
pub fn size_bytes(t: &TensorType) -> Dim {
    Dim::product(&t.shape).mul(&Dim::Const(t.dtype.size_bytes() as i64))
}

/// The schedule and the live range of every materialised value (ordered by
/// step, then region output order).
pub fn liveness(g: &Graph) -> Result<(Vec<Step>, Vec<Live>), IrError> {
    let steps = schedule(g)?;
    let mut members: Vec<Vec<NodeIndex>> = vec![Vec::new(); steps.len()];
    let index: HashMap<Step, usize> = steps.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    let mut step_of: HashMap<NodeIndex, usize> = HashMap::new();
    for n in g.topo_order()? {
        let node = g.node(n);
        let step = match node.dispatch() {
            Some(k) => Step::Region(k),
            None if node.op.is_source() => continue,
            None => Step::Node(n),
        };
        let i = index[&step];
        members[i].push(n);
        step_of.insert(n, i);
    }
    let mut out = Vec::new();
    for (i, ms) in members.iter().enumerate() {
        for v in region_outputs(g, ms) {
            let mut last_use =
                g.g.edges_directed(v.node, Direction::Outgoing)
                    .filter(|e| e.weight().port == v.port)
                    .filter_map(|e| step_of.get(&e.target()).copied())
                    .filter(|&s| s != i)
                    .max()
                    .unwrap_or(i);
            if g.outputs.iter().any(|(_, o)| *o == v) {
                last_use = steps.len();
            }
            out.push(Live { value: v, bytes: size_bytes(g.value_type(v)?), def: i, last_use });
        }
    }
    Ok((steps, out))
}

/// A buffer of the plan: its size and the values it holds, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub bytes: Dim,
    pub values: Vec<ValueRef>,
}

/// Greedy assignment over `live` (see the module doc): buffer id of each
/// value, and the buffers.
pub fn assign(live: &[Live], steps: usize) -> (Vec<u32>, Vec<Buffer>) {
    let mut buffers: Vec<Buffer> = Vec::new();
    let mut free: BTreeMap<Dim, BTreeSet<u32>> = BTreeMap::new();
    let mut ending: Vec<Vec<u32>> = vec![Vec::new(); steps + 1];
    let mut of = Vec::with_capacity(live.len());
    let mut i = 0;
    for step in 0..steps {
        while i < live.len() && live[i].def == step {
            let l = &live[i];
            let id = match free.get_mut(&l.bytes).and_then(|s| s.pop_first()) {
                Some(id) => id,
                None => {
                    buffers.push(Buffer { bytes: l.bytes.clone(), values: Vec::new() });
                    buffers.len() as u32 - 1
                }
            };
            buffers[id as usize].values.push(l.value);
            ending[l.last_use].push(id);
            of.push(id);
            i += 1;
        }
        for &id in &ending[step] {
            free.entry(buffers[id as usize].bytes.clone()).or_default().insert(id);
        }
    }
    (of, buffers)
}

/// Sizes of a plan at one binding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub buffers: u64,
    /// Sum of buffer sizes: what the plan allocates.
    pub peak_bytes: u64,
    /// Most bytes live during one step.
    pub peak_live_bytes: u64,
    /// Sum of materialised values' sizes (no reuse).
    pub materialised_bytes: u64,
    /// Sum of every compute op's result sizes (no fusion, no reuse).
    pub intermediate_bytes: u64,
}

/// `b`, with every other symbol of `g` bound to [`DEFAULT_DIM`].
pub fn planning_binding(g: &Graph, b: &Bindings) -> Bindings {
    let mut out = b.clone();
    let mut syms = Vec::new();
    for node in g.g.node_weights() {
        for t in &node.outputs {
            t.shape.iter().for_each(|d| d.symbols(&mut syms));
        }
    }
    for s in syms {
        out.entry(s).or_insert(DEFAULT_DIM);
    }
    out
}

/// Evaluate a plan's sizes at `b` (which must bind every symbol).
pub fn report(g: &Graph, live: &[Live], buffers: &[Buffer], steps: usize, b: &Bindings) -> Result<Report, String> {
    let eval = |d: &Dim| d.eval(b).map(|v| v.max(0) as u64);
    let mut r = Report { buffers: buffers.len() as u64, ..Default::default() };
    for buf in buffers {
        r.peak_bytes += eval(&buf.bytes)?;
    }
    let mut delta = vec![0i128; steps + 2];
    for l in live {
        let s = eval(&l.bytes)?;
        r.materialised_bytes += s;
        delta[l.def] += s as i128;
        delta[l.last_use + 1] -= s as i128;
    }
    let mut cur = 0i128;
    for d in delta {
        cur += d;
        r.peak_live_bytes = r.peak_live_bytes.max(cur as u64);
    }
    for node in g.g.node_weights().filter(|n| !n.op.is_source()) {
        for t in &node.outputs {
            r.intermediate_bytes += eval(&size_bytes(t))?;
        }
    }
    Ok(r)
}

/// Plan `g`, replacing any `#buffer` annotations; returns the report at
/// `b` (completed by [`planning_binding`]) and whether annotations changed.
pub fn plan_graph(g: &mut Graph, b: &Bindings) -> Result<(Report, bool), PassError> {
    let (steps, live) = liveness(g).map_err(|e| PassError::Invalid { pass: NAME.into(), source: e })?;
    let (of, buffers) = assign(&live, steps.len());
    let rep = report(g, &live, &buffers, steps.len(), &planning_binding(g, b)).map_err(|m| PassError::Failed { pass: NAME.into(), message: m })?;
    let nodes: Vec<NodeIndex> = g.g.node_indices().collect();
    let before: Vec<Vec<Annotation>> = nodes.iter().map(|&n| g.node(n).annotations.clone()).collect();
    for &n in &nodes {
        g.node_mut(n).annotations.retain(|a| !matches!(a, Annotation::Buffer { .. }));
    }
    for (l, id) in live.iter().zip(of) {
        g.node_mut(l.value.node).annotations.push(Annotation::Buffer { id, result: l.value.port });
    }
    let changed = nodes.iter().zip(&before).any(|(&n, a)| g.node(n).annotations != *a);
    Ok((rep, changed))
}

/// The plan recorded in `g`'s `#buffer` annotations, by buffer id, checked
/// against the schedule: every materialised value has a buffer, no other
/// value has one, a buffer's values have the same size and never live at
/// the same time. This is what code generation allocates from.
pub fn read_plan(g: &Graph) -> Result<BTreeMap<u32, Buffer>, String> {
    let (_, live) = liveness(g).map_err(|e| e.to_string())?;
    let names = omnic_ir::verify::value_names(g).map_err(|e| e.to_string())?;
    let name = |v: ValueRef| omnic_ir::verify::value_ref_name(g, &names, v);
    let by_value: HashMap<ValueRef, &Live> = live.iter().map(|l| (l.value, l)).collect();
    let mut tenants: BTreeMap<u32, Vec<&Live>> = BTreeMap::new();
    for n in g.topo_order().map_err(|e| e.to_string())? {
        for a in &g.node(n).annotations {
            let Annotation::Buffer { id, result } = a else { continue };
            let v = ValueRef::new(n, *result);
            let l = by_value.get(&v).ok_or_else(|| format!("{} has buffer {id} but is not materialised", name(v)))?;
            tenants.entry(*id).or_default().push(l);
        }
    }
    let annotated: usize = tenants.values().map(Vec::len).sum();
    if annotated != live.len() {
        let missing: Vec<String> = live.iter().filter(|l| g.node(l.value.node).buffer(l.value.port).is_none()).map(|l| name(l.value)).collect();
        return Err(format!("materialised values without a buffer: {}", missing.join(", ")));
    }
    let mut out = BTreeMap::new();
    for (id, mut ls) in tenants {
        ls.sort_by_key(|l| l.def);
        for w in ls.windows(2) {
            if w[1].bytes != w[0].bytes {
                return Err(format!("buffer {id} holds {} of {} bytes and {} of {} bytes", name(w[0].value), w[0].bytes, name(w[1].value), w[1].bytes));
            }
            if w[1].def <= w[0].last_use {
                return Err(format!("buffer {id}: {} is written while {} is still live", name(w[1].value), name(w[0].value)));
            }
        }
        out.insert(id, Buffer { bytes: ls[0].bytes.clone(), values: ls.iter().map(|l| l.value).collect() });
    }
    Ok(out)
}

impl Pass for MemoryPlan {
    fn name(&self) -> &'static str {
        NAME
    }
    fn summary(&self) -> &'static str {
        "assign activation buffers by liveness over the dispatch schedule, reusing dead buffers of equal size"
    }
    fn run_on_graph(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, PassError> {
        let (r, changed) = plan_graph(g, &cx.dims)?;
        let stats = [
            ("buffers", r.buffers),
            ("peak activation bytes", r.peak_bytes),
            ("peak live bytes", r.peak_live_bytes),
            ("sum of materialised bytes", r.materialised_bytes),
            ("sum of intermediate bytes", r.intermediate_bytes),
        ];
        for (what, n) in stats {
            cx.stat(NAME, what, n.min(i64::MAX as u64) as i64);
        }
        Ok(changed)
    }
    fn run(&self, p: &mut Program, cx: &mut PassContext) -> Result<bool, PassError> {
        let mut changed = false;
        for st in &mut p.stages {
            changed |= self.run_on_graph(&mut st.graph, cx)?;
        }
        let get = |cx: &PassContext, what: &str| cx.stats.get(&(NAME.to_string(), what.to_string())).copied().unwrap_or(0);
        let (peak, sum) = (get(cx, "peak activation bytes"), get(cx, "sum of intermediate bytes"));
        if sum > 0 {
            cx.set_stat(NAME, "peak per 100 intermediate bytes", ((100 * peak as i128 + sum as i128 - 1) / sum as i128) as i64);
        }
        Ok(changed)
    }
}

#[cfg(test)]
#[path = "memory_plan_tests.rs"]
mod tests;
