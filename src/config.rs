//! `system.conf`: the device's description (TOML).
//!
//! Parsing is separate from I/O: [`SystemConfig::parse`] takes the text and
//! the path it came from (for messages), [`SystemConfig::load`] reads the file.
//! Unknown keys are errors that name the file, the line and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::slot::{Bootname, SlotName};

/// Where the configuration lives unless `--conf` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/didymos/system.conf";

/// Largest configuration file we read (bounded before use).
const MAX_CONFIG_SIZE: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}; pass another file with --conf")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is {size} bytes, larger than the {MAX_CONFIG_SIZE}-byte limit for system.conf")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole of `system.conf`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SystemConfig {
    pub system: SystemSection,
    #[serde(default)]
    pub keyring: KeyringSection,
    pub store: StoreSection,
    #[serde(default)]
    pub bootloader: BootloaderSection,
    /// `[slot.<class>.<index>]`
    #[serde(default, rename = "slot")]
    slot_tables: BTreeMap<String, BTreeMap<String, SlotSection>>,
    #[serde(default)]
    pub handlers: HandlersSection,
    #[serde(default)]
    pub dbus: DbusSection,
    #[serde(default)]
    pub streaming: StreamingSection,
    /// `[updates]`: the update agent (`didymos agent`, docs/fleet.md). Every
    /// key is optional here; drop-ins in `updates.d/` may set them too.
    #[serde(default)]
    pub updates: UpdatesSection,
    /// The file this configuration was read from (for messages and relative paths).
    #[serde(skip)]
    pub path: PathBuf,
    /// Slots in configuration order (class, then index).
    #[serde(skip)]
    pub slots: Vec<SlotConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SystemSection {
    /// The string a bundle's `compatible` must equal.
    pub compatible: String,
    /// A variant name (informational, passed to handlers and shown by status).
    #[serde(default)]
    pub variant: Option<String>,
    /// Which bootloader backend to use.
    pub bootloader: BootloaderKind,
    /// Where didymos keeps its own state (install journal, lock).
    #[serde(default = "default_data_directory")]
    pub data_directory: PathBuf,
    /// Bundles with a lower version are refused (unless `--ignore-version-limit`).
    #[serde(default)]
    pub min_bundle_version: Option<String>,
    /// How many times the bootloader tries a newly activated slot.
    #[serde(default = "default_boot_attempts")]
    pub boot_attempts: u32,
    /// Marking the booted slot good also marks the other slot(s) bad.
    #[serde(default)]
    pub prevent_late_fallback: bool,
    /// Where the booted slot is read from (tests and the demo point this at a file).
    #[serde(default = "default_cmdline")]
    pub kernel_cmdline: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootloaderKind {
    Grub,
    Uboot,
    Efi,
    Custom,
    Noop,
    /// A TOML file standing in for a bootloader (tests and the demo).
    File,
}

impl BootloaderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grub => "grub",
            Self::Uboot => "uboot",
            Self::Efi => "efi",
            Self::Custom => "custom",
            Self::Noop => "noop",
            Self::File => "file",
        }
    }
}

/// `[keyring]`: what a bundle's signature is checked against (RAUC's options).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KeyringSection {
    /// PEM file with one or more trusted CA certificates.
    #[serde(default = "default_keyring")]
    pub path: PathBuf,
    /// The extended key usage the signer must carry.
    #[serde(default)]
    pub check_purpose: CheckPurpose,
    /// Accept a chain that ends at an intermediate in the keyring.
    #[serde(default)]
    pub allow_partial_chain: bool,
    /// If non-empty, the signer's common name must be one of these.
    #[serde(default)]
    pub allowed_signer_cns: Vec<String>,
    /// Check certificate validity at the bundle's signing time instead of now.
    #[serde(default)]
    pub use_bundle_signing_time: bool,
    /// Skip certificate time checks altogether (devices without a real-time clock).
    #[serde(default)]
    pub no_check_time: bool,
    /// Check signers against the CRLs in the keyring file.
    #[serde(default)]
    pub check_crl: bool,
}

impl Default for KeyringSection {
    fn default() -> Self {
        Self {
            path: default_keyring(),
            check_purpose: CheckPurpose::default(),
            allow_partial_chain: false,
            allowed_signer_cns: Vec::new(),
            use_bundle_signing_time: false,
            no_check_time: false,
            check_crl: false,
        }
    }
}

