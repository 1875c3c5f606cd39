//! The U-Boot backend against the real libubootenv tools (`fw_printenv`,
//! `fw_setenv`) and `mkenvimage`, with a redundant environment in files.

#[path = "common/boot.rs"]
mod common_boot;

use std::process::Command;

use common_boot::{Device, b, run};
use didymos::boot::ubootenv::{FwEnvConfig, active_copy, decode};
use didymos::boot::{BootState, from_config};

const SIZE: usize = 0x2000;

/// A device with a redundant environment in `env.bin`, initialised by mkenvimage.
fn device(init: &str) -> Device {
    let dev = Device::new(
        "uboot",
        "fw-env-config = \"fw_env.config\"",
        "boot-attempts = 3",
        2,
    );
    common_boot::setup_uboot_env(&dev, init);
    dev
}

fn printenv(dev: &Device) -> String {
    run(Command::new("fw_printenv")
        .arg("-c")
        .arg(dev.path("fw_env.config")))
}

fn setenv(dev: &Device, name: &str, value: &str) {
    run(Command::new("fw_setenv")
        .arg("-c")
        .arg(dev.path("fw_env.config"))
        .args([name, value]));
}

/// The variables of the active copy, as didymos decodes the raw file.
fn decode_file(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let copies = [
        decode(&bytes[..SIZE], SIZE, true),
        decode(&bytes[SIZE..], SIZE, true),
    ];
    let i = active_copy([&copies[0], &copies[1]])?;
    let copy = copies[i].as_ref().unwrap();
    Some(
        copy.vars
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect(),
    )
}

#[test]
fn what_didymos_writes_fw_printenv_reads() {
    let dev = device("BOOT_ORDER=A B\nBOOT_A_LEFT=3\nbootdelay=2\n");
    let bl = from_config(&dev.config).unwrap();
    bl.set_primary(&b("B")).unwrap();
    assert_eq!(
        printenv(&dev),
        "BOOT_A_LEFT=3\nBOOT_B_LEFT=3\nBOOT_ORDER=B A\nbootdelay=2\n"
    );
    bl.set_state(&b("A"), BootState::Bad).unwrap();
    assert_eq!(
        printenv(&dev),
        "BOOT_A_LEFT=0\nBOOT_B_LEFT=3\nBOOT_ORDER=B A\nbootdelay=2\n"
    );
    // Several writes alternate between the copies; fw_setenv continues from ours.
    setenv(&dev, "BOOT_B_LEFT", "1");
    assert_eq!(bl.attempts_left(&b("B")).unwrap(), Some(1));
    bl.set_state(&b("B"), BootState::Good).unwrap();
    assert_eq!(
        printenv(&dev),
        "BOOT_A_LEFT=0\nBOOT_B_LEFT=3\nBOOT_ORDER=B A\nbootdelay=2\n"
    );
}

#[test]
fn what_fw_setenv_writes_didymos_reads() {
    let dev = device("BOOT_ORDER=A B\n");
    setenv(&dev, "BOOT_ORDER", "B A");
    setenv(&dev, "BOOT_A_LEFT", "2");
    setenv(&dev, "BOOT_B_LEFT", "a");
    let bl = from_config(&dev.config).unwrap();
    assert_eq!(bl.get_primary().unwrap(), Some(b("B")));
    assert_eq!(bl.attempts_left(&b("A")).unwrap(), Some(2));
    assert_eq!(
        bl.attempts_left(&b("B")).unwrap(),
        Some(10),
        "hex, as setexpr writes"
    );
    setenv(&dev, "BOOT_B_LEFT", "0");
    assert_eq!(bl.get_state(&b("B")).unwrap(), BootState::Bad);
    assert_eq!(bl.get_primary().unwrap(), Some(b("A")));
}

#[test]
fn a_bad_copy_is_detected_and_the_other_used() {
    let dev = device("BOOT_ORDER=A B\nBOOT_A_LEFT=3\n");
    let bl = from_config(&dev.config).unwrap();
    bl.set_primary(&b("B")).unwrap(); // now copy 2 is active, copy 1 holds the old state
    let env = dev.path("env.bin");
    let mut bytes = std::fs::read(&env).unwrap();
    bytes[SIZE + 100] ^= 0x55; // corrupt the active copy
    std::fs::write(&env, &bytes).unwrap();
    assert_eq!(
        bl.get_primary().unwrap(),
        Some(b("A")),
        "falls back to the older, valid copy"
    );
    assert_eq!(
        printenv(&dev),
        "BOOT_A_LEFT=3\nBOOT_ORDER=A B\n",
        "libubootenv agrees"
    );
    // The next write goes over the corrupt copy.
    bl.set_primary(&b("B")).unwrap();
    assert_eq!(
        printenv(&dev),
        "BOOT_A_LEFT=3\nBOOT_B_LEFT=3\nBOOT_ORDER=B A\n"
    );
}

