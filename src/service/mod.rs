//! The D-Bus service: `org.didymos.Installer1` on the system bus.
//!
//! - [`core`]: the state and the operations (one at a time; installs on a blocking thread);
//! - [`interface`] and [`rauc`]: the two exported interfaces over the same core;
//! - [`wire`]: D-Bus argument and reply types, kept apart from the domain types;
//! - [`error`]: typed errors under `org.didymos.Installer1.Error`;
//! - [`auth`]: who may install, mark and cancel;
//! - [`client`]: the proxy the CLI uses.
//!
//! The API is described in `docs/dbus-api.md`; `dbus/org.didymos.Installer1.xml`
//! is its introspection data.

pub mod auth;
pub mod client;
mod core;
mod engine;
pub mod error;
mod interface;
mod rauc;
mod server;
mod signals;
pub mod wire;

pub use engine::BundleInfo;
pub use error::Error;
pub use server::{Bus, ServiceError, run, serve};

/// The well-known name on the bus.
pub const BUS_NAME: &str = "org.didymos.Installer1";
/// The interface name.
pub const INTERFACE: &str = "org.didymos.Installer1";
/// The one object.
pub const OBJECT_PATH: &str = "/";
/// RAUC's name, owned too with `[dbus] rauc-compat = true`.
pub const RAUC_BUS_NAME: &str = "de.pengutronix.rauc";
/// RAUC's interface.
pub const RAUC_INTERFACE: &str = "de.pengutronix.rauc.Installer";
