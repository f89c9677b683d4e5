//! Opening the files a model references (`npy(...)`, `safetensors(...)`, ONNX external data).
//!
//! A graph is untrusted input: by default ([`FileAccess::Confined`]) a reference must name a
//! regular file inside the referencing file's folder. Invariants:
//! 1. an absolute path or a `..` component is refused before the file system is touched;
//! 2. the path is resolved with symlinks followed and must stay under the folder, itself
//!    resolved the same way (so a symlink in the folder cannot lead out);
//! 3. a refusal says the same thing whether or not the outside target exists;
//! 4. only regular files are opened, checked with `metadata` before the open (opening a FIFO
//!    blocks, a device can be endless), and readers read at most the file's own length.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

/// How far a model's file references may reach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FileAccess {
    /// Only regular files inside the referencing file's folder (after resolving symlinks).
    #[default]
    Confined,
    /// Any path the process can read, absolute or relative to the folder (for trusted input
    /// only). Files must still be regular files.
    Unrestricted,
}

/// Why a file reference cannot be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FileRefError {
    /// The reference leaves the folder (absolute, `..`, or a symlink out), or resolves through
    /// a symlink to nothing. The message never says whether an outside target exists.
    #[error(
        "{reference:?} does not resolve to a file inside {folder}: file references must stay \
         in that folder (no absolute path, no `..`, no symlink leading out)"
    )]
    Outside {
        /// The reference as written.
        reference: String,
        /// The folder it must stay in.
        folder: String,
    },
    /// The reference names nothing (no symlink involved, so nothing outside is revealed).
    #[error("{reference:?}: No such file in {folder}")]
    NotFound {
        /// The reference as written.
        reference: String,
        /// The folder it was looked up in.
        folder: String,
    },
    /// The reference names a directory, device, FIFO or socket.
    #[error("{reference:?} is not a regular file (a directory, device, FIFO or socket)")]
    NotRegular {
        /// The reference as written.
        reference: String,
    },
    /// Reading failed, or the file is shorter or longer than its contents declare.
    #[error("{reference:?}: {message}")]
    Io {
        /// The reference as written.
        reference: String,
        /// What failed.
        message: String,
    },
}

/// A regular file opened for reading, with its length at open time.
#[derive(Debug)]
pub struct RegularFile {
    /// The open file.
    pub file: File,
    /// Its length in bytes.
    pub len: u64,
    /// The resolved path (canonical when confined): the key for "same file" caches.
    pub path: PathBuf,
}

/// Resolves `reference` against `folder` under `access` and opens it, refusing anything but a
/// regular file.
pub fn open(
    folder: &Path,
    reference: &str,
    access: FileAccess,
) -> Result<RegularFile, FileRefError> {
    let path = resolve(folder, reference, access)?;
    open_regular(&path, reference)
}

/// The path `reference` names under `access`: for [`FileAccess::Confined`] its canonical form,
/// checked to lie inside `folder`; for [`FileAccess::Unrestricted`] `folder.join(reference)`.
pub fn resolve(
    folder: &Path,
    reference: &str,
    access: FileAccess,
) -> Result<PathBuf, FileRefError> {
    let folder = if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    };
    if access == FileAccess::Unrestricted {
        return Ok(folder.join(reference));
    }
    let outside = || FileRefError::Outside {
        reference: reference.to_string(),
        folder: folder.display().to_string(),
    };
    let rel = Path::new(reference);
    if reference.is_empty()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(outside());
    }
    let root = folder.canonicalize().map_err(|_| FileRefError::NotFound {
        reference: reference.to_string(),
        folder: folder.display().to_string(),
    })?;
    match root.join(rel).canonicalize() {
        Ok(path) if path.starts_with(&root) => Ok(path),
        Ok(_) => Err(outside()),
        // A symlink on the way may point outside: say the same as for an existing outside
        // target, so the error cannot be used to probe which outside paths exist.
        Err(_) if through_symlink(&root, rel) => Err(outside()),
        Err(_) => Err(FileRefError::NotFound {
            reference: reference.to_string(),
            folder: folder.display().to_string(),
        }),
    }
}

