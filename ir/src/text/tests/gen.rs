//! A random graph generator for round-trip and fuzz tests: builds valid
//! graphs through [`Builder`] that use every op variant, symbolic dims and
//! dim expressions, multi-result ops, special float values, annotations
//! (blocks, roles, single-node dispatch regions, buffers) and
//! labels that need escaping. Seeds are fixed, so failures reproduce.

use crate::dtype::DType;
use crate::graph::{Annotation, Graph, Role, ValueRef};
use crate::op::{BinaryOp, CmpOp, Literal, ReduceOp, UnaryOp};
use crate::program::{Control, Program, Stage};
use crate::shape::{Dim, Shape};
use crate::{Builder, IrError};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// One thing the generator can emit.
#[derive(Clone, Copy, Debug)]
enum Step {
    Input,
    Param,
    Constant,
    Iota,
    Unary(UnaryOp),
    Binary(BinaryOp),
    Compare(CmpOp),
    Where,
    Cast,
    Reduce(ReduceOp),
    Softmax,
    LayerNorm,
    RmsNorm,
    GroupNorm,
    MatMul,
    Linear,
    Attention,
    Conv,
    Upsample,
    Pad,
    Reshape,
    Transpose,
    Expand,
    Concat,
    Split,
    Slice,
    Gather,
    TopK,
    Moe,
}

/// Every step, with every variant of the parametrised op families.
fn all_steps() -> Vec<Step> {
    use Step::*;
    let mut v = vec![
        Input, Param, Constant, Iota, Where, Cast, Softmax, LayerNorm, RmsNorm, GroupNorm, MatMul, Linear, Attention, Conv, Upsample,
        Pad, Reshape, Transpose, Expand, Concat, Split, Slice, Gather, TopK, Moe,
    ];
    v.extend(UnaryOp::ALL.map(Unary));
    v.extend(BinaryOp::ALL.map(Binary));
    v.extend(CmpOp::ALL.map(Compare));
    v.extend(ReduceOp::ALL.map(Reduce));
    v
}

/// Floats that stress exact printing.
const SPECIAL: [f64; 16] = [
    0.0,
    -0.0,
    1.0,
    -2.5,
    0.1,
    1.0 / 3.0,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
    5e-324,
    1e-310,
    -1e300,
    f64::MAX,
    f64::MIN_POSITIVE,
    1e-5,
    -123456789.125,
];

const LABELS: [&str; 6] = [
    "transformer_blocks.0.attn",
    "a \"quoted\" \\ label",
    "unicode ✓ label\nwith newline\tand tab",
    "",
    "loc(\"x\") #block(1) // not a comment",
    "ctrl\u{1}char",
];

const NAMES: [&str; 5] = ["hidden_states", "with \"quotes\"", "back\\slash", "ünïcode ✓", "new\nline"];

