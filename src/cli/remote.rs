//! The CLI as a client of the running service: `install`, `status`,
//! `status mark-*` and `info` go through `org.didymos.Installer1` when it is running
//! (and `--direct` is not given), so the service's one-operation-at-a-time
//! rule and its authorization apply to the command line too.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 the bus failed (the
//! service could not be reached, or went away).

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use futures_lite::StreamExt;
use zbus::zvariant::{OwnedFd, Value};

use didymos::boot::mark::MarkState;
use didymos::config::SystemConfig;
use didymos::install::{InstallOptions, Progress};
use didymos::service::client::{self, InstallerProxy};
use didymos::service::{BundleInfo, Error};
use didymos::slot::{Bootname, SlotName};
use didymos::status::SystemStatus;

/// What the service found inspecting a bundle.
pub enum Inspection {
    Verified(Box<BundleInfo>),
    /// The bundle does not verify; the message says why.
    Rejected(String),
}

/// Exit code for bus failures.
pub const BUS_ERROR: u8 = 2;

/// A connection to the running service.
pub struct Remote {
    /// Always `Some` until dropped (see `Drop`).
    proxy: Option<InstallerProxy<'static>>,
    rt: tokio::runtime::Runtime,
}

impl Drop for Remote {
    fn drop(&mut self) {
        // Closing the connection spawns work on the runtime: drop it inside.
        let _runtime = self.rt.enter();
        self.proxy.take();
    }
}

