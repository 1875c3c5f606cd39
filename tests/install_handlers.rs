//! Tier 1: system-info, pre-install and post-install handlers.

#[path = "common/device.rs"]
mod device;

use std::os::unix::fs::PermissionsExt;

use device::Device;

fn script(path: &std::path::Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn with_handlers() -> Device {
    Device::with_config(|c| {
        format!(
            "{c}\n[handlers]\nsystem-info = \"system-info.sh\"\npre-install = \"pre.sh\"\npost-install = \"post.sh\"\n"
        )
    })
}

#[test]
fn handlers_get_slot_and_bundle_facts() {
    let d = with_handlers();
    script(
        &d.path("system-info.sh"),
        "echo SERIAL=1234\necho 'not a pair'",
    );
    script(
        &d.path("pre.sh"),
        "env | grep -E '^(DIDYMOS_|SERIAL=)' | sort > \"$0.env\"",
    );
    script(
        &d.path("post.sh"),
        "env | grep -E '^(DIDYMOS_|SERIAL=)' | sort > \"$0.env\"",
    );
    let v1 = d.bundle(1, None);
    let outcome = d.install(&v1).unwrap();
    for h in ["pre.sh.env", "post.sh.env"] {
        let env = std::fs::read_to_string(d.path(h)).unwrap();
        for want in [
            "SERIAL=1234".to_owned(),
            "DIDYMOS_SLOT_NAME=rootfs.0".to_owned(),
            "DIDYMOS_SLOT_BOOTNAME=A".to_owned(),
            "DIDYMOS_BUNDLE_VERSION=1.0".to_owned(),
            "DIDYMOS_BUNDLE_COMPATIBLE=didymos-demo".to_owned(),
            format!("DIDYMOS_IMAGE_DIGEST={}", outcome.image),
            format!("DIDYMOS_SLOT_BOOT_DIRECTORY={}", d.path("boot/A").display()),
        ] {
            assert!(env.lines().any(|l| l == want), "{h} lacks {want}:\n{env}");
        }
    }
}

#[test]
fn a_failing_pre_install_handler_stops_the_install_before_anything_is_written() {
    let d = with_handlers();
    script(&d.path("system-info.sh"), "true");
    script(&d.path("pre.sh"), "echo 'battery too low' >&2; exit 3");
    script(&d.path("post.sh"), "true");
    let v1 = d.bundle(1, None);
    let before = d.snapshot();
    let msg = d.install(&v1).unwrap_err().to_string();
    assert!(
        msg.contains("pre-install") && msg.contains("battery too low"),
        "{msg}"
    );
    assert_eq!(before, d.snapshot());
}

#[test]
fn a_failing_post_install_handler_leaves_the_slot_inactive() {
    let d = with_handlers();
    script(&d.path("system-info.sh"), "true");
    script(&d.path("pre.sh"), "true");
    script(&d.path("post.sh"), "echo 'refusing' >&2; exit 1");
    let v1 = d.bundle(1, None);
    d.install(&v1).unwrap_err();
    // Nothing was activated: the fresh device's default stays primary and
    // the written slot is bad.
    use didymos::boot::{BootState, Bootloader};
    let bl = d.bootloader();
    assert_eq!(
        bl.get_state(&didymos::slot::Bootname::new("A").unwrap())
            .unwrap(),
        BootState::Bad
    );
    d.fsck_clean();
}
