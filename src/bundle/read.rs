//! Opening a bundle, checking its signature and index, and reading its
//! image and objects.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use super::delta::{NoSources, Sources};
use super::format::{self, HEADER_SIZE, Header, INDEX_ENTRY_SIZE, SOURCE_ENTRY_SIZE, Span};
use super::source::{FileSource, RangeReader, ReadAt};
use super::{BundleError, Encoding, IndexEntry, Manifest, Region, SignerInfo};
use crate::Digest;
use crate::image::VerityHasher;
use crate::keyring::Keyring;

/// Largest zstd window accepted when decoding an object (2^27 = 128 MiB,
/// zstd's own default limit); the encoder never needs more.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// Read size when streaming objects.
const CHUNK: usize = 1024 * 1024;
/// Decoded packs a verified bundle keeps (one per reading thread of
/// `verify`; an install reads one pack at a time): 16 MiB at most.
const PACKS_HELD: usize = 2;
/// Decoded packs a build host's base bundle keeps: its delta sources are
/// read by every encoding thread, in about the order of its packs.
const BASE_PACKS_HELD: usize = 4;

/// An opened, not yet verified bundle: its header, and the manifest and
/// signature bytes. The manifest is not parsed before its signature was
/// checked ([`Bundle::verify`]), except on request for a build host or
/// `info --no-verify` ([`Bundle::manifest_unverified`]).
pub struct Bundle {
    source: Arc<dyn ReadAt>,
    path: Option<PathBuf>,
    header: Header,
    manifest_bytes: Vec<u8>,
    signature: Vec<u8>,
}

fn read_span(source: &dyn ReadAt, span: Span, region: Region) -> Result<Vec<u8>, BundleError> {
    // The layout check bounded every span by the file size (and the region's
    // limit), so this allocation is never larger than the file.
    let mut buf = vec![0u8; span.len as usize];
    source
        .read_exact_at(&mut buf, span.offset)
        .map_err(|source| BundleError::Read { region, source })?;
    Ok(buf)
}

/// Where the base image of an image stored as a delta (container version 3)
/// is found: the device's store, a build host's `--base`, an extracted base.
pub trait BaseImages {
    /// The image named `digest`, if it is held here. Its bytes need not be
    /// checked: an image decoded against the wrong ones fails the manifest's
    /// digest.
    fn base_image(&self, digest: &Digest) -> Option<Vec<u8>>;
}

/// No base images: an image stored as a delta cannot be read.
pub struct NoBaseImages;

impl BaseImages for NoBaseImages {
    fn base_image(&self, _: &Digest) -> Option<Vec<u8>> {
        None
    }
}

impl BaseImages for Vec<(Digest, Vec<u8>)> {
    fn base_image(&self, digest: &Digest) -> Option<Vec<u8>> {
        self.iter()
            .find(|(d, _)| d == digest)
            .map(|(_, b)| b.clone())
    }
}

/// Several places to find base images in, tried in order.
pub struct ImageChain<'a>(pub Vec<&'a dyn BaseImages>);

impl BaseImages for ImageChain<'_> {
    fn base_image(&self, digest: &Digest) -> Option<Vec<u8>> {
        self.0.iter().find_map(|b| b.base_image(digest))
    }
}

/// The first byte of a version 3 image region: the image follows as one
/// zstd frame.
pub const IMAGE_WHOLE: u8 = 0;
/// The first byte of a version 3 image region: a base image's digest
/// follows, then one zstd frame made against that image as a raw-content
/// prefix (zstd's patch-from).
pub const IMAGE_DELTA: u8 = 1;

/// The base image a version 3 image region is a delta against, if it is.
fn image_region_base(source: &dyn ReadAt, header: &Header) -> Result<Option<Digest>, BundleError> {
    if header.version < format::FORMAT_VERSION_3 || header.image.len < 33 {
        return Ok(None);
    }
    let mut head = [0u8; 33];
    source
        .read_exact_at(&mut head, header.image.offset)
        .map_err(|source| BundleError::Read {
            region: Region::Image,
            source,
        })?;
    Ok((head[0] == IMAGE_DELTA).then(|| Digest(head[1..].try_into().unwrap())))
}

