//! `cfg-batching`: one model call per true-CFG step instead of two.
//!
//! What: in a `denoise` control with true classifier-free guidance, the
//! conditional and unconditional calls of a step run the same model on the
//! same latents and timestep with different text inputs. When the model is
//! proven row-independent along its batch axis, the pass records
//! `cfg_batch` in the control: the runtime concatenates the two branches'
//! inputs along axis 0, makes one call on a batch of two, and splits the
//! outputs (`omnic_runtime::program::denoise`).
//! Why: one call on batch 2 has the same FLOPs as two on batch 1 but half
//! the launches and weight reads, so it is faster wherever the model is
//! memory- or overhead-bound (small batches, the common case).
//! When it does not apply (the pass leaves the program unchanged): the
//! control is not `denoise` or has no true CFG; the latent input's axis 0
//! is not a symbol (a static batch cannot grow); or the batch analysis
//! fails: a value holds the batch symbol other than as its leading axis, an
//! op mixes rows (a reduction, softmax, split, concat, slice, gather or
//! transpose over axis 0, a contraction over the batch, a row-dependent
//! `iota`), a weight or constant has a batch axis, an unconditional input
//! replaces one without a batch axis, or the prediction has none. Inputs
//! whose actual shapes differ between the branches at run time (prompts of
//! different lengths) make the runtime fall back to two calls.
//!
//! The analysis classifies every value as *batched* (its type is
//! `[B, …]` with `B` the latent batch symbol and no other occurrence of
//! `B`) or *shared* (no `B`), and checks each op keeps batch rows apart.

use crate::pass::{Pass, PassContext, PassError};
use omnic_ir::shape::Dim;
use omnic_ir::{Control, Graph, Guidance, Op, TensorType};
use std::collections::HashSet;

pub struct CfgBatching;

/// How a value relates to the batch symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Shared,
    Batched,
}

fn classify(ty: &TensorType, b: &str) -> Result<Class, String> {
    let mut total = 0;
    for d in &ty.shape {
        let mut syms = Vec::new();
        d.symbols(&mut syms);
        total += syms.iter().filter(|s| s.as_str() == b).count();
    }
    match (total, ty.shape.first()) {
        (0, _) => Ok(Class::Shared),
        (1, Some(Dim::Sym(s))) if &**s == b => Ok(Class::Batched),
        _ => Err(format!("type {ty} uses the batch symbol `{b}` other than as its leading axis")),
    }
}

/// Check that `g` keeps the rows of batch symbol `b` independent; returns
/// the names of its batched inputs.
pub fn batched_inputs(g: &Graph, b: &str) -> Result<Vec<String>, String> {
    let names = omnic_ir::verify::value_names(g).map_err(|e| e.to_string())?;
    let mut batched_in = Vec::new();
    for n in g.topo_order().map_err(|e| e.to_string())? {
        let node = g.node(n);
        let at = || format!("`{}` %{}{}", node.op.mnemonic(), names[&n], node.label.as_deref().map(|l| format!(" ({l})")).unwrap_or_default());
        let outs: Vec<Class> = node.outputs.iter().map(|t| classify(t, b)).collect::<Result<_, _>>().map_err(|e| format!("{}: {e}", at()))?;
        let operands = g.operands(n);
        let mut ins = Vec::with_capacity(operands.len());
        let mut ranks = Vec::with_capacity(operands.len());
        for v in &operands {
            let t = g.value_type(*v).map_err(|e| e.to_string())?;
            ins.push(classify(t, b).map_err(|e| format!("{}: {e}", at()))?);
            ranks.push(t.shape.len());
        }
        let any_in = ins.contains(&Class::Batched);
        let any_out = outs.contains(&Class::Batched);
        let fail = |why: &str| Err(format!("{}: {why}", at()));
        if any_in && outs.contains(&Class::Shared) {
            return fail("mixes batch rows into a value without a batch axis");
        }
        if !any_in && any_out && !matches!(node.op, Op::Input { .. } | Op::Expand { .. }) {
            return fail("creates a batch axis from values without one");
        }
        if !any_in {
            if let (Op::Input { name, .. }, true) = (&node.op, any_out) {
                batched_in.push(name.clone());
            }
            continue;
        }
        let batched = |i: usize| ins.get(i) == Some(&Class::Batched);
        let ok = match &node.op {
            Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Where | Op::Cast(_) | Op::Expand { .. } | Op::UpsampleNearest { .. } => true,
            Op::Reduce { axes, .. } => !axes.contains(&0),
            Op::Softmax { axis } => *axis != 0,
            Op::LayerNorm { .. } | Op::RmsNorm { .. } => ranks[0] >= 2 && (1..ins.len()).all(|i| !batched(i)),
            Op::GroupNorm { .. } | Op::Conv { .. } => (1..ins.len()).all(|i| !batched(i)),
            Op::Linear { .. } => ranks[0] >= 2 && (1..ins.len()).all(|i| !batched(i)),
            Op::MatMul => !batched(1) || ranks[1] >= 3,
            Op::Attention { .. } => true,
            Op::Pad { pads, .. } => pads.first().is_none_or(|p| *p == (0, 0)),
            Op::Reshape { .. } => true,
            Op::Transpose { perm } => perm.first() == Some(&0),
            Op::Concat { axis } | Op::Split { axis, .. } | Op::Slice { axis, .. } => *axis != 0,
            Op::Gather { axis } => !(batched(0) && batched(1)) && (!batched(0) || *axis != 0),
            Op::TopK { .. } => ranks[0] >= 2,
            // Tokens are routed and computed independently; the expert weights must be shared.
            Op::Moe { .. } => (2..ins.len()).all(|i| !batched(i)),
            Op::Input { .. } | Op::Param { .. } | Op::Constant(_) | Op::Iota { .. } => false,
        };
        if !ok {
            return fail("mixes rows along the batch axis");
        }
    }
    Ok(batched_in)
}

