//! Building the connection and running the daemon.

use std::sync::Arc;

use zbus::Connection;

use super::auth::Policy;
use super::core::Core;
use super::interface::Installer;
use super::rauc::RaucInstaller;
use super::{BUS_NAME, OBJECT_PATH, RAUC_BUS_NAME};
use crate::config::SystemConfig;

/// Which bus to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    System,
    Session,
}

impl Bus {
    /// The system bus, unless `DBUS_STARTER_BUS_TYPE=session` (as RAUC does).
    pub fn from_env() -> Self {
        match std::env::var("DBUS_STARTER_BUS_TYPE").as_deref() {
            Ok("session") => Self::Session,
            _ => Self::System,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Session => "session",
        }
    }

    pub(crate) fn builder(self) -> zbus::Result<zbus::connection::Builder<'static>> {
        match self {
            Self::System => zbus::connection::Builder::system(),
            Self::Session => zbus::connection::Builder::session(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Config(String),
    #[error(
        "cannot serve {name} on the {bus} bus: {source}; is another didymos service running, \
         or does the bus policy (org.didymos.Installer1.conf) not allow this user to own the name?"
    )]
    Bus {
        name: String,
        bus: &'static str,
        source: Box<zbus::Error>,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Serves the installer on `bus`: the object is exported first, and the names
/// are requested only after it is served, so a client that sees the name can
/// call at once.
pub async fn serve(config: SystemConfig, bus: Bus) -> Result<Connection, ServiceError> {
    let etc_group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let policy = Policy::resolve(config.dbus.install_group.as_deref(), &etc_group)
        .map_err(|e| ServiceError::Config(format!("{}: {e}", config.path.display())))?;
    let rauc_compat = config.dbus.rauc_compat;
    // Reading the status at start does I/O; keep it off the async thread.
    let core = tokio::task::spawn_blocking(move || Core::new(config, policy))
        .await
        .map(Arc::new)
        .map_err(|e| ServiceError::Config(format!("reading the system state failed: {e}")))?;
    let err = |source| ServiceError::Bus {
        name: BUS_NAME.into(),
        bus: bus.as_str(),
        source: Box::new(source),
    };
    let mut builder = bus
        .builder()
        .map_err(err)?
        .serve_at(OBJECT_PATH, Installer { core: core.clone() })
        .map_err(err)?;
    if rauc_compat {
        builder = builder
            .serve_at(OBJECT_PATH, RaucInstaller { core: core.clone() })
            .map_err(err)?;
    }
    builder = builder.name(BUS_NAME).map_err(err)?;
    if rauc_compat {
        builder = builder.name(RAUC_BUS_NAME).map_err(err)?;
    }
    let conn = builder.build().await.map_err(err)?;
    log::info!(
        "serving {BUS_NAME}{} on the {} bus",
        if rauc_compat {
            format!(" and {RAUC_BUS_NAME}")
        } else {
            String::new()
        },
        bus.as_str()
    );
    Ok(conn)
}

/// Runs the daemon until SIGTERM or SIGINT. A running install is cancelled
/// at its next safe point and the daemon exits once it has stopped.
pub fn run(config: SystemConfig, bus: Bus) -> Result<(), ServiceError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServiceError::Runtime)?;
    rt.block_on(async move {
        let conn = serve(config, bus).await?;
        wait_for_stop().await;
        log::info!("stopping");
        if let Ok(iface) = conn
            .object_server()
            .interface::<_, Installer>(OBJECT_PATH)
            .await
        {
            let core = iface.get().await.core.clone();
            core.cancel_for_shutdown();
            while core.operation() != "idle" {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        Ok(())
    })
}

async fn wait_for_stop() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            log::warn!("cannot install signal handlers; stop the service with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}
