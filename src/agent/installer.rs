//! The installer as the agent sees it: `org.didymos.Installer1` over D-Bus,
//! through the service's own proxy ([`crate::service::client`]) and nothing
//! else of the service.

use std::collections::HashMap;
use std::path::Path;

use futures_lite::StreamExt;
use zbus::zvariant::{OwnedFd, OwnedValue, Value};

use crate::service::Error as ServiceError;
use crate::service::client::InstallerProxy;

/// One slot, from `GetSlotStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    pub name: String,
    pub bootname: Option<String>,
    /// `booted`, `active` or `inactive`.
    pub state: String,
    /// `good` or `bad`.
    pub boot_status: Option<String>,
    pub version: Option<String>,
    /// The installed bundle's manifest hash.
    pub hash: Option<String>,
}

/// What the agent needs to know about the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStatus {
    pub compatible: String,
    pub variant: String,
    /// The booted slot's bootname ("" when not booted through a slot).
    pub boot_slot: String,
    /// The booted slot's version ("" when unknown).
    pub system_version: String,
    pub slots: Vec<SlotView>,
    pub primary: Option<String>,
}

impl DeviceStatus {
    pub fn booted(&self) -> Option<&SlotView> {
        self.slots.iter().find(|s| s.state == "booted")
    }
    /// The slot holding the bundle with `hash`.
    pub fn slot_with(&self, hash: &str) -> Option<&SlotView> {
        self.slots.iter().find(|s| s.hash.as_deref() == Some(hash))
    }
    pub fn booted_version(&self) -> Option<&str> {
        Some(self.system_version.as_str()).filter(|v| !v.is_empty())
    }
}

/// Why an install did not happen or did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({name})")]
pub struct InstallFailure {
    /// The installer's typed error name (`org.didymos.Installer1.Error.…`).
    pub name: String,
    pub message: String,
}

impl InstallFailure {
    fn from_service(e: ServiceError) -> Self {
        let name = e.dbus_name();
        let mut message = e.message();
        if name.ends_with(".PermissionDenied") || name.ends_with(".AccessDenied") {
            message.push_str(
                "; the agent's user must be in the installer's [dbus] install-group \
                 (docs/fleet.md, \"Permissions\")",
            );
        }
        if name.ends_with(".NotSupported") {
            message.push_str("; this installer cannot install from this location");
        }
        Self { name, message }
    }
    pub fn is_cancelled(&self) -> bool {
        self.name.ends_with(".Cancelled")
    }
}

fn text(d: &HashMap<String, OwnedValue>, key: &str) -> Option<String> {
    match d.get(key).map(|v| &**v) {
        Some(Value::Str(s)) => Some(s.to_string()),
        _ => None,
    }
}

/// Where a bundle is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `http://` or `https://`: the installer fetches it (`InstallBundle`).
    Url(String),
    /// A file on the device: the agent opens it and passes the descriptor
    /// (`InstallBundleFd`), as an unprivileged client must.
    Path(std::path::PathBuf),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url(u) => f.write_str(u),
            Self::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

pub struct Installer {
    pub proxy: InstallerProxy<'static>,
}

impl Installer {
    pub async fn new(conn: &zbus::Connection) -> zbus::Result<Self> {
        Ok(Self {
            proxy: InstallerProxy::new(conn).await?,
        })
    }

    /// The device's status, from the installer's properties and `GetSlotStatus`.
    pub async fn status(&self) -> Result<DeviceStatus, ServiceError> {
        let p = &self.proxy;
        let slots = p
            .get_slot_status()
            .await?
            .into_iter()
            .map(|(name, d)| SlotView {
                name,
                bootname: text(&d, "bootname"),
                state: text(&d, "state").unwrap_or_default(),
                boot_status: text(&d, "boot-status"),
                version: text(&d, "bundle.version"),
                hash: text(&d, "bundle.hash"),
            })
            .collect();
        let primary = match p.get_primary().await {
            Ok(p) => Some(p),
            Err(ServiceError::NoSuchSlot(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(DeviceStatus {
            compatible: p.compatible().await?,
            variant: p.variant().await?,
            boot_slot: p.boot_slot().await?,
            system_version: p.system_version().await?,
            slots,
            primary,
        })
    }

    /// Installs the bundle at `location`, pinned to `manifest_hash`, and waits
    /// for the result. `progress` gets the installer's percentage as it
    /// changes; once `cancel` resolves, the install is cancelled.
    pub async fn install(
        &self,
        location: &Location,
        manifest_hash: &str,
        transaction: &str,
        mut progress: impl FnMut(i32, &str),
        cancel: impl std::future::Future<Output = ()>,
    ) -> Result<(), InstallFailure> {
        let bus = |e: zbus::Error| InstallFailure::from_service(ServiceError::ZBus(e));
        let p = &self.proxy;
        let mut completed = p.receive_completed().await.map_err(bus)?;
        let mut changes = p.receive_progress_changed().await;
        let mut args: HashMap<&str, Value<'_>> = HashMap::new();
        if !manifest_hash.is_empty() {
            args.insert("require-manifest-hash", Value::from(manifest_hash));
        }
        args.insert("transaction-id", Value::from(transaction));
        let started = match location {
            Location::Url(url) => p.install_bundle(url, args).await,
            Location::Path(path) => {
                let fd = open(path)?;
                p.install_bundle_fd(fd, args).await
            }
        };
        started.map_err(InstallFailure::from_service)?;
        let mut cancel = std::pin::pin!(cancel);
        let mut cancelled = false;
        loop {
            tokio::select! {
                Some(done) = completed.next() => {
                    let result = done.args().map_err(bus)?.result;
                    if result == 0 {
                        return Ok(());
                    }
                    return Err(InstallFailure {
                        name: p.last_error_name().await.map_err(bus)?,
                        message: p.last_error().await.map_err(bus)?,
                    });
                }
                Some(change) = changes.next() => {
                    if let Ok((percent, message, _)) = change.get().await {
                        progress(percent, &message);
                    }
                }
                () = &mut cancel, if !cancelled => {
                    cancelled = true;
                    if let Err(e) = p.cancel().await {
                        log::warn!("cannot cancel the install: {}", e.message());
                    }
                }
            }
        }
    }
}

fn open(path: &Path) -> Result<OwnedFd, InstallFailure> {
    let file = std::fs::File::open(path).map_err(|e| InstallFailure {
        name: "org.didymos.Agent1.Error.BundleUnreadable".into(),
        message: format!(
            "cannot open bundle {} as the agent's user: {e}; the file must be readable by it",
            path.display()
        ),
    })?;
    Ok(OwnedFd::from(std::os::fd::OwnedFd::from(file)))
}
