//! The install engine. CONTRACT (the D-Bus service drives these; bodies being filled in):
//!
//! ```ignore
//! pub fn install(config: &SystemConfig, source: BundleSource, options: &InstallOptions,
//!                progress: &dyn Fn(Progress), cancel: &CancelToken) -> Result<InstallOutcome, InstallError>
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where the bundle comes from.
pub enum BundleSource {
    Path(std::path::PathBuf),
    /// An already-open file (D-Bus `InstallBundleFd`): never reopened by path.
    File(std::fs::File),
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
    #[error("no slot to install into: {0}")]
    NoTargetSlot(String),
    #[error("{0}")]
    MissingBaseObjects(String),
    #[error(
        "not enough space in {path}: the install needs {needed} bytes but {available} are free; \
         free space (didymos gc) or use a smaller (delta) bundle"
    )]
    NoSpace {
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
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}
