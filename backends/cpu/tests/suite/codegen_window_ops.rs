//! Window kernels (conv2d, depthwise_conv2d, max_pool, avg_pool) and batch_norm's normalize
//! kernel, which shares their range ABI, against the reference evaluator: each case builds a one-op graph fed by placeholders, lowers it, JITs
//! the window kernel, runs it on canary-guarded buffers (output pre-filled with NaN) and
//! compares with `eval_op` (1e-5 relative + 1e-6 absolute). Every case also runs the range
//! variant split into three pieces and must give the same bits.

use kiln_cpu::codegen::normalize::{
    define_normalize, define_normalize_range, normalize_outer_extent,
};
use kiln_cpu::codegen::window::{define_window, define_window_range, window_outer_extent};
use kiln_cpu::jit::{Jit, KernelId};
use kiln_ir::backend::CompileRequest;
use kiln_ir::eval::eval_op;
use kiln_ir::lower::lower;
use kiln_ir::op::{ConvAttrs, DataFormat, Float, Op, Padding, PoolAttrs};
use kiln_ir::program::{BufferKind, Kernel, Program};
use kiln_ir::{Graph, Shape, Tensor, TensorType};

const GUARD: usize = 8;
const SENTINEL: u32 = 0x7fc0_beef;

/// A buffer with `GUARD` sentinel elements on each side.
struct Guarded(Vec<f32>);

impl Guarded {
    fn new(values: &[f32]) -> Guarded {
        let mut v = vec![f32::from_bits(SENTINEL); values.len() + 2 * GUARD];
        v[GUARD..GUARD + values.len()].copy_from_slice(values);
        Guarded(v)
    }
    fn ptr(&mut self) -> *mut u8 {
        self.0[GUARD..].as_mut_ptr().cast()
    }
    fn body(&self) -> &[f32] {
        &self.0[GUARD..self.0.len() - GUARD]
    }
    fn check_guards(&self, what: &str) {
        let n = self.0.len();
        for (i, v) in self.0[..GUARD]
            .iter()
            .chain(&self.0[n - GUARD..])
            .enumerate()
        {
            assert_eq!(v.to_bits(), SENTINEL, "{what}: canary {i} overwritten");
        }
    }
}

/// Lowers `op` applied to placeholders holding `inputs`; returns the program and the kernel
/// whose main op is `op`'s.
fn lowered(op: &Op, inputs: &[&Tensor]) -> (Program, Kernel) {
    let mut g = Graph::new();
    let feeds: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let ty = TensorType::f32(Shape::known(t.dims()));
            g.add(format!("in{i}"), Op::Input(ty), &[]).unwrap()
        })
        .collect();
    let y = g.add("y", op.clone(), &feeds).unwrap();
    let req = CompileRequest {
        graph: &g,
        feeds: feeds.clone(),
        variables: vec![],
        fetches: vec![y],
        targets: vec![],
    };
    let p = lower(&req).unwrap();
    let k = p
        .kernels
        .iter()
        .find(|k| k.op_name() == op.name())
        .unwrap_or_else(|| panic!("no {} kernel in\n{p}", op.name()))
        .clone();
    (p, k)
}

type Define = fn(&mut Jit, &Program, &Kernel) -> Result<KernelId, String>;
type Extent = fn(&Program, &Kernel) -> Result<usize, String>;

/// The whole-range definer, the ranged one and the extent of `k`'s family.
fn family(k: &Kernel) -> (Define, Define, Extent) {
    match k.main {
        Some(Op::BatchNorm { .. }) => (
            define_normalize,
            define_normalize_range,
            normalize_outer_extent,
        ),
        _ => (define_window, define_window_range, window_outer_extent),
    }
}

/// Runs the window or normalize kernel (whole range, or the ranged variant over `splits`) and
/// returns the output.
fn run(p: &Program, k: &Kernel, feeds: &[&Tensor], splits: Option<&[i64]>) -> Vec<f32> {
    let mut jit = Jit::new().unwrap();
    let (whole, ranged, _) = family(k);
    let id = match splits {
        None => whole(&mut jit, p, k).unwrap(),
        Some(_) => ranged(&mut jit, p, k).unwrap(),
    };
    let kernel = jit.finish().unwrap().kernel(id).unwrap();
    let mut bufs: Vec<Guarded> = k
        .inputs
        .iter()
        .map(|&b| match p.buffer(b).kind {
            BufferKind::Feed(i) => Guarded::new(feeds[i].as_f32().unwrap()),
            ref other => panic!("unexpected operand kind {other:?}"),
        })
        .collect();
    bufs.push(Guarded::new(&vec![f32::NAN; p.buffer(k.output).numel()]));
    let cuts: Vec<i64> = match splits {
        None => vec![0, 0],
        Some(s) => s.to_vec(),
    };
    for w in cuts.windows(2) {
        let mut range = [w[0], w[1]];
        let mut ptrs: Vec<*mut u8> = bufs.iter_mut().map(|b| b.ptr()).collect();
        if splits.is_some() {
            ptrs.push(range.as_mut_ptr().cast());
        }
        // SAFETY: every pointer has the extent of its program buffer (plus guards).
        unsafe { kernel.call(&ptrs).unwrap() };
    }
    for (i, b) in bufs.iter().enumerate() {
        b.check_guards(&format!("{} buffer {i}", k.name));
    }
    bufs.last().unwrap().body().to_vec()
}

