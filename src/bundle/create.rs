//! Making a bundle from a root filesystem (directory, tar archive or
//! container image).
//!
//! The scan runs on the calling thread and hands every large file (in a
//! full bundle, every run of small files as one pack) to a pool of workers
//! (one per core) that compute its fs-verity digest and, unless a base or
//! another file already provides it, encode it (a delta, zstd when smaller,
//! a pack as one frame) straight into the bundle's objects region, in the
//! scan's order (`writer`), so the same inputs always give the same
//! payload bytes. Image, index, manifest, signature and header follow.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod base;
mod dictionary;

pub use base::Bases;
mod encode;
mod writer;

use encode::{ReadSeek, Settings};
use writer::{ObjectWriter, PackMember, Record, Stored};

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use sha2::{Digest as _, Sha256};

use super::delta;
use super::format::{self, HEADER_SIZE, Header};
use super::manifest::MAX_RAW_IMAGES;
use super::{Encoding, IndexEntry, Manifest, ManifestImage, ManifestObjects, ManifestRaw};
use crate::Digest;
use crate::image::{
    self, FileData, ImageError, OciTreeBuilder, OciXattrs, SourceTree, TreeStats, VerityHasher,
};
use crate::oci::{self, ImageRef, OciError, OciImage};

/// The environment variable a key passphrase is read from by the CLI.
pub const PASSPHRASE_ENV: &str = "DIDYMOS_KEY_PASSPHRASE";
/// Default zstd level: fast enough to keep up with hashing on two cores.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Highest zstd level accepted (its window fits the reader's limit).
pub const MAX_ZSTD_LEVEL: i32 = 19;
/// zstd level of the image region (a few MB of metadata: level 9 takes a
/// tenth of a second and is within 6 % of level 19).
const IMAGE_ZSTD_LEVEL: i32 = 9;

/// The image region's bytes. The image is metadata: alone it compresses
/// about threefold. In version 3 (a bundle with bases) it is also tried as a
/// delta against the first base's image (zstd patch-from at the delta
/// level), which a device holds as the installed slot's image, and the
/// smaller is kept.
fn store_image(image: &[u8], version: u32, bases: &Bases, level: i32) -> io::Result<Vec<u8>> {
    use crate::bundle::read::{IMAGE_DELTA, IMAGE_WHOLE};
    let whole = zstd::bulk::compress(image, IMAGE_ZSTD_LEVEL)?;
    if version < format::FORMAT_VERSION_3 {
        return Ok(whole);
    }
    let mut best = vec![IMAGE_WHOLE];
    best.extend_from_slice(&whole);
    if let Some((digest, base)) = bases.images.first() {
        let mut frame = Vec::new();
        delta::patch_from_frame(
            base,
            image,
            delta::EncodeOptions {
                level: level.max(IMAGE_ZSTD_LEVEL),
                long_distance: false,
                executables: false,
            },
            &mut frame,
        )?;
        if 33 + frame.len() < best.len() {
            best = vec![IMAGE_DELTA];
            best.extend_from_slice(&digest.0);
            best.extend_from_slice(&frame);
        }
    }
    Ok(best)
}
/// Default zstd level of object deltas (see docs/bundle-format.md for the
/// measurements behind it).
pub const DEFAULT_DELTA_LEVEL: i32 = 15;

/// What a bundle's image is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A directory or a tar archive (plain, gzip or zstd).
    Rootfs(PathBuf),
    /// A container image, and which extended attributes its image keeps.
    Oci { image: ImageRef, xattrs: OciXattrs },
}

/// Everything bundle creation needs.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub input: Input,
    pub output: PathBuf,
    /// Signing certificate and its private key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Passphrase of an encrypted key.
    pub key_passphrase: Option<String>,
    /// Intermediate certificates to embed (PEM files, each may hold several).
    pub intermediates: Vec<PathBuf>,
    pub compatible: String,
    /// The bundle's version; empty takes a container image's
    /// `org.opencontainers.image.version` label.
    pub version: String,
    /// The anti-rollback security version (0: none).
    pub security_version: u64,
    /// Empty takes a container image's `org.opencontainers.image.description` label.
    pub description: String,
    /// Empty takes a container image's `org.opencontainers.image.revision` label.
    pub build: String,
    /// Bundles or composefs images whose objects this (delta) bundle leaves out.
    pub bases: Vec<PathBuf>,
    /// Raw images for `raw` slots: (slot class, file). Always carried whole,
    /// also in delta bundles.
    pub raw: Vec<(String, PathBuf)>,
    /// Creation time (seconds since the epoch); `None` means now. The CLI
    /// fills it from `SOURCE_DATE_EPOCH`.
    pub created: Option<u64>,
    pub zstd_level: i32,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    /// Binary deltas of changed files against the bases' objects (needs a
    /// base with objects: a bundle or an extracted image).
    pub object_deltas: bool,
    /// zstd level of the deltas.
    pub delta_level: i32,
    /// A compression dictionary for small objects (full bundles without
    /// packs).
    pub dictionary: bool,
    /// Small objects compressed together in packs (full bundles; container
    /// version 4). Off: each object alone (version 2, readable by older
    /// devices), with the dictionary unless that is off too.
    pub packs: bool,
    /// Earlier releases (bundles, images with objects, directories, as
    /// `bases`) the packs are laid out against: objects they have and
    /// objects they lack never share a pack, so a device running one of
    /// them fetches over HTTP the packs of what it lacks and no others. The
    /// bundle still carries every object.
    pub previous: Vec<PathBuf>,
}

