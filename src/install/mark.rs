//! Marking slots through the install engine: under the install lock, and
//! only a slot setup-root would boot can be made good or active.
//!
//! Marks change what the bootloader boots next, so they exclude installs
//! (which write the inactive slot) the same way installs exclude each
//! other. Marking a slot good or active that holds nothing, or whose record
//! setup-root would refuse, would leave the bootloader trying a slot that
//! cannot boot: refused. Marking bad is always possible. Marking the booted
//! slot good also raises the anti-rollback floor ([`super::security`]) to
//! its security version; activating a slot below the floor is refused.

use super::{InstallError, InstallLock, security};
use crate::boot::mark::{self, MarkOutcome, MarkState};
use crate::config::SystemConfig;
use crate::slot::check::{self, SlotCheckError};
use crate::slot::record::RecordError;

/// Marks the slot `identifier` names (`booted`, `other` or a slot name).
pub fn mark(
    config: &SystemConfig,
    state: MarkState,
    identifier: &str,
) -> Result<MarkOutcome, InstallError> {
    let _lock = InstallLock::acquire(&config.system.data_directory, "marking a slot")?;
    let bootloader = crate::boot::from_config(config)?;
    super::recover_locked(config, bootloader.as_ref())?;
    let booted = crate::slot::booted::detect(config);
    let slot = mark::target(config, booted.bootname(), identifier)?;
    let store = &config.store.path;

    let manifest = match state {
        MarkState::Bad => None,
        MarkState::Good | MarkState::Active => {
            let refuse = |reason: String| InstallError::NotBootable {
                slot: slot.clone(),
                state: state.as_str(),
                reason,
            };
            let verified = check::verify_slot(config, store, &slot, None).map_err(|e| match e {
                SlotCheckError::Record(RecordError::Missing { .. }) => refuse(
                    "it holds nothing (no slot record), so the bootloader would try a slot that \
                     cannot boot; install a bundle into it first"
                        .into(),
                ),
                other => refuse(format!("setup-root would refuse to boot it: {other}")),
            })?;
            verified.manifest
        }
    };
    if state == MarkState::Active
        && let Some(m) = &manifest
    {
        let floor = security::load(store)?;
        if m.security_version < floor.floor {
            return Err(InstallError::SecurityVersionTooOld {
                bundle_version: m.version.clone(),
                security_version: m.security_version,
                floor: floor.floor,
                raised: describe_raise(&floor),
            });
        }
    }

    let mut outcome = mark::mark(
        config,
        bootloader.as_ref(),
        booted.bootname(),
        state,
        identifier,
    )?;
    if state == MarkState::Good
        && booted.slot() == Some(&slot)
        && let Some(m) = &manifest
        && let Some(floor) =
            security::raise(store, m.security_version, &slot.to_string(), &m.version)?
    {
        log::info!("security version floor raised to {floor} by {slot}");
        outcome
            .message
            .push_str(&format!("; security version floor raised to {floor}"));
    }
    Ok(outcome)
}

/// "rootfs.1 (version 2.4) at …", for messages.
pub(super) fn describe_raise(floor: &security::SecurityFloor) -> String {
    if floor.raised_by.is_empty() {
        "a slot".into()
    } else {
        format!(
            "{} (version {}) at {}",
            floor.raised_by, floor.raised_with_version, floor.raised_at
        )
    }
}
