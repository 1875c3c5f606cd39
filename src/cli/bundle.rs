//! `didymos bundle …`: the build host's commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use didymos::bundle::create::{self, CreateOptions, Input, PASSPHRASE_ENV, Signer};
use didymos::bundle::{Bundle, extract, resign};
use didymos::config::CheckPurpose;
use didymos::image::OciXattrs;
use didymos::keyring::{Keyring, KeyringOptions};
use didymos::oci::ImageRef;

use super::Global;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a signed bundle from a root filesystem (directory, tar archive or container image).
    Create(Box<CreateArgs>),
    /// Verify a bundle's whole chain: signature, manifest, index, image, every object.
    Verify(VerifyArgs),
    /// Verify a bundle and write its image and objects to a directory.
    Extract(ExtractArgs),
    /// Sign a bundle's manifest again with another key (key rotation).
    Resign(ResignArgs),
}

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["rootfs", "oci"]))]
pub struct CreateArgs {
    /// The root filesystem: a directory, or a tar archive (plain, gzip or zstd).
    #[arg(long, value_name = "DIR|TAR")]
    rootfs: Option<PathBuf>,
    /// A container image: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG]
    /// or containers-storage:IMAGE (docs/oci.md).
    #[arg(long, value_name = "REF")]
    oci: Option<String>,
    /// Extended attributes a container image's files keep: `capabilities` (the default:
    /// security.capability only, as composefs-rs computes) or `capabilities+user` (also user.*).
    #[arg(
        long,
        value_enum,
        value_name = "capabilities|capabilities+user",
        conflicts_with = "rootfs"
    )]
    oci_xattrs: Option<OciXattrsArg>,
    /// Where to write the bundle.
    #[arg(long, short, value_name = "FILE")]
    output: PathBuf,
    /// Signing certificate (PEM).
    #[arg(long, value_name = "PEM")]
    cert: PathBuf,
    /// Signing key (PEM); an encrypted key's passphrase comes from $DIDYMOS_KEY_PASSPHRASE.
    #[arg(long, value_name = "PEM")]
    key: PathBuf,
    /// Intermediate certificates to embed (repeatable).
    #[arg(long, value_name = "PEM")]
    intermediate: Vec<PathBuf>,
    /// The device compatible string this bundle is for.
    #[arg(long)]
    compatible: String,
    /// The version of the software in the bundle (with --oci, default: the image's
    /// org.opencontainers.image.version label).
    #[arg(long, required_unless_present = "oci", default_value = "")]
    version: String,
    /// Anti-rollback: devices that booted and marked good a bundle with this
    /// security version refuse every bundle below it. Raise it with a
    /// security fix; leave it for releases a device may roll back from.
    #[arg(long, default_value_t = 0, value_name = "N")]
    security_version: u64,
    /// Free text (with --oci, default: the org.opencontainers.image.description label).
    #[arg(long, default_value = "")]
    description: String,
    /// A build identifier (with --oci, default: the org.opencontainers.image.revision label).
    #[arg(long, default_value = "")]
    build: String,
    /// Make a delta bundle leaving out objects this bundle or composefs image
    /// already has, and storing changed files as binary deltas against the
    /// base's objects where that is smaller (repeatable). A base is a bundle,
    /// a composefs image with its objects beside it (as `bundle extract`
    /// writes them), or such a directory.
    #[arg(long, value_name = "BUNDLE|IMAGE|DIR")]
    base: Vec<PathBuf>,
    /// With --base: leave changed files whole (file-level delta only).
    #[arg(long)]
    no_object_deltas: bool,
    /// zstd level of object deltas.
    #[arg(long, default_value_t = create::DEFAULT_DELTA_LEVEL)]
    delta_level: i32,
    /// Without --no-packs: nothing (packs replace the dictionary). With
    /// it: do not train a compression dictionary for small objects.
    #[arg(long)]
    no_dictionary: bool,
    /// Compress each small object alone instead of in packs of
    /// neighbouring files: a larger full bundle (container version 2)
    /// that devices running a didymos older than packs can install, and
    /// whose objects a device fetches over HTTP one by one.
    #[arg(long)]
    no_packs: bool,
    /// Lay out the packs against an earlier release (a bundle, image or
    /// directory, as --base; repeatable): what it has and what it lacks
    /// never share a pack, so a device running it fetches over HTTP only
    /// the packs of what changed. The bundle still carries every object.
    #[arg(long, value_name = "BUNDLE|IMAGE|DIR")]
    previous: Vec<PathBuf>,
    /// Add a raw image for the `raw` slots of a slot class, e.g. `bootloader=u-boot.img`
    /// (repeatable; always carried whole, also in delta bundles).
    #[arg(long, value_name = "CLASS=FILE", value_parser = parse_raw)]
    raw: Vec<(String, PathBuf)>,
    /// zstd compression level for objects.
    #[arg(long, default_value_t = create::DEFAULT_ZSTD_LEVEL)]
    zstd_level: i32,
    /// Worker threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum OciXattrsArg {
    Capabilities,
    #[value(name = "capabilities+user")]
    CapabilitiesUser,
}

