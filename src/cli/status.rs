//! `didymos status` and `didymos status mark-good|mark-bad|mark-active`.

use std::fmt::Write as _;
use std::process::ExitCode;

use didymos::boot::mark::MarkState;
use didymos::status::{SlotStatus, SystemStatus};

use super::Global;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub conf: super::ConfArg,
    #[command(subcommand)]
    mark: Option<StatusCommand>,
    /// Show what is installed in each slot.
    #[arg(long)]
    detailed: bool,
    #[arg(long, value_enum, default_value_t = Format::Readable)]
    output_format: Format,
    /// Work in this process even when the didymos service is running.
    #[arg(long, global = true)]
    direct: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Readable,
    Json,
    JsonPretty,
    Shell,
}

#[derive(clap::Subcommand)]
#[allow(clippy::enum_variant_names)] // the subcommands are named mark-good, mark-bad, mark-active
enum StatusCommand {
    /// Mark a slot as good (it booted and works).
    MarkGood(MarkArgs),
    /// Mark a slot as bad (the bootloader will not choose it).
    MarkBad(MarkArgs),
    /// Make a slot the one booted next.
    MarkActive(MarkArgs),
}

#[derive(clap::Args)]
struct MarkArgs {
    /// "booted", "other" or a slot name such as rootfs.1.
    #[arg(default_value = "booted")]
    slot: String,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let config = global.config()?;
    if let Some(m) = args.mark {
        let (state, ident) = match m {
            StatusCommand::MarkGood(a) => (MarkState::Good, a.slot),
            StatusCommand::MarkBad(a) => (MarkState::Bad, a.slot),
            StatusCommand::MarkActive(a) => (MarkState::Active, a.slot),
        };
        if !args.direct
            && let Some(service) = super::remote::connect_if_running(global)?
        {
            return service.mark(state, &ident);
        }
        let outcome = didymos::install::mark(&config, state, &ident)?;
        println!("{}", outcome.message);
        return Ok(ExitCode::SUCCESS);
    }
    if !args.direct
        && let Some(service) = super::remote::connect_if_running(global)?
    {
        return Ok(match service.status(&config) {
            Ok(status) => {
                print!("{}", render(&status, args.output_format, args.detailed));
                print!("{}", agent_section(&config, args.output_format));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        });
    }
    let status = didymos::status::collect(&config)?;
    print!("{}", render(&status, args.output_format, args.detailed));
    print!("{}", agent_section(&config, args.output_format));
    Ok(ExitCode::SUCCESS)
}

/// The update agent's last check, next step and reason (readable and shell
/// formats; `didymos agent check --json` has them as JSON).
fn agent_section(config: &didymos::config::SystemConfig, format: Format) -> String {
    use didymos::agent::config::AgentConfig;
    use didymos::agent::state::AgentState;
    let (cfg, state) = match AgentConfig::load(config) {
        Ok(cfg) => {
            let state = AgentState::load(&cfg.state_directory);
            (Ok(cfg), state.map_err(|e| e.to_string()))
        }
        Err(e) => (Err(e.to_string()), Err(String::new())),
    };
    let enabled = cfg.as_ref().is_ok_and(|c| c.enabled);
    let report = state.as_ref().ok().and_then(|s| s.last_check.clone());
    let pending = state.as_ref().ok().and_then(|s| s.pending.clone());
    if !enabled && report.is_none() && cfg.is_ok() {
        return String::new();
    }
    match format {
        Format::Shell => {
            let q = |v: &str| format!("'{}'", v.replace('\'', "'\\''"));
            let mut o = format!("DIDYMOS_AGENT_ENABLED={}\n", q(&enabled.to_string()));
            if let Err(e) = &cfg {
                o.push_str(&format!("DIDYMOS_AGENT_ERROR={}\n", q(e)));
            }
            if let Some(r) = &report {
                o.push_str(&format!(
                    "DIDYMOS_AGENT_LAST_CHECK={}\n",
                    q(&r.at.to_string())
                ));
                o.push_str(&format!("DIDYMOS_AGENT_OUTCOME={}\n", q(&r.outcome)));
                o.push_str(&format!("DIDYMOS_AGENT_NEXT_STEP={}\n", q(&r.next_step)));
                o.push_str(&format!("DIDYMOS_AGENT_REASON={}\n", q(&r.reason)));
            }
            if let Some(o2) = state.as_ref().ok().and_then(|s| s.last_outcome.clone()) {
                o.push_str(&format!(
                    "DIDYMOS_AGENT_LAST_UPDATE={}\n",
                    q(&format!(
                        "{} {} {}",
                        o2.version,
                        if o2.success { "success" } else { "failure" },
                        o2.message
                    ))
                ));
            }
            o
        }
        Format::Readable => {
            let mut o = String::from("\nupdate agent:\n");
            match (&cfg, &state) {
                (Err(e), _) => o.push_str(&format!("  configuration error: {e}\n")),
                (Ok(c), Err(e)) => o.push_str(&format!(
                    "  {} (strategy {}); {e}\n",
                    if c.enabled { "enabled" } else { "disabled" },
                    c.strategy.name()
                )),
                (Ok(c), Ok(_)) => o.push_str(&format!(
                    "  {} (strategy {})\n",
                    if c.enabled { "enabled" } else { "disabled" },
                    c.strategy.name()
                )),
            }
            match &report {
                Some(r) => {
                    for line in didymos::agent::status_lines(r) {
                        o.push_str(&format!("  {line}\n"));
                    }
                }
                None => o.push_str("  no check yet\n"),
            }
            if let Some(p) = pending {
                o.push_str(&format!("  in flight:   {} ({:?})\n", p.version, p.phase));
            }
            o
        }
        _ => String::new(),
    }
}

pub fn render(s: &SystemStatus, format: Format, detailed: bool) -> String {
    match format {
        Format::Readable => readable(s, detailed),
        Format::Json => serde_json::to_string(s).expect("status serializes") + "\n",
        Format::JsonPretty => serde_json::to_string_pretty(s).expect("status serializes") + "\n",
        Format::Shell => shell(s),
    }
}

fn slot_label(s: &SystemStatus, name: Option<&didymos::slot::SlotName>) -> String {
    match name {
        None => "(none)".into(),
        Some(n) => {
            let b = s
                .slots
                .iter()
                .find(|x| &x.name == n)
                .and_then(|x| x.bootname.as_ref());
            match b {
                Some(b) => format!("{n} ({b})"),
                None => n.to_string(),
            }
        }
    }
}

fn readable(s: &SystemStatus, detailed: bool) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "=== System Info ===");
    let _ = writeln!(o, "Compatible:  {}", s.compatible);
    let _ = writeln!(o, "Variant:     {}", s.variant.as_deref().unwrap_or(""));
    let booted = match (&s.booted_slot, &s.booted) {
        (Some(_), _) => slot_label(s, s.booted_slot.as_ref()),
        (None, Some(b)) => format!("{b} (not a configured slot)"),
        (None, None) => "(not booted through a slot)".into(),
    };
    let _ = writeln!(o, "Booted from: {booted}");
    let _ = writeln!(
        o,
        "Version:     {}",
        s.system_version.as_deref().unwrap_or("(unknown)")
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "=== Bootloader ===");
    let _ = writeln!(o, "Backend:   {}", s.bootloader);
    let _ = writeln!(o, "Activated: {}", slot_label(s, s.primary.as_ref()));
    if let Some(i) = &s.interrupted_install {
        let _ = writeln!(o, "Warning:   {i}");
    }
    if let Some(r) = &s.rollback {
        let _ = writeln!(o, "Warning:   {r}");
    }
    for p in s.problems() {
        let _ = writeln!(o, "Problem:   {p}");
    }
    if s.security_floor > 0 {
        let _ = writeln!(o, "Security version floor: {}", s.security_floor);
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "=== Slot States ===");
    for slot in &s.slots {
        readable_slot(&mut o, slot, detailed);
    }
    o
}

