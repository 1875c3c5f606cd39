//! The client side: a proxy for `org.didymos.Installer1`, used by the CLI.

use std::collections::HashMap;

use zbus::zvariant::{OwnedFd, Value};
use zbus::{Connection, proxy};

use super::BUS_NAME;
use super::error::Error;
use super::server::Bus;
use super::wire::{Dict, ProgressTuple};

#[proxy(
    interface = "org.didymos.Installer1",
    default_service = "org.didymos.Installer1",
    default_path = "/"
)]
pub trait Installer {
    fn install_bundle(&self, source: &str, args: HashMap<&str, Value<'_>>) -> Result<(), Error>;
    fn install_bundle_fd(&self, fd: OwnedFd, args: HashMap<&str, Value<'_>>) -> Result<(), Error>;
    fn install(&self, source: &str) -> Result<(), Error>;
    fn cancel(&self) -> Result<(), Error>;
    fn inspect_bundle(&self, source: &str, args: HashMap<&str, Value<'_>>) -> Result<Dict, Error>;
    fn inspect_bundle_fd(&self, fd: OwnedFd, args: HashMap<&str, Value<'_>>)
    -> Result<Dict, Error>;
    fn info(&self, bundle: &str) -> Result<(String, String), Error>;
    fn mark(&self, state: &str, slot_identifier: &str) -> Result<(String, String), Error>;
    fn get_slot_status(&self) -> Result<Vec<(String, Dict)>, Error>;
    fn get_primary(&self) -> Result<String, Error>;
    fn get_artifact_status(&self) -> Result<Vec<Dict>, Error>;

    #[zbus(property)]
    fn operation(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn last_error_name(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn progress(&self) -> zbus::Result<ProgressTuple>;
    #[zbus(property)]
    fn compatible(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn variant(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn boot_slot(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn system_version(&self) -> zbus::Result<String>;
    #[zbus(property(emits_changed_signal = "false"))]
    fn security_floor(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn last_bundle(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn last_transaction(&self) -> zbus::Result<String>;

    #[zbus(signal)]
    fn completed(&self, result: i32) -> zbus::Result<()>;
}

/// Connects to the bus the service runs on ([`Bus::from_env`]).
pub async fn connect() -> zbus::Result<Connection> {
    match Bus::from_env() {
        Bus::System => Connection::system().await,
        Bus::Session => Connection::session().await,
    }
}

/// A proxy to the running service, or `None` when no bus is reachable or
/// nobody owns the name (the CLI then works in-process).
pub async fn connect_if_running() -> zbus::Result<Option<InstallerProxy<'static>>> {
    let conn = match connect().await {
        Ok(conn) => conn,
        Err(e) => {
            log::debug!("no D-Bus connection ({e}); working in-process");
            return Ok(None);
        }
    };
    let dbus = zbus::fdo::DBusProxy::new(&conn).await?;
    let name = zbus::names::BusName::try_from(BUS_NAME)?;
    if !dbus.name_has_owner(name).await? {
        log::debug!("{BUS_NAME} is not running; working in-process");
        return Ok(None);
    }
    Ok(Some(InstallerProxy::new(&conn).await?))
}