/// The keyring options every verifying command takes (RAUC's `[keyring]`).
#[derive(clap::Args)]
pub struct KeyringArgs {
    /// Where the default keyring comes from.
    #[command(flatten)]
    pub conf: super::ConfArg,
    /// Trusted CA certificates (PEM). Default: system.conf's [keyring] path.
    #[arg(long, value_name = "PEM")]
    pub keyring: Option<PathBuf>,
    /// Extended key usage the signer must have.
    #[arg(long, value_enum)]
    pub check_purpose: Option<PurposeArg>,
    /// Accept a chain ending at an intermediate in the keyring.
    #[arg(long)]
    pub allow_partial_chain: bool,
    /// Accept only signers with one of these common names (repeatable).
    #[arg(long = "allowed-signer-cn", value_name = "CN")]
    pub allowed_signer_cns: Vec<String>,
    /// Check certificate validity at the bundle's signing time.
    #[arg(long)]
    pub use_bundle_signing_time: bool,
    /// Do not check certificate validity times.
    #[arg(long)]
    pub no_check_time: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PurposeArg {
    Codesign,
    Smimesign,
    Any,
}

impl KeyringArgs {
    /// Whether any keyring option was given (anything but system.conf's keyring as configured).
    pub fn given(&self) -> bool {
        self.keyring.is_some()
            || self.check_purpose.is_some()
            || self.allow_partial_chain
            || !self.allowed_signer_cns.is_empty()
            || self.use_bundle_signing_time
            || self.no_check_time
    }

    /// The keyring from `--keyring` plus flags, or else from system.conf.
    pub fn load(&self, global: &Global) -> anyhow::Result<Keyring> {
        let (path, mut options) = match &self.keyring {
            Some(p) => (p.clone(), KeyringOptions::default()),
            None => {
                let conf = global
                    .config()
                    .context("no --keyring given and the device configuration cannot be read")?;
                (
                    conf.keyring.path.clone(),
                    KeyringOptions::from_section(&conf.keyring),
                )
            }
        };
        if let Some(p) = self.check_purpose {
            options.check_purpose = match p {
                PurposeArg::Codesign => CheckPurpose::Codesign,
                PurposeArg::Smimesign => CheckPurpose::Smimesign,
                PurposeArg::Any => CheckPurpose::Any,
            };
        }
        options.allow_partial_chain |= self.allow_partial_chain;
        options.use_bundle_signing_time |= self.use_bundle_signing_time;
        options.no_check_time |= self.no_check_time;
        if !self.allowed_signer_cns.is_empty() {
            options.allowed_signer_cns = self.allowed_signer_cns.clone();
        }
        Ok(Keyring::from_pem_file(&path, options)?)
    }
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    keyring: KeyringArgs,
    bundle: PathBuf,
}

#[derive(clap::Args)]
pub struct ExtractArgs {
    #[command(flatten)]
    keyring: KeyringArgs,
    /// Where the sources of a delta bundle's deltas are, besides DIR/objects
    /// (a bundle, or an image with its objects beside it; repeatable).
    #[arg(long, value_name = "BUNDLE|IMAGE|DIR")]
    base: Vec<PathBuf>,
    bundle: PathBuf,
    /// Destination: gets image.cfs and objects/xx/<62 hex>.
    dir: PathBuf,
}

#[derive(clap::Args)]
pub struct ResignArgs {
    /// Keyring the input bundle is checked against first.
    #[command(flatten)]
    keyring: KeyringArgs,
    /// New signing certificate (PEM).
    #[arg(long, value_name = "PEM")]
    cert: PathBuf,
    /// New signing key (PEM); passphrase from $DIDYMOS_KEY_PASSPHRASE.
    #[arg(long, value_name = "PEM")]
    key: PathBuf,
    #[arg(long, value_name = "PEM")]
    intermediate: Vec<PathBuf>,
    input: PathBuf,
    output: PathBuf,
}

impl Command {
    /// The subcommand's own `--conf`, if it takes one.
    pub fn conf(&self) -> super::ConfArg {
        match self {
            Command::Create(_) => super::ConfArg::default(),
            Command::Verify(a) => a.keyring.conf.clone(),
            Command::Extract(a) => a.keyring.conf.clone(),
            Command::Resign(a) => a.keyring.conf.clone(),
        }
    }
}

pub fn run(cmd: Command, global: &Global) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Create(a) => create_cmd(*a),
        Command::Verify(a) => verify_cmd(a, global),
        Command::Extract(a) => extract_cmd(a, global),
        Command::Resign(a) => resign_cmd(a, global),
    }
}

