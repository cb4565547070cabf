//! Reductions and softmax.
//!
//! `reduce` is two generics: the reduction into an accumulator over the
//! kept axes (f64 for float sums and means, the f32 compute type for float
//! max/min, i64 for integers; initial value 0, -∞/+∞ or the integer
//! extremes as the evaluator's fold), then a parallel generic over the
//! result shape that divides by the element count for `mean` and converts
//! to the result type (with `keep_dims` the reduced axes are size-1 loops of
//! this generic, so no reshape is needed).
//!
//! `softmax` along an axis: `m = max x` (f64, NaN-ignoring like f64::max),
//! `s = Σ exp(x - m)` (f64), then `y = exp(x - m) / s` rounded once to the
//! result type.

use super::{identity_map, map, scalar, storage, tensor_of, Ct, Func, Operand, TVal, S};
use crate::error::Result;
use omnic_ir::{DType, Dim, ReduceOp, TensorType};

/// The map keeping loop dims not in `axes` (an accumulator over the rest).
pub(super) fn keep_map(rank: usize, axes: &[usize]) -> String {
    map(rank, &(0..rank).filter(|j| !axes.contains(j)).map(|j| format!("d{j}")).collect::<Vec<_>>())
}

/// An accumulator tensor (`tensor<…xT>` over `shape`) as an operand.
pub(super) fn acc_operand(ssa: String, shape: &[Dim], t: Ct, map: String) -> Operand {
    Operand { ssa, ty: tensor_of(shape, t.mlir()), map, elem: t.mlir().to_string() }
}

pub(super) fn reduce(f: &mut Func, x: &TVal, op: ReduceOp, axes: &[usize], keep_dims: bool, out: &TensorType) -> Result<TVal> {
    let r = x.rank();
    if axes.iter().any(|&a| a >= r) {
        return Err(f.unsupported(format!("reduce axes {axes:?} out of range for rank {r}")));
    }
    let dt = x.ty.dtype;
    let kept: Vec<Dim> = (0..r).filter(|j| !axes.contains(j)).map(|j| x.ty.shape[j].clone()).collect();
    let (acc_t, init) = match (dt.is_float(), op) {
        (true, ReduceOp::Sum | ReduceOp::Mean) => (Ct::F64, 0.0),
        (true, ReduceOp::Max) => (Ct::F32, f64::NEG_INFINITY),
        (true, ReduceOp::Min) => (Ct::F32, f64::INFINITY),
        (false, ReduceOp::Sum | ReduceOp::Mean) => (Ct::I64, 0.0),
        (false, ReduceOp::Max) => (Ct::I64, i64::MIN as f64),
        (false, ReduceOp::Min) => (Ct::I64, i64::MAX as f64),
    };
    if dt == DType::Bool {
        return Err(f.unsupported("cannot reduce a bool tensor"));
    }
    let init = match acc_t {
        Ct::I64 => f.ci(
            Ct::I64,
            match op {
                ReduceOp::Max => i64::MIN,
                ReduceOp::Min => i64::MAX,
                _ => 0,
            },
        ),
        t => f.cf(t, init),
    };
    let acc = f.filled(&kept, &init)?;
    let ins = [Operand::new(x, identity_map(r))];
    let outs = [acc_operand(acc, &kept, acc_t, keep_map(r, axes))];
    let block = f.begin_body(2)?;
    let xv = scalar::load(f, &block[0], dt);
    let xv = widen(f, &xv, acc_t);
    let a = S { v: block[1].clone(), t: acc_t };
    let name = match (acc_t, op) {
        (Ct::I64, ReduceOp::Max) => "arith.maxsi",
        (Ct::I64, ReduceOp::Min) => "arith.minsi",
        (Ct::I64, _) => "arith.addi",
        (_, ReduceOp::Max) => "arith.maxnumf",
        (_, ReduceOp::Min) => "arith.minnumf",
        _ => "arith.addf",
    };
    let y = f.v(acc_t, format!("{name} {}, {} : {}", a.v, xv.v, acc_t.mlir()));
    let parallel: Vec<bool> = (0..r).map(|j| !axes.contains(&j)).collect();
    let acc = f.end_generic(r, &parallel, &ins, &outs, &block, &[y])?.remove(0);

    // Finalise over the result shape.
    let ro = out.shape.len();
    let acc_map = if keep_dims { keep_map(ro, axes) } else { identity_map(ro) };
    let count = if op == ReduceOp::Mean { Some(f.count_f64(&axes.iter().map(|&a| x.ty.shape[a].clone()).collect::<Vec<_>>())?) } else { None };
    let e = f.empty(&out.shape, storage(out.dtype))?;
    let ins = [acc_operand(acc, &kept, acc_t, acc_map)];
    let outs = [Operand::new(&TVal { ssa: e, ty: out.clone() }, identity_map(ro))];
    let block = f.begin_body(2)?;
    let mut v = S { v: block[0].clone(), t: acc_t };
    if let Some(c) = count {
        v = f.v(Ct::F64, format!("arith.divf {}, {} : f64", v.v, c.v));
    }
    let y = scalar::store(f, &v, out.dtype)?;
    let res = f.end_generic(ro, &vec![true; ro], &ins, &outs, &block, &[y])?.remove(0);
    Ok(TVal { ssa: res, ty: out.clone() })
}

