//! Tier 2 (root): the store on a small tmpfs — refused when the index says
//! it will not fit, and ENOSPC in the middle of writing fails cleanly.

#[path = "common/device.rs"]
mod device;

use device::Device;

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test mounts a tmpfs and must run as root (tests/run does)"
        );
        std::fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs at {}", dir.display());
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn device_with_small_store() -> (Device, Tmpfs) {
    let d = Device::new();
    let t = Tmpfs::mount(&d.config.store.path, "9M");
    let v1 = d.bundle(1, None);
    d.install(&v1).unwrap();
    d.boot();
    d.mark_good();
    (d, t)
}

#[test]
fn refused_when_it_cannot_fit() {
    let (d, _t) = device_with_small_store();
    let big = d.bundle_with(2, None, |o| o.zstd_level = 1);
    // Fill the store's filesystem so only a little is left.
    let filler = d.config.store.path.join("state/filler");
    let free = rustix::fs::statvfs(&d.config.store.path).unwrap();
    let leave = 1024 * 1024;
    let fill = (free.f_bavail * free.f_frsize).saturating_sub(leave);
    std::fs::write(&filler, vec![0u8; fill as usize]).unwrap();
    let before = d.snapshot();
    let err = d.install(&big).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, didymos::install::InstallError::NoSpace { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("not enough space") && msg.contains("didymos gc"),
        "{msg}"
    );
    assert_eq!(before, d.snapshot());
    std::fs::remove_file(filler).unwrap();
}

#[test]
fn enospc_while_writing_leaves_the_store_consistent() {
    let (d, _t) = device_with_small_store();
    let big = d.bundle(2, None);
    let filler = d.config.store.path.join("state/filler");
    let free = rustix::fs::statvfs(&d.config.store.path).unwrap();
    let fill = (free.f_bavail * free.f_frsize).saturating_sub(512 * 1024);
    std::fs::write(&filler, vec![0u8; fill as usize]).unwrap();
    let out = d
        .cli()
        .arg("install")
        .arg(&big)
        .env("DIDYMOS_FAILPOINT", "skip-space-check")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no space left"), "{stderr}");
    assert_eq!(d.primary().unwrap().as_str(), "A");
    assert_eq!(
        std::fs::read_dir(d.config.store.path.join("tmp"))
            .unwrap()
            .count(),
        0
    );
    std::fs::remove_file(filler).unwrap();
    d.fsck_clean();
    // With space again, the same install succeeds.
    d.install(&big).unwrap();
    d.fsck_clean();
}

/// Inodes run out before bytes do (many small objects): refused before
/// anything is written, not ENOSPC half-way with the target marked bad.
#[test]
fn refused_when_inodes_run_out() {
    let d = Device::new();
    let _t = Tmpfs::mount(&d.config.store.path, "64M,nr_inodes=400");
    let v1 = d.bundle(1, None);
    d.install(&v1).unwrap();
    d.boot();
    d.mark_good();
    let v2 = d.bundle(2, None);
    // Leave a handful of inodes.
    let fill = d.config.store.path.join("state/inodes");
    std::fs::create_dir_all(&fill).unwrap();
    let free = rustix::fs::statvfs(&d.config.store.path).unwrap().f_favail;
    for i in 0..free.saturating_sub(5) {
        std::fs::write(fill.join(i.to_string()), b"").unwrap();
    }
    let before = d.snapshot();
    let err = d.install(&v2).unwrap_err();
    assert!(
        matches!(err, didymos::install::InstallError::NoInodes { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("not enough inodes"), "{err}");
    assert_eq!(before, d.snapshot(), "a refusal writes nothing");
    assert_eq!(d.primary().unwrap().as_str(), "A");
    std::fs::remove_dir_all(&fill).unwrap();
    d.install(&v2).unwrap();
}

/// The boot files go to their own, nearly full filesystem: the install is
/// refused up front, naming that filesystem, instead of failing after the
/// slot record was written.
#[test]
fn refused_when_the_boot_files_do_not_fit() {
    let d = Device::new();
    let boot_a = d.path("boot/A");
    let _t = Tmpfs::mount(&boot_a, "256K");
    let v1 = d.bundle(1, None);
    let before = d.snapshot();
    let err = d.install(&v1).unwrap_err();
    assert!(
        matches!(err, didymos::install::InstallError::NoSpace { ref path, .. } if path == &boot_a),
        "{err}"
    );
    assert_eq!(before, d.snapshot(), "a refusal writes nothing");
    assert_eq!(std::fs::read_dir(&boot_a).unwrap().count(), 0);
}
