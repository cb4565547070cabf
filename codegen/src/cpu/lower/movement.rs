//! Data movement.
//!
//! - `transpose`: a generic reading the input through the permutation map;
//! - `concat`: `tensor.insert_slice` of each operand into an empty result at
//!   offsets summed from the operands' sizes; `split` / `slice`:
//!   `tensor.extract_slice` (starts computed from the symbolic sizes);
//! - `pad`: a filled result with the operand inserted at the low pads;
//! - `gather`: a generic over the result reading the index operand and
//!   `tensor.extract`ing the element (negative indices wrap once as in the
//!   evaluator; an index still out of range, where the evaluator reports an
//!   error, reads 0 instead of memory outside the tensor);
//! - `upsample_nearest`: a generic `tensor.extract`ing `x[…, p / scale]`;
//! - `reshape` (inside a kernel only; between kernels it is a view): a
//!   `tensor.reshape` to the result shape.

use super::{identity_map, map, scalar, storage, storage_ct, tensor_of, Ct, Func, Operand, TVal, S};
use crate::error::Result;
use omnic_ir::{Dim, TensorType};

pub(super) fn transpose(f: &mut Func, x: &TVal, perm: &[usize], out: &TensorType) -> Result<TVal> {
    let r = x.rank();
    let mut inv = vec![usize::MAX; r];
    for (j, &p) in perm.iter().enumerate() {
        if p >= r || inv[p] != usize::MAX {
            return Err(f.unsupported(format!("{perm:?} is not a permutation of rank {r}")));
        }
        inv[p] = j;
    }
    if perm.len() != r {
        return Err(f.unsupported(format!("{perm:?} is not a permutation of rank {r}")));
    }
    let m = map(r, &inv.iter().map(|j| format!("d{j}")).collect::<Vec<_>>());
    let e = f.empty(&out.shape, storage(out.dtype))?;
    let ins = [Operand::new(x, m)];
    let outs = [Operand::new(&TVal { ssa: e, ty: out.clone() }, identity_map(r))];
    let block = f.begin_body(2)?;
    let y = S { v: block[0].clone(), t: storage_ct(x.ty.dtype) };
    let res = f.end_generic(r, &vec![true; r], &ins, &outs, &block, &[y])?.remove(0);
    Ok(TVal { ssa: res, ty: out.clone() })
}

/// `[o0, o1, …] [s0, s1, …] [1, 1, …]` of a slice op.
fn slice_spec(f: &mut Func, offsets: &[Dim], sizes: &[Dim]) -> Result<String> {
    let o = f.sizes(offsets)?;
    let s = f.sizes(sizes)?;
    let ones = vec!["1"; sizes.len()];
    Ok(format!("[{}] [{}] [{}]", o.join(", "), s.join(", "), ones.join(", ")))
}

fn insert(f: &mut Func, src: &TVal, dest: &str, out: &TensorType, offsets: &[Dim]) -> Result<String> {
    let spec = slice_spec(f, offsets, &src.ty.shape)?;
    let v = f.fresh();
    f.top.push(format!("{v} = tensor.insert_slice {} into {dest}{spec} : {} into {}", src.ssa, src.mlir_ty(), tensor_of(&out.shape, storage(out.dtype))));
    Ok(v)
}

fn extract(f: &mut Func, src: &TVal, offsets: &[Dim], out: &TensorType) -> Result<TVal> {
    let spec = slice_spec(f, offsets, &out.shape)?;
    let v = f.fresh();
    f.top.push(format!("{v} = tensor.extract_slice {}{spec} : {} to {}", src.ssa, src.mlir_ty(), tensor_of(&out.shape, storage(out.dtype))));
    Ok(TVal { ssa: v, ty: out.clone() })
}

