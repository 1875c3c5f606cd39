//! The daemon's state and operations, shared by both exported interfaces.
//!
//! One operation runs at a time. An install runs on a blocking thread; its
//! progress reports travel over a channel to an async task that updates the
//! properties and emits `PropertiesChanged`, so the bus stays responsive.
//! The install belongs to the daemon, not to the caller: a client that
//! disconnects does not abort it.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use zbus::Connection;
use zbus::message::Header;

use super::auth::{self, Action, Caller, Policy};
use super::engine;
use super::error::Error;
use super::signals;
use super::wire::{self, Dict, ProgressTuple};
use crate::config::SystemConfig;
use crate::install::{BundleSource, CancelToken, InstallOptions, Progress};

/// When `InstallBundle` refuses a bundle the device would not install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// In the method call, with the typed error (`org.didymos.Installer1`).
    InCall,
    /// As RAUC does: the call starts the install, which ends with
    /// `Completed(1)` and `LastError` (`de.pengutronix.rauc.Installer`).
    AfterStart,
}

/// What the daemon is doing.
#[derive(Debug, Clone)]
enum Activity {
    Idle,
    Installing(CancelToken),
    /// Marking a slot (short; not shown in `Operation`, but it excludes installs).
    Marking,
}

#[derive(Debug)]
struct State {
    activity: Activity,
    last_error: String,
    last_error_name: String,
    progress: ProgressTuple,
    /// RAUC's `LastBundle`: the bundle the last install was started with.
    last_bundle: String,
    /// RAUC's `LastTransaction`: the last install's transaction id.
    last_transaction: String,
}

/// Facts fixed for the daemon's lifetime.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub compatible: String,
    pub variant: String,
    /// The bootname the system was booted through ("" if none).
    pub boot_slot: String,
    /// The bundle version in the booted slot ("" if unknown).
    pub system_version: String,
}

pub struct Core {
    pub config: Arc<SystemConfig>,
    pub policy: Policy,
    pub facts: Facts,
    state: Mutex<State>,
    /// Bounds the bundle inspections running at once: `InspectBundleFd` is
    /// open to every caller, and each holds a thread and the bundle's head
    /// (bounded by the signed manifest) while it runs.
    inspections: tokio::sync::Semaphore,
}

/// How many bundle inspections may run at once; more get `Busy`.
pub const MAX_INSPECTIONS: usize = 2;

