//! The EFI backend against a directory laid out like efivarfs, with real
//! binary variables: the update cycle with the firmware's reset modelled,
//! exact bytes written, entries that belong to no slot left alone, the
//! immutable flag, and malformed variables.

#[path = "common/boot.rs"]
mod common_boot;
#[path = "common/efi.rs"]
mod common_efi;

use std::path::Path;

use common_boot::b;
use common_efi::*;
use didymos::boot::efi::EfiBootloader;
use didymos::boot::efivar::{DevicePath, LoadOption, parse_boot_order, parse_option_number};
use didymos::boot::mark::{MarkState, mark};
use didymos::boot::{BootState, Bootloader, from_config};

fn efi(dev: &common_boot::Device) -> EfiBootloader {
    EfiBootloader::new(efivars(dev), dev.config.bootnames())
}

/// Every Boot#### file, by name, byte for byte.
fn boot_entries(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            let n = e.file_name().into_string().unwrap();
            n.len() > 9
                && n.starts_with("Boot")
                && n.as_bytes()[4..8].iter().all(u8::is_ascii_hexdigit)
                && n.as_bytes()[8] == b'-'
        })
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn reads_the_boot_manager_like_efibootmgr() {
    let dev = efi_device("", 2);
    let bl = efi(&dev);
    let shown = bl.boot_manager().unwrap().to_string();
    let guid = "5b3f0c2e-7d41-4a8e-9c1f-2d6e8a4b7c10";
    assert_eq!(
        shown,
        format!(
            "BootCurrent: 0001\n\
             BootOrder: 0001,0002,0000\n\
             Boot0000* debian\tHD(1,GPT,{guid},0x800,0x100000)/File(\\EFI\\debian\\shimx64.efi)\n\
             Boot0001* A\tHD(1,GPT,{guid},0x800,0x100000)/File(\\EFI\\Linux\\didymos-A.efi)\n\
             Boot0002* B\tHD(1,GPT,{guid},0x800,0x100000)/File(\\EFI\\Linux\\didymos-B.efi)\n\
             Boot0080  EFI Internal Shell\tPath(4,7,{})/Path(4,6,{})\n",
            "11".repeat(16),
            "22".repeat(16)
        )
    );
    let bm = bl.boot_manager().unwrap();
    let a = bm.entry(1).unwrap();
    assert_eq!(a.option.optional_data, ucs2("didymos.slot=A console=ttyS0"));
    assert_eq!(bl.get_primary().unwrap(), Some(b("A")));
    assert_eq!(bl.get_current().unwrap(), Some(b("A")));
    assert_eq!(bl.get_state(&b("A")).unwrap(), BootState::Good);
    assert_eq!(bl.get_state(&b("B")).unwrap(), BootState::Good);
    assert_eq!(bl.attempts_left(&b("A")).unwrap(), None);
}

#[test]
fn from_config_builds_the_efi_backend() {
    let dev = efi_device("", 2);
    let bl = from_config(&dev.config).unwrap();
    assert_eq!(bl.name(), "efi");
    assert_eq!(bl.get_current().unwrap(), Some(b("A")));
}

