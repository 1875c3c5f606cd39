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
