//! Emitting `PropertiesChanged` and `Completed` on every exported interface.

use zbus::Connection;
use zbus::object_server::Interface;

use super::OBJECT_PATH;
use super::core::Core;
use super::interface::Installer;
use super::rauc::RaucInstaller;

/// A property whose change is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    Operation,
    LastError,
    Progress,
    /// `LastBundle` and `LastTransaction` (they change together).
    LastBundle,
}

/// Announces changed properties on `org.didymos.Installer1` and, when exported,
/// on `de.pengutronix.rauc.Installer`. A failure to emit is logged, never fatal:
/// the install goes on whether or not anyone listens.
pub async fn properties_changed(conn: &Connection, core: &Core, props: &[Changed]) {
    let server = conn.object_server();
    if let Ok(iface) = server.interface::<_, Installer>(OBJECT_PATH).await {
        let emitter = iface.signal_emitter();
        let i = iface.get().await;
        for p in props {
            let r = match p {
                Changed::Operation => i.operation_changed(emitter).await,
                Changed::LastError => {
                    let r = i.last_error_changed(emitter).await;
                    r.and(i.last_error_name_changed(emitter).await)
                }
                Changed::Progress => i.progress_changed(emitter).await,
                Changed::LastBundle => {
                    let r = i.last_bundle_changed(emitter).await;
                    r.and(i.last_transaction_changed(emitter).await)
                }
            };
            log_failure(r, Installer::name().as_str());
        }
    }
    if core.rauc_compat()
        && let Ok(iface) = server.interface::<_, RaucInstaller>(OBJECT_PATH).await
    {
        let emitter = iface.signal_emitter();
        let i = iface.get().await;
        for p in props {
            let r = match p {
                Changed::Operation => i.operation_changed(emitter).await,
                Changed::LastError => i.last_error_changed(emitter).await,
                Changed::Progress => i.progress_changed(emitter).await,
                Changed::LastBundle => {
                    let r = i.last_bundle_changed(emitter).await;
                    r.and(i.last_transaction_changed(emitter).await)
                }
            };
            log_failure(r, RaucInstaller::name().as_str());
        }
    }
}

/// Emits `Completed(code)` on every exported interface.
pub async fn completed(conn: &Connection, core: &Core, code: i32) {
    let server = conn.object_server();
    if let Ok(iface) = server.interface::<_, Installer>(OBJECT_PATH).await {
        log_failure(
            Installer::completed(iface.signal_emitter(), code).await,
            Installer::name().as_str(),
        );
    }
    if core.rauc_compat()
        && let Ok(iface) = server.interface::<_, RaucInstaller>(OBJECT_PATH).await
    {
        log_failure(
            RaucInstaller::completed(iface.signal_emitter(), code).await,
            RaucInstaller::name().as_str(),
        );
    }
}

fn log_failure(r: zbus::Result<()>, interface: &str) {
    if let Err(e) = r {
        log::warn!("cannot emit a signal on {interface}: {e}");
    }
}
