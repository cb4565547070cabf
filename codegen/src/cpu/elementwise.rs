//! Elementwise stages to MLIR: one fused `linalg.generic` per output shape.
//!
//! [`plan`] checks the stage (ops, dtypes, static shapes) and groups its
//! outputs by shape; [`build_module`] emits
//!
//! ```text
//! func.func @stage(%x: tensor<4x8xf32>, %y: tensor<f32>) -> tensor<4x8xf32>
//!     attributes {llvm.emit_c_interface} {
//!   %e = tensor.empty() : tensor<4x8xf32>
//!   %r = linalg.generic {indexing_maps = [(d0, d1) -> (d0, d1), (d0, d1) -> (), (d0, d1) -> (d0, d1)],
//!                        iterator_types = ["parallel", "parallel"]}
//!        ins(%x, %y : ...) outs(%e : ...) {
//!   ^bb0(%a: f32, %b: f32, %out: f32):
//!     ... the stage's ops on scalars (arith / math) ...
//!     linalg.yield %v : f32
//!   } -> tensor<4x8xf32>
//!   return %r : tensor<4x8xf32>
//! }
//! ```
//!
//! Broadcasting is static NumPy broadcasting: an operand of shape `s` read in
//! the iteration space of shape `S` gets the indexing map that sends each of
//! its axes to the aligned loop index, or to `0` where `s` has a 1 that `S`
//! does not. Because elementwise ops commute with broadcasting, computing
//! every intermediate value per output element is exact: a value of shape
//! `[4, 1]` feeding one of shape `[4, 8]` is simply recomputed per column.
//! Scalar constants become `arith.constant`s inside the body; other
//! constants become dense tensor constants read like inputs.

use crate::error::{CodegenError, Result};
use crate::mlir::MlirContext;
use crate::{ArgKind, KernelSignature, TensorSpec};
use melior::ir::attribute::{ArrayAttribute, DenseElementsAttribute, DenseI32ArrayAttribute, FloatAttribute, StringAttribute, TypeAttribute};
use melior::ir::operation::OperationBuilder;
use melior::ir::r#type::{FunctionType, RankedTensorType};
use melior::ir::{Attribute, Block, BlockLike, Identifier, Location, Module, Region, RegionLike, Type, Value};
use melior::Context;
use omnic_ir::verify::{value_names, verify_graph};
use omnic_ir::{BinaryOp, DType, Graph, IrError, Op, Stage, UnaryOp};
use petgraph::stable_graph::NodeIndex;
use std::collections::{HashMap, HashSet};

const TARGET: &str = "cpu";

/// A checked stage, ready to be built.
pub struct Plan<'g> {
    pub signature: KernelSignature,
    graph: &'g Graph,
    /// The node behind each kernel argument.
    arg_nodes: Vec<NodeIndex>,
    /// One fused generic per distinct output shape.
    groups: Vec<Group>,
    /// `%k (label)` of every node, for locations and messages.
    names: HashMap<NodeIndex, String>,
}

struct Group {
    shape: Vec<usize>,
    /// Indices into `signature.results`.
    results: Vec<usize>,
    /// Tensor operands of the generic (arguments and non-scalar constants),
    /// in topological order.
    leaves: Vec<NodeIndex>,
    /// Every node the group's results depend on, in topological order.
    nodes: Vec<NodeIndex>,
}

fn static_shape(shape: &omnic_ir::Shape) -> Option<Vec<usize>> {
    shape.iter().map(|d| d.as_const().and_then(|v| usize::try_from(v).ok())).collect()
}

/// The kernel symbol for a stage: `omnic_` and the name with every
/// character outside `[A-Za-z0-9_]` replaced by `_`. The prefix keeps it from
/// clashing with the C functions lowered code calls (`malloc`, `erff`, ...).
fn kernel_name(stage: &str) -> String {
    let s: String = stage.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    format!("omnic_{s}")
}

