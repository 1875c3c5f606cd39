//! Small helpers shared by several modules: bounded reads and atomic file replacement.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BoundedReadError {
    #[error("file is {size} bytes, more than the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads a whole file that must not exceed `limit` bytes.
///
/// The limit is checked before reading and enforced while reading (the file
/// may grow in between), so a hostile file never causes a large allocation.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, BoundedReadError> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    if size > limit {
        return Err(BoundedReadError::TooLarge { size, limit });
    }
    let mut buf = Vec::with_capacity(size as usize);
    file.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(BoundedReadError::TooLarge {
            size: buf.len() as u64,
            limit,
        });
    }
    Ok(buf)
}

/// Like [`read_bounded`], for UTF-8 text.
pub fn read_bounded_to_string(path: &Path, limit: u64) -> Result<String, BoundedReadError> {
    let bytes = read_bounded(path, limit)?;
    String::from_utf8(bytes).map_err(|e| {
        BoundedReadError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not UTF-8 text: {e}"),
        ))
    })
}

/// Replaces `path` atomically with `contents`: temporary file in the same
/// directory, fsync, rename over, fsync the directory.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |f| f.write_all(contents))
}

/// Like [`write_atomic`], with the contents produced by a closure.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    write(tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    fsync_dir(dir)
}

/// fsyncs a directory so that a rename or unlink in it is durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_read_refuses_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![0u8; 100]).unwrap();
        assert_eq!(read_bounded(&p, 100).unwrap().len(), 100);
        assert!(matches!(
            read_bounded(&p, 99),
            Err(BoundedReadError::TooLarge {
                size: 100,
                limit: 99
            })
        ));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
