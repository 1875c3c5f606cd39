//! The system's status as `didymos status` and `GetSlotStatus` show it.
//! CONTRACT: `status::collect(&SystemConfig) -> Result<SystemStatus, StatusError>`.

use serde::Serialize;

use crate::boot::BootState;
use crate::slot::{Bootname, SlotName, SlotRecord};

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
    pub slots: Vec<SlotStatus>,
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
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{0}")]
    Pending(String),
}
