//! The container's byte layout: the fixed header and the object index.
//!
//! Parsers here take byte slices and never trust a length or count before
//! checking it against the file size and the limits below. The layout is
//! described in `docs/bundle-format.md`.

use sha2::{Digest as _, Sha256};

use super::{Encoding, IndexEntry, Region};
use crate::Digest;

/// The first eight bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"DIDYMOS\x1a";
/// The container layout version this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the fixed header.
pub const HEADER_SIZE: usize = 128;
/// Bytes of the header covered by its checksum.
const HEADER_SUMMED: usize = 96;

/// Largest manifest accepted (it is TOML text a person could read).
pub const MAX_MANIFEST_SIZE: u64 = 64 * 1024;
/// Largest CMS signature accepted (signer certificate plus a few intermediates).
pub const MAX_SIGNATURE_SIZE: u64 = 256 * 1024;
/// Largest composefs image accepted (it is read into memory).
pub const MAX_IMAGE_SIZE: u64 = 1024 * 1024 * 1024;
/// Most objects one bundle may carry.
pub const MAX_OBJECTS: u64 = 1 << 24;
/// Largest single object (decoded).
pub const MAX_OBJECT_SIZE: u64 = 1 << 40;

/// The index starts with this magic and a count.
pub const INDEX_MAGIC: [u8; 8] = *b"DIDYIDX\0";
pub const INDEX_HEADER_SIZE: usize = 16;
pub const INDEX_ENTRY_SIZE: usize = 64;

/// One contiguous byte range of the bundle file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub offset: u64,
    pub len: u64,
}

impl Span {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// The parsed fixed header: where each region lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub manifest: Span,
    pub signature: Span,
    pub index: Span,
    pub image: Span,
    pub objects: Span,
}

/// What is wrong with a header or index, before it is mapped to a bundle error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("the file is {size} bytes, too short for the {HEADER_SIZE}-byte bundle header")]
    ShortHeader { size: u64 },
    #[error("not a didymos bundle: the file starts with {found} instead of {expected}")]
    BadMagic { found: String, expected: String },
    #[error(
        "bundle format version {found} is not supported (this build reads version {FORMAT_VERSION}); use a newer didymos"
    )]
    UnsupportedVersion { found: u32 },
    #[error("header checksum mismatch: expected {expected}, computed {actual}")]
    HeaderChecksum { expected: String, actual: String },
    #[error("{region} region is {len} bytes, larger than the limit of {limit}")]
    TooLarge {
        region: Region,
        len: u64,
        limit: u64,
    },
    #[error(
        "{region} region is at offset {offset}, expected {expected} (regions must follow each other)"
    )]
    Misplaced {
        region: Region,
        offset: u64,
        expected: u64,
    },
    #[error(
        "{region} region ends at byte {end} but the file is only {file_size} bytes (truncated?)"
    )]
    Truncated {
        region: Region,
        end: u64,
        file_size: u64,
    },
    #[error(
        "the file is {file_size} bytes but its regions end at byte {end}: {extra} unexpected trailing bytes"
    )]
    Trailing {
        file_size: u64,
        end: u64,
        extra: u64,
    },
    #[error("{region} region is empty")]
    Empty { region: Region },
    #[error("object index: {0}")]
    Index(String),
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

impl Header {
    /// Lays out the regions one after another, starting after the header.
    pub fn sequential(manifest: u64, signature: u64, index: u64, image: u64, objects: u64) -> Self {
        let mut at = HEADER_SIZE as u64;
        let mut next = |len: u64| {
            let s = Span { offset: at, len };
            at += len;
            s
        };
        Header {
            manifest: next(manifest),
            signature: next(signature),
            index: next(index),
            image: next(image),
            objects: next(objects),
        }
    }

    fn spans(&self) -> [(Region, Span); 5] {
        [
            (Region::Manifest, self.manifest),
            (Region::Signature, self.signature),
            (Region::Index, self.index),
            (Region::Image, self.image),
            (Region::Objects, self.objects),
        ]
    }

