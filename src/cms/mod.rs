//! CMS signatures (RFC 5652) over a document's exact bytes: signing on the
//! build host, checking against a keyring on the device. Bundles sign their
//! manifest this way; anything else the project signs uses the same code.
//!
//! The signature is a detached CMS SignedData (SHA-256) carrying the signer
//! certificate and any intermediates. Checking happens in this order, so the
//! first failure is the most telling one: the signature matches the signed
//! bytes → the signer chains to the keyring (with the keyring's time rules,
//! and its CRLs when `check-crl` is set) → the signer carries the required
//! extended key usage → the signer's common name is allowed.

pub mod der;

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::nid::Nid;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509, X509ExtendedKeyUsage, X509NameRef, X509PurposeId, X509StoreContext};

use crate::keyring::{CheckPurpose, Keyring};

/// Who signed, as found by verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerInfo {
    /// Subject of the signing certificate (one line, OpenSSL style).
    pub subject: String,
    pub common_name: String,
    /// The verified chain from the signer up to the trust anchor, subjects.
    pub chain: Vec<String>,
}

/// Why a signature does not verify. One variant per cause, so callers can
/// map them to their own errors and names.
#[derive(Debug, thiserror::Error)]
pub enum CmsError {
    #[error("signature is malformed: {detail}")]
    Malformed { detail: String },
    /// The signed `messageDigest` names other content than what was given:
    /// the document was changed after signing.
    #[error(
        "the signed content was modified after signing: the signature covers SHA-256 {expected}, the content is {actual}"
    )]
    ContentModified { expected: String, actual: String },
    #[error(
        "signature does not match the signed content (signed by {signer}): the content or signature was modified ({detail})"
    )]
    SignatureInvalid { signer: String, detail: String },
    #[error(
        "signer {signer} is not trusted by keyring {keyring}: certificate {certificate} (chain depth {depth}): {detail}; check that it was signed for this keyring"
    )]
    UntrustedSigner {
        signer: String,
        certificate: String,
        depth: u32,
        detail: String,
        keyring: std::path::PathBuf,
    },
    #[error(
        "certificate {certificate} is not valid: {detail}; renew it, or set use-bundle-signing-time / no-check-time in [keyring] for devices without a real-time clock"
    )]
    CertificateTime { certificate: String, detail: String },
    #[error(
        "certificate {certificate} was revoked (a CRL in keyring {keyring} lists it); sign with a certificate that is not revoked"
    )]
    Revoked {
        certificate: String,
        keyring: std::path::PathBuf,
    },
    #[error(
        "signer {signer} lacks the required extended key usage {required} (it has: {found}); issue a signing certificate with that usage or change check-purpose in [keyring]"
    )]
    SignerPurpose {
        signer: String,
        required: String,
        found: String,
    },
    #[error("signer common name {common_name:?} is not in allowed-signer-cns {allowed:?}")]
    SignerNotAllowed {
        common_name: String,
        allowed: Vec<String>,
    },
}

/// Signs `content` (detached CMS, SHA-256), embedding `cert` and `chain`.
pub fn sign(
    content: &[u8],
    cert: &X509,
    key: &PKey<Private>,
    chain: &[X509],
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let mut certs = Stack::new()?;
    for c in chain {
        certs.push(c.clone())?;
    }
    let flags = CMSOptions::DETACHED | CMSOptions::BINARY | CMSOptions::NOSMIMECAP;
    let cms = CmsContentInfo::sign(Some(cert), Some(key), Some(&certs), Some(content), flags)?;
    cms.to_der()
}