/// Checks the kernel of `op` on `inputs` against the reference.
fn check(op: Op, inputs: &[Tensor]) {
    check_impl(op, inputs, false)
}

/// Like [`check`], and the ranged kernel split in three must give the same bits.
fn check_split(op: Op, inputs: &[Tensor]) {
    check_impl(op, inputs, true)
}

fn check_impl(op: Op, inputs: &[Tensor], split: bool) {
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let (p, k) = lowered(&op, &refs);
    let kin: Vec<Tensor> = k
        .inputs
        .iter()
        .map(|&b| match p.buffer(b).kind {
            BufferKind::Feed(i) => inputs[i].clone(),
            _ => unreachable!(),
        })
        .collect();
    let kin_refs: Vec<&Tensor> = kin.iter().collect();
    let main_op = k.main.as_ref().expect("a window kernel has a main op");
    let want = eval_op(main_op, &kin_refs).unwrap();
    let want = want.as_f32().unwrap();
    let got = run(&p, &k, &refs, None);
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-5 * w.abs() + 1e-6;
        assert!(
            (g - w).abs() <= tol || (g.is_nan() && w.is_nan()),
            "{op:?} on {:?}: element {i}: got {g}, want {w}",
            inputs.iter().map(|t| t.dims().to_vec()).collect::<Vec<_>>()
        );
    }
    if !split {
        return;
    }
    let ext = family(&k).2(&p, &k).unwrap() as i64;
    let splits = [0, ext / 3, ext / 3 + (ext + 1) / 2 - ext / 3, ext];
    let parts = run(&p, &k, &refs, Some(&splits));
    let same = got
        .iter()
        .zip(&parts)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "{op:?}: the ranged kernel split {splits:?} differs");
}

fn u(dims: &[usize], seed: u64) -> Tensor {
    Tensor::uniform(dims, -1.0, 1.0, seed)
}

fn nchw(d: [usize; 4]) -> [usize; 4] {
    [d[0], d[3], d[1], d[2]]
}

/// Conv2d and depthwise on an NHWC image `x` (given as n,h,w,c) in both formats.
fn conv_both(x: [usize; 4], k: [usize; 2], cout_or_mult: usize, attrs: ConvAttrs, seed: u64) {
    conv_both_with(x, k, cout_or_mult, attrs, seed, check)
}

/// [`conv_both`] with the range split checked too.
fn conv_both_split(x: [usize; 4], k: [usize; 2], cout_or_mult: usize, attrs: ConvAttrs, seed: u64) {
    conv_both_with(x, k, cout_or_mult, attrs, seed, check_split)
}

fn conv_both_with(
    x: [usize; 4],
    k: [usize; 2],
    cout_or_mult: usize,
    attrs: ConvAttrs,
    seed: u64,
    check: fn(Op, &[Tensor]),
) {
    for fmt in [DataFormat::Nhwc, DataFormat::Nchw] {
        let a = attrs.format(fmt);
        let xd = if fmt == DataFormat::Nhwc { x } else { nchw(x) };
        let xt = u(&xd, seed);
        let w = u(&[k[0], k[1], x[3], cout_or_mult], seed + 1);
        check(Op::Conv2d(a), &[xt.clone(), w.clone()]);
        check(Op::DepthwiseConv2d(a), &[xt, w]);
    }
}

#[test]
fn seed_case_thin_conv_5x5_same() {
    let x = u(&[1, 100, 100, 1], 1);
    let w = u(&[5, 5, 1, 1], 2);
    check_split(Op::Conv2d(ConvAttrs::same()), &[x, w]);
}

#[test]
fn conv_same_and_valid_stride1() {
    conv_both_split([2, 7, 13, 3], [3, 3], 5, ConvAttrs::same(), 10);
    conv_both([1, 7, 13, 3], [3, 2], 2, ConvAttrs::valid(), 11);
    conv_both([1, 13, 7, 1], [5, 5], 1, ConvAttrs::same(), 12);
    conv_both([1, 9, 21, 1], [3, 3], 1, ConvAttrs::valid(), 13);
}

