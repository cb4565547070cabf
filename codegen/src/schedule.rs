//! IR stages → runtime schedules ([`StageSchedule`]) and the kernels they
//! call.
//!
//! A stage (after the passes) is split into steps by [`crate::partition`]:
//! generated kernels, runtime ukernels (linear, matmul, attention, conv,
//! topk, moe) and views (reshape); a `Linear` that absorbs a `concat`
//! before it or a `split` after it ([`crate::linear_sections`]) is a
//! `LinearSections` step reading the concat's operands and writing the
//! split's results. Each kernel is lowered to MLIR text
//! ([`crate::cpu::lower`]) and interned in a [`KernelCache`]: kernels with
//! the same text — the same ops, attributes, dtypes and static sizes, with
//! SSA names numbered in order, so e.g. every block of a stack of identical
//! transformer blocks — get one symbol, across all stages of a program.
//!
//! Values of the schedule: stage inputs (`Input`), weights named as the
//! params (`Weight`), literals read by a ukernel, a view or a stage output
//! (`Constant`; kernels inline the literals they read), views (`View` of
//! the value holding the bytes) and step results (`Computed`). Shapes are
//! the IR's, symbolic dims as [`DimExpr`].

use crate::cpu::lower::{lower_kernel_with_carriers, node_name, KernelPlan, SYMBOL_PLACEHOLDER};
use crate::error::{CodegenError, Result};
use crate::partition::{partition, Unit};
use omnic_ir::eval::tensor::round_to;
use omnic_ir::verify::value_names;
use omnic_ir::{DType, Dim, Graph, Op, Program, Stage, UnaryOp, ValueRef};
use omnic_runtime::artifact::manifest::{MoeAct, StageSchedule, Step, Ukernel, ValueDef, ValueSpec};
use omnic_runtime::artifact::DimExpr;
use omnic_runtime::ElemType;
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;

/// A generated kernel of a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSource {
    /// The `func.func` symbol; the C entry point is `_mlir_ciface_<symbol>`.
    pub symbol: String,
    /// The `func.func` text (tensor level, before lowering).
    pub mlir: String,
    /// Where it was first lowered from (`stage, dispatch k: ops`).
    pub origin: String,
    /// How many steps call it.
    pub uses: usize,
}

/// Kernels interned by their text (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct KernelCache {
    by_text: HashMap<String, usize>,
    pub kernels: Vec<KernelSource>,
}

impl KernelCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The symbol for kernel text `text` (with the placeholder symbol),
    /// adding it if new; `hint` names new symbols, `origin` describes them.
    pub fn intern(&mut self, text: String, hint: &str, origin: String) -> String {
        if let Some(&i) = self.by_text.get(&text) {
            self.kernels[i].uses += 1;
            return self.kernels[i].symbol.clone();
        }
        let i = self.kernels.len();
        let hint: String = hint.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let symbol = format!("omnic_k{i}_{hint}");
        let mlir = text.replace(&format!("@{SYMBOL_PLACEHOLDER}("), &format!("@{symbol}("));
        self.kernels.push(KernelSource { symbol: symbol.clone(), mlir, origin, uses: 1 });
        self.by_text.insert(text, i);
        symbol
    }
}

/// The schedules of every stage of a program and the kernels they call.
#[derive(Clone, Debug)]
pub struct ProgramSchedule {
    pub stages: Vec<StageSchedule>,
    pub kernels: Vec<KernelSource>,
}

/// Schedule every stage of `p` (kernels shared across stages).
pub fn schedule_program(p: &Program) -> Result<ProgramSchedule> {
    let mut cache = KernelCache::new();
    let mut stages = Vec::with_capacity(p.stages.len());
    for st in &p.stages {
        stages.push(schedule_stage(st, &mut cache)?);
    }
    Ok(ProgramSchedule { stages, kernels: cache.kernels })
}

/// The runtime's form of an IR dimension.
pub fn dim_expr(d: &Dim) -> DimExpr {
    match d {
        Dim::Const(c) => DimExpr::Const(*c),
        Dim::Sym(s) => DimExpr::Sym(s.to_string()),
        Dim::Add(ts) => DimExpr::Add(ts.iter().map(dim_expr).collect()),
        Dim::Mul(ts) => DimExpr::Mul(ts.iter().map(dim_expr).collect()),
        Dim::Div(x, c) => DimExpr::Div(Box::new(dim_expr(x)), *c),
    }
}

