//! Hand-written f32 CPU kernels for the runtime's [`Ukernel`] steps, with
//! semantics equal to the IR ops of the same name (checked against naive
//! implementations of the IR evaluator's loops in each file's tests):
//!
//! * [`gemm`]: strided GEMM with epilogues on the `gemm` crate; `Linear`
//!   and broadcast-batched `MatMul`.
//! * [`attention`]: flash-style attention with GQA, causal (bottom-right)
//!   and broadcast additive masks.
//! * [`conv`]: 2-D / 3-D grouped convolution (im2col + GEMM, direct for
//!   depthwise).
//! * [`topk`]: top-k along the last axis with values and i64 indices.
//! * [`moe`]: fused sparse MoE MLP (route, group tokens by expert, per-expert
//!   GEMMs through [`gemm`], weighted combine) in one call.
//!
//! Views are [`TensorRef`] / [`TensorMut`] ([`view`]); only f32 data for
//! now (other dtypes are a clear error naming the op). Threading: rayon,
//! a pool of exactly `threads` workers, 0 = physical cores ([`threads`]).
//! [`run_ukernel`] validates shapes and dtypes and dispatches.

pub mod attention;
pub mod conv;
pub mod gemm;
pub mod gemm_packed;
pub mod linear_sections;
pub mod moe;
pub mod spin_pool;
pub mod threads;
pub mod topk;
pub mod view;

pub use threads::default_threads;
pub use view::{TensorMut, TensorRef};

use crate::artifact::manifest::Ukernel;
use crate::tensor::ElemType;
use std::cell::RefCell;

/// A kernel failure: the op and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op}: {message}")]
pub struct KernelError {
    pub op: &'static str,
    pub message: String,
}

impl KernelError {
    pub fn new(op: &'static str, message: impl Into<String>) -> Self {
        KernelError { op, message: message.into() }
    }
    /// Re-attributes an inner kernel's error (`gemm: …`) to `op`.
    fn within(self, op: &'static str) -> Self {
        if self.op == op {
            self
        } else {
            KernelError { op, message: format!("{}: {}", self.op, self.message) }
        }
    }
}

/// The IR mnemonic of a ukernel (names it in errors).
pub fn ukernel_name(op: &Ukernel) -> &'static str {
    match op {
        Ukernel::Linear { .. } | Ukernel::LinearSections { .. } => "linear",
        Ukernel::MatMul => "matmul",
        Ukernel::Attention { .. } => "attention",
        Ukernel::Conv { .. } => "conv",
        Ukernel::TopK { .. } => "topk",
        Ukernel::Moe { .. } => "moe",
    }
}

