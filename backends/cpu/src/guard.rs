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
    /// An arena of `len` usable bytes, or an error naming the size when memory runs out.
    pub fn new(len: usize) -> Result<GuardedArena> {
        let total = len
            .checked_add(2 * ARENA_GUARD + ARENA_ALIGN)
            .ok_or_else(|| out_of_memory("the arena", len))?;
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(total)
            .map_err(|_| out_of_memory("the arena", len))?;
        // Guards at both ends only; the arena itself is never read before a kernel writes it.
        bytes.resize(total, 0);
        let start = bytes.as_mut_ptr().align_offset(ARENA_ALIGN) + ARENA_GUARD;
        bytes[start - ARENA_GUARD..start].fill(GUARD_BYTE);
        bytes[start + len..start + len + ARENA_GUARD].fill(GUARD_BYTE);
        Ok(GuardedArena { bytes, start, len })
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
    /// A zeroed output of this type for buffer `name`, or an error naming it and its size when
    /// memory runs out.
    pub fn new(name: &str, dtype: DType, dims: &[usize]) -> Result<GuardedOutput> {
        let what = || format!("output %{name} ({dtype}{})", kiln_ir::shape::fmt_dims(dims));
        let n = kiln_ir::tensor::checked_numel(dims)?;
        let bytes = n.saturating_mul(dtype.size_bytes());
        if dtype != DType::F32 {
            // Probe first: a zeroed tensor of another dtype has no fallible constructor.
            Vec::<u8>::new()
                .try_reserve_exact(bytes)
                .map_err(|_| out_of_memory(&what(), bytes))?;
            return Ok(GuardedOutput::Other(Tensor::zeros_of(dtype, dims)));
        }
        let mut values = Vec::new();
        values
            .try_reserve_exact(n.saturating_add(OUTPUT_GUARD))
            .map_err(|_| out_of_memory(&what(), bytes))?;
        // One pass over the values (a second one cost 5-10% of a conv writing a large output).
        values.resize(n, 0.0);
        for spare in &mut values.spare_capacity_mut()[..OUTPUT_GUARD] {
            spare.write(f32::from_bits(GUARD_F32));
        }
        Ok(GuardedOutput::F32 {
            values,
            dims: dims.to_vec(),
        })
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

/// The error for an allocation of `bytes` for `what` that the system refused.
fn out_of_memory(what: &str, bytes: usize) -> Error {
    Error::Invalid(format!(
        "out of memory: cannot allocate {bytes} bytes for {what}"
    ))
}
