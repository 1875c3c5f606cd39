//! The CLI as a client of the service: `install`, `status`, `status mark-*`
//! and `info` go through the service when it runs (same output as in-process), `--direct`
//! works in-process, and the exit codes are 0 success, 1 failure, 2 bus error.

#[path = "common/dbus.rs"]
mod common_dbus;
#[path = "common/dbus_bundles.rs"]
mod dbus_bundles;

use std::process::{Command, Output};
use std::time::Duration;

use common_dbus::*;

fn cli(bus: &Bus, device: &Device, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_didymos"));
    cmd.arg("--conf")
        .arg(&device.conf)
        .args(args)
        .envs(bus.env());
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn install_status_and_mark_through_the_service() {
    let bus = Bus::session();
    let device = Device::new("");
    let pki = dbus_bundles::keys(&device);
    let good = dbus_bundles::bundle(&device, &pki, "didymos-test", "2.0", 20);
    let foreign = dbus_bundles::bundle(&device, &pki, "another-device", "2.0", 5);
    dbus_bundles::populate(&device, &pki, false);
    let service = Service::start(&bus, &device);

    let out = run(cli(&bus, &device, &["install", good.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("installed"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        service.log_text().contains("install started"),
        "the install must have gone through the service: {}",
        service.log_text()
    );

    // The same status output through the service and in-process.
    for format in ["readable", "json", "shell"] {
        let via = run(cli(
            &bus,
            &device,
            &["status", "--detailed", "--output-format", format],
        ));
        let direct = run(cli(
            &bus,
            &device,
            &[
                "status",
                "--detailed",
                "--direct",
                "--output-format",
                format,
            ],
        ));
        assert_eq!(via.status.code(), Some(0), "{}", text(&via.stderr));
        assert_eq!(direct.status.code(), Some(0), "{}", text(&direct.stderr));
        pretty_assertions::assert_eq!(text(&direct.stdout), text(&via.stdout), "{format}");
    }

    // Marks through the service.
    let out = run(cli(&bus, &device, &["status", "mark-active", "rootfs.0"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "activated slot rootfs.0");
    let out = run(cli(&bus, &device, &["status", "mark-good", "rootfs.9"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("rootfs.9"),
        "{}",
        text(&out.stderr)
    );

    // A failing install: exit code 1 and the reason.
    let out = run(cli(&bus, &device, &["install", foreign.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("NotCompatible") && err.contains("another-device"),
        "{err}"
    );

    // --direct works in-process even though the service runs.
    let out = run(cli(
        &bus,
        &device,
        &["status", "mark-active", "--direct", "other"],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn info_through_the_service_prints_what_direct_prints() {
    let bus = Bus::session();
    let device = Device::new("");
    let pki = dbus_bundles::keys(&device);
    let good = dbus_bundles::bundle(&device, &pki, "didymos-test", "2.0", 5);
    let untrusted = dbus_bundles::refused(&device, &pki).untrusted;
    let service = Service::start(&bus, &device);
    let verified_by_service = || service.log_text().matches("signature by").count();

    for (bundle, code) in [(&good, 0), (&untrusted, 1)] {
        for format in ["readable", "json"] {
            let bundle = bundle.to_str().unwrap();
            let verified_before = verified_by_service();
            let via = run(cli(
                &bus,
                &device,
                &["info", "--output-format", format, bundle],
            ));
            if code == 0 {
                assert_eq!(
                    verified_by_service(),
                    verified_before + 1,
                    "the service must have verified the bundle: {}",
                    service.log_text()
                );
            }
            let direct = run(cli(
                &bus,
                &device,
                &["info", "--direct", "--output-format", format, bundle],
            ));
            assert_eq!(via.status.code(), Some(code), "{}", text(&via.stderr));
            assert_eq!(direct.status.code(), Some(code), "{}", text(&direct.stderr));
            pretty_assertions::assert_eq!(text(&direct.stdout), text(&via.stdout), "{format}");
            assert_eq!(text(&via.stderr), "", "{format}");
        }
    }
    let out = run(cli(&bus, &device, &["info", untrusted.to_str().unwrap()]));
    assert!(
        text(&out.stdout).contains("Verified:     NO: signer"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_service_that_goes_away_is_a_bus_error() {
    let bus = Bus::session();
    let device = Device::new("");
    let pki = dbus_bundles::keys(&device);
    let big = dbus_bundles::bundle(&device, &pki, "didymos-test", "2.0", 3000);
    let service = Service::start(&bus, &device);

    let mut install = cli(&bus, &device, &["install", big.to_str().unwrap()]);
    let child = install
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the service is installing, then kill it.
    for _ in 0..600 {
        let out = ok(bus.busctl(&["get-property", NAME, "/", IFACE, "Operation"]));
        if out.trim() == "s \"installing\"" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    service.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("D-Bus"), "{}", text(&out.stderr));
}

#[test]
fn ctrl_c_cancels_the_install_when_not_on_a_terminal() {
    let bus = Bus::session();
    let device = Device::new("");
    let pki = dbus_bundles::keys(&device);
    let big = dbus_bundles::bundle(&device, &pki, "didymos-test", "2.0", 3000);
    let _service = Service::start(&bus, &device);

    let child = cli(&bus, &device, &["install", big.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        let out = ok(bus.busctl(&["get-property", NAME, "/", IFACE, "Progress"]));
        if out.contains("Writing") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cancelling") && err.contains("Cancelled"),
        "{err}"
    );
    let out = ok(bus.busctl(&["get-property", NAME, "/", IFACE, "LastErrorName"]));
    assert_eq!(out.trim(), "s \"org.didymos.Installer1.Error.Cancelled\"");
    let out = run(cli(&bus, &device, &["status", "--output-format", "json"]));
    let status = text(&out.stdout);
    assert!(
        !status.contains("\"2.0\""),
        "nothing may be installed: {status}"
    );
}
