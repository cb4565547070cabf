//! Convolutional layers (PyTorch `nn.Conv2d`, `nn.GroupNorm`) on NCHW
//! tensors, weights named `prefix.weight` / `prefix.bias`.

use crate::ctx::{Ctx, V};
use crate::error::{ImportError, Result};

/// Static channel count (dim 1) of an NCHW value.
pub fn channels(ctx: &Ctx, x: V) -> Result<usize> {
    let d = ctx.b.dim(x, 1);
    d.as_const()
        .map(|c| c as usize)
        .ok_or_else(|| ImportError::Ir(omnic_ir::IrError::Graph(format!("expected a static channel dim, found `{d}` in {}", ctx.b.scope().unwrap_or("<top>")))))
}

/// `nn.Conv2d(in, out, k, stride=1, padding=pad)` with weight
/// `{p}.weight [out, in, k, k]` and bias `{p}.bias [out]` when stored.
pub fn conv2d(ctx: &mut Ctx, p: &str, x: V, out: usize, k: usize, pad: usize) -> Result<V> {
    let inp = channels(ctx, x)?;
    ctx.scope(p);
    let w = ctx.w(&format!("{p}.weight"), &[out, inp, k, k])?;
    let b = ctx.w_opt(&format!("{p}.bias"), &[out])?;
    Ok(ctx.b.conv(x, w, b, &[1, 1], &[pad, pad], &[1, 1], 1)?)
}

/// Affine `nn.GroupNorm(groups, C, eps)` over `x [N, C, ...]` with
/// `{p}.weight`, `{p}.bias` `[C]`.
pub fn group_norm(ctx: &mut Ctx, p: &str, x: V, groups: usize, eps: f64) -> Result<V> {
    let c = channels(ctx, x)?;
    ctx.scope(p);
    let w = ctx.w(&format!("{p}.weight"), &[c])?;
    let b = ctx.w(&format!("{p}.bias"), &[c])?;
    Ok(ctx.b.group_norm(x, Some((w, b)), groups, eps)?)
}
