//! Tier 1: the install engine on a temporary-directory device.

#[path = "common/device.rs"]
mod device;

use std::collections::BTreeSet;

use device::Device;
use didymos::install::InstallError;

fn referenced(
    d: &Device,
    bundle: &std::path::Path,
    bases: &[&std::path::Path],
) -> BTreeSet<didymos::Digest> {
    didymos::image::referenced_objects(&d.image(bundle, bases)).unwrap()
}

#[test]
fn full_cycle_with_delta_and_gc() {
    let d = Device::new();
    let v1 = d.bundle(1, None);
    let v2 = d.bundle(2, Some(&v1));
    let v3 = d.bundle(3, None);
    let (r1, r2, r3) = (
        referenced(&d, &v1, &[]),
        referenced(&d, &v2, &[&v1]),
        referenced(&d, &v3, &[]),
    );

    // v1 → A (nothing booted yet: the first slot).
    let o = d.install(&v1).unwrap();
    assert_eq!(o.slot.to_string(), "rootfs.0");
    assert_eq!(o.objects_written as usize, r1.len());
    assert_eq!(d.boot().unwrap().as_str(), "A");
    d.mark_good();

    // v2 as a delta → B, writing only what v1 lacks.
    let o = d.install(&v2).unwrap();
    assert_eq!(o.slot.to_string(), "rootfs.1");
    let new_in_v2: BTreeSet<_> = r2.difference(&r1).copied().collect();
    assert_eq!(o.objects_written as usize, new_in_v2.len());
    assert!(o.objects_written > 0 && (o.objects_written as usize) < r2.len() / 2);
    assert_eq!(d.boot().unwrap().as_str(), "B");
    d.mark_good();
    assert_eq!(d.objects(), r1.union(&r2).copied().collect());

    // v3 → A (the booted B is never the target); GC drops exactly what only v1 used.
    let o = d.install(&v3).unwrap();
    assert_eq!(o.slot.to_string(), "rootfs.0");
    let only_v1: BTreeSet<_> = r1
        .difference(&r2)
        .filter(|x| !r3.contains(x))
        .copied()
        .collect();
    assert_eq!(o.objects_collected as usize, only_v1.len());
    assert_eq!(d.objects(), r2.union(&r3).copied().collect());
    d.fsck_clean();
    assert_eq!(d.boot().unwrap().as_str(), "A");
}

#[test]
fn boot_files_are_installed_per_slot() {
    let d = Device::new();
    d.install(&d.bundle(1, None)).unwrap();
    let kernel = std::fs::read(d.path("boot/A/vmlinuz")).unwrap();
    assert_eq!(
        kernel,
        std::fs::read(d.path("rootfs-v1/boot/vmlinuz")).unwrap()
    );
    assert!(d.path("boot/A/initrd.img").exists());
    assert!(!d.path("boot/B").exists());
}

/// Every refusal happens before anything is written.
fn refused(d: &Device, bundle: &std::path::Path) -> InstallError {
    let before = d.snapshot();
    let err = d.install(bundle).unwrap_err();
    assert_eq!(
        before,
        d.snapshot(),
        "the store changed although the install was refused: {err}"
    );
    err
}

#[test]
fn refusals_write_nothing() {
    let d = Device::with_config(|c| {
        c.replace(
            "boot-attempts = 3",
            "boot-attempts = 3\nmin-bundle-version = \"2.0\"",
        )
    });
    let v2 = d.bundle(2, None);
    d.install(&v2).unwrap();
    d.boot();
    d.mark_good();

    let wrong = d.bundle_with(3, None, |o| o.compatible = "other-device".into());
    let msg = refused(&d, &wrong).to_string();
    assert!(
        msg.contains("\"other-device\"") && msg.contains("--ignore-compatible"),
        "{msg}"
    );

    let old = d.bundle(1, None);
    let msg = refused(&d, &old).to_string();
    assert!(
        msg.contains("1.0") && msg.contains("min-bundle-version"),
        "{msg}"
    );

    // A delta against an image the device never had: a build of the same
    // tree, so the delta carries nothing the device lacks.
    let other = Device::new();
    let foreign_base = other.bundle_with(3, None, |o| o.version = "3.0-base".into());
    let delta = d.bundle_with(3, Some(&foreign_base), |_| {});
    let err = refused(&d, &delta);
    let keyring = didymos::keyring::Keyring::load(&other.config.keyring).unwrap();
    let base_image = didymos::bundle::Bundle::open(&foreign_base)
        .unwrap()
        .verify(&keyring)
        .unwrap()
        .manifest()
        .image
        .digest;
    let msg = err.to_string();
    assert!(matches!(err, InstallError::MissingBaseObjects(_)), "{msg}");
    assert!(
        msg.contains(&base_image.to_hex()),
        "message does not name the base image: {msg}"
    );
}