impl CreateOptions {
    /// Options with the defaults for everything optional.
    pub fn new(
        rootfs: impl Into<PathBuf>,
        output: impl Into<PathBuf>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        compatible: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        Self {
            input: Input::Rootfs(rootfs.into()),
            output: output.into(),
            cert: cert.into(),
            key: key.into(),
            key_passphrase: None,
            intermediates: Vec::new(),
            compatible: compatible.into(),
            version: version.into(),
            security_version: 0,
            description: String::new(),
            build: String::new(),
            bases: Vec::new(),
            raw: Vec::new(),
            created: None,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            threads: 0,
            object_deltas: true,
            delta_level: DEFAULT_DELTA_LEVEL,
            dictionary: true,
            packs: true,
            previous: Vec::new(),
        }
    }
}

/// What creation produced.
#[derive(Debug, Clone)]
pub struct CreateSummary {
    pub output: PathBuf,
    pub manifest: Manifest,
    pub tree: TreeStats,
    /// Objects referenced by the image that a base already provides.
    pub objects_in_base: u64,
    /// The container image read, with its config digest and layer count.
    pub image_source: Option<String>,
    pub file_size: u64,
    pub elapsed: Duration,
    /// The objects stored as deltas.
    pub deltas: DeltaStats,
    /// The dictionary's size (0: none) and how many objects use it.
    pub dictionary: u64,
    pub dictionary_objects: u64,
    /// Packs, and the objects in them.
    pub packs: u64,
    pub packed_objects: u64,
}

/// How many objects are deltas, their decoded and stored sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaStats {
    pub count: u64,
    pub size: u64,
    pub stored: u64,
}

impl DeltaStats {
    pub fn of(index: &[IndexEntry]) -> Self {
        index.iter().filter(|e| e.encoding == Encoding::Delta).fold(
            DeltaStats::default(),
            |s, e| DeltaStats {
                count: s.count + 1,
                size: s.size + e.size,
                stored: s.stored + e.stored_size,
            },
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("root filesystem {0} does not exist")]
    MissingRootfs(PathBuf),
    #[error("cannot read the root filesystem: {0}")]
    Rootfs(#[from] ImageError),
    #[error("cannot read the container image: {0}")]
    Oci(#[from] OciError),
    #[error("{reference}: {source}")]
    OciLayers {
        reference: String,
        source: ImageError,
    },
    #[error("output directory {0} does not exist; create it first")]
    MissingOutputDir(PathBuf),
    #[error("cannot write {path}: {source}")]
    Output { path: PathBuf, source: io::Error },
    #[error("cannot read {what} {path}: {source}")]
    ReadInput {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} {path} is not valid PEM: {detail}")]
    BadPem {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error(
        "private key {0} is encrypted; put its passphrase in the environment variable {PASSPHRASE_ENV}"
    )]
    KeyNeedsPassphrase(PathBuf),
    #[error("cannot decrypt private key {0}: wrong passphrase (from {PASSPHRASE_ENV})")]
    WrongPassphrase(PathBuf),
    #[error(
        "private key {key} does not belong to certificate {cert}; pass the key that was certified"
    )]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("cannot sign the manifest: {0}")]
    Sign(String),
    #[error("base {path}: {detail}")]
    Base { path: PathBuf, detail: String },
    #[error("{0}")]
    Invalid(String),
}

/// The signing material, loaded and checked before any work is done.
pub struct Signer {
    pub cert: X509,
    pub key: PKey<Private>,
    pub chain: Vec<X509>,
}

