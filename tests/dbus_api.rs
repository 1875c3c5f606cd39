//! The service's API on a private session-like bus, through a zbus proxy and
//! through the generic clients `busctl` and `gdbus`: properties, the
//! introspection data against the shipped XML, marking, argument checking and
//! typed errors.

#[path = "common/dbus.rs"]
mod common_dbus;
#[path = "common/dbus_bundles.rs"]
mod dbus_bundles;

use common_dbus::*;
use didymos::service::Error;
use didymos::service::client::InstallerProxy;

fn start(dbus: &str) -> (Bus, Device, Service) {
    let bus = Bus::session();
    let device = Device::new(dbus);
    let service = Service::start(&bus, &device);
    (bus, device, service)
}

#[tokio::test]
async fn properties_through_every_client() {
    let (bus, _device, _service) = start("");
    let expected = [
        ("Operation", "s \"idle\""),
        ("LastError", "s \"\""),
        ("LastErrorName", "s \"\""),
        ("LastBundle", "s \"\""),
        ("LastTransaction", "s \"\""),
        ("Progress", "(isi) 0 \"\" 0"),
        ("Compatible", "s \"didymos-test\""),
        ("Variant", "s \"dev\""),
        ("BootSlot", "s \"A\""),
        ("SecurityFloor", "t 0"),
    ];
    for (prop, value) in expected {
        let out = ok(bus.busctl(&["get-property", NAME, "/", IFACE, prop]));
        assert_eq!(out.trim(), value, "busctl get-property {prop}");
    }
    let out = ok(bus.busctl(&["get-property", NAME, "/", IFACE, "SystemVersion"]));
    assert!(out.starts_with("s \""), "{out}");

    let gdbus = |prop: &str| {
        ok(bus.gdbus_call(NAME, "org.freedesktop.DBus.Properties.Get", &[IFACE, prop]))
    };
    assert_eq!(gdbus("Compatible").trim(), "(<'didymos-test'>,)");
    assert_eq!(gdbus("Operation").trim(), "(<'idle'>,)");
    assert_eq!(gdbus("BootSlot").trim(), "(<'A'>,)");
    assert_eq!(gdbus("Progress").trim(), "(<(0, '', 0)>,)");

    let conn = bus.connect().await;
    let proxy = InstallerProxy::new(&conn).await.unwrap();
    assert_eq!(proxy.operation().await.unwrap(), "idle");
    assert_eq!(proxy.compatible().await.unwrap(), "didymos-test");
    assert_eq!(proxy.variant().await.unwrap(), "dev");
    assert_eq!(proxy.boot_slot().await.unwrap(), "A");
    assert_eq!(proxy.last_error().await.unwrap(), "");
    assert_eq!(proxy.last_error_name().await.unwrap(), "");
    assert_eq!(proxy.progress().await.unwrap(), (0, String::new(), 0));
    proxy.system_version().await.unwrap();
}

#[tokio::test]
async fn artifact_status_is_an_empty_array() {
    let (bus, _device, _service) = start("");
    let out = ok(bus.busctl(&["call", NAME, "/", IFACE, "GetArtifactStatus"]));
    assert_eq!(out.trim(), "aa{sv} 0");
    let out = ok(bus.gdbus_call(NAME, &format!("{IFACE}.GetArtifactStatus"), &[]));
    assert_eq!(out.trim(), "(@aa{sv} [],)");
    let conn = bus.connect().await;
    let proxy = InstallerProxy::new(&conn).await.unwrap();
    assert!(proxy.get_artifact_status().await.unwrap().is_empty());
}

