//! What can go wrong reading or checking a bundle. One variant per cause,
//! so callers (the daemon's D-Bus error names) can tell them apart.

use std::path::PathBuf;

use super::format::LayoutError;
use super::{ManifestError, Region};
use crate::Digest;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot open bundle {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the {region} of the bundle: {source}")]
    Read {
        region: Region,
        source: std::io::Error,
    },
    /// Not a bundle at all, or of a newer format.
    #[error("{0}")]
    NotABundle(LayoutError),
    /// The header or the region layout is damaged or the file is cut short.
    #[error("bundle header is damaged: {0}")]
    Layout(LayoutError),
    #[error("bundle is truncated: {0}")]
    Truncated(LayoutError),
    #[error("{region} is {len} bytes, more than the limit of {limit}")]
    TooLarge {
        region: Region,
        len: u64,
        limit: u64,
    },
    #[error("{0}; the bundle is damaged or was not made by didymos")]
    Manifest(ManifestError),
    #[error(
        "manifest was modified after signing: the signature covers SHA-256 {expected}, the manifest is {actual}"
    )]
    ManifestModified { expected: String, actual: String },
    /// The signature or the signer's chain of trust does not verify.
    #[error("{0}")]
    Signature(crate::cms::CmsError),
    #[error(
        "object index does not match the manifest: expected SHA-256 {expected}, found {actual}"
    )]
    IndexDigestMismatch { expected: String, actual: String },
    #[error("object index is invalid: {0}")]
    IndexInvalid(String),
    #[error(
        "image digest mismatch: the manifest names {expected}, the image in the bundle is {actual}"
    )]
    ImageDigestMismatch { expected: Digest, actual: Digest },
    #[error("image is invalid: {0}")]
    ImageInvalid(String),
    #[error(
        "object {digest} is damaged: its content has digest {actual}; the bundle file was \
         damaged in transfer or storage: download (or copy) it again and retry"
    )]
    ObjectDigestMismatch { digest: Digest, actual: Digest },
    #[error(
        "object {digest} is damaged: the index says {expected} bytes, decoding gave {actual}; \
         the bundle file was damaged in transfer or storage: download (or copy) it again and retry"
    )]
    ObjectSizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error(
        "object {digest} cannot be decoded: {detail}; the bundle file was damaged in transfer or \
         storage: download (or copy) it again and retry"
    )]
    ObjectDecode { digest: Digest, detail: String },
    #[error("object {0} is not in this bundle's index")]
    NotInIndex(Digest),
    #[error(
        "object {digest} is damaged: decoding its delta against object {source_digest} gave \
         digest {actual}; either the bundle file or that source object on this device is \
         damaged: run `didymos fsck` (with --repair to set damaged objects aside), then download \
         the bundle again or install a full bundle"
    )]
    DeltaResultMismatch {
        digest: Digest,
        source_digest: Digest,
        actual: Digest,
    },
    #[error(
        "the bundle's image is stored as a delta against image {base}, which is not here; \
         install (or extract with) a full bundle, or one built against the installed version, \
         or give the base that holds it"
    )]
    ImageBaseMissing { base: Digest },
    #[error(
        "object {digest} is a delta against object {source_digest}, which is not here; \
         install (or extract with) a full bundle, or give the base that holds it"
    )]
    DeltaSourceMissing {
        digest: Digest,
        source_digest: Digest,
    },
    #[error(
        "object {digest} is a delta against object {source_digest}, which cannot be read: {detail}"
    )]
    DeltaSourceUnreadable {
        digest: Digest,
        source_digest: Digest,
        detail: String,
    },
    #[error("object {0} is carried by the bundle but the image does not reference it")]
    ObjectNotReferenced(Digest),
    #[error("cannot write object {digest}: {source}")]
    Output {
        digest: Digest,
        source: std::io::Error,
    },
}

impl BundleError {
    /// The bundle region a failure points at, when there is one.
    pub fn region(&self) -> Option<Region> {
        Some(match self {
            BundleError::Layout(LayoutError::Index(_)) => Region::Index,
            BundleError::NotABundle(_) | BundleError::Layout(_) => Region::Header,
            BundleError::Read { region, .. } | BundleError::TooLarge { region, .. } => *region,
            BundleError::Manifest(_) | BundleError::ManifestModified { .. } => Region::Manifest,
            BundleError::Signature(
                crate::cms::CmsError::Malformed { .. }
                | crate::cms::CmsError::SignatureInvalid { .. },
            ) => Region::Signature,
            BundleError::IndexDigestMismatch { .. } | BundleError::IndexInvalid(_) => Region::Index,
            BundleError::ImageDigestMismatch { .. } | BundleError::ImageInvalid(_) => Region::Image,
            BundleError::ObjectDigestMismatch { digest, .. }
            | BundleError::ObjectSizeMismatch { digest, .. }
            | BundleError::ObjectDecode { digest, .. }
            | BundleError::DeltaResultMismatch { digest, .. }
            | BundleError::ObjectNotReferenced(digest) => Region::Object(*digest),
            _ => return None,
        })
    }

    /// The network failure behind a read of a bundle on a server, if that
    /// is what this is.
    pub fn network(&self) -> Option<&crate::net::NetError> {
        match self {
            BundleError::Read { source, .. } => source
                .get_ref()
                .and_then(|e| e.downcast_ref::<crate::net::NetError>()),
            _ => None,
        }
    }

    /// A signature check's failure; a changed manifest is named as such.
    pub(crate) fn from_cms(e: crate::cms::CmsError) -> Self {
        match e {
            crate::cms::CmsError::ContentModified { expected, actual } => {
                BundleError::ManifestModified { expected, actual }
            }
            other => BundleError::Signature(other),
        }
    }

    pub(crate) fn from_layout(e: LayoutError) -> Self {
        match e {
            LayoutError::BadMagic { .. } | LayoutError::UnsupportedVersion { .. } => {
                BundleError::NotABundle(e)
            }
            LayoutError::ShortHeader { .. } | LayoutError::Truncated { .. } => {
                BundleError::Truncated(e)
            }
            other => BundleError::Layout(other),
        }
    }
}