impl Core {
    /// Prepares the daemon's state: the fixed facts, and an interrupted install
    /// from a previous run (reported through `LastError`).
    pub fn new(config: SystemConfig, policy: Policy) -> Self {
        let booted = crate::slot::booted::detect(&config);
        let mut facts = Facts {
            compatible: config.system.compatible.clone(),
            variant: config.system.variant.clone().unwrap_or_default(),
            boot_slot: booted.bootname().map(|b| b.to_string()).unwrap_or_default(),
            system_version: String::new(),
        };
        let (mut last_error, mut last_error_name) = (String::new(), String::new());
        // Clean up after an install the previous run did not finish; status
        // then reports it (until the next install).
        match engine::recover(&config) {
            Ok(Some(what)) => log::warn!("recovered from an interrupted install: {what}"),
            Ok(None) => {}
            Err(e) => log::warn!(
                "cannot check for an interrupted install at start: {}",
                super::error::chain(&e)
            ),
        }
        match engine::status(&config) {
            Ok(status) => {
                facts.system_version = status.system_version.unwrap_or_default();
                if let Some(rollback) = status.rollback {
                    log::warn!("{rollback}");
                    let err = Error::Rollback(rollback);
                    last_error = err.message();
                    last_error_name = err.dbus_name();
                }
                if let Some(interrupted) = status.interrupted_install {
                    log::warn!("a previous install was interrupted: {interrupted}");
                    let err = Error::Interrupted(interrupted);
                    last_error = err.message();
                    last_error_name = err.dbus_name();
                }
            }
            Err(e) => log::warn!("cannot read the system status at start: {e}"),
        }
        Self {
            config: Arc::new(config),
            policy,
            facts,
            state: Mutex::new(State {
                activity: Activity::Idle,
                last_error,
                last_error_name,
                progress: (0, String::new(), 0),
                last_bundle: String::new(),
                last_transaction: String::new(),
            }),
            inspections: tokio::sync::Semaphore::new(MAX_INSPECTIONS),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave it half-updated (every
        // update is a few assignments), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether RAUC's name and interface are exported too.
    pub fn rauc_compat(&self) -> bool {
        self.config.dbus.rauc_compat
    }

    /// Cancels a running install because the daemon is stopping.
    pub fn cancel_for_shutdown(&self) {
        if let Activity::Installing(token) = &self.state().activity {
            log::warn!("stopping during an install: cancelling it");
            token.cancel();
        }
    }

    // --- properties ---

    pub fn operation(&self) -> String {
        match self.state().activity {
            Activity::Installing(_) => "installing".into(),
            Activity::Idle | Activity::Marking => "idle".into(),
        }
    }
    pub fn last_error(&self) -> String {
        self.state().last_error.clone()
    }
    pub fn last_error_name(&self) -> String {
        self.state().last_error_name.clone()
    }
    pub fn progress(&self) -> ProgressTuple {
        self.state().progress.clone()
    }
    pub fn last_bundle(&self) -> String {
        self.state().last_bundle.clone()
    }
    pub fn last_transaction(&self) -> String {
        self.state().last_transaction.clone()
    }

    // --- methods ---

    /// `InstallBundle(s, a{sv})`: only root may name a path (see docs/dbus-api.md).
    pub async fn install_path(
        self: &Arc<Self>,
        conn: &Connection,
        header: &Header<'_>,
        source: &str,
        args: &Dict,
        refusal: Refusal,
    ) -> Result<(), Error> {
        let options = wire::install_options(args)?;
        let caller = self.authorize(conn, header, Action::Install).await?;
        let bundle = open_source(&caller, source, "InstallBundleFd")?;
        if refusal == Refusal::InCall {
            self.check_bundle(conn, &bundle, &options).await?;
        }
        let shown = match &bundle {
            BundleSource::Url(u) => crate::net::shown(u),
            _ => source.to_owned(),
        };
        self.start_install(conn, bundle, shown, options)
    }

    /// `InstallBundleFd(h, a{sv})`: the caller opened the bundle.
    pub async fn install_fd(
        self: &Arc<Self>,
        conn: &Connection,
        header: &Header<'_>,
        fd: zbus::zvariant::OwnedFd,
        args: &Dict,
    ) -> Result<(), Error> {
        let options = wire::install_options(args)?;
        self.authorize(conn, header, Action::Install).await?;
        let file = file_from_fd(fd)?;
        let source = path_of(&file);
        let bundle = BundleSource::File(file);
        self.check_bundle(conn, &bundle, &options).await?;
        self.start_install(conn, bundle, source, options)
    }

    /// Runs the install's checks that write nothing, in the method call: a
    /// bundle the install would refuse is refused with its typed error before
    /// an install starts, and `LastError` says why as it would after an install.
    async fn check_bundle(
        &self,
        conn: &Connection,
        bundle: &BundleSource,
        options: &InstallOptions,
    ) -> Result<(), Error> {
        if !matches!(self.state().activity, Activity::Idle) {
            return Err(busy());
        }
        let (config, options) = (self.config.clone(), options.clone());
        let bundle = bundle
            .try_clone()
            .map_err(|e| Error::Failed(format!("cannot duplicate the bundle's descriptor: {e}")))?;
        let Err(e) =
            blocking(move || engine::check(&config, bundle, &options).map_err(Error::from)).await
        else {
            return Ok(());
        };
        {
            let mut s = self.state();
            // An install another caller started meanwhile owns LastError.
            if matches!(s.activity, Activity::Idle) {
                s.last_error = e.message();
                s.last_error_name = e.dbus_name();
            }
        }
        log::warn!("install refused: {} ({})", e.message(), e.dbus_name());
        signals::properties_changed(conn, self, &[signals::Changed::LastError]).await;
        Err(e)
    }

    /// `Cancel()`.
    pub async fn cancel(&self, conn: &Connection, header: &Header<'_>) -> Result<(), Error> {
        self.authorize(conn, header, Action::Cancel).await?;
        match &self.state().activity {
            Activity::Installing(token) => {
                log::info!("install cancel requested");
                token.cancel();
                Ok(())
            }
            _ => Err(Error::NotRunning(
                "no install is running, nothing to cancel".into(),
            )),
        }
    }

    /// `InspectBundle(s, a{sv})`.
    pub async fn inspect_path(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        source: &str,
        args: &Dict,
    ) -> Result<Dict, Error> {
        wire::no_options("InspectBundle", args)?;
        let info = self.inspect_path_info(conn, header, source).await?;
        wire::bundle_info(&info)
    }

    async fn inspect_path_info(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        source: &str,
    ) -> Result<engine::BundleInfo, Error> {
        let caller = auth::caller(conn, header).await?;
        let bundle = open_source(&caller, source, "InspectBundleFd")?;
        if let BundleSource::Url(_) = bundle {
            // The daemon fetches with its own network identity and client
            // certificate: not on behalf of just anyone.
            self.policy.check(&caller, Action::Install).map_err(|_| {
                Error::PermissionDenied(format!(
                    "uid {} may not make the service fetch a URL; only callers who may install \
                     can (fetch the bundle yourself and pass the descriptor to InspectBundleFd)",
                    caller.uid
                ))
            })?;
        }
        self.inspect(bundle).await
    }

    /// `InspectBundleFd(h, a{sv})`.
    pub async fn inspect_fd(
        &self,
        fd: zbus::zvariant::OwnedFd,
        args: &Dict,
    ) -> Result<Dict, Error> {
        wire::no_options("InspectBundleFd", args)?;
        let info = self.inspect(BundleSource::File(file_from_fd(fd)?)).await?;
        wire::bundle_info(&info)
    }

    async fn inspect(&self, bundle: BundleSource) -> Result<engine::BundleInfo, Error> {
        let _permit = self.inspections.try_acquire().map_err(|_| {
            Error::Busy(format!(
                "{MAX_INSPECTIONS} bundle inspections are running already; try again when they \
                 finish"
            ))
        })?;
        let config = self.config.clone();
        blocking(move || engine::inspect(&config, bundle)).await
    }

    /// `Info(s)` → (compatible, version).
    pub async fn info(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        source: &str,
    ) -> Result<(String, String), Error> {
        let info = self.inspect_path_info(conn, header, source).await?;
        Ok((info.manifest.compatible, info.manifest.version))
    }

    /// `Mark(s, s)` → (slot name, message).
    pub async fn mark(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        state: &str,
        identifier: &str,
    ) -> Result<(String, String), Error> {
        let state = engine::parse_mark_state(state)?;
        self.authorize(conn, header, Action::Mark).await?;
        {
            let mut s = self.state();
            if !matches!(s.activity, Activity::Idle) {
                return Err(busy());
            }
            s.activity = Activity::Marking;
        }
        let config = self.config.clone();
        let identifier = identifier.to_owned();
        let result = blocking(move || engine::mark(&config, state, &identifier)).await;
        self.state().activity = Activity::Idle;
        result
    }

    /// `GetSlotStatus()`.
    pub async fn slot_status(&self) -> Result<Vec<(String, Dict)>, Error> {
        let config = self.config.clone();
        let status = blocking(move || engine::status(&config).map_err(Error::from)).await?;
        status.slots.iter().map(wire::slot_status).collect()
    }

    /// `GetPrimary()`.
    pub async fn primary(&self) -> Result<String, Error> {
        let config = self.config.clone();
        let status = blocking(move || engine::status(&config).map_err(Error::from)).await?;
        status.primary.map(|s| s.to_string()).ok_or_else(|| {
            Error::NoSuchSlot(
                "the bootloader has no primary slot (no slot is marked active)".into(),
            )
        })
    }

    async fn authorize(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        action: Action,
    ) -> Result<Caller, Error> {
        let caller = auth::caller(conn, header).await?;
        if let Err(e) = self.policy.check(&caller, action) {
            log::warn!("refused: {e}");
            return Err(e);
        }
        Ok(caller)
    }

    // --- the install ---

    /// Starts the install of `file` (`source`: the path it was opened at, or
    /// "" when unknown). Every install has a transaction id: the caller's
    /// `transaction-id`, or a new random UUID, as RAUC does.
    fn start_install(
        self: &Arc<Self>,
        conn: &Connection,
        bundle: BundleSource,
        source: String,
        mut options: InstallOptions,
    ) -> Result<(), Error> {
        let cancel = CancelToken::default();
        {
            let mut s = self.state();
            if !matches!(s.activity, Activity::Idle) {
                return Err(busy());
            }
            let transaction = options
                .transaction_id
                .get_or_insert_with(new_transaction_id)
                .clone();
            s.activity = Activity::Installing(cancel.clone());
            s.progress = (0, "Installing".into(), 1);
            s.last_error.clear();
            s.last_error_name.clear();
            s.last_bundle = source;
            s.last_transaction = transaction;
        }
        log::info!(
            "install started{}",
            match &options.transaction_id {
                Some(t) => format!(" (transaction {t})"),
                None => String::new(),
            }
        );
        tokio::spawn(run_install(
            self.clone(),
            conn.clone(),
            bundle,
            options,
            cancel,
        ));
        Ok(())
    }

    /// Records a progress report: percentages never go down, and stay below
    /// 100 until the install has really finished.
    fn record_progress(&self, p: Progress) {
        // The engine's own last report (100 %) is published by
        // `record_result`, once the install has really ended; taken here it
        // would show as "99 % Installing done.".
        if p.percent >= 100 {
            return;
        }
        let mut s = self.state();
        let percent = p.percent.clamp(s.progress.0, 99);
        s.progress = (percent, p.message, p.depth);
    }

    /// Records the end of the install and returns the `Completed` code.
    fn record_result(&self, result: &Result<crate::install::InstallOutcome, Error>) -> i32 {
        let mut s = self.state();
        s.activity = Activity::Idle;
        match result {
            Ok(outcome) => {
                s.progress = (100, "Installing done.".into(), 1);
                log::info!(
                    "installed version {} into {} ({} objects written, {} reused)",
                    outcome.bundle_version,
                    outcome.slot,
                    outcome.objects_written,
                    outcome.objects_reused
                );
                0
            }
            Err(e) => {
                s.progress.1 = "Installing failed.".into();
                s.last_error = e.message();
                s.last_error_name = e.dbus_name();
                log::error!("install failed: {} ({})", s.last_error, s.last_error_name);
                1
            }
        }
    }
}

async fn run_install(
    core: Arc<Core>,
    conn: Connection,
    bundle: BundleSource,
    options: InstallOptions,
    cancel: CancelToken,
) {
    use signals::Changed;
    signals::properties_changed(
        &conn,
        &core,
        &[
            Changed::Operation,
            Changed::LastError,
            Changed::Progress,
            Changed::LastBundle,
        ],
    )
    .await;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    let config = core.config.clone();
    let job = tokio::task::spawn_blocking(move || {
        let report = move |p: Progress| {
            // The receiver lives until this closure is dropped.
            let _ = tx.send(p);
        };
        engine::install(&config, bundle, &options, &report, &cancel)
    });
    while let Some(mut p) = rx.recv().await {
        // Coalesce a burst of reports into the latest one.
        while let Ok(next) = rx.try_recv() {
            p = next;
        }
        core.record_progress(p);
        signals::properties_changed(&conn, &core, &[Changed::Progress]).await;
    }
    let result = match job.await {
        Ok(r) => r.map_err(Error::from),
        Err(e) => Err(Error::Failed(format!("the install thread failed: {e}"))),
    };
    let code = core.record_result(&result);
    signals::properties_changed(
        &conn,
        &core,
        &[Changed::Progress, Changed::LastError, Changed::Operation],
    )
    .await;
    signals::completed(&conn, &core, code).await;
}

/// A random (version 4) UUID from the kernel, like RAUC's transaction ids.
fn new_transaction_id() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/random/uuid") {
        Ok(uuid) => uuid.trim().to_owned(),
        Err(e) => {
            log::warn!("cannot read a random UUID from the kernel ({e}); using the time instead");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            format!("{:x}-{:x}", now.as_secs(), now.subsec_nanos())
        }
    }
}

/// The path a descriptor's file was opened at, as the daemon sees it ("" if
/// the kernel names none, e.g. a deleted file).
fn path_of(file: &File) -> String {
    use std::os::fd::AsRawFd;
    match std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
        Ok(p) if p.is_absolute() && !p.to_string_lossy().ends_with(" (deleted)") => {
            p.display().to_string()
        }
        _ => String::new(),
    }
}

