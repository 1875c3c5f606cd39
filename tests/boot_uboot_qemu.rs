//! The shipped U-Boot script (`boot/u-boot/boot.cmd`) run by real U-Boot
//! (Debian's `u-boot-qemu` build for `qemu_arm64`, under
//! `qemu-system-aarch64 -M virt`), against environments didymos wrote.
//!
//! That build keeps its environment in the second flash bank: one copy of
//! 0x40000 bytes at offset 0 of a 64 MiB bank (`Environment size:
//! …/262140 bytes` in `env info`: no redundancy). The bank is a file here,
//! and didymos's `fw_env.config` points into it, so didymos and U-Boot share
//! one environment as they would on a board. Each power-on boots U-Boot with
//! a board environment whose `bootcmd` loads `boot.scr` (the shipped script,
//! compiled by `mkimage -T script`) from a FAT disk and sources it; the
//! board's `didymos_load` prints the kernel arguments and powers off instead
//! of loading a kernel. After every boot the counters U-Boot's `saveenv`
//! wrote are read back by didymos and compared with `Counters::boot`, the
//! model the file-backed bootloader uses.

#[path = "common/boot.rs"]
mod common_boot;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common_boot::{Device, b, run};
use didymos::boot::counting::Counters;
use didymos::boot::mark::{MarkState, mark};
use didymos::boot::uboot::{UbootBootloader, counters_from_vars, counters_to_vars};
use didymos::boot::ubootenv::Vars;
use didymos::boot::{BootState, Bootloader};

const QEMU: &str = "qemu-system-aarch64";
const UBOOT: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
/// The `virt` machine's flash banks are 64 MiB each.
const BANK_SIZE: u64 = 64 << 20;
/// `CONFIG_ENV_SIZE` of the qemu_arm64 build; the copy starts the bank.
const ENV_SIZE: usize = 0x40000;
/// How much of U-Boot's `saveenv` QEMU 7.2 keeps (see
/// `restore_dropped_padding`): one write buffer of the first sector.
const KEPT: usize = 0x1000;

/// The board's own variables: boot without delay, load the script from the
/// FAT disk, and a `didymos_load` that reports instead of booting.
const BOARD_ENV: &str = "bootdelay=0\n\
bootcmd=virtio scan; if load virtio 0 0x40200000 boot.scr; then source 0x40200000; fi; poweroff\n\
bootargs_base=console=ttyAMA0 quiet\n\
didymos_load=echo \"DIDYMOS-BOOTARGS ${bootargs}\"; poweroff\n";

struct Board {
    dev: Device,
    flash: PathBuf,
    disk: PathBuf,
}

/// The model as U-Boot's variables hold it: a slot is good while it has
/// attempts left, so a good slot that used up its attempts reads back bad.
fn stored(model: &Counters) -> Counters {
    let mut vars = Vars::new();
    counters_to_vars(model, &mut vars);
    counters_from_vars(&vars, &[b("A"), b("B")], 3).unwrap()
}

