//! Delta bundles, extraction and re-signing.

#[path = "common/bundle.rs"]
mod common_bundle;

use std::collections::BTreeSet;

use common_bundle::*;
use didymos::bundle::Bundle;
use predicates::prelude::*;

fn objects_of(fx: &Fixture, b: &std::path::Path) -> BTreeSet<didymos::Digest> {
    let v = Bundle::open(b).unwrap().verify(&fx.keyring()).unwrap();
    didymos::image::referenced_objects(&v.read_image().unwrap()).unwrap()
}

#[test]
fn delta_carries_exactly_what_the_base_lacks() {
    let fx = Fixture::new();
    let v1 = fx.path("v1root");
    sample_tree(&v1);
    let (b1, _) = fx.bundle(&v1, "v1.raucb", "1.0");
    let v2 = fx.path("v2root");
    sample_tree(&v2);
    std::fs::write(v2.join("usr/bin/random"), pseudo_random(300_000, 99)).unwrap();
    std::fs::write(v2.join("usr/bin/new"), pseudo_random(5000, 5)).unwrap();
    std::fs::remove_file(v2.join("sparse")).unwrap();

    let mut o = fx.options(&v2, &fx.path("v2-delta.raucb"), "2.0");
    o.bases = vec![b1.clone()];
    let s = didymos::bundle::create::create(&o).unwrap();
    let (full, _) = fx.bundle(&v2, "v2-full.raucb", "2.0");

    let in_v1 = objects_of(&fx, &b1);
    let in_v2 = objects_of(&fx, &full);
    let want: BTreeSet<_> = in_v2.difference(&in_v1).copied().collect();
    assert_eq!(want.len(), 2, "random changed, new added");
    let v = Bundle::open(&o.output)
        .unwrap()
        .verify(&fx.keyring())
        .unwrap();
    let carried: BTreeSet<_> = v.index().iter().map(|e| e.digest).collect();
    assert_eq!(carried, want);
    assert_eq!(s.objects_in_base, (in_v2.len() - want.len()) as u64);
    assert_eq!(v.manifest().bases.len(), 1);
    assert_eq!(v.manifest().bases[0].version, "1.0");
    let b1v = Bundle::open(&b1).unwrap().verify(&fx.keyring()).unwrap();
    assert_eq!(v.manifest().bases[0].image, b1v.manifest().image.digest);
    v.verify_payload(&|_, _| {}).unwrap();

    didymos_cmd()
        .args(["info", "--keyring"])
        .arg(&fx.pki.keyring)
        .arg(&o.output)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "Type:         delta (2 objects expected on the device)",
        ))
        .stdout(predicate::str::contains(format!(
            "Base image:   {} (version 1.0)",
            b1v.manifest().image.digest
        )));

    // A base given as a bare image works the same.
    let ex = fx.path("v1x");
    didymos::bundle::extract::extract(&b1v, &ex, None, &didymos::bundle::NoBaseImages).unwrap();
    let mut o2 = o.clone();
    o2.output = fx.path("v2-delta-img.raucb");
    o2.bases = vec![ex.join("image.cfs")];
    didymos::bundle::create::create(&o2).unwrap();
    let v2 = Bundle::open(&o2.output)
        .unwrap()
        .verify(&fx.keyring())
        .unwrap();
    let digests = |v: &didymos::bundle::VerifiedBundle| {
        v.index()
            .iter()
            .map(|e| (e.digest, e.size))
            .collect::<Vec<_>>()
    };
    assert_eq!(digests(&v2), digests(&v));
    assert_eq!(v2.manifest().bases[0].image, b1v.manifest().image.digest);
}

#[test]
fn extract_writes_a_digest_store() {
    let fx = Fixture::new();
    let root = fx.path("root");
    sample_tree(&root);
    let (b, _) = fx.bundle(&root, "b.raucb", "1");
    let dir = fx.path("out");
    didymos_cmd()
        .args(["bundle", "extract", "--keyring"])
        .arg(&fx.pki.keyring)
        .arg(&b)
        .arg(&dir)
        .assert()
        .success()
        .stdout(predicate::str::contains("4 objects written"));
    let image = std::fs::read(dir.join("image.cfs")).unwrap();
    let refs = didymos::image::referenced_objects(&image).unwrap();
    assert_eq!(refs.len(), 4);
    for d in refs {
        let data = std::fs::read(dir.join(d.to_object_path())).unwrap();
        assert_eq!(didymos::image::digest_bytes(&data), d);
    }
    let leftovers: Vec<_> = walk(&dir)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn resign_keeps_the_payload() {
    let fx = Fixture::new();
    let root = fx.path("root");
    sample_tree(&root);
    let (b, _) = fx.bundle(&root, "b.raucb", "1");
    let new = didymos::bundle::devpki::generate(&fx.path("newpki")).unwrap();
    let out = fx.path("resigned.raucb");
    didymos_cmd()
        .args(["bundle", "resign", "--keyring"])
        .arg(&fx.pki.keyring)
        .arg("--cert")
        .arg(&new.signing_cert)
        .arg("--key")
        .arg(&new.signing_key)
        .arg("--intermediate")
        .arg(&new.intermediate_cert)
        .arg(&b)
        .arg(&out)
        .assert()
        .success();
    didymos_cmd()
        .args(["bundle", "verify", "--keyring"])
        .arg(&new.keyring)
        .arg(&out)
        .assert()
        .success();
    didymos_cmd()
        .args(["bundle", "verify", "--keyring"])
        .arg(&fx.pki.keyring)
        .arg(&out)
        .assert()
        .failure()
        .stderr(predicate::str::contains("is not trusted by keyring"));
    let (old_b, new_b) = (std::fs::read(&b).unwrap(), std::fs::read(&out).unwrap());
    let (ho, hn) = (
        *Bundle::open(&b).unwrap().header(),
        *Bundle::open(&out).unwrap().header(),
    );
    assert_eq!(
        old_b[ho.manifest.offset as usize..ho.manifest.end() as usize],
        new_b[hn.manifest.offset as usize..hn.manifest.end() as usize]
    );
    for (o, n) in [
        (ho.index, hn.index),
        (ho.image, hn.image),
        (ho.objects, hn.objects),
    ] {
        assert_eq!(
            old_b[o.offset as usize..o.end() as usize],
            new_b[n.offset as usize..n.end() as usize]
        );
    }
    // The input must verify against the given keyring first.
    didymos_cmd()
        .args(["bundle", "resign", "--keyring"])
        .arg(&new.keyring)
        .arg("--cert")
        .arg(&new.signing_cert)
        .arg("--key")
        .arg(&new.signing_key)
        .arg(&b)
        .arg(fx.path("x.raucb"))
        .assert()
        .failure();
    assert!(!fx.path("x.raucb").exists());
}
