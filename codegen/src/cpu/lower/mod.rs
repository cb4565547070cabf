//! Lowering one kernel (a set of IR nodes) to an MLIR `func.func` (text).
//!
//! # The kernel ABI
//! ```text
//! func.func @sym(%a0: memref<…>, …, %r0: memref<…>, …) attributes {llvm.emit_c_interface}
//! ```
//! The runtime calls `_mlir_ciface_sym(d0*, d1*, …)`: one pointer per memref
//! descriptor `{allocated, aligned, offset, sizes[R], strides[R]}`, first every
//! argument, then every result (destination passing: results are allocated by
//! the caller and every element of each is written; the function returns
//! nothing). Element types: f32, f16, bf16, i64, i32 as themselves, bool as
//! `i8` bytes holding 0 or 1. Memref types have the identity layout: the
//! code reads `aligned` from element 0 with row-major strides computed from
//! `sizes` (the `offset` and `strides` fields are not read), so every buffer
//! must be dense row-major starting at `aligned`. A dimension that is
//! symbolic in the IR is `?` in the memref type and read from the
//! descriptor's `sizes`; constant dimensions are static.
//!
//! # Inside
//! Tensor level, destination passing style: arguments become tensors with
//! `bufferization.to_tensor … restrict`, ops become `linalg.generic`s (plus
//! `tensor.extract_slice` / `insert_slice` / `reshape` / `expand_shape` for
//! data movement), and each result is written with
//! `bufferization.materialize_in_destination … in restrict writable %rK`;
//! one-shot bufferization (after `eliminate-empty-tensors`) then makes the
//! last op producing a result write straight into the result buffer.
//!
//! Elementwise ops (unary, binary, compare, where, cast, expand, iota) are
//! not emitted one by one: they stay *lazy* until a non-elementwise op or a
//! kernel result needs their value, and then every needed lazy value of the
//! same shape is computed by one `linalg.generic` whose body evaluates the
//! whole expression DAG per element ([`elementwise`]). Broadcasting is an
//! indexing map per leaf operand. Movement ops whose in-kernel users are
//! all lazy (reshape, transpose, slice, split, concat of unit pieces) are
//! lazy *views* too: the generic reads their operand at remapped
//! coordinates, refining its loops where a reshape would need `floordiv`
//! ([`view`]), so e.g. the interleaved rotary embedding after a norm is one
//! pass without temporaries. Other ops have one lowering each:
//! [`reduce`] (reduce, softmax), [`norm`] (layer / rms / group norm),
//! [`movement`] (transpose, concat, split, slice, pad, gather, upsample,
//! reshape), [`source`] (constants); `concat(split(x))` of all the parts in
//! order is `x`.
//!
//! Arithmetic: float values are computed in f32 (f16/bf16 loaded as f32 and
//! rounded back to their type after every op that produces them); sums
//! (reduce sum/mean, softmax denominators, norm statistics) accumulate in
//! f64 and norms and softmax compute in f64 as the reference evaluator does,
//! rounding once to the result type; integers wrap; bools are `i1` inside.
//! Norm statistics sums carry `fastmath<reassoc>` so LLVM may vectorise
//! them along the reduced row (f64 partial sums in another order).
//! f32 `exp` and `tanh` are branch-free polynomials ([`fastmath`]) and f32
//! GELU-tanh is `x / (1 + e^{-2u})`, so loops using them vectorise too.
//!
//! Symbolic sizes inside the kernel (`tensor.empty` of an intermediate of
//! size `h/2`, a slice start `seq`, ...) are computed from `memref.dim` of
//! the arguments and results by [`Func::dim`]: a dimension equal to one on
//! the boundary is read directly, a symbol is solved from a boundary
//! dimension that contains it once (`h` from a boundary size `h/2` is
//! `2·size`), and compound expressions are built with `arith` on `index`.

mod elementwise;
mod fastmath;
mod movement;
mod norm;
mod reduce;
mod scalar;
mod source;
mod view;

use crate::error::{CodegenError, Result};
use omnic_ir::{DType, Dim, Graph, Op, TensorType, ValueRef};
use petgraph::stable_graph::NodeIndex;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

pub(crate) const TARGET: &str = "cpu";

/// The symbol written in kernel text until the kernel gets its name (the
/// cache key is the text with this placeholder).
pub const SYMBOL_PLACEHOLDER: &str = "__omnic_kernel__";

/// One kernel to lower: its member nodes, the values it reads (arguments,
/// in order) and the values it writes (results, in order). Constants and
/// iotas read by members are not arguments: they are computed inside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPlan {
    /// Member nodes in topological order.
    pub members: Vec<NodeIndex>,
    pub args: Vec<ValueRef>,
    pub results: Vec<ValueRef>,
}

/// Whether the cpu kernels compute `op` lazily as part of a fused
/// elementwise generic.
pub(crate) fn is_lazy(op: &Op) -> bool {
    matches!(op, Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Where | Op::Cast(_) | Op::Expand { .. } | Op::Iota { .. })
}

