//! Tests of the backward window ops: small hand computations, the adjoint identities
//! `<conv(x,w), dy> == <x, backprop_input(w,dy)> == <w, backprop_filter(x,dy)>` (and the
//! pools' equivalents) in f64 on random shapes and attribute variants, central finite
//! differences of the forward reference, and clean errors for inconsistent shapes.

use super::super::testutil::{assert_close, iota, noise, t};
use super::backprop::{conv2d_backprop_filter, conv2d_backprop_input};
use super::conv::conv2d;
use super::pool::{avg_pool, max_pool};
use super::pool_grad::{avg_pool_grad, max_pool_grad};
use crate::op::{ConvAttrs, DataFormat, Padding, PoolAttrs};
use crate::tensor::Tensor;

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.as_f32().unwrap(), b.as_f32().unwrap());
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-4 * (1.0 + a.abs().max(b.abs())),
        "{what}: {a} vs {b}"
    );
}

fn shape_i64(d: &[usize]) -> [i64; 4] {
    [d[0] as i64, d[1] as i64, d[2] as i64, d[3] as i64]
}

#[test]
fn backprop_input_and_filter_by_hand() {
    // x 3x3 = 1..9, w = [[1,2],[3,4]], VALID stride 1, dy all ones (2x2).
    let w = t(&[2, 2, 1, 1], &[1.0, 2.0, 3.0, 4.0]);
    let dy = t(&[1, 2, 2, 1], &[1.0; 4]);
    let dx = conv2d_backprop_input(&w, &dy, [1, 3, 3, 1], &ConvAttrs::valid()).unwrap();
    // Each input cell sums the filter taps that read it.
    let want = [1.0, 3.0, 2.0, 4.0, 10.0, 6.0, 3.0, 7.0, 4.0];
    assert_close(&dx, &[1, 3, 3, 1], &want, 0.0);
    let x = iota(&[1, 3, 3, 1]);
    let dw = conv2d_backprop_filter(&x, &dy, [2, 2, 1, 1], &ConvAttrs::valid()).unwrap();
    // Each tap sums the 2x2 block of inputs it reads.
    assert_close(&dw, &[2, 2, 1, 1], &[12.0, 16.0, 24.0, 28.0], 0.0);
    // SAME stride 2 on 3x3: padding only bottom/right, so dy[1,1] reaches only x[2,2] (tap 0).
    let dy = t(&[1, 2, 2, 1], &[0.0, 0.0, 0.0, 1.0]);
    let a = ConvAttrs::same().strides(2, 2);
    let dx = conv2d_backprop_input(&w, &dy, [-1, 3, 3, 1], &a).unwrap();
    let mut want = [0.0; 9];
    want[8] = 1.0;
    assert_close(&dx, &[1, 3, 3, 1], &want, 0.0);
}

/// One random convolution setup: (x dims, filter dims, attrs), in the attrs' layout.
fn conv_variant(i: u32) -> (Vec<usize>, [usize; 4], ConvAttrs) {
    let pick = |k: u32, n: u32| (i.wrapping_mul(2654435761) >> (k * 3)) % n;
    let groups = [1, 1, 2, 3][pick(0, 4) as usize];
    let (cin, cout_per) = (1 + pick(1, 3) as usize, 1 + pick(2, 3) as usize);
    let (kh, kw) = (1 + pick(3, 3) as usize, 1 + pick(4, 3) as usize);
    let (h, w) = (4 + pick(5, 5) as usize, 3 + pick(6, 6) as usize);
    let padding = match pick(7, 3) {
        0 => Padding::Same,
        1 => Padding::Valid,
        _ => Padding::Explicit([[pick(8, 3) as usize, 1], [0, pick(9, 2) as usize]]),
    };
    let mut a = ConvAttrs::with_padding(padding);
    if pick(10, 2) == 0 {
        a = a.strides(1 + pick(1, 2) as usize, 1 + pick(2, 3) as usize);
    } else {
        a = a.dilations(1 + pick(3, 2) as usize, 1 + pick(4, 2) as usize);
    }
    if i % 4 == 3 {
        a = a.format(DataFormat::Nchw);
    }
    let n = 1 + (i % 2) as usize;
    let c = cin * groups;
    let x = match a.data_format {
        DataFormat::Nhwc => vec![n, h, w, c],
        DataFormat::Nchw => vec![n, c, h, w],
    };
    (x, [kh, kw, cin, cout_per * groups], a)
}

#[test]
fn conv_backprops_are_the_adjoints_of_conv2d() {
    let mut checked = 0;
    for i in 0..60 {
        let (xd, wd, a) = conv_variant(i);
        let x = noise(&xd, i);
        let w = noise(&wd, i + 1000);
        let Ok(y) = conv2d(&x, &w, &a) else { continue }; // VALID larger than the input
        let dy = noise(y.dims(), i + 2000);
        let dx = conv2d_backprop_input(&w, &dy, shape_i64(&xd), &a).unwrap();
        let dw = conv2d_backprop_filter(&x, &dy, wd, &a).unwrap();
        assert_eq!(dx.dims(), &xd[..]);
        let lhs = dot(&y, &dy);
        close(
            lhs,
            dot(&x, &dx),
            &format!("<x, dx> for {xd:?} {wd:?} {a:?}"),
        );
        close(
            lhs,
            dot(&w, &dw),
            &format!("<w, dw> for {xd:?} {wd:?} {a:?}"),
        );
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} variants had a valid output");
}