/// Which extended key usage the signing certificate must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckPurpose {
    /// `codeSigning` (the default: what the development PKI issues).
    #[default]
    Codesign,
    /// `emailProtection`, OpenSSL's S/MIME default.
    Smimesign,
    /// Any usage (no extended key usage check).
    Any,
}

/// `[store]`: the shared object store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StoreSection {
    pub path: PathBuf,
    #[serde(default)]
    pub verity: VerityPolicy,
}

/// Whether fs-verity is required on the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerityPolicy {
    /// Refuse to work on a store without fs-verity.
    Require,
    /// Use fs-verity where the filesystem supports it, digest in userspace otherwise.
    #[default]
    Auto,
    /// Never enable fs-verity (digests are still checked in userspace).
    Off,
}

/// `[bootloader]`: backend settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BootloaderSection {
    /// GRUB environment block.
    #[serde(default = "default_grubenv")]
    pub grubenv: PathBuf,
    /// GRUB boot-counting scheme.
    #[serde(default)]
    pub grub_scheme: GrubScheme,
    /// libubootenv configuration for the U-Boot environment.
    #[serde(default = "default_fw_env_config")]
    pub fw_env_config: PathBuf,
    /// Where efivarfs is mounted.
    #[serde(default = "default_efivarfs")]
    pub efivarfs: PathBuf,
    /// The script for `bootloader = "custom"`.
    #[serde(default)]
    pub custom_script: Option<PathBuf>,
    /// The state file for `bootloader = "file"`.
    #[serde(default)]
    pub state_file: Option<PathBuf>,
}

impl Default for BootloaderSection {
    fn default() -> Self {
        Self {
            grubenv: default_grubenv(),
            grub_scheme: GrubScheme::default(),
            fw_env_config: default_fw_env_config(),
            efivarfs: default_efivarfs(),
            custom_script: None,
            state_file: None,
        }
    }
}

/// How the GRUB backend counts boot attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrubScheme {
    /// RAUC's variables: `ORDER`, `<X>_OK`, `<X>_TRY` (one try per activation).
    #[default]
    Rauc,
    /// `ORDER`, `<X>_OK` and a per-slot `<X>_LEFT` attempts counter.
    Attempts,
}

/// One `[slot.<class>.<index>]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SlotSection {
    #[serde(rename = "type")]
    pub kind: SlotKind,
    #[serde(default)]
    pub bootname: Option<Bootname>,
    /// Block device for `raw` slots.
    #[serde(default)]
    pub device: Option<PathBuf>,
    /// The slot this one is installed together with (e.g. a bootloader partition).
    #[serde(default)]
    pub parent: Option<SlotName>,
    /// Where this slot's boot files are placed (kernel, initramfs, device trees).
    #[serde(default)]
    pub boot_directory: Option<PathBuf>,
    /// Paths inside the image copied to `boot-directory` (files, or directories copied whole).
    #[serde(default)]
    pub boot_files: Vec<PathBuf>,
    /// For `raw` slots: the name of the bundle payload written to `device`.
    #[serde(default)]
    pub image: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotKind {
    /// A composefs image in the shared store.
    Composefs,
    /// An image written to a block device or file.
    Raw,
}

impl SlotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Composefs => "composefs",
            Self::Raw => "raw",
        }
    }
}

/// A slot with its name resolved.
#[derive(Debug, Clone)]
pub struct SlotConfig {
    pub name: SlotName,
    pub kind: SlotKind,
    pub bootname: Option<Bootname>,
    pub device: Option<PathBuf>,
    pub parent: Option<SlotName>,
    pub boot_directory: Option<PathBuf>,
    pub boot_files: Vec<PathBuf>,
    pub image: Option<String>,
}

/// `[handlers]`: executables run around an install.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HandlersSection {
    /// Prints `KEY=value` lines that are added to the other handlers' environment.
    #[serde(default)]
    pub system_info: Option<PathBuf>,
    #[serde(default)]
    pub pre_install: Option<PathBuf>,
    #[serde(default)]
    pub post_install: Option<PathBuf>,
}

