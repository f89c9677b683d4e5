//! kiln: a lazy computation-graph compiler — TensorFlow-1-style graph mode for Rust.
//!
//! Build a symbolic [`Graph`] of placeholders, variables, constants and ops; nothing runs until
//! a [`Session`] is asked for outputs with a feed dict. The session prunes the graph to what the
//! fetches need, fixes the placeholders' shapes from the feeds, compiles for its backend, caches
//! the compiled code per fetch set and feed shapes, and runs it.
//!
//! ```
//! use kiln::{ConvAttrs, Graph, Session, Shape, Tensor};
//!
//! let mut g = Graph::new();
//! let image = g.input("image", Shape::of(&[None, Some(8), Some(8), Some(1)]))?;
//! let kernel = g.var("kernel", Tensor::normal(&[3, 3, 1, 1], 0.0, 1.0, 42))?;
//! let conv = g.conv2d(image, kernel, ConvAttrs::same())?;
//! let y = g.relu(conv)?;
//! let sess = Session::new(&g)?;
//! let out = sess.run(&[(image, &Tensor::ones(&[2, 8, 8, 1]))], &[y])?;
//! assert_eq!(out[0].dims(), &[2, 8, 8, 1]);
//! # Ok::<(), kiln::Error>(())
//! ```

// Safe Rust only: unsafe code lives in the backends, in small commented places.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend_kind;
pub mod checkpoint;
mod dataset;
mod gradients;
mod graph;
mod images_apart;
mod layers;
pub mod onnx;
mod optimize;
pub mod optimizer;
mod saving;
mod session;
pub mod trace;
pub mod view;

pub use backend_kind::BackendKind;
pub use dataset::Dataset;
pub use graph::Graph;
pub use kiln_ir::backend::{CompileTimes, ExecutableInfo, KernelSpan, KernelTime};
pub use kiln_ir::file_access::FileAccess;
pub use kiln_ir::grad::{GradientOptions, Unconnected};
pub use kiln_ir::{
    AssignOp, BinaryOp, ConvAttrs, DType, Data, DataFormat, Dim, Error, Float, Initializer, NodeId,
    Op, Padding, PoolAttrs, ReduceOp, Result, Shape, Tensor, TensorType, UnaryOp,
};
pub use layers::BatchNormTraining;
pub use optimize::{OptimizeOptions, optimize_graph};
pub use optimizer::{AdamOptimizer, GradientDescentOptimizer, MomentumOptimizer, Optimizer};
pub use session::{CompileStats, Session, SessionOptions};

/// Reading and writing tensors as .npy files.
pub mod npy {
    pub use kiln_ir::npy::{NpyRead, read, read_from, write, write_to};
}

/// The intermediate representation, for tools that work on graphs directly.
pub use kiln_ir as ir;
