//! The install journal: written before the target slot is touched, removed
//! after the commit point. Finding one at start means an install was cut off.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Digest;
use crate::slot::SlotName;

const JOURNAL: &str = "install.journal";
const INTERRUPTED: &str = "interrupted.toml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Journal {
    pub slot: SlotName,
    pub image: Digest,
    pub bundle_version: String,
    pub bundle_hash: String,
    pub started: String,
}

/// What the last interrupted install was, kept for `status` and the D-Bus `LastError`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Interrupted {
    pub slot: SlotName,
    pub bundle_version: String,
    pub started: String,
    pub detected: String,
    /// True when the cut came after the commit point (the install had in fact completed).
    pub completed: bool,
}

impl Interrupted {
    pub fn describe(&self) -> String {
        if self.completed {
            format!(
                "the install of version {} into {} (started {}) was cut off after it completed; cleanup finished on {}",
                self.bundle_version, self.slot, self.started, self.detected
            )
        } else {
            format!(
                "the install of version {} into {} (started {}) was interrupted; {} was left marked bad and the previous slot stays in use (detected {})",
                self.bundle_version, self.slot, self.started, self.slot, self.detected
            )
        }
    }
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(JOURNAL)
}

pub fn write(data_dir: &Path, journal: &Journal) -> std::io::Result<()> {
    let text = toml::to_string(journal).expect("journals serialize");
    crate::util::write_atomic(&path(data_dir), text.as_bytes())
}

pub fn read(data_dir: &Path) -> Option<Journal> {
    let text = crate::util::read_bounded_to_string(&path(data_dir), 64 * 1024).ok()?;
    match toml::from_str(&text) {
        Ok(j) => Some(j),
        Err(e) => {
            log::warn!(
                "ignoring unreadable install journal {}: {e}",
                path(data_dir).display()
            );
            None
        }
    }
}

pub fn remove(data_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path(data_dir)) {
        Ok(()) => crate::util::fsync_dir(data_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn write_interrupted(data_dir: &Path, i: &Interrupted) -> std::io::Result<()> {
    let text = toml::to_string(i).expect("serializes");
    crate::util::write_atomic(&data_dir.join(INTERRUPTED), text.as_bytes())
}

pub fn read_interrupted(data_dir: &Path) -> Option<Interrupted> {
    let text = crate::util::read_bounded_to_string(&data_dir.join(INTERRUPTED), 64 * 1024).ok()?;
    toml::from_str(&text).ok()
}

pub fn clear_interrupted(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(INTERRUPTED));
}
