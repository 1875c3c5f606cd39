//! The one adapter over the `composefs` crate: digests, fs-verity, and what an
//! image references. Nothing else in didymos names `composefs::` directly.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;

use composefs::fsverity::{FsVerityHasher, Sha256HashValue};

use crate::Digest;

/// An image that cannot be parsed as a composefs EROFS image.
#[derive(Debug, thiserror::Error)]
#[error("not a valid composefs image: {0}")]
pub struct ImageError(pub String);

fn to_digest(h: &Sha256HashValue) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(zerocopy::IntoBytes::as_bytes(h));
    Digest(out)
}

/// Streaming fs-verity digest (SHA-256, 4096-byte blocks, no salt).
#[derive(Default)]
pub struct VerityHasher(FsVerityHasher<Sha256HashValue>);

impl VerityHasher {
    pub fn new() -> Self {
        Self(FsVerityHasher::new())
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0
            .write_all(data)
            .expect("hashing into memory cannot fail");
    }
    pub fn finish(mut self) -> Digest {
        to_digest(&self.0.digest())
    }
}

impl Write for VerityHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The fs-verity digest of a byte slice.
pub fn digest_bytes(data: &[u8]) -> Digest {
    to_digest(&composefs::fsverity::compute_verity::<Sha256HashValue>(
        data,
    ))
}

/// The fs-verity digest of everything `reader` yields, computed in userspace.
pub fn digest_reader(mut reader: impl Read) -> io::Result<Digest> {
    let mut hasher = VerityHasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

/// Every object digest a composefs image references.
pub fn referenced_objects(image: &[u8]) -> Result<BTreeSet<Digest>, ImageError> {
    let set = composefs::erofs::reader::collect_objects::<Sha256HashValue>(image)
        .map_err(|e| ImageError(e.to_string()))?;
    Ok(set.iter().map(to_digest).collect())
}

/// Result of trying to enable fs-verity on a file.
#[derive(Debug, PartialEq, Eq)]
pub enum VerityEnable {
    Enabled,
    /// The filesystem does not support fs-verity (or it is not enabled on it).
    Unsupported,
}

/// Enables fs-verity on a file opened read-only with no writers left.
/// A file that already has verity counts as enabled.
pub fn enable_verity(fd: impl AsFd) -> io::Result<VerityEnable> {
    use composefs::fsverity::EnableVerityError as E;
    match composefs::fsverity::enable_verity_with_retry::<Sha256HashValue>(&fd) {
        Ok(()) | Err(E::AlreadyEnabled) => Ok(VerityEnable::Enabled),
        Err(E::FilesystemNotSupported) => Ok(VerityEnable::Unsupported),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

/// The kernel's fs-verity measurement of a file, or None where the file has
/// no verity (or the filesystem does not support it).
pub fn measure_verity(fd: impl AsFd) -> io::Result<Option<Digest>> {
    composefs::fsverity::measure_verity_opt::<Sha256HashValue>(fd)
        .map(|d| d.as_ref().map(to_digest))
        .map_err(|e| io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_digest_equals_one_shot() {
        let data: Vec<u8> = (0..20000u32).map(|i| (i * 7) as u8).collect();
        let mut h = VerityHasher::new();
        for chunk in data.chunks(1000) {
            h.update(chunk);
        }
        assert_eq!(h.finish(), digest_bytes(&data));
        assert_eq!(digest_reader(&data[..]).unwrap(), digest_bytes(&data));
    }

    #[test]
    fn known_digest_of_empty_and_small_input() {
        // Values computed by `fsverity digest` (fsverity-utils 1.5) for the same contents.
        assert_eq!(
            digest_bytes(b"").to_hex(),
            "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95"
        );
    }
}
