//! The install engine and the store maintenance that shares its lock.
//!
//! [`install`] takes a bundle from verification to an activated slot (see
//! `engine.rs` for the step order); [`check`] is its first step alone, the
//! checks that write nothing. [`recover`] finishes what an interrupted
//! install left behind; [`gc`] and [`fsck`] look after the store.

mod boot_files;
mod engine;
mod fetch;
mod handlers;
pub mod journal;
mod lock;
mod mark;
mod raw;
pub mod security;
pub mod version;

pub use engine::{FAILPOINTS, check, install};
pub use lock::InstallLock;
pub use mark::mark;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where the bundle comes from.
pub enum BundleSource {
    Path(std::path::PathBuf),
    /// An already-open file (D-Bus `InstallBundleFd`): never reopened by path.
    File(std::fs::File),
    /// An `http://` or `https://` URL ([`crate::net`], `[streaming]`).
    Url(String),
}

impl BundleSource {
    /// A second handle on the same bundle (the same open file, or the URL).
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(match self {
            Self::Path(p) => Self::Path(p.clone()),
            Self::File(f) => Self::File(f.try_clone()?),
            Self::Url(u) => Self::Url(u.clone()),
        })
    }

    /// Opens the bundle (for a URL: fetches its head, with `[streaming]`).
    pub fn open(
        self,
        config: &SystemConfig,
    ) -> Result<crate::bundle::Bundle, crate::bundle::BundleError> {
        match self {
            Self::Path(p) => crate::bundle::Bundle::open(&p),
            Self::File(f) => crate::bundle::Bundle::from_file(f),
            Self::Url(u) => crate::bundle::Bundle::open_url(&u, &config.streaming),
        }
    }
}

/// Caller's choices, RAUC's `InstallBundle` arguments.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    pub ignore_compatible: bool,
    pub ignore_version_limit: bool,
    pub transaction_id: Option<String>,
    /// Refuse unless the manifest's SHA-256 is this (hex).
    pub require_manifest_hash: Option<String>,
}

/// One progress report: RAUC's `Progress (isi)` — percent, message, nesting depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub percent: i32,
    pub message: String,
    pub depth: i32,
}

/// Cooperative cancellation, checked between steps and between objects.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

use crate::Digest;
use crate::slot::{Bootname, SlotName};

/// What a successful install did.
#[derive(Debug, Clone)]
pub struct InstallOutcome {
    pub slot: SlotName,
    pub bootname: Option<Bootname>,
    pub image: Digest,
    pub bundle_version: String,
    /// Objects written into the store by this install.
    pub objects_written: u64,
    /// Bytes written into the store by this install (objects and image).
    pub bytes_written: u64,
    /// Objects the image needed that the store already had.
    pub objects_reused: u64,
    /// Objects removed by the garbage collection at the end.
    pub objects_collected: u64,
    /// The raw slots written, with the class of the image each got.
    pub raw_written: Vec<(SlotName, String)>,
    /// Why the garbage collection at the end removed nothing, if it refused.
    pub gc_refused: Option<String>,
}

