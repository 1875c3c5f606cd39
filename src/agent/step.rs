//! One step of the agent's state machine (docs/fleet.md, "The state
//! machine"): continue an update in flight (verify it after the reboot,
//! or reboot when the strategy and the inhibitors allow), or look for a new
//! one and install it. `agent check` runs the same step without acting.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::channel::VerifiedChannel;
use super::config::{AgentConfig, Source, StrategyConfig};
use super::ddi::{Ddi, Feedback};
use super::http::Http;
use super::installer::{DeviceStatus, InstallFailure, Installer, Location};
use super::plan::{DeviceView, Next, next_hop};
use super::reboot::{self, Controls};
use super::state::{AgentState, Failed, Origin, Outcome, Pending, Phase, Report};
use super::strategy::{self, FleetLock, Permit};

/// Whether a step may change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Look and say what would happen (`agent check`).
    Check,
    Act,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AgentError(pub String);

impl From<super::state::StateError> for AgentError {
    fn from(e: super::state::StateError) -> Self {
        Self(e.to_string())
    }
}
impl From<crate::service::Error> for AgentError {
    fn from(e: crate::service::Error) -> Self {
        Self(format!(
            "cannot read the device's status from the installer (org.didymos.Installer1): {}",
            e.message()
        ))
    }
}

/// Installer errors that say the release can never install here, so it is
/// not tried again; anything else (busy, network, space) is retried.
const PERMANENT: &[&str] = &[
    "NotCompatible",
    "VersionTooOld",
    "SecurityVersionTooOld",
    "SignatureInvalid",
    "ManifestHashMismatch",
    "BundleInvalid",
    "MissingBaseObjects",
];

fn permanent(f: &InstallFailure) -> bool {
    PERMANENT
        .iter()
        .any(|k| f.name.rsplit('.').next() == Some(*k))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("an agent worker thread panicked")
}

