//! didymos-setup-root: checks the slot the bootloader chose and mounts it as
//! the root filesystem, from an initramfs.
//!
//! Runs before any journal exists and without an async runtime: it logs to
//! stderr (the console), prints one line on success and one on failure, and
//! exits non-zero on failure so the boot fails and the bootloader counts the
//! attempt. As PID 1 (plain `/init` mode) it switches root itself, or reboots
//! after a failure (PID 1 must not exit).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use didymos::setup_root::{self, ImageCheck, SetupOptions};
use didymos::sys::composefs::{ErofsBacking, OverlayLayers};

const USAGE: &str = "\
usage: didymos-setup-root [options]

Checks the slot named by didymos.slot= on the kernel command line against its
signature and mounts its composefs image as the root filesystem.

options:
  --cmdline TEXT    use TEXT instead of /proc/cmdline
  --conf PATH       system.conf (default /etc/didymos/system.conf)
  --root DIR        use the store mounted at DIR instead of mounting root=
  --target DIR      mount the tree at DIR (default /sysroot)
  --run-dir DIR     scratch directory (default /run/didymos)
  --switch-root     switch to the tree and exec its init (default when PID 1)
  --no-switch-root  leave the tree mounted at the target
  --force-loop      mount the EROFS image through a loop device
  --legacy-layers   give overlayfs its layers as lowerdir=IMAGE::OBJECTS
  -v, --verbose     log details
  -h, --help        this text
";

struct Logger(log::LevelFilter);

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!(
                "didymos-setup-root: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

struct Cli {
    options: SetupOptions,
    cmdline: Option<String>,
    switch_root: Option<bool>,
    verbose: bool,
}

fn parse_cli(mut args: impl Iterator<Item = OsString>) -> Result<Cli, String> {
    let mut cli = Cli {
        options: SetupOptions::default(),
        cmdline: None,
        switch_root: None,
        verbose: false,
    };
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy().into_owned();
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--cmdline" => cli.cmdline = Some(value("--cmdline")?.to_string_lossy().into_owned()),
            "--conf" => cli.options.config = PathBuf::from(value("--conf")?),
            "--root" => cli.options.store_root = Some(PathBuf::from(value("--root")?)),
            "--target" => cli.options.target = PathBuf::from(value("--target")?),
            "--run-dir" => cli.options.run_dir = PathBuf::from(value("--run-dir")?),
            "--switch-root" => cli.switch_root = Some(true),
            "--no-switch-root" => cli.switch_root = Some(false),
            "--force-loop" => cli.options.composefs.force_loop = true,
            "--legacy-layers" => cli.options.composefs.force_legacy_layers = true,
            "-v" | "--verbose" => cli.verbose = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(cli)
}

fn main() -> ExitCode {
    let pid1 = std::process::id() == 1;
    let cli = match parse_cli(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) if e.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("didymos-setup-root: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let level = if cli.verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Warn
    };
    let _ = log::set_boxed_logger(Box::new(Logger(level)));
    log::set_max_level(level);

    let status = run(cli, pid1);
    if pid1 {
        // PID 1 must not exit (the kernel would panic without a message
        // anyone can act on): give the console a moment, then reboot so the
        // bootloader counts the failed attempt.
        eprintln!("didymos-setup-root: rebooting in 3 seconds");
        rustix::fs::sync();
        std::thread::sleep(std::time::Duration::from_secs(3));
        let _ = rustix::system::reboot(rustix::system::RebootCommand::Restart);
    }
    status
}

fn run(mut cli: Cli, pid1: bool) -> ExitCode {
    cli.options.cmdline = match cli.cmdline.take() {
        Some(c) => c,
        None => match didymos::util::read_bounded_to_string(
            std::path::Path::new("/proc/cmdline"),
            setup_root::cmdline::MAX_CMDLINE as u64,
        ) {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "didymos-setup-root: FAILED: cannot read /proc/cmdline: {e} (is /proc mounted?)"
                );
                return ExitCode::FAILURE;
            }
        },
    };
    let mounted = match setup_root::run(&cli.options) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("didymos-setup-root: FAILED: {e}; refusing to boot it");
            return ExitCode::FAILURE;
        }
    };
    let uptime = setup_root::uptime()
        .map(|t| format!(" at {t:.2} s after boot"))
        .unwrap_or_default();
    eprintln!(
        "didymos-setup-root: slot {} ({}) version {}: image {} ({}), mounted at {} with verity={}, EROFS {}, layers {}{uptime}",
        mounted.bootname,
        mounted.slot,
        if mounted.version.is_empty() {
            "?"
        } else {
            &mounted.version
        },
        mounted.image,
        match mounted.check {
            ImageCheck::Verity => "fs-verity",
            ImageCheck::Userspace => "digest computed, no fs-verity",
        },
        cli.options.target.display(),
        mounted.verity.as_str(),
        match &mounted.backing {
            ErofsBacking::File => "from file".to_owned(),
            ErofsBacking::Loop(p) => format!("on {}", p.display()),
        },
        match mounted.layers {
            OverlayLayers::Appended => "lowerdir+/datadir+",
            OverlayLayers::Legacy => "lowerdir=IMAGE::OBJECTS",
        },
    );
    if cli.switch_root.unwrap_or(pid1) {
        let init = mounted.init.as_deref().unwrap_or("/sbin/init");
        let err = didymos::sys::switch_root::switch_root(&cli.options.target, init, &[]);
        eprintln!(
            "didymos-setup-root: FAILED: slot {} ({}): {err}",
            mounted.bootname, mounted.slot
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
