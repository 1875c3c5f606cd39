//! Root-only: the whole setup-root binary on the host against a store that
//! `didymos install` filled (no fs-verity on the host: the image digest is
//! computed in userspace and the overlay runs without `verity=`). The same
//! flow with fs-verity is the VM tier's (tests/vm/run).

#[path = "common/setup_root.rs"]
mod helpers;

use std::path::{Path, PathBuf};
use std::process::Command;

use helpers::{mount_at, require_root};

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA and a code-signing certificate issued by it: (ca.pem, signer.pem, signer.key).
fn pki(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let p = |s: &str| dir.join(format!("{name}-{s}"));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    sh(Command::new("openssl")
        .args(["req", "-x509"])
        .args(ec)
        .args(["-days", "365", "-subj", &format!("/CN={name} CA")])
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.pem"))
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]));
    sh(Command::new("openssl")
        .arg("req")
        .args(ec)
        .args(["-subj", &format!("/CN={name} signer")])
        .arg("-keyout")
        .arg(p("signer.key"))
        .arg("-out")
        .arg(p("signer.csr")));
    std::fs::write(
        p("ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n",
    )
    .unwrap();
    sh(Command::new("openssl")
        .args(["x509", "-req", "-days", "365", "-CAcreateserial"])
        .arg("-in")
        .arg(p("signer.csr"))
        .arg("-CA")
        .arg(p("ca.pem"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-extfile")
        .arg(p("ext"))
        .arg("-out")
        .arg(p("signer.pem")));
    (p("ca.pem"), p("signer.pem"), p("signer.key"))
}

fn conf(store: &Path, keyring: &Path, extra: &str) -> String {
    format!(
        r#"[system]
compatible = "didymos-host-test"
{extra}

[keyring]
path = "{}"

[store]
path = "{}"
verity = "auto"

[slot.rootfs.0]
type = "composefs"
bootname = "A"

[slot.rootfs.1]
type = "composefs"
bootname = "B"
"#,
        keyring.display(),
        store.display()
    )
}

struct Device {
    dir: tempfile::TempDir,
    store: PathBuf,
    initramfs_conf: PathBuf,
    rogue: (PathBuf, PathBuf, PathBuf),
    /// (bootname, slot, version, image hex) of both slots.
    slots: Vec<(String, String, String, String)>,
}

fn rootfs(dir: &Path, version: &str) {
    for d in ["etc", "var", "store", "usr/share"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("etc/os-release"), format!("VERSION={version}\n")).unwrap();
    std::fs::write(
        dir.join("usr/share/payload"),
        version.repeat(40_000).into_bytes(),
    )
    .unwrap();
}

fn device() -> Device {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let didymos = env!("CARGO_BIN_EXE_didymos");
    let (ca, cert, key) = pki(d, "good");
    let rogue = pki(d, "rogue");
    let store = d.join("store");
    for v in ["1.0", "2.0"] {
        let root = d.join(format!("rootfs-{v}"));
        rootfs(&root, v);
        sh(Command::new(didymos)
            .args(["bundle", "create", "--rootfs"])
            .arg(&root)
            .arg("--output")
            .arg(d.join(format!("{v}.raucb")))
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(["--compatible", "didymos-host-test", "--version", v]));
    }
    let host_conf = d.join("host.conf");
    std::fs::write(d.join("cmdline"), "").unwrap();
    std::fs::write(
        &host_conf,
        conf(
            &store,
            &ca,
            &format!(
                "bootloader = \"file\"\ndata-directory = \"{0}/data\"\nkernel-cmdline = \"{0}/cmdline\"\n\n[bootloader]\nstate-file = \"{0}/boot.toml\"",
                d.display()
            ),
        ),
    )
    .unwrap();
    for v in ["1.0", "2.0"] {
        sh(Command::new(didymos)
            .arg("--conf")
            .arg(&host_conf)
            .arg("install")
            .arg(d.join(format!("{v}.raucb"))));
    }
    let initramfs_conf = d.join("initramfs.conf");
    std::fs::write(
        &initramfs_conf,
        conf(Path::new("/store"), &ca, "bootloader = \"noop\""),
    )
    .unwrap();
    let mut slots = Vec::new();
    for (b, s) in [("A", "rootfs.0"), ("B", "rootfs.1")] {
        let rec = std::fs::read_to_string(store.join("slots").join(s).join("record.toml")).unwrap();
        let field = |k: &str| {
            rec.lines()
                .find_map(|l| l.strip_prefix(&format!("{k} = \"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_else(|| panic!("{k} missing in {rec}"))
        };
        slots.push((b.into(), s.into(), field("bundle-version"), field("image")));
    }
    Device {
        dir,
        store,
        initramfs_conf,
        rogue,
        slots,
    }
}

/// Runs setup-root; returns (success, stderr). Unmounts what it mounted.
fn setup_root(dev: &Device, cmdline: &str, extra: &[&str]) -> (bool, String) {
    let target = dev.dir.path().join("sysroot");
    let out = Command::new(env!("CARGO_BIN_EXE_didymos-setup-root"))
        .arg("--cmdline")
        .arg(cmdline)
        .arg("--conf")
        .arg(&dev.initramfs_conf)
        .arg("--root")
        .arg(&dev.store)
        .arg("--target")
        .arg(&target)
        .arg("--run-dir")
        .arg(dev.dir.path().join("run"))
        .arg("--no-switch-root")
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn unmount_all(target: &Path) {
    let _ = Command::new("umount").arg("-R").arg(target).status();
    assert_eq!(mount_at(target), None);
}

#[test]
fn boots_each_slot_and_refuses_what_does_not_verify() {
    require_root();
    let dev = device();
    let target = dev.dir.path().join("sysroot");

    for (bootname, slot, version, image) in &dev.slots {
        for extra in [&[][..], &["--force-loop", "--legacy-layers"][..]] {
            let (ok, err) = setup_root(&dev, &format!("quiet didymos.slot={bootname}"), extra);
            assert!(ok, "{err}");
            assert!(
                err.contains(&format!(
                    "slot {bootname} ({slot}) version {version}: image {image} (digest computed, no fs-verity)"
                )),
                "{err}"
            );
            assert_eq!(
                std::fs::read_to_string(target.join("etc/os-release")).unwrap(),
                format!("VERSION={version}\n")
            );
            assert_eq!(
                std::fs::read(target.join("usr/share/payload")).unwrap(),
                version.repeat(40_000).into_bytes()
            );
            assert!(
                target
                    .join("store/slots")
                    .join(slot)
                    .join("record.toml")
                    .is_file()
            );
            unmount_all(&target);
        }
    }

    // Sealed mode: the right digest boots, another one is refused.
    let (a_image, b_image) = (&dev.slots[0].3, &dev.slots[1].3);
    let (ok, err) = setup_root(
        &dev,
        &format!("didymos.slot=A didymos.digest={a_image}"),
        &[],
    );
    assert!(ok, "{err}");
    unmount_all(&target);
    let (ok, err) = setup_root(
        &dev,
        &format!("didymos.slot=A didymos.digest={b_image}"),
        &[],
    );
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "FAILED: slot A (rootfs.0): sealed digest mismatch: kernel command line requires image {b_image}, the slot record names {a_image}"
        )),
        "{err}"
    );
    assert_eq!(mount_at(&target), None);

    // Unknown bootname, missing slot argument.
    let (ok, err) = setup_root(&dev, "didymos.slot=C", &[]);
    assert!(
        !ok && err.contains("bootname C is not configured") && err.contains("A, B"),
        "{err}"
    );
    let (ok, err) = setup_root(&dev, "quiet", &[]);
    assert!(!ok && err.contains("no didymos.slot="), "{err}");

    // A manifest signed by a key outside the keyring.
    let sig = dev.store.join("slots/rootfs.0/manifest.sig");
    let good_sig = std::fs::read(&sig).unwrap();
    let (_, rogue_cert, rogue_key) = &dev.rogue;
    sh(Command::new("openssl")
        .args([
            "cms", "-sign", "-binary", "-outform", "DER", "-md", "sha256", "-in",
        ])
        .arg(dev.store.join("slots/rootfs.0/manifest.toml"))
        .arg("-signer")
        .arg(rogue_cert)
        .arg("-inkey")
        .arg(rogue_key)
        .arg("-out")
        .arg(&sig));
    let (ok, err) = setup_root(&dev, "didymos.slot=A", &[]);
    assert!(!ok);
    assert!(
        err.contains("FAILED: slot A (rootfs.0): manifest signature rejected"),
        "{err}"
    );
    assert_eq!(mount_at(&target), None);
    std::fs::write(&sig, good_sig).unwrap();

    // A modified image.
    let img = dev.store.join("images").join(a_image);
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[2000] ^= 1;
    std::fs::write(&img, &bytes).unwrap();
    let (ok, err) = setup_root(&dev, "didymos.slot=A", &[]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "FAILED: slot A (rootfs.0): image digest mismatch for {}: expected {a_image}, actual ",
            img.display()
        )),
        "{err}"
    );
    assert_eq!(mount_at(&target), None);
}
