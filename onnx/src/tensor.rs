//! ONNX tensors (`TensorProto`) to kiln tensors, and ONNX element types to kiln dtypes.
//!
//! kiln computes in f32 and indexes with i32/i64: FLOAT, DOUBLE and FLOAT16 data become f32,
//! the signed and small unsigned integer types i32 (INT64 and UINT32/UINT64 i64, checked), BOOL
//! bool. Invariants: the element count implied by `dims` is checked against the data before
//! anything is allocated, so a corrupt model cannot ask for more memory than its own bytes;
//! external data is read only from regular files under the model's folder (after resolving
//! symlinks), and only its `offset..offset + length` bytes.

use crate::error::{ImportError, Result};
use crate::proto::{TensorProto, data_type as dt};
use kiln_ir::file_access::{self, FileAccess};
use kiln_ir::{DType, Data, Tensor};
use std::path::Path;

/// The kiln dtype an ONNX element type is imported as, or `None` when kiln has none.
pub fn import_dtype(onnx: i32) -> Option<DType> {
    match onnx {
        dt::FLOAT | dt::DOUBLE | dt::FLOAT16 => Some(DType::F32),
        dt::INT8 | dt::INT16 | dt::INT32 | dt::UINT8 | dt::UINT16 => Some(DType::I32),
        dt::INT64 | dt::UINT32 | dt::UINT64 => Some(DType::I64),
        dt::BOOL => Some(DType::Bool),
        _ => None,
    }
}

/// A tensor's dims as `usize`, rejecting negative dims and element counts that overflow.
pub fn tensor_dims(t: &TensorProto, what: &str) -> Result<Vec<usize>> {
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| ImportError::Model(format!("{what}: negative dim in {:?}", t.dims)))?;
    kiln_ir::tensor::checked_numel(&dims)
        .map_err(|e| ImportError::Model(format!("{what}: {e}")))?;
    Ok(dims)
}

/// Reads a `TensorProto` into a kiln tensor. `base_dir` is the model's folder, where external
/// data files are looked up; `what` names the tensor in messages.
pub fn read_tensor(t: &TensorProto, base_dir: Option<&Path>, what: &str) -> Result<Tensor> {
    let dims = tensor_dims(t, what)?;
    let n = kiln_ir::tensor::checked_numel(&dims)
        .map_err(|e| ImportError::Model(format!("{what}: {e}")))?;
    let ty = t.data_type.unwrap_or(0);
    let bad = |m: String| ImportError::Model(format!("{what}: {m}"));
    import_dtype(ty).ok_or_else(|| {
        bad(format!(
            "element type {} is not supported (kiln has f32, i32, i64 and bool)",
            dt::name(ty)
        ))
    })?;
    let external;
    let raw: Option<&[u8]> = if t.data_location == Some(1) {
        external = read_external(t, base_dir, what)?;
        Some(&external)
    } else {
        t.raw_data.as_deref()
    };
    let data = match raw {
        Some(raw) => from_raw(ty, raw, n).map_err(bad)?,
        None => from_typed(t, ty, n).map_err(bad)?,
    };
    Tensor::new(&dims, data).map_err(|e| bad(e.to_string()))
}

/// Bytes per element of the raw encoding of `ty`.
fn raw_size(ty: i32) -> usize {
    match ty {
        dt::INT8 | dt::UINT8 | dt::BOOL => 1,
        dt::INT16 | dt::UINT16 | dt::FLOAT16 => 2,
        dt::FLOAT | dt::INT32 | dt::UINT32 => 4,
        _ => 8,
    }
}

