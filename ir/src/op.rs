//! The op catalogue: a closed enum whose variants carry their attributes.
//!
//! Semantics follow TensorFlow 1.x (tf.nn / tf.math); the doc comment on each variant is the
//! op's reference. Ops derive `Eq + Hash` (floats compare by bits, see [`Float`]) so that CSE
//! and compile-cache keys are exact. Shape rules live in `infer`, arithmetic in `eval`.

use crate::DType;
use crate::fused::FusedOp;
use crate::shape::TensorType;
use crate::tensor::Tensor;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// An f32 attribute that compares and hashes by its bits (so `Op` can be `Eq + Hash`).
#[derive(Clone, Copy, Debug)]
pub struct Float(pub f32);

impl PartialEq for Float {
    fn eq(&self, other: &Float) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for Float {}
impl Hash for Float {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state)
    }
}

/// Memory layout of 4-D image tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DataFormat {
    /// batch, height, width, channels (TensorFlow's default).
    #[default]
    Nhwc,
    /// batch, channels, height, width.
    Nchw,
}

impl DataFormat {
    /// The attribute spelling (`"NHWC"` / `"NCHW"`).
    pub fn name(self) -> &'static str {
        match self {
            DataFormat::Nhwc => "NHWC",
            DataFormat::Nchw => "NCHW",
        }
    }

    /// Axis indices of (height, width, channels) in a rank-4 tensor of this format.
    pub fn hwc_axes(self) -> (usize, usize, usize) {
        match self {
            DataFormat::Nhwc => (1, 2, 3),
            DataFormat::Nchw => (2, 3, 1),
        }
    }
}

/// Spatial padding of convolutions and pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Padding {
    /// Output size ceil(in / stride); total padding split with the extra cell at the
    /// bottom/right, as TensorFlow computes it.
    Same,
    /// No padding; output size ceil((in - effective_kernel + 1) / stride).
    Valid,
    /// Explicit `[[top, bottom], [left, right]]`.
    Explicit([[usize; 2]; 2]),
}

/// Attributes of `conv2d` and `depthwise_conv2d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvAttrs {
    /// Strides along (height, width).
    pub strides: [usize; 2],
    /// Spatial padding.
    pub padding: Padding,
    /// Dilations along (height, width).
    pub dilations: [usize; 2],
    /// Layout of input and output.
    pub data_format: DataFormat,
}

impl ConvAttrs {
    /// Stride 1, SAME padding, no dilation, NHWC.
    pub fn same() -> ConvAttrs {
        ConvAttrs::with_padding(Padding::Same)
    }

    /// Stride 1, VALID padding, no dilation, NHWC.
    pub fn valid() -> ConvAttrs {
        ConvAttrs::with_padding(Padding::Valid)
    }

    /// Stride 1, the given padding, no dilation, NHWC.
    pub fn with_padding(padding: Padding) -> ConvAttrs {
        ConvAttrs {
            strides: [1, 1],
            padding,
            dilations: [1, 1],
            data_format: DataFormat::Nhwc,
        }
    }

    /// The same attributes with other strides.
    pub fn strides(mut self, h: usize, w: usize) -> ConvAttrs {
        self.strides = [h, w];
        self
    }

    /// The same attributes with other dilations.
    pub fn dilations(mut self, h: usize, w: usize) -> ConvAttrs {
        self.dilations = [h, w];
        self
    }

    /// The same attributes with another data format.
    pub fn format(mut self, data_format: DataFormat) -> ConvAttrs {
        self.data_format = data_format;
        self
    }
}

/// Attributes of `max_pool` and `avg_pool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolAttrs {
    /// Window size along (height, width).
    pub ksize: [usize; 2],
    /// Strides along (height, width).
    pub strides: [usize; 2],
    /// Spatial padding; padded cells never win a max and never count in an average.
    pub padding: Padding,
    /// Layout of input and output.
    pub data_format: DataFormat,
}

impl PoolAttrs {
    /// A `k`x`k` window with stride `s`, the given padding, NHWC.
    pub fn new(k: usize, s: usize, padding: Padding) -> PoolAttrs {
        PoolAttrs {
            ksize: [k, k],
            strides: [s, s],
            padding,
            data_format: DataFormat::Nhwc,
        }
    }
}

/// Elementwise functions of one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// -x
    Neg,
    /// |x|
    Abs,
    /// max(x, 0)
    Relu,
    /// min(max(x, 0), 6)
    Relu6,
    /// x if x >= 0 else alpha * x (TensorFlow: max(x, alpha*x) for alpha <= 1).
    LeakyRelu {
        /// Slope for negative inputs (default 0.2).
        alpha: Float,
    },
    /// 1 / (1 + exp(-x))
    Sigmoid,
    /// tanh(x)
    Tanh,
    /// e^x
    Exp,
    /// ln(x); -inf at 0, NaN below.
    Log,
    /// sqrt(x)
    Sqrt,
    /// 1 / sqrt(x)
    Rsqrt,
    /// x * x
    Square,
    /// -1, 0 or +1 by the sign of x (`tf.sign`): sign(-0) = 0, sign(NaN) = NaN.
    Sign,
}