/// One-line form of an X.509 name, `CN = x, O = y` style.
pub fn name_to_string(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?").to_owned();
            let value = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn common_name(name: &X509NameRef) -> String {
    name.entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_default()
}

/// Checks `signature` over `content` against `keyring`; returns the signer.
pub fn verify(content: &[u8], signature: &[u8], keyring: &Keyring) -> Result<SignerInfo, CmsError> {
    let malformed = |detail: String| CmsError::Malformed { detail };
    let mut cms = CmsContentInfo::from_der(signature)
        .map_err(|e| malformed(format!("not a DER CMS structure ({e})")))?;
    let p7 = Pkcs7::from_der(signature)
        .map_err(|e| malformed(format!("not a CMS SignedData structure ({e})")))?;
    let empty = Stack::<X509>::new().map_err(|e| malformed(e.to_string()))?;
    let signers = p7
        .signers(&empty, Pkcs7Flags::empty())
        .map_err(|e| malformed(format!("the signer certificate is not embedded ({e})")))?;
    if signers.len() != 1 {
        return Err(malformed(format!(
            "expected exactly one signer, found {}",
            signers.len()
        )));
    }
    let signer = signers[0].to_owned();
    let mut intermediates = Stack::<X509>::new().map_err(|e| malformed(e.to_string()))?;
    if let Some(certs) = p7.signed().and_then(|s| s.certificates()) {
        for c in certs {
            let is_signer = c
                .to_der()
                .ok()
                .zip(signer.to_der().ok())
                .is_some_and(|(a, b)| a == b);
            if !is_signer {
                intermediates
                    .push(c.to_owned())
                    .map_err(|e| malformed(e.to_string()))?;
            }
        }
    }
    let subject = name_to_string(signer.subject_name());

    // 1. The signature itself: does it cover exactly these bytes?
    cms.verify(
        None,
        None,
        Some(content),
        None,
        CMSOptions::BINARY | CMSOptions::NO_SIGNER_CERT_VERIFY,
    )
    .map_err(|e| {
        // Tell changed content from a damaged signature: the signed
        // attributes name the SHA-256 of the content that was signed.
        let actual = hex::encode(openssl::sha::sha256(content));
        match signed_message_digest(signature) {
            Some(expected) if expected != actual => CmsError::ContentModified { expected, actual },
            _ => CmsError::SignatureInvalid {
                signer: subject.clone(),
                detail: e.to_string(),
            },
        }
    })?;

    // 2. The chain, with the keyring's time rules.
    let options = keyring.options();
    let time_err = |e: openssl::error::ErrorStack| malformed(e.to_string());
    let mut builder = X509StoreBuilder::new().map_err(time_err)?;
    for c in keyring.certificates() {
        builder.add_cert(c.clone()).map_err(time_err)?;
    }
    let mut flags = X509VerifyFlags::empty();
    if options.check_crl {
        for crl in keyring.crls() {
            crate::sys::x509::store_add_crl(&mut builder, crl).map_err(time_err)?;
        }
        flags |= X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL;
    }
    if options.allow_partial_chain {
        flags |= X509VerifyFlags::PARTIAL_CHAIN;
    }
    if options.no_check_time {
        flags |= X509VerifyFlags::NO_CHECK_TIME;
    }
    let mut param = X509VerifyParam::new().map_err(time_err)?;
    param.set_flags(flags).map_err(time_err)?;
    param.set_purpose(X509PurposeId::ANY).map_err(time_err)?;
    let mut at_time = None;
    if options.use_bundle_signing_time && !options.no_check_time {
        let t = signing_time(signature).ok_or_else(|| {
            malformed("keyring option use-bundle-signing-time is set but the signature carries no signing time".into())
        })?;
        param.set_time(t as _);
        at_time = Some(t);
    }
    builder.set_param(&param).map_err(time_err)?;
    let store = builder.build();
    let mut ctx = X509StoreContext::new().map_err(time_err)?;
    let outcome = ctx
        .init(&store, &signer, &intermediates, |c| {
            if c.verify_cert()? {
                let chain = c
                    .chain()
                    .map(|s| s.iter().map(|x| name_to_string(x.subject_name())).collect())
                    .unwrap_or_default();
                Ok(Ok(chain))
            } else {
                let failing = c
                    .current_cert()
                    .map(|x| {
                        (
                            name_to_string(x.subject_name()),
                            x.not_before().to_string(),
                            x.not_after().to_string(),
                        )
                    })
                    .unwrap_or_else(|| (subject.clone(), String::new(), String::new()));
                Ok(Err((c.error(), c.error_depth(), failing)))
            }
        })
        .map_err(time_err)?;
    let chain: Vec<String> = match outcome {
        Ok(chain) => chain,
        Err((err, depth, (cert, not_before, not_after))) => {
            let code = err.as_raw();
            // X509_V_ERR_CERT_NOT_YET_VALID = 9, X509_V_ERR_CERT_HAS_EXPIRED = 10
            if code == 9 || code == 10 {
                let when = match at_time {
                    Some(t) => format!("the bundle's signing time ({})", fmt_time(t)),
                    None => "the current time".to_owned(),
                };
                return Err(CmsError::CertificateTime {
                    certificate: cert,
                    detail: format!(
                        "{} at {when}: valid from {not_before} until {not_after}",
                        err.error_string()
                    ),
                });
            }
            // X509_V_ERR_CERT_REVOKED = 23
            if code == 23 {
                return Err(CmsError::Revoked {
                    certificate: cert,
                    keyring: keyring.source().to_owned(),
                });
            }
            let mut detail = err.error_string().to_owned();
            // X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT = 2: the chain reached a
            // keyring certificate that is not self-signed.
            // X509_V_ERR_UNABLE_TO_GET_CRL = 3
            if code == 3 {
                detail.push_str(" (check-crl is set: the keyring must hold a current CRL from every CA of the chain)");
            }
            if code == 2 && !options.allow_partial_chain {
                detail.push_str(" (the keyring holds an intermediate, not a root: add the root CA, or set allow-partial-chain)");
            }
            return Err(CmsError::UntrustedSigner {
                signer: subject,
                certificate: cert,
                depth,
                detail,
                keyring: keyring.source().to_owned(),
            });
        }
    };

    // 3. The extended key usage.
    let eku = signer.extended_key_usage();
    let (required, ok) = match options.check_purpose {
        CheckPurpose::Any => ("any", true),
        CheckPurpose::Codesign => (
            "codeSigning",
            eku.is_some_and(|k| k.contains(X509ExtendedKeyUsage::CODE_SIGN)),
        ),
        CheckPurpose::Smimesign => (
            "emailProtection",
            eku.is_none_or(|k| k.contains(X509ExtendedKeyUsage::SMIME)),
        ),
    };
    if !ok {
        return Err(CmsError::SignerPurpose {
            signer: subject,
            required: required.into(),
            found: describe_eku(eku),
        });
    }

    // 4. The allowed common names.
    let cn = common_name(signer.subject_name());
    if !options.allowed_signer_cns.is_empty() && !options.allowed_signer_cns.contains(&cn) {
        return Err(CmsError::SignerNotAllowed {
            common_name: cn,
            allowed: options.allowed_signer_cns.clone(),
        });
    }
    Ok(SignerInfo {
        subject,
        common_name: cn,
        chain,
    })
}

fn describe_eku(eku: Option<X509ExtendedKeyUsage>) -> String {
    let Some(k) = eku else {
        return "no extended key usage extension".into();
    };
    let names = [
        (X509ExtendedKeyUsage::SSL_SERVER, "serverAuth"),
        (X509ExtendedKeyUsage::SSL_CLIENT, "clientAuth"),
        (X509ExtendedKeyUsage::SMIME, "emailProtection"),
        (X509ExtendedKeyUsage::CODE_SIGN, "codeSigning"),
        (X509ExtendedKeyUsage::TIMESTAMP, "timeStamping"),
        (X509ExtendedKeyUsage::OCSP_SIGN, "OCSPSigning"),
    ];
    let found: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| k.contains(*bit))
        .map(|(_, n)| *n)
        .collect();
    if found.is_empty() {
        "an extended key usage with none of the known purposes".into()
    } else {
        found.join(", ")
    }
}

