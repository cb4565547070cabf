//! Qwen-Image rotary positions: diffusers `QwenEmbedRope` and
//! `QwenEmbedLayer3DRope` (transformer_qwenimage.py), always with
//! `scale_rope=True`, `theta=10000`.
//!
//! Head channels split into the three axes (`axes_dims_rope`: frame,
//! height, width); pair `j` of axis `a` rotates by `pos_a · θ^(-2j/d_a)`
//! (complex product `apply_rotary_emb_qwen(use_real=False)`, i.e. adjacent
//! channel pairs, [`RotaryPairs::Interleaved`]).
//!
//! * Image token `(f, y, x)` of image `k` (height `h`, width `w`) sits at
//!   `(k + f, y - ⌈h/2⌉, x - ⌈w/2⌉)` (`scale_rope` centres the grid:
//!   `cat(neg_freqs[-(h - h//2):], pos_freqs[:h//2])`). With the layer-3D
//!   rope the last image (the condition image) has frame position -1.
//! * Text token `i` sits at `m + i` on all three axes, with
//!   `m = max over images of max(h/2, w/2)` (and, layer-3D, at least the
//!   number of images - 1).
//!
//! The image positions follow from the compile-time layout and are a small
//! `[N, 3]` constant sliced to the symbolic `img_seq`; the text positions
//! are computed in the graph from `iota(txt_seq)`, so the text length stays
//! symbolic. Angles are one f32 product of the position and an f32
//! frequency computed as torch does (`1 / pow(θ, arange(0, d, 2) / d)` in
//! f32), then `cos` / `sin`, as `torch.polar` on the f32 angle.

use super::layout::ImageLayout;
use crate::ctx::{Ctx, V};
use crate::error::{ImportError, Result};
use crate::layers::rope::{apply_rotary_emb, RotaryPairs};
use omnic_ir::{DType, Dim, Literal, UnaryOp};

pub const THETA: f32 = 10000.0;

/// Per channel `(axis, frequency)` over the concatenated axes, each pair's
/// frequency repeated for its two channels, in f32 arithmetic like torch.
pub fn channel_freqs(axes_dims: &[usize], path: &str) -> Result<Vec<(usize, f32)>> {
    let mut out = Vec::new();
    for (a, &d) in axes_dims.iter().enumerate() {
        if d == 0 || d % 2 != 0 {
            return Err(ImportError::Config {
                path: path.into(),
                field: "axes_dims_rope".into(),
                message: format!("axis {a} has size {d}; rotary axes need a positive even number of channels"),
            });
        }
        for j in 0..d / 2 {
            let e = (2 * j) as f32 / d as f32;
            let f = 1.0f32 / THETA.powf(e);
            out.extend([(a, f), (a, f)]);
        }
    }
    Ok(out)
}

/// Positions `[frame, row, col]` of every image token, in token order.
pub fn image_positions(layout: &ImageLayout, layer3d: bool) -> Vec<[i64; 3]> {
    let last = layout.shapes.len().saturating_sub(1);
    let mut out = Vec::with_capacity(layout.tokens());
    for (k, &[f, h, w]) in layout.shapes.iter().enumerate() {
        let (h, w) = (h as i64, w as i64);
        for fi in 0..f as i64 {
            let frame = if layer3d && k == last { -1 } else { k as i64 + fi };
            for y in 0..h {
                for x in 0..w {
                    out.push([frame, y - (h - h / 2), x - (w - w / 2)]);
                }
            }
        }
    }
    out
}

/// First text position (`max_vid_index`).
pub fn text_offset(layout: &ImageLayout, layer3d: bool) -> i64 {
    let m = layout.shapes.iter().map(|s| (s[1] / 2).max(s[2] / 2)).max().unwrap_or(0) as i64;
    if layer3d {
        m.max(layout.shapes.len() as i64 - 1)
    } else {
        m
    }
}

/// `(cos, sin)` tables `[S, D]` of the image tokens `0..img_seq`.
pub fn image_tables(ctx: &mut Ctx, layout: &ImageLayout, layer3d: bool, ch: &[(usize, f32)], img_seq: &Dim) -> Result<(V, V)> {
    let pos = image_positions(layout, layer3d);
    let n = pos.len();
    let ids = ctx.b.constant(Literal { dtype: DType::F32, shape: vec![n, 3], values: pos.iter().flat_map(|p| p.map(|v| v as f64)).collect() })?;
    let ids = ctx.b.slice(ids, 0, Dim::from(0usize), img_seq.clone())?;
    let axis = ctx.b.constant(Literal { dtype: DType::I64, shape: vec![ch.len()], values: ch.iter().map(|&(a, _)| a as f64).collect() })?;
    let per_ch = ctx.b.gather(ids, axis, 1)?;
    angles_to_tables(ctx, per_ch, ch)
}

/// `(cos, sin)` tables `[T, D]` of the text tokens `0..txt_seq`.
pub fn text_tables(ctx: &mut Ctx, offset: i64, ch: &[(usize, f32)], txt_seq: &Dim) -> Result<(V, V)> {
    let i = ctx.b.iota(txt_seq.clone(), DType::F32)?;
    let i = ctx.b.add_scalar(i, offset as f64)?;
    let i = ctx.b.reshape(i, vec![txt_seq.clone(), Dim::from(1usize)])?;
    angles_to_tables(ctx, i, ch)
}

fn angles_to_tables(ctx: &mut Ctx, pos: V, ch: &[(usize, f32)]) -> Result<(V, V)> {
    let freqs = ctx.b.constant(Literal { dtype: DType::F32, shape: vec![ch.len()], values: ch.iter().map(|&(_, f)| f as f64).collect() })?;
    let angle = ctx.b.mul(pos, freqs)?;
    let cos = ctx.b.unary(UnaryOp::Cos, angle)?;
    let sin = ctx.b.unary(UnaryOp::Sin, angle)?;
    Ok((cos, sin))
}

/// Rotate `x [B, H, S, D]` by tables `[S, D]` (complex product on adjacent pairs).
pub fn apply(ctx: &mut Ctx, x: V, (cos, sin): (V, V)) -> Result<V> {
    apply_rotary_emb(ctx, x, cos, sin, RotaryPairs::Interleaved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_centred() {
        let l = ImageLayout::single(1, 4, 5);
        let p = image_positions(&l, false);
        assert_eq!(p.len(), 20);
        assert_eq!(p[0], [0, -2, -3]);
        assert_eq!(p[19], [0, 1, 1]);
        assert_eq!(text_offset(&l, false), 2);
        let two = ImageLayout { shapes: vec![[1, 2, 2], [1, 2, 2]] };
        let p = image_positions(&two, false);
        assert_eq!((p[0][0], p[4][0]), (0, 1));
        let p = image_positions(&two, true);
        assert_eq!((p[0][0], p[4][0]), (0, -1));
        assert_eq!(text_offset(&ImageLayout { shapes: vec![[1, 2, 2]; 4] }, true), 3);
        let ch = channel_freqs(&[2, 4], "c").unwrap();
        assert_eq!(ch.iter().map(|c| c.0).collect::<Vec<_>>(), vec![0, 0, 1, 1, 1, 1]);
        assert_eq!(ch[2].1, 1.0);
        assert!(channel_freqs(&[3], "c").is_err());
    }
}
