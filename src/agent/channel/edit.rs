//! The build host's edits of a channel document (`didymos channel …`).
//! Each keeps the document consistent ([`Channel::validate`]) and returns
//! what it changed, so the command can say so.

use std::cmp::Ordering;
use std::time::Duration;

use jiff::Timestamp;

use super::document::{Channel, ChannelError, Edge, Header, Release, Rollout};
use crate::install::version::compare;

fn invalid(m: String) -> ChannelError {
    ChannelError::Invalid(m)
}

/// A new, empty channel.
pub fn new(name: &str, allow_downgrade: bool, now: Timestamp) -> Channel {
    Channel {
        channel: Header {
            name: name.to_owned(),
            sequence: 0,
            issued: now,
            expires: now
                .checked_add(jiff::SignedDuration::from_hours(24 * 7))
                .unwrap_or(Timestamp::MAX),
            allow_downgrade,
        },
        releases: Vec::new(),
        edges: Vec::new(),
    }
}

/// Whether a barrier of `compatible` lies strictly between `a` and `b`.
fn barrier_between(c: &Channel, compatible: &str, a: &str, b: &str) -> Option<String> {
    let (low, high) = match compare(a, b) {
        Ordering::Less => (a, b),
        _ => (b, a),
    };
    c.releases
        .iter()
        .filter(|r| r.barrier && r.compatible == compatible)
        .find(|r| {
            compare(&r.version, low) == Ordering::Greater
                && compare(&r.version, high) == Ordering::Less
        })
        .map(|r| r.version.clone())
}

/// Adds `release` with edges to it from `from`, or by default from every
/// older release of its compatible that reaches it without crossing a
/// barrier. Returns the edges added.
pub fn add_release(
    c: &mut Channel,
    release: Release,
    from: Option<Vec<String>>,
) -> Result<Vec<Edge>, ChannelError> {
    if c.release(&release.compatible, &release.version).is_some() {
        return Err(invalid(format!(
            "release {} ({}) is already in the channel",
            release.version, release.compatible
        )));
    }
    let sources: Vec<String> = match from {
        Some(list) => list,
        None => c
            .releases
            .iter()
            .filter(|r| r.compatible == release.compatible)
            .filter(|r| compare(&r.version, &release.version) == Ordering::Less)
            .filter(|r| {
                barrier_between(c, &release.compatible, &r.version, &release.version).is_none()
            })
            .map(|r| r.version.clone())
            .collect(),
    };
    let version = release.version.clone();
    c.releases.push(release);
    let mut added = Vec::new();
    for f in sources {
        let e = Edge {
            from: f,
            to: version.clone(),
        };
        if !c.edges.contains(&e) {
            c.edges.push(e.clone());
            added.push(e);
        }
    }
    c.validate()?;
    Ok(added)
}

/// Makes `version` a barrier: edges that would now skip it are removed, and
/// every older release that reaches it without crossing another barrier
/// gets an edge to it. Returns (removed, added).
pub fn set_barrier(c: &mut Channel, version: &str) -> Result<(Vec<Edge>, Vec<Edge>), ChannelError> {
    let compatibles: Vec<String> = c
        .releases
        .iter()
        .filter(|r| r.version == version)
        .map(|r| r.compatible.clone())
        .collect();
    if compatibles.is_empty() {
        return Err(invalid(format!("no release {version} in the channel")));
    }
    for r in c.releases.iter_mut().filter(|r| r.version == version) {
        r.barrier = true;
    }
    let mut removed = Vec::new();
    let crossing: Vec<Edge> = c
        .edges
        .iter()
        .filter(|e| {
            compatibles
                .iter()
                .any(|k| barrier_between(c, k, &e.from, &e.to).as_deref() == Some(version))
        })
        .cloned()
        .collect();
    c.edges.retain(|e| !crossing.contains(e));
    removed.extend(crossing);
    let mut added = Vec::new();
    for k in &compatibles {
        let older: Vec<String> = c
            .releases
            .iter()
            .filter(|r| &r.compatible == k && compare(&r.version, version) == Ordering::Less)
            .filter(|r| barrier_between(c, k, &r.version, version).is_none())
            .map(|r| r.version.clone())
            .collect();
        for f in older {
            let e = Edge {
                from: f,
                to: version.to_owned(),
            };
            if !c.edges.contains(&e) {
                c.edges.push(e.clone());
                added.push(e);
            }
        }
    }
    c.validate()?;
    Ok((removed, added))
}

