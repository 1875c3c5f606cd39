//! The signed bundle: format, manifest, signature, creation and reading.
//!
//! - [`Bundle::open`] (or [`Bundle::from_file`], [`Bundle::from_source`])
//!   reads and bounds the header, manifest and signature only;
//! - [`Bundle::verify`] checks the CMS signature against a [`Keyring`] and the
//!   object index against the manifest, and is the only way to get a
//!   [`VerifiedBundle`];
//! - [`VerifiedBundle`] reads the image (checked against the manifest digest)
//!   and streams objects out (checked against their digests as they stream).
//!
//! The trust chain is signature → manifest → index and image → objects; no
//! byte is used before the link above it was checked. The byte layout is in
//! `docs/bundle-format.md` and [`format`].

use std::fmt;
use std::path::PathBuf;

use crate::Digest;
use crate::keyring::Keyring;

pub mod create;
pub mod delta;
pub mod devpki;
mod error;
pub mod extract;
pub mod format;
pub mod manifest;
mod read;
pub mod resign;
pub mod source;
mod verify;

pub use error::BundleError;
pub use manifest::{
    Manifest, ManifestBase, ManifestError, ManifestImage, ManifestObjects, ManifestRaw,
};
pub use read::{BaseBundle, BaseImages, Bundle, ImageChain, NoBaseImages, VerifiedBundle};
pub use source::{FileSource, ReadAt};
pub use verify::PayloadReport;

/// How an object is stored in the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Raw,
    /// One zstd frame.
    Zstd,
    /// One zstd frame made with the bundle's dictionary (container version 2).
    ZstdDict,
    /// A binary delta against a source object the device holds, named by
    /// [`IndexEntry::source`] (container version 2; see [`delta`]).
    Delta,
    /// A member of a pack (container version 4): the stored bytes are the
    /// pack's one zstd frame, shared by every member; the object is
    /// [`IndexEntry::size`] bytes at [`IndexEntry::packed_at`] of the
    /// decoded pack.
    Packed,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Zstd => "zstd",
            Encoding::ZstdDict => "zstd+dictionary",
            Encoding::Delta => "delta",
            Encoding::Packed => "packed",
        }
    }
}

/// One object index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub digest: Digest,
    pub encoding: Encoding,
    /// For [`Encoding::Delta`]: the object the delta applies to (an object
    /// the device must already hold); `None` for every other encoding.
    pub source: Option<Digest>,
    /// Offset of the stored bytes from the start of the bundle file.
    pub offset: u64,
    /// Length as stored.
    pub stored_size: u64,
    /// Length once decoded (the object's size).
    pub size: u64,
    /// For [`Encoding::Packed`]: where the object starts in the decoded
    /// pack; 0 for every other encoding.
    pub packed_at: u64,
}

impl IndexEntry {
    /// Sort key for reading objects in the order their bytes lie in the
    /// bundle, a pack's members one after another (so it is decoded once).
    pub fn stored_order(&self) -> (u64, u64) {
        (self.offset, self.packed_at)
    }
}

pub use crate::cms::SignerInfo;

/// A region of the bundle file, for naming where a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    Header,
    Manifest,
    Signature,
    Index,
    Image,
    Objects,
    Object(Digest),
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Region::Header => f.write_str("header"),
            Region::Manifest => f.write_str("manifest"),
            Region::Signature => f.write_str("signature"),
            Region::Index => f.write_str("object index"),
            Region::Image => f.write_str("image"),
            Region::Objects => f.write_str("objects"),
            Region::Object(d) => write!(f, "object {d}"),
        }
    }
}

/// Checks a detached manifest signature (as kept in a slot record) against a
/// keyring and parses the manifest it covers. Used at boot by setup-root and
/// by `status`/`fsck` to re-check installed slots.
pub fn verify_manifest_signature(
    manifest: &[u8],
    signature: &[u8],
    keyring: &Keyring,
) -> Result<(Manifest, SignerInfo), BundleError> {
    if manifest.len() as u64 > format::MAX_MANIFEST_SIZE {
        return Err(BundleError::TooLarge {
            region: Region::Manifest,
            len: manifest.len() as u64,
            limit: format::MAX_MANIFEST_SIZE,
        });
    }
    let signer = crate::cms::verify(manifest, signature, keyring).map_err(BundleError::from_cms)?;
    let parsed = Manifest::parse(manifest).map_err(BundleError::Manifest)?;
    Ok((parsed, signer))
}

/// Where a bundle came from, for messages.
pub(crate) fn describe(path: &Option<PathBuf>, source: &dyn ReadAt) -> String {
    path.as_ref()
        .map(|p| p.display().to_string())
        .or_else(|| source.origin())
        .unwrap_or_else(|| "bundle".into())
}