/// Install into B (mark bad, then active), the trial boot, mark-good: the
/// exact variables after each step, and the firmware's choice at reset.
#[test]
fn update_cycle_with_a_successful_trial() {
    let dev = efi_device("", 2);
    let dir = efivars(&dev);
    let bl = efi(&dev);
    let before = boot_entries(&dir);

    bl.set_state(&b("B"), BootState::Bad).unwrap();
    assert_eq!(
        read_var(&dir, "BootOrder"),
        Some((NV_BS_RT, u16_list(&[1, 0])))
    );
    assert_eq!(bl.get_state(&b("B")).unwrap(), BootState::Bad);

    bl.set_primary(&b("B")).unwrap();
    assert_eq!(
        std::fs::read(var_path(&dir, "BootNext")).unwrap(),
        [7, 0, 0, 0, 2, 0]
    );
    assert_eq!(bl.get_primary().unwrap(), Some(b("B")));
    assert_eq!(bl.get_state(&b("B")).unwrap(), BootState::Good);
    assert_eq!(boot_order(&dir), Some(vec![1, 0]), "BootOrder unchanged");

    // Reset: the firmware boots B once and deletes BootNext.
    assert_eq!(firmware_reset(&dir), Some(2));
    assert_eq!(bl.get_current().unwrap(), Some(b("B")));
    assert_eq!(bl.get_primary().unwrap(), Some(b("A")), "B is on trial");
    assert_eq!(bl.get_state(&b("B")).unwrap(), BootState::Bad);

    // The booted slot confirms itself.
    let booted = bl.get_current().unwrap().unwrap();
    let out = mark(&dev.config, &bl, Some(&booted), MarkState::Good, "booted").unwrap();
    assert_eq!(out.message, "marked slot rootfs.1 as good");
    assert_eq!(boot_order(&dir), Some(vec![2, 1, 0]));
    assert_eq!(boot_next(&dir), None);
    assert_eq!(bl.get_primary().unwrap(), Some(b("B")));
    assert_eq!(firmware_reset(&dir), Some(2), "B is permanent now");
    assert_eq!(firmware_reset(&dir), Some(2));

    assert_eq!(boot_entries(&dir), before, "no Boot#### was touched");
}

/// The trial boot never confirms: the next reset goes back to A, and B
/// reads as bad. One activation, one attempt.
#[test]
fn failed_trial_falls_back_after_one_boot() {
    let dev = efi_device("", 2);
    let dir = efivars(&dev);
    let bl = efi(&dev);
    bl.set_state(&b("B"), BootState::Bad).unwrap();
    bl.set_primary(&b("B")).unwrap();
    assert_eq!(firmware_reset(&dir), Some(2));
    // B hangs; the watchdog resets the device.
    assert_eq!(firmware_reset(&dir), Some(1));
    assert_eq!(bl.get_current().unwrap(), Some(b("A")));
    assert_eq!(bl.get_primary().unwrap(), Some(b("A")));
    assert_eq!(bl.get_state(&b("A")).unwrap(), BootState::Good);
    assert_eq!(bl.get_state(&b("B")).unwrap(), BootState::Bad);
    assert_eq!(firmware_reset(&dir), Some(1));
}

/// mark-bad of a slot waiting for its trial cancels the trial; marking both
/// slots bad leaves only the other OS in BootOrder; with no other entry
/// BootOrder is deleted, as efivarfs does for a variable without data.
#[test]
fn mark_bad_cancels_a_trial_and_empties_the_order() {
    let dev = efi_device("", 2);
    let dir = efivars(&dev);
    let bl = efi(&dev);
    bl.set_primary(&b("B")).unwrap();
    bl.set_state(&b("B"), BootState::Bad).unwrap();
    assert_eq!(boot_next(&dir), None);
    assert_eq!(boot_order(&dir), Some(vec![1, 0]));
    bl.set_state(&b("A"), BootState::Bad).unwrap();
    assert_eq!(boot_order(&dir), Some(vec![0]));
    assert_eq!(bl.get_primary().unwrap(), None);
    assert_eq!(firmware_reset(&dir), Some(0), "the other OS boots");

    write_var(&dir, "BootOrder", NV_BS_RT, &u16_list(&[2]));
    bl.set_state(&b("B"), BootState::Bad).unwrap();
    assert!(!var_path(&dir, "BootOrder").exists());
    assert_eq!(bl.get_primary().unwrap(), None);
    // And back: mark-good creates BootOrder with the standard attributes.
    bl.set_state(&b("A"), BootState::Good).unwrap();
    assert_eq!(
        read_var(&dir, "BootOrder"),
        Some((NV_BS_RT, u16_list(&[1])))
    );
}

