//! Every mark transition (good / bad / active on booted, other and a slot
//! name, with and without prevent-late-fallback) for every backend, through
//! `boot::from_config` and `boot::mark::mark`.

#[path = "common/boot.rs"]
mod common_boot;
#[path = "common/efi.rs"]
mod common_efi;

use common_boot::{Device, b};
use didymos::boot::mark::{MarkError, MarkState, mark};
use didymos::boot::{BootState, Bootloader, from_config};

use BootState::{Bad, Good};
use MarkState::{Active, Bad as MBad, Good as MGood};

/// How a backend's observable state follows the marks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    /// Order + good flag (+ attempts): file, grub, uboot, custom.
    Counting,
    /// BootOrder / BootNext: mark-good moves the slot to the front of BootOrder.
    Efi,
    /// Remembers nothing.
    Noop,
}

struct Backend {
    name: &'static str,
    family: Family,
    make: fn(system_extra: &str, slots: usize) -> Device,
}

fn backends() -> Vec<Backend> {
    vec![
        Backend {
            name: "file",
            family: Family::Counting,
            make: |extra, n| Device::new("file", "state-file = \"state.toml\"", extra, n),
        },
        Backend {
            name: "grub",
            family: Family::Counting,
            make: |extra, n| Device::new("grub", "grubenv = \"grubenv\"", extra, n),
        },
        Backend {
            name: "grub",
            family: Family::Counting,
            make: |extra, n| {
                Device::new(
                    "grub",
                    "grubenv = \"grubenv\"\ngrub-scheme = \"attempts\"",
                    extra,
                    n,
                )
            },
        },
        Backend {
            name: "uboot",
            family: Family::Counting,
            make: |extra, n| {
                let dev = Device::new("uboot", "fw-env-config = \"fw_env.config\"", extra, n);
                common_boot::setup_uboot_env(&dev, "bootdelay=0\n");
                dev
            },
        },
        Backend {
            name: "custom",
            family: Family::Counting,
            make: common_boot::custom_device,
        },
        Backend {
            name: "efi",
            family: Family::Efi,
            make: common_efi::efi_device,
        },
        Backend {
            name: "noop",
            family: Family::Noop,
            make: |extra, n| Device::new("noop", "", extra, n),
        },
    ]
}

type Observed = (Option<&'static str>, BootState, BootState);

struct Row {
    what: &'static str,
    booted: &'static str,
    prevent_late_fallback: bool,
    setup: &'static [(MarkState, &'static str)],
    mark: (MarkState, &'static str),
    counting: Observed,
    efi: Observed,
}

const ROWS: &[Row] = &[
    Row {
        what: "good booted",
        booted: "A",
        prevent_late_fallback: false,
        setup: &[],
        mark: (MGood, "booted"),
        counting: (Some("A"), Good, Bad),
        efi: (Some("A"), Good, Bad),
    },
    Row {
        what: "bad booted",
        booted: "A",
        prevent_late_fallback: false,
        setup: &[],
        mark: (MBad, "booted"),
        counting: (None, Bad, Bad),
        efi: (None, Bad, Bad),
    },
    Row {
        what: "active booted",
        booted: "A",
        prevent_late_fallback: false,
        setup: &[],
        mark: (Active, "booted"),
        counting: (Some("A"), Good, Bad),
        efi: (Some("A"), Good, Bad),
    },
    Row {
        what: "good other",
        booted: "A",
        prevent_late_fallback: false,
        setup: &[],
        mark: (MGood, "other"),
        counting: (Some("A"), Good, Good),
        efi: (Some("B"), Good, Good),
    },
    Row {
        what: "bad other",
        booted: "A",
        prevent_late_fallback: false,
        setup: &[(MGood, "rootfs.1")],
        mark: (MBad, "other"),
        counting: (Some("A"), Good, Bad),
        efi: (Some("A"), Good, Bad),
    },
    Row {
        what: "active other",
        booted: "A",
        prevent_late_fallback: false,
        setup: &[],
        mark: (Active, "other"),
        counting: (Some("B"), Good, Good),
        efi: (Some("B"), Good, Good),
    },
    Row {
        what: "good by name",
        booted: "A",
        prevent_late_fallback: false,
        setup: &[],
        mark: (MGood, "rootfs.1"),
        counting: (Some("A"), Good, Good),
        efi: (Some("B"), Good, Good),
    },
    Row {
        what: "bad by name",
        booted: "A",
        prevent_late_fallback: false,
        setup: &[],
        mark: (MBad, "rootfs.0"),
        counting: (None, Bad, Bad),
        efi: (None, Bad, Bad),
    },
    Row {
        what: "active by name",
        booted: "A",
        prevent_late_fallback: false,
        setup: &[],
        mark: (Active, "rootfs.1"),
        counting: (Some("B"), Good, Good),
        efi: (Some("B"), Good, Good),
    },
    Row {
        what: "active other from B",
        booted: "B",
        prevent_late_fallback: false,
        setup: &[(Active, "rootfs.1")],
        mark: (Active, "other"),
        counting: (Some("A"), Good, Good),
        // B was only ever a one-shot BootNext trial, never put into
        // BootOrder; activating A replaces BootNext, so the firmware has no
        // way left to boot B: it reads as bad.
        efi: (Some("A"), Good, Bad),
    },
    Row {
        what: "late fallback prevented",
        booted: "A",
        prevent_late_fallback: true,
        setup: &[(MGood, "rootfs.1")],
        mark: (MGood, "booted"),
        counting: (Some("A"), Good, Bad),
        efi: (Some("A"), Good, Bad),
    },
    Row {
        what: "activated slot survives a late mark-good",
        booted: "A",
        prevent_late_fallback: true,
        setup: &[(Active, "rootfs.1")],
        mark: (MGood, "booted"),
        counting: (Some("B"), Good, Good),
        efi: (Some("B"), Good, Good),
    },
    Row {
        what: "trial slot committed, old one bad",
        booted: "B",
        prevent_late_fallback: true,
        setup: &[(Active, "rootfs.1")],
        mark: (MGood, "booted"),
        counting: (Some("B"), Bad, Good),
        efi: (Some("B"), Bad, Good),
    },
    Row {
        what: "plf off: good by name of booted keeps other",
        booted: "A",
        prevent_late_fallback: false,
        setup: &[(MGood, "rootfs.1")],
        mark: (MGood, "rootfs.0"),
        counting: (Some("A"), Good, Good),
        efi: (Some("A"), Good, Good),
    },
];

