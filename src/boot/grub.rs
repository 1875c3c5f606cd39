//! `bootloader = "grub"`: the GRUB environment block, read, and rewritten in
//! place where it lies (see [`GrubBootloader::store`]).
//!
//! Two counting schemes (`[bootloader] grub-scheme`):
//!
//! - `rauc`: RAUC's variables `ORDER`, `<X>_OK`, `<X>_TRY` (one try per
//!   activation), so a device keeps the GRUB script it had under RAUC;
//! - `attempts`: `ORDER`, `<X>_OK`, `<X>_LEFT`, a per-slot attempts counter
//!   counted down by the shipped `boot/grub/didymos.cfg`; the semantics are
//!   those of [`Counters`].

use std::path::PathBuf;

use super::counting::{Counters, SlotCounter};
use super::grubenv::{Grubenv, MAX_SIZE};
use super::{BootError, BootState, Bootloader};
use crate::config::GrubScheme;
use crate::slot::Bootname;

/// The shipped script decrements counters through a table of this size.
pub const MAX_ATTEMPTS: u32 = 32;

#[derive(Debug)]
pub struct GrubBootloader {
    path: PathBuf,
    scheme: GrubScheme,
    bootnames: Vec<Bootname>,
    attempts: u32,
}

/// Reads the attempts-scheme counters from an environment. Variables that
/// are missing take the shipped script's defaults (a fresh device: the first
/// slot good with a full budget); `<X>_OK` is good only when it is `1`; a
/// `<X>_LEFT` that is not a decimal number counts as 0, and one above
/// [`MAX_ATTEMPTS`] as [`MAX_ATTEMPTS`], as in the script.
pub fn counters_from_env(
    env: &Grubenv,
    bootnames: &[Bootname],
    attempts: u32,
) -> Result<Counters, String> {
    let mut counters = Counters::fresh(bootnames, attempts);
    if let Some(order) = env.get("ORDER") {
        counters.order = parse_order(order)?;
    }
    let mut names: Vec<Bootname> = counters.order.clone();
    names.extend(bootnames.iter().cloned());
    for b in names {
        let mut c = counters.counter(&b);
        if let Some(ok) = env.get(&format!("{b}_OK")) {
            c.good = ok == "1";
        }
        if let Some(left) = env.get(&format!("{b}_LEFT")) {
            c.left = left.parse::<u32>().unwrap_or(0).min(MAX_ATTEMPTS);
        }
        counters.slots.insert(b, c);
    }
    Ok(counters)
}