/// Check that the cpu target can compile `stage` and plan the kernel.
/// Errors name the first offending op (in topological order).
pub fn plan(stage: &Stage) -> Result<Plan<'_>> {
    let g = &stage.graph;
    verify_graph(g)?;
    let order = g.topo_order()?;
    let numbers = value_names(g)?;
    let names: HashMap<NodeIndex, String> = order
        .iter()
        .map(|&n| {
            let k = numbers.get(&n).copied().unwrap_or(n.index());
            let s = match &g.node(n).label {
                Some(l) => format!("%{k} ({l})"),
                None => format!("%{k}"),
            };
            (n, s)
        })
        .collect();
    let unsupported = |n: NodeIndex, reason: String| CodegenError::Unsupported {
        target: TARGET,
        op: g.node(n).op.mnemonic().to_string(),
        value: names.get(&n).cloned().unwrap_or_default(),
        reason,
    };

    let mut shapes: HashMap<NodeIndex, Vec<usize>> = HashMap::new();
    for &n in &order {
        let node = g.node(n);
        match &node.op {
            Op::Input { .. } | Op::Param { .. } | Op::Unary(_) | Op::Binary(_) => {}
            Op::Constant(lit) => {
                if lit.values.len() != lit.shape.iter().product::<usize>() {
                    return Err(unsupported(n, format!("literal has {} values for shape {:?}", lit.values.len(), lit.shape)));
                }
            }
            _ => return Err(unsupported(n, "only elementwise stages (input, param, constant, unary and binary ops) are supported so far".into())),
        }
        let [ty] = node.outputs.as_slice() else {
            return Err(unsupported(n, format!("{} results; only single-result ops are supported", node.outputs.len())));
        };
        if ty.dtype != DType::F32 {
            return Err(unsupported(n, format!("result type {ty}: only f32 is supported so far")));
        }
        let Some(shape) = static_shape(&ty.shape) else {
            return Err(unsupported(n, format!("result type {ty}: only static shapes are supported so far")));
        };
        shapes.insert(n, shape);
    }

    if g.outputs.is_empty() {
        return Err(IrError::Graph(format!("stage `{}` has no outputs", stage.name)).into());
    }

    // Arguments: inputs, then weights, each in node order.
    let mut args = Vec::new();
    let mut arg_nodes = Vec::new();
    for (kind, list) in [(ArgKind::Input, g.inputs()), (ArgKind::Param, g.params())] {
        for (name, n) in list {
            args.push(TensorSpec { name, kind, dtype: DType::F32, shape: shapes[&n].clone() });
            arg_nodes.push(n);
        }
    }

    // Results, grouped by shape.
    let mut results = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    for (i, (name, v)) in g.outputs.iter().enumerate() {
        if v.port != 0 || !shapes.contains_key(&v.node) {
            return Err(IrError::Graph(format!("output `{name}` refers to a missing value")).into());
        }
        let shape = shapes[&v.node].clone();
        results.push(TensorSpec { name: name.clone(), kind: ArgKind::Input, dtype: DType::F32, shape: shape.clone() });
        match groups.iter_mut().find(|gr| gr.shape == shape) {
            Some(gr) => gr.results.push(i),
            None => groups.push(Group { shape, results: vec![i], leaves: Vec::new(), nodes: Vec::new() }),
        }
    }
    for gr in &mut groups {
        let mut cone: HashSet<NodeIndex> = HashSet::new();
        let mut stack: Vec<NodeIndex> = gr.results.iter().map(|&i| g.outputs[i].1.node).collect();
        while let Some(n) = stack.pop() {
            if cone.insert(n) {
                stack.extend(g.operands(n).into_iter().map(|v| v.node));
            }
        }
        gr.nodes = order.iter().copied().filter(|n| cone.contains(n)).collect();
        gr.leaves = gr
            .nodes
            .iter()
            .copied()
            .filter(|&n| match &g.node(n).op {
                Op::Input { .. } | Op::Param { .. } => true,
                Op::Constant(lit) => lit.values.len() != 1,
                _ => false,
            })
            .collect();
    }

    let signature = KernelSignature { name: kernel_name(&stage.name), args, results };
    Ok(Plan { signature, graph: g, arg_nodes, groups, names })
}

fn tensor_type<'c>(shape: &[usize], elem: Type<'c>) -> Type<'c> {
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    RankedTensorType::new(&dims, elem, None).into()
}

