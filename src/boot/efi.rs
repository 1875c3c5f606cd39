//! `bootloader = "efi"`: the firmware's own boot manager, through efivarfs.
//!
//! Each slot has a `Boot####` load option whose description (the label the
//! boot menu shows) is the slot's bootname; didymos finds the entries by
//! label and never creates, changes or deletes `Boot####` variables. It
//! changes only `BootOrder` (the permanent order) and `BootNext` (a one-shot
//! choice the firmware deletes as it boots it), RAUC's conventions:
//!
//! - **active X**: `BootNext` = X's entry. The firmware boots X once; if X
//!   does not confirm itself, the next reset follows `BootOrder` again, back
//!   to the slot that was good. The firmware has no counter, so the attempt
//!   budget of a trial is exactly one boot (`[system] boot-attempts` does not
//!   apply);
//! - **good X**: X's entry first in `BootOrder` (the trial is made
//!   permanent); a pending `BootNext` for X is dropped, it has become
//!   redundant;
//! - **bad X**: X's entry removed from `BootOrder`, and `BootNext` deleted if
//!   it names X. The entry itself stays, so X can be activated again;
//! - **state**: X is good while the firmware may boot it: its entry is in
//!   `BootOrder` or is `BootNext`;
//! - **primary**: the first entry of `BootNext`, then `BootOrder`, that
//!   belongs to a slot;
//! - **booted**: the slot whose entry `BootCurrent` names.
//!
//! Entries that belong to no slot (another OS, the firmware's shell, network
//! boot) keep their place in `BootOrder` and are never touched.

use std::fmt;

use super::efivar::{
    DEFAULT_ATTRIBUTES, LoadOption, VarError, boot_option_name, encode_boot_order,
    parse_boot_order, parse_option_number,
};
use super::efivarfs::Efivarfs;
use super::{BootError, BootState, Bootloader};
use crate::slot::Bootname;

#[derive(Debug)]
pub struct EfiBootloader {
    vars: Efivarfs,
    bootnames: Vec<Bootname>,
}

/// One `Boot####` variable.
#[derive(Debug, Clone)]
pub struct BootEntry {
    pub number: u16,
    pub option: LoadOption,
}

/// The boot manager's variables as read.
#[derive(Debug, Clone)]
pub struct BootManager {
    /// The readable `Boot####` entries, by number.
    pub entries: Vec<BootEntry>,
    /// `Boot####` variables that could not be parsed (left alone).
    pub unreadable: Vec<VarError>,
    pub order: Vec<u16>,
    pub next: Option<u16>,
    /// `BootCurrent`, or why it cannot be read (only [`Bootloader::get_current`]
    /// needs it, so a broken one does not stop marking).
    pub current: Result<Option<u16>, String>,
    order_attributes: Option<u32>,
    next_attributes: Option<u32>,
}

impl BootManager {
    /// The entry with option number `number`.
    pub fn entry(&self, number: u16) -> Option<&BootEntry> {
        self.entries.iter().find(|e| e.number == number)
    }

    /// The entries labelled `label`.
    fn labelled<'a>(&'a self, label: &'a str) -> impl Iterator<Item = &'a BootEntry> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.option.description == label)
    }
}

