//! The README's first command: `didymos demo DIR` takes a demo device through
//! two updates, and the device it leaves behind answers the commands the demo
//! suggests.

use std::path::Path;
use std::process::{Command, Output};

fn didymos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_didymos"))
        .args(args)
        // The demo device is served in-process, whatever bus is around.
        .env_remove("DBUS_STARTER_BUS_TYPE")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn demo_runs_two_updates_and_leaves_a_working_device() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo-device");
    let dir_s = dir.to_str().unwrap();
    let out = didymos(&["demo", dir_s]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("x [rootfs.1] (composefs, booted)"),
        "{stdout}"
    );

    let conf = dir.join("system.conf");
    let conf = conf.to_str().unwrap();
    let out = didymos(&["status", "--conf", conf, "--output-format", "shell"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = text(&out.stdout);
    for want in [
        "DIDYMOS_SYSTEM_BOOTED_BOOTNAME='B'",
        "DIDYMOS_BOOT_PRIMARY='rootfs.1'",
        "DIDYMOS_SLOT_BUNDLE_VERSION_1='1.0'",
        "DIDYMOS_SLOT_BUNDLE_VERSION_2='2.0'",
        "DIDYMOS_SLOT_BOOT_STATUS_2='good'",
    ] {
        assert!(
            status.lines().any(|l| l == want),
            "{want} not in:\n{status}"
        );
    }
    let out = didymos(&["fsck", "--conf", conf]);
    assert!(
        out.status.success() && text(&out.stdout).contains("clean"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // A second run refuses to reuse the directory.
    let out = didymos(&["demo", dir_s]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already exists and is not empty"),
        "{}",
        text(&out.stderr)
    );
    assert!(Path::new(conf).exists());
}
