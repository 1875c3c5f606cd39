//! `didymos gc` and `didymos fsck`.

use std::process::ExitCode;

use super::Global;

#[derive(clap::Args)]
pub struct GcArgs {}

#[derive(clap::Args)]
pub struct FsckArgs {}

pub fn gc(_args: GcArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let config = global.config()?;
    let report = didymos::install::gc(&config)?;
    println!(
        "removed {} objects ({} bytes) and {} images; {} objects kept",
        report.objects_removed, report.bytes_removed, report.images_removed, report.objects_kept
    );
    Ok(ExitCode::SUCCESS)
}

pub fn fsck(_args: FsckArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let config = global.config()?;
    let report = didymos::install::fsck(&config)?;
    for p in &report.problems {
        println!("{p}");
    }
    println!(
        "checked {} objects and {} slot images: {}",
        report.objects_checked,
        report.images_checked,
        if report.is_clean() {
            "clean".to_owned()
        } else {
            format!("{} problem(s)", report.problems.len())
        }
    );
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