    /// The total file size this header describes.
    pub fn file_size(&self) -> u64 {
        self.objects.end()
    }

    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        let mut at = 16;
        for (_, span) in self.spans() {
            b[at..at + 8].copy_from_slice(&span.offset.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&span.len.to_le_bytes());
            at += 16;
        }
        let sum = Sha256::digest(&b[..HEADER_SUMMED]);
        b[HEADER_SUMMED..].copy_from_slice(&sum);
        b
    }

    /// Parses and checks a header against the size of the file it came from.
    pub fn parse(b: &[u8], file_size: u64) -> Result<Header, LayoutError> {
        if b.len() < HEADER_SIZE || file_size < HEADER_SIZE as u64 {
            return Err(LayoutError::ShortHeader {
                size: file_size.min(b.len() as u64),
            });
        }
        if b[0..8] != MAGIC {
            return Err(LayoutError::BadMagic {
                found: escape(&b[0..8]),
                expected: escape(&MAGIC),
            });
        }
        let version = u32_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(LayoutError::UnsupportedVersion { found: version });
        }
        let sum = Sha256::digest(&b[..HEADER_SUMMED]);
        if sum[..] != b[HEADER_SUMMED..HEADER_SIZE] {
            return Err(LayoutError::HeaderChecksum {
                expected: hex::encode(&b[HEADER_SUMMED..HEADER_SIZE]),
                actual: hex::encode(sum),
            });
        }
        let header_size = u32_at(b, 12);
        let span = |i: usize| Span {
            offset: u64_at(b, 16 + 16 * i),
            len: u64_at(b, 24 + 16 * i),
        };
        let h = Header {
            manifest: span(0),
            signature: span(1),
            index: span(2),
            image: span(3),
            objects: span(4),
        };
        let mut expected = u64::from(header_size);
        if header_size as usize != HEADER_SIZE {
            return Err(LayoutError::Misplaced {
                region: Region::Manifest,
                offset: u64::from(header_size),
                expected: HEADER_SIZE as u64,
            });
        }
        let limits = [
            MAX_MANIFEST_SIZE,
            MAX_SIGNATURE_SIZE,
            INDEX_HEADER_SIZE as u64 + MAX_OBJECTS * INDEX_ENTRY_SIZE as u64,
            MAX_IMAGE_SIZE,
            u64::MAX,
        ];
        for ((region, span), limit) in h.spans().into_iter().zip(limits) {
            if span.offset != expected {
                return Err(LayoutError::Misplaced {
                    region,
                    offset: span.offset,
                    expected,
                });
            }
            if span.len > limit {
                return Err(LayoutError::TooLarge {
                    region,
                    len: span.len,
                    limit,
                });
            }
            let end = span
                .offset
                .checked_add(span.len)
                .filter(|e| *e <= file_size)
                .ok_or(LayoutError::Truncated {
                    region,
                    end: span.offset.saturating_add(span.len),
                    file_size,
                })?;
            if span.len == 0
                && matches!(
                    region,
                    Region::Manifest | Region::Signature | Region::Index | Region::Image
                )
            {
                return Err(LayoutError::Empty { region });
            }
            expected = end;
        }
        if expected != file_size {
            return Err(LayoutError::Trailing {
                file_size,
                end: expected,
                extra: file_size - expected,
            });
        }
        Ok(h)
    }
}

fn escape(b: &[u8]) -> String {
    format!("\"{}\"", b.escape_ascii())
}

/// Serializes the index. `entries` must be sorted by digest, with offsets
/// relative to the objects region.
pub fn index_to_bytes(entries: &[IndexEntry], objects_start: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(INDEX_HEADER_SIZE + entries.len() * INDEX_ENTRY_SIZE);
    out.extend_from_slice(&INDEX_MAGIC);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.digest.0);
        out.push(match e.encoding {
            Encoding::Raw => 0,
            Encoding::Zstd => 1,
        });
        out.extend_from_slice(&[0u8; 7]);
        out.extend_from_slice(&(e.offset - objects_start).to_le_bytes());
        out.extend_from_slice(&e.stored_size.to_le_bytes());
        out.extend_from_slice(&e.size.to_le_bytes());
    }
    out
}

/// Parses the index region. Offsets in the result are absolute (from the
/// start of the file). Entries must be sorted by digest without duplicates
/// and tile the objects region exactly, in order.
pub fn parse_index(b: &[u8], objects: Span) -> Result<Vec<IndexEntry>, LayoutError> {
    let head: &[u8; INDEX_HEADER_SIZE] = b
        .get(..INDEX_HEADER_SIZE)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| LayoutError::Index("does not start with the index magic".into()))?;
    let mut parser = IndexParser::new(head, objects)?;
    let expected_len = parser.region_len();
    if expected_len != b.len() as u64 {
        return Err(LayoutError::Index(format!(
            "{} entries need {expected_len} bytes but the region is {} bytes",
            parser.count,
            b.len()
        )));
    }
    for raw in b[INDEX_HEADER_SIZE..].chunks_exact(INDEX_ENTRY_SIZE) {
        parser.push(raw.try_into().expect("chunks are entry-sized"))?;
    }
    parser.finish()
}

