//! Bundles for the D-Bus install tests: development keys for a [`Device`] and
//! bundles of small generated root filesystems, made with the bundle library.

#![allow(dead_code)]

use std::path::PathBuf;

use didymos::bundle::create::{CreateOptions, create};

use super::common_dbus::Device;

/// Makes development keys for `device` (its system.conf reads `keyring.pem`).
pub fn keys(device: &Device) -> didymos::bundle::devpki::DevPki {
    let pki = didymos::bundle::devpki::generate(&device.path("pki")).unwrap();
    std::fs::copy(&pki.keyring, device.path("keyring.pem")).unwrap();
    pki
}

/// Bundles `device` refuses before installing anything.
pub struct Refused {
    /// For another device (`another-device`, 2.0): `NotCompatible`.
    pub foreign: PathBuf,
    /// Signed by keys the device does not trust (2.1): `SignatureInvalid`.
    pub untrusted: PathBuf,
}

/// Makes the [`Refused`] bundles (`pki` from [`keys`]).
pub fn refused(device: &Device, pki: &didymos::bundle::devpki::DevPki) -> Refused {
    let foreign_pki = didymos::bundle::devpki::generate(&device.path("pki-foreign")).unwrap();
    Refused {
        foreign: bundle(device, pki, "another-device", "2.0", 5),
        untrusted: bundle(device, &foreign_pki, "didymos-test", "2.1", 5),
    }
}

/// A bundle of a root filesystem with `files` distinct 4 KiB files (each an
/// object in the store), for `compatible`, at `version`.
pub fn bundle(
    device: &Device,
    pki: &didymos::bundle::devpki::DevPki,
    compatible: &str,
    version: &str,
    files: usize,
) -> PathBuf {
    let rootfs = device.path(&format!("rootfs-{version}-{files}"));
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::create_dir_all(rootfs.join("data")).unwrap();
    std::fs::write(
        rootfs.join("etc/os-release"),
        format!("VERSION={version}\n"),
    )
    .unwrap();
    for i in 0..files {
        let mut content = format!("{version} file {i}\n").into_bytes();
        content.resize(4096, (i % 251) as u8);
        std::fs::write(rootfs.join(format!("data/f{i:05}")), content).unwrap();
    }
    let output = device.path(&format!("{compatible}-{version}-{files}.raucb"));
    let mut options = CreateOptions::new(
        &rootfs,
        &output,
        &pki.signing_cert,
        &pki.signing_key,
        compatible,
        version,
    );
    options.intermediates = vec![pki.intermediate_cert.clone()];
    create(&options).unwrap();
    output
}

/// Installs a bundle into slot A, and then one into slot B when `both`,
/// through the library, as earlier updates would have; the kernel command
/// line is left saying A was booted. After this A holds 0.1 (and B 0.2, and
/// is the bootloader's primary).
pub fn populate(device: &Device, pki: &didymos::bundle::devpki::DevPki, both: bool) {
    use didymos::install::{BundleSource, CancelToken, InstallOptions, install};
    let config = didymos::config::SystemConfig::load(&device.conf).unwrap();
    let run = |version: &str| {
        let b = bundle(device, pki, "didymos-test", version, 3);
        install(
            &config,
            BundleSource::Path(b),
            &InstallOptions::default(),
            &|_| {},
            &CancelToken::default(),
        )
        .unwrap()
    };
    let cmdline = device.path("cmdline");
    let booted = std::fs::read_to_string(&cmdline).unwrap();
    std::fs::write(&cmdline, "").unwrap();
    assert_eq!(run("0.1").slot.to_string(), "rootfs.0");
    std::fs::write(&cmdline, &booted).unwrap();
    if both {
        assert_eq!(run("0.2").slot.to_string(), "rootfs.1");
    }
}
