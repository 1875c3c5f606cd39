//! The initramfs side: check the slot the bootloader chose and mount it as
//! the root filesystem.
//!
//! 1. read the slot (`didymos.slot=`), an optional sealed digest and the store
//!    partition from the kernel command line ([`cmdline`]);
//! 2. mount the store partition ([`device`]);
//! 3. re-check the trust chain: record → signature (keyring in the
//!    initramfs) → manifest → image digest ([`crate::slot::check`]);
//! 4. mount the composefs image read-only with a writable `/etc` and a
//!    persistent `/var` ([`tree`]).
//!
//! Any failure unmounts what was mounted and is reported as one line naming
//! the slot, the check and expected against actual; the caller exits
//! non-zero so the boot fails and the bootloader counts the attempt.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Digest;
use crate::slot::{Bootname, SlotName};
use crate::sys::composefs::{ComposefsOptions, ErofsBacking, OverlayLayers, OverlayVerity};

pub mod cmdline;
pub mod device;
pub mod tree;

mod flow;
pub use flow::run;

pub use cmdline::BootArgs;

pub use crate::slot::check::{ImageCheck, SlotCheckError};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Cmdline(#[from] cmdline::CmdlineError),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("bootname {bootname} is not configured in {conf} (configured: {known})")]
    UnknownBootname {
        bootname: Bootname,
        conf: PathBuf,
        known: String,
    },
    #[error("slot is of type {kind}, setup-root only boots composefs slots")]
    NotComposefs { kind: &'static str },
    #[error("store partition {spec} did not appear within {waited:?} ({hint})")]
    NoDevice {
        spec: String,
        waited: Duration,
        hint: &'static str,
    },
    #[error(
        "store partition {0:?} is not a device name: expected /dev/…, UUID=, LABEL=, PARTUUID= or PARTLABEL="
    )]
    BadDevice(String),
    #[error("{0}")]
    Slot(#[from] SlotCheckError),
    #[error("{0}")]
    Mount(String),
    #[error("the image has no directory {path}; the root filesystem must contain it")]
    MissingDir { path: PathBuf },
    #[error("cannot prepare {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A failure, with the slot it concerns (once known).
#[derive(Debug, thiserror::Error)]
#[error("{}{error}", slot.as_ref().map(|s| format!("slot {s}: ")).unwrap_or_default())]
pub struct SetupFailure {
    pub slot: Option<String>,
    #[source]
    pub error: SetupError,
}

/// Where things are; the defaults are those of an initramfs.
#[derive(Debug, Clone)]
pub struct SetupOptions {
    /// The kernel command line (text).
    pub cmdline: String,
    /// `system.conf` inside the initramfs.
    pub config: PathBuf,
    /// An already mounted store (skips mounting the partition).
    pub store_root: Option<PathBuf>,
    /// Where the tree is mounted (`/sysroot`).
    pub target: PathBuf,
    /// Scratch space for the store and staging mounts (`/run/didymos`).
    pub run_dir: PathBuf,
    /// How long to wait for the store partition to appear.
    pub device_timeout: Duration,
    pub composefs: ComposefsOptions,
}

impl Default for SetupOptions {
    fn default() -> Self {
        Self {
            cmdline: String::new(),
            config: PathBuf::from(crate::config::DEFAULT_PATH),
            store_root: None,
            target: PathBuf::from("/sysroot"),
            run_dir: PathBuf::from("/run/didymos"),
            device_timeout: Duration::from_secs(30),
            composefs: ComposefsOptions::default(),
        }
    }
}

/// What was mounted.
#[derive(Debug)]
pub struct Mounted {
    pub bootname: Bootname,
    pub slot: SlotName,
    pub image: Digest,
    pub version: String,
    pub check: ImageCheck,
    pub verity: OverlayVerity,
    pub backing: ErofsBacking,
    pub layers: OverlayLayers,
    pub init: Option<String>,
}

/// Splits `rootflags=` (`a,b=c`) into fsconfig keys; `ro`/`rw` are dropped
/// (the store is always mounted read-write: it holds `/etc` and `/var`).
pub fn parse_flags(flags: &str) -> Vec<(String, Option<String>)> {
    flags
        .split(',')
        .filter(|f| !f.is_empty() && *f != "ro" && *f != "rw")
        .map(|f| match f.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (f.to_owned(), None),
        })
        .collect()
}

/// Seconds since boot, from `/proc/uptime` (for the boot-time report).
pub fn uptime() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Where `path` lands inside `root`.
pub fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootflags() {
        type Flags<'a> = &'a [(&'a str, Option<&'a str>)];
        let table: &[(&str, Flags)] = &[
            ("", &[]),
            ("ro", &[]),
            (
                "noatime,ro,data=ordered",
                &[("noatime", None), ("data", Some("ordered"))],
            ),
            (",,discard", &[("discard", None)]),
        ];
        for (input, expected) in table {
            let got = parse_flags(input);
            let got: Vec<(&str, Option<&str>)> = got
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect();
            assert_eq!(&got, expected, "{input:?}");
        }
    }
}
