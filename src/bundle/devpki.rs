//! A DEVELOPMENT-ONLY public key infrastructure: a root CA, an intermediate
//! CA and a code-signing certificate, with unencrypted keys. For demos and
//! tests; never for devices in the field (anyone with these files can sign
//! updates). `bundles/make-dev-pki.sh` makes the same with the openssl CLI.

use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509NameBuilder};

/// Which extended key usage a leaf certificate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafUsage {
    CodeSigning,
    EmailProtection,
    /// A TLS server certificate: no signing usage at all.
    ServerAuth,
    /// No extended key usage extension.
    None,
}

/// A certificate with its key.
pub struct Issued {
    pub cert: X509,
    pub key: PKey<Private>,
}

/// How to issue one certificate.
pub struct CertSpec<'a> {
    pub common_name: &'a str,
    pub ca: bool,
    pub usage: LeafUsage,
    /// Validity in seconds relative to now (may be negative, to make expired
    /// or not-yet-valid certificates for tests).
    pub not_before: i64,
    pub not_after: i64,
    pub serial: u32,
    /// More (non-critical) extensions: dotted OID and the extension value's DER.
    pub extensions: Vec<(String, Vec<u8>)>,
}

impl<'a> CertSpec<'a> {
    pub fn ca(common_name: &'a str, serial: u32) -> Self {
        Self {
            common_name,
            ca: true,
            usage: LeafUsage::None,
            not_before: -3600,
            not_after: 20 * 365 * 86400,
            serial,
            extensions: Vec::new(),
        }
    }
    pub fn signer(common_name: &'a str, serial: u32) -> Self {
        Self {
            common_name,
            ca: false,
            usage: LeafUsage::CodeSigning,
            not_before: -3600,
            not_after: 10 * 365 * 86400,
            serial,
            extensions: Vec::new(),
        }
    }
}

fn time(offset: i64) -> Result<Asn1Time, openssl::error::ErrorStack> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Asn1Time::from_unix((now + offset) as _)
}

/// Issues a certificate signed by `issuer` (self-signed when `None`).
pub fn issue(
    spec: &CertSpec<'_>,
    issuer: Option<&Issued>,
) -> Result<Issued, openssl::error::ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(
        Nid::ORGANIZATIONNAME,
        "didymos development (NOT FOR PRODUCTION)",
    )?;
    name.append_entry_by_nid(Nid::COMMONNAME, spec.common_name)?;
    let name = name.build();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = Asn1Integer::from_bn(&*BigNum::from_u32(spec.serial)?)?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(issuer.map_or(&name, |i| i.cert.subject_name()))?;
    b.set_pubkey(&key)?;
    let (not_before, not_after) = (time(spec.not_before)?, time(spec.not_after)?);
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    if spec.ca {
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
    } else {
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
        let eku = match spec.usage {
            LeafUsage::CodeSigning => Some(ExtendedKeyUsage::new().code_signing().build()?),
            LeafUsage::EmailProtection => Some(ExtendedKeyUsage::new().email_protection().build()?),
            LeafUsage::ServerAuth => Some(ExtendedKeyUsage::new().server_auth().build()?),
            LeafUsage::None => None,
        };
        if let Some(eku) = eku {
            b.append_extension(eku)?;
        }
    }
    for (oid, der) in &spec.extensions {
        let oid = openssl::asn1::Asn1Object::from_str(oid)?;
        let value = openssl::asn1::Asn1OctetString::new_from_bytes(der)?;
        b.append_extension(openssl::x509::X509Extension::new_from_der(
            &oid, false, &value,
        )?)?;
    }
    let ski =
        SubjectKeyIdentifier::new().build(&b.x509v3_context(issuer.map(|i| &*i.cert), None))?;
    b.append_extension(ski)?;
    if issuer.is_some() {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(issuer.map(|i| &*i.cert), None))?;
        b.append_extension(aki)?;
    }
    let signing_key = issuer.map_or(&key, |i| &i.key);
    b.sign(signing_key, MessageDigest::sha256())?;
    Ok(Issued {
        cert: b.build(),
        key,
    })
}

