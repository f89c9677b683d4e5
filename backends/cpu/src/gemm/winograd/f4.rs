//! The transforms of Winograd F(4x4, 3x3) (Lavin and Gray's points 0, 1, -1, 2, -2 and
//! infinity), on lane arrays (the compiler vectorises them; `avx512.rs` has the same operations
//! in the same order with intrinsics, bit for bit):
//!
//! ```text
//! B^T = [4  0 -5  0 1 0]   G = [ 1/4     0    0]   A^T = [1 1  1 1  1 0]
//!       [0 -4 -4  1 1 0]       [-1/6 -1/6 -1/6]         [0 1 -1 2 -2 0]
//!       [0  4 -4 -1 1 0]       [-1/6  1/6 -1/6]         [0 1  1 4  4 0]
//!       [0 -2 -1  2 1 0]       [1/24 1/12  1/6]         [0 1 -1 8 -8 1]
//!       [0  2 -1 -2 1 0]       [1/24 -1/12 1/6]
//!       [0  4  0 -5 0 1]       [   0     0    1]
//! ```
//!
//! Each 2-D transform is the 1-D one down the columns, then along the rows.

/// `G g G^T` (6x6, row-major) for one 3x3 filter `g`, computed in f64 and rounded once.
pub(super) fn filter_transform(g: &[[f32; 3]; 3]) -> [f32; 36] {
    const G: [[f64; 3]; 6] = [
        [0.25, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];
    // G g: 6x3.
    let gg: [[f64; 3]; 6] = std::array::from_fn(|i| {
        std::array::from_fn(|c| (0..3).map(|k| G[i][k] * g[k][c] as f64).sum())
    });
    std::array::from_fn(|p| {
        let (i, j) = (p / 6, p % 6);
        (0..3).map(|k| gg[i][k] * G[j][k]).sum::<f64>() as f32
    })
}

/// `B^T` applied to six values.
#[inline(always)]
fn input_1d(d: [f32; 6]) -> [f32; 6] {
    let a = d[4] - 4.0 * d[2];
    let b = d[3] - 4.0 * d[1];
    let c = d[4] - d[2];
    let e = 2.0 * (d[3] - d[1]);
    [
        4.0 * d[0] - 5.0 * d[2] + d[4],
        a + b,
        a - b,
        c + e,
        c - e,
        4.0 * d[1] - 5.0 * d[3] + d[5],
    ]
}

/// `A^T` applied to six values.
#[inline(always)]
fn output_1d(m: [f32; 6]) -> [f32; 4] {
    let (s12, d12) = (m[1] + m[2], m[1] - m[2]);
    let (s34, d34) = (m[3] + m[4], m[3] - m[4]);
    [
        m[0] + s12 + s34,
        d12 + 2.0 * d34,
        s12 + 4.0 * s34,
        d12 + 8.0 * d34 + m[5],
    ]
}

/// `v = B^T d B` for a 6x6 patch `d` (36 positions, row-major), lane by lane.
#[inline(always)]
pub(super) fn input_transform<const L: usize>(d: &[[f32; L]], v: &mut [[f32; L]]) {
    separable::<L, 6>(d, v, input_1d);
}

/// `y = A^T m A` for a 6x6 `m` (36 values): the 4x4 outputs, row-major.
#[inline(always)]
pub(super) fn output_transform<const L: usize>(m: &[[f32; L]], y: &mut [[f32; L]]) {
    separable::<L, 4>(m, y, output_1d);
}

/// `dst = F src F^T` for a 6x6 `src` (row-major) and the 1-D map `f` from 6 values to `O`:
/// `f` down each column, then along each row; `dst` is `O x O`, row-major, lane by lane.
#[inline(always)]
fn separable<const L: usize, const O: usize>(
    src: &[[f32; L]],
    dst: &mut [[f32; L]],
    f: fn([f32; 6]) -> [f32; O],
) {
    let mut t = [[0.0f32; L]; 36];
    for c in 0..6 {
        for l in 0..L {
            let col = f(std::array::from_fn(|r| src[r * 6 + c][l]));
            for (r, x) in col.into_iter().enumerate() {
                t[r * 6 + c][l] = x;
            }
        }
    }
    for r in 0..O {
        for l in 0..L {
            let row = f(std::array::from_fn(|c| t[r * 6 + c][l]));
            for (c, x) in row.into_iter().enumerate() {
                dst[r * O + c][l] = x;
            }
        }
    }
}
