//! Signature checks with every `[keyring]` option, each failure with its own error.

#[path = "common/bundle.rs"]
mod common_bundle;

use common_bundle::*;
use didymos::bundle::devpki::{CertSpec, LeafUsage};
use didymos::bundle::{Bundle, BundleError};
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
    assert!(matches!(err, BundleError::UntrustedSigner { .. }), "{err}");
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
    assert!(matches!(err, BundleError::CertificateTime { .. }), "{err}");
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
    assert!(matches!(err, BundleError::SignerPurpose { .. }), "{err}");
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
    assert!(matches!(err, BundleError::SignerNotAllowed { .. }), "{err}");
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
    assert!(matches!(err, BundleError::UntrustedSigner { .. }), "{err}");
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