fn parse_attr<'c>(ctx: &'c Context, text: &str) -> Result<Attribute<'c>> {
    Attribute::parse(ctx, text).ok_or_else(|| CodegenError::Internal(format!("cannot parse attribute `{text}`")))
}

/// The indexing map reading an operand of shape `s` in iteration space `big`
/// (static NumPy broadcasting), e.g. `affine_map<(d0, d1) -> (0, d1)>`.
fn broadcast_map(s: &[usize], big: &[usize]) -> Result<String> {
    let (r, rr) = (s.len(), big.len());
    let dims: Vec<String> = (0..rr).map(|j| format!("d{j}")).collect();
    let bad = || CodegenError::Internal(format!("shape {s:?} does not broadcast to {big:?}"));
    if r > rr {
        return Err(bad());
    }
    let mut res = Vec::with_capacity(r);
    for (i, &d) in s.iter().enumerate() {
        let j = rr - r + i;
        if d == big[j] {
            res.push(format!("d{j}"));
        } else if d == 1 {
            res.push("0".to_string());
        } else {
            return Err(bad());
        }
    }
    Ok(format!("affine_map<({}) -> ({})>", dims.join(", "), res.join(", ")))
}

/// Scalar op builder for a generic's body block.
struct Body<'c, 'a> {
    ctx: &'c Context,
    block: &'a Block<'c>,
    f32: Type<'c>,
    loc: Location<'c>,
}

impl<'c, 'a> Body<'c, 'a> {
    fn op(&self, name: &str, operands: &[Value<'c, 'a>]) -> Result<Value<'c, 'a>> {
        let op = OperationBuilder::new(name, self.loc).add_operands(operands).add_results(&[self.f32]).build()?;
        Ok(self.block.append_operation(op).result(0)?.into())
    }

    fn constant(&self, v: f64) -> Result<Value<'c, 'a>> {
        let attr: Attribute = FloatAttribute::new(self.ctx, self.f32, v).into();
        let op =
            OperationBuilder::new("arith.constant", self.loc).add_attributes(&[(Identifier::new(self.ctx, "value"), attr)]).add_results(&[self.f32]).build()?;
        Ok(self.block.append_operation(op).result(0)?.into())
    }

    /// `f(x)` following the formula in the op's documentation (and the
    /// reference evaluator's operation order).
    fn unary(&self, u: UnaryOp, x: Value<'c, 'a>) -> Result<Value<'c, 'a>> {
        Ok(match u {
            UnaryOp::Neg => self.op("arith.negf", &[x])?,
            UnaryOp::Abs => self.op("math.absf", &[x])?,
            UnaryOp::Exp => self.op("math.exp", &[x])?,
            UnaryOp::Log => self.op("math.log", &[x])?,
            UnaryOp::Sqrt => self.op("math.sqrt", &[x])?,
            UnaryOp::Rsqrt => self.op("math.rsqrt", &[x])?,
            UnaryOp::Recip => {
                let one = self.constant(1.0)?;
                self.op("arith.divf", &[one, x])?
            }
            UnaryOp::Sin => self.op("math.sin", &[x])?,
            UnaryOp::Cos => self.op("math.cos", &[x])?,
            UnaryOp::Tanh => self.op("math.tanh", &[x])?,
            UnaryOp::Erf => self.op("math.erf", &[x])?,
            UnaryOp::Sigmoid | UnaryOp::Silu => {
                // 1 / (1 + e^-x)  and  x / (1 + e^-x)
                let one = self.constant(1.0)?;
                let nx = self.op("arith.negf", &[x])?;
                let e = self.op("math.exp", &[nx])?;
                let den = self.op("arith.addf", &[one, e])?;
                let num = if u == UnaryOp::Sigmoid { one } else { x };
                self.op("arith.divf", &[num, den])?
            }
            UnaryOp::Gelu => {
                // x/2 · (1 + erf(x/√2))
                let half = self.constant(0.5)?;
                let one = self.constant(1.0)?;
                let sqrt2 = self.constant(std::f64::consts::SQRT_2)?;
                let hx = self.op("arith.mulf", &[half, x])?;
                let z = self.op("arith.divf", &[x, sqrt2])?;
                let e = self.op("math.erf", &[z])?;
                let s = self.op("arith.addf", &[one, e])?;
                self.op("arith.mulf", &[hx, s])?
            }
            UnaryOp::GeluTanh => {
                // x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))
                let half = self.constant(0.5)?;
                let one = self.constant(1.0)?;
                let c = self.constant((2.0 / std::f64::consts::PI).sqrt())?;
                let k = self.constant(0.044715)?;
                let kx = self.op("arith.mulf", &[k, x])?;
                let kx2 = self.op("arith.mulf", &[kx, x])?;
                let kx3 = self.op("arith.mulf", &[kx2, x])?;
                let inner = self.op("arith.addf", &[x, kx3])?;
                let arg = self.op("arith.mulf", &[c, inner])?;
                let t = self.op("math.tanh", &[arg])?;
                let hx = self.op("arith.mulf", &[half, x])?;
                let s = self.op("arith.addf", &[one, t])?;
                self.op("arith.mulf", &[hx, s])?
            }
            UnaryOp::Relu => {
                let zero = self.constant(0.0)?;
                self.op("arith.maxnumf", &[x, zero])?
            }
            UnaryOp::Square => self.op("arith.mulf", &[x, x])?,
        })
    }

