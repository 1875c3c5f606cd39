//! `didymos service`: the D-Bus daemon.

use std::process::ExitCode;

use anyhow::Context;
use didymos::service::{self, Bus};

use super::Global;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub conf: super::ConfArg,
    /// Serve on the session bus instead of the system bus (for tests and
    /// development; also chosen by DBUS_STARTER_BUS_TYPE=session).
    #[arg(long)]
    session: bool,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    // The daemon reports what it does; under systemd stderr goes to the journal.
    if log::max_level() < log::LevelFilter::Info {
        log::set_max_level(log::LevelFilter::Info);
    }
    let config = global.config()?;
    let bus = if args.session {
        Bus::Session
    } else {
        Bus::from_env()
    };
    service::run(config, bus).context("the D-Bus service stopped")?;
    Ok(ExitCode::SUCCESS)
}
