//! `didymos info`: what a bundle contains and whether it verifies.

use std::process::ExitCode;

use anyhow::Context;
use didymos::bundle::{Bundle, Manifest, SignerInfo};
use didymos::install::DeviceSize;
use didymos::service::error::chain;

use super::Global;
use super::bundle::KeyringArgs;
use super::remote::Inspection;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub keyring: KeyringArgs,
    /// Show the manifest without checking the signature.
    #[arg(long, conflicts_with = "keyring")]
    no_verify: bool,
    #[arg(long, value_enum, default_value = "readable")]
    output_format: Format,
    /// Verify in this process even when the didymos service is running.
    #[arg(long)]
    direct: bool,
    /// A bundle file, or an http:// or https:// URL.
    bundle: String,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Readable,
    Json,
}

enum Verdict {
    Skipped,
    Verified(SignerInfo),
    /// Why the bundle does not verify.
    Failed(String),
}

/// Verifies through the service when it runs (against the device's keyring,
/// like an install would), unless `--direct`, `--no-verify` or a keyring
/// option asks for something else; the output is the same either way.
/// `BUNDLE` may be an `http://` or `https://` URL.
pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let url = didymos::net::is_url(&args.bundle);
    // The device's configuration, when there is one (a build host may have
    // none: --keyring then says what to trust).
    let config = global.config().ok();
    let streaming = config
        .as_ref()
        .map(|c| c.streaming.clone())
        .unwrap_or_default();
    let open = || -> anyhow::Result<Bundle> {
        Ok(if url {
            Bundle::open_url(&args.bundle, &streaming)?
        } else {
            Bundle::open(std::path::Path::new(&args.bundle))?
        })
    };
    let bundle = open()?;
    let shown = if url {
        didymos::net::shown(&args.bundle)
    } else {
        args.bundle.clone()
    };
    let service = if args.direct || args.no_verify || args.keyring.given() {
        None
    } else {
        super::remote::connect_if_running(global)?
    };
    // A manifest is shown before (or without) its signature check only when
    // it parses; when it does not, the failed check is the whole answer.
    let unverified = |bundle: &Bundle, verdict: Verdict| -> anyhow::Result<_> {
        let manifest = match (bundle.manifest_unverified(), &verdict) {
            (Ok(m), _) => m,
            (Err(_), Verdict::Failed(message)) => anyhow::bail!("{message}"),
            (Err(e), _) => return Err(e.into()),
        };
        Ok((manifest, bundle.header().file_size(), verdict, None))
    };
    let (manifest, file_size, verdict, for_device) = match service {
        Some(service) => {
            let source = if url {
                super::remote::InspectSource::Url(args.bundle.clone())
            } else {
                super::remote::InspectSource::File(
                    std::fs::File::open(&args.bundle)
                        .with_context(|| format!("cannot open bundle {}", args.bundle))?,
                )
            };
            match service.inspect(source) {
                Ok(Inspection::Verified(info)) => {
                    let info = *info;
                    (
                        info.manifest,
                        info.size,
                        Verdict::Verified(info.signer),
                        info.for_device,
                    )
                }
                Ok(Inspection::Rejected(message)) => unverified(&bundle, Verdict::Failed(message))?,
                Err(code) => return Ok(code),
            }
        }
        None if args.no_verify => unverified(&bundle, Verdict::Skipped)?,
        None => {
            let keyring = args.keyring.load(global)?;
            let file_size = bundle.header().file_size();
            match bundle.verify(&keyring) {
                Ok(v) => {
                    let for_device = config
                        .as_ref()
                        .filter(|_| !args.keyring.given())
                        .map(|c| didymos::install::size_for_device(c, &v))
                        .transpose()?;
                    (
                        v.manifest().clone(),
                        file_size,
                        Verdict::Verified(v.signer().clone()),
                        for_device,
                    )
                }
                // The message the service would send; verify() took the
                // bundle, and its head is small enough to read again.
                Err(e) => unverified(&open()?, Verdict::Failed(chain(&e)))?,
            }
        }
    };
    // The index (checked against the manifest's hash) says how objects are
    // stored; a bundle whose index does not read shows none of it.
    let payload = open()
        .ok()
        .and_then(|b| b.into_base().ok())
        .filter(|b| b.manifest() == &manifest)
        .map(|b| Payload::of(&b));
    let payload = payload.as_ref();
    match args.output_format {
        Format::Readable => print!(
            "{}",
            readable(&shown, &manifest, file_size, &verdict, for_device, payload)
        ),
        Format::Json => println!(
            "{}",
            json(&shown, &manifest, file_size, &verdict, for_device, payload)
        ),
    }
    Ok(match verdict {
        Verdict::Failed(_) => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}

/// How the objects are stored, from the index.
struct Payload {
    container: u32,
    dictionary: u64,
    dictionary_objects: u64,
    /// Packs, the objects in them, and their stored bytes.
    packs: (u64, u64, u64),
    /// The image region's length, and the base image of an image delta.
    image: (u64, Option<didymos::Digest>),
    /// (object, source, size, stored size) of each delta.
    deltas: Vec<(didymos::Digest, didymos::Digest, u64, u64)>,
}

impl Payload {
    fn of(b: &didymos::bundle::BaseBundle) -> Self {
        use didymos::bundle::Encoding;
        Payload {
            container: b.container_version(),
            image: b.image_stored().unwrap_or((0, None)),
            dictionary: b.dictionary_len(),
            dictionary_objects: b
                .index()
                .iter()
                .filter(|e| e.encoding == Encoding::ZstdDict)
                .count() as u64,
            deltas: b
                .index()
                .iter()
                .filter_map(|e| e.source.map(|s| (e.digest, s, e.size, e.stored_size)))
                .collect(),
            packs: didymos::bundle::format::pack_stats(b.index()),
        }
    }
}

fn readable(
    what: &str,
    m: &Manifest,
    file_size: u64,
    verdict: &Verdict,
    for_device: Option<DeviceSize>,
    payload: Option<&Payload>,
) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<14}{v}\n"));
    line("Bundle:", what.to_owned());
    line("Compatible:", m.compatible.clone());
    line("Version:", m.version.clone());
    if !m.description.is_empty() {
        line("Description:", m.description.clone());
    }
    if !m.build.is_empty() {
        line("Build:", m.build.clone());
    }
    line("Created:", m.created.clone());
    if m.security_version > 0 {
        line("Security:", m.security_version.to_string());
    }
    line("Format:", m.format.to_string());
    line("Size:", format!("{file_size} bytes"));
    line(
        "Image:",
        format!("{} ({} bytes)", m.image.digest, m.image.size),
    );
    line(
        "Objects:",
        format!(
            "{} carried, {} referenced by the image",
            m.objects.count, m.objects.referenced
        ),
    );
    line(
        "Payload:",
        format!(
            "{} bytes, {} bytes as stored",
            m.objects.size, m.objects.stored_size
        ),
    );
    if m.bases.is_empty() {
        line("Type:", "full (carries every object)".into());
    } else {
        line(
            "Type:",
            format!(
                "delta ({} objects expected on the device)",
                (m.objects.referenced + m.raw.len() as u64).saturating_sub(m.objects.count)
            ),
        );
        for b in &m.bases {
            let v = if b.version.is_empty() {
                String::new()
            } else {
                format!(" (version {})", b.version)
            };
            line("Base image:", format!("{}{v}", b.image));
        }
    }
    if let Some(p) = payload {
        line("Container:", format!("version {}", p.container));
        if let (stored, Some(base)) = p.image {
            line(
                "Image delta:",
                format!("{stored} bytes, against base image {base}"),
            );
        }
        if p.dictionary > 0 {
            line(
                "Dictionary:",
                format!(
                    "{} bytes, used by {} small objects",
                    p.dictionary, p.dictionary_objects
                ),
            );
        }
        if p.packs.0 > 0 {
            line(
                "Packs:",
                format!(
                    "{} packs of {} small objects, {} bytes as stored",
                    p.packs.0, p.packs.1, p.packs.2
                ),
            );
        }
        if !p.deltas.is_empty() {
            let size: u64 = p.deltas.iter().map(|d| d.2).sum();
            let stored: u64 = p.deltas.iter().map(|d| d.3).sum();
            let sources: std::collections::BTreeSet<_> = p.deltas.iter().map(|d| d.1).collect();
            line(
                "Deltas:",
                format!(
                    "{} objects ({size} bytes) stored as {stored} bytes of deltas, {} bytes saved",
                    p.deltas.len(),
                    size.saturating_sub(stored)
                ),
            );
            line(
                "Sources:",
                format!(
                    "{} objects the device must hold (from the base images)",
                    sources.len()
                ),
            );
            for (d, s, _, _) in p.deltas.iter().take(3) {
                line("", format!("{d} from {s}"));
            }
            if p.deltas.len() > 3 {
                line("", format!("… and {} more", p.deltas.len() - 3));
            }
        }
    }
    for r in &m.raw {
        line(
            "Raw image:",
            format!("{} {} ({} bytes)", r.class, r.digest, r.size),
        );
        line("", format!("sha256 {}", r.sha256));
    }
    match verdict {
        Verdict::Skipped => line("Verified:", "not checked (--no-verify)".into()),
        Verdict::Verified(signer) => {
            line("Signer:", signer.subject.clone());
            for (i, c) in signer.chain.iter().enumerate().skip(1) {
                line(if i == 1 { "Chain:" } else { "" }, c.clone());
            }
            line(
                "Verified:",
                "yes (signature, manifest, object index; `didymos bundle verify` checks every object)".into(),
            );
        }
        Verdict::Failed(e) => line("Verified:", format!("NO: {e}")),
    }
    if let Some(d) = for_device {
        line(
            "This device:",
            format!(
                "an install fetches {} bytes beyond the bundle's head and writes {} objects \
                 ({} bytes)",
                d.download, d.objects, d.write
            ),
        );
    }
    s
}

