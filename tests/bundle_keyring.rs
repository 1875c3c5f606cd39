//! Signature checks with every `[keyring]` option, each failure with its own error.

#[path = "common/bundle.rs"]
mod common_bundle;

use common_bundle::*;
use didymos::bundle::devpki::{CertSpec, LeafUsage};
use didymos::bundle::{Bundle, BundleError};
use didymos::cms::CmsError;
use didymos::keyring::{CheckPurpose, Keyring, KeyringOptions};

fn sign_with(fx: &Fixture, name: &str, spec: CertSpec<'_>) -> std::path::PathBuf {
    let root = fx.path("root");
    if !root.exists() {
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("f"), pseudo_random(1000, 2)).unwrap();
    }
    let (cert, key) = issue_signer(fx, name, &spec);
    let out = fx.path(&format!("{name}.raucb"));
    let mut o = fx.options(&root, &out, "1");
    o.cert = cert;
    o.key = key;
    didymos::bundle::create::create(&o).unwrap();
    out
}

fn verify(bundle: &std::path::Path, keyring: &Keyring) -> Result<(), BundleError> {
    Bundle::open(bundle)?.verify(keyring).map(|_| ())
}

fn with(fx: &Fixture, f: impl FnOnce(&mut KeyringOptions)) -> Keyring {
    let mut o = KeyringOptions::default();
    f(&mut o);
    Keyring::from_pem_file(&fx.pki.keyring, o).unwrap()
}

#[test]
fn wrong_keyring() {
    let fx = Fixture::new();
    let b = sign_with(&fx, "ok", CertSpec::signer("ok", 10));
    verify(&b, &fx.keyring()).unwrap();
    let other = didymos::bundle::devpki::generate(&fx.path("other")).unwrap();
    let k = Keyring::from_pem_file(&other.keyring, KeyringOptions::default()).unwrap();
    let err = verify(&b, &k).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::Signature(CmsError::UntrustedSigner { .. })
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("unable to get local issuer certificate"),
        "{err}"
    );
}