fn readable_slot(o: &mut String, slot: &SlotStatus, detailed: bool) {
    let marker = if slot.state == "booted" { 'x' } else { 'o' };
    let _ = writeln!(
        o,
        "{marker} [{}] ({}, {})",
        slot.name, slot.kind, slot.state
    );
    if let Some(b) = &slot.bootname {
        let _ = writeln!(o, "    bootname: {b}");
    }
    if let Some(d) = &slot.device {
        let _ = writeln!(o, "    device: {d}");
    }
    if let Some(p) = &slot.parent {
        let _ = writeln!(o, "    parent: {p}");
    }
    let empty = slot.kind == "composefs" && slot.record.is_none();
    if let (true, Some(bs)) = (empty, slot.boot_status) {
        // The bootloader's own view of a slot with nothing in it (a fresh
        // device's defaults) is no promise that it boots.
        let _ = writeln!(
            o,
            "    boot status: empty slot (the bootloader's own state: {}{})",
            bs.as_str(),
            slot.attempts_left
                .map(|n| format!(", {n} attempts left"))
                .unwrap_or_default()
        );
    } else if let Some(bs) = slot.boot_status {
        match slot.attempts_left {
            Some(n) => {
                let _ = writeln!(o, "    boot status: {} ({n} attempts left)", bs.as_str());
            }
            None => {
                let _ = writeln!(o, "    boot status: {}", bs.as_str());
            }
        }
    }
    if let Some(r) = &slot.raw {
        let _ = writeln!(o, "    bundle version: {}", r.bundle_version);
        let _ = writeln!(o, "    installed: {}", r.installed_timestamp);
        let _ = writeln!(o, "    sha256: {} ({} bytes)", r.sha256, r.size);
        if detailed {
            let _ = writeln!(o, "    bundle hash: {}", r.bundle_hash);
            let _ = writeln!(o, "    image: {}", r.digest);
            let _ = writeln!(o, "    installed with: {}", r.parent);
            let _ = writeln!(o, "    installed count: {}", r.installed_count);
        }
        return;
    }
    match (&slot.record, &slot.record_error) {
        (None, Some(e)) => {
            let _ = writeln!(o, "    installed: record cannot be read: {e}");
        }
        (None, None) => {
            let _ = writeln!(o, "    installed: (nothing)");
        }
        (Some(r), _) => {
            let _ = writeln!(o, "    bundle version: {}", r.bundle_version);
            let _ = writeln!(o, "    installed: {}", r.installed_timestamp);
            if let Some(n) = slot.security_version.filter(|n| *n > 0) {
                let _ = writeln!(o, "    security version: {n}");
            }
            if detailed {
                let _ = writeln!(o, "    bundle compatible: {}", r.bundle_compatible);
                if !r.bundle_description.is_empty() {
                    let _ = writeln!(o, "    bundle description: {}", r.bundle_description);
                }
                if !r.bundle_build.is_empty() {
                    let _ = writeln!(o, "    bundle build: {}", r.bundle_build);
                }
                let _ = writeln!(o, "    bundle hash: {}", r.bundle_hash);
                let _ = writeln!(o, "    image: {}", r.image);
                let _ = writeln!(o, "    installed count: {}", r.installed_count);
                let _ = writeln!(
                    o,
                    "    activated: {} (count {})",
                    r.activated_timestamp.as_deref().unwrap_or("never"),
                    r.activated_count
                );
            }
        }
    }
}

