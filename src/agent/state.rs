//! What the agent remembers across restarts and reboots, in one JSON file in
//! its state directory (`[updates] state-directory`), replaced atomically.
//! `didymos status` reads the same file to show the last check, the next
//! step and the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "state.json";
const MAX_STATE_SIZE: u64 = 4 * 1024 * 1024;
/// Failed releases remembered (the oldest are forgotten first).
const MAX_FAILED: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the agent's state {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error(
        "the agent's state {path} is damaged ({detail}); move it away to start afresh (the agent \
         then forgets failed releases and the channel sequence it saw)"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error("cannot write the agent's state {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where an update came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Origin {
    Channel {
        location: String,
    },
    /// A hawkBit deployment action.
    Ddi {
        action_id: String,
    },
}

/// How far an update got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The installer is writing it.
    Installing,
    /// Installed and activated; the reboot waits for the strategy.
    RebootPending,
    /// The agent asked for the reboot.
    Rebooting,
}

/// An update between its install and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Pending {
    pub version: String,
    pub manifest_hash: String,
    pub origin: Origin,
    pub phase: Phase,
    /// The version and slot the device ran when the install started.
    pub from_version: Option<String>,
    pub from_slot: Option<String>,
    pub started: Timestamp,
    /// When the reboot first became due (the maximum deferral counts from here).
    #[serde(default)]
    pub due_since: Option<Timestamp>,
    /// Whether this device holds a fleet lock for this reboot.
    #[serde(default)]
    pub holds_lock: bool,
}

/// A release that failed here; the planner does not try it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Failed {
    pub version: String,
    pub manifest_hash: String,
    pub at: Timestamp,
    pub reason: String,
}

/// One check, as `didymos status` and `agent check` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    pub at: Timestamp,
    /// One line: what the check found.
    pub outcome: String,
    /// What the agent does next.
    pub next_step: String,
    /// Why.
    pub reason: String,
    /// When the agent looks again.
    #[serde(default)]
    pub next_check: Option<Timestamp>,
}

/// The last update's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Outcome {
    pub version: String,
    pub success: bool,
    pub at: Timestamp,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AgentState {
    /// The highest channel sequence accepted, by channel location.
    #[serde(default)]
    pub channel_sequences: BTreeMap<String, u64>,
    #[serde(default)]
    pub failed: Vec<Failed>,
    #[serde(default)]
    pub pending: Option<Pending>,
    #[serde(default)]
    pub last_check: Option<Report>,
    #[serde(default)]
    pub last_outcome: Option<Outcome>,
    /// A random device id, made once when the machine has no machine id.
    #[serde(default)]
    pub device_id: Option<String>,
    /// DDI actions already reported closed (so a reply lost on the way is
    /// not answered with a second install).
    #[serde(default)]
    pub closed_actions: Vec<String>,
}

impl AgentState {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// The state in `dir`, or a fresh one when there is none yet.
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        let path = Self::path(dir);
        let bytes = match crate::util::read_bounded(&path, MAX_STATE_SIZE) {
            Ok(b) => b,
            Err(crate::util::BoundedReadError::Io(e))
                if e.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(Self::default());
            }
            Err(e) => {
                return Err(StateError::Read {
                    path,
                    detail: e.to_string(),
                });
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| StateError::Damaged {
            path,
            detail: e.to_string(),
        })
    }

    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = Self::path(dir);
        let text = serde_json::to_vec_pretty(self).expect("the state always serializes");
        std::fs::create_dir_all(dir)
            .and_then(|()| crate::util::write_atomic(&path, &text))
            .map_err(|source| StateError::Write { path, source })
    }

    pub fn failed_hashes(&self) -> Vec<String> {
        self.failed
            .iter()
            .map(|f| f.manifest_hash.clone())
            .collect()
    }

    pub fn remember_failure(&mut self, f: Failed) {
        self.failed.retain(|o| o.manifest_hash != f.manifest_hash);
        self.failed.push(f);
        if self.failed.len() > MAX_FAILED {
            self.failed.remove(0);
        }
    }

    pub fn remember_closed(&mut self, action: &str) {
        if !self.closed_actions.iter().any(|a| a == action) {
            self.closed_actions.push(action.to_owned());
        }
        if self.closed_actions.len() > MAX_FAILED {
            self.closed_actions.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(AgentState::load(dir.path()).unwrap(), AgentState::default());
        let mut s = AgentState::default();
        s.channel_sequences.insert("https://x/c.channel".into(), 4);
        s.pending = Some(Pending {
            version: "2".into(),
            manifest_hash: "ab".repeat(32),
            origin: Origin::Ddi {
                action_id: "7".into(),
            },
            phase: Phase::RebootPending,
            from_version: Some("1".into()),
            from_slot: Some("rootfs.0".into()),
            started: "2025-01-01T00:00:00Z".parse().unwrap(),
            due_since: None,
            holds_lock: false,
        });
        s.save(dir.path()).unwrap();
        assert_eq!(AgentState::load(dir.path()).unwrap(), s);
        std::fs::write(AgentState::path(dir.path()), b"{\"pending\": 3").unwrap();
        let err = AgentState::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("is damaged") && err.contains("move it away"),
            "{err}"
        );
    }
}