/// A certificate revocation list from `issuer`, valid from an hour ago for
/// `valid_for` seconds, revoking the certificates with the `revoked` serials.
pub fn crl(
    issuer: &Issued,
    revoked: &[u32],
    valid_for: i64,
) -> Result<openssl::x509::X509Crl, openssl::error::ErrorStack> {
    use openssl::x509::{X509CrlBuilder, X509RevokedBuilder};
    let mut b = X509CrlBuilder::new()?;
    b.set_issuer_name(issuer.cert.subject_name())?;
    b.set_last_update(&*time(-3600)?)?;
    b.set_next_update(&*time(valid_for)?)?;
    let mut extension = |oid: &str, der: &[u8]| -> Result<(), openssl::error::ErrorStack> {
        let oid = openssl::asn1::Asn1Object::from_str(oid)?;
        let value = openssl::asn1::Asn1OctetString::new_from_bytes(der)?;
        b.append_extension(openssl::x509::X509Extension::new_from_der(
            &oid, false, &value,
        )?)
    };
    // cRLNumber ::= INTEGER (1)
    extension("2.5.29.20", &[0x02, 0x01, 0x01])?;
    // authorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING }
    if let Some(ski) = issuer.cert.subject_key_id() {
        let id = ski.as_slice();
        let mut der = vec![0x30, id.len() as u8 + 2, 0x80, id.len() as u8];
        der.extend_from_slice(id);
        extension("2.5.29.35", &der)?;
    }
    for serial in revoked {
        let mut r = X509RevokedBuilder::new()?;
        r.set_serial_number(&*Asn1Integer::from_bn(&*BigNum::from_u32(*serial)?)?)?;
        r.set_revocation_date(&*time(-60)?)?;
        b.add_revoked(r.build())?;
    }
    b.sign(&issuer.key, MessageDigest::sha256())?;
    b.build()
}

/// Paths of a generated development PKI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPki {
    /// The keyring a device trusts: the root CA certificate.
    pub keyring: PathBuf,
    pub root_key: PathBuf,
    pub intermediate_cert: PathBuf,
    pub intermediate_key: PathBuf,
    /// The code-signing certificate and key for `bundle create --cert/--key`.
    pub signing_cert: PathBuf,
    pub signing_key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DevPkiError {
    #[error("cannot generate development certificates: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Generates root CA → intermediate CA → code-signing certificate in `dir`
/// (created if missing): `root-ca.pem` (the keyring), `root-ca.key`,
/// `intermediate-ca.pem`, `intermediate-ca.key`, `signing.pem`, `signing.key`.
pub fn generate(dir: &Path) -> Result<DevPki, DevPkiError> {
    let write = |name: &str, data: &[u8]| -> Result<PathBuf, DevPkiError> {
        let path = dir.join(name);
        crate::util::write_atomic(&path, data).map_err(|source| DevPkiError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    };
    std::fs::create_dir_all(dir).map_err(|source| DevPkiError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let root = issue(&CertSpec::ca("didymos development root CA", 1), None)?;
    let inter = issue(
        &CertSpec::ca("didymos development intermediate CA", 2),
        Some(&root),
    )?;
    let signer = issue(
        &CertSpec::signer("didymos development signer", 3),
        Some(&inter),
    )?;
    Ok(DevPki {
        keyring: write("root-ca.pem", &root.cert.to_pem()?)?,
        root_key: write("root-ca.key", &root.key.private_key_to_pem_pkcs8()?)?,
        intermediate_cert: write("intermediate-ca.pem", &inter.cert.to_pem()?)?,
        intermediate_key: write(
            "intermediate-ca.key",
            &inter.key.private_key_to_pem_pkcs8()?,
        )?,
        signing_cert: write("signing.pem", &signer.cert.to_pem()?)?,
        signing_key: write("signing.key", &signer.key.private_key_to_pem_pkcs8()?)?,
    })
}
