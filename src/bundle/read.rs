//! Opening a bundle, checking its signature and index, and reading its
//! image and objects.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::format::{self, HEADER_SIZE, Header, INDEX_ENTRY_SIZE, INDEX_HEADER_SIZE, Span};
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
        let expected = self.manifest_unverified()?.image.digest;
        let image = read_span(&*self.source, self.header.image, Region::Image)?;
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
        let index = self.read_index(&manifest)?;
        let m = &manifest;
        let count = index.len() as u64;
        let size: u64 = index.iter().map(|e| e.size).sum();
        let stored: u64 = index.iter().map(|e| e.stored_size).sum();
        let checks = [
            ("objects.count", m.objects.count, count),
            ("objects.size", m.objects.size, size),
            ("objects.stored-size", m.objects.stored_size, stored),
            ("image.size", m.image.size, self.header.image.len),
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
            bundle: self,
            manifest,
            signer,
            index,
        })
    }

    /// Reads the object index of a bundle whose manifest was verified: its
    /// length must be what the signed `objects.count` needs (checked before
    /// anything is read), and its SHA-256, computed as it streams in chunks,
    /// must be the signed `index-sha256`. Entries are parsed as they arrive;
    /// a hash mismatch is reported before any structural problem.
    fn read_index(&self, m: &Manifest) -> Result<Vec<IndexEntry>, BundleError> {
        let span = self.header.index;
        let expected_len = format::index_len(m.objects.count)
            .filter(|_| m.objects.count <= format::MAX_OBJECTS)
            .ok_or_else(|| {
                BundleError::IndexInvalid(format!(
                    "the signed manifest says objects.count = {}, more than the limit of {}",
                    m.objects.count,
                    format::MAX_OBJECTS
                ))
            })?;
        if span.len != expected_len {
            return Err(BundleError::IndexInvalid(format!(
                "the object index region is {} bytes, but the {} objects the signed manifest \
                 counts need {expected_len}; the bundle is damaged",
                span.len, m.objects.count
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
        let mut hasher = Sha256::new();
        let mut head = [0u8; INDEX_HEADER_SIZE];
        read(&mut head, 0)?;
        hasher.update(head);
        let mut parser = format::IndexParser::new(&head, self.header.objects);
        const ENTRIES_PER_READ: usize = 16 * 1024;
        let mut buf = vec![0u8; INDEX_ENTRY_SIZE * ENTRIES_PER_READ.min(m.objects.count as usize)];
        let mut at = INDEX_HEADER_SIZE as u64;
        while at < span.len {
            let n = ((span.len - at) as usize).min(buf.len());
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
        let actual = hex::encode(hasher.finalize());
        if !actual.eq_ignore_ascii_case(&m.objects.index_sha256) {
            return Err(BundleError::IndexDigestMismatch {
                expected: m.objects.index_sha256.clone(),
                actual,
            });
        }
        parser
            .and_then(format::IndexParser::finish)
            .map_err(|e| BundleError::IndexInvalid(e.to_string()))
    }
}

/// A bundle whose signature and index were checked. Only [`Bundle::verify`] makes one.
pub struct VerifiedBundle {
    bundle: Bundle,
    manifest: Manifest,
    signer: SignerInfo,
    index: Vec<IndexEntry>,
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

    /// Reads the composefs image and checks it against the manifest's digest.
    pub fn read_image(&self) -> Result<Vec<u8>, BundleError> {
        let image = read_span(
            &*self.bundle.source,
            self.bundle.header.image,
            Region::Image,
        )?;
        let actual = crate::image::digest_bytes(&image);
        let expected = self.manifest().image.digest;
        if actual != expected {
            return Err(BundleError::ImageDigestMismatch { expected, actual });
        }
        Ok(image)
    }

    /// Decodes one object into `out`, computing its fs-verity digest as it
    /// streams; fails (after writing) if the digest does not match the entry.
    /// Callers must not make the written bytes visible before this returns Ok.
    pub fn copy_object(&self, entry: &IndexEntry, out: &mut dyn Write) -> Result<(), BundleError> {
        self.copy_object_from(entry, &*self.bundle.source, entry.offset, out)
    }

    /// Like [`Self::copy_object`], with the entry's stored bytes read from
    /// `source` at `at` instead of from the bundle: a copy of them received
    /// earlier (an object a remote install spooled to disk). They are
    /// checked exactly as bytes read from the bundle are.
    pub fn copy_object_from(
        &self,
        entry: &IndexEntry,
        source: &dyn ReadAt,
        at: u64,
        out: &mut dyn Write,
    ) -> Result<(), BundleError> {
        // Only entries of this bundle's checked index are read.
        let entry = match self.entry(&entry.digest) {
            Some(e) if e == entry => e,
            _ => return Err(BundleError::NotInIndex(entry.digest)),
        };
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
        let start = at;
        let mut buf = vec![0u8; CHUNK.min(entry.size.max(1) as usize).max(4096)];
        match entry.encoding {
            Encoding::Raw => {
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
            Encoding::Zstd => {
                let decode_err = |e: std::io::Error| BundleError::ObjectDecode {
                    digest,
                    detail: e.to_string(),
                };
                let reader = RangeReader::new(source, start, entry.stored_size);
                let mut dec = zstd::stream::read::Decoder::new(reader)
                    .map_err(decode_err)?
                    .single_frame();
                dec.window_log_max(ZSTD_WINDOW_LOG_MAX)
                    .map_err(decode_err)?;
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
            return Err(BundleError::ObjectDigestMismatch { digest, actual });
        }
        Ok(())
    }
}