#[test]
fn conv_same_stride2_odd_and_even() {
    for (x, s) in [([1, 7, 13, 2], 2), ([2, 8, 6, 3], 2), ([1, 9, 9, 1], 3)] {
        conv_both(x, [3, 3], 3, ConvAttrs::same().strides(s, s), 20);
        conv_both(x, [4, 4], 2, ConvAttrs::same().strides(s, 1), 22);
    }
    conv_both([1, 8, 8, 1], [2, 2], 1, ConvAttrs::same().strides(2, 2), 21);
}

#[test]
fn conv_dilation_2() {
    conv_both(
        [1, 13, 11, 2],
        [3, 3],
        3,
        ConvAttrs::same().dilations(2, 2),
        30,
    );
    conv_both(
        [1, 13, 11, 1],
        [3, 2],
        1,
        ConvAttrs::valid().dilations(2, 2),
        31,
    );
    conv_both(
        [2, 7, 9, 3],
        [2, 3],
        2,
        ConvAttrs::same().dilations(2, 1),
        32,
    );
    let pad = Padding::Explicit([[3, 0], [1, 4]]);
    conv_both(
        [1, 6, 5, 2],
        [3, 2],
        2,
        ConvAttrs::with_padding(pad).dilations(1, 3),
        33,
    );
}

#[test]
fn conv_explicit_padding() {
    let pad = Padding::Explicit([[1, 2], [0, 3]]);
    conv_both([1, 7, 6, 2], [3, 3], 3, ConvAttrs::with_padding(pad), 40);
    conv_both(
        [1, 7, 6, 2],
        [2, 3],
        2,
        ConvAttrs::with_padding(pad).strides(2, 1),
        41,
    );
    let wide = Padding::Explicit([[4, 4], [3, 5]]);
    conv_both([1, 3, 5, 1], [2, 2], 1, ConvAttrs::with_padding(wide), 42);
}

#[test]
fn conv_many_channels_and_big_kernels() {
    // 23 output channels: one 16-wide vector chunk, one vector, 3 scalar lanes; cin 9 runs the
    // channel loop; a 9x9 kernel is too big to unroll.
    let x = u(&[1, 6, 7, 9], 50);
    check(
        Op::Conv2d(ConvAttrs::same()),
        &[x.clone(), u(&[3, 3, 9, 23], 51)],
    );
    check(Op::Conv2d(ConvAttrs::same()), &[x, u(&[1, 1, 9, 40], 52)]);
    let x = u(&[1, 12, 11, 2], 53);
    check(
        Op::Conv2d(ConvAttrs::same()),
        &[x.clone(), u(&[9, 9, 2, 5], 54)],
    );
    let x = u(&[1, 12, 11, 1], 53);
    check(Op::Conv2d(ConvAttrs::same()), &[x, u(&[9, 9, 1, 1], 54)]);
    let x = u(&[2, 9, 17, 7], 55);
    let a = ConvAttrs::same().format(DataFormat::Nchw);
    check(Op::Conv2d(a), &[x, u(&[3, 3, 9, 6], 56)]);
    // Kernel as large as the input; 1x1 image with a 3x3 SAME kernel.
    conv_both([1, 4, 5, 2], [4, 5], 3, ConvAttrs::valid(), 57);
    conv_both([1, 1, 1, 3], [3, 3], 2, ConvAttrs::same(), 58);
}

#[test]
fn depthwise_multipliers() {
    for mult in [1, 2, 3] {
        let s = 60 + mult as u64;
        conv_both([1, 7, 9, 5], [3, 3], mult, ConvAttrs::same(), s);
        conv_both(
            [2, 8, 6, 4],
            [3, 2],
            mult,
            ConvAttrs::same().strides(2, 2),
            s,
        );
        conv_both(
            [1, 9, 9, 2],
            [2, 3],
            mult,
            ConvAttrs::valid().dilations(2, 2),
            s,
        );
        conv_both([1, 9, 21, 1], [3, 3], mult, ConvAttrs::same(), s);
        // 17 channels x mult: vector chunks plus tails, channel loops in NCHW.
        conv_both([1, 5, 6, 17], [3, 3], mult, ConvAttrs::same(), s);
    }
}

