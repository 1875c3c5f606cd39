//! `didymos service`.

use std::process::ExitCode;

use super::Global;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`didymos service` is not available in this build yet")
}