pub(super) fn concat(f: &mut Func, xs: &[TVal], axis: usize, out: &TensorType) -> Result<TVal> {
    let r = out.shape.len();
    if axis >= r {
        return Err(f.unsupported(format!("concat axis {axis} out of range for rank {r}")));
    }
    let mut acc = f.empty(&out.shape, storage(out.dtype))?;
    let mut off = Dim::Const(0);
    for x in xs {
        let mut offsets = vec![Dim::Const(0); r];
        offsets[axis] = off.clone();
        acc = insert(f, x, &acc, out, &offsets)?;
        off = off.add(&x.ty.shape[axis]);
    }
    Ok(TVal { ssa: acc, ty: out.clone() })
}

pub(super) fn split(f: &mut Func, x: &TVal, axis: usize, sizes: &[Dim], outs: &[TensorType]) -> Result<Vec<TVal>> {
    let r = x.rank();
    if axis >= r || sizes.len() != outs.len() {
        return Err(f.unsupported(format!("split axis {axis} out of range for rank {r}")));
    }
    let mut off = Dim::Const(0);
    let mut res = Vec::with_capacity(outs.len());
    for (d, o) in sizes.iter().zip(outs) {
        let mut offsets = vec![Dim::Const(0); r];
        offsets[axis] = off.clone();
        res.push(extract(f, x, &offsets, o)?);
        off = off.add(d);
    }
    Ok(res)
}

pub(super) fn slice(f: &mut Func, x: &TVal, axis: usize, start: &Dim, out: &TensorType) -> Result<TVal> {
    let r = x.rank();
    if axis >= r {
        return Err(f.unsupported(format!("slice axis {axis} out of range for rank {r}")));
    }
    let mut offsets = vec![Dim::Const(0); r];
    offsets[axis] = start.clone();
    extract(f, x, &offsets, out)
}

pub(super) fn pad(f: &mut Func, x: &TVal, pads: &[(usize, usize)], value: f64, out: &TensorType) -> Result<TVal> {
    let r = x.rank();
    if pads.len() != r {
        return Err(f.unsupported(format!("{} pads for rank {r}", pads.len())));
    }
    let dt = out.dtype;
    let v = if dt.is_float() {
        omnic_ir::eval::tensor::round_to(dt, value, false)
    } else if dt.is_int() {
        (value as i64) as f64
    } else {
        f64::from(u8::from(value != 0.0))
    };
    let c = f.cany(storage_ct(dt), v);
    let filled = f.filled(&out.shape, &c)?;
    let offsets: Vec<Dim> = pads.iter().map(|&(lo, _)| Dim::Const(lo as i64)).collect();
    let res = insert(f, x, &filled, out, &offsets)?;
    Ok(TVal { ssa: res, ty: out.clone() })
}