#[tokio::test]
async fn mark_through_every_client() {
    let bus = Bus::session();
    let device = Device::new("");
    let pki = dbus_bundles::keys(&device);
    dbus_bundles::populate(&device, &pki, true);
    let _service = Service::start(&bus, &device);
    // busctl: mark the other slot active.
    let out = ok(bus.busctl(&["call", NAME, "/", IFACE, "Mark", "ss", "active", "other"]));
    assert_eq!(out.trim(), "ss \"rootfs.1\" \"activated slot rootfs.1\"");
    assert!(
        device.boot_state().contains("order = [\"B\", \"A\"]"),
        "{}",
        device.boot_state()
    );
    // gdbus: mark it bad.
    let out = ok(bus.gdbus_call(NAME, &format!("{IFACE}.Mark"), &["bad", "rootfs.1"]));
    assert_eq!(out.trim(), "('rootfs.1', 'marked slot rootfs.1 as bad')");
    // zbus: mark the booted slot good.
    let conn = bus.connect().await;
    let proxy = InstallerProxy::new(&conn).await.unwrap();
    let (slot, message) = proxy.mark("good", "booted").await.unwrap();
    assert_eq!(slot, "rootfs.0");
    assert_eq!(message, "marked slot rootfs.0 as good");
    // Typed errors.
    match proxy.mark("great", "booted").await {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("\"great\""), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    match proxy.mark("good", "rootfs.7").await {
        Err(Error::NoSuchSlot(m)) => assert!(m.contains("rootfs.7"), "{m}"),
        other => panic!("expected NoSuchSlot, got {other:?}"),
    }
    let err = fails(bus.gdbus_call(NAME, &format!("{IFACE}.Mark"), &["good", "nowhere"]));
    assert!(
        err.contains("org.didymos.Installer1.Error.NoSuchSlot"),
        "{err}"
    );
}

#[tokio::test]
async fn install_arguments_are_checked_by_name() {
    let (bus, device, _service) = start("");
    let bundle = device.path("system.conf");
    let bundle = bundle.to_str().unwrap();
    let conn = bus.connect().await;
    let proxy = InstallerProxy::new(&conn).await.unwrap();

    let mut args = std::collections::HashMap::new();
    args.insert("ignore-compatibel", zbus::zvariant::Value::from(true));
    match proxy.install_bundle(bundle, args).await {
        Err(Error::InvalidArgument(m)) => {
            assert!(m.contains("unknown argument \"ignore-compatibel\""), "{m}");
            assert!(m.contains("ignore-compatible (b)"), "{m}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }

    let err = fails(bus.gdbus_call(
        NAME,
        &format!("{IFACE}.InstallBundle"),
        &[bundle, "{'ignore-compatible': <'yes'>}"],
    ));
    assert!(
        err.contains("org.didymos.Installer1.Error.InvalidArgument"),
        "{err}"
    );
    assert!(
        err.contains("must be of type b (boolean), got type s"),
        "{err}"
    );

    let out = bus.busctl(&[
        "call",
        NAME,
        "/",
        IFACE,
        "InstallBundle",
        "sa{sv}",
        "relative.raucb",
        "0",
    ]);
    let err = fails(out);
    assert!(err.contains("is not absolute"), "{err}");

    let err = fails(bus.gdbus_call(
        NAME,
        &format!("{IFACE}.InstallBundle"),
        &["ftp://example.invalid/b.raucb", "{}"],
    ));
    assert!(
        err.contains("org.didymos.Installer1.Error.NotSupported")
            && err.contains("http:// or https://"),
        "{err}"
    );

    // A directory passed as a descriptor is refused before anything starts.
    let dir = std::fs::File::open(device.path("store")).unwrap();
    let fd = zbus::zvariant::OwnedFd::from(std::os::fd::OwnedFd::from(dir));
    match proxy.install_bundle_fd(fd, Default::default()).await {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("not a regular file"), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert_eq!(proxy.operation().await.unwrap(), "idle");
}

#[tokio::test]
async fn cancel_without_an_install_is_a_typed_error() {
    let (bus, _device, _service) = start("");
    let conn = bus.connect().await;
    let proxy = InstallerProxy::new(&conn).await.unwrap();
    match proxy.cancel().await {
        Err(Error::NotRunning(_)) => {}
        other => panic!("expected NotRunning, got {other:?}"),
    }
    let err = fails(bus.busctl(&["call", NAME, "/", IFACE, "Cancel"]));
    assert!(err.contains("nothing to cancel"), "{err}");
}

#[tokio::test]
async fn introspection_matches_the_shipped_xml() {
    let (bus, _device, _service) = start("");
    let live = ok(bus.gdbus(
        "introspect",
        &["--dest", NAME, "--object-path", "/", "--xml"],
    ));
    let shipped = std::fs::read_to_string(repo_file("dbus/org.didymos.Installer1.xml")).unwrap();
    let live = interface_members(&live, IFACE);
    let shipped = interface_members(&shipped, IFACE);
    assert!(!shipped.is_empty());
    pretty_assertions::assert_eq!(shipped, live);
}

#[tokio::test]
async fn rauc_interface_has_rauc_signatures() {
    let (bus, _device, mut service) = start("rauc-compat = true");
    service.wait_for_name(&bus, RAUC_NAME);
    let live = ok(bus.gdbus(
        "introspect",
        &["--dest", RAUC_NAME, "--object-path", "/", "--xml"],
    ));
    let members = interface_members(&live, RAUC_IFACE);
    // RAUC's de.pengutronix.rauc.Installer (its current introspection data),
    // member for member.
    let expected: Vec<String> = [
        "method GetArtifactStatus out aa{sv}",
        "method GetPrimary out s",
        "method GetSlotStatus out a(sa{sv})",
        "method Info in s",
        "method Info out s",
        "method Info out s",
        "method InspectBundle in a{sv}",
        "method InspectBundle in s",
        "method InspectBundle out a{sv}",
        "method Install in s",
        "method InstallBundle in a{sv}",
        "method InstallBundle in s",
        "method Mark in s",
        "method Mark in s",
        "method Mark out s",
        "method Mark out s",
        "method-exists GetArtifactStatus",
        "method-exists GetPrimary",
        "method-exists GetSlotStatus",
        "method-exists Info",
        "method-exists InspectBundle",
        "method-exists Install",
        "method-exists InstallBundle",
        "method-exists Mark",
        "property BootSlot s read",
        "property Compatible s read",
        "property LastBundle s read",
        "property LastError s read",
        "property LastTransaction s read",
        "property Operation s read",
        "property Progress (isi) read",
        "property Variant s read",
        "signal Completed i",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let types: Vec<String> = members
        .iter()
        .map(|m| {
            m.split_whitespace()
                .filter(|w| !w.starts_with("name="))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let mut types = types;
    types.sort();
    pretty_assertions::assert_eq!(expected, types);
    let out = ok(bus.busctl(&["get-property", RAUC_NAME, "/", RAUC_IFACE, "Compatible"]));
    assert_eq!(out.trim(), "s \"didymos-test\"");
}

/// The members of one interface in introspection XML, one normalized line
/// each (sorted): `method <Name> <dir> <type> name=<arg>`, `property <Name>
/// <type> <access>`, `signal <Name> <type>`. Comments and annotations are
/// ignored; a tiny tag scanner is enough for introspection data.
fn interface_members(xml: &str, interface: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_iface = false;
    let mut member: Option<(String, String)> = None; // (kind, name)
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        rest = &rest[start..];
        if rest.starts_with("<!--") {
            let end = rest.find("-->").expect("unterminated comment");
            rest = &rest[end + 3..];
            continue;
        }
        let end = rest.find('>').expect("unterminated tag");
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        let closing = tag.starts_with('/');
        let tag = tag.trim_start_matches('/').trim_end_matches('/');
        let mut words = tag.splitn(2, char::is_whitespace);
        let element = words.next().unwrap_or("");
        let attrs = attributes(words.next().unwrap_or(""));
        let attr = |k: &str| {
            attrs
                .iter()
                .find(|(a, _)| a == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        match (element, closing) {
            ("interface", false) => in_iface = attr("name") == interface,
            ("interface", true) => in_iface = false,
            _ if !in_iface => {}
            ("method" | "signal", false) => {
                let name = attr("name");
                if element == "method" {
                    out.push(format!("method-exists {name}"));
                }
                member = Some((element.to_owned(), name));
            }
            ("method" | "signal", true) => member = None,
            ("property", false) => out.push(format!(
                "property {} {} {}",
                attr("name"),
                attr("type"),
                attr("access")
            )),
            ("arg", false) => {
                let (kind, name) = member.clone().expect("arg outside a member");
                if kind == "signal" {
                    out.push(format!(
                        "signal {name} {} name={}",
                        attr("type"),
                        attr("name")
                    ));
                } else {
                    let dir = match attr("direction").as_str() {
                        "" => "in".to_owned(),
                        d => d.to_owned(),
                    };
                    out.push(format!(
                        "method {name} {dir} {} name={}",
                        attr("type"),
                        attr("name")
                    ));
                }
            }
            _ => {}
        }
    }
    out.sort();
    out
}

fn attributes(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().to_owned();
        let after = &rest[eq + 1..];
        let quote = after.chars().next().unwrap_or('"');
        let after = &after[1..];
        let close = after.find(quote).unwrap_or(after.len());
        out.push((key, after[..close].to_owned()));
        rest = &after[(close + 1).min(after.len())..];
    }
    out
}

/// `didymos service` names what is wrong: no bus to connect to, or the
/// name already owned by another service.
#[test]
fn service_says_what_is_wrong_with_the_bus() {
    let device = Device::new("");
    // A second daemon that waited in the name's queue would never exit:
    // it gets 20 s, then the test fails.
    let run = |envs: Vec<(&'static str, String)>| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_didymos"))
            .arg("--conf")
            .arg(&device.conf)
            .arg("service")
            .env_remove("DBUS_STARTER_BUS_TYPE")
            .envs(envs)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("didymos service did not exit (waiting for the name?)");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(vec![(
        "DBUS_SYSTEM_BUS_ADDRESS",
        format!("unix:path={}", device.path("no-bus-here").display()),
    )]);
    assert!(err.contains("no message bus answers there"), "{err}");
    assert!(!err.contains("another didymos service"), "{err}");

    let bus = Bus::session();
    let _first = Service::start(&bus, &device);
    let err = run(bus.env());
    assert!(
        err.contains("another didymos service owns the name already"),
        "{err}"
    );
}
