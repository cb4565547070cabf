//! Scalar semantics of the elementwise ops inside generic bodies, following
//! each op's documentation and the reference evaluator:
//!
//! - floats compute in f32 (f16/bf16 widened on load); after every op whose
//!   result is f16/bf16 the value is rounded to that type and widened back,
//!   so intermediate values carry exactly the precision of their IR type;
//! - integers wrap (two's complement, as the evaluator's `wrapping_*`);
//!   division truncates, and where the evaluator reports an error (division
//!   by zero) or x86 would trap (`MIN / -1`) the kernel yields 0 and `MIN`;
//!   `pow` with a negative exponent uses the exponent's bits as unsigned;
//! - comparisons are ordered except `ne` (true when either side is NaN), as
//!   Rust's `partial_cmp`; bools compare as 0 < 1;
//! - float → int casts truncate toward zero and saturate (NaN → 0), as
//!   Rust's `as`; float → f16/bf16 rounds to nearest even.

use super::{fastmath, Ct, Func, S};
use crate::error::Result;
use omnic_ir::{BinaryOp, CmpOp, DType, UnaryOp};

/// A block argument holding a stored element of `dt`, as a compute value.
pub(super) fn load(f: &mut Func, arg: &str, dt: DType) -> S {
    match dt {
        DType::F32 => S { v: arg.to_string(), t: Ct::F32 },
        DType::F16 => f.v(Ct::F32, format!("arith.extf {arg} : f16 to f32")),
        DType::BF16 => f.v(Ct::F32, format!("arith.extf {arg} : bf16 to f32")),
        DType::I64 => S { v: arg.to_string(), t: Ct::I64 },
        DType::I32 => S { v: arg.to_string(), t: Ct::I32 },
        DType::Bool => f.v(Ct::I1, format!("arith.trunci {arg} : i8 to i1")),
    }
}

/// A compute value (any float, int or bool type) as a stored element of `dt`.
pub(super) fn store(f: &mut Func, s: &S, dt: DType) -> Result<S> {
    Ok(match (dt, s.t) {
        (DType::F32, Ct::F32) | (DType::I64, Ct::I64) | (DType::I32, Ct::I32) => s.clone(),
        (DType::F32 | DType::F16 | DType::BF16, Ct::F64) => {
            let x = f.v(Ct::F32, format!("arith.truncf {} : f64 to f32", s.v));
            return store(f, &x, dt);
        }
        (DType::F16, Ct::F32) => f.v(Ct::F16, format!("arith.truncf {} : f32 to f16", s.v)),
        (DType::BF16, Ct::F32) => f.v(Ct::BF16, format!("arith.truncf {} : f32 to bf16", s.v)),
        (DType::I64, Ct::I32) => f.v(Ct::I64, format!("arith.extsi {} : i32 to i64", s.v)),
        (DType::I32, Ct::I64) => f.v(Ct::I32, format!("arith.trunci {} : i64 to i32", s.v)),
        (DType::Bool, Ct::I1) => f.v(Ct::I8, format!("arith.extui {} : i1 to i8", s.v)),
        // Already stored (e.g. a block argument yielded unchanged).
        (_, t) if t == super::storage_ct(dt) => s.clone(),
        (_, t) => return Err(f.internal(format!("cannot store a {} value as {dt}", t.mlir()))),
    })
}

/// Round an f32 compute value to the precision of `dt` (f16/bf16).
pub(super) fn round(f: &mut Func, s: S, dt: DType) -> S {
    let ty = match dt {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => return s,
    };
    let n = f.v(Ct::F32, format!("arith.truncf {} : f32 to {ty}", s.v));
    f.v(Ct::F32, format!("arith.extf {} : {ty} to f32", n.v))
}

/// A float compute value widened to f64.
pub(super) fn to_f64(f: &mut Func, s: &S) -> S {
    match s.t {
        Ct::F64 => s.clone(),
        t => f.v(Ct::F64, format!("arith.extf {} : {} to f64", s.v, t.mlir())),
    }
}

fn op(f: &mut Func, name: &str, xs: &[&S]) -> S {
    let t = xs[0].t;
    let args: Vec<&str> = xs.iter().map(|x| x.v.as_str()).collect();
    f.v(t, format!("{name} {} : {}", args.join(", "), t.mlir()))
}