/// Writes the attempts-scheme counters into an environment (other
/// variables are kept).
pub fn counters_to_env(counters: &Counters, env: &mut Grubenv) -> Result<(), String> {
    env.set("ORDER", &join(&counters.order))
        .map_err(|e| e.to_string())?;
    for (b, SlotCounter { good, left }) in &counters.slots {
        env.set(&format!("{b}_OK"), if *good { "1" } else { "0" })
            .map_err(|e| e.to_string())?;
        env.set(&format!("{b}_LEFT"), &left.to_string())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Overwrites an existing regular file of exactly `bytes.len()` bytes from
/// its start and fsyncs it; `Ok(false)` when there is no such file.
fn rewrite_in_place(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let file = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() != bytes.len() as u64 {
        return Ok(false);
    }
    file.write_all_at(bytes, 0)?;
    file.sync_all()?;
    Ok(true)
}

fn parse_order(order: &str) -> Result<Vec<Bootname>, String> {
    order
        .split_whitespace()
        .map(|s| Bootname::new(s).map_err(|e| format!("ORDER={order:?}: {e}")))
        .collect()
}

fn join(order: &[Bootname]) -> String {
    order
        .iter()
        .map(Bootname::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

impl GrubBootloader {
    pub fn new(
        path: PathBuf,
        scheme: GrubScheme,
        bootnames: Vec<Bootname>,
        attempts: u32,
    ) -> Result<Self, String> {
        if scheme == GrubScheme::Attempts && attempts > MAX_ATTEMPTS {
            return Err(format!(
                "boot-attempts = {attempts} is more than the GRUB script counts \
                 (at most {MAX_ATTEMPTS})"
            ));
        }
        Ok(Self {
            path,
            scheme,
            bootnames,
            attempts,
        })
    }

    fn format_error(&self, message: impl std::fmt::Display) -> BootError {
        BootError::Format {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }

    /// The environment block; a missing file is an empty environment.
    pub fn load(&self) -> Result<Grubenv, BootError> {
        match crate::util::read_bounded(&self.path, MAX_SIZE as u64) {
            Ok(bytes) => Grubenv::parse(&bytes).map_err(|e| self.format_error(e)),
            Err(crate::util::BoundedReadError::Io(e))
                if e.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(Grubenv::default())
            }
            Err(e) => Err(self.format_error(e)),
        }
    }

    /// Writes the environment block.
    ///
    /// An existing block is rewritten in place, in its own data blocks, and
    /// fsynced: what GRUB's own `save_env` does. GRUB reads the boot
    /// partition itself and replays no journal, so a block replaced by rename
    /// can be invisible or half there to GRUB after a power cut (a directory
    /// entry in the journal, an unclean ext2), while a block rewritten in
    /// place is always where GRUB looks, with the old or the new content: the
    /// block keeps its size and header, and a two-slot device's variables fit
    /// in its first 512-byte sector. A missing file is created by rename.
    pub fn store(&self, env: &Grubenv) -> Result<(), BootError> {
        let bytes = env.render().map_err(|e| self.format_error(e))?;
        let io_error = |source| BootError::Io {
            path: self.path.clone(),
            source,
        };
        if rewrite_in_place(&self.path, &bytes).map_err(io_error)? {
            return Ok(());
        }
        crate::util::write_atomic(&self.path, &bytes).map_err(io_error)
    }

    fn check_known(&self, slot: &Bootname) -> Result<(), BootError> {
        if self.bootnames.contains(slot) {
            Ok(())
        } else {
            Err(BootError::UnknownSlot(slot.clone()))
        }
    }

    fn counters(&self, env: &Grubenv) -> Result<Counters, BootError> {
        counters_from_env(env, &self.bootnames, self.attempts).map_err(|e| self.format_error(e))
    }

    fn update_counters(&self, change: impl FnOnce(&mut Counters)) -> Result<(), BootError> {
        let mut env = self.load()?;
        let mut counters = self.counters(&env)?;
        change(&mut counters);
        counters_to_env(&counters, &mut env).map_err(|e| self.format_error(e))?;
        self.store(&env)
    }

    /// RAUC scheme: the order, with every configured slot present.
    fn rauc_order(&self, env: &Grubenv) -> Result<Vec<Bootname>, BootError> {
        let mut order = match env.get("ORDER") {
            Some(o) => parse_order(o).map_err(|e| self.format_error(e))?,
            None => Vec::new(),
        };
        for b in &self.bootnames {
            if !order.contains(b) {
                order.push(b.clone());
            }
        }
        Ok(order)
    }

    fn rauc_set(&self, env: &mut Grubenv, name: &str, value: &str) -> Result<(), BootError> {
        env.set(name, value).map_err(|e| self.format_error(e))
    }

    fn rauc_usable(env: &Grubenv, b: &Bootname) -> bool {
        env.get(&format!("{b}_OK")) == Some("1") && env.get(&format!("{b}_TRY")) == Some("0")
    }
}

impl Bootloader for GrubBootloader {
    fn name(&self) -> &'static str {
        "grub"
    }

    fn get_primary(&self) -> Result<Option<Bootname>, BootError> {
        let env = self.load()?;
        match self.scheme {
            GrubScheme::Attempts => Ok(self.counters(&env)?.primary().cloned()),
            GrubScheme::Rauc => Ok(self
                .rauc_order(&env)?
                .into_iter()
                .find(|b| Self::rauc_usable(&env, b))),
        }
    }

    fn set_primary(&self, slot: &Bootname) -> Result<(), BootError> {
        self.check_known(slot)?;
        match self.scheme {
            GrubScheme::Attempts => self.update_counters(|c| c.set_primary(slot, self.attempts)),
            GrubScheme::Rauc => {
                let mut env = self.load()?;
                let mut order = self.rauc_order(&env)?;
                order.retain(|b| b != slot);
                order.insert(0, slot.clone());
                self.rauc_set(&mut env, "ORDER", &join(&order))?;
                self.rauc_set(&mut env, &format!("{slot}_OK"), "1")?;
                self.rauc_set(&mut env, &format!("{slot}_TRY"), "0")?;
                self.store(&env)
            }
        }
    }

    fn get_state(&self, slot: &Bootname) -> Result<BootState, BootError> {
        self.check_known(slot)?;
        let env = self.load()?;
        match self.scheme {
            GrubScheme::Attempts => Ok(self.counters(&env)?.state(slot)),
            GrubScheme::Rauc => Ok(if env.get(&format!("{slot}_OK")) == Some("1") {
                BootState::Good
            } else {
                BootState::Bad
            }),
        }
    }

    fn set_state(&self, slot: &Bootname, state: BootState) -> Result<(), BootError> {
        self.check_known(slot)?;
        match self.scheme {
            GrubScheme::Attempts => {
                self.update_counters(|c| c.set_state(slot, state, self.attempts))
            }
            GrubScheme::Rauc => {
                let mut env = self.load()?;
                if env.get("ORDER").is_none() {
                    let order = self.rauc_order(&env)?;
                    self.rauc_set(&mut env, "ORDER", &join(&order))?;
                }
                let ok = if state == BootState::Good { "1" } else { "0" };
                self.rauc_set(&mut env, &format!("{slot}_OK"), ok)?;
                self.rauc_set(&mut env, &format!("{slot}_TRY"), "0")?;
                self.store(&env)
            }
        }
    }

    fn attempts_left(&self, slot: &Bootname) -> Result<Option<u32>, BootError> {
        self.check_known(slot)?;
        let env = self.load()?;
        Ok(Some(match self.scheme {
            GrubScheme::Attempts => self.counters(&env)?.counter(slot).left,
            GrubScheme::Rauc => u32::from(Self::rauc_usable(&env, slot)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bootname {
        Bootname::new(s).unwrap()
    }

    fn env(vars: &[(&str, &str)]) -> Grubenv {
        let mut e = Grubenv::default();
        for (n, v) in vars {
            e.set(n, v).unwrap();
        }
        e
    }

    #[test]
    fn counters_from_variables() {
        let ab = [b("A"), b("B")];
        let c = |good, left| SlotCounter { good, left };
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], [SlotCounter; 2]);
        let cases: &[Case] = &[
            (&[], &["A", "B"], [c(true, 3), c(false, 0)]),
            (
                &[("ORDER", "B A"), ("B_OK", "1"), ("B_LEFT", "2")],
                &["B", "A"],
                [c(true, 3), c(true, 2)],
            ),
            (&[("A_OK", "0")], &["A", "B"], [c(false, 3), c(false, 0)]),
            (
                &[("A_OK", "yes"), ("A_LEFT", "x")],
                &["A", "B"],
                [c(false, 0), c(false, 0)],
            ),
            (&[("A_LEFT", "99")], &["A", "B"], [c(true, 32), c(false, 0)]),
            (
                &[("ORDER", "  B   A ")],
                &["B", "A"],
                [c(true, 3), c(false, 0)],
            ),
        ];
        for (vars, order, want) in cases {
            let got = counters_from_env(&env(vars), &ab, 3).unwrap();
            let order: Vec<_> = order.iter().map(|s| b(s)).collect();
            assert_eq!(got.order, order, "{vars:?}");
            assert_eq!(
                [got.counter(&ab[0]), got.counter(&ab[1])],
                *want,
                "{vars:?}"
            );
        }
        let err = counters_from_env(&env(&[("ORDER", "A;B")]), &ab, 3).unwrap_err();
        assert!(err.contains("ORDER=\"A;B\""), "{err}");
    }

    #[test]
    fn counters_to_variables() {
        let mut counters = Counters::fresh(&[b("A"), b("B")], 3);
        counters.set_primary(&b("B"), 3);
        let mut e = env(&[("saved_entry", "0")]);
        counters_to_env(&counters, &mut e).unwrap();
        assert_eq!(
            e.to_string(),
            "saved_entry=0\nORDER=B A\nA_OK=1\nA_LEFT=3\nB_OK=1\nB_LEFT=3\n"
        );
    }

    #[test]
    fn too_many_attempts_for_the_script() {
        let err = GrubBootloader::new("/x".into(), GrubScheme::Attempts, vec![], 33).unwrap_err();
        assert!(err.contains("at most 32"), "{err}");
        assert!(GrubBootloader::new("/x".into(), GrubScheme::Rauc, vec![], 33).is_ok());
    }
}
