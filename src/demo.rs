//! A demo device in a local directory: sample root filesystems and the
//! system.conf that describes the device. Used by `didymos demo` and tests.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

/// The compatible string of the demo device and its bundles.
pub const COMPATIBLE: &str = "didymos-demo";

/// Deterministic pseudo-random bytes (xorshift), so sample trees and test
/// data are reproducible.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn write(root: &Path, rel: &str, data: &[u8], mode: u32) -> io::Result<()> {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(&p, data)?;
    fs::set_permissions(&p, fs::Permissions::from_mode(mode))
}

/// Writes a small but realistic root filesystem for `version` (1, 2, 3…).
///
/// Each version changes a few files (the application, os-release, one
/// library) and keeps the rest, so a delta bundle from one version to the
/// next carries only a small part of the tree.
pub fn write_sample_rootfs(root: &Path, version: u32) -> io::Result<()> {
    fs::create_dir_all(root)?;
    let v = version as u64;
    let os_release = format!(
        "NAME=\"didymos demo\"\nID=didymos-demo\nVERSION_ID={version}.0\nVERSION=\"{version}.0\"\n\
         PRETTY_NAME=\"didymos demo {version}.0\"\n"
    );
    write(root, "etc/os-release", os_release.as_bytes(), 0o644)?;
    write(root, "etc/hostname", b"didymos-demo\n", 0o644)?;
    write(
        root,
        "etc/motd",
        format!("Welcome to version {version}.0\n").as_bytes(),
        0o644,
    )?;
    fs::create_dir_all(root.join("etc/didymos"))?;
    // Unchanged between versions: shared objects.
    write(root, "usr/lib/libbase.so.1", &noise(1, 768 * 1024), 0o755)?;
    write(
        root,
        "usr/lib/libcrypto-demo.so.3",
        &noise(2, 512 * 1024),
        0o755,
    )?;
    write(root, "boot/initrd.img", &noise(3, 384 * 1024), 0o644)?;
    for i in 0..40u64 {
        write(
            root,
            &format!("usr/share/demo/data-{i:02}.bin"),
            &noise(100 + i, 4096 + (i as usize) * 1500),
            0o644,
        )?;
        write(
            root,
            &format!("usr/share/doc/demo/note-{i:02}.txt"),
            format!("note {i}\n").as_bytes(),
            0o644,
        )?;
    }
    // Changed in every version.
    write(
        root,
        "usr/bin/demo-app",
        &noise(1000 + v, 300 * 1024),
        0o755,
    )?;
    write(root, "boot/vmlinuz", &noise(2000 + v, 1024 * 1024), 0o644)?;
    write(
        root,
        "usr/lib/libapp.so.1",
        &noise(3000 + v, 200 * 1024),
        0o755,
    )?;
    // Added in version 2 and later.
    if version >= 2 {
        write(
            root,
            "usr/bin/demo-helper",
            &noise(4000 + v, 64 * 1024),
            0o755,
        )?;
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("vmlinuz", "boot/vmlinuz"),
    ] {
        let p = root.join(link);
        if p.symlink_metadata().is_err() {
            symlink(target, p)?;
        }
    }
    for d in ["var", "tmp", "proc", "sys", "dev", "run", "sysroot"] {
        fs::create_dir_all(root.join(d))?;
    }
    Ok(())
}

/// The system.conf of a demo device rooted at `dir` (paths relative to it).
pub fn device_config() -> String {
    format!(
        r#"# A demo device in a local directory: the store, the bootloader state
# and the kernel command line are files next to this one.

[system]
compatible = "{COMPATIBLE}"
variant = "local-directory"
bootloader = "file"
data-directory = "data"
boot-attempts = 3
# The booted slot is read from this file instead of /proc/cmdline.
kernel-cmdline = "cmdline"

[bootloader]
state-file = "bootloader.toml"

[keyring]
# Development keys: never ship these on a real device.
path = "pki/root-ca.pem"

[store]
path = "store"
verity = "auto"

[slot.rootfs.0]
type = "composefs"
bootname = "A"
boot-directory = "boot/A"
boot-files = ["boot/vmlinuz", "boot/initrd.img"]

[slot.rootfs.1]
type = "composefs"
bootname = "B"
boot-directory = "boot/B"
boot-files = ["boot/vmlinuz", "boot/initrd.img"]
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_config_parses() {
        let c =
            crate::config::SystemConfig::parse(&device_config(), Path::new("/demo/system.conf"))
                .unwrap();
        assert_eq!(c.store.path, Path::new("/demo/store"));
        assert_eq!(c.bootnames().len(), 2);
    }

    #[test]
    fn versions_share_most_content() {
        let d = tempfile::tempdir().unwrap();
        write_sample_rootfs(&d.path().join("v1"), 1).unwrap();
        write_sample_rootfs(&d.path().join("v2"), 2).unwrap();
        let same = fs::read(d.path().join("v1/usr/lib/libbase.so.1")).unwrap()
            == fs::read(d.path().join("v2/usr/lib/libbase.so.1")).unwrap();
        let changed = fs::read(d.path().join("v1/usr/bin/demo-app")).unwrap()
            != fs::read(d.path().join("v2/usr/bin/demo-app")).unwrap();
        assert!(same && changed);
    }
}