fn observe(bl: &dyn Bootloader) -> (Option<String>, BootState, BootState) {
    (
        bl.get_primary().unwrap().map(|b| b.to_string()),
        bl.get_state(&b("A")).unwrap(),
        bl.get_state(&b("B")).unwrap(),
    )
}

#[test]
fn every_transition_for_every_backend() {
    for backend in backends() {
        for row in ROWS {
            let extra = if row.prevent_late_fallback {
                "prevent-late-fallback = true"
            } else {
                ""
            };
            let dev = (backend.make)(extra, 2);
            let bl = from_config(&dev.config).unwrap();
            assert_eq!(bl.name(), backend.name);
            let booted = b(row.booted);
            // Known start: A active and good, B bad.
            for (state, id) in [
                (Active, "rootfs.0"),
                (MGood, "rootfs.0"),
                (MBad, "rootfs.1"),
            ]
            .iter()
            .chain(row.setup)
            {
                mark(&dev.config, bl.as_ref(), Some(&booted), *state, id).unwrap();
            }
            let outcome = mark(
                &dev.config,
                bl.as_ref(),
                Some(&booted),
                row.mark.0,
                row.mark.1,
            )
            .unwrap_or_else(|e| panic!("{} / {}: {e}", backend.name, row.what));
            let want = match backend.family {
                Family::Counting => row.counting,
                Family::Efi => row.efi,
                Family::Noop => (None, Good, Good),
            };
            let want = (want.0.map(str::to_owned), want.1, want.2);
            assert_eq!(
                observe(bl.as_ref()),
                want,
                "{} / {}",
                backend.name,
                row.what
            );
            assert!(
                outcome.message.contains(&outcome.slot.to_string()),
                "{}",
                outcome.message
            );
        }
    }
}

#[test]
fn outcome_names_the_slot_and_what_was_done() {
    let dev = Device::new(
        "file",
        "state-file = \"s.toml\"",
        "prevent-late-fallback = true",
        2,
    );
    let bl = from_config(&dev.config).unwrap();
    mark(&dev.config, bl.as_ref(), Some(&b("A")), MGood, "rootfs.1").unwrap();
    let out = mark(&dev.config, bl.as_ref(), Some(&b("A")), MGood, "booted").unwrap();
    assert_eq!(out.slot.to_string(), "rootfs.0");
    assert_eq!(
        out.message,
        "marked slot rootfs.0 as good; marked slot rootfs.1 as bad (prevent-late-fallback)"
    );
    let out = mark(&dev.config, bl.as_ref(), Some(&b("A")), Active, "other").unwrap();
    assert_eq!(
        (out.slot.to_string(), out.message.as_str()),
        ("rootfs.1".into(), "activated slot rootfs.1")
    );
}

#[test]
fn errors_are_specific() {
    for backend in backends() {
        let dev = (backend.make)("", 3);
        let bl = from_config(&dev.config).unwrap();
        let a = b("A");
        let cases: Vec<(Option<&didymos::slot::Bootname>, &str, &str)> = vec![
            (None, "booted", "booted slot is not known"),
            (None, "other", "booted slot is not known"),
            (
                Some(&a),
                "other",
                "\"other\" is ambiguous: besides the booted rootfs.0 there are rootfs.1, rootfs.2",
            ),
            (
                Some(&a),
                "rootfs.7",
                "unknown slot \"rootfs.7\": expected \"booted\", \"other\" or one of rootfs.0, rootfs.1, rootfs.2",
            ),
            (Some(&a), "bogus", "unknown slot \"bogus\""),
        ];
        for (booted, id, want) in cases {
            let err = mark(&dev.config, bl.as_ref(), booted, MGood, id).unwrap_err();
            assert!(
                err.to_string().contains(want),
                "{}: {want:?} not in {err}",
                backend.name
            );
        }
        let z = b("Z");
        let err = mark(&dev.config, bl.as_ref(), Some(&z), MGood, "booted").unwrap_err();
        assert!(matches!(err, MarkError::BootedNotConfigured(_)), "{err}");
    }
}

#[test]
fn backend_errors_carry_the_backend_message() {
    let dev = Device::new("file", "state-file = \"state.toml\"", "", 2);
    std::fs::write(dev.path("state.toml"), "order = 5\n").unwrap();
    let bl = from_config(&dev.config).unwrap();
    let err = mark(&dev.config, bl.as_ref(), Some(&b("A")), MGood, "booted").unwrap_err();
    let MarkError::Backend { slot, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(slot.to_string(), "rootfs.0");
    let msg = err.to_string();
    assert!(
        msg.contains("state.toml") && msg.contains("not a valid bootloader state file"),
        "{msg}"
    );
}
