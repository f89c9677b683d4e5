//! The one conversion between kiln tensors and safetensors files, used by the .kiln parser's
//! `safetensors(...)` initialisers, the ONNX importer's weight files and session checkpoints.
//!
//! Data is little-endian, as the format stores it; only kiln's dtypes (F32, I32, I64, BOOL)
//! are read. Reading is bounded: the header's length is checked against the file's before
//! anything else is read, and only regular files are read (see [`crate::file_access`]).

use crate::DType;
use crate::file_access::RegularFile;
use crate::shape::fmt_dims;
use crate::tensor::{Data, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::path::Path;

/// The safetensors dtype of a kiln dtype.
pub fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::Bool => Dtype::BOOL,
    }
}

/// A tensor's data as little-endian bytes.
pub fn le_bytes(t: &Tensor) -> Vec<u8> {
    match t.data() {
        Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::Bool(v) => v.iter().map(|&x| x as u8).collect(),
    }
}

/// A safetensors view as a kiln tensor.
pub fn tensor_from_view(view: &TensorView<'_>) -> Result<Tensor, String> {
    // chunks_exact(N) yields slices of exactly N bytes, so `le` never fails.
    fn le<const N: usize>(c: &[u8]) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    }
    let b = view.data();
    let data = match view.dtype() {
        Dtype::F32 => Data::F32(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(le(c)))
                .collect(),
        ),
        Dtype::I32 => Data::I32(
            b.chunks_exact(4)
                .map(|c| i32::from_le_bytes(le(c)))
                .collect(),
        ),
        Dtype::I64 => Data::I64(
            b.chunks_exact(8)
                .map(|c| i64::from_le_bytes(le(c)))
                .collect(),
        ),
        Dtype::BOOL => Data::Bool(b.iter().map(|&x| x != 0).collect()),
        other => {
            return Err(format!(
                "dtype {other:?} is not one of kiln's (F32, I32, I64, BOOL)"
            ));
        }
    };
    Tensor::new(view.shape(), data).map_err(|e| format!("shape {}: {e}", fmt_dims(view.shape())))
}

/// Tensor `key` of a whole safetensors file's bytes.
pub fn read_tensor(bytes: &[u8], key: &str) -> Result<Tensor, String> {
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| format!("not a valid safetensors file: {e}"))?;
    let view = file
        .tensor(key)
        .map_err(|_| format!("the file has no tensor {key:?}"))?;
    tensor_from_view(&view)
}

/// Reads a safetensors file whole, after checking that its header length fits the file (so a
/// corrupt or hostile header cannot make this read or allocate more than the file holds).
pub fn read_bytes(file: &mut RegularFile) -> Result<Vec<u8>, String> {
    let head = file.read_range(0, Some(8.min(file.len)))?;
    let Ok(head) = <[u8; 8]>::try_from(head.as_slice()) else {
        return Err(format!(
            "not a valid safetensors file: {} bytes, shorter than its 8-byte header length",
            file.len
        ));
    };
    let header = u64::from_le_bytes(head);
    if header > file.len - 8 {
        return Err(format!(
            "not a valid safetensors file: its header claims {header} bytes, but the file has {}",
            file.len
        ));
    }
    file.read_range(0, Some(file.len))
}

/// Writes `tensors` (name, tensor) to a safetensors file at `path`.
pub fn write_file<'t>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'t str, &'t Tensor)>,
) -> Result<(), String> {
    let owned: Vec<(&str, Vec<u8>, &Tensor)> = tensors
        .into_iter()
        .map(|(k, t)| (k, le_bytes(t), t))
        .collect();
    let views = owned
        .iter()
        .map(|(k, b, t)| {
            TensorView::new(st_dtype(t.dtype()), t.dims().to_vec(), b)
                .map(|v| (k.to_string(), v))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, String>>()?;
    let bytes = safetensors::serialize(views, None).map_err(|e| e.to_string())?;
    write_replacing(path, &bytes)
}

/// Writes `bytes` to `path` through a new file beside it that is then renamed over it, so an
/// existing file (perhaps memory-mapped by a reader) is never truncated in place and a crash
/// leaves no half-written file. The new file gets the usual mode, 0666 less the umask, as std
/// creates files (the safetensors crate's own writer makes 0600 files, which other users who
/// run the model cannot read).
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Distinct names for concurrent writes from one process.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let temp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_access::open_regular;

    #[test]
    fn round_trips_every_dtype_and_bounds_the_header() {
        let dir = std::env::temp_dir().join(format!("kiln-stio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let path = dir.join("t.safetensors");
        let f = Tensor::from_vec(&[2], vec![1.5, -2.0]).expect("t");
        let i = Tensor::new(&[1], Data::I64(vec![-7])).expect("t");
        let b = Tensor::new(&[2, 1], Data::Bool(vec![true, false])).expect("t");
        let j = Tensor::new(&[], Data::I32(vec![3])).expect("t");
        write_file(&path, [("f", &f), ("i", &i), ("b", &b), ("j", &j)]).expect("write");
        let bytes = read_bytes(&mut open_regular(&path, "t").expect("open")).expect("read");
        for (k, t) in [("f", &f), ("i", &i), ("b", &b), ("j", &j)] {
            assert_eq!(read_tensor(&bytes, k).expect(k), *t);
        }
        assert!(
            read_tensor(&bytes, "nope")
                .expect_err("missing")
                .contains("no tensor")
        );
        // A header claiming more bytes than the file has is refused before the read.
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        std::fs::write(&path, &huge).expect("write");
        let e = read_bytes(&mut open_regular(&path, "t").expect("open")).expect_err("huge");
        assert!(e.contains("header claims"), "{e}");
        std::fs::write(&path, b"abc").expect("write");
        let e = read_bytes(&mut open_regular(&path, "t").expect("open")).expect_err("short");
        assert!(e.contains("3 bytes"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
