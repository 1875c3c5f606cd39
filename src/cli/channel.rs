//! `didymos channel …`: the build host's verbs for signed update channels
//! (docs/channels.md). Every edit rewrites the document without its
//! signature; `sign` signs it again with a higher sequence.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use didymos::agent::channel::signed::{self, VerifiedChannel};
use didymos::agent::channel::{Channel, Release, edit};
use jiff::Timestamp;
use openssl::pkey::PKey;
use openssl::x509::X509;

use super::Global;
use super::bundle::KeyringArgs;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Start a new, empty channel document.
    New(NewArgs),
    /// Add a release (from its bundle) with edges to it.
    Add(AddArgs),
    /// Make a release a barrier every device must pass through.
    Barrier(VersionArgs),
    /// Mark a release a dead-end (no automatic updates from it), or clear it.
    Deadend(DeadendArgs),
    /// Give a release a phased rollout, or clear it.
    Rollout(RolloutArgs),
    /// Sign the channel: a higher sequence, issued now, an expiry.
    Sign(SignArgs),
    /// Check a signed channel's signature and expiry.
    Verify(VerifyArgs),
    /// Show a channel's releases and graph.
    Show(ShowArgs),
}

impl Command {
    pub fn conf(&self) -> super::ConfArg {
        match self {
            Self::Add(a) => a.keyring.conf.clone(),
            Self::Verify(a) => a.keyring.conf.clone(),
            Self::Show(a) => a.keyring.conf.clone(),
            _ => super::ConfArg::default(),
        }
    }
}

#[derive(clap::Args)]
pub struct NewArgs {
    file: PathBuf,
    #[arg(long)]
    name: String,
    /// Let devices that allow it take this channel's downgrade edges.
    #[arg(long)]
    allow_downgrade: bool,
}

#[derive(clap::Args)]
pub struct AddArgs {
    file: PathBuf,
    /// The release's bundle: its version, compatible and manifest hash are read from it
    /// (its signature is checked against the keyring).
    #[arg(long)]
    bundle: PathBuf,
    /// Where devices fetch the bundle (repeatable, tried in order): a URL, or a path
    /// relative to the channel. Default: the bundle's file name.
    #[arg(long = "url", value_name = "URL")]
    urls: Vec<String>,
    /// Edges come from these versions (repeatable). Default: every older release
    /// that reaches this one without crossing a barrier.
    #[arg(long = "from", value_name = "VERSION")]
    from: Vec<String>,
    #[command(flatten)]
    keyring: KeyringArgs,
}

#[derive(clap::Args)]
pub struct VersionArgs {
    file: PathBuf,
    version: String,
}

#[derive(clap::Args)]
pub struct DeadendArgs {
    file: PathBuf,
    version: String,
    /// Why (shown on the devices).
    #[arg(long, required_unless_present = "clear")]
    reason: Option<String>,
    #[arg(long, conflicts_with = "reason")]
    clear: bool,
}

#[derive(clap::Args)]
pub struct RolloutArgs {
    file: PathBuf,
    version: String,
    /// Start (RFC 3339); default now.
    #[arg(long)]
    start: Option<Timestamp>,
    /// Share of the fleet at the start, 0–100.
    #[arg(long, default_value_t = 0.0)]
    start_percentage: f64,
    /// From the start to the whole fleet, e.g. 48h.
    #[arg(long, value_parser = humantime::parse_duration, required_unless_present = "clear")]
    duration: Option<Duration>,
    #[arg(long, conflicts_with_all = ["start", "duration"])]
    clear: bool,
}

#[derive(clap::Args)]
pub struct SignArgs {
    file: PathBuf,
    #[arg(long, value_name = "PEM")]
    cert: PathBuf,
    /// An encrypted key's passphrase comes from $DIDYMOS_KEY_PASSPHRASE.
    #[arg(long, value_name = "PEM")]
    key: PathBuf,
    #[arg(long, value_name = "PEM")]
    intermediate: Vec<PathBuf>,
    /// How long devices accept it, e.g. 7d; re-sign before then.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "7d")]
    expires: Duration,
    /// Where to write the signed channel (default: FILE itself).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    file: PathBuf,
    #[command(flatten)]
    keyring: KeyringArgs,
    /// Check the expiry against this time instead of now.
    #[arg(long)]
    now: Option<Timestamp>,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    file: PathBuf,
    /// Show it without checking a signature.
    #[arg(long)]
    no_verify: bool,
    #[command(flatten)]
    keyring: KeyringArgs,
}

