//! 64-byte aligned, zero-initialised host buffers for computed values.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

/// Alignment of every buffer the executor allocates (a cache line; also
/// enough for any AVX-512 load).
pub const BUFFER_ALIGN: usize = 64;

/// An owned, aligned, zeroed byte buffer. Zero-length buffers allocate
/// nothing and point at a dangling aligned address.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer owns its allocation exclusively, like a `Vec<u8>`.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out `&[u8]`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` zero bytes; `None` when the allocation fails or the size overflows.
    pub fn zeroed(len: usize) -> Option<AlignedBuf> {
        if len == 0 {
            // A dangling pointer with the buffer alignment (never dereferenced
            // for more than zero bytes).
            let ptr = NonNull::new(BUFFER_ALIGN as *mut u8)?;
            return Some(AlignedBuf { ptr, len });
        }
        let layout = Layout::from_size_align(len, BUFFER_ALIGN).ok()?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        Some(AlignedBuf { ptr: NonNull::new(p)?, len })
    }

    /// A copy of `bytes` in an aligned buffer.
    pub fn copy_of(bytes: &[u8]) -> Option<AlignedBuf> {
        let mut b = AlignedBuf::zeroed(bytes.len())?;
        b.as_mut_slice().copy_from_slice(bytes);
        Some(b)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` initialised (zeroed) bytes at `ptr`, or zero bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        if let Ok(layout) = Layout::from_size_align(self.len, BUFFER_ALIGN) {
            // SAFETY: allocated in `zeroed` with this very layout.
            unsafe { dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}
