//! `de.pengutronix.rauc.Installer`: RAUC's interface with its exact method,
//! property and signal names and signatures, on the same object and state as
//! `org.didymos.Installer1`, so clients written for RAUC work unchanged.
//! Exported (with the name `de.pengutronix.rauc`) when `[dbus] rauc-compat = true`.

use std::sync::Arc;

use zbus::Connection;
use zbus::interface;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use super::core::{Core, Refusal};
use super::error::Error;
use super::wire::{Dict, ProgressTuple};

pub struct RaucInstaller {
    pub(super) core: Arc<Core>,
}

#[interface(name = "de.pengutronix.rauc.Installer")]
impl RaucInstaller {
    async fn install_bundle(
        &self,
        source: String,
        args: Dict,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        self.core
            .install_path(conn, &header, &source, &args, Refusal::AfterStart)
            .await
    }

    async fn install(
        &self,
        source: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        self.core
            .install_path(conn, &header, &source, &Dict::new(), Refusal::AfterStart)
            .await
    }

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

    #[zbus(out_args("compatible", "version"))]
    async fn info(
        &self,
        bundle: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(String, String), Error> {
        self.core.info(conn, &header, &bundle).await
    }

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

    #[zbus(out_args("slot_status_array"))]
    async fn get_slot_status(&self) -> Result<Vec<(String, Dict)>, Error> {
        self.core.slot_status().await
    }

    #[zbus(out_args("primary"))]
    async fn get_primary(&self) -> Result<String, Error> {
        self.core.primary().await
    }

    #[zbus(out_args("artifacts"))]
    async fn get_artifact_status(&self) -> Vec<Dict> {
        Vec::new()
    }

    #[zbus(property)]
    fn operation(&self) -> String {
        self.core.operation()
    }

    #[zbus(property)]
    fn last_error(&self) -> String {
        self.core.last_error()
    }

    #[zbus(property)]
    fn last_bundle(&self) -> String {
        self.core.last_bundle()
    }

    #[zbus(property)]
    fn last_transaction(&self) -> String {
        self.core.last_transaction()
    }

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

    #[zbus(property)]
    fn boot_slot(&self) -> String {
        self.core.facts.boot_slot.clone()
    }

    #[zbus(signal)]
    pub async fn completed(emitter: &SignalEmitter<'_>, result: i32) -> zbus::Result<()>;
}
