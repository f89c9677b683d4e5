//! A depthwise convolution whose only reader is a 1x1 convolution (MobileNet's blocks: depthwise
//! 3x3, then the linear projection), run band by band: each thread computes a band of the
//! depthwise output's rows into a buffer of its own, sized to stay in its L2, and at once
//! multiplies that band by the 1x1 filter into the band's output rows. The depthwise output
//! never goes to memory and back, and every band is read by the core that wrote it.
//!
//! Same row kernel for the depthwise part, same micro-kernels and the same order of sums for
//! the 1x1 part (its depth, the channels, is blocked the same whatever the rows), so the same
//! bits as the two stages run one after the other.

use super::ChannelWindow;
use crate::gemm::scratch::with_buffer;
use crate::gemm::{self, Activation, Epilogue, PackedB, Residual};
use rayon::prelude::*;
use std::cell::RefCell;

/// The share of the detected L2 a band's depthwise output may fill (a quarter), leaving room
/// for the 1x1 filter, the input rows the band reads and the output rows it writes.
const BAND_L2_SHARE: usize = 4;
/// What a band costs besides its 1x1 conv's row tiles, in row tiles (the depthwise rows'
/// setup, the task's fork and join): an estimate.
const BAND_SETUP_TILES: usize = 1;

thread_local! {
    /// Each thread's band buffer (see [`crate::gemm::scratch`]).
    static BAND: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out = pointwise_epilogue(act(depthwise(x, filter) + bias) x pointwise)` for a depthwise
/// `window` over NHWC `x`, with `pointwise` the packed `[c, cout]` 1x1 filter and `out`
/// `[n, oh, ow, cout]`. The epilogue's bias has `cout` values; its residual, if any, is
/// indexed `[pixel, channel]` at its own leading dimension.
#[allow(clippy::too_many_arguments)] // the two convolutions' operands
pub fn depthwise_pointwise(
    window: &ChannelWindow,
    x: &[f32],
    filter: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    pointwise: &PackedB,
    out: &mut [f32],
    epilogue: &Epilogue<'_>,
) -> Result<(), String> {
    let isa = gemm::detect();
    let (c, cout) = (window.c, pointwise.n());
    if pointwise.k() != c {
        return Err(format!(
            "depthwise + 1x1 conv: the 1x1 filter reads {} channels, the depthwise conv makes {c}",
            pointwise.k()
        ));
    }
    let rows = window.n * window.oh;
    let pixels_per_row = window.ow;
    let need = rows
        .checked_mul(pixels_per_row)
        .and_then(|p| p.checked_mul(cout));
    if need != Some(out.len()) {
        return Err(format!(
            "depthwise + 1x1 conv: output has {} values, expected {rows} rows of {pixels_per_row} \
             pixels of {cout} channels",
            out.len()
        ));
    }
    epilogue.validate("depthwise + 1x1 conv", rows * pixels_per_row, cout)?;
    if out.is_empty() {
        return Ok(());
    }
    let row_values = (pixels_per_row * c).max(1);
    let band_bytes = gemm::caches().l2 / BAND_L2_SHARE;
    let by_cache = (band_bytes / 4 / row_values).max(1);
    let threads = rayon::current_num_threads();
    let band = band_rows(
        rows,
        pixels_per_row,
        by_cache,
        threads,
        pointwise.isa().mr(),
    );
    out.par_chunks_mut(band * pixels_per_row * cout)
        .enumerate()
        .try_for_each(|(i, chunk)| {
            let first = i * band;
            let band_rows = band.min(rows - first);
            // The depthwise rows fill the whole band before the GEMM reads it.
            with_buffer(&BAND, band_rows * row_values, |dw| {
                window.run_rows_with(isa, x, Some(filter), bias, act, first, dw)?;
                let first_pixel = first * pixels_per_row;
                let ep = Epilogue {
                    bias: epilogue.bias,
                    add: epilogue.add.map(|r| Residual {
                        data: &r.data[first_pixel * r.ld..],
                        ld: r.ld,
                    }),
                    activation: epilogue.activation,
                };
                let m = band_rows * pixels_per_row;
                gemm::sgemm(m, cout, c, dw, c, pointwise, chunk, cout, &ep)
            })
        })
}

/// Rows per band (at most `by_cache`), for `rows` rows of `pixels` pixels on `threads`
/// threads and kernels of `mr` rows: the fewest row tiles on the busiest thread, counting
/// each band's partial last tile and its setup. A fixed four bands per thread cut
/// MobileNet's 14x14 layers into bands of 28 pixels, three tiles of which the last a third
/// full, and its 7x7 layers into single rows of 7 pixels.
fn band_rows(rows: usize, pixels: usize, by_cache: usize, threads: usize, mr: usize) -> usize {
    let cost = |band: usize| {
        let bands = rows.div_ceil(band);
        bands.div_ceil(threads) * ((band * pixels).div_ceil(mr) + BAND_SETUP_TILES)
    };
    // The smallest band of the least cost: more bands balance a late thread better.
    (1..=by_cache.min(rows).max(1))
        .min_by_key(|&band| (cost(band), band))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::band_rows;

    /// Bands whose 1x1 rows fill whole tiles and split evenly between the threads.
    #[test]
    fn bands_fill_tiles_and_threads() {
        // MobileNet's 14x14 layers: two bands of 7 rows (98 pixels, 9 tiles), not seven of 2.
        assert_eq!(band_rows(14, 14, 100, 2, 12), 7);
        // Its 7x7 layers: 4 rows then 3 (28 and 21 pixels), not seven single rows.
        assert_eq!(band_rows(7, 7, 100, 2, 12), 4);
        // The cache's limit holds, and one row is the least.
        assert!(band_rows(112, 112, 3, 2, 12) <= 3);
        assert_eq!(band_rows(1, 1, 1, 2, 12), 1);
        assert_eq!(band_rows(0, 5, 4, 2, 12), 1);
    }
}