/// `[dbus]`: the service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DbusSection {
    /// Also export RAUC's name and interface (`de.pengutronix.rauc`).
    #[serde(default)]
    pub rauc_compat: bool,
    /// Members of this group may install, mark and cancel (root always may).
    #[serde(default)]
    pub install_group: Option<String>,
}

/// `[streaming]`: installs from `http://` and `https://` URLs (RAUC's key
/// names where RAUC has them). See docs/streaming.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StreamingSection {
    /// CA certificates (PEM) the server's certificate must chain to; the
    /// system's trust store when unset.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require one (mutual TLS).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Accept any server certificate. Only for development; refused unless
    /// set explicitly, and logged at every install.
    #[serde(default)]
    pub tls_no_verify: bool,
    /// A file of `Name: value` lines sent with every request (an
    /// `Authorization` token, say). Its values are never logged.
    #[serde(default)]
    pub header_file: Option<PathBuf>,
    /// Giving up on connecting.
    #[serde(default = "default_connect_timeout", with = "humantime_serde_compat")]
    pub connect_timeout: std::time::Duration,
    /// Giving up on a server that sends nothing for this long.
    #[serde(default = "default_read_timeout", with = "humantime_serde_compat")]
    pub read_timeout: std::time::Duration,
    /// Attempts per request after the first, with exponential backoff.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// The first retry's delay; each further one doubles it (at most 60 s).
    #[serde(default = "default_retry_delay", with = "humantime_serde_compat")]
    pub retry_delay: std::time::Duration,
    /// Bytes per second at most (0: no limit), for metered links.
    #[serde(default)]
    pub bandwidth_limit: u64,
    /// An HTTP proxy (`http://host:port`); else `https_proxy`/`http_proxy`
    /// from the environment, minus `no_proxy`.
    #[serde(default)]
    pub proxy: Option<String>,
    /// Range requests in flight at once.
    #[serde(default = "default_parallel")]
    pub parallel: u32,
}

impl Default for StreamingSection {
    fn default() -> Self {
        Self {
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_no_verify: false,
            header_file: None,
            connect_timeout: default_connect_timeout(),
            read_timeout: default_read_timeout(),
            max_retries: default_max_retries(),
            retry_delay: default_retry_delay(),
            bandwidth_limit: 0,
            proxy: None,
            parallel: default_parallel(),
        }
    }
}

fn default_connect_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(20)
}
fn default_read_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}
fn default_max_retries() -> u32 {
    5
}
fn default_retry_delay() -> std::time::Duration {
    std::time::Duration::from_secs(1)
}
fn default_parallel() -> u32 {
    4
}

/// Durations written as humantime text (`30s`, `2m`, `500ms`).
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({e}); write e.g. \"30s\", \"2m\" or \"500ms\""
            ))
        })
    }
}

/// `[updates]` as written in system.conf or a drop-in: every key optional,
/// so that files can be merged key by key (`crate::agent::config`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UpdatesSection {
    pub enabled: Option<bool>,
    /// `channel` or `hawkbit`.
    pub source: Option<String>,
    /// The signed channel: a URL (`https://…`, `http://…`, `file://…`) or a path.
    pub channel: Option<String>,
    /// Trusted CA certificates for channel signatures (default: `[keyring] path`).
    pub keyring: Option<PathBuf>,
    /// How often to check, e.g. `"1h"`.
    pub interval: Option<String>,
    /// A random delay of up to this much is added to every interval.
    pub jitter: Option<String>,
    /// Rollout wariness, 0.0 (eager) to 1.0 (cautious).
    pub wariness: Option<f64>,
    pub allow_downgrade: Option<bool>,
    /// `immediate`, `periodic` or `fleet-lock`.
    pub strategy: Option<String>,
    /// The longest inhibitors and deferrals may hold a due reboot back.
    pub max_deferral: Option<String>,
    /// Where the agent keeps its state (and `didymos status` reads it).
    pub state_directory: Option<PathBuf>,
    /// A command that reboots the device, instead of logind's `Reboot`.
    pub reboot_command: Option<Vec<String>>,
    /// CA certificates for HTTPS servers the agent talks to (default: the system's).
    pub tls_ca: Option<PathBuf>,
    /// How long a request may take, e.g. `"30s"`.
    pub timeout: Option<String>,
    pub periodic: Option<PeriodicSection>,
    pub fleet_lock: Option<FleetLockSection>,
    pub hawkbit: Option<HawkbitSection>,
}

