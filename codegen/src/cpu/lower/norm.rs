//! Layer, RMS and group normalisation: two passes in f64 as the evaluator
//! computes them, rounding once to the result type:
//!
//! ```text
//! mean = Σx / n                    (layer, group; 0 for rms)
//! var  = Σ(x - mean)² / n          (biased)
//! inv  = 1 / √(var + eps)
//! y    = (x - mean) · inv [· w] [+ b]
//! ```
//!
//! Each statistic is a generic over the normalised groups (rows); `y` is a
//! parallel generic reading them through maps. Group norm views `x` of shape
//! `[N, C, *S]` as `[N, G, C/G, *S]` (`tensor.expand_shape`, no copy), and
//! the weight and bias as `[G, C/G]`, and collapses the result back.

use super::reduce::{acc_operand, keep_map};
use super::{identity_map, map, scalar, storage, tensor_of, tensor_ty, Ct, Func, Operand, TVal, S};
use crate::error::Result;
use omnic_ir::{Dim, TensorType};

/// Per-row statistics of `x` (rank `r`, rows = loop dims not in `axes`):
/// the mean (or `None` for RMS) and `inv`, as f64 tensors over `rows`.
fn stats(f: &mut Func, x: &TVal, axes: &[usize], eps: f64, rms: bool) -> Result<(Option<String>, String, Vec<Dim>)> {
    let r = x.rank();
    let dt = x.ty.dtype;
    let rows: Vec<Dim> = (0..r).filter(|j| !axes.contains(j)).map(|j| x.ty.shape[j].clone()).collect();
    let reduced: Vec<Dim> = axes.iter().map(|&a| x.ty.shape[a].clone()).collect();
    let rows_map = keep_map(r, axes);
    let parallel: Vec<bool> = (0..r).map(|j| !axes.contains(&j)).collect();
    let nr = rows.len();
    let cnt = f.count_f64(&reduced)?;
    let zero = f.cf(Ct::F64, 0.0);

    let mean = if rms {
        None
    } else {
        let acc = f.filled(&rows, &zero)?;
        let ins = [Operand::new(x, identity_map(r))];
        let outs = [acc_operand(acc, &rows, Ct::F64, rows_map.clone())];
        let block = f.begin_body(2)?;
        let xv = scalar::load(f, &block[0], dt);
        let xd = scalar::to_f64(f, &xv);
        let y = f.v(Ct::F64, format!("arith.addf {}, {} fastmath<reassoc> : f64", block[1], xd.v));
        let sum = f.end_generic(r, &parallel, &ins, &outs, &block, &[y])?.remove(0);
        // mean = sum / n
        let e = f.empty(&rows, "f64")?;
        let ins = [acc_operand(sum, &rows, Ct::F64, identity_map(nr))];
        let outs = [acc_operand(e, &rows, Ct::F64, identity_map(nr))];
        let block = f.begin_body(2)?;
        let m = f.v(Ct::F64, format!("arith.divf {}, {} : f64", block[0], cnt.v));
        Some(f.end_generic(nr, &vec![true; nr], &ins, &outs, &block, &[m])?.remove(0))
    };

    // Σ (x - mean)²
    let acc = f.filled(&rows, &zero)?;
    let mut ins = vec![Operand::new(x, identity_map(r))];
    if let Some(m) = &mean {
        ins.push(acc_operand(m.clone(), &rows, Ct::F64, rows_map.clone()));
    }
    let outs = [acc_operand(acc, &rows, Ct::F64, rows_map.clone())];
    let block = f.begin_body(ins.len() + 1)?;
    let xv = scalar::load(f, &block[0], dt);
    let mut c = scalar::to_f64(f, &xv);
    if mean.is_some() {
        c = f.v(Ct::F64, format!("arith.subf {}, {} : f64", c.v, block[1]));
    }
    let sq = f.v(Ct::F64, format!("arith.mulf {}, {} : f64", c.v, c.v));
    let y = f.v(Ct::F64, format!("arith.addf {}, {} fastmath<reassoc> : f64", block[ins.len()], sq.v));
    let ssq = f.end_generic(r, &parallel, &ins, &outs, &block, &[y])?.remove(0);

    // inv = 1 / √(ssq / n + eps)
    let e = f.empty(&rows, "f64")?;
    let epsv = f.cf(Ct::F64, eps);
    let one = f.cf(Ct::F64, 1.0);
    let ins = [acc_operand(ssq, &rows, Ct::F64, identity_map(nr))];
    let outs = [acc_operand(e, &rows, Ct::F64, identity_map(nr))];
    let block = f.begin_body(2)?;
    let var = f.v(Ct::F64, format!("arith.divf {}, {} : f64", block[0], cnt.v));
    let ve = f.v(Ct::F64, format!("arith.addf {}, {} : f64", var.v, epsv.v));
    let sd = f.v(Ct::F64, format!("math.sqrt {} : f64", ve.v));
    let inv = f.v(Ct::F64, format!("arith.divf {}, {} : f64", one.v, sd.v));
    let inv = f.end_generic(nr, &vec![true; nr], &ins, &outs, &block, &[inv])?.remove(0);
    Ok((mean, inv, rows))
}

