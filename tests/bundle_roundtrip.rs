//! Create → open → verify → read image and objects, in process and via the CLI.

#[path = "common/bundle.rs"]
mod common_bundle;

use std::collections::BTreeSet;

use common_bundle::*;
use didymos::bundle::Bundle;
use predicates::prelude::*;

#[test]
fn create_verify_read_every_object() {
    let fx = Fixture::new();
    let root = fx.path("root");
    sample_tree(&root);
    let (out, summary) = fx.bundle(&root, "v1.raucb", "1.0");
    let m = &summary.manifest;
    // text, random (hardlinked), just-large, sparse; text-copy dedups.
    assert_eq!(m.objects.referenced, 4, "{m:#?}");
    assert_eq!(m.objects.count, 4);
    assert!(
        m.objects.stored_size < m.objects.size,
        "compression helped: {m:?}"
    );

    let b = Bundle::open(&out).unwrap();
    assert_eq!(&b.manifest_unverified().unwrap(), m);
    let v = b.verify(&fx.keyring()).unwrap();
    assert_eq!(v.signer().common_name, "didymos development signer");
    assert_eq!(v.signer().chain.len(), 3, "{:?}", v.signer().chain);
    let image = v.read_image().unwrap();
    let refs = didymos::image::referenced_objects(&image).unwrap();
    let carried: BTreeSet<_> = v.index().iter().map(|e| e.digest).collect();
    assert_eq!(refs, carried);
    for e in v.index() {
        let mut out = Vec::new();
        v.copy_object(e, &mut out).unwrap();
        assert_eq!(out.len() as u64, e.size);
        assert_eq!(didymos::image::digest_bytes(&out), e.digest);
    }
    let report = v.verify_payload(&|_, _| {}).unwrap();
    assert_eq!(report.checked, 4);
}

#[test]
fn same_inputs_same_bytes() {
    let fx = Fixture::new();
    let root = fx.path("root");
    sample_tree(&root);
    let (a, _) = fx.bundle(&root, "a.raucb", "1.0");
    let mut o = fx.options(&root, &fx.path("b.raucb"), "1.0");
    o.threads = 1;
    didymos::bundle::create::create(&o).unwrap();
    let (ba, bb) = (
        std::fs::read(&a).unwrap(),
        std::fs::read(fx.path("b.raucb")).unwrap(),
    );
    let ha = Bundle::open(&a).unwrap().header().to_owned();
    let hb = Bundle::open(&fx.path("b.raucb"))
        .unwrap()
        .header()
        .to_owned();
    // Manifest identical; payload (objects, image, index) identical.
    assert_eq!(
        String::from_utf8_lossy(&ba[ha.manifest.offset as usize..ha.manifest.end() as usize]),
        String::from_utf8_lossy(&bb[hb.manifest.offset as usize..hb.manifest.end() as usize])
    );
    assert_eq!(ha.index, hb.index);
    assert_eq!(
        ba[ha.objects.offset as usize..ha.index.end() as usize],
        bb[hb.objects.offset as usize..hb.index.end() as usize]
    );
}

#[test]
fn cli_create_verify_info() {
    let fx = Fixture::new();
    let root = fx.path("root");
    sample_tree(&root);
    let out = fx.path("cli.raucb");
    didymos_cmd()
        .args(["bundle", "create", "--rootfs"])
        .arg(&root)
        .arg("--output")
        .arg(&out)
        .arg("--cert")
        .arg(&fx.pki.signing_cert)
        .arg("--key")
        .arg(&fx.pki.signing_key)
        .arg("--intermediate")
        .arg(&fx.pki.intermediate_cert)
        .args([
            "--compatible",
            "didymos-test",
            "--version",
            "2.0",
            "--build",
            "b42",
        ])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .assert()
        .success()
        .stdout(predicate::str::contains("4 carried"));
    didymos_cmd()
        .args(["bundle", "verify", "--keyring"])
        .arg(&fx.pki.keyring)
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains(": OK"))
        .stdout(predicate::str::contains("4 checked"));
    didymos_cmd()
        .args(["info", "--keyring"])
        .arg(&fx.pki.keyring)
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("Version:      2.0"))
        .stdout(predicate::str::contains("Created:      2023-11-14T22:13:20Z"))
        .stdout(predicate::str::contains("Signer:       O=didymos development (NOT FOR PRODUCTION), CN=didymos development signer"))
        .stdout(predicate::str::contains("Verified:     yes"));
    let json = didymos_cmd()
        .args(["info", "--no-verify", "--output-format", "json"])
        .arg(&out)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["manifest"]["build"], "b42");
    assert_eq!(v["verified"], serde_json::Value::Null);
}
