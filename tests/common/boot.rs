//! Shared helpers for the bootloader tests: a temporary device with a
//! system.conf for a chosen backend.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use didymos::config::SystemConfig;
use didymos::slot::Bootname;

pub fn b(s: &str) -> Bootname {
    Bootname::new(s).unwrap()
}

/// A temporary directory with a system.conf in it.
pub struct Device {
    pub dir: tempfile::TempDir,
    pub config: SystemConfig,
}

impl Device {
    /// `bootloader`: the `[system] bootloader` value; `section`: lines for
    /// `[bootloader]` (paths relative to the device directory);
    /// `system_extra`: more `[system]` lines; `slots`: how many rootfs slots
    /// (bootnames A, B, C…).
    pub fn new(bootloader: &str, section: &str, system_extra: &str, slots: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!(
            "[system]\ncompatible = \"test\"\nbootloader = \"{bootloader}\"\n{system_extra}\n\
             [store]\npath = \"store\"\n\n[bootloader]\n{section}\n"
        );
        for i in 0..slots {
            let name = (b'A' + i as u8) as char;
            text.push_str(&format!(
                "[slot.rootfs.{i}]\ntype = \"composefs\"\nbootname = \"{name}\"\n"
            ));
        }
        let path = dir.path().join("system.conf");
        std::fs::write(&path, &text).unwrap();
        let config = SystemConfig::load(&path).unwrap();
        Self { dir, config }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

/// Runs a command and returns its stdout, failing the test with its stderr.
pub fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
