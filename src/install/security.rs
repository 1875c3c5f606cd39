//! Anti-rollback: the highest security version this device booted and
//! marked good, kept in the store (`<store>/security.toml`).
//!
//! A bundle's `security-version` is part of its signed manifest, separate
//! from its release version. Marking the booted slot good raises the floor
//! to that slot's security version; installs below the floor are refused,
//! and so is activating an installed slot below it. An ordinary rollback
//! (to a release with the same security version) stays possible; only a
//! release that raised the number closes the way back. The bootloader's own
//! fall back is never blocked: a slot that fails to boot still returns the
//! device to the slot it came from.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const FLOOR_FILE: &str = "security.toml";
const MAX_FLOOR_FILE: u64 = 64 * 1024;

/// The floor as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SecurityFloor {
    /// Bundles with a lower security version are refused.
    pub floor: u64,
    /// The slot whose mark-good raised it last, its bundle version and when.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub raised_by: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub raised_with_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub raised_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error(
        "cannot read the security version floor {path}: {message}; installs are refused until \
         it is readable (restore it, or remove it to reset the floor to 0)"
    )]
    Read { path: PathBuf, message: String },
    #[error("cannot write the security version floor {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn floor_path(store: &Path) -> PathBuf {
    store.join(FLOOR_FILE)
}

/// Reads the floor; a store without the file has floor 0.
pub fn load(store: &Path) -> Result<SecurityFloor, FloorError> {
    let path = floor_path(store);
    let text = match crate::util::read_bounded_to_string(&path, MAX_FLOOR_FILE) {
        Ok(t) => t,
        Err(crate::util::BoundedReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(SecurityFloor::default());
        }
        Err(e) => {
            return Err(FloorError::Read {
                path,
                message: e.to_string(),
            });
        }
    };
    toml::from_str(&text).map_err(|e| FloorError::Read {
        path,
        message: e.message().to_owned(),
    })
}

/// Raises the floor to `security_version` (never lowers it); returns the
/// new floor when it changed.
pub fn raise(
    store: &Path,
    security_version: u64,
    slot: &str,
    version: &str,
) -> Result<Option<u64>, FloorError> {
    let current = load(store)?;
    if security_version <= current.floor {
        return Ok(None);
    }
    let new = SecurityFloor {
        floor: security_version,
        raised_by: slot.to_owned(),
        raised_with_version: version.to_owned(),
        raised_at: super::engine::now(),
    };
    let path = floor_path(store);
    let text = toml::to_string(&new).expect("the floor always serializes");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| FloorError::Write {
            path: path.clone(),
            source,
        })?;
    }
    crate::util::write_atomic(&path, text.as_bytes())
        .map_err(|source| FloorError::Write { path, source })?;
    Ok(Some(security_version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_never_lowers() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap().floor, 0);
        assert_eq!(raise(dir.path(), 0, "rootfs.0", "1.0").unwrap(), None);
        assert_eq!(raise(dir.path(), 3, "rootfs.1", "2.0").unwrap(), Some(3));
        assert_eq!(raise(dir.path(), 2, "rootfs.0", "1.5").unwrap(), None);
        let f = load(dir.path()).unwrap();
        assert_eq!((f.floor, f.raised_by.as_str()), (3, "rootfs.1"));
        std::fs::write(floor_path(dir.path()), "floor = \"x\"\n").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("installs are refused"), "{err}");
    }
}
