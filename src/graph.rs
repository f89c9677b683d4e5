//! The builder API: a method per op. Every method checks its operands when the op is added and
//! returns an error naming the op, the operands' shapes and what was expected.
//!
//! Nodes made by the builder are named after their op (`conv2d`, `conv2d_1`, ...) unless the
//! caller names them with [`Graph::named`] or renames them later with [`Graph::rename`].

use kiln_ir::file_access::FileAccess;
use kiln_ir::op::Source;
use kiln_ir::op::{CompareOp, LogicalOp};
use kiln_ir::{
    AssignOp, BinaryOp, ConvAttrs, DType, DataFormat, Float, Initializer, NodeId, Op, PoolAttrs,
    ReduceOp, Result, Shape, Tensor, TensorType, UnaryOp,
};
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

/// A computation graph under construction. Derefs to [`kiln_ir::Graph`] for inspection.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub(crate) ir: kiln_ir::Graph,
    next_name: Option<String>,
}

impl Deref for Graph {
    type Target = kiln_ir::Graph;
    fn deref(&self) -> &kiln_ir::Graph {
        &self.ir
    }
}

impl From<kiln_ir::Graph> for Graph {
    fn from(ir: kiln_ir::Graph) -> Graph {
        Graph {
            ir,
            next_name: None,
        }
    }
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Loads a .kiln file. Its `npy`/`safetensors` paths resolve relative to its folder and
    /// must name regular files inside it (after resolving symlinks).
    pub fn load(path: impl AsRef<Path>) -> Result<Graph> {
        kiln_ir::text::parse_file(path.as_ref()).map(Graph::from)
    }

    /// [`Graph::load`] with an explicit [`FileAccess`]: `FileAccess::Unrestricted` lets a
    /// trusted graph reference files outside its folder.
    pub fn load_with(path: impl AsRef<Path>, access: FileAccess) -> Result<Graph> {
        kiln_ir::text::parse_file_with(path.as_ref(), access).map(Graph::from)
    }

    /// Parses .kiln text; npy paths resolve relative to the current directory and must stay
    /// inside it.
    ///
    /// ```
    /// use kiln::{Graph, Session, Tensor};
    ///
    /// let g = Graph::parse("kiln 1\ninput %x : f32[?,2]\n%y = relu(%x)\noutput %y\n")?;
    /// let sess = Session::new(&g)?;
    /// let x = Tensor::from_vec(&[1, 2], vec![-1.0, 3.0])?;
    /// let y = sess.run_named(&[("%x", &x)], &["y"])?;
    /// assert_eq!(y[0].f32s()?, &[0.0, 3.0]);
    /// // Mistakes are errors at line:column, with what was expected.
    /// let err = Graph::parse("kiln 1\ninput %x : f32[2]\n%y = rleu(%x)\n").unwrap_err();
    /// assert_eq!(err.to_string(), "3:6: unknown op `rleu`; did you mean relu?");
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn parse(text: &str) -> Result<Graph> {
        kiln_ir::text::parse(text, None).map(Graph::from)
    }

    /// [`Graph::parse`] with file references resolved against `base_dir` under `access`.
    pub fn parse_with(text: &str, base_dir: Option<&Path>, access: FileAccess) -> Result<Graph> {
        kiln_ir::text::parse_with(text, base_dir, access).map(Graph::from)
    }

