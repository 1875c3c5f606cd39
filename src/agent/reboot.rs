//! What may hold a due reboot back, and the reboot itself.
//!
//! - systemd-logind **block inhibitors** on `shutdown` (`systemd-inhibit
//!   --what=shutdown …`), read with `ListInhibitors`;
//! - vendor applications through the agent's own `Inhibit` (held while the
//!   returned descriptor stays open) and `Defer` (until a time).
//!
//! Both hold a reboot back at most `[updates] max-deferral` after it became
//! due, so no application can keep a device from an update forever.

use std::os::fd::OwnedFd;

use jiff::Timestamp;

/// One thing holding the reboot back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub who: String,
    pub why: String,
    pub source: &'static str,
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} (why: {:?})", self.source, self.who, self.why)
    }
}

#[zbus::proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
pub trait Logind {
    fn list_inhibitors(&self) -> zbus::Result<Vec<(String, String, String, String, u32, u32)>>;
    fn reboot(&self, interactive: bool) -> zbus::Result<()>;
}

/// logind's block inhibitors on shutdown. A system without logind has none.
pub async fn logind_holds(conn: &zbus::Connection) -> Vec<Hold> {
    let proxy = match LogindProxy::new(conn).await {
        Ok(p) => p,
        Err(e) => {
            log::debug!("no logind proxy ({e}); no inhibitors");
            return Vec::new();
        }
    };
    match proxy.list_inhibitors().await {
        Ok(list) => list
            .into_iter()
            .filter(|(what, _, _, mode, _, _)| {
                mode == "block" && what.split(':').any(|w| w == "shutdown")
            })
            .map(|(_, who, why, _, _, _)| Hold {
                who,
                why,
                source: "logind inhibitor",
            })
            .collect(),
        Err(e) => {
            log::debug!("cannot list logind's inhibitors ({e}); assuming none");
            Vec::new()
        }
    }
}

/// Vendor applications' holds, made through `org.didymos.Agent1`.
#[derive(Debug, Default)]
pub struct Controls {
    /// `Inhibit`: released when the caller closes its end.
    inhibits: Vec<(String, String, OwnedFd)>,
    /// `Defer`: until a time.
    pub defer: Option<(Timestamp, String, String)>,
}

impl Controls {
    /// Registers an inhibitor and returns the descriptor for the caller.
    pub fn inhibit(&mut self, who: String, why: String) -> std::io::Result<OwnedFd> {
        let (ours, theirs) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        self.inhibits.push((who, why, ours));
        Ok(theirs)
    }

    /// Forgets inhibitors whose callers closed their descriptor.
    fn prune(&mut self) {
        use rustix::event::{PollFd, PollFlags, poll};
        self.inhibits.retain(|(_, _, fd)| {
            let mut fds = [PollFd::new(fd, PollFlags::IN)];
            match poll(&mut fds, Some(&rustix::event::Timespec::default())) {
                // Readable or hung up: the write end is closed (the
                // caller never writes).
                Ok(n) if n > 0 => false,
                _ => true,
            }
        });
    }

    /// Every hold at `now`.
    pub fn holds(&mut self, now: Timestamp) -> Vec<Hold> {
        self.prune();
        let mut out: Vec<Hold> = self
            .inhibits
            .iter()
            .map(|(who, why, _)| Hold {
                who: who.clone(),
                why: why.clone(),
                source: "Inhibit by",
            })
            .collect();
        if let Some((until, who, why)) = &self.defer {
            if *until > now {
                out.push(Hold {
                    who: who.clone(),
                    why: format!("{why} (until {until})"),
                    source: "Defer by",
                });
            } else {
                self.defer = None;
            }
        }
        out
    }
}

/// Reboots: the configured command, or logind's `Reboot`.
pub async fn reboot(command: Option<&[String]>, conn: &zbus::Connection) -> Result<(), String> {
    if let Some(cmd) = command {
        let argv = cmd.to_vec();
        let status = tokio::task::spawn_blocking(move || {
            std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .status()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot run reboot-command {:?}: {e}", cmd[0]))?;
        if !status.success() {
            return Err(format!("reboot-command {cmd:?} failed ({status})"));
        }
        return Ok(());
    }
    let proxy = LogindProxy::new(conn)
        .await
        .map_err(|e| format!("cannot reach systemd-logind: {e}"))?;
    proxy.reboot(false).await.map_err(|e| {
        format!(
            "systemd-logind refused to reboot: {e}; the agent's user needs the polkit rule \
             didymos ships (docs/fleet.md, \"Permissions\"), or set [updates] reboot-command"
        )
    })
}