fn passphrase() -> Option<String> {
    std::env::var(PASSPHRASE_ENV).ok()
}

/// `SOURCE_DATE_EPOCH`, if set, is the creation time (reproducible builds).
fn source_date_epoch() -> anyhow::Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => Ok(Some(v.trim().parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970")
        })?)),
        Err(_) => Ok(None),
    }
}

/// `CLASS=FILE` of `--raw`.
fn parse_raw(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((class, file)) if !class.is_empty() && !file.is_empty() => {
            Ok((class.to_owned(), PathBuf::from(file)))
        }
        _ => Err(format!(
            "{s:?} is not CLASS=FILE (e.g. bootloader=u-boot.img)"
        )),
    }
}

fn create_cmd(a: CreateArgs) -> anyhow::Result<ExitCode> {
    let input = match (a.rootfs, a.oci) {
        (Some(rootfs), None) => Input::Rootfs(rootfs),
        (None, Some(r)) => Input::Oci {
            image: ImageRef::parse(&r)?,
            xattrs: match a.oci_xattrs {
                None | Some(OciXattrsArg::Capabilities) => OciXattrs::CapabilitiesOnly,
                Some(OciXattrsArg::CapabilitiesUser) => OciXattrs::KeepUser,
            },
        },
        _ => unreachable!("clap requires exactly one of --rootfs and --oci"),
    };
    let opts = CreateOptions {
        input,
        output: a.output.clone(),
        cert: a.cert,
        key: a.key,
        key_passphrase: passphrase(),
        intermediates: a.intermediate,
        compatible: a.compatible,
        version: a.version,
        security_version: a.security_version,
        description: a.description,
        build: a.build,
        bases: a.base,
        raw: a.raw,
        created: source_date_epoch()?,
        zstd_level: a.zstd_level,
        threads: a.threads,
        object_deltas: !a.no_object_deltas,
        delta_level: a.delta_level,
        dictionary: !a.no_dictionary,
        packs: !a.no_packs,
        previous: a.previous,
    };
    let s = create::create(&opts)
        .with_context(|| format!("cannot create bundle {}", a.output.display()))?;
    let m = &s.manifest;
    println!(
        "created {} ({} bytes) in {:.1?}",
        s.output.display(),
        s.file_size,
        s.elapsed
    );
    if let Some(src) = &s.image_source {
        println!("  from       {src}");
    }
    println!("  version    {}", m.version);
    println!("  image      {} ({} bytes)", m.image.digest, m.image.size);
    println!(
        "  objects    {} carried ({} bytes, {} stored), {} referenced, {} from base",
        m.objects.count,
        m.objects.size,
        m.objects.stored_size,
        m.objects.referenced,
        s.objects_in_base
    );
    if s.deltas.count > 0 {
        println!(
            "  deltas     {} objects ({} bytes) stored as {} bytes of deltas against the base",
            s.deltas.count, s.deltas.size, s.deltas.stored
        );
    }
    if s.dictionary > 0 {
        println!(
            "  dictionary {} bytes, for {} small objects",
            s.dictionary, s.dictionary_objects
        );
    }
    if s.packs > 0 {
        println!(
            "  packs      {} packs of {} small objects",
            s.packs, s.packed_objects
        );
    }
    for r in &m.raw {
        println!(
            "  raw        {} {} ({} bytes, sha256 {})",
            r.class, r.digest, r.size, r.sha256
        );
    }
    println!(
        "  tree       {} directories, {} files ({} inline), {} symlinks, {} devices, {} hardlinks",
        s.tree.directories,
        s.tree.regular_files,
        s.tree.inline_files,
        s.tree.symlinks,
        s.tree.devices,
        s.tree.hardlinks
    );
    Ok(ExitCode::SUCCESS)
}