/// `[updates.periodic]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PeriodicSection {
    pub time_zone: Option<String>,
    /// `"Mon,Thu 22:30 for 90m"`, …
    pub windows: Option<Vec<String>>,
}

/// `[updates.fleet-lock]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FleetLockSection {
    pub base_url: Option<String>,
    pub group: Option<String>,
    /// The id the lock server knows this device by (default: from the machine id).
    pub id: Option<String>,
}

/// `[updates.hawkbit]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HawkbitSection {
    /// The server's base URL, e.g. `https://hawkbit.example.com`.
    pub server: Option<String>,
    pub tenant: Option<String>,
    /// The controller id (default: the machine id).
    pub controller_id: Option<String>,
    /// A file holding the target security token (`Authorization: TargetToken …`).
    pub target_token_file: Option<PathBuf>,
    /// A file holding the gateway security token (`Authorization: GatewayToken …`).
    pub gateway_token_file: Option<PathBuf>,
}

fn default_data_directory() -> PathBuf {
    PathBuf::from("/var/lib/didymos")
}
fn default_boot_attempts() -> u32 {
    3
}
fn default_cmdline() -> PathBuf {
    PathBuf::from("/proc/cmdline")
}
fn default_keyring() -> PathBuf {
    PathBuf::from("/etc/didymos/keyring.pem")
}
fn default_grubenv() -> PathBuf {
    PathBuf::from("/boot/grub/grubenv")
}
fn default_fw_env_config() -> PathBuf {
    PathBuf::from("/etc/fw_env.config")
}
fn default_efivarfs() -> PathBuf {
    PathBuf::from("/sys/firmware/efi/efivars")
}

/// The parser's message, or, where it has none (a control character, for
/// one), what is at the position it points at.
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    if !message.is_empty() {
        return message.to_owned();
    }
    let Some(span) = e.span() else {
        return "not valid TOML".into();
    };
    let column = text[..span.start.min(text.len())]
        .rsplit('\n')
        .next()
        .map_or(0, |l| l.chars().count())
        + 1;
    match text.get(span.start..).and_then(|t| t.chars().next()) {
        Some(c) if c.is_control() => format!(
            "column {column}: control character U+{:04X} is not allowed in TOML (not even in a \
             comment; only tab is); remove it",
            c as u32
        ),
        Some(c) => format!("column {column}: unexpected {c:?}"),
        None => "unexpected end of file".into(),
    }
}

