//! Normalisations along the channel axis: `batch_norm` (inference form) and `lrn`, one file
//! each under `normalize/`.

mod batch_norm;
mod lrn;

pub(super) use batch_norm::batch_norm;
pub(super) use lrn::lrn;
