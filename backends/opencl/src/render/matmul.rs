//! The matmul family: matmul (rank 2 and batched rank 3, with transposes and batch
//! broadcasting), and the tiled GEMM kernel it runs on, which `window.rs` also renders conv2d
//! with, as an implicit GEMM.
//!
//! The tiled kernel is the classic local-memory SGEMM: a `T x T` work-group computes a
//! `T*R x T*R` output tile, each work-item an `R x R` register block (R = 4); K advances in
//! slices of `TK` whose A and B tiles the group loads cooperatively into local memory (A padded
//! by one column so the transposing store hits distinct banks). Loads outside M, N or K (and
//! conv taps in the padding) are zeros, so edges need no special kernel. The fused epilogue runs
//! on each accumulator before its single store. Products accumulate with `fma` in f32, in
//! increasing k order within each work-item.
//!
//! Thin contractions (few rows, columns or a short K: the seed case's 1-channel conv, tiny
//! matmuls) waste most of a tile, so they use one work-item per output instead.
//!
//! conv2d's renderer lives in `window.rs`, with the other window ops: only the tiled kernel is
//! shared, through [`Gemm`], [`tile_side`] and [`tiled`].

use super::expr::coord;
use super::kernel::KernelSrc;
use super::{Body, Limits, per_element, store_f32};
use kiln_ir::DType;
use kiln_ir::shape::fmt_dims;
use std::fmt::Write;

/// Register block per work-item along each of M and N.
const R: usize = 4;
/// K slice held in local memory per step.
const TK: usize = 16;

/// A GEMM `out[z][mi][ni] = sum_ki A[z][mi][ki] * B[z][ki][ni]` whose operand reads and output
/// index are C snippets.
pub(super) struct Gemm {
    /// Rows of A and of the output.
    pub m: usize,
    /// Columns of B and of the output.
    pub n: usize,
    /// The contracted extent.
    pub k: usize,
    /// Independent products, the third grid dimension.
    pub batch: usize,
    /// Statements that set `av` to A at (`z`, `mi`, `ki`), all in range.
    pub load_a: String,
    /// Statements that set `bv` to B at (`z`, `ki`, `ni`), all in range.
    pub load_b: String,
    /// The flat output index of (`z`, `mi`, `ni`).
    pub out_index: String,
}

/// The work-group side `T` of the tiled kernel, or `None` when tiling does not pay or does not
/// fit the device. Sizes below which tiling is skipped: with fewer than 16 rows or columns or
/// a K below 16 most of a 64x64 tile is padding.
pub(super) fn tile_side(g: &Gemm, limits: &Limits) -> Option<usize> {
    if g.m < 16 || g.n < 16 || g.k < 16 || g.m.saturating_mul(g.n).saturating_mul(g.k) < 1 << 16 {
        return None;
    }
    [16usize, 8].into_iter().find(|&t| {
        let local = 4 * TK * (t * R + 1 + t * R);
        t * t <= limits.max_work_group && local <= limits.local_mem_bytes
    })
}