/// The image region's bytes: as they are in container version 1; in version
/// 2 one zstd frame, decoded into at most `size` bytes (the manifest's
/// `image.size`, itself bounded by the image limit), which it must fill; in
/// version 3 a byte first, then such a frame, or a base image's digest (one
/// of the manifest's `bases`, found in `images`) and a frame decoded
/// against that image.
fn read_image_region(
    source: &dyn ReadAt,
    header: &Header,
    size: u64,
    bases: &[crate::bundle::manifest::ManifestBase],
    images: &dyn BaseImages,
) -> Result<Vec<u8>, BundleError> {
    let stored = read_span(source, header.image, Region::Image)?;
    if header.version == format::FORMAT_VERSION_1 {
        return Ok(stored);
    }
    if size > format::MAX_IMAGE_SIZE {
        return Err(BundleError::TooLarge {
            region: Region::Image,
            len: size,
            limit: format::MAX_IMAGE_SIZE,
        });
    }
    let invalid = |detail: String| BundleError::ImageInvalid(detail);
    let mut frame = &stored[..];
    let mut base = None;
    if header.version >= format::FORMAT_VERSION_3 {
        match stored.first() {
            Some(&IMAGE_WHOLE) => frame = &stored[1..],
            Some(&IMAGE_DELTA) if stored.len() > 33 => {
                let digest = Digest(stored[1..33].try_into().unwrap());
                if !bases.iter().any(|b| b.image == digest) {
                    return Err(invalid(format!(
                        "the image is a delta against image {digest}, which the manifest does not name as a base"
                    )));
                }
                let bytes = images
                    .base_image(&digest)
                    .ok_or(BundleError::ImageBaseMissing { base: digest })?;
                base = Some(bytes);
                frame = &stored[33..];
            }
            other => {
                return Err(invalid(format!(
                    "the image region starts with {other:?}, neither a whole image nor a delta"
                )));
            }
        }
    }
    let mut image = Vec::new();
    image
        .try_reserve_exact(size as usize)
        .map_err(|e| invalid(format!("cannot hold the {size}-byte image: {e}")))?;
    let mut dctx = zstd::zstd_safe::DCtx::create();
    if let Some(base) = &base {
        dctx.ref_prefix(&base[..])
            .map_err(|c| invalid(zstd::zstd_safe::get_error_name(c).to_owned()))?;
    }
    dctx.decompress(&mut image, frame).map_err(|c| {
        invalid(format!(
            "cannot decode the image region: {}",
            zstd::zstd_safe::get_error_name(c)
        ))
    })?;
    if image.len() as u64 != size {
        return Err(invalid(format!(
            "the image region decodes to {} bytes, the manifest says {size}",
            image.len()
        )));
    }
    Ok(image)
}

impl Bundle {
    /// Opens the bundle at `path`, reading the header, manifest and signature.
    pub fn open(path: &Path) -> Result<Bundle, BundleError> {
        let file = File::open(path).map_err(|source| BundleError::Open {
            path: path.to_owned(),
            source,
        })?;
        let mut b = Self::from_file(file)?;
        b.path = Some(path.to_owned());
        Ok(b)
    }

    /// Opens a bundle from an already-open file (an install by file descriptor);
    /// the file is never reopened by name.
    pub fn from_file(file: File) -> Result<Bundle, BundleError> {
        let source = FileSource::new(file).map_err(|source| BundleError::Read {
            region: Region::Header,
            source,
        })?;
        Self::from_source(Arc::new(source))
    }

    /// Opens the bundle at an `http://` or `https://` URL, with `[streaming]`'s
    /// settings: only the head is fetched now, and later only what is read.
    pub fn open_url(
        url: &str,
        streaming: &crate::config::StreamingSection,
    ) -> Result<Bundle, BundleError> {
        let source =
            crate::net::HttpSource::open(url, streaming).map_err(|e| BundleError::Read {
                region: Region::Header,
                source: e.into(),
            })?;
        Self::from_source(Arc::new(source))
    }

    /// Where the bundle comes from, for messages: its path or URL.
    pub fn describe(&self) -> String {
        super::describe(&self.path, &*self.source)
    }

    /// Opens a bundle from any random-access source.
    pub fn from_source(source: Arc<dyn ReadAt>) -> Result<Bundle, BundleError> {
        let size = source.size();
        let mut head = [0u8; HEADER_SIZE];
        let n = (size.min(HEADER_SIZE as u64)) as usize;
        source
            .read_exact_at(&mut head[..n], 0)
            .map_err(|source| BundleError::Read {
                region: Region::Header,
                source,
            })?;
        let header = Header::parse(&head[..n], size).map_err(BundleError::from_layout)?;
        let manifest_bytes = read_span(&*source, header.manifest, Region::Manifest)?;
        let signature = read_span(&*source, header.signature, Region::Signature)?;
        Ok(Bundle {
            source,
            path: None,
            header,
            manifest_bytes,
            signature,
        })
    }

    /// The manifest parsed without checking its signature (for
    /// `info --no-verify` and a build host's own `--base` bundles). Nothing
    /// on a device may act on it.
    pub fn manifest_unverified(&self) -> Result<Manifest, BundleError> {
        Manifest::parse(&self.manifest_bytes).map_err(BundleError::Manifest)
    }