#[test]
fn backprop_input_matches_finite_differences() {
    // Central differences of f(x) = <conv2d(x, w), dy> (linear in x, so only rounding).
    let a = ConvAttrs::same().strides(2, 2);
    let (x, w) = (noise(&[1, 5, 4, 3], 1), noise(&[3, 2, 3, 2], 2));
    let dy = noise(conv2d(&x, &w, &a).unwrap().dims(), 3);
    let dx = conv2d_backprop_input(&w, &dy, [1, 5, 4, 3], &a).unwrap();
    let f = |x: &Tensor| dot(&conv2d(x, &w, &a).unwrap(), &dy);
    let xs = x.as_f32().unwrap().to_vec();
    for i in 0..xs.len() {
        let (mut up, mut down) = (xs.clone(), xs.clone());
        up[i] += 0.25;
        down[i] -= 0.25;
        let fd = (f(&t(x.dims(), &up)) - f(&t(x.dims(), &down))) / 0.5;
        close(fd, dx.as_f32().unwrap()[i] as f64, &format!("dx[{i}]"));
    }
}

#[test]
fn batch_minus_one_takes_dy_batch() {
    let a = ConvAttrs::same();
    let w = noise(&[3, 3, 2, 4], 5);
    let dy = noise(&[3, 5, 5, 4], 6);
    let dx = conv2d_backprop_input(&w, &dy, [-1, 5, 5, 2], &a).unwrap();
    assert_eq!(dx.dims(), &[3, 5, 5, 2]);
}

#[test]
fn inconsistent_shapes_are_clean_errors() {
    let a = ConvAttrs::valid();
    let w = noise(&[3, 3, 2, 4], 5);
    // VALID 3x3 on 6x6 gives 4x4, not 5x5.
    let dy = noise(&[1, 5, 5, 4], 6);
    let e = conv2d_backprop_input(&w, &dy, [1, 6, 6, 2], &a).unwrap_err();
    assert!(e.contains("dy must be conv2d's output [1,4,4,4]"), "{e}");
    assert!(e.contains("dy [1,5,5,4]"), "{e}");
    let e = conv2d_backprop_input(&w, &dy, [1, -6, 6, 2], &a).unwrap_err();
    assert!(e.contains("only the batch may be -1"), "{e}");
    let e = conv2d_backprop_filter(&noise(&[1, 6, 6, 3], 1), &dy, [3, 3, 2, 4], &a).unwrap_err();
    assert!(e.contains("3 input channels"), "{e}");
    let e = avg_pool_grad(&dy, [1, 6, 6, 4], &PoolAttrs::new(2, 2, Padding::Valid)).unwrap_err();
    assert!(
        e.contains("grad [1,5,5,4] must be the pool's output [1,3,3,4]"),
        "{e}"
    );
}

#[test]
fn max_pool_grad_by_hand_ties_and_padding() {
    // 2x2 stride 2 on 4x4 iota: each window's max is its bottom-right cell.
    let x = iota(&[1, 4, 4, 1]);
    let a = PoolAttrs::new(2, 2, Padding::Valid);
    let y = max_pool(&x, &a).unwrap();
    let g = t(&[1, 2, 2, 1], &[1.0, 2.0, 3.0, 4.0]);
    let dx = max_pool_grad(&x, &y, &g, &a).unwrap();
    let mut want = [0.0; 16];
    (want[5], want[7], want[13], want[15]) = (1.0, 2.0, 3.0, 4.0);
    assert_close(&dx, &[1, 4, 4, 1], &want, 0.0);
    // A tie: the first maximum in row-major window order takes it all.
    let x = t(&[1, 2, 2, 1], &[0.0, 5.0, 5.0, 5.0]);
    let y = max_pool(&x, &a).unwrap();
    let dx = max_pool_grad(&x, &y, &t(&[1, 1, 1, 1], &[7.0]), &a).unwrap();
    assert_close(&dx, &[1, 2, 2, 1], &[0.0, 7.0, 0.0, 0.0], 0.0);
    // All negative under SAME: padding (which would be 0) never wins.
    let x = t(
        &[1, 3, 3, 1],
        &[-9.0, -8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0],
    );
    let a = PoolAttrs::new(2, 2, Padding::Same);
    let y = max_pool(&x, &a).unwrap();
    let dx = max_pool_grad(&x, &y, &t(&[1, 2, 2, 1], &[1.0; 4]), &a).unwrap();
    let want = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
    assert_close(&dx, &[1, 3, 3, 1], &want, 0.0);
}

#[test]
fn avg_pool_grad_divides_by_the_forward_count() {
    // 2x2 stride 2 SAME on 3x3: windows of 4, 2, 2 and 1 real cells.
    let a = PoolAttrs::new(2, 2, Padding::Same);
    let dx = avg_pool_grad(&t(&[1, 2, 2, 1], &[4.0, 2.0, 2.0, 1.0]), [-1, 3, 3, 1], &a).unwrap();
    assert_close(&dx, &[1, 3, 3, 1], &[1.0; 9], 0.0);
}