/// The service, if it is running and serves the configuration this command
/// was given. Without a reachable bus or without the service, `None`: the
/// caller works in-process.
///
/// The system service always uses the default configuration, so a command
/// given another `--conf` (a demo device, a test device) works in-process
/// instead of acting on the wrong device. On a session bus (tests,
/// `DBUS_STARTER_BUS_TYPE=session`) the service was started for the caller's
/// device and is used whatever `--conf` says.
pub fn connect_if_running(global: &super::Global) -> anyhow::Result<Option<Remote>> {
    let session = std::env::var("DBUS_STARTER_BUS_TYPE").is_ok_and(|t| t == "session");
    if !session && global.conf != std::path::Path::new(didymos::config::DEFAULT_PATH) {
        log::info!(
            "{} is not the system service's configuration: working in-process",
            global.conf.display()
        );
        return Ok(None);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let proxy = rt
        .block_on(client::connect_if_running())
        .context("cannot ask the bus whether the didymos service runs")?;
    Ok(proxy.map(|proxy| Remote {
        proxy: Some(proxy),
        rt,
    }))
}

/// Prints a failure the service reported and picks the exit code: 2 for bus
/// failures, 1 for everything the service refused or failed to do.
fn failed(err: Error, what: &str) -> ExitCode {
    let bus = matches!(err, Error::ZBus(_));
    let msg = anyhow::anyhow!("{}", err.message());
    let msg = if bus {
        msg.context(format!(
            "{what}: cannot talk to the didymos service over D-Bus"
        ))
    } else {
        msg.context(format!(
            "{what} ({})",
            err.dbus_name().rsplit('.').next().unwrap_or("")
        ))
    };
    super::report(&msg);
    if bus {
        ExitCode::from(BUS_ERROR)
    } else {
        ExitCode::FAILURE
    }
}

fn bus_failed(err: zbus::Error, what: &str) -> ExitCode {
    failed(Error::ZBus(err), what)
}

impl Remote {
    fn proxy(&self) -> &InstallerProxy<'static> {
        self.proxy
            .as_ref()
            .expect("the proxy is only taken when Remote is dropped")
    }

    /// Installs `bundle` through the service, with a progress bar. Ctrl-C
    /// offers to cancel (on a terminal; otherwise it cancels).
    /// Installs through the service: a file by descriptor, a URL by name
    /// (the service fetches it).
    pub fn install(&self, bundle: &str, options: &InstallOptions) -> anyhow::Result<ExitCode> {
        let start = if didymos::net::is_url(bundle) {
            Start::Url(bundle.to_owned())
        } else {
            let file = std::fs::File::open(bundle)
                .with_context(|| format!("cannot open bundle {bundle}"))?;
            Start::Fd(OwnedFd::from(std::os::fd::OwnedFd::from(file)))
        };
        let mut args: HashMap<&str, Value<'_>> = HashMap::new();
        if options.ignore_compatible {
            args.insert("ignore-compatible", Value::from(true));
        }
        if options.ignore_version_limit {
            args.insert("ignore-version-limit", Value::from(true));
        }
        if let Some(t) = &options.transaction_id {
            args.insert("transaction-id", Value::from(t.as_str()));
        }
        if let Some(h) = &options.require_manifest_hash {
            args.insert("require-manifest-hash", Value::from(h.as_str()));
        }
        self.rt.block_on(self.install_async(start, args))
    }

    async fn install_async(
        &self,
        start: Start,
        args: HashMap<&str, Value<'_>>,
    ) -> anyhow::Result<ExitCode> {
        let what = "install failed";
        let p = self.proxy();
        // Subscribe before starting, so nothing is missed.
        let mut completed = match p.receive_completed().await {
            Ok(s) => s,
            Err(e) => return Ok(bus_failed(e, what)),
        };
        let mut progress = p.receive_progress_changed().await;
        let mut owner = match p.inner().receive_owner_changed().await {
            Ok(s) => s,
            Err(e) => return Ok(bus_failed(e, what)),
        };
        let started = match start {
            Start::Fd(fd) => p.install_bundle_fd(fd, args).await,
            Start::Url(url) => p.install_bundle(&url, args).await,
        };
        if let Err(e) = started {
            return Ok(failed(e, what));
        }
        let printer = super::install::ProgressPrinter::new();
        let code = loop {
            tokio::select! {
                Some(change) = progress.next() => {
                    if let Ok((percent, message, depth)) = change.get().await {
                        printer.show(&Progress { percent, message, depth });
                    }
                }
                Some(signal) = completed.next() => {
                    match signal.args() {
                        Ok(a) => break a.result,
                        Err(e) => {
                            printer.finish();
                            return Ok(bus_failed(e, what));
                        }
                    }
                }
                Some(new_owner) = owner.next() => {
                    if new_owner.is_none() {
                        printer.finish();
                        return Ok(bus_failed(
                            zbus::Error::Failure(
                                "the didymos service stopped during the install".into(),
                            ),
                            what,
                        ));
                    }
                }
                Ok(()) = tokio::signal::ctrl_c() => self.offer_cancel(),
            }
        };
        printer.finish();
        if code == 0 {
            println!("installed; the new slot is active and boots on the next restart");
            return Ok(ExitCode::SUCCESS);
        }
        let message = p.last_error().await.unwrap_or_default();
        let name = p.last_error_name().await.unwrap_or_default();
        super::report(&anyhow::anyhow!("{message}").context(format!(
            "{what} ({})",
            name.rsplit('.').next().unwrap_or("error")
        )));
        Ok(ExitCode::FAILURE)
    }

    /// Ctrl-C during an install: ask (on a terminal) whether to cancel it.
    fn offer_cancel(&self) {
        let cancel = if std::io::stdin().is_terminal() {
            eprint!("Cancel the install? The running slot stays as it is. [y/N] ");
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            matches!(line.trim(), "y" | "Y" | "yes")
        } else {
            true
        };
        if !cancel {
            eprintln!("didymos: the install continues");
            return;
        }
        // The select loop is parked while we are here: cancel from a task, the
        // loop then sees Completed.
        let proxy = self.proxy().clone();
        tokio::spawn(async move {
            if let Err(e) = proxy.cancel().await {
                eprintln!("didymos: cannot cancel: {}", e.message());
            }
        });
        eprintln!("didymos: cancelling the install...");
    }

    /// Verifies and describes the bundle in `file` through the service
    /// (`InspectBundleFd`, against the device's keyring).
    pub fn inspect(&self, source: InspectSource) -> Result<Inspection, ExitCode> {
        let what = "cannot inspect the bundle";
        let reply = match source {
            InspectSource::File(file) => {
                let fd = OwnedFd::from(std::os::fd::OwnedFd::from(file));
                self.rt
                    .block_on(self.proxy().inspect_bundle_fd(fd, HashMap::new()))
            }
            InspectSource::Url(url) => self
                .rt
                .block_on(self.proxy().inspect_bundle(&url, HashMap::new())),
        };
        match reply {
            Ok(dict) => didymos::service::wire::bundle_info_from_wire(&dict)
                .map(|info| Inspection::Verified(Box::new(info)))
                .map_err(|e| failed(Error::Failed(e), what)),
            Err(Error::SignatureInvalid(m) | Error::BundleInvalid(m)) => {
                Ok(Inspection::Rejected(m))
            }
            Err(e) => Err(failed(e, what)),
        }
    }

    /// Marks a slot through the service.
    pub fn mark(&self, state: MarkState, slot: &str) -> anyhow::Result<ExitCode> {
        match self.rt.block_on(self.proxy().mark(state.as_str(), slot)) {
            Ok((_slot, message)) => {
                println!("{message}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Ok(failed(e, &format!("marking {slot} {state} failed"))),
        }
    }

    /// The system status as the service reports it, in the same shape as
    /// `didymos::status::collect` (the bootloader name comes from `config`).
    pub fn status(&self, config: &SystemConfig) -> Result<SystemStatus, ExitCode> {
        let what = "cannot read the status";
        self.rt.block_on(async {
            let p = self.proxy();
            let slots = p.get_slot_status().await.map_err(|e| failed(e, what))?;
            let slots = slots
                .iter()
                .map(|(name, dict)| didymos::service::wire::slot_status_from_wire(name, dict))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| failed(Error::Failed(e), what))?;
            let prop = |r: zbus::Result<String>| r.map_err(|e| bus_failed(e, what));
            let non_empty = |s: String| (!s.is_empty()).then_some(s);
            let booted = non_empty(prop(p.boot_slot().await)?).and_then(|b| Bootname::new(&b).ok());
            let booted_slot = booted.as_ref().and_then(|b| {
                slots
                    .iter()
                    .find(|s| s.bootname.as_ref() == Some(b))
                    .map(|s| s.name.clone())
            });
            let primary = match p.get_primary().await {
                Ok(name) => SlotName::parse(&name).ok(),
                Err(Error::NoSuchSlot(_)) => None,
                Err(e) => return Err(failed(e, what)),
            };
            let interrupted_install = if prop(p.last_error_name().await)?.ends_with(".Interrupted")
            {
                non_empty(prop(p.last_error().await)?)
            } else {
                None
            };
            let floor = p.security_floor().await;
            Ok(SystemStatus {
                compatible: prop(p.compatible().await)?,
                variant: non_empty(prop(p.variant().await)?),
                bootloader: config.system.bootloader.as_str().to_owned(),
                booted,
                booted_slot,
                primary,
                system_version: non_empty(prop(p.system_version().await)?),
                interrupted_install,
                rollback: didymos::status::detect_rollback(&slots),
                security_floor: *floor.as_ref().unwrap_or(&0),
                security_floor_error: floor.err().map(|e| match e {
                    zbus::Error::MethodError(_, Some(m), _) => m,
                    other => other.to_string(),
                }),
                slots,
            })
        })
    }
}

/// How `install` hands the bundle to the service.
enum Start {
    Fd(OwnedFd),
    Url(String),
}

/// What `inspect` asks the service about.
pub enum InspectSource {
    File(std::fs::File),
    Url(String),
}
