//! Guard regions around the memory generated code writes: the arena and every output.
//!
//! Each run surrounds its arena with guard bytes and gives each f32 output spare capacity
//! filled with a sentinel; after the run both are checked. A write outside a buffer — a
//! code-generation bug — then becomes an error naming what was overwritten instead of silent
//! corruption. Checking costs a few hundred bytes of compares per run.

use kiln_ir::program::ARENA_ALIGN;
use kiln_ir::{DType, Error, Result, Tensor};

/// Bytes of guard before and after the arena (a multiple of the arena alignment).
const ARENA_GUARD: usize = 256;
/// Spare f32 elements after each output.
const OUTPUT_GUARD: usize = 64;
const GUARD_BYTE: u8 = 0xA5;
/// A signalling-NaN bit pattern no kernel computes.
const GUARD_F32: u32 = 0x7FA5_A5A5;

/// One run's arena with guard bytes on both sides, aligned to [`ARENA_ALIGN`].
pub struct GuardedArena {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl GuardedArena {
    /// An arena of `len` usable bytes.
    pub fn new(len: usize) -> GuardedArena {
        // Zeroed allocation (calloc: fresh pages cost nothing until touched), then guards at
        // both ends only: the arena itself is never read before a kernel writes it.
        let mut bytes = vec![0u8; len + 2 * ARENA_GUARD + ARENA_ALIGN];
        let start = bytes.as_mut_ptr().align_offset(ARENA_ALIGN) + ARENA_GUARD;
        bytes[start - ARENA_GUARD..start].fill(GUARD_BYTE);
        bytes[start + len..start + len + ARENA_GUARD].fill(GUARD_BYTE);
        GuardedArena { bytes, start, len }
    }

    /// The first usable byte.
    pub fn base(&mut self) -> *mut u8 {
        self.bytes[self.start..].as_mut_ptr()
    }

    /// Errors if anything was written into the guards.
    pub fn check(&self) -> Result<()> {
        let before = &self.bytes[self.start - ARENA_GUARD..self.start];
        let after = &self.bytes[self.start + self.len..self.start + self.len + ARENA_GUARD];
        if before.iter().chain(after).any(|&b| b != GUARD_BYTE) {
            return Err(Error::Invalid(
                "internal error: generated code wrote outside the arena (please report)".into(),
            ));
        }
        Ok(())
    }
}

/// An output buffer; f32 outputs carry a guarded tail of spare capacity.
pub enum GuardedOutput {
    /// f32 values plus [`OUTPUT_GUARD`] sentinels in spare capacity.
    F32 {
        /// The values; `capacity - len` spare slots hold the sentinel.
        values: Vec<f32>,
        /// The output's dims.
        dims: Vec<usize>,
    },
    /// Other dtypes, unguarded.
    Other(Tensor),
}

impl GuardedOutput {
    /// A zeroed output of this type.
    pub fn new(dtype: DType, dims: &[usize]) -> GuardedOutput {
        if dtype != DType::F32 {
            return GuardedOutput::Other(Tensor::zeros_of(dtype, dims));
        }
        let n: usize = dims.iter().product();
        let mut values = Vec::with_capacity(n + OUTPUT_GUARD);
        values.resize(n + OUTPUT_GUARD, f32::from_bits(GUARD_F32));
        values.truncate(n);
        values.fill(0.0);
        GuardedOutput::F32 {
            values,
            dims: dims.to_vec(),
        }
    }

    /// The first element's address.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        match self {
            GuardedOutput::F32 { values, .. } => values.as_mut_ptr().cast(),
            GuardedOutput::Other(t) => t.as_mut_ptr(),
        }
    }

    /// Checks the guard and returns the tensor.
    pub fn finish(self) -> Result<Tensor> {
        match self {
            GuardedOutput::Other(t) => Ok(t),
            GuardedOutput::F32 { mut values, dims } => {
                let n = values.len();
                let spare = values.spare_capacity_mut();
                let intact = spare.len() >= OUTPUT_GUARD
                    && spare[..OUTPUT_GUARD].iter().all(|s| {
                        // SAFETY: written with the sentinel in `new` (resize before truncate);
                        // truncation does not deinitialise memory, it only shortens `len`.
                        unsafe { s.assume_init_read() }.to_bits() == GUARD_F32
                    });
                if !intact {
                    return Err(Error::Invalid(
                        "internal error: generated code wrote past an output (please report)"
                            .into(),
                    ));
                }
                values.truncate(n);
                Tensor::from_vec(&dims, values)
            }
        }
    }
}