/// NHWC depthwise over odd and round channel counts: multiplier 1 with column stride 1 takes
/// the channel-vector path (blocks of four interior columns, two f32x4 channel vectors, one
/// vector, scalar channel tail, leftover columns per pixel); the rest the per-pixel path. Widths 13 and
/// 14 leave interior columns past the last block of four; 3 rows of 5 make every interior row
/// also a border row under dilation 2.
#[test]
fn depthwise_nhwc_channel_vectors() {
    let paddings = [
        Padding::Same,
        Padding::Valid,
        Padding::Explicit([[2, 0], [1, 3]]),
    ];
    let mut seed = 300;
    for c in [1, 3, 5, 17, 32, 33] {
        for mult in [1, 2] {
            for stride in [1, 2] {
                // Strides above 1 cannot be combined with dilations above 1.
                let dilations: &[usize] = if stride == 1 { &[1, 2] } else { &[1] };
                for &dil in dilations {
                    for pad in paddings {
                        seed += 2;
                        let a = ConvAttrs::with_padding(pad)
                            .strides(stride, stride)
                            .dilations(dil, dil);
                        let x = u(&[1, 5, 13 + stride, c], seed);
                        let w = u(&[3, 3, c, mult], seed + 1);
                        check_split(Op::DepthwiseConv2d(a), &[x, w]);
                    }
                }
            }
        }
    }
    // Batch 2 and a 5x5 filter (row taps as a loop in interior rows).
    let x = u(&[2, 9, 17, 33], 401);
    check_split(
        Op::DepthwiseConv2d(ConvAttrs::same()),
        &[x.clone(), u(&[5, 5, 33, 1], 402)],
    );
    check_split(
        Op::DepthwiseConv2d(ConvAttrs::same().strides(1, 2)),
        &[x, u(&[7, 7, 33, 1], 403)],
    );
}

fn pools(x: [usize; 4], k: [usize; 2], s: [usize; 2], padding: Padding, seed: u64) {
    pools_with(x, k, s, padding, seed, check)
}

fn pools_with(
    x: [usize; 4],
    k: [usize; 2],
    s: [usize; 2],
    padding: Padding,
    seed: u64,
    check: fn(Op, &[Tensor]),
) {
    for fmt in [DataFormat::Nhwc, DataFormat::Nchw] {
        let a = PoolAttrs {
            ksize: k,
            strides: s,
            padding,
            data_format: fmt,
        };
        let xd = if fmt == DataFormat::Nhwc { x } else { nchw(x) };
        let xt = u(&xd, seed);
        check(Op::MaxPool(a), std::slice::from_ref(&xt));
        check(Op::AvgPool(a), &[xt]);
    }
}

#[test]
fn pools_same_borders() {
    pools_with(
        [1, 7, 13, 5],
        [3, 3],
        [1, 1],
        Padding::Same,
        70,
        check_split,
    );
    pools([2, 7, 13, 1], [3, 3], [1, 1], Padding::Same, 71);
    pools([1, 7, 7, 3], [2, 2], [2, 2], Padding::Same, 72);
    pools([1, 8, 6, 3], [2, 2], [2, 2], Padding::Same, 73);
    pools([1, 9, 20, 2], [3, 3], [2, 2], Padding::Same, 74);
    pools([1, 5, 5, 4], [7, 7], [1, 1], Padding::Same, 75);
    pools([1, 9, 21, 1], [3, 5], [1, 1], Padding::Same, 76);
}

#[test]
fn pools_valid_and_explicit() {
    pools([1, 7, 13, 5], [3, 3], [2, 2], Padding::Valid, 80);
    pools([2, 6, 9, 17], [2, 3], [1, 2], Padding::Valid, 81);
    pools([1, 6, 20, 1], [6, 3], [1, 1], Padding::Valid, 82);
    pools(
        [1, 6, 7, 3],
        [3, 3],
        [2, 1],
        Padding::Explicit([[1, 2], [2, 0]]),
        83,
    );
}

#[test]
fn avg_pool_same_divides_by_valid_cells_by_hand() {
    // 3x3 image 1..9, 3x3 window, stride 1: corners average 4 cells, edges 6, centre 9.
    let x = Tensor::from_vec(&[1, 3, 3, 1], (1..=9).map(|v| v as f32).collect()).unwrap();
    let op = Op::AvgPool(PoolAttrs::new(3, 1, Padding::Same));
    let (p, k) = lowered(&op, &[&x]);
    let got = run(&p, &k, &[&x], None);
    assert_eq!(got, [3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0]);
}