/// Why the program cannot be CFG-batched, or the body inputs to concatenate.
fn analyse(p: &omnic_ir::Program) -> Result<Option<Vec<String>>, String> {
    let Control::Denoise(d) = &p.control else { return Ok(None) };
    let negative: Vec<(String, String)> = match &d.guidance {
        Guidance::TrueCfg { negative, .. } => negative.clone(),
        Guidance::ClassCfg { labels, .. } => vec![(labels.clone(), labels.clone())],
        _ => return Ok(None),
    };
    if d.cfg_batch.is_some() {
        return Ok(None);
    }
    let graphs: Vec<&Graph> = d.stage_names().iter().filter_map(|n| p.stage(n)).map(|s| &s.graph).collect();
    let latent_ty = graphs
        .iter()
        .find_map(|g| g.inputs().into_iter().find(|(n, _)| *n == d.latent_input).map(|(_, i)| g.node(i).outputs[0].clone()))
        .ok_or_else(|| format!("no stage takes the latent input `{}`", d.latent_input))?;
    let b = match latent_ty.shape.first() {
        Some(Dim::Sym(s)) => s.to_string(),
        _ => return Err(format!("the latent input `{}` is {latent_ty}: its batch axis is not symbolic", d.latent_input)),
    };
    // Values passed between the stages of a split body are not body inputs.
    let internal: HashSet<&str> = graphs.iter().flat_map(|g| g.outputs.iter().map(|(n, _)| n.as_str())).collect();
    let mut batched = Vec::new();
    for g in &graphs {
        for name in batched_inputs(g, &b)? {
            if !internal.contains(name.as_str()) && !batched.contains(&name) {
                batched.push(name);
            }
        }
    }
    for (_, to) in &negative {
        if !batched.contains(to) {
            return Err(format!("the unconditional branch replaces `{to}`, which has no batch axis"));
        }
    }
    if !batched.contains(&d.timestep_input) {
        return Err(format!("the timestep input `{}` has no batch axis", d.timestep_input));
    }
    let last = graphs.last().ok_or("the loop has no stage")?;
    let pred = last.output(&d.prediction_output).ok_or_else(|| format!("no output `{}`", d.prediction_output))?;
    if classify(last.value_type(pred).map_err(|e| e.to_string())?, &b)? != Class::Batched {
        return Err(format!("the prediction `{}` has no batch axis", d.prediction_output));
    }
    Ok(Some(batched))
}

impl Pass for CfgBatching {
    fn name(&self) -> &'static str {
        "cfg-batching"
    }
    fn summary(&self) -> &'static str {
        "run the conditional and unconditional calls of a true-CFG denoise step as one batch of two"
    }
    fn run_on_graph(&self, _g: &mut Graph, _cx: &mut PassContext) -> Result<bool, PassError> {
        Ok(false)
    }
    fn run(&self, p: &mut omnic_ir::Program, cx: &mut PassContext) -> Result<bool, PassError> {
        match analyse(p) {
            Ok(Some(names)) => {
                if let Control::Denoise(d) = &mut p.control {
                    cx.stat(self.name(), "batched inputs", names.len() as i64);
                    d.cfg_batch = Some(names);
                    return Ok(true);
                }
                Ok(false)
            }
            Ok(None) => Ok(false),
            Err(why) => {
                // Say why in the program, so `omnic compile` / IR dumps show it.
                cx.stat(self.name(), "loops not batchable", 1);
                let note = format!("not batched: {why}");
                Ok(p.metadata.insert("cfg-batching".into(), note.clone()).as_ref() != Some(&note))
            }
        }
    }
}