/// The runtime's element type of an IR dtype.
pub fn elem_type(dt: DType) -> ElemType {
    match dt {
        DType::F32 => ElemType::F32,
        DType::F16 => ElemType::F16,
        DType::BF16 => ElemType::BF16,
        DType::I64 => ElemType::I64,
        DType::I32 => ElemType::I32,
        DType::Bool => ElemType::Bool,
    }
}

/// Short name of a kernel: its first op that is not elementwise, else its
/// last op.
fn kernel_hint(g: &Graph, plan: &KernelPlan) -> &'static str {
    plan.members
        .iter()
        .map(|&n| &g.node(n).op)
        .find(|op| !crate::cpu::lower::is_lazy(op))
        .or_else(|| plan.members.last().map(|&n| &g.node(n).op))
        .map(|op| op.mnemonic())
        .unwrap_or("kernel")
}

struct Values<'g> {
    g: &'g Graph,
    ids: HashMap<ValueRef, u32>,
    specs: Vec<ValueSpec>,
    views: &'g HashMap<NodeIndex, ValueRef>,
}

impl Values<'_> {
    /// The id of value `v`, adding it (and the value it views) if new.
    fn id(&mut self, v: ValueRef) -> Result<u32> {
        if let Some(&id) = self.ids.get(&v) {
            return Ok(id);
        }
        let node = self.g.node(v.node);
        let ty = self.g.value_type(v)?.clone();
        let def = match &node.op {
            Op::Input { name, .. } => ValueDef::Input { name: name.clone() },
            Op::Param { name, .. } => ValueDef::Weight { name: name.clone() },
            Op::Constant(lit) => ValueDef::Constant {
                values: lit
                    .values
                    .iter()
                    .map(|&x| match lit.dtype {
                        d if d.is_float() => round_to(d, x, false),
                        DType::Bool => f64::from(u8::from(x != 0.0)),
                        _ => (x as i64) as f64,
                    })
                    .collect(),
            },
            Op::Reshape { .. } if self.views.contains_key(&v.node) => {
                let root = self.views[&v.node];
                ValueDef::View { of: self.id(root)? }
            }
            _ => ValueDef::Computed,
        };
        let id = self.specs.len() as u32;
        self.specs.push(ValueSpec { id, dtype: elem_type(ty.dtype), shape: ty.shape.iter().map(dim_expr).collect(), def });
        self.ids.insert(v, id);
        Ok(id)
    }
}

/// FLOPs of a step computing `nodes` (see [`omnic_ir::analysis`] for the
/// convention), for the runtime profiler.
fn unit_flops(g: &Graph, nodes: &[NodeIndex]) -> Result<DimExpr> {
    let mut total = Dim::Const(0);
    for &n in nodes {
        total = total.add(&omnic_ir::analysis::node_flops(g, n).map_err(CodegenError::Internal)?);
    }
    Ok(dim_expr(&total))
}