/// Whether any prefix of `rel` under `root` is a symlink.
fn through_symlink(root: &Path, rel: &Path) -> bool {
    let mut p = root.to_path_buf();
    for c in rel.components() {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Opens `path` if it is a regular file (checked before opening, and again on the open file).
pub fn open_regular(path: &Path, reference: &str) -> Result<RegularFile, FileRefError> {
    let io = |e: std::io::Error| FileRefError::Io {
        reference: reference.to_string(),
        message: e.to_string(),
    };
    let not_regular = || FileRefError::NotRegular {
        reference: reference.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let file = File::open(path).map_err(io)?;
    // The path may have been swapped between the check and the open.
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    Ok(RegularFile {
        file,
        len: meta.len(),
        path: path.to_path_buf(),
    })
}

impl RegularFile {
    /// Reads bytes `offset..offset + len` (to the end of the file when `len` is `None`),
    /// checking the range against the file's length before reading or allocating.
    pub fn read_range(&mut self, offset: u64, len: Option<u64>) -> Result<Vec<u8>, String> {
        use std::io::{Seek, SeekFrom};
        let end = match len {
            Some(l) => offset.checked_add(l),
            None => Some(self.len.max(offset)),
        };
        let end = end
            .filter(|&e| e <= self.len && offset <= e)
            .ok_or_else(|| {
                format!(
                    "wants bytes {offset}..{} of a file that has {}",
                    len.map_or("end".to_string(), |l| offset.saturating_add(l).to_string()),
                    self.len
                )
            })?;
        let want = usize::try_from(end - offset).map_err(|_| "range too large".to_string())?;
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(|e| e.to_string())?;
        let mut bytes = Vec::with_capacity(want);
        (&mut self.file)
            .take(want as u64)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        if bytes.len() != want {
            return Err(format!(
                "the file shrank while being read ({} of {want} bytes)",
                bytes.len()
            ));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh temp folder `kiln-fa-TAG-PID/graph` holding `in.bin`, with `secret.bin` beside
    /// the graph folder (outside it).
    fn setup(tag: &str) -> (PathBuf, PathBuf) {
        let top = std::env::temp_dir().join(format!("kiln-fa-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        let dir = top.join("graph");
        std::fs::create_dir_all(&dir).expect("tmp");
        std::fs::write(dir.join("in.bin"), b"inside").expect("write");
        std::fs::write(top.join("secret.bin"), b"secret").expect("write");
        (top, dir)
    }

    #[test]
    fn confined_refuses_every_way_out_with_one_message() {
        let (top, dir) = setup("out");
        let secret = top.join("secret.bin");
        std::os::unix::fs::symlink(&secret, dir.join("link.bin")).expect("symlink");
        std::os::unix::fs::symlink(top.join("missing.bin"), dir.join("dangling.bin"))
            .expect("symlink");
        std::os::unix::fs::symlink(&top, dir.join("up")).expect("symlink");
        let refused = |r: &str| match resolve(&dir, r, FileAccess::Confined) {
            Err(FileRefError::Outside { reference, .. }) => assert_eq!(reference, r),
            other => panic!("{r}: expected Outside, got {other:?}"),
        };
        for r in [
            secret.to_str().expect("utf8"),
            "/no/such/file.bin",
            "../secret.bin",
            "../missing.bin",
            "sub/../../secret.bin",
            "link.bin",
            "dangling.bin",
            "up/secret.bin",
            "up/missing.bin",
        ] {
            refused(r);
        }
        // Existing and missing outside targets give identical text (only the name differs).
        let text = |r: &str| {
            resolve(&dir, r, FileAccess::Confined)
                .expect_err("refused")
                .to_string()
                .replace(r, "R")
        };
        assert_eq!(text("link.bin"), text("dangling.bin"));
        assert_eq!(text("up/secret.bin"), text("up/missing.bin"));
        assert_eq!(text("../secret.bin"), text("../missing.bin"));
        assert!(resolve(&dir, "in.bin", FileAccess::Confined).is_ok());
        assert!(matches!(
            resolve(&dir, "gone.bin", FileAccess::Confined),
            Err(FileRefError::NotFound { .. })
        ));
        // The explicit opt-out reads outside.
        let p = resolve(&dir, "../secret.bin", FileAccess::Unrestricted).expect("opt-out");
        assert_eq!(std::fs::read(p).expect("read"), b"secret");
        let _ = std::fs::remove_dir_all(&top);
    }

    #[test]
    fn only_regular_files_open_and_ranges_are_checked_first() {
        let (top, dir) = setup("regular");
        let not_regular = |p: &Path| {
            assert!(
                matches!(open_regular(p, "x"), Err(FileRefError::NotRegular { .. })),
                "{}",
                p.display()
            )
        };
        not_regular(Path::new("/dev/zero"));
        not_regular(&dir);
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        not_regular(&fifo);
        let mut f = open_regular(&dir.join("in.bin"), "in.bin").expect("opens");
        assert_eq!(f.read_range(2, Some(3)).expect("range"), b"sid");
        assert_eq!(f.read_range(4, None).expect("tail"), b"de");
        let e = f.read_range(4, Some(u64::MAX)).expect_err("too long");
        assert!(e.contains("has 6"), "{e}");
        let _ = std::fs::remove_dir_all(&top);
    }
}