#[test]
fn never_installs_into_the_booted_slot() {
    // One bootable slot, booted: there is nowhere safe to install.
    let d = Device::with_config(|c| {
        let cut = c.find("[slot.rootfs.1]").unwrap();
        c[..cut].to_owned()
    });
    std::fs::write(d.path("cmdline"), "didymos.slot=A").unwrap();
    let v1 = d.bundle(1, None);
    let msg = refused(&d, &v1).to_string();
    assert!(msg.contains("rootfs.0") && msg.contains("in use"), "{msg}");

    // A command line naming an unknown bootname: refuse rather than guess.
    let d = Device::new();
    std::fs::write(d.path("cmdline"), "didymos.slot=C").unwrap();
    let msg = refused(&d, &d.bundle(1, None)).to_string();
    assert!(msg.contains("\"C\""), "{msg}");
}

#[test]
fn a_second_install_is_busy_and_names_the_holder() {
    let d = Device::new();
    let v1 = d.bundle(1, None);
    let _held = didymos::install::InstallLock::acquire(
        &d.config.system.data_directory,
        "install of test.raucb",
    )
    .unwrap();
    let before = d.snapshot();
    let out = d.cli().arg("install").arg(&v1).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another install is running"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "install of test.raucb by pid {}",
            std::process::id()
        )),
        "{stderr}"
    );
    assert_eq!(before, d.snapshot());
}

#[test]
fn cli_install_status_mark_gc_fsck() {
    let d = Device::new();
    let v1 = d.bundle(1, None);
    let out = d.cli().arg("install").arg(&v1).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("installed version 1.0 into rootfs.0"),
        "{stdout}"
    );
    // Not a terminal: plain progress lines, ending at 100 %.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().last().unwrap_or("").starts_with("100%"),
        "{stderr}"
    );

    d.boot();
    let out = d.cli().args(["status", "mark-good"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d
        .cli()
        .args(["status", "--output-format", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["booted-slot"], "rootfs.0");
    assert_eq!(v["slots"][0]["boot-status"], "good");
    assert_eq!(v["slots"][0]["record"]["bundle-version"], "1.0");
    assert_eq!(v["system-version"], "1.0");

    let out = d.cli().arg("fsck").output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("clean"));
    let out = d.cli().arg("gc").output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("removed 0 objects")
    );
}

#[test]
fn a_slot_that_never_gets_marked_good_is_rolled_back_and_reported() {
    let d = Device::new();
    let v1 = d.bundle(1, None);
    d.install(&v1).unwrap();
    assert_eq!(d.boot().unwrap().as_str(), "A");
    d.mark_good();
    d.install(&d.bundle(2, Some(&v1))).unwrap();
    // Version 2 never reaches mark-good: every attempt of B fails.
    for _ in 0..d.config.system.boot_attempts {
        assert_eq!(d.boot().unwrap().as_str(), "B");
    }
    assert_eq!(
        d.boot().unwrap().as_str(),
        "A",
        "the bootloader did not fall back"
    );
    let status = didymos::status::collect(&d.config).unwrap();
    let b = status
        .slots
        .iter()
        .find(|s| s.name.to_string() == "rootfs.1")
        .unwrap();
    assert_eq!(b.boot_status, Some(didymos::boot::BootState::Bad));
    let msg = status.rollback.expect("status reports the rollback");
    assert!(
        msg.contains("rootfs.1") && msg.contains("version 2.0") && msg.contains("rootfs.0"),
        "{msg}"
    );
    // Once the running slot is confirmed and the failed one replaced, the note goes.
    d.mark_good();
    d.install(&d.bundle(3, None)).unwrap();
    assert_eq!(didymos::status::collect(&d.config).unwrap().rollback, None);
}