/// `f(x)` for a float compute value (f32 or f64), in the evaluator's order.
pub(super) fn unary(f: &mut Func, u: UnaryOp, x: &S) -> S {
    let t = x.t;
    match u {
        UnaryOp::Neg => op(f, "arith.negf", &[x]),
        UnaryOp::Abs => op(f, "math.absf", &[x]),
        UnaryOp::Exp => exp(f, x),
        UnaryOp::Log => op(f, "math.log", &[x]),
        UnaryOp::Sqrt => op(f, "math.sqrt", &[x]),
        UnaryOp::Rsqrt => {
            // 1/√x (the evaluator divides; math.rsqrt may use an estimate).
            let one = f.cf(t, 1.0);
            let s = op(f, "math.sqrt", &[x]);
            op(f, "arith.divf", &[&one, &s])
        }
        UnaryOp::Recip => {
            let one = f.cf(t, 1.0);
            op(f, "arith.divf", &[&one, x])
        }
        UnaryOp::Sin => op(f, "math.sin", &[x]),
        UnaryOp::Cos => op(f, "math.cos", &[x]),
        UnaryOp::Tanh => tanh(f, x),
        UnaryOp::Erf => op(f, "math.erf", &[x]),
        UnaryOp::Sigmoid | UnaryOp::Silu => {
            // 1 / (1 + e^-x)  and  x / (1 + e^-x)
            let one = f.cf(t, 1.0);
            let nx = op(f, "arith.negf", &[x]);
            let e = exp(f, &nx);
            let den = op(f, "arith.addf", &[&one, &e]);
            let num = if u == UnaryOp::Sigmoid { one } else { x.clone() };
            op(f, "arith.divf", &[&num, &den])
        }
        UnaryOp::Gelu => {
            // x/2 · (1 + erf(x/√2))
            let half = f.cf(t, 0.5);
            let one = f.cf(t, 1.0);
            let sqrt2 = f.cf(t, std::f64::consts::SQRT_2);
            let hx = op(f, "arith.mulf", &[&half, x]);
            let z = op(f, "arith.divf", &[x, &sqrt2]);
            let e = op(f, "math.erf", &[&z]);
            let s = op(f, "arith.addf", &[&one, &e]);
            op(f, "arith.mulf", &[&hx, &s])
        }
        UnaryOp::GeluTanh => {
            // x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))
            let half = f.cf(t, 0.5);
            let one = f.cf(t, 1.0);
            let c = f.cf(t, (2.0 / std::f64::consts::PI).sqrt());
            let k = f.cf(t, 0.044715);
            let kx = op(f, "arith.mulf", &[&k, x]);
            let kx2 = op(f, "arith.mulf", &[&kx, x]);
            let kx3 = op(f, "arith.mulf", &[&kx2, x]);
            let inner = op(f, "arith.addf", &[x, &kx3]);
            let arg = op(f, "arith.mulf", &[&c, &inner]);
            if t == Ct::F32 {
                // = x / (1 + e^{-2u}) (u = arg): one polynomial exp, and no
                // cancellation in 1 + tanh(u) for negative x.
                let m2 = f.cf(t, -2.0);
                let a2 = op(f, "arith.mulf", &[&m2, &arg]);
                let e = fastmath::exp(f, &a2);
                let den = op(f, "arith.addf", &[&one, &e]);
                return op(f, "arith.divf", &[x, &den]);
            }
            let th = tanh(f, &arg);
            let hx = op(f, "arith.mulf", &[&half, x]);
            let s = op(f, "arith.addf", &[&one, &th]);
            op(f, "arith.mulf", &[&hx, &s])
        }
        UnaryOp::Relu => {
            let zero = f.cf(t, 0.0);
            op(f, "arith.maxnumf", &[x, &zero])
        }
        UnaryOp::Square => op(f, "arith.mulf", &[x, x]),
    }
}

/// `e^x`: the vectorisable f32 polynomial ([`fastmath`]) or `math.exp` (f64).
fn exp(f: &mut Func, x: &S) -> S {
    if x.t == Ct::F32 {
        fastmath::exp(f, x)
    } else {
        op(f, "math.exp", &[x])
    }
}

/// `tanh x`: [`fastmath::tanh`] for f32, `math.tanh` for f64.
fn tanh(f: &mut Func, x: &S) -> S {
    if x.t == Ct::F32 {
        fastmath::tanh(f, x)
    } else {
        op(f, "math.tanh", &[x])
    }
}

