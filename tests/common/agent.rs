//! Helpers for the agent tests: a directory-backed device with its own
//! private bus and installer, the agent run against it one step at a time
//! with the time injected, the device "rebooted" (the installer restarted
//! with another slot on the kernel command line, then marked good as
//! didymos-mark-good.service does), and Debian's nginx serving a directory.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::common_dbus::{Bus, Device, Service};

#[path = "nginx.rs"]
pub mod nginx;
pub use nginx::Nginx;

/// A device, its bus and its installer.
pub struct Fleet {
    pub bus: Bus,
    pub device: Device,
    pub service: Option<Service>,
    pub pki: didymos::bundle::devpki::DevPki,
}

impl Fleet {
    /// A device with `pki`'s keyring, holding `first` (a bundle) in slot A,
    /// booted from A, with `updates` appended to its system.conf.
    pub fn new(pki: &didymos::bundle::devpki::DevPki, first: &Path, updates: &str) -> Self {
        let device = Device::new("");
        std::fs::copy(&pki.keyring, device.path("keyring.pem")).unwrap();
        let mut conf = std::fs::read_to_string(&device.conf).unwrap();
        conf.push_str(&format!(
            "\n[updates]\nstate-directory = \"agent\"\n\
             reboot-command = [\"sh\", \"-c\", \"echo reboot >> {}\"]\n{updates}\n",
            device.path("reboots").display()
        ));
        std::fs::write(&device.conf, conf).unwrap();
        // The factory install, into slot A.
        let config = didymos::config::SystemConfig::load(&device.conf).unwrap();
        std::fs::write(device.path("cmdline"), "").unwrap();
        use didymos::install::{BundleSource, CancelToken, InstallOptions, install};
        install(
            &config,
            BundleSource::Path(first.to_owned()),
            &InstallOptions::default(),
            &|_| {},
            &CancelToken::default(),
        )
        .unwrap();
        std::fs::write(device.path("cmdline"), "quiet didymos.slot=A\n").unwrap();
        didymos::install::mark(&config, didymos::boot::mark::MarkState::Good, "booted").unwrap();
        let bus = Bus::session();
        let service = Service::start(&bus, &device);
        Fleet {
            bus,
            device,
            service: Some(service),
            pki: pki_clone(pki),
        }
    }

    /// `didymos agent <args>` against this device.
    pub fn agent(&self, args: &[&str]) -> Output {
        self.agent_command(args).output().unwrap()
    }

    pub fn agent_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_didymos"));
        cmd.arg("--conf")
            .arg(&self.device.conf)
            .arg("agent")
            .args(args)
            .envs(self.bus.env())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// One step of the agent at `now`; its report.
    pub fn step(&self, now: &str) -> String {
        let out = self.agent(&["run", "--once", "--now", now]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "agent step failed: {text}");
        text
    }

    /// How often the agent asked for a reboot.
    pub fn reboots(&self) -> usize {
        std::fs::read_to_string(self.device.path("reboots"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// `didymos status` of the device (through the installer).
    pub fn status(&self) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_didymos"))
            .arg("--conf")
            .arg(&self.device.conf)
            .args(["status", "--output-format", "shell"])
            .envs(self.bus.env())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn status_value(&self, key: &str) -> String {
        self.status()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(|v| v.trim_matches('\'').to_owned())
            .unwrap_or_default()
    }

    /// The version the device runs.
    pub fn version(&self) -> String {
        self.status_value("DIDYMOS_SYSTEM_VERSION")
    }

    /// Reboots into the primary slot (or, with `fail`, tries it and falls
    /// back, as the bootloader does when the slot never gets marked good),
    /// then marks the booted slot good as didymos-mark-good.service does.
    pub fn reboot(&mut self, fail: bool) {
        let primary = self.status_value("DIDYMOS_BOOT_PRIMARY");
        let bootname = if primary.ends_with(".0") { "A" } else { "B" };
        drop(self.service.take());
        let config = didymos::config::SystemConfig::load(&self.device.conf).unwrap();
        if fail {
            // The new slot's attempts ran out: the bootloader marks it bad
            // and boots the old one again.
            didymos::install::mark(&config, didymos::boot::mark::MarkState::Bad, &primary).unwrap();
        } else {
            std::fs::write(
                self.device.path("cmdline"),
                format!("quiet didymos.slot={bootname}\n"),
            )
            .unwrap();
        }
        self.service = Some(Service::start(&self.bus, &self.device));
        let out = self.bus.busctl(&[
            "call",
            super::common_dbus::NAME,
            "/",
            super::common_dbus::IFACE,
            "Mark",
            "ss",
            "good",
            "booted",
        ]);
        assert!(
            out.status.success(),
            "mark-good: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn pki_clone(p: &didymos::bundle::devpki::DevPki) -> didymos::bundle::devpki::DevPki {
    didymos::bundle::devpki::DevPki {
        keyring: p.keyring.clone(),
        root_key: p.root_key.clone(),
        intermediate_cert: p.intermediate_cert.clone(),
        intermediate_key: p.intermediate_key.clone(),
        signing_cert: p.signing_cert.clone(),
        signing_key: p.signing_key.clone(),
    }
}

/// `didymos <args>` (the build host's commands), which must succeed.
pub fn didymos(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_didymos"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "didymos {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `didymos channel sign` of the channel document `doc` into `output` by
/// `pki`'s signer, valid for ten years from now (the tests' injected times
/// lie within); its output.
pub fn sign_channel(doc: &Path, pki: &didymos::bundle::devpki::DevPki, output: &Path) -> String {
    didymos(&[
        "channel",
        "sign",
        &s(doc),
        "--cert",
        &s(&pki.signing_cert),
        "--key",
        &s(&pki.signing_key),
        "--intermediate",
        &s(&pki.intermediate_cert),
        "--expires",
        "3650days",
        "--output",
        &s(output),
    ])
}

/// A path as a string.
pub fn s(p: &Path) -> String {
    p.display().to_string()
}

pub fn path_buf(p: &str) -> PathBuf {
    PathBuf::from(p)
}

/// Copies a file into a web server's directory, readable by its workers.
pub fn publish(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o644)).unwrap();
}
