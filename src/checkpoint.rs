//! Saving and restoring a session's variables as a safetensors file.
//!
//! One tensor per variable, keyed by the variable's name. Restoring checks every variable the
//! graph has before changing any, so a bad checkpoint leaves the session as it was.

use crate::Session;
use kiln_ir::shape::fmt_dims;
use kiln_ir::{DType, Data, Error, Result, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::path::Path;

/// Writes every variable of `session` to `path`.
pub fn save(session: &Session, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let vars = session.variables();
    let bytes: Vec<Vec<u8>> = vars.iter().map(|(_, t)| to_le_bytes(t)).collect();
    let views = vars
        .iter()
        .zip(&bytes)
        .map(|((name, t), b)| {
            let view = TensorView::new(dtype_to_st(t.dtype()), t.dims().to_vec(), b)
                .map_err(|e| Error::io(path, e))?;
            Ok((name.to_string(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, None, path).map_err(|e| Error::io(path, e))
}

/// Reads `path` and sets every variable of `session` from it. Every variable must be present
/// with its exact dtype and shape; tensors the graph does not use are ignored.
pub fn restore(session: &mut Session, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let buffer = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = SafeTensors::deserialize(&buffer)
        .map_err(|e| Error::io(path, format!("not a valid safetensors file: {e}")))?;
    let mut values = Vec::new();
    for (name, current) in session.variables() {
        let view = file.tensor(name).map_err(|_| {
            Error::io(
                path,
                format!("checkpoint has no tensor for variable %{name}"),
            )
        })?;
        let value = from_view(&view).map_err(|m| Error::io(path, format!("tensor {name}: {m}")))?;
        if value.ty() != current.ty() {
            return Err(Error::io(
                path,
                format!(
                    "tensor {name} is {}, variable %{name} is {}",
                    value.ty(),
                    current.ty()
                ),
            ));
        }
        values.push((session.graph().lookup(name)?, value));
    }
    for (id, value) in values {
        session.set_variable(id, value)?;
    }
    Ok(())
}

fn dtype_to_st(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::Bool => Dtype::BOOL,
    }
}

fn to_le_bytes(t: &Tensor) -> Vec<u8> {
    match t.data() {
        Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::Bool(v) => v.iter().map(|&x| x as u8).collect(),
    }
}

fn from_view(view: &TensorView<'_>) -> std::result::Result<Tensor, String> {
    let b = view.data();
    let data = match view.dtype() {
        Dtype::F32 => Data::F32(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        Dtype::I32 => Data::I32(
            b.chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        Dtype::I64 => Data::I64(
            b.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        Dtype::BOOL => Data::Bool(b.iter().map(|&x| x != 0).collect()),
        other => return Err(format!("unsupported dtype {other:?}")),
    };
    Tensor::new(view.shape(), data).map_err(|e| format!("shape {}: {e}", fmt_dims(view.shape())))
}

impl Session {
    /// Writes every variable to a safetensors checkpoint.
    pub fn save_variables(&self, path: impl AsRef<Path>) -> Result<()> {
        save(self, path)
    }

    /// Restores every variable from a safetensors checkpoint (all or nothing).
    pub fn restore_variables(&mut self, path: impl AsRef<Path>) -> Result<()> {
        restore(self, path)
    }
}