#[test]
fn both_copies_bad_is_a_clear_error_and_nothing_is_written() {
    let dev = device("BOOT_ORDER=A B\n");
    let env = dev.path("env.bin");
    let mut bytes = std::fs::read(&env).unwrap();
    bytes[10] ^= 1;
    bytes[SIZE + 10] ^= 1;
    std::fs::write(&env, &bytes).unwrap();
    let bl = from_config(&dev.config).unwrap();
    let err = bl.set_primary(&b("B")).unwrap_err().to_string();
    assert!(
        err.contains("both copies of the redundant U-Boot environment are invalid"),
        "{err}"
    );
    assert!(
        err.contains("offset 0x0: CRC mismatch") && err.contains("offset 0x2000:"),
        "{err}"
    );
    assert_eq!(std::fs::read(&env).unwrap(), bytes);
}

#[test]
fn a_write_interrupted_at_any_byte_leaves_a_valid_environment() {
    let dev = device("BOOT_ORDER=A B\nBOOT_A_LEFT=3\n");
    let bl = from_config(&dev.config).unwrap();
    bl.set_state(&b("A"), BootState::Good).unwrap();
    let env = dev.path("env.bin");
    let before = std::fs::read(&env).unwrap();
    bl.set_primary(&b("B")).unwrap();
    let after = std::fs::read(&env).unwrap();
    let old = decode_file(&before).unwrap();
    let new = decode_file(&after).unwrap();
    assert_ne!(old, new);
    let changed: Vec<usize> = (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect();
    let (first, last) = (changed[0], *changed.last().unwrap());
    assert!(
        first >= SIZE || last < SIZE,
        "one write touches one copy only"
    );
    // The write is one pwrite of the whole copy; a power cut leaves any
    // prefix of it on the medium.
    let start = if first >= SIZE { SIZE } else { 0 };
    for cut in 0..=SIZE {
        let mut torn = before.clone();
        torn[start..start + cut].copy_from_slice(&after[start..start + cut]);
        let got = decode_file(&torn).unwrap_or_else(|| panic!("no valid copy after {cut} bytes"));
        if cut == SIZE {
            assert_eq!(got, new);
        } else {
            assert!(
                got == old || got == new,
                "cut at {cut}: neither old nor new"
            );
            // Until the data is complete the old copy must be the one used.
            if cut < 5 + 40 {
                assert_eq!(got, old, "cut at {cut}");
            }
        }
    }
}

#[test]
fn single_copy_in_its_own_file_is_replaced_by_rename() {
    let dev = Device::new("uboot", "fw-env-config = \"fw_env.config\"", "", 2);
    std::fs::write(dev.path("init.txt"), "BOOT_ORDER=A B\n").unwrap();
    run(Command::new("mkenvimage")
        .args(["-s", "0x1000", "-o"])
        .arg(dev.path("env.bin"))
        .arg(dev.path("init.txt")));
    std::fs::write(
        dev.path("fw_env.config"),
        format!("{} 0 0x1000\n", dev.path("env.bin").display()),
    )
    .unwrap();
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(dev.path("env.bin")).unwrap().ino();
    let bl = from_config(&dev.config).unwrap();
    bl.set_primary(&b("B")).unwrap();
    assert_ne!(std::fs::metadata(dev.path("env.bin")).unwrap().ino(), ino);
    assert_eq!(
        printenv(&dev),
        "BOOT_A_LEFT=3\nBOOT_B_LEFT=3\nBOOT_ORDER=B A\n"
    );
    let cfg =
        FwEnvConfig::parse(&std::fs::read_to_string(dev.path("fw_env.config")).unwrap()).unwrap();
    assert!(!cfg.redundant());
}

#[test]
fn a_broken_fw_env_config_names_file_and_line() {
    let dev = Device::new("uboot", "fw-env-config = \"fw_env.config\"", "", 2);
    std::fs::write(dev.path("fw_env.config"), "# env\n/dev/mtd1 0 0x1000\n").unwrap();
    let err = from_config(&dev.config)
        .unwrap()
        .get_primary()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fw_env.config: line 2: /dev/mtd1: MTD and UBI"),
        "{err}"
    );
}
