//! `bootloader = "uboot"`: the U-Boot environment located by `fw_env.config`
//! (format-compatible with libubootenv's `fw_printenv`/`fw_setenv`).
//!
//! RAUC's variables: `BOOT_ORDER` (bootnames separated by spaces) and
//! `BOOT_<X>_LEFT` (boot attempts left, hex as U-Boot's `setexpr` writes
//! it). A slot is good while it has attempts left; the semantics are those
//! of [`Counters`] with "good" meaning "attempts left > 0".
//!
//! Writes: with a redundant environment the inactive copy is written with
//! the next flag value and fsynced; it becomes active only once complete
//! (its CRC is valid), so an interrupted write leaves the old copy in use.
//! A single copy in a regular file that holds nothing else is replaced by
//! rename; a single copy inside a larger file or a block device can only be
//! rewritten in place — use a redundant environment there.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::counting::{Counters, SlotCounter};
use super::ubootenv::{EnvLocation, FwEnvConfig, Vars, active_copy, decode, encode};
use super::{BootError, BootState, Bootloader};
use crate::slot::Bootname;

#[derive(Debug)]
pub struct UbootBootloader {
    config_path: PathBuf,
    bootnames: Vec<Bootname>,
    attempts: u32,
}

/// The environment as read: variables, and for a redundant environment the
/// active copy's index and flag.
#[derive(Debug, Clone)]
pub struct LoadedEnv {
    pub vars: Vars,
    active: Option<(usize, u8)>,
}

/// Reads the counters from U-Boot variables; missing variables take the
/// defaults of the shipped script (a fresh device: the first slot with a
/// full budget). A `BOOT_<X>_LEFT` that is not hex counts as 0.
pub fn counters_from_vars(
    vars: &Vars,
    bootnames: &[Bootname],
    attempts: u32,
) -> Result<Counters, String> {
    let mut counters = Counters::fresh(bootnames, attempts);
    if let Some(order) = vars.get("BOOT_ORDER") {
        counters.order = order
            .split_whitespace()
            .map(|s| Bootname::new(s).map_err(|e| format!("BOOT_ORDER={order:?}: {e}")))
            .collect::<Result<_, _>>()?;
    }
    let mut names = counters.order.clone();
    names.extend(bootnames.iter().cloned());
    for b in names {
        let mut left = counters.counter(&b).left;
        if let Some(v) = vars.get(&format!("BOOT_{b}_LEFT")) {
            let hex = v.strip_prefix("0x").unwrap_or(v);
            left = u32::from_str_radix(hex, 16).unwrap_or(0);
        }
        counters.slots.insert(
            b,
            SlotCounter {
                good: left > 0,
                left,
            },
        );
    }
    Ok(counters)
}

/// Writes the counters as U-Boot variables (others are kept).
pub fn counters_to_vars(counters: &Counters, vars: &mut Vars) {
    let order: Vec<&str> = counters.order.iter().map(Bootname::as_str).collect();
    vars.insert("BOOT_ORDER".into(), order.join(" "));
    for (b, c) in &counters.slots {
        let left = if c.good { c.left } else { 0 };
        vars.insert(format!("BOOT_{b}_LEFT"), format!("{left:x}"));
    }
}

impl UbootBootloader {
    pub fn new(config_path: PathBuf, bootnames: Vec<Bootname>, attempts: u32) -> Self {
        Self {
            config_path,
            bootnames,
            attempts,
        }
    }

    fn format_error(&self, path: &Path, message: impl std::fmt::Display) -> BootError {
        BootError::Format {
            path: path.to_owned(),
            message: message.to_string(),
        }
    }

    /// `fw_env.config`, with device paths relative to its directory resolved.
    pub fn fw_env_config(&self) -> Result<FwEnvConfig, BootError> {
        let text = crate::util::read_bounded_to_string(&self.config_path, 64 * 1024)
            .map_err(|e| self.format_error(&self.config_path, e))?;
        let mut config =
            FwEnvConfig::parse(&text).map_err(|e| self.format_error(&self.config_path, e))?;
        let base = self.config_path.parent().unwrap_or(Path::new("/"));
        for c in &mut config.copies {
            c.device = base.join(&c.device);
        }
        Ok(config)
    }