/// `y = (x - mean) · inv [· w] [+ b]` over `x`'s loops; `w`/`b` read with
/// `param_map`, the statistics with the rows map of `axes`.
#[allow(clippy::too_many_arguments)]
fn normalize(
    f: &mut Func,
    x: &TVal,
    axes: &[usize],
    stats: (Option<String>, String, Vec<Dim>),
    w: Option<&TVal>,
    b: Option<&TVal>,
    param_map: &str,
    out: &TensorType,
) -> Result<TVal> {
    let r = x.rank();
    let dt = x.ty.dtype;
    let (mean, inv, rows) = stats;
    let rows_map = keep_map(r, axes);
    let mut ins = vec![Operand::new(x, identity_map(r))];
    if let Some(m) = &mean {
        ins.push(acc_operand(m.clone(), &rows, Ct::F64, rows_map.clone()));
    }
    ins.push(acc_operand(inv, &rows, Ct::F64, rows_map));
    for p in [w, b].into_iter().flatten() {
        ins.push(Operand::new(p, param_map.to_string()));
    }
    let e = f.empty(&out.shape, storage(out.dtype))?;
    let outs = [Operand::new(&TVal { ssa: e, ty: out.clone() }, identity_map(r))];
    let block = f.begin_body(ins.len() + 1)?;
    let mut k = 0;
    let xv = scalar::load(f, &block[k], dt);
    k += 1;
    let mut y = scalar::to_f64(f, &xv);
    if mean.is_some() {
        y = f.v(Ct::F64, format!("arith.subf {}, {} : f64", y.v, block[k]));
        k += 1;
    }
    y = f.v(Ct::F64, format!("arith.mulf {}, {} : f64", y.v, block[k]));
    k += 1;
    for (p, name) in [(w, "arith.mulf"), (b, "arith.addf")] {
        if let Some(p) = p {
            let pv = scalar::load(f, &block[k], p.ty.dtype);
            let pd = scalar::to_f64(f, &pv);
            y = f.v(Ct::F64, format!("{name} {}, {} : f64", y.v, pd.v));
            k += 1;
        }
    }
    let ys: S = scalar::store(f, &y, out.dtype)?;
    let res = f.end_generic(r, &vec![true; r], &ins, &outs, &block, &[ys])?.remove(0);
    Ok(TVal { ssa: res, ty: out.clone() })
}

/// Layer norm (`rms` = false) or RMS norm over the last axis.
pub(super) fn layer_norm(f: &mut Func, x: &TVal, w: Option<&TVal>, b: Option<&TVal>, eps: f64, rms: bool, out: &TensorType) -> Result<TVal> {
    let r = x.rank();
    if r == 0 {
        return Err(f.unsupported("norm of a scalar"));
    }
    let axes = [r - 1];
    let st = stats(f, x, &axes, eps, rms)?;
    let pm = map(r, &[format!("d{}", r - 1)]);
    normalize(f, x, &axes, st, w, b, &pm, out)
}

/// Group norm of `x [N, C, *S]` with `groups` groups.
pub(super) fn group_norm(f: &mut Func, x: &TVal, wb: Option<(&TVal, &TVal)>, groups: usize, eps: f64, out: &TensorType) -> Result<TVal> {
    let r = x.rank();
    if r < 2 || groups == 0 {
        return Err(f.unsupported(format!("group_norm needs [N, C, ...] and groups > 0, found rank {r} and {groups} groups")));
    }
    let g = i64::try_from(groups).map_err(|_| f.unsupported("too many groups"))?;
    let c = &x.ty.shape[1];
    if let Some(cv) = c.as_const() {
        if cv % g != 0 {
            return Err(f.unsupported(format!("{cv} channels do not split into {groups} groups")));
        }
    }
    let cg = c.div(g);
    // x as [N, G, C/G, *S]
    let mut shape5 = vec![x.ty.shape[0].clone(), Dim::Const(g), cg.clone()];
    shape5.extend(x.ty.shape[2..].iter().cloned());
    let mut reassoc = vec!["[0]".to_string(), "[1, 2]".to_string()];
    reassoc.extend((2..r).map(|j| format!("[{}]", j + 1)));
    let reassoc = format!("[{}]", reassoc.join(", "));
    let xe_ty = TensorType::new(x.ty.dtype, shape5.clone());
    let sizes = f.sizes(&shape5)?;
    let xe = f.fresh();
    f.top.push(format!("{xe} = tensor.expand_shape {} {reassoc} output_shape [{}] : {} into {}", x.ssa, sizes.join(", "), x.mlir_ty(), tensor_ty(&xe_ty)));
    let xe = TVal { ssa: xe, ty: xe_ty };
    let r5 = r + 1;
    let axes: Vec<usize> = (2..r5).collect();
    let st = stats(f, &xe, &axes, eps, false)?;
    let wb_e = match wb {
        Some((w, b)) => {
            let pshape = vec![Dim::Const(g), cg.clone()];
            let psizes = f.sizes(&pshape)?;
            let mut e = Vec::new();
            for p in [w, b] {
                let pty = TensorType::new(p.ty.dtype, pshape.clone());
                let v = f.fresh();
                f.top.push(format!(
                    "{v} = tensor.expand_shape {} [[0, 1]] output_shape [{}] : {} into {}",
                    p.ssa,
                    psizes.join(", "),
                    p.mlir_ty(),
                    tensor_ty(&pty)
                ));
                e.push(TVal { ssa: v, ty: pty });
            }
            Some((e[0].clone(), e[1].clone()))
        }
        None => None,
    };
    let ye_ty = TensorType::new(out.dtype, shape5);
    let pm = map(r5, &["d1".to_string(), "d2".to_string()]);
    let ye = normalize(f, &xe, &axes, st, wb_e.as_ref().map(|(w, _)| w), wb_e.as_ref().map(|(_, b)| b), &pm, &ye_ty)?;
    let y = f.fresh();
    f.top.push(format!("{y} = tensor.collapse_shape {} {reassoc} : {} into {}", ye.ssa, ye.mlir_ty(), tensor_of(&out.shape, storage(out.dtype))));
    Ok(TVal { ssa: y, ty: out.clone() })
}