impl Signer {
    pub fn load(
        cert: &Path,
        key: &Path,
        passphrase: Option<&str>,
        intermediates: &[PathBuf],
    ) -> Result<Signer, CreateError> {
        let read = |what: &'static str, path: &Path| {
            crate::util::read_bounded(path, 1024 * 1024).map_err(|e| CreateError::ReadInput {
                what,
                path: path.to_owned(),
                source: match e {
                    crate::util::BoundedReadError::Io(e) => e,
                    other => io::Error::other(other.to_string()),
                },
            })
        };
        let cert_pem = read("certificate", cert)?;
        let x509 = X509::from_pem(&cert_pem).map_err(|e| CreateError::BadPem {
            what: "certificate",
            path: cert.to_owned(),
            detail: e.to_string(),
        })?;
        let key_pem = read("private key", key)?;
        let encrypted = String::from_utf8_lossy(&key_pem).contains("ENCRYPTED");
        let pkey = match (encrypted, passphrase) {
            (true, None) => return Err(CreateError::KeyNeedsPassphrase(key.to_owned())),
            (true, Some(p)) => PKey::private_key_from_pem_passphrase(&key_pem, p.as_bytes())
                .map_err(|_| CreateError::WrongPassphrase(key.to_owned()))?,
            (false, _) => {
                PKey::private_key_from_pem_callback(&key_pem, |_| Ok(0)).map_err(|e| {
                    CreateError::BadPem {
                        what: "private key",
                        path: key.to_owned(),
                        detail: e.to_string(),
                    }
                })?
            }
        };
        let matches = x509
            .public_key()
            .map(|pk| pk.public_eq(&pkey))
            .unwrap_or(false);
        if !matches {
            return Err(CreateError::KeyMismatch {
                key: key.to_owned(),
                cert: cert.to_owned(),
            });
        }
        let mut chain = Vec::new();
        for p in intermediates {
            let pem = read("intermediate certificate", p)?;
            let certs = X509::stack_from_pem(&pem).map_err(|e| CreateError::BadPem {
                what: "intermediate certificate",
                path: p.clone(),
                detail: e.to_string(),
            })?;
            if certs.is_empty() {
                return Err(CreateError::BadPem {
                    what: "intermediate certificate",
                    path: p.clone(),
                    detail: "no certificate in the file".into(),
                });
            }
            chain.extend(certs);
        }
        Ok(Signer {
            cert: x509,
            key: pkey,
            chain,
        })
    }

    pub fn sign(&self, manifest: &[u8]) -> Result<Vec<u8>, CreateError> {
        crate::cms::sign(manifest, &self.cert, &self.key, &self.chain)
            .map_err(|e| CreateError::Sign(e.to_string()))
    }
}

