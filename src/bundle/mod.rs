//! The signed bundle: format, manifest, signature, creation and reading.
//!
//! CONTRACT (the install engine, the D-Bus service and setup-root code against
//! these names; the bodies are being filled in):
//!
//! - [`Bundle::open`] reads and bounds the header, manifest and signature only;
//! - [`Bundle::verify`] checks the CMS signature against a [`Keyring`] and the
//!   object index against the manifest, and is the only way to get a
//!   [`VerifiedBundle`];
//! - [`VerifiedBundle`] reads the image (checked against the manifest digest)
//!   and streams objects out (checked against their digests as they stream).

use std::io::Write;
use std::path::Path;

use crate::Digest;
use crate::keyring::Keyring;

/// The manifest: what the signature covers. Serialized as TOML.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// Bundle format version.
    pub format: u32,
    pub compatible: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub build: String,
    /// RFC 3339 creation time (UTC).
    pub created: String,
    pub image: ManifestImage,
    pub objects: ManifestObjects,
    /// For delta bundles: the images whose objects this bundle leaves out.
    #[serde(default, rename = "base", skip_serializing_if = "Vec::is_empty")]
    pub bases: Vec<ManifestBase>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ManifestImage {
    /// fs-verity digest of the composefs image.
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ManifestObjects {
    /// Objects carried in this bundle.
    pub count: u64,
    /// Their total size once decoded.
    pub size: u64,
    /// Their total size as stored in the bundle.
    pub stored_size: u64,
    /// Objects the image references (carried or not).
    pub referenced: u64,
    /// SHA-256 of the object index region.
    pub index_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ManifestBase {
    pub image: Digest,
    #[serde(default)]
    pub version: String,
}

/// How an object is stored in the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Raw,
    Zstd,
}

/// One object index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub digest: Digest,
    pub encoding: Encoding,
    /// Offset of the stored bytes from the start of the bundle file.
    pub offset: u64,
    /// Length as stored.
    pub stored_size: u64,
    /// Length once decoded (the object's size).
    pub size: u64,
}

/// Who signed a bundle, as found by verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerInfo {
    /// Subject of the signing certificate (one line, OpenSSL style).
    pub subject: String,
    pub common_name: String,
    /// The verified chain from the signer up to the trust anchor, subjects.
    pub chain: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{0}")]
    Pending(String),
}

/// An opened, not yet verified bundle.
pub struct Bundle {
    _private: (),
}

impl Bundle {
    pub fn open(_path: &Path) -> Result<Bundle, BundleError> {
        Err(BundleError::Pending(
            "bundle reading is not implemented yet".into(),
        ))
    }

    /// The manifest as parsed, before verification (for `info --no-verify`).
    pub fn manifest_unverified(&self) -> &Manifest {
        unreachable!()
    }

    pub fn verify(self, _keyring: &Keyring) -> Result<VerifiedBundle, BundleError> {
        Err(BundleError::Pending(
            "bundle verification is not implemented yet".into(),
        ))
    }
}

/// A bundle whose signature and index were checked. Only [`Bundle::verify`] makes one.
pub struct VerifiedBundle {
    _private: (),
}

impl VerifiedBundle {
    pub fn manifest(&self) -> &Manifest {
        unreachable!()
    }
    /// The manifest bytes exactly as signed.
    pub fn manifest_bytes(&self) -> &[u8] {
        unreachable!()
    }
    /// The CMS signature (DER).
    pub fn signature_bytes(&self) -> &[u8] {
        unreachable!()
    }
    /// SHA-256 of the manifest bytes, hex.
    pub fn manifest_hash(&self) -> String {
        unreachable!()
    }
    pub fn signer(&self) -> &SignerInfo {
        unreachable!()
    }
    /// The objects this bundle carries, sorted by digest.
    pub fn index(&self) -> &[IndexEntry] {
        unreachable!()
    }
    /// Reads the composefs image and checks it against the manifest's digest.
    pub fn read_image(&self) -> Result<Vec<u8>, BundleError> {
        unreachable!()
    }
    /// Decodes one object into `out`, computing its fs-verity digest as it
    /// streams; fails (after writing) if the digest does not match the entry.
    /// Callers must not make the written bytes visible before this returns Ok.
    pub fn copy_object(
        &self,
        _entry: &IndexEntry,
        _out: &mut dyn Write,
    ) -> Result<(), BundleError> {
        unreachable!()
    }
}

/// Checks a detached manifest signature (as kept in a slot record) against a
/// keyring and parses the manifest it covers. Used at boot by setup-root and
/// by `status`/`fsck` to re-check installed slots.
pub fn verify_manifest_signature(
    _manifest: &[u8],
    _signature: &[u8],
    _keyring: &Keyring,
) -> Result<(Manifest, SignerInfo), BundleError> {
    Err(BundleError::Pending(
        "signature verification is not implemented yet".into(),
    ))
}