impl Board {
    /// A board with the board environment in its flash and the script on
    /// its disk; `None` (the test is skipped) without `qemu-system-aarch64`.
    fn new() -> Option<Self> {
        let found = Command::new(QEMU)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!(
                "skipping: {QEMU} is not installed (package qemu-system-arm, see tests/deps.sh)"
            );
            return None;
        }
        let dev = Device::new(
            "uboot",
            "fw-env-config = \"fw_env.config\"",
            "boot-attempts = 3",
            2,
        );
        let flash = dev.path("flash1.img");
        std::fs::write(
            dev.path("fw_env.config"),
            format!("{} 0x0 {ENV_SIZE:#x}\n", flash.display()),
        )
        .unwrap();
        std::fs::write(dev.path("board-env.txt"), BOARD_ENV).unwrap();
        run(Command::new("mkenvimage")
            .args(["-s", &format!("{ENV_SIZE:#x}"), "-o"])
            .arg(&flash)
            .arg(dev.path("board-env.txt")));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&flash)
            .unwrap()
            .set_len(BANK_SIZE)
            .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("boot/u-boot/boot.cmd");
        let scr = dev.path("boot.scr");
        run(Command::new("mkimage")
            .args([
                "-A", "arm64", "-T", "script", "-C", "none", "-n", "didymos", "-d",
            ])
            .arg(script)
            .arg(&scr));
        let disk = dev.path("disk.img");
        run(Command::new("mkfs.vfat").arg("-C").arg(&disk).arg("1024"));
        run(Command::new("mcopy")
            .arg("-i")
            .arg(&disk)
            .arg(&scr)
            .arg("::/boot.scr"));
        Some(Self { dev, flash, disk })
    }

    fn bootloader(&self) -> UbootBootloader {
        UbootBootloader::new(self.dev.path("fw_env.config"), vec![b("A"), b("B")], 3)
    }

    fn counters(&self) -> Counters {
        let vars = self.bootloader().load().unwrap().vars;
        counters_from_vars(&vars, &[b("A"), b("B")], 3).unwrap()
    }

    /// U-Boot runs once and powers off; returns what it printed.
    fn power_on(&self) -> String {
        let out = Command::new("timeout")
            .arg("60")
            .arg(QEMU)
            .args(["-M", "virt", "-cpu", "cortex-a57", "-m", "128"])
            .args(["-nographic", "-no-reboot", "-nic", "none", "-bios", UBOOT])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,index=1,file={}",
                self.flash.display()
            ))
            .arg("-drive")
            .arg(format!(
                "if=none,id=disk,format=raw,file={}",
                self.disk.display()
            ))
            .args(["-device", "virtio-blk-device,drive=disk"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {QEMU}: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        assert!(
            out.status.success(),
            "{QEMU} failed ({}): {}\n{text}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        self.restore_dropped_padding(&text);
        text
    }

    /// QEMU 7.2's flash model takes the start of a buffered write from the
    /// block address of the command instead of the first data address
    /// (QEMU issue 2343), so of U-Boot's `saveenv` only the first 4 KiB
    /// reach the file; U-Boot then reports a write timeout and stops, and
    /// the rest stays erased (0xff). U-Boot writes only NUL padding there:
    /// the variables end well inside the first 4 KiB. Put the padding back,
    /// after checking that the variables end before the dropped range and
    /// that it holds nothing but erased or NUL bytes — then the CRC U-Boot
    /// computed over its whole copy decides whether the write was right.
    fn restore_dropped_padding(&self, console: &str) {
        let mut bytes = std::fs::read(&self.flash).unwrap();
        let env = &mut bytes[..ENV_SIZE];
        let end = env[4..]
            .windows(2)
            .position(|w| w == [0, 0])
            .map_or(ENV_SIZE, |i| i + 4 + 2);
        assert!(end <= KEPT, "variables reach past {KEPT:#x}\n{console}");
        let dropped = &mut env[KEPT..];
        assert!(
            dropped.iter().all(|&b| b == 0 || b == 0xff),
            "unexpected data in the environment's padding\n{console}"
        );
        if dropped.iter().any(|&b| b != 0) {
            dropped.fill(0);
            std::fs::write(&self.flash, &bytes).unwrap();
        }
    }

    /// One power-on: returns the slot U-Boot booted, if any, and checks the
    /// result against the model.
    fn boot(&self) -> Option<String> {
        let mut model = self.counters();
        let want = model.boot();
        let out = self.power_on();
        let bootargs = out.lines().find_map(|l| {
            l.strip_prefix("DIDYMOS-BOOTARGS ")
                .map(|r| r.trim().to_owned())
        });
        let none = out
            .lines()
            .any(|l| l.starts_with("didymos: no slot has boot attempts left"));
        assert!(
            bootargs.is_some() != none,
            "U-Boot neither booted nor gave up:\n{out}"
        );
        let chosen = bootargs.map(|args| {
            let slot = args
                .strip_prefix("console=ttyAMA0 quiet didymos.slot=")
                .unwrap_or_else(|| panic!("bootargs {args:?}\n{out}"));
            assert!(
                out.contains(&format!("didymos: booting slot {slot}")),
                "{out}"
            );
            assert!(
                out.contains("Saving Environment to Flash"),
                "U-Boot did not save the environment:\n{out}"
            );
            slot.to_owned()
        });
        if none {
            assert!(!out.contains("Saving Environment"), "{out}");
        }
        assert_eq!(chosen, want.map(|w| w.to_string()), "U-Boot output:\n{out}");
        assert_eq!(
            self.counters(),
            stored(&model),
            "counters U-Boot saved differ from the model\n{out}"
        );
        chosen
    }

    /// `didymos status mark-…` as userspace runs it on slot `booted`.
    fn mark(&self, booted: &str, state: MarkState, identifier: &str) {
        let bl = self.bootloader();
        mark(&self.dev.config, &bl, Some(&b(booted)), state, identifier).unwrap();
    }

    fn printenv(&self, names: &[&str]) -> String {
        run(Command::new("fw_printenv")
            .arg("-c")
            .arg(self.dev.path("fw_env.config"))
            .args(names))
    }
}

#[test]
fn fresh_device_boots_a() {
    let Some(board) = Board::new() else { return };
    assert_eq!(board.boot().as_deref(), Some("A"));
    assert_eq!(board.bootloader().attempts_left(&b("A")).unwrap(), Some(2));
    assert_eq!(
        board.printenv(&["BOOT_ORDER", "BOOT_A_LEFT", "BOOT_B_LEFT", "bootdelay"]),
        "BOOT_ORDER=A B\nBOOT_A_LEFT=2\nBOOT_B_LEFT=0\nbootdelay=0\n",
        "libubootenv reads what U-Boot saved"
    );
}

#[test]
fn after_mark_active_b_boots_b_and_mark_good_refills() {
    let Some(board) = Board::new() else { return };
    board.mark("A", MarkState::Good, "booted");
    board.mark("A", MarkState::Active, "other");
    assert_eq!(board.boot().as_deref(), Some("B"));
    let bl = board.bootloader();
    assert_eq!(bl.attempts_left(&b("B")).unwrap(), Some(2));
    // The new slot comes up healthy and is marked good: budget refilled.
    board.mark("B", MarkState::Good, "booted");
    assert_eq!(bl.attempts_left(&b("B")).unwrap(), Some(3));
    assert_eq!(board.boot().as_deref(), Some("B"));
    assert_eq!(bl.attempts_left(&b("B")).unwrap(), Some(2));
}

#[test]
fn b_failing_every_attempt_falls_back_to_a() {
    let Some(board) = Board::new() else { return };
    board.mark("A", MarkState::Good, "booted");
    board.mark("A", MarkState::Active, "other");
    let boots: Vec<_> = (0..4).map(|_| board.boot().unwrap()).collect();
    assert_eq!(boots, ["B", "B", "B", "A"]);
    let bl = board.bootloader();
    assert_eq!(bl.attempts_left(&b("B")).unwrap(), Some(0));
    assert_eq!(bl.get_primary().unwrap(), Some(b("A")));
    // Back on A, userspace marks A good and B bad.
    board.mark("A", MarkState::Good, "booted");
    board.mark("A", MarkState::Bad, "other");
    assert_eq!(board.boot().as_deref(), Some("A"));
}

#[test]
fn both_slots_bad_boots_nothing() {
    let Some(board) = Board::new() else { return };
    let bl = board.bootloader();
    bl.set_state(&b("A"), BootState::Bad).unwrap();
    bl.set_state(&b("B"), BootState::Bad).unwrap();
    let before = std::fs::read(&board.flash).unwrap();
    assert_eq!(board.boot(), None);
    assert!(
        std::fs::read(&board.flash).unwrap() == before,
        "U-Boot wrote nothing"
    );
}