#[test]
fn pool_grads_are_the_adjoints_of_the_pools() {
    for i in 0..40u32 {
        let k = [1 + (i % 3) as usize, 1 + (i / 3 % 3) as usize];
        let s = [1 + (i / 2 % 2) as usize, 1 + (i / 5 % 3) as usize];
        let padding = match i % 3 {
            0 => Padding::Same,
            1 => Padding::Valid,
            _ => Padding::Explicit([[k[0] - 1, 0], [0, k[1] - 1]]),
        };
        let format = if i % 4 == 1 {
            DataFormat::Nchw
        } else {
            DataFormat::Nhwc
        };
        let a = PoolAttrs {
            ksize: k,
            strides: s,
            padding,
            data_format: format,
        };
        let (n, h, w) = (
            1 + (i % 2) as usize,
            5 + (i % 4) as usize,
            4 + (i % 3) as usize,
        );
        let xd = match format {
            DataFormat::Nhwc => [n, h, w, 2],
            DataFormat::Nchw => [n, 2, h, w],
        };
        // Distinct values, so every window has one maximum and the max is linear near x.
        let x = noise(&xd, i);
        let y = avg_pool(&x, &a).unwrap();
        let g = noise(y.dims(), i + 100);
        let dx = avg_pool_grad(&g, shape_i64(&xd), &a).unwrap();
        close(dot(&y, &g), dot(&x, &dx), &format!("avg {a:?} {xd:?}"));
        let y = max_pool(&x, &a).unwrap();
        let dx = max_pool_grad(&x, &y, &g, &a).unwrap();
        close(dot(&y, &g), dot(&x, &dx), &format!("max {a:?} {xd:?}"));
    }
}

#[test]
fn max_pool_grad_matches_finite_differences() {
    let a = PoolAttrs::new(3, 2, Padding::Same);
    let x = noise(&[1, 5, 6, 2], 9);
    let y = max_pool(&x, &a).unwrap();
    let g = noise(y.dims(), 10);
    let dx = max_pool_grad(&x, &y, &g, &a).unwrap();
    let f = |x: &Tensor| dot(&max_pool(x, &a).unwrap(), &g);
    let xs = x.as_f32().unwrap().to_vec();
    for i in 0..xs.len() {
        // A step far below the gaps between the noise values keeps each window's argmax.
        let (mut up, mut down) = (xs.clone(), xs.clone());
        up[i] += 1e-4;
        down[i] -= 1e-4;
        let fd = (f(&t(x.dims(), &up)) - f(&t(x.dims(), &down))) / 2e-4;
        let got = dx.as_f32().unwrap()[i] as f64;
        assert!(
            (fd - got).abs() < 2e-2 * (1.0 + got.abs()),
            "dx[{i}]: {fd} vs {got}"
        );
    }
}

#[test]
fn depthwise_backprops_are_the_adjoints_of_depthwise_conv2d() {
    use super::backprop::{depthwise_backprop_filter, depthwise_backprop_input};
    use super::conv::depthwise_conv2d;
    for i in 0..40 {
        let (xd, wd, a) = conv_variant(i);
        // Reuse the variant's geometry with a depthwise filter [kh, kw, channels, mult].
        let c = match a.data_format {
            DataFormat::Nhwc => xd[3],
            DataFormat::Nchw => xd[1],
        };
        let wd = [wd[0], wd[1], c, 1 + (i as usize % 3)];
        let (x, w) = (noise(&xd, i), noise(&wd, i + 7));
        let Ok(y) = depthwise_conv2d(&x, &w, &a) else {
            continue;
        };
        let dy = noise(y.dims(), i + 9);
        let dx = depthwise_backprop_input(&w, &dy, shape_i64(&xd), &a).unwrap();
        let dw = depthwise_backprop_filter(&x, &dy, wd, &a).unwrap();
        let lhs = dot(&y, &dy);
        close(
            lhs,
            dot(&x, &dx),
            &format!("<x, dx> for {xd:?} {wd:?} {a:?}"),
        );
        close(
            lhs,
            dot(&w, &dw),
            &format!("<w, dw> for {xd:?} {wd:?} {a:?}"),
        );
    }
    // By hand: one channel, multiplier 2, VALID 1x1 taps: dx = dy0 * w0 + dy1 * w1.
    let w = t(&[1, 1, 1, 2], &[2.0, 3.0]);
    let dy = t(&[1, 1, 1, 2], &[5.0, 7.0]);
    let dx = depthwise_backprop_input(&w, &dy, [1, 1, 1, 1], &ConvAttrs::valid()).unwrap();
    assert_close(&dx, &[1, 1, 1, 1], &[31.0], 0.0);
    let e = depthwise_backprop_input(&w, &dy, [1, 1, 1, 2], &ConvAttrs::valid()).unwrap_err();
    assert!(
        e.contains("has 2 channels but the filter [1,1,1,2] expects 1"),
        "{e}"
    );
}
