//! Layers shared by the model families. Weight names follow diffusers /
//! transformers module paths: `prefix.weight`, `prefix.bias`.

pub mod conv;
pub mod embed;
pub mod rope;

use crate::ctx::{Ctx, V};
use crate::error::{ImportError, Result};
use omnic_ir::{BinaryOp, Dim, UnaryOp};

/// Static size of `v`'s last dim (errors name the value's scope).
pub fn last_dim(ctx: &Ctx, v: V) -> Result<usize> {
    let d = ctx.b.dim(v, -1);
    d.as_const().map(|x| x as usize).ok_or_else(|| {
        ImportError::Ir(omnic_ir::IrError::Graph(format!("expected a static feature dim, found `{d}` in {}", ctx.b.scope().unwrap_or("<top>"))))
    })
}

/// `nn.Linear(in, out)`: weight `{p}.weight [out, in]`, bias `{p}.bias`
/// when the checkpoint has it.
pub fn linear(ctx: &mut Ctx, p: &str, x: V, out: usize) -> Result<V> {
    let inp = last_dim(ctx, x)?;
    ctx.scope(p);
    let w = ctx.w(&format!("{p}.weight"), &[out, inp])?;
    let b = ctx.w_opt(&format!("{p}.bias"), &[out])?;
    let y = ctx.b.linear(x, w, b)?;
    crate::lora::low_rank(ctx, p, x, y, inp, out)
}

/// `nn.Linear` that must have no bias (checks the checkpoint agrees).
pub fn linear_nobias(ctx: &mut Ctx, p: &str, x: V, out: usize) -> Result<V> {
    let inp = last_dim(ctx, x)?;
    ctx.scope(p);
    let w = ctx.w(&format!("{p}.weight"), &[out, inp])?;
    let y = ctx.b.linear(x, w, None)?;
    crate::lora::low_rank(ctx, p, x, y, inp, out)
}

/// `nn.LayerNorm` over the last dim; affine parameters when the checkpoint
/// has them (`elementwise_affine=False` modules store none).
pub fn layer_norm(ctx: &mut Ctx, p: &str, x: V, eps: f64) -> Result<V> {
    let d = last_dim(ctx, x)?;
    ctx.scope(p);
    let w = ctx.w_opt(&format!("{p}.weight"), &[d])?;
    let b = ctx.w_opt(&format!("{p}.bias"), &[d])?;
    Ok(ctx.b.layer_norm(x, w, b, eps)?)
}

/// LayerNorm without affine parameters.
pub fn layer_norm_plain(ctx: &mut Ctx, x: V, eps: f64) -> Result<V> {
    Ok(ctx.b.layer_norm(x, None, None, eps)?)
}

/// `RMSNorm` with weight `{p}.weight` (if stored) over the last dim.
pub fn rms_norm(ctx: &mut Ctx, p: &str, x: V, eps: f64) -> Result<V> {
    let d = last_dim(ctx, x)?;
    ctx.scope(p);
    let w = ctx.w_opt(&format!("{p}.weight"), &[d])?;
    Ok(ctx.b.rms_norm(x, w, eps)?)
}

/// Activation by diffusers name.
pub fn activation(ctx: &mut Ctx, name: &str, x: V) -> Result<V> {
    let op = match name {
        "silu" | "swish" => UnaryOp::Silu,
        "gelu" => UnaryOp::Gelu,
        "gelu-approximate" | "gelu_tanh" | "gelu_pytorch_tanh" => UnaryOp::GeluTanh,
        "relu" => UnaryOp::Relu,
        "tanh" => UnaryOp::Tanh,
        "sigmoid" => UnaryOp::Sigmoid,
        other => {
            return Err(ImportError::Config {
                path: "config.json".into(),
                field: "activation".into(),
                message: format!("unsupported activation `{other}`"),
            })
        }
    };
    Ok(ctx.b.unary(op, x)?)
}

/// diffusers `FeedForward(dim, activation_fn, inner_dim)`:
/// `net.0` = activation projection (`net.0.proj`), `net.2` = output linear.
/// GEGLU / SwiGLU project to twice the inner dim and gate.
pub fn feed_forward(ctx: &mut Ctx, p: &str, x: V, inner: usize, out: usize, act: &str) -> Result<V> {
    let h = match act {
        "geglu" | "swiglu" => {
            let proj = linear(ctx, &format!("{p}.net.0.proj"), x, 2 * inner)?;
            let parts = ctx.b.chunk(proj, 2, -1)?;
            let gate = activation(ctx, if act == "geglu" { "gelu" } else { "silu" }, parts[1])?;
            ctx.b.mul(parts[0], gate)?
        }
        "linear-silu" => {
            let proj = linear(ctx, &format!("{p}.net.0.proj"), x, inner)?;
            activation(ctx, "silu", proj)?
        }
        _ => {
            let proj = linear(ctx, &format!("{p}.net.0.proj"), x, inner)?;
            activation(ctx, act, proj)?
        }
    };
    linear(ctx, &format!("{p}.net.2"), h, out)
}

/// `[B, S, H·D] → [B, H, S, D]`.
pub fn split_heads(ctx: &mut Ctx, x: V, heads: usize) -> Result<V> {
    let s = ctx.b.shape(x);
    let d = last_dim(ctx, x)? / heads;
    let r = ctx.b.reshape(x, vec![s[0].clone(), s[1].clone(), Dim::from(heads), Dim::from(d)])?;
    Ok(ctx.b.transpose(r, &[0, 2, 1, 3])?)
}

/// `[B, H, S, D] → [B, S, H·D]`.
pub fn merge_heads(ctx: &mut Ctx, x: V) -> Result<V> {
    let s = ctx.b.shape(x);
    let t = ctx.b.transpose(x, &[0, 2, 1, 3])?;
    Ok(ctx.b.reshape(t, vec![s[0].clone(), s[2].clone(), s[1].mul(&s[3])])?)
}

/// `[B, D] → [B, 1, D]` (PyTorch `x[:, None]` / `unsqueeze(1)`).
pub fn unsqueeze1(ctx: &mut Ctx, x: V) -> Result<V> {
    let s = ctx.b.shape(x);
    let mut t = vec![s[0].clone(), Dim::from(1usize)];
    t.extend(s[1..].iter().cloned());
    Ok(ctx.b.reshape(x, t)?)
}

/// adaLN modulation `x · (1 + scale[:, None]) + shift[:, None]` for
/// `x [B, S, D]`, `shift`, `scale` `[B, D]`.
pub fn modulate(ctx: &mut Ctx, x: V, shift: V, scale: V) -> Result<V> {
    let sc = unsqueeze1(ctx, scale)?;
    let sc1 = ctx.b.add_scalar(sc, 1.0)?;
    let sh = unsqueeze1(ctx, shift)?;
    let y = ctx.b.mul(x, sc1)?;
    Ok(ctx.b.add(y, sh)?)
}

/// `gate[:, None] · y` for `gate [B, D]`, `y [B, S, D]`.
pub fn gated(ctx: &mut Ctx, gate: V, y: V) -> Result<V> {
    let g = unsqueeze1(ctx, gate)?;
    Ok(ctx.b.mul(g, y)?)
}

/// `x · c` for a scalar constant.
pub fn scale(ctx: &mut Ctx, x: V, c: f64) -> Result<V> {
    Ok(ctx.b.binary_scalar(BinaryOp::Mul, x, c)?)
}
