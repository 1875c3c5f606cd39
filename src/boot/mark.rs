//! Marking slots good, bad or active: RAUC's semantics over any backend.
//!
//! The slot is named the way RAUC's `mark-*` commands accept it: `booted`,
//! `other` (the one other bootable slot of the booted slot's class) or a slot
//! name such as `rootfs.1`. With `[system] prevent-late-fallback`, marking the
//! booted slot good also marks the other bootable slots bad, so the device
//! never falls back to an older slot later; a slot that is waiting for its
//! first trial boot (the bootloader's primary, not the booted one) is left
//! alone, so a late mark-good does not cancel an update that was just
//! activated.

use std::fmt;

use super::{BootError, BootState, Bootloader};
use crate::config::SystemConfig;
use crate::slot::{Bootname, SlotName};

/// What to mark a slot as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkState {
    Good,
    Bad,
    /// Boot this slot next, with a fresh attempt budget.
    Active,
}

impl MarkState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Bad => "bad",
            Self::Active => "active",
        }
    }
}

impl fmt::Display for MarkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a successful mark did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkOutcome {
    /// The slot that was marked.
    pub slot: SlotName,
    /// One line for the user, RAUC style.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    #[error(
        "cannot resolve \"{identifier}\": the booted slot is not known (no didymos.slot= \
         on the kernel command line?); name the slot instead, e.g. rootfs.1"
    )]
    NoBootedSlot { identifier: String },
    #[error(
        "the booted slot's bootname \"{0}\" belongs to no slot in system.conf; \
         check the bootnames of the [slot.<class>.<index>] tables"
    )]
    BootedNotConfigured(Bootname),
    #[error("unknown slot \"{identifier}\": expected \"booted\", \"other\" or one of {known}")]
    UnknownSlot { identifier: String, known: String },
    #[error(
        "slot {0} has no bootname, so the bootloader cannot boot it; only slots with a \
         bootname can be marked"
    )]
    NotBootable(SlotName),
    #[error("there is no other bootable slot of class \"{class}\" besides the booted {booted}")]
    NoOther { booted: SlotName, class: String },
    #[error(
        "\"other\" is ambiguous: besides the booted {booted} there are {candidates}; \
         name the slot instead"
    )]
    AmbiguousOther {
        booted: SlotName,
        candidates: String,
    },
    #[error("marking slot {slot} {state} failed: {source}")]
    Backend {
        slot: SlotName,
        state: MarkState,
        #[source]
        source: BootError,
    },
}

/// The slot `identifier` names (`booted`, `other` or a slot name), as
/// [`mark`] resolves it.
pub fn target(
    config: &SystemConfig,
    booted: Option<&Bootname>,
    identifier: &str,
) -> Result<SlotName, MarkError> {
    let booted_slot = booted_slot(config, booted)?;
    Ok(resolve(config, booted_slot.as_ref(), identifier)?.0)
}

fn booted_slot(
    config: &SystemConfig,
    booted: Option<&Bootname>,
) -> Result<Option<SlotName>, MarkError> {
    booted
        .map(|b| {
            config
                .slot_by_bootname(b)
                .map(|s| s.name.clone())
                .ok_or_else(|| MarkError::BootedNotConfigured(b.clone()))
        })
        .transpose()
}

/// Marks the slot `identifier` names as `state`. This is the bootloader
/// side only: [`crate::install::mark`] adds the install lock and the checks
/// of what the slot holds, and is what callers use.
pub fn mark(
    config: &SystemConfig,
    bootloader: &dyn Bootloader,
    booted: Option<&Bootname>,
    state: MarkState,
    identifier: &str,
) -> Result<MarkOutcome, MarkError> {
    let booted_slot = booted_slot(config, booted)?;
    let (slot, bootname) = resolve(config, booted_slot.as_ref(), identifier)?;
    let backend = |source| MarkError::Backend {
        slot: slot.clone(),
        state,
        source,
    };
    let mut message = match state {
        MarkState::Good | MarkState::Bad => {
            let s = if state == MarkState::Good {
                BootState::Good
            } else {
                BootState::Bad
            };
            bootloader.set_state(&bootname, s).map_err(backend)?;
            format!("marked slot {slot} as {state}")
        }
        MarkState::Active => {
            bootloader.set_primary(&bootname).map_err(backend)?;
            format!("activated slot {slot}")
        }
    };
    log::info!(
        "{message} (bootname {bootname}, {} bootloader)",
        bootloader.name()
    );

    if state == MarkState::Good
        && config.system.prevent_late_fallback
        && booted_slot.as_ref() == Some(&slot)
    {
        let primary = bootloader.get_primary().map_err(backend)?;
        for other in config.bootable_slots() {
            let Some(other_bootname) = other.bootname.as_ref() else {
                continue;
            };
            if other.name == slot {
                continue;
            }
            if primary.as_ref() == Some(other_bootname) {
                log::info!(
                    "prevent-late-fallback: leaving {} alone, it is activated for the next boot",
                    other.name
                );
                continue;
            }
            bootloader
                .set_state(other_bootname, BootState::Bad)
                .map_err(|source| MarkError::Backend {
                    slot: other.name.clone(),
                    state: MarkState::Bad,
                    source,
                })?;
            log::info!("prevent-late-fallback: marked slot {} as bad", other.name);
            message.push_str(&format!(
                "; marked slot {} as bad (prevent-late-fallback)",
                other.name
            ));
        }
    }
    Ok(MarkOutcome { slot, message })
}

/// Turns `booted`, `other` or a slot name into a slot and its bootname.
fn resolve(
    config: &SystemConfig,
    booted: Option<&SlotName>,
    identifier: &str,
) -> Result<(SlotName, Bootname), MarkError> {
    let need_booted = || {
        booted.cloned().ok_or_else(|| MarkError::NoBootedSlot {
            identifier: identifier.to_owned(),
        })
    };
    let name = match identifier {
        "booted" => need_booted()?,
        "other" => {
            let booted = need_booted()?;
            let others: Vec<SlotName> = config
                .bootable_slots()
                .filter(|s| s.name.class() == booted.class() && s.name != booted)
                .map(|s| s.name.clone())
                .collect();
            match others.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(MarkError::NoOther {
                        class: booted.class().to_owned(),
                        booted,
                    });
                }
                many => {
                    return Err(MarkError::AmbiguousOther {
                        booted,
                        candidates: join(many),
                    });
                }
            }
        }
        other => SlotName::parse(other)
            .ok()
            .filter(|n| config.slot(n).is_some())
            .ok_or_else(|| MarkError::UnknownSlot {
                identifier: other.chars().take(80).collect(),
                known: join(
                    &config
                        .bootable_slots()
                        .map(|s| s.name.clone())
                        .collect::<Vec<_>>(),
                ),
            })?,
    };
    let slot = config
        .slot(&name)
        .ok_or_else(|| MarkError::NotBootable(name.clone()))?;
    let bootname = slot
        .bootname
        .clone()
        .ok_or_else(|| MarkError::NotBootable(name.clone()))?;
    Ok((name, bootname))
}

fn join(names: &[SlotName]) -> String {
    names
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
