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
/// The first container layout: regions in the order manifest, signature,
/// index, image, objects; objects in digest order; raw and zstd encodings.
pub const FORMAT_VERSION_1: u32 = 1;
/// The second: the objects region comes first (written as objects are
/// encoded), then image, index, manifest, signature; an index with a table
/// of delta sources and a compression dictionary; the dictionary and delta
/// encodings. See `docs/bundle-format.md`.
pub const FORMAT_VERSION_2: u32 = 2;
/// The third, written for every bundle built against a base: version 2's
/// layout, delta segments in the bsdiff-style form too, and an image region
/// that starts with a byte saying whether the image is stored whole (zstd)
/// or as a delta against a base image. See `docs/bundle-format.md`.
pub const FORMAT_VERSION_3: u32 = 3;
/// The fourth, written for full bundles: version 3's layout and encodings,
/// and packs: neighbouring small objects compressed together as one zstd
/// frame, each object an entry that names the pack's stored bytes and its
/// place in the decoded pack. See `docs/bundle-format.md`.
pub const FORMAT_VERSION_4: u32 = 4;
/// The newest container layout this code reads (and writes for full
/// bundles; bundles with a base are written as version 3).
pub const FORMAT_VERSION: u32 = FORMAT_VERSION_4;
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
/// Index header of container version 1: magic, entry count.
pub const INDEX_HEADER_SIZE: usize = 16;
/// Index header of container version 2: magic, entry count, source count,
/// dictionary length.
pub const INDEX_HEADER_SIZE_V2: usize = 32;
pub const INDEX_ENTRY_SIZE: usize = 64;
/// One entry of the delta source table (version 2): a digest.
pub const SOURCE_ENTRY_SIZE: usize = 32;
/// Largest compression dictionary a bundle may carry (it is held in memory
/// while objects are decoded).
pub const MAX_DICTIONARY_SIZE: u64 = 1024 * 1024;
/// Largest decoded pack (version 4): a pack is decoded whole, in one call,
/// into a buffer of its frame's stated content size, which must not exceed
/// this.
pub const MAX_PACK_SIZE: u64 = 8 * 1024 * 1024;
/// Largest stored pack (its frame is read into memory whole): above zstd's
/// bound for [`MAX_PACK_SIZE`] bytes (size + size/256 + a few hundred).
pub const MAX_PACK_FRAME: u64 = MAX_PACK_SIZE + MAX_PACK_SIZE / 128;

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
    /// The container version: [`FORMAT_VERSION_1`] or [`FORMAT_VERSION_2`].
    pub version: u32,
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
        "bundle format version {found} is not supported (this build reads versions {FORMAT_VERSION_1} to {FORMAT_VERSION}); use a newer didymos"
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

/// The regions in the order a container version lays them out.
fn region_order(version: u32) -> [Region; 5] {
    if version == FORMAT_VERSION_1 {
        [
            Region::Manifest,
            Region::Signature,
            Region::Index,
            Region::Image,
            Region::Objects,
        ]
    } else {
        [
            Region::Objects,
            Region::Image,
            Region::Index,
            Region::Manifest,
            Region::Signature,
        ]
    }
}

impl Header {
    /// A version 1 layout: the regions one after another, starting after
    /// the header, in version 1's order.
    pub fn sequential(manifest: u64, signature: u64, index: u64, image: u64, objects: u64) -> Self {
        Self::laid_out(FORMAT_VERSION_1, manifest, signature, index, image, objects)
    }

    /// The regions one after another after the header, in `version`'s order.
    pub fn laid_out(
        version: u32,
        manifest: u64,
        signature: u64,
        index: u64,
        image: u64,
        objects: u64,
    ) -> Self {
        let mut h = Header {
            version,
            manifest: Span::default(),
            signature: Span::default(),
            index: Span::default(),
            image: Span::default(),
            objects: Span::default(),
        };
        let mut at = HEADER_SIZE as u64;
        for region in region_order(version) {
            let (span, len) = match region {
                Region::Manifest => (&mut h.manifest, manifest),
                Region::Signature => (&mut h.signature, signature),
                Region::Index => (&mut h.index, index),
                Region::Image => (&mut h.image, image),
                _ => (&mut h.objects, objects),
            };
            *span = Span { offset: at, len };
            at += len;
        }
        h
    }