/// An entry that belongs to no slot keeps its place and bytes; mark-good
/// moves only the slot; existing attributes are kept.
#[test]
fn unrelated_entries_are_left_alone() {
    let dev = efi_device("", 2);
    let dir = efivars(&dev);
    write_var(&dir, "BootOrder", NV_BS_RT, &u16_list(&[0, 0x80, 1, 2]));
    let before = boot_entries(&dir);
    let timeout = std::fs::read(var_path(&dir, "Timeout")).unwrap();
    let bl = efi(&dev);
    // The other OS comes first: it is no slot, so the primary is A.
    assert_eq!(bl.get_primary().unwrap(), Some(b("A")));
    bl.set_state(&b("B"), BootState::Good).unwrap();
    assert_eq!(boot_order(&dir), Some(vec![2, 0, 0x80, 1]));
    bl.set_state(&b("A"), BootState::Bad).unwrap();
    assert_eq!(boot_order(&dir), Some(vec![2, 0, 0x80]));
    bl.set_primary(&b("A")).unwrap();
    bl.set_state(&b("A"), BootState::Good).unwrap();
    assert_eq!(boot_order(&dir), Some(vec![1, 2, 0, 0x80]));
    assert_eq!(boot_entries(&dir), before);
    assert_eq!(std::fs::read(var_path(&dir, "Timeout")).unwrap(), timeout);

    // BootNext pointing at another OS: the firmware boots that next, the
    // primary slot is the first slot after it.
    write_var(&dir, "BootNext", NV_BS_RT, &0u16.to_le_bytes());
    assert_eq!(bl.get_primary().unwrap(), Some(b("A")));
    bl.set_state(&b("A"), BootState::Good).unwrap();
    assert_eq!(boot_next(&dir), Some(0), "another OS's BootNext is kept");
    // BootCurrent naming another OS: no booted slot.
    write_var(&dir, "BootCurrent", BS_RT, &0u16.to_le_bytes());
    assert_eq!(bl.get_current().unwrap(), None);
    std::fs::remove_file(var_path(&dir, "BootCurrent")).unwrap();
    assert_eq!(bl.get_current().unwrap(), None);

    // Attributes of an existing variable are kept (here: no runtime access
    // bit would be unusual, but it is the firmware's choice).
    write_var(&dir, "BootOrder", 0x3, &u16_list(&[1, 2]));
    bl.set_state(&b("B"), BootState::Good).unwrap();
    assert_eq!(read_var(&dir, "BootOrder"), Some((0x3, u16_list(&[2, 1]))));
}

/// efivarfs marks variables immutable; didymos lifts the flag, writes,
/// and sets it again; deleting an immutable BootNext works too.
#[test]
fn immutable_variables_are_written_and_stay_immutable() {
    use didymos::sys::fsflags::{is_immutable, set_immutable};
    assert!(
        rustix::process::geteuid().is_root(),
        "this test sets FS_IMMUTABLE_FL and needs root (CAP_LINUX_IMMUTABLE)"
    );
    let dev = efi_device("", 2);
    let dir = efivars(&dev);
    let bl = efi(&dev);
    let order = var_path(&dir, "BootOrder");
    assert_eq!(
        is_immutable(&order).unwrap(),
        Some(false),
        "the test directory's filesystem must support inode flags"
    );
    write_var(&dir, "BootNext", NV_BS_RT, &2u16.to_le_bytes());
    let next = var_path(&dir, "BootNext");
    for path in [&order, &next] {
        set_immutable(path, true).unwrap();
        assert!(std::fs::OpenOptions::new().write(true).open(path).is_err());
    }
    let result = (|| {
        bl.set_state(&b("B"), BootState::Good)?;
        assert_eq!(boot_order(&dir), Some(vec![2, 1, 0]));
        assert!(!next.exists(), "the immutable BootNext was deleted");
        assert_eq!(is_immutable(&order).unwrap(), Some(true));
        bl.set_primary(&b("A"))
    })();
    let _ = set_immutable(&order, false);
    let _ = set_immutable(&next, false);
    result.unwrap();
    assert_eq!(boot_next(&dir), Some(1));
}