    /// Where each region lies.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The path it was opened from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The image, checked only against the digest in the not yet verified
    /// manifest. For the build host (a `--base` bundle is the builder's own
    /// earlier output); devices use [`VerifiedBundle::read_image`].
    pub fn read_image_unverified(&self) -> Result<Vec<u8>, BundleError> {
        self.read_image_unverified_with(&NoBaseImages)
    }

    /// [`Bundle::read_image_unverified`], an image stored as a delta decoded
    /// against a base image from `images`.
    pub fn read_image_unverified_with(
        &self,
        images: &dyn BaseImages,
    ) -> Result<Vec<u8>, BundleError> {
        let m = self.manifest_unverified()?;
        let expected = m.image.digest;
        let image = read_image_region(&*self.source, &self.header, m.image.size, &m.bases, images)?;
        let actual = crate::image::digest_bytes(&image);
        if actual != expected {
            return Err(BundleError::ImageDigestMismatch { expected, actual });
        }
        Ok(image)
    }

    /// Checks the signature over the manifest bytes against `keyring`, then
    /// parses the manifest, then checks the object index and the image size
    /// against it. The index is read only at the length the signed object
    /// count gives, and hashed as it streams.
    pub fn verify(self, keyring: &Keyring) -> Result<VerifiedBundle, BundleError> {
        let signer = crate::cms::verify(&self.manifest_bytes, &self.signature, keyring)
            .map_err(BundleError::from_cms)?;
        log::info!(
            "{}: signature by {} verified",
            super::describe(&self.path, &*self.source),
            signer.subject
        );
        let manifest = Manifest::parse(&self.manifest_bytes).map_err(BundleError::Manifest)?;
        let format::Index {
            entries: index,
            dictionary,
        } = self.read_index(&manifest)?;
        let dictionary = if dictionary.is_empty() {
            None
        } else {
            Some(
                zstd::dict::DecoderDictionary::try_copy(&dictionary).map_err(|e| {
                    BundleError::IndexInvalid(format!("the compression dictionary: {e}"))
                })?,
            )
        };
        let m = &manifest;
        let count = index.len() as u64;
        let size: u64 = index.iter().map(|e| e.size).sum();
        let stored = format::stored_total(&index);
        let checks = [
            ("objects.count", m.objects.count, count),
            ("objects.size", m.objects.size, size),
            ("objects.stored-size", m.objects.stored_size, stored),
            (
                "image.size",
                m.image.size,
                if self.header.version == format::FORMAT_VERSION_1 {
                    self.header.image.len
                } else {
                    // Compressed: the decoded length is checked as it is read.
                    m.image.size.min(format::MAX_IMAGE_SIZE)
                },
            ),
        ];
        for (what, expected, actual) in checks {
            if expected != actual {
                return Err(BundleError::IndexInvalid(format!(
                    "manifest {what} is {expected} but the bundle has {actual}"
                )));
            }
        }
        // Each raw image must be an object of the checked index, of its size.
        for r in &m.raw {
            let found = index
                .binary_search_by(|e| e.digest.cmp(&r.digest))
                .ok()
                .map(|i| index[i].size);
            if found != Some(r.size) {
                return Err(BundleError::IndexInvalid(format!(
                    "raw image {:?} ({} bytes, {}) is {}",
                    r.class,
                    r.size,
                    r.digest,
                    match found {
                        None => "not in the object index".to_owned(),
                        Some(n) => format!("{n} bytes in the object index"),
                    }
                )));
            }
        }
        Ok(VerifiedBundle {
            packs: PackCache::new(self.source.clone(), PACKS_HELD),
            bundle: self,
            manifest,
            signer,
            index,
            dictionary,
        })
    }

