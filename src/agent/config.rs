//! The agent's configuration: `[updates]` in system.conf, then every
//! drop-in `updates.d/*.toml` beside it in name order (as Zincati's
//! `config.d`), each setting keys of its own `[updates]` table; a later file
//! overrides a key an earlier one set. Every file is checked on its own, so
//! an unknown key is reported with its file and line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::plan::window::{Schedule, Window, time_zone};
use crate::config::{
    FleetLockSection, HawkbitSection, KeyringSection, PeriodicSection, SystemConfig, UpdatesSection,
};

/// The drop-in directory's name, next to system.conf.
pub const DROP_IN_DIR: &str = "updates.d";
const MAX_DROP_IN_SIZE: u64 = 256 * 1024;
const MAX_DROP_INS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("[updates] (from {files}): {message}")]
    Invalid { files: String, message: String },
}

/// Where updates come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// No source configured: the agent has nothing to poll.
    None,
    /// A signed channel at a URL or path, checked against `keyring`.
    Channel {
        location: String,
        keyring: KeyringSection,
    },
    Hawkbit(HawkbitConfig),
}

#[derive(Debug, Clone)]
pub struct HawkbitConfig {
    pub server: String,
    pub tenant: String,
    /// `None`: the machine id.
    pub controller_id: Option<String>,
    pub token: Option<Token>,
}

/// A DDI security token, read from a file when needed (never logged).
#[derive(Debug, Clone)]
pub enum Token {
    Target(PathBuf),
    Gateway(PathBuf),
}

/// When the agent may reboot into an installed update.
#[derive(Debug, Clone)]
pub enum StrategyConfig {
    Immediate,
    Periodic(Schedule),
    FleetLock {
        base_url: String,
        group: String,
        /// `None`: derived from the machine id.
        id: Option<String>,
    },
}

impl StrategyConfig {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Immediate => "immediate",
            Self::Periodic(_) => "periodic",
            Self::FleetLock { .. } => "fleet-lock",
        }
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub enabled: bool,
    pub source: Source,
    pub interval: Duration,
    pub jitter: Duration,
    /// `None`: derived from the machine id.
    pub wariness: Option<f64>,
    pub allow_downgrade: bool,
    pub strategy: StrategyConfig,
    pub max_deferral: Duration,
    pub state_directory: PathBuf,
    pub reboot_command: Option<Vec<String>>,
    pub tls_ca: Option<PathBuf>,
    pub timeout: Duration,
    /// The files that contributed, in order (for messages and `agent check`).
    pub files: Vec<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DropIn {
    #[serde(default)]
    updates: UpdatesSection,
}

fn merge_opt<T>(into: &mut Option<T>, from: Option<T>) {
    if from.is_some() {
        *into = from;
    }
}

fn merge(into: &mut UpdatesSection, from: UpdatesSection) {
    merge_opt(&mut into.enabled, from.enabled);
    merge_opt(&mut into.source, from.source);
    merge_opt(&mut into.channel, from.channel);
    merge_opt(&mut into.keyring, from.keyring);
    merge_opt(&mut into.interval, from.interval);
    merge_opt(&mut into.jitter, from.jitter);
    merge_opt(&mut into.wariness, from.wariness);
    merge_opt(&mut into.allow_downgrade, from.allow_downgrade);
    merge_opt(&mut into.strategy, from.strategy);
    merge_opt(&mut into.max_deferral, from.max_deferral);
    merge_opt(&mut into.state_directory, from.state_directory);
    merge_opt(&mut into.reboot_command, from.reboot_command);
    merge_opt(&mut into.tls_ca, from.tls_ca);
    merge_opt(&mut into.timeout, from.timeout);
    if let Some(p) = from.periodic {
        let i = into.periodic.get_or_insert_with(PeriodicSection::default);
        merge_opt(&mut i.time_zone, p.time_zone);
        merge_opt(&mut i.windows, p.windows);
    }
    if let Some(f) = from.fleet_lock {
        let i = into
            .fleet_lock
            .get_or_insert_with(FleetLockSection::default);
        merge_opt(&mut i.base_url, f.base_url);
        merge_opt(&mut i.group, f.group);
        merge_opt(&mut i.id, f.id);
    }
    if let Some(h) = from.hawkbit {
        let i = into.hawkbit.get_or_insert_with(HawkbitSection::default);
        merge_opt(&mut i.server, h.server);
        merge_opt(&mut i.tenant, h.tenant);
        merge_opt(&mut i.controller_id, h.controller_id);
        merge_opt(&mut i.target_token_file, h.target_token_file);
        merge_opt(&mut i.gateway_token_file, h.gateway_token_file);
    }
}

