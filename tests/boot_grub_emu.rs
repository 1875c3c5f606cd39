//! The shipped GRUB script (`boot/grub/didymos.cfg`) run by real GRUB
//! (`grub-emu`), against environment blocks didymos and grub-editenv wrote.
//!
//! The environment lives on a FAT disk image (GRUB's `save_env` writes into
//! the file's disk blocks, which the emulator's host filesystem cannot do).
//! grub-emu has no Linux loader, so the harness defines `linux` and `initrd`
//! as functions that print their arguments; everything else is GRUB's own.
//! After every boot the counters GRUB saved are compared with
//! `Counters::boot`, the model the file-backed bootloader uses.

#[path = "common/boot.rs"]
mod common_boot;

use std::path::{Path, PathBuf};
use std::process::Command;

use common_boot::{Device, b, run};
use didymos::boot::grub::{GrubBootloader, counters_from_env};
use didymos::boot::grubenv::Grubenv;
use didymos::boot::mark::{MarkState, mark};
use didymos::boot::{BootState, Bootloader};

struct Emu {
    dev: Device,
    disk: PathBuf,
    grubdir: PathBuf,
    devmap: PathBuf,
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("boot/grub/didymos.cfg")
}

impl Emu {
    fn new() -> Self {
        Self::with_system("")
    }

    /// `system_extra`: more `[system]` lines.
    fn with_system(system_extra: &str) -> Self {
        let dev = Device::new(
            "grub",
            "grubenv = \"grubenv\"\ngrub-scheme = \"attempts\"\n\n[keyring]\npath = \"keyring.pem\"",
            &format!("boot-attempts = 3\n{system_extra}"),
            2,
        );
        let grubdir = dev.path("grub");
        std::fs::create_dir(&grubdir).unwrap();
        std::os::unix::fs::symlink("/usr/lib/grub/x86_64-emu", grubdir.join("x86_64-emu")).unwrap();
        std::fs::write(
            grubdir.join("grub.cfg"),
            format!(
                "function linux {{ echo \"DIDYMOS-LINUX $*\"; }}\n\
                 function initrd {{ echo \"DIDYMOS-INITRD $*\"; halt; }}\n\
                 set timeout=0\n\
                 set didymos_env=(hd0)/grubenv\n\
                 set didymos_cmdline=\"console=ttyS0 quiet\"\n\
                 source (host){}\n\
                 if [ -z \"$didymos_slot\" ]; then echo DIDYMOS-NONE; halt; fi\n",
                script_path().display()
            ),
        )
        .unwrap();
        let disk = dev.path("disk.img");
        run(Command::new("mkfs.vfat").arg("-C").arg(&disk).arg("4096"));
        let devmap = dev.path("device.map");
        std::fs::write(&devmap, format!("(hd0) {}\n", disk.display())).unwrap();
        Self {
            dev,
            disk,
            grubdir,
            devmap,
        }
    }

    fn env_path(&self) -> PathBuf {
        self.dev.path("grubenv")
    }

    fn bootloader(&self) -> GrubBootloader {
        GrubBootloader::new(
            self.env_path(),
            didymos::config::GrubScheme::Attempts,
            vec![b("A"), b("B")],
            3,
        )
        .unwrap()
    }

    fn counters(&self) -> didymos::boot::counting::Counters {
        let env = Grubenv::parse(&std::fs::read(self.env_path()).unwrap()).unwrap();
        counters_from_env(&env, &[b("A"), b("B")], 3).unwrap()
    }

    /// GRUB runs once with the env file on the disk (when there is one) and
    /// the env comes back; returns what GRUB printed.
    fn power_on(&self) -> String {
        let with_env = self.env_path().exists();
        if with_env {
            run(Command::new("mcopy")
                .args(["-o", "-i"])
                .arg(&self.disk)
                .arg(self.env_path())
                .arg("::/grubenv"));
        }
        let cmd = format!(
            "grub-emu -d {} -m {}",
            self.grubdir.display(),
            self.devmap.display()
        );
        let out = run(Command::new("timeout")
            .args(["60", "script", "-qec", &cmd, "/dev/null"])
            .stdin(std::process::Stdio::null()));
        if with_env {
            run(Command::new("mcopy")
                .args(["-o", "-i"])
                .arg(&self.disk)
                .arg("::/grubenv")
                .arg(self.env_path()));
        }
        out.replace('\r', "")
    }

