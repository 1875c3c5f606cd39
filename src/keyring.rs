//! The trusted certificates a bundle signature is checked against, with
//! RAUC's `[keyring]` options.
//!
//! CONTRACT: `Keyring::load(&config::KeyringSection)` and
//! `Keyring::from_pem_file(path, options)`; used by `bundle` and `setup_root`.

use std::path::{Path, PathBuf};

use openssl::x509::X509;

pub use crate::config::CheckPurpose;
use crate::config::KeyringSection;

/// Largest keyring file read (a bundle of CA certificates).
const MAX_KEYRING_SIZE: u64 = 4 * 1024 * 1024;

/// How a signer is checked, beyond "chains to a certificate in the keyring".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyringOptions {
    /// The extended key usage the signing certificate must carry.
    pub check_purpose: CheckPurpose,
    /// Accept a chain that ends at an intermediate (not self-signed) in the keyring.
    pub allow_partial_chain: bool,
    /// If non-empty, the signer's common name must be one of these.
    pub allowed_signer_cns: Vec<String>,
    /// Check certificate validity at the signature's signing time instead of now.
    pub use_bundle_signing_time: bool,
    /// Skip certificate validity-time checks (devices without a real-time clock).
    pub no_check_time: bool,
}

impl KeyringOptions {
    pub fn from_section(s: &KeyringSection) -> Self {
        Self {
            check_purpose: s.check_purpose,
            allow_partial_chain: s.allow_partial_chain,
            allowed_signer_cns: s.allowed_signer_cns.clone(),
            use_bundle_signing_time: s.use_bundle_signing_time,
            no_check_time: s.no_check_time,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("cannot read keyring {path}: {source}")]
    Read {
        path: PathBuf,
        source: crate::util::BoundedReadError,
    },
    #[error("keyring {path} is not PEM certificates: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error(
        "keyring {path} contains no certificates; it must hold at least one trusted CA certificate in PEM form"
    )]
    Empty { path: PathBuf },
}

/// A loaded keyring: trusted certificates plus the checking options.
#[derive(Clone)]
pub struct Keyring {
    certs: Vec<X509>,
    options: KeyringOptions,
    source: PathBuf,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("source", &self.source)
            .field("certificates", &self.subjects())
            .field("options", &self.options)
            .finish()
    }
}

impl Keyring {
    /// Loads the keyring named by `system.conf`'s `[keyring]` section.
    pub fn load(section: &KeyringSection) -> Result<Self, KeyringError> {
        Self::from_pem_file(&section.path, KeyringOptions::from_section(section))
    }

    /// Loads trusted certificates from a PEM file.
    pub fn from_pem_file(path: &Path, options: KeyringOptions) -> Result<Self, KeyringError> {
        let pem = crate::util::read_bounded(path, MAX_KEYRING_SIZE).map_err(|source| {
            KeyringError::Read {
                path: path.to_owned(),
                source,
            }
        })?;
        Self::from_pem(&pem, options, path)
    }

    /// Parses trusted certificates from PEM text; `origin` names it in messages.
    pub fn from_pem(
        pem: &[u8],
        options: KeyringOptions,
        origin: &Path,
    ) -> Result<Self, KeyringError> {
        let certs = X509::stack_from_pem(pem).map_err(|e| KeyringError::Parse {
            path: origin.to_owned(),
            detail: e.to_string(),
        })?;
        if certs.is_empty() {
            return Err(KeyringError::Empty {
                path: origin.to_owned(),
            });
        }
        Ok(Self {
            certs,
            options,
            source: origin.to_owned(),
        })
    }

    pub fn certificates(&self) -> &[X509] {
        &self.certs
    }

    pub fn options(&self) -> &KeyringOptions {
        &self.options
    }

    /// Where the certificates came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The same certificates with other options.
    pub fn with_options(mut self, options: KeyringOptions) -> Self {
        self.options = options;
        self
    }

    /// One-line subjects of the trusted certificates.
    pub fn subjects(&self) -> Vec<String> {
        self.certs
            .iter()
            .map(|c| crate::bundle::signature::name_to_string(c.subject_name()))
            .collect()
    }
}
