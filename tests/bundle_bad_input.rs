//! Bad input to `bundle create`: a clear message, a non-zero exit, no partial output.

#[path = "common/bundle.rs"]
mod common_bundle;

use common_bundle::*;
use predicates::prelude::*;

fn create_cmd(
    fx: &Fixture,
    rootfs: &std::path::Path,
    out: &std::path::Path,
) -> assert_cmd::Command {
    create_with_key(fx, rootfs, out, &fx.pki.signing_key)
}

fn create_with_key(
    fx: &Fixture,
    rootfs: &std::path::Path,
    out: &std::path::Path,
    key: &std::path::Path,
) -> assert_cmd::Command {
    let mut c = didymos_cmd();
    c.args(["bundle", "create", "--rootfs"])
        .arg(rootfs)
        .arg("--output")
        .arg(out)
        .arg("--cert")
        .arg(&fx.pki.signing_cert)
        .arg("--key")
        .arg(key)
        .args(["--compatible", "c", "--version", "1"]);
    c
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn setup() -> (Fixture, std::path::PathBuf, std::path::PathBuf) {
    let fx = Fixture::new();
    let root = fx.path("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("f"), pseudo_random(10000, 1)).unwrap();
    let out_dir = fx.path("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    (fx, root, out_dir)
}

#[test]
fn missing_rootfs() {
    let (fx, _, out) = setup();
    create_cmd(&fx, &fx.path("nope"), &out.join("b.raucb"))
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("root filesystem")
                .and(predicate::str::contains("nope"))
                .and(predicate::str::contains("does not exist")),
        );
    assert!(files_in(&out).is_empty());
}

#[test]
fn missing_output_directory() {
    let (fx, root, _) = setup();
    create_cmd(&fx, &root, &fx.path("no/such/dir/b.raucb"))
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("output directory")
                .and(predicate::str::contains("does not exist")),
        );
}

#[test]
fn unreadable_file() {
    let (fx, root, out) = setup();
    if rustix::process::geteuid().is_root() {
        // root reads any file; a dangling entry that vanishes is the closest
        // thing: a rootfs path that is neither directory nor archive.
        std::fs::write(root.join("not-a-tar"), b"hello").unwrap();
        create_cmd(&fx, &root.join("not-a-tar"), &out.join("b.raucb"))
            .assert()
            .failure()
            .stderr(predicate::str::contains("tar archive"));
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join("f"), std::fs::Permissions::from_mode(0o000)).unwrap();
        create_cmd(&fx, &root, &out.join("b.raucb"))
            .assert()
            .failure()
            .stderr(
                predicate::str::contains("Permission denied").and(predicate::str::contains("/f")),
            );
    }
    assert!(files_in(&out).is_empty(), "{:?}", files_in(&out));
}

#[test]
fn key_does_not_match_certificate() {
    let (fx, root, out) = setup();
    let other = didymos::bundle::devpki::generate(&fx.path("other")).unwrap();
    create_with_key(&fx, &root, &out.join("b.raucb"), &other.signing_key)
        .assert()
        .failure()
        .stderr(predicate::str::contains("does not belong to certificate"));
    assert!(files_in(&out).is_empty());
}

#[test]
fn passphrase_protected_key() {
    let (fx, root, out) = setup();
    let key =
        openssl::pkey::PKey::private_key_from_pem(&std::fs::read(&fx.pki.signing_key).unwrap())
            .unwrap();
    let enc = key
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"sesame")
        .unwrap();
    let key_path = fx.path("enc.key");
    std::fs::write(&key_path, enc).unwrap();
    let with_key = |pass: Option<&str>| {
        let mut c = create_with_key(&fx, &root, &out.join("b.raucb"), &key_path);
        if let Some(p) = pass {
            c.env("DIDYMOS_KEY_PASSPHRASE", p);
        }
        c
    };
    with_key(None).assert().failure().stderr(
        predicate::str::contains("is encrypted")
            .and(predicate::str::contains("DIDYMOS_KEY_PASSPHRASE")),
    );
    with_key(Some("wrong"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("wrong passphrase"));
    assert!(files_in(&out).is_empty());
    with_key(Some("sesame")).assert().success();
    assert_eq!(files_in(&out), vec!["b.raucb"]);
}

#[test]
fn bad_source_date_epoch() {
    let (fx, root, out) = setup();
    create_cmd(&fx, &root, &out.join("b.raucb"))
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .assert()
        .failure()
        .stderr(predicate::str::contains("SOURCE_DATE_EPOCH"));
}