/// RFC 3339 (UTC, seconds) for a time in seconds since the epoch.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Creates a signed bundle. On failure nothing is left at the output path.
pub fn create(opts: &CreateOptions) -> Result<CreateSummary, CreateError> {
    let started = Instant::now();
    if opts.compatible.is_empty() {
        return Err(CreateError::Invalid(
            "--compatible must not be empty".into(),
        ));
    }
    if matches!(opts.input, Input::Rootfs(_)) && opts.version.is_empty() {
        return Err(CreateError::Invalid("--version must not be empty".into()));
    }
    if !(1..=MAX_ZSTD_LEVEL).contains(&opts.zstd_level) {
        return Err(CreateError::Invalid(format!(
            "zstd level {} is outside 1..={MAX_ZSTD_LEVEL}",
            opts.zstd_level
        )));
    }
    if let Input::Rootfs(rootfs) = &opts.input
        && std::fs::symlink_metadata(rootfs).is_err()
    {
        return Err(CreateError::MissingRootfs(rootfs.clone()));
    }
    let out_dir = match opts.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if !out_dir.is_dir() {
        return Err(CreateError::MissingOutputDir(out_dir));
    }
    let signer = Signer::load(
        &opts.cert,
        &opts.key,
        opts.key_passphrase.as_deref(),
        &opts.intermediates,
    )?;
    let bases = Bases::load(&opts.bases, &out_dir)?;
    if !opts.previous.is_empty() && (!opts.bases.is_empty() || !opts.packs) {
        return Err(CreateError::Invalid(format!(
            "--previous lays out the packs of a full bundle; {}",
            if opts.packs {
                "a bundle built --base has no packs (it leaves out what its base has)"
            } else {
                "it does nothing with --no-packs"
            }
        )));
    }
    let previous = Bases::load(&opts.previous, &out_dir).map_err(|e| match e {
        CreateError::Base { path, detail } => {
            CreateError::Invalid(format!("--previous {}: {detail}", path.display()))
        }
        other => other,
    })?;
    let source = match &opts.input {
        Input::Rootfs(p) => Source::Rootfs(p),
        Input::Oci { image, xattrs } => Source::Oci(OciImage::open(image, &out_dir)?, *xattrs),
    };
    let meta = Metadata::resolve(opts, &source)?;

    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        opts.threads
    };
    check_raw_options(&opts.raw)?;
    let out_err = |source| CreateError::Output {
        path: opts.output.clone(),
        source,
    };
    // The bundle is written once: the objects as they are encoded, right
    // after room for the header, then image, index, manifest and signature,
    // then the header.
    let mut tmp = tempfile::Builder::new()
        .prefix(".didymos-bundle.")
        .tempfile_in(&out_dir)
        .map_err(out_err)?;
    let file = tmp.as_file_mut();
    let objects_at = HEADER_SIZE as u64;
    let plan = Plan {
        bases: &bases,
        level: opts.zstd_level,
        delta: delta::EncodeOptions {
            level: opts.delta_level,
            long_distance: false,
            executables: true,
        },
        deltas: opts.object_deltas && bases.has_sources(),
        packs: opts.packs && opts.bases.is_empty(),
        previous: &previous.objects,
        dictionary: opts.dictionary && !opts.packs && opts.bases.is_empty(),
        threads,
    };
    let writer = ObjectWriter::new(file, objects_at);
    let (tree, digests, settings) = scan_and_encode(&source, &writer, &plan)?;
    let stats = tree.stats;
    let jobs = tree.job_count();
    let image = tree.into_image(&digests)?;
    let image_digest = image::digest_bytes(&image);
    let referenced = image::referenced_objects(&image)?;
    let raw = add_raw_images(&opts.raw, &writer, &settings)?;
    let (mut records, mut objects_len) = writer.finish(jobs).map_err(out_err)?;
    let mut carried: BTreeSet<Digest> = referenced
        .iter()
        .filter(|d| !bases.objects.contains(d))
        .copied()
        .collect();
    let objects_in_base = (referenced.len() - carried.len()) as u64;
    carried.extend(raw.iter().map(|r| r.digest));
    if records.len() != carried.len() {
        // Objects of files a container image's later layer deleted were
        // written too: move the rest down over them.
        objects_len = compact(file, objects_at, &mut records, &carried).map_err(out_err)?;
    }

    let mut index = Vec::with_capacity(carried.len());
    for d in &carried {
        let r = records.get(d).ok_or_else(|| {
            CreateError::Invalid(format!("internal error: object {d} was never encoded"))
        })?;
        index.push(IndexEntry {
            digest: *d,
            encoding: r.encoding,
            source: r.source,
            offset: objects_at + r.offset,
            stored_size: r.stored_size,
            size: r.size,
            packed_at: r.packed_at,
        });
    }
    let dictionary_bytes = settings
        .dictionary
        .as_ref()
        .filter(|_| index.iter().any(|e| e.encoding == Encoding::ZstdDict))
        .map_or(&[][..], |d| &d.bytes[..]);
    // A bundle built against a base may hold deltas in the bsdiff-style
    // form and its image as a delta: version 3, which older readers refuse
    // before anything is written. A full bundle with packs is version 4;
    // without, version 2.
    let version = if !bases.manifest.is_empty() {
        format::FORMAT_VERSION_3
    } else if plan.packs {
        format::FORMAT_VERSION_4
    } else {
        format::FORMAT_VERSION_2
    };
    let index_bytes = format::index_to_bytes(version, &index, dictionary_bytes, objects_at);
    let created = opts.created.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let mut manifest = Manifest {
        format: 0,
        compatible: opts.compatible.clone(),
        version: meta.version,
        description: meta.description,
        build: meta.build,
        created: rfc3339(created),
        security_version: opts.security_version,
        image: ManifestImage {
            digest: image_digest,
            size: image.len() as u64,
        },
        objects: ManifestObjects {
            count: index.len() as u64,
            size: index.iter().map(|e| e.size).sum(),
            stored_size: objects_len,
            referenced: referenced.len() as u64,
            index_sha256: hex::encode(Sha256::digest(&index_bytes)),
        },
        bases: bases.manifest.clone(),
        raw,
    };
    manifest.format = manifest.needed_format();
    let manifest_text = manifest.to_toml();
    let signature = signer.sign(manifest_text.as_bytes())?;
    let stored_image = store_image(&image, version, &bases, opts.delta_level).map_err(out_err)?;
    let header = Header::laid_out(
        version,
        manifest_text.len() as u64,
        signature.len() as u64,
        index_bytes.len() as u64,
        stored_image.len() as u64,
        objects_len,
    );
    for (region, bytes) in [
        (header.image, &stored_image[..]),
        (header.index, &index_bytes[..]),
        (header.manifest, manifest_text.as_bytes()),
        (header.signature, &signature[..]),
    ] {
        file.write_all_at(bytes, region.offset).map_err(out_err)?;
    }
    file.write_all_at(&header.to_bytes(), 0).map_err(out_err)?;
    file.set_len(header.file_size()).map_err(out_err)?;
    file.sync_all().map_err(out_err)?;
    tmp.persist(&opts.output).map_err(|e| out_err(e.error))?;
    crate::util::fsync_dir(&out_dir).map_err(out_err)?;
    log::info!(
        "{}: {} objects carried, {} in base, image {}",
        opts.output.display(),
        index.len(),
        objects_in_base,
        image_digest
    );
    let (packs, packed_objects, _) = format::pack_stats(&index);
    Ok(CreateSummary {
        output: opts.output.clone(),
        manifest,
        tree: stats,
        objects_in_base,
        image_source: match &source {
            Source::Rootfs(_) => None,
            Source::Oci(img, _) => Some(format!(
                "{} (config {}, {} layers)",
                img.reference,
                img.config_digest,
                img.layers.len()
            )),
        },
        file_size: header.file_size(),
        elapsed: started.elapsed(),
        deltas: DeltaStats::of(&index),
        dictionary: dictionary_bytes.len() as u64,
        dictionary_objects: index
            .iter()
            .filter(|e| e.encoding == Encoding::ZstdDict)
            .count() as u64,
        packs,
        packed_objects,
    })
}

/// A bundle's input, opened.
enum Source<'a> {
    Rootfs(&'a Path),
    Oci(OciImage, OciXattrs),
}

/// The manifest's text fields: the options, or else a container image's labels.
struct Metadata {
    version: String,
    description: String,
    build: String,
}

