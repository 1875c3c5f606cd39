//! The typed D-Bus errors of `org.didymos.Installer1`, and how engine errors map to them.
//!
//! Every error a method returns has a name under `org.didymos.Installer1.Error.` so
//! clients can branch on the kind of failure instead of parsing messages. The same
//! names appear in the `LastErrorName` property after a failed install.

use zbus::DBusError;

use crate::boot::mark::MarkError;
use crate::bundle::BundleError;
use crate::install::InstallError;
use crate::status::StatusError;

/// The prefix of every error name.
pub const ERROR_PREFIX: &str = "org.didymos.Installer1.Error";

/// A typed D-Bus error. The string is the human-readable message.
#[derive(Debug, DBusError)]
#[zbus(prefix = "org.didymos.Installer1.Error")]
pub enum Error {
    /// A bus-level failure (the reply carries the bus's own error name).
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The bundle is for another device (`compatible` differs).
    NotCompatible(String),
    /// The bundle's version is below `[system] min-bundle-version`.
    VersionTooOld(String),
    /// The bundle's (or slot's) security version is below the device's
    /// anti-rollback floor.
    SecurityVersionTooOld(String),
    /// The booted slot was never marked good and has no boot attempts left:
    /// activating another slot would leave nothing to fall back to.
    BootedUnconfirmed(String),
    /// The slot to mark good or active would not boot (empty, or refused by
    /// the checks setup-root runs).
    NotBootable(String),
    /// The bundle's signature or its chain of trust does not verify.
    SignatureInvalid(String),
    /// The manifest hash differs from the `require-manifest-hash` argument.
    ManifestHashMismatch(String),
    /// The bundle is damaged, truncated or not a bundle.
    BundleInvalid(String),
    /// The device lacks objects a delta bundle relies on.
    MissingBaseObjects(String),
    /// Another operation is running.
    Busy(String),
    /// The caller may not do this.
    PermissionDenied(String),
    /// Not enough space in the store.
    NoSpace(String),
    /// The install was cancelled.
    Cancelled(String),
    /// `Cancel` was called while nothing was running.
    NotRunning(String),
    /// A method argument is unknown or has the wrong type.
    InvalidArgument(String),
    /// The source is of a kind this build cannot install from.
    NotSupported(String),
    /// A bundle on a server: the server could not be reached, refused, or
    /// answered wrongly (or the bundle changed on it); nothing was used.
    Network(String),
    /// The slot to mark or install into cannot be determined.
    NoSuchSlot(String),
    /// The bootloader refused or failed.
    Bootloader(String),
    /// A pre- or post-install handler failed.
    Handler(String),
    /// A previous install was interrupted (shown in `LastErrorName` after a restart).
    Interrupted(String),
    /// The last activated slot never got marked good and the bootloader fell
    /// back (shown in `LastErrorName` after the fallback boot).
    Rollback(String),
    /// Anything else (I/O errors, store errors); the message says what.
    Failed(String),
}

impl Error {
    /// The full D-Bus error name, e.g. `org.didymos.Installer1.Error.Busy`.
    pub fn dbus_name(&self) -> String {
        zbus::DBusError::name(self).to_string()
    }

    /// The human-readable message.
    pub fn message(&self) -> String {
        match self {
            Self::ZBus(e) => e.to_string(),
            Self::NotCompatible(m)
            | Self::VersionTooOld(m)
            | Self::SecurityVersionTooOld(m)
            | Self::BootedUnconfirmed(m)
            | Self::NotBootable(m)
            | Self::SignatureInvalid(m)
            | Self::ManifestHashMismatch(m)
            | Self::BundleInvalid(m)
            | Self::MissingBaseObjects(m)
            | Self::Busy(m)
            | Self::PermissionDenied(m)
            | Self::NoSpace(m)
            | Self::Cancelled(m)
            | Self::NotRunning(m)
            | Self::InvalidArgument(m)
            | Self::NotSupported(m)
            | Self::Network(m)
            | Self::NoSuchSlot(m)
            | Self::Bootloader(m)
            | Self::Handler(m)
            | Self::Interrupted(m)
            | Self::Rollback(m)
            | Self::Failed(m) => m.clone(),
        }
    }
}