#[test]
fn slot_entries_must_exist_and_be_unique() {
    let dev = efi_device("", 2);
    let dir = efivars(&dev);
    let bl = efi(&dev);
    std::fs::remove_file(var_path(&dir, "Boot0002")).unwrap();
    let e = bl.set_primary(&b("B")).unwrap_err().to_string();
    assert!(
        e.contains("no EFI boot entry is labelled \"B\"")
            && e.contains("Boot0000 \"debian\", Boot0001 \"A\", Boot0080 \"EFI Internal Shell\"")
            && e.contains("efibootmgr --create"),
        "{e}"
    );
    assert!(bl.get_state(&b("B")).is_err());
    assert!(bl.set_state(&b("B"), BootState::Bad).is_err());
    assert_eq!(boot_order(&dir), Some(vec![1, 2, 0]), "nothing written");

    write_var(&dir, "Boot0007", NV_BS_RT, &slot_option("A"));
    let e = bl
        .set_state(&b("A"), BootState::Good)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Boot0001, Boot0007 are all labelled \"A\""),
        "{e}"
    );
    let e = bl.get_state(&b("Z")).unwrap_err().to_string();
    assert!(e.contains("knows no slot \"Z\""), "{e}");
}

#[test]
fn missing_efivarfs_is_named() {
    let dev = efi_device("", 2);
    std::fs::remove_dir_all(efivars(&dev)).unwrap();
    let e = efi(&dev).get_primary().unwrap_err().to_string();
    assert!(
        e.contains("efivarfs is not mounted") && e.contains("efivars"),
        "{e}"
    );
}

/// Broken variables: a specific error naming the variable, nothing written.
/// A broken entry that belongs to no slot is skipped; a broken slot entry
/// is named when the slot is looked for.
#[test]
fn malformed_variables_are_named() {
    let a_path = {
        let mut p = hd_gpt(1, 0x800, 0x1000, ESP_GUID);
        p.extend(file("\\a.efi"));
        p.extend(END);
        p
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "BootOrder",
            vec![7, 0, 0],
            "BootOrder: 3 bytes, expected at least the 4-byte attribute word",
        ),
        (
            "BootOrder",
            vec![7, 0, 0, 0, 1, 0, 2],
            "BootOrder: 3 bytes of data, expected a list of 2-byte option numbers",
        ),
        (
            "BootNext",
            vec![7, 0, 0, 0, 1],
            "BootNext: 1 bytes of data, expected one 2-byte option number",
        ),
        (
            "BootNext",
            vec![7, 0, 0, 0, 1, 0, 0, 0],
            "BootNext: 4 bytes of data",
        ),
        (
            "Boot0001",
            vec![7, 0, 0, 0, 1, 0, 0],
            "Boot0001: load option truncated: 3 bytes",
        ),
        (
            "Boot0001",
            [
                vec![7, 0, 0, 0],
                load_option(1, "A", &a_path, &[])[..14].to_vec(),
            ]
            .concat(),
            "Boot0001: file path list length is 64 bytes but only 4 bytes follow the description \"A\"",
        ),
        (
            "Boot0001",
            [vec![7, 0, 0, 0, 1, 0, 0, 0, 4, 0], vec![b'A', 0, b'B', 0]].concat(),
            "Boot0001: load option description is not NUL-terminated",
        ),
        (
            "Boot0001",
            [
                vec![7, 0, 0, 0, 1, 0, 0, 0, 4, 0],
                vec![0x00, 0xd8, 0, 0],
                END.to_vec(),
            ]
            .concat(),
            "Boot0001: load option description is not valid UCS-2: unpaired surrogate 0xd800",
        ),
        (
            "Boot0001",
            [
                vec![7, 0, 0, 0],
                load_option(1, "A", &[4, 4, 2, 0, 0x7f, 0xff, 4, 0], &[]),
            ]
            .concat(),
            "node at offset 0 (type 0x04, subtype 0x04) claims 2 bytes, less than its own 4-byte header",
        ),
        (
            "Boot0001",
            [
                vec![7, 0, 0, 0],
                load_option(1, "A", &[4, 4, 200, 0, 0x7f, 0xff, 4, 0], &[]),
            ]
            .concat(),
            "claims 200 bytes but only 8 are left in the list",
        ),
        (
            "Boot0001",
            [vec![7, 0, 0, 0], load_option(1, "A", &file("\\a.efi"), &[])].concat(),
            "the end-of-path node is missing",
        ),
        (
            "Boot0001",
            [vec![7, 0, 0, 0], load_option(1, "A", &[], &[])].concat(),
            "file path list of \"A\": empty",
        ),
    ];
    for (name, bytes, want) in cases {
        let dev = efi_device("", 2);
        let dir = efivars(&dev);
        std::fs::write(var_path(&dir, name), &bytes).unwrap();
        let before = std::fs::read(var_path(&dir, "BootOrder")).unwrap();
        let bl = efi(&dev);
        let results: Vec<Result<(), String>> = vec![
            bl.get_state(&b("A")).map(|_| ()).map_err(|e| e.to_string()),
            bl.set_state(&b("A"), BootState::Good)
                .map_err(|e| e.to_string()),
            bl.set_primary(&b("A")).map_err(|e| e.to_string()),
        ];
        for r in results {
            let e = r.expect_err(want);
            assert!(e.contains(want), "{name}: {want:?} not in {e}");
        }
        assert_eq!(
            std::fs::read(var_path(&dir, "BootOrder")).unwrap(),
            before,
            "{name}: nothing written"
        );
        assert_eq!(
            var_path(&dir, "BootNext").exists(),
            name == "BootNext",
            "{name}"
        );
    }

    // A broken BootCurrent only matters to the booted-slot question.
    let dev = efi_device("", 2);
    let dir = efivars(&dev);
    write_var(&dir, "BootCurrent", BS_RT, &[1]);
    let bl = efi(&dev);
    let e = bl.get_current().unwrap_err().to_string();
    assert!(
        e.contains("EFI variable BootCurrent: 1 bytes of data, expected one 2-byte option number"),
        "{e}"
    );
    bl.set_state(&b("B"), BootState::Good).unwrap();
    assert_eq!(bl.get_primary().unwrap(), Some(b("B")));

    // A broken entry of another OS does not stop the slots.
    let dev = efi_device("", 2);
    let dir = efivars(&dev);
    write_var(
        &dir,
        "Boot0000",
        NV_BS_RT,
        &[1, 0, 0, 0, 0xff, 0xff, b'x', 0, 0, 0],
    );
    let bl = efi(&dev);
    bl.set_state(&b("B"), BootState::Good).unwrap();
    assert_eq!(boot_order(&dir), Some(vec![2, 1, 0]));
    let bm = bl.boot_manager().unwrap();
    assert_eq!(bm.unreadable.len(), 1);
    assert!(
        bm.to_string()
            .contains("EFI variable Boot0000: file path list length is 65535")
    );
}

