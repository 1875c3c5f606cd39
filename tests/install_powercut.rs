//! Tier 1: power cuts at every step of an install (failpoints), and SIGKILL
//! of a real install process at random moments.

#[path = "common/device.rs"]
mod device;

use device::Device;
use didymos::boot::BootState;

/// After any cut, the device must still be consistent.
fn check_after_cut(
    d: &Device,
    old: &str,
    new_bundle: &std::path::Path,
    journaled: bool,
    committed: bool,
) {
    use didymos::boot::Bootloader;
    // The next start (here: gc, which takes the install lock) cleans up.
    let out = d.cli().arg("gc").output().unwrap();
    assert!(
        out.status.success(),
        "gc after the cut: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.fsck_clean();
    let bl = d.bootloader();
    let primary = d.primary().unwrap();
    if committed {
        assert_ne!(primary.as_str(), old);
    } else {
        assert_eq!(
            primary.as_str(),
            old,
            "the booted slot is no longer the bootloader's choice"
        );
        let target = didymos::slot::Bootname::new(if old == "A" { "B" } else { "A" }).unwrap();
        assert_eq!(
            bl.get_state(&target).unwrap(),
            BootState::Bad,
            "the interrupted slot is not marked bad"
        );
        let status = didymos::status::collect(&d.config).unwrap();
        if journaled {
            let note = status
                .interrupted_install
                .expect("status reports the interrupted install");
            assert!(note.contains("interrupted"), "{note}");
        } else {
            // Cut before the target was touched: there is nothing to report.
            assert_eq!(status.interrupted_install, None);
        }
    }
    // And the next install succeeds.
    let o = d.install(new_bundle).unwrap();
    assert_ne!(o.bootname.unwrap().as_str(), old);
    d.fsck_clean();
}

#[test]
fn failpoint_after_every_step() {
    for (i, step) in didymos::install::FAILPOINTS.iter().enumerate() {
        let d = Device::new();
        let v1 = d.bundle(1, None);
        d.install(&v1).unwrap();
        d.boot();
        d.mark_good();
        let v2 = d.bundle(2, Some(&v1));
        d.install_cut_at(&v2, step);
        let at = |name: &str| {
            didymos::install::FAILPOINTS
                .iter()
                .position(|s| *s == name)
                .unwrap()
        };
        check_after_cut(
            &d,
            "A",
            &v2,
            i >= at("journal-written"),
            i >= at("activated"),
        );
    }
}

#[test]
fn sigkill_at_random_moments() {
    // A larger image so the install takes long enough to be cut anywhere.
    let d = Device::new();
    let v1 = d.bundle(1, None);
    d.install(&v1).unwrap();
    d.boot();
    d.mark_good();
    let v2 = d.bundle(2, None);
    let mut seed: u64 = 0x5eed;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // How long a whole install takes here, to spread the kills over it.
    let t0 = std::time::Instant::now();
    let mut run = d.cli().arg("install").arg(&v2).output().unwrap();
    assert!(run.status.success());
    let full = t0.elapsed();
    // Each round boots the primary slot and installs into the other one, as a device does.
    for round in 0..20 {
        let booted = d.boot().unwrap();
        d.mark_good();
        let bundle = if round % 2 == 0 { &v1 } else { &v2 };
        let delay = std::time::Duration::from_micros(rand() % (full.as_micros() as u64 + 1));
        let mut child = d
            .cli()
            .arg("install")
            .arg(bundle)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        run.status = child.wait().unwrap();
        let completed = run.status.success();
        // Clean up as the next start would, then check the invariants.
        let out = d.cli().arg("gc").output().unwrap();
        assert!(
            out.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        d.fsck_clean();
        let primary = d.primary().unwrap();
        if !completed && primary != booted {
            // Killed after the commit point: the new slot must be complete.
            let slot = d.config.slot_by_bootname(&primary).unwrap();
            assert!(
                didymos::slot::SlotRecord::load(&d.config.store.path, &slot.name).is_ok(),
                "round {round}"
            );
        }
        // The next install of the same bundle succeeds.
        d.install(bundle).unwrap();
        d.fsck_clean();
    }
}
