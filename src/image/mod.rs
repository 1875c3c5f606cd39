//! The one adapter over the `composefs` crate: building a composefs tree
//! from a directory, a tar stream or the layers of a container image, writing the EROFS image (format V1),
//! fs-verity digests (computed, enabled, measured), listing the objects an
//! image references and looking files up in an image.
//!
//! Nothing outside this module names a `composefs` type, so a change in that
//! crate's API touches only these files.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

use std::path::PathBuf;

use composefs::erofs::format::FormatVersion;
use composefs::fsverity::{FsVerityHashValue, FsVerityHasher, Sha256HashValue};

use crate::Digest;

mod lookup;
mod scan_dir;
mod scan_oci;
mod scan_tar;
mod tree;
mod verity;

pub use lookup::{FileContent, ImageTree};
pub use scan_dir::scan_directory;
pub use scan_oci::{OciTreeBuilder, OciXattrs};
pub use scan_tar::{TarCompression, scan_tar};
pub use tree::{FileData, Sink, SourceTree, TreeStats};
pub use verity::{VerityEnable, enable_verity, measure_verity};

type ObjectId = Sha256HashValue;

/// Files of at most this many bytes live inside the image; larger ones are
/// objects. Fixed by the composefs format.
pub const INLINE_MAX: u64 = composefs::INLINE_CONTENT_MAX_V0 as u64;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {detail}")]
    Unsupported { path: PathBuf, detail: String },
    #[error("tar archive {archive}: {detail}")]
    Tar { archive: PathBuf, detail: String },
    #[error("cannot build the composefs image: {0}")]
    Build(String),
    #[error("not a valid composefs image: {0}")]
    Invalid(String),
    /// An entry of a container image layer that cannot be applied.
    #[error("{layer}{}: {detail}", if entry.is_empty() { String::new() } else { format!(", entry {entry}") })]
    Layer {
        layer: String,
        entry: String,
        detail: String,
    },
    /// A container image whose layers, applied, do not make a root filesystem.
    #[error("{0}")]
    Oci(String),
    /// A path looked up inside an image is missing or of the wrong kind.
    #[error("{0}")]
    Lookup(String),
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }
}

fn to_id(d: &Digest) -> ObjectId {
    ObjectId::from_hex(d.to_hex()).expect("64 hex digits")
}

pub(crate) fn from_id(id: &ObjectId) -> Digest {
    Digest::from_hex(&id.to_hex()).expect("sha256 id is 64 hex digits")
}

/// Streaming fs-verity digest (SHA-256, 4096-byte blocks, no salt).
///
/// Whole blocks of the caller's buffers go to the hasher directly; only a
/// block split across calls is copied.
pub struct VerityHasher {
    inner: FsVerityHasher<ObjectId>,
    partial: Vec<u8>,
    len: u64,
}

const BLOCK: usize = 4096;

impl Default for VerityHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl VerityHasher {
    pub fn new() -> Self {
        Self {
            inner: FsVerityHasher::new(),
            partial: Vec::with_capacity(BLOCK),
            len: 0,
        }
    }
    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.partial.is_empty() {
            let n = (BLOCK - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.partial.len() < BLOCK {
                return;
            }
            self.inner.add_block(&self.partial);
            self.partial.clear();
        }
        let mut blocks = data.chunks_exact(BLOCK);
        for block in &mut blocks {
            self.inner.add_block(block);
        }
        self.partial.extend_from_slice(blocks.remainder());
    }
    pub fn finish(mut self) -> Digest {
        if !self.partial.is_empty() {
            self.inner.add_block(&self.partial);
        }
        from_id(&self.inner.digest())
    }
}

impl Write for VerityHasher {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.update(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The fs-verity digest of a byte slice.
pub fn digest_bytes(data: &[u8]) -> Digest {
    let mut h = VerityHasher::new();
    h.update(data);
    h.finish()
}

/// The fs-verity digest of everything `reader` yields, computed in userspace.
pub fn digest_reader(mut reader: impl Read) -> io::Result<Digest> {
    digest_reader_len(&mut reader).map(|(d, _)| d)
}

/// Hashes everything `r` yields; returns the digest and the length.
pub fn digest_reader_len(r: &mut dyn Read) -> io::Result<(Digest, u64)> {
    let mut h = VerityHasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
    }
    let len = h.len();
    Ok((h.finish(), len))
}

/// Every object an image's files point at. Only call this on an image whose
/// digest was already checked against a trusted manifest.
pub fn referenced_objects(image: &[u8]) -> Result<BTreeSet<Digest>, ImageError> {
    let ids = composefs::erofs::reader::collect_objects::<ObjectId>(image)
        .map_err(|e| ImageError::Invalid(e.to_string()))?;
    Ok(ids.iter().map(from_id).collect())
}

/// The image in composefs's dumpfile format: one line per path with mode,
/// size, link count, owner, device number, mtime, content or object digest
/// and extended attributes. A readable form of the binary image for review
/// and tests. Only call this on a trusted (digest-checked) image.
pub fn dump(image: &[u8]) -> Result<String, ImageError> {
    let fs = composefs::erofs::reader::erofs_to_filesystem::<ObjectId>(image)
        .map_err(|e| ImageError::Invalid(format!("{e:#}")))?;
    let mut out = Vec::new();
    composefs::dumpfile::write_dumpfile(&mut out, &fs)
        .map_err(|e| ImageError::Invalid(format!("{e:#}")))?;
    String::from_utf8(out).map_err(|e| ImageError::Invalid(e.to_string()))
}

/// Writes a composefs V1 image from a tree whose external files have digests.
fn write_image(fs: composefs::tree::FileSystem<ObjectId>) -> Result<Vec<u8>, ImageError> {
    let validated = composefs::erofs::writer::ValidatedFileSystem::new(fs)
        .map_err(|e| ImageError::Build(format!("{e:#}")))?;
    let image = composefs::erofs::writer::mkfs_erofs_versioned(&validated, FormatVersion::V1);
    Ok(image.into_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verity_of_known_inputs() {
        // Values from `fsverity digest` (sha256, 4096-byte blocks, no salt).
        assert_eq!(
            digest_bytes(b"").to_hex(),
            "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95"
        );
        let mut h = VerityHasher::new();
        for chunk in vec![7u8; 10000].chunks(333) {
            h.update(chunk);
        }
        assert_eq!(h.finish(), digest_bytes(&[7u8; 10000]));
        let data = [9u8; 20000];
        assert_eq!(digest_reader(&data[..]).unwrap(), digest_bytes(&data));
        // Against the crate's own one-shot digest, for lengths around block
        // boundaries and split at awkward places.
        let data: Vec<u8> = (0..(1 << 20) + 3).map(|i| (i * 31 % 251) as u8).collect();
        for len in [0, 1, 4095, 4096, 4097, 8192, 65536 + 17, data.len()] {
            let want = from_id(&composefs::fsverity::compute_verity::<ObjectId>(
                &data[..len],
            ));
            for split in [1, 7, 4096, 5000] {
                let mut h = VerityHasher::new();
                for chunk in data[..len].chunks(split) {
                    h.update(chunk);
                }
                assert_eq!(h.finish(), want, "len {len} split {split}");
            }
        }
    }
}