/// Parses an index entry by entry, so that a reader can stream it: the
/// index header first ([`IndexParser::new`]), then each 64-byte entry, then
/// [`IndexParser::finish`]. Holds only the entries parsed so far.
#[derive(Debug)]
pub struct IndexParser {
    count: u64,
    objects: Span,
    entries: Vec<IndexEntry>,
    /// Where the next entry's stored bytes must start (relative).
    at: u64,
}

impl IndexParser {
    /// Checks the 16-byte index header (magic, count within the limit).
    /// Nothing is allocated until entries arrive.
    pub fn new(head: &[u8; INDEX_HEADER_SIZE], objects: Span) -> Result<Self, LayoutError> {
        if head[..8] != INDEX_MAGIC {
            return Err(LayoutError::Index(
                "does not start with the index magic".into(),
            ));
        }
        let count = u64_at(head, 8);
        if count > MAX_OBJECTS {
            return Err(LayoutError::Index(format!(
                "{count} entries, more than the limit of {MAX_OBJECTS}"
            )));
        }
        Ok(Self {
            count,
            objects,
            entries: Vec::new(),
            at: 0,
        })
    }

    /// The entry count the index header states.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The length of an index region with that many entries.
    pub fn region_len(&self) -> u64 {
        index_len(self.count).expect("count is within MAX_OBJECTS")
    }

    /// Parses the next entry.
    pub fn push(&mut self, raw: &[u8; INDEX_ENTRY_SIZE]) -> Result<(), LayoutError> {
        let bad = |m: String| LayoutError::Index(m);
        let i = self.entries.len();
        if i as u64 >= self.count {
            return Err(bad(format!(
                "more entries than the {} announced",
                self.count
            )));
        }
        let mut d = [0u8; 32];
        d.copy_from_slice(&raw[..32]);
        let digest = Digest(d);
        let encoding = match raw[32] {
            0 => Encoding::Raw,
            1 => Encoding::Zstd,
            other => {
                return Err(bad(format!(
                    "entry {i} ({digest}): unknown encoding {other}"
                )));
            }
        };
        if raw[33..40] != [0u8; 7] {
            return Err(bad(format!(
                "entry {i} ({digest}): reserved bytes are not zero"
            )));
        }
        let offset = u64_at(raw, 40);
        let stored_size = u64_at(raw, 48);
        let size = u64_at(raw, 56);
        if self.entries.last().is_some_and(|p| p.digest >= digest) {
            return Err(bad(format!(
                "entry {i} ({digest}) is out of order or repeated"
            )));
        }
        if offset != self.at {
            return Err(bad(format!(
                "entry {i} ({digest}) starts at {offset}, expected {}",
                self.at
            )));
        }
        if size > MAX_OBJECT_SIZE {
            return Err(bad(format!(
                "entry {i} ({digest}) claims {size} bytes, more than the limit of {MAX_OBJECT_SIZE}"
            )));
        }
        match encoding {
            Encoding::Raw if stored_size != size => {
                return Err(bad(format!(
                    "entry {i} ({digest}) is raw but stores {stored_size} bytes for a {size}-byte object"
                )));
            }
            Encoding::Zstd if stored_size == 0 => {
                return Err(bad(format!(
                    "entry {i} ({digest}) is zstd with no stored bytes"
                )));
            }
            _ => {}
        }
        let objects_len = self.objects.len;
        self.at = self
            .at
            .checked_add(stored_size)
            .filter(|e| *e <= objects_len)
            .ok_or_else(|| {
                bad(format!(
                    "entry {i} ({digest}) ends beyond the {objects_len}-byte objects region"
                ))
            })?;
        if self.entries.capacity() == 0 {
            // Entries arrive only for a region of `count` entries, which the
            // caller bounded by the file (and the signed manifest).
            self.entries.reserve_exact(self.count as usize);
        }
        self.entries.push(IndexEntry {
            digest,
            encoding,
            offset: self.objects.offset + offset,
            stored_size,
            size,
        });
        Ok(())
    }

