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

/// Gives `dev` a redundant U-Boot environment: both copies in `env.bin`
/// (offsets 0 and 0x2000, 0x2000 bytes each), described by `fw_env.config`,
/// initialised by `mkenvimage` with the variables in `init` (`name=value` lines).
pub fn setup_uboot_env(dev: &Device, init: &str) {
    let env = dev.path("env.bin");
    std::fs::write(
        dev.path("fw_env.config"),
        format!(
            "# redundant environment\n{0} 0x0 0x2000\n{0} 0x2000 0x2000\n",
            env.display()
        ),
    )
    .unwrap();
    std::fs::write(dev.path("init.txt"), init).unwrap();
    run(std::process::Command::new("mkenvimage")
        .args(["-r", "-s", "0x2000", "-o"])
        .arg(dev.path("copy.bin"))
        .arg(dev.path("init.txt")));
    let mut image = std::fs::read(dev.path("copy.bin")).unwrap();
    image.resize(2 * 0x2000, 0);
    std::fs::write(&env, image).unwrap();
}

/// A device with `bootloader = "custom"` using the test script
/// `tests/bootloader/custom-script.sh`, copied into the device directory
/// (it keeps its state next to itself).
pub fn custom_device(system_extra: &str, slots: usize) -> Device {
    let dev = Device::new(
        "custom",
        "custom-script = \"custom.sh\"",
        system_extra,
        slots,
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bootloader/custom-script.sh");
    std::fs::copy(script, dev.path("custom.sh")).unwrap();
    dev
}