/// The signer's `messageDigest` signed attribute, hex: the SHA-256 of the
/// content it signed. Used only to word an error.
fn signed_message_digest(signature: &[u8]) -> Option<String> {
    let value = der::signed_attribute(signature, der::OID_MESSAGE_DIGEST)?;
    (value.tag == der::OCTET_STRING && value.content.len() == 32)
        .then(|| hex::encode(value.content))
}

/// The signer's `signingTime` signed attribute, as seconds since the epoch.
/// Read from the one signer's signed attributes and nowhere else; only
/// trusted once the signature was checked (OpenSSL checks it covers them).
pub fn signing_time(signature: &[u8]) -> Option<i64> {
    let value = der::signed_attribute(signature, der::OID_SIGNING_TIME)?;
    parse_asn1_time(value.tag, std::str::from_utf8(value.content).ok()?)
}

/// Parses `YYMMDDHHMMSSZ` (UTCTime, tag 0x17) or `YYYYMMDDHHMMSSZ`
/// (GeneralizedTime, tag 0x18).
fn parse_asn1_time(tag: u8, text: &str) -> Option<i64> {
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy: i64 = digits[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (0x18, 14) => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let n = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (mon, day, h, m, s) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    if !(1..=12).contains(&mon) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, mon, day) * 86400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 for a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn fmt_time(t: i64) -> String {
    u64::try_from(t)
        .map(|t| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(t),
            )
            .to_string()
        })
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asn1_times() {
        let table = [
            (0x17, "700101000000Z", Some(0)),
            (0x17, "240229120000Z", Some(1709208000)),
            (0x18, "20240229120000Z", Some(1709208000)),
            (0x17, "491231235959Z", Some(2524607999)),
            (0x17, "241301000000Z", None),
            (0x17, "2402291200Z", None),
            (0x18, "240229120000Z", None),
            (0x17, "24022912000xZ", None),
        ];
        for (tag, text, want) in table {
            assert_eq!(parse_asn1_time(tag, text), want, "{text}");
        }
    }

    #[test]
    fn signing_time_needs_a_signer() {
        assert_eq!(signing_time(&[]), None);
        // The attribute's bytes on their own, outside a SignedData, are not a signing time.
        let mut v = vec![0x06, 0x09];
        v.extend_from_slice(der::OID_SIGNING_TIME);
        v.extend_from_slice(&[0x31, 0x0f, 0x17, 0x0d]);
        v.extend_from_slice(b"700101000001Z");
        assert_eq!(signing_time(&v), None);
    }
}
