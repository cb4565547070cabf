//! Multi-axis rotary position embeddings, Flux style (diffusers
//! `transformer_flux.py`: `FluxPosEmbed`; `embeddings.py`:
//! `get_1d_rotary_pos_embed(use_real=True, repeat_interleave_real=True)` and
//! `apply_rotary_emb(use_real=True, use_real_unbind_dim=-1)`).
//!
//! Positions are per-token id vectors `ids [S, n_axes]` (Flux: `[0, row,
//! col]`, text all zeros). Axis `a` owns `axes_dims[a]` consecutive channels
//! of each head; within them channel pair `(2j, 2j+1)` rotates by the angle
//! `ids[s, a] · θ^(-2j / axes_dims[a])`. The tables are computed inside the
//! graph from the `ids` input, so the sequence length stays symbolic:
//!
//! * [`pos_embed`] `ids [S, n_axes] → (cos, sin)`, each `[S, Σ axes_dims]`,
//!   every frequency repeated twice (`repeat_interleave(2)`).
//! * [`apply_rotary_emb`] `x [B, H, S, D]` with those tables:
//!   `x · cos + rot(x) · sin`, where `rot` maps each channel pair
//!   `(x₀, x₁) → (-x₁, x₀)` ([`RotaryPairs::Interleaved`], Flux / Flux2 /
//!   the real form of Qwen-Image's complex product) or the two halves
//!   `(x_a, x_b) → (-x_b, x_a)` ([`RotaryPairs::Halves`],
//!   `use_real_unbind_dim=-2`; the caller then builds matching
//!   `[f, f]`-ordered tables).
//!
//! Precision: diffusers computes the frequencies and angles in f64 and rounds
//! `cos`/`sin` to f32. Here the frequencies are f32 constants and the angle
//! `pos · freq` is one f32 product, so the angle carries one extra f32
//! rounding (relative 6e-8: for Flux-size ids, |pos · freq| ≲ 600, about
//! 3e-5 absolute in the worst case, usually far less because the large
//! positions meet small frequencies).
//!
//! Families with another `theta` pass it; other per-axis tables can
//! build on [`axis_freqs`] / [`channel_freqs`].

use crate::ctx::{Ctx, V};
use crate::error::{ImportError, Result};
use omnic_ir::{DType, Dim, Literal, UnaryOp};

/// How the channel pairs of a head are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotaryPairs {
    /// Pairs are adjacent channels `(2j, 2j+1)` (`use_real_unbind_dim=-1`).
    Interleaved,
    /// Pair `j` is `(j, j + D/2)` (`use_real_unbind_dim=-2`).
    Halves,
}

/// Frequencies `1 / θ^(2j/d)` for `j < d/2` of one axis, computed in f64 as
/// diffusers does (`freqs_dtype=float64`). `d` must be even.
pub fn axis_freqs(d: usize, theta: f64) -> Vec<f64> {
    (0..d / 2).map(|j| 1.0 / theta.powf((2 * j) as f64 / d as f64)).collect()
}

/// Per-channel `(axis, frequency)` over the concatenated axes, each axis's
/// frequencies repeated twice: `[f0, f0, f1, f1, ...]`.
pub fn channel_freqs(axes_dims: &[usize], theta: f64) -> Result<Vec<(usize, f64)>> {
    let mut out = Vec::new();
    for (a, &d) in axes_dims.iter().enumerate() {
        if d % 2 != 0 {
            return Err(ImportError::Config {
                path: "config.json".into(),
                field: "axes_dims_rope".into(),
                message: format!("axis {a} has odd size {d}; rotary axes need an even number of channels"),
            });
        }
        out.extend(axis_freqs(d, theta).into_iter().flat_map(|x| [(a, x), (a, x)]));
    }
    Ok(out)
}

