//! Who may do what: the caller's credentials come from the bus, never from the
//! caller's own claims.
//!
//! Reading status and inspecting bundles is open to everyone; installing,
//! marking and cancelling need uid 0 or membership (primary or supplementary)
//! in the group named by `[dbus] install-group`. The shipped bus policy
//! (`dbus/org.didymos.Installer1.conf`) enforces the same split a second time
//! at the bus, for the default group name.

use zbus::Connection;
use zbus::message::Header;

use super::error::Error;

/// A privileged action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Install,
    Mark,
    Cancel,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Install => "install bundles",
            Self::Mark => "mark slots",
            Self::Cancel => "cancel an install",
        }
    }
}

/// The caller of a method, as the bus daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    /// Primary and supplementary groups, when the bus reports them.
    pub gids: Vec<u32>,
}

impl Caller {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// Who may perform privileged actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The `[dbus] install-group`, resolved to its gid and name.
    pub install_group: Option<(u32, String)>,
}

impl Policy {
    /// Resolves `[dbus] install-group` (a name from /etc/group, or a number).
    pub fn resolve(group: Option<&str>, etc_group: &str) -> Result<Self, String> {
        let Some(group) = group else {
            return Ok(Self {
                install_group: None,
            });
        };
        let gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => gid_of(etc_group, group).ok_or_else(|| {
                format!(
                    "[dbus] install-group {group:?} is not a group in /etc/group; \
                     create it (groupadd {group}) or remove the setting"
                )
            })?,
        };
        Ok(Self {
            install_group: Some((gid, group.to_owned())),
        })
    }

    /// Whether `caller` may perform `action`.
    pub fn check(&self, caller: &Caller, action: Action) -> Result<(), Error> {
        if caller.is_root() {
            return Ok(());
        }
        if let Some((gid, _)) = &self.install_group
            && caller.gids.contains(gid)
        {
            return Ok(());
        }
        let who = match &self.install_group {
            Some((_, name)) => format!("root or members of the group {name:?}"),
            None => "root".to_owned(),
        };
        Err(Error::PermissionDenied(format!(
            "uid {} may not {}: only {who} may ([dbus] install-group in system.conf)",
            caller.uid,
            action.as_str()
        )))
    }
}

/// Finds a group's gid in /etc/group text (`name:password:gid:members`).
pub fn gid_of(etc_group: &str, name: &str) -> Option<u32> {
    etc_group.lines().find_map(|line| {
        let mut fields = line.split(':');
        let n = fields.next()?;
        let _password = fields.next()?;
        let gid = fields.next()?;
        (n == name).then(|| gid.parse().ok()).flatten()
    })
}

/// Asks the bus who sent the message `header` belongs to.
pub async fn caller(conn: &Connection, header: &Header<'_>) -> Result<Caller, Error> {
    let sender = header
        .sender()
        .ok_or_else(|| Error::PermissionDenied("the call carries no sender; refusing".into()))?
        .to_owned();
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let creds = dbus
        .get_connection_credentials(sender.clone().into())
        .await
        .map_err(|e| Error::Failed(format!("cannot ask the bus who {sender} is: {e}")))?;
    let uid = match creds.unix_user_id() {
        Some(uid) => uid,
        None => dbus
            .get_connection_unix_user(sender.clone().into())
            .await
            .map_err(|e| Error::Failed(format!("cannot ask the bus who {sender} is: {e}")))?,
    };
    let gids = creds.unix_group_ids().cloned().unwrap_or_default();
    Ok(Caller { uid, gids })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: &str = "root:x:0:\nwheel:x:10:alice\ndidymos:x:990:bob,carol\nbroken\n";

    #[test]
    fn group_lookup() {
        let cases = [
            ("root", Some(0)),
            ("didymos", Some(990)),
            ("wheel", Some(10)),
            ("nobody", None),
            ("broken", None),
            ("", None),
        ];
        for (name, gid) in cases {
            assert_eq!(gid_of(GROUP, name), gid, "{name}");
        }
    }

    #[test]
    fn policy() {
        let none = Policy::resolve(None, GROUP).unwrap();
        let group = Policy::resolve(Some("didymos"), GROUP).unwrap();
        let numeric = Policy::resolve(Some("990"), GROUP).unwrap();
        assert_eq!(
            group.install_group.as_ref().map(|g| g.0),
            numeric.install_group.map(|g| g.0)
        );
        assert!(
            Policy::resolve(Some("nope"), GROUP)
                .unwrap_err()
                .contains("groupadd nope")
        );

        let root = Caller {
            uid: 0,
            gids: vec![0],
        };
        let member = Caller {
            uid: 1000,
            gids: vec![1000, 990],
        };
        let other = Caller {
            uid: 1001,
            gids: vec![1001],
        };
        for action in [Action::Install, Action::Mark, Action::Cancel] {
            assert!(none.check(&root, action).is_ok());
            assert!(none.check(&member, action).is_err());
            assert!(group.check(&member, action).is_ok());
            let err = group.check(&other, action).unwrap_err();
            assert!(matches!(err, Error::PermissionDenied(_)));
            assert!(err.message().contains("uid 1001"), "{err}");
        }
    }
}
