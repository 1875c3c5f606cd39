//! The system's status as `didymos status` and `GetSlotStatus` show it.

use serde::Serialize;

use crate::boot::BootState;
use crate::config::SlotKind;
use crate::config::SystemConfig;
use crate::slot::{Bootname, RawRecord, SlotName, SlotRecord};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SystemStatus {
    pub compatible: String,
    pub variant: Option<String>,
    pub bootloader: String,
    /// The bootname from the kernel command line, if any.
    pub booted: Option<Bootname>,
    /// The slot that bootname belongs to.
    pub booted_slot: Option<SlotName>,
    /// The slot the bootloader will try next.
    pub primary: Option<SlotName>,
    /// The version of the bundle in the booted slot.
    pub system_version: Option<String>,
    /// An install that was interrupted (power cut, kill) and cleaned up at the next start.
    pub interrupted_install: Option<String>,
    /// The slot activated last failed to boot and the bootloader fell back.
    pub rollback: Option<String>,
    /// Anti-rollback: bundles below this security version are refused.
    pub security_floor: u64,
    /// Why the floor could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_floor_error: Option<String>,
    pub slots: Vec<SlotStatus>,
}

impl SystemStatus {
    /// What is wrong with the slots' state, one line each (unreadable
    /// records, an unreadable floor); `didymos fsck` checks more.
    pub fn problems(&self) -> Vec<String> {
        let records = self.slots.iter().filter_map(|s| {
            s.record_error.as_ref().map(|e| {
                format!(
                    "slot {}: {e}; setup-root would refuse to boot it and garbage collection \
                     removes nothing until it is reinstalled (see didymos fsck)",
                    s.name
                )
            })
        });
        records.chain(self.security_floor_error.clone()).collect()
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SlotStatus {
    pub name: SlotName,
    pub class: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub bootname: Option<Bootname>,
    pub device: Option<String>,
    pub parent: Option<SlotName>,
    /// "booted", "active" (primary, not booted) or "inactive".
    pub state: String,
    /// The bootloader's view: good or bad (None for slots without a bootname).
    pub boot_status: Option<BootState>,
    pub attempts_left: Option<u32>,
    /// What is installed, if anything.
    pub record: Option<SlotRecord>,
    /// The record exists but cannot be read or parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_error: Option<String>,
    /// The security version of the installed bundle (from its stored manifest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_version: Option<u64>,
    /// For a `raw` slot: the image written to its device, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawRecord>,
    /// Where the slot lives: its block device for a `raw` slot, its directory
    /// in the store (record and image) for a `composefs` slot. RAUC's
    /// `device` key on D-Bus.
    #[serde(skip)]
    pub location: String,
    /// What the slot holds, in RAUC's words: "ok" (a complete install),
    /// "update" (an install into it is running or was cut off) or "empty".
    /// RAUC's `status` key on D-Bus.
    #[serde(skip)]
    pub install_status: String,
}

/// [`SlotStatus::install_status`] values.
pub const SLOT_OK: &str = "ok";
pub const SLOT_UPDATING: &str = "update";
pub const SLOT_EMPTY: &str = "empty";
/// A slot whose record cannot be read: setup-root would not boot it.
pub const SLOT_DAMAGED: &str = "damaged";

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("bootloader: {0}")]
    Bootloader(#[from] crate::boot::BootError),
}

/// Gathers the status from the configuration, the kernel command line, the
/// bootloader and the slot records. Read-only: an interrupted install is
/// reported, not cleaned up (that needs the install lock).
pub fn collect(config: &SystemConfig) -> Result<SystemStatus, StatusError> {
    let bootloader = crate::boot::from_config(config)?;
    let booted = crate::slot::booted::detect(config);
    let primary_bootname = bootloader.get_primary()?;
    let primary = primary_bootname
        .as_ref()
        .and_then(|b| config.slot_by_bootname(b))
        .map(|s| s.name.clone());
    let data_dir = &config.system.data_directory;
    let interrupted_install = match crate::install::journal::read(data_dir) {
        Some(j) => Some(format!(
            "an install of version {} into {} (started {}) did not finish; \
             it is cleaned up by the next install or `didymos gc`",
            j.bundle_version, j.slot, j.started
        )),
        None => crate::install::journal::read_interrupted(data_dir).map(|i| i.describe()),
    };
    let (security_floor, security_floor_error) =
        match crate::install::security::load(&config.store.path) {
            Ok(f) => (f.floor, None),
            Err(e) => (0, Some(e.to_string())),
        };
    let installing = crate::install::journal::read(data_dir).map(|j| j.slot);
    let mut slots = Vec::new();
    for slot in &config.slots {
        let (mut record, mut record_error, mut raw) = (None, None, None);
        match slot.kind {
            SlotKind::Composefs => {
                match crate::slot::check::load_record(&config.store.path, &slot.name) {
                    Ok(r) => record = r,
                    Err(e) => record_error = Some(e.to_string()),
                }
            }
            SlotKind::Raw => raw = RawRecord::load(&config.store.path, &slot.name).ok(),
        }
        let security_version = record
            .as_ref()
            .and_then(|_| SlotRecord::load_signed_manifest(&config.store.path, &slot.name).ok())
            .and_then(|(m, _)| crate::bundle::Manifest::parse(&m).ok())
            .map(|m| m.security_version);
        let (boot_status, attempts_left) = match &slot.bootname {
            Some(b) => (Some(bootloader.get_state(b)?), bootloader.attempts_left(b)?),
            None => (None, None),
        };
        let state = if booted.slot() == Some(&slot.name) {
            "booted"
        } else if primary.as_ref() == Some(&slot.name) {
            "active"
        } else {
            "inactive"
        };
        let install_status = if installing.as_ref() == Some(&slot.name) {
            SLOT_UPDATING
        } else if record_error.is_some() {
            SLOT_DAMAGED
        } else if record.is_some() || raw.is_some() {
            SLOT_OK
        } else {
            SLOT_EMPTY
        };
        let location = match &slot.device {
            Some(d) => d.display().to_string(),
            None => crate::slot::record::slot_dir(&config.store.path, &slot.name)
                .display()
                .to_string(),
        };
        slots.push(SlotStatus {
            name: slot.name.clone(),
            class: slot.name.class().to_owned(),
            kind: slot.kind.as_str().to_owned(),
            bootname: slot.bootname.clone(),
            device: slot.device.as_ref().map(|d| d.display().to_string()),
            parent: slot.parent.clone(),
            state: state.to_owned(),
            boot_status,
            attempts_left,
            record,
            record_error,
            security_version,
            raw,
            location,
            install_status: install_status.to_owned(),
        });
    }
    let system_version = booted
        .slot()
        .and_then(|b| slots.iter().find(|s| &s.name == b))
        .and_then(|s| s.record.as_ref())
        .map(|r| r.bundle_version.clone());
    let rollback = detect_rollback(&slots);
    Ok(SystemStatus {
        compatible: config.system.compatible.clone(),
        variant: config.system.variant.clone(),
        bootloader: bootloader.name().to_owned(),
        booted: booted.bootname().cloned(),
        booted_slot: booted.slot().cloned(),
        primary,
        system_version,
        interrupted_install,
        rollback,
        security_floor,
        security_floor_error,
        slots,
    })
}

/// A rollback shows as: another slot was activated after the booted one
/// (its record's activation is newer), and the bootloader now calls it bad —
/// it was tried and never marked good.
pub fn detect_rollback(slots: &[SlotStatus]) -> Option<String> {
    let booted = slots.iter().find(|s| s.state == "booted")?;
    let booted_at = booted
        .record
        .as_ref()
        .and_then(|r| r.activated_timestamp.clone())
        .unwrap_or_default();
    slots
        .iter()
        .filter(|s| s.boot_status == Some(BootState::Bad))
        .filter_map(|s| {
            let r = s.record.as_ref()?;
            let at = r.activated_timestamp.as_ref()?;
            (at.as_str() > booted_at.as_str()).then(|| {
                format!(
                    "rollback: {} (version {}, activated {at}) never got marked good and the \
                     bootloader fell back to {} (version {})",
                    s.name,
                    r.bundle_version,
                    booted.name,
                    booted
                        .record
                        .as_ref()
                        .map_or("unknown", |r| r.bundle_version.as_str())
                )
            })
        })
        .next()
}
