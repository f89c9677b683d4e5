//! C as the micro-kernels write it: a view from one element of the output to the buffer's end.
//!
//! The row split hands each task a disjoint chunk of C, which `&mut [f32]` expresses. The
//! column split cannot: its tasks write disjoint column ranges of the same rows, interleaved
//! in memory. It computed each range into a buffer of its own and copied it into C afterwards,
//! 8-12% of such a GEMM: ResNet-50's 14x14x256 -> 1024 1x1 conv 0.47-0.49 ms with the copy,
//! 0.41 without; SqueezeNet's 13x13x512 -> 1000 0.71-0.76 vs 0.66-0.68 (examples/gemm_speed.rs,
//! 2 threads, weights cold, medians of 300, three alternated rounds, 2-core Xeon with FMA peak
//! 175 GFLOP/s a core). With a view each task writes its columns of C in place.

use std::marker::PhantomData;

/// A mutable view of `len` f32 values from `ptr`, borrowed from a `&mut [f32]` for `'a`.
///
/// Views made with [`COut::new`] are exclusive like the slice they come from; views that
/// [`COut::alias`] made write disjoint elements of one buffer (the caller's promise). Every
/// access checks its range against `len`, so no view reaches outside the buffer.
pub(crate) struct COut<'a> {
    ptr: *mut f32,
    len: usize,
    _buffer: PhantomData<&'a mut [f32]>,
}

// SAFETY: a view is a `&mut [f32]` (Send and Sync) or one of several aliases whose writes are
// disjoint (`COut::alias`'s contract), so moving or sharing it between threads races nothing.
unsafe impl Send for COut<'_> {}
// SAFETY: as for Send; `&COut` only makes aliases through the unsafe `alias`.
unsafe impl Sync for COut<'_> {}

impl<'a> COut<'a> {
    /// The whole of `c`.
    pub(crate) fn new(c: &'a mut [f32]) -> COut<'a> {
        COut {
            ptr: c.as_mut_ptr(),
            len: c.len(),
            _buffer: PhantomData,
        }
    }

    /// Another view of the same values, for a task that writes only elements no other view
    /// writes or reads while both are alive.
    ///
    /// # Safety
    /// The caller guarantees that the aliases' accesses are disjoint: the column split gives
    /// each task a range of columns (`driver::run`), and every kernel call writes only the
    /// columns of its own tile (`Tile::assert_valid`).
    pub(crate) unsafe fn alias(&self) -> COut<'a> {
        COut {
            ptr: self.ptr,
            len: self.len,
            _buffer: PhantomData,
        }
    }

    /// Values from the view's first to the buffer's end.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The view from value `offset` on; panics past the end.
    pub(crate) fn from(&mut self, offset: usize) -> COut<'_> {
        assert!(
            offset <= self.len,
            "C view: offset {offset} past {}",
            self.len
        );
        COut {
            // SAFETY: offset <= len, so the pointer stays within (or one past) the buffer.
            ptr: unsafe { self.ptr.add(offset) },
            len: self.len - offset,
            _buffer: PhantomData,
        }
    }

    /// The first value's address, for the SIMD kernels' loads and stores (their bounds:
    /// `Tile::assert_valid` against [`COut::len`]).
    pub(crate) fn as_mut_ptr(&mut self) -> *mut f32 {
        self.ptr
    }

    /// Values `start .. start + len` as a slice; panics past the end.
    pub(crate) fn slice(&mut self, start: usize, len: usize) -> &mut [f32] {
        let end = start.checked_add(len).expect("C view: range overflows");
        assert!(end <= self.len, "C view: {start}..{end} past {}", self.len);
        // SAFETY: the range is inside the buffer; no other view touches it (`alias`'s
        // contract: a kernel takes a slice only of its own tile's columns).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_reach_only_their_buffer() {
        let mut c = vec![0.0f32; 10];
        let mut v = COut::new(&mut c);
        let mut tail = v.from(4);
        assert_eq!(tail.len(), 6);
        tail.slice(1, 2).fill(1.0);
        assert_eq!(c, [0., 0., 0., 0., 0., 1., 1., 0., 0., 0.]);
        let past_end = |f: fn(&mut COut<'_>) -> usize| {
            let mut c = vec![0.0f32; 10];
            let mut v = COut::new(&mut c);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut v))).is_err()
        };
        assert!(past_end(|v| v.from(11).len()));
        assert!(past_end(|v| v.slice(8, 3).len()));
        assert!(past_end(|v| v.slice(usize::MAX, 2).len()));
        assert!(!past_end(|v| v.slice(8, 2).len()));
    }
}