    /// The span of one of the five regions.
    pub fn span(&self, region: Region) -> Span {
        match region {
            Region::Manifest => self.manifest,
            Region::Signature => self.signature,
            Region::Index => self.index,
            Region::Image => self.image,
            _ => self.objects,
        }
    }

    /// The regions in file order.
    fn spans(&self) -> [(Region, Span); 5] {
        region_order(self.version).map(|r| (r, self.span(r)))
    }

    /// The total file size this header describes.
    pub fn file_size(&self) -> u64 {
        self.spans()[4].1.end()
    }

    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        let mut at = 16;
        // The fields keep their places whatever the regions' order.
        for span in [
            self.manifest,
            self.signature,
            self.index,
            self.image,
            self.objects,
        ] {
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
        if !(FORMAT_VERSION_1..=FORMAT_VERSION).contains(&version) {
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
            version,
            manifest: span(0),
            signature: span(1),
            index: span(2),
            image: span(3),
            objects: span(4),
        };
        let mut expected = u64::from(header_size);
        if header_size as usize != HEADER_SIZE {
            return Err(LayoutError::Misplaced {
                region: region_order(version)[0],
                offset: u64::from(header_size),
                expected: HEADER_SIZE as u64,
            });
        }
        let limit = |region: Region| match region {
            Region::Manifest => MAX_MANIFEST_SIZE,
            Region::Signature => MAX_SIGNATURE_SIZE,
            Region::Index => max_index_len(version),
            Region::Image => MAX_IMAGE_SIZE,
            _ => u64::MAX,
        };
        for (region, span) in h.spans() {
            let limit = limit(region);
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

/// Parsed object index: the entries (sorted by digest, offsets absolute)
/// and, in container version 2, the compression dictionary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Index {
    pub entries: Vec<IndexEntry>,
    /// Empty when the bundle has none.
    pub dictionary: Vec<u8>,
}

/// The size of the index header in `version`.
pub fn index_header_size(version: u32) -> usize {
    if version == FORMAT_VERSION_1 {
        INDEX_HEADER_SIZE
    } else {
        INDEX_HEADER_SIZE_V2
    }
}

/// The largest index region a header may claim in `version`.
fn max_index_len(version: u32) -> u64 {
    let per_entry = if version == FORMAT_VERSION_1 {
        INDEX_ENTRY_SIZE
    } else {
        INDEX_ENTRY_SIZE + SOURCE_ENTRY_SIZE
    } as u64;
    index_header_size(version) as u64 + MAX_OBJECTS * per_entry + MAX_DICTIONARY_SIZE
}

fn encoding_byte(e: Encoding) -> u8 {
    match e {
        Encoding::Raw => 0,
        Encoding::Zstd => 1,
        Encoding::ZstdDict => 2,
        Encoding::Delta => 3,
        Encoding::Packed => 4,
    }
}

/// Serializes the index of container `version`. `entries` must be sorted by
/// digest, with absolute offsets (`objects_start` is the objects region's
/// offset). Version 1 has no delta entries and no dictionary.
pub fn index_to_bytes(
    version: u32,
    entries: &[IndexEntry],
    dictionary: &[u8],
    objects_start: u64,
) -> Vec<u8> {
    let sources: Vec<Digest> = entries
        .iter()
        .filter_map(|e| e.source)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let v1 = version == FORMAT_VERSION_1;
    assert!(
        !v1 || (sources.is_empty() && dictionary.is_empty()),
        "container version 1 has neither deltas nor a dictionary"
    );
    let mut out = Vec::with_capacity(
        index_header_size(version)
            + entries.len() * INDEX_ENTRY_SIZE
            + sources.len() * SOURCE_ENTRY_SIZE
            + dictionary.len(),
    );
    out.extend_from_slice(&INDEX_MAGIC);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    if !v1 {
        out.extend_from_slice(&(sources.len() as u64).to_le_bytes());
        out.extend_from_slice(&(dictionary.len() as u64).to_le_bytes());
    }
    for e in entries {
        out.extend_from_slice(&e.digest.0);
        out.push(encoding_byte(e.encoding));
        out.extend_from_slice(&[0u8; 3]);
        let source = match e.source {
            Some(s) => sources.binary_search(&s).expect("collected above") as u32,
            None if e.encoding == Encoding::Packed => {
                u32::try_from(e.packed_at).expect("a place in a pack fits in u32")
            }
            None => 0,
        };
        out.extend_from_slice(&source.to_le_bytes());
        out.extend_from_slice(&(e.offset - objects_start).to_le_bytes());
        out.extend_from_slice(&e.stored_size.to_le_bytes());
        out.extend_from_slice(&e.size.to_le_bytes());
    }
    for s in &sources {
        out.extend_from_slice(&s.0);
    }
    out.extend_from_slice(dictionary);
    out
}

/// Parses a whole index region of container `version`. Offsets in the
/// result are absolute (from the start of the file).
pub fn parse_index(version: u32, b: &[u8], objects: Span) -> Result<Index, LayoutError> {
    let hs = index_header_size(version);
    let head = b
        .get(..hs)
        .ok_or_else(|| LayoutError::Index("does not start with the index magic".into()))?;
    let mut parser = IndexParser::new(version, head, objects)?;
    let expected_len = parser.region_len();
    if expected_len != b.len() as u64 {
        return Err(LayoutError::Index(format!(
            "{} entries need {expected_len} bytes but the region is {} bytes",
            parser.count,
            b.len()
        )));
    }
    let entries_end = hs + parser.count as usize * INDEX_ENTRY_SIZE;
    for raw in b[hs..entries_end].chunks_exact(INDEX_ENTRY_SIZE) {
        parser.push(raw.try_into().expect("chunks are entry-sized"))?;
    }
    let sources_end = entries_end + parser.sources as usize * SOURCE_ENTRY_SIZE;
    parser.finish(&b[entries_end..sources_end], b[sources_end..].to_vec())
}

/// Parses an index entry by entry, so that a reader can stream it: the
/// index header first ([`IndexParser::new`]), then each 64-byte entry, then
/// [`IndexParser::finish`] with the source table and the dictionary (version
/// 2). Holds only the entries parsed so far; entries name their delta source
/// by its place in the source table until `finish` resolves it.
#[derive(Debug)]
pub struct IndexParser {
    version: u32,
    count: u64,
    /// Entries of the delta source table (version 2).
    sources: u64,
    dictionary_len: u64,
    objects: Span,
    entries: Vec<IndexEntry>,
    /// Each delta entry's place in the source table, in entry order.
    source_refs: Vec<(usize, u32)>,
    /// Where the next entry's stored bytes must start (relative; version 1).
    at: u64,
}

impl IndexParser {
    /// Checks the index header (magic, counts and the dictionary length
    /// within their limits). Nothing is allocated until entries arrive.
    pub fn new(version: u32, head: &[u8], objects: Span) -> Result<Self, LayoutError> {
        if head.len() != index_header_size(version) || head[..8] != INDEX_MAGIC {
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
        let (sources, dictionary_len) = if version == FORMAT_VERSION_1 {
            (0, 0)
        } else {
            (u64_at(head, 16), u64_at(head, 24))
        };
        if sources > count {
            return Err(LayoutError::Index(format!(
                "{sources} delta sources for {count} entries (at most one per entry)"
            )));
        }
        if dictionary_len > MAX_DICTIONARY_SIZE {
            return Err(LayoutError::Index(format!(
                "a {dictionary_len}-byte dictionary, more than the limit of {MAX_DICTIONARY_SIZE}"
            )));
        }
        Ok(Self {
            version,
            count,
            sources,
            dictionary_len,
            objects,
            entries: Vec::new(),
            source_refs: Vec::new(),
            at: 0,
        })
    }

    /// The entry count the index header states.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Entries of the delta source table.
    pub fn source_count(&self) -> u64 {
        self.sources
    }

    /// Length of the dictionary at the end of the region.
    pub fn dictionary_len(&self) -> u64 {
        self.dictionary_len
    }

    /// The length of the index region this header describes.
    pub fn region_len(&self) -> u64 {
        index_header_size(self.version) as u64
            + self.count * INDEX_ENTRY_SIZE as u64
            + self.sources * SOURCE_ENTRY_SIZE as u64
            + self.dictionary_len
    }

    /// Parses the next entry.
    pub fn push(&mut self, raw: &[u8; INDEX_ENTRY_SIZE]) -> Result<(), LayoutError> {
        let bad = |m: String| LayoutError::Index(m);
        let v1 = self.version == FORMAT_VERSION_1;
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
            2 if !v1 => Encoding::ZstdDict,
            3 if !v1 => Encoding::Delta,
            4 if self.version >= FORMAT_VERSION_4 => Encoding::Packed,
            other => {
                return Err(bad(format!(
                    "entry {i} ({digest}): unknown encoding {other}"
                )));
            }
        };
        let reserved = if v1 { &raw[33..40] } else { &raw[33..36] };
        if reserved.iter().any(|b| *b != 0) {
            return Err(bad(format!(
                "entry {i} ({digest}): reserved bytes are not zero"
            )));
        }
        let source = u32_at(raw, 36);
        let offset = u64_at(raw, 40);
        let stored_size = u64_at(raw, 48);
        let size = u64_at(raw, 56);
        if self.entries.last().is_some_and(|p| p.digest >= digest) {
            return Err(bad(format!(
                "entry {i} ({digest}) is out of order or repeated"
            )));
        }
        if v1 && offset != self.at {
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
            Encoding::Raw if !v1 && size == 0 => {
                return Err(bad(format!("entry {i} ({digest}) is empty")));
            }
            Encoding::Zstd | Encoding::ZstdDict | Encoding::Delta | Encoding::Packed
                if stored_size == 0 =>
            {
                return Err(bad(format!(
                    "entry {i} ({digest}) is {} with no stored bytes",
                    encoding.as_str()
                )));
            }
            Encoding::ZstdDict if self.dictionary_len == 0 => {
                return Err(bad(format!(
                    "entry {i} ({digest}) needs the bundle's dictionary, and the bundle has none"
                )));
            }
            Encoding::Packed
                if size == 0 || u64::from(source).saturating_add(size) > MAX_PACK_SIZE =>
            {
                return Err(bad(format!(
                    "entry {i} ({digest}) is {size} bytes at {source} in a pack, \
                     outside the {MAX_PACK_SIZE} bytes a pack may hold"
                )));
            }
            Encoding::Packed if stored_size > MAX_PACK_FRAME => {
                return Err(bad(format!(
                    "entry {i} ({digest}) is in a pack of {stored_size} stored bytes, \
                     more than the limit of {MAX_PACK_FRAME}"
                )));
            }
            _ => {}
        }
        // The u32 at 36: a delta's source, a pack member's place in its pack.
        let mut packed_at = 0;
        match encoding {
            Encoding::Packed => packed_at = u64::from(source),
            Encoding::Delta => {
                if u64::from(source) >= self.sources {
                    return Err(bad(format!(
                        "entry {i} ({digest}) names delta source {source} of {}",
                        self.sources
                    )));
                }
                self.source_refs.push((i, source));
            }
            _ if source != 0 => {
                return Err(bad(format!(
                    "entry {i} ({digest}) is {} but names a delta source",
                    encoding.as_str()
                )));
            }
            _ => {}
        }
        let objects_len = self.objects.len;
        let end = offset
            .checked_add(stored_size)
            .filter(|e| *e <= objects_len)
            .ok_or_else(|| {
                bad(format!(
                    "entry {i} ({digest}) ends beyond the {objects_len}-byte objects region"
                ))
            })?;
        if v1 {
            self.at = end;
        }
        if self.entries.capacity() == 0 {
            // Entries arrive only for a region of `count` entries, which the
            // caller bounded by the file (and the signed manifest).
            self.entries.reserve_exact(self.count as usize);
        }
        self.entries.push(IndexEntry {
            digest,
            encoding,
            source: None,
            offset: self.objects.offset + offset,
            stored_size,
            size,
            packed_at,
        });
        Ok(())
    }

    /// Checks that every announced entry came and that the entries tile the
    /// objects region (in version 2 in any order: sorted by offset, each
    /// starts where the previous ended); resolves delta sources against the
    /// source table (sorted, no repeats, each used, none its own delta).
    pub fn finish(mut self, sources: &[u8], dictionary: Vec<u8>) -> Result<Index, LayoutError> {
        let bad = |m: String| LayoutError::Index(m);
        if self.entries.len() as u64 != self.count {
            return Err(bad(format!(
                "{} entries announced, {} present",
                self.count,
                self.entries.len()
            )));
        }
        if sources.len() as u64 != self.sources * SOURCE_ENTRY_SIZE as u64
            || dictionary.len() as u64 != self.dictionary_len
        {
            return Err(bad(format!(
                "the source table or dictionary is not the {} and {} bytes announced",
                self.sources * SOURCE_ENTRY_SIZE as u64,
                self.dictionary_len
            )));
        }
        let table: Vec<Digest> = sources
            .chunks_exact(SOURCE_ENTRY_SIZE)
            .map(|c| Digest(c.try_into().expect("chunks are digest-sized")))
            .collect();
        if let Some(w) = table.windows(2).find(|w| w[0] >= w[1]) {
            return Err(bad(format!(
                "delta source {} is out of order or repeated",
                w[1]
            )));
        }
        let mut used = vec![false; table.len()];
        for &(i, s) in &self.source_refs {
            let src = table[s as usize];
            if src == self.entries[i].digest {
                return Err(bad(format!("entry {i} ({src}) is a delta against itself")));
            }
            used[s as usize] = true;
            self.entries[i].source = Some(src);
        }
        if let Some(s) = used.iter().position(|u| !u) {
            return Err(bad(format!(
                "delta source {} is used by no entry",
                table[s]
            )));
        }
        let covered = if self.version == FORMAT_VERSION_1 {
            self.at
        } else {
            // The members of a pack share its span; the distinct spans
            // tile the region, and a pack's members do not overlap.
            let mut spans: Vec<(u64, u64, u64, usize)> = self
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    (
                        e.offset - self.objects.offset,
                        e.packed_at,
                        e.stored_size,
                        i,
                    )
                })
                .collect();
            spans.sort_unstable();
            let mut at = 0u64;
            let mut previous: Option<(u64, u64, usize)> = None; // offset, member end, entry
            for (offset, packed_at, len, i) in spans {
                let e = &self.entries[i];
                if let Some((p_offset, p_end, p)) = previous
                    && p_offset == offset
                {
                    let pe = &self.entries[p];
                    if e.encoding != Encoding::Packed
                        || pe.encoding != Encoding::Packed
                        || pe.stored_size != len
                    {
                        return Err(bad(format!(
                            "entries {p} and {i} share the stored bytes at {offset} \
                             without being members of one pack"
                        )));
                    }
                    if packed_at < p_end {
                        return Err(bad(format!(
                            "entries {p} and {i} overlap in the pack at {offset}"
                        )));
                    }
                    previous = Some((offset, packed_at + e.size, i));
                    continue;
                }
                if offset != at {
                    return Err(bad(format!(
                        "the entries do not tile the objects region: a gap or overlap at byte {at} \
                         (next entry starts at {offset})"
                    )));
                }
                at += len;
                previous = Some((offset, packed_at + e.size, i));
            }
            at
        };
        if covered != self.objects.len {
            return Err(bad(format!(
                "entries cover {} bytes but the objects region is {} bytes",
                covered, self.objects.len
            )));
        }
        Ok(Index {
            entries: self.entries,
            dictionary,
        })
    }
}

