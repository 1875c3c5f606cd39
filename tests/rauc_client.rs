//! Debian's real `rauc` command line (trixie's RAUC 1.13, unpacked by
//! `tests/rauc/fetch`, not installed) against the service's RAUC
//! compatibility name on a private bus: `status` in every output format,
//! `install`, and `status mark-*`, each answer checked.

#[path = "common/dbus.rs"]
mod common_dbus;
#[path = "common/dbus_bundles.rs"]
mod dbus_bundles;

use std::process::{Command, Output};

use common_dbus::*;

/// `rauc ARGS...` on the test's bus.
fn rauc(bus: &Bus, args: &[&str]) -> Output {
    Command::new(rauc_client())
        .args(args)
        .envs(bus.env())
        .output()
        .expect("cannot run rauc")
}

/// The text without terminal colour codes (rauc colours even into a pipe).
fn plain(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `rauc status --detailed --output-format=json`, parsed; slots by name.
fn status_json(
    bus: &Bus,
) -> (
    serde_json::Value,
    serde_json::Map<String, serde_json::Value>,
) {
    let out = rauc(bus, &["status", "--detailed", "--output-format=json"]);
    assert!(out.status.success(), "{}", plain(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("rauc's JSON does not parse ({e}): {}", plain(&out.stdout)));
    let mut slots = serde_json::Map::new();
    for entry in v["slots"].as_array().expect("no slots array") {
        for (name, slot) in entry.as_object().unwrap() {
            slots.insert(name.clone(), slot.clone());
        }
    }
    (v, slots)
}

/// `rauc status --detailed --output-format=shell`, as (name, value) pairs.
fn status_shell(bus: &Bus) -> Vec<(String, String)> {
    let out = rauc(bus, &["status", "--detailed", "--output-format=shell"]);
    assert!(out.status.success(), "{}", plain(&out.stderr));
    plain(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

fn shell_value<'a>(vars: &'a [(String, String)], key: &str) -> &'a str {
    vars.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("rauc's shell output has no {key}: {vars:?}"))
}

fn rauc_property(bus: &Bus, property: &str) -> String {
    ok(bus.busctl(&["get-property", RAUC_NAME, "/", RAUC_IFACE, property]))
        .trim()
        .to_owned()
}

#[test]
fn debian_rauc_reads_status_installs_and_marks() {
    let bus = Bus::session();
    let device = Device::new("rauc-compat = true");
    let pki = dbus_bundles::keys(&device);
    dbus_bundles::populate(&device, &pki, false);
    let v2 = dbus_bundles::bundle(&device, &pki, "didymos-test", "2.0", 5);
    let foreign = dbus_bundles::bundle(&device, &pki, "another-device", "2.0", 5);
    let mut service = Service::start(&bus, &device);
    service.wait_for_name(&bus, RAUC_NAME);
    let slot_dir_text = |n: &str| {
        device
            .path("store")
            .join("slots")
            .join(n)
            .display()
            .to_string()
    };

    // `rauc status`: (device, type, state) for every slot, nothing null.
    let out = rauc(&bus, &["status"]);
    assert!(out.status.success(), "{}", plain(&out.stderr));
    let text = plain(&out.stdout);
    assert!(text.contains("Compatible:  didymos-test"), "{text}");
    assert!(text.contains("Booted from: rootfs.0 (A)"), "{text}");
    assert!(!text.contains("(null)"), "{text}");
    for (slot, state) in [("rootfs.0", "booted"), ("rootfs.1", "inactive")] {
        let line = format!("[{slot}] ({}, composefs, {state})", slot_dir_text(slot));
        assert!(text.contains(&line), "no {line:?} in:\n{text}");
    }

    // JSON and shell: device and status for every slot.
    let (v, slots) = status_json(&bus);
    assert_eq!(v["compatible"], "didymos-test");
    assert_eq!(v["booted"], "A");
    assert_eq!(v["boot_primary"], "rootfs.0");
    assert_eq!(slots.len(), 2, "{v}");
    // A holds the release it booted (0.1); B nothing yet.
    let expected_status = |name: &str| if name == "rootfs.0" { "ok" } else { "empty" };
    for (name, slot) in &slots {
        assert_eq!(slot["device"], slot_dir_text(name), "{slot}");
        assert_eq!(slot["type"], "composefs", "{slot}");
        assert_eq!(
            slot["slot_status"]["status"],
            expected_status(name),
            "{slot}"
        );
    }
    let vars = status_shell(&bus);
    assert_eq!(shell_value(&vars, "RAUC_SLOTS"), "1 2");
    for n in 1..=2 {
        let name = shell_value(&vars, "RAUC_SYSTEM_SLOTS")
            .split(' ')
            .nth(n - 1)
            .unwrap()
            .to_owned();
        assert_eq!(
            shell_value(&vars, &format!("RAUC_SLOT_DEVICE_{n}")),
            slot_dir_text(&name)
        );
        assert_eq!(
            shell_value(&vars, &format!("RAUC_SLOT_STATUS_STATUS_{n}")),
            expected_status(&name)
        );
    }
    assert_eq!(rauc_property(&bus, "LastBundle"), "s \"\"");
    assert_eq!(rauc_property(&bus, "LastTransaction"), "s \"\"");

    // `rauc install`: progress, success, the slot's new status.
    let out = rauc(&bus, &["install", v2.to_str().unwrap()]);
    let stdout = plain(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", plain(&out.stderr));
    assert!(
        stdout.contains(&format!("Installing `{}` succeeded", v2.display())),
        "{stdout}"
    );
    assert!(stdout.contains("100% Installing done."), "{stdout}");
    assert_eq!(
        rauc_property(&bus, "LastBundle"),
        format!("s \"{}\"", v2.display())
    );
    let transaction = rauc_property(&bus, "LastTransaction");
    let uuid = transaction.trim_start_matches("s \"").trim_end_matches('"');
    assert!(
        uuid.len() == 36 && uuid.matches('-').count() == 4,
        "LastTransaction is not a UUID: {transaction}"
    );
    let (v, slots) = status_json(&bus);
    assert_eq!(v["boot_primary"], "rootfs.1");
    let b = &slots["rootfs.1"]["slot_status"];
    assert_eq!(b["status"], "ok", "{b}");
    assert_eq!(b["bundle"]["version"], "2.0", "{b}");
    assert_eq!(b["bundle"]["compatible"], "didymos-test", "{b}");
    assert_eq!(b["installed"]["count"], 1, "{b}");
    assert_eq!(slots["rootfs.0"]["slot_status"]["status"], "ok");
    let vars = status_shell(&bus);
    let n = shell_value(&vars, "RAUC_SYSTEM_SLOTS")
        .split(' ')
        .position(|s| s == "rootfs.1")
        .unwrap()
        + 1;
    assert_eq!(
        shell_value(&vars, &format!("RAUC_SLOT_STATUS_STATUS_{n}")),
        "ok"
    );
    assert_eq!(
        shell_value(&vars, &format!("RAUC_SLOT_STATUS_BUNDLE_VERSION_{n}")),
        "2.0"
    );

    // A bundle for another device: rauc reports the service's reason.
    let out = rauc(&bus, &["install", foreign.to_str().unwrap()]);
    let all = plain(&out.stdout) + &plain(&out.stderr);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("another-device") && all.contains("failed"),
        "{all}"
    );

    // `rauc status mark-*`: the message, and the bootloader's state.
    let mark = |args: &[&str]| {
        let out = rauc(&bus, args);
        let all = plain(&out.stdout) + &plain(&out.stderr);
        (out.status.success(), all)
    };
    let (ok_, all) = mark(&["status", "mark-good", "booted"]);
    assert!(ok_ && all.contains("marked slot rootfs.0 as good"), "{all}");
    let (ok_, all) = mark(&["status", "mark-active", "rootfs.0"]);
    assert!(ok_ && all.contains("activated slot rootfs.0"), "{all}");
    assert!(
        device.boot_state().contains("order = [\"A\", \"B\"]"),
        "{}",
        device.boot_state()
    );
    let (ok_, all) = mark(&["status", "mark-bad", "other"]);
    assert!(ok_ && all.contains("marked slot rootfs.1 as bad"), "{all}");
    let (_, slots) = status_json(&bus);
    assert_eq!(slots["rootfs.1"]["boot_status"], "bad");
    assert_eq!(slots["rootfs.0"]["boot_status"], "good");
    let (ok_, all) = mark(&["status", "mark-good", "nowhere"]);
    assert!(!ok_ && all.contains("unknown slot \"nowhere\""), "{all}");
}