fn read(file: &Path) -> anyhow::Result<Channel> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    Channel::parse(signed::unsigned_part(&bytes)).with_context(|| file.display().to_string())
}

fn write(file: &Path, c: &Channel) -> anyhow::Result<()> {
    publish(file, c.to_toml().as_bytes())
}

/// Writes a channel file atomically, readable by everyone: it is public, and
/// the web server that serves it usually runs as another user.
fn publish(file: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    didymos::util::write_atomic_with(file, |f| {
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        std::io::Write::write_all(f, bytes)
    })
    .with_context(|| format!("cannot write {}", file.display()))
}

fn edges(e: &[didymos::agent::channel::Edge]) -> String {
    e.iter()
        .map(|e| format!("{} -> {}", e.from, e.to))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The keyring for channel signatures: the options given, else the
/// device's `[updates] keyring` (or its `[keyring]`).
fn keyring(args: &KeyringArgs, global: &Global) -> anyhow::Result<didymos::keyring::Keyring> {
    if args.given() {
        return args.load(global);
    }
    let system = global.config().context("no --keyring given")?;
    let cfg = didymos::agent::config::AgentConfig::load(&system)?;
    let section = match cfg.source {
        didymos::agent::config::Source::Channel { keyring, .. } => keyring,
        _ => system.keyring.clone(),
    };
    Ok(didymos::keyring::Keyring::load(&section)?)
}

pub fn run(cmd: Command, global: &Global) -> anyhow::Result<ExitCode> {
    let now = Timestamp::now();
    match cmd {
        Command::New(a) => {
            if a.file.exists() {
                bail!(
                    "{} exists already; edit it with the other channel verbs",
                    a.file.display()
                );
            }
            write(&a.file, &edit::new(&a.name, a.allow_downgrade, now))?;
            println!("created channel {:?} in {}", a.name, a.file.display());
        }
        Command::Add(a) => {
            let mut c = read(&a.file)?;
            let keyring = a.keyring.load(global)?;
            let bundle = didymos::bundle::Bundle::open(&a.bundle)?
                .verify(&keyring)
                .with_context(|| format!("{} does not verify", a.bundle.display()))?;
            let m = bundle.manifest();
            let urls = if a.urls.is_empty() {
                vec![
                    a.bundle
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                ]
            } else {
                a.urls
            };
            let release = Release {
                version: m.version.clone(),
                compatible: m.compatible.clone(),
                manifest_hash: bundle.manifest_hash(),
                bundles: urls,
                barrier: false,
                deadend: None,
                rollout: None,
            };
            let from = (!a.from.is_empty()).then_some(a.from);
            let added = edit::add_release(&mut c, release, from)?;
            write(&a.file, &c)?;
            println!(
                "added {} ({}), manifest {}; edges: {}",
                m.version,
                m.compatible,
                bundle.manifest_hash(),
                if added.is_empty() {
                    "none".into()
                } else {
                    edges(&added)
                }
            );
        }
        Command::Barrier(a) => {
            let mut c = read(&a.file)?;
            let (removed, added) = edit::set_barrier(&mut c, &a.version)?;
            write(&a.file, &c)?;
            println!(
                "{} is a barrier; removed edges: {}; added edges: {}",
                a.version,
                if removed.is_empty() {
                    "none".into()
                } else {
                    edges(&removed)
                },
                if added.is_empty() {
                    "none".into()
                } else {
                    edges(&added)
                }
            );
        }
        Command::Deadend(a) => {
            let mut c = read(&a.file)?;
            let reason = if a.clear { None } else { a.reason.as_deref() };
            edit::set_deadend(&mut c, &a.version, reason)?;
            write(&a.file, &c)?;
            println!(
                "{} {}",
                a.version,
                if a.clear {
                    "is no longer a dead-end"
                } else {
                    "is a dead-end"
                }
            );
        }
        Command::Rollout(a) => {
            let mut c = read(&a.file)?;
            let r = match (a.clear, a.duration) {
                (true, _) => None,
                (false, Some(d)) => Some((a.start.unwrap_or(now), a.start_percentage, d)),
                (false, None) => bail!("--duration is required"),
            };
            edit::set_rollout(&mut c, &a.version, r)?;
            write(&a.file, &c)?;
            println!(
                "{}: rollout {}",
                a.version,
                if a.clear { "cleared" } else { "set" }
            );
        }
        Command::Sign(a) => {
            let mut c = read(&a.file)?;
            edit::prepare_signing(&mut c, now, a.expires)?;
            let load = |p: &Path| -> anyhow::Result<Vec<u8>> {
                std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
            };
            let cert = X509::from_pem(&load(&a.cert)?).context("not a PEM certificate")?;
            let key_pem = load(&a.key)?;
            let key = match std::env::var(didymos::bundle::create::PASSPHRASE_ENV) {
                Ok(p) => PKey::private_key_from_pem_passphrase(&key_pem, p.as_bytes()),
                Err(_) => PKey::private_key_from_pem(&key_pem),
            }
            .with_context(|| format!("cannot read the private key {}", a.key.display()))?;
            let chain = a
                .intermediate
                .iter()
                .map(|p| Ok(X509::from_pem(&load(p)?)?))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let out = signed::sign(&c.to_toml(), &cert, &key, &chain).context("cannot sign")?;
            let dest = a.output.unwrap_or(a.file.clone());
            if dest != a.file {
                // The document keeps its sequence for the next signing.
                write(&a.file, &c)?;
            }
            publish(&dest, &out)?;
            println!(
                "signed channel {:?} sequence {}, valid until {} -> {}",
                c.channel.name,
                c.channel.sequence,
                c.channel.expires,
                dest.display()
            );
        }
        Command::Verify(a) => {
            let bytes = std::fs::read(&a.file)
                .with_context(|| format!("cannot read {}", a.file.display()))?;
            let what = a.file.display().to_string();
            let keyring = keyring(&a.keyring, global)?;
            let v = VerifiedChannel::verify(&bytes, &keyring, &what)?;
            v.check_fresh(a.now.unwrap_or(now), None, &what)?;
            let h = &v.channel().channel;
            println!(
                "{what}: channel {:?} sequence {} verified (signer {}), valid until {}",
                h.name,
                h.sequence,
                v.signer().subject,
                h.expires
            );
        }
        Command::Show(a) => {
            let bytes = std::fs::read(&a.file)
                .with_context(|| format!("cannot read {}", a.file.display()))?;
            let c = if a.no_verify {
                Channel::parse(signed::unsigned_part(&bytes))?
            } else {
                let keyring = keyring(&a.keyring, global)?;
                VerifiedChannel::verify(&bytes, &keyring, &a.file.display().to_string())?
                    .channel()
                    .clone()
            };
            print!("{}", show(&c));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The readable form of a channel.
pub fn show(c: &Channel) -> String {
    let h = &c.channel;
    let mut out = format!(
        "channel {:?}, sequence {}, issued {}, expires {}{}\n",
        h.name,
        h.sequence,
        h.issued,
        h.expires,
        if h.allow_downgrade {
            ", downgrades allowed"
        } else {
            ""
        }
    );
    for r in &c.releases {
        out.push_str(&format!("release {} ({})\n", r.version, r.compatible));
        out.push_str(&format!("  manifest {}\n", r.manifest_hash));
        for b in &r.bundles {
            out.push_str(&format!("  bundle   {b}\n"));
        }
        if r.barrier {
            out.push_str("  barrier\n");
        }
        if let Some(d) = &r.deadend {
            out.push_str(&format!("  dead-end: {d}\n"));
        }
        if let Some(ro) = &r.rollout {
            out.push_str(&format!(
                "  rollout from {} at {} %, to 100 % over {}\n",
                ro.start,
                ro.start_percentage,
                humantime::format_duration(ro.duration)
            ));
        }
        let to: Vec<&str> = c
            .edges
            .iter()
            .filter(|e| e.from == r.version)
            .map(|e| e.to.as_str())
            .collect();
        if !to.is_empty() {
            out.push_str(&format!("  -> {}\n", to.join(", ")));
        }
    }
    out
}
