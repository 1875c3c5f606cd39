//! Making a bundle from a root filesystem (directory, tar archive or
//! container image).
//!
//! The scan runs on the calling thread and hands every large file to a pool
//! of workers (one per core) that compute its fs-verity digest and, unless a
//! base or another file already provides it, encode it (zstd when smaller)
//! into a per-worker spool file next to the output. Once the image is
//! written, the objects it references are copied out of the spools in digest
//! order, so the same inputs always give the same payload bytes.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use sha2::{Digest as _, Sha256};

use super::format::{self, Header, MAX_IMAGE_SIZE};
use super::manifest::MAX_RAW_IMAGES;
use super::{
    Encoding, IndexEntry, Manifest, ManifestBase, ManifestImage, ManifestObjects, ManifestRaw,
};
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
    let (bases, base_objects) = load_bases(&opts.bases)?;
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
    let (tree, digests, mut records, spools) =
        scan_and_encode(&source, &out_dir, &base_objects, opts.zstd_level, threads)?;
    let stats = tree.stats;
    let image = tree.into_image(&digests)?;
    let image_digest = image::digest_bytes(&image);
    let referenced = image::referenced_objects(&image)?;
    let mut carried: BTreeSet<Digest> = referenced
        .iter()
        .filter(|d| !base_objects.contains(d))
        .copied()
        .collect();
    let objects_in_base = (referenced.len() - carried.len()) as u64;
    let raw = add_raw_images(&opts.raw, &spools[0], &mut records, opts.zstd_level)?;
    carried.extend(raw.iter().map(|r| r.digest));

    let mut index = Vec::with_capacity(carried.len());
    let mut at = 0u64;
    for d in &carried {
        let r = records.get(d).ok_or_else(|| {
            CreateError::Invalid(format!("internal error: object {d} was never encoded"))
        })?;
        index.push(IndexEntry {
            digest: *d,
            encoding: r.encoding,
            offset: at,
            stored_size: r.stored_size,
            size: r.size,
        });
        at += r.stored_size;
    }
    let index_bytes = format::index_to_bytes(&index, 0);
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
            stored_size: at,
            referenced: referenced.len() as u64,
            index_sha256: hex::encode(Sha256::digest(&index_bytes)),
        },
        bases,
        raw,
    };
    manifest.format = manifest.needed_format();
    let manifest_text = manifest.to_toml();
    let signature = signer.sign(manifest_text.as_bytes())?;
    let header = Header::sequential(
        manifest_text.len() as u64,
        signature.len() as u64,
        index_bytes.len() as u64,
        image.len() as u64,
        at,
    );

    let out_err = |source| CreateError::Output {
        path: opts.output.clone(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".didymos-bundle.")
        .tempfile_in(&out_dir)
        .map_err(out_err)?;
    {
        let f = tmp.as_file_mut();
        f.write_all(&header.to_bytes()).map_err(out_err)?;
        f.write_all(manifest_text.as_bytes()).map_err(out_err)?;
        f.write_all(&signature).map_err(out_err)?;
        f.write_all(&index_bytes).map_err(out_err)?;
        f.write_all(&image).map_err(out_err)?;
        for d in &carried {
            let r = &records[d];
            let mut spool = &spools[r.spool];
            spool.seek(SeekFrom::Start(r.offset)).map_err(out_err)?;
            let n = io::copy(&mut spool.take(r.stored_size), f).map_err(out_err)?;
            if n != r.stored_size {
                return Err(out_err(io::Error::other("spool file ended early")));
            }
        }
        f.sync_all().map_err(out_err)?;
    }
    tmp.persist(&opts.output).map_err(|e| out_err(e.error))?;
    crate::util::fsync_dir(&out_dir).map_err(out_err)?;
    log::info!(
        "{}: {} objects carried, {} in base, image {}",
        opts.output.display(),
        index.len(),
        objects_in_base,
        image_digest
    );
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

/// Hashes each raw image (fs-verity digest and plain SHA-256) and spools it
/// as an object unless an identical object is spooled already.
fn add_raw_images(
    raw: &[(String, PathBuf)],
    spool: &File,
    records: &mut BTreeMap<Digest, Record>,
    level: i32,
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
        if let std::collections::btree_map::Entry::Vacant(slot) = records.entry(digest) {
            let claimed = Mutex::new(HashSet::new());
            let (again, record) = encode_one(
                &mut &*spool,
                0,
                size,
                FileData::Path(path.clone()),
                &HashSet::new(),
                &claimed,
                level,
            )
            .map_err(|e| CreateError::Invalid(format!("raw image {}: {e}", path.display())))?;
            match record {
                Some(r) if again == digest => {
                    slot.insert(r);
                }
                _ => {
                    return Err(CreateError::Invalid(format!(
                        "raw image {} changed while being read",
                        path.display()
                    )));
                }
            }
        }
        out.push(ManifestRaw {
            class: class.clone(),
            digest,
            size,
            sha256: hex::encode(sha.finalize()),
        });
    }
    Ok(out)
}

