//! Host tensors: element type, shape and little-endian bytes.

use std::fmt;

/// Element types the runtime moves around.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElemType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    Bool,
}

impl ElemType {
    pub fn size_bytes(self) -> usize {
        match self {
            ElemType::F64 | ElemType::I64 => 8,
            ElemType::F32 | ElemType::I32 => 4,
            ElemType::F16 | ElemType::BF16 => 2,
            ElemType::Bool => 1,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            ElemType::F32 => "f32",
            ElemType::F16 => "f16",
            ElemType::BF16 => "bf16",
            ElemType::F64 => "f64",
            ElemType::I64 => "i64",
            ElemType::I32 => "i32",
            ElemType::Bool => "bool",
        }
    }
    pub fn is_float(self) -> bool {
        matches!(self, ElemType::F32 | ElemType::F16 | ElemType::BF16 | ElemType::F64)
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dense row-major tensor in host memory.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub dtype: ElemType,
    pub shape: Vec<usize>,
    /// Little-endian element bytes, `numel * dtype.size_bytes()` long.
    pub data: Vec<u8>,
}

impl HostTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn from_f32(shape: &[usize], v: &[f32]) -> HostTensor {
        assert_eq!(shape.iter().product::<usize>(), v.len(), "shape {shape:?} vs {} values", v.len());
        HostTensor { dtype: ElemType::F32, shape: shape.to_vec(), data: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }

    pub fn from_i64(shape: &[usize], v: &[i64]) -> HostTensor {
        assert_eq!(shape.iter().product::<usize>(), v.len());
        HostTensor { dtype: ElemType::I64, shape: shape.to_vec(), data: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }

    pub fn from_bool(shape: &[usize], v: &[bool]) -> HostTensor {
        assert_eq!(shape.iter().product::<usize>(), v.len());
        HostTensor { dtype: ElemType::Bool, shape: shape.to_vec(), data: v.iter().map(|&b| b as u8).collect() }
    }

    /// Every element converted to f64 (integers exactly up to 2^53, bool 0/1).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        let b = &self.data;
        match self.dtype {
            ElemType::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect(),
            ElemType::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect(),
            ElemType::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
            ElemType::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
            ElemType::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64).collect(),
            ElemType::I32 => b.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect(),
            ElemType::Bool => b.iter().map(|&x| (x != 0) as u8 as f64).collect(),
        }
    }

    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self.dtype {
            ElemType::F32 => self.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            _ => self.to_f64_vec().into_iter().map(|x| x as f32).collect(),
        }
    }

    /// Integer elements (error for float tensors).
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        let b = &self.data;
        match self.dtype {
            ElemType::I64 => Some(b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()),
            ElemType::I32 => Some(b.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect()),
            ElemType::Bool => Some(b.iter().map(|&x| (x != 0) as i64).collect()),
            _ => None,
        }
    }

    /// Summary statistics over all elements: (min, max, mean, rms).
    pub fn stats(&self) -> (f64, f64, f64, f64) {
        let v = self.to_f64_vec();
        if v.is_empty() {
            return (0.0, 0.0, 0.0, 0.0);
        }
        let n = v.len() as f64;
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mean = v.iter().sum::<f64>() / n;
        let rms = (v.iter().map(|x| x * x).sum::<f64>() / n).sqrt();
        (min, max, mean, rms)
    }

    /// Max absolute and relative-L2 difference to `other`, or `None` when
    /// the shapes differ.
    pub fn compare(&self, other: &HostTensor) -> Option<(f64, f64)> {
        if self.shape != other.shape {
            return None;
        }
        let (a, b) = (self.to_f64_vec(), other.to_f64_vec());
        let max_abs = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        let num = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
        let den = b.iter().map(|y| y * y).sum::<f64>().sqrt();
        Some((max_abs, if den > 0.0 { num / den } else { num }))
    }
}
