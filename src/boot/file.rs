//! `bootloader = "file"`: a small TOML file standing in for a bootloader.
//!
//! Same semantics as the GRUB `attempts` scheme (order, good flag, attempts
//! left per slot), plus [`FileBootloader::simulate_boot`], which does what the
//! shipped GRUB script does at power-on. Tests and the demo use it to reboot
//! a directory-backed device.
//!
//! ```toml
//! order = ["B", "A"]
//!
//! [slot.A]
//! good = true
//! attempts-left = 3
//! ```
//!
//! A missing file is a fresh device ([`Counters::fresh`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::counting::{Counters, SlotCounter};
use super::{BootError, BootState, Bootloader};
use crate::slot::Bootname;

/// Largest state file read.
const MAX_STATE_SIZE: u64 = 64 * 1024;

#[derive(Debug)]
pub struct FileBootloader {
    path: PathBuf,
    bootnames: Vec<Bootname>,
    attempts: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct StateFile {
    order: Vec<Bootname>,
    #[serde(default)]
    slot: BTreeMap<Bootname, SlotEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SlotEntry {
    good: bool,
    attempts_left: u32,
}

/// Parses the state file's text.
pub fn parse_state(text: &str) -> Result<Counters, String> {
    let state: StateFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(1);
        format!("line {line}: {}", e.message().trim())
    })?;
    Ok(Counters {
        order: state.order,
        slots: state
            .slot
            .into_iter()
            .map(|(b, e)| {
                (
                    b,
                    SlotCounter {
                        good: e.good,
                        left: e.attempts_left,
                    },
                )
            })
            .collect(),
    })
}

/// Renders the state file's text.
pub fn render_state(counters: &Counters) -> String {
    let state = StateFile {
        order: counters.order.clone(),
        slot: counters
            .slots
            .iter()
            .map(|(b, c)| {
                (
                    b.clone(),
                    SlotEntry {
                        good: c.good,
                        attempts_left: c.left,
                    },
                )
            })
            .collect(),
    };
    let body = toml::to_string(&state).expect("the state file always serializes");
    format!("# didymos file bootloader state\n{body}")
}

impl FileBootloader {
    pub fn new(path: PathBuf, bootnames: Vec<Bootname>, attempts: u32) -> Self {
        Self {
            path,
            bootnames,
            attempts,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current counters (a fresh device when the file does not exist).
    pub fn load(&self) -> Result<Counters, BootError> {
        match crate::util::read_bounded_to_string(&self.path, MAX_STATE_SIZE) {
            Ok(text) => parse_state(&text).map_err(|message| BootError::Format {
                path: self.path.clone(),
                message: format!("not a valid bootloader state file: {message}"),
            }),
            Err(crate::util::BoundedReadError::Io(e))
                if e.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(Counters::fresh(&self.bootnames, self.attempts))
            }
            Err(e) => Err(BootError::Format {
                path: self.path.clone(),
                message: e.to_string(),
            }),
        }
    }

    fn store(&self, counters: &Counters) -> Result<(), BootError> {
        crate::util::write_atomic(&self.path, render_state(counters).as_bytes()).map_err(|source| {
            BootError::Io {
                path: self.path.clone(),
                source,
            }
        })
    }

    fn update(&self, change: impl FnOnce(&mut Counters)) -> Result<(), BootError> {
        let mut counters = self.load()?;
        change(&mut counters);
        self.store(&counters)
    }

    fn check_known(&self, slot: &Bootname) -> Result<(), BootError> {
        if self.bootnames.contains(slot) {
            Ok(())
        } else {
            Err(BootError::UnknownSlot(slot.clone()))
        }
    }

    /// Power-on: choose the first slot in order that is good with attempts
    /// left, count one attempt down and persist it. `None` when no slot can
    /// be booted (the state is left as it is).
    pub fn simulate_boot(&self) -> Result<Option<Bootname>, BootError> {
        let mut counters = self.load()?;
        let chosen = counters.boot();
        match &chosen {
            Some(slot) => {
                log::info!("file bootloader: booting slot {slot}");
                self.store(&counters)?;
            }
            None => log::warn!("file bootloader: no slot is good with attempts left"),
        }
        Ok(chosen)
    }
}

impl Bootloader for FileBootloader {
    fn name(&self) -> &'static str {
        "file"
    }

    fn get_primary(&self) -> Result<Option<Bootname>, BootError> {
        Ok(self.load()?.primary().cloned())
    }

    fn set_primary(&self, slot: &Bootname) -> Result<(), BootError> {
        self.check_known(slot)?;
        self.update(|c| c.set_primary(slot, self.attempts))
    }

    fn get_state(&self, slot: &Bootname) -> Result<BootState, BootError> {
        self.check_known(slot)?;
        Ok(self.load()?.state(slot))
    }

    fn set_state(&self, slot: &Bootname, state: BootState) -> Result<(), BootError> {
        self.check_known(slot)?;
        self.update(|c| c.set_state(slot, state, self.attempts))
    }

    fn attempts_left(&self, slot: &Bootname) -> Result<Option<u32>, BootError> {
        self.check_known(slot)?;
        Ok(Some(self.load()?.counter(slot).left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bootname {
        Bootname::new(s).unwrap()
    }

    #[test]
    fn state_round_trips() {
        let mut c = Counters::fresh(&[b("A"), b("B")], 3);
        c.set_primary(&b("B"), 5);
        let text = render_state(&c);
        assert_eq!(parse_state(&text).unwrap(), c);
        assert!(text.contains("attempts-left = 5"), "{text}");
    }

    #[test]
    fn bad_state_files_are_refused() {
        let cases = [
            ("", "order"),
            ("order = [\"A\"]\nextra = 1\n", "extra"),
            ("order = [\"A B\"]\n", "invalid bootname"),
            (
                "order = []\n[slot.A]\ngood = true\nattempts-left = -1\n",
                "line 4: invalid value",
            ),
        ];
        for (text, want) in cases {
            let err = parse_state(text).unwrap_err();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }
}