/// The tiled kernel body for `g` with work-group side `t`.
pub(super) fn tiled(src: &mut KernelSrc<'_>, g: &Gemm, t: usize) -> Result<Body, String> {
    let it = src.it;
    let (tm, tn, wg) = (t * R, t * R, t * t);
    let Gemm { m, n, k, batch, .. } = *g;
    let mut code = String::new();
    let _ = write!(
        code,
        "    __local float As[{TK}][{tm1}];
    __local float Bs[{TK}][{tn}];
    const int tx = get_local_id(0), ty = get_local_id(1);
    const int lid = ty * {t} + tx;
    const {it} n0 = ({it})get_group_id(0) * {tn}, m0 = ({it})get_group_id(1) * {tm};
    const {it} z = ({it})get_global_id(2);
    float acc[{R}][{R}];
    for (int i = 0; i < {R}; i++)
        for (int j = 0; j < {R}; j++) acc[i][j] = 0.0f;
    for ({it} k0 = 0; k0 < {k}; k0 += {TK}) {{
        for (int e = lid; e < {tm} * {TK}; e += {wg}) {{
            const int mm = e / {TK}, kk = e % {TK};
            const {it} mi = m0 + mm, ki = k0 + kk;
            float av = 0.0f;
            if (mi < {m} && ki < {k}) {{
{load_a}            }}
            As[kk][mm] = av;
        }}
        for (int e = lid; e < {TK} * {tn}; e += {wg}) {{
            const int kk = e / {tn}, nn = e % {tn};
            const {it} ki = k0 + kk, ni = n0 + nn;
            float bv = 0.0f;
            if (ki < {k} && ni < {n}) {{
{load_b}            }}
            Bs[kk][nn] = bv;
        }}
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < {TK}; kk++) {{
            float a[{R}], b[{R}];
            for (int i = 0; i < {R}; i++) a[i] = As[kk][ty + i * {t}];
            for (int j = 0; j < {R}; j++) b[j] = Bs[kk][tx + j * {t}];
            for (int i = 0; i < {R}; i++)
                for (int j = 0; j < {R}; j++) acc[i][j] = fma(a[i], b[j], acc[i][j]);
        }}
        barrier(CLK_LOCAL_MEM_FENCE);
    }}
    for (int i = 0; i < {R}; i++)
        for (int j = 0; j < {R}; j++) {{
            const {it} mi = m0 + ty + i * {t}, ni = n0 + tx + j * {t};
            if (mi >= {m} || ni >= {n}) continue;
            const {it} gid = {out};
",
        tm1 = tm + 1,
        load_a = indent(&g.load_a, 16),
        load_b = indent(&g.load_b, 16),
        out = g.out_index,
    );
    code.push_str(&indent(&store_f32(src, "gid", "acc[i][j]")?, 8));
    code.push_str("        }\n");
    Ok(Body {
        attrs: format!("__attribute__((reqd_work_group_size({t}, {t}, 1))) "),
        code,
        global: vec![n.div_ceil(tn) * t, m.div_ceil(tm) * t, batch],
        local: vec![t, t, 1],
        failure: None,
    })
}

/// Re-indents C statements written at four spaces to `spaces`.
fn indent(code: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces.saturating_sub(4));
    code.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// An operand's (batch, rows, cols) as stored.
fn split(dims: &[usize], role: &str) -> Result<(usize, usize, usize), String> {
    match *dims {
        [r, c] => Ok((1, r, c)),
        [b, r, c] => Ok((b, r, c)),
        _ => Err(format!(
            "{role} must be rank 2 or 3, got {}",
            fmt_dims(dims)
        )),
    }
}

/// `matmul(a, b)`.
pub(super) fn matmul(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    ta: bool,
    tb: bool,
) -> Result<Body, String> {
    let (a, b) = (src.input(0)?, src.input(1)?);
    if a.dtype != DType::F32 || b.dtype != DType::F32 {
        return Err(format!(
            "matmul needs f32 operands, got {} and {}",
            a.dtype, b.dtype
        ));
    }
    let (ba, ar, ac) = split(&a.dims, "a")?;
    let (bb, br, bc) = split(&b.dims, "b")?;
    let (m, ka) = if ta { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if tb { (bc, br) } else { (br, bc) };
    let batch = match (ba, bb) {
        (x, y) if x == y => x,
        (1, y) => y,
        (x, 1) => x,
        _ => 0,
    };
    let want: Vec<usize> = if a.dims.len() == 3 || b.dims.len() == 3 {
        vec![batch, m, n]
    } else {
        vec![m, n]
    };
    if ka != kb || batch == 0 || want != src.out().dims.as_slice() {
        return Err(format!(
            "a {} x b {} (transposed: {ta}, {tb}) does not give output {}",
            fmt_dims(&a.dims),
            fmt_dims(&b.dims),
            fmt_dims(&src.out().dims)
        ));
    }
    let k = ka;
    let an = src.input_name(0)?;
    let bn = src.input_name(1)?;
    // A batch of 1 is reused for every output batch.
    let a_off = if ba == 1 {
        String::new()
    } else {
        format!("z * {} + ", m * k)
    };
    let b_off = if bb == 1 {
        String::new()
    } else {
        format!("z * {} + ", k * n)
    };
    let a_at = if ta {
        format!("ki * {m} + mi")
    } else {
        format!("mi * {k} + ki")
    };
    let b_at = if tb {
        format!("ni * {k} + ki")
    } else {
        format!("ki * {n} + ni")
    };
    let g = Gemm {
        m,
        n,
        k,
        batch,
        load_a: format!("    av = {an}[{a_off}{a_at}];\n"),
        load_b: format!("    bv = {bn}[{b_off}{b_at}];\n"),
        out_index: format!("(z * {m} + mi) * {n} + ni"),
    };
    if let Some(t) = tile_side(&g, limits) {
        return tiled(src, &g, t);
    }
    let it = src.it;
    let out3 = [batch, m, n];
    let main = format!(
        "    const {it} z = {z}, mi = {mi}, ni = {ni};
    float m = 0.0f;
    for ({it} ki = 0; ki < {k}; ki++)
        m = fma({an}[{a_off}{a_at}], {bn}[{b_off}{b_at}], m);
",
        z = coord("gid", &out3, 0),
        mi = coord("gid", &out3, 1),
        ni = coord("gid", &out3, 2),
    );
    per_element(src, limits, &main)
}