impl UnaryOp {
    /// The .kiln spelling.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Relu => "relu",
            UnaryOp::Relu6 => "relu6",
            UnaryOp::LeakyRelu { .. } => "leaky_relu",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Square => "square",
            UnaryOp::Sign => "sign",
        }
    }

    /// Every unary op (leaky_relu with its default alpha).
    pub const ALL: [UnaryOp; 13] = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Relu,
        UnaryOp::Relu6,
        UnaryOp::LeakyRelu { alpha: Float(0.2) },
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Square,
        UnaryOp::Sign,
    ];
}

/// Elementwise functions of two operands, with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a * b
    Mul,
    /// a / b (IEEE: x/0 is ±inf or NaN)
    Div,
    /// max(a, b); NaN if either is NaN (TensorFlow's semantics)
    Maximum,
    /// min(a, b); NaN if either is NaN
    Minimum,
    /// a ^ b (powf)
    Pow,
}

impl BinaryOp {
    /// The .kiln spelling.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
            BinaryOp::Pow => "pow",
        }
    }

    /// Every binary op.
    pub const ALL: [BinaryOp; 7] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Maximum,
        BinaryOp::Minimum,
        BinaryOp::Pow,
    ];
}

/// Reductions over a set of axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Sum of the elements.
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Maximum (NaN propagates).
    Max,
    /// Minimum (NaN propagates).
    Min,
}

impl ReduceOp {
    /// The .kiln spelling (`reduce_sum`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "reduce_sum",
            ReduceOp::Mean => "reduce_mean",
            ReduceOp::Max => "reduce_max",
            ReduceOp::Min => "reduce_min",
        }
    }

    /// Every reduction.
    pub const ALL: [ReduceOp; 4] = [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min];
}

/// Side-effecting updates of a variable; run as session targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AssignOp {
    /// var := value
    Assign,
    /// var := var + value
    AssignAdd,
    /// var := var - value
    AssignSub,
}

impl AssignOp {
    /// The .kiln spelling.
    pub fn name(self) -> &'static str {
        match self {
            AssignOp::Assign => "assign",
            AssignOp::AssignAdd => "assign_add",
            AssignOp::AssignSub => "assign_sub",
        }
    }
}

/// Elementwise comparisons of two operands of one dtype (f32, i32 or i64; `equal` and
/// `not_equal` also bool), with numpy broadcasting; the result is bool. A NaN operand compares
/// false, except under `not_equal`, where it is true (IEEE, as `tf.math.less` etc.).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// a == b
    Equal,
    /// a != b
    NotEqual,
    /// a < b
    Less,
    /// a <= b
    LessEqual,
    /// a > b
    Greater,
    /// a >= b
    GreaterEqual,
}

impl CompareOp {
    /// The .kiln spelling.
    pub fn name(self) -> &'static str {
        match self {
            CompareOp::Equal => "equal",
            CompareOp::NotEqual => "not_equal",
            CompareOp::Less => "less",
            CompareOp::LessEqual => "less_equal",
            CompareOp::Greater => "greater",
            CompareOp::GreaterEqual => "greater_equal",
        }
    }

    /// Whether `a op b` holds; on floats every comparison with NaN is false except `!=`
    /// (IEEE). The one scalar definition the evaluator and the host kernels share.
    pub fn holds<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            CompareOp::Equal => a == b,
            CompareOp::NotEqual => a != b,
            CompareOp::Less => a < b,
            CompareOp::LessEqual => a <= b,
            CompareOp::Greater => a > b,
            CompareOp::GreaterEqual => a >= b,
        }
    }

    /// Whether the comparison orders its operands (so bool operands are not allowed).
    pub fn is_ordering(self) -> bool {
        !matches!(self, CompareOp::Equal | CompareOp::NotEqual)
    }

    /// Every comparison.
    pub const ALL: [CompareOp; 6] = [
        CompareOp::Equal,
        CompareOp::NotEqual,
        CompareOp::Less,
        CompareOp::LessEqual,
        CompareOp::Greater,
        CompareOp::GreaterEqual,
    ];
}

/// Elementwise logical functions of two bool operands, with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogicalOp {
    /// a && b
    And,
    /// a || b
    Or,
}

impl LogicalOp {
    /// The .kiln spelling.
    pub fn name(self) -> &'static str {
        match self {
            LogicalOp::And => "logical_and",
            LogicalOp::Or => "logical_or",
        }
    }

    /// `a op b`.
    pub fn apply(self, a: bool, b: bool) -> bool {
        match self {
            LogicalOp::And => a && b,
            LogicalOp::Or => a || b,
        }
    }

    /// Every binary logical op.
    pub const ALL: [LogicalOp; 2] = [LogicalOp::And, LogicalOp::Or];
}

