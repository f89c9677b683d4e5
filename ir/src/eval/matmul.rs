//! `matmul`: rank-2 `[m,k] x [k,n]` and rank-3 batched `[B,m,k] x [B,k,n]`, with transpose
//! flags on the last two axes. A batch of 1 (or a rank-2 operand next to a rank-3 one)
//! broadcasts over the other operand's batch, as TensorFlow's BatchMatMulV2 does.
//! Dot products accumulate in f64.

use super::{alloc, f32_data, finish, numel};
use crate::shape::fmt_dims;
use crate::tensor::Tensor;

/// An operand's (batch, rows, cols) as stored, before any transpose.
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

/// `a x b` with optional transposes of each operand's last two axes.
pub(super) fn matmul(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> Result<Tensor, String> {
    let xs = f32_data(a, "a")?;
    let ys = f32_data(b, "b")?;
    let (ba, ar, ac) = split(a.dims(), "a")?;
    let (bb, br, bc) = split(b.dims(), "b")?;
    let (m, ka) = if ta { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if tb { (bc, br) } else { (br, bc) };
    let shapes = || {
        format!(
            "a {}{} and b {}{}",
            fmt_dims(a.dims()),
            if ta { " (transposed)" } else { "" },
            fmt_dims(b.dims()),
            if tb { " (transposed)" } else { "" }
        )
    };
    if ka != kb {
        return Err(format!("inner dims differ ({ka} vs {kb}): {}", shapes()));
    }
    let batch = match (ba, bb) {
        (x, y) if x == y => x,
        (1, y) => y,
        (x, 1) => x,
        _ => {
            return Err(format!(
                "batch dims {ba} and {bb} do not broadcast: {}",
                shapes()
            ));
        }
    };
    let out_dims = if a.rank() == 3 || b.rank() == 3 {
        vec![batch, m, n]
    } else {
        vec![m, n]
    };
    let mut out = alloc(numel(&out_dims)?, 0.0)?;
    for bi in 0..batch {
        // A batch of 1 is reused for every output batch.
        let a_off = if ba == 1 { 0 } else { bi * ar * ac };
        let b_off = if bb == 1 { 0 } else { bi * br * bc };
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f64;
                for p in 0..ka {
                    let x = xs[a_off + if ta { p * ac + i } else { i * ac + p }];
                    let y = ys[b_off + if tb { j * bc + p } else { p * bc + j }];
                    acc += x as f64 * y as f64;
                }
                out[(bi * m + i) * n + j] = acc as f32;
            }
        }
    }
    finish(&out_dims, out)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_close, iota, noise, t};
    use super::*;

    /// Transposes the last two axes of a rank-2 or rank-3 tensor (independent of `matmul`).
    fn swap_last(x: &Tensor) -> Tensor {
        let (b, r, c) = split(x.dims(), "x").unwrap();
        let v = x.as_f32().unwrap();
        let mut out = Vec::new();
        for bi in 0..b {
            for j in 0..c {
                for i in 0..r {
                    out.push(v[bi * r * c + i * c + j]);
                }
            }
        }
        let dims = if x.rank() == 3 {
            vec![b, c, r]
        } else {
            vec![c, r]
        };
        t(&dims, &out)
    }

    #[test]
    fn rank2_by_hand() {
        // [[1,2,3],[4,5,6]] x [[1,2],[3,4],[5,6]] = [[22,28],[49,64]]
        let a = iota(&[2, 3]);
        let b = iota(&[3, 2]);
        assert_close(
            &matmul(&a, &b, false, false).unwrap(),
            &[2, 2],
            &[22.0, 28.0, 49.0, 64.0],
            0.0,
        );
        // a^T is [3,2]; a^T x a = [[17,22,27],[22,29,36],[27,36,45]]
        let want = [17.0, 22.0, 27.0, 22.0, 29.0, 36.0, 27.0, 36.0, 45.0];
        assert_close(&matmul(&a, &a, true, false).unwrap(), &[3, 3], &want, 0.0);
        // a x a^T = [[14,32],[32,77]]
        assert_close(
            &matmul(&a, &a, false, true).unwrap(),
            &[2, 2],
            &[14.0, 32.0, 32.0, 77.0],
            0.0,
        );
    }

    #[test]
    fn transpose_flags_match_explicit_transposes() {
        let a = noise(&[2, 3, 4], 1);
        let b = noise(&[2, 4, 5], 2);
        let plain = matmul(&a, &b, false, false).unwrap();
        let at = swap_last(&a);
        let bt = swap_last(&b);
        for (x, y, fa, fb) in [
            (&at, &b, true, false),
            (&a, &bt, false, true),
            (&at, &bt, true, true),
        ] {
            let r = matmul(x, y, fa, fb).unwrap();
            assert_close(&r, &[2, 3, 5], plain.as_f32().unwrap(), 1e-6);
        }
    }

    #[test]
    fn batched_and_batch_broadcast() {
        // Batch 0 multiplies by the identity, batch 1 by 2 * identity.
        let a = t(&[2, 2, 2], &[1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 2.0]);
        let b = t(&[1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let r = matmul(&a, &b, false, false).unwrap();
        assert_close(
            &r,
            &[2, 2, 2],
            &[1.0, 2.0, 3.0, 4.0, 2.0, 4.0, 6.0, 8.0],
            0.0,
        );
        // A rank-2 operand broadcasts like a batch of 1.
        let b2 = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(matmul(&a, &b2, false, false).unwrap(), r);
        let r = matmul(&b2, &a, false, false).unwrap();
        assert_close(
            &r,
            &[2, 2, 2],
            &[1.0, 2.0, 3.0, 4.0, 2.0, 4.0, 6.0, 8.0],
            0.0,
        );
    }

    #[test]
    fn accumulates_in_f64() {
        // 1e8 + 1 - 1e8 in f32 loses the 1; the f64 accumulator keeps it.
        let a = t(&[1, 3], &[1e8, 1.0, -1e8]);
        let b = t(&[3, 1], &[1.0, 1.0, 1.0]);
        assert_close(&matmul(&a, &b, false, false).unwrap(), &[1, 1], &[1.0], 0.0);
    }

    #[test]
    fn errors_name_shapes() {
        let err = matmul(&iota(&[2, 3]), &iota(&[2, 3]), false, false).unwrap_err();
        assert!(err.contains("[2,3]") && err.contains("3 vs 2"), "{err}");
        let err = matmul(&iota(&[2, 2, 2]), &iota(&[3, 2, 2]), false, false).unwrap_err();
        assert!(err.contains("batch dims 2 and 3"), "{err}");
        assert!(matmul(&iota(&[4]), &iota(&[4, 1]), false, false).is_err());
        assert!(matmul(&iota(&[1, 1, 1, 1]), &iota(&[1, 1]), false, false).is_err());
        // Empty inner dim: the result is all zeros.
        let r = matmul(&t(&[2, 0], &[]), &t(&[0, 3], &[]), false, false).unwrap();
        assert_close(&r, &[2, 3], &[0.0; 6], 0.0);
    }
}