/// Lower a kernel to the text of a `func.func @__omnic_kernel__`.
/// `names` numbers the graph's values as the text form does (for errors).
pub fn lower_kernel(g: &Graph, plan: &KernelPlan, names: &HashMap<NodeIndex, usize>) -> Result<String> {
    let f = build_func(g, plan, names).map_err(|(e, _)| e)?;
    Ok(f.finish(plan))
}

/// Build the kernel function, lowering movement nodes that cannot be
/// remapped as lazy views as tensor ops (at most once each). The error
/// comes with the first symbol that could not be computed, if any.
fn build_func<'g>(g: &'g Graph, plan: &KernelPlan, names: &'g HashMap<NodeIndex, usize>) -> std::result::Result<Func<'g>, (CodegenError, Option<String>)> {
    let mut excluded = HashSet::new();
    loop {
        let mut f = Func::new(g, names);
        f.no_views = excluded.clone();
        match f.build(plan) {
            Ok(()) => return Ok(f),
            Err(e) => match f.bad_view {
                Some(n) if excluded.insert(n) => continue,
                _ => return Err((e, f.missing.take())),
            },
        }
    }
}

/// Lower a kernel, adding *size carriers* where needed: when a symbolic
/// size the kernel computes with (a split offset `txt_seq` of a joint
/// sequence whose text part the kernel does not return, say) cannot be
/// derived from its arguments' and results' sizes, a stage input with that
/// symbol as one of its dimensions is appended to the arguments; the kernel
/// reads only its descriptor's sizes. Returns the text and the plan with
/// the carriers.
pub fn lower_kernel_with_carriers(g: &Graph, plan: &KernelPlan, names: &HashMap<NodeIndex, usize>) -> Result<(String, KernelPlan)> {
    let mut plan = plan.clone();
    loop {
        match build_func(g, &plan, names) {
            Ok(built) => {
                let text = built.finish(&plan);
                return Ok((text, plan));
            }
            Err((e, missing)) => {
                let Some(sym) = missing else { return Err(e) };
                let carrier = g
                    .inputs()
                    .into_iter()
                    .map(|(_, n)| ValueRef::new(n, 0))
                    .find(|v| !plan.args.contains(v) && g.value_type(*v).is_ok_and(|t| t.shape.iter().any(|d| matches!(d, Dim::Sym(s) if **s == *sym))));
                match carrier {
                    Some(v) => plan.args.push(v),
                    None => return Err(e),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Types

/// Compute types of scalar values inside generic bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Ct {
    F32,
    F64,
    I64,
    I32,
    I1,
    Index,
    /// Storage-only types (block arguments, yields, stored constants).
    F16,
    BF16,
    I8,
}

impl Ct {
    pub(crate) fn mlir(self) -> &'static str {
        match self {
            Ct::F32 => "f32",
            Ct::F64 => "f64",
            Ct::I64 => "i64",
            Ct::I32 => "i32",
            Ct::I1 => "i1",
            Ct::Index => "index",
            Ct::F16 => "f16",
            Ct::BF16 => "bf16",
            Ct::I8 => "i8",
        }
    }
    pub(crate) fn is_float(self) -> bool {
        matches!(self, Ct::F32 | Ct::F64 | Ct::F16 | Ct::BF16)
    }
}

/// The type of stored elements of `dt` as a [`Ct`].
pub(crate) fn storage_ct(dt: DType) -> Ct {
    match dt {
        DType::F32 => Ct::F32,
        DType::F16 => Ct::F16,
        DType::BF16 => Ct::BF16,
        DType::I64 => Ct::I64,
        DType::I32 => Ct::I32,
        DType::Bool => Ct::I8,
    }
}

/// The compute type of an IR dtype.
pub(crate) fn compute(dt: DType) -> Ct {
    match dt {
        DType::F32 | DType::F16 | DType::BF16 => Ct::F32,
        DType::I64 => Ct::I64,
        DType::I32 => Ct::I32,
        DType::Bool => Ct::I1,
    }
}

/// The element type tensors and memrefs of `dt` store.
pub(crate) fn storage(dt: DType) -> &'static str {
    match dt {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::I64 => "i64",
        DType::I32 => "i32",
        DType::Bool => "i8",
    }
}

/// `?x8x` style shape prefix (empty for rank 0).
fn shape_prefix(shape: &[Dim]) -> String {
    let mut s = String::new();
    for d in shape {
        match d.as_const() {
            Some(c) => {
                let _ = write!(s, "{c}x");
            }
            None => s.push_str("?x"),
        }
    }
    s
}

pub(crate) fn tensor_of(shape: &[Dim], elem: &str) -> String {
    format!("tensor<{}{elem}>", shape_prefix(shape))
}

pub(crate) fn tensor_ty(t: &TensorType) -> String {
    tensor_of(&t.shape, storage(t.dtype))
}

pub(crate) fn memref_ty(t: &TensorType) -> String {
    format!("memref<{}{}>", shape_prefix(&t.shape), storage(t.dtype))
}

/// `affine_map<(d0, d1) -> (r…)>`.
pub(crate) fn map(rank: usize, results: &[String]) -> String {
    let dims: Vec<String> = (0..rank).map(|j| format!("d{j}")).collect();
    format!("affine_map<({}) -> ({})>", dims.join(", "), results.join(", "))
}

pub(crate) fn identity_map(rank: usize) -> String {
    map(rank, &(0..rank).map(|j| format!("d{j}")).collect::<Vec<_>>())
}

/// Bits of `v` as an MLIR float literal of type `t` (exact, and spells
/// NaN and infinities).
pub(crate) fn float_lit(v: f64, t: Ct) -> String {
    match t {
        Ct::F64 => format!("0x{:016X}", v.to_bits()),
        Ct::F16 => format!("0x{:04X}", half::f16::from_f64(v).to_bits()),
        Ct::BF16 => format!("0x{:04X}", half::bf16::from_f64(v).to_bits()),
        _ => format!("0x{:08X}", (v as f32).to_bits()),
    }
}

// ---------------------------------------------------------------------------
// Values

/// A scalar SSA value inside a body (or a top-level constant).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct S {
    pub v: String,
    pub t: Ct,
}

/// A tensor SSA value and its IR type.
#[derive(Clone, Debug)]
pub(crate) struct TVal {
    pub ssa: String,
    pub ty: TensorType,
}

impl TVal {
    pub(crate) fn mlir_ty(&self) -> String {
        tensor_ty(&self.ty)
    }
    pub(crate) fn rank(&self) -> usize {
        self.ty.shape.len()
    }
}

/// What the kernel knows about an IR value.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    /// A tensor SSA value.
    Tensor(TVal),
    /// Computed per element inside the generic that needs it.
    Lazy,
    /// A literal with one element (its dtype's value, already rounded),
    /// inlined as a constant where used.
    Scalar(f64),
}