fn busy() -> Error {
    Error::Busy("another operation is running; wait for Completed or call Cancel".into())
}

/// Runs blocking engine work off the bus thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Failed(format!("worker thread failed: {e}")))?
}

/// Opens a bundle path for a caller, or takes a URL. The daemon never opens
/// a path on an unprivileged caller's behalf: only root may name paths;
/// everyone else passes an open file descriptor.
fn open_source(caller: &Caller, source: &str, fd_method: &str) -> Result<BundleSource, Error> {
    if crate::net::is_url(source) {
        return Ok(BundleSource::Url(source.to_owned()));
    }
    if source.contains("://") {
        return Err(Error::NotSupported(format!(
            "cannot install from {:?}: bundles come from a file or an http:// or https:// URL",
            crate::net::shown(source)
        )));
    }
    if !caller.is_root() {
        return Err(Error::PermissionDenied(format!(
            "uid {} may not name a bundle path (the daemon would open it with root's rights); \
             open the bundle yourself and pass the descriptor to {fd_method}",
            caller.uid
        )));
    }
    let path = Path::new(source);
    if !path.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "bundle path {source:?} is not absolute; the daemon does not share your working \
             directory"
        )));
    }
    let file = File::open(path)
        .map_err(|e| Error::Failed(format!("cannot open bundle {}: {e}", path.display())))?;
    check_regular(&file, source)?;
    Ok(BundleSource::File(file))
}

fn file_from_fd(fd: zbus::zvariant::OwnedFd) -> Result<File, Error> {
    let file = File::from(std::os::fd::OwnedFd::from(fd));
    check_regular(&file, "the passed file descriptor")?;
    Ok(file)
}

fn check_regular(file: &File, what: &str) -> Result<(), Error> {
    let meta = file
        .metadata()
        .map_err(|e| Error::Failed(format!("cannot stat {what}: {e}")))?;
    if !meta.is_file() {
        return Err(Error::InvalidArgument(format!(
            "{what} is not a regular file; a bundle must be a file"
        )));
    }
    Ok(())
}