    /// Reads the object index of a bundle whose manifest was verified: its
    /// length must be what the signed `objects.count` needs (checked before
    /// anything is read), and its SHA-256, computed as it streams in chunks,
    /// must be the signed `index-sha256`. Entries are parsed as they arrive;
    /// a hash mismatch is reported before any structural problem.
    fn read_index(&self, m: &Manifest) -> Result<format::Index, BundleError> {
        let span = self.header.index;
        let version = self.header.version;
        if m.objects.count > format::MAX_OBJECTS {
            return Err(BundleError::IndexInvalid(format!(
                "the signed manifest says objects.count = {}, more than the limit of {}",
                m.objects.count,
                format::MAX_OBJECTS
            )));
        }
        let read = |buf: &mut [u8], at: u64| {
            self.source
                .read_exact_at(buf, span.offset + at)
                .map_err(|source| BundleError::Read {
                    region: Region::Index,
                    source,
                })
        };
        let damaged = |expected: u64| {
            BundleError::IndexInvalid(format!(
                "the object index region is {} bytes, but the {} objects the signed manifest \
                 counts need {expected}; the bundle is damaged",
                span.len, m.objects.count
            ))
        };
        let head_len = format::index_header_size(version);
        // The smallest index the signed count allows, checked before reading.
        let least = head_len as u64 + m.objects.count * INDEX_ENTRY_SIZE as u64;
        if span.len < least || (version == format::FORMAT_VERSION_1 && span.len != least) {
            return Err(damaged(least));
        }
        let mut hasher = Sha256::new();
        let mut head = vec![0u8; head_len];
        read(&mut head, 0)?;
        hasher.update(&head);
        let mut parser = format::IndexParser::new(version, &head, self.header.objects);
        // The source table and dictionary lengths come from the (not yet
        // hashed) index header, each bounded there (sources by the entry
        // count, the dictionary by its limit); a mismatch with the region is
        // reported once the hash was checked.
        let (sources_len, dictionary_len) = match &parser {
            Ok(p) if p.count() == m.objects.count && p.region_len() == span.len => (
                p.source_count() * SOURCE_ENTRY_SIZE as u64,
                p.dictionary_len(),
            ),
            _ => (0, span.len - least),
        };
        if dictionary_len > format::MAX_DICTIONARY_SIZE {
            return Err(damaged(least));
        }
        const ENTRIES_PER_READ: usize = 16 * 1024;
        let mut buf = vec![0u8; INDEX_ENTRY_SIZE * ENTRIES_PER_READ.min(m.objects.count as usize)];
        let mut at = head_len as u64;
        while at < least {
            let n = ((least - at) as usize).min(buf.len());
            read(&mut buf[..n], at)?;
            hasher.update(&buf[..n]);
            if let Ok(p) = parser.as_mut() {
                for raw in buf[..n].chunks_exact(INDEX_ENTRY_SIZE) {
                    if let Err(e) = p.push(raw.try_into().expect("chunks are entry-sized")) {
                        parser = Err(e);
                        break;
                    }
                }
            }
            at += n as u64;
        }
        let mut sources = vec![0u8; sources_len as usize];
        read(&mut sources, at)?;
        hasher.update(&sources);
        at += sources_len;
        let mut dictionary = vec![0u8; (span.len - at) as usize];
        read(&mut dictionary, at)?;
        hasher.update(&dictionary);
        let actual = hex::encode(hasher.finalize());
        if !actual.eq_ignore_ascii_case(&m.objects.index_sha256) {
            return Err(BundleError::IndexDigestMismatch {
                expected: m.objects.index_sha256.clone(),
                actual,
            });
        }
        let parser = parser.map_err(|e| BundleError::IndexInvalid(e.to_string()))?;
        if parser.count() != m.objects.count || parser.region_len() != span.len {
            return Err(damaged(parser.region_len()));
        }
        parser
            .finish(&sources, dictionary)
            .map_err(|e| BundleError::IndexInvalid(e.to_string()))
    }
}

/// A bundle whose signature and index were checked. Only [`Bundle::verify`] makes one.
pub struct VerifiedBundle {
    bundle: Bundle,
    manifest: Manifest,
    signer: SignerInfo,
    index: Vec<IndexEntry>,
    /// The compression dictionary of version 2 bundles that carry one.
    dictionary: Option<zstd::dict::DecoderDictionary<'static>>,
    packs: PackCache,
}