fn releases_mut<'a>(
    c: &'a mut Channel,
    version: &str,
) -> Result<Vec<&'a mut Release>, ChannelError> {
    let found: Vec<&mut Release> = c
        .releases
        .iter_mut()
        .filter(|r| r.version == version)
        .collect();
    if found.is_empty() {
        return Err(invalid(format!("no release {version} in the channel")));
    }
    Ok(found)
}

/// Marks `version` a dead-end with `reason`, or clears it (`None`).
pub fn set_deadend(
    c: &mut Channel,
    version: &str,
    reason: Option<&str>,
) -> Result<(), ChannelError> {
    for r in releases_mut(c, version)? {
        r.deadend = reason.map(str::to_owned);
    }
    c.validate()
}

/// Sets or clears `version`'s phased rollout.
pub fn set_rollout(
    c: &mut Channel,
    version: &str,
    rollout: Option<(Timestamp, f64, Duration)>,
) -> Result<(), ChannelError> {
    for r in releases_mut(c, version)? {
        r.rollout = rollout.map(|(start, start_percentage, duration)| Rollout {
            start,
            start_percentage,
            duration,
        });
    }
    c.validate()
}

/// Prepares the document for signing: a higher sequence, issued now,
/// expiring after `valid_for`.
pub fn prepare_signing(
    c: &mut Channel,
    now: Timestamp,
    valid_for: Duration,
) -> Result<(), ChannelError> {
    let valid = jiff::SignedDuration::try_from(valid_for)
        .map_err(|_| invalid("the validity period is too long".into()))?;
    c.channel.sequence = c.channel.sequence.saturating_add(1);
    c.channel.issued = now;
    c.channel.expires = now.checked_add(valid).unwrap_or(Timestamp::MAX);
    c.validate()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::channel::document::tests::hash;

    fn release(v: &str, n: u8) -> Release {
        Release {
            version: v.into(),
            compatible: "acme".into(),
            manifest_hash: hash(n),
            bundles: vec![format!("{v}.raucb")],
            barrier: false,
            deadend: None,
            rollout: None,
        }
    }

    fn edges(c: &Channel) -> Vec<String> {
        let mut e: Vec<String> = c
            .edges
            .iter()
            .map(|e| format!("{}->{}", e.from, e.to))
            .collect();
        e.sort();
        e
    }

    #[test]
    fn add_links_older_releases_and_barriers_cut_the_graph() {
        let now: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let mut c = new("stable", false, now);
        add_release(&mut c, release("1", 1), None).unwrap();
        add_release(&mut c, release("2", 2), None).unwrap();
        add_release(&mut c, release("3", 3), None).unwrap();
        assert_eq!(edges(&c), ["1->2", "1->3", "2->3"]);
        let (removed, added) = set_barrier(&mut c, "2").unwrap();
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert!(added.is_empty());
        assert_eq!(edges(&c), ["1->2", "2->3"]);
        // A later release is reached only from the barrier on.
        add_release(&mut c, release("4", 4), None).unwrap();
        assert_eq!(edges(&c), ["1->2", "2->3", "2->4", "3->4"]);
        let err = add_release(&mut c, release("4", 5), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("already in the channel"), "{err}");
        let err = add_release(&mut c, release("5", 5), Some(vec!["0.1".into()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no release has"), "{err}");
    }

    #[test]
    fn signing_raises_the_sequence() {
        let now: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let mut c = new("stable", false, now);
        prepare_signing(&mut c, now, Duration::from_secs(3600)).unwrap();
        prepare_signing(&mut c, now, Duration::from_secs(3600)).unwrap();
        assert_eq!(c.channel.sequence, 2);
        assert_eq!(c.channel.expires, "2025-01-01T01:00:00Z".parse().unwrap());
    }
}