/// Reads the bases: each a bundle (its image checked against its manifest)
/// or a bare composefs image.
fn load_bases(paths: &[PathBuf]) -> Result<(Vec<ManifestBase>, HashSet<Digest>), CreateError> {
    let mut bases = Vec::new();
    let mut objects = HashSet::new();
    for path in paths {
        let err = |detail: String| CreateError::Base {
            path: path.clone(),
            detail,
        };
        let mut magic = [0u8; 8];
        let mut f = File::open(path).map_err(|e| err(e.to_string()))?;
        let n = f.read(&mut magic).map_err(|e| err(e.to_string()))?;
        let (image, version) = if magic[..n] == format::MAGIC {
            let b = super::Bundle::open(path).map_err(|e| err(e.to_string()))?;
            let version = b
                .manifest_unverified()
                .map_err(|e| err(e.to_string()))?
                .version;
            (
                b.read_image_unverified().map_err(|e| err(e.to_string()))?,
                version,
            )
        } else {
            let image =
                crate::util::read_bounded(path, MAX_IMAGE_SIZE).map_err(|e| err(e.to_string()))?;
            (image, String::new())
        };
        let digest = image::digest_bytes(&image);
        let refs = image::referenced_objects(&image)
            .map_err(|e| err(format!("neither a bundle nor a composefs image: {e}")))?;
        objects.extend(refs);
        bases.push(ManifestBase {
            image: digest,
            version,
        });
    }
    Ok((bases, objects))
}

/// Where one encoded object sits in a spool file.
struct Record {
    spool: usize,
    offset: u64,
    stored_size: u64,
    size: u64,
    encoding: Encoding,
}

type Job = (usize, u64, FileData);

/// The scanned tree, each job's digest, where each new object was spooled, the spools.
type Encoded = (SourceTree, Vec<Digest>, BTreeMap<Digest, Record>, Vec<File>);