impl VerifiedBundle {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// The manifest bytes exactly as signed.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.bundle.manifest_bytes
    }
    /// The CMS signature (DER).
    pub fn signature_bytes(&self) -> &[u8] {
        &self.bundle.signature
    }
    /// SHA-256 of the manifest bytes, hex.
    pub fn manifest_hash(&self) -> String {
        hex::encode(Sha256::digest(&self.bundle.manifest_bytes))
    }
    pub fn signer(&self) -> &SignerInfo {
        &self.signer
    }
    /// The objects this bundle carries, sorted by digest.
    pub fn index(&self) -> &[IndexEntry] {
        &self.index
    }
    /// The index entry for `digest`, if the bundle carries that object.
    pub fn entry(&self, digest: &Digest) -> Option<&IndexEntry> {
        self.index
            .binary_search_by(|e| e.digest.cmp(digest))
            .ok()
            .map(|i| &self.index[i])
    }
    /// The path the bundle was opened from, if it was opened by path.
    pub fn bundle_path(&self) -> Option<&Path> {
        self.bundle.path()
    }
    /// Where each region lies.
    pub fn header(&self) -> &Header {
        &self.bundle.header
    }
    /// The underlying byte source.
    pub fn source(&self) -> &Arc<dyn ReadAt> {
        &self.bundle.source
    }

    /// Reads the composefs image and checks it against the manifest's
    /// digest. An image stored as a delta against a base image fails with
    /// [`BundleError::ImageBaseMissing`]: see [`VerifiedBundle::read_image_with`].
    pub fn read_image(&self) -> Result<Vec<u8>, BundleError> {
        self.read_image_with(&NoBaseImages)
    }

    /// The base image the image is stored as a delta against, if it is.
    pub fn image_base(&self) -> Result<Option<Digest>, BundleError> {
        image_region_base(&*self.bundle.source, &self.bundle.header)
    }

    /// Reads the composefs image, decoding an image stored as a delta
    /// against its base image from `images`, and checks it against the
    /// manifest's digest.
    pub fn read_image_with(&self, images: &dyn BaseImages) -> Result<Vec<u8>, BundleError> {
        let image = read_image_region(
            &*self.bundle.source,
            &self.bundle.header,
            self.manifest().image.size,
            &self.manifest().bases,
            images,
        )?;
        let actual = crate::image::digest_bytes(&image);
        let expected = self.manifest().image.digest;
        if actual != expected {
            return Err(BundleError::ImageDigestMismatch { expected, actual });
        }
        Ok(image)
    }

    /// The compression dictionary's size (0 without one).
    pub fn has_dictionary(&self) -> bool {
        self.dictionary.is_some()
    }

    /// The sources the delta entries need that `sources` does not hold, in
    /// index order: (object, source).
    pub fn missing_sources(
        &self,
        entries: &[IndexEntry],
        sources: &dyn Sources,
    ) -> Result<Vec<(Digest, Digest)>, BundleError> {
        let mut missing = Vec::new();
        for e in entries {
            let Some(src) = e.source else { continue };
            let held = sources
                .open(&src)
                .map_err(|err| BundleError::DeltaSourceUnreadable {
                    digest: e.digest,
                    source_digest: src,
                    detail: err.to_string(),
                })?;
            if held.is_none() {
                missing.push((e.digest, src));
            }
        }
        Ok(missing)
    }

    /// Decodes one object into `out` (see [`VerifiedBundle::copy_object_with`]);
    /// a delta entry fails, since no source is given.
    pub fn copy_object(&self, entry: &IndexEntry, out: &mut dyn Write) -> Result<(), BundleError> {
        self.copy_object_with(entry, &NoSources, out)
    }

    /// Decodes one object into `out`, computing its fs-verity digest as it
    /// streams; fails (after writing) if the digest does not match the entry.
    /// A delta is decoded against its source object from `sources`. Callers
    /// must not make the written bytes visible before this returns Ok.
    pub fn copy_object_with(
        &self,
        entry: &IndexEntry,
        sources: &dyn Sources,
        out: &mut dyn Write,
    ) -> Result<(), BundleError> {
        self.copy_object_from(entry, &*self.bundle.source, entry.offset, sources, out)
    }

    /// Like [`Self::copy_object_with`], with the entry's stored bytes read
    /// from `source` at `at` instead of from the bundle: a copy of them
    /// received earlier (an object a remote install spooled to disk). They
    /// are checked exactly as bytes read from the bundle are.
    pub fn copy_object_from(
        &self,
        entry: &IndexEntry,
        source: &dyn ReadAt,
        at: u64,
        sources: &dyn Sources,
        out: &mut dyn Write,
    ) -> Result<(), BundleError> {
        // Only entries of this bundle's checked index are read.
        let entry = match self.entry(&entry.digest) {
            Some(e) if e == entry => e,
            _ => return Err(BundleError::NotInIndex(entry.digest)),
        };
        decode_object(
            source,
            at,
            entry,
            self.dictionary.as_ref(),
            Some(&self.packs),
            sources,
            out,
        )
    }
}