/// One operand of a `linalg.generic`.
pub(crate) struct Operand {
    pub ssa: String,
    /// Tensor type.
    pub ty: String,
    pub map: String,
    /// Element type of the block argument.
    pub elem: String,
}

impl Operand {
    pub(crate) fn new(t: &TVal, map: String) -> Operand {
        Operand { ssa: t.ssa.clone(), ty: t.mlir_ty(), map, elem: storage(t.ty.dtype).to_string() }
    }
}

/// A boundary memref whose size `axis` is a given dimension.
struct Known {
    dim: Dim,
    memref: String,
    ty: String,
    axis: usize,
}

/// The text of one kernel function being built.
pub(crate) struct Func<'g> {
    pub(crate) g: &'g Graph,
    names: &'g HashMap<NodeIndex, usize>,
    top: Vec<String>,
    body: Option<Vec<String>>,
    next: usize,
    consts: HashMap<String, String>,
    dims: HashMap<Dim, String>,
    known: Vec<Known>,
    resolving: HashSet<String>,
    pub(crate) env: HashMap<ValueRef, Val>,
    /// Lazy values some non-lazy member or a result reads.
    need: HashSet<ValueRef>,
    /// Topological position of every node.
    pos: HashMap<NodeIndex, usize>,
    /// The node being lowered (named in errors).
    current: Option<NodeIndex>,
    params: Vec<String>,
    /// The first symbol [`Func::solve`] could not compute.
    missing: Option<String>,
    /// Tensors that are `tensor.collapse_shape`s of a generic computed in
    /// a refined iteration space: collapsed SSA → (fine SSA, fine shape,
    /// reassociation). A kernel result among them is written through an
    /// expanded view of the result buffer (no copy).
    pub(crate) fine: HashMap<String, (String, Vec<Dim>, String)>,
    /// Movement nodes lowered as tensor ops rather than lazy views.
    no_views: HashSet<NodeIndex>,
    /// A lazy view that turned out not to be remappable (the kernel is
    /// lowered again with it in `no_views`).
    pub(crate) bad_view: Option<NodeIndex>,
}

