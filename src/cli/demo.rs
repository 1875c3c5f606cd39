//! `didymos demo [DIR]`: a whole update cycle on a device in a local directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use didymos::boot::file::FileBootloader;
use didymos::boot::mark::{self, MarkState};
use didymos::bundle::create::{self, CreateOptions};
use didymos::config::SystemConfig;
use didymos::install::{self, BundleSource, CancelToken, InstallOptions};

use super::Global;
use super::status::{Format, render};

#[derive(clap::Args)]
pub struct Args {
    /// Where to create the demo device (must not exist, or be empty).
    #[arg(default_value = "demo-device")]
    pub dir: PathBuf,
}

pub fn run(args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} already exists and is not empty; choose another directory or remove it",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    println!("== Setting up a demo device in {}", dir.display());

    let pki = didymos::bundle::devpki::generate(&dir.join("pki"))
        .context("cannot create the development keys")?;
    println!(
        "   development PKI (never use on a real device): {}",
        dir.join("pki").display()
    );
    let conf_path = dir.join("system.conf");
    std::fs::write(&conf_path, didymos::demo::device_config())?;
    std::fs::write(dir.join("cmdline"), "")?;
    let config = SystemConfig::load(&conf_path)?;
    println!("   device configuration: {}", conf_path.display());

    let mut bundles = Vec::new();
    for version in [1u32, 2] {
        let rootfs = dir.join(format!("rootfs-v{version}"));
        didymos::demo::write_sample_rootfs(&rootfs, version)?;
        let output = dir.join(format!("demo-v{version}.raucb"));
        let mut opts = CreateOptions::new(
            &rootfs,
            &output,
            &pki.signing_cert,
            &pki.signing_key,
            didymos::demo::COMPATIBLE,
            format!("{version}.0"),
        );
        opts.intermediates = vec![pki.intermediate_cert.clone()];
        opts.description = format!("didymos demo root filesystem, version {version}");
        if version == 2 {
            opts.bases = vec![dir.join("demo-v1.raucb")];
        }
        let summary =
            create::create(&opts).with_context(|| format!("cannot build {}", output.display()))?;
        println!(
            "== Built {} ({}): {} objects carried, {} bytes{}",
            output.file_name().unwrap_or_default().to_string_lossy(),
            if version == 2 {
                "delta against v1"
            } else {
                "full"
            },
            summary.manifest.objects.count,
            summary.file_size,
            if version == 2 {
                format!(", {} objects left to the base", summary.objects_in_base)
            } else {
                String::new()
            }
        );
        bundles.push(output);
    }

    for (i, bundle) in bundles.iter().enumerate() {
        install_and_boot(&config, &dir, bundle, i + 1)?;
    }
    println!("\n== Final status\n");
    let status = didymos::status::collect(&config)?;
    print!("{}", render(&status, Format::Readable, true));
    // The command that works from here: after `cargo run`, didymos is not
    // on PATH, but this very binary is.
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "didymos".into());
    println!(
        "\nThe device stays in {}. Try:\n  {exe} status --conf {}\n  {exe} fsck --conf {}",
        dir.display(),
        conf_path.display(),
        conf_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads a file of a slot's root filesystem through its image and the store,
/// the way the mounted root would show it.
fn read_from_slot(
    config: &SystemConfig,
    slot: &didymos::slot::SlotName,
    path: &str,
) -> anyhow::Result<String> {
    use didymos::image::{FileContent, ImageTree};
    let record = didymos::slot::SlotRecord::load(&config.store.path, slot)?;
    let store = didymos::store::Store::open(&config.store.path, config.store.verity);
    let tree = ImageTree::parse(&store.read_image(&record.image)?)?;
    let files = tree.files_at(Path::new(path))?;
    let (_, content) = files.first().context("file not in image")?;
    let bytes = match content {
        FileContent::Inline(b) => b.clone(),
        FileContent::Object { digest, .. } => std::fs::read(store.object_path(digest))?,
        FileContent::Sparse(n) => bail!("{path} in {slot} is a sparse file of {n} bytes, not text"),
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn install_and_boot(
    config: &SystemConfig,
    dir: &Path,
    bundle: &Path,
    version: usize,
) -> anyhow::Result<()> {
    println!("\n== Installing {}", bundle.display());
    let outcome = install::install(
        config,
        BundleSource::Path(bundle.to_owned()),
        &InstallOptions::default(),
        &|p| {
            if p.depth <= 2 {
                println!("   {:>3}% {}", p.percent, p.message);
            }
        },
        &CancelToken::default(),
    )?;
    println!(
        "   version {} is in {}: {} objects written ({} bytes), {} reused from the store",
        outcome.bundle_version,
        outcome.slot,
        outcome.objects_written,
        outcome.bytes_written,
        outcome.objects_reused
    );
    let bootloader = FileBootloader::new(
        config
            .bootloader
            .state_file
            .clone()
            .context("the demo device uses bootloader = \"file\"")?,
        config.bootnames(),
        config.system.boot_attempts,
    );
    let chosen = bootloader
        .simulate_boot()?
        .context("the bootloader found no slot to boot")?;
    std::fs::write(dir.join("cmdline"), format!("didymos.slot={chosen}\n"))?;
    println!(
        "== Rebooting: the bootloader chose slot {chosen} (kernel command line: didymos.slot={chosen})"
    );
    let booted = didymos::slot::booted::detect(config);
    let slot = booted
        .slot()
        .context("the demo device did not boot through a slot")?;
    let os_release = read_from_slot(config, slot, "etc/os-release")?;
    let pretty = os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .unwrap_or("?")
        .trim_matches('"');
    println!("   {slot} runs \"{pretty}\" (etc/os-release read through its image)");
    if !pretty.ends_with(&format!("{version}.0")) {
        bail!("slot {slot} runs {pretty:?}, expected version {version}.0");
    }
    let outcome = mark::mark(
        config,
        &bootloader,
        booted.bootname(),
        MarkState::Good,
        "booted",
    )?;
    println!("== The new system works: {}", outcome.message);
    Ok(())
}
