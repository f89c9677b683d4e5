//! Reading and writing tensors as .npy files (through `npyz`).
//!
//! Reading accepts what numpy writes for the supported dtypes, in C or Fortran order.
//! Floats of other widths (f64, f16) are converted to f32 and reported, so callers can say so;
//! integer and bool data keep their own dtype so that a float placeholder can reject them.
//! Files are bounded: only regular files are read, the header's shape must fit in the file
//! before any data is allocated, and a malformed header is echoed escaped and truncated.

use crate::file_access::{RegularFile, open_regular};
use crate::tensor::{Data, Tensor, checked_numel};
use crate::{Error, Result};
use npyz::{NpyFile, Order, TypeChar, WriteOptions, WriterBuilder};
use std::io::{BufReader, BufWriter, Read};
use std::path::Path;

/// A tensor read from .npy, and the file's dtype when it had to be converted to f32.
#[derive(Debug, Clone)]
pub struct NpyRead {
    /// The tensor (f32 for any float file).
    pub tensor: Tensor,
    /// `Some("f64")` or `Some("f16")` when floats were converted to f32.
    pub converted_from: Option<&'static str>,
}

/// Reads a .npy file (a regular file: a directory, device or FIFO is an error).
pub fn read(path: impl AsRef<Path>) -> Result<NpyRead> {
    let path = path.as_ref();
    let file = open_regular(path, &path.display().to_string()).map_err(|e| match e {
        crate::file_access::FileRefError::Io { message, .. } => Error::io(path, message),
        other => Error::Invalid(other.to_string()),
    })?;
    read_regular(file).map_err(|e| match e {
        Error::Invalid(m) => Error::io(path, m),
        other => other,
    })
}

/// Reads an opened regular .npy file, reading no more data than its header declares and
/// refusing a header whose shape needs more bytes than the file has.
pub fn read_regular(file: RegularFile) -> Result<NpyRead> {
    read_bounded(BufReader::new(file.file), Some(file.len))
}

/// Reads .npy bytes from any reader.
pub fn read_from(reader: impl Read) -> Result<NpyRead> {
    read_bounded(reader, None)
}

/// Most characters of a malformed header echoed in an error message.
const MAX_ECHO: usize = 80;

/// `text` with control characters escaped and cut to [`MAX_ECHO`] characters, so a hostile
/// header can neither send terminal escapes nor flood the message.
fn sanitize(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_ECHO {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads .npy bytes; with `limit`, the data the header declares must fit in that many bytes.
fn read_bounded(reader: impl Read, limit: Option<u64>) -> Result<NpyRead> {
    let npy = NpyFile::new(reader).map_err(|e| {
        Error::Invalid(format!(
            "not a valid .npy file: {}",
            sanitize(&e.to_string())
        ))
    })?;
    let dims: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::Invalid("dimension too large".into()))?;
    let n = checked_numel(&dims)?;
    let fortran = npy.order() == Order::Fortran;
    let npyz::DType::Plain(ts) = npy.dtype() else {
        return Err(Error::Invalid(format!(
            "unsupported .npy dtype {}",
            npy.dtype().descr()
        )));
    };
    let data_bytes = (n as u128) * (ts.size_field() as u128);
    if let Some(len) = limit
        && data_bytes > len as u128
    {
        return Err(Error::Invalid(format!(
            "truncated .npy data: the header declares shape {} ({data_bytes} bytes), but the \
             file has {len} bytes",
            crate::shape::fmt_dims(&dims)
        )));
    }
    let bad = |e: std::io::Error| Error::Invalid(format!("truncated or corrupt .npy data: {e}"));
    let mut converted_from = None;
    let data = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Float, 4) => Data::F32(npy.into_vec::<f32>().map_err(bad)?),
        (TypeChar::Float, 8) => {
            converted_from = Some("f64");
            Data::F32(
                npy.into_vec::<f64>()
                    .map_err(bad)?
                    .into_iter()
                    .map(|x| x as f32)
                    .collect(),
            )
        }
        (TypeChar::Float, 2) => {
            converted_from = Some("f16");
            let v = npy.into_vec::<half::f16>().map_err(bad)?;
            Data::F32(v.into_iter().map(f32::from).collect())
        }
        (TypeChar::Int, 4) => Data::I32(npy.into_vec::<i32>().map_err(bad)?),
        (TypeChar::Int, 8) => Data::I64(npy.into_vec::<i64>().map_err(bad)?),
        (TypeChar::Int, 1) => Data::I32(widen(npy.into_vec::<i8>().map_err(bad)?)),
        (TypeChar::Int, 2) => Data::I32(widen(npy.into_vec::<i16>().map_err(bad)?)),
        (TypeChar::Uint, 1) => Data::I32(widen(npy.into_vec::<u8>().map_err(bad)?)),
        (TypeChar::Uint, 2) => Data::I32(widen(npy.into_vec::<u16>().map_err(bad)?)),
        (TypeChar::Uint, 4) => Data::I64(widen(npy.into_vec::<u32>().map_err(bad)?)),
        (TypeChar::Bool, 1) => Data::Bool(npy.into_vec::<bool>().map_err(bad)?),
        _ => return Err(Error::Invalid(format!("unsupported .npy dtype {}", ts))),
    };
    let tensor = Tensor::new(&dims, data)
        .map_err(|_| Error::Invalid(format!("truncated .npy data: expected {n} elements")))?;
    let tensor = if fortran {
        from_fortran_order(tensor)
    } else {
        tensor
    };
    Ok(NpyRead {
        tensor,
        converted_from,
    })
}

