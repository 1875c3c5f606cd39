//! The checks that decide whether an installed slot can boot: its record,
//! the signed manifest kept next to it, and the image the record names.
//!
//! setup-root runs them at boot; `fsck`, marking a slot and the install's
//! own precondition run the same code, so whatever the running system calls
//! bootable is exactly what the initramfs will accept.
//!
//! The signature is checked with the keyring's trust anchors, purpose and
//! signer names, but not against the clock unless the keyring checks at the
//! bundle's signing time ([`Keyring::for_installed_slots`]): the question at
//! boot is "is this the image that was installed from a bundle this keyring
//! trusted", which the clock cannot change. Revocation goes through the
//! keyring: remove the CA, or list the signer in a CRL (`check-crl`).

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::Digest;
use crate::bundle::Manifest;
use crate::config::{SystemConfig, VerityPolicy};
use crate::keyring::Keyring;
use crate::slot::record::RecordError;
use crate::slot::{SlotName, SlotRecord};

/// How the image's digest was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageCheck {
    /// The kernel's fs-verity measurement (and every read is checked).
    Verity,
    /// Computed by reading the whole file (store without fs-verity).
    Userspace,
}

/// Why an installed slot would not boot.
#[derive(Debug, thiserror::Error)]
pub enum SlotCheckError {
    #[error("{0}")]
    Record(RecordError),
    #[error("keyring: {0}")]
    Keyring(String),
    #[error("manifest signature rejected: {0}")]
    Signature(String),
    #[error("signed manifest names image {manifest}, but the slot record names {record}")]
    ManifestImage { manifest: Digest, record: Digest },
    #[error(
        "manifest is for {manifest:?}, but this device is {system:?} (system.conf [system] compatible)"
    )]
    Compatible { manifest: String, system: String },
    #[error(
        "sealed digest mismatch: kernel command line requires image {sealed}, the slot record names {record}"
    )]
    SealedMismatch { sealed: Digest, record: Digest },
    #[error("cannot read image {path}: {source}")]
    ImageOpen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image {path} is {actual} bytes, the signed manifest says {expected}")]
    ImageSize {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error(
        "image {path} has no fs-verity but system.conf [store] verity = \"require\" \
         (make the store with mkfs.ext4 -O verity and reinstall, or set verity = \"auto\")"
    )]
    ImageNoVerity { path: PathBuf },
    #[error("image digest mismatch for {path}: expected {expected}, actual {actual} ({})", match check {
        ImageCheck::Verity => "fs-verity measurement",
        ImageCheck::Userspace => "computed in userspace",
    })]
    ImageDigest {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
        check: ImageCheck,
    },
}

/// A slot whose record, signature and image were checked.
#[derive(Debug)]
pub struct VerifiedSlot {
    pub record: SlotRecord,
    /// `None` in sealed mode without a keyring in the initramfs.
    pub manifest: Option<Manifest>,
    pub image: File,
    pub image_path: PathBuf,
    pub check: ImageCheck,
}

/// Where a slot's image lives in the store.
pub fn image_path(store: &Path, digest: &Digest) -> PathBuf {
    store.join("images").join(digest.to_hex())
}

/// Reads a slot's record: `Ok(None)` when nothing is installed (no record
/// file), an error when a record is there but cannot be read or parsed.
pub fn load_record(store: &Path, slot: &SlotName) -> Result<Option<SlotRecord>, RecordError> {
    match SlotRecord::load(store, slot) {
        Ok(r) => Ok(Some(r)),
        Err(RecordError::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks `slot`'s record against its signature and the keyring, the sealed
/// digest (if any), and the image file against the record: what setup-root
/// checks before it mounts the slot.
pub fn verify_slot(
    config: &SystemConfig,
    store: &Path,
    slot: &SlotName,
    sealed: Option<&Digest>,
) -> Result<VerifiedSlot, SlotCheckError> {
    let record = SlotRecord::load(store, slot).map_err(SlotCheckError::Record)?;

    if let Some(sealed) = sealed
        && *sealed != record.image
    {
        return Err(SlotCheckError::SealedMismatch {
            sealed: *sealed,
            record: record.image,
        });
    }

    // With a sealed digest the command line is authoritative; a keyring in
    // the initramfs is still checked when there is one.
    let manifest = if sealed.is_some() && !config.keyring.path.exists() {
        log::info!(
            "sealed mode and no keyring at {}: the command line's digest is the trust anchor",
            config.keyring.path.display()
        );
        None
    } else {
        let keyring = Keyring::load(&config.keyring)
            .map_err(|e| SlotCheckError::Keyring(e.to_string()))?
            .for_installed_slots();
        Some(check_signature(config, &keyring, store, slot, &record)?)
    };

    let image_path = image_path(store, &record.image);
    let open_error = |source| SlotCheckError::ImageOpen {
        path: image_path.clone(),
        source,
    };
    let mut image = File::open(&image_path).map_err(open_error)?;
    if let Some(m) = &manifest {
        let size = image.metadata().map_err(open_error)?.len();
        if size != m.image.size {
            return Err(SlotCheckError::ImageSize {
                path: image_path,
                expected: m.image.size,
                actual: size,
            });
        }
    }
    let measured = crate::image::measure_verity(&image).map_err(open_error)?;
    let (actual, check) = match (measured, config.store.verity) {
        (Some(d), _) => (d, ImageCheck::Verity),
        (None, VerityPolicy::Require) => {
            return Err(SlotCheckError::ImageNoVerity { path: image_path });
        }
        (None, VerityPolicy::Auto | VerityPolicy::Off) => {
            let d = crate::image::digest_reader(&mut image).map_err(open_error)?;
            (d, ImageCheck::Userspace)
        }
    };
    if actual != record.image {
        return Err(SlotCheckError::ImageDigest {
            path: image_path,
            expected: record.image,
            actual,
            check,
        });
    }
    Ok(VerifiedSlot {
        record,
        manifest,
        image,
        image_path,
        check,
    })
}

/// Checks the stored manifest's signature against `keyring` and that the
/// manifest names the record's image and this device; returns the manifest.
pub fn check_signature(
    config: &SystemConfig,
    keyring: &Keyring,
    store: &Path,
    slot: &SlotName,
    record: &SlotRecord,
) -> Result<Manifest, SlotCheckError> {
    let (manifest_bytes, signature) =
        SlotRecord::load_signed_manifest(store, slot).map_err(SlotCheckError::Record)?;
    let (manifest, signer) =
        crate::bundle::verify_manifest_signature(&manifest_bytes, &signature, keyring)
            .map_err(|e| SlotCheckError::Signature(e.to_string()))?;
    log::info!("manifest of {slot} signed by {}", signer.subject);
    if manifest.image.digest != record.image {
        return Err(SlotCheckError::ManifestImage {
            manifest: manifest.image.digest,
            record: record.image,
        });
    }
    if manifest.compatible != config.system.compatible {
        return Err(SlotCheckError::Compatible {
            manifest: manifest.compatible,
            system: config.system.compatible.clone(),
        });
    }
    Ok(manifest)
}
