//! The channel document: what a build host writes and a device reads once
//! its signature verified. Parsing takes bytes and checks every rule the
//! planner relies on, so the planner never sees an inconsistent graph.
//!
//! ```toml
//! [channel]
//! name = "stable"
//! sequence = 7                          # raised at every signing
//! issued = "2025-06-01T00:00:00Z"
//! expires = "2025-06-08T00:00:00Z"
//! allow-downgrade = false
//!
//! [[release]]
//! version = "2.0"
//! compatible = "acme-gateway"
//! manifest-hash = "3b0c…"              # SHA-256 of the bundle's signed manifest
//! bundles = ["bundles/acme-2.0.raucb"]  # URLs or paths, relative to the channel
//! barrier = true
//! [release.rollout]
//! start = "2025-06-02T08:00:00Z"
//! start-percentage = 10.0
//! duration = "2days"
//!
//! [[edge]]
//! from = "1.0"
//! to = "2.0"
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Largest channel document accepted (checked before it is read into memory).
pub const MAX_CHANNEL_SIZE: u64 = 1024 * 1024;
/// At most this many releases and edges (bounds the planner's work).
pub const MAX_RELEASES: usize = 4096;
pub const MAX_EDGES: usize = 65536;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelError {
    #[error("channel document is not valid TOML (line {line}): {message}")]
    Syntax { line: usize, message: String },
    #[error("channel document: {0}")]
    Invalid(String),
}

/// A parsed, internally consistent channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Channel {
    pub channel: Header,
    #[serde(default, rename = "release", skip_serializing_if = "Vec::is_empty")]
    pub releases: Vec<Release>,
    #[serde(default, rename = "edge", skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<Edge>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Header {
    pub name: String,
    /// Raised at every signing; a device refuses a lower one than it has seen.
    pub sequence: u64,
    pub issued: Timestamp,
    /// After this, devices refuse the channel (a frozen or replayed channel).
    pub expires: Timestamp,
    /// Whether the channel's downgrade edges may be taken at all (the device
    /// must allow it too: `[updates] allow-downgrade`).
    #[serde(default)]
    pub allow_downgrade: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Release {
    pub version: String,
    pub compatible: String,
    /// SHA-256 of the bundle's signed manifest, 64 lowercase hex digits; the
    /// install is pinned to it (`require-manifest-hash`).
    pub manifest_hash: String,
    /// Where the bundle can be fetched, tried in order: `http(s)://` URLs, or
    /// paths; relative ones are resolved against the channel's own location.
    pub bundles: Vec<String>,
    /// Every device below this version must pass through it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub barrier: bool,
    /// Devices on this release get no automatic updates; the reason is shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// A phased rollout of one release (Zincati's start, start percentage and
/// duration; the formula is in `plan::rollout`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rollout {
    pub start: Timestamp,
    /// Share of the fleet (0–100) that may update at `start`.
    #[serde(default)]
    pub start_percentage: f64,
    /// From `start`, the share grows linearly to 100 % over this time.
    #[serde(with = "humantime_serde_compat")]
    pub duration: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Edge {
    pub from: String,
    pub to: String,
}

mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "duration {text:?}: {e} (write e.g. \"90m\", \"48h\", \"2days\")"
            ))
        })
    }
}