impl<'g> Func<'g> {
    fn new(g: &'g Graph, names: &'g HashMap<NodeIndex, usize>) -> Func<'g> {
        Func {
            g,
            names,
            top: Vec::new(),
            body: None,
            next: 0,
            consts: HashMap::new(),
            dims: HashMap::new(),
            known: Vec::new(),
            resolving: HashSet::new(),
            env: HashMap::new(),
            need: HashSet::new(),
            pos: names.iter().map(|(&n, &k)| (n, k)).collect(),
            current: None,
            params: Vec::new(),
            missing: None,
            fine: HashMap::new(),
            no_views: HashSet::new(),
            bad_view: None,
        }
    }

    // ----- errors -----

    /// `%k (label)` of a node.
    pub(crate) fn node_name(&self, n: NodeIndex) -> String {
        node_name(self.g, self.names, n)
    }

    /// The error for the node being lowered.
    pub(crate) fn unsupported(&self, reason: impl Into<String>) -> CodegenError {
        match self.current {
            Some(n) => {
                CodegenError::Unsupported { target: TARGET, op: self.g.node(n).op.mnemonic().to_string(), value: self.node_name(n), reason: reason.into() }
            }
            None => CodegenError::Internal(reason.into()),
        }
    }

    pub(crate) fn internal(&self, what: impl Into<String>) -> CodegenError {
        let at = self.current.map(|n| format!(" (lowering {})", self.node_name(n))).unwrap_or_default();
        CodegenError::Internal(format!("{}{at}", what.into()))
    }

    // ----- emission -----

    pub(crate) fn fresh(&mut self) -> String {
        let n = self.next;
        self.next += 1;
        format!("%{n}")
    }

    /// Emit a line into the current body (or the function when none).
    pub(crate) fn emit(&mut self, s: String) {
        match &mut self.body {
            Some(b) => b.push(s),
            None => self.top.push(s),
        }
    }

    /// `%v = rhs` of compute type `t`.
    pub(crate) fn v(&mut self, t: Ct, rhs: String) -> S {
        let v = self.fresh();
        self.emit(format!("{v} = {rhs}"));
        S { v, t }
    }

    /// A function-level constant (memoised; usable inside bodies).
    fn constant(&mut self, lit: String, t: Ct) -> S {
        let key = format!("{lit} : {}", t.mlir());
        if let Some(v) = self.consts.get(&key) {
            return S { v: v.clone(), t };
        }
        let v = self.fresh();
        self.top.push(format!("{v} = arith.constant {key}"));
        self.consts.insert(key, v.clone());
        S { v, t }
    }

    /// Float constant of type `t` (F32 or F64).
    pub(crate) fn cf(&mut self, t: Ct, v: f64) -> S {
        self.constant(float_lit(v, t), t)
    }

    /// Integer constant of type `t` (I64, I32, I8, I1 or Index).
    pub(crate) fn ci(&mut self, t: Ct, v: i64) -> S {
        let lit = match t {
            Ct::I1 => (if v != 0 { "true" } else { "false" }).to_string(),
            Ct::I32 => (v as i32).to_string(),
            Ct::I8 => (v as i8).to_string(),
            _ => v.to_string(),
        };
        self.constant(lit, t)
    }

    /// A constant of stored type `t` (any [`Ct`]) with value `v` (already
    /// rounded to the type for floats).
    pub(crate) fn cany(&mut self, t: Ct, v: f64) -> S {
        if t.is_float() {
            self.constant(float_lit(v, t), t)
        } else {
            self.ci(t, v as i64)
        }
    }

    pub(crate) fn idx(&mut self, v: i64) -> String {
        self.ci(Ct::Index, v).v
    }

    /// `tensor.empty` of a shape (dynamic sizes from [`Func::dim`]).
    pub(crate) fn empty(&mut self, shape: &[Dim], elem: &str) -> Result<String> {
        let mut dyns = Vec::new();
        for d in shape {
            if d.as_const().is_none() {
                dyns.push(self.dim(d)?);
            }
        }
        let v = self.fresh();
        self.top.push(format!("{v} = tensor.empty({}) : {}", dyns.join(", "), tensor_of(shape, elem)));
        Ok(v)
    }

    /// `linalg.fill` of a new tensor of `shape` with `value`.
    pub(crate) fn filled(&mut self, shape: &[Dim], value: &S) -> Result<String> {
        let e = self.empty(shape, value.t.mlir())?;
        let ty = tensor_of(shape, value.t.mlir());
        let v = self.fresh();
        self.top.push(format!("{v} = linalg.fill ins({} : {}) outs({e} : {ty}) -> {ty}", value.v, value.t.mlir()));
        Ok(v)
    }

    /// Start a `linalg.generic` body; returns the block argument names (one
    /// per input, then per output).
    pub(crate) fn begin_body(&mut self, n_args: usize) -> Result<Vec<String>> {
        if self.body.is_some() {
            return Err(self.internal("nested generic bodies"));
        }
        self.body = Some(Vec::new());
        Ok((0..n_args).map(|_| self.fresh()).collect())
    }

    /// Close the body begun by [`Func::begin_body`] and emit the generic.
    /// `parallel[j]` is false for reduction loops. Returns the results.
    pub(crate) fn end_generic(
        &mut self,
        rank: usize,
        parallel: &[bool],
        ins: &[Operand],
        outs: &[Operand],
        block: &[String],
        yields: &[S],
    ) -> Result<Vec<String>> {
        let body = self.body.take().ok_or_else(|| self.internal("generic without a body"))?;
        if parallel.len() != rank || block.len() != ins.len() + outs.len() || yields.len() != outs.len() {
            return Err(self.internal("malformed linalg.generic"));
        }
        let maps: Vec<&str> = ins.iter().chain(outs).map(|o| o.map.as_str()).collect();
        let iters: Vec<&str> = parallel.iter().map(|&p| if p { "\"parallel\"" } else { "\"reduction\"" }).collect();
        let r = self.fresh();
        let lhs = if outs.len() == 1 { r.clone() } else { format!("{r}:{}", outs.len()) };
        let mut s = format!("{lhs} = linalg.generic {{indexing_maps = [{}], iterator_types = [{}]}}", maps.join(", "), iters.join(", "));
        if !ins.is_empty() {
            let names: Vec<&str> = ins.iter().map(|o| o.ssa.as_str()).collect();
            let tys: Vec<&str> = ins.iter().map(|o| o.ty.as_str()).collect();
            let _ = write!(s, " ins({} : {})", names.join(", "), tys.join(", "));
        }
        let names: Vec<&str> = outs.iter().map(|o| o.ssa.as_str()).collect();
        let tys: Vec<&str> = outs.iter().map(|o| o.ty.as_str()).collect();
        let _ = writeln!(s, " outs({} : {}) {{", names.join(", "), tys.join(", "));
        let args: Vec<String> = block.iter().zip(ins.iter().chain(outs)).map(|(b, o)| format!("{b}: {}", o.elem)).collect();
        let _ = writeln!(s, "  ^bb0({}):", args.join(", "));
        for l in body {
            let _ = writeln!(s, "    {l}");
        }
        let yv: Vec<&str> = yields.iter().map(|y| y.v.as_str()).collect();
        let yt: Vec<&str> = yields.iter().map(|y| y.t.mlir()).collect();
        let _ = writeln!(s, "    linalg.yield {} : {}", yv.join(", "), yt.join(", "));
        if outs.len() == 1 {
            let _ = write!(s, "  }} -> {}", tys[0]);
        } else {
            let _ = write!(s, "  }} -> ({})", tys.join(", "));
        }
        self.top.push(s);
        Ok(if outs.len() == 1 { vec![r] } else { (0..outs.len()).map(|k| format!("{r}#{k}")).collect() })
    }

    // ----- dimensions -----

    /// An `index` value equal to dimension `d` at run time.
    pub(crate) fn dim(&mut self, d: &Dim) -> Result<String> {
        let d = &simplify(d);
        if let Some(v) = self.dims.get(d) {
            return Ok(v.clone());
        }
        let v = match d {
            Dim::Const(c) => self.idx(*c),
            _ => {
                if let Some(k) = self.known.iter().position(|k| k.dim == *d) {
                    let (memref, ty, axis) = (self.known[k].memref.clone(), self.known[k].ty.clone(), self.known[k].axis);
                    let a = self.idx(axis as i64);
                    let v = self.fresh();
                    self.top.push(format!("{v} = memref.dim {memref}, {a} : {ty}"));
                    v
                } else {
                    match d {
                        Dim::Sym(s) => self.solve(s)?,
                        Dim::Add(ts) => {
                            let mut acc = self.dim(&ts[0])?;
                            for t in &ts[1..] {
                                let x = self.dim(t)?;
                                acc = self.top_op(format!("arith.addi {acc}, {x} : index"));
                            }
                            acc
                        }
                        Dim::Mul(ts) => {
                            let mut acc = self.dim(&ts[0])?;
                            for t in &ts[1..] {
                                let x = self.dim(t)?;
                                acc = self.top_op(format!("arith.muli {acc}, {x} : index"));
                            }
                            acc
                        }
                        Dim::Div(x, c) => {
                            let xv = self.dim(x)?;
                            let cv = self.idx(*c);
                            self.top_op(format!("arith.divsi {xv}, {cv} : index"))
                        }
                        Dim::Const(_) => unreachable!("handled above"),
                    }
                }
            }
        };
        self.dims.insert(d.clone(), v.clone());
        Ok(v)
    }

    fn top_op(&mut self, rhs: String) -> String {
        let v = self.fresh();
        self.top.push(format!("{v} = {rhs}"));
        v
    }

    /// The value of symbol `s`, solved from a boundary dimension that
    /// contains it exactly once.
    fn solve(&mut self, s: &str) -> Result<String> {
        if !self.resolving.insert(s.to_string()) {
            return Err(self.unsupported(format!("symbol `{s}` cannot be computed from the kernel's argument and result sizes (it depends on itself)")));
        }
        let mut found = None;
        let cands: Vec<(Dim, String, String, usize)> =
            self.known.iter().filter(|k| occurrences(&k.dim, s) == 1).map(|k| (k.dim.clone(), k.memref.clone(), k.ty.clone(), k.axis)).collect();
        for (kd, memref, ty, axis) in cands {
            let a = self.idx(axis as i64);
            let size = self.top_op(format!("memref.dim {memref}, {a} : {ty}"));
            if let Ok(Some(v)) = self.invert(&kd, s, size) {
                found = Some(v);
                break;
            }
        }
        self.resolving.remove(s);
        if found.is_none() && self.missing.is_none() {
            self.missing = Some(s.to_string());
        }
        found.ok_or_else(|| {
            let mut sizes: Vec<String> = self.known.iter().map(|k| k.dim.to_string()).collect();
            sizes.dedup();
            self.unsupported(format!("symbol `{s}` cannot be computed from the kernel's argument and result sizes ({})", sizes.join(", ")))
        })
    }

    /// Given `val` = the run-time value of `expr`, the value of symbol `s`
    /// (which occurs once in `expr`), if the expression can be inverted.
    fn invert(&mut self, expr: &Dim, s: &str, val: String) -> Result<Option<String>> {
        match expr {
            Dim::Sym(x) if &**x == s => Ok(Some(val)),
            Dim::Add(ts) => {
                let Some(i) = ts.iter().position(|t| occurrences(t, s) == 1) else { return Ok(None) };
                let rest = ts.iter().enumerate().filter(|&(j, _)| j != i).fold(Dim::Const(0), |a, (_, t)| a.add(t));
                let r = self.dim(&rest)?;
                let v = self.top_op(format!("arith.subi {val}, {r} : index"));
                self.invert(&ts[i], s, v)
            }
            Dim::Mul(ts) => {
                let Some(i) = ts.iter().position(|t| occurrences(t, s) == 1) else { return Ok(None) };
                let rest = ts.iter().enumerate().filter(|&(j, _)| j != i).fold(Dim::Const(1), |a, (_, t)| a.mul(t));
                let r = self.dim(&rest)?;
                let v = self.top_op(format!("arith.divsi {val}, {r} : index"));
                self.invert(&ts[i], s, v)
            }
            Dim::Div(x, c) => {
                let cv = self.idx(*c);
                let v = self.top_op(format!("arith.muli {val}, {cv} : index"));
                self.invert(x, s, v)
            }
            _ => Ok(None),
        }
    }

    /// Sizes of `shape` as `tensor` op operands: a literal where static,
    /// an SSA value where symbolic.
    pub(crate) fn sizes(&mut self, shape: &[Dim]) -> Result<Vec<String>> {
        shape.iter().map(|d| self.mixed(d)).collect()
    }

    /// A literal for a constant dimension, an SSA `index` value otherwise.
    pub(crate) fn mixed(&mut self, d: &Dim) -> Result<String> {
        match d.as_const() {
            Some(c) => Ok(c.to_string()),
            None => self.dim(d),
        }
    }

    /// Number of elements of `dims` as an f64 value.
    pub(crate) fn count_f64(&mut self, dims: &[Dim]) -> Result<S> {
        let n = Dim::product(dims);
        if let Some(c) = n.as_const() {
            return Ok(self.cf(Ct::F64, c as f64));
        }
        let i = self.dim(&n)?;
        let as_i64 = self.top_op(format!("arith.index_cast {i} : index to i64"));
        let f = self.top_op(format!("arith.sitofp {as_i64} : i64 to f64"));
        Ok(S { v: f, t: Ct::F64 })
    }

    // ----- values -----

    pub(crate) fn ty(&self, v: ValueRef) -> Result<TensorType> {
        self.g.value_type(v).cloned().map_err(CodegenError::from)
    }

    /// The tensor holding `v`, computing it (and the other lazy values of
    /// its shape that are needed and computable now) if it is lazy.
    pub(crate) fn tensor(&mut self, v: ValueRef) -> Result<TVal> {
        match self.env.get(&v).cloned() {
            Some(Val::Tensor(t)) => Ok(t),
            Some(Val::Scalar(x)) => {
                let ty = self.ty(v)?;
                let t = source::splat(self, &ty, x)?;
                Ok(t)
            }
            Some(Val::Lazy) => {
                elementwise::materialize(self, v)?;
                match self.env.get(&v) {
                    Some(Val::Tensor(t)) => Ok(t.clone()),
                    _ => Err(self.internal("lazy value was not materialised")),
                }
            }
            None => Err(self.internal(format!("value of node {} is not available in the kernel", v.node.index()))),
        }
    }

    // ----- the kernel -----

    fn build(&mut self, plan: &KernelPlan) -> Result<()> {
        let g = self.g;
        let members: HashSet<NodeIndex> = plan.members.iter().copied().collect();
        // Arguments and results: memrefs on the boundary, symbolic sizes known.
        for (i, &v) in plan.args.iter().enumerate() {
            let ty = self.ty(v)?;
            let name = format!("%a{i}");
            self.note_known(&name, &ty);
            self.params.push(format!("{name}: {}", memref_ty(&ty)));
        }
        for (i, &v) in plan.results.iter().enumerate() {
            let ty = self.ty(v)?;
            let name = format!("%r{i}");
            self.note_known(&name, &ty);
            self.params.push(format!("{name}: {}", memref_ty(&ty)));
        }
        for (i, &v) in plan.args.iter().enumerate() {
            let ty = self.ty(v)?;
            let t = self.fresh();
            self.top.push(format!("{t} = bufferization.to_tensor %a{i} restrict : {} to {}", memref_ty(&ty), tensor_ty(&ty)));
            self.env.insert(v, Val::Tensor(TVal { ssa: t, ty }));
        }
        // Sources read by members and not passed in: computed here.
        let mut inlined: Vec<NodeIndex> = Vec::new();
        for &m in &plan.members {
            for v in g.operands(m) {
                if self.env.contains_key(&v) || members.contains(&v.node) || inlined.contains(&v.node) {
                    continue;
                }
                match &g.node(v.node).op {
                    Op::Constant(_) | Op::Iota { .. } => inlined.push(v.node),
                    other => {
                        return Err(CodegenError::Internal(format!(
                            "kernel reads {} (`{}`) which is neither an argument nor a member",
                            self.node_name(v.node),
                            other.mnemonic()
                        )))
                    }
                }
            }
        }
        inlined.sort_by_key(|n| self.pos.get(n).copied().unwrap_or(usize::MAX));
        for n in inlined {
            self.current = Some(n);
            let v = ValueRef::new(n, 0);
            match &g.node(n).op {
                Op::Constant(lit) => {
                    let val = source::constant(self, lit)?;
                    self.env.insert(v, val);
                }
                _ => {
                    self.env.insert(v, Val::Lazy);
                }
            }
        }
        self.current = None;
        // Movement ops read only by lazy members (or only kernel results)
        // are lazy views: remapped inside the generics ([`view`]).
        let views = view::lazy_views(g, &plan.members, &self.no_views);
        let lazy = |m: NodeIndex| is_lazy(&g.node(m).op) || views.contains(&m);
        for &m in &plan.members {
            let node = g.node(m);
            if is_lazy(&node.op) {
                if node.outputs.len() != 1 {
                    return Err(self.internal("lazy op with several results"));
                }
                self.env.insert(ValueRef::new(m, 0), Val::Lazy);
            } else if views.contains(&m) {
                for p in 0..node.outputs.len() {
                    self.env.insert(ValueRef::new(m, p as u32), Val::Lazy);
                }
            }
        }
        // Lazy values that must become tensors.
        for &m in &plan.members {
            if lazy(m) {
                continue;
            }
            for v in g.operands(m) {
                if matches!(self.env.get(&v), Some(Val::Lazy)) {
                    self.need.insert(v);
                }
            }
        }
        for &v in &plan.results {
            if matches!(self.env.get(&v), Some(Val::Lazy)) {
                self.need.insert(v);
            }
        }
        // Members in order; lazy ones wait for a user.
        for &m in &plan.members {
            if lazy(m) {
                continue;
            }
            self.current = Some(m);
            self.lower_node(m)?;
        }
        // Results.
        for (i, &v) in plan.results.iter().enumerate() {
            self.current = Some(v.node);
            let t = self.tensor(v)?;
            if let Some((fine, shape, reassoc)) = self.fine.get(&t.ssa).cloned() {
                let sizes = self.sizes(&shape)?;
                let m = self.fresh();
                let elem = storage(t.ty.dtype);
                let fine_mem = format!("memref<{}{elem}>", shape_prefix(&shape));
                self.top.push(format!("{m} = memref.expand_shape %r{i} {reassoc} output_shape [{}] : {} into {fine_mem}", sizes.join(", "), memref_ty(&t.ty)));
                self.top.push(format!(
                    "bufferization.materialize_in_destination {fine} in restrict writable {m} : ({}, {fine_mem}) -> ()",
                    tensor_of(&shape, elem)
                ));
                continue;
            }
            self.top.push(format!(
                "bufferization.materialize_in_destination {} in restrict writable %r{i} : ({}, {}) -> ()",
                t.ssa,
                t.mlir_ty(),
                memref_ty(&t.ty)
            ));
        }
        self.current = None;
        Ok(())
    }

    fn note_known(&mut self, memref: &str, ty: &TensorType) {
        for (axis, d) in ty.shape.iter().enumerate() {
            if d.as_const().is_none() {
                self.known.push(Known { dim: simplify(d), memref: memref.to_string(), ty: memref_ty(ty), axis });
            }
        }
    }

    fn lower_node(&mut self, n: NodeIndex) -> Result<()> {
        let g = self.g;
        let node = g.node(n);
        let operands = g.operands(n);
        let mut xs = Vec::with_capacity(operands.len());
        for &v in &operands {
            xs.push(self.tensor(v)?);
        }
        let outs = &node.outputs;
        let one = |t: TVal| vec![t];
        let results: Vec<TVal> = match &node.op {
            Op::Reduce { op, axes, keep_dims } => one(reduce::reduce(self, &xs[0], *op, axes, *keep_dims, &outs[0])?),
            Op::Softmax { axis } => one(reduce::softmax(self, &xs[0], *axis, &outs[0])?),
            Op::LayerNorm { eps, weight, bias } => {
                let w = weight.then(|| xs[1].clone());
                let b = bias.then(|| xs[1 + *weight as usize].clone());
                one(norm::layer_norm(self, &xs[0], w.as_ref(), b.as_ref(), *eps, false, &outs[0])?)
            }
            Op::RmsNorm { eps, weight } => {
                let w = weight.then(|| xs[1].clone());
                one(norm::layer_norm(self, &xs[0], w.as_ref(), None, *eps, true, &outs[0])?)
            }
            Op::GroupNorm { groups, eps, affine } => {
                let wb = affine.then(|| (xs[1].clone(), xs[2].clone()));
                one(norm::group_norm(self, &xs[0], wb.as_ref().map(|(w, b)| (w, b)), *groups, *eps, &outs[0])?)
            }
            Op::Transpose { perm } => one(movement::transpose(self, &xs[0], perm, &outs[0])?),
            Op::Concat { axis } => match split_round_trip(g, &operands, *axis) {
                // concat(split(x)) of all parts in order is x.
                Some(x) => one(TVal { ssa: self.tensor(x)?.ssa, ty: outs[0].clone() }),
                None => one(movement::concat(self, &xs, *axis, &outs[0])?),
            },
            Op::Split { axis, sizes } => movement::split(self, &xs[0], *axis, sizes, outs)?,
            Op::Slice { axis, start, end: _ } => one(movement::slice(self, &xs[0], *axis, start, &outs[0])?),
            Op::Pad { pads, value } => one(movement::pad(self, &xs[0], pads, *value, &outs[0])?),
            Op::Gather { axis } => one(movement::gather(self, &xs[0], &xs[1], *axis, &outs[0])?),
            Op::UpsampleNearest { scale } => one(movement::upsample(self, &xs[0], scale, &outs[0])?),
            Op::Reshape { .. } => one(movement::reshape(self, &xs[0], &outs[0])?),
            op => {
                return Err(self.unsupported(format!(
                    "`{}` is not generated code on the cpu target (matmul, linear, attention, conv, topk and moe are runtime ukernels)",
                    op.mnemonic()
                )))
            }
        };
        if results.len() != outs.len() {
            return Err(self.internal("wrong number of results"));
        }
        for (p, t) in results.into_iter().enumerate() {
            self.env.insert(ValueRef::new(n, p as u32), Val::Tensor(t));
        }
        Ok(())
    }

    fn finish(self, _plan: &KernelPlan) -> String {
        let mut s = format!("func.func @{SYMBOL_PLACEHOLDER}({}) attributes {{llvm.emit_c_interface}} {{\n", self.params.join(", "));
        for l in &self.top {
            for part in l.lines() {
                s.push_str("  ");
                s.push_str(part);
                s.push('\n');
            }
        }
        s.push_str("  return\n}\n");
        s
    }
}