    /// One power-on: returns the kernel command line GRUB booted, if any,
    /// and checks the result against the model.
    fn boot(&self) -> Option<String> {
        let mut model = self.counters();
        let want = model.boot();
        let out = self.power_on();
        let linux = out.lines().find_map(|l| {
            l.split_once("DIDYMOS-LINUX ")
                .map(|(_, r)| r.trim().to_owned())
        });
        let none = out.lines().any(|l| l.contains("DIDYMOS-NONE"));
        assert!(
            linux.is_some() != none,
            "GRUB neither booted nor gave up:\n{out}"
        );
        let chosen = linux.as_ref().map(|l| {
            let slot = l.rsplit_once("didymos.slot=").expect(l).1;
            assert!(
                l.starts_with(&format!("/boot/{slot}/vmlinuz console=ttyS0 quiet ")),
                "{l}"
            );
            assert!(
                out.contains(&format!("DIDYMOS-INITRD /boot/{slot}/initrd.img")),
                "{out}"
            );
            slot.to_owned()
        });
        assert_eq!(chosen, want.map(|w| w.to_string()), "GRUB output:\n{out}");
        assert_eq!(
            self.counters(),
            model,
            "counters GRUB saved differ from the model\n{out}"
        );
        chosen
    }
}

#[test]
fn fresh_device_boots_a() {
    let emu = Emu::new();
    run(Command::new("grub-editenv")
        .arg(emu.env_path())
        .arg("create"));
    assert_eq!(emu.boot().as_deref(), Some("A"));
    assert_eq!(emu.bootloader().attempts_left(&b("A")).unwrap(), Some(2));
    let listed = run(Command::new("grub-editenv").arg(emu.env_path()).arg("list"));
    assert_eq!(listed, "A_LEFT=2\n");
}

#[test]
fn after_mark_active_b_boots_b() {
    let emu = Emu::new();
    let bl = emu.bootloader();
    let cfg = &emu.dev.config;
    mark(cfg, &bl, Some(&b("A")), MarkState::Good, "booted").unwrap();
    mark(cfg, &bl, Some(&b("A")), MarkState::Active, "other").unwrap();
    assert_eq!(emu.boot().as_deref(), Some("B"));
    assert_eq!(bl.attempts_left(&b("B")).unwrap(), Some(2));
    // The new slot comes up healthy and is marked good: budget refilled.
    mark(cfg, &bl, Some(&b("B")), MarkState::Good, "booted").unwrap();
    assert_eq!(bl.attempts_left(&b("B")).unwrap(), Some(3));
    assert_eq!(emu.boot().as_deref(), Some("B"));
}

#[test]
fn b_failing_every_attempt_falls_back_to_a() {
    let emu = Emu::new();
    let bl = emu.bootloader();
    let cfg = &emu.dev.config;
    mark(cfg, &bl, Some(&b("A")), MarkState::Good, "booted").unwrap();
    mark(cfg, &bl, Some(&b("A")), MarkState::Active, "other").unwrap();
    let boots: Vec<_> = (0..4).map(|_| emu.boot().unwrap()).collect();
    assert_eq!(boots, ["B", "B", "B", "A"]);
    assert_eq!(bl.attempts_left(&b("B")).unwrap(), Some(0));
    assert_eq!(bl.get_primary().unwrap(), Some(b("A")));
    // Back on A, userspace marks A good and B bad.
    mark(cfg, &bl, Some(&b("A")), MarkState::Good, "booted").unwrap();
    mark(cfg, &bl, Some(&b("A")), MarkState::Bad, "other").unwrap();
    assert_eq!(emu.boot().as_deref(), Some("A"));
}

#[test]
fn both_slots_bad_boots_nothing() {
    let emu = Emu::new();
    let bl = emu.bootloader();
    bl.set_state(&b("A"), BootState::Bad).unwrap();
    bl.set_state(&b("B"), BootState::Bad).unwrap();
    let before = std::fs::read(emu.env_path()).unwrap();
    assert_eq!(emu.boot(), None);
    assert_eq!(std::fs::read(emu.env_path()).unwrap(), before);
}

#[test]
fn odd_counter_values_agree_with_the_model() {
    for (a_ok, a_left) in [("1", "99"), ("1", "x"), ("1", "32"), ("2", "3"), ("1", "1")] {
        let emu = Emu::new();
        run(Command::new("grub-editenv")
            .arg(emu.env_path())
            .arg("create"));
        run(Command::new("grub-editenv").arg(emu.env_path()).args([
            "set",
            "ORDER=A B",
            &format!("A_OK={a_ok}"),
            &format!("A_LEFT={a_left}"),
        ]));
        emu.boot();
    }
}

