//! Authorization, at the bus and in the service.
//!
//! 1. The shipped policy file, loaded by a real `dbus-daemon` with a
//!    system-bus-like configuration: a non-root user may read properties and
//!    call `GetSlotStatus`, but gets an access error for `InstallBundle` and
//!    `Mark`.
//! 2. The service's own check (a bus that lets everything through): a non-root
//!    caller gets `PermissionDenied`; a member of `[dbus] install-group` may mark.
//!
//! These tests create a user and run clients as that user: they must run as root.

#[path = "common/bundle.rs"]
mod common_bundle;
#[path = "common/dbus.rs"]
mod common_dbus;
#[path = "common/dbus_bundles.rs"]
mod dbus_bundles;

use std::process::Command;

use common_dbus::*;

/// The two tests change /etc/group and /etc/passwd (user and group creation)
/// while dbus-daemon reads them; run them one after the other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn gdbus_as(
    bus: &Bus,
    uid: u32,
    gid: u32,
    groups: Option<u32>,
    args: &[&str],
) -> std::process::Output {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    match groups {
        Some(g) => cmd.arg(format!("--groups={g}")),
        None => cmd.arg("--clear-groups"),
    };
    cmd.args(["--", "gdbus", "call", "--system", "--object-path", "/"])
        .args(args)
        .envs(bus.env());
    cmd.output().expect("cannot run setpriv")
}

#[test]
fn shipped_policy_allows_reading_and_denies_changes() {
    let _serial = serial();
    let (uid, gid) = unprivileged_user();
    let policy = repo_file("dbus/org.didymos.Installer1.conf");
    let bus = Bus::system(Some(&policy));
    let device = Device::new("rauc-compat = true");
    let pki = dbus_bundles::keys(&device);
    dbus_bundles::populate(&device, &pki, true);
    let boot_state = device.boot_state();
    let mut service = Service::start(&bus, &device);
    service.wait_for_name(&bus, RAUC_NAME);

    let call = |dest: &str, method: &str, args: &[&str]| {
        let mut all = vec!["--dest", dest, "--method", method];
        all.extend_from_slice(args);
        gdbus_as(&bus, uid, gid, None, &all)
    };

    for (dest, iface) in [(NAME, IFACE), (RAUC_NAME, RAUC_IFACE)] {
        let out = ok(call(
            dest,
            "org.freedesktop.DBus.Properties.Get",
            &[iface, "Compatible"],
        ));
        assert_eq!(out.trim(), "(<'didymos-test'>,)");
        let out = ok(call(
            dest,
            "org.freedesktop.DBus.Properties.GetAll",
            &[iface],
        ));
        assert!(out.contains("'Operation': <'idle'>"), "{out}");
        let out = ok(call(dest, &format!("{iface}.GetSlotStatus"), &[]));
        assert!(
            out.contains("'rootfs.0'") && out.contains("'rootfs.1'"),
            "{out}"
        );

        let bundle = device.path("system.conf");
        let err = fails(call(
            dest,
            &format!("{iface}.InstallBundle"),
            &[bundle.to_str().unwrap(), "{}"],
        ));
        assert!(
            err.contains("org.freedesktop.DBus.Error.AccessDenied"),
            "{dest}: {err}"
        );
        let err = fails(call(dest, &format!("{iface}.Mark"), &["good", "booted"]));
        assert!(
            err.contains("org.freedesktop.DBus.Error.AccessDenied"),
            "{dest}: {err}"
        );
    }
    let err = fails(call(NAME, &format!("{IFACE}.Cancel"), &[]));
    assert!(
        err.contains("org.freedesktop.DBus.Error.AccessDenied"),
        "{err}"
    );
    assert_eq!(
        device.boot_state(),
        boot_state,
        "nothing may have been marked"
    );

    // Root passes the same policy.
    let out = ok(bus.gdbus_call(NAME, &format!("{IFACE}.Mark"), &["good", "booted"]));
    assert!(out.contains("rootfs.0"), "{out}");
}