/// The bytes the entries store: each pack's span counted once.
pub fn stored_total<'a>(entries: impl IntoIterator<Item = &'a IndexEntry>) -> u64 {
    let mut seen = std::collections::HashSet::new();
    entries
        .into_iter()
        .filter(|e| e.encoding != Encoding::Packed || seen.insert(e.offset))
        .map(|e| e.stored_size)
        .sum()
}

/// The packs among the entries: how many, how many members, their stored
/// bytes.
pub fn pack_stats<'a>(entries: impl IntoIterator<Item = &'a IndexEntry>) -> (u64, u64, u64) {
    let members: Vec<&IndexEntry> = entries
        .into_iter()
        .filter(|e| e.encoding == Encoding::Packed)
        .collect();
    let packs: std::collections::HashSet<u64> = members.iter().map(|e| e.offset).collect();
    (
        packs.len() as u64,
        members.len() as u64,
        stored_total(members.iter().copied()),
    )
}

/// The length of a version 1 index region of `count` entries; `None` on
/// overflow.
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
                    b[8] = 5;
                    size
                }),
                "version 5",
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
            source: None,
            offset,
            stored_size: stored,
            size,
            packed_at: 0,
        }
    }

    #[test]
    fn index_round_trip_and_checks() {
        let objects = Span {
            offset: 1000,
            len: 30,
        };
        let v1 = FORMAT_VERSION_1;
        let good = vec![
            entry(1, Encoding::Raw, 1000, 10, 10),
            entry(2, Encoding::Zstd, 1010, 20, 500),
        ];
        let bytes = index_to_bytes(v1, &good, &[], 1000);
        assert_eq!(parse_index(v1, &bytes, objects).unwrap().entries, good);

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
            let err = parse_index(v1, &index_to_bytes(v1, &entries, &[], 1000), objects)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        let mut huge = bytes.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(
            parse_index(v1, &huge, objects)
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
        let mut enc = bytes.clone();
        enc[INDEX_HEADER_SIZE + 32] = 9;
        assert!(
            parse_index(v1, &enc, objects)
                .unwrap_err()
                .to_string()
                .contains("unknown encoding")
        );
        // Version 1 knows neither the dictionary nor the delta encoding.
        let mut enc = bytes;
        enc[INDEX_HEADER_SIZE + 32] = 3;
        assert!(
            parse_index(v1, &enc, objects)
                .unwrap_err()
                .to_string()
                .contains("unknown encoding 3")
        );
    }

    fn delta(d: u8, src: u8, offset: u64, stored: u64, size: u64) -> IndexEntry {
        IndexEntry {
            source: Some(Digest([src; 32])),
            ..entry(d, Encoding::Delta, offset, stored, size)
        }
    }

    #[test]
    fn index_v2_with_deltas_and_a_dictionary() {
        let v2 = FORMAT_VERSION_2;
        let objects = Span {
            offset: 128,
            len: 60,
        };
        // Offsets in any order, tiling the region.
        let good = vec![
            entry(1, Encoding::ZstdDict, 128 + 40, 20, 300),
            delta(2, 9, 128, 10, 5000),
            delta(3, 9, 128 + 10, 10, 6000),
            delta(4, 8, 128 + 20, 20, 7000),
        ];
        let dict = b"a dictionary".to_vec();
        let bytes = index_to_bytes(v2, &good, &dict, 128);
        assert_eq!(
            bytes.len(),
            INDEX_HEADER_SIZE_V2 + 4 * INDEX_ENTRY_SIZE + 2 * SOURCE_ENTRY_SIZE + dict.len()
        );
        let parsed = parse_index(v2, &bytes, objects).unwrap();
        assert_eq!(parsed.entries, good);
        assert_eq!(parsed.dictionary, dict);

        let e0 = INDEX_HEADER_SIZE_V2;
        let sources = e0 + 4 * INDEX_ENTRY_SIZE;
        type Mutate = fn(&mut Vec<u8>);
        let cases: Vec<(Mutate, &str)> = vec![
            // A delta naming a source past the table.
            (
                |b| b[INDEX_HEADER_SIZE_V2 + 64 + 36] = 7,
                "names delta source 7 of 2",
            ),
            // A non-delta entry naming a source.
            (|b| b[INDEX_HEADER_SIZE_V2 + 36] = 1, "names a delta source"),
            // Sources out of order.
            (
                |b| {
                    let s = INDEX_HEADER_SIZE_V2 + 4 * INDEX_ENTRY_SIZE;
                    b[s..s + 32].copy_from_slice(&[0xff; 32]);
                },
                "out of order or repeated",
            ),
            // A delta against itself.
            (
                |b| {
                    let s = INDEX_HEADER_SIZE_V2 + 4 * INDEX_ENTRY_SIZE;
                    b[s..s + 32].copy_from_slice(&[4; 32]);
                    b[s + 32..s + 64].copy_from_slice(&[9; 32]);
                    // entry 2 (digest 3) → source 1 (9), entry 3 (digest 4) → source 0 (4)
                    b[INDEX_HEADER_SIZE_V2 + 64 + 36] = 1;
                    b[INDEX_HEADER_SIZE_V2 + 128 + 36] = 1;
                    b[INDEX_HEADER_SIZE_V2 + 192 + 36] = 0;
                },
                "a delta against itself",
            ),
            // Overlapping entries.
            (
                |b| b[INDEX_HEADER_SIZE_V2 + 64 + 40..][..8].copy_from_slice(&5u64.to_le_bytes()),
                "gap or overlap",
            ),
            // A dictionary entry in a bundle without a dictionary.
            (
                |b| {
                    b[24..32].copy_from_slice(&0u64.to_le_bytes());
                    b.truncate(b.len() - 12);
                },
                "has none",
            ),
            // More sources than entries.
            (
                |b| b[16..24].copy_from_slice(&5u64.to_le_bytes()),
                "at most one per entry",
            ),
            // A dictionary over the limit.
            (
                |b| b[24..32].copy_from_slice(&(MAX_DICTIONARY_SIZE + 1).to_le_bytes()),
                "more than the limit",
            ),
        ];
        let _ = (e0, sources);
        for (mutate, want) in cases {
            let mut b = bytes.clone();
            mutate(&mut b);
            let err = parse_index(v2, &b, objects).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        // A source no delta uses.
        let mut unused = good.clone();
        unused[1].source = Some(Digest([8; 32]));
        unused[2].source = Some(Digest([8; 32]));
        let mut b = index_to_bytes(v2, &unused, &dict, 128);
        // Put a third source in the table by hand: count 3, an extra digest.
        b[16..24].copy_from_slice(&2u64.to_le_bytes());
        let s = INDEX_HEADER_SIZE_V2 + 4 * INDEX_ENTRY_SIZE;
        b.splice(s + 32..s + 32, [9u8; 32]);
        let err = parse_index(v2, &b, objects).unwrap_err().to_string();
        assert!(err.contains("used by no entry"), "{err}");
    }

    #[test]
    fn v2_header_orders_regions_objects_first() {
        let h = Header::laid_out(FORMAT_VERSION_2, 10, 20, 48, 4096, 100);
        assert_eq!(h.objects.offset, HEADER_SIZE as u64);
        assert_eq!(h.image.offset, HEADER_SIZE as u64 + 100);
        assert_eq!(h.signature.end(), h.file_size());
        let b = h.to_bytes();
        assert_eq!(Header::parse(&b, h.file_size()).unwrap(), h);
        // Version 1's order under a version 2 header is misplaced.
        let mut v1 = Header::sequential(10, 20, 48, 4096, 100);
        v1.version = FORMAT_VERSION_2;
        let err = Header::parse(&v1.to_bytes(), v1.file_size()).unwrap_err();
        assert!(matches!(err, LayoutError::Misplaced { .. }), "{err}");
        // A version this build does not know says to use a newer didymos.
        let mut v5 = h;
        v5.version = 5;
        let err = Header::parse(&v5.to_bytes(), h.file_size())
            .unwrap_err()
            .to_string();
        assert!(err.contains("use a newer didymos"), "{err}");
    }

    fn packed(d: u8, offset: u64, stored: u64, at: u64, size: u64) -> IndexEntry {
        IndexEntry {
            packed_at: at,
            ..entry(d, Encoding::Packed, offset, stored, size)
        }
    }

    #[test]
    fn index_v4_packs_share_their_span() {
        let v4 = FORMAT_VERSION_4;
        let objects = Span {
            offset: 128,
            len: 50,
        };
        // A pack of three members (one gap: a member whose object was
        // dropped), a lone object after it.
        let good = vec![
            packed(1, 128, 40, 300, 100),
            packed(2, 128, 40, 0, 200),
            entry(3, Encoding::Zstd, 168, 10, 99),
            packed(4, 128, 40, 200, 50),
        ];
        let bytes = index_to_bytes(v4, &good, &[], 128);
        assert_eq!(parse_index(v4, &bytes, objects).unwrap().entries, good);
        assert_eq!(stored_total(&good), 50);
        // Version 3 does not know encoding 4.
        let err = parse_index(FORMAT_VERSION_3, &bytes, objects).unwrap_err();
        assert!(err.to_string().contains("unknown encoding 4"), "{err}");

        let table: Vec<(Vec<IndexEntry>, &str)> = vec![
            (
                vec![
                    packed(1, 128, 40, 0, 100),
                    packed(2, 128, 40, 50, 100),
                    entry(3, Encoding::Zstd, 168, 10, 99),
                ],
                "overlap in the pack",
            ),
            (
                vec![
                    packed(1, 128, 40, 0, 100),
                    packed(2, 128, 30, 100, 100),
                    entry(3, Encoding::Zstd, 168, 10, 99),
                ],
                "without being members of one pack",
            ),
            (
                vec![
                    packed(1, 128, 40, 0, 100),
                    entry(2, Encoding::Zstd, 128, 40, 99),
                    entry(3, Encoding::Zstd, 168, 10, 99),
                ],
                "without being members of one pack",
            ),
            (
                vec![
                    packed(1, 128, 40, MAX_PACK_SIZE - 10, 11),
                    entry(3, Encoding::Zstd, 168, 10, 99),
                ],
                "outside the",
            ),
            (
                vec![
                    packed(1, 128, 40, 0, 0),
                    entry(3, Encoding::Zstd, 168, 10, 99),
                ],
                "outside the",
            ),
            (
                vec![
                    packed(1, 128, 40, 0, 100),
                    packed(2, 128, 40, 100, 100),
                    entry(3, Encoding::Zstd, 178, 10, 99),
                ],
                "ends beyond",
            ),
        ];
        for (entries, want) in table {
            let err = parse_index(v4, &index_to_bytes(v4, &entries, &[], 128), objects)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        let big = Span {
            offset: 128,
            len: MAX_PACK_FRAME + 1,
        };
        let huge = vec![packed(1, 128, MAX_PACK_FRAME + 1, 0, 10)];
        let err = parse_index(v4, &index_to_bytes(v4, &huge, &[], 128), big).unwrap_err();
        assert!(err.to_string().contains("more than the limit"), "{err}");
    }
}