/// `x op y` for two compute values of one type (float, i64 or i32).
pub(super) fn binary(f: &mut Func, b: BinaryOp, x: &S, y: &S) -> S {
    if x.t.is_float() {
        let name = match b {
            BinaryOp::Add => "arith.addf",
            BinaryOp::Sub => "arith.subf",
            BinaryOp::Mul => "arith.mulf",
            BinaryOp::Div => "arith.divf",
            BinaryOp::Pow => "math.powf",
            // f64::max / f64::min in the evaluator: a NaN operand yields the other one.
            BinaryOp::Max => "arith.maxnumf",
            BinaryOp::Min => "arith.minnumf",
        };
        return op(f, name, &[x, y]);
    }
    match b {
        BinaryOp::Add => op(f, "arith.addi", &[x, y]),
        BinaryOp::Sub => op(f, "arith.subi", &[x, y]),
        BinaryOp::Mul => op(f, "arith.muli", &[x, y]),
        BinaryOp::Max => op(f, "arith.maxsi", &[x, y]),
        BinaryOp::Min => op(f, "arith.minsi", &[x, y]),
        BinaryOp::Div => int_div(f, x, y),
        BinaryOp::Pow => int_pow(f, x, y),
    }
}

/// Truncating division that never traps: `x / 0 = 0`, `MIN / -1 = MIN`.
fn int_div(f: &mut Func, x: &S, y: &S) -> S {
    let t = x.t;
    let ty = t.mlir();
    let zero = f.ci(t, 0);
    let one = f.ci(t, 1);
    let m1 = f.ci(t, -1);
    let is0 = f.v(Ct::I1, format!("arith.cmpi eq, {}, {} : {ty}", y.v, zero.v));
    let ism1 = f.v(Ct::I1, format!("arith.cmpi eq, {}, {} : {ty}", y.v, m1.v));
    let special = f.v(Ct::I1, format!("arith.ori {}, {} : i1", is0.v, ism1.v));
    let safe = f.v(t, format!("arith.select {}, {}, {} : {ty}", special.v, one.v, y.v));
    let q = f.v(t, format!("arith.divsi {}, {} : {ty}", x.v, safe.v));
    let neg = f.v(t, format!("arith.subi {}, {} : {ty}", zero.v, x.v));
    let r = f.v(t, format!("arith.select {}, {}, {} : {ty}", ism1.v, neg.v, q.v));
    f.v(t, format!("arith.select {}, {}, {} : {ty}", is0.v, zero.v, r.v))
}

/// `x^y` modulo 2^bits by squaring over every bit of `y`.
fn int_pow(f: &mut Func, x: &S, y: &S) -> S {
    let t = x.t;
    let ty = t.mlir();
    let bits = if t == Ct::I32 { 32 } else { 64 };
    let c0 = f.idx(0);
    let c1 = f.idx(1);
    let cn = f.idx(bits);
    let one = f.ci(t, 1);
    let zero = f.ci(t, 0);
    let r = f.fresh();
    let (iv, b, acc, e) = (f.fresh(), f.fresh(), f.fresh(), f.fresh());
    f.emit(format!("{r}:3 = scf.for {iv} = {c0} to {cn} step {c1} iter_args({b} = {}, {acc} = {}, {e} = {}) -> ({ty}, {ty}, {ty}) {{", x.v, one.v, y.v));
    let bit = f.v(t, format!("arith.andi {e}, {} : {ty}", one.v));
    let odd = f.v(Ct::I1, format!("arith.cmpi ne, {}, {} : {ty}", bit.v, zero.v));
    let m = f.v(t, format!("arith.muli {acc}, {b} : {ty}"));
    let acc2 = f.v(t, format!("arith.select {}, {}, {acc} : {ty}", odd.v, m.v));
    let b2 = f.v(t, format!("arith.muli {b}, {b} : {ty}"));
    let e2 = f.v(t, format!("arith.shrui {e}, {} : {ty}", one.v));
    f.emit(format!("scf.yield {}, {}, {} : {ty}, {ty}, {ty}", b2.v, acc2.v, e2.v));
    f.emit("}".to_string());
    S { v: format!("{r}#1"), t }
}