impl Metadata {
    fn resolve(opts: &CreateOptions, source: &Source<'_>) -> Result<Metadata, CreateError> {
        let label = |key: &str| match source {
            Source::Oci(img, _) => img.label(key).map(str::to_owned),
            Source::Rootfs(_) => None,
        };
        let pick = |given: &str, key: &str| {
            if given.is_empty() {
                label(key).unwrap_or_default()
            } else {
                given.to_owned()
            }
        };
        let version = pick(&opts.version, oci::LABEL_VERSION);
        if version.is_empty() {
            return Err(CreateError::Invalid(format!(
                "no --version given, and the image has no {} label; give --version",
                oci::LABEL_VERSION
            )));
        }
        Ok(Metadata {
            version,
            description: pick(&opts.description, oci::LABEL_DESCRIPTION),
            build: pick(&opts.build, oci::LABEL_REVISION),
        })
    }
}

/// Applies an image's layers in order, each checked against its digests.
fn scan_layers(
    img: &OciImage,
    xattrs: OciXattrs,
    sink: &mut image::Sink<'_>,
) -> Result<SourceTree, CreateError> {
    let wrap = |source: ImageError| CreateError::OciLayers {
        reference: img.reference.clone(),
        source,
    };
    let mut builder = OciTreeBuilder::new();
    for layer in &img.layers {
        let mut reader = layer.open().map_err(|e| wrap(ImageError::Oci(e)))?;
        if let Err(e) = builder.apply_layer(&layer.label(), &mut reader, sink) {
            // A blob that is not what the manifest names explains the failure best.
            return Err(wrap(match reader.check_blob() {
                Some(mismatch) => ImageError::Oci(format!("{mismatch} (reading it: {e})")),
                None => e,
            }));
        }
        reader.finish().map_err(|e| wrap(ImageError::Oci(e)))?;
    }
    builder.finish(xattrs).map_err(wrap)
}

/// Checks `--raw` before any work: valid, distinct slot classes.
fn check_raw_options(raw: &[(String, PathBuf)]) -> Result<(), CreateError> {
    if raw.len() > MAX_RAW_IMAGES {
        return Err(CreateError::Invalid(format!(
            "{} raw images; a bundle carries at most {MAX_RAW_IMAGES}",
            raw.len()
        )));
    }
    let mut seen = HashSet::new();
    for (class, path) in raw {
        if crate::slot::SlotName::new(class, 0).is_err() {
            return Err(CreateError::Invalid(format!(
                "--raw {class}={}: {class:?} is not a slot class (letters, digits, '-' or '_')",
                path.display()
            )));
        }
        if !seen.insert(class) {
            return Err(CreateError::Invalid(format!(
                "--raw {class}= is given twice; a bundle carries one raw image per slot class"
            )));
        }
    }
    Ok(())
}

/// Hashes each raw image (fs-verity digest and plain SHA-256) and appends
/// it as an object unless an identical object is written already.
fn add_raw_images(
    raw: &[(String, PathBuf)],
    writer: &ObjectWriter<'_>,
    settings: &Settings,
) -> Result<Vec<ManifestRaw>, CreateError> {
    let mut out = Vec::with_capacity(raw.len());
    for (class, path) in raw {
        let read_err = |source| CreateError::ReadInput {
            what: "raw image",
            path: path.clone(),
            source,
        };
        let mut file = File::open(path).map_err(read_err)?;
        let mut verity = VerityHasher::new();
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            verity.update(&buf[..n]);
            sha.update(&buf[..n]);
        }
        let size = verity.len();
        if size == 0 {
            return Err(CreateError::Invalid(format!(
                "raw image {} for class {class:?} is empty",
                path.display()
            )));
        }
        let digest = verity.finish();
        // Encoded into a temporary file (a raw image can be large), then
        // appended after every file's object.
        let mut tmp = tempfile::tempfile().map_err(read_err)?;
        let stored = {
            let mut sink = FileSink(&mut tmp, 0);
            let encoding = encode::usual_to(&mut file, path, size, &digest, settings, &mut sink)
                .map_err(|e| CreateError::Invalid(format!("raw image {}: {e}", path.display())))?;
            (encoding, sink.1)
        };
        tmp.seek(SeekFrom::Start(0)).map_err(read_err)?;
        let mut bytes = Vec::new();
        tmp.take(stored.1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        writer
            .append(
                digest,
                &bytes,
                Stored {
                    size,
                    encoding: stored.0,
                    source: None,
                },
            )
            .map_err(|source| CreateError::Output {
                path: path.clone(),
                source,
            })?;
        out.push(ManifestRaw {
            class: class.clone(),
            digest,
            size,
            sha256: hex::encode(sha.finalize()),
        });
    }
    Ok(out)
}

/// A file as an encoding's sink (raw images).
struct FileSink<'a>(&'a mut File, u64);

impl Write for FileSink<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.write_all_at(b, self.1)?;
        self.1 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl encode::Sink for FileSink<'_> {
    fn written(&self) -> u64 {
        self.1
    }
    fn reset(&mut self) {
        self.1 = 0;
    }
}

