//! The CMS signature over the manifest: signing on the build host, checking
//! against a keyring on the device.
//!
//! The signature is a detached CMS SignedData (SHA-256) carrying the signer
//! certificate and any intermediates. Checking happens in this order, so the
//! first failure is the most telling one: the signature matches the manifest
//! bytes → the signer chains to the keyring (with the keyring's time rules) →
//! the signer carries the required extended key usage → the signer's common
//! name is allowed.

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::nid::Nid;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509, X509ExtendedKeyUsage, X509NameRef, X509PurposeId, X509StoreContext};

use super::{BundleError, SignerInfo};
use crate::keyring::{CheckPurpose, Keyring};

/// Signs `manifest` (detached CMS, SHA-256), embedding `cert` and `chain`.
pub fn sign(
    manifest: &[u8],
    cert: &X509,
    key: &PKey<Private>,
    chain: &[X509],
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let mut certs = Stack::new()?;
    for c in chain {
        certs.push(c.clone())?;
    }
    let flags = CMSOptions::DETACHED | CMSOptions::BINARY | CMSOptions::NOSMIMECAP;
    let cms = CmsContentInfo::sign(Some(cert), Some(key), Some(&certs), Some(manifest), flags)?;
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

/// Checks `signature` over `manifest` against `keyring`; returns the signer.
pub fn verify(
    manifest: &[u8],
    signature: &[u8],
    keyring: &Keyring,
) -> Result<SignerInfo, BundleError> {
    let malformed = |detail: String| BundleError::SignatureMalformed { detail };
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

    // 1. The signature itself: does it cover exactly these manifest bytes?
    cms.verify(
        None,
        None,
        Some(manifest),
        None,
        CMSOptions::BINARY | CMSOptions::NO_SIGNER_CERT_VERIFY,
    )
    .map_err(|e| {
        // Tell a changed manifest from a damaged signature: the signed
        // attributes name the SHA-256 of the content that was signed.
        let actual = hex::encode(openssl::sha::sha256(manifest));
        match signed_message_digest(signature) {
            Some(expected) if expected != actual => {
                BundleError::ManifestModified { expected, actual }
            }
            _ => BundleError::SignatureInvalid {
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
                return Err(BundleError::CertificateTime {
                    certificate: cert,
                    detail: format!(
                        "{} at {when}: valid from {not_before} until {not_after}",
                        err.error_string()
                    ),
                });
            }
            let mut detail = err.error_string().to_owned();
            // X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT = 2: the chain reached a
            // keyring certificate that is not self-signed.
            if code == 2 && !options.allow_partial_chain {
                detail.push_str(" (the keyring holds an intermediate, not a root: add the root CA, or set allow-partial-chain)");
            }
            return Err(BundleError::UntrustedSigner {
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
        return Err(BundleError::SignerPurpose {
            signer: subject,
            required: required.into(),
            found: describe_eku(eku),
        });
    }

    // 4. The allowed common names.
    let cn = common_name(signer.subject_name());
    if !options.allowed_signer_cns.is_empty() && !options.allowed_signer_cns.contains(&cn) {
        return Err(BundleError::SignerNotAllowed {
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

/// The `messageDigest` signed attribute (1.2.840.113549.1.9.4), hex: the
/// SHA-256 of the content the signer signed. Used only to word an error.
fn signed_message_digest(der: &[u8]) -> Option<String> {
    const OID: [u8; 11] = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04,
    ];
    let at = der.windows(OID.len()).position(|w| w == OID)? + OID.len();
    let rest = der.get(at..)?;
    if rest.get(..4)? != [0x31, 0x22, 0x04, 0x20] {
        return None;
    }
    Some(hex::encode(rest.get(4..36)?))
}

/// `signingTime` (1.2.840.113549.1.9.5) from a CMS signature's signed
/// attributes, as seconds since the epoch. Bounded scan of the DER; only
/// called after the signature was checked, so the attribute is authentic.
pub fn signing_time(der: &[u8]) -> Option<i64> {
    const OID: [u8; 11] = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x05,
    ];
    let at = der.windows(OID.len()).position(|w| w == OID)? + OID.len();
    let rest = der.get(at..)?;
    // SET { UTCTime | GeneralizedTime }
    if *rest.first()? != 0x31 {
        return None;
    }
    let inner = rest.get(2..)?;
    let tag = *inner.first()?;
    let len = *inner.get(1)? as usize;
    let text = std::str::from_utf8(inner.get(2..2 + len)?).ok()?;
    parse_asn1_time(tag, text)
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
    fn signing_time_scan_is_bounded() {
        assert_eq!(signing_time(&[]), None);
        let oid = [
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x05,
        ];
        assert_eq!(signing_time(&oid), None);
        let mut v = oid.to_vec();
        v.extend_from_slice(&[0x31, 0x0f, 0x17, 0x0d]);
        v.extend_from_slice(b"700101000001Z");
        assert_eq!(signing_time(&v), Some(1));
        v.truncate(v.len() - 3);
        assert_eq!(signing_time(&v), None);
    }
}
