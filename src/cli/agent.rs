//! `didymos agent`: the fleet update agent (docs/fleet.md).

use std::process::ExitCode;

use anyhow::Context as _;
use didymos::agent::config::AgentConfig;
use didymos::agent::daemon::{self, Clock};
use didymos::agent::http::Http;
use didymos::agent::installer::Installer;
use didymos::agent::state::AgentState;
use didymos::agent::step::{Agent, Mode};
use jiff::Timestamp;

use super::Global;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub conf: super::ConfArg,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Run the agent (the default): check, install, reboot and report, on schedule.
    Run(RunArgs),
    /// Check once now and say what the agent would do and why; changes nothing.
    Check(CheckArgs),
}

#[derive(clap::Args, Default)]
struct RunArgs {
    /// Run one step and exit (for scripts and tests).
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    time: TimeArgs,
}

#[derive(clap::Args, Default)]
struct CheckArgs {
    #[command(flatten)]
    time: TimeArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Time injection, for tests and simulations.
#[derive(clap::Args, Default)]
struct TimeArgs {
    /// Take this RFC 3339 time as now.
    #[arg(long, value_name = "TIME", conflicts_with = "now_file")]
    now: Option<Timestamp>,
    /// Read now from this file at every step.
    #[arg(long, value_name = "FILE", hide = true)]
    now_file: Option<std::path::PathBuf>,
}

impl TimeArgs {
    fn clock(&self) -> Clock {
        match (&self.now, &self.now_file) {
            (Some(t), _) => Clock::Fixed(*t),
            (None, Some(f)) => Clock::File(f.clone()),
            (None, None) => Clock::System,
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn agent(cfg: AgentConfig) -> anyhow::Result<Agent> {
    let conn = didymos::service::client::connect()
        .await
        .context("cannot connect to the D-Bus bus the installer is on")?;
    let installer = Installer::new(&conn)
        .await
        .context("cannot make a proxy for org.didymos.Installer1")?;
    let http = Http::new(cfg.timeout, cfg.tls_ca.as_deref())?;
    let mut state = AgentState::load(&cfg.state_directory)?;
    let id = didymos::agent::device_id(&mut state);
    if state.device_id.is_some() && AgentState::load(&cfg.state_directory)?.device_id.is_none() {
        state.save(&cfg.state_directory)?;
    }
    Ok(Agent::new(cfg, conn, installer, http, id))
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let system = global.config()?;
    let cfg = AgentConfig::load(&system)?;
    let rt = runtime()?;
    match args.command.unwrap_or(Command::Run(RunArgs::default())) {
        Command::Run(r) => rt.block_on(async {
            let a = agent(cfg).await?;
            daemon::run(a, r.time.clock(), r.once)
                .await
                .map_err(anyhow::Error::msg)?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Check(c) => rt.block_on(async {
            let a = agent(cfg).await?;
            let report = a.step(c.time.clock().now(), Mode::Check).await?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{}", didymos::agent::status_lines(&report).join("\n"));
            }
            Ok(ExitCode::SUCCESS)
        }),
    }
}