/// Moves the carried objects down over the ones that were written but are
/// not carried, keeping their order; returns the objects region's length.
fn compact(
    file: &File,
    base: u64,
    records: &mut BTreeMap<Digest, Record>,
    carried: &BTreeSet<Digest>,
) -> io::Result<u64> {
    records.retain(|d, _| carried.contains(d));
    let mut order: Vec<_> = records.iter_mut().map(|(_, r)| r).collect();
    order.sort_by_key(|r| (r.offset, r.packed_at));
    let mut at = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    // The members of a pack share its bytes: moved once, with the first.
    let mut moved: Option<(u64, u64)> = None;
    for r in order {
        if let Some((from, to)) = moved
            && from == r.offset
        {
            r.offset = to;
            continue;
        }
        moved = Some((r.offset, at));
        if r.offset != at {
            let mut done = 0u64;
            while done < r.stored_size {
                let n = (r.stored_size - done).min(buf.len() as u64) as usize;
                file.read_exact_at(&mut buf[..n], base + r.offset + done)?;
                file.write_all_at(&buf[..n], base + at + done)?;
                done += n as u64;
            }
            r.offset = at;
        }
        at += r.stored_size;
    }
    Ok(at)
}

/// What the scan and the workers need to know.
struct Plan<'a> {
    bases: &'a Bases,
    level: i32,
    delta: delta::EncodeOptions,
    /// Make deltas against the bases' objects.
    deltas: bool,
    /// Train a dictionary for small objects.
    dictionary: bool,
    /// Put small objects in packs.
    packs: bool,
    /// Objects of the releases packs are laid out against (`--previous`).
    previous: &'a HashSet<Digest>,
    threads: usize,
}

/// One large file for the workers: job number, path, size, contents.
type Job = (usize, PathBuf, u64, FileData);

/// Files of at most this size go into packs (when the bundle has them).
pub const PACK_MAX_OBJECT: u64 = 1024 * 1024;

/// What a worker is handed: one file, or a run of consecutive small files
/// that make one pack (at most [`format::MAX_PACK_SIZE`] bytes).
enum Unit {
    One(Job),
    Pack(Vec<Job>),
}

/// Gathers consecutive small files into packs, in the scan's order.
#[derive(Default)]
struct Packer {
    jobs: Vec<Job>,
    bytes: u64,
}

impl Packer {
    /// Takes `job` into the pack being gathered; returns the units ready
    /// to send, in order.
    fn offer(&mut self, job: Job) -> Vec<Unit> {
        let size = job.2;
        let mut ready = Vec::new();
        if size > PACK_MAX_OBJECT {
            ready.extend(self.flush());
            ready.push(Unit::One(job));
            return ready;
        }
        if self.bytes + size > format::MAX_PACK_SIZE {
            ready.extend(self.flush());
        }
        self.bytes += size;
        self.jobs.push(job);
        ready
    }

    fn flush(&mut self) -> Option<Unit> {
        self.bytes = 0;
        (!self.jobs.is_empty()).then(|| Unit::Pack(std::mem::take(&mut self.jobs)))
    }
}