fn widen<S: Copy, T: From<S>>(v: Vec<S>) -> Vec<T> {
    v.into_iter().map(T::from).collect()
}

/// Reorders column-major data (read as if row-major) into row-major.
fn from_fortran_order(t: Tensor) -> Tensor {
    let dims = t.dims().to_vec();
    if dims.len() < 2 {
        return t;
    }
    // Element at row-major multi-index i lives at column-major offset sum(i[k] * fstride[k]).
    let mut fstride = vec![1usize; dims.len()];
    for k in 1..dims.len() {
        fstride[k] = fstride[k - 1] * dims[k - 1];
    }
    let n = t.numel();
    let mut src_of = Vec::with_capacity(n);
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..n {
        src_of.push(idx.iter().zip(&fstride).map(|(i, s)| i * s).sum::<usize>());
        for k in (0..dims.len()).rev() {
            idx[k] += 1;
            if idx[k] < dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    fn gather<T: Copy>(v: &[T], src_of: &[usize]) -> Vec<T> {
        src_of.iter().map(|&s| v[s]).collect()
    }
    let data = match t.data() {
        Data::F32(v) => Data::F32(gather(v, &src_of)),
        Data::I32(v) => Data::I32(gather(v, &src_of)),
        Data::I64(v) => Data::I64(gather(v, &src_of)),
        Data::Bool(v) => Data::Bool(gather(v, &src_of)),
    };
    Tensor::new(&dims, data).expect("same dims, same element count")
}

/// Writes a tensor as a C-order .npy file of its own dtype.
pub fn write(path: impl AsRef<Path>, tensor: &Tensor) -> Result<()> {
    let path = path.as_ref();
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    write_to(BufWriter::new(file), tensor).map_err(|e| Error::io(path, e))
}

/// Writes a tensor as .npy bytes to any writer.
pub fn write_to(w: impl std::io::Write, tensor: &Tensor) -> std::io::Result<()> {
    let shape: Vec<u64> = tensor.dims().iter().map(|&d| d as u64).collect();
    macro_rules! put {
        ($v:expr) => {{
            let mut out = WriteOptions::new()
                .default_dtype()
                .shape(&shape)
                .writer(w)
                .begin_nd()?;
            out.extend($v.iter().copied())?;
            out.finish()
        }};
    }
    match tensor.data() {
        Data::F32(v) => put!(v),
        Data::I32(v) => put!(v),
        Data::I64(v) => put!(v),
        Data::Bool(v) => put!(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-1.0 .npy file with `header` as its header text, then `data`.
    fn npy_bytes(header: &str, data: &[u8]) -> Vec<u8> {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn a_malformed_header_is_echoed_escaped_and_short() {
        let evil = format!(
            "\x1b[2J\x1b]0;pwned\x07{{'descr': '<f4', 'fortran_order': False, 'shape': (1,), {}}}",
            "A".repeat(60_000)
        );
        let e = read_from(&npy_bytes(&evil, &[0; 4])[..])
            .expect_err("bad descr")
            .to_string();
        assert!(!e.chars().any(|c| c.is_control()), "{e:?}");
        assert!(e.contains("\\u{1b}"), "escapes are shown escaped: {e:?}");
        assert!(e.len() < 200, "{} bytes: {e:?}", e.len());
    }

    #[test]
    fn a_shape_larger_than_the_file_is_refused_before_allocating() {
        let dir = std::env::temp_dir().join(format!("kiln-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let path = dir.join("big.npy");
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1073741824, 2), }";
        std::fs::write(&path, npy_bytes(header, &[0; 16])).expect("write");
        let e = read(&path).expect_err("too short").to_string();
        assert!(
            e.contains("declares shape [1073741824,2] (8589934592 bytes)"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
