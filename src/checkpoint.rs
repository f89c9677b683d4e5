//! Saving and restoring a session's variables as a safetensors file.
//!
//! One tensor per variable, keyed by the variable's name. Restoring checks every variable the
//! graph has before changing any, so a bad checkpoint leaves the session as it was.

use crate::Session;
use kiln_ir::file_access;
use kiln_ir::safetensors_io;
use kiln_ir::{Error, Result};
use safetensors::tensor::SafeTensors;
use std::path::Path;

/// Writes every variable of `session` to `path`.
pub fn save(session: &Session, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let vars = session.variables()?;
    safetensors_io::write_file(path, vars.iter().map(|(name, t)| (name.as_str(), t)))
        .map_err(|e| Error::io(path, e))
}

/// Reads `path` and sets every variable of `session` from it. Every variable must be present
/// with its exact dtype and shape; tensors the graph does not use are ignored. Only a regular
/// file is read, and no more of it than its header declares.
pub fn restore(session: &Session, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let mut file = file_access::open_regular(path, &path.display().to_string())
        .map_err(|e| Error::io(path, e))?;
    let buffer = safetensors_io::read_bytes(&mut file).map_err(|e| Error::io(path, e))?;
    let file = SafeTensors::deserialize(&buffer)
        .map_err(|e| Error::io(path, format!("not a valid safetensors file: {e}")))?;
    let mut values = Vec::new();
    for (name, current) in session.variables()? {
        let name = name.as_str();
        let view = file.tensor(name).map_err(|_| {
            Error::io(
                path,
                format!("checkpoint has no tensor for variable %{name}"),
            )
        })?;
        let value = safetensors_io::tensor_from_view(&view)
            .map_err(|m| Error::io(path, format!("tensor {name}: {m}")))?;
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
    session.set_variables(values)
}

impl Session {
    /// Writes every variable to a safetensors checkpoint.
    pub fn save_variables(&self, path: impl AsRef<Path>) -> Result<()> {
        save(self, path)
    }

    /// Restores every variable from a safetensors checkpoint (all or nothing).
    pub fn restore_variables(&self, path: impl AsRef<Path>) -> Result<()> {
        restore(self, path)
    }
}
