//! kiln-ir: the graph and everything that transforms it.
//!
//! Data flows one way: a [`Graph`] is built (by the `kiln` builder or the .kiln parser),
//! checked by [`infer`], optimised by passes, lowered to a backend-neutral program and handed
//! to a [`backend::Backend`]. The reference evaluator in [`eval`] defines what every op means
//! and is the oracle all backends are tested against. This crate has no codegen dependencies.

// Safe Rust only: unsafe code lives in the backends, in small commented places.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod compare;
pub mod cost;
pub mod dot;
pub mod dtype;
pub mod error;
pub mod eval;
pub mod file_access;
pub mod fused;
pub mod grad;
pub mod graph;
pub mod image;
pub mod import_error;
pub mod infer;
pub mod lower;
pub mod npy;
pub mod op;
pub mod passes;
pub mod program;
pub mod reference;
pub mod safetensors_io;
pub mod schema;
pub mod shape;
pub mod tensor;
pub mod text;

pub use dtype::DType;
pub use error::{Error, Result};
pub use graph::{Graph, Node, NodeId};
pub use op::{
    AssignOp, BinaryOp, ConvAttrs, DataFormat, Float, Initializer, Op, Padding, PoolAttrs,
    ReduceOp, Source, UnaryOp,
};
pub use shape::{Dim, Dims, Shape, TensorType};
pub use tensor::{Data, Tensor};