#[test]
fn max_pool_propagates_nan_and_ignores_padding() {
    let mut v: Vec<f32> = (0..25).map(|i| -(i as f32) - 1.0).collect();
    v[12] = f32::NAN;
    let x = Tensor::from_vec(&[1, 5, 5, 1], v).unwrap();
    let op = Op::MaxPool(PoolAttrs::new(3, 1, Padding::Same));
    let (p, k) = lowered(&op, &[&x]);
    let got = run(&p, &k, &[&x], None);
    // Corner (0,0): max of -1,-2,-6,-7 is -1 (padding would have given 0).
    assert_eq!(got[0], -1.0);
    // Every window touching the centre (rows/cols 1..=3) is NaN; (0,0) and (4,4) are not.
    for y in 0..5 {
        for xx in 0..5 {
            let touches = (1..=3).contains(&y) && (1..=3).contains(&xx);
            assert_eq!(got[y * 5 + xx].is_nan(), touches, "({y},{xx})");
        }
    }
}

fn bn(dims: &[usize], format: DataFormat, seed: u64) {
    let c = match format {
        DataFormat::Nhwc => dims[dims.len() - 1],
        DataFormat::Nchw => dims[1],
    };
    let x = Tensor::uniform(dims, -3.0, 3.0, seed);
    let scale = u(&[c], seed + 1);
    let offset = u(&[c], seed + 2);
    let mean = u(&[c], seed + 3);
    let var = Tensor::uniform(&[c], 0.1, 2.0, seed + 4);
    let op = Op::BatchNorm {
        epsilon: Float(0.001),
        data_format: format,
    };
    check_split(op, &[x, scale, offset, mean, var]);
}

#[test]
fn batch_norm_nhwc_and_nchw() {
    bn(&[2, 3, 5, 7], DataFormat::Nhwc, 90);
    bn(&[2, 3, 5, 4], DataFormat::Nhwc, 91);
    bn(&[1, 1, 3, 2000], DataFormat::Nhwc, 92);
    bn(&[5, 6], DataFormat::Nhwc, 93);
    bn(&[2, 7, 3, 5], DataFormat::Nchw, 94);
    bn(&[1, 9, 1, 1], DataFormat::Nchw, 95);
    bn(&[3, 4, 8], DataFormat::Nhwc, 96);
}

#[test]
fn batch_norm_by_hand() {
    // Channel 0: (x-1)*2/sqrt(4) + 10 = x + 9; channel 1: identity.
    let eps = 0.001f32;
    let x = Tensor::from_vec(&[1, 1, 2, 2], vec![1.0, 5.0, 3.0, -2.0]).unwrap();
    let t = |v: Vec<f32>| Tensor::from_vec(&[2], v).unwrap();
    let ins = [
        x,
        t(vec![2.0, 1.0]),
        t(vec![10.0, 0.0]),
        t(vec![1.0, 0.0]),
        t(vec![4.0 - eps, 1.0 - eps]),
    ];
    let op = Op::BatchNorm {
        epsilon: Float(eps),
        data_format: DataFormat::Nhwc,
    };
    let refs: Vec<&Tensor> = ins.iter().collect();
    let (p, k) = lowered(&op, &refs);
    let got = run(&p, &k, &refs, None);
    let want = [10.0, 5.0, 12.0, -2.0];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{got:?}");
    }
}

#[test]
fn non_window_kernels_are_errors() {
    let x = u(&[2, 3], 1);
    let op = Op::Softmax { axis: 1 };
    let (p, k) = lowered(&op, &[&x]);
    let mut jit = Jit::new().unwrap();
    let err = define_window(&mut jit, &p, &k).unwrap_err();
    assert!(err.contains(&k.name) && err.contains("softmax"), "{err}");
    assert!(window_outer_extent(&p, &k).is_err());
    let err = define_normalize(&mut jit, &p, &k).unwrap_err();
    assert!(
        err.contains(&k.name) && err.contains("softmax is not batch_norm"),
        "{err}"
    );
    assert!(normalize_outer_extent(&p, &k).is_err());
}

#[test]
fn batch_norm_is_not_a_window_kernel() {
    let (c, x) = (3, u(&[1, 2, 2, 3], 7));
    let params: Vec<Tensor> = (0..4).map(|i| u(&[c], 8 + i)).collect();
    let op = Op::BatchNorm {
        epsilon: Float(0.001),
        data_format: DataFormat::Nhwc,
    };
    let (p, k) = lowered(&op, &[&x, &params[0], &params[1], &params[2], &params[3]]);
    let mut jit = Jit::new().unwrap();
    let err = define_window(&mut jit, &p, &k).unwrap_err();
    assert!(err.contains(&k.name) && err.contains("batch_norm"), "{err}");
    assert!(window_outer_extent(&p, &k).is_err());
    assert_eq!(normalize_outer_extent(&p, &k), Ok(4));
}