/// The operand `x` of `split(x)` when `operands` are all its parts in order
/// and the concat is along the split's axis.
fn split_round_trip(g: &Graph, operands: &[ValueRef], axis: usize) -> Option<ValueRef> {
    let first = operands.first()?;
    let Op::Split { axis: a, sizes } = &g.node(first.node).op else { return None };
    let whole = *a == axis && sizes.len() == operands.len() && operands.iter().enumerate().all(|(i, v)| v.node == first.node && v.port as usize == i);
    if !whole {
        return None;
    }
    g.operands(first.node).first().copied()
}

/// `%k (label)` of a node, as errors name it.
pub(crate) fn node_name(g: &Graph, names: &HashMap<NodeIndex, usize>, n: NodeIndex) -> String {
    let k = names.get(&n).copied().unwrap_or(n.index());
    match g.node(n).label.as_deref() {
        Some(l) => format!("%{k} ({l})"),
        None => format!("%{k}"),
    }
}

/// `d` with like terms combined: sums of products are expanded into a
/// polynomial over symbols (and exact divisions that do not simplify), so
/// that e.g. the size of a slice `txt..txt+img`, `img+txt-txt`, is `img`.
pub(crate) fn simplify(d: &Dim) -> Dim {
    from_poly(&poly(d))
}

