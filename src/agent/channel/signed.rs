//! The signed channel file: the document's exact bytes, then a PEM block
//! `-----BEGIN CMS-----` holding a detached CMS signature over those bytes
//! (made by [`crate::cms::sign`], checked by [`crate::cms::verify`], the same
//! code bundles use). One file, so a static server, a CDN or a USB stick
//! carries it as is, and `cat` shows the document.
//!
//! The signature is checked before the document is parsed; then its expiry
//! and sequence (freshness, as TUF's timestamp role gives): an expired
//! channel, or one older than a channel the device already accepted, is
//! refused, so a server cannot freeze a device on old releases.

use jiff::Timestamp;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use sha2::{Digest as _, Sha256};

use super::document::{Channel, ChannelError, MAX_CHANNEL_SIZE};
use crate::cms::{CmsError, SignerInfo};
use crate::keyring::Keyring;

const BEGIN: &str = "-----BEGIN CMS-----\n";
const END: &str = "-----END CMS-----";
/// A CMS signature with a certificate chain is a few KiB; this bounds it.
const MAX_SIGNATURE_SIZE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SignedChannelError {
    #[error(
        "{what} is not a signed channel (no -----BEGIN CMS----- block at its end); sign it with \
         `didymos channel sign`"
    )]
    Unsigned { what: String },
    #[error("{what}: the signature block is malformed: {detail}")]
    Malformed { what: String, detail: String },
    #[error("{what}: the channel's signature does not verify: {source}")]
    Signature {
        what: String,
        #[source]
        source: Box<CmsError>,
    },
    #[error("{what}: {source}")]
    Document {
        what: String,
        #[source]
        source: ChannelError,
    },
    #[error(
        "{what}: channel {name:?} expired at {expires} (now {now}): the server serves a stale or \
         replayed channel, or this device's clock is wrong; the publisher must sign it again \
         (`didymos channel sign --expires …`) before devices take updates from it"
    )]
    Expired {
        what: String,
        name: String,
        expires: Timestamp,
        now: Timestamp,
    },
    #[error(
        "{what}: channel {name:?} has sequence {sequence}, older than sequence {seen} this device \
         already accepted: the server replays an old channel; refused (the publisher signs every \
         new channel with a higher sequence)"
    )]
    Replayed {
        what: String,
        name: String,
        sequence: u64,
        seen: u64,
    },
}

/// A channel whose signature verified against a keyring. Only
/// [`VerifiedChannel::verify`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedChannel {
    channel: Channel,
    signer: SignerInfo,
    sha256: String,
}

impl VerifiedChannel {
    pub fn channel(&self) -> &Channel {
        &self.channel
    }
    pub fn signer(&self) -> &SignerInfo {
        &self.signer
    }
    /// SHA-256 of the signed document bytes, hex.
    pub fn sha256(&self) -> String {
        self.sha256.clone()
    }

    /// Checks the signature of a signed channel file (`bytes`) against
    /// `keyring`, then parses the document. `what` names the file or URL in
    /// messages. Expiry and sequence are checked by [`Self::check_fresh`].
    pub fn verify(bytes: &[u8], keyring: &Keyring, what: &str) -> Result<Self, SignedChannelError> {
        let (content, signature) = split(bytes, what)?;
        let signer = crate::cms::verify(content, &signature, keyring).map_err(|source| {
            SignedChannelError::Signature {
                what: what.to_owned(),
                source: Box::new(source),
            }
        })?;
        let channel = Channel::parse(content).map_err(|source| SignedChannelError::Document {
            what: what.to_owned(),
            source,
        })?;
        Ok(Self {
            channel,
            signer,
            sha256: hex::encode(Sha256::digest(content)),
        })
    }

    /// Refuses an expired channel, and one older than `seen` (the highest
    /// sequence this device accepted from this channel before).
    pub fn check_fresh(
        &self,
        now: Timestamp,
        seen: Option<u64>,
        what: &str,
    ) -> Result<(), SignedChannelError> {
        let h = &self.channel.channel;
        if now >= h.expires {
            return Err(SignedChannelError::Expired {
                what: what.to_owned(),
                name: h.name.clone(),
                expires: h.expires,
                now,
            });
        }
        if let Some(seen) = seen
            && h.sequence < seen
        {
            return Err(SignedChannelError::Replayed {
                what: what.to_owned(),
                name: h.name.clone(),
                sequence: h.sequence,
                seen,
            });
        }
        Ok(())
    }
}