/// Parses one drop-in's text (`path` for messages).
pub fn parse_drop_in(text: &str, path: &Path) -> Result<UpdatesSection, AgentConfigError> {
    let d: DropIn = toml::from_str(text).map_err(|e| AgentConfigError::Syntax {
        path: path.to_owned(),
        line: e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(0),
        message: e.message().trim().to_owned(),
    })?;
    Ok(d.updates)
}

/// The drop-ins in `dir`, in name order (`*.toml` only).
fn drop_ins(dir: &Path) -> Result<Vec<PathBuf>, AgentConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(AgentConfigError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files.truncate(MAX_DROP_INS);
    Ok(files)
}

fn duration(value: &Option<String>, key: &str, default: Duration) -> Result<Duration, String> {
    match value {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| format!("{key} = {text:?}: {e} (write e.g. \"30s\", \"5m\", \"1h\")")),
    }
}

impl AgentConfig {
    /// `[updates]` of `system` plus the drop-ins beside its file.
    pub fn load(system: &SystemConfig) -> Result<Self, AgentConfigError> {
        let base = system.path.parent().map(Path::to_owned).unwrap_or_default();
        let mut merged = system.updates.clone();
        let mut files = vec![system.path.clone()];
        for path in drop_ins(&base.join(DROP_IN_DIR))? {
            let text =
                crate::util::read_bounded_to_string(&path, MAX_DROP_IN_SIZE).map_err(|e| {
                    AgentConfigError::Read {
                        path: path.clone(),
                        source: std::io::Error::other(e.to_string()),
                    }
                })?;
            merge(&mut merged, parse_drop_in(&text, &path)?);
            files.push(path);
        }
        Self::resolve(merged, &base, &system.keyring, files)
    }

