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

    // The commands the demo suggests run as printed (after `cargo run`,
    // `didymos` is not on PATH).
    let suggested: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("Try:"))
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(suggested.len(), 2, "{stdout}");
    for line in suggested {
        let out = Command::new("sh")
            .args(["-c", line])
            .env("PATH", "/usr/bin:/bin")
            .env_remove("DBUS_STARTER_BUS_TYPE")
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}: {}", text(&out.stderr));
    }
    // No empty lines for what the bundle does not have.
    let out = didymos(&["status", "--conf", conf, "--detailed"]);
    let detailed = text(&out.stdout);
    assert!(
        !detailed.lines().any(|l| l.trim_end().ends_with(':')),
        "{detailed}"
    );
    // `--conf` does not apply to the demo, and its help does not offer it.
    let out = didymos(&["demo", "--help"]);
    assert!(out.status.success());
    assert!(
        !text(&out.stdout).contains("--conf"),
        "{}",
        text(&out.stdout)
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