fn later(now: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

pub struct Agent {
    pub cfg: AgentConfig,
    pub conn: zbus::Connection,
    pub installer: Installer,
    pub http: Http,
    pub controls: Arc<Mutex<Controls>>,
    pub device_id: String,
    pub wariness: f64,
    config_sent: AtomicBool,
    /// Whether this process gave back a fleet lock it might hold (once, at
    /// the first idle step on a good slot, as Zincati does at start).
    lock_released: AtomicBool,
}

fn report(
    now: Timestamp,
    outcome: String,
    next_step: String,
    reason: String,
    next: Option<Timestamp>,
) -> Report {
    Report {
        at: now,
        outcome,
        next_step,
        reason,
        next_check: next,
    }
}

/// The record of an install that starts now from the booted slot.
fn installing(
    version: &str,
    manifest_hash: &str,
    origin: Origin,
    dev: &DeviceStatus,
    now: Timestamp,
) -> Pending {
    Pending {
        version: version.to_owned(),
        manifest_hash: manifest_hash.to_owned(),
        origin,
        phase: Phase::Installing,
        from_version: dev.booted_version().map(str::to_owned),
        from_slot: dev.booted().map(|s| s.name.clone()),
        started: now,
        due_since: None,
        holds_lock: false,
    }
}

impl Agent {
    /// What `agent check` says when there is something to install.
    fn would_install(&self, now: Timestamp, found: String, what: String, why: String) -> Report {
        report(
            now,
            found,
            format!(
                "install {what}, then reboot by strategy {}",
                self.cfg.strategy.name()
            ),
            why,
            Some(now),
        )
    }

    pub fn new(
        cfg: AgentConfig,
        conn: zbus::Connection,
        installer: Installer,
        http: Http,
        device_id: String,
    ) -> Self {
        let wariness = cfg
            .wariness
            .unwrap_or_else(|| super::plan::rollout::wariness_from_id(&device_id));
        Self {
            cfg,
            conn,
            installer,
            http,
            controls: Arc::default(),
            device_id,
            wariness,
            config_sent: AtomicBool::new(false),
            lock_released: AtomicBool::new(false),
        }
    }

    fn next_check(&self, now: Timestamp) -> Timestamp {
        later(now, self.cfg.interval)
    }

    fn ddi(&self) -> Option<Ddi> {
        match &self.cfg.source {
            Source::Hawkbit(h) => {
                let id = h
                    .controller_id
                    .clone()
                    .unwrap_or_else(|| self.device_id.clone());
                Some(Ddi::new(self.http.clone(), h, &id))
            }
            _ => None,
        }
    }

    /// One step at `now`; in [`Mode::Act`] its report is saved with the state.
    pub async fn step(&self, now: Timestamp, mode: Mode) -> Result<Report, AgentError> {
        let dir = self.cfg.state_directory.clone();
        let mut state = AgentState::load(&dir)?;
        let result = self.step_with(&mut state, now, mode).await;
        let r = match result {
            Ok(r) => r,
            Err(e) => report(
                now,
                "the check failed".into(),
                format!("check again at {}", self.next_check(now)),
                e.0,
                Some(self.next_check(now)),
            ),
        };
        if mode == Mode::Act {
            state.last_check = Some(r.clone());
            state.save(&dir)?;
        }
        Ok(r)
    }

    async fn step_with(
        &self,
        state: &mut AgentState,
        now: Timestamp,
        mode: Mode,
    ) -> Result<Report, AgentError> {
        if !self.cfg.enabled {
            return Ok(report(
                now,
                "automatic updates are disabled".into(),
                "nothing".into(),
                match self.cfg.source {
                    Source::None => "no update source is configured: set [updates] channel or \
                                     [updates.hawkbit] server in system.conf (docs/fleet.md)"
                        .into(),
                    _ => "[updates] enabled = false".into(),
                },
                None,
            ));
        }
        let dev = self.installer.status().await?;
        if state.pending.is_some() {
            return self.continue_pending(state, &dev, now, mode).await;
        }
        // Idle with a good booted slot: a fleet lock this device may still
        // hold (an agent stopped before it released it) is given back.
        if mode == Mode::Act
            && let StrategyConfig::FleetLock { .. } = &self.cfg.strategy
            && dev.booted().and_then(|b| b.boot_status.as_deref()) == Some("good")
            && !self.lock_released.load(Ordering::Relaxed)
        {
            match self.release_lock().await {
                Ok(()) => self.lock_released.store(true, Ordering::Relaxed),
                Err(e) => log::warn!("cannot release the fleet lock: {e}"),
            }
        }
        match &self.cfg.source {
            Source::None => unreachable!("enabled implies a source"),
            Source::Channel { location, keyring } => {
                self.channel_step(state, &dev, location, keyring, now, mode)
                    .await
            }
            Source::Hawkbit(_) => self.ddi_step(state, &dev, now, mode).await,
        }
    }

    async fn channel_step(
        &self,
        state: &mut AgentState,
        dev: &DeviceStatus,
        location: &str,
        keyring: &crate::config::KeyringSection,
        now: Timestamp,
        mode: Mode,
    ) -> Result<Report, AgentError> {
        let http = self.http.clone();
        let loc = location.to_owned();
        let bytes = blocking(move || super::source::fetch(&http, &loc))
            .await
            .map_err(AgentError)?;
        let keyring = crate::keyring::Keyring::load(keyring)
            .map_err(|e| AgentError(format!("cannot load the channel keyring: {e}")))?;
        let verified = VerifiedChannel::verify(&bytes, &keyring, location)
            .map_err(|e| AgentError(e.to_string()))?;
        verified
            .check_fresh(
                now,
                state.channel_sequences.get(location).copied(),
                location,
            )
            .map_err(|e| AgentError(e.to_string()))?;
        let channel = verified.channel();
        if mode == Mode::Act {
            state
                .channel_sequences
                .insert(location.to_owned(), channel.channel.sequence);
        }
        let failed = state.failed_hashes();
        let view = DeviceView {
            compatible: &dev.compatible,
            booted_version: dev.booted_version(),
            wariness: self.wariness,
            allow_downgrade: self.cfg.allow_downgrade,
            failed: &failed,
        };
        let hop = next_hop(channel, &view, now);
        let name = &channel.channel.name;
        let notes = if hop.notes.is_empty() {
            String::new()
        } else {
            format!("; {}", hop.notes.join("; "))
        };
        let next = self.next_check(now);
        Ok(match hop.next {
            Next::Update { release, from } => {
                let why = format!(
                    "channel {name:?} (sequence {}) has an edge {from} -> {}{}{notes}",
                    channel.channel.sequence,
                    release.version,
                    if release.barrier { " (a barrier)" } else { "" }
                );
                if mode == Mode::Check {
                    return Ok(self.would_install(
                        now,
                        format!("update available: {from} -> {}", release.version),
                        format!(
                            "{} (pinned to manifest {})",
                            release.version,
                            &release.manifest_hash[..12]
                        ),
                        why,
                    ));
                }
                let locations: Vec<Location> = release
                    .bundles
                    .iter()
                    .map(|b| super::source::resolve(location, b))
                    .collect();
                let pending = installing(
                    &release.version,
                    &release.manifest_hash,
                    Origin::Channel {
                        location: location.to_owned(),
                    },
                    dev,
                    now,
                );
                let transaction = format!("didymos-agent {name} {}", release.version);
                self.install(state, pending, &locations, &transaction, None, now, why)
                    .await?
            }
            Next::Wait { release, from, at } => report(
                now,
                format!(
                    "{from} -> {} is rolling out; not this device's turn yet",
                    release.version
                ),
                format!("install {} from {at} on", release.version),
                format!("rollout wariness {:.3}{notes}", self.wariness),
                Some(next.min(at)),
            ),
            Next::UpToDate { version } => report(
                now,
                format!("up to date: {version} is the newest release this device may take"),
                format!("check again at {next}"),
                format!("channel {name:?}{notes}"),
                Some(next),
            ),
            Next::DeadEnd { version, reason } => report(
                now,
                format!("{version} is a dead-end in channel {name:?}: no automatic updates"),
                "nothing until the channel gives this release a way out".into(),
                reason,
                Some(next),
            ),
            Next::NotInChannel { version } => report(
                now,
                format!(
                    "the booted version {version} is not a release of channel {name:?} for {}",
                    dev.compatible
                ),
                format!("check again at {next}"),
                "the planner only follows edges from the booted release; add it to the channel"
                    .into(),
                Some(next),
            ),
            Next::NoBootedVersion => report(
                now,
                "the booted version is unknown".into(),
                format!("check again at {next}"),
                "the system was not booted through a didymos slot, or its slot record is missing"
                    .into(),
                Some(next),
            ),
        })
    }

    async fn ddi_step(
        &self,
        state: &mut AgentState,
        dev: &DeviceStatus,
        now: Timestamp,
        mode: Mode,
    ) -> Result<Report, AgentError> {
        let ddi = self.ddi().expect("a hawkbit source");
        let base = ddi.base().to_owned();
        let (ddi, poll) = blocking(move || {
            let p = ddi.poll();
            (ddi, p)
        })
        .await;
        let poll = poll.map_err(|e| AgentError(e.to_string()))?;
        let next = poll
            .sleep
            .map(|s| {
                later(
                    now,
                    s.clamp(Duration::from_secs(1), Duration::from_secs(86400)),
                )
            })
            .unwrap_or_else(|| self.next_check(now));
        let ddi = Arc::new(ddi);
        if mode == Mode::Act && (poll.config_data || !self.config_sent.load(Ordering::Relaxed)) {
            let attrs = [
                ("compatible".to_owned(), dev.compatible.clone()),
                ("variant".to_owned(), dev.variant.clone()),
                ("sw_version".to_owned(), dev.system_version.clone()),
                ("hw_boardname".to_owned(), dev.compatible.clone()),
            ];
            let d = ddi.clone();
            blocking(move || {
                let refs: Vec<(&str, &str)> = attrs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                d.config_data(&refs)
            })
            .await
            .map_err(|e| AgentError(e.to_string()))?;
            self.config_sent.store(true, Ordering::Relaxed);
        }
        if let Some((id, _)) = &poll.cancel {
            if mode == Mode::Act {
                let (d, id2) = (ddi.clone(), id.clone());
                blocking(move || {
                    d.feedback(&id2, Feedback::Canceled, &["nothing was running".into()])
                })
                .await
                .map_err(|e| AgentError(e.to_string()))?;
            }
            return Ok(report(
                now,
                format!("the server cancelled action {id}"),
                format!("poll again at {next}"),
                "no install of it was running".into(),
                Some(next),
            ));
        }
        let Some((id, href)) = poll.deployment else {
            return Ok(report(
                now,
                "no deployment for this device".into(),
                format!("poll again at {next}"),
                format!("{base} offers no deploymentBase"),
                Some(next),
            ));
        };
        if state.closed_actions.contains(&id) {
            return Ok(report(
                now,
                format!("action {id} was already reported closed"),
                format!("poll again at {next}"),
                "the server still offers it; waiting for it to take the feedback into account"
                    .into(),
                Some(next),
            ));
        }
        let d = ddi.clone();
        let dep = blocking(move || d.deployment(&href))
            .await
            .map_err(|e| AgentError(e.to_string()))?;
        if dep.update == "skip" || !dep.window_open {
            return Ok(report(
                now,
                format!("action {id} ({}) is not to be installed yet", dep.version),
                format!("poll again at {next}"),
                if dep.update == "skip" {
                    "the server asks to download only (update: skip); didymos downloads while it installs, so it waits".into()
                } else {
                    "the server's maintenance window is unavailable".into()
                },
                Some(next),
            ));
        }
        let why = format!("hawkBit action {id}: {} from {}", dep.version, dep.url);
        if mode == Mode::Check {
            return Ok(self.would_install(
                now,
                format!("deployment available: {}", dep.version),
                format!("{} by URL", dep.version),
                why,
            ));
        }
        // The token file must be readable before anything starts; the
        // artifact itself is fetched by the installer, with the headers of
        // its own [streaming] header-file (docs/fleet.md, "hawkBit DDI").
        ddi.authorization().map_err(|e| AgentError(e.to_string()))?;
        let pending = installing(
            &dep.version,
            "",
            Origin::Ddi {
                action_id: dep.action_id.clone(),
            },
            dev,
            now,
        );
        let d = ddi.clone();
        let a = dep.action_id.clone();
        blocking(move || d.feedback(&a, Feedback::Proceeding(0), &["didymos: installing".into()]))
            .await
            .map_err(|e| AgentError(e.to_string()))?;
        let transaction = format!("hawkbit action {}", dep.action_id);
        self.install(
            state,
            pending,
            &[Location::Url(dep.url.clone())],
            &transaction,
            Some(ddi),
            now,
            why,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn install(
        &self,
        state: &mut AgentState,
        mut pending: Pending,
        locations: &[Location],
        transaction: &str,
        ddi: Option<Arc<Ddi>>,
        now: Timestamp,
        why: String,
    ) -> Result<Report, AgentError> {
        let dir = self.cfg.state_directory.clone();
        state.pending = Some(pending.clone());
        state.save(&dir)?;
        let action = match &pending.origin {
            Origin::Ddi { action_id } => Some(action_id.clone()),
            Origin::Channel { .. } => None,
        };
        let mut result = Err(InstallFailure {
            name: "org.didymos.Agent1.Error.NoLocation".into(),
            message: "the release lists no bundle location".into(),
        });
        for location in locations {
            log::info!("installing {} from {location}", pending.version);
            let progress = Arc::new(AtomicI32::new(0));
            let done = Arc::new(AtomicBool::new(false));
            let cancelled = Arc::new(Mutex::new(None::<String>));
            let watcher = ddi.clone().zip(action.clone()).map(|(d, a)| {
                let (progress, done, cancelled) =
                    (progress.clone(), done.clone(), cancelled.clone());
                tokio::task::spawn_blocking(move || {
                    watch_action(&d, &a, &progress, &done, &cancelled)
                })
            });
            let cancel = {
                let cancelled = cancelled.clone();
                async move {
                    loop {
                        if cancelled
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .is_some()
                        {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            };
            let p2 = progress.clone();
            result = self
                .installer
                .install(
                    location,
                    &pending.manifest_hash,
                    transaction,
                    move |pct, _| p2.store(pct, Ordering::Relaxed),
                    cancel,
                )
                .await;
            done.store(true, Ordering::Relaxed);
            if let Some(w) = watcher {
                let _ = w.await;
            }
            let why = cancelled.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(why) = why
                && result.as_ref().is_err_and(InstallFailure::is_cancelled)
            {
                state.pending = None;
                if let (true, Some(d), Some(a)) =
                    (why.contains("cancelAction"), ddi.clone(), action.clone())
                {
                    let detail = vec![format!(
                        "didymos: the install of {} stopped",
                        pending.version
                    )];
                    blocking(move || d.feedback(&a, Feedback::Canceled, &detail))
                        .await
                        .map_err(|e| AgentError(e.to_string()))?;
                }
                return Ok(report(
                    now,
                    format!("the install of {} was cancelled", pending.version),
                    format!("poll again at {}", self.next_check(now)),
                    why,
                    Some(self.next_check(now)),
                ));
            }
            match &result {
                Ok(()) => break,
                Err(f) if permanent(f) => break,
                Err(f) => {
                    log::warn!("install from {location} failed: {f}; trying the next location")
                }
            }
        }
        match result {
            Ok(()) => {
                let dev = self.installer.status().await?;
                if pending.manifest_hash.is_empty() {
                    // DDI: the server knows no manifest hash; the primary
                    // slot now holds what was installed.
                    pending.manifest_hash = dev
                        .primary
                        .as_ref()
                        .and_then(|p| dev.slots.iter().find(|s| &s.name == p))
                        .and_then(|s| s.hash.clone())
                        .unwrap_or_default();
                }
                pending.phase = Phase::RebootPending;
                state.pending = Some(pending);
                state.save(&dir)?;
                self.reboot_step(state, &dev, now, Mode::Act, why).await
            }
            Err(f) => {
                let retry = !permanent(&f);
                // Reported before the update is forgotten: if the server
                // cannot be told, the next check reports it (as interrupted).
                self.verdict(state, &pending, false, &f.message, now)
                    .await?;
                state.pending = None;
                if retry {
                    // A transient failure is not remembered against the release.
                    state.failed.retain(|x| {
                        x.manifest_hash != pending.manifest_hash || pending.manifest_hash.is_empty()
                    });
                }
                Ok(report(
                    now,
                    format!("the install of {} failed", pending.version),
                    if retry {
                        format!("try again at {}", self.next_check(now))
                    } else {
                        format!("{} is not tried again automatically", pending.version)
                    },
                    f.to_string(),
                    Some(self.next_check(now)),
                ))
            }
        }
    }

    /// Reports an update's verdict to the source and remembers it.
    async fn verdict(
        &self,
        state: &mut AgentState,
        p: &Pending,
        success: bool,
        message: &str,
        now: Timestamp,
    ) -> Result<(), AgentError> {
        if let (Origin::Ddi { action_id }, Some(ddi)) = (&p.origin, self.ddi()) {
            let (a, m) = (action_id.clone(), message.to_owned());
            let fb = if success {
                Feedback::Success
            } else {
                Feedback::Failure
            };
            blocking(move || ddi.feedback(&a, fb, &[m]))
                .await
                .map_err(|e| {
                    AgentError(format!(
                        "cannot report the result to the server (will retry): {e}"
                    ))
                })?;
            state.remember_closed(action_id);
        }
        if !success && !p.manifest_hash.is_empty() {
            state.remember_failure(Failed {
                version: p.version.clone(),
                manifest_hash: p.manifest_hash.clone(),
                at: now,
                reason: message.to_owned(),
            });
        }
        state.last_outcome = Some(Outcome {
            version: p.version.clone(),
            success,
            at: now,
            message: message.to_owned(),
        });
        Ok(())
    }

    async fn release_lock(&self) -> Result<(), String> {
        let StrategyConfig::FleetLock {
            base_url,
            group,
            id,
        } = &self.cfg.strategy
        else {
            return Ok(());
        };
        let (http, base, group) = (self.http.clone(), base_url.clone(), group.clone());
        let id = id.clone().unwrap_or_else(|| self.device_id.clone());
        blocking(move || {
            FleetLock {
                http: &http,
                base_url: &base,
                group: &group,
                id: &id,
            }
            .steady_state()
        })
        .await
        .map_err(|e| e.to_string())
    }

    async fn continue_pending(
        &self,
        state: &mut AgentState,
        dev: &DeviceStatus,
        now: Timestamp,
        mode: Mode,
    ) -> Result<Report, AgentError> {
        let p = state.pending.clone().expect("pending");
        let next = self.next_check(now);
        if p.phase == Phase::Installing {
            // The agent stopped during the install: it either finished or not.
            let done = !p.manifest_hash.is_empty()
                && dev.primary.as_deref().is_some_and(|pr| {
                    dev.slot_with(&p.manifest_hash)
                        .is_some_and(|s| s.name == pr)
                });
            if self
                .installer
                .proxy
                .operation()
                .await
                .map_err(|e| AgentError(e.to_string()))?
                == "installing"
            {
                return Ok(report(
                    now,
                    format!("installing {}", p.version),
                    "wait for the installer".into(),
                    "an install is running".into(),
                    Some(next),
                ));
            }
            if !done {
                if mode == Mode::Act {
                    state.pending = None;
                    self.verdict(
                        state,
                        &p,
                        false,
                        "the install was interrupted (the agent or the device stopped)",
                        now,
                    )
                    .await?;
                    state.failed.retain(|f| f.manifest_hash != p.manifest_hash);
                }
                return Ok(report(
                    now,
                    format!("the install of {} was interrupted", p.version),
                    format!("look again at {next}"),
                    "the installer did not finish it".into(),
                    Some(next),
                ));
            }
        }
        let booted = dev.booted();
        let booted_good = booted.and_then(|b| b.boot_status.as_deref()) == Some("good");
        if booted.and_then(|b| b.hash.as_deref()) == Some(p.manifest_hash.as_str())
            && !p.manifest_hash.is_empty()
        {
            let slot = booted.map(|b| b.name.clone()).unwrap_or_default();
            if !booted_good {
                return Ok(report(
                    now,
                    format!("booted into {} (slot {slot})", p.version),
                    "report success once the slot is marked good".into(),
                    "success is reported only after didymos-mark-good marked the new slot good"
                        .into(),
                    Some(now.min(next)),
                ));
            }
            let message = format!(
                "booted into {} in slot {slot} and marked it good",
                p.version
            );
            return self.finish(state, &p, true, message, now, mode).await;
        }
        let target = (!p.manifest_hash.is_empty())
            .then(|| dev.slot_with(&p.manifest_hash))
            .flatten();
        let failure = match target {
            None => Some(format!(
                "no slot holds {} any more (overwritten before it booted)",
                p.version
            )),
            Some(t) if t.boot_status.as_deref() == Some("bad") => Some(format!(
                "{} in slot {} was tried and did not come up healthy; the bootloader fell back to {} ({})",
                p.version,
                t.name,
                booted.map_or("the other slot", |b| b.name.as_str()),
                booted
                    .and_then(|b| b.version.as_deref())
                    .unwrap_or("unknown version"),
            )),
            Some(_) => None,
        };
        if let Some(message) = failure {
            if !booted_good {
                return Ok(report(
                    now,
                    message,
                    "report the failure once the running slot is marked good".into(),
                    "waiting for mark-good".into(),
                    Some(next),
                ));
            }
            return self.finish(state, &p, false, message, now, mode).await;
        }
        self.reboot_step(state, dev, now, mode, format!("{} is installed", p.version))
            .await
    }

    async fn finish(
        &self,
        state: &mut AgentState,
        p: &Pending,
        success: bool,
        message: String,
        now: Timestamp,
        mode: Mode,
    ) -> Result<Report, AgentError> {
        let next = self.next_check(now);
        let outcome = if success {
            format!("updated to {}", p.version)
        } else {
            format!("the update to {} failed", p.version)
        };
        if mode == Mode::Check {
            return Ok(report(
                now,
                outcome,
                "report it and release any fleet lock".into(),
                message,
                Some(now),
            ));
        }
        self.verdict(state, p, success, &message, now).await?;
        if p.holds_lock || matches!(self.cfg.strategy, StrategyConfig::FleetLock { .. }) {
            self.release_lock().await.map_err(|e| {
                AgentError(format!("cannot release the fleet lock (will retry): {e}"))
            })?;
        }
        state.pending = None;
        Ok(report(
            now,
            outcome,
            format!("check for updates at {next}"),
            message,
            Some(next),
        ))
    }

    async fn reboot_step(
        &self,
        state: &mut AgentState,
        _dev: &DeviceStatus,
        now: Timestamp,
        mode: Mode,
        why: String,
    ) -> Result<Report, AgentError> {
        let dir = self.cfg.state_directory.clone();
        let mut p = state.pending.clone().expect("pending");
        let next = self.next_check(now);
        if let Permit::Later { until, reason } = strategy::permit(&self.cfg.strategy, now) {
            return Ok(report(
                now,
                format!("{} is installed; the reboot waits", p.version),
                format!(
                    "reboot into {} at {}",
                    p.version,
                    until.map_or("the next window".into(), |u| u.to_string())
                ),
                reason,
                Some(until.map_or(next, |u| u.min(next))),
            ));
        }
        let due = *p.due_since.get_or_insert(now);
        let deadline = later(due, self.cfg.max_deferral);
        let mut holds = reboot::logind_holds(&self.conn).await;
        let defer_until = {
            let mut c = self.controls.lock().unwrap_or_else(|e| e.into_inner());
            holds.extend(c.holds(now));
            c.defer.as_ref().map(|d| d.0)
        };
        let mut override_note = String::new();
        if !holds.is_empty() {
            let list = holds
                .iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            if now < deadline {
                if mode == Mode::Act {
                    state.pending = Some(p.clone());
                    state.save(&dir)?;
                }
                let wake = defer_until
                    .map_or(deadline, |d| d.min(deadline))
                    .min(later(now, Duration::from_secs(60)));
                return Ok(report(
                    now,
                    format!("{} is installed; the reboot is held back", p.version),
                    format!("reboot when released, at the latest at {deadline} (max-deferral)"),
                    format!("held by {list}"),
                    Some(wake),
                ));
            }
            override_note = format!(
                "; the maximum deferral ({}) since {due} is over, so the reboot goes ahead despite {list}",
                humantime::format_duration(self.cfg.max_deferral)
            );
            log::warn!("rebooting despite {list}: max-deferral reached");
        }
        if mode == Mode::Check {
            return Ok(report(
                now,
                format!("{} is installed", p.version),
                "reboot now".into(),
                format!("{why}{override_note}"),
                Some(now),
            ));
        }
        if let StrategyConfig::FleetLock {
            base_url,
            group,
            id,
        } = &self.cfg.strategy
        {
            let (http, base, group) = (self.http.clone(), base_url.clone(), group.clone());
            let id = id.clone().unwrap_or_else(|| self.device_id.clone());
            let got = blocking(move || {
                FleetLock {
                    http: &http,
                    base_url: &base,
                    group: &group,
                    id: &id,
                }
                .pre_reboot()
            })
            .await;
            if let Err(e) = got {
                state.pending = Some(p.clone());
                state.save(&dir)?;
                return Ok(report(
                    now,
                    format!("{} is installed; waiting for the fleet lock", p.version),
                    format!("ask the lock server again at {next}"),
                    e.to_string(),
                    Some(next),
                ));
            }
            p.holds_lock = true;
        }
        p.phase = Phase::Rebooting;
        state.pending = Some(p.clone());
        state.save(&dir)?;
        if let Err(e) = reboot::reboot(self.cfg.reboot_command.as_deref(), &self.conn).await {
            return Ok(report(
                now,
                format!("{} is installed; the reboot failed", p.version),
                format!("try again at {next}"),
                e,
                Some(next),
            ));
        }
        Ok(report(
            now,
            format!("rebooting into {}", p.version),
            "verify the new slot after the boot".into(),
            format!(
                "{why}; strategy {}{override_note}",
                self.cfg.strategy.name()
            ),
            Some(next),
        ))
    }
}

/// During a DDI install: sends progress, and notices a cancellation (a
/// `cancelAction` for the action, or the deployment withdrawn).
fn watch_action(
    ddi: &Ddi,
    action: &str,
    progress: &AtomicI32,
    done: &AtomicBool,
    cancelled: &Mutex<Option<String>>,
) {
    let mut sent = 0;
    let mut last_poll = std::time::Instant::now();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let pct = progress.load(Ordering::Relaxed);
        if pct >= sent + 10 && pct < 100 {
            sent = pct;
            if let Err(e) = ddi.feedback(
                action,
                Feedback::Proceeding(pct as u8),
                &[format!("didymos: {pct} %")],
            ) {
                log::warn!("cannot send progress: {e}");
            }
        }
        if last_poll.elapsed() < Duration::from_secs(1) {
            continue;
        }
        last_poll = std::time::Instant::now();
        match ddi.poll() {
            Ok(p) => {
                let why = if let Some((_, href)) = p.cancel.filter(|(id, _)| id == action) {
                    if let Err(e) = ddi.cancel_target(&href) {
                        log::warn!("cannot read the cancel action: {e}");
                    }
                    Some(format!(
                        "the server cancelled action {action} (cancelAction)"
                    ))
                } else if p.deployment.as_ref().is_none_or(|(id, _)| id != action) {
                    Some(format!(
                        "the server withdrew action {action} (no longer offered)"
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    log::warn!("{why}: cancelling the install");
                    *cancelled.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                    return;
                }
            }
            Err(e) => log::debug!("poll during the install: {e}"),
        }
    }
}