fn is_manifest_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Channel {
    /// Parses and checks a channel document (only ever called on bytes whose
    /// signature verified, or on the build host's own file).
    pub fn parse(bytes: &[u8]) -> Result<Self, ChannelError> {
        if bytes.len() as u64 > MAX_CHANNEL_SIZE {
            return Err(ChannelError::Invalid(format!(
                "{} bytes, more than the limit of {MAX_CHANNEL_SIZE}",
                bytes.len()
            )));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| ChannelError::Invalid(format!("not UTF-8 text ({e})")))?;
        let channel: Channel = toml::from_str(text).map_err(|e| ChannelError::Syntax {
            line: e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0),
            message: e.message().trim().to_owned(),
        })?;
        channel.validate()?;
        Ok(channel)
    }

    /// The document as TOML (what `didymos channel` writes).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a channel always serializes")
    }

    /// Checks the rules the planner relies on.
    pub fn validate(&self) -> Result<(), ChannelError> {
        let bad = |m: String| Err(ChannelError::Invalid(m));
        let h = &self.channel;
        if h.name.trim().is_empty() {
            return bad("[channel] name must not be empty".into());
        }
        if h.expires <= h.issued {
            return bad(format!(
                "[channel] expires ({}) is not after issued ({})",
                h.expires, h.issued
            ));
        }
        if self.releases.len() > MAX_RELEASES || self.edges.len() > MAX_EDGES {
            return bad(format!(
                "{} releases and {} edges, more than the limits of {MAX_RELEASES} and {MAX_EDGES}",
                self.releases.len(),
                self.edges.len()
            ));
        }
        let mut seen = BTreeSet::new();
        for r in &self.releases {
            let at = format!("release {:?} ({})", r.version, r.compatible);
            if r.version.trim().is_empty() || r.version.chars().any(char::is_whitespace) {
                return bad(format!(
                    "release version {:?} must be non-empty without spaces",
                    r.version
                ));
            }
            if r.compatible.trim().is_empty() {
                return bad(format!("{at}: compatible must not be empty"));
            }
            if !seen.insert((r.compatible.as_str(), r.version.as_str())) {
                return bad(format!("{at} is listed twice"));
            }
            if !is_manifest_hash(&r.manifest_hash) {
                return bad(format!(
                    "{at}: manifest-hash {:?} is not 64 lowercase hex digits (the SHA-256 \
                     `didymos info` shows as the manifest hash)",
                    r.manifest_hash
                ));
            }
            if r.bundles.is_empty() || r.bundles.iter().any(|b| b.trim().is_empty()) {
                return bad(format!("{at}: bundles must list at least one location"));
            }
            if let Some(reason) = &r.deadend
                && reason.trim().is_empty()
            {
                return bad(format!(
                    "{at}: deadend needs a reason (shown to the device)"
                ));
            }
            if let Some(ro) = &r.rollout
                && !(0.0..=100.0).contains(&ro.start_percentage)
            {
                return bad(format!(
                    "{at}: rollout start-percentage {} is not between 0 and 100",
                    ro.start_percentage
                ));
            }
        }
        let versions: BTreeSet<&str> = self.releases.iter().map(|r| r.version.as_str()).collect();
        let mut edges = BTreeSet::new();
        for e in &self.edges {
            for end in [&e.from, &e.to] {
                if !versions.contains(end.as_str()) {
                    return bad(format!(
                        "edge {} -> {} names version {end:?}, which no release has",
                        e.from, e.to
                    ));
                }
            }
            if e.from == e.to {
                return bad(format!("edge {} -> {} leads nowhere", e.from, e.to));
            }
            if !edges.insert(e) {
                return bad(format!("edge {} -> {} is listed twice", e.from, e.to));
            }
        }
        Ok(())
    }

    /// The release `version` for `compatible`.
    pub fn release(&self, compatible: &str, version: &str) -> Option<&Release> {
        self.releases
            .iter()
            .find(|r| r.compatible == compatible && r.version == version)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn hash(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    pub(crate) const SAMPLE: &str = r#"
[channel]
name = "stable"
sequence = 3
issued = "2025-06-01T00:00:00Z"
expires = "2025-06-08T00:00:00Z"

[[release]]
version = "1.0"
compatible = "acme"
manifest-hash = "0101010101010101010101010101010101010101010101010101010101010101"
bundles = ["bundles/1.0.raucb"]

[[release]]
version = "2.0"
compatible = "acme"
manifest-hash = "0202020202020202020202020202020202020202020202020202020202020202"
bundles = ["bundles/2.0.raucb"]
barrier = true

[release.rollout]
start = "2025-06-02T00:00:00Z"
start-percentage = 10.0
duration = "10h"

[[edge]]
from = "1.0"
to = "2.0"
"#;

    #[test]
    fn parses_and_round_trips() {
        let c = Channel::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(c.releases.len(), 2);
        assert!(c.releases[1].barrier);
        let ro = c.releases[1].rollout.as_ref().unwrap();
        assert_eq!(ro.duration, Duration::from_secs(36000));
        let again = Channel::parse(c.to_toml().as_bytes()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn refuses_inconsistent_documents() {
        let cases = [
            (
                SAMPLE.replace("from = \"1.0\"", "from = \"0.9\""),
                "no release has",
            ),
            (
                SAMPLE.replace("0202020202", "02020202ZZ"),
                "64 lowercase hex",
            ),
            (
                SAMPLE.replace("start-percentage = 10.0", "start-percentage = 120.0"),
                "between 0 and 100",
            ),
            (
                SAMPLE.replace("expires = \"2025-06-08", "expires = \"2025-05-08"),
                "not after issued",
            ),
            (
                SAMPLE.replace("version = \"2.0\"", "version = \"1.0\""),
                "listed twice",
            ),
            (
                SAMPLE.replace("duration = \"10h\"", "duration = \"ten hours\""),
                "duration",
            ),
            (
                SAMPLE.replace("barrier = true", "barrier = true\nbarier = true"),
                "barier",
            ),
            (
                SAMPLE.replace("bundles = [\"bundles/1.0.raucb\"]", "bundles = []"),
                "at least one",
            ),
        ];
        for (text, want) in cases {
            let err = Channel::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }

    #[test]
    fn too_large_is_refused_before_parsing() {
        let big = vec![b'#'; MAX_CHANNEL_SIZE as usize + 1];
        let err = Channel::parse(&big).unwrap_err().to_string();
        assert!(err.contains("more than the limit"), "{err}");
    }
}