fn json(
    what: &str,
    m: &Manifest,
    file_size: u64,
    verdict: &Verdict,
    for_device: Option<DeviceSize>,
    payload: Option<&Payload>,
) -> String {
    let (verified, signer, error) = match verdict {
        Verdict::Skipped => (
            serde_json::Value::Null,
            serde_json::Value::Null,
            serde_json::Value::Null,
        ),
        Verdict::Verified(s) => (
            true.into(),
            serde_json::json!({"subject": s.subject, "common-name": s.common_name, "chain": s.chain}),
            serde_json::Value::Null,
        ),
        Verdict::Failed(e) => (false.into(), serde_json::Value::Null, e.as_str().into()),
    };
    serde_json::json!({
        "bundle": what,
        "download-size": for_device.map(|d| d.download),
        "write-size": for_device.map(|d| d.write),
        "size": file_size,
        "manifest": m,
        "delta": m.is_delta(),
        "container": payload.map(|p| p.container),
        "dictionary": payload.map(|p| serde_json::json!({"size": p.dictionary, "objects": p.dictionary_objects})),
        "packs": payload.map(|p| serde_json::json!({"count": p.packs.0, "objects": p.packs.1, "stored-size": p.packs.2})),
        "object-deltas": payload.map(|p| p.deltas.iter().map(|(d, s, size, stored)| serde_json::json!({
            "object": d.to_hex(), "source": s.to_hex(), "size": size, "stored-size": stored,
        })).collect::<Vec<_>>()),
        "verified": verified,
        "signer": signer,
        "error": error,
    })
    .to_string()
}
