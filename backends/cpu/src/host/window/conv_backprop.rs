//! `conv2d_backprop_input` and `conv2d_backprop_filter` on the SGEMM micro-kernels.
//!
//! Both are the forward convolution's implicit GEMM read the other way (per image `b` and
//! group `g`, with `M = out_h * out_w` output pixels, `depth = kh * kw * cin_g` filter rows
//! and `per = cout / groups` output channels):
//! - input gradient: `cols[M, depth] = dY_bg[M, per] x W_g^T[per, depth]` (dY read in place
//!   through its leading dimension, W_g packed transposed), then col2im scatters each column
//!   of `cols` into the input cell the forward tap read (padding taps are dropped);
//! - filter gradient: `dW_g[depth, per] += im2col(X_bg)^T[depth, M] x dY_bg[M, per]`.
//!
//! Both take a chunk of consecutive images at a time (as many as fit [`CHUNK_FLOATS`] of
//! scratch, at least one) as one GEMM whose rows (input gradient) or reduction (filter
//! gradient) run over every pixel of the chunk: the late layers' few pixels per image make
//! GEMMs too small to split across threads otherwise. The input gradient's chunks run in
//! parallel (each with its own scratch, writing only its images); the filter gradient's
//! im2col runs in parallel over filter rows, its chunks in order. The micro-kernels are NHWC; an NCHW op transposes its
//! operands in and its result out. Each GEMM never splits its reduction, chunks depend only
//! on the shapes and are summed in order, so the bits do not depend on the thread count. The geometry (SAME's odd cell bottom/right) is
//! [`ConvGeometry::new`], i.e. kiln-ir's `window_dim`.

use crate::gemm::{self, ConvGeometry, Epilogue};
use crate::runtime::PARALLEL_MIN_WORK;
use kiln_ir::{ConvAttrs, DataFormat};
use rayon::prelude::*;

/// Scratch budget of one chunk of images, in f32 values (4 MiB, about a core's share of L2
/// plus L3): the im2col matrix of the filter gradient or the GEMM result of the input
/// gradient. Larger chunks measured slower on ResNet-18's early layers (the scatter and
/// gather then stream from memory).
const CHUNK_FLOATS: usize = 1 << 20;

/// Output pixels the filter gradient's im2col transposes at a time: 16 f32, one cache line
/// of each of its rows.
const PIXEL_BLOCK: usize = 16;

/// Images per chunk when one image needs `per_image` scratch values.
fn images_per_chunk(per_image: usize, n: usize) -> usize {
    (CHUNK_FLOATS / per_image.max(1)).clamp(1, n.max(1))
}

/// NCHW `[n, c, h, w]` values as NHWC.
pub(super) fn to_nhwc(src: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
    let mut out = vec![0.0; src.len()];
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out[((b * h + y) * w + x) * c + ch] = src[((b * c + ch) * h + y) * w + x];
                }
            }
        }
    }
    out
}

/// NHWC values of an NCHW `[n, c, h, w]` image, written back in NCHW.
pub(super) fn from_nhwc(src: &[f32], [n, c, h, w]: [usize; 4], out: &mut [f32]) {
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out[((b * c + ch) * h + y) * w + x] = src[((b * h + y) * w + x) * c + ch];
                }
            }
        }
    }
}

/// Rank-4 dims as an array (the planner checked the rank).
fn dims4(d: &[usize]) -> Result<[usize; 4], String> {
    <[usize; 4]>::try_from(d).map_err(|_| format!("expected a rank-4 buffer, got {d:?}"))
}

/// NHWC dims of an image stored in `format`.
fn nhwc_dims(d: [usize; 4], format: DataFormat) -> [usize; 4] {
    match format {
        DataFormat::Nhwc => d,
        DataFormat::Nchw => [d[0], d[2], d[3], d[1]],
    }
}

/// The shared sizes of one backward convolution, in NHWC.
struct Shapes {
    x: [usize; 4],
    w: [usize; 4],
    groups: usize,
    geom: ConvGeometry,
}

impl Shapes {
    fn new(a: &ConvAttrs, x: [usize; 4], w: [usize; 4]) -> Result<Shapes, String> {
        let [_, h, iw, c] = x;
        let [kh, kw, ci, co] = w;
        if ci == 0 || !c.is_multiple_of(ci) || !co.is_multiple_of((c / ci).max(1)) {
            return Err(format!(
                "conv2d backprop: {c} input channels are not groups of the filter's {ci}"
            ));
        }
        let geom = ConvGeometry::new([h, iw], [kh, kw], a.strides, a.dilations, a.padding)?;
        Ok(Shapes {
            x,
            w,
            groups: (c / ci).max(1),
            geom,
        })
    }

    /// The input coordinate read by output `o` at tap `k` along one axis, or `None`.
    fn src(
        o: usize,
        k: usize,
        stride: usize,
        dilation: usize,
        before: usize,
        size: usize,
    ) -> Option<usize> {
        (o * stride + k * dilation)
            .checked_sub(before)
            .filter(|&i| i < size)
    }

