//! The importer's error type, [`ImportError`] (defined in kiln-ir so that `kiln::Error` can
//! carry it whole, see [`kiln_ir::Error::Import`]).

pub use kiln_ir::import_error::{ImportError, UnsupportedOp};

/// Result with [`ImportError`].
pub type Result<T, E = ImportError> = std::result::Result<T, E>;