/// Decodes one entry of a checked index whose stored bytes are at `at` in
/// `source` (see [`VerifiedBundle::copy_object_from`]).
#[allow(clippy::too_many_arguments)]
fn decode_object(
    source: &dyn ReadAt,
    at: u64,
    entry: &IndexEntry,
    dictionary: Option<&zstd::dict::DecoderDictionary<'static>>,
    packs: Option<&PackCache>,
    sources: &dyn Sources,
    out: &mut dyn Write,
) -> Result<(), BundleError> {
    {
        let digest = entry.digest;
        let mut hasher = VerityHasher::new();
        let mut emit = |buf: &[u8]| -> Result<(), BundleError> {
            if hasher.len() + buf.len() as u64 > entry.size {
                return Err(BundleError::ObjectSizeMismatch {
                    digest,
                    expected: entry.size,
                    actual: hasher.len() + buf.len() as u64,
                });
            }
            hasher.update(buf);
            out.write_all(buf)
                .map_err(|source| BundleError::Output { digest, source })
        };
        let decode_err = |e: std::io::Error| BundleError::ObjectDecode {
            digest,
            detail: e.to_string(),
        };
        match entry.encoding {
            Encoding::Raw => {
                let mut buf = vec![0u8; CHUNK.min(entry.size.max(1) as usize).max(4096)];
                let start = at;
                let mut at = 0u64;
                while at < entry.stored_size {
                    let n = (entry.stored_size - at).min(buf.len() as u64) as usize;
                    source
                        .read_exact_at(&mut buf[..n], start + at)
                        .map_err(|source| BundleError::Read {
                            region: Region::Object(digest),
                            source,
                        })?;
                    emit(&buf[..n])?;
                    at += n as u64;
                }
            }
            Encoding::Zstd | Encoding::ZstdDict => {
                let reader = std::io::BufReader::with_capacity(
                    (entry.stored_size as usize).clamp(4096, 128 * 1024),
                    RangeReader::new(source, at, entry.stored_size),
                );
                let dec = match (entry.encoding, dictionary) {
                    (Encoding::Zstd, _) => zstd::stream::read::Decoder::with_buffer(reader),
                    (_, Some(dict)) => {
                        zstd::stream::read::Decoder::with_prepared_dictionary(reader, dict)
                    }
                    // The index parser refuses such an entry.
                    (_, None) => return Err(BundleError::NotInIndex(digest)),
                };
                let mut dec = dec.map_err(decode_err)?.single_frame();
                dec.window_log_max(ZSTD_WINDOW_LOG_MAX)
                    .map_err(decode_err)?;
                let mut buf = vec![0u8; CHUNK.min(entry.size.max(1) as usize).max(4096)];
                loop {
                    let n = match dec.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(decode_err(e)),
                    };
                    emit(&buf[..n])?;
                }
            }
            Encoding::Packed => {
                let pack = match packs {
                    Some(cache) => cache.get(source, at, entry)?,
                    None => Arc::new(decode_pack(source, at, entry)?),
                };
                let member = usize::try_from(entry.packed_at)
                    .ok()
                    .zip(usize::try_from(entry.size).ok())
                    .and_then(|(start, len)| pack.get(start..start.checked_add(len)?))
                    .ok_or_else(|| BundleError::ObjectDecode {
                        digest,
                        detail: format!(
                            "the object is {} bytes at {} of its pack, which decodes to {} bytes",
                            entry.size,
                            entry.packed_at,
                            pack.len()
                        ),
                    })?;
                for chunk in member.chunks(CHUNK) {
                    emit(chunk)?;
                }
            }
            Encoding::Delta => {
                let source_digest = entry.source.ok_or(BundleError::NotInIndex(digest))?;
                let unreadable = |e: std::io::Error| BundleError::DeltaSourceUnreadable {
                    digest,
                    source_digest,
                    detail: e.to_string(),
                };
                let held = sources.open(&source_digest).map_err(unreadable)?.ok_or(
                    BundleError::DeltaSourceMissing {
                        digest,
                        source_digest,
                    },
                )?;
                let mut reader = std::io::BufReader::with_capacity(
                    (entry.stored_size as usize).clamp(4096, CHUNK),
                    RangeReader::new(source, at, entry.stored_size),
                );
                super::delta::decode(
                    &digest,
                    &source_digest,
                    &mut reader,
                    entry.stored_size,
                    entry.size,
                    &*held,
                    &mut emit,
                )?;
            }
        }
        if hasher.len() != entry.size {
            return Err(BundleError::ObjectSizeMismatch {
                digest,
                expected: entry.size,
                actual: hasher.len(),
            });
        }
        let actual = hasher.finish();
        if actual != digest {
            return Err(match entry.source {
                Some(source_digest) => BundleError::DeltaResultMismatch {
                    digest,
                    source_digest,
                    actual,
                },
                None => BundleError::ObjectDigestMismatch { digest, actual },
            });
        }
        Ok(())
    }
}

