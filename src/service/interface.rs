//! `org.didymos.Installer1`: RAUC's methods, properties and signal, plus
//! `Cancel`, the file-descriptor variants and typed errors.

use std::sync::Arc;

use zbus::Connection;
use zbus::interface;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::OwnedFd;

use super::core::{Core, Refusal};
use super::error::Error;
use super::wire::{Dict, ProgressTuple};

pub struct Installer {
    pub(super) core: Arc<Core>,
}

#[interface(name = "org.didymos.Installer1")]
impl Installer {
    /// Starts installing the bundle at `source` (an absolute path; root only).
    /// A bundle the device would refuse (signature, compatible, version,
    /// `require-manifest-hash`) is refused here with its typed error; otherwise
    /// the call returns once the install has started and the result comes
    /// with `Completed`.
    async fn install_bundle(
        &self,
        source: String,
        args: Dict,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        self.core
            .install_path(conn, &header, &source, &args, Refusal::InCall)
            .await
    }

    /// Deprecated alias of `InstallBundle(source, {})`.
    async fn install(
        &self,
        source: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        self.core
            .install_path(conn, &header, &source, &Dict::new(), Refusal::InCall)
            .await
    }

    /// Starts installing the bundle the caller opened and passes as `fd`.
    async fn install_bundle_fd(
        &self,
        fd: OwnedFd,
        args: Dict,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        self.core.install_fd(conn, &header, fd, &args).await
    }

    /// Asks the running install to stop at its next safe point.
    async fn cancel(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        self.core.cancel(conn, &header).await
    }

    /// Verifies the bundle at `source` and describes it.
    #[zbus(out_args("info"))]
    async fn inspect_bundle(
        &self,
        source: String,
        args: Dict,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Dict, Error> {
        self.core.inspect_path(conn, &header, &source, &args).await
    }

    /// Verifies the bundle the caller opened and describes it.
    #[zbus(out_args("info"))]
    async fn inspect_bundle_fd(&self, fd: OwnedFd, args: Dict) -> Result<Dict, Error> {
        self.core.inspect_fd(fd, &args).await
    }

    /// The compatible and version of a bundle (RAUC's older call).
    #[zbus(out_args("compatible", "version"))]
    async fn info(
        &self,
        bundle: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(String, String), Error> {
        self.core.info(conn, &header, &bundle).await
    }

    /// Marks a slot good, bad or active.
    #[zbus(out_args("slot_name", "message"))]
    async fn mark(
        &self,
        state: String,
        slot_identifier: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(String, String), Error> {
        self.core
            .mark(conn, &header, &state, &slot_identifier)
            .await
    }

    /// Every slot with RAUC's status keys.
    #[zbus(out_args("slot_status_array"))]
    async fn get_slot_status(&self) -> Result<Vec<(String, Dict)>, Error> {
        self.core.slot_status().await
    }

    /// The slot the bootloader boots next.
    #[zbus(out_args("primary"))]
    async fn get_primary(&self) -> Result<String, Error> {
        self.core.primary().await
    }

    /// RAUC's artifact repositories; didymos has none, so this is empty.
    #[zbus(out_args("artifacts"))]
    async fn get_artifact_status(&self) -> Vec<Dict> {
        Vec::new()
    }

    /// "idle" or "installing".
    #[zbus(property)]
    fn operation(&self) -> String {
        self.core.operation()
    }

    /// The message of the last failed install ("" after a successful one).
    #[zbus(property)]
    fn last_error(&self) -> String {
        self.core.last_error()
    }

    /// The typed error name of the last failed install, e.g.
    /// `org.didymos.Installer1.Error.NotCompatible` ("" after a successful one).
    #[zbus(property)]
    fn last_error_name(&self) -> String {
        self.core.last_error_name()
    }

    /// The bundle the last install was started with: its path (for
    /// `InstallBundleFd`, the path the descriptor's file was opened at), or "".
    #[zbus(property)]
    fn last_bundle(&self) -> String {
        self.core.last_bundle()
    }

    /// The transaction id of the last install: the `transaction-id` argument,
    /// or a random UUID the service chose ("" before the first install).
    #[zbus(property)]
    fn last_transaction(&self) -> String {
        self.core.last_transaction()
    }

    /// (percent, message, nesting depth) of the running or last install.
    #[zbus(property)]
    fn progress(&self) -> ProgressTuple {
        self.core.progress()
    }

    #[zbus(property)]
    fn compatible(&self) -> String {
        self.core.facts.compatible.clone()
    }

    #[zbus(property)]
    fn variant(&self) -> String {
        self.core.facts.variant.clone()
    }

    /// The bootname of the booted slot ("" if not booted through a slot).
    #[zbus(property)]
    fn boot_slot(&self) -> String {
        self.core.facts.boot_slot.clone()
    }

    /// The bundle version in the booted slot ("" if unknown).
    #[zbus(property)]
    fn system_version(&self) -> String {
        self.core.facts.system_version.clone()
    }

    /// Anti-rollback: bundles with a lower security version are refused.
    /// Read from the store on every Get (a mark-good raises it), so not
    /// cached by clients.
    #[zbus(property(emits_changed_signal = "false"))]
    fn security_floor(&self) -> zbus::fdo::Result<u64> {
        crate::install::security::load(&self.core.config.store.path)
            .map(|f| f.floor)
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }

    /// An install finished: 0 on success, 1 on failure (see `LastError`).
    #[zbus(signal)]
    pub async fn completed(emitter: &SignalEmitter<'_>, result: i32) -> zbus::Result<()>;
}