    /// Applies defaults and checks values; relative paths are relative to `base`.
    pub fn resolve(
        u: UpdatesSection,
        base: &Path,
        keyring: &KeyringSection,
        files: Vec<PathBuf>,
    ) -> Result<Self, AgentConfigError> {
        let names = files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let invalid = |message: String| AgentConfigError::Invalid {
            files: names.clone(),
            message,
        };
        let rel = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        let source_name = u.source.clone().unwrap_or_else(|| {
            if u.channel.is_some() {
                "channel".into()
            } else if u.hawkbit.is_some() {
                "hawkbit".into()
            } else {
                "none".into()
            }
        });
        let source = match source_name.as_str() {
            "none" => Source::None,
            "channel" => {
                let location = u.channel.clone().ok_or_else(|| {
                    invalid(
                        "source = \"channel\" needs channel = \"https://…/NAME.channel\" (or a path)"
                            .into(),
                    )
                })?;
                let location = if location.contains("://") {
                    location
                } else {
                    rel(PathBuf::from(location)).display().to_string()
                };
                let mut keyring = keyring.clone();
                if let Some(k) = u.keyring.clone() {
                    keyring.path = rel(k);
                }
                Source::Channel { location, keyring }
            }
            "hawkbit" => {
                let h = u.hawkbit.clone().unwrap_or_default();
                let server = h.server.clone().ok_or_else(|| {
                    invalid(
                        "source = \"hawkbit\" needs [updates.hawkbit] server = \"https://…\""
                            .into(),
                    )
                })?;
                if !(server.starts_with("http://") || server.starts_with("https://")) {
                    return Err(invalid(format!(
                        "[updates.hawkbit] server = {server:?} is not an http:// or https:// URL"
                    )));
                }
                let token = match (h.target_token_file, h.gateway_token_file) {
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            "[updates.hawkbit]: set target-token-file or gateway-token-file, not both"
                                .into(),
                        ));
                    }
                    (Some(p), None) => Some(Token::Target(rel(p))),
                    (None, Some(p)) => Some(Token::Gateway(rel(p))),
                    (None, None) => None,
                };
                Source::Hawkbit(HawkbitConfig {
                    server: server.trim_end_matches('/').to_owned(),
                    tenant: h.tenant.unwrap_or_else(|| "DEFAULT".into()),
                    controller_id: h.controller_id,
                    token,
                })
            }
            other => {
                return Err(invalid(format!(
                    "source = {other:?}: expected \"channel\" or \"hawkbit\""
                )));
            }
        };
        let strategy = match u.strategy.as_deref().unwrap_or("immediate") {
            "immediate" => StrategyConfig::Immediate,
            "periodic" => {
                let p = u.periodic.clone().unwrap_or_default();
                let tz = time_zone(p.time_zone.as_deref().unwrap_or("UTC"))
                    .map_err(|e| invalid(format!("[updates.periodic] {e}")))?;
                let windows = p.windows.unwrap_or_default();
                if windows.is_empty() {
                    return Err(invalid(
                        "strategy = \"periodic\" needs [updates.periodic] windows = \
                         [\"Mon,Thu 22:30 for 90m\", …]"
                            .into(),
                    ));
                }
                let windows = windows
                    .iter()
                    .map(|w| w.parse::<Window>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid(format!("[updates.periodic] {e}")))?;
                StrategyConfig::Periodic(Schedule { tz, windows })
            }
            "fleet-lock" | "fleet_lock" => {
                let f = u.fleet_lock.clone().unwrap_or_default();
                let base_url = f.base_url.ok_or_else(|| {
                    invalid(
                        "strategy = \"fleet-lock\" needs [updates.fleet-lock] base-url = \"http://…\""
                            .into(),
                    )
                })?;
                StrategyConfig::FleetLock {
                    base_url: base_url.trim_end_matches('/').to_owned(),
                    group: f.group.unwrap_or_else(|| "default".into()),
                    id: f.id,
                }
            }
            other => {
                return Err(invalid(format!(
                    "strategy = {other:?}: expected \"immediate\", \"periodic\" or \"fleet-lock\""
                )));
            }
        };
        if let Some(w) = u.wariness
            && !(0.0..=1.0).contains(&w)
        {
            return Err(invalid(format!(
                "wariness = {w}: expected a number from 0.0 to 1.0"
            )));
        }
        let interval =
            duration(&u.interval, "interval", Duration::from_secs(3600)).map_err(invalid)?;
        if interval < Duration::from_secs(1) {
            return Err(invalid("interval must be at least 1s".into()));
        }
        if let Some(cmd) = &u.reboot_command
            && cmd.is_empty()
        {
            return Err(invalid("reboot-command must name a program".into()));
        }
        let enabled = u.enabled.unwrap_or(!matches!(source, Source::None));
        Ok(AgentConfig {
            enabled,
            source,
            interval,
            jitter: duration(&u.jitter, "jitter", Duration::from_secs(300)).map_err(invalid)?,
            wariness: u.wariness,
            allow_downgrade: u.allow_downgrade.unwrap_or(false),
            strategy,
            max_deferral: duration(
                &u.max_deferral,
                "max-deferral",
                Duration::from_secs(24 * 3600),
            )
            .map_err(invalid)?,
            state_directory: rel(u
                .state_directory
                .unwrap_or_else(|| PathBuf::from("/var/lib/didymos-agent"))),
            reboot_command: u.reboot_command,
            tls_ca: u.tls_ca.map(rel),
            timeout: duration(&u.timeout, "timeout", Duration::from_secs(30)).map_err(invalid)?,
            files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system(extra: &str) -> (tempfile::TempDir, SystemConfig) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{}\n{extra}", crate::config::tests::MINIMAL);
        let path = dir.path().join("system.conf");
        std::fs::write(&path, &text).unwrap();
        let c = SystemConfig::load(&path).unwrap();
        (dir, c)
    }

    #[test]
    fn defaults_and_drop_ins_override_key_by_key() {
        let (dir, sys) = system(
            "[updates]\nchannel = \"https://u.example.com/stable.channel\"\ninterval = \"2h\"\n\
             [updates.periodic]\ntime-zone = \"UTC\"\nwindows = [\"Sat 03:00 for 2h\"]\n",
        );
        let c = AgentConfig::load(&sys).unwrap();
        assert!(c.enabled);
        assert_eq!(c.interval, Duration::from_secs(7200));
        assert_eq!(c.strategy.name(), "immediate");
        assert!(matches!(&c.source, Source::Channel { location, keyring }
            if location == "https://u.example.com/stable.channel"
               && keyring.path == Path::new("/etc/didymos/keyring.pem")));

        let d = dir.path().join(DROP_IN_DIR);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(
            d.join("10-strategy.toml"),
            "[updates]\nstrategy = \"periodic\"\n",
        )
        .unwrap();
        std::fs::write(
            d.join("20-wary.toml"),
            "[updates]\nwariness = 0.9\nkeyring = \"ch.pem\"\n",
        )
        .unwrap();
        std::fs::write(d.join("README"), "not a drop-in").unwrap();
        let c = AgentConfig::load(&sys).unwrap();
        assert_eq!(c.strategy.name(), "periodic");
        assert_eq!(c.wariness, Some(0.9));
        assert_eq!(c.interval, Duration::from_secs(7200));
        assert_eq!(c.files.len(), 3);
        assert!(matches!(&c.source, Source::Channel { keyring, .. }
            if keyring.path == dir.path().join("ch.pem")));
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        let (dir, sys) = system("[updates]\nchannel = \"c.channel\"\n");
        let d = dir.path().join(DROP_IN_DIR);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("50-typo.toml"), "[updates]\n\nintreval = \"5m\"\n").unwrap();
        let err = AgentConfig::load(&sys).unwrap_err().to_string();
        assert!(err.contains("50-typo.toml:3:"), "{err}");
        assert!(err.contains("intreval"), "{err}");

        let bad = [
            ("strategy = \"weekly\"", "expected \"immediate\""),
            ("wariness = 1.5", "from 0.0 to 1.0"),
            ("interval = \"often\"", "interval = \"often\""),
            (
                "strategy = \"periodic\"",
                "needs [updates.periodic] windows",
            ),
            ("strategy = \"fleet-lock\"", "base-url"),
            ("source = \"hawkbit\"", "server"),
        ];
        for (line, want) in bad {
            let (_d, sys) = system(&format!("[updates]\nchannel = \"c.channel\"\n{line}\n"));
            let err = AgentConfig::load(&sys).unwrap_err().to_string();
            assert!(err.contains(want), "{line}: {want:?} not in {err:?}");
        }
        let (_d, sys) = system(
            "[updates]\nstrategy = \"periodic\"\n[updates.periodic]\nwindows = [\"Mon 25:00 for 1h\"]\n",
        );
        let err = AgentConfig::load(&sys).unwrap_err().to_string();
        assert!(err.contains("not a time"), "{err}");
    }

    #[test]
    fn no_source_means_disabled() {
        let (_d, sys) = system("");
        let c = AgentConfig::load(&sys).unwrap();
        assert!(!c.enabled);
        assert!(matches!(c.source, Source::None));
    }
}
