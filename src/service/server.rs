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
    #[error("cannot serve {name} on the {bus} bus: {source}; {hint}")]
    Bus {
        name: String,
        bus: &'static str,
        source: Box<zbus::Error>,
        hint: &'static str,
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
    let bus_error = |name: &str, source: zbus::Error| ServiceError::Bus {
        name: name.into(),
        bus: bus.as_str(),
        hint: bus_hint(&source),
        source: Box::new(source),
    };
    let err = |source| bus_error(BUS_NAME, source);
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
    let conn = builder.build().await.map_err(err)?;
    // The names are requested once the object is served. Not through the
    // builder: it queues a request for a name another connection owns and
    // reports success, so a second daemon would sit waiting to take over.
    let names = if rauc_compat {
        vec![BUS_NAME, RAUC_BUS_NAME]
    } else {
        vec![BUS_NAME]
    };
    for name in names {
        let reply = conn
            .request_name_with_flags(name, zbus::fdo::RequestNameFlags::DoNotQueue.into())
            .await
            .map_err(|source| bus_error(name, source))?;
        if !matches!(
            reply,
            zbus::fdo::RequestNameReply::PrimaryOwner | zbus::fdo::RequestNameReply::AlreadyOwner
        ) {
            return Err(bus_error(name, zbus::Error::NameTaken));
        }
    }
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

/// What to do about a failure to serve, by its cause.
fn bus_hint(e: &zbus::Error) -> &'static str {
    match e {
        zbus::Error::NameTaken => "another didymos service owns the name already; stop it first",
        zbus::Error::MethodError(name, _, _) if name.as_str().ends_with(".AccessDenied") => {
            "the bus policy does not let this user own the name; install \
             dbus/org.didymos.Installer1.conf into /usr/share/dbus-1/system.d/ (or run as root)"
        }
        zbus::Error::Connection(..)
        | zbus::Error::InputOutput(_)
        | zbus::Error::Address(_)
        | zbus::Error::Handshake(_) => {
            "no message bus answers there: is dbus-daemon running (dbus.service), or does \
             DBUS_SYSTEM_BUS_ADDRESS point elsewhere? Use --session for a session bus"
        }
        _ => "see the cause above",
    }
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