thread_local! {
    /// im2col scratch for [`run_ukernel`]'s convolutions, per calling thread.
    static CONV_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn arity(name: &'static str, args: usize, want_args: usize, results: usize, want_results: usize) -> Result<(), KernelError> {
    if args != want_args || results != want_results {
        return Err(KernelError::new(name, format!("{args} operands and {results} results, expected {want_args} and {want_results}")));
    }
    Ok(())
}

fn expect_shape(name: &'static str, what: &str, got: &[usize], want: &[usize]) -> Result<(), KernelError> {
    if got != want {
        return Err(KernelError::new(name, format!("{what} has shape {got:?}, expected {want:?}")));
    }
    Ok(())
}

/// Runs one ukernel: `args` are its operands in IR order, `results` its
/// preallocated outputs (shapes must be the op's result shapes), `threads`
/// workers (0 = physical cores). Only f32 operands for now (TopK's indices
/// result is i64).
pub fn run_ukernel(op: &Ukernel, args: &[TensorRef], results: &mut [TensorMut], threads: usize) -> Result<(), KernelError> {
    let name = ukernel_name(op);
    match op {
        Ukernel::Linear { bias } => {
            arity(name, args.len(), 2 + *bias as usize, results.len(), 1)?;
            let (x, w) = (&args[0], &args[1]);
            let (xd, wd) = (x.f32s(name, "input")?, w.f32s(name, "weight")?);
            let bd = if *bias { Some(args[2].f32s(name, "bias")?) } else { None };
            let (Some((&k, lead)), [n, k2]) = (x.shape.split_last(), w.shape) else {
                return Err(KernelError::new(name, format!("input {:?} needs rank ≥ 1 and weight {:?} rank 2", x.shape, w.shape)));
            };
            if k != *k2 {
                return Err(KernelError::new(name, format!("input K = {k}, weight {:?}", w.shape)));
            }
            if *bias {
                expect_shape(name, "bias", args[2].shape, &[*n])?;
            }
            let mut want = lead.to_vec();
            want.push(*n);
            expect_shape(name, "result", results[0].shape, &want)?;
            let y = results[0].f32s_mut(name, "result")?;
            gemm::linear(xd, lead.iter().product(), k, wd, *n, bd, y, threads).map_err(|e| e.within(name))
        }
        Ukernel::LinearSections { bias, inputs } => linear_sections::run(*bias, *inputs, args, results, false, threads),
        Ukernel::MatMul => {
            arity(name, args.len(), 2, results.len(), 1)?;
            let (a, b) = (&args[0], &args[1]);
            let (ad, bd) = (a.f32s(name, "lhs")?, b.f32s(name, "rhs")?);
            let (ra, rb) = (a.shape.len(), b.shape.len());
            if ra < 2 || rb < 2 {
                return Err(KernelError::new(name, format!("operands need rank ≥ 2, got {:?} and {:?}", a.shape, b.shape)));
            }
            let mut want = Vec::new();
            gemm::broadcast_shapes(name, &a.shape[..ra - 2], &b.shape[..rb - 2], &mut want)?;
            want.extend([a.shape[ra - 2], b.shape[rb - 1]]);
            expect_shape(name, "result", results[0].shape, &want)?;
            let c = results[0].f32s_mut(name, "result")?;
            gemm::batched_matmul(ad, a.shape, bd, b.shape, c, threads).map_err(|e| e.within(name))
        }
        Ukernel::Attention { scale, causal, mask } => {
            arity(name, args.len(), 3 + *mask as usize, results.len(), 1)?;
            let (qd, kd, vd) = (args[0].f32s(name, "q")?, args[1].f32s(name, "k")?, args[2].f32s(name, "v")?);
            let (&[b, h, sq, d], &[b2, hk, sk, d2], &[b3, hk2, sk2, dv]) = (args[0].shape, args[1].shape, args[2].shape) else {
                return Err(KernelError::new(name, format!("q {:?}, k {:?}, v {:?} must have rank 4", args[0].shape, args[1].shape, args[2].shape)));
            };
            if (b2, d2) != (b, d) || (b3, hk2, sk2) != (b, hk, sk) {
                return Err(KernelError::new(name, format!("q {:?}, k {:?}, v {:?} disagree", args[0].shape, args[1].shape, args[2].shape)));
            }
            let m = if *mask { Some(attention::Mask { data: args[3].f32s(name, "mask")?, shape: args[3].shape }) } else { None };
            expect_shape(name, "result", results[0].shape, &[b, h, sq, dv])?;
            let out = results[0].f32s_mut(name, "result")?;
            let dims = attention::AttnDims { batch: b, heads: h, kv_heads: hk, sq, sk, d, dv };
            attention::attention(dims, qd, kd, vd, m, *scale, *causal, out, threads)
        }
        Ukernel::Conv { stride, padding, dilation, groups, bias } => {
            arity(name, args.len(), 2 + *bias as usize, results.len(), 1)?;
            let (xd, wd) = (args[0].f32s(name, "input")?, args[1].f32s(name, "weight")?);
            let bd = if *bias { Some(args[2].f32s(name, "bias")?) } else { None };
            let prm = conv::ConvParams { stride, padding, dilation, groups: *groups };
            let want = conv::output_shape(args[0].shape, args[1].shape, &prm)?;
            expect_shape(name, "result", results[0].shape, &want)?;
            let y = results[0].f32s_mut(name, "result")?;
            let (xs, ws) = (args[0].shape, args[1].shape);
            CONV_SCRATCH.with(|cell| match cell.try_borrow_mut() {
                Ok(mut s) => conv::conv(xd, xs, wd, ws, bd, &prm, y, &mut s, threads),
                Err(_) => conv::conv(xd, xs, wd, ws, bd, &prm, y, &mut Vec::new(), threads),
            })
        }
        Ukernel::TopK { k } => {
            arity(name, args.len(), 1, results.len(), 2)?;
            let xd = args[0].f32s(name, "input")?;
            let Some((&n, lead)) = args[0].shape.split_last() else {
                return Err(KernelError::new(name, "input is a scalar"));
            };
            let mut want = lead.to_vec();
            want.push(*k);
            let (vr, ir) = results.split_at_mut(1);
            let (vr, ir) = (&mut vr[0], &mut ir[0]);
            expect_shape(name, "values", vr.shape, &want)?;
            expect_shape(name, "indices", ir.shape, &want)?;
            if ir.dtype != ElemType::I64 {
                return Err(KernelError::new(name, format!("indices must be i64, not {}", ir.dtype)));
            }
            let vals = vr.f32s_mut(name, "values")?;
            let inds = ir.i64s_mut(name, "indices")?;
            if n == 0 || *k == 0 {
                return if *k > n { Err(KernelError::new(name, format!("k = {k} > row length {n}"))) } else { Ok(()) };
            }
            topk::topk(xd, n, *k, vals, inds, threads)
        }
        Ukernel::Moe { top_k, norm_topk, act } => {
            arity(name, args.len(), 5, results.len(), 1)?;
            let (&[t, h], &[t2, e], &[e2, i, h2]) = (args[0].shape, args[1].shape, args[2].shape) else {
                return Err(KernelError::new(name, format!("x {:?}, logits {:?}, w_gate {:?} need ranks 2, 2, 3", args[0].shape, args[1].shape, args[2].shape)));
            };
            if (t2, e2, h2) != (t, e, h) {
                return Err(KernelError::new(name, format!("x {:?}, logits {:?}, w_gate {:?} disagree", args[0].shape, args[1].shape, args[2].shape)));
            }
            expect_shape(name, "w_up", args[3].shape, &[e, i, h])?;
            expect_shape(name, "w_down", args[4].shape, &[e, h, i])?;
            expect_shape(name, "result", results[0].shape, &[t, h])?;
            let (xd, ld) = (args[0].f32s(name, "x")?, args[1].f32s(name, "logits")?);
            let (wg, wu, wd) = (args[2].f32s(name, "w_gate")?, args[3].f32s(name, "w_up")?, args[4].f32s(name, "w_down")?);
            let y = results[0].f32s_mut(name, "result")?;
            let d = moe::MoeDims { tokens: t, hidden: h, experts: e, inner: i, top_k: *top_k };
            moe::moe(d, xd, ld, wg, wu, wd, *norm_topk, *act, y, threads)
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    /// Deterministic uniform values in [-1, 1) (splitmix64).
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
        }
        pub fn next(&mut self) -> f32 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        pub fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.next()).collect()
        }
    }

    /// `|got − want| ≤ rtol · (mag + |want|) + 1e-30` elementwise, where `mag`
    /// is the accumulated magnitude (`Σ|terms|`) behind each element.
    #[track_caller]
    pub fn assert_close(got: &[f32], want: &[f64], mag: &[f64], rtol: f64, ctx: &str) {
        assert_eq!(got.len(), want.len(), "{ctx}: length");
        for i in 0..got.len() {
            let err = (got[i] as f64 - want[i]).abs();
            let tol = rtol * (mag[i] + want[i].abs()) + 1e-30;
            if err.is_nan() || err > tol {
                panic!("{ctx}: element {i}: got {} want {} (|err| {err:e}, tol {tol:e})", got[i], want[i]);
            }
        }
    }
}

#[cfg(test)]
#[path = "tests/mod_tests.rs"]
mod tests;
