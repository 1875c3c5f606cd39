//! Tier 1: what must never brick a device, on a temporary-directory device.
//!
//! - gc never removes what a slot might use: a record that cannot be read,
//!   or a booted slot without one, stops it;
//! - status and fsck report such slots;
//! - marks take the install lock and refuse slots that would not boot;
//! - an install refuses when the booted slot could not be booted again;
//! - anti-rollback: the security version floor.

#[path = "common/device.rs"]
mod device;

use device::Device;
use didymos::boot::mark::MarkState;
use didymos::install::InstallError;

/// v1 in A (marked good), v2 in B, booted and marked good.
fn two_versions(d: &Device) -> (std::path::PathBuf, std::path::PathBuf) {
    let v1 = d.bundle(1, None);
    let v2 = d.bundle(2, None);
    assert_eq!(d.install(&v1).unwrap().slot.to_string(), "rootfs.0");
    d.boot();
    d.mark_good();
    assert_eq!(d.install(&v2).unwrap().slot.to_string(), "rootfs.1");
    assert_eq!(d.boot().unwrap().as_str(), "B");
    d.mark_good();
    (v1, v2)
}

fn record_path(d: &Device, slot: &str) -> std::path::PathBuf {
    d.config
        .store
        .path
        .join("slots")
        .join(slot)
        .join("record.toml")
}

fn image_of(d: &Device, slot: &str) -> didymos::Digest {
    didymos::slot::SlotRecord::load(
        &d.config.store.path,
        &didymos::slot::SlotName::parse(slot).unwrap(),
    )
    .unwrap()
    .image
}

