//! `didymos install BUNDLE`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use didymos::install::{self, BundleSource, CancelToken, InstallOptions, Progress};

use super::Global;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub conf: super::ConfArg,
    /// The bundle: a file, or an http:// or https:// URL (only the objects
    /// this device lacks are fetched; an interrupted install resumes).
    pub bundle: String,
    /// Install even if the bundle's compatible differs from the system's.
    #[arg(long)]
    pub ignore_compatible: bool,
    /// Install even if the bundle is older than [system] min-bundle-version.
    #[arg(long)]
    pub ignore_version_limit: bool,
    /// Refuse unless the manifest's SHA-256 is this (hex).
    #[arg(long, value_name = "HEX")]
    pub require_manifest_hash: Option<String>,
    /// An identifier for this install, kept in logs.
    #[arg(long)]
    pub transaction_id: Option<String>,
    /// Install in this process even when the didymos service is running.
    #[arg(long)]
    pub direct: bool,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let config = global.config()?;
    let options = InstallOptions {
        ignore_compatible: args.ignore_compatible,
        ignore_version_limit: args.ignore_version_limit,
        transaction_id: args.transaction_id,
        require_manifest_hash: args.require_manifest_hash,
    };
    if !args.direct
        && let Some(service) = super::remote::connect_if_running(global)?
    {
        return service.install(&args.bundle, &options);
    }
    let printer = ProgressPrinter::new();
    let source = if didymos::net::is_url(&args.bundle) {
        BundleSource::Url(args.bundle.clone())
    } else {
        BundleSource::Path(args.bundle.clone().into())
    };
    let outcome = install::install(
        &config,
        source,
        &options,
        &|p| printer.show(&p),
        &CancelToken::default(),
    );
    printer.finish();
    let outcome = outcome.with_context(|| format!("installing {} failed", shown(&args.bundle)))?;
    println!(
        "installed version {} into {}{}: {} objects written ({} bytes), {} already present; \
         {} unused objects removed",
        outcome.bundle_version,
        outcome.slot,
        outcome
            .bootname
            .as_ref()
            .map(|b| format!(" (bootname {b})"))
            .unwrap_or_default(),
        outcome.objects_written,
        outcome.bytes_written,
        outcome.objects_reused,
        outcome.objects_collected
    );
    if let Some(why) = &outcome.gc_refused {
        eprintln!("didymos: warning: {why}");
    }
    for (slot, class) in &outcome.raw_written {
        println!("raw image {class} written to {slot}");
    }
    println!("the new slot is active: it boots on the next restart");
    Ok(ExitCode::SUCCESS)
}

/// The bundle argument as messages show it (a URL without its secrets).
fn shown(bundle: &str) -> String {
    if didymos::net::is_url(bundle) {
        didymos::net::shown(bundle)
    } else {
        bundle.to_owned()
    }
}

/// A progress bar on a terminal, one line per step otherwise.
pub struct ProgressPrinter {
    bar: Option<indicatif::ProgressBar>,
    last_message: std::cell::RefCell<String>,
}

impl ProgressPrinter {
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(100);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos:>3}% {wide_msg}")
                    .expect("valid template"),
            );
            bar
        });
        Self {
            bar,
            last_message: Default::default(),
        }
    }

    pub fn show(&self, p: &Progress) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(p.percent.clamp(0, 100) as u64);
                bar.set_message(p.message.clone());
            }
            None => {
                // Plain output: one line per step, not per object.
                if p.depth <= 2 && *self.last_message.borrow() != p.message {
                    eprintln!("{:>3}% {}", p.percent, p.message);
                    *self.last_message.borrow_mut() = p.message.clone();
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