#[test]
fn a_missing_block_is_a_fresh_device() {
    let emu = Emu::new();
    let out = emu.power_on();
    assert!(
        out.contains("didymos: booting slot A") && out.contains("DIDYMOS-LINUX"),
        "{out}"
    );
}

#[test]
fn an_unloadable_block_boots_nothing() {
    // Not a fresh device: the defaults would boot A, which may be the slot
    // whose install was cut short.
    let emu = Emu::new();
    let bl = emu.bootloader();
    bl.set_primary(&b("A")).unwrap();
    let mut block = std::fs::read(emu.env_path()).unwrap();
    block[..8].copy_from_slice(b"garbage!");
    std::fs::write(emu.env_path(), &block).unwrap();
    let out = emu.power_on();
    assert!(
        out.contains("DIDYMOS-NONE") && !out.contains("DIDYMOS-LINUX"),
        "{out}"
    );
    // GRUB's terminal wraps long lines.
    let words = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("(hd0)/grubenv cannot be loaded; not guessing a slot"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(emu.env_path()).unwrap(),
        block,
        "GRUB wrote nothing"
    );
}

/// What an install does when the booted slot was never marked good and used
/// its last attempt: it refuses, because GRUB would then have no slot to
/// fall back to (shown here first: with the other slot activated anyway,
/// three failed boots of it leave GRUB nothing to boot). Once the booted
/// slot is marked good, the install goes ahead and a failing new slot falls
/// back to it.
#[test]
fn an_install_keeps_the_booted_slot_as_the_fall_back() {
    let emu = Emu::with_system("kernel-cmdline = \"cmdline\"\ndata-directory = \"data\"");
    let bl = emu.bootloader();
    let cfg = &emu.dev.config;
    // A device with A installed and activated; it boots A three times and
    // is never marked good (the health check never passes, or nobody ran it).
    let pki = didymos::bundle::devpki::generate(&emu.dev.path("pki")).unwrap();
    std::fs::copy(&pki.keyring, &cfg.keyring.path).unwrap();
    let bundle = |version: &str| {
        let root = emu.dev.path(&format!("rootfs-{version}"));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/version"),
            format!("{version} {}", "x".repeat(100)),
        )
        .unwrap();
        let out = emu.dev.path(&format!("{version}.raucb"));
        let mut o = didymos::bundle::create::CreateOptions::new(
            &root,
            &out,
            &pki.signing_cert,
            &pki.signing_key,
            "test",
            version,
        );
        o.intermediates = vec![pki.intermediate_cert.clone()];
        didymos::bundle::create::create(&o).unwrap();
        out
    };
    let install = |b: &Path| {
        didymos::install::install(
            cfg,
            didymos::install::BundleSource::Path(b.to_owned()),
            &Default::default(),
            &|_| {},
            &Default::default(),
        )
    };
    std::fs::write(emu.dev.path("cmdline"), "").unwrap();
    assert_eq!(
        install(&bundle("1.0")).unwrap().slot.to_string(),
        "rootfs.0"
    );
    for _ in 0..3 {
        assert_eq!(emu.boot().as_deref(), Some("A"));
    }
    std::fs::write(emu.dev.path("cmdline"), "didymos.slot=A\n").unwrap();
    assert_eq!(bl.attempts_left(&b("A")).unwrap(), Some(0));

    // The hazard: B activated now, B failing, and nothing left to boot.
    let saved = std::fs::read(emu.env_path()).unwrap();
    bl.set_primary(&b("B")).unwrap();
    let boots: Vec<_> = (0..4).map(|_| emu.boot()).collect();
    assert_eq!(
        boots,
        [Some("B".into()), Some("B".into()), Some("B".into()), None]
    );
    std::fs::write(emu.env_path(), &saved).unwrap();

    // So the install refuses, writing nothing.
    let v2 = bundle("2.0");
    let err = install(&v2).unwrap_err();
    assert!(
        matches!(
            err,
            didymos::install::InstallError::BootedUnconfirmed { .. }
        ),
        "{err}"
    );
    assert_eq!(std::fs::read(emu.env_path()).unwrap(), saved);

    // Marked good, A is a fall back again: install, B fails, GRUB returns to A.
    didymos::install::mark(cfg, MarkState::Good, "booted").unwrap();
    assert_eq!(install(&v2).unwrap().slot.to_string(), "rootfs.1");
    let boots: Vec<_> = (0..4).map(|_| emu.boot().unwrap()).collect();
    assert_eq!(boots, ["B", "B", "B", "A"]);
}