/// Scans the input; the workers hash every large file and write the objects
/// no base has through `writer`. Returns the tree, each job's digest and the
/// encoding settings (with the trained dictionary, if any).
fn scan_and_encode(
    source: &Source<'_>,
    writer: &ObjectWriter<'_>,
    plan: &Plan<'_>,
) -> Result<(SourceTree, Vec<Digest>, Settings), CreateError> {
    let threads = plan.threads;
    // Units in flight hold their files' bytes (archive members in memory):
    // packs of 8 MiB are fewer.
    let in_flight = if plan.packs {
        threads * 2
    } else {
        threads * 16
    };
    let (tx, rx) = mpsc::sync_channel::<Unit>(in_flight);
    let rx = Mutex::new(rx);
    let digests: Mutex<Vec<(usize, Digest)>> = Mutex::new(Vec::new());
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<ImageError>> = Mutex::new(None);
    let settings: OnceLock<Settings> = OnceLock::new();
    let new_settings = |dictionary| Settings {
        level: plan.level,
        dictionary,
        delta: plan.delta,
    };

    let scanned = std::thread::scope(|s| {
        for _ in 0..threads {
            let (rx, digests, failed, first_error, settings) =
                (&rx, &digests, &failed, &first_error, &settings);
            s.spawn(move || {
                loop {
                    let unit = rx.lock().unwrap().recv();
                    let Ok(unit) = unit else {
                        break;
                    };
                    if failed.load(Ordering::Relaxed) {
                        continue; // drain so the scanner never blocks
                    }
                    let settings = settings.get().expect("set before the first job");
                    let done = match unit {
                        Unit::One((id, path, size, data)) => {
                            encode_job(writer, plan, settings, id, &path, size, data)
                                .map(|d| vec![(id, d)])
                        }
                        Unit::Pack(jobs) => encode_pack(writer, plan, jobs),
                    };
                    match done {
                        Ok(pairs) => digests.lock().unwrap().extend(pairs),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            writer.fail(e.to_string());
                            first_error.lock().unwrap().get_or_insert(e);
                        }
                    }
                }
            });
        }
        let mut sampler = plan.dictionary.then(dictionary::Sampler::new);
        let mut packer = plan.packs.then(Packer::default);
        let send = |unit: Unit| -> Result<(), ImageError> {
            if failed.load(Ordering::Relaxed) {
                return Err(first_error
                    .lock()
                    .unwrap()
                    .take()
                    .unwrap_or_else(|| ImageError::Build("a worker failed".into())));
            }
            tx.send(unit)
                .map_err(|_| ImageError::Build("the encoder threads stopped".into()))
        };
        if sampler.is_none() {
            let _ = settings.set(new_settings(None));
        }
        let mut sink =
            |id: usize, path: &Path, size: u64, data: FileData| -> Result<(), ImageError> {
                let job = (id, path.to_owned(), size, data);
                // Until the dictionary is trained, jobs wait (in order).
                if let Some(smp) = sampler.as_mut() {
                    if smp.offer(job)? {
                        return Ok(());
                    }
                    let (dict, held) = sampler.take().expect("sampling").train(plan.level)?;
                    let _ = settings.set(new_settings(dict));
                    for j in held {
                        send(Unit::One(j))?;
                    }
                    return Ok(());
                }
                if let Some(p) = packer.as_mut() {
                    for unit in p.offer(job) {
                        send(unit)?;
                    }
                    return Ok(());
                }
                send(Unit::One(job))
            };
        let result = match source {
            Source::Rootfs(rootfs) => {
                let meta = std::fs::metadata(rootfs);
                if meta.as_ref().is_ok_and(|m| m.is_dir()) {
                    image::scan_directory(rootfs, &mut sink).map_err(CreateError::from)
                } else {
                    image::scan_tar(rootfs, &mut sink).map_err(CreateError::from)
                }
            }
            Source::Oci(img, xattrs) => scan_layers(img, *xattrs, &mut sink),
        };
        // A scan that ended while sampling: train on what it found.
        let mut flushed = Ok(());
        if let Some(unit) = packer.as_mut().and_then(Packer::flush)
            && let Err(e) = send(unit)
        {
            flushed = Err(CreateError::from(e));
        }
        if let Some(smp) = sampler.take() {
            match smp.train(plan.level) {
                Ok((dict, held)) => {
                    let _ = settings.set(new_settings(dict));
                    for j in held {
                        if let Err(e) = send(Unit::One(j)) {
                            flushed = Err(CreateError::from(e));
                            break;
                        }
                    }
                }
                Err(e) => {
                    let _ = settings.set(new_settings(None));
                    flushed = Err(CreateError::from(e));
                }
            }
        }
        drop(tx);
        result.and_then(|t| flushed.map(|()| t))
    });
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(e.into());
    }
    let tree = scanned?;
    let mut pairs = digests.into_inner().unwrap();
    pairs.sort_by_key(|(id, _)| *id);
    if pairs.len() != tree.job_count() || pairs.iter().enumerate().any(|(i, (id, _))| i != *id) {
        return Err(CreateError::Invalid(
            "internal error: a file's digest is missing".into(),
        ));
    }
    let digests = pairs.into_iter().map(|(_, d)| d).collect();
    let settings = settings.into_inner().unwrap_or_else(|| new_settings(None));
    Ok((tree, digests, settings))
}

/// Reads and hashes the small files of one pack; compresses the objects it
/// claims (no base and no earlier file provides them) as one frame — two,
/// when laid out against earlier releases: the objects they hold and the
/// others — and hands them to the writer. Returns each job's digest.
fn encode_pack(
    writer: &ObjectWriter<'_>,
    plan: &Plan<'_>,
    jobs: Vec<Job>,
) -> Result<Vec<(usize, Digest)>, ImageError> {
    let first = jobs.first().map_or(0, |j| j.0);
    let count = jobs.len();
    let mut digests = Vec::with_capacity(count);
    let mut members = Vec::with_capacity(count);
    for (id, path, size, data) in jobs {
        let (label, bytes) = match data {
            // An archive member already in memory is the member's bytes.
            FileData::Bytes(b) => (path, b),
            other => {
                let (label, mut reader) = open_data(&path, other)?;
                let b = read_small(&mut reader, size).map_err(ImageError::io(&label))?;
                (label, b)
            }
        };
        if bytes.len() as u64 != size {
            return Err(changed_size(label, size, bytes.len() as u64));
        }
        let digest = image::digest_bytes(&bytes);
        digests.push((id, digest));
        if !plan.bases.objects.contains(&digest) && writer.claim(id, &digest) {
            members.push(PackMember {
                job: id,
                digest,
                data: bytes,
            });
        }
    }
    // Laid out against earlier releases: what they hold in one pack, what
    // they lack in another, each in the scan's order.
    let (held, new): (Vec<_>, Vec<_>) = members
        .into_iter()
        .partition(|m| plan.previous.contains(&m.digest));
    let mut packs = Vec::with_capacity(2);
    for members in [held, new] {
        if !members.is_empty() {
            let frame =
                writer::pack_frame(&members, plan.level).map_err(ImageError::io("(zstd)"))?;
            packs.push((members, frame));
        }
    }
    writer
        .commit_packs(first, count, packs, plan.level)
        .map_err(ImageError::io("(bundle)"))?;
    Ok(digests)
}