fn open_verified(
    path: &Path,
    keyring: &KeyringArgs,
    global: &Global,
) -> anyhow::Result<didymos::bundle::VerifiedBundle> {
    let keyring = keyring.load(global)?;
    let bundle = Bundle::open(path)?;
    bundle
        .verify(&keyring)
        .with_context(|| format!("{} failed verification", path.display()))
}

fn verify_cmd(a: VerifyArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let v = open_verified(&a.bundle, &a.keyring, global)?;
    let report = v
        .verify_payload(&|_, _| {})
        .with_context(|| format!("{} failed verification", a.bundle.display()))?;
    println!("{}: OK", a.bundle.display());
    println!("  signer     {}", v.signer().subject);
    println!(
        "  image      {} ({} bytes)",
        v.manifest().image.digest,
        report.image_size
    );
    println!(
        "  objects    {} checked ({} bytes), {} referenced",
        report.checked, report.bytes, report.referenced
    );
    if report.deltas > 0 {
        println!(
            "  deltas     {} not decoded: their results are checked where their sources are (install, extract)",
            report.deltas
        );
    }
    if let Some(base) = report.image_base {
        println!(
            "  image      stored as a delta against image {base}: decoded and checked where that image is (install, extract)"
        );
    }
    for r in &v.manifest().raw {
        println!("  raw        {} {} ({} bytes)", r.class, r.digest, r.size);
    }
    Ok(ExitCode::SUCCESS)
}

fn extract_cmd(a: ExtractArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let v = open_verified(&a.bundle, &a.keyring, global)?;
    let bases = if a.base.is_empty() {
        None
    } else {
        std::fs::create_dir_all(&a.dir)
            .with_context(|| format!("cannot create {}", a.dir.display()))?;
        Some(create::Bases::load(&a.base, &a.dir)?)
    };
    let s = extract::extract(
        &v,
        &a.dir,
        bases
            .as_ref()
            .map(|b| b as &dyn didymos::bundle::delta::Sources),
        bases
            .as_ref()
            .map_or(&didymos::bundle::NoBaseImages as _, |b| {
                b as &dyn didymos::bundle::BaseImages
            }),
    )
    .with_context(|| {
        format!(
            "cannot extract {} into {}",
            a.bundle.display(),
            a.dir.display()
        )
    })?;
    println!(
        "extracted {}: {} objects written ({} bytes), {} already present",
        s.image.display(),
        s.objects_written,
        s.bytes,
        s.objects_present
    );
    if v.manifest().is_delta() {
        println!("  note: this is a delta bundle; objects its base provides are not included");
    }
    Ok(ExitCode::SUCCESS)
}

fn resign_cmd(a: ResignArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let v = open_verified(&a.input, &a.keyring, global)?;
    let signer = Signer::load(&a.cert, &a.key, passphrase().as_deref(), &a.intermediate)?;
    let size = resign::resign(&v, &signer, &a.output)
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    println!(
        "re-signed {} as {} ({size} bytes)",
        a.input.display(),
        a.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