fn cli_output(d: &Device, args: &[&str]) -> (Option<i32>, String) {
    let out = d.cli().args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The reproduction and its variants: the booted slot's record is
/// not UTF-8, not TOML, has an unknown field, or is gone. The next install
/// (into the other slot) must keep the booted slot's image and objects.
#[test]
fn gc_keeps_the_booted_slot_whatever_happened_to_its_record() {
    let damage: [(&str, Option<&[u8]>); 4] = [
        ("not UTF-8", Some(b"\xff")),
        ("not TOML", Some(b"slot = [")),
        ("unknown field", None),
        ("missing", Some(b"")),
    ];
    for (what, bytes) in damage {
        let d = Device::new();
        two_versions(&d);
        let v3 = d.bundle(3, None);
        let booted_image = image_of(&d, "rootfs.1");
        let booted_objects = d.objects();
        let record = record_path(&d, "rootfs.1");
        match bytes {
            Some(b"") => std::fs::remove_file(&record).unwrap(),
            Some(b) => std::fs::write(&record, b).unwrap(),
            None => {
                let mut text = std::fs::read_to_string(&record).unwrap();
                text.push_str("surprise = 1\n");
                std::fs::write(&record, text).unwrap();
            }
        }

        // status and fsck name the slot; fsck fails.
        let (code, status) = cli_output(&d, &["status"]);
        assert_eq!(code, Some(0), "{what}: {status}");
        if bytes != Some(b"") {
            assert!(
                status.contains("Problem:   slot rootfs.1:"),
                "{what}: {status}"
            );
            assert!(
                status.contains("installed: record cannot be read"),
                "{what}: {status}"
            );
        }
        let (code, fsck) = cli_output(&d, &["fsck"]);
        assert_eq!(code, Some(1), "{what}: {fsck}");
        assert!(fsck.contains("slot rootfs.1:"), "{what}: {fsck}");

        // An install into the other slot succeeds but removes nothing.
        let o = d.install(&v3).unwrap();
        assert_eq!(o.slot.to_string(), "rootfs.0", "{what}");
        assert_eq!(o.objects_collected, 0, "{what}");
        let why = o.gc_refused.expect("gc must refuse");
        assert!(why.contains("nothing was removed"), "{what}: {why}");
        assert!(why.contains("rootfs.1"), "{what}: {why}");
        assert!(
            d.config
                .store
                .path
                .join("images")
                .join(booted_image.to_hex())
                .exists(),
            "{what}: the booted slot's image was removed"
        );
        assert!(
            booted_objects.is_subset(&d.objects()),
            "{what}: objects the booted slot uses were removed"
        );
        // didymos gc says so too, and fails.
        let (code, gc) = cli_output(&d, &["gc"]);
        assert_eq!(code, Some(1), "{what}: {gc}");
        assert!(gc.contains("nothing was removed"), "{what}: {gc}");
    }
}

/// A slot that is not booted and has a damaged record stops gc as well: it
/// may be the fall back the bootloader returns to.
#[test]
fn a_damaged_record_of_the_other_slot_stops_gc_too() {
    let d = Device::new();
    two_versions(&d);
    let image_a = image_of(&d, "rootfs.0");
    std::fs::write(record_path(&d, "rootfs.0"), b"\xff").unwrap();
    let report = didymos::install::gc(&d.config).unwrap_err().to_string();
    assert!(report.contains("slot rootfs.0"), "{report}");
    assert!(
        d.config
            .store
            .path
            .join("images")
            .join(image_a.to_hex())
            .exists()
    );
}

/// fsck checks every slot the way setup-root would: a stored signature
/// that was changed is reported, with what setup-root would refuse.
#[test]
fn fsck_reports_what_setup_root_would_refuse() {
    let d = Device::new();
    two_versions(&d);
    d.fsck_clean();
    let sig = d.config.store.path.join("slots/rootfs.0/manifest.sig");
    let mut bytes = std::fs::read(&sig).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x55;
    std::fs::write(&sig, bytes).unwrap();
    let (code, out) = cli_output(&d, &["fsck"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "slot rootfs.0: setup-root would refuse to boot it: manifest signature rejected"
        ),
        "{out}"
    );
}

#[test]
fn marks_refuse_slots_that_would_not_boot() {
    let d = Device::new();
    // Nothing installed: neither slot can be made good or active.
    for state in [MarkState::Good, MarkState::Active] {
        let err = d.mark(state, "rootfs.1").unwrap_err();
        assert!(
            matches!(err, InstallError::NotBootable { .. }),
            "{state}: {err}"
        );
        assert!(err.to_string().contains("holds nothing"), "{err}");
    }
    // Through the CLI (in-process, as when no service runs).
    let (code, out) = cli_output(&d, &["status", "mark-active", "rootfs.1", "--direct"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cannot mark slot rootfs.1 active"), "{out}");
    // Marking bad is always possible.
    d.mark(MarkState::Bad, "rootfs.1").unwrap();

    // A slot whose image setup-root would refuse.
    let v1 = d.bundle(1, None);
    d.install(&v1).unwrap();
    let image = image_of(&d, "rootfs.0");
    let path = d.config.store.path.join("images").join(image.to_hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let err = d
        .mark(MarkState::Active, "rootfs.0")
        .unwrap_err()
        .to_string();
    assert!(err.contains("setup-root would refuse"), "{err}");
    assert!(err.contains("image digest mismatch"), "{err}");
}

/// The install lock excludes marks, through every path: a mark while an
/// install (or gc) holds it is refused, and leaves the bootloader alone.
#[test]
fn marks_wait_for_no_install() {
    let d = Device::new();
    two_versions(&d);
    let before = std::fs::read(d.path("bootloader.toml")).unwrap();
    let _held =
        didymos::install::InstallLock::acquire(&d.config.system.data_directory, "install").unwrap();
    let err = d.mark(MarkState::Active, "rootfs.0").unwrap_err();
    assert!(matches!(err, InstallError::Busy { .. }), "{err}");
    let (code, out) = cli_output(&d, &["status", "mark-good", "booted", "--direct"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("another install is running"), "{out}");
    assert_eq!(std::fs::read(d.path("bootloader.toml")).unwrap(), before);
}

/// The scenario: a mark during an install that then fails. The
/// install holds the lock from start to end, so the mark cannot land in
/// between; after the failed install the empty target cannot be marked.
#[test]
fn a_failed_install_leaves_no_markable_empty_slot() {
    let d = Device::new();
    let v1 = d.bundle(1, None);
    d.install(&v1).unwrap();
    d.boot();
    d.mark_good();
    let v2 = d.bundle(2, None);
    d.install_cut_at(&v2, "objects-half-written");
    for state in [MarkState::Good, MarkState::Active] {
        let err = d.mark(state, "other").unwrap_err();
        assert!(err.to_string().contains("holds nothing"), "{err}");
    }
    assert_eq!(d.primary().unwrap().as_str(), "A");
}

/// The booted slot must stay a fall back: booted on trial and never marked
/// good, with no attempts left, it would not boot again.
#[test]
fn install_refuses_when_the_booted_slot_is_unconfirmed() {
    let d = Device::with_config(|c| c.replace("boot-attempts = 3", "boot-attempts = 1"));
    let v1 = d.bundle(1, None);
    let v2 = d.bundle(2, None);
    d.install(&v1).unwrap();
    d.boot(); // the one attempt is used; not marked good
    let before = d.snapshot();
    let err = d.install(&v2).unwrap_err();
    assert!(
        matches!(err, InstallError::BootedUnconfirmed { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("mark it good first"), "{err}");
    assert_eq!(d.snapshot(), before, "a refusal writes nothing");
    d.mark_good();
    assert_eq!(d.install(&v2).unwrap().slot.to_string(), "rootfs.1");
}

fn bundle_sv(d: &Device, version: u32, security_version: u64) -> std::path::PathBuf {
    d.bundle_with(version, None, |o| o.security_version = security_version)
}

fn floor(d: &Device) -> u64 {
    didymos::install::security::load(&d.config.store.path)
        .unwrap()
        .floor
}

#[test]
fn anti_rollback_floor() {
    let d = Device::new();
    let old = bundle_sv(&d, 1, 1);
    let fixed = bundle_sv(&d, 2, 2);
    let same = bundle_sv(&d, 3, 2);

    d.install(&old).unwrap();
    d.boot();
    assert_eq!(floor(&d), 0, "installing alone raises nothing");
    let m = d.mark(MarkState::Good, "booted").unwrap();
    assert!(m.contains("security version floor raised to 1"), "{m}");
    assert_eq!(floor(&d), 1);

    d.install(&fixed).unwrap();
    assert_eq!(floor(&d), 1, "not before the new slot proved itself");
    d.boot();
    d.mark_good();
    assert_eq!(floor(&d), 2);

    // An attacker replays the old, validly signed bundle: refused before
    // anything is written, whatever the options.
    let before = d.snapshot();
    for ignore in [false, true] {
        let err = didymos::install::install(
            &d.config,
            didymos::install::BundleSource::Path(old.clone()),
            &didymos::install::InstallOptions {
                ignore_version_limit: ignore,
                ignore_compatible: ignore,
                ..Default::default()
            },
            &|_| {},
            &Default::default(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                InstallError::SecurityVersionTooOld {
                    security_version: 1,
                    floor: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("rootfs.1 (version 2.0)"), "{err}");
    }
    assert_eq!(d.snapshot(), before);
    // The older slot is still installed, but cannot be activated by hand.
    let err = d.mark(MarkState::Active, "rootfs.0").unwrap_err();
    assert!(
        matches!(err, InstallError::SecurityVersionTooOld { .. }),
        "{err}"
    );
    // A release with the same security version installs (an ordinary rollback).
    assert_eq!(d.install(&same).unwrap().slot.to_string(), "rootfs.0");

    // status and info show the numbers.
    let (_, status) = cli_output(&d, &["status"]);
    assert!(status.contains("Security version floor: 2"), "{status}");
    assert!(status.contains("security version: 2"), "{status}");
    let (code, info) = cli_output(&d, &["info", old.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{info}");
    assert!(info.contains("Security:     1"), "{info}");
}

/// An object of the booted slot that also belongs to the next release.
fn shared_object(d: &Device, a: &std::path::Path, b: &std::path::Path) -> didymos::Digest {
    let refs = |p: &std::path::Path| {
        let k = didymos::keyring::Keyring::load(&d.config.keyring).unwrap();
        let v = didymos::bundle::Bundle::open(p)
            .unwrap()
            .verify(&k)
            .unwrap();
        didymos::image::referenced_objects(&v.read_image().unwrap()).unwrap()
    };
    *refs(a)
        .intersection(&refs(b))
        .next()
        .expect("a shared object")
}

fn corrupt(d: &Device, digest: &didymos::Digest) {
    let p = d.config.store.path.join(digest.to_object_path());
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&p, bytes).unwrap();
}

/// A store without fs-verity: a damaged object is not reused. A full bundle
/// writes it again; a delta bundle that lacks it is refused with what to do;
/// fsck --repair quarantines it.
#[test]
fn damaged_objects_are_not_reused() {
    let d = Device::new();
    let v1 = d.bundle(1, None);
    let v2 = d.bundle(2, None);
    let v2_delta = d.bundle(2, Some(&v1));
    d.install(&v1).unwrap();
    d.boot();
    d.mark_good();
    let shared = shared_object(&d, &v1, &v2);
    corrupt(&d, &shared);
    let (code, fsck) = cli_output(&d, &["fsck"]);
    assert_eq!(code, Some(1), "{fsck}");

    // The delta does not carry it: refused before writing, saying what to do.
    let before = d.snapshot();
    let err = d.install(&v2_delta).unwrap_err().to_string();
    assert!(
        err.contains(&format!("object {shared} on this device is damaged")),
        "{err}"
    );
    assert!(err.contains("didymos fsck --repair"), "{err}");
    assert_eq!(d.snapshot(), before);

    // fsck --repair moves it aside (nothing deleted); fsck still fails:
    // the slot lacks the object now.
    let (code, out) = cli_output(&d, &["fsck", "--repair"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("object {shared} is damaged: moved to")),
        "{out}"
    );
    assert!(out.contains("references object"), "{out}");
    let quarantine = d.config.store.path.join("quarantine");
    assert_eq!(std::fs::read_dir(&quarantine).unwrap().count(), 1);

    // A full bundle carrying it writes it again: the store is clean.
    let o = d.install(&v2).unwrap();
    assert!(o.objects_written > 0);
    assert!(d.config.store.path.join(shared.to_object_path()).exists());
    // v1 (the booted slot) needs it too and has it back.
    d.fsck_clean();
}

/// Without repair: the full bundle replaces the damaged file in place.
#[test]
fn a_full_bundle_rewrites_a_damaged_object() {
    let d = Device::new();
    let v1 = d.bundle(1, None);
    let v2 = d.bundle(2, None);
    d.install(&v1).unwrap();
    d.boot();
    d.mark_good();
    let shared = shared_object(&d, &v1, &v2);
    corrupt(&d, &shared);
    d.install(&v2).unwrap();
    d.fsck_clean();
}
