//! Host tensors for the reference evaluator.

use crate::dtype::DType;

/// Element storage: floats as f64 (values already rounded to their dtype),
/// integers as i64, booleans as bool.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F(Vec<f64>),
    I(Vec<i64>),
    B(Vec<bool>),
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::F(v) => v.len(),
            Data::I(v) => v.len(),
            Data::B(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A dense row-major tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Data,
}

/// Round `v` to the precision of `dtype` (f32 rounding only when `keep_f64`
/// is false, i.e. when the evaluator runs in f32). All roundings are to
/// nearest, ties to even, from the full f64 value.
pub fn round_to(dtype: DType, v: f64, keep_f64: bool) -> f64 {
    match dtype {
        DType::F32 if keep_f64 => v,
        DType::F32 => v as f32 as f64,
        // `half`'s f64 conversions are not correctly rounded: they drop the
        // low 32 bits of the f64 significand before rounding, or round
        // through f32 (double rounding) where F16C is available. Rounding
        // f64 → f32 to odd keeps enough information (24 ≥ 11 + 2 and
        // 24 ≥ 8 + 2 significand bits) for the f32 → f16/bf16 rounding,
        // which `half` does correctly, to give the correctly rounded result.
        DType::F16 => half::f16::from_f32(f32_round_to_odd(v)).to_f64(),
        DType::BF16 => half::bf16::from_f32(f32_round_to_odd(v)).to_f64(),
        _ => v,
    }
}

/// `v` rounded to f32 with round-to-odd: truncate toward zero, and set the
/// last significand bit when the result is inexact. Values beyond the f32
/// range become ±f32::MAX (odd), which still round to ±∞ in f16/bf16.
fn f32_round_to_odd(v: f64) -> f32 {
    let t = v as f32;
    if v.is_nan() || t as f64 == v {
        return t;
    }
    let mut bits = t.to_bits();
    if t.is_infinite() || (t as f64).abs() > v.abs() {
        bits -= 1; // one step toward zero (magnitude is nonzero here)
    }
    f32::from_bits(bits | 1)
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// A float tensor from f32 values.
    pub fn from_f32(shape: &[usize], v: &[f32]) -> Tensor {
        assert_eq!(shape.iter().product::<usize>(), v.len(), "shape {shape:?} vs {} values", v.len());
        Tensor { dtype: DType::F32, shape: shape.to_vec(), data: Data::F(v.iter().map(|&x| x as f64).collect()) }
    }

    /// A float tensor of `dtype` from f64 values (rounded to `dtype`).
    pub fn from_f64(dtype: DType, shape: &[usize], v: Vec<f64>) -> Tensor {
        assert!(dtype.is_float());
        assert_eq!(shape.iter().product::<usize>(), v.len(), "shape {shape:?} vs {} values", v.len());
        let v = v.into_iter().map(|x| round_to(dtype, x, true)).collect();
        Tensor { dtype, shape: shape.to_vec(), data: Data::F(v) }
    }

    /// An integer tensor (`I64` or `I32`).
    pub fn from_i64(dtype: DType, shape: &[usize], v: Vec<i64>) -> Tensor {
        assert!(dtype.is_int());
        assert_eq!(shape.iter().product::<usize>(), v.len());
        Tensor { dtype, shape: shape.to_vec(), data: Data::I(v) }
    }

    pub fn from_bool(shape: &[usize], v: Vec<bool>) -> Tensor {
        assert_eq!(shape.iter().product::<usize>(), v.len());
        Tensor { dtype: DType::Bool, shape: shape.to_vec(), data: Data::B(v) }
    }

    pub fn scalar_f32(v: f32) -> Tensor {
        Tensor::from_f32(&[], &[v])
    }

    /// Float values (error for integer/bool tensors).
    pub fn floats(&self) -> Result<&[f64], String> {
        match &self.data {
            Data::F(v) => Ok(v),
            _ => Err(format!("expected a float tensor, found {}", self.dtype)),
        }
    }

    pub fn ints(&self) -> Result<&[i64], String> {
        match &self.data {
            Data::I(v) => Ok(v),
            _ => Err(format!("expected an integer tensor, found {}", self.dtype)),
        }
    }

    pub fn bools(&self) -> Result<&[bool], String> {
        match &self.data {
            Data::B(v) => Ok(v),
            _ => Err(format!("expected a bool tensor, found {}", self.dtype)),
        }
    }

    /// Every element as f64 (bool as 0/1).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            Data::F(v) => v.clone(),
            Data::I(v) => v.iter().map(|&x| x as f64).collect(),
            Data::B(v) => v.iter().map(|&x| x as u8 as f64).collect(),
        }
    }

    pub fn to_f32_vec(&self) -> Vec<f32> {
        self.to_f64_vec().into_iter().map(|x| x as f32).collect()
    }

    /// Slice `start..end` of the first axis (e.g. the `[0:1]` batch slice).
    pub fn slice_first(&self, start: usize, end: usize) -> Tensor {
        let inner: usize = self.shape[1..].iter().product();
        let (a, b) = (start * inner, end * inner);
        let mut shape = self.shape.clone();
        shape[0] = end - start;
        let data = match &self.data {
            Data::F(v) => Data::F(v[a..b].to_vec()),
            Data::I(v) => Data::I(v[a..b].to_vec()),
            Data::B(v) => Data::B(v[a..b].to_vec()),
        };
        Tensor { dtype: self.dtype, shape, data }
    }

    /// Largest absolute elementwise difference to `other` (shapes must match).
    pub fn max_abs_diff(&self, other: &Tensor) -> Result<f64, String> {
        if self.shape != other.shape {
            return Err(format!("shapes differ: {:?} vs {:?}", self.shape, other.shape));
        }
        let (a, b) = (self.to_f64_vec(), other.to_f64_vec());
        Ok(a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max))
    }
}