/// A loaded compute value converted to accumulator type `t`.
fn widen(f: &mut Func, x: &S, t: Ct) -> S {
    match (x.t, t) {
        (Ct::F32, Ct::F64) => scalar::to_f64(f, x),
        (Ct::I32, Ct::I64) => f.v(Ct::I64, format!("arith.extsi {} : i32 to i64", x.v)),
        _ => x.clone(),
    }
}

pub(super) fn softmax(f: &mut Func, x: &TVal, axis: usize, out: &TensorType) -> Result<TVal> {
    let r = x.rank();
    if axis >= r {
        return Err(f.unsupported(format!("softmax axis {axis} out of range for rank {r}")));
    }
    let dt = x.ty.dtype;
    let rows: Vec<Dim> = (0..r).filter(|&j| j != axis).map(|j| x.ty.shape[j].clone()).collect();
    let rows_map = keep_map(r, &[axis]);
    let parallel: Vec<bool> = (0..r).map(|j| j != axis).collect();

    // m = max x
    let ninf = f.cf(Ct::F64, f64::NEG_INFINITY);
    let m0 = f.filled(&rows, &ninf)?;
    let ins = [Operand::new(x, identity_map(r))];
    let outs = [acc_operand(m0, &rows, Ct::F64, rows_map.clone())];
    let block = f.begin_body(2)?;
    let xv = scalar::load(f, &block[0], dt);
    let xd = scalar::to_f64(f, &xv);
    let y = f.v(Ct::F64, format!("arith.maxnumf {}, {} : f64", block[1], xd.v));
    let m = f.end_generic(r, &parallel, &ins, &outs, &block, &[y])?.remove(0);

    // s = Σ exp(x - m)
    let zero = f.cf(Ct::F64, 0.0);
    let s0 = f.filled(&rows, &zero)?;
    let ins = [Operand::new(x, identity_map(r)), acc_operand(m.clone(), &rows, Ct::F64, rows_map.clone())];
    let outs = [acc_operand(s0, &rows, Ct::F64, rows_map.clone())];
    let block = f.begin_body(3)?;
    let xv = scalar::load(f, &block[0], dt);
    let xd = scalar::to_f64(f, &xv);
    let d = f.v(Ct::F64, format!("arith.subf {}, {} : f64", xd.v, block[1]));
    let e = f.v(Ct::F64, format!("math.exp {} : f64", d.v));
    let y = f.v(Ct::F64, format!("arith.addf {}, {} : f64", block[2], e.v));
    let s = f.end_generic(r, &parallel, &ins, &outs, &block, &[y])?.remove(0);

    // y = exp(x - m) / s
    let e0 = f.empty(&out.shape, storage(out.dtype))?;
    let ins = [Operand::new(x, identity_map(r)), acc_operand(m, &rows, Ct::F64, rows_map.clone()), acc_operand(s, &rows, Ct::F64, rows_map)];
    let outs = [Operand::new(&TVal { ssa: e0, ty: out.clone() }, identity_map(r))];
    let block = f.begin_body(4)?;
    let xv = scalar::load(f, &block[0], dt);
    let xd = scalar::to_f64(f, &xv);
    let d = f.v(Ct::F64, format!("arith.subf {}, {} : f64", xd.v, block[1]));
    let e = f.v(Ct::F64, format!("math.exp {} : f64", d.v));
    let q = f.v(Ct::F64, format!("arith.divf {}, {} : f64", e.v, block[2]));
    let y = scalar::store(f, &q, out.dtype)?;
    let res = f.end_generic(r, &vec![true; r], &ins, &outs, &block, &[y])?.remove(0);
    Ok(TVal { ssa: res, ty: out.clone() })
}
