//! Literals inside kernels: one-element literals are inlined as scalar
//! constants where used; others become dense tensor constants (raw
//! little-endian bytes in hex, so every value, NaN and infinities included,
//! is exact). Values are rounded to their dtype as the evaluator does.

use super::{storage, tensor_ty, Func, TVal, Val};
use crate::error::Result;
use omnic_ir::eval::tensor::round_to;
use omnic_ir::{DType, Dim, Literal, TensorType};
use std::fmt::Write as _;

/// A literal's value as the evaluator stores it.
fn stored(dt: DType, v: f64) -> f64 {
    match dt {
        d if d.is_float() => round_to(d, v, false),
        DType::Bool => f64::from(u8::from(v != 0.0)),
        _ => (v as i64) as f64,
    }
}

/// Little-endian bytes of one stored element.
fn bytes(dt: DType, v: f64, out: &mut String) {
    let b: Vec<u8> = match dt {
        DType::F32 => (v as f32).to_le_bytes().to_vec(),
        DType::F16 => half::f16::from_f64(v).to_le_bytes().to_vec(),
        DType::BF16 => half::bf16::from_f64(v).to_le_bytes().to_vec(),
        DType::I64 => (v as i64).to_le_bytes().to_vec(),
        DType::I32 => ((v as i64) as i32).to_le_bytes().to_vec(),
        DType::Bool => vec![u8::from(v != 0.0)],
    };
    for x in b {
        let _ = write!(out, "{x:02X}");
    }
}

/// A dense constant tensor of `ty` (static shape) with stored `values`.
fn dense(f: &mut Func, ty: &TensorType, values: &[f64]) -> Result<TVal> {
    let shape: Vec<usize> = ty
        .shape
        .iter()
        .map(|d| d.as_const().and_then(|c| usize::try_from(c).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| f.internal("constant with a symbolic shape"))?;
    let n: usize = shape.iter().product();
    if n == 0 {
        let ssa = f.empty(&ty.shape, storage(ty.dtype))?;
        return Ok(TVal { ssa, ty: ty.clone() });
    }
    let mut hex = String::with_capacity(2 + n * 8);
    for i in 0..n {
        let v = values.get(if values.len() == 1 { 0 } else { i }).copied().ok_or_else(|| f.internal("literal has too few values"))?;
        bytes(ty.dtype, stored(ty.dtype, v), &mut hex);
    }
    let ssa = f.fresh();
    f.top.push(format!("{ssa} = arith.constant dense<\"0x{hex}\"> : {}", tensor_ty(ty)));
    Ok(TVal { ssa, ty: ty.clone() })
}

/// How a kernel holds a literal it reads.
pub(super) fn constant(f: &mut Func, lit: &Literal) -> Result<Val> {
    if lit.values.len() != lit.shape.iter().product::<usize>() {
        return Err(f.unsupported(format!("literal has {} values for shape {:?}", lit.values.len(), lit.shape)));
    }
    if lit.values.len() == 1 {
        return Ok(Val::Scalar(stored(lit.dtype, lit.values[0])));
    }
    let ty = TensorType::new(lit.dtype, lit.shape.iter().map(|&d| Dim::from(d)).collect());
    Ok(Val::Tensor(dense(f, &ty, &lit.values)?))
}

/// A tensor of `ty` (static, one element) holding the stored value `x`.
pub(super) fn splat(f: &mut Func, ty: &TensorType, x: f64) -> Result<TVal> {
    dense(f, ty, &[x])
}
