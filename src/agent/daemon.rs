//! The agent as a service: its loop, and `org.didymos.Agent1` on the bus
//! (object `/`), through which vendor applications hold a reboot back
//! (`Inhibit`, `Defer`), ask for a check now, and read what the agent found.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{fdo, interface};

use super::state::Report;
use super::step::{Agent, Mode};

/// The agent's name on the bus.
pub const AGENT_BUS_NAME: &str = "org.didymos.Agent1";

/// Where "now" comes from.
#[derive(Debug, Clone)]
pub enum Clock {
    System,
    /// An RFC 3339 time read from a file at every step (tests and
    /// simulations move time by writing it; nothing sleeps).
    File(PathBuf),
    Fixed(Timestamp),
}

impl Clock {
    pub fn now(&self) -> Timestamp {
        match self {
            Self::System => Timestamp::now(),
            Self::Fixed(t) => *t,
            Self::File(p) => std::fs::read_to_string(p)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or_else(|| {
                    log::warn!(
                        "{} holds no RFC 3339 time; using the real clock",
                        p.display()
                    );
                    Timestamp::now()
                }),
        }
    }
}

pub struct AgentIface {
    agent: Arc<Agent>,
    clock: Clock,
    wake: Arc<tokio::sync::Notify>,
    last: Arc<Mutex<Option<Report>>>,
}

impl AgentIface {
    fn last<T>(&self, f: impl FnOnce(&Report) -> T) -> Option<T> {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(f)
    }
}

#[interface(name = "org.didymos.Agent1")]
impl AgentIface {
    /// Holds a due reboot back while the returned descriptor stays open
    /// (close it to release), at most `[updates] max-deferral`.
    async fn inhibit(&self, who: String, why: String) -> fdo::Result<zbus::zvariant::OwnedFd> {
        log::info!("reboot inhibited by {who:?}: {why}");
        let fd = self
            .agent
            .controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .inhibit(who, why)
            .map_err(|e| fdo::Error::Failed(format!("cannot make the inhibitor's pipe: {e}")))?;
        Ok(zbus::zvariant::OwnedFd::from(fd))
    }

    /// Holds a due reboot back for `seconds` from now (0 clears), at most
    /// `[updates] max-deferral` after it became due; returns until when.
    async fn defer(&self, seconds: u64, why: String, #[zbus(header)] header: Header<'_>) -> String {
        let who = header.sender().map(|s| s.to_string()).unwrap_or_default();
        let max = self.agent.cfg.max_deferral.as_secs();
        let now = self.clock.now();
        let until = now
            .checked_add(jiff::SignedDuration::from_secs(seconds.min(max) as i64))
            .unwrap_or(now);
        let mut c = self
            .agent
            .controls
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        c.defer = (seconds > 0).then(|| (until, who.clone(), why.clone()));
        log::info!("reboot deferred by {who} until {until}: {why}");
        until.to_string()
    }

    /// Runs a check now instead of at the next interval.
    async fn check_now(&self) {
        self.wake.notify_one();
    }

    #[zbus(property)]
    fn last_check(&self) -> String {
        self.last(|r| format!("{}: {}", r.at, r.outcome))
            .unwrap_or_default()
    }
    #[zbus(property)]
    fn next_step(&self) -> String {
        self.last(|r| r.next_step.clone()).unwrap_or_default()
    }
    #[zbus(property)]
    fn reason(&self) -> String {
        self.last(|r| r.reason.clone()).unwrap_or_default()
    }

    /// A step finished; `outcome` is its one-line result.
    #[zbus(signal)]
    async fn checked(emitter: &SignalEmitter<'_>, outcome: &str) -> zbus::Result<()>;
}

/// A random share of `jitter` (OpenSSL's generator).
fn jitter(jitter: Duration) -> Duration {
    let mut b = [0u8; 8];
    if jitter.is_zero() || openssl::rand::rand_bytes(&mut b).is_err() {
        return Duration::ZERO;
    }
    Duration::from_millis(u64::from_le_bytes(b) % (jitter.as_millis() as u64 + 1))
}

/// Serves `org.didymos.Agent1` and runs steps until SIGTERM (or once).
pub async fn run(agent: Agent, clock: Clock, once: bool) -> Result<(), String> {
    let agent = Arc::new(agent);
    let wake = Arc::new(tokio::sync::Notify::new());
    let last = Arc::new(Mutex::new(None));
    let conn = agent.conn.clone();
    let iface = AgentIface {
        agent: agent.clone(),
        clock: clock.clone(),
        wake: wake.clone(),
        last: last.clone(),
    };
    if !once {
        conn.object_server()
            .at("/", iface)
            .await
            .map_err(|e| format!("cannot serve the agent's object: {e}"))?;
        conn.request_name_with_flags(
            AGENT_BUS_NAME,
            zbus::fdo::RequestNameFlags::DoNotQueue.into(),
        )
        .await
        .map_err(|e| {
            format!(
                "cannot take the name {AGENT_BUS_NAME} on the bus ({e}); another agent runs, or \
                 the bus policy (dbus/org.didymos.Agent1.conf) is not installed"
            )
        })?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    loop {
        let now = clock.now();
        let report = match agent.step(now, Mode::Act).await {
            Ok(r) => r,
            Err(e) => {
                log::error!("{e}");
                super::state::Report {
                    at: now,
                    outcome: "the check failed".into(),
                    next_step: "check again later".into(),
                    reason: e.to_string(),
                    next_check: None,
                }
            }
        };
        log::info!(
            "{}; next: {}; because {}",
            report.outcome,
            report.next_step,
            report.reason
        );
        if once {
            println!("{}", super::status_lines(&report).join("\n"));
            return Ok(());
        }
        *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
        if let Ok(i) = conn.object_server().interface::<_, AgentIface>("/").await {
            let e = i.signal_emitter();
            let iface = i.get().await;
            let _ = iface.last_check_changed(e).await;
            let _ = iface.next_step_changed(e).await;
            let _ = iface.reason_changed(e).await;
            let _ = AgentIface::checked(e, &report.outcome).await;
        }
        let wait = report
            .next_check
            .map(|t| t.duration_since(now).unsigned_abs())
            .unwrap_or(agent.cfg.interval)
            .min(agent.cfg.interval)
            .max(Duration::from_secs(1))
            + jitter(agent.cfg.jitter);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
            _ = term.recv() => {
                log::info!("stopping");
                return Ok(());
            }
        }
    }
}