type Poly = std::collections::BTreeMap<Vec<Dim>, i64>;

fn poly(d: &Dim) -> Poly {
    let mut p = Poly::new();
    match d {
        Dim::Const(c) => {
            if *c != 0 {
                p.insert(vec![], *c);
            }
        }
        Dim::Sym(_) => {
            p.insert(vec![d.clone()], 1);
        }
        Dim::Add(ts) => {
            for t in ts {
                for (m, c) in poly(t) {
                    let e = p.entry(m).or_insert(0);
                    *e = e.wrapping_add(c);
                }
            }
            p.retain(|_, c| *c != 0);
        }
        Dim::Mul(ts) => {
            p.insert(vec![], 1);
            for t in ts {
                let q = poly(t);
                let mut r = Poly::new();
                for (ma, ca) in &p {
                    for (mb, cb) in &q {
                        let mut m: Vec<Dim> = ma.iter().chain(mb).cloned().collect();
                        m.sort();
                        let e = r.entry(m).or_insert(0);
                        *e = e.wrapping_add(ca.wrapping_mul(*cb));
                    }
                }
                r.retain(|_, c| *c != 0);
                p = r;
            }
        }
        Dim::Div(x, k) => {
            let q = poly(x);
            if *k > 0 && q.values().all(|c| c % k == 0) {
                p = q.into_iter().map(|(m, c)| (m, c / k)).collect();
            } else {
                p.insert(vec![Dim::Div(Box::new(from_poly(&q)), *k)], 1);
            }
        }
    }
    p
}

fn from_poly(p: &Poly) -> Dim {
    let mut acc = Dim::Const(0);
    for (m, &c) in p {
        let term = m.iter().fold(Dim::Const(c), |a, f| a.mul(f));
        acc = acc.add(&term);
    }
    acc
}

/// How often symbol `s` occurs in `d`.
fn occurrences(d: &Dim, s: &str) -> usize {
    match d {
        Dim::Const(_) => 0,
        Dim::Sym(x) => usize::from(&**x == s),
        Dim::Add(ts) | Dim::Mul(ts) => ts.iter().map(|t| occurrences(t, s)).sum(),
        Dim::Div(x, _) => occurrences(x, s),
    }
}
