//! Bootloader backends behind one trait.
//!
//! A backend only knows bootnames and the bootloader's own variables; what
//! "mark good/bad/active on booted/other/rootfs.1" means is decided above it
//! (see [`mark`]), so every backend gets the same semantics.

use crate::config::{BootloaderKind, SystemConfig};
use crate::slot::Bootname;

pub mod counting;
pub mod custom;
pub mod efi;
pub mod efivar;
pub mod efivarfs;
pub mod file;
pub mod grub;
pub mod grubenv;
pub mod mark;
pub mod noop;
pub mod uboot;
pub mod ubootenv;

/// A slot's state as the bootloader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootState {
    Good,
    Bad,
}

impl BootState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Bad => "bad",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot access {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("the bootloader knows no slot \"{0}\"")]
    UnknownSlot(Bootname),
    #[error("{path}: [bootloader] configuration: {message}")]
    Config {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

/// What every bootloader backend can do, in RAUC's terms.
pub trait Bootloader: Send + Sync {
    /// The backend's name as written in system.conf.
    fn name(&self) -> &'static str;

    /// The slot the bootloader will try first on the next boot, if any.
    fn get_primary(&self) -> Result<Option<Bootname>, BootError>;

    /// Makes `slot` the one tried first on the next boot, with a fresh
    /// attempt budget (mark-active).
    fn set_primary(&self, slot: &Bootname) -> Result<(), BootError>;

    /// Whether the bootloader considers `slot` good (bootable) or bad.
    fn get_state(&self, slot: &Bootname) -> Result<BootState, BootError>;

    /// Marks `slot` good (confirmed) or bad (never chosen again until activated).
    fn set_state(&self, slot: &Bootname, state: BootState) -> Result<(), BootError>;

    /// The slot the bootloader says it booted, for backends that know
    /// (EFI `BootCurrent`, a custom script's `get-current`).
    fn get_current(&self) -> Result<Option<Bootname>, BootError> {
        Ok(None)
    }

    /// Boot attempts left for `slot`, for backends that count them.
    fn attempts_left(&self, _slot: &Bootname) -> Result<Option<u32>, BootError> {
        Ok(None)
    }
}

/// Builds the backend `[system] bootloader` names, configured from the
/// `[bootloader]` section.
pub fn from_config(config: &SystemConfig) -> Result<Box<dyn Bootloader>, BootError> {
    let attempts = config.system.boot_attempts;
    let config_error = |message: String| BootError::Config {
        path: config.path.clone(),
        message,
    };
    if attempts == 0 {
        return Err(config_error(
            "[system] boot-attempts = 0 would never boot a slot; use 1 or more".into(),
        ));
    }
    let bootnames = config.bootnames();
    let section = &config.bootloader;
    Ok(match config.system.bootloader {
        BootloaderKind::Noop => Box::new(noop::NoopBootloader::new(bootnames)),
        BootloaderKind::File => {
            let path = section.state_file.clone().ok_or_else(|| {
                config_error("bootloader = \"file\" needs state-file = \"...\"".into())
            })?;
            Box::new(file::FileBootloader::new(path, bootnames, attempts))
        }
        BootloaderKind::Grub => Box::new(
            grub::GrubBootloader::new(
                section.grubenv.clone(),
                section.grub_scheme,
                bootnames,
                attempts,
            )
            .map_err(config_error)?,
        ),
        BootloaderKind::Uboot => Box::new(uboot::UbootBootloader::new(
            section.fw_env_config.clone(),
            bootnames,
            attempts,
        )),
        BootloaderKind::Custom => {
            let script = section.custom_script.clone().ok_or_else(|| {
                config_error("bootloader = \"custom\" needs custom-script = \"...\"".into())
            })?;
            Box::new(custom::CustomBootloader::new(script, bootnames))
        }
        BootloaderKind::Efi => {
            Box::new(efi::EfiBootloader::new(section.efivarfs.clone(), bootnames))
        }
    })
}
