//! Writing result files without losing data: never through a symlink, never half-written.
//!
//! A file is written to a fresh temporary file in the same folder and renamed over the target,
//! so a reader (or a crash) never sees a half-written file, and an existing symlink at the target
//! is refused rather than followed (a planted link could otherwise redirect the write anywhere).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Refuses `path` if it is a symlink (dangling or not).
pub fn refuse_symlink(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(format!(
            "{}: refusing to write through a symbolic link",
            path.display()
        )),
        _ => Ok(()),
    }
}

/// Writes `path` through `fill`: to a new temporary file beside it, then renamed over it.
pub fn write_file(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), String> {
    refuse_symlink(path)?;
    let at = |e: std::io::Error| format!("{}: {e}", path.display());
    let temp = temporary_beside(path);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .and_then(|file| {
            let mut w = BufWriter::new(file);
            fill(&mut w)?;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(at(e));
    }
    Ok(())
}

/// A name for a temporary file in `path`'s folder (same file system, so rename is atomic).
pub fn temporary_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// `path` made absolute with symlinks resolved, also when the file does not exist yet (then
/// its folder is resolved and the file name appended).
pub fn resolved(path: &Path) -> Result<PathBuf, String> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Ok(p);
    }
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir.join(name))
}

/// Writes `bytes` to `path` through [`write_file`].
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_file(path, |w| w.write_all(bytes))
}