    fn binary(&self, b: BinaryOp, x: Value<'c, 'a>, y: Value<'c, 'a>) -> Result<Value<'c, 'a>> {
        let name = match b {
            BinaryOp::Add => "arith.addf",
            BinaryOp::Sub => "arith.subf",
            BinaryOp::Mul => "arith.mulf",
            BinaryOp::Div => "arith.divf",
            BinaryOp::Pow => "math.powf",
            // f64::max / f64::min in the evaluator: a NaN operand yields the other one.
            BinaryOp::Max => "arith.maxnumf",
            BinaryOp::Min => "arith.minnumf",
        };
        self.op(name, &[x, y])
    }
}

/// Build the (verified) tensor-level module for a plan.
pub fn build_module<'c>(mctx: &'c MlirContext, plan: &Plan<'_>) -> Result<Module<'c>> {
    let ctx = mctx.context();
    let g = plan.graph;
    let unknown = Location::unknown(ctx);
    let f32 = Type::float32(ctx);
    let module = Module::new(unknown);

    let arg_types: Vec<Type> = plan.signature.args.iter().map(|a| tensor_type(&a.shape, f32)).collect();
    let res_types: Vec<Type> = plan.signature.results.iter().map(|r| tensor_type(&r.shape, f32)).collect();
    let func_block = Block::new(&arg_types.iter().map(|&t| (t, unknown)).collect::<Vec<_>>());
    {
        let arg_index: HashMap<NodeIndex, usize> = plan.arg_nodes.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let mut results: Vec<Option<Value>> = vec![None; plan.signature.results.len()];
        for gr in &plan.groups {
            let rank = gr.shape.len();
            let out_ty = tensor_type(&gr.shape, f32);
            // Tensor operands: arguments, or dense constants materialised here.
            let mut ins: Vec<Value> = Vec::with_capacity(gr.leaves.len());
            let mut maps: Vec<Attribute> = Vec::new();
            for &n in &gr.leaves {
                let shape: Vec<usize> = match &g.node(n).op {
                    Op::Constant(lit) => {
                        let ty = tensor_type(&lit.shape, f32);
                        let vals: Vec<f32> = lit.values.iter().map(|&v| v as f32).collect();
                        let attr: Attribute = DenseElementsAttribute::f32_values(ty, &vals).into();
                        let op = OperationBuilder::new("arith.constant", unknown)
                            .add_attributes(&[(Identifier::new(ctx, "value"), attr)])
                            .add_results(&[ty])
                            .build()?;
                        ins.push(func_block.append_operation(op).result(0)?.into());
                        lit.shape.clone()
                    }
                    _ => {
                        let i = arg_index[&n];
                        ins.push(func_block.argument(i)?.into());
                        plan.signature.args[i].shape.clone()
                    }
                };
                maps.push(parse_attr(ctx, &broadcast_map(&shape, &gr.shape)?)?);
            }
            let mut outs: Vec<Value> = Vec::with_capacity(gr.results.len());
            for _ in &gr.results {
                let op = OperationBuilder::new("tensor.empty", unknown).add_results(&[out_ty]).build()?;
                outs.push(func_block.append_operation(op).result(0)?.into());
                maps.push(parse_attr(ctx, &broadcast_map(&gr.shape, &gr.shape)?)?);
            }

            // The body: every node of the group on scalars.
            let n_args = ins.len() + outs.len();
            let body = Block::new(&vec![(f32, unknown); n_args]);
            {
                let mut vals: HashMap<NodeIndex, Value> = HashMap::new();
                for (i, &n) in gr.leaves.iter().enumerate() {
                    vals.insert(n, body.argument(i)?.into());
                }
                for &n in &gr.nodes {
                    if vals.contains_key(&n) {
                        continue;
                    }
                    let node = g.node(n);
                    let label = format!("{} {}", plan.names.get(&n).map(String::as_str).unwrap_or("?"), node.op.mnemonic());
                    let b = Body { ctx, block: &body, f32, loc: Location::name(ctx, &label, unknown) };
                    let operands: Vec<Value> = g
                        .operands(n)
                        .iter()
                        .map(|v| vals.get(&v.node).copied())
                        .collect::<Option<_>>()
                        .ok_or_else(|| CodegenError::Internal(format!("operand of {label} not computed")))?;
                    let v = match (&node.op, operands.as_slice()) {
                        (Op::Constant(lit), []) if lit.values.len() == 1 => b.constant(lit.values[0])?,
                        (Op::Unary(u), [x]) => b.unary(*u, *x)?,
                        (Op::Binary(o), [x, y]) => b.binary(*o, *x, *y)?,
                        _ => return Err(CodegenError::Internal(format!("unexpected node {label} in an elementwise group"))),
                    };
                    vals.insert(n, v);
                }
                let yielded: Vec<Value> = gr.results.iter().map(|&i| vals[&g.outputs[i].1.node]).collect();
                let op = OperationBuilder::new("linalg.yield", unknown).add_operands(&yielded).build()?;
                body.append_operation(op);
            }
            let region = Region::new();
            region.append_block(body);

            let iterators: Vec<Attribute> = (0..rank).map(|_| parse_attr(ctx, "#linalg.iterator_type<parallel>")).collect::<Result<_>>()?;
            let segments: Attribute = DenseI32ArrayAttribute::new(ctx, &[ins.len() as i32, outs.len() as i32]).into();
            let generic = OperationBuilder::new("linalg.generic", unknown)
                .add_operands(&ins)
                .add_operands(&outs)
                .add_results(&vec![out_ty; outs.len()])
                .add_attributes(&[
                    (Identifier::new(ctx, "indexing_maps"), ArrayAttribute::new(ctx, &maps).into()),
                    (Identifier::new(ctx, "iterator_types"), ArrayAttribute::new(ctx, &iterators).into()),
                    (Identifier::new(ctx, "operandSegmentSizes"), segments),
                ])
                .add_regions([region])
                .build()?;
            let generic = func_block.append_operation(generic);
            for (k, &i) in gr.results.iter().enumerate() {
                results[i] = Some(generic.result(k)?.into());
            }
        }
        let results: Vec<Value> = results.into_iter().collect::<Option<_>>().ok_or_else(|| CodegenError::Internal("a result was not computed".into()))?;
        let ret = OperationBuilder::new("func.return", unknown).add_operands(&results).build()?;
        func_block.append_operation(ret);
    }
    let region = Region::new();
    region.append_block(func_block);
    let func = OperationBuilder::new("func.func", unknown)
        .add_attributes(&[
            (Identifier::new(ctx, "sym_name"), StringAttribute::new(ctx, &plan.signature.name).into()),
            (Identifier::new(ctx, "function_type"), TypeAttribute::new(FunctionType::new(ctx, &arg_types, &res_types).into()).into()),
            (Identifier::new(ctx, "llvm.emit_c_interface"), Attribute::unit(ctx)),
        ])
        .add_regions([region])
        .build()?;
    module.body().append_operation(func);
    mctx.verify(&module, &format!("module built for stage kernel `{}`", plan.signature.name))?;
    Ok(module)
}