/// Splits a signed file into the signed bytes and the DER signature.
pub fn split<'a>(bytes: &'a [u8], what: &str) -> Result<(&'a [u8], Vec<u8>), SignedChannelError> {
    let malformed = |detail: &str| SignedChannelError::Malformed {
        what: what.to_owned(),
        detail: detail.to_owned(),
    };
    if bytes.len() as u64 > MAX_CHANNEL_SIZE + MAX_SIGNATURE_SIZE as u64 {
        return Err(malformed("the file is larger than a channel may be"));
    }
    let marker = format!("\n{BEGIN}");
    let pos = find_last(bytes, marker.as_bytes()).ok_or_else(|| SignedChannelError::Unsigned {
        what: what.to_owned(),
    })?;
    let content = &bytes[..=pos];
    let block = &bytes[pos + marker.len()..];
    if block.len() > MAX_SIGNATURE_SIZE * 2 {
        return Err(malformed("the signature block is too large"));
    }
    let block = std::str::from_utf8(block).map_err(|_| malformed("not ASCII"))?;
    let Some(end) = block.find(END) else {
        return Err(malformed("no -----END CMS----- line"));
    };
    if !block[end + END.len()..].trim().is_empty() {
        return Err(malformed("text after -----END CMS-----"));
    }
    let b64: String = block[..end].split_whitespace().collect();
    let der = openssl::base64::decode_block(&b64).map_err(|_| malformed("not base64"))?;
    Ok((content, der))
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// The document bytes of a channel file, with any signature block removed
/// (editing a signed channel invalidates its signature).
pub fn unsigned_part(bytes: &[u8]) -> &[u8] {
    let marker = format!("\n{BEGIN}");
    match find_last(bytes, marker.as_bytes()) {
        Some(pos) => &bytes[..=pos],
        None => bytes,
    }
}

/// Signs `document` (TOML text ending in a newline) and returns the signed file.
pub fn sign(
    document: &str,
    cert: &X509,
    key: &PKey<Private>,
    chain: &[X509],
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let mut content = document.to_owned();
    if !content.ends_with('\n') {
        content.push('\n');
    }
    let der = crate::cms::sign(content.as_bytes(), cert, key, chain)?;
    let b64 = openssl::base64::encode_block(&der);
    let mut out = content;
    out.push_str(BEGIN);
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::channel::document::tests::SAMPLE;

    fn make_pki() -> (tempfile::TempDir, crate::bundle::devpki::DevPki, Keyring) {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::bundle::devpki::generate(&dir.path().join("pki")).unwrap();
        let keyring =
            Keyring::from_pem_file(&pki.keyring, crate::keyring::KeyringOptions::default())
                .unwrap();
        (dir, pki, keyring)
    }

    fn signed(pki: &crate::bundle::devpki::DevPki, doc: &str) -> Vec<u8> {
        let cert = X509::from_pem(&std::fs::read(&pki.signing_cert).unwrap()).unwrap();
        let key = PKey::private_key_from_pem(&std::fs::read(&pki.signing_key).unwrap()).unwrap();
        let chain = X509::from_pem(&std::fs::read(&pki.intermediate_cert).unwrap()).unwrap();
        sign(doc, &cert, &key, &[chain]).unwrap()
    }

    #[test]
    fn verifies_and_refuses_modified_or_foreign_channels() {
        let (_d, pki, keyring) = make_pki();
        let file = signed(&pki, SAMPLE);
        let v = VerifiedChannel::verify(&file, &keyring, "stable.channel").unwrap();
        assert_eq!(v.channel().channel.name, "stable");
        assert_eq!(unsigned_part(&file), SAMPLE.as_bytes());

        // One byte of the document changed: the signature no longer covers it.
        let text = String::from_utf8(file.clone()).unwrap();
        let tampered = text.replacen("sequence = 3", "sequence = 9", 1);
        let err = VerifiedChannel::verify(tampered.as_bytes(), &keyring, "stable.channel")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("stable.channel: the channel's signature does not verify"),
            "{err}"
        );
        assert!(err.contains("modified"), "{err}");

        // Signed by another PKI: not trusted.
        let (_d2, other, _) = make_pki();
        let foreign = signed(&other, SAMPLE);
        let err = VerifiedChannel::verify(&foreign, &keyring, "stable.channel")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not trusted by keyring"), "{err}");

        // No signature at all.
        let err = VerifiedChannel::verify(SAMPLE.as_bytes(), &keyring, "stable.channel")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a signed channel"), "{err}");
    }

    #[test]
    fn expired_and_replayed_channels_are_refused() {
        let (_d, pki, keyring) = make_pki();
        let v = VerifiedChannel::verify(&signed(&pki, SAMPLE), &keyring, "c").unwrap();
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        v.check_fresh(t("2025-06-07T23:59:59Z"), Some(3), "c")
            .unwrap();
        let err = v
            .check_fresh(t("2025-06-08T00:00:00Z"), None, "c")
            .unwrap_err()
            .to_string();
        assert!(err.contains("expired at 2025-06-08T00:00:00Z"), "{err}");
        assert!(err.contains("didymos channel sign --expires"), "{err}");
        let err = v
            .check_fresh(t("2025-06-02T00:00:00Z"), Some(4), "c")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sequence 3, older than sequence 4"), "{err}");
    }

    #[test]
    fn malformed_signature_blocks() {
        let (_d, _pki, keyring) = make_pki();
        let cases = [
            (format!("{SAMPLE}{BEGIN}!!!!\n{END}\n"), "not base64"),
            (format!("{SAMPLE}{BEGIN}AAAA\n"), "no -----END CMS-----"),
            (
                format!("{SAMPLE}{BEGIN}AAAA\n{END}\ntrailing\n"),
                "text after",
            ),
        ];
        for (file, want) in cases {
            let err = VerifiedChannel::verify(file.as_bytes(), &keyring, "c")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }
}
