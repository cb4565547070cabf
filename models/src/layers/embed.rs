//! Timestep embeddings (diffusers `embeddings.py`: `get_timestep_embedding`,
//! `Timesteps`, `TimestepEmbedding`).

use crate::ctx::{Ctx, V};
use crate::error::Result;
use crate::layers::{activation, linear};
use omnic_ir::{DType, Dim, Literal};

/// Frequencies `exp(-ln(max_period) · i / (half - shift))`, computed in f32
/// arithmetic as diffusers does (`torch.arange(..., dtype=float32)`).
pub fn timestep_freqs(half: usize, shift: f64, max_period: f64) -> Vec<f64> {
    let c = -(max_period.ln() as f32);
    let den = half as f32 - shift as f32;
    (0..half).map(|i| ((c * i as f32) / den).exp() as f64).collect()
}

/// Sinusoidal timestep features `[B] → [B, dim]`: `[sin, cos]` of
/// `scale · t · freqs` (`[cos, sin]` when `flip_sin_to_cos`), zero-padded
/// to odd `dim`. The timestep is cast to f32 first, as diffusers does.
pub fn timestep_sinusoid(ctx: &mut Ctx, t: V, dim: usize, flip_sin_to_cos: bool, shift: f64, scale: f64, max_period: f64) -> Result<V> {
    let half = dim / 2;
    let tf = if ctx.b.dtype(t) == DType::F32 { t } else { ctx.b.cast(t, DType::F32)? };
    let b = ctx.b.dim(tf, 0);
    let t2 = ctx.b.reshape(tf, vec![b, Dim::from(1usize)])?;
    let freqs = ctx.b.constant(Literal { dtype: DType::F32, shape: vec![1, half], values: timestep_freqs(half, shift, max_period) })?;
    let mut arg = ctx.b.mul(t2, freqs)?;
    if scale != 1.0 {
        arg = ctx.b.mul_scalar(arg, scale)?;
    }
    let s = ctx.b.unary(omnic_ir::UnaryOp::Sin, arg)?;
    let c = ctx.b.unary(omnic_ir::UnaryOp::Cos, arg)?;
    let mut e = if flip_sin_to_cos { ctx.b.concat(&[c, s], -1)? } else { ctx.b.concat(&[s, c], -1)? };
    if dim % 2 == 1 {
        e = ctx.b.pad(e, &[(0, 0), (0, 1)], 0.0)?;
    }
    Ok(e)
}

/// diffusers `TimestepEmbedding`: `linear_2(act(linear_1(x)))`.
pub fn timestep_mlp(ctx: &mut Ctx, p: &str, x: V, hidden: usize, out: usize, act: &str) -> Result<V> {
    let h = linear(ctx, &format!("{p}.linear_1"), x, hidden)?;
    let h = activation(ctx, act, h)?;
    linear(ctx, &format!("{p}.linear_2"), h, out)
}
