//! The slot record: what is installed in a slot, written atomically into the store.
//!
//! Layout under the store root, per slot (`slots/<slot name>/`):
//!
//! - `record.toml`   — this record (TOML, [`SlotRecord`]);
//! - `manifest.toml` — the bundle's manifest, byte for byte as signed;
//! - `manifest.sig`  — the CMS signature (DER) over `manifest.toml`.
//!
//! The manifest and signature are kept so the initramfs can re-check the
//! trust chain at every boot without the bundle.
//!
//! A `raw` slot has `raw.toml` instead ([`RawRecord`]): what was written to
//! its device. It is removed before the device is written and saved once the
//! written bytes were read back and compared.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Digest;
use crate::slot::{Bootname, SlotName};

/// Largest record, manifest or signature file read back (bounded before use).
pub const MAX_RECORD_FILE: u64 = 1024 * 1024;

pub const RECORD_FILE: &str = "record.toml";
pub const MANIFEST_FILE: &str = "manifest.toml";
pub const SIGNATURE_FILE: &str = "manifest.sig";
pub const RAW_RECORD_FILE: &str = "raw.toml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SlotRecord {
    pub slot: SlotName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootname: Option<Bootname>,
    /// The composefs image this slot boots (its fs-verity digest, also its file name).
    pub image: Digest,
    pub bundle_compatible: String,
    pub bundle_version: String,
    #[serde(default)]
    pub bundle_description: String,
    #[serde(default)]
    pub bundle_build: String,
    /// SHA-256 of the signed manifest (identifies the bundle).
    pub bundle_hash: String,
    /// RFC 3339, UTC.
    pub installed_timestamp: String,
    /// How many times something was installed into this slot.
    pub installed_count: u64,
    /// RFC 3339, UTC; set when the slot was last marked active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_timestamp: Option<String>,
    #[serde(default)]
    pub activated_count: u64,
}

/// What an install wrote to a `raw` slot's device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRecord {
    pub slot: SlotName,
    /// The composefs slot it was installed with.
    pub parent: SlotName,
    /// fs-verity digest of the image (as named by the bundle's manifest).
    pub digest: Digest,
    /// Plain SHA-256 of the image.
    pub sha256: String,
    /// Bytes written at offset 0 of the device.
    pub size: u64,
    pub bundle_version: String,
    /// SHA-256 of the signed manifest (identifies the bundle).
    pub bundle_hash: String,
    /// RFC 3339, UTC.
    pub installed_timestamp: String,
    pub installed_count: u64,
}

impl RawRecord {
    /// Reads `slots/<slot>/raw.toml` under `store_root`.
    pub fn load(store_root: &Path, slot: &SlotName) -> Result<Self, RecordError> {
        let (path, text) = read_record_file(store_root, slot, RAW_RECORD_FILE)?;
        let record = Self::parse(&text, &path)?;
        check_slot(&record.slot, slot, path)?;
        Ok(record)
    }

    /// Parses the text of a `raw.toml`; `path` names it in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, RecordError> {
        toml::from_str(text).map_err(|e| RecordError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
    }