/// Decodes the pack whose stored bytes (one zstd frame, checked by the index
/// parser to be at most [`format::MAX_PACK_FRAME`]) are at `at` in
/// `source`: into a buffer of the frame's stated content size, at most
/// [`format::MAX_PACK_SIZE`], which the frame must fill exactly.
fn decode_pack(source: &dyn ReadAt, at: u64, entry: &IndexEntry) -> Result<Vec<u8>, BundleError> {
    use zstd::zstd_safe;
    let digest = entry.digest;
    let corrupt = |detail: String| BundleError::ObjectDecode {
        digest,
        detail: format!("its pack at {at}: {detail}"),
    };
    // The index parser refuses such an entry; bounded here again because
    // the frame is read into memory whole.
    if entry.stored_size > format::MAX_PACK_FRAME {
        return Err(corrupt(format!(
            "{} stored bytes, more than the limit of {}",
            entry.stored_size,
            format::MAX_PACK_FRAME
        )));
    }
    let mut frame = vec![0u8; entry.stored_size as usize];
    source
        .read_exact_at(&mut frame, at)
        .map_err(|source| BundleError::Read {
            region: Region::Object(digest),
            source,
        })?;
    let one_frame = zstd_safe::find_frame_compressed_size(&frame)
        .map_err(|c| corrupt(zstd_safe::get_error_name(c).to_owned()))?;
    if one_frame != frame.len() {
        return Err(corrupt(format!(
            "{} stored bytes, of which the first frame is {one_frame}",
            frame.len()
        )));
    }
    let size = zstd_safe::get_frame_content_size(&frame)
        .ok()
        .flatten()
        .filter(|&n| n <= format::MAX_PACK_SIZE)
        .ok_or_else(|| {
            corrupt(format!(
                "the frame states no size of at most {} bytes",
                format::MAX_PACK_SIZE
            ))
        })?;
    let mut pack = Vec::with_capacity(size as usize);
    let n = zstd_safe::DCtx::create()
        .decompress(&mut pack, &frame)
        .map_err(|c| corrupt(zstd_safe::get_error_name(c).to_owned()))?;
    if n as u64 != size {
        return Err(corrupt(format!(
            "the frame decodes to {n} bytes and says {size}"
        )));
    }
    Ok(pack)
}

/// The packs decoded last, for the members that follow: installs, verify and
/// extract read the members of a pack one after another (in the order of
/// their stored bytes), a builder's delta sources mostly so. At most
/// `capacity` packs of [`format::MAX_PACK_SIZE`] bytes are held. Only bytes
/// read from the bundle's own source are cached (keyed by their offset).
pub(crate) struct PackCache {
    source: Arc<dyn ReadAt>,
    capacity: usize,
    packs: Mutex<VecDeque<(u64, Arc<Vec<u8>>)>>,
}

impl PackCache {
    pub(crate) fn new(source: Arc<dyn ReadAt>, capacity: usize) -> Self {
        Self {
            source,
            capacity,
            packs: Mutex::new(VecDeque::new()),
        }
    }

    /// The decoded pack of `entry`, whose stored bytes are at `at` in `source`.
    fn get(
        &self,
        source: &dyn ReadAt,
        at: u64,
        entry: &IndexEntry,
    ) -> Result<Arc<Vec<u8>>, BundleError> {
        let ours = std::ptr::addr_eq(source as *const dyn ReadAt, Arc::as_ptr(&self.source));
        if !ours {
            return decode_pack(source, at, entry).map(Arc::new);
        }
        // Held while decoding: a second reader of the same pack waits for
        // it instead of decoding it again.
        let mut packs = self.packs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = packs.iter().position(|(o, _)| *o == at) {
            let hit = packs.remove(i).expect("found above");
            let pack = hit.1.clone();
            packs.push_front(hit);
            return Ok(pack);
        }
        let pack = Arc::new(decode_pack(source, at, entry)?);
        packs.push_front((at, pack.clone()));
        packs.truncate(self.capacity);
        Ok(pack)
    }
}

/// A build host's `--base` bundle: its index, image and objects, checked
/// against its own manifest, whose signature is *not* checked (the base is
/// the builder's own earlier output; a device checks the result against its
/// keyring as usual). Nothing on a device uses this.
pub struct BaseBundle {
    bundle: Bundle,
    manifest: Manifest,
    index: Vec<IndexEntry>,
    dictionary: Option<zstd::dict::DecoderDictionary<'static>>,
    packs: PackCache,
}

impl Bundle {
    /// Reads the index (checked against the unverified manifest's hash) for
    /// use as a base on the build host.
    pub fn into_base(self) -> Result<BaseBundle, BundleError> {
        let manifest = self.manifest_unverified()?;
        let format::Index {
            entries,
            dictionary,
        } = self.read_index(&manifest)?;
        let dictionary = (!dictionary.is_empty())
            .then(|| zstd::dict::DecoderDictionary::try_copy(&dictionary))
            .transpose()
            .map_err(|e| BundleError::IndexInvalid(format!("the compression dictionary: {e}")))?;
        Ok(BaseBundle {
            packs: PackCache::new(self.source.clone(), BASE_PACKS_HELD),
            bundle: self,
            manifest,
            index: entries,
            dictionary,
        })
    }
}

