//! `didymos gc` and `didymos fsck`.

use std::process::ExitCode;

use super::Global;

#[derive(clap::Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub conf: super::ConfArg,
}

#[derive(clap::Args)]
pub struct FsckArgs {
    #[command(flatten)]
    pub conf: super::ConfArg,
    /// First enable fs-verity on every object and image that lacks it (after
    /// checking its content), e.g. on a store a build host filled.
    #[arg(long)]
    enable_verity: bool,
    /// Move damaged objects and images into quarantine/ in the store (never
    /// deleted), so that the next install of a bundle carrying them writes
    /// them again.
    #[arg(long)]
    repair: bool,
}

pub fn gc(_args: GcArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let config = global.config()?;
    let report = didymos::install::gc(&config)?;
    println!(
        "removed {} objects ({} bytes) and {} images; {} objects kept",
        report.objects_removed, report.bytes_removed, report.images_removed, report.objects_kept
    );
    Ok(ExitCode::SUCCESS)
}

pub fn fsck(args: FsckArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let config = global.config()?;
    if args.enable_verity {
        let sealed = didymos::install::enable_verity(&config)?;
        println!("enabled fs-verity on {sealed} files");
    }
    if args.repair {
        let moved = didymos::install::repair(&config)?;
        for (what, to) in &moved {
            println!("{what} is damaged: moved to {}", to.display());
        }
        if !moved.is_empty() {
            println!(
                "moved {} damaged file(s) to quarantine; install a bundle that carries them \
                 (a full bundle of an installed version) to write them again",
                moved.len()
            );
        }
    }
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
