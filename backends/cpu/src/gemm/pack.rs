//! Packed layouts: B (weights) packed once into column panels, and row-band copies of A.
//!
//! A packed B is a sequence of panels, each `nr` columns wide (the kernel's vector width times
//! its register columns) and `k` rows deep: element `(p, j)` lives at
//! `panel(j / nr)[p * nr + j % nr]`, and columns past `n` in the last panel are zero. Any run of
//! rows `p0..p1` of a panel is therefore one contiguous stream, which is what a micro-kernel
//! reads for a k-block. The panel width depends on the ISA, so a `PackedB` remembers the ISA
//! it was packed for and only kernels of that ISA consume it. Buffers start on a 64-byte
//! boundary so 512-bit loads of B never straddle cache lines.

use super::isa::{Isa, detect};
use super::prologue::Prologue;
use rayon::prelude::*;

/// Alignment, in f32 elements, of packed buffers: one 64-byte cache line.
const ALIGN: usize = 16;

/// Elements of B from which packing is split across threads (256 KiB: below it a fork/join
/// costs more than the copy).
const PARALLEL_PACK_MIN: usize = 1 << 16;

/// A zero-initialised f32 buffer whose visible part starts on a 64-byte boundary.
#[derive(Clone, Debug, Default)]
pub(crate) struct AlignedBuf {
    raw: Vec<f32>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// `len` zeros, 64-byte aligned.
    pub(crate) fn zeros(len: usize) -> AlignedBuf {
        let raw = vec![0.0f32; len + ALIGN];
        // align_offset counts elements; it may decline (usize::MAX), then alignment is only a
        // speed matter and offset 0 is still correct.
        let start = raw.as_ptr().align_offset(ALIGN * 4);
        let start = if start < ALIGN { start } else { 0 };
        AlignedBuf { raw, start, len }
    }