    /// Checks that every announced entry came and the objects region is tiled.
    pub fn finish(self) -> Result<Vec<IndexEntry>, LayoutError> {
        if self.entries.len() as u64 != self.count {
            return Err(LayoutError::Index(format!(
                "{} entries announced, {} present",
                self.count,
                self.entries.len()
            )));
        }
        if self.at != self.objects.len {
            return Err(LayoutError::Index(format!(
                "entries cover {} bytes but the objects region is {} bytes",
                self.at, self.objects.len
            )));
        }
        Ok(self.entries)
    }
}

/// The length of an index region of `count` entries; `None` on overflow.
pub fn index_len(count: u64) -> Option<u64> {
    count
        .checked_mul(INDEX_ENTRY_SIZE as u64)?
        .checked_add(INDEX_HEADER_SIZE as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header::sequential(10, 20, INDEX_HEADER_SIZE as u64, 4096, 100)
    }

    #[test]
    fn header_round_trip() {
        let h = header();
        let b = h.to_bytes();
        assert_eq!(Header::parse(&b, h.file_size()).unwrap(), h);
    }

    #[test]
    fn header_rejects_damage() {
        let h = header();
        let good = h.to_bytes();
        let size = h.file_size();
        type Mutate = Box<dyn Fn(&mut [u8; HEADER_SIZE]) -> u64>;
        let cases: Vec<(Mutate, &str)> = vec![
            (
                Box::new(move |b| {
                    b[0] = b'X';
                    size
                }),
                "not a didymos bundle",
            ),
            (
                Box::new(move |b| {
                    b[8] = 2;
                    size
                }),
                "version 2",
            ),
            (
                Box::new(move |b| {
                    b[20] ^= 1;
                    size
                }),
                "checksum mismatch",
            ),
            (Box::new(move |_| size - 1), "truncated"),
            (Box::new(move |_| size + 1), "trailing"),
            (Box::new(|_| 5), "too short"),
        ];
        for (mutate, want) in cases {
            let mut b = good;
            let file_size = mutate(&mut b);
            let err = Header::parse(&b, file_size).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn header_bounds_lengths_even_with_valid_checksum() {
        // A header whose checksum is right but whose lengths are absurd.
        let mut h = header();
        h.manifest.len = u64::MAX - 10;
        let b = h.to_bytes();
        let err = Header::parse(&b, 1000).unwrap_err();
        assert!(
            matches!(
                err,
                LayoutError::TooLarge {
                    region: Region::Manifest,
                    ..
                }
            ),
            "{err}"
        );
    }

    fn entry(d: u8, enc: Encoding, offset: u64, stored: u64, size: u64) -> IndexEntry {
        IndexEntry {
            digest: Digest([d; 32]),
            encoding: enc,
            offset,
            stored_size: stored,
            size,
        }
    }

    #[test]
    fn index_round_trip_and_checks() {
        let objects = Span {
            offset: 1000,
            len: 30,
        };
        let good = vec![
            entry(1, Encoding::Raw, 1000, 10, 10),
            entry(2, Encoding::Zstd, 1010, 20, 500),
        ];
        let bytes = index_to_bytes(&good, 1000);
        assert_eq!(parse_index(&bytes, objects).unwrap(), good);

        let table: Vec<(Vec<IndexEntry>, &str)> = vec![
            (
                vec![
                    entry(2, Encoding::Raw, 1000, 10, 10),
                    entry(1, Encoding::Raw, 1010, 20, 20),
                ],
                "out of order",
            ),
            (
                vec![
                    entry(1, Encoding::Raw, 1000, 10, 11),
                    entry(2, Encoding::Raw, 1010, 20, 20),
                ],
                "is raw",
            ),
            (vec![entry(1, Encoding::Raw, 1001, 10, 10)], "starts at 1"),
            (vec![entry(1, Encoding::Raw, 1000, 40, 40)], "ends beyond"),
            (
                vec![entry(1, Encoding::Raw, 1000, 10, 10)],
                "cover 10 bytes",
            ),
        ];
        for (entries, want) in table {
            let err = parse_index(&index_to_bytes(&entries, 1000), objects)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        let mut huge = bytes.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(
            parse_index(&huge, objects)
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
        let mut enc = bytes;
        enc[INDEX_HEADER_SIZE + 32] = 9;
        assert!(
            parse_index(&enc, objects)
                .unwrap_err()
                .to_string()
                .contains("unknown encoding")
        );
    }
}
