//! The daemon's calls into the engine, in one place. Every function here blocks
//! (it reads bundles, writes the store, runs bootloader tools), so callers run
//! them with `tokio::task::spawn_blocking` and the bus stays responsive.

use super::error::Error;
use crate::boot::mark::MarkState;
use crate::bundle::{Manifest, SignerInfo};
use crate::config::SystemConfig;
use crate::install::{
    BundleSource, CancelToken, InstallError, InstallOptions, InstallOutcome, Progress,
};
use crate::keyring::Keyring;
use crate::status::{StatusError, SystemStatus};

/// Installs the bundle from `source` (an open file or a URL).
pub fn install(
    config: &SystemConfig,
    source: BundleSource,
    options: &InstallOptions,
    progress: &dyn Fn(Progress),
    cancel: &CancelToken,
) -> Result<InstallOutcome, InstallError> {
    crate::install::install(config, source, options, progress, cancel)
}

/// The install's checks that write nothing (signature, manifest hash,
/// compatible, version limit, security floor, fall back) on `source`.
pub fn check(
    config: &SystemConfig,
    source: BundleSource,
    options: &InstallOptions,
) -> Result<(), InstallError> {
    crate::install::check(config, source.open(config)?, options).map(drop)
}

/// Finishes what an interrupted install left behind (at the service's start).
/// Returns a description of the interrupted install, if there was one.
pub fn recover(config: &SystemConfig) -> Result<Option<String>, InstallError> {
    Ok(crate::install::recover(config)?.map(|i| i.describe()))
}

/// The system and slot status.
pub fn status(config: &SystemConfig) -> Result<SystemStatus, StatusError> {
    crate::status::collect(config)
}

/// Marks a slot (`state`: good, bad or active; `identifier`: booted, other or a slot name).
/// Returns the slot's name and a message.
pub fn mark(
    config: &SystemConfig,
    state: MarkState,
    identifier: &str,
) -> Result<(String, String), Error> {
    let outcome = crate::install::mark(config, state, identifier)?;
    Ok((outcome.slot.to_string(), outcome.message))
}

/// Checks a mark state the way RAUC spells it.
pub fn parse_mark_state(state: &str) -> Result<MarkState, Error> {
    match state {
        "good" => Ok(MarkState::Good),
        "bad" => Ok(MarkState::Bad),
        "active" => Ok(MarkState::Active),
        other => Err(Error::InvalidArgument(format!(
            "unknown state {:?}: expected \"good\", \"bad\" or \"active\"",
            other.chars().take(80).collect::<String>()
        ))),
    }
}

/// What `InspectBundle` reports about a verified bundle.
#[derive(Debug, Clone)]
pub struct BundleInfo {
    pub manifest: Manifest,
    /// The manifest text exactly as signed.
    pub manifest_text: String,
    pub manifest_hash: String,
    pub signer: SignerInfo,
    /// The bundle file's size in bytes.
    pub size: u64,
    /// What an install of it would fetch and write on this device.
    pub for_device: Option<crate::install::DeviceSize>,
}

/// Opens and verifies the bundle in `file` and describes it (`InspectBundle`).
pub fn inspect(config: &SystemConfig, source: BundleSource) -> Result<BundleInfo, Error> {
    let keyring = Keyring::load(&config.keyring).map_err(|e| {
        Error::Failed(format!(
            "{}: cannot load the keyring: {}",
            config.path.display(),
            super::error::chain(&e)
        ))
    })?;
    let bundle = source.open(config)?.verify(&keyring)?;
    let for_device = crate::install::size_for_device(config, &bundle)?;
    Ok(BundleInfo {
        for_device: Some(for_device),
        manifest: bundle.manifest().clone(),
        // Manifest::parse accepted these bytes, so they are UTF-8.
        manifest_text: String::from_utf8_lossy(bundle.manifest_bytes()).into_owned(),
        manifest_hash: bundle.manifest_hash(),
        signer: bundle.signer().clone(),
        size: bundle.header().file_size(),
    })
}