    /// For every output pixel `i` of one image and tap `t = ky * kw + kx`, the input pixel
    /// `iy * w + ix` the forward op read, or `None` in the padding.
    fn taps(&self) -> Vec<Option<usize>> {
        let g = &self.geom;
        let [_, h, w, _] = self.x;
        let mut out = Vec::with_capacity(g.out_h * g.out_w * g.kh * g.kw);
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                for ky in 0..g.kh {
                    let iy = Shapes::src(oy, ky, g.stride_h, g.dilation_h, g.pad_top, h);
                    for kx in 0..g.kw {
                        let ix = Shapes::src(ox, kx, g.stride_w, g.dilation_w, g.pad_left, w);
                        out.push(iy.zip(ix).map(|(iy, ix)| iy * w + ix));
                    }
                }
            }
        }
        out
    }
}

/// Columns `g * per .. (g + 1) * per` of the row-major `[rows, cols]` matrix `m`, contiguous.
fn columns(m: &[f32], rows: usize, cols: usize, g: usize, per: usize) -> Vec<f32> {
    (0..rows)
        .flat_map(|r| &m[r * cols + g * per..r * cols + (g + 1) * per])
        .copied()
        .collect()
}

/// `dx = conv2d_backprop_input(w, dy)`; `dxd`/`dyd` in `a.data_format`, `wd` HWIO.
pub(in crate::host) fn conv2d_backprop_input(
    a: &ConvAttrs,
    w: &[f32],
    wd: &[usize],
    dy: &[f32],
    dyd: &[usize],
    dx: &mut [f32],
    dxd: &[usize],
) -> Result<(), String> {
    let (xd, yd) = (dims4(dxd)?, dims4(dyd)?);
    let s = Shapes::new(a, nhwc_dims(xd, a.data_format), dims4(wd)?)?;
    let nchw = a.data_format == DataFormat::Nchw;
    let dy_nhwc;
    let dy = if nchw {
        dy_nhwc = to_nhwc(dy, yd);
        &dy_nhwc
    } else {
        dy
    };
    let mut dx_nhwc = if nchw {
        vec![0.0; dx.len()]
    } else {
        Vec::new()
    };
    let out: &mut [f32] = if nchw { &mut dx_nhwc } else { &mut *dx };
    out.fill(0.0);
    let [n, h, iw, c] = s.x;
    let [kh, kw, ci, co] = s.w;
    let (groups, g) = (s.groups, &s.geom);
    let (m, depth, per) = (g.out_h * g.out_w, kh * kw * ci, co / groups);
    if m == 0 || depth == 0 || per == 0 || n == 0 || h * iw * c == 0 {
        return finish_nchw(nchw, &dx_nhwc, xd, dx);
    }
    // W_g^T as the GEMM's B: [per, depth] is W's group columns read as [depth, per] transposed.
    let packed = (0..groups)
        .map(|gi| {
            let cols = if groups == 1 {
                w.to_vec()
            } else {
                columns(w, depth, co, gi, per)
            };
            gemm::pack_b(per, depth, &cols, true)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let taps = s.taps();
    let chunk = images_per_chunk(m * depth, n);
    let image = h * iw * c;
    let chunk_len = chunk * image;
    let run_chunk = |(index, dst): (usize, &mut [f32]), cols: &mut Vec<f32>| {
        let b0 = index * chunk;
        let imgs = dst.len() / image;
        let cols = &mut cols[..imgs * m * depth];
        for (gi, wt) in packed.iter().enumerate() {
            // dY's rows of consecutive images follow each other: one GEMM for the chunk.
            let a_rows = &dy[b0 * m * co + gi * per..];
            gemm::sgemm(
                imgs * m,
                depth,
                per,
                a_rows,
                co,
                wt,
                cols,
                depth,
                &Epilogue::none(),
            )?;
            // col2im: every tap's column goes back to the input cell it came from.
            for (dst, cols) in dst
                .chunks_exact_mut(image)
                .zip(cols.chunks_exact(m * depth))
            {
                for (i, row) in cols.chunks_exact(depth).enumerate() {
                    for (t, seg) in row.chunks_exact(ci).enumerate() {
                        if let Some(p) = taps[i * kh * kw + t] {
                            let cell = &mut dst[p * c + gi * ci..p * c + (gi + 1) * ci];
                            for (d, v) in cell.iter_mut().zip(seg) {
                                *d += v;
                            }
                        }
                    }
                }
            }
        }
        Ok::<(), String>(())
    };
    // Small products (the digits CNN) stay on this thread: waking workers costs more.
    if 2 * (n * m * depth * per) as u64 >= PARALLEL_MIN_WORK {
        out.par_chunks_mut(chunk_len)
            .enumerate()
            .try_for_each_init(
                || vec![0.0f32; chunk * m * depth],
                |cols, job| run_chunk(job, cols),
            )?;
    } else {
        let mut cols = vec![0.0f32; chunk * m * depth];
        for job in out.chunks_mut(chunk_len).enumerate() {
            run_chunk(job, &mut cols)?;
        }
    }
    finish_nchw(nchw, &dx_nhwc, xd, dx)
}

/// Writes the NHWC scratch result back as NCHW (nothing to do for NHWC).
fn finish_nchw(
    nchw: bool,
    scratch: &[f32],
    dims: [usize; 4],
    out: &mut [f32],
) -> Result<(), String> {
    if nchw {
        from_nhwc(scratch, dims, out);
    }
    Ok(())
}

/// `dw = conv2d_backprop_filter(x, dy)`; `xd`/`dyd` in `a.data_format`, `dwd` HWIO.
pub(in crate::host) fn conv2d_backprop_filter(
    a: &ConvAttrs,
    x: &[f32],
    xd: &[usize],
    dy: &[f32],
    dyd: &[usize],
    dw: &mut [f32],
    dwd: &[usize],
) -> Result<(), String> {
    let (xd, yd) = (dims4(xd)?, dims4(dyd)?);
    let s = Shapes::new(a, nhwc_dims(xd, a.data_format), dims4(dwd)?)?;
    let (x_nhwc, dy_nhwc);
    let (x, dy) = if a.data_format == DataFormat::Nchw {
        x_nhwc = to_nhwc(x, xd);
        dy_nhwc = to_nhwc(dy, yd);
        (&x_nhwc[..], &dy_nhwc[..])
    } else {
        (x, dy)
    };
    dw.fill(0.0);
    let [n, h, iw, c] = s.x;
    let [kh, kw, ci, co] = s.w;
    let (groups, g) = (s.groups, &s.geom);
    let (m, depth, per) = (g.out_h * g.out_w, kh * kw * ci, co / groups);
    if m == 0 || depth == 0 || per == 0 || n == 0 {
        return Ok(());
    }
    let taps = s.taps();
    let taps_per_pixel = kh * kw;
    let image = h * iw * c;
    let chunk = images_per_chunk(depth * m, n);
    // im2col(X_bg)^T: row r = (tap, channel) of the filter, column = output pixel of the chunk.
    // Rows are padded by one block: a power-of-two row length (the digits CNN's 64 x 4 x 4
    // pixels) would put a block's rows in one L1 set.
    let mut cols_t = vec![0.0f32; depth * (chunk * m + PIXEL_BLOCK)];
    let mut part = vec![0.0f32; depth * per];
    for b0 in (0..n).step_by(chunk) {
        let imgs = chunk.min(n - b0);
        let k = imgs * m;
        let ld = k + PIXEL_BLOCK;
        let cols_t = &mut cols_t[..depth * ld];
        let imgs_x = &x[b0 * image..(b0 + imgs) * image];
        let dy_b = &dy[b0 * m * co..(b0 + imgs) * m * co];
        for gi in 0..groups {
            // One task per tap (its `ci` rows); pixels in blocks of one cache line per row,
            // so a block's reads are whole channel vectors and its writes stay in L1.
            let im2col_tap = |(t, rows): (usize, &mut [f32])| {
                for bi in 0..imgs {
                    let img = &imgs_x[bi * image..(bi + 1) * image];
                    for i0 in (0..m).step_by(PIXEL_BLOCK) {
                        for i in i0..(i0 + PIXEL_BLOCK).min(m) {
                            let col = bi * m + i;
                            match taps[i * taps_per_pixel + t] {
                                Some(p) => {
                                    let src = &img[p * c + gi * ci..p * c + (gi + 1) * ci];
                                    for (cc, v) in src.iter().enumerate() {
                                        rows[cc * ld + col] = *v;
                                    }
                                }
                                None => (0..ci).for_each(|cc| rows[cc * ld + col] = 0.0),
                            }
                        }
                    }
                }
            };
            // The copy is worth splitting when the GEMM it feeds is (same threshold).
            if 2 * (depth * per * k) as u64 >= PARALLEL_MIN_WORK {
                cols_t
                    .par_chunks_mut(ci * ld)
                    .enumerate()
                    .for_each(im2col_tap);
            } else {
                cols_t.chunks_mut(ci * ld).enumerate().for_each(im2col_tap);
            }
            let rhs = if groups == 1 {
                gemm::pack_b(k, per, dy_b, false)?
            } else {
                gemm::pack_b(k, per, &columns(dy_b, k, co, gi, per), false)?
            };
            gemm::sgemm(
                depth,
                per,
                k,
                cols_t,
                ld,
                &rhs,
                &mut part,
                per,
                &Epilogue::none(),
            )?;
            for r in 0..depth {
                let dst = &mut dw[r * co + gi * per..r * co + (gi + 1) * per];
                for (d, v) in dst.iter_mut().zip(&part[r * per..(r + 1) * per]) {
                    *d += v;
                }
            }
        }
    }
    Ok(())
}