/// What `efibootmgr -v` shows, without the optional data.
impl fmt::Display for BootManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.current {
            Ok(Some(n)) => writeln!(f, "BootCurrent: {n:04X}")?,
            Ok(None) => {}
            Err(e) => writeln!(f, "{e}")?,
        }
        if let Some(n) = self.next {
            writeln!(f, "BootNext: {n:04X}")?;
        }
        let order: Vec<String> = self.order.iter().map(|n| format!("{n:04X}")).collect();
        writeln!(f, "BootOrder: {}", order.join(","))?;
        for e in &self.entries {
            writeln!(
                f,
                "{}{} {}\t{}",
                boot_option_name(e.number),
                if e.option.is_active() { "*" } else { " " },
                e.option.description,
                e.option.file_path
            )?;
        }
        for e in &self.unreadable {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

impl EfiBootloader {
    /// `efivarfs`: where efivarfs is mounted (`[bootloader] efivarfs`).
    pub fn new(efivarfs: std::path::PathBuf, bootnames: Vec<Bootname>) -> Self {
        Self {
            vars: Efivarfs::new(efivarfs),
            bootnames,
        }
    }

    fn parse_error(&self, e: VarError) -> BootError {
        BootError::Format {
            path: self.vars.dir().to_owned(),
            message: e.to_string(),
        }
    }

    /// Reads `BootOrder`, `BootNext`, `BootCurrent` and every `Boot####`.
    pub fn boot_manager(&self) -> Result<BootManager, BootError> {
        let mut bm = BootManager {
            entries: Vec::new(),
            unreadable: Vec::new(),
            order: Vec::new(),
            next: None,
            current: Ok(None),
            order_attributes: None,
            next_attributes: None,
        };
        if let Some(v) = self.vars.read("BootOrder")? {
            bm.order = parse_boot_order("BootOrder", &v.data).map_err(|e| self.parse_error(e))?;
            bm.order_attributes = Some(v.attributes);
        }
        if let Some(v) = self.vars.read("BootNext")? {
            bm.next =
                Some(parse_option_number("BootNext", &v.data).map_err(|e| self.parse_error(e))?);
            bm.next_attributes = Some(v.attributes);
        }
        bm.current = match self.vars.read("BootCurrent") {
            Ok(Some(v)) => parse_option_number("BootCurrent", &v.data)
                .map(Some)
                .map_err(|e| format!("{}: {e}", self.vars.dir().display())),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        };
        for number in self.vars.boot_option_numbers()? {
            let name = boot_option_name(number);
            let Some(v) = self.vars.read(&name)? else {
                continue; // deleted meanwhile
            };
            match LoadOption::parse(&name, &v.data) {
                Ok(option) => bm.entries.push(BootEntry { number, option }),
                Err(e) => {
                    log::warn!("ignoring a boot entry that cannot be read: {e}");
                    bm.unreadable.push(e);
                }
            }
        }
        Ok(bm)
    }

    fn check_known(&self, slot: &Bootname) -> Result<(), BootError> {
        if self.bootnames.contains(slot) {
            Ok(())
        } else {
            Err(BootError::UnknownSlot(slot.clone()))
        }
    }

    /// The option number of `slot`'s entry: the one `Boot####` labelled
    /// with its bootname.
    fn slot_entry(&self, bm: &BootManager, slot: &Bootname) -> Result<u16, BootError> {
        self.check_known(slot)?;
        let found: Vec<u16> = bm.labelled(slot.as_str()).map(|e| e.number).collect();
        match found.as_slice() {
            [n] => Ok(*n),
            [] => {
                let known: Vec<String> = bm
                    .entries
                    .iter()
                    .map(|e| format!("{} {:?}", boot_option_name(e.number), e.option.description))
                    .collect();
                let mut known = if known.is_empty() {
                    "there are no boot entries".to_owned()
                } else {
                    format!("the entries are {}", known.join(", "))
                };
                if !bm.unreadable.is_empty() {
                    let bad: Vec<String> = bm
                        .unreadable
                        .iter()
                        .map(|e| format!("{}: {}", e.name, e.problem))
                        .collect();
                    known.push_str(&format!(
                        "; entries that cannot be read: {}",
                        bad.join("; ")
                    ));
                }
                Err(BootError::Format {
                    path: self.vars.dir().to_owned(),
                    message: format!(
                        "no EFI boot entry is labelled \"{slot}\" (the slot's bootname); {known}. \
                         Create one for the slot, e.g. efibootmgr --create --disk /dev/sda \
                         --part 1 --label {slot} --loader '\\EFI\\{slot}\\linux.efi'"
                    ),
                })
            }
            many => {
                let names: Vec<String> = many.iter().map(|n| boot_option_name(*n)).collect();
                Err(BootError::Format {
                    path: self.vars.dir().to_owned(),
                    message: format!(
                        "{} are all labelled \"{slot}\"; a slot's entry must be unique — \
                         delete the stale ones with efibootmgr --bootnum XXXX --delete-bootnum",
                        names.join(", ")
                    ),
                })
            }
        }
    }

    /// The configured slot whose entry is `number`, if any.
    fn slot_of(&self, bm: &BootManager, number: u16) -> Option<Bootname> {
        let label = &bm.entry(number)?.option.description;
        self.bootnames
            .iter()
            .find(|b| b.as_str() == label.as_str())
            .cloned()
    }

    fn write_order(&self, bm: &BootManager, order: &[u16]) -> Result<(), BootError> {
        if order == bm.order {
            return Ok(());
        }
        log::info!(
            "EFI: BootOrder {} -> {}",
            hex_list(&bm.order),
            hex_list(order)
        );
        if order.is_empty() {
            // efivarfs deletes a variable written with no data; say so.
            return self.vars.delete("BootOrder");
        }
        self.vars.write(
            "BootOrder",
            bm.order_attributes.unwrap_or(DEFAULT_ATTRIBUTES),
            &encode_boot_order(order),
        )
    }

    fn delete_next(&self, bm: &BootManager) -> Result<(), BootError> {
        if let Some(n) = bm.next {
            log::info!("EFI: deleting BootNext ({n:04X})");
            self.vars.delete("BootNext")?;
        }
        Ok(())
    }
}

fn hex_list(order: &[u16]) -> String {
    let list: Vec<String> = order.iter().map(|n| format!("{n:04X}")).collect();
    if list.is_empty() {
        "(empty)".into()
    } else {
        list.join(",")
    }
}

impl Bootloader for EfiBootloader {
    fn name(&self) -> &'static str {
        "efi"
    }

    fn get_primary(&self) -> Result<Option<Bootname>, BootError> {
        let bm = self.boot_manager()?;
        Ok(bm
            .next
            .iter()
            .chain(&bm.order)
            .find_map(|n| self.slot_of(&bm, *n)))
    }

    fn set_primary(&self, slot: &Bootname) -> Result<(), BootError> {
        let bm = self.boot_manager()?;
        let n = self.slot_entry(&bm, slot)?;
        log::info!("EFI: BootNext = {n:04X} (slot {slot}, one trial boot)");
        self.vars.write(
            "BootNext",
            bm.next_attributes.unwrap_or(DEFAULT_ATTRIBUTES),
            &n.to_le_bytes(),
        )
    }

    fn get_state(&self, slot: &Bootname) -> Result<BootState, BootError> {
        let bm = self.boot_manager()?;
        let n = self.slot_entry(&bm, slot)?;
        Ok(if bm.next == Some(n) || bm.order.contains(&n) {
            BootState::Good
        } else {
            BootState::Bad
        })
    }

    fn set_state(&self, slot: &Bootname, state: BootState) -> Result<(), BootError> {
        let bm = self.boot_manager()?;
        let n = self.slot_entry(&bm, slot)?;
        let mut order: Vec<u16> = bm.order.iter().copied().filter(|&o| o != n).collect();
        match state {
            BootState::Good => {
                if let Some(e) = bm.entry(n).filter(|e| !e.option.is_active()) {
                    log::warn!(
                        "{} \"{slot}\" is not active (LOAD_OPTION_ACTIVE is clear), so the \
                         firmware skips it in BootOrder; activate it with \
                         efibootmgr --bootnum {:04X} --active",
                        boot_option_name(e.number),
                        e.number
                    );
                }
                order.insert(0, n);
                // BootOrder first: a power cut in between still boots the slot.
                self.write_order(&bm, &order)?;
                if bm.next == Some(n) {
                    self.delete_next(&bm)?;
                }
            }
            BootState::Bad => {
                // BootNext first: it is what the firmware would boot next.
                if bm.next == Some(n) {
                    self.delete_next(&bm)?;
                }
                self.write_order(&bm, &order)?;
            }
        }
        Ok(())
    }

    fn get_current(&self) -> Result<Option<Bootname>, BootError> {
        let bm = self.boot_manager()?;
        let Some(current) = bm.current.clone().map_err(BootError::Other)? else {
            return Ok(None);
        };
        let slot = self.slot_of(&bm, current);
        if slot.is_none() {
            log::debug!(
                "BootCurrent {current:04X} is no slot's entry ({})",
                bm.entry(current)
                    .map_or("no such entry".into(), |e| format!(
                        "{:?}",
                        e.option.description
                    ))
            );
        }
        Ok(slot)
    }
}
