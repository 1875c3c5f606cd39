//! `didymos gc` and `didymos fsck`.

use std::process::ExitCode;

use super::Global;

#[derive(clap::Args)]
pub struct GcArgs {}

#[derive(clap::Args)]
pub struct FsckArgs {}

pub fn gc(_args: GcArgs, _global: &Global) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`didymos gc` is not available in this build yet")
}

pub fn fsck(_args: FsckArgs, _global: &Global) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`didymos fsck` is not available in this build yet")
}