pub(super) struct Gen {
    rng: StdRng,
    b: Builder,
    pool: Vec<ValueRef>,
    names: usize,
    regions: u32,
}

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen { rng: StdRng::seed_from_u64(seed), b: Builder::new(), pool: Vec::new(), names: 0, regions: 0 }
    }

    fn unique(&mut self, prefix: &str) -> String {
        self.names += 1;
        if self.rng.random_bool(0.3) {
            format!("{prefix}{} {}", self.names, NAMES.choose(&mut self.rng).copied().unwrap_or(""))
        } else {
            format!("{prefix}{}", self.names)
        }
    }

    fn float(&mut self) -> f64 {
        match self.rng.random_range(0..4) {
            0 => f64::from_bits(self.rng.random::<u64>()),
            1 => self.rng.random_range(-10.0..10.0),
            _ => *SPECIAL.choose(&mut self.rng).unwrap_or(&0.0),
        }
    }

    fn static_dim(&mut self) -> Dim {
        Dim::Const(self.rng.random_range(1..=5))
    }

    /// A static, symbolic or compound dimension.
    fn dim(&mut self) -> Dim {
        let exprs = ["batch", "seq", "(h/2)*(w/2)", "seq+7", "4*c", "(n+1)/2", "h*w", "(t-1)/4+1"];
        if self.rng.random_bool(0.5) {
            self.static_dim()
        } else {
            Dim::parse(exprs.choose(&mut self.rng).copied().unwrap_or("batch")).expect("generator dims parse")
        }
    }

    fn shape(&mut self, rank: usize) -> Shape {
        (0..rank).map(|_| self.dim()).collect()
    }

    fn float_dtype(&mut self) -> DType {
        *[DType::F32, DType::F16, DType::BF16].choose(&mut self.rng).unwrap_or(&DType::F32)
    }

    fn any_dtype(&mut self) -> DType {
        *DType::ALL.choose(&mut self.rng).unwrap_or(&DType::F32)
    }

    /// A fresh stage input or weight.
    fn fresh(&mut self, dtype: DType, shape: Shape) -> Result<ValueRef, IrError> {
        let v = if self.rng.random_bool(0.5) {
            let name = self.unique("x");
            self.b.input(&name, dtype, shape)?
        } else {
            let name = self.unique("w.");
            self.b.param(&name, dtype, shape)?
        };
        self.pool.push(v);
        Ok(v)
    }

    /// A pooled value satisfying `ok`, or a fresh one of `dtype` and rank in `ranks`.
    fn value(&mut self, ok: impl Fn(DType, usize) -> bool, dtype: DType, ranks: std::ops::RangeInclusive<usize>) -> Result<ValueRef, IrError> {
        let cands: Vec<ValueRef> = self.pool.iter().copied().filter(|&v| ok(self.b.dtype(v), self.b.rank(v))).collect();
        if !cands.is_empty() && self.rng.random_bool(0.7) {
            return Ok(*cands.choose(&mut self.rng).expect("non-empty"));
        }
        let r = self.rng.random_range(ranks);
        let sh = self.shape(r);
        self.fresh(dtype, sh)
    }

    fn float_value(&mut self, min_rank: usize) -> Result<ValueRef, IrError> {
        let dt = self.float_dtype();
        self.value(|d, r| d.is_float() && r >= min_rank, dt, min_rank..=min_rank + 2)
    }

    /// A shape that broadcasts against `s`: a suffix with some dims set to 1.
    fn broadcastable(&mut self, s: &[Dim]) -> Shape {
        let keep = self.rng.random_range(0..=s.len());
        s[s.len() - keep..].iter().map(|d| if self.rng.random_bool(0.3) { Dim::Const(1) } else { d.clone() }).collect()
    }

    fn axis(&mut self, rank: usize) -> isize {
        let a = self.rng.random_range(0..rank) as isize;
        if self.rng.random_bool(0.3) {
            a - rank as isize
        } else {
            a
        }
    }

    /// Emit one step; results join the pool.
    fn step(&mut self, step: Step) -> Result<(), IrError> {
        let block = if self.rng.random_bool(0.4) { Some(self.rng.random_range(0..4)) } else { None };
        self.b.set_block(block);
        let label = if self.rng.random_bool(0.5) { LABELS.choose(&mut self.rng).copied() } else { None };
        self.b.set_scope(label);
        let out = self.emit(step)?;
        if let Some(&v) = out.first() {
            if self.rng.random_bool(0.15) {
                let roles = [
                    Role::ModulatedInput,
                    Role::TimestepEmbedding,
                    Role::ResidualIn,
                    Role::ResidualOut,
                    Role::Other("custom_role".into()),
                    Role::Other("weird \"role\" (x)".into()),
                    Role::Other("residual_in".into()),
                ];
                let r = roles.choose(&mut self.rng).cloned().unwrap_or(Role::ResidualIn);
                self.b.annotate(v, r);
            }
        }
        if let Some(&v) = out.first() {
            // Regions of one node are always valid (convex, orderable);
            // multi-node regions are covered by hand-written tests.
            let node = self.b.graph.node(v.node);
            let results = node.outputs.len() as u32;
            if !node.op.is_source() && self.rng.random_bool(0.2) {
                self.regions += 1;
                let k = self.regions;
                self.b.graph.node_mut(v.node).annotations.push(Annotation::Dispatch(k));
            }
            if self.rng.random_bool(0.1) {
                let (id, result) = (self.rng.random_range(0..8), self.rng.random_range(0..results));
                self.b.graph.node_mut(v.node).annotations.push(Annotation::Buffer { id, result });
            }
        }
        self.pool.extend(out);
        Ok(())
    }

    fn emit(&mut self, step: Step) -> Result<Vec<ValueRef>, IrError> {
        let one = |v: ValueRef| Ok(vec![v]);
        match step {
            Step::Input | Step::Param => {
                let (dt, r) = (self.any_dtype(), self.rng.random_range(0..=4));
                let sh = self.shape(r);
                let name = self.unique("in");
                one(if matches!(step, Step::Input) { self.b.input(&name, dt, sh)? } else { self.b.param(&name, dt, sh)? })
            }
            Step::Constant => {
                let dt = self.any_dtype();
                let shape: Vec<usize> = (0..self.rng.random_range(0..=2)).map(|_| self.rng.random_range(1..=3)).collect();
                let n = shape.iter().product();
                let values = (0..n).map(|_| self.float()).collect();
                one(self.b.constant(Literal { dtype: dt, shape, values })?)
            }
            Step::Iota => {
                let dt = *[DType::F32, DType::I64, DType::I32, DType::BF16].choose(&mut self.rng).unwrap_or(&DType::I64);
                let len = self.dim();
                one(self.b.iota(len, dt)?)
            }
            Step::Unary(u) => {
                let x = self.float_value(0)?;
                one(self.b.unary(u, x)?)
            }
            Step::Binary(_) | Step::Compare(_) => {
                let dt = *[DType::F32, DType::I64, DType::F16].choose(&mut self.rng).unwrap_or(&DType::F32);
                let x = self.value(|d, _| d != DType::Bool, dt, 0..=3)?;
                let sh = self.broadcastable(&self.b.shape(x));
                let y = if self.rng.random_bool(0.3) { x } else { self.fresh(self.b.dtype(x), sh)? };
                let (x, y) = if self.rng.random_bool(0.5) { (x, y) } else { (y, x) };
                one(match step {
                    Step::Binary(op) => self.b.binary(op, x, y)?,
                    Step::Compare(op) => self.b.compare(op, x, y)?,
                    _ => unreachable!("matched above"),
                })
            }
            Step::Where => {
                let dt = self.any_dtype();
                let a = self.value(|_, _| true, dt, 0..=3)?;
                let sh = self.broadcastable(&self.b.shape(a));
                let b = self.fresh(self.b.dtype(a), sh)?;
                let csh = self.broadcastable(&self.b.shape(a));
                let c = self.fresh(DType::Bool, csh)?;
                one(self.b.where_(c, a, b)?)
            }
            Step::Cast => {
                let dt = self.any_dtype();
                let x = self.value(|_, _| true, dt, 0..=3)?;
                let to = self.any_dtype();
                one(self.b.cast(x, to)?)
            }
            Step::Reduce(op) => {
                let x = if op == ReduceOp::Mean { self.float_value(1)? } else { self.value(|d, r| d != DType::Bool && r >= 1, DType::I32, 1..=3)? };
                let r = self.b.rank(x);
                let n = self.rng.random_range(1..=r);
                let axes: Vec<isize> = (0..n).map(|_| self.axis(r)).collect();
                let keep = self.rng.random_bool(0.5);
                one(self.b.reduce(op, x, &axes, keep)?)
            }
            Step::Softmax => {
                let x = self.float_value(1)?;
                let a = self.axis(self.b.rank(x));
                one(self.b.softmax(x, a)?)
            }
            Step::LayerNorm | Step::RmsNorm => {
                let x = self.float_value(1)?;
                let (dt, d) = (self.b.dtype(x), self.b.dim(x, -1));
                let w = if self.rng.random_bool(0.5) { Some(self.fresh(dt, vec![d.clone()])?) } else { None };
                let eps = self.float();
                if matches!(step, Step::RmsNorm) {
                    return one(self.b.rms_norm(x, w, eps)?);
                }
                let bias = if self.rng.random_bool(0.5) { Some(self.fresh(dt, vec![d])?) } else { None };
                one(self.b.layer_norm(x, w, bias, eps)?)
            }
            Step::GroupNorm => {
                let g = self.rng.random_range(1..=3);
                let c = Dim::Const(g * self.rng.random_range(1..=3));
                let dt = self.float_dtype();
                let mut sh = vec![self.dim(), c.clone()];
                let sp = self.rng.random_range(0..=2);
                sh.extend(self.shape(sp));
                let x = self.fresh(dt, sh)?;
                let wb = if self.rng.random_bool(0.5) { Some((self.fresh(dt, vec![c.clone()])?, self.fresh(dt, vec![c])?)) } else { None };
                let eps = self.float();
                one(self.b.group_norm(x, wb, g as usize, eps)?)
            }
            Step::MatMul => {
                let dt = self.float_dtype();
                let nb = self.rng.random_range(0..=2);
                let batch = self.shape(nb);
                let (m, k, n) = (self.dim(), self.dim(), self.dim());
                let mut sa = batch.clone();
                sa.extend([m, k.clone()]);
                let mut sb = self.broadcastable(&batch);
                sb.extend([k, n]);
                let a = self.fresh(dt, sa)?;
                let b = self.fresh(dt, sb)?;
                one(self.b.matmul(a, b)?)
            }
            Step::Linear => {
                let x = self.float_value(1)?;
                let (dt, k, n) = (self.b.dtype(x), self.b.dim(x, -1), self.dim());
                let w = self.fresh(dt, vec![n.clone(), k])?;
                let bias = if self.rng.random_bool(0.5) { Some(self.fresh(dt, vec![n])?) } else { None };
                one(self.b.linear(x, w, bias)?)
            }
            Step::Attention => {
                let dt = self.float_dtype();
                let (bt, sq, sk, d, dv) = (self.dim(), self.dim(), self.dim(), self.dim(), self.dim());
                let hk = self.rng.random_range(1..=3);
                let h = Dim::Const(hk * self.rng.random_range(1..=3));
                let hk = Dim::Const(hk);
                let q = self.fresh(dt, vec![bt.clone(), h.clone(), sq.clone(), d.clone()])?;
                let k = self.fresh(dt, vec![bt.clone(), hk.clone(), sk.clone(), d])?;
                let v = self.fresh(dt, vec![bt.clone(), hk, sk.clone(), dv])?;
                let mask = if self.rng.random_bool(0.5) {
                    let full = vec![bt, h, sq, sk];
                    let msh = self.broadcastable(&full);
                    Some(self.fresh(dt, msh)?)
                } else {
                    None
                };
                let scale = if self.rng.random_bool(0.5) { Some(self.float()) } else { None };
                let causal = self.rng.random_bool(0.5);
                one(self.b.attention(q, k, v, mask, scale, causal)?)
            }
            Step::Conv => {
                let sp = self.rng.random_range(2..=3);
                let g = self.rng.random_range(1..=2);
                let (ci, co) = (self.rng.random_range(1..=3), self.rng.random_range(1..=3));
                let dt = self.float_dtype();
                let mut stride = vec![];
                let mut padding = vec![];
                let mut dilation = vec![];
                let mut xs = vec![self.dim(), Dim::Const(g * ci)];
                let mut ws = vec![Dim::Const(g * co), Dim::Const(ci)];
                for _ in 0..sp {
                    let (k, st, p, dl) =
                        (self.rng.random_range(1..=3), self.rng.random_range(1..=3), self.rng.random_range(0..=2), self.rng.random_range(1..=2));
                    let s = if self.rng.random_bool(0.5) {
                        Dim::Const(dl * (k - 1) + 1 + self.rng.random_range(0..=4))
                    } else {
                        Dim::parse(["h", "w", "(h/2)*(w/2)", "t"].choose(&mut self.rng).copied().unwrap_or("h")).expect("dim")
                    };
                    xs.push(s);
                    ws.push(Dim::Const(k));
                    stride.push(st as usize);
                    padding.push(p as usize);
                    dilation.push(dl as usize);
                }
                let x = self.fresh(dt, xs)?;
                let w = self.fresh(dt, ws)?;
                let bias = if self.rng.random_bool(0.5) { Some(self.fresh(dt, vec![Dim::Const(g * co)])?) } else { None };
                one(self.b.conv(x, w, bias, &stride, &padding, &dilation, g as usize)?)
            }
            Step::Upsample => {
                let dt = self.any_dtype();
                let x = self.value(|_, r| (3..=5).contains(&r), dt, 3..=5)?;
                let scale: Vec<usize> = (2..self.b.rank(x)).map(|_| self.rng.random_range(1..=3)).collect();
                one(self.b.upsample_nearest(x, &scale)?)
            }
            Step::Pad => {
                let dt = self.any_dtype();
                let x = self.value(|_, _| true, dt, 0..=3)?;
                let pads: Vec<(usize, usize)> = (0..self.b.rank(x)).map(|_| (self.rng.random_range(0..=2), self.rng.random_range(0..=2))).collect();
                let v = self.float();
                one(self.b.pad(x, &pads, v)?)
            }
            Step::Reshape => {
                let dt = self.any_dtype();
                let x = self.value(|_, r| r >= 1, dt, 1..=4)?;
                let mut sh = self.b.shape(x);
                match self.rng.random_range(0..3) {
                    0 if sh.len() >= 2 => {
                        let i = self.rng.random_range(0..sh.len() - 1);
                        let merged = sh[i].mul(&sh[i + 1]);
                        sh.splice(i..i + 2, [merged]);
                    }
                    1 => sh = vec![Dim::product(&sh)],
                    _ => {
                        let i = self.rng.random_range(0..=sh.len());
                        sh.insert(i, Dim::Const(1));
                    }
                }
                one(self.b.reshape(x, sh)?)
            }
            Step::Transpose => {
                let dt = self.any_dtype();
                let x = self.value(|_, _| true, dt, 0..=4)?;
                let mut perm: Vec<usize> = (0..self.b.rank(x)).collect();
                perm.shuffle(&mut self.rng);
                one(self.b.transpose(x, &perm)?)
            }
            Step::Expand => {
                let dt = self.any_dtype();
                let r = self.rng.random_range(0..=4);
                let target = self.shape(r);
                let xs = self.broadcastable(&target);
                let x = self.fresh(dt, xs)?;
                one(self.b.expand(x, target)?)
            }
            Step::Concat => {
                let dt = self.any_dtype();
                let x = self.value(|_, r| r >= 1, dt, 1..=3)?;
                let r = self.b.rank(x);
                let axis = self.axis(r);
                let a = if axis < 0 { (axis + r as isize) as usize } else { axis as usize };
                let mut xs = vec![x];
                for _ in 0..self.rng.random_range(0..=2) {
                    let mut sh = self.b.shape(x);
                    sh[a] = self.dim();
                    xs.push(self.fresh(self.b.dtype(x), sh)?);
                }
                xs.shuffle(&mut self.rng);
                one(self.b.concat(&xs, axis)?)
            }
            Step::Split => {
                let dt = self.any_dtype();
                let x = self.value(|_, r| r >= 1, dt, 1..=3)?;
                let r = self.b.rank(x);
                let axis = self.axis(r);
                let d = self.b.dim(x, axis);
                let sizes = match d.as_const() {
                    Some(n) if n >= 2 => {
                        let cut = self.rng.random_range(1..n);
                        if self.rng.random_bool(0.5) {
                            vec![Dim::Const(cut), Dim::Const(n - cut)]
                        } else {
                            vec![Dim::Const(n)]
                        }
                    }
                    Some(n) => vec![Dim::Const(n)],
                    None => {
                        let k = self.rng.random_range(1..=3);
                        let mut s: Vec<Dim> = (0..k).map(|i| Dim::Const(i + 1)).collect();
                        s.push(d.sub(&Dim::Const(k * (k + 1) / 2)));
                        s
                    }
                };
                Ok(self.b.split(x, axis, &sizes)?)
            }
            Step::Slice => {
                let dt = self.any_dtype();
                let x = self.value(|_, r| r >= 1, dt, 1..=3)?;
                let axis = self.axis(self.b.rank(x));
                let d = self.b.dim(x, axis);
                let (start, end) = match d.as_const() {
                    Some(n) => {
                        let a = self.rng.random_range(0..=n);
                        (Dim::Const(a), Dim::Const(self.rng.random_range(a..=n)))
                    }
                    None => (Dim::Const(1), d.sub(&Dim::Const(1))),
                };
                one(self.b.slice(x, axis, start, end)?)
            }
            Step::Gather => {
                let dt = self.any_dtype();
                let x = self.value(|_, r| r >= 1, dt, 1..=3)?;
                let axis = self.axis(self.b.rank(x));
                let idx = if self.rng.random_bool(0.3) {
                    let len = self.dim();
                    self.b.iota(len, DType::I64)?
                } else {
                    let it = if self.rng.random_bool(0.5) { DType::I64 } else { DType::I32 };
                    let r = self.rng.random_range(0..=2);
                    let sh = self.shape(r);
                    self.fresh(it, sh)?
                };
                one(self.b.gather(x, idx, axis)?)
            }
            Step::TopK => {
                let dt = *[DType::F32, DType::I64, DType::BF16].choose(&mut self.rng).unwrap_or(&DType::F32);
                let r = self.rng.random_range(0..=2);
                let mut sh = self.shape(r);
                let n = self.rng.random_range(1..=6);
                sh.push(Dim::Const(n));
                let x = self.fresh(dt, sh)?;
                let (v, i) = self.b.topk(x, self.rng.random_range(1..=n as usize))?;
                Ok(vec![v, i])
            }
            Step::Moe => {
                let dt = self.float_dtype();
                let t = self.dim();
                let (h, e, i) = (self.static_dim(), self.rng.random_range(1..=4i64), self.static_dim());
                let x = self.fresh(dt, vec![t.clone(), h.clone()])?;
                let logits = self.fresh(dt, vec![t, Dim::Const(e)])?;
                let wg = self.fresh(dt, vec![Dim::Const(e), i.clone(), h.clone()])?;
                let wu = self.fresh(dt, vec![Dim::Const(e), i.clone(), h.clone()])?;
                let wd = self.fresh(dt, vec![Dim::Const(e), h, i])?;
                let act = *UnaryOp::ALL.choose(&mut self.rng).unwrap_or(&UnaryOp::Silu);
                let k = self.rng.random_range(1..=e as usize);
                one(self.b.moe(x, logits, wg, wu, wd, k, self.rng.random_bool(0.5), act)?)
            }
        }
    }

    /// A finished, verified graph with a few named outputs.
    pub fn graph(mut self, extra: usize) -> Graph {
        let mut steps = all_steps();
        steps.shuffle(&mut self.rng);
        let all = all_steps();
        for _ in 0..extra {
            steps.push(*all.choose(&mut self.rng).expect("steps"));
        }
        for s in steps {
            if let Err(e) = self.step(s) {
                panic!("generator step {s:?} failed: {e}");
            }
        }
        let n_out = self.rng.random_range(1..=4);
        for i in 0..n_out {
            let v = *self.pool.choose(&mut self.rng).expect("pool");
            let name = format!("{i}:{}", NAMES.choose(&mut self.rng).copied().unwrap_or("out"));
            self.b.output(&name, v);
        }
        self.b.finish().unwrap_or_else(|e| panic!("generated graph does not verify: {e}"))
    }
}

/// The graph of seed `seed`.
pub(super) fn graph(seed: u64) -> Graph {
    Gen::new(seed).graph((seed % 20) as usize)
}

/// A program of a few generated stages with awkward metadata.
pub(super) fn program(seed: u64) -> Program {
    let stages: Vec<Stage> = (0..3).map(|i| Stage { name: format!("stage {i} \"q\""), graph: graph(seed * 7 + i) }).collect();
    let mut metadata = BTreeMap::new();
    metadata.insert("arch".to_string(), "flux".to_string());
    metadata.insert("weird \"key\"\n".to_string(), "back\\slash ✓\t".to_string());
    metadata.insert(String::new(), String::new());
    let control = Control::Forward { stage: stages[1].name.clone() };
    Program { stages, control, metadata }
}