#[test]
fn service_checks_the_caller_itself() {
    let _serial = serial();
    let (uid, gid) = unprivileged_user();
    // A group for installers, with the test user not in it by default.
    let group = "didymos-dbus-test-installers";
    let status = Command::new("groupadd")
        .args(["-f", "--system", group])
        .status()
        .unwrap();
    assert!(status.success(), "groupadd failed");
    let out = ok(Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap());
    let install_gid: u32 = out.trim().split(':').nth(2).unwrap().parse().unwrap();

    let bus = Bus::system(None);
    let device = Device::new(&format!("install-group = \"{group}\""));
    let pki = dbus_bundles::keys(&device);
    dbus_bundles::populate(&device, &pki, true);
    let boot_state = device.boot_state();
    let _service = Service::start(&bus, &device);

    let mark = |groups: Option<u32>| {
        gdbus_as(
            &bus,
            uid,
            gid,
            groups,
            &[
                "--dest",
                NAME,
                "--method",
                &format!("{IFACE}.Mark"),
                "active",
                "other",
            ],
        )
    };
    let err = fails(mark(None));
    assert!(
        err.contains("org.didymos.Installer1.Error.PermissionDenied"),
        "{err}"
    );
    assert!(
        err.contains(&format!("uid {uid} may not mark slots")),
        "{err}"
    );
    assert_eq!(device.boot_state(), boot_state);

    let bundle = device.path("system.conf");
    let err = fails(gdbus_as(
        &bus,
        uid,
        gid,
        None,
        &[
            "--dest",
            NAME,
            "--method",
            &format!("{IFACE}.InstallBundle"),
            bundle.to_str().unwrap(),
            "{}",
        ],
    ));
    assert!(
        err.contains("org.didymos.Installer1.Error.PermissionDenied"),
        "{err}"
    );

    // A member of the install group may mark, but still may not name a path.
    let out = ok(mark(Some(install_gid)));
    assert!(out.contains("activated slot rootfs.1"), "{out}");
    let err = fails(gdbus_as(
        &bus,
        uid,
        gid,
        Some(install_gid),
        &[
            "--dest",
            NAME,
            "--method",
            &format!("{IFACE}.InstallBundle"),
            bundle.to_str().unwrap(),
            "{}",
        ],
    ));
    assert!(
        err.contains("org.didymos.Installer1.Error.PermissionDenied"),
        "{err}"
    );
    assert!(err.contains("InstallBundleFd"), "{err}");
}

/// The service's peak resident memory (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kb * 1024
}

/// `InspectBundleFd` is open to every caller. A sparse file of a few KiB
/// whose header claims a 1 GiB object index, sent by an unprivileged user
/// three times at once, must neither make the root daemon allocate the
/// claimed size nor run more inspections than the bound at once.
#[test]
fn unprivileged_inspections_are_bounded_in_memory() {
    let _serial = serial();
    let user = unprivileged_user();
    let bus = Bus::system(None);
    let device = Device::new("");
    let pki = dbus_bundles::keys(&device);
    let good = dbus_bundles::bundle(&device, &pki, "didymos-test", "2.0", 5);
    let hostile = device.path("hostile.raucb");
    let claimed = 16 + 64 * didymos::bundle::format::MAX_OBJECTS;
    common_bundle::with_inflated_index(&good, &hostile, claimed);
    assert!(std::fs::metadata(&hostile).unwrap().len() > claimed);
    for f in [&good, &hostile] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let service = Service::start(&bus, &device);
    // One ordinary inspection first, so the baseline includes its buffers.
    let inspect = |file: &std::path::Path| {
        bus.gdbus_call_with_fd_as(
            user,
            NAME,
            &format!("{IFACE}.InspectBundleFd"),
            file,
            &["3", "{}"],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
    };
    let out = inspect(&good).wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("manifest-hash"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = peak_rss(service.pid());

    let calls: Vec<_> = (0..3).map(|_| inspect(&hostile)).collect();
    let mut refused = 0;
    for c in calls {
        let out = c.wait_with_output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("org.didymos.Installer1.Error.BundleInvalid") {
            assert!(err.contains("the object index region is"), "{err}");
            refused += 1;
        } else {
            assert!(err.contains("org.didymos.Installer1.Error.Busy"), "{err}");
        }
    }
    assert!(refused >= 1, "no call reached the bundle check");
    let after = peak_rss(service.pid());
    assert!(
        after < before + 32 * 1024 * 1024,
        "the service's peak RSS grew from {before} to {after} bytes"
    );
}
