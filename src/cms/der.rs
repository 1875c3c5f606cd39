//! Just enough DER to find a signer's signed attributes in a CMS
//! `SignedData` (RFC 5652), without trusting a single length.
//!
//! OpenSSL verifies the signature; what the `openssl` crate does not expose
//! is the signer's `signingTime` and `messageDigest` attributes. They are
//! read here by walking the structure, so that an attribute is only ever
//! taken from where the signer signed it, never from elsewhere in the
//! DER (a certificate extension, an unsigned attribute, a second signer).
//! Every length is checked against what is left of its parent before use;
//! nothing is allocated.

/// One DER element: its tag byte and its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub content: &'a [u8],
}

pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;
pub const OID: u8 = 0x06;
pub const INTEGER: u8 = 0x02;
pub const OCTET_STRING: u8 = 0x04;
pub const UTC_TIME: u8 = 0x17;
pub const GENERALIZED_TIME: u8 = 0x18;
/// `[0]` constructed: explicit content, or an implicit SET/SEQUENCE.
pub const CONTEXT_0: u8 = 0xa0;

/// `1.2.840.113549.1.7.2` (id-signedData), content octets.
pub const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
/// `1.2.840.113549.1.9.4` (id-messageDigest).
pub const OID_MESSAGE_DIGEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04];
/// `1.2.840.113549.1.9.5` (id-signingTime).
pub const OID_SIGNING_TIME: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x05];

/// Reads elements one after another from a byte string.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next element; `None` when the bytes end or are not DER (a
    /// high tag number, an indefinite or overlong length, a length past
    /// the end).
    pub fn read(&mut self) -> Option<Tlv<'a>> {
        let (&tag, after_tag) = self.rest.split_first()?;
        if tag & 0x1f == 0x1f {
            return None; // multi-byte tags never occur in CMS SignedData
        }
        let (&first, mut after_len) = after_tag.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            // 0x80 is BER's indefinite length; more than 4 length bytes
            // would describe more than 4 GiB.
            if n == 0 || n > 4 || after_len.len() < n {
                return None;
            }
            let mut len = 0usize;
            for &b in &after_len[..n] {
                len = (len << 8) | usize::from(b);
            }
            after_len = &after_len[n..];
            len
        };
        if len > after_len.len() {
            return None;
        }
        let (content, rest) = after_len.split_at(len);
        self.rest = rest;
        Some(Tlv { tag, content })
    }

    /// The next element, which must have `tag`.
    pub fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        self.read().filter(|t| t.tag == tag).map(|t| t.content)
    }
}

/// The signed attributes of the one signer of a CMS `SignedData`
/// (`ContentInfo`, DER), as (attribute type OID, first value) pairs.
/// `None` unless there is exactly one `SignerInfo` with signed attributes.
pub fn signed_attributes(der: &[u8]) -> Option<Vec<(&[u8], Tlv<'_>)>> {
    let mut outer = Reader::new(der);
    let mut content_info = Reader::new(outer.expect(SEQUENCE)?);
    if content_info.expect(OID)? != OID_SIGNED_DATA {
        return None;
    }
    let mut explicit = Reader::new(content_info.expect(CONTEXT_0)?);
    let mut signed_data = Reader::new(explicit.expect(SEQUENCE)?);
    signed_data.expect(INTEGER)?; // version
    signed_data.expect(SET)?; // digestAlgorithms
    signed_data.expect(SEQUENCE)?; // encapContentInfo
    // certificates [0] and crls [1] are optional; signerInfos is the SET after them.
    let signer_infos = loop {
        let t = signed_data.read()?;
        if t.tag == SET {
            break t.content;
        }
        if t.tag != CONTEXT_0 && t.tag != 0xa1 {
            return None;
        }
    };
    let mut signers = Reader::new(signer_infos);
    let signer = signers.expect(SEQUENCE)?;
    if !signers.is_empty() {
        return None; // more than one signer
    }
    let mut si = Reader::new(signer);
    si.expect(INTEGER)?; // version
    si.read()?; // sid: issuerAndSerialNumber or [0] subjectKeyIdentifier
    si.expect(SEQUENCE)?; // digestAlgorithm
    let attrs = si.expect(CONTEXT_0)?; // signedAttrs [0] IMPLICIT SET OF Attribute
    let mut attrs = Reader::new(attrs);
    let mut out = Vec::new();
    while !attrs.is_empty() {
        let mut attr = Reader::new(attrs.expect(SEQUENCE)?);
        let oid = attr.expect(OID)?;
        let mut values = Reader::new(attr.expect(SET)?);
        out.push((oid, values.read()?));
    }
    Some(out)
}

/// The value of the signer's signed attribute `oid`, if present.
pub fn signed_attribute<'a>(der: &'a [u8], oid: &[u8]) -> Option<Tlv<'a>> {
    signed_attributes(der)?
        .into_iter()
        .find(|(o, _)| *o == oid)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_bounded() {
        type Case<'a> = (&'a [u8], Option<(u8, usize)>);
        let table: &[Case] = &[
            (&[], None),
            (&[0x30], None),
            (&[0x30, 0x00], Some((0x30, 0))),
            (&[0x04, 0x02, 1, 2], Some((0x04, 2))),
            (&[0x04, 0x03, 1, 2], None),
            (&[0x04, 0x81, 0x01, 9], Some((0x04, 1))),
            (&[0x04, 0x80, 0, 0], None),
            (&[0x04, 0x85, 1, 1, 1, 1, 1], None),
            (&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff], None),
            (&[0x1f, 0x01, 0x00], None),
        ];
        for (bytes, want) in table {
            let got = Reader::new(bytes).read().map(|t| (t.tag, t.content.len()));
            assert_eq!(got, *want, "{bytes:02x?}");
        }
    }

    #[test]
    fn garbage_has_no_attributes() {
        assert_eq!(signed_attributes(&[]), None);
        assert_eq!(signed_attributes(&[0x30, 0x00]), None);
        let mut v = vec![0x30, 0x0b, 0x06, 0x09];
        v.extend_from_slice(OID_SIGNED_DATA);
        assert_eq!(signed_attributes(&v), None);
    }
}