/// Every truncation and every single-byte corruption of a real entry:
/// parsed or refused, never a panic.
#[test]
fn parser_survives_truncation_and_corruption() {
    let option = slot_option("A");
    let full = LoadOption::parse("Boot0001", &option).unwrap();
    assert_eq!(full.description, "A");
    assert_eq!(
        full.file_path.to_string(),
        "HD(1,GPT,5b3f0c2e-7d41-4a8e-9c1f-2d6e8a4b7c10,0x800,0x100000)/File(\\EFI\\Linux\\didymos-A.efi)"
    );
    assert_eq!(full.encode(), option, "encode is the inverse of parse");
    let path_end = 6 + 4 + 42 + file("\\EFI\\Linux\\didymos-A.efi").len() + 4;
    for len in 0..option.len() {
        let r = LoadOption::parse("Boot0001", &option[..len]);
        // Cutting into the optional data leaves a valid, shorter option.
        assert_eq!(r.is_ok(), len >= path_end, "length {len}: {r:?}");
        if let Err(e) = r {
            assert!(e.to_string().starts_with("EFI variable Boot0001: "), "{e}");
        }
    }
    for i in 0..option.len() {
        for v in [0x00, 0x01, 0x7f, 0xff] {
            let mut bad = option.clone();
            bad[i] = v;
            let _ = LoadOption::parse("Boot0001", &bad);
            let _ = DevicePath::parse(&bad[6..]);
        }
    }
    for len in 0..5 {
        let bytes = vec![1; len];
        let _ = parse_boot_order("BootOrder", &bytes);
        let _ = parse_option_number("BootNext", &bytes);
    }
}