/// How a `var` or `const` gets its value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Initializer {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Every element the given value.
    Fill(Float),
    /// Normal(mean, std) from a seeded deterministic generator.
    Normal {
        /// Mean.
        mean: Float,
        /// Standard deviation.
        std: Float,
        /// Generator seed.
        seed: u64,
    },
    /// Uniform in [lo, hi) from a seeded deterministic generator.
    Uniform {
        /// Lower bound (inclusive).
        lo: Float,
        /// Upper bound (exclusive).
        hi: Float,
        /// Generator seed.
        seed: u64,
    },
    /// Explicit values (row-major).
    Literal(Arc<Tensor>),
    /// Values loaded from a .npy file; `path` is as written in the graph file.
    Npy {
        /// The path as written (relative to the graph file).
        path: String,
        /// The loaded values.
        value: Arc<Tensor>,
    },
    /// One tensor of a safetensors file (format version 2): `safetensors("model.safetensors",
    /// "conv1.weight")`; `path` is as written in the graph file, relative to it.
    Safetensors {
        /// The path as written (relative to the graph file).
        path: String,
        /// The tensor's key in the file.
        tensor: String,
        /// The loaded values.
        value: Arc<Tensor>,
    },
}

/// The declared type and initial value of a `var` or `const`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Source {
    /// Declared type; every dim is known.
    pub ty: TensorType,
    /// How the value is made.
    pub init: Initializer,
}