impl SystemConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            crate::util::read_bounded_to_string(path, MAX_CONFIG_SIZE).map_err(|e| match e {
                crate::util::BoundedReadError::TooLarge { size, .. } => ConfigError::TooLarge {
                    path: path.to_owned(),
                    size,
                },
                crate::util::BoundedReadError::Io(source) => ConfigError::Read {
                    path: path.to_owned(),
                    source,
                },
            })?;
        Self::parse(&text, path)
    }

    /// Parses configuration text; `path` is used in messages and to resolve
    /// relative paths (relative to the file's directory).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: SystemConfig = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0);
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                message: syntax_message(text, &e),
            }
        })?;
        config.path = path.to_owned();
        config.resolve()?;
        Ok(config)
    }

    fn invalid(&self, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            message,
        }
    }

    fn resolve(&mut self) -> Result<(), ConfigError> {
        let base = self.path.parent().map(Path::to_owned).unwrap_or_default();
        let rel = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rel(&mut self.system.data_directory);
        rel(&mut self.system.kernel_cmdline);
        rel(&mut self.keyring.path);
        rel(&mut self.store.path);
        rel(&mut self.bootloader.grubenv);
        rel(&mut self.bootloader.fw_env_config);
        rel(&mut self.bootloader.efivarfs);
        for p in [
            &mut self.streaming.tls_ca,
            &mut self.streaming.tls_cert,
            &mut self.streaming.tls_key,
            &mut self.streaming.header_file,
            &mut self.bootloader.custom_script,
            &mut self.bootloader.state_file,
            &mut self.handlers.system_info,
            &mut self.handlers.pre_install,
            &mut self.handlers.post_install,
        ]
        .into_iter()
        .flatten()
        {
            rel(p);
        }

        let mut slots = Vec::new();
        for (class, indices) in &self.slot_tables {
            for (index, section) in indices {
                let name = index
                    .parse::<u32>()
                    .ok()
                    .filter(|_| index.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|i| SlotName::new(class, i).ok())
                    .ok_or_else(|| {
                        self.invalid(format!(
                            "[slot.{class}.{index}]: slot tables are named \
                             [slot.<class>.<index>] with a numeric index, e.g. [slot.rootfs.0]"
                        ))
                    })?;
                let mut slot = SlotConfig {
                    name,
                    kind: section.kind,
                    bootname: section.bootname.clone(),
                    device: section.device.clone(),
                    parent: section.parent.clone(),
                    boot_directory: section.boot_directory.clone(),
                    boot_files: section.boot_files.clone(),
                    image: section.image.clone(),
                };
                if let Some(p) = slot.boot_directory.as_mut() {
                    rel(p);
                }
                if let Some(p) = slot.device.as_mut() {
                    rel(p);
                }
                slots.push(slot);
            }
        }
        slots.sort_by(|a, b| a.name.cmp(&b.name));
        self.slots = slots;
        self.validate()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.system.compatible.trim().is_empty() {
            return Err(self.invalid("[system] compatible must not be empty".into()));
        }
        if !(1..=100).contains(&self.system.boot_attempts) {
            return Err(self.invalid(format!(
                "[system] boot-attempts = {}: expected a number from 1 to 100",
                self.system.boot_attempts
            )));
        }
        if self.slots.iter().all(|s| s.bootname.is_none()) {
            return Err(self.invalid(
                "no slot has a bootname: an A/B system needs at least two \
                 [slot.<class>.<index>] tables with bootname = \"A\" / \"B\""
                    .into(),
            ));
        }
        let mut seen = std::collections::BTreeMap::new();
        for slot in &self.slots {
            if let Some(b) = &slot.bootname {
                if let Some(other) = seen.insert(b.clone(), slot.name.clone()) {
                    return Err(self.invalid(format!(
                        "bootname \"{b}\" is used by both [slot.{}] and [slot.{}]; \
                         each bootname must be unique",
                        other, slot.name
                    )));
                }
                if slot.parent.is_some() {
                    return Err(self.invalid(format!(
                        "[slot.{}] has both a bootname and a parent; only top-level \
                         slots carry a bootname",
                        slot.name
                    )));
                }
            }
            match slot.kind {
                SlotKind::Raw if slot.device.is_none() => {
                    return Err(self.invalid(format!(
                        "[slot.{}] is type \"raw\" but has no device = \"/dev/...\"",
                        slot.name
                    )));
                }
                SlotKind::Composefs if slot.bootname.is_none() && slot.parent.is_none() => {
                    return Err(self.invalid(format!(
                        "[slot.{}] is type \"composefs\" but has neither a bootname nor a parent",
                        slot.name
                    )));
                }
                _ => {}
            }
            if let Some(parent) = &slot.parent {
                let Some(p) = self.slots.iter().find(|s| &s.name == parent) else {
                    return Err(self.invalid(format!(
                        "[slot.{}] parent = \"{parent}\" names no configured slot",
                        slot.name
                    )));
                };
                if p.parent.is_some() {
                    return Err(self.invalid(format!(
                        "[slot.{}] parent = \"{parent}\" is itself a child slot; \
                         parents must be top-level slots",
                        slot.name
                    )));
                }
            }
            if !slot.boot_files.is_empty() && slot.boot_directory.is_none() {
                return Err(self.invalid(format!(
                    "[slot.{}] lists boot-files but has no boot-directory to put them in",
                    slot.name
                )));
            }
        }
        if self.system.bootloader == BootloaderKind::Custom
            && self.bootloader.custom_script.is_none()
        {
            return Err(self.invalid(
                "bootloader = \"custom\" needs [bootloader] custom-script = \"/path/to/script\""
                    .into(),
            ));
        }
        let s = &self.streaming;
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            return Err(self.invalid(
                "[streaming] tls-cert and tls-key go together: set both (client certificate and \
                 its key) or neither"
                    .into(),
            ));
        }
        if !(1..=16).contains(&s.parallel) {
            return Err(self.invalid(format!(
                "[streaming] parallel = {}: expected 1 to 16 requests in flight",
                s.parallel
            )));
        }
        if s.max_retries > 100 {
            return Err(self.invalid(format!(
                "[streaming] max-retries = {}: at most 100",
                s.max_retries
            )));
        }
        if self.system.bootloader == BootloaderKind::File && self.bootloader.state_file.is_none() {
            return Err(self.invalid(
                "bootloader = \"file\" needs [bootloader] state-file = \"/path/to/state.toml\""
                    .into(),
            ));
        }
        Ok(())
    }

    /// Looks a slot up by name.
    pub fn slot(&self, name: &SlotName) -> Option<&SlotConfig> {
        self.slots.iter().find(|s| &s.name == name)
    }

    /// Looks a slot up by bootname.
    pub fn slot_by_bootname(&self, bootname: &Bootname) -> Option<&SlotConfig> {
        self.slots
            .iter()
            .find(|s| s.bootname.as_ref() == Some(bootname))
    }

    /// The slots the bootloader chooses between, in configuration order.
    pub fn bootable_slots(&self) -> impl Iterator<Item = &SlotConfig> {
        self.slots.iter().filter(|s| s.bootname.is_some())
    }

    /// The bootnames of all bootable slots, in configuration order.
    pub fn bootnames(&self) -> Vec<Bootname> {
        self.bootable_slots()
            .filter_map(|s| s.bootname.clone())
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two composefs slots, A and B, with the noop bootloader (shared by unit tests).
    pub(crate) const MINIMAL: &str = r#"
[system]
compatible = "acme-gateway"
bootloader = "noop"

[store]
path = "/data/store"

[slot.rootfs.0]
type = "composefs"
bootname = "A"

[slot.rootfs.1]
type = "composefs"
bootname = "B"
"#;

    #[test]
    fn minimal_config() {
        let c = SystemConfig::parse(MINIMAL, Path::new("/etc/didymos/system.conf")).unwrap();
        assert_eq!(c.system.compatible, "acme-gateway");
        assert_eq!(c.slots.len(), 2);
        assert_eq!(c.slots[1].name.to_string(), "rootfs.1");
        assert_eq!(c.store.verity, VerityPolicy::Auto);
        assert_eq!(c.system.boot_attempts, 3);
        assert_eq!(c.bootnames().len(), 2);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = MINIMAL.replace("[store]\n", "[store]\nverity-mode = \"on\"\n");
        let err = SystemConfig::parse(&text, Path::new("/etc/didymos/system.conf")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("/etc/didymos/system.conf:"), "{msg}");
        assert!(msg.contains("verity-mode"), "{msg}");
        let line = text
            .lines()
            .position(|l| l.starts_with("verity-mode"))
            .unwrap()
            + 1;
        assert!(msg.contains(&format!(":{line}:")), "{msg}");
    }

    #[test]
    fn control_character_is_named() {
        let text = format!("# a comment \u{1} with a control character\n{MINIMAL}");
        let msg = SystemConfig::parse(&text, Path::new("s.conf"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("s.conf:1: column 13: control character U+0001"),
            "{msg}"
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let text = MINIMAL.replace("/data/store", "store");
        let c = SystemConfig::parse(&text, Path::new("/demo/system.conf")).unwrap();
        assert_eq!(c.store.path, Path::new("/demo/store"));
    }

    #[test]
    fn semantic_errors() {
        let cases = [
            (
                MINIMAL.replace("bootname = \"B\"", "bootname = \"A\""),
                "used by both",
            ),
            (
                MINIMAL.replace("[slot.rootfs.1]", "[slot.rootfs.x]"),
                "numeric index",
            ),
            (MINIMAL.replace("\"noop\"", "\"custom\""), "custom-script"),
            (MINIMAL.replace("\"noop\"", "\"lilo\""), "lilo"),
        ];
        for (text, want) in cases {
            let msg = SystemConfig::parse(&text, Path::new("s.conf"))
                .unwrap_err()
                .to_string();
            assert!(msg.contains(want), "{want:?} not in {msg:?}");
        }
    }
}