/// `x op y` → i1, for two compute values of one type.
pub(super) fn compare(f: &mut Func, c: CmpOp, x: &S, y: &S) -> S {
    let ty = x.t.mlir();
    let pred = match (x.t, c) {
        (t, c) if t.is_float() => match c {
            CmpOp::Eq => "arith.cmpf oeq",
            CmpOp::Ne => "arith.cmpf une",
            CmpOp::Lt => "arith.cmpf olt",
            CmpOp::Le => "arith.cmpf ole",
            CmpOp::Gt => "arith.cmpf ogt",
            CmpOp::Ge => "arith.cmpf oge",
        },
        (Ct::I1, c) => match c {
            CmpOp::Eq => "arith.cmpi eq",
            CmpOp::Ne => "arith.cmpi ne",
            CmpOp::Lt => "arith.cmpi ult",
            CmpOp::Le => "arith.cmpi ule",
            CmpOp::Gt => "arith.cmpi ugt",
            CmpOp::Ge => "arith.cmpi uge",
        },
        (_, c) => match c {
            CmpOp::Eq => "arith.cmpi eq",
            CmpOp::Ne => "arith.cmpi ne",
            CmpOp::Lt => "arith.cmpi slt",
            CmpOp::Le => "arith.cmpi sle",
            CmpOp::Gt => "arith.cmpi sgt",
            CmpOp::Ge => "arith.cmpi sge",
        },
    };
    f.v(Ct::I1, format!("{pred}, {}, {} : {ty}", x.v, y.v))
}

/// `c ? a : b`.
pub(super) fn select(f: &mut Func, c: &S, a: &S, b: &S) -> S {
    f.v(a.t, format!("arith.select {}, {}, {} : {}", c.v, a.v, b.v, a.t.mlir()))
}

/// Convert a compute value of IR dtype `from` to IR dtype `to` (see the
/// module doc for the rules).
pub(super) fn cast(f: &mut Func, x: &S, from: DType, to: DType) -> S {
    if from.is_float() {
        if to.is_float() {
            return round(f, x.clone(), to);
        }
        if to == DType::Bool {
            let zero = f.cf(Ct::F32, 0.0);
            return f.v(Ct::I1, format!("arith.cmpf une, {}, {} : f32", x.v, zero.v));
        }
        // Saturating truncation to i64 (NaN → 0), then wrap to i32.
        let lim = f.cf(Ct::F32, 9_223_372_036_854_775_808.0);
        let nlim = f.cf(Ct::F32, -9_223_372_036_854_775_808.0);
        let zero = f.cf(Ct::F32, 0.0);
        let ge = f.v(Ct::I1, format!("arith.cmpf oge, {}, {} : f32", x.v, lim.v));
        let lt = f.v(Ct::I1, format!("arith.cmpf olt, {}, {} : f32", x.v, nlim.v));
        let nan = f.v(Ct::I1, format!("arith.cmpf uno, {}, {} : f32", x.v, x.v));
        let bad = f.v(Ct::I1, format!("arith.ori {}, {} : i1", ge.v, lt.v));
        let bad = f.v(Ct::I1, format!("arith.ori {}, {} : i1", bad.v, nan.v));
        let xs = f.v(Ct::F32, format!("arith.select {}, {}, {} : f32", bad.v, zero.v, x.v));
        let t = f.v(Ct::I64, format!("arith.fptosi {} : f32 to i64", xs.v));
        let max = f.ci(Ct::I64, i64::MAX);
        let min = f.ci(Ct::I64, i64::MIN);
        let t = f.v(Ct::I64, format!("arith.select {}, {}, {} : i64", ge.v, max.v, t.v));
        let t = f.v(Ct::I64, format!("arith.select {}, {}, {} : i64", lt.v, min.v, t.v));
        return if to == DType::I32 { f.v(Ct::I32, format!("arith.trunci {} : i64 to i32", t.v)) } else { t };
    }
    if from.is_int() {
        let ty = x.t.mlir();
        if to.is_float() {
            let y = f.v(Ct::F32, format!("arith.sitofp {} : {ty} to f32", x.v));
            return round(f, y, to);
        }
        if to == DType::Bool {
            let zero = f.ci(x.t, 0);
            return f.v(Ct::I1, format!("arith.cmpi ne, {}, {} : {ty}", x.v, zero.v));
        }
        return match (x.t, to) {
            (Ct::I64, DType::I32) => f.v(Ct::I32, format!("arith.trunci {} : i64 to i32", x.v)),
            (Ct::I32, DType::I64) => f.v(Ct::I64, format!("arith.extsi {} : i32 to i64", x.v)),
            _ => x.clone(),
        };
    }
    // From bool.
    match to {
        DType::F32 | DType::F16 | DType::BF16 => f.v(Ct::F32, format!("arith.uitofp {} : i1 to f32", x.v)),
        DType::I64 => f.v(Ct::I64, format!("arith.extui {} : i1 to i64", x.v)),
        DType::I32 => f.v(Ct::I32, format!("arith.extui {} : i1 to i32", x.v)),
        DType::Bool => x.clone(),
    }
}