    /// Writes the record atomically.
    pub fn save(&self, store_root: &Path) -> Result<(), RecordError> {
        let dir = slot_dir(store_root, &self.slot);
        std::fs::create_dir_all(&dir).map_err(|source| RecordError::Write {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(RAW_RECORD_FILE);
        let text = toml::to_string(self).expect("raw records always serialize");
        crate::util::write_atomic(&path, text.as_bytes())
            .map_err(|source| RecordError::Write { path, source })
    }

    /// Removes the record (durably), before the device is written.
    pub fn remove(store_root: &Path, slot: &SlotName) -> Result<(), RecordError> {
        let dir = slot_dir(store_root, slot);
        let path = dir.join(RAW_RECORD_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => crate::util::fsync_dir(&dir)
                .map_err(|source| RecordError::Write { path: dir, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RecordError::Write { path, source }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("slot {slot} has no record at {path} (nothing installed yet)")]
    Missing { slot: SlotName, path: PathBuf },
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path} is not a valid slot record: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads `slots/<slot>/<name>`, bounded; a missing file is [`RecordError::Missing`].
fn read_record_file(
    store_root: &Path,
    slot: &SlotName,
    name: &str,
) -> Result<(PathBuf, String), RecordError> {
    let path = slot_dir(store_root, slot).join(name);
    match crate::util::read_bounded_to_string(&path, MAX_RECORD_FILE) {
        Ok(text) => Ok((path, text)),
        Err(crate::util::BoundedReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(RecordError::Missing {
                slot: slot.clone(),
                path,
            })
        }
        Err(e) => Err(RecordError::Read {
            path,
            message: e.to_string(),
        }),
    }
}

/// A record must name the slot whose directory it lives in.
fn check_slot(named: &SlotName, slot: &SlotName, path: PathBuf) -> Result<(), RecordError> {
    if named != slot {
        return Err(RecordError::Parse {
            path,
            message: format!("names slot {named} but lives in the directory of {slot}"),
        });
    }
    Ok(())
}

/// The directory holding a slot's record, manifest and signature.
pub fn slot_dir(store_root: &Path, slot: &SlotName) -> PathBuf {
    store_root.join("slots").join(slot.to_string())
}

impl SlotRecord {
    pub fn parse(text: &str, path: &Path) -> Result<Self, RecordError> {
        toml::from_str(text).map_err(|e| RecordError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
    }

    /// Reads `slots/<slot>/record.toml` under `store_root`.
    pub fn load(store_root: &Path, slot: &SlotName) -> Result<Self, RecordError> {
        let (path, text) = read_record_file(store_root, slot, RECORD_FILE)?;
        let record = Self::parse(&text, &path)?;
        check_slot(&record.slot, slot, path)?;
        Ok(record)
    }

    /// Reads the stored manifest and signature bytes next to the record.
    pub fn load_signed_manifest(
        store_root: &Path,
        slot: &SlotName,
    ) -> Result<(Vec<u8>, Vec<u8>), RecordError> {
        let dir = slot_dir(store_root, slot);
        let read = |name: &str| {
            let path = dir.join(name);
            crate::util::read_bounded(&path, MAX_RECORD_FILE).map_err(|e| RecordError::Read {
                path,
                message: e.to_string(),
            })
        };
        Ok((read(MANIFEST_FILE)?, read(SIGNATURE_FILE)?))
    }

    /// Writes the manifest, the signature and then the record, each atomically.
    /// The record is written last: a record only exists once its manifest does.
    pub fn save(
        &self,
        store_root: &Path,
        manifest: &[u8],
        signature: &[u8],
    ) -> Result<(), RecordError> {
        let dir = slot_dir(store_root, &self.slot);
        std::fs::create_dir_all(&dir).map_err(|source| RecordError::Write {
            path: dir.clone(),
            source,
        })?;
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            crate::util::write_atomic(&path, bytes)
                .map_err(|source| RecordError::Write { path, source })
        };
        write(MANIFEST_FILE, manifest)?;
        write(SIGNATURE_FILE, signature)?;
        let text = toml::to_string(self).expect("slot records always serialize");
        write(RECORD_FILE, text.as_bytes())
    }

    /// Rewrites only the record (e.g. the activation time), atomically.
    pub fn save_record_only(&self, store_root: &Path) -> Result<(), RecordError> {
        let path = slot_dir(store_root, &self.slot).join(RECORD_FILE);
        let text = toml::to_string(self).expect("slot records always serialize");
        crate::util::write_atomic(&path, text.as_bytes())
            .map_err(|source| RecordError::Write { path, source })
    }

    /// Removes the record (first) and the manifest and signature of a slot.
    pub fn remove(store_root: &Path, slot: &SlotName) -> Result<(), RecordError> {
        let dir = slot_dir(store_root, slot);
        for name in [RECORD_FILE, MANIFEST_FILE, SIGNATURE_FILE] {
            let path = dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(RecordError::Write { path, source }),
            }
        }
        if dir.exists() {
            crate::util::fsync_dir(&dir)
                .map_err(|source| RecordError::Write { path: dir, source })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let slot = SlotName::parse("rootfs.1").unwrap();
        let record = SlotRecord {
            slot: slot.clone(),
            bootname: Some(Bootname::new("B").unwrap()),
            image: Digest([7; 32]),
            bundle_compatible: "acme".into(),
            bundle_version: "2.0".into(),
            bundle_description: String::new(),
            bundle_build: "b1".into(),
            bundle_hash: "00".repeat(32),
            installed_timestamp: "2026-01-01T00:00:00Z".into(),
            installed_count: 1,
            activated_timestamp: None,
            activated_count: 0,
        };
        record.save(dir.path(), b"manifest", b"sig").unwrap();
        assert_eq!(SlotRecord::load(dir.path(), &slot).unwrap(), record);
        let (m, s) = SlotRecord::load_signed_manifest(dir.path(), &slot).unwrap();
        assert_eq!(
            (m.as_slice(), s.as_slice()),
            (&b"manifest"[..], &b"sig"[..])
        );
        SlotRecord::remove(dir.path(), &slot).unwrap();
        assert!(matches!(
            SlotRecord::load(dir.path(), &slot),
            Err(RecordError::Missing { .. })
        ));
    }

    #[test]
    fn raw_record_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let slot = SlotName::parse("bootloader.1").unwrap();
        let record = RawRecord {
            slot: slot.clone(),
            parent: SlotName::parse("rootfs.1").unwrap(),
            digest: Digest([9; 32]),
            sha256: "ef".repeat(32),
            size: 1234,
            bundle_version: "2.0".into(),
            bundle_hash: "00".repeat(32),
            installed_timestamp: "2026-01-01T00:00:00Z".into(),
            installed_count: 1,
        };
        record.save(dir.path()).unwrap();
        assert_eq!(RawRecord::load(dir.path(), &slot).unwrap(), record);
        // The composefs record of the same slot is a different file.
        assert!(matches!(
            SlotRecord::load(dir.path(), &slot),
            Err(RecordError::Missing { .. })
        ));
        let other = SlotName::parse("bootloader.0").unwrap();
        std::fs::create_dir_all(slot_dir(dir.path(), &other)).unwrap();
        std::fs::copy(
            slot_dir(dir.path(), &slot).join(RAW_RECORD_FILE),
            slot_dir(dir.path(), &other).join(RAW_RECORD_FILE),
        )
        .unwrap();
        assert!(matches!(
            RawRecord::load(dir.path(), &other),
            Err(RecordError::Parse { .. })
        ));
        RawRecord::remove(dir.path(), &slot).unwrap();
        RawRecord::remove(dir.path(), &slot).unwrap();
        assert!(matches!(
            RawRecord::load(dir.path(), &slot),
            Err(RecordError::Missing { .. })
        ));
    }
}