/// Schedule one stage, lowering its kernels into `cache`.
pub fn schedule_stage(stage: &Stage, cache: &mut KernelCache) -> Result<StageSchedule> {
    let g = &stage.graph;
    omnic_ir::verify::verify_graph(g)?;
    if g.outputs.is_empty() {
        return Err(omnic_ir::IrError::Graph(format!("stage `{}` has no outputs", stage.name)).into());
    }
    let names = value_names(g)?;
    let part = partition(g)?;
    let mut vals = Values { g, ids: HashMap::new(), specs: Vec::new(), views: &part.views };
    let mut inputs = Vec::new();
    for (_, n) in g.inputs() {
        inputs.push(vals.id(ValueRef::new(n, 0))?);
    }
    for (_, n) in g.params() {
        vals.id(ValueRef::new(n, 0))?;
    }
    let mut steps = Vec::with_capacity(part.units.len());
    let mut flops = Vec::with_capacity(part.units.len());
    for u in &part.units {
        match u {
            Unit::Kernel { plan, region } => {
                let (text, plan) = lower_kernel_with_carriers(g, plan, &names)?;
                let plan = &plan;
                let ops: Vec<&str> = plan.members.iter().map(|&n| g.node(n).op.mnemonic()).collect();
                let origin = format!(
                    "stage `{}`, {}: {} ({})",
                    stage.name,
                    region.map_or("no dispatch region".to_string(), |k| format!("dispatch {k}")),
                    ops.join(", "),
                    node_name(g, &names, plan.members[0]),
                );
                let symbol = cache.intern(text, kernel_hint(g, plan), origin);
                let args = plan.args.iter().map(|&v| vals.id(v)).collect::<Result<Vec<_>>>()?;
                let results = plan.results.iter().map(|&v| vals.id(v)).collect::<Result<Vec<_>>>()?;
                let split = crate::cpu::parallel::kernel_splits(g, plan);
                steps.push(Step::Kernel { symbol, args, results, split });
                flops.push(unit_flops(g, &plan.members)?);
            }
            Unit::Ukernel { node } => {
                let n = g.node(*node);
                let unsupported = |reason: String| CodegenError::Unsupported {
                    target: crate::cpu::lower::TARGET,
                    op: n.op.mnemonic().to_string(),
                    value: node_name(g, &names, *node),
                    reason,
                };
                let fusion = part.linear_fusions.get(node).copied().unwrap_or_default();
                // Input sections: the absorbed concat's operands (else the input).
                let mut operands = g.operands(*node);
                let mut inputs = 1;
                if let Some(c) = fusion.concat {
                    let sections = g.operands(c);
                    inputs = sections.len();
                    operands.splice(0..1, sections);
                }
                let op = match &n.op {
                    Op::Linear { bias } if fusion.concat.is_some() || fusion.split.is_some() => Ukernel::LinearSections { bias: *bias, inputs },
                    Op::Linear { bias } => Ukernel::Linear { bias: *bias },
                    Op::MatMul => Ukernel::MatMul,
                    Op::Attention { scale, causal, mask } => Ukernel::Attention { scale: *scale, causal: *causal, mask: *mask },
                    Op::Conv { stride, padding, dilation, groups, bias } => {
                        Ukernel::Conv { stride: stride.clone(), padding: padding.clone(), dilation: dilation.clone(), groups: *groups, bias: *bias }
                    }
                    Op::TopK { k } => Ukernel::TopK { k: *k },
                    Op::Moe { top_k, norm_topk, act } => {
                        let act = match act {
                            UnaryOp::Silu => MoeAct::Silu,
                            UnaryOp::Sigmoid => MoeAct::Sigmoid,
                            UnaryOp::Relu => MoeAct::Relu,
                            UnaryOp::GeluTanh => MoeAct::GeluTanh,
                            other => {
                                let why = format!("gate activation `{}`: the runtime's moe ukernel has silu, sigmoid, relu and gelu_tanh", other.name());
                                return Err(unsupported(why));
                            }
                        };
                        Ukernel::Moe { top_k: *top_k, norm_topk: *norm_topk, act }
                    }
                    other => return Err(CodegenError::Internal(format!("`{}` scheduled as a ukernel", other.mnemonic()))),
                };
                for v in &operands {
                    let t = g.value_type(*v)?;
                    if t.dtype != DType::F32 {
                        return Err(unsupported(format!("operand of type {t}: the runtime's {} ukernel is f32 only", n.op.mnemonic())));
                    }
                }
                let args = operands.iter().map(|&v| vals.id(v)).collect::<Result<Vec<_>>>()?;
                // Result sections: the absorbed split's results (else the node's).
                let writer = fusion.split.unwrap_or(*node);
                let results = (0..g.node(writer).outputs.len()).map(|p| vals.id(ValueRef::new(writer, p as u32))).collect::<Result<Vec<_>>>()?;
                steps.push(Step::Ukernel { op, args, results });
                flops.push(unit_flops(g, &[*node])?);
            }
        }
    }
    let mut outputs = Vec::with_capacity(g.outputs.len());
    for (name, v) in &g.outputs {
        outputs.push((name.clone(), vals.id(*v)?));
    }
    Ok(StageSchedule { name: stage.name.clone(), inputs, outputs, values: vals.specs, steps, flops })
}