/// Shell-sourceable `KEY='value'` lines.
fn shell(s: &SystemStatus) -> String {
    fn q(v: &str) -> String {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
    let mut o = String::new();
    let mut kv = |k: &str, v: &str| {
        let _ = writeln!(o, "{k}={}", q(v));
    };
    kv("DIDYMOS_SYSTEM_COMPATIBLE", &s.compatible);
    kv("DIDYMOS_SYSTEM_VARIANT", s.variant.as_deref().unwrap_or(""));
    kv(
        "DIDYMOS_SYSTEM_BOOTED_BOOTNAME",
        s.booted.as_ref().map_or("", |b| b.as_str()),
    );
    kv(
        "DIDYMOS_SYSTEM_BOOTED_SLOT",
        &s.booted_slot
            .as_ref()
            .map(|b| b.to_string())
            .unwrap_or_default(),
    );
    kv(
        "DIDYMOS_SYSTEM_VERSION",
        s.system_version.as_deref().unwrap_or(""),
    );
    kv("DIDYMOS_ROLLBACK", s.rollback.as_deref().unwrap_or(""));
    kv("DIDYMOS_SECURITY_FLOOR", &s.security_floor.to_string());
    kv("DIDYMOS_PROBLEMS", &s.problems().join("\n"));
    kv(
        "DIDYMOS_BOOT_PRIMARY",
        &s.primary
            .as_ref()
            .map(|b| b.to_string())
            .unwrap_or_default(),
    );
    kv(
        "DIDYMOS_SLOTS",
        &s.slots
            .iter()
            .map(|x| x.name.to_string())
            .collect::<Vec<_>>()
            .join(" "),
    );
    for (i, slot) in s.slots.iter().enumerate() {
        let n = i + 1;
        kv(&format!("DIDYMOS_SLOT_NAME_{n}"), &slot.name.to_string());
        kv(&format!("DIDYMOS_SLOT_CLASS_{n}"), &slot.class);
        kv(&format!("DIDYMOS_SLOT_TYPE_{n}"), &slot.kind);
        kv(&format!("DIDYMOS_SLOT_STATE_{n}"), &slot.state);
        kv(
            &format!("DIDYMOS_SLOT_BOOTNAME_{n}"),
            slot.bootname.as_ref().map_or("", |b| b.as_str()),
        );
        kv(
            &format!("DIDYMOS_SLOT_BOOT_STATUS_{n}"),
            slot.boot_status.map_or("", |b| b.as_str()),
        );
        kv(
            &format!("DIDYMOS_SLOT_BUNDLE_VERSION_{n}"),
            slot.record.as_ref().map_or_else(
                || slot.raw.as_ref().map_or("", |r| r.bundle_version.as_str()),
                |r| r.bundle_version.as_str(),
            ),
        );
        kv(
            &format!("DIDYMOS_SLOT_INSTALLED_TIMESTAMP_{n}"),
            slot.record.as_ref().map_or_else(
                || {
                    slot.raw
                        .as_ref()
                        .map_or("", |r| r.installed_timestamp.as_str())
                },
                |r| r.installed_timestamp.as_str(),
            ),
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use didymos::boot::BootState;
    use didymos::slot::{Bootname, RawRecord, SlotName, SlotRecord};

    fn sample() -> SystemStatus {
        let slot = |n: &str, b: &str, state: &str, bs, rec: Option<(&str, &str)>| SlotStatus {
            name: SlotName::parse(n).unwrap(),
            class: "rootfs".into(),
            kind: "composefs".into(),
            bootname: Some(Bootname::new(b).unwrap()),
            device: None,
            parent: None,
            state: state.into(),
            boot_status: Some(bs),
            attempts_left: Some(3),
            record_error: None,
            security_version: rec.map(|_| 0),
            record: rec.map(|(v, t)| SlotRecord {
                slot: SlotName::parse(n).unwrap(),
                bootname: Some(Bootname::new(b).unwrap()),
                image: didymos::Digest([0xab; 32]),
                bundle_compatible: "didymos-demo".into(),
                bundle_version: v.into(),
                bundle_description: "demo's \"rootfs\"".into(),
                bundle_build: "20261122".into(),
                bundle_hash: "cd".repeat(32),
                installed_timestamp: t.into(),
                installed_count: 1,
                activated_timestamp: Some(t.into()),
                activated_count: 1,
            }),
            raw: None,
            location: format!("/store/slots/{n}"),
            install_status: "ok".into(),
        };
        SystemStatus {
            compatible: "didymos-demo".into(),
            variant: Some("qemu".into()),
            bootloader: "file".into(),
            booted: Some(Bootname::new("B").unwrap()),
            booted_slot: Some(SlotName::parse("rootfs.1").unwrap()),
            primary: Some(SlotName::parse("rootfs.1").unwrap()),
            system_version: Some("2.0".into()),
            interrupted_install: None,
            rollback: None,
            security_floor: 2,
            security_floor_error: None,
            slots: vec![
                slot(
                    "rootfs.0",
                    "A",
                    "inactive",
                    BootState::Good,
                    Some(("1.0", "2026-11-20T10:00:00Z")),
                ),
                slot(
                    "rootfs.1",
                    "B",
                    "booted",
                    BootState::Good,
                    Some(("2.0", "2026-11-21T10:00:00Z")),
                ),
                SlotStatus {
                    name: SlotName::parse("bootloader.1").unwrap(),
                    class: "bootloader".into(),
                    kind: "raw".into(),
                    bootname: None,
                    device: Some("/dev/mmcblk0boot1".into()),
                    parent: Some(SlotName::parse("rootfs.1").unwrap()),
                    state: "inactive".into(),
                    boot_status: None,
                    attempts_left: None,
                    record: None,
                    record_error: None,
                    security_version: None,
                    raw: Some(RawRecord {
                        slot: SlotName::parse("bootloader.1").unwrap(),
                        parent: SlotName::parse("rootfs.1").unwrap(),
                        digest: didymos::Digest([0x5a; 32]),
                        sha256: "e3".repeat(32),
                        size: 524288,
                        bundle_version: "2.0".into(),
                        bundle_hash: "cd".repeat(32),
                        installed_timestamp: "2026-11-21T10:00:00Z".into(),
                        installed_count: 1,
                    }),
                    location: "/dev/mmcblk0boot1".into(),
                    install_status: "ok".into(),
                },
            ],
        }
    }

    /// Compares with `tests/golden/<name>`; `DIDYMOS_UPDATE_GOLDEN=1` rewrites it.
    fn golden(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        if std::env::var_os("DIDYMOS_UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (run with DIDYMOS_UPDATE_GOLDEN=1)", path.display())
        });
        pretty_assertions::assert_eq!(expected, actual, "golden file {}", path.display());
    }

    #[test]
    fn golden_status_in_every_format() {
        let s = sample();
        golden("status.txt", &render(&s, Format::Readable, false));
        golden("status-detailed.txt", &render(&s, Format::Readable, true));
        golden("status.json", &render(&s, Format::Json, false));
        golden("status-pretty.json", &render(&s, Format::JsonPretty, false));
        let shell = render(&s, Format::Shell, false);
        golden("status.sh", &shell);
        // The shell format must survive a real shell, quotes included.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{shell}\nprintf '%s|%s' \"$DIDYMOS_SYSTEM_COMPATIBLE\" \"$DIDYMOS_SLOTS\""
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "didymos-demo|rootfs.0 rootfs.1 bootloader.1"
        );
    }
}
