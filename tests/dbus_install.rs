//! Installs through the service on a private bus: the property and signal
//! sequence of a full install, bundles refused by the call with typed errors,
//! cancel during the object copy, Busy, a client that disconnects, the
//! file-descriptor variant through every generic client, and a RAUC client
//! using only RAUC's names.

#[path = "common/dbus.rs"]
mod common_dbus;
#[path = "common/dbus_bundles.rs"]
mod dbus_bundles;

use std::collections::HashMap;
use std::time::Duration;

use common_dbus::*;
use didymos::service::Error;
use didymos::service::client::{CompletedStream, InstallerProxy};
use futures_lite::StreamExt;
use zbus::zvariant::{OwnedFd, Value};

fn fd(path: &std::path::Path) -> OwnedFd {
    OwnedFd::from(std::os::fd::OwnedFd::from(
        std::fs::File::open(path).unwrap(),
    ))
}

/// Everything observed during one install, in order.
#[derive(Debug, Default)]
struct Observed {
    operations: Vec<String>,
    percents: Vec<i32>,
    completed: Vec<i32>,
}

/// Watches `Operation`, `Progress` and `Completed` until `Completed` arrives
/// and then a little longer (to catch a second `Completed`). `on_progress`
/// sees every progress value and may act (e.g. cancel).
async fn watch(
    proxy: &InstallerProxy<'_>,
    start: impl std::future::Future<Output = Result<(), Error>>,
    mut on_progress: impl FnMut(i32, &str),
) -> Observed {
    let mut ops = proxy.receive_operation_changed().await;
    let mut progress = proxy.receive_progress_changed().await;
    let mut completed = proxy.receive_completed().await.unwrap();
    // Property streams begin with the current value; consume it so only
    // changes are recorded.
    let initial = Duration::from_secs(5);
    let first_op = tokio::time::timeout(initial, ops.next())
        .await
        .ok()
        .flatten();
    assert_eq!(first_op.unwrap().get().await.unwrap(), "idle");
    tokio::time::timeout(initial, progress.next()).await.ok();
    start.await.unwrap();
    let mut seen = Observed::default();
    let mut deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        tokio::select! {
            Some(c) = ops.next() => seen.operations.push(c.get().await.unwrap()),
            Some(p) = progress.next() => {
                let (percent, message, _) = p.get().await.unwrap();
                seen.percents.push(percent);
                on_progress(percent, &message);
            }
            Some(s) = completed.next() => {
                seen.completed.push(s.args().unwrap().result);
                deadline = tokio::time::Instant::now() + Duration::from_millis(500);
            }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    assert!(!seen.completed.is_empty(), "no Completed signal: {seen:?}");
    seen
}

fn assert_monotonic(percents: &[i32]) {
    assert!(
        percents.windows(2).all(|w| w[0] <= w[1]),
        "progress went down: {percents:?}"
    );
}

#[tokio::test]
async fn full_install_sequence() {
    let bus = Bus::session();
    let device = Device::new("");
    let pki = dbus_bundles::keys(&device);
    let bundle = dbus_bundles::bundle(&device, &pki, "didymos-test", "2.0", 50);
    let _service = Service::start(&bus, &device);
    let conn = bus.connect().await;
    let proxy = InstallerProxy::new(&conn).await.unwrap();

    let mut reports = Vec::new();
    let seen = watch(
        &proxy,
        proxy.install_bundle(bundle.to_str().unwrap(), HashMap::new()),
        |percent, message| reports.push((percent, message.to_owned())),
    )
    .await;
    // "done" is said once, at 100 % (RAUC's client prints every report).
    let done: Vec<_> = reports.iter().filter(|(_, m)| m.contains("done")).collect();
    assert_eq!(done, [&(100, "Installing done.".to_owned())], "{reports:?}");
    assert_eq!(seen.operations, ["installing", "idle"], "{seen:?}");
    assert_eq!(seen.completed, [0], "exactly one Completed(0): {seen:?}");
    assert_monotonic(&seen.percents);
    let last = *seen.percents.last().unwrap();
    assert_eq!(last, 100, "{seen:?}");
    assert_eq!(
        seen.percents.iter().filter(|p| **p == 100).count(),
        1,
        "{seen:?}"
    );
    assert_eq!(proxy.progress().await.unwrap().0, 100);
    assert_eq!(proxy.last_error().await.unwrap(), "");

    // The installed slot shows up in GetSlotStatus and is primary.
    let slots = proxy.get_slot_status().await.unwrap();
    let (_, b) = slots
        .iter()
        .find(|(n, _)| n == "rootfs.1")
        .expect("rootfs.1");
    assert_eq!(
        String::try_from(b["bundle.version"].try_clone().unwrap()).unwrap(),
        "2.0"
    );
    assert_eq!(proxy.get_primary().await.unwrap(), "rootfs.1");
    // RAUC's LastBundle and LastTransaction: the path named, and a random
    // UUID when the caller gave no transaction-id.
    assert_eq!(proxy.last_bundle().await.unwrap(), bundle.to_str().unwrap());
    let generated = proxy.last_transaction().await.unwrap();
    assert!(
        generated.len() == 36 && generated.matches('-').count() == 4,
        "{generated}"
    );

    // Through a descriptor: the path the file was opened at, and the
    // caller's transaction-id.
    let mut args = HashMap::new();
    args.insert("transaction-id", Value::from("ticket-42"));
    let seen = watch(
        &proxy,
        proxy.install_bundle_fd(fd(&bundle), args),
        |_, _| {},
    )
    .await;
    assert_eq!(seen.completed, [0], "{seen:?}");
    assert_eq!(proxy.last_bundle().await.unwrap(), bundle.to_str().unwrap());
    assert_eq!(proxy.last_transaction().await.unwrap(), "ticket-42");
}

/// A bundle the device would refuse is refused by the call itself, with the
/// typed error and the message the install would give; no install starts.
/// RAUC's interface keeps RAUC's behaviour: the install starts and fails.
#[tokio::test]
async fn a_refused_bundle_is_a_typed_error_from_the_call() {
    let bus = Bus::session();
    let device = Device::new("rauc-compat = true");
    let pki = dbus_bundles::keys(&device);
    let dbus_bundles::Refused { foreign, untrusted } = dbus_bundles::refused(&device, &pki);
    let mut service = Service::start(&bus, &device);
    service.wait_for_name(&bus, RAUC_NAME);
    let conn = bus.connect().await;
    let proxy = InstallerProxy::new(&conn).await.unwrap();
    let mut completed = proxy.receive_completed().await.unwrap();
    let mut ops = proxy.receive_operation_changed().await;
    let first = tokio::time::timeout(Duration::from_secs(5), ops.next()).await;
    assert_eq!(first.unwrap().unwrap().get().await.unwrap(), "idle");

    let not_compatible = match proxy.install_bundle_fd(fd(&foreign), HashMap::new()).await {
        Err(Error::NotCompatible(m)) => m,
        other => panic!("expected NotCompatible, got {other:?}"),
    };
    assert!(
        not_compatible.contains("\"another-device\"") && not_compatible.contains("didymos-test"),
        "{not_compatible}"
    );
    assert_eq!(proxy.last_error().await.unwrap(), not_compatible);
    assert_eq!(
        proxy.last_error_name().await.unwrap(),
        "org.didymos.Installer1.Error.NotCompatible"
    );
    match proxy
        .install_bundle(untrusted.to_str().unwrap(), HashMap::new())
        .await
    {
        Err(Error::SignatureInvalid(m)) => assert!(m.contains("not trusted"), "{m}"),
        other => panic!("expected SignatureInvalid, got {other:?}"),
    }
    assert_eq!(
        proxy.last_error_name().await.unwrap(),
        "org.didymos.Installer1.Error.SignatureInvalid"
    );
    // Below the anti-rollback floor (raised as a mark-good would have).
    didymos::install::security::raise(&device.path("store"), 5, "rootfs.0", "0.9").unwrap();
    let old = dbus_bundles::bundle(&device, &pki, "didymos-test", "2.2", 5);
    match proxy.install_bundle_fd(fd(&old), HashMap::new()).await {
        Err(Error::SecurityVersionTooOld(m)) => {
            assert!(
                m.contains("security version 0, below this device's floor 5"),
                "{m}"
            )
        }
        other => panic!("expected SecurityVersionTooOld, got {other:?}"),
    }
    assert_eq!(proxy.security_floor().await.unwrap(), 5);
    std::fs::remove_file(didymos::install::security::floor_path(
        &device.path("store"),
    ))
    .unwrap();
    // Nothing started: no Operation change, no Completed.
    let quiet = Duration::from_millis(500);
    assert!(tokio::time::timeout(quiet, ops.next()).await.is_err());
    assert!(tokio::time::timeout(quiet, completed.next()).await.is_err());

    // RAUC's InstallBundle starts the install; it fails with the same message.
    ok(bus.gdbus_call(
        RAUC_NAME,
        &format!("{RAUC_IFACE}.InstallBundle"),
        &[foreign.to_str().unwrap(), "{}"],
    ));
    assert_eq!(next_completed(&mut completed).await, 1);
    assert_eq!(proxy.last_error().await.unwrap(), not_compatible);

    // The same bundle with ignore-compatible passes the checks and installs.
    drop((ops, completed));
    let mut args = HashMap::new();
    args.insert("ignore-compatible", Value::from(true));
    let seen = watch(
        &proxy,
        proxy.install_bundle_fd(fd(&foreign), args),
        |_, _| {},
    )
    .await;
    assert_eq!(seen.completed, [0], "{seen:?}");
    assert_eq!(seen.operations, ["installing", "idle"], "{seen:?}");
    assert_eq!(proxy.last_error_name().await.unwrap(), "");
}

#[tokio::test]
async fn cancel_during_the_object_copy_and_busy() {
    let bus = Bus::session();
    let device = Device::new("");
    let pki = dbus_bundles::keys(&device);
    dbus_bundles::populate(&device, &pki, false);
    let bundle = dbus_bundles::bundle(&device, &pki, "didymos-test", "2.0", 3000);
    let _service = Service::start(&bus, &device);
    let conn = bus.connect().await;
    let proxy = InstallerProxy::new(&conn).await.unwrap();
    let before = device.boot_state();

    let canceller = InstallerProxy::new(&conn).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut sent = false;
    let seen = watch(
        &proxy,
        proxy.install_bundle_fd(fd(&bundle), HashMap::new()),
        |percent, message| {
            if !sent && message.starts_with("Writing") && percent > 15 && percent < 80 {
                sent = true;
                let _ = tx.send(percent);
            }
        },
    );
    let control = async {
        let percent = rx.recv().await.expect("never saw the object copy");
        // A second install while one runs gets Busy.
        match canceller
            .install_bundle_fd(fd(&bundle), HashMap::new())
            .await
        {
            Err(Error::Busy(_)) => {}
            other => panic!("expected Busy, got {other:?}"),
        }
        canceller.cancel().await.unwrap();
        percent
    };
    let (seen, cancelled_at) = tokio::join!(seen, control);
    assert_eq!(seen.completed, [1], "{seen:?}");
    assert!(
        *seen.percents.last().unwrap() < 100,
        "cancelled at {cancelled_at}: {seen:?}"
    );
    assert_eq!(
        proxy.last_error_name().await.unwrap(),
        "org.didymos.Installer1.Error.Cancelled"
    );
    // The old slot is still the one booted next; the store is consistent.
    let slots = proxy.get_slot_status().await.unwrap();
    let (_, b) = slots.iter().find(|(n, _)| n == "rootfs.1").unwrap();
    assert!(
        !b.contains_key("bundle.version"),
        "rootfs.1 must have no record: {b:?}"
    );
    assert_ne!(proxy.get_primary().await.ok().as_deref(), Some("rootfs.1"));
    let _ = before;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_didymos"))
        .arg("--conf")
        .arg(&device.conf)
        .arg("fsck")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fsck: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_client_that_disconnects_does_not_abort_the_install() {
    let bus = Bus::session();
    let device = Device::new("");
    let pki = dbus_bundles::keys(&device);
    let bundle = dbus_bundles::bundle(&device, &pki, "didymos-test", "2.0", 300);
    let _service = Service::start(&bus, &device);

    let watcher = bus.connect().await;
    let proxy = InstallerProxy::new(&watcher).await.unwrap();
    let mut completed = proxy.receive_completed().await.unwrap();
    {
        let starter = bus.connect().await;
        let p = InstallerProxy::new(&starter).await.unwrap();
        p.install_bundle(bundle.to_str().unwrap(), HashMap::new())
            .await
            .unwrap();
        drop(p);
        starter.close().await.unwrap();
    }
    let signal = tokio::time::timeout(Duration::from_secs(120), completed.next())
        .await
        .expect("no Completed")
        .unwrap();
    assert_eq!(
        signal.args().unwrap().result,
        0,
        "{}",
        proxy.last_error().await.unwrap()
    );
    assert_eq!(proxy.get_primary().await.unwrap(), "rootfs.1");
}

/// Waits (polling with busctl) until `Operation` is idle again.
fn wait_idle(bus: &Bus) {
    for _ in 0..1200 {
        let out = ok(bus.busctl(&["get-property", NAME, "/", IFACE, "Operation"]));
        if out.trim() == "s \"idle\"" {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the install did not finish");
}

#[test]
fn generic_clients_install_inspect_and_read_status() {
    let bus = Bus::session();
    let device = Device::new("");
    let pki = dbus_bundles::keys(&device);
    let v2 = dbus_bundles::bundle(&device, &pki, "didymos-test", "2.0", 5);
    let v3 = dbus_bundles::bundle(&device, &pki, "didymos-test", "3.0", 5);
    let _service = Service::start(&bus, &device);
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();

    // Inspect and Info through busctl and gdbus.
    let out = ok(bus.busctl(&["call", NAME, "/", IFACE, "Info", "s", &path(&v2)]));
    assert_eq!(out.trim(), "ss \"didymos-test\" \"2.0\"");
    let out = ok(bus.gdbus_call(NAME, &format!("{IFACE}.InspectBundle"), &[&path(&v2), "{}"]));
    assert!(
        out.contains("'version': <'2.0'>") && out.contains("'manifest-hash'"),
        "{out}"
    );

    // InstallBundle through busctl; GetSlotStatus through gdbus.
    ok(bus.busctl(&[
        "call",
        NAME,
        "/",
        IFACE,
        "InstallBundle",
        "sa{sv}",
        &path(&v2),
        "1",
        "transaction-id",
        "s",
        "t-1",
    ]));
    wait_idle(&bus);
    let out = ok(bus.busctl(&["get-property", NAME, "/", IFACE, "LastError"]));
    assert_eq!(out.trim(), "s \"\"");
    let out = ok(bus.gdbus_call(NAME, &format!("{IFACE}.GetSlotStatus"), &[]));
    assert!(out.contains("'bundle.version': <'2.0'>"), "{out}");
    let out = ok(bus.busctl(&["call", NAME, "/", IFACE, "GetPrimary"]));
    assert_eq!(out.trim(), "s \"rootfs.1\"");

    // The descriptor variants through gdbus, which sends an `h` argument as
    // one of its own descriptors.
    let out =
        ok(bus.gdbus_call_with_fd(NAME, &format!("{IFACE}.InspectBundleFd"), &v3, &["3", "{}"]));
    assert!(out.contains("'version': <'3.0'>"), "{out}");
    ok(bus.gdbus_call_with_fd(NAME, &format!("{IFACE}.InstallBundleFd"), &v3, &["3", "{}"]));
    wait_idle(&bus);
    let out = ok(bus.busctl(&["call", NAME, "/", IFACE, "GetSlotStatus", "--json=short"]));
    assert!(out.contains("\"3.0\""), "{out}");

    // InspectBundle through busctl; the deprecated Install through gdbus.
    let out = ok(bus.busctl(&[
        "call",
        NAME,
        "/",
        IFACE,
        "InspectBundle",
        "sa{sv}",
        &path(&v2),
        "0",
        "--json=short",
    ]));
    assert!(
        out.contains("\"2.0\"") && out.contains("manifest-hash"),
        "{out}"
    );
    ok(bus.gdbus_call(NAME, &format!("{IFACE}.Install"), &[&path(&v2)]));
    wait_idle(&bus);
    let out = ok(bus.gdbus_call(NAME, &format!("{IFACE}.GetSlotStatus"), &[]));
    // Still booted from A, every install went into rootfs.1: now the third.
    assert!(
        out.contains("'bundle.version': <'2.0'>") && out.contains("'installed.count': <uint32 3>"),
        "{out}"
    );
}

/// The result of the next `Completed` signal.
async fn next_completed(completed: &mut CompletedStream) -> i32 {
    let signal = tokio::time::timeout(Duration::from_secs(120), completed.next())
        .await
        .expect("no Completed")
        .unwrap();
    signal.args().unwrap().result
}

/// `gdbus call` passes a bundle as a file descriptor: an install that
/// completes, and typed errors.
#[tokio::test]
async fn gdbus_installs_from_a_file_descriptor() {
    let bus = Bus::session();
    let device = Device::new("");
    let pki = dbus_bundles::keys(&device);
    let v2 = dbus_bundles::bundle(&device, &pki, "didymos-test", "2.0", 5);
    let dbus_bundles::Refused { foreign, untrusted } = dbus_bundles::refused(&device, &pki);
    let _service = Service::start(&bus, &device);
    let conn = bus.connect().await;
    let proxy = InstallerProxy::new(&conn).await.unwrap();
    let mut completed = proxy.receive_completed().await.unwrap();
    let method = format!("{IFACE}.InstallBundleFd");

    let out = ok(bus.gdbus_call_with_fd(NAME, &method, &v2, &["3", "{}"]));
    assert_eq!(out.trim(), "()");
    assert_eq!(
        next_completed(&mut completed).await,
        0,
        "{}",
        proxy.last_error().await.unwrap()
    );
    assert_eq!(proxy.operation().await.unwrap(), "idle");
    let out = ok(bus.gdbus_call(NAME, &format!("{IFACE}.GetSlotStatus"), &[]));
    assert!(out.contains("'bundle.version': <'2.0'>"), "{out}");
    assert_eq!(proxy.get_primary().await.unwrap(), "rootfs.1");

    // A descriptor that is not a regular file: the call fails, typed.
    let err = fails(bus.gdbus_call_with_fd(
        NAME,
        &method,
        std::path::Path::new("/dev/null"),
        &["3", "{}"],
    ));
    assert!(
        err.contains("org.didymos.Installer1.Error.InvalidArgument")
            && err.contains("regular file"),
        "{err}"
    );
    // Bundles this device refuses: the call fails, typed, before any install.
    let err = fails(bus.gdbus_call_with_fd(NAME, &method, &foreign, &["3", "{}"]));
    assert!(
        err.contains(
            "org.didymos.Installer1.Error.NotCompatible: bundle is for \"another-device\""
        ),
        "{err}"
    );
    let err = fails(bus.gdbus_call_with_fd(NAME, &method, &untrusted, &["3", "{}"]));
    assert!(
        err.contains("org.didymos.Installer1.Error.SignatureInvalid: signer")
            && err.contains("not trusted"),
        "{err}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), completed.next())
            .await
            .is_err(),
        "a refused bundle must not start an install"
    );
}

/// systemd 257's busctl passes a bundle as a file descriptor (`h 3` with the
/// bundle open as its descriptor 3).
#[test]
fn busctl_installs_from_a_file_descriptor() {
    let busctl = fd_busctl();
    let bus = Bus::session();
    let device = Device::new("");
    let pki = dbus_bundles::keys(&device);
    let v2 = dbus_bundles::bundle(&device, &pki, "didymos-test", "2.0", 5);
    let dbus_bundles::Refused { foreign, untrusted } = dbus_bundles::refused(&device, &pki);
    let _service = Service::start(&bus, &device);
    let call = |method: &str, file: &std::path::Path| {
        bus.busctl_with_fd(
            &busctl,
            file,
            &["call", NAME, "/", IFACE, method, "ha{sv}", "3", "0"],
        )
    };

    let out = ok(call("InspectBundleFd", &v2));
    assert!(out.contains("\"version\" s \"2.0\""), "{out}");
    assert_eq!(ok(call("InstallBundleFd", &v2)), "");
    wait_idle(&bus);
    let out = ok(bus.busctl(&["get-property", NAME, "/", IFACE, "LastError"]));
    assert_eq!(out.trim(), "s \"\"");
    let out = ok(bus.busctl(&["call", NAME, "/", IFACE, "GetSlotStatus", "--json=short"]));
    assert!(out.contains("\"2.0\""), "{out}");
    let out = ok(bus.busctl(&["call", NAME, "/", IFACE, "GetPrimary"]));
    assert_eq!(out.trim(), "s \"rootfs.1\"");

    // busctl prints the message of an error, not its name: LastErrorName
    // names a refused bundle's error.
    let err = fails(call("InstallBundleFd", std::path::Path::new("/dev/null")));
    assert!(err.contains("not a regular file"), "{err}");
    let last_error_name = || ok(bus.busctl(&["get-property", NAME, "/", IFACE, "LastErrorName"]));
    let err = fails(call("InstallBundleFd", &foreign));
    assert!(err.contains("bundle is for \"another-device\""), "{err}");
    assert_eq!(
        last_error_name().trim(),
        "s \"org.didymos.Installer1.Error.NotCompatible\""
    );
    let err = fails(bus.busctl(&[
        "call",
        NAME,
        "/",
        IFACE,
        "InstallBundle",
        "sa{sv}",
        untrusted.to_str().unwrap(),
        "0",
    ]));
    assert!(err.contains("not trusted"), "{err}");
    assert_eq!(
        last_error_name().trim(),
        "s \"org.didymos.Installer1.Error.SignatureInvalid\""
    );
    let out = ok(bus.busctl(&["get-property", NAME, "/", IFACE, "Operation"]));
    assert_eq!(out.trim(), "s \"idle\"");
    let out = ok(bus.busctl(&["call", NAME, "/", IFACE, "GetPrimary"]));
    assert_eq!(
        out.trim(),
        "s \"rootfs.1\"",
        "the refused bundles changed nothing"
    );
}

#[tokio::test]
async fn inspect_and_info_through_a_proxy() {
    let bus = Bus::session();
    let device = Device::new("");
    let pki = dbus_bundles::keys(&device);
    let v2 = dbus_bundles::bundle(&device, &pki, "didymos-test", "2.0", 5);
    let _service = Service::start(&bus, &device);
    let conn = bus.connect().await;
    let proxy = InstallerProxy::new(&conn).await.unwrap();

    let (compatible, version) = proxy.info(v2.to_str().unwrap()).await.unwrap();
    assert_eq!(
        (compatible.as_str(), version.as_str()),
        ("didymos-test", "2.0")
    );
    let by_path = proxy
        .inspect_bundle(v2.to_str().unwrap(), HashMap::new())
        .await
        .unwrap();
    let by_fd = proxy
        .inspect_bundle_fd(fd(&v2), HashMap::new())
        .await
        .unwrap();
    let hash = |d: &didymos::service::wire::Dict| {
        String::try_from(d["manifest-hash"].try_clone().unwrap()).unwrap()
    };
    assert_eq!(hash(&by_path).len(), 64);
    assert_eq!(hash(&by_path), hash(&by_fd));
    // A file that is not a bundle: a typed error naming the problem.
    match proxy
        .inspect_bundle_fd(fd(&device.conf), HashMap::new())
        .await
    {
        Err(Error::BundleInvalid(m)) => assert!(!m.is_empty()),
        other => panic!("expected BundleInvalid, got {other:?}"),
    }
}

#[test]
fn rauc_client_installs_reads_status_and_marks() {
    let bus = Bus::session();
    let device = Device::new("rauc-compat = true");
    let pki = dbus_bundles::keys(&device);
    dbus_bundles::populate(&device, &pki, false);
    let v2 = dbus_bundles::bundle(&device, &pki, "didymos-test", "2.0", 5);
    let mut service = Service::start(&bus, &device);
    service.wait_for_name(&bus, RAUC_NAME);
    let m = |method: &str| format!("{RAUC_IFACE}.{method}");

    ok(bus.gdbus_call(
        RAUC_NAME,
        &m("InstallBundle"),
        &[v2.to_str().unwrap(), "{}"],
    ));
    for _ in 0..1200 {
        let out = ok(bus.gdbus_call(
            RAUC_NAME,
            "org.freedesktop.DBus.Properties.Get",
            &[RAUC_IFACE, "Operation"],
        ));
        if out.contains("'idle'") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = ok(bus.gdbus_call(
        RAUC_NAME,
        "org.freedesktop.DBus.Properties.Get",
        &[RAUC_IFACE, "LastError"],
    ));
    assert_eq!(out.trim(), "(<''>,)");
    let out = ok(bus.gdbus_call(RAUC_NAME, &m("GetSlotStatus"), &[]));
    assert!(
        out.contains("'rootfs.1'") && out.contains("'bundle.version': <'2.0'>"),
        "{out}"
    );
    let out = ok(bus.gdbus_call(RAUC_NAME, &m("GetPrimary"), &[]));
    assert_eq!(out.trim(), "('rootfs.1',)");
    let out = ok(bus.gdbus_call(RAUC_NAME, &m("Mark"), &["active", "rootfs.0"]));
    assert_eq!(out.trim(), "('rootfs.0', 'activated slot rootfs.0')");
    let out = ok(bus.gdbus_call(RAUC_NAME, &m("GetPrimary"), &[]));
    assert_eq!(out.trim(), "('rootfs.0',)");
    let out = ok(bus.gdbus_call(RAUC_NAME, &m("GetArtifactStatus"), &[]));
    assert_eq!(out.trim(), "(@aa{sv} [],)");
}

#[tokio::test]
async fn a_killed_service_reports_the_interrupted_install_after_restart() {
    let bus = Bus::session();
    let device = Device::new("");
    let pki = dbus_bundles::keys(&device);
    dbus_bundles::populate(&device, &pki, false);
    let bundle = dbus_bundles::bundle(&device, &pki, "didymos-test", "2.0", 3000);
    let service = Service::start(&bus, &device);
    {
        let conn = bus.connect().await;
        let proxy = InstallerProxy::new(&conn).await.unwrap();
        let mut progress = proxy.receive_progress_changed().await;
        proxy
            .install_bundle_fd(fd(&bundle), HashMap::new())
            .await
            .unwrap();
        // Kill it in the middle of the object copy.
        loop {
            let p = tokio::time::timeout(Duration::from_secs(60), progress.next())
                .await
                .expect("no progress")
                .unwrap();
            let (percent, message, _) = p.get().await.unwrap();
            if message.starts_with("Writing") && percent > 15 {
                break;
            }
        }
    }
    service.kill();

    let _service = Service::start(&bus, &device);
    let conn = bus.connect().await;
    let proxy = InstallerProxy::new(&conn).await.unwrap();
    assert_eq!(
        proxy.last_error_name().await.unwrap(),
        "org.didymos.Installer1.Error.Interrupted"
    );
    let msg = proxy.last_error().await.unwrap();
    assert!(msg.contains("2.0") && msg.contains("rootfs.1"), "{msg}");
    assert_eq!(proxy.operation().await.unwrap(), "idle");
    assert_ne!(proxy.get_primary().await.ok().as_deref(), Some("rootfs.1"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_didymos"))
        .arg("--conf")
        .arg(&device.conf)
        .arg("fsck")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fsck: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
