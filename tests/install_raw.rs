//! Tier 1 (and one root-only test): raw images in bundles and their install
//! into the `raw` child slots of the target slot.

#[path = "common/bundle.rs"]
mod common_bundle;
#[path = "common/device.rs"]
mod device;

use std::path::{Path, PathBuf};

use common_bundle::pseudo_random;
use device::Device;
use didymos::boot::{BootState, Bootloader};
use didymos::bundle::{Bundle, Region};
use didymos::keyring::Keyring;
use didymos::slot::{Bootname, RawRecord, SlotName};
use sha2::Digest as _;

/// Two raw bootloader slots, one per rootfs slot, backed by pre-sized files.
const RAW_SLOTS: &str = r#"
[slot.bootloader.0]
type = "raw"
device = "fw0.img"
parent = "rootfs.0"

[slot.bootloader.1]
type = "raw"
device = "fw1.img"
parent = "rootfs.1"
"#;

const DEVICE_SIZE: usize = 256 * 1024;

/// A firmware image: random bytes, then a compressible tail.
fn firmware(d: &Device, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let mut bytes = pseudo_random(len / 2, seed);
    bytes.resize(len, 0xa5);
    let path = d.path(name);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn raw_device(extra: &str) -> Device {
    let d = Device::with_config(|c| format!("{c}{extra}"));
    for f in ["fw0.img", "fw1.img"] {
        std::fs::write(d.path(f), vec![0u8; DEVICE_SIZE]).unwrap();
    }
    d
}

fn raw_bundle(d: &Device, version: u32, base: Option<&Path>, raw: &[(&str, &Path)]) -> PathBuf {
    d.bundle_with(version, base, |o| {
        o.raw = raw
            .iter()
            .map(|(c, p)| (c.to_string(), p.to_path_buf()))
            .collect();
    })
}

fn slot(name: &str) -> SlotName {
    SlotName::parse(name).unwrap()
}

/// The device holds `image` at offset 0 and zeros after it, size unchanged.
fn assert_holds(device: &Path, image: &[u8]) {
    let bytes = std::fs::read(device).unwrap();
    assert_eq!(
        bytes.len(),
        DEVICE_SIZE,
        "{} changed size",
        device.display()
    );
    assert!(
        bytes[..image.len()] == *image,
        "{} lacks the image",
        device.display()
    );
    assert!(bytes[image.len()..].iter().all(|&b| b == 0));
}

fn untouched(device: &Path) -> bool {
    std::fs::read(device).unwrap() == vec![0u8; DEVICE_SIZE]
}

#[test]
fn bundle_with_raw_images_round_trip() {
    let d = Device::new();
    let (fw, bytes) = firmware(&d, "u-boot.img", 100_000, 1);
    let (spl, _) = firmware(&d, "spl.bin", 5000, 2);
    didymos::demo::write_sample_rootfs(&d.path("rootfs"), 1).unwrap();
    let bundle = d.path("raw.raucb");
    let out = d
        .cli()
        .args(["bundle", "create", "--rootfs"])
        .arg(d.path("rootfs"))
        .arg("--output")
        .arg(&bundle)
        .arg("--cert")
        .arg(&d.pki.signing_cert)
        .arg("--key")
        .arg(&d.pki.signing_key)
        .arg("--intermediate")
        .arg(&d.pki.intermediate_cert)
        .args([
            "--compatible",
            didymos::demo::COMPATIBLE,
            "--version",
            "1.0",
        ])
        .arg(format!("--raw=bootloader={}", fw.display()))
        .arg(format!("--raw=spl={}", spl.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sha = hex::encode(sha2::Sha256::digest(&bytes));

    let out = d.cli().arg("info").arg(&bundle).output().unwrap();
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{info}");
    assert!(info.contains("Format:       2"), "{info}");
    assert!(info.contains("Raw image:    bootloader "), "{info}");
    assert!(info.contains(&format!("sha256 {sha}")), "{info}");
    assert!(info.contains("Raw image:    spl "), "{info}");

    let out = d
        .cli()
        .args(["bundle", "verify"])
        .arg(&bundle)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("raw        bootloader"), "{text}");

    // The raw image is an object of the index; a flipped byte in it fails.
    let keyring = Keyring::load(&d.config.keyring).unwrap();
    let v = Bundle::open(&bundle).unwrap().verify(&keyring).unwrap();
    let m = v.manifest();
    assert_eq!(m.format, 2);
    let raw = m.raw_image("bootloader").unwrap().clone();
    assert_eq!((raw.size, raw.sha256.as_str()), (100_000, sha.as_str()));
    let entry = v.entry(&raw.digest).unwrap().clone();
    let mut copy = Vec::new();
    v.copy_object(&entry, &mut copy).unwrap();
    assert_eq!(copy, bytes);
    drop(v);
    let mut damaged = std::fs::read(&bundle).unwrap();
    damaged[(entry.offset + entry.stored_size / 2) as usize] ^= 0x40;
    let bad = d.path("damaged.raucb");
    std::fs::write(&bad, &damaged).unwrap();
    let err = Bundle::open(&bad)
        .unwrap()
        .verify(&keyring)
        .unwrap()
        .verify_payload(&|_, _| {})
        .unwrap_err();
    assert_eq!(err.region(), Some(Region::Object(raw.digest)), "{err}");
    let out = d
        .cli()
        .args(["bundle", "verify"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());

    // A bundle without raw images stays format 1 (readable by every didymos).
    let plain = d.bundle(1, None);
    let m = Bundle::open(&plain).unwrap().manifest_unverified().unwrap();
    assert_eq!((m.format, m.raw.len()), (1, 0));

    // A delta bundle still carries its raw images whole.
    let (fw2, _) = firmware(&d, "u-boot-2.img", 40_000, 3);
    let delta = raw_bundle(&d, 2, Some(&bundle), &[("bootloader", &fw2)]);
    let v = Bundle::open(&delta).unwrap().verify(&keyring).unwrap();
    assert!(v.manifest().is_delta());
    let raw = v.manifest().raw_image("bootloader").unwrap().clone();
    assert!(v.entry(&raw.digest).is_some());
    v.verify_payload(&|_, _| {}).unwrap();
}

#[test]
fn bad_raw_options_are_refused() {
    let d = Device::new();
    let (fw, _) = firmware(&d, "fw.bin", 1000, 1);
    let empty = d.path("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let table: Vec<(Vec<(String, PathBuf)>, &str)> = vec![
        (vec![("boot loader".into(), fw.clone())], "not a slot class"),
        (
            vec![("a".into(), fw.clone()), ("a".into(), fw.clone())],
            "given twice",
        ),
        (vec![("a".into(), empty)], "is empty"),
        (
            vec![("a".into(), d.path("missing"))],
            "cannot read raw image",
        ),
    ];
    for (raw, want) in table {
        let rootfs = d.path("rootfs");
        didymos::demo::write_sample_rootfs(&rootfs, 1).unwrap();
        let mut o = didymos::bundle::create::CreateOptions::new(
            &rootfs,
            d.path("x.raucb"),
            &d.pki.signing_cert,
            &d.pki.signing_key,
            "c",
            "1",
        );
        o.raw = raw;
        let err = didymos::bundle::create::create(&o).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
        assert!(!d.path("x.raucb").exists());
    }
    let out = d
        .cli()
        .args(["bundle", "create", "--raw", "no-equals-sign"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not CLASS=FILE"));
}

#[test]
fn install_writes_the_raw_image_of_the_target_slot() {
    let d = raw_device(RAW_SLOTS);
    let (fw1, img1) = firmware(&d, "fw-v1.bin", 70_000, 1);
    let v1 = raw_bundle(&d, 1, None, &[("bootloader", &fw1)]);
    let o = d.install(&v1).unwrap();
    assert_eq!(o.slot, slot("rootfs.0"));
    assert_eq!(o.raw_written, [(slot("bootloader.0"), "bootloader".into())]);
    assert_holds(&d.path("fw0.img"), &img1);
    assert!(untouched(&d.path("fw1.img")));
    let rec = RawRecord::load(&d.config.store.path, &slot("bootloader.0")).unwrap();
    assert_eq!(rec.size, img1.len() as u64);
    assert_eq!(rec.sha256, hex::encode(sha2::Sha256::digest(&img1)));
    assert_eq!(
        (rec.parent, rec.bundle_version.as_str()),
        (slot("rootfs.0"), "1.0")
    );
    d.fsck_clean();

    let out = d.cli().args(["status", "--detailed"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("sha256: {} (70000 bytes)", rec.sha256)),
        "{text}"
    );
    assert!(text.contains("installed with: rootfs.0"), "{text}");

    // The next install goes to the other slot group.
    d.boot();
    d.mark_good();
    let (fw2, img2) = firmware(&d, "fw-v2.bin", 90_000, 2);
    let v2 = raw_bundle(&d, 2, Some(&v1), &[("bootloader", &fw2)]);
    let o = d.install(&v2).unwrap();
    assert_eq!(o.slot, slot("rootfs.1"));
    assert_holds(&d.path("fw1.img"), &img2);
    assert_holds(&d.path("fw0.img"), &img1);
    let status = didymos::status::collect(&d.config).unwrap();
    let raw = |n: &str| {
        status
            .slots
            .iter()
            .find(|s| s.name == slot(n))
            .unwrap()
            .raw
            .clone()
            .unwrap()
    };
    assert_eq!(raw("bootloader.1").bundle_version, "2.0");
    assert_eq!(raw("bootloader.0").bundle_version, "1.0");
    d.fsck_clean();

    // A bundle without a raw image leaves the raw slot as it is.
    d.boot();
    d.mark_good();
    let v3 = d.bundle(3, None);
    let o = d.install(&v3).unwrap();
    assert_eq!(o.slot, slot("rootfs.0"));
    assert!(o.raw_written.is_empty());
    assert_holds(&d.path("fw0.img"), &img1);
    let rec = RawRecord::load(&d.config.store.path, &slot("bootloader.0")).unwrap();
    assert_eq!(rec.bundle_version, "1.0");
}

#[test]
fn raw_images_the_device_cannot_take_are_refused_before_writing() {
    let d = raw_device(RAW_SLOTS);
    let before = d.snapshot();
    // Larger than the pre-sized device file.
    let (big, _) = firmware(&d, "big.bin", DEVICE_SIZE + 1, 1);
    let v1 = raw_bundle(&d, 1, None, &[("bootloader", &big)]);
    let err = d.install(&v1).unwrap_err().to_string();
    assert!(
        err.contains(&format!("{} bytes but", DEVICE_SIZE + 1))
            && err.contains(&format!("holds {DEVICE_SIZE}"))
            && err.contains("nothing was written"),
        "{err}"
    );
    // A class no raw child of the target has.
    let (fw, _) = firmware(&d, "fw.bin", 1000, 2);
    let v1 = raw_bundle(&d, 1, None, &[("bootloader", &fw), ("firmware", &fw)]);
    let err = d.install(&v1).unwrap_err().to_string();
    assert!(
        err.contains("raw image \"firmware\"") && err.contains("no raw child slot"),
        "{err}"
    );
    assert_eq!(d.snapshot(), before);
    assert!(untouched(&d.path("fw0.img")) && untouched(&d.path("fw1.img")));

    // A missing device file is refused too (files are not created or grown).
    std::fs::remove_file(d.path("fw0.img")).unwrap();
    let v1 = raw_bundle(&d, 1, None, &[("bootloader", &fw)]);
    let err = d.install(&v1).unwrap_err().to_string();
    assert!(
        err.contains("cannot open") && err.contains("fw0.img"),
        "{err}"
    );
    assert_eq!(d.snapshot(), before);
}

#[test]
fn power_cut_during_the_raw_write_keeps_the_old_slot() {
    for step in ["raw-half-written", "raw-written"] {
        let d = raw_device(RAW_SLOTS);
        let (fw1, img1) = firmware(&d, "fw-v1.bin", 70_000, 1);
        let v1 = raw_bundle(&d, 1, None, &[("bootloader", &fw1)]);
        d.install(&v1).unwrap();
        d.boot();
        d.mark_good();
        let (fw2, img2) = firmware(&d, "fw-v2.bin", 90_000, 2);
        let v2 = raw_bundle(&d, 2, None, &[("bootloader", &fw2)]);
        d.install_cut_at(&v2, step);
        // The next start cleans up; the old group stays the bootloader's choice.
        let out = d.cli().arg("gc").output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        d.fsck_clean();
        assert_eq!(d.primary().unwrap().as_str(), "A");
        let b = Bootname::new("B").unwrap();
        assert_eq!(d.bootloader().get_state(&b).unwrap(), BootState::Bad);
        assert_holds(&d.path("fw0.img"), &img1);
        assert!(RawRecord::load(&d.config.store.path, &slot("bootloader.1")).is_err());
        let status = didymos::status::collect(&d.config).unwrap();
        assert!(status.interrupted_install.is_some());
        let tmp = std::fs::read_dir(d.config.store.path.join("tmp")).unwrap();
        assert_eq!(tmp.count(), 0, "a temporary copy was left behind");
        // A reboot still boots the old group, and the next install succeeds.
        assert_eq!(d.boot().unwrap().as_str(), "A");
        let o = d.install(&v2).unwrap();
        assert_eq!(o.slot, slot("rootfs.1"));
        assert_holds(&d.path("fw1.img"), &img2);
        assert_eq!(d.primary().unwrap().as_str(), "B");
    }
}

/// Detaches a loop device on drop.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .status();
    }
}

#[test]
fn install_onto_a_loop_block_device() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test attaches loop devices and must run as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("partition");
    std::fs::write(&backing, vec![0u8; DEVICE_SIZE]).unwrap();
    let out = std::process::Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&backing)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = Loop(String::from_utf8(out.stdout).unwrap().trim().to_owned());
    let d = raw_device(&format!(
        "\n[slot.bootloader.0]\ntype = \"raw\"\ndevice = \"{}\"\nparent = \"rootfs.0\"\n",
        dev.0
    ));
    // Too large for the partition: refused, the device unchanged.
    let (big, _) = firmware(&d, "big.bin", DEVICE_SIZE + 4096, 1);
    let v0 = raw_bundle(&d, 1, None, &[("bootloader", &big)]);
    let err = d.install(&v0).unwrap_err().to_string();
    assert!(err.contains(&format!("holds {DEVICE_SIZE}")), "{err}");
    assert!(std::fs::read(&dev.0).unwrap().iter().all(|&b| b == 0));

    let (fw, img) = firmware(&d, "fw.bin", 100_000, 2);
    let v1 = raw_bundle(&d, 1, None, &[("bootloader", &fw)]);
    d.install(&v1).unwrap();
    let on_device = std::fs::read(&dev.0).unwrap();
    assert_eq!(on_device.len(), DEVICE_SIZE);
    assert!(on_device[..img.len()] == img[..]);
    drop(dev);
    assert_holds(&backing, &img);
    let rec = RawRecord::load(&d.config.store.path, &slot("bootloader.0")).unwrap();
    assert_eq!(rec.size, img.len() as u64);
}