/// Why an install failed. Each variant maps to one typed D-Bus error.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("another install is running ({holder}); wait for it to finish or cancel it")]
    Busy { holder: String },
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    #[error(
        "bundle is for {bundle:?} but this device is {system:?} (system.conf [system] compatible); \
         use --ignore-compatible to override"
    )]
    NotCompatible { bundle: String, system: String },
    #[error(
        "bundle version {bundle:?} is older than the minimum {minimum:?} \
         (system.conf [system] min-bundle-version); use --ignore-version-limit to override"
    )]
    VersionTooOld { bundle: String, minimum: String },
    #[error("manifest hash is {actual} but {expected} was required")]
    ManifestHashMismatch { expected: String, actual: String },
    #[error(
        "bundle version {bundle_version:?} has security version {security_version}, below this \
         device's floor {floor} (raised when {raised} was marked good); a bundle below the floor \
         would bring back what a security fix closed, so it is never installed or activated"
    )]
    SecurityVersionTooOld {
        bundle_version: String,
        security_version: u64,
        floor: u64,
        raised: String,
    },
    #[error("{0}")]
    SecurityFloor(#[from] security::FloorError),
    #[error(
        "the booted slot {slot} has no boot attempts left: it was booted on trial and never \
         marked good, so if the new slot failed to boot there would be no slot to fall back to; \
         mark it good first if this system works (didymos status mark-good booted), then \
         install again"
    )]
    BootedUnconfirmed { slot: SlotName },
    #[error("cannot mark slot {slot} {state}: {reason}")]
    NotBootable {
        slot: SlotName,
        state: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Mark(#[from] crate::boot::mark::MarkError),
    #[error("garbage collection stopped, nothing was removed: {0}")]
    GcRefused(String),
    #[error("no slot to install into: {0}")]
    NoTargetSlot(String),
    #[error("{0}")]
    MissingBaseObjects(String),
    #[error("raw image {class:?}: {message}")]
    Raw { class: String, message: String },
    #[error(
        "not enough space in {path}: the install needs {needed} bytes but {available} are free; \
         free space (didymos gc) or use a smaller (delta) bundle"
    )]
    NoSpace {
        path: std::path::PathBuf,
        needed: u64,
        available: u64,
    },
    #[error(
        "not enough inodes in {path}: the install creates {needed} files but only {available} \
         more fit; free some (didymos gc), or make the filesystem with more inodes"
    )]
    NoInodes {
        path: std::path::PathBuf,
        needed: u64,
        available: u64,
    },
    #[error("install cancelled; the previously booted slot is unchanged")]
    Cancelled,
    #[error("bootloader: {0}")]
    Bootloader(#[from] crate::boot::BootError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{handler} handler {path} failed ({status}): {stderr}")]
    Handler {
        handler: &'static str,
        path: std::path::PathBuf,
        status: String,
        stderr: String,
    },
    #[error(transparent)]
    Keyring(#[from] crate::keyring::KeyringError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

use crate::config::SystemConfig;
use crate::store::{FsckReport, GcReport, Store};

/// The images every slot record names: what the store must keep.
///
/// A slot without a record holds nothing, except the booted slot: it runs
/// from some image, so a booted slot without a record is an error, as is any
/// record that exists but cannot be read or parsed. Whatever such a slot
/// uses is unknown, and garbage collection must then remove nothing.
pub fn slot_images(
    config: &SystemConfig,
) -> Result<std::collections::BTreeMap<SlotName, Digest>, String> {
    let booted = crate::slot::booted::detect(config);
    let mut out = std::collections::BTreeMap::new();
    for s in &config.slots {
        if s.kind != crate::config::SlotKind::Composefs {
            continue;
        }
        match crate::slot::check::load_record(&config.store.path, &s.name) {
            Ok(Some(r)) => {
                out.insert(s.name.clone(), r.image);
            }
            Ok(None) if booted.slot() == Some(&s.name) => {
                return Err(format!(
                    "the booted slot {} has no slot record, so which image it runs from is \
                     unknown; install a bundle into the other slot and boot it, then reinstall {}",
                    s.name, s.name
                ));
            }
            Ok(None) => {}
            Err(e) => {
                return Err(format!(
                    "slot {}: {e}; what that slot uses is unknown. Reinstall it (from the other \
                     slot), or if it is not needed remove {} and run didymos gc again",
                    s.name,
                    crate::slot::record::slot_dir(&config.store.path, &s.name).display()
                ));
            }
        }
    }
    Ok(out)
}

use crate::slot::SlotRecord;

/// Finishes what an interrupted install left behind (takes the install lock).
/// Returns a description of what was found, if anything.
pub fn recover(config: &SystemConfig) -> Result<Option<journal::Interrupted>, InstallError> {
    let _lock = InstallLock::acquire(&config.system.data_directory, "recovery")?;
    let bootloader = crate::boot::from_config(config)?;
    recover_locked(config, bootloader.as_ref())
}

fn recover_locked(
    config: &SystemConfig,
    bootloader: &dyn crate::boot::Bootloader,
) -> Result<Option<journal::Interrupted>, InstallError> {
    let data_dir = &config.system.data_directory;
    let Some(j) = journal::read(data_dir) else {
        return Ok(None);
    };
    let slot = config.slot(&j.slot);
    let bootname = slot.and_then(|s| s.bootname.clone());
    let record = SlotRecord::load(&config.store.path, &j.slot).ok();
    let primary = bootloader.get_primary()?;
    let completed = record.as_ref().is_some_and(|r| r.image == j.image)
        && bootname.is_some()
        && primary == bootname;
    if !completed {
        if let Some(b) = &bootname {
            bootloader.set_state(b, crate::boot::BootState::Bad)?;
        }
        SlotRecord::remove(&config.store.path, &j.slot)
            .map_err(|e| InstallError::Store(crate::store::StoreError::Source(e.to_string())))?;
    }
    Store::open(&config.store.path, config.store.verity).clean_tmp()?;
    let interrupted = journal::Interrupted {
        slot: j.slot.clone(),
        bundle_version: j.bundle_version.clone(),
        started: j.started.clone(),
        detected: engine::now(),
        completed,
    };
    journal::write_interrupted(data_dir, &interrupted).map_err(|source| InstallError::Io {
        context: "cannot record the interrupted install".into(),
        source,
    })?;
    journal::remove(data_dir).map_err(|source| InstallError::Io {
        context: "cannot remove the install journal".into(),
        source,
    })?;
    log::warn!("{}", interrupted.describe());
    Ok(Some(interrupted))
}

/// What installing a bundle would cost this device, as far as the bundle's
/// head, the image and the store tell (objects a damaged store has are not
/// re-checked here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSize {
    /// Bytes an install fetches beyond the bundle's head: the image (unless
    /// the store has it) and the stored bytes of the objects the store lacks.
    pub download: u64,
    /// Bytes it writes into the store (decoded objects and the image).
    pub write: u64,
    /// Objects it writes.
    pub objects: u64,
}

/// [`DeviceSize`] of `bundle` for the device `config` describes.
pub fn size_for_device(
    config: &SystemConfig,
    bundle: &crate::bundle::VerifiedBundle,
) -> Result<DeviceSize, InstallError> {
    let store = Store::open(&config.store.path, config.store.verity);
    let digest = bundle.manifest().image.digest;
    let (image, image_new) = match store.read_image(&digest) {
        Ok(bytes) => (bytes, 0),
        Err(_) => {
            let bytes = bundle
                .read_image_with(&store)
                .map_err(|e| engine::image_base_missing(e, bundle.manifest()))?;
            let n = bytes.len() as u64;
            (bytes, n)
        }
    };
    let referenced = crate::image::referenced_objects(&image).map_err(|e| {
        InstallError::Store(crate::store::StoreError::Source(format!(
            "bundle image: {e}"
        )))
    })?;
    let present = store.list_objects()?;
    let raw: std::collections::BTreeSet<Digest> =
        bundle.manifest().raw.iter().map(|r| r.digest).collect();
    let needed: Vec<&crate::bundle::IndexEntry> = bundle
        .index()
        .iter()
        .filter(|e| {
            (referenced.contains(&e.digest) && !present.contains(&e.digest))
                || raw.contains(&e.digest)
        })
        .collect();
    // The image region as stored (compressed in container version 2).
    let image_download = if image_new > 0 {
        bundle.header().image.len
    } else {
        0
    };
    Ok(DeviceSize {
        download: image_download + crate::bundle::format::stored_total(needed.iter().copied()),
        write: image_new + needed.iter().map(|e| e.size).sum::<u64>(),
        objects: needed.len() as u64,
    })
}

/// Removes images and objects no slot record needs (takes the install lock,
/// so it never runs while an install writes objects it is about to reference).
pub fn gc(config: &SystemConfig) -> Result<GcReport, InstallError> {
    let _lock = InstallLock::acquire(&config.system.data_directory, "garbage collection")?;
    let bootloader = crate::boot::from_config(config)?;
    recover_locked(config, bootloader.as_ref())?;
    let store = Store::open_for_writing(&config.store.path, config.store.verity)?;
    store.clean_tmp()?;
    // Partly received objects are kept for a resumed install; gc is the
    // explicit "remove what no slot needs", so they go too.
    store.clean_partials(None)?;
    gc_locked(config, &store)
}

fn gc_locked(config: &SystemConfig, store: &Store) -> Result<GcReport, InstallError> {
    let keep = slot_images(config)
        .map_err(InstallError::GcRefused)?
        .into_values()
        .collect();
    Ok(store.gc(&keep)?)
}

/// Checks every object, every slot's image and the objects it references,
/// and every slot as setup-root would check it at boot (record, signature
/// against the keyring, manifest, image).
pub fn fsck(config: &SystemConfig) -> Result<FsckReport, InstallError> {
    let store = Store::open(&config.store.path, config.store.verity);
    let booted = crate::slot::booted::detect(config);
    let mut roots = Vec::new();
    let mut slot_problems = Vec::new();
    for s in config
        .slots
        .iter()
        .filter(|s| s.kind == crate::config::SlotKind::Composefs)
    {
        let problem = |error: String| crate::store::FsckProblem::Slot {
            slot: s.name.clone(),
            error,
        };
        match crate::slot::check::load_record(&config.store.path, &s.name) {
            Ok(None) if booted.slot() == Some(&s.name) => slot_problems.push(problem(
                "it is the booted slot but has no slot record; the next boot of it will fail \
                 (install into the other slot, boot that, then reinstall this one)"
                    .into(),
            )),
            Ok(None) => {}
            Err(e) => slot_problems.push(problem(format!(
                "{e}; setup-root would refuse to boot it and garbage collection removes nothing \
                 until it is repaired (reinstall the slot)"
            ))),
            Ok(Some(record)) => {
                roots.push((format!("slot {}", s.name), record.image));
                if let Err(e) =
                    crate::slot::check::verify_slot(config, &config.store.path, &s.name, None)
                {
                    slot_problems.push(problem(format!("setup-root would refuse to boot it: {e}")));
                }
            }
        }
    }
    let mut report = store.fsck(&roots)?;
    report.problems.extend(slot_problems);
    Ok(report)
}

/// Moves every object that fsck finds damaged (content not matching its
/// name, unreadable, or without the fs-verity the policy requires) and every
/// damaged slot image into `<store>/quarantine/`, under the install lock.
/// Nothing is deleted; the next install that carries those objects writes
/// them again. Returns what was moved, as (what, where to).
pub fn repair(config: &SystemConfig) -> Result<Vec<(String, std::path::PathBuf)>, InstallError> {
    let _lock = InstallLock::acquire(&config.system.data_directory, "repairing the store")?;
    let bootloader = crate::boot::from_config(config)?;
    recover_locked(config, bootloader.as_ref())?;
    let store = Store::open(&config.store.path, config.store.verity);
    let report = fsck(config)?;
    let mut moved = Vec::new();
    for p in &report.problems {
        let (what, path) = match p {
            crate::store::FsckProblem::CorruptObject { digest, .. }
            | crate::store::FsckProblem::UnreadableObject { digest, .. } => {
                (format!("object {digest}"), store.object_path(digest))
            }
            crate::store::FsckProblem::BadImage { digest, .. }
                if store.has_image(digest)
                    && matches!(
                        store.read_image(digest),
                        Err(crate::store::StoreError::DigestMismatch { .. })
                    ) =>
            {
                (format!("image {digest}"), store.image_path(digest))
            }
            _ => continue,
        };
        if path.exists() {
            let to = store.quarantine(&path)?;
            log::warn!("{what} is damaged: moved to {}", to.display());
            moved.push((what, to));
        }
    }
    Ok(moved)
}

/// Gives every object and image in the store fs-verity where it lacks it
/// (a store filled on a build host, which has no fs-verity). Takes the
/// install lock. Returns how many files were sealed.
pub fn enable_verity(config: &SystemConfig) -> Result<u64, InstallError> {
    let _lock = InstallLock::acquire(&config.system.data_directory, "enabling fs-verity")?;
    let policy = match config.store.verity {
        crate::config::VerityPolicy::Off => crate::config::VerityPolicy::Require,
        other => other,
    };
    let unsupported = |e: crate::store::StoreError| match e {
        crate::store::StoreError::VerityUnsupported { path } => {
            crate::store::StoreError::Source(format!(
                "cannot enable fs-verity: the filesystem of store {} does not support it \
                 (ext4 needs `mkfs.ext4 -O verity` or `tune2fs -O verity`, and a kernel \
                 with CONFIG_FS_VERITY)",
                path.display()
            ))
        }
        other => other,
    };
    let store = Store::open_for_writing(&config.store.path, policy).map_err(unsupported)?;
    Ok(store.enable_missing_verity().map_err(unsupported)?)
}
