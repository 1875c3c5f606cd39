//! fs-verity on files: enabling it and reading the kernel's measurement.

use std::io;
use std::os::fd::AsFd;

use composefs::fsverity::Sha256HashValue;

use super::from_id;
use crate::Digest;

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
        .map(|d| d.as_ref().map(from_id))
        .map_err(|e| io::Error::other(e.to_string()))
}