    /// The graph in .kiln text, with inferred types as comments; it parses back to the same
    /// graph.
    ///
    /// ```
    /// use kiln::{Graph, Shape};
    ///
    /// let mut g = Graph::new();
    /// let x = g.input("x", Shape::of(&[None, Some(2)]))?;
    /// let y = g.relu(x)?;
    /// g.output(y);
    /// let text = g.to_text();
    /// assert!(text.contains("input %x : f32[?,2]"), "{text}");
    /// assert_eq!(Graph::parse(&text)?.to_text(), text);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn to_text(&self) -> String {
        kiln_ir::text::print(&self.ir)
    }

    /// Writes the graph as a .kiln file. Constants and variables whose initial value is a
    /// literal of more than 16 elements (a `Tensor` given to [`Graph::var`], say) are written
    /// to a safetensors file beside it (`model.kiln` gives `model.safetensors`) rather than
    /// inline; [`Session::save_graph`](crate::Session::save_graph) saves current values.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::saving::save_with_values(&self.ir, path.as_ref(), None)
    }

    /// Writes the .kiln text alone: initialisers that reference files must have them already.
    pub(crate) fn write_text(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_text()).map_err(|e| kiln_ir::Error::io(path, e))
    }

    /// The graph in GraphViz DOT.
    pub fn to_dot(&self) -> String {
        kiln_ir::dot::to_dot(&self.ir)
    }

    /// The underlying IR graph.
    pub fn ir(&self) -> &kiln_ir::Graph {
        &self.ir
    }

    /// Consumes the builder and returns the IR graph.
    pub fn into_ir(self) -> kiln_ir::Graph {
        self.ir
    }

    /// The names of the graph's declared outputs (without `%`).
    pub fn output_names(&self) -> Vec<String> {
        self.ir
            .outputs()
            .iter()
            .map(|&o| self.ir.node(o).name.clone())
            .collect()
    }

    /// Declares `id` an output of the graph (what `kiln run` writes).
    pub fn output(&mut self, id: NodeId) {
        self.ir.add_output(id);
    }

    /// Gives the next node added this name instead of a generated one:
    /// `let c = g.named("conv1").conv2d(x, w, attrs)?;`
    pub fn named(&mut self, name: &str) -> &mut Graph {
        self.next_name = Some(name.to_string());
        self
    }

    /// Renames a node.
    pub fn rename(&mut self, id: NodeId, name: &str) -> Result<()> {
        self.ir.rename(id, name)
    }

    /// Adds any op with the given operands; the name comes from [`Graph::named`] or the op.
    pub fn op(&mut self, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        let name = match self.next_name.take() {
            Some(name) => name,
            None => self.ir.unique_name(op.name()),
        };
        self.ir.add(name, op, inputs)
    }

    /// An f32 placeholder, fed at run time; `None` dims are unknown until then.
    pub fn input(&mut self, name: &str, shape: Shape) -> Result<NodeId> {
        self.input_typed(name, DType::F32, shape)
    }

    /// A placeholder of any dtype.
    pub fn input_typed(&mut self, name: &str, dtype: DType, shape: Shape) -> Result<NodeId> {
        self.ir
            .add(name, Op::Input(TensorType::new(dtype, shape)), &[])
    }

    /// A variable initialised with `value`; it lives in the session and assigns update it.
    pub fn var(&mut self, name: &str, value: Tensor) -> Result<NodeId> {
        self.ir.add(name, Op::Var(literal_source(value)), &[])
    }

    /// A variable with a declared type and an initialiser (e.g. `normal(0, 1, seed)`).
    pub fn var_init(&mut self, name: &str, ty: TensorType, init: Initializer) -> Result<NodeId> {
        self.ir.add(name, Op::Var(Source { ty, init }), &[])
    }

    /// A constant.
    pub fn constant(&mut self, name: &str, value: Tensor) -> Result<NodeId> {
        self.ir.add(name, Op::Const(literal_source(value)), &[])
    }

    /// An f32 scalar constant with a generated name.
    pub fn scalar(&mut self, value: f32) -> Result<NodeId> {
        self.op(Op::Const(literal_source(Tensor::scalar(value))), &[])
    }

    fn unary(&mut self, op: UnaryOp, x: NodeId) -> Result<NodeId> {
        self.op(Op::Unary(op), &[x])
    }

    fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.op(Op::Binary(op), &[a, b])
    }

    /// -x
    pub fn neg(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Neg, x)
    }
    /// |x|
    pub fn abs(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Abs, x)
    }
    /// max(x, 0)
    pub fn relu(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Relu, x)
    }
    /// min(max(x, 0), 6)
    pub fn relu6(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Relu6, x)
    }
    /// x if x >= 0 else alpha * x
    pub fn leaky_relu(&mut self, x: NodeId, alpha: f32) -> Result<NodeId> {
        self.unary(
            UnaryOp::LeakyRelu {
                alpha: Float(alpha),
            },
            x,
        )
    }
    /// 1 / (1 + e^-x)
    pub fn sigmoid(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Sigmoid, x)
    }
    /// tanh(x)
    pub fn tanh(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Tanh, x)
    }
    /// e^x
    pub fn exp(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Exp, x)
    }
    /// ln(x)
    pub fn log(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Log, x)
    }
    /// sqrt(x)
    pub fn sqrt(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Sqrt, x)
    }
    /// 1 / sqrt(x)
    pub fn rsqrt(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Rsqrt, x)
    }
    /// x * x
    pub fn square(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Square, x)
    }

    /// a + b (broadcasting)
    pub fn add(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Add, a, b)
    }
    /// a - b (broadcasting)
    pub fn sub(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Sub, a, b)
    }
    /// a * b (broadcasting)
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Mul, a, b)
    }
    /// a / b (broadcasting)
    pub fn div(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Div, a, b)
    }
    /// max(a, b) (broadcasting)
    pub fn maximum(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Maximum, a, b)
    }
    /// min(a, b) (broadcasting)
    pub fn minimum(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Minimum, a, b)
    }
    /// a ^ b (broadcasting)
    pub fn pow(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Pow, a, b)
    }

    /// Adds the rank-1 `b` along the channel axis of NHWC `x`.
    pub fn bias_add(&mut self, x: NodeId, b: NodeId) -> Result<NodeId> {
        self.op(
            Op::BiasAdd {
                data_format: DataFormat::Nhwc,
            },
            &[x, b],
        )
    }

    /// `a x b`, rank 2 or rank-3 batched.
    pub fn matmul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.matmul_t(a, b, false, false)
    }

    /// `a x b` with either operand's last two axes transposed.
    pub fn matmul_t(&mut self, a: NodeId, b: NodeId, ta: bool, tb: bool) -> Result<NodeId> {
        self.op(
            Op::MatMul {
                transpose_a: ta,
                transpose_b: tb,
            },
            &[a, b],
        )
    }

    /// 2-D convolution of `x` (NHWC or NCHW) with HWIO filter `w`.
    pub fn conv2d(&mut self, x: NodeId, w: NodeId, attrs: ConvAttrs) -> Result<NodeId> {
        self.op(Op::Conv2d(attrs), &[x, w])
    }

    /// Depthwise 2-D convolution; `w` is `[kh, kw, cin, multiplier]`.
    pub fn depthwise_conv2d(&mut self, x: NodeId, w: NodeId, attrs: ConvAttrs) -> Result<NodeId> {
        self.op(Op::DepthwiseConv2d(attrs), &[x, w])
    }

    /// Max pooling.
    pub fn max_pool(&mut self, x: NodeId, attrs: PoolAttrs) -> Result<NodeId> {
        self.op(Op::MaxPool(attrs), &[x])
    }

    /// Average pooling (padded cells never count).
    pub fn avg_pool(&mut self, x: NodeId, attrs: PoolAttrs) -> Result<NodeId> {
        self.op(Op::AvgPool(attrs), &[x])
    }

    /// A reduction over `axes` (empty slice: every axis).
    pub fn reduce(
        &mut self,
        op: ReduceOp,
        x: NodeId,
        axes: &[i64],
        keepdims: bool,
    ) -> Result<NodeId> {
        let axes = if axes.is_empty() {
            None
        } else {
            Some(axes.to_vec())
        };
        self.op(Op::Reduce { op, axes, keepdims }, &[x])
    }
    /// Sum over `axes` (empty: all).
    pub fn reduce_sum(&mut self, x: NodeId, axes: &[i64], keepdims: bool) -> Result<NodeId> {
        self.reduce(ReduceOp::Sum, x, axes, keepdims)
    }
    /// Mean over `axes` (empty: all).
    pub fn reduce_mean(&mut self, x: NodeId, axes: &[i64], keepdims: bool) -> Result<NodeId> {
        self.reduce(ReduceOp::Mean, x, axes, keepdims)
    }
    /// Maximum over `axes` (empty: all).
    pub fn reduce_max(&mut self, x: NodeId, axes: &[i64], keepdims: bool) -> Result<NodeId> {
        self.reduce(ReduceOp::Max, x, axes, keepdims)
    }
    /// Minimum over `axes` (empty: all).
    pub fn reduce_min(&mut self, x: NodeId, axes: &[i64], keepdims: bool) -> Result<NodeId> {
        self.reduce(ReduceOp::Min, x, axes, keepdims)
    }

    /// Softmax along `axis`.
    pub fn softmax(&mut self, x: NodeId, axis: i64) -> Result<NodeId> {
        self.op(Op::Softmax { axis }, &[x])
    }
    /// Log-softmax along `axis`.
    pub fn log_softmax(&mut self, x: NodeId, axis: i64) -> Result<NodeId> {
        self.op(Op::LogSoftmax { axis }, &[x])
    }

    /// Same elements, new dims (one `-1` may be inferred).
    pub fn reshape(&mut self, x: NodeId, shape: &[i64]) -> Result<NodeId> {
        self.op(
            Op::Reshape {
                shape: shape.to_vec(),
            },
            &[x],
        )
    }
    /// Permutes axes: output axis `i` is input axis `perm[i]`.
    pub fn transpose(&mut self, x: NodeId, perm: &[usize]) -> Result<NodeId> {
        self.op(
            Op::Transpose {
                perm: perm.to_vec(),
            },
            &[x],
        )
    }
    /// Joins `xs` along `axis`.
    pub fn concat(&mut self, xs: &[NodeId], axis: i64) -> Result<NodeId> {
        self.op(Op::Concat { axis }, xs)
    }
    /// The box at `begin` of extent `size` (`-1`: to the end).
    pub fn slice(&mut self, x: NodeId, begin: &[usize], size: &[i64]) -> Result<NodeId> {
        self.op(
            Op::Slice {
                begin: begin.to_vec(),
                size: size.to_vec(),
            },
            &[x],
        )
    }
    /// Pads each axis with `[before, after]` cells of `value`.
    pub fn pad(&mut self, x: NodeId, paddings: &[[usize; 2]], value: f32) -> Result<NodeId> {
        let op = Op::Pad {
            paddings: paddings.to_vec(),
            constant_value: Float(value),
        };
        self.op(op, &[x])
    }

    /// Inference batch normalisation over the channel axis of NHWC `x`.
    pub fn batch_norm(&mut self, x: NodeId, params: [NodeId; 4], epsilon: f32) -> Result<NodeId> {
        let [scale, offset, mean, variance] = params;
        let op = Op::BatchNorm {
            epsilon: Float(epsilon),
            data_format: DataFormat::Nhwc,
        };
        self.op(op, &[x, scale, offset, mean, variance])
    }

    /// Local response normalisation over the channels of NHWC `x` (`tf.nn.lrn`):
    /// `x / (bias + alpha * sum(x[c-r..=c+r]^2)) ^ beta` with `r = depth_radius`, the window
    /// clipped at the edges. TensorFlow's defaults are `(5, 1.0, 1.0, 0.5)`.
    pub fn lrn(
        &mut self,
        x: NodeId,
        depth_radius: usize,
        bias: f32,
        alpha: f32,
        beta: f32,
    ) -> Result<NodeId> {
        let op = Op::Lrn {
            depth_radius,
            bias: Float(bias),
            alpha: Float(alpha),
            beta: Float(beta),
        };
        self.op(op, &[x])
    }

    /// Index of the largest element along `axis` (negative counts from the end), which is
    /// dropped; `output_type` is `DType::I32` or `DType::I64`. The first index wins a tie and
    /// NaN counts as the largest.
    pub fn argmax(&mut self, x: NodeId, axis: i64, output_type: DType) -> Result<NodeId> {
        self.op(Op::ArgMax { axis, output_type }, &[x])
    }

    /// `tf.gather(params, indices, axis)`: the slices of `params` along `axis` picked by the
    /// i32 or i64 `indices`; the result's dims are `params[..axis] ++ indices ++
    /// params[axis+1..]`. A negative index counts from the end; one out of range makes the run
    /// fail with an error naming it.
    pub fn gather(&mut self, params: NodeId, indices: NodeId, axis: i64) -> Result<NodeId> {
        self.op(Op::Gather { axis }, &[params, indices])
    }

    /// Converts `x` to dtype `to` (`tf.cast`): float to integer truncates toward zero and
    /// saturates (NaN becomes 0); to bool is `x != 0`; bool becomes 0 or 1.
    pub fn cast(&mut self, x: NodeId, to: DType) -> Result<NodeId> {
        self.op(Op::Cast { to }, &[x])
    }

    /// var := value (run it as a session target).
    pub fn assign(&mut self, var: NodeId, value: NodeId) -> Result<NodeId> {
        self.op(Op::Assign(AssignOp::Assign), &[var, value])
    }
    /// var := var + value
    pub fn assign_add(&mut self, var: NodeId, value: NodeId) -> Result<NodeId> {
        self.op(Op::Assign(AssignOp::AssignAdd), &[var, value])
    }
    /// var := var - value
    pub fn assign_sub(&mut self, var: NodeId, value: NodeId) -> Result<NodeId> {
        self.op(Op::Assign(AssignOp::AssignSub), &[var, value])
    }

    fn compare(&mut self, op: CompareOp, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.op(Op::Compare(op), &[a, b])
    }
    /// a == b (bool; operands of one dtype, broadcasting; NaN compares false)
    pub fn equal(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.compare(CompareOp::Equal, a, b)
    }
    /// a != b (bool; operands of one dtype, broadcasting; NaN compares true)
    pub fn not_equal(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.compare(CompareOp::NotEqual, a, b)
    }
    /// a < b (bool; f32, i32 or i64 operands of one dtype, broadcasting; NaN compares false)
    pub fn less(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.compare(CompareOp::Less, a, b)
    }
    /// a <= b (bool; f32, i32 or i64 operands of one dtype, broadcasting)
    pub fn less_equal(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.compare(CompareOp::LessEqual, a, b)
    }
    /// a > b (bool; f32, i32 or i64 operands of one dtype, broadcasting)
    pub fn greater(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.compare(CompareOp::Greater, a, b)
    }
    /// a >= b (bool; f32, i32 or i64 operands of one dtype, broadcasting)
    pub fn greater_equal(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.compare(CompareOp::GreaterEqual, a, b)
    }
    /// a && b (bool operands, broadcasting)
    pub fn logical_and(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.op(Op::Logical(LogicalOp::And), &[a, b])
    }
    /// a || b (bool operands, broadcasting)
    pub fn logical_or(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.op(Op::Logical(LogicalOp::Or), &[a, b])
    }
    /// !x (bool)
    pub fn logical_not(&mut self, x: NodeId) -> Result<NodeId> {
        self.op(Op::LogicalNot, &[x])
    }
    /// `tf.where(cond, a, b)`: `a` where the bool `cond` is true, else `b`; `a` and `b` have
    /// one dtype, and all three broadcast together.
    pub fn select(&mut self, cond: NodeId, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.op(Op::Select, &[cond, a, b])
    }
    /// -1, 0 or +1 by the sign of x (NaN stays NaN)
    pub fn sign(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Sign, x)
    }
    /// `x` unchanged, but no gradient flows through it (`tf.stop_gradient`).
    pub fn stop_gradient(&mut self, x: NodeId) -> Result<NodeId> {
        self.op(Op::StopGradient, &[x])
    }
    /// The gradient of `conv2d(x, w, attrs)` with respect to `x`, from the gradient `dy` of
    /// its output (`tf.raw_ops.Conv2DBackpropInput`). `input_shape` is x's shape in
    /// `attrs.data_format` order; a batch of `-1` takes dy's batch (for a `?` batch).
    pub fn conv2d_backprop_input(
        &mut self,
        w: NodeId,
        dy: NodeId,
        input_shape: [i64; 4],
        attrs: ConvAttrs,
    ) -> Result<NodeId> {
        self.op(Op::Conv2dBackpropInput { input_shape, attrs }, &[w, dy])
    }

    /// The gradient of `conv2d(x, w, attrs)` with respect to the HWIO filter `w` of
    /// `filter_shape`, from the gradient `dy` of its output (`tf.raw_ops.Conv2DBackpropFilter`).
    pub fn conv2d_backprop_filter(
        &mut self,
        x: NodeId,
        dy: NodeId,
        filter_shape: [usize; 4],
        attrs: ConvAttrs,
    ) -> Result<NodeId> {
        self.op(
            Op::Conv2dBackpropFilter {
                filter_shape,
                attrs,
            },
            &[x, dy],
        )
    }

    /// The gradient of `max_pool(orig_input, attrs)` (whose value is `orig_output`) with
    /// respect to `orig_input`, from `grad` (`tf.raw_ops.MaxPoolGrad`).
    pub fn max_pool_grad(
        &mut self,
        orig_input: NodeId,
        orig_output: NodeId,
        grad: NodeId,
        attrs: PoolAttrs,
    ) -> Result<NodeId> {
        self.op(Op::MaxPoolGrad(attrs), &[orig_input, orig_output, grad])
    }

    /// The gradient of `avg_pool(x, attrs)` with respect to `x` of `orig_input_shape` (in
    /// `attrs.data_format` order; a batch of `-1` takes grad's batch), from `grad`
    /// (`tf.raw_ops.AvgPoolGrad`).
    pub fn avg_pool_grad(
        &mut self,
        grad: NodeId,
        orig_input_shape: [i64; 4],
        attrs: PoolAttrs,
    ) -> Result<NodeId> {
        self.op(
            Op::AvgPoolGrad {
                orig_input_shape,
                attrs,
            },
            &[grad],
        )
    }

    /// The gradient of `depthwise_conv2d(x, w, attrs)` with respect to `x`, from `dy`
    /// (`tf.raw_ops.DepthwiseConv2dNativeBackpropInput`); `input_shape` as for
    /// [`Graph::conv2d_backprop_input`] (a batch of `-1` takes dy's).
    pub fn depthwise_conv2d_backprop_input(
        &mut self,
        w: NodeId,
        dy: NodeId,
        input_shape: [i64; 4],
        attrs: ConvAttrs,
    ) -> Result<NodeId> {
        self.op(
            Op::DepthwiseConv2dBackpropInput { input_shape, attrs },
            &[w, dy],
        )
    }

    /// The gradient of `depthwise_conv2d(x, w, attrs)` with respect to the filter `w` of
    /// `filter_shape` `[kh, kw, cin, multiplier]`, from `dy`
    /// (`tf.raw_ops.DepthwiseConv2dNativeBackpropFilter`).
    pub fn depthwise_conv2d_backprop_filter(
        &mut self,
        x: NodeId,
        dy: NodeId,
        filter_shape: [usize; 4],
        attrs: ConvAttrs,
    ) -> Result<NodeId> {
        self.op(
            Op::DepthwiseConv2dBackpropFilter {
                filter_shape,
                attrs,
            },
            &[x, dy],
        )
    }
    /// `tf.nn.softmax_cross_entropy_with_logits` (v2) along the last axis: per row,
    /// `-sum(labels * log_softmax(logits))`, computed stably; `labels` has `logits`' shape
    /// (`[batch, classes]` gives `[batch]`). Both operands are differentiable.
    pub fn softmax_cross_entropy_with_logits(
        &mut self,
        logits: NodeId,
        labels: NodeId,
    ) -> Result<NodeId> {
        self.op(Op::SoftmaxCrossEntropyWithLogits, &[logits, labels])
    }

    /// `tf.nn.sparse_softmax_cross_entropy_with_logits`: `labels` are i32 or i64 class indices
    /// of `logits`' shape without its last axis; a label outside `0..classes` gives NaN for
    /// its row (loss and gradient).
    pub fn sparse_softmax_cross_entropy_with_logits(
        &mut self,
        logits: NodeId,
        labels: NodeId,
    ) -> Result<NodeId> {
        self.op(Op::SparseSoftmaxCrossEntropyWithLogits, &[logits, labels])
    }

    /// `tf.one_hot(indices, depth, on_value, off_value, axis)` with an f32 result: a new axis
    /// of `depth` at `axis` (`-1`: last); an index outside `0..depth` gives a row of `off_value`.
    pub fn one_hot(
        &mut self,
        indices: NodeId,
        depth: usize,
        on_value: f32,
        off_value: f32,
        axis: i64,
    ) -> Result<NodeId> {
        let op = Op::OneHot {
            depth,
            on_value: Float(on_value),
            off_value: Float(off_value),
            axis,
        };
        self.op(op, &[indices])
    }

    /// The adjoint of [`Graph::gather`] (a scatter-add): `grad`, shaped like a gather's
    /// result, summed into a params-shaped tensor with `size` elements along `axis`; repeated
    /// indices add. It is what the gradient of gather's params is made of.
    pub fn gather_grad(
        &mut self,
        grad: NodeId,
        indices: NodeId,
        axis: i64,
        size: usize,
    ) -> Result<NodeId> {
        self.op(Op::GatherGrad { axis, size }, &[grad, indices])
    }
    /// `var -= alpha * delta` (TensorFlow's `ApplyGradientDescent`; run it as a session
    /// target): `alpha` is an f32 scalar node, `delta` has the variable's type.
    pub fn apply_gradient_descent(
        &mut self,
        var: NodeId,
        alpha: NodeId,
        delta: NodeId,
    ) -> Result<NodeId> {
        self.op(Op::ApplyGradientDescent, &[var, alpha, delta])
    }

    /// `accum = accum * momentum + grad; var -= lr * accum` (or Nesterov's `var -= lr * grad +
    /// lr * momentum * accum`), TensorFlow's `ApplyMomentum`; both variables are updated when
    /// the node runs as a target. `lr` and `momentum` are f32 scalar nodes.
    pub fn apply_momentum(
        &mut self,
        var: NodeId,
        accum: NodeId,
        lr: NodeId,
        grad: NodeId,
        momentum: NodeId,
        use_nesterov: bool,
    ) -> Result<NodeId> {
        self.op(
            Op::ApplyMomentum { use_nesterov },
            &[var, accum, lr, grad, momentum],
        )
    }

    /// TensorFlow's `ApplyAdam`: updates `var` and its slots `m` and `v` (see
    /// [`Op::ApplyAdam`]); the scalars are f32 scalar nodes, `beta1_power` / `beta2_power` are
    /// read, not updated.
    // The operands are TensorFlow's, in its order; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_adam(
        &mut self,
        var: NodeId,
        m: NodeId,
        v: NodeId,
        beta1_power: NodeId,
        beta2_power: NodeId,
        lr: NodeId,
        beta1: NodeId,
        beta2: NodeId,
        epsilon: NodeId,
        grad: NodeId,
    ) -> Result<NodeId> {
        self.op(
            Op::ApplyAdam,
            &[
                var,
                m,
                v,
                beta1_power,
                beta2_power,
                lr,
                beta1,
                beta2,
                epsilon,
                grad,
            ],
        )
    }

    /// `tf.group`: one node that does nothing but depend on `deps` (at least one), so running
    /// it as a target runs them all. Its value is the f32 scalar 0.
    pub fn group(&mut self, deps: &[NodeId]) -> Result<NodeId> {
        self.op(Op::Group, deps)
    }
}

fn literal_source(value: Tensor) -> Source {
    Source {
        ty: value.ty(),
        init: Initializer::Literal(Arc::new(value)),
    }
}
