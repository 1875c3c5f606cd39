//! The `didymos` command line: argument parsing, dispatch and the one error printer.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod bundle;
mod channel;
mod demo;
mod info;
mod install;
mod remote;
mod service;
mod status;
mod store;

#[derive(Parser)]
#[command(
    name = "didymos",
    version,
    about = "A/B updates for embedded Linux on composefs"
)]
struct Cli {
    /// The device configuration [default: /etc/didymos/system.conf].
    #[arg(long, env = "DIDYMOS_CONF", value_name = "PATH")]
    conf: Option<PathBuf>,
    /// Log more (repeat for debug output).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// `--conf`, for the subcommands that read the device configuration (given
/// after the subcommand; before it, the top-level `--conf` does the same).
/// `demo` makes its own configuration and does not take it.
#[derive(clap::Args, Clone, Default)]
pub struct ConfArg {
    /// The device configuration [default: /etc/didymos/system.conf].
    #[arg(long = "conf", value_name = "PATH", global = true)]
    pub conf: Option<PathBuf>,
}

/// What every subcommand gets: the device configuration's path, resolved.
pub struct Global {
    pub conf: PathBuf,
}

impl Global {
    /// Loads the device configuration named by `--conf`.
    pub fn config(&self) -> anyhow::Result<didymos::config::SystemConfig> {
        Ok(didymos::config::SystemConfig::load(&self.conf)?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create, verify, extract and re-sign bundles (build host).
    #[command(subcommand)]
    Bundle(bundle::Command),
    /// Show what a bundle contains and whether it verifies.
    Info(info::Args),
    /// Install a bundle into the inactive slot.
    Install(install::Args),
    /// Show the system and slot status, or mark slots.
    Status(status::Args),
    /// Remove objects no slot references.
    Gc(store::GcArgs),
    /// Check every object and every slot's image in the store.
    Fsck(store::FsckArgs),
    /// Run the D-Bus service.
    Service(service::Args),
    /// The fleet update agent: find, install and reboot into updates (docs/fleet.md).
    Agent(agent::Args),
    /// Build signed update channels (build host; docs/channels.md).
    #[command(subcommand)]
    Channel(channel::Command),
    /// Set up a demo device in a local directory and take it through two updates.
    Demo(demo::Args),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let sub = match &cli.command {
        Command::Bundle(cmd) => cmd.conf(),
        Command::Info(args) => args.keyring.conf.clone(),
        Command::Install(args) => args.conf.clone(),
        Command::Status(args) => args.conf.clone(),
        Command::Gc(args) => args.conf.clone(),
        Command::Fsck(args) => args.conf.clone(),
        Command::Service(args) => args.conf.clone(),
        Command::Agent(args) => args.conf.clone(),
        Command::Channel(cmd) => cmd.conf(),
        Command::Demo(_) => ConfArg::default(),
    };
    let global = Global {
        conf: sub
            .conf
            .or(cli.conf)
            .unwrap_or_else(|| didymos::config::DEFAULT_PATH.into()),
    };
    let result = match cli.command {
        Command::Bundle(cmd) => bundle::run(cmd, &global),
        Command::Info(args) => info::run(args, &global),
        Command::Install(args) => install::run(args, &global),
        Command::Status(args) => status::run(args, &global),
        Command::Gc(args) => store::gc(args, &global),
        Command::Fsck(args) => store::fsck(args, &global),
        Command::Service(args) => service::run(args, &global),
        Command::Agent(args) => agent::run(args, &global),
        Command::Channel(cmd) => channel::run(cmd, &global),
        Command::Demo(args) => demo::run(args, &global),
    };
    match result {
        Ok(code) => code,
        Err(err) => report(&err),
    }
}

/// Prints an error and its whole chain once, with a fixed prefix.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let mut msg = format!("didymos: error: {err}");
    let mut shown = err.to_string();
    for cause in err.chain().skip(1) {
        // Many errors already include their cause in their own message.
        let text = cause.to_string();
        if !shown.contains(&text) {
            msg.push_str(&format!("\n  caused by: {text}"));
            shown = text;
        }
    }
    eprintln!("{msg}");
    ExitCode::FAILURE
}

/// A minimal `log` backend for the CLI: messages to stderr, `-v` for info, `-vv` for debug.
fn init_logging(verbose: u8) {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::max_level()
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                eprintln!(
                    "didymos: {}: {}",
                    r.level().as_str().to_lowercase(),
                    r.args()
                );
            }
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
