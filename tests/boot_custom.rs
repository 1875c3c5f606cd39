//! The custom-script backend: RAUC's protocol, the script's stderr in errors.

#[path = "common/boot.rs"]
mod common_boot;

use common_boot::{b, custom_device};
use didymos::boot::mark::{MarkError, MarkState, mark};
use didymos::boot::{BootError, BootState, from_config};

/// These tests write executable scripts and run them. A script written while
/// another test thread forks can be held open for writing by that child
/// until it execs, and running it then fails with ETXTBSY: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn protocol_round_trip() {
    let _serial = serial();
    let dev = custom_device("", 2);
    let bl = from_config(&dev.config).unwrap();
    assert_eq!(bl.get_primary().unwrap(), None);
    bl.set_primary(&b("B")).unwrap();
    assert_eq!(std::fs::read_to_string(dev.path("primary")).unwrap(), "B\n");
    assert_eq!(bl.get_primary().unwrap(), Some(b("B")));
    assert_eq!(bl.get_state(&b("A")).unwrap(), BootState::Bad);
    bl.set_state(&b("A"), BootState::Good).unwrap();
    assert_eq!(bl.get_state(&b("A")).unwrap(), BootState::Good);
    // get-current is optional.
    assert_eq!(bl.get_current().unwrap(), None);
    std::fs::write(dev.path("current"), "A\n").unwrap();
    assert_eq!(bl.get_current().unwrap(), Some(b("A")));
}

#[test]
fn script_failure_carries_stderr() {
    let _serial = serial();
    let dev = custom_device("", 2);
    // An answer outside the protocol.
    std::fs::write(dev.path("A.state"), "sideways\n").unwrap();
    let bl = from_config(&dev.config).unwrap();
    let err = bl.get_state(&b("A")).unwrap_err().to_string();
    assert!(
        err.contains("answer to \"get-state A\": expected \"good\" or \"bad\", got \"sideways\""),
        "{err}"
    );

    // A failing command: replace the script by one that always fails.
    std::fs::write(
        dev.path("custom.sh"),
        "#!/bin/sh\necho \"eMMC boot partition is read-only\" >&2\nexit 4\n",
    )
    .unwrap();
    let err = mark(
        &dev.config,
        bl.as_ref(),
        Some(&b("A")),
        MarkState::Good,
        "booted",
    )
    .unwrap_err();
    let MarkError::Backend {
        source:
            BootError::Command {
                stderr,
                status,
                command,
            },
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(stderr, "eMMC boot partition is read-only");
    assert!(status.contains('4'), "{status}");
    assert!(command.ends_with("custom.sh set-state A good"), "{command}");
    assert!(
        err.to_string().contains("eMMC boot partition is read-only"),
        "{err}"
    );
}

#[test]
fn missing_script_is_an_io_error_naming_it() {
    let _serial = serial();
    let dev = custom_device("", 2);
    std::fs::remove_file(dev.path("custom.sh")).unwrap();
    let bl = from_config(&dev.config).unwrap();
    let err = bl.get_primary().unwrap_err().to_string();
    assert!(
        err.contains("custom.sh") && err.contains("No such file"),
        "{err}"
    );
}