impl BaseBundle {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// Its object index (checked against the manifest's hash only).
    pub fn index(&self) -> &[IndexEntry] {
        &self.index
    }
    /// The size of its compression dictionary (0: none).
    pub fn dictionary_len(&self) -> u64 {
        self.bundle.header.index.len.saturating_sub(
            format::index_header_size(self.bundle.header.version) as u64
                + self.index.len() as u64 * INDEX_ENTRY_SIZE as u64
                + self
                    .index
                    .iter()
                    .filter_map(|e| e.source)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len() as u64
                    * SOURCE_ENTRY_SIZE as u64,
        )
    }
    /// The container version.
    pub fn container_version(&self) -> u32 {
        self.bundle.header.version
    }
    /// The image region's length, and the base image it is a delta against
    /// if it is stored as one.
    pub fn image_stored(&self) -> Result<(u64, Option<Digest>), BundleError> {
        Ok((
            self.bundle.header.image.len,
            image_region_base(&*self.bundle.source, &self.bundle.header)?,
        ))
    }
    /// The image, checked against the manifest's digest (an image stored
    /// as a delta decoded against a base image from `images`).
    pub fn read_image(&self, images: &dyn BaseImages) -> Result<Vec<u8>, BundleError> {
        self.bundle.read_image_unverified_with(images)
    }
    /// The index entry for `digest`, if the base carries that object.
    pub fn entry(&self, digest: &Digest) -> Option<&IndexEntry> {
        self.index
            .binary_search_by(|e| e.digest.cmp(digest))
            .ok()
            .map(|i| &self.index[i])
    }
    /// Decodes one of its objects, checked against its digest (a delta of
    /// the base decodes against `sources`).
    pub fn copy_object(
        &self,
        entry: &IndexEntry,
        sources: &dyn Sources,
        out: &mut dyn Write,
    ) -> Result<(), BundleError> {
        decode_object(
            &*self.bundle.source,
            entry.offset,
            entry,
            self.dictionary.as_ref(),
            Some(&self.packs),
            sources,
            out,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(frame: &[u8], at: u64, size: u64) -> IndexEntry {
        IndexEntry {
            digest: Digest([7; 32]),
            encoding: Encoding::Packed,
            source: None,
            offset: 0,
            stored_size: frame.len() as u64,
            size,
            packed_at: at,
        }
    }

    fn frame(data: &[u8], content_size: bool) -> Vec<u8> {
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        c.include_contentsize(content_size).unwrap();
        c.compress(data).unwrap()
    }

    fn decode(stored: &[u8], entry: &IndexEntry) -> Result<Vec<u8>, BundleError> {
        decode_pack(&stored.to_vec(), 0, entry)
    }

    #[test]
    fn a_pack_decodes_to_its_stated_size_or_fails() {
        let good = frame(b"first objectsecond object", true);
        assert_eq!(
            decode(&good, &packed(&good, 0, 12)).unwrap(),
            b"first objectsecond object"
        );
        // More than a pack may hold, stated by a frame of a few bytes:
        // refused before the buffer is allocated.
        let zeros = frame(&vec![0u8; format::MAX_PACK_SIZE as usize + 1], true);
        assert!(zeros.len() < 4096);
        let err = decode(&zeros, &packed(&zeros, 0, 1)).unwrap_err();
        assert!(
            err.to_string().contains("states no size of at most"),
            "{err}"
        );
        // A frame that does not state its size.
        let unsized_frame = frame(b"some object", false);
        let err = decode(&unsized_frame, &packed(&unsized_frame, 0, 1)).unwrap_err();
        assert!(err.to_string().contains("states no size"), "{err}");
        // Two frames.
        let mut two = good.clone();
        two.extend_from_slice(&good);
        let err = decode(&two, &packed(&two, 0, 1)).unwrap_err();
        assert!(
            err.to_string().contains("of which the first frame is"),
            "{err}"
        );
        // A damaged frame.
        let mut cut = good.clone();
        cut.truncate(good.len() - 3);
        assert!(decode(&cut, &packed(&cut, 0, 1)).is_err());
    }

    #[test]
    fn a_member_outside_its_pack_is_an_error_not_a_panic() {
        let stored = frame(b"0123456789", true);
        let entry = packed(&stored, 8, 5);
        let err = decode_object(
            &stored.to_vec(),
            0,
            &entry,
            None,
            None,
            &NoSources,
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("which decodes to 10 bytes"),
            "{err}"
        );
    }
}
