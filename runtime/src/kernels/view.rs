//! Borrowed tensor views handed to the runtime kernels: an element type, a
//! row-major shape and the element bytes (little-endian, as in
//! [`crate::HostTensor`]). The kernels read and write through typed slices
//! obtained with [`TensorRef::f32s`], [`TensorMut::f32s_mut`] and
//! [`TensorMut::i64s_mut`]; those check the dtype, the byte length against
//! the shape and the alignment, and name the op in every error.

use super::KernelError;
use crate::tensor::ElemType;

/// A read-only dense row-major tensor view.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    pub dtype: ElemType,
    pub shape: &'a [usize],
    /// `numel · dtype.size_bytes()` little-endian bytes.
    pub bytes: &'a [u8],
}

/// A writable dense row-major tensor view.
#[derive(Debug)]
pub struct TensorMut<'a> {
    pub dtype: ElemType,
    pub shape: &'a [usize],
    /// `numel · dtype.size_bytes()` little-endian bytes.
    pub bytes: &'a mut [u8],
}

fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

fn as_bytes<T>(v: &[T]) -> &[u8] {
    // SAFETY: any initialised memory may be read as bytes (u8 has alignment 1
    // and no invalid values); only used with f32 and i64.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

fn as_bytes_mut<T>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as above; every byte pattern is a valid f32 / i64, so writes
    // through the byte view cannot create invalid values.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// Checks dtype, length and alignment common to both views; returns numel.
fn check(op: &'static str, what: &str, want: ElemType, dtype: ElemType, shape: &[usize], bytes: &[u8], align: usize) -> Result<usize, KernelError> {
    if dtype != want {
        return Err(KernelError::new(op, format!("{what}: dtype {dtype} is not supported (only {want})")));
    }
    if cfg!(target_endian = "big") {
        return Err(KernelError::new(op, "tensor bytes are little-endian; this host is big-endian"));
    }
    let n = numel(shape).ok_or_else(|| KernelError::new(op, format!("{what}: shape {shape:?} overflows")))?;
    if Some(bytes.len()) != n.checked_mul(want.size_bytes()) {
        return Err(KernelError::new(op, format!("{what}: {} bytes for shape {shape:?} of {want}", bytes.len())));
    }
    if n > 0 && !(bytes.as_ptr() as usize).is_multiple_of(align) {
        return Err(KernelError::new(op, format!("{what}: data not aligned to {align} bytes")));
    }
    Ok(n)
}

impl<'a> TensorRef<'a> {
    pub fn new(dtype: ElemType, shape: &'a [usize], bytes: &'a [u8]) -> Self {
        TensorRef { dtype, shape, bytes }
    }

    /// A view of f32 values (no copy).
    pub fn from_f32(shape: &'a [usize], v: &'a [f32]) -> Self {
        TensorRef { dtype: ElemType::F32, shape, bytes: as_bytes(v) }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The elements as f32; errors (naming `op` and `what`) on another
    /// dtype, a length that does not match the shape, or misalignment.
    pub fn f32s(&self, op: &'static str, what: &str) -> Result<&'a [f32], KernelError> {
        let n = check(op, what, ElemType::F32, self.dtype, self.shape, self.bytes, std::mem::align_of::<f32>())?;
        if n == 0 {
            return Ok(&[]);
        }
        // SAFETY: length and alignment checked; every bit pattern is an f32.
        Ok(unsafe { std::slice::from_raw_parts(self.bytes.as_ptr().cast::<f32>(), n) })
    }
}

impl<'a> TensorMut<'a> {
    pub fn new(dtype: ElemType, shape: &'a [usize], bytes: &'a mut [u8]) -> Self {
        TensorMut { dtype, shape, bytes }
    }

    /// A writable view of f32 values (no copy).
    pub fn from_f32(shape: &'a [usize], v: &'a mut [f32]) -> Self {
        TensorMut { dtype: ElemType::F32, shape, bytes: as_bytes_mut(v) }
    }

    /// A writable view of i64 values (no copy).
    pub fn from_i64(shape: &'a [usize], v: &'a mut [i64]) -> Self {
        TensorMut { dtype: ElemType::I64, shape, bytes: as_bytes_mut(v) }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The elements as mutable f32 (see [`TensorRef::f32s`]).
    pub fn f32s_mut(&mut self, op: &'static str, what: &str) -> Result<&mut [f32], KernelError> {
        let n = check(op, what, ElemType::F32, self.dtype, self.shape, self.bytes, std::mem::align_of::<f32>())?;
        if n == 0 {
            return Ok(&mut []);
        }
        // SAFETY: length and alignment checked; every bit pattern is an f32.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.bytes.as_mut_ptr().cast::<f32>(), n) })
    }

    /// The elements as mutable i64 (see [`TensorRef::f32s`]).
    pub fn i64s_mut(&mut self, op: &'static str, what: &str) -> Result<&mut [i64], KernelError> {
        let n = check(op, what, ElemType::I64, self.dtype, self.shape, self.bytes, std::mem::align_of::<i64>())?;
        if n == 0 {
            return Ok(&mut []);
        }
        // SAFETY: length and alignment checked; every bit pattern is an i64.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.bytes.as_mut_ptr().cast::<i64>(), n) })
    }
}

#[cfg(test)]
#[path = "tests/view.rs"]
mod tests;