/// A job's contents as a reader at its start, with the name to report
/// problems under (the file read, or the path in the archive).
fn open_data(path: &Path, data: FileData) -> Result<(PathBuf, Box<dyn ReadSeek>), ImageError> {
    Ok(match data {
        FileData::Path(p) => {
            let f = File::open(&p).map_err(ImageError::io(&p))?;
            (p, Box::new(f))
        }
        FileData::Bytes(b) => (path.to_owned(), Box::new(io::Cursor::new(b))),
        FileData::Temp(mut f) => {
            f.seek(SeekFrom::Start(0))
                .map_err(ImageError::io("(spooled member)"))?;
            (path.to_owned(), Box::new(f))
        }
    })
}

fn changed_size(path: PathBuf, size: u64, len: u64) -> ImageError {
    ImageError::Unsupported {
        path,
        detail: format!("changed size while being read ({size} then {len} bytes)"),
    }
}

/// Reads a file of `size` bytes (at most [`PACK_MAX_OBJECT`]) whole; one
/// byte more tells that it grew.
fn read_small(f: &mut dyn Read, size: u64) -> io::Result<Vec<u8>> {
    let mut b = Vec::with_capacity(size as usize);
    f.take(size.min(PACK_MAX_OBJECT) + 1).read_to_end(&mut b)?;
    Ok(b)
}

/// Hashes one file; unless a base or an earlier file provides its object,
/// encodes it (as a delta when a base has a source worth it) into the bundle.
fn encode_job(
    writer: &ObjectWriter<'_>,
    plan: &Plan<'_>,
    settings: &Settings,
    id: usize,
    path: &Path,
    size: u64,
    data: FileData,
) -> Result<Digest, ImageError> {
    let (label, mut reader) = open_data(path, data)?;
    let (digest, len) = image::digest_reader_len(&mut reader).map_err(ImageError::io(&label))?;
    if len != size {
        return Err(changed_size(label, size, len));
    }
    if plan.bases.objects.contains(&digest) || !writer.claim(id, &digest) {
        writer.skip(id).map_err(ImageError::io("(bundle)"))?;
        return Ok(digest);
    }
    let source = match plan
        .deltas
        .then(|| plan.bases.candidate(path, size))
        .flatten()
    {
        Some(src) => match delta::Sources::open(plan.bases, &src) {
            Ok(Some(obj)) => Some((src, obj)),
            Ok(None) => None,
            Err(e) => {
                log::warn!(
                    "{}: no delta against base object {src}: {e}",
                    label.display()
                );
                None
            }
        },
        None => None,
    };
    let mut out = writer.out(id, digest);
    let encoded = encode::encode(
        &mut reader,
        &label,
        size,
        &digest,
        source,
        settings,
        &mut out,
    );
    match encoded {
        Ok(stored) => out
            .commit(stored)
            .map_err(ImageError::io("(bundle)"))
            .map(|()| digest),
        Err(ImageError::Io { source, .. }) if writer::is_superseded(&source) => {
            writer.skip(id).map_err(ImageError::io("(bundle)"))?;
            Ok(digest)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(offset: u64, stored_size: u64, packed_at: u64) -> Record {
        Record {
            offset,
            stored_size,
            size: 1,
            encoding: if packed_at == u64::MAX {
                Encoding::Raw
            } else {
                Encoding::Packed
            },
            source: None,
            packed_at: if packed_at == u64::MAX { 0 } else { packed_at },
        }
    }

    #[test]
    fn compacting_moves_a_pack_once_and_drops_packs_no_member_needs() {
        // At 0 a pack of a dropped object only, at 4 an object, at 7 a pack
        // of two objects and a dropped one, at 12 a dropped object.
        let file = tempfile::tempfile().unwrap();
        file.write_all_at(b"xxxxAAAPPPPPyy", 10).unwrap();
        let d = |i: u8| Digest([i; 32]);
        let mut records = BTreeMap::from([
            (d(1), rec(0, 4, 0)),
            (d(2), rec(4, 3, u64::MAX)),
            (d(3), rec(7, 5, 0)),
            (d(4), rec(7, 5, 9)),
            (d(5), rec(7, 5, 20)),
            (d(6), rec(12, 2, u64::MAX)),
        ]);
        let carried = BTreeSet::from([d(2), d(3), d(5)]);
        let len = compact(&file, 10, &mut records, &carried).unwrap();
        assert_eq!(len, 8);
        let at: Vec<_> = records.values().map(|r| (r.offset, r.packed_at)).collect();
        assert_eq!(at, [(0, 0), (3, 0), (3, 20)]);
        let mut b = [0u8; 8];
        file.read_exact_at(&mut b, 10).unwrap();
        assert_eq!(&b, b"AAAPPPPP");
    }
}