fn scan_and_encode(
    source: &Source<'_>,
    spool_dir: &Path,
    base: &HashSet<Digest>,
    level: i32,
    threads: usize,
) -> Result<Encoded, CreateError> {
    let spools: Vec<File> = (0..threads)
        .map(|_| tempfile::tempfile_in(spool_dir))
        .collect::<Result<_, _>>()
        .map_err(|source| CreateError::Output {
            path: spool_dir.to_owned(),
            source,
        })?;
    let (tx, rx) = mpsc::sync_channel::<Job>(threads * 16);
    let rx = Mutex::new(rx);
    let claimed: Mutex<HashSet<Digest>> = Mutex::new(HashSet::new());
    let digests: Mutex<Vec<(usize, Digest)>> = Mutex::new(Vec::new());
    let records: Mutex<BTreeMap<Digest, Record>> = Mutex::new(BTreeMap::new());
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<ImageError>> = Mutex::new(None);

    let scanned = std::thread::scope(|s| {
        for (w, spool) in spools.iter().enumerate() {
            let (rx, claimed, digests, records, failed, first_error) =
                (&rx, &claimed, &digests, &records, &failed, &first_error);
            s.spawn(move || {
                let mut spool = spool;
                loop {
                    let job = rx.lock().unwrap().recv();
                    let Ok((id, size, data)) = job else { break };
                    if failed.load(Ordering::Relaxed) {
                        continue; // drain so the scanner never blocks
                    }
                    match encode_one(&mut spool, w, size, data, base, claimed, level) {
                        Ok((digest, record)) => {
                            digests.lock().unwrap().push((id, digest));
                            if let Some(r) = record {
                                records.lock().unwrap().insert(digest, r);
                            }
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            first_error.lock().unwrap().get_or_insert(e);
                        }
                    }
                }
            });
        }
        let mut sink = |id: usize, size: u64, data: FileData| -> Result<(), ImageError> {
            if failed.load(Ordering::Relaxed) {
                return Err(first_error
                    .lock()
                    .unwrap()
                    .take()
                    .unwrap_or_else(|| ImageError::Build("a worker failed".into())));
            }
            tx.send((id, size, data))
                .map_err(|_| ImageError::Build("the encoder threads stopped".into()))
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
        drop(tx);
        result
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
    Ok((tree, digests, records.into_inner().unwrap(), spools))
}

/// Hashes one file; unless a base or another file already provides its
/// object, appends the encoded object to `spool`.
fn encode_one(
    spool: &mut &File,
    worker: usize,
    size: u64,
    data: FileData,
    base: &HashSet<Digest>,
    claimed: &Mutex<HashSet<Digest>>,
    level: i32,
) -> Result<(Digest, Option<Record>), ImageError> {
    let (label, mut reader): (PathBuf, Box<dyn ReadSeek>) = match data {
        FileData::Path(p) => {
            let f = File::open(&p).map_err(ImageError::io(&p))?;
            (p, Box::new(f))
        }
        FileData::Bytes(b) => ("(archive member)".into(), Box::new(io::Cursor::new(b))),
        FileData::Temp(mut f) => {
            f.seek(SeekFrom::Start(0))
                .map_err(ImageError::io("(spooled member)"))?;
            ("(archive member)".into(), Box::new(f))
        }
    };
    let (digest, len) = image::digest_reader_len(&mut reader).map_err(ImageError::io(&label))?;
    if len != size {
        return Err(ImageError::Unsupported {
            path: label,
            detail: format!("changed size while being read ({size} then {len} bytes)"),
        });
    }
    if base.contains(&digest) || !claimed.lock().unwrap().insert(digest) {
        return Ok((digest, None));
    }
    let spool_err = ImageError::io("(spool file)");
    let start = spool
        .seek(SeekFrom::End(0))
        .map_err(ImageError::io("(spool file)"))?;
    reader
        .seek(SeekFrom::Start(0))
        .map_err(ImageError::io(&label))?;
    // Encode, hashing again what is read so a file changing in between is caught.
    let mut check = VerityHasher::new();
    {
        let mut enc = zstd::stream::write::Encoder::new(&mut *spool, level)
            .map_err(ImageError::io("(zstd)"))?;
        enc.set_pledged_src_size(Some(size))
            .map_err(ImageError::io("(zstd)"))?;
        enc.include_checksum(false)
            .map_err(ImageError::io("(zstd)"))?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(ImageError::io(&label))?;
            if n == 0 {
                break;
            }
            check.update(&buf[..n]);
            enc.write_all(&buf[..n])
                .map_err(ImageError::io("(spool file)"))?;
        }
        enc.finish().map_err(ImageError::io("(spool file)"))?;
    }
    if check.finish() != digest {
        return Err(ImageError::Unsupported {
            path: label,
            detail: "changed while being read".into(),
        });
    }
    let end = spool
        .stream_position()
        .map_err(ImageError::io("(spool file)"))?;
    let mut stored = end - start;
    let mut encoding = Encoding::Zstd;
    if stored >= size {
        // Compression did not help: store the bytes as they are.
        spool
            .set_len(start)
            .map_err(ImageError::io("(spool file)"))?;
        spool
            .seek(SeekFrom::Start(start))
            .map_err(ImageError::io("(spool file)"))?;
        reader
            .seek(SeekFrom::Start(0))
            .map_err(ImageError::io(&label))?;
        let n = io::copy(&mut reader.take(size), spool).map_err(spool_err)?;
        if n != size {
            return Err(ImageError::Unsupported {
                path: label,
                detail: format!("changed size while being read ({size} then {n} bytes)"),
            });
        }
        stored = n;
        encoding = Encoding::Raw;
    }
    Ok((
        digest,
        Some(Record {
            spool: worker,
            offset: start,
            stored_size: stored,
            size,
            encoding,
        }),
    ))
}

trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}