/// `FluxPosEmbed(theta, axes_dims)(ids)`: `ids [S, len(axes_dims)]` (any
/// float or integer dtype; cast to f32 like `ids.float()`) → `(cos, sin)`,
/// each f32 `[S, Σ axes_dims]`, frequencies repeat-interleaved.
pub fn pos_embed(ctx: &mut Ctx, ids: V, axes_dims: &[usize], theta: f64) -> Result<(V, V)> {
    let n_axes = ctx.b.dim(ids, -1);
    if ctx.b.rank(ids) != 2 || n_axes.as_const() != Some(axes_dims.len() as i64) {
        return Err(ImportError::Ir(omnic_ir::IrError::Graph(format!(
            "rotary ids must be [seq, {}] (one column per rope axis), found {}",
            axes_dims.len(),
            ctx.b.ty(ids)
        ))));
    }
    let ch = channel_freqs(axes_dims, theta)?;
    let d = ch.len();
    let pos = if ctx.b.dtype(ids) == DType::F32 { ids } else { ctx.b.cast(ids, DType::F32)? };
    // Column of `ids` each channel reads, then the per-channel frequency.
    let idx = ctx.b.constant(Literal { dtype: DType::I64, shape: vec![d], values: ch.iter().map(|&(a, _)| a as f64).collect() })?;
    let per_ch = ctx.b.gather(pos, idx, 1)?;
    let freqs = ctx.b.constant(Literal { dtype: DType::F32, shape: vec![d], values: ch.iter().map(|&(_, f)| f).collect() })?;
    let angle = ctx.b.mul(per_ch, freqs)?;
    let cos = ctx.b.unary(UnaryOp::Cos, angle)?;
    let sin = ctx.b.unary(UnaryOp::Sin, angle)?;
    Ok((cos, sin))
}

/// `apply_rotary_emb(x, (cos, sin), use_real=True)` for `x [B, H, S, D]`
/// and tables `[S, D]`: `x · cos + rot(x) · sin`.
pub fn apply_rotary_emb(ctx: &mut Ctx, x: V, cos: V, sin: V, pairs: RotaryPairs) -> Result<V> {
    let s = ctx.b.shape(x);
    let r = s.len();
    let d = s[r - 1].as_const().ok_or_else(|| ImportError::Ir(omnic_ir::IrError::Graph("rotary head dim must be static".into())))?;
    if d % 2 != 0 {
        return Err(ImportError::Ir(omnic_ir::IrError::Graph(format!("rotary head dim {d} is odd"))));
    }
    let half = Dim::from(d / 2);
    let rotated = match pairs {
        RotaryPairs::Interleaved => {
            // [.., D] → [.., D/2, 2]; (re, im) → (-im, re); back to [.., D].
            let mut pair_shape = s[..r - 1].to_vec();
            pair_shape.extend([half.clone(), Dim::from(2usize)]);
            let p = ctx.b.reshape(x, pair_shape)?;
            let parts = ctx.b.chunk(p, 2, -1)?;
            let neg_im = ctx.b.unary(UnaryOp::Neg, parts[1])?;
            let rp = ctx.b.concat(&[neg_im, parts[0]], -1)?;
            ctx.b.reshape(rp, s.clone())?
        }
        RotaryPairs::Halves => {
            let parts = ctx.b.chunk(x, 2, -1)?;
            let neg_b = ctx.b.unary(UnaryOp::Neg, parts[1])?;
            ctx.b.concat(&[neg_b, parts[0]], -1)?
        }
    };
    let xc = ctx.b.mul(x, cos)?;
    let rs = ctx.b.mul(rotated, sin)?;
    Ok(ctx.b.add(xc, rs)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flux_channel_layout() {
        let ch = channel_freqs(&[2, 4], 10000.0).unwrap();
        let axes: Vec<usize> = ch.iter().map(|c| c.0).collect();
        assert_eq!(axes, vec![0, 0, 1, 1, 1, 1]);
        assert_eq!(ch[2].1, 1.0);
        assert!((ch[4].1 - 0.01).abs() < 1e-12);
        assert!(channel_freqs(&[3], 10000.0).is_err());
    }
}