/// Decodes little-endian raw data of `n` elements of type `ty`.
fn from_raw(ty: i32, raw: &[u8], n: usize) -> Result<Data, String> {
    let size = raw_size(ty);
    if Some(raw.len()) != n.checked_mul(size) {
        return Err(format!(
            "raw data has {} bytes, but {n} elements of {} need {}",
            raw.len(),
            dt::name(ty),
            n.saturating_mul(size)
        ));
    }
    // chunks_exact(size) yields slices of exactly `size` bytes, so every `try_into` to an array
    // of that size succeeds; `le` turns such a chunk into an array without a fallible call.
    fn le<const N: usize>(c: &[u8]) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    }
    let chunks = raw.chunks_exact(size);
    Ok(match ty {
        dt::FLOAT => Data::F32(chunks.map(|c| f32::from_le_bytes(le(c))).collect()),
        dt::DOUBLE => Data::F32(chunks.map(|c| f64::from_le_bytes(le(c)) as f32).collect()),
        dt::FLOAT16 => Data::F32(
            chunks
                .map(|c| half::f16::from_le_bytes(le(c)).to_f32())
                .collect(),
        ),
        dt::INT8 => Data::I32(raw.iter().map(|&b| b as i8 as i32).collect()),
        dt::UINT8 => Data::I32(raw.iter().map(|&b| b as i32).collect()),
        dt::INT16 => Data::I32(chunks.map(|c| i16::from_le_bytes(le(c)) as i32).collect()),
        dt::UINT16 => Data::I32(chunks.map(|c| u16::from_le_bytes(le(c)) as i32).collect()),
        dt::INT32 => Data::I32(chunks.map(|c| i32::from_le_bytes(le(c))).collect()),
        dt::INT64 => Data::I64(chunks.map(|c| i64::from_le_bytes(le(c))).collect()),
        dt::UINT32 => Data::I64(chunks.map(|c| u32::from_le_bytes(le(c)) as i64).collect()),
        dt::UINT64 => Data::I64(
            chunks
                .map(|c| i64::try_from(u64::from_le_bytes(le(c))))
                .collect::<Result<_, _>>()
                .map_err(|_| "a UINT64 value does not fit in i64".to_string())?,
        ),
        dt::BOOL => Data::Bool(raw.iter().map(|&b| b != 0).collect()),
        _ => return Err(format!("element type {} is not supported", dt::name(ty))),
    })
}

/// Decodes the typed data fields (`float_data`, `int32_data`, ...).
fn from_typed(t: &TensorProto, ty: i32, n: usize) -> Result<Data, String> {
    let count = |len: usize, field: &str| -> Result<(), String> {
        if len == n {
            Ok(())
        } else {
            Err(format!("{field} has {len} elements, but the dims need {n}"))
        }
    };
    Ok(match ty {
        dt::FLOAT => {
            count(t.float_data.len(), "float_data")?;
            Data::F32(t.float_data.clone())
        }
        dt::DOUBLE => {
            count(t.double_data.len(), "double_data")?;
            Data::F32(t.double_data.iter().map(|&x| x as f32).collect())
        }
        dt::FLOAT16 => {
            count(t.int32_data.len(), "int32_data")?;
            let f = |b: i32| half::f16::from_bits(b as u16).to_f32();
            Data::F32(t.int32_data.iter().map(|&b| f(b)).collect())
        }
        dt::INT8 | dt::INT16 | dt::INT32 | dt::UINT8 | dt::UINT16 => {
            count(t.int32_data.len(), "int32_data")?;
            Data::I32(t.int32_data.clone())
        }
        dt::BOOL => {
            count(t.int32_data.len(), "int32_data")?;
            Data::Bool(t.int32_data.iter().map(|&b| b != 0).collect())
        }
        dt::INT64 => {
            count(t.int64_data.len(), "int64_data")?;
            Data::I64(t.int64_data.clone())
        }
        dt::UINT32 | dt::UINT64 => {
            count(t.uint64_data.len(), "uint64_data")?;
            Data::I64(
                t.uint64_data
                    .iter()
                    .map(|&x| i64::try_from(x))
                    .collect::<Result<_, _>>()
                    .map_err(|_| "a UINT64 value does not fit in i64".to_string())?,
            )
        }
        _ => return Err(format!("element type {} is not supported", dt::name(ty))),
    })
}

/// Reads a tensor's external data: `location` (relative to the model's folder, which it may
/// not leave), `offset` and `length`.
fn read_external(t: &TensorProto, base_dir: Option<&Path>, what: &str) -> Result<Vec<u8>> {
    let entry = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .and_then(|e| e.value.clone())
    };
    let bad = |m: String| ImportError::Model(format!("{what}: external data {m}"));
    let location = entry("location").ok_or_else(|| bad("has no `location`".into()))?;
    let number = |key: &str| -> Result<Option<u64>> {
        entry(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("{key} {v:?} is not a non-negative integer")))
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    let length = number("length")?;
    // Confined to the model's folder after resolving symlinks, and only a regular file: a
    // symlink out of the folder, /dev/zero or a FIFO is refused before anything is read.
    let folder = base_dir.unwrap_or(Path::new(""));
    let mut file = file_access::open(folder, &location, FileAccess::Confined)
        .map_err(|e| bad(e.to_string()))?;
    file.read_range(offset, length)
        .map_err(|m| ImportError::Io {
            path: location.clone(),
            message: format!("cannot read the external data of {what}: {m}"),
        })
}
