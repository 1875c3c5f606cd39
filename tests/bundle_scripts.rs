//! The shipped scripts: the openssl-CLI development PKI and the example
//! rootfs, packed as GNU tar with xattrs, through `bundle create` and `verify`.

#[path = "common/bundle.rs"]
mod common_bundle;

use std::process::Command;

use common_bundle::*;
use predicates::prelude::*;

#[test]
fn dev_pki_script_and_example_rootfs_make_a_verifiable_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
    ok(Command::new(repo.join("bundles/make-dev-pki.sh")).arg(d.join("pki")));
    ok(Command::new(repo.join("bundles/example-rootfs.sh"))
        .arg(d.join("root"))
        .arg("3.1"));
    ok(Command::new("tar")
        .args([
            "--xattrs",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "-C",
        ])
        .arg(d.join("root"))
        .arg("-czf")
        .arg(d.join("root.tar.gz"))
        .arg("."));
    let pki = d.join("pki");
    didymos_cmd()
        .args(["bundle", "create", "--rootfs"])
        .arg(d.join("root.tar.gz"))
        .arg("--output")
        .arg(d.join("ex.raucb"))
        .arg("--cert")
        .arg(pki.join("signing.pem"))
        .arg("--key")
        .arg(pki.join("signing.key"))
        .arg("--intermediate")
        .arg(pki.join("intermediate-ca.pem"))
        .args(["--compatible", "didymos-example", "--version", "3.1"])
        .assert()
        .success();
    didymos_cmd()
        .args(["bundle", "verify", "--keyring"])
        .arg(pki.join("root-ca.pem"))
        .arg(d.join("ex.raucb"))
        .assert()
        .success()
        .stdout(predicate::str::contains("CN=didymos development signer"));
}