/// One operation of the graph. Operands are the node's inputs, in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// A placeholder fed at run time; dims may be `?`.
    Input(TensorType),
    /// A variable: state that lives in the session, read by ops and updated by assigns.
    Var(Source),
    /// A constant.
    Const(Source),
    /// Elementwise unary function of `x`.
    Unary(UnaryOp),
    /// Elementwise binary function of `(a, b)` with numpy broadcasting of any ranks.
    Binary(BinaryOp),
    /// `bias_add(x, b)`: adds the rank-1 `b` along the channel axis (last for NHWC, axis 1 for NCHW).
    BiasAdd {
        /// Which axis is channels.
        data_format: DataFormat,
    },
    /// `matmul(a, b)`: rank-2 `[m,k] x [k,n]`, or rank-3 batched `[B,m,k] x [B,k,n]`.
    MatMul {
        /// Use a's last two axes transposed.
        transpose_a: bool,
        /// Use b's last two axes transposed.
        transpose_b: bool,
    },
    /// `conv2d(x, w)`: x is NHWC (or NCHW), w is HWIO `[kh, kw, cin / groups, cout]`;
    /// cross-correlation as TensorFlow computes it, with strides, padding and dilations.
    /// Grouped convolution follows TensorFlow 2: when x has `groups * w_cin` channels
    /// (`groups > 1`, `cout % groups == 0`), output channel `o` of group `g = o / (cout /
    /// groups)` reads only input channels `g * w_cin .. (g + 1) * w_cin`.
    Conv2d(ConvAttrs),
    /// `depthwise_conv2d(x, w)`: w is `[kh, kw, cin, multiplier]`; output channel
    /// `c * multiplier + m` convolves input channel `c` with filter `[.., .., c, m]`.
    DepthwiseConv2d(ConvAttrs),
    /// `max_pool(x)`: maximum over each window; padded cells are ignored.
    MaxPool(PoolAttrs),
    /// `avg_pool(x)`: mean over each window's unpadded cells.
    AvgPool(PoolAttrs),
    /// `reduce_*(x)`: reduction over `axes` (all axes when `None`; negative axes count from
    /// the end); reduced axes are dropped unless `keepdims`.
    Reduce {
        /// Which reduction.
        op: ReduceOp,
        /// Axes to reduce; `None` reduces every axis.
        axes: Option<Vec<i64>>,
        /// Keep reduced axes as size 1.
        keepdims: bool,
    },
    /// `softmax(x; axis)`: exp(x - max) / sum(exp(x - max)) along `axis`.
    Softmax {
        /// Axis (negative counts from the end; default -1).
        axis: i64,
    },
    /// `log_softmax(x; axis)`: x - max - log(sum(exp(x - max))) along `axis`.
    LogSoftmax {
        /// Axis (negative counts from the end; default -1).
        axis: i64,
    },
    /// `reshape(x; shape)`: same elements in row-major order; at most one `-1` is inferred.
    Reshape {
        /// Target dims; `-1` once at most.
        shape: Vec<i64>,
    },
    /// `transpose(x; perm)`: output axis `i` is input axis `perm[i]`.
    Transpose {
        /// A permutation of `0..rank`.
        perm: Vec<usize>,
    },
    /// `concat(a, b, ...; axis)`: joins operands along `axis`; other dims must agree.
    Concat {
        /// Axis (negative counts from the end).
        axis: i64,
    },
    /// `slice(x; begin, size)`: the box starting at `begin`; a size of `-1` runs to the end.
    Slice {
        /// Start index per axis.
        begin: Vec<usize>,
        /// Extent per axis; `-1` means to the end.
        size: Vec<i64>,
    },
    /// `pad(x; paddings, constant_value)`: `paddings[i] = [before, after]` cells on axis `i`.
    Pad {
        /// `[before, after]` per axis.
        paddings: Vec<[usize; 2]>,
        /// Value of padded cells (default 0).
        constant_value: Float,
    },
    /// `batch_norm(x, scale, offset, mean, variance)`: inference form,
    /// `(x - mean) * scale / sqrt(variance + epsilon) + offset` along the channel axis.
    BatchNorm {
        /// Added to the variance (default 0.001).
        epsilon: Float,
        /// Which axis is channels.
        data_format: DataFormat,
    },
    /// `assign*(var, value)`: updates the variable; its value is the variable's new value.
    Assign(AssignOp),
    /// `lrn(x)`: `tf.nn.local_response_normalization` over the last axis (channels, NHWC):
    /// `x / (bias + alpha * sum(x[c-r..=c+r]^2)) ^ beta`, the window clipped at the edges.
    Lrn {
        /// Half-width `r` of the channel window (default 5).
        depth_radius: usize,
        /// Added to the weighted sum (default 1).
        bias: Float,
        /// Weight of the sum of squares (default 1).
        alpha: Float,
        /// Exponent (default 0.5).
        beta: Float,
    },
    /// `argmax(x; axis, output_type)`: index of the largest element along `axis`, which is
    /// dropped; the first index wins a tie and a NaN counts as the largest (numpy's rule, like
    /// `maximum`; TensorFlow 2's CPU kernel skips NaNs instead).
    ArgMax {
        /// Axis (negative counts from the end).
        axis: i64,
        /// `i32` or `i64` (default `i64`).
        output_type: DType,
    },
    /// `gather(params, indices; axis)`: `tf.gather` with `batch_dims = 0`; the output shape is
    /// `params.shape[..axis] ++ indices.shape ++ params.shape[axis+1..]`. Indices are i32 or
    /// i64; a negative index counts from the end (as ONNX allows); one outside
    /// `-n..n` is a run-time error, never an out-of-bounds read.
    Gather {
        /// Axis of `params` (negative counts from the end).
        axis: i64,
    },
    /// `cast(x; to)`: converts elements to `to` (`tf.cast`): float to integer truncates toward
    /// zero and saturates (NaN becomes 0, where TensorFlow's x86 kernel gives INT_MIN for NaN
    /// and out-of-range values), to bool is `x != 0`, from bool is 0 or 1.
    Cast {
        /// Target dtype.
        to: DType,
    },
    /// A node made by the fusion passes: an optional main op (conv2d, depthwise_conv2d,
    /// matmul, max_pool or avg_pool on its first operands) followed by an elementwise
    /// expression over the main result and the node's operands, computed in one kernel with
    /// no intermediate stored. See [`FusedOp`]; `.kiln` spells it `fused_<main>` or
    /// `elementwise`.
    Fused(FusedOp),
    /// `broadcast_like(x, like)`: `x` broadcast (numpy rules) to `like`'s shape; only `like`'s
    /// shape is used, never its values. It is `tf.broadcast_to(x, tf.shape(like))` for shapes
    /// with `?` dims: the gradient transformation gives a reduced or broadcast gradient its
    /// operand's shape with it, and seeds `ones_like(y)` as `broadcast_like(1, y)`.
    BroadcastLike,
    /// `equal(a, b)`, `less(a, b)`, ...: see [`CompareOp`]; bool result, numpy broadcasting.
    Compare(CompareOp),
    /// `logical_and(a, b)` / `logical_or(a, b)`: bool operands and result, numpy broadcasting.
    Logical(LogicalOp),
    /// `logical_not(x)`: bool in, bool out.
    LogicalNot,
    /// `select(cond, a, b)`: `a` where `cond` is true, else `b` (`tf.where`, v2): cond is bool,
    /// `a` and `b` have one dtype (any), and all three broadcast together (numpy rules); the
    /// result has `a`'s dtype.
    Select,
    /// `stop_gradient(x)`: `x` unchanged at run time (`tf.stop_gradient`); the gradient
    /// transformation treats it as a cut (no gradient flows through it). It runs on the user's
    /// graph before any pass, so the optimisation passes (`simplify-algebra`) may replace the
    /// node by its operand, and lowering makes it a view of its operand (an identity reshape).
    StopGradient,
    /// `conv2d_backprop_input(w, dy; input_shape, ...)` (`tf.raw_ops.Conv2DBackpropInput`):
    /// the gradient of `conv2d(x, w)` with respect to `x`, given the gradient `dy` of its
    /// output, i.e. the adjoint of conv2d in `x`: `dx[n, iy, ix, g*cin+c] = sum of dy[n, oy,
    /// ox, o] * w[ky, kx, c, o]` over the `(oy, ox, ky, kx)` with `oy*s + ky*d - pad_top = iy`
    /// (likewise for x) and the output channels `o` of group `g`. `input_shape` is x's shape
    /// in `data_format` order (kiln shapes are static, so it is an attribute, not a tensor);
    /// its batch entry may be `-1`, meaning dy's batch (so a gradient of a graph whose batch
    /// is `?` needs no shape at build time). Grouping, strides, dilations and padding (SAME
    /// asymmetric as TensorFlow pads it) follow [`Op::Conv2d`]; dy must have exactly the
    /// shape conv2d gives for `input_shape` and `w`.
    Conv2dBackpropInput {
        /// x's shape in `data_format` order; the batch may be `-1` (dy's batch).
        input_shape: [i64; 4],
        /// The forward convolution's attributes.
        attrs: ConvAttrs,
    },
    /// `conv2d_backprop_filter(x, dy; filter_shape, ...)` (`tf.raw_ops.Conv2DBackpropFilter`):
    /// the gradient of `conv2d(x, w)` with respect to the HWIO `w` of `filter_shape`:
    /// `dw[ky, kx, c, o] = sum over n, oy, ox of x[n, oy*s + ky*d - pad_top, ox*s + kx*d -
    /// pad_left, g*cin + c] * dy[n, oy, ox, o]` (padded cells are zero), `g` being output
    /// channel `o`'s group as in [`Op::Conv2d`]; dy must have conv2d's output shape.
    Conv2dBackpropFilter {
        /// The filter's shape `[kh, kw, cin / groups, cout]`.
        filter_shape: [usize; 4],
        /// The forward convolution's attributes.
        attrs: ConvAttrs,
    },
    /// `max_pool_grad(orig_input, orig_output, grad)` (`tf.raw_ops.MaxPoolGrad`): each
    /// window's `grad` value is added to the position of the window's maximum in
    /// `orig_input`; the first maximum in row-major window order wins a tie (a later cell must
    /// be strictly greater, TensorFlow's rule, so a NaN wins only as a window's first cell)
    /// and padded cells never win. `orig_output` is `max_pool(orig_input)` (its shape is
    /// checked; the positions are found from `orig_input`). The result has orig_input's shape.
    MaxPoolGrad(PoolAttrs),
    /// `avg_pool_grad(grad; orig_input_shape, ...)` (`tf.raw_ops.AvgPoolGrad`): each window's
    /// `grad` value divided by the window's count of unpadded cells (the forward divisor) is
    /// added to each of those cells. `orig_input_shape` is in `data_format` order; its batch
    /// may be `-1`, meaning grad's batch.
    AvgPoolGrad {
        /// The forward input's shape; the batch may be `-1` (grad's batch).
        orig_input_shape: [i64; 4],
        /// The forward pool's attributes.
        attrs: PoolAttrs,
    },
    /// `depthwise_conv2d_backprop_input(w, dy; input_shape, ...)`
    /// (`tf.raw_ops.DepthwiseConv2dNativeBackpropInput`): the gradient of
    /// `depthwise_conv2d(x, w)` with respect to `x`: `dx[n, iy, ix, c]` sums `dy[n, oy, ox,
    /// c * multiplier + m] * w[ky, kx, c, m]` over the taps that read it and every `m`.
    /// `input_shape` is as for [`Op::Conv2dBackpropInput`] (a batch of `-1` is dy's).
    DepthwiseConv2dBackpropInput {
        /// x's shape in `data_format` order; the batch may be `-1` (dy's batch).
        input_shape: [i64; 4],
        /// The forward convolution's attributes.
        attrs: ConvAttrs,
    },
    /// `depthwise_conv2d_backprop_filter(x, dy; filter_shape, ...)`
    /// (`tf.raw_ops.DepthwiseConv2dNativeBackpropFilter`): the gradient of
    /// `depthwise_conv2d(x, w)` with respect to `w` of `filter_shape` `[kh, kw, cin,
    /// multiplier]`: `dw[ky, kx, c, m]` sums `x[n, iy, ix, c] * dy[n, oy, ox, c * multiplier +
    /// m]` over the batch and the output pixels whose tap reads an input cell.
    DepthwiseConv2dBackpropFilter {
        /// The filter's shape `[kh, kw, cin, multiplier]`.
        filter_shape: [usize; 4],
        /// The forward convolution's attributes.
        attrs: ConvAttrs,
    },
    /// `softmax_cross_entropy_with_logits(logits, labels)`: `tf.nn.softmax_cross_entropy_with_logits`
    /// (v2) along the last axis: `-sum(labels * log_softmax(logits))`, computed as
    /// `sum(labels * (lse - logits))` with `lse = max + ln(sum(exp(logits - max)))` so large
    /// logits do not overflow. `labels` has `logits`' shape (rank >= 1, at least one class); the
    /// result drops the last axis (`[batch, classes]` gives `[batch]`). Both operands are
    /// differentiable, as in TensorFlow 2, with TensorFlow's gradients: `softmax(logits) -
    /// labels` for the logits (the derivative when each row of labels sums to 1, as a
    /// distribution does) and `-log_softmax(logits)` for the labels.
    SoftmaxCrossEntropyWithLogits,
    /// `sparse_softmax_cross_entropy_with_logits(logits, labels)`:
    /// `tf.nn.sparse_softmax_cross_entropy_with_logits` along the last axis: `lse - logits[label]`
    /// per row. `labels` is i32 or i64 with `logits`' shape without its last axis. A label
    /// outside `0..classes` gives NaN for that row (TensorFlow's GPU kernel does so; its CPU
    /// kernel raises an error instead), and the gradient of that row is NaN too.
    SparseSoftmaxCrossEntropyWithLogits,
    /// `one_hot(indices; depth, on_value, off_value, axis)`: `tf.one_hot` with an f32 result:
    /// `indices`' shape (i32 or i64) with a new axis of size `depth` at `axis` (`-1`: last),
    /// holding `on_value` where the position equals the index and `off_value` elsewhere. An
    /// index outside `0..depth` (negative ones included) gives a row of `off_value`.
    OneHot {
        /// Size of the new axis.
        depth: usize,
        /// Value at the index (default 1).
        on_value: Float,
        /// Value elsewhere (default 0).
        off_value: Float,
        /// Where the new axis goes in the result, `-1` for last (range `-(r+1)..=r` for
        /// indices of rank `r`).
        axis: i64,
    },
    /// `gather_grad(grad, indices; axis, size)`: the adjoint of `gather` (a scatter-add), the
    /// gradient of gather's params. The result has `grad`'s shape with the axes `axis ..
    /// axis + rank(indices)` (which must equal `indices`' shape) replaced by one axis of
    /// `size`; `out[.., indices[j], ..] += grad[.., j, ..]`, so repeated indices add. `axis`
    /// counts in the result's rank (negative from the end). Indices follow gather: a negative
    /// index counts from the end and one outside `-size..size` is a run-time error.
    GatherGrad {
        /// The gathered axis of the result (params' axis).
        axis: i64,
        /// Params' size along that axis.
        size: usize,
    },
    /// `apply_gradient_descent(var, alpha, delta)`: `var -= alpha * delta`, TensorFlow's
    /// `ResourceApplyGradientDescent`. `var` is a variable (f32), `alpha` an f32 scalar (`f32[]`,
    /// so the learning rate may be a variable or placeholder), `delta` has the variable's type.
    ///
    /// The optimizer updates write several variables from one node and one kernel: operands
    /// `0..k` ([`Op::updated_variables`]) are the variables written, and the node's value holds
    /// their `k` new values one after another (row-major; here `k = 1`, so the value is the
    /// variable's new value, like `assign`). One pass over the elements reads the variables, the
    /// gradient and the scalars and writes every new value, and the run commits them to the
    /// variables' own buffers when it ends, exactly as it commits an `assign`: every kernel
    /// of the run reads start-of-run values, a failed run changes no variable, and a fetched
    /// variable shows its start-of-run value.
    ApplyGradientDescent,
    /// `apply_momentum(var, accum, lr, grad, momentum; use_nesterov)`: TensorFlow's
    /// `ResourceApplyMomentum`: `accum = accum * momentum + grad`, then `var -= lr * accum`, or
    /// with `use_nesterov`, `var -= lr * grad + lr * momentum * accum` (with the new `accum`).
    /// `var` and `accum` are f32 variables of one type, `grad` has it, `lr` and `momentum`
    /// are `f32[]`. Writes two variables (see [`Op::ApplyGradientDescent`]): the value is
    /// `[2, ...dims]`, the new `var` then the new `accum`.
    ApplyMomentum {
        /// Nesterov momentum (default false).
        use_nesterov: bool,
    },
    /// `apply_adam(var, m, v, beta1_power, beta2_power, lr, beta1, beta2, epsilon, grad)`:
    /// TensorFlow's `ResourceApplyAdam`: `lr_t = lr * sqrt(1 - beta2_power) / (1 -
    /// beta1_power)`, `m = beta1 * m + (1 - beta1) * grad`, `v = beta2 * v + (1 - beta2) *
    /// grad^2`, `var -= lr_t * m / (sqrt(v) + epsilon)`. `var`, `m`, `v` are f32 variables of
    /// one type, `grad` has it, the five scalars are `f32[]` (`beta1_power` / `beta2_power`
    /// are not updated here: TF1's optimizer multiplies them once per step, after every
    /// variable's update). Writes three variables (see [`Op::ApplyGradientDescent`]): the value
    /// is `[3, ...dims]`, the new `var`, `m` then `v`.
    ApplyAdam,
    /// `group(x1, x2, ...)`: does nothing but depend on its operands (`tf.group`), so one node
    /// run as a target runs them all (e.g. every optimizer update of a train step). Operands
    /// may have any type; the value is the f32 scalar 0. Lowering gives it no kernel.
    Group,
}