    fn read_copy(loc: &EnvLocation) -> std::io::Result<Vec<u8>> {
        let mut f = File::open(&loc.device)?;
        f.seek(SeekFrom::Start(loc.offset))?;
        let mut buf = vec![0; loc.size as usize];
        f.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Reads the environment; with two copies the valid, newer one.
    pub fn load(&self) -> Result<LoadedEnv, BootError> {
        let config = self.fw_env_config()?;
        let redundant = config.redundant();
        let size = config.size();
        let describe =
            |loc: &EnvLocation| format!("{} at offset {:#x}", loc.device.display(), loc.offset);
        let copies: Vec<Result<_, String>> = config
            .copies
            .iter()
            .map(|loc| {
                let bytes = Self::read_copy(loc).map_err(|e| format!("{}: {e}", describe(loc)))?;
                decode(&bytes, size, redundant).map_err(|e| format!("{}: {e}", describe(loc)))
            })
            .collect();
        if !redundant {
            let copy = copies.into_iter().next().expect("one copy");
            let copy = copy.map_err(|e| {
                self.format_error(
                    &self.config_path,
                    format!(
                        "the U-Boot environment is invalid ({e}); write a valid one with \
                         fw_setenv or from U-Boot with saveenv"
                    ),
                )
            })?;
            return Ok(LoadedEnv {
                vars: copy.vars,
                active: None,
            });
        }
        let Some(i) = active_copy([&copies[0], &copies[1]]) else {
            let reasons: Vec<String> = copies.into_iter().filter_map(Result::err).collect();
            return Err(self.format_error(
                &self.config_path,
                format!(
                    "both copies of the redundant U-Boot environment are invalid: {}; \
                     nothing was changed — restore the environment (fw_setenv, or saveenv in U-Boot)",
                    reasons.join("; ")
                ),
            ));
        };
        if let Err(e) = &copies[1 - i] {
            log::warn!(
                "U-Boot environment: using copy {}, the other is invalid: {e}",
                i + 1
            );
        }
        let Some(Ok(copy)) = copies.into_iter().nth(i) else {
            unreachable!("active_copy names a valid copy")
        };
        Ok(LoadedEnv {
            vars: copy.vars,
            active: Some((i, copy.flag.unwrap_or(0))),
        })
    }

    /// Writes `vars`: into the inactive copy with the next flag (redundant),
    /// by rename (a file holding only the environment), or in place.
    pub fn store(&self, loaded: &LoadedEnv, vars: &Vars) -> Result<(), BootError> {
        let config = self.fw_env_config()?;
        let size = config.size();
        let (loc, flag) = match loaded.active {
            Some((i, flag)) => (&config.copies[1 - i], Some(flag.wrapping_add(1))),
            None => (&config.copies[0], None),
        };
        let image =
            encode(vars, size, flag).map_err(|e| self.format_error(&self.config_path, e))?;
        let io = |source| BootError::Io {
            path: loc.device.clone(),
            source,
        };
        let meta = std::fs::metadata(&loc.device).map_err(io)?;
        if flag.is_none() && meta.is_file() && loc.offset == 0 && meta.len() == size as u64 {
            return crate::util::write_atomic(&loc.device, &image).map_err(io);
        }
        let f = OpenOptions::new()
            .write(true)
            .open(&loc.device)
            .map_err(io)?;
        f.write_all_at(&image, loc.offset).map_err(io)?;
        (&f).flush().map_err(io)?;
        f.sync_all().map_err(io)
    }

    fn check_known(&self, slot: &Bootname) -> Result<(), BootError> {
        if self.bootnames.contains(slot) {
            Ok(())
        } else {
            Err(BootError::UnknownSlot(slot.clone()))
        }
    }

    fn counters(&self, vars: &Vars) -> Result<Counters, BootError> {
        counters_from_vars(vars, &self.bootnames, self.attempts)
            .map_err(|e| self.format_error(&self.config_path, e))
    }

    fn update(&self, change: impl FnOnce(&mut Counters)) -> Result<(), BootError> {
        let loaded = self.load()?;
        let mut counters = self.counters(&loaded.vars)?;
        change(&mut counters);
        let mut vars = loaded.vars.clone();
        counters_to_vars(&counters, &mut vars);
        self.store(&loaded, &vars)
    }
}

impl Bootloader for UbootBootloader {
    fn name(&self) -> &'static str {
        "uboot"
    }

    fn get_primary(&self) -> Result<Option<Bootname>, BootError> {
        Ok(self.counters(&self.load()?.vars)?.primary().cloned())
    }

    fn set_primary(&self, slot: &Bootname) -> Result<(), BootError> {
        self.check_known(slot)?;
        self.update(|c| c.set_primary(slot, self.attempts))
    }

    fn get_state(&self, slot: &Bootname) -> Result<BootState, BootError> {
        self.check_known(slot)?;
        Ok(self.counters(&self.load()?.vars)?.state(slot))
    }

    fn set_state(&self, slot: &Bootname, state: BootState) -> Result<(), BootError> {
        self.check_known(slot)?;
        self.update(|c| c.set_state(slot, state, self.attempts))
    }

    fn attempts_left(&self, slot: &Bootname) -> Result<Option<u32>, BootError> {
        self.check_known(slot)?;
        Ok(Some(self.counters(&self.load()?.vars)?.counter(slot).left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bootname {
        Bootname::new(s).unwrap()
    }

    #[test]
    fn variables_and_counters() {
        let ab = [b("A"), b("B")];
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], [u32; 2]);
        let cases: &[Case] = &[
            (&[], &["A", "B"], [3, 0]),
            (
                &[
                    ("BOOT_ORDER", "B A"),
                    ("BOOT_B_LEFT", "a"),
                    ("BOOT_A_LEFT", "0x2"),
                ],
                &["B", "A"],
                [2, 10],
            ),
            (&[("BOOT_A_LEFT", "zz")], &["A", "B"], [0, 0]),
        ];
        for (pairs, order, left) in cases {
            let vars: Vars = pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            let c = counters_from_vars(&vars, &ab, 3).unwrap();
            let order: Vec<_> = order.iter().map(|s| b(s)).collect();
            assert_eq!(c.order, order);
            assert_eq!(
                [c.counter(&ab[0]).left, c.counter(&ab[1]).left],
                *left,
                "{pairs:?}"
            );
            assert_eq!(c.state(&ab[0]) == BootState::Good, left[0] > 0);
        }
        let mut counters = Counters::fresh(&ab, 12);
        counters.set_primary(&b("B"), 12);
        counters.set_state(&b("A"), BootState::Bad, 12);
        let mut vars = Vars::new();
        counters_to_vars(&counters, &mut vars);
        let got: Vec<_> = vars.iter().map(|(n, v)| format!("{n}={v}")).collect();
        assert_eq!(got, ["BOOT_A_LEFT=0", "BOOT_B_LEFT=c", "BOOT_ORDER=B A"]);
    }
}