#[test]
fn expired_and_not_yet_valid_certificates() {
    let fx = Fixture::new();
    let mut spec = CertSpec::signer("expired", 11);
    spec.not_before = -7200;
    spec.not_after = -3600;
    let b = sign_with(&fx, "expired", spec);
    let err = verify(&b, &fx.keyring()).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::Signature(CmsError::CertificateTime { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("certificate has expired"), "{err}");
    // Signed after expiry: the signing time does not help.
    let err = verify(&b, &with(&fx, |o| o.use_bundle_signing_time = true)).unwrap_err();
    assert!(err.to_string().contains("signing time"), "{err}");
    verify(&b, &with(&fx, |o| o.no_check_time = true)).unwrap();

    let mut spec = CertSpec::signer("future", 12);
    spec.not_before = 3600;
    let b = sign_with(&fx, "future", spec);
    let err = verify(&b, &fx.keyring()).unwrap_err();
    assert!(err.to_string().contains("not yet valid"), "{err}");
}

#[test]
fn key_usage() {
    let fx = Fixture::new();
    let mut spec = CertSpec::signer("tls", 13);
    spec.usage = LeafUsage::ServerAuth;
    let b = sign_with(&fx, "tls", spec);
    let err = verify(&b, &fx.keyring()).unwrap_err();
    assert!(
        matches!(err, BundleError::Signature(CmsError::SignerPurpose { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains("codeSigning (it has: serverAuth)"),
        "{err}"
    );
    verify(&b, &with(&fx, |o| o.check_purpose = CheckPurpose::Any)).unwrap();

    let mut spec = CertSpec::signer("mail", 14);
    spec.usage = LeafUsage::EmailProtection;
    let b = sign_with(&fx, "mail", spec);
    assert!(verify(&b, &fx.keyring()).is_err());
    verify(
        &b,
        &with(&fx, |o| o.check_purpose = CheckPurpose::Smimesign),
    )
    .unwrap();
}

#[test]
fn allowed_signer_cns() {
    let fx = Fixture::new();
    let b = sign_with(&fx, "release", CertSpec::signer("release-signer", 15));
    let err = verify(
        &b,
        &with(&fx, |o| o.allowed_signer_cns = vec!["someone-else".into()]),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::Signature(CmsError::SignerNotAllowed { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("\"release-signer\""), "{err}");
    verify(
        &b,
        &with(&fx, |o| {
            o.allowed_signer_cns = vec!["x".into(), "release-signer".into()]
        }),
    )
    .unwrap();
}

#[test]
fn partial_chain() {
    let fx = Fixture::new();
    let b = sign_with(&fx, "p", CertSpec::signer("p", 16));
    let only_intermediate = |partial| {
        let o = KeyringOptions {
            allow_partial_chain: partial,
            ..Default::default()
        };
        Keyring::from_pem_file(&fx.pki.intermediate_cert, o).unwrap()
    };
    let err = verify(&b, &only_intermediate(false)).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::Signature(CmsError::UntrustedSigner { .. })
        ),
        "{err}"
    );
    verify(&b, &only_intermediate(true)).unwrap();
}

#[test]
fn detached_signature_check_for_slot_records() {
    let fx = Fixture::new();
    let b = sign_with(&fx, "d", CertSpec::signer("d", 17));
    let v = Bundle::open(&b).unwrap().verify(&fx.keyring()).unwrap();
    let (m, signer) = didymos::bundle::verify_manifest_signature(
        v.manifest_bytes(),
        v.signature_bytes(),
        &fx.keyring(),
    )
    .unwrap();
    assert_eq!(&m, v.manifest());
    assert_eq!(signer.common_name, "d");
    let mut changed = v.manifest_bytes().to_vec();
    changed[10] ^= 1;
    let err =
        didymos::bundle::verify_manifest_signature(&changed, v.signature_bytes(), &fx.keyring())
            .unwrap_err();
    assert!(matches!(err, BundleError::ManifestModified { .. }), "{err}");
}

#[test]
fn keyring_file_errors() {
    let fx = Fixture::new();
    let p = fx.path("empty.pem");
    std::fs::write(&p, "").unwrap();
    let err = Keyring::from_pem_file(&p, KeyringOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("contains no certificates"),
        "{err}"
    );
    let err =
        Keyring::from_pem_file(&fx.path("missing.pem"), KeyringOptions::default()).unwrap_err();
    assert!(err.to_string().contains("cannot read keyring"), "{err}");
}

/// The signing time is the signer's signed attribute, not the first bytes
/// anywhere in the signature that look like one (here: inside a certificate
/// extension, which the embedded certificates put before the signer info).
#[test]
fn signing_time_comes_from_the_signers_attributes() {
    let fx = Fixture::new();
    let mut decoy = vec![0x06, 0x09];
    decoy.extend_from_slice(didymos::cms::der::OID_SIGNING_TIME);
    decoy.extend_from_slice(&[0x31, 0x0f, 0x17, 0x0d]);
    decoy.extend_from_slice(b"000101000000Z"); // 2000-01-01, before notBefore
    let mut spec = CertSpec::signer("decoy", 18);
    spec.extensions = vec![("1.3.6.1.4.1.55555.1".into(), decoy)];
    let b = sign_with(&fx, "decoy", spec);
    verify(&b, &with(&fx, |o| o.use_bundle_signing_time = true)).unwrap();
    let v = Bundle::open(&b).unwrap().verify(&fx.keyring()).unwrap();
    let t = didymos::cms::signing_time(v.signature_bytes()).expect("a signing time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - 600..=now + 60).contains(&t),
        "signing time {t}, now {now}"
    );
}

/// A keyring file holding the root CA and CRLs from the root and the
/// intermediate (the latter revoking `revoked`).
fn keyring_with_crls(
    fx: &Fixture,
    revoked: &[u32],
    with_intermediate_crl: bool,
) -> std::path::PathBuf {
    use didymos::bundle::devpki::{Issued, crl};
    use openssl::pkey::PKey;
    use openssl::x509::X509;
    let load = |cert: &std::path::Path, key: &std::path::Path| Issued {
        cert: X509::from_pem(&std::fs::read(cert).unwrap()).unwrap(),
        key: PKey::private_key_from_pem(&std::fs::read(key).unwrap()).unwrap(),
    };
    let root = load(&fx.pki.keyring, &fx.pki.root_key);
    let inter = load(&fx.pki.intermediate_cert, &fx.pki.intermediate_key);
    let mut pem = std::fs::read(&fx.pki.keyring).unwrap();
    pem.extend(crl(&root, &[], 86400).unwrap().to_pem().unwrap());
    if with_intermediate_crl {
        pem.extend(crl(&inter, revoked, 86400).unwrap().to_pem().unwrap());
    }
    let path = fx.path(&format!(
        "keyring-crl-{revoked:?}-{with_intermediate_crl}.pem"
    ));
    std::fs::write(&path, pem).unwrap();
    path
}

#[test]
fn check_crl_refuses_a_revoked_signer() {
    let fx = Fixture::new();
    let revoked = sign_with(&fx, "revoked", CertSpec::signer("revoked", 19));
    let fine = sign_with(&fx, "fine", CertSpec::signer("fine", 20));
    let crl_keyring = keyring_with_crls(&fx, &[19], true);
    let load = |path: &std::path::Path, check_crl| {
        let o = KeyringOptions {
            check_crl,
            ..Default::default()
        };
        Keyring::from_pem_file(path, o).unwrap()
    };
    // The CRLs only count when check-crl asks for them.
    verify(&revoked, &load(&crl_keyring, false)).unwrap();
    let err = verify(&revoked, &load(&crl_keyring, true)).unwrap_err();
    assert!(
        matches!(err, BundleError::Signature(CmsError::Revoked { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("CN=revoked"), "{err}");
    verify(&fine, &load(&crl_keyring, true)).unwrap();
    // At boot (no time checks) the revocation still holds.
    let installed = load(&crl_keyring, true).for_installed_slots();
    assert!(verify(&revoked, &installed).is_err());
    verify(&fine, &installed).unwrap();

    // Every CA of the chain needs its CRL.
    let partial = keyring_with_crls(&fx, &[], false);
    let err = verify(&fine, &load(&partial, true)).unwrap_err();
    assert!(
        err.to_string()
            .contains("must hold a current CRL from every CA"),
        "{err}"
    );
    // check-crl with no CRL at all is a keyring error, not a silent pass.
    let err = Keyring::from_pem_file(
        &fx.pki.keyring,
        KeyringOptions {
            check_crl: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("holds no CRL"), "{err}");
}

/// An installed slot is checked without certificate times: the signer's
/// certificate expired since, or the clock is before its notBefore.
#[test]
fn installed_slots_are_checked_without_the_clock() {
    let fx = Fixture::new();
    for (name, not_before, not_after) in [("expired", -7200, -3600), ("future", 3600, 7200)] {
        let mut spec = CertSpec::signer(name, 21);
        spec.not_before = not_before;
        spec.not_after = not_after;
        let b = sign_with(&fx, name, spec);
        let bundle = Bundle::open(&b).unwrap();
        let (manifest, signature) = (
            std::fs::read(&b).unwrap()[bundle.header().manifest.offset as usize..]
                [..bundle.header().manifest.len as usize]
                .to_vec(),
            std::fs::read(&b).unwrap()[bundle.header().signature.offset as usize..]
                [..bundle.header().signature.len as usize]
                .to_vec(),
        );
        let err = didymos::bundle::verify_manifest_signature(&manifest, &signature, &fx.keyring())
            .unwrap_err();
        assert!(
            matches!(
                err,
                BundleError::Signature(CmsError::CertificateTime { .. })
            ),
            "{name}: {err}"
        );
        let installed = fx.keyring().for_installed_slots();
        didymos::bundle::verify_manifest_signature(&manifest, &signature, &installed).unwrap();
        // Trust anchors still count.
        let other = didymos::bundle::devpki::generate(&fx.path(&format!("other-{name}"))).unwrap();
        let other = Keyring::from_pem_file(&other.keyring, KeyringOptions::default())
            .unwrap()
            .for_installed_slots();
        assert!(didymos::bundle::verify_manifest_signature(&manifest, &signature, &other).is_err());
    }
}