/// How many operands an op takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many.
    Exact(usize),
    /// This many or more.
    AtLeast(usize),
}

impl Arity {
    /// Whether `n` operands are acceptable.
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exact(k) => n == k,
            Arity::AtLeast(k) => n >= k,
        }
    }
}

impl std::fmt::Display for Arity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arity::Exact(k) => write!(f, "{k}"),
            Arity::AtLeast(k) => write!(f, "at least {k}"),
        }
    }
}

/// How an op combines with its neighbours when kernels are formed (TVM's OpPatternKind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FusionKind {
    /// Values known before any kernel runs (inputs, variables, constants).
    Source,
    /// One output element from the same-index input elements.
    Elementwise,
    /// Elementwise with operands broadcast along some axes.
    Broadcast,
    /// Each output element reads one input element at a computed index (movement ops).
    Injective,
    /// Reduces along axes.
    Reduce,
    /// A contraction or window op whose elementwise successors can be fused as an epilogue.
    ComplexEpilogue,
    /// Runs on its own.
    Opaque,
}

impl Op {
    /// The op's keyword in the .kiln format.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input(_) => "input",
            Op::Var(_) => "var",
            Op::Const(_) => "const",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::BiasAdd { .. } => "bias_add",
            Op::MatMul { .. } => "matmul",
            Op::Conv2d(_) => "conv2d",
            Op::DepthwiseConv2d(_) => "depthwise_conv2d",
            Op::MaxPool(_) => "max_pool",
            Op::AvgPool(_) => "avg_pool",
            Op::Reduce { op, .. } => op.name(),
            Op::Softmax { .. } => "softmax",
            Op::LogSoftmax { .. } => "log_softmax",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Concat { .. } => "concat",
            Op::Slice { .. } => "slice",
            Op::Pad { .. } => "pad",
            Op::BatchNorm { .. } => "batch_norm",
            Op::Assign(a) => a.name(),
            Op::Lrn { .. } => "lrn",
            Op::ArgMax { .. } => "argmax",
            Op::Gather { .. } => "gather",
            Op::Cast { .. } => "cast",
            Op::Fused(f) => f.name(),
            Op::BroadcastLike => "broadcast_like",
            Op::Compare(c) => c.name(),
            Op::Logical(l) => l.name(),
            Op::LogicalNot => "logical_not",
            Op::Select => "select",
            Op::StopGradient => "stop_gradient",
            Op::Conv2dBackpropInput { .. } => "conv2d_backprop_input",
            Op::Conv2dBackpropFilter { .. } => "conv2d_backprop_filter",
            Op::MaxPoolGrad(_) => "max_pool_grad",
            Op::AvgPoolGrad { .. } => "avg_pool_grad",
            Op::DepthwiseConv2dBackpropInput { .. } => "depthwise_conv2d_backprop_input",
            Op::DepthwiseConv2dBackpropFilter { .. } => "depthwise_conv2d_backprop_filter",
            Op::SoftmaxCrossEntropyWithLogits => "softmax_cross_entropy_with_logits",
            Op::SparseSoftmaxCrossEntropyWithLogits => "sparse_softmax_cross_entropy_with_logits",
            Op::OneHot { .. } => "one_hot",
            Op::GatherGrad { .. } => "gather_grad",
            Op::ApplyGradientDescent => "apply_gradient_descent",
            Op::ApplyMomentum { .. } => "apply_momentum",
            Op::ApplyAdam => "apply_adam",
            Op::Group => "group",
        }
    }

    /// Number of operands the op takes.
    pub fn arity(&self) -> Arity {
        match self {
            Op::Input(_) | Op::Var(_) | Op::Const(_) => Arity::Exact(0),
            Op::Unary(_)
            | Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::Reduce { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::Lrn { .. }
            | Op::ArgMax { .. }
            | Op::Cast { .. }
            | Op::OneHot { .. } => Arity::Exact(1),
            Op::Binary(_)
            | Op::Gather { .. }
            | Op::BiasAdd { .. }
            | Op::MatMul { .. }
            | Op::Conv2d(_)
            | Op::DepthwiseConv2d(_)
            | Op::Assign(_)
            | Op::BroadcastLike
            | Op::SoftmaxCrossEntropyWithLogits
            | Op::SparseSoftmaxCrossEntropyWithLogits
            | Op::GatherGrad { .. } => Arity::Exact(2),
            Op::Concat { .. } => Arity::AtLeast(1),
            Op::BatchNorm { .. } => Arity::Exact(5),
            Op::Fused(f) => Arity::AtLeast(f.main_arity().max(1)),
            Op::LogicalNot | Op::StopGradient => Arity::Exact(1),
            Op::Compare(_) | Op::Logical(_) => Arity::Exact(2),
            Op::Select => Arity::Exact(3),
            Op::Conv2dBackpropInput { .. } | Op::Conv2dBackpropFilter { .. } => Arity::Exact(2),
            Op::MaxPoolGrad(_) => Arity::Exact(3),
            Op::AvgPoolGrad { .. } => Arity::Exact(1),
            Op::DepthwiseConv2dBackpropInput { .. } | Op::DepthwiseConv2dBackpropFilter { .. } => {
                Arity::Exact(2)
            }
            Op::ApplyGradientDescent => Arity::Exact(3),
            Op::ApplyMomentum { .. } => Arity::Exact(5),
            Op::ApplyAdam => Arity::Exact(10),
            Op::Group => Arity::AtLeast(1),
        }
    }

    /// Whether the op is a source (no operands; value known before kernels run).
    pub fn is_source(&self) -> bool {
        matches!(self, Op::Input(_) | Op::Var(_) | Op::Const(_))
    }

    /// Whether the op can be the main op of a lowered kernel ([`crate::program::Kernel::main`]).
    /// Sources are buffers, elementwise ops become epilogues and fused nodes are split into
    /// their main op and epilogue, so none of those is.
    pub fn is_kernel_main(&self) -> bool {
        // Every other op is one: the backends' exhaustive matches on `Op` then make a new
        // variant decide how it runs.
        !matches!(
            self,
            Op::Input(_)
                | Op::Var(_)
                | Op::Const(_)
                | Op::Unary(_)
                | Op::Binary(_)
                | Op::BiasAdd { .. }
                | Op::Fused(_)
                | Op::BroadcastLike
                | Op::Group
        )
    }

    /// Whether the op has a side effect (and so must not be removed or merged).
    pub fn has_side_effect(&self) -> bool {
        self.updated_variables() > 0
    }

    /// How many leading operands the op writes: each must be a variable, and the node's value
    /// holds their new values one after another (see [`Op::ApplyGradientDescent`]); 0 for an
    /// op without side effect.
    pub fn updated_variables(&self) -> usize {
        match self {
            Op::Assign(_) | Op::ApplyGradientDescent => 1,
            Op::ApplyMomentum { .. } => 2,
            Op::ApplyAdam => 3,
            _ => 0,
        }
    }

    /// The operand names of an optimizer update op (`apply_*`), in order, for messages and
    /// checks: the first [`Op::updated_variables`] are the variables written, the one called
    /// `grad` or `delta` has their type, every other one is an `f32[]` scalar. `None` for any
    /// other op.
    pub fn apply_operand_names(&self) -> Option<&'static [&'static str]> {
        match self {
            Op::ApplyGradientDescent => Some(&["var", "alpha", "delta"]),
            Op::ApplyMomentum { .. } => Some(&["var", "accum", "lr", "grad", "momentum"]),
            Op::ApplyAdam => Some(&[
                "var",
                "m",
                "v",
                "beta1_power",
                "beta2_power",
                "lr",
                "beta1",
                "beta2",
                "epsilon",
                "grad",
            ]),
            _ => None,
        }
    }

    /// How the op fuses with its neighbours.
    pub fn fusion_kind(&self) -> FusionKind {
        match self {
            Op::Input(_) | Op::Var(_) | Op::Const(_) => FusionKind::Source,
            Op::Unary(_) | Op::Cast { .. } => FusionKind::Elementwise,
            Op::Binary(_) | Op::BiasAdd { .. } | Op::BatchNorm { .. } => FusionKind::Broadcast,
            Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::Gather { .. } => FusionKind::Injective,
            Op::Reduce { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Lrn { .. }
            | Op::ArgMax { .. } => FusionKind::Reduce,
            Op::MatMul { .. }
            | Op::Conv2d(_)
            | Op::DepthwiseConv2d(_)
            | Op::MaxPool(_)
            | Op::AvgPool(_) => FusionKind::ComplexEpilogue,
            // Lowered to an elementwise kernel of its own (fusion has no expression node for it).
            Op::Assign(_) | Op::BroadcastLike => FusionKind::Opaque,
            Op::Fused(f) if f.main().is_some() => FusionKind::ComplexEpilogue,
            Op::Fused(_) => FusionKind::Broadcast,
            // Bool results (or a bool operand): the fusion passes keep them out of the f32
            // expressions of fused nodes (see `passes/fusion.rs`).
            Op::LogicalNot | Op::StopGradient => FusionKind::Elementwise,
            Op::Compare(_) | Op::Logical(_) | Op::Select => FusionKind::Broadcast,
            // Scatter-adds: no fused_ form, each runs as its own kernel.
            Op::Conv2dBackpropInput { .. }
            | Op::Conv2dBackpropFilter { .. }
            | Op::MaxPoolGrad(_)
            | Op::AvgPoolGrad { .. }
            | Op::DepthwiseConv2dBackpropInput { .. }
            | Op::DepthwiseConv2dBackpropFilter { .. } => FusionKind::Opaque,
            // One host or device kernel each, with no fused epilogue.
            Op::SoftmaxCrossEntropyWithLogits
            | Op::SparseSoftmaxCrossEntropyWithLogits
            | Op::OneHot { .. }
            | Op::GatherGrad { .. } => FusionKind::Opaque,
            Op::ApplyGradientDescent | Op::ApplyMomentum { .. } | Op::ApplyAdam | Op::Group => {
                FusionKind::Opaque
            }
        }
    }

    /// Whether the op's meaning depends on the data layout (NHWC/NCHW).
    pub fn is_layout_sensitive(&self) -> bool {
        matches!(
            self,
            Op::Conv2d(_)
                | Op::DepthwiseConv2d(_)
                | Op::MaxPool(_)
                | Op::AvgPool(_)
                | Op::BiasAdd { .. }
                | Op::BatchNorm { .. }
                | Op::Lrn { .. }
                | Op::Conv2dBackpropInput { .. }
                | Op::Conv2dBackpropFilter { .. }
                | Op::MaxPoolGrad(_)
                | Op::AvgPoolGrad { .. }
                | Op::DepthwiseConv2dBackpropInput { .. }
                | Op::DepthwiseConv2dBackpropFilter { .. }
        ) || matches!(self, Op::Fused(f) if f.main().is_some_and(Op::is_layout_sensitive))
    }
}
