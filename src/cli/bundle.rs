//! `didymos bundle …`: the build host's commands.

use std::process::ExitCode;

use super::Global;

#[derive(clap::Subcommand)]
pub enum Command {}

pub fn run(cmd: Command, _global: &Global) -> anyhow::Result<ExitCode> {
    match cmd {}
}
