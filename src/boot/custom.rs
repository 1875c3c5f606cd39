//! `bootloader = "custom"`: a script speaking RAUC's custom-backend protocol.
//!
//! - `<script> get-primary` prints the bootname tried next;
//! - `<script> set-primary <X>` makes X the next slot (mark-active);
//! - `<script> get-state <X>` prints `good` or `bad`;
//! - `<script> set-state <X> good|bad`;
//! - `<script> get-current` (optional) prints the booted bootname.
//!
//! A non-zero exit is an error carrying the script's stderr.

use std::path::PathBuf;
use std::process::Command;

use super::{BootError, BootState, Bootloader};
use crate::slot::Bootname;

/// Largest output accepted from the script.
const MAX_OUTPUT: usize = 4096;

#[derive(Debug)]
pub struct CustomBootloader {
    script: PathBuf,
    bootnames: Vec<Bootname>,
}

/// Parses the script's answer to `get-primary` / `get-current`.
pub fn parse_bootname(stdout: &str) -> Result<Option<Bootname>, String> {
    let s = stdout.trim();
    if s.is_empty() {
        return Ok(None);
    }
    Bootname::new(s).map(Some).map_err(|e| e.to_string())
}

/// Parses the script's answer to `get-state`.
pub fn parse_state(stdout: &str) -> Result<BootState, String> {
    match stdout.trim() {
        "good" => Ok(BootState::Good),
        "bad" => Ok(BootState::Bad),
        other => Err(format!(
            "expected \"good\" or \"bad\", got {:?}",
            other.chars().take(60).collect::<String>()
        )),
    }
}

impl CustomBootloader {
    pub fn new(script: PathBuf, bootnames: Vec<Bootname>) -> Self {
        Self { script, bootnames }
    }

    fn run(&self, args: &[&str]) -> Result<Result<String, BootError>, BootError> {
        let command = format!("{} {}", self.script.display(), args.join(" "));
        let out = Command::new(&self.script)
            .args(args)
            .output()
            .map_err(|source| BootError::Io {
                path: self.script.clone(),
                source,
            })?;
        let text = |b: &[u8]| {
            String::from_utf8_lossy(&b[..b.len().min(MAX_OUTPUT)])
                .trim()
                .to_owned()
        };
        if !out.status.success() {
            return Ok(Err(BootError::Command {
                command,
                status: out.status.to_string(),
                stderr: text(&out.stderr),
            }));
        }
        Ok(Ok(text(&out.stdout)))
    }

    fn call(&self, args: &[&str]) -> Result<String, BootError> {
        self.run(args)?
    }

    fn bad_output(&self, args: &[&str], message: String) -> BootError {
        BootError::Format {
            path: self.script.clone(),
            message: format!("answer to \"{}\": {message}", args.join(" ")),
        }
    }

    fn check_known(&self, slot: &Bootname) -> Result<(), BootError> {
        if self.bootnames.contains(slot) {
            Ok(())
        } else {
            Err(BootError::UnknownSlot(slot.clone()))
        }
    }
}

impl Bootloader for CustomBootloader {
    fn name(&self) -> &'static str {
        "custom"
    }

    fn get_primary(&self) -> Result<Option<Bootname>, BootError> {
        let out = self.call(&["get-primary"])?;
        parse_bootname(&out).map_err(|e| self.bad_output(&["get-primary"], e))
    }

    fn set_primary(&self, slot: &Bootname) -> Result<(), BootError> {
        self.check_known(slot)?;
        self.call(&["set-primary", slot.as_str()]).map(drop)
    }

    fn get_state(&self, slot: &Bootname) -> Result<BootState, BootError> {
        self.check_known(slot)?;
        let args = ["get-state", slot.as_str()];
        let out = self.call(&args)?;
        parse_state(&out).map_err(|e| self.bad_output(&args, e))
    }

    fn set_state(&self, slot: &Bootname, state: BootState) -> Result<(), BootError> {
        self.check_known(slot)?;
        self.call(&["set-state", slot.as_str(), state.as_str()])
            .map(drop)
    }

    /// `get-current` is optional in the protocol: a script that fails it
    /// does not know the booted slot.
    fn get_current(&self) -> Result<Option<Bootname>, BootError> {
        match self.run(&["get-current"])? {
            Ok(out) => parse_bootname(&out).map_err(|e| self.bad_output(&["get-current"], e)),
            Err(e) => {
                log::debug!("custom bootloader does not report the booted slot: {e}");
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(parse_bootname(" B\n").unwrap().unwrap().as_str(), "B");
        assert_eq!(parse_bootname("\n").unwrap(), None);
        assert!(parse_bootname("A B").is_err());
        assert_eq!(parse_state("good\n").unwrap(), BootState::Good);
        assert_eq!(parse_state("bad").unwrap(), BootState::Bad);
        assert_eq!(
            parse_state("maybe").unwrap_err(),
            "expected \"good\" or \"bad\", got \"maybe\""
        );
    }
}