/// The message of an error and all its causes, one line.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = cause.source();
    }
    msg
}

impl From<InstallError> for Error {
    fn from(e: InstallError) -> Self {
        let msg = chain(&e);
        match e {
            InstallError::Busy { .. } => Self::Busy(msg),
            InstallError::Bundle(b) => Self::from(b),
            InstallError::NotCompatible { .. } => Self::NotCompatible(msg),
            InstallError::VersionTooOld { .. } => Self::VersionTooOld(msg),
            InstallError::ManifestHashMismatch { .. } => Self::ManifestHashMismatch(msg),
            InstallError::NoTargetSlot(_) => Self::NoSuchSlot(msg),
            InstallError::MissingBaseObjects(_) => Self::MissingBaseObjects(msg),
            InstallError::NoSpace { .. }
            | InstallError::NoInodes { .. }
            | InstallError::Store(crate::store::StoreError::NoSpace { .. }) => Self::NoSpace(msg),
            InstallError::Cancelled => Self::Cancelled(msg),
            InstallError::Bootloader(_) => Self::Bootloader(msg),
            InstallError::Handler { .. } => Self::Handler(msg),
            InstallError::SecurityVersionTooOld { .. } => Self::SecurityVersionTooOld(msg),
            InstallError::BootedUnconfirmed { .. } => Self::BootedUnconfirmed(msg),
            InstallError::NotBootable { .. } => Self::NotBootable(msg),
            InstallError::Mark(m) => Self::from(m),
            InstallError::SecurityFloor(_)
            | InstallError::GcRefused(_)
            | InstallError::Keyring(_)
            | InstallError::Store(_)
            | InstallError::Io { .. }
            | InstallError::Raw { .. } => Self::Failed(msg),
        }
    }
}

impl From<BundleError> for Error {
    fn from(e: BundleError) -> Self {
        let msg = chain(&e);
        bundle_error_kind(&e)(msg)
    }
}

/// Which typed error a bundle error becomes.
fn bundle_error_kind(e: &BundleError) -> fn(String) -> Error {
    if e.network().is_some() {
        return Error::Network;
    }
    match e {
        BundleError::Signature(_) | BundleError::ManifestModified { .. } => Error::SignatureInvalid,
        BundleError::Open { .. } => Error::InvalidArgument,
        _ => Error::BundleInvalid,
    }
}

impl From<MarkError> for Error {
    fn from(e: MarkError) -> Self {
        let msg = chain(&e);
        match e {
            MarkError::Backend { .. } => Self::Bootloader(msg),
            _ => Self::NoSuchSlot(msg),
        }
    }
}

impl From<StatusError> for Error {
    fn from(e: StatusError) -> Self {
        Self::Failed(chain(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_under_the_prefix() {
        let cases = [
            (Error::Busy("x".into()), "Busy"),
            (Error::NotCompatible("x".into()), "NotCompatible"),
            (Error::SignatureInvalid("x".into()), "SignatureInvalid"),
            (Error::PermissionDenied("x".into()), "PermissionDenied"),
            (Error::NoSpace("x".into()), "NoSpace"),
            (Error::Cancelled("x".into()), "Cancelled"),
        ];
        for (err, suffix) in cases {
            assert_eq!(err.dbus_name(), format!("{ERROR_PREFIX}.{suffix}"));
            assert_eq!(err.message(), "x");
        }
    }

    #[test]
    fn install_errors_map_to_their_names() {
        let e: Error = InstallError::NotCompatible {
            bundle: "a".into(),
            system: "b".into(),
        }
        .into();
        assert_eq!(e.dbus_name(), format!("{ERROR_PREFIX}.NotCompatible"));
        assert!(e.message().contains("use --ignore-compatible"), "{e}");
        let e: Error = InstallError::Cancelled.into();
        assert_eq!(e.dbus_name(), format!("{ERROR_PREFIX}.Cancelled"));
    }
}
