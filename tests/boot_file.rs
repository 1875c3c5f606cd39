//! The file-backed test bootloader: reboots of a directory-backed device
//! follow the same selection as the shipped GRUB script.

#[path = "common/boot.rs"]
mod common_boot;

use common_boot::{Device, b};
use didymos::boot::file::FileBootloader;
use didymos::boot::mark::{MarkState, mark};
use didymos::boot::{BootState, Bootloader};

fn device(attempts: u32) -> (Device, FileBootloader) {
    let dev = Device::new(
        "file",
        "state-file = \"boot/state.toml\"",
        &format!("boot-attempts = {attempts}"),
        2,
    );
    std::fs::create_dir(dev.path("boot")).unwrap();
    let bl = FileBootloader::new(dev.path("boot/state.toml"), vec![b("A"), b("B")], attempts);
    (dev, bl)
}

#[test]
fn fresh_device_boots_a_and_counts() {
    let (_dev, bl) = device(3);
    assert_eq!(bl.get_primary().unwrap(), Some(b("A")));
    assert_eq!(bl.simulate_boot().unwrap(), Some(b("A")));
    assert_eq!(bl.attempts_left(&b("A")).unwrap(), Some(2));
    assert_eq!(bl.get_state(&b("B")).unwrap(), BootState::Bad);
}

#[test]
fn activated_b_boots_and_mark_good_refills() {
    let (dev, bl) = device(3);
    assert_eq!(bl.simulate_boot().unwrap(), Some(b("A")));
    mark(&dev.config, &bl, Some(&b("A")), MarkState::Good, "booted").unwrap();
    mark(&dev.config, &bl, Some(&b("A")), MarkState::Active, "other").unwrap();
    assert_eq!(bl.simulate_boot().unwrap(), Some(b("B")));
    assert_eq!(bl.attempts_left(&b("B")).unwrap(), Some(2));
    mark(&dev.config, &bl, Some(&b("B")), MarkState::Good, "booted").unwrap();
    assert_eq!(bl.attempts_left(&b("B")).unwrap(), Some(3));
    assert_eq!(bl.simulate_boot().unwrap(), Some(b("B")));
}

#[test]
fn failing_b_falls_back_to_a() {
    let (dev, bl) = device(2);
    mark(&dev.config, &bl, Some(&b("A")), MarkState::Good, "booted").unwrap();
    mark(&dev.config, &bl, Some(&b("A")), MarkState::Active, "other").unwrap();
    assert_eq!(bl.simulate_boot().unwrap(), Some(b("B")));
    assert_eq!(bl.simulate_boot().unwrap(), Some(b("B")));
    assert_eq!(bl.simulate_boot().unwrap(), Some(b("A")));
    assert_eq!(bl.attempts_left(&b("B")).unwrap(), Some(0));
    assert_eq!(bl.get_primary().unwrap(), Some(b("A")));
}

#[test]
fn both_bad_boots_nothing_and_keeps_state() {
    let (dev, bl) = device(3);
    mark(&dev.config, &bl, Some(&b("A")), MarkState::Bad, "booted").unwrap();
    let before = std::fs::read(bl.path()).unwrap();
    assert_eq!(bl.simulate_boot().unwrap(), None);
    assert_eq!(std::fs::read(bl.path()).unwrap(), before);
}

#[test]
fn state_file_is_readable_toml() {
    let (dev, bl) = device(3);
    mark(
        &dev.config,
        &bl,
        Some(&b("A")),
        MarkState::Active,
        "rootfs.1",
    )
    .unwrap();
    let text = std::fs::read_to_string(bl.path()).unwrap();
    assert!(text.contains("order = [\"B\", \"A\"]"), "{text}");
    assert_eq!(
        std::fs::read_dir(dev.path("boot")).unwrap().count(),
        1,
        "no temporaries left"
    );
}

#[test]
fn unknown_bootname_is_refused() {
    let (_dev, bl) = device(3);
    let err = bl.set_primary(&b("Q")).unwrap_err();
    assert_eq!(err.to_string(), "the bootloader knows no slot \"Q\"");
}
