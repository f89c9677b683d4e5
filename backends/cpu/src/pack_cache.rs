//! The packed form of a variable's weights, kept between runs until the variable changes.
//!
//! A matmul or convolution whose weights are a variable packs them at run time. Variables
//! change rarely next to how often they are read (inference, or many runs between updates),
//! so the last packing is kept with a copy of the bytes it was packed from, and a run reuses
//! it when the variable's current bytes are the same.
//!
//! Why compare bytes rather than track versions: the executable sees variables only as the
//! tensors a run borrows, with no identity or generation (the session may swap in a fresh
//! tensor on `set_variable`, an update rewrites one in place, and a freed allocation can be
//! reused at the same address), so only the contents say reliably whether the packing is
//! stale. Comparing reads two streams and stops at the first difference; packing allocates a
//! fresh zeroed buffer (page faults for megabytes of weights) and writes it, scattering for a
//! transposed B. The price is a second copy of the weights in memory.
//!
//! Concurrent runs of one executable share the cache: each takes a reference to the current
//! entry under a short lock, compares outside it, and publishes its own packing when it had to
//! pack. An entry is immutable once published, so a run only ever uses a packing of exactly
//! the bytes it read.

use crate::gemm::PackedB;
use std::sync::{Arc, Mutex};

/// One packing and the bytes it came from.
pub struct PackedEntry {
    source: Vec<f32>,
    packed: Vec<PackedB>,
}

impl PackedEntry {
    /// A packing used for one run only (weights that are not a variable): nothing to
    /// compare against later, so no copy of the source is kept.
    pub fn uncached(packed: Vec<PackedB>) -> PackedEntry {
        PackedEntry {
            source: Vec::new(),
            packed,
        }
    }

    /// The packed weights (one B, or one per convolution group).
    pub fn packed(&self) -> &[PackedB] {
        &self.packed
    }
}

/// The last packing of one stage's variable weights.
#[derive(Default)]
pub struct PackCache {
    last: Mutex<Option<Arc<PackedEntry>>>,
}

impl PackCache {
    /// The packing of `source`: the cached one when it was made from the same bits, else a
    /// fresh one from `pack`, which then replaces the cached one.
    pub fn get_or_pack(
        &self,
        source: &[f32],
        pack: impl FnOnce(&[f32]) -> Result<Vec<PackedB>, String>,
    ) -> Result<Arc<PackedEntry>, String> {
        // A poisoned lock only means another run panicked mid-update of the Option; the entry
        // itself is immutable, so the value inside is still a whole, consistent one.
        let cached = self
            .last
            .lock()
            .map_or_else(|e| e.into_inner().clone(), |g| g.clone());
        if let Some(entry) = cached
            && same_bits(&entry.source, source)
        {
            return Ok(entry);
        }
        let entry = Arc::new(PackedEntry {
            source: source.to_vec(),
            packed: pack(source)?,
        });
        match self.last.lock() {
            Ok(mut g) => *g = Some(entry.clone()),
            Err(e) => *e.into_inner() = Some(entry.clone()),
        }
        Ok(entry)
    }
}

/// Whether two slices hold the same bit patterns (so `-0.0 != 0.0` and NaN equals itself, as
/// a packing needs). Compares in blocks with no early exit inside a block, so it vectorises.
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    const BLOCK: usize = 256;
    a.len() == b.len()
        && a.chunks(BLOCK).zip(b.chunks(BLOCK)).all(|(x, y)| {
            x.iter()
                .zip(y)
                .fold(true, |eq, (p, q)| eq & (p.to_bits() == q.to_bits()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::{Isa, pack_b_for};
    use std::cell::Cell;

    #[test]
    fn pack_cache_repacks_only_when_bits_change() {
        let cache = PackCache::default();
        let packs = Cell::new(0);
        let pack = |b: &[f32]| {
            packs.set(packs.get() + 1);
            Ok(vec![pack_b_for(Isa::Portable, 1, b.len(), b, false)?])
        };
        let mut w = vec![1.0f32; 300];
        let first = cache.get_or_pack(&w, pack).unwrap();
        let again = cache.get_or_pack(&w, pack).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(packs.get(), 1);
        // One value in the last block, and a sign of zero: both are changes.
        w[299] = 2.0;
        cache.get_or_pack(&w, pack).unwrap();
        w[0] = 0.0;
        cache.get_or_pack(&w, pack).unwrap();
        w[0] = -0.0;
        cache.get_or_pack(&w, pack).unwrap();
        assert_eq!(packs.get(), 4);
        // NaN weights are reused, not repacked on every run.
        w[5] = f32::NAN;
        cache.get_or_pack(&w, pack).unwrap();
        cache.get_or_pack(&w, pack).unwrap();
        assert_eq!(packs.get(), 5);
        // A failed packing is reported and leaves the cache usable.
        let err = cache.get_or_pack(&[1.0], |_| Err("bad".to_string())).err();
        assert_eq!(err.as_deref(), Some("bad"));
        cache.get_or_pack(&w, pack).unwrap();
        assert_eq!(packs.get(), 5);
    }
}
