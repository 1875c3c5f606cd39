//! Re-checking the trust chain at boot: signature → manifest → image.
//!
//! The objects are the last link: the overlay checks each one against the
//! digest recorded in the image when it is opened (`verity=require`).

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::Digest;
use crate::bundle::Manifest;
use crate::config::{SystemConfig, VerityPolicy};
use crate::keyring::Keyring;
use crate::slot::{SlotName, SlotRecord};

use super::{ImageCheck, SetupError};

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

/// Checks `slot`'s record against its signature and the keyring, the sealed
/// digest (if any), and the image file against the record.
pub fn verify_slot(
    config: &SystemConfig,
    store: &Path,
    slot: &SlotName,
    sealed: Option<&Digest>,
) -> Result<VerifiedSlot, SetupError> {
    let record = SlotRecord::load(store, slot).map_err(SetupError::Record)?;

    if let Some(sealed) = sealed
        && *sealed != record.image
    {
        return Err(SetupError::SealedMismatch {
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
        Some(check_signature(config, store, slot, &record)?)
    };

    let image_path = image_path(store, &record.image);
    let mut image = File::open(&image_path).map_err(|source| SetupError::ImageOpen {
        path: image_path.clone(),
        source,
    })?;
    if let Some(m) = &manifest {
        let size = image
            .metadata()
            .map_err(|source| SetupError::ImageOpen {
                path: image_path.clone(),
                source,
            })?
            .len();
        if size != m.image.size {
            return Err(SetupError::ImageSize {
                path: image_path,
                expected: m.image.size,
                actual: size,
            });
        }
    }
    let measured =
        crate::image::measure_verity(&image).map_err(|source| SetupError::ImageOpen {
            path: image_path.clone(),
            source,
        })?;
    let (actual, check) = match (measured, config.store.verity) {
        (Some(d), _) => (d, ImageCheck::Verity),
        (None, VerityPolicy::Require) => {
            return Err(SetupError::ImageNoVerity { path: image_path });
        }
        (None, VerityPolicy::Auto | VerityPolicy::Off) => {
            let d = crate::image::digest_reader(&mut image).map_err(|source| {
                SetupError::ImageOpen {
                    path: image_path.clone(),
                    source,
                }
            })?;
            (d, ImageCheck::Userspace)
        }
    };
    if actual != record.image {
        return Err(SetupError::ImageDigest {
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

fn check_signature(
    config: &SystemConfig,
    store: &Path,
    slot: &SlotName,
    record: &SlotRecord,
) -> Result<Manifest, SetupError> {
    let keyring = Keyring::load(&config.keyring).map_err(|e| SetupError::Keyring(e.to_string()))?;
    let (manifest_bytes, signature) =
        SlotRecord::load_signed_manifest(store, slot).map_err(SetupError::Record)?;
    let (manifest, signer) =
        crate::bundle::verify_manifest_signature(&manifest_bytes, &signature, &keyring)
            .map_err(|e| SetupError::Signature(e.to_string()))?;
    log::info!("manifest of {slot} signed by {}", signer.subject);
    if manifest.image.digest != record.image {
        return Err(SetupError::ManifestImage {
            manifest: manifest.image.digest,
            record: record.image,
        });
    }
    if manifest.compatible != config.system.compatible {
        return Err(SetupError::Compatible {
            manifest: manifest.compatible,
            system: config.system.compatible.clone(),
        });
    }
    Ok(manifest)
}