    pub(crate) fn as_slice(&self) -> &[f32] {
        &self.raw[self.start..self.start + self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// The right-hand operand of a GEMM, packed into column panels for one ISA's micro-kernels.
#[derive(Clone, Debug)]
pub struct PackedB {
    isa: Isa,
    k: usize,
    n: usize,
    nr: usize,
    data: AlignedBuf,
}

impl PackedB {
    /// The ISA whose kernels consume this packing.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Rows of B (the reduction length).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of B (the output width).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Rows `p0 .. p0 + len` of the panel holding columns `j0 .. j0 + nr` (`j0 % nr == 0`).
    pub(crate) fn panel_rows(&self, j0: usize, p0: usize, len: usize) -> &[f32] {
        self.panels_rows(j0, 1, p0, len)
    }

    /// Rows `p0 .. p0 + len` of `panels` consecutive panels from the one holding column `j0`
    /// (`j0 % nr == 0`): from the first one's row `p0` to the last one's row `p0 + len`, the
    /// panels [`PackedB::panel_stride`] values apart.
    pub(crate) fn panels_rows(&self, j0: usize, panels: usize, p0: usize, len: usize) -> &[f32] {
        let start = (j0 / self.nr) * self.k * self.nr + p0 * self.nr;
        let end = start + (panels - 1) * self.panel_stride() + len * self.nr;
        &self.data.as_slice()[start..end]
    }

    /// Values from one panel to the next.
    pub(crate) fn panel_stride(&self) -> usize {
        self.k * self.nr
    }
}

/// Packs `B[k, n]` for the kernels [`detect`] chooses. With `transposed`, `b` holds B's
/// transpose, `[n, k]` row-major (TensorFlow's `transpose_b`); otherwise `[k, n]` row-major.
pub fn pack_b(k: usize, n: usize, b: &[f32], transposed: bool) -> Result<PackedB, String> {
    pack_b_for(detect(), k, n, b, transposed)
}

/// Packs `B[k, n]` for the kernels of `isa` (which must be supported by this CPU).
pub fn pack_b_for(
    isa: Isa,
    k: usize,
    n: usize,
    b: &[f32],
    transposed: bool,
) -> Result<PackedB, String> {
    if !isa.is_supported() {
        return Err(format!(
            "pack_b: the {} kernels are not supported by this CPU",
            isa.name()
        ));
    }
    let need = k
        .checked_mul(n)
        .ok_or_else(|| format!("pack_b: {k}x{n} overflows"))?;
    if b.len() < need {
        return Err(format!(
            "pack_b: B has {} values, expected at least {need} for {}",
            b.len(),
            if transposed {
                format!("[n={n}, k={k}] (transposed)")
            } else {
                format!("[k={k}, n={n}]")
            }
        ));
    }
    let nr = isa.nr();
    let panels = n.div_ceil(nr);
    let mut data = AlignedBuf::zeros(panels * k * nr);
    let fill = |q: usize, panel: &mut [f32]| {
        let j0 = q * nr;
        let width = nr.min(n - j0);
        if transposed {
            // Column j of B is row j of b: contiguous reads, strided writes.
            for jj in 0..width {
                let col = &b[(j0 + jj) * k..(j0 + jj + 1) * k];
                for (p, &v) in col.iter().enumerate() {
                    panel[p * nr + jj] = v;
                }
            }
        } else {
            for (p, dst) in panel.chunks_exact_mut(nr).enumerate() {
                dst[..width].copy_from_slice(&b[p * n + j0..p * n + j0 + width]);
            }
        }
    };
    // Panels are independent. A large B is packed on every thread: its cost is mostly the
    // first touch of fresh pages (compile time of whole networks), which threads share.
    let out = data.as_mut_slice();
    if k == 0 {
        // No rows: nothing to copy (and no panel to split the buffer into).
    } else if need >= PARALLEL_PACK_MIN {
        out.par_chunks_mut(k * nr)
            .enumerate()
            .for_each(|(q, panel)| fill(q, panel));
    } else {
        out.chunks_mut(k * nr)
            .enumerate()
            .for_each(|(q, panel)| fill(q, panel));
    }
    Ok(PackedB {
        isa,
        k,
        n,
        nr,
        data,
    })
}

/// Whether reading `mr` rows of A at stride `lda` floats would pile them into few L1 sets.
///
/// A micro-kernel streams its `mr` rows side by side. With a stride that is a multiple of a
/// large power of two (1024 floats: every row in the same set of a 64-set, 8-way L1) the rows
/// evict each other on every step, so such A is copied into a band with a padded stride first.
pub(crate) fn rows_conflict(lda: usize, mr: usize) -> bool {
    const SETS: usize = 64;
    let mut count = [0u8; SETS];
    for r in 0..mr {
        let set = (r.wrapping_mul(lda) * 4 / 64) % SETS;
        count[set] += 1;
        if count[set] > 2 {
            return true;
        }
    }
    false
}

/// Stride of a packed A band for k-blocks of `kc` columns: padded so rows land in distinct sets.
pub(crate) fn band_stride(kc: usize) -> usize {
    kc.div_ceil(ALIGN) * ALIGN + ALIGN
}

/// Copies rows `i0 .. i0 + rows` x columns `k0 .. k0 + kc` of row-major A into `band`, one row
/// every `stride` values (`stride >= kc`, from [`band_stride`]), mapped by `prologue` if any
/// (in the vectors of the kernels' `isa`).
#[allow(clippy::too_many_arguments)] // source window, destination layout, map
pub(crate) fn pack_a_band(
    a: &[f32],
    lda: usize,
    i0: usize,
    rows: usize,
    k0: usize,
    kc: usize,
    band: &mut [f32],
    stride: usize,
    prologue: Option<Prologue<'_>>,
    isa: Isa,
) {
    for r in 0..rows {
        let src = &a[(i0 + r) * lda + k0..(i0 + r) * lda + k0 + kc];
        let dst = &mut band[r * stride..r * stride + kc];
        match &prologue {
            Some(p) => p.transform(isa, src, k0, dst),
            None => dst.copy_from_slice(src),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_pack_layout_and_transpose_agree() {
        let (k, n) = (3, 37);
        let b: Vec<f32> = (0..k * n).map(|v| v as f32).collect();
        let bt: Vec<f32> = (0..n * k).map(|v| b[(v % k) * n + v / k]).collect();
        for isa in Isa::supported() {
            let p = pack_b_for(isa, k, n, &b, false).unwrap();
            let pt = pack_b_for(isa, k, n, &bt, true).unwrap();
            assert_eq!(p.data.as_slice(), pt.data.as_slice(), "{isa:?}");
            let nr = isa.nr();
            for j in 0..n.div_ceil(nr) * nr {
                for pp in 0..k {
                    let got = p.panel_rows(j / nr * nr, pp, 1)[j % nr];
                    let want = if j < n { b[pp * n + j] } else { 0.0 };
                    assert_eq!(got, want, "{isa:?} p={pp} j={j}");
                }
            }
            assert_eq!(p.data.as_slice().as_ptr() as usize % 64, 0);
        }
    }

    #[test]
    fn gemm_pack_rejects_short_input() {
        let err = pack_b_for(Isa::Portable, 4, 4, &[0.0; 15], false).unwrap_err();
        assert!(err.contains("15") && err.contains("16"), "{err}");
    }

    #[test]
    fn gemm_conflicting_strides() {
        assert!(rows_conflict(1024, 12));
        assert!(rows_conflict(512, 12));
        assert!(!rows_conflict(576, 12));
        assert!(!rows_conflict(64, 12));
        assert!(!rows_conflict(band_stride(256), 12));
    }
}