pub(super) fn gather(f: &mut Func, x: &TVal, idx: &TVal, axis: usize, out: &TensorType) -> Result<TVal> {
    let (r, ri) = (x.rank(), idx.rank());
    if axis >= r {
        return Err(f.unsupported(format!("gather axis {axis} out of range for rank {r}")));
    }
    if !idx.ty.dtype.is_int() {
        return Err(f.unsupported(format!("gather indices must be integers, found {}", idx.ty.dtype)));
    }
    let ro = out.shape.len();
    let len = f.dim(&x.ty.shape[axis])?;
    let len64 = f.top_op(format!("arith.index_cast {len} : index to i64"));
    let zero = f.ci(Ct::I64, 0);
    let st = storage_ct(x.ty.dtype);
    let fill = f.cany(st, 0.0);
    let e = f.empty(&out.shape, storage(out.dtype))?;
    let ins = [Operand::new(idx, map(ro, &(axis..axis + ri).map(|j| format!("d{j}")).collect::<Vec<_>>()))];
    let outs = [Operand::new(&TVal { ssa: e, ty: out.clone() }, identity_map(ro))];
    let block = f.begin_body(2)?;
    let j = scalar::load(f, &block[0], idx.ty.dtype);
    let j = if j.t == Ct::I32 { f.v(Ct::I64, format!("arith.extsi {} : i32 to i64", j.v)) } else { j };
    let neg = f.v(Ct::I1, format!("arith.cmpi slt, {}, {} : i64", j.v, zero.v));
    let jw = f.v(Ct::I64, format!("arith.addi {}, {len64} : i64", j.v));
    let jj = f.v(Ct::I64, format!("arith.select {}, {}, {} : i64", neg.v, jw.v, j.v));
    let lo = f.v(Ct::I1, format!("arith.cmpi sge, {}, {} : i64", jj.v, zero.v));
    let hi = f.v(Ct::I1, format!("arith.cmpi slt, {}, {len64} : i64", jj.v));
    let ok = f.v(Ct::I1, format!("arith.andi {}, {} : i1", lo.v, hi.v));
    let jx = f.v(Ct::Index, format!("arith.index_cast {} : i64 to index", jj.v));
    let mut coords = Vec::with_capacity(r);
    for a in 0..r {
        if a == axis {
            coords.push(jx.v.clone());
        } else {
            let l = if a < axis { a } else { a - 1 + ri };
            coords.push(f.v(Ct::Index, format!("linalg.index {l} : index")).v);
        }
    }
    let v = f.fresh();
    let t = f.fresh();
    f.emit(format!("{v} = scf.if {} -> ({}) {{", ok.v, st.mlir()));
    f.emit(format!("{t} = tensor.extract {}[{}] : {}", x.ssa, coords.join(", "), x.mlir_ty()));
    f.emit(format!("scf.yield {t} : {}", st.mlir()));
    f.emit("} else {".to_string());
    f.emit(format!("scf.yield {} : {}", fill.v, st.mlir()));
    f.emit("}".to_string());
    let y = S { v, t: st };
    let res = f.end_generic(ro, &vec![true; ro], &ins, &outs, &block, &[y])?.remove(0);
    Ok(TVal { ssa: res, ty: out.clone() })
}

pub(super) fn upsample(f: &mut Func, x: &TVal, scale: &[usize], out: &TensorType) -> Result<TVal> {
    let r = x.rank();
    if r != scale.len() + 2 || scale.contains(&0) {
        return Err(f.unsupported(format!("upsample scales {scale:?} for rank {r}")));
    }
    let st = storage_ct(x.ty.dtype);
    let mut scales = Vec::with_capacity(scale.len());
    for &s in scale {
        scales.push(f.idx(s as i64));
    }
    let e = f.empty(&out.shape, storage(out.dtype))?;
    let outs = [Operand::new(&TVal { ssa: e, ty: out.clone() }, identity_map(r))];
    let block = f.begin_body(1)?;
    let mut coords = Vec::with_capacity(r);
    for j in 0..r {
        let i = f.v(Ct::Index, format!("linalg.index {j} : index"));
        if j >= 2 {
            coords.push(f.v(Ct::Index, format!("arith.divui {}, {} : index", i.v, scales[j - 2])).v);
        } else {
            coords.push(i.v);
        }
    }
    let y = f.v(st, format!("tensor.extract {}[{}] : {}", x.ssa, coords.join(", "), x.mlir_ty()));
    let res = f.end_generic(r, &vec![true; r], &[], &outs, &block, &[y])?.remove(0);
    Ok(TVal { ssa: res, ty: out.clone() })
}

pub(super) fn reshape(f: &mut Func, x: &TVal, out: &TensorType) -> Result<TVal> {
    let mut dims = Vec::with_capacity(out.shape.len());
    for d in &out.shape {
        dims.push(f.dim(d)?);
    }
    let shp = f.fresh();
    f.top.push(format!("{shp} = tensor.from_elements {} : tensor<{}xindex>", dims.join(", "), dims.len()));
    let v = f.fresh();
    f.top.push(format!(
        "{v} = tensor.reshape {}({shp}) : ({}, tensor<{}xindex>) -> {}",
        x.ssa,
        x.mlir_ty(),
        dims.len(),
        tensor_of(&out.shape, storage(out.dtype))
    ));
    Ok(TVal { ssa: v, ty: out.clone() })
}
