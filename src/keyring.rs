//! The trusted certificates a bundle signature is checked against, with
//! RAUC's `[keyring]` options.
//!
//! CONTRACT: `Keyring::load(&config::KeyringSection)` and
//! `Keyring::from_pem_file(path, options)`; used by `bundle` and `setup_root`.

use std::path::{Path, PathBuf};

use openssl::x509::{X509, X509Crl};

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
    /// Check the chain against the CRLs in the keyring file (RAUC's `check-crl`).
    pub check_crl: bool,
}

impl KeyringOptions {
    pub fn from_section(s: &KeyringSection) -> Self {
        Self {
            check_purpose: s.check_purpose,
            allow_partial_chain: s.allow_partial_chain,
            allowed_signer_cns: s.allowed_signer_cns.clone(),
            use_bundle_signing_time: s.use_bundle_signing_time,
            no_check_time: s.no_check_time,
            check_crl: s.check_crl,
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
    #[error(
        "keyring {path}: check-crl is set but the file holds no CRL; add the CAs' CRLs \
         (PEM, \"-----BEGIN X509 CRL-----\") or unset check-crl"
    )]
    NoCrl { path: PathBuf },
}

/// A loaded keyring: trusted certificates plus the checking options.
#[derive(Clone)]
pub struct Keyring {
    certs: Vec<X509>,
    crls: std::sync::Arc<[X509Crl]>,
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
        let crls = crls_from_pem(pem).map_err(|detail| KeyringError::Parse {
            path: origin.to_owned(),
            detail,
        })?;
        if options.check_crl && crls.is_empty() {
            return Err(KeyringError::NoCrl {
                path: origin.to_owned(),
            });
        }
        Ok(Self {
            certs,
            crls: crls.into(),
            options,
            source: origin.to_owned(),
        })
    }

    pub fn certificates(&self) -> &[X509] {
        &self.certs
    }

    /// The certificate revocation lists in the keyring file.
    pub fn crls(&self) -> &[X509Crl] {
        &self.crls
    }

    pub fn options(&self) -> &KeyringOptions {
        &self.options
    }

    /// The keyring as it checks a slot that is already installed (at boot,
    /// by `fsck`, before marking): the same anchors, CRLs, purpose and
    /// signer names, but no certificate validity times. The signature was
    /// checked against the clock when the bundle was installed; a slot that
    /// worked must not stop booting because a certificate expired since, or
    /// because a device without a real-time clock starts in 1970.
    pub fn for_installed_slots(mut self) -> Self {
        self.options.no_check_time = true;
        self.options.use_bundle_signing_time = false;
        self
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
            .map(|c| crate::cms::name_to_string(c.subject_name()))
            .collect()
    }
}

/// Every `X509 CRL` PEM block of a keyring file, parsed.
fn crls_from_pem(pem: &[u8]) -> Result<Vec<X509Crl>, String> {
    const BEGIN: &[u8] = b"-----BEGIN X509 CRL-----";
    const END: &[u8] = b"-----END X509 CRL-----";
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = find(rest, BEGIN) {
        let block = &rest[start..];
        let end = find(block, END)
            .ok_or_else(|| "a CRL block has no \"-----END X509 CRL-----\" line".to_owned())?
            + END.len();
        let crl =
            X509Crl::from_pem(&block[..end]).map_err(|e| format!("a CRL does not parse: {e}"))?;
        out.push(crl);
        rest = &block[end..];
    }
    Ok(out)
}
