//! The next hop along a channel's upgrade graph, from the booted version.
//!
//! Rules, in the order they are applied to every edge leaving the booted
//! release (of this device's `compatible`):
//!
//! 1. a device on a **dead-end** release gets no automatic update at all;
//! 2. a **downgrade** edge (to a lower version) is taken only if the signed
//!    channel says `allow-downgrade = true` *and* the device's `[updates]
//!    allow-downgrade = true` (and the installer's own anti-rollback floor
//!    still has the last word);
//! 3. an edge that **crosses a barrier** (a barrier release strictly between
//!    the two versions) is never taken, whatever the channel says: the device
//!    must install the barrier first;
//! 4. a release that **failed on this device** (rolled back, or refused by
//!    the installer) is not tried again automatically;
//! 5. a release in a **phased rollout** is taken once the rollout admits this
//!    device's wariness ([`super::rollout`]); until then the device waits.
//!
//! Of the edges left, the one to the highest version is taken.

use std::cmp::Ordering;

use jiff::Timestamp;

use super::rollout;
use crate::agent::channel::{Channel, Release};
use crate::install::version::compare;

/// What the planner knows about the device.
#[derive(Debug, Clone)]
pub struct DeviceView<'a> {
    pub compatible: &'a str,
    /// The version of the booted slot's bundle, if known.
    pub booted_version: Option<&'a str>,
    pub wariness: f64,
    /// `[updates] allow-downgrade`.
    pub allow_downgrade: bool,
    /// Manifest hashes of releases that failed on this device.
    pub failed: &'a [String],
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Next<'a> {
    /// Install `release` now.
    Update { release: &'a Release, from: String },
    /// `release` is the next hop once its rollout admits this device, at `at`.
    Wait {
        release: &'a Release,
        from: String,
        at: Timestamp,
    },
    /// No edge leads anywhere this device may go.
    UpToDate { version: String },
    /// The booted release is a dead-end.
    DeadEnd { version: String, reason: String },
    /// The booted version is not a release of this channel for this device.
    NotInChannel { version: String },
    /// The booted slot's version is not known.
    NoBootedVersion,
}

/// The decision and, for every edge not taken, why.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop<'a> {
    pub next: Next<'a>,
    pub notes: Vec<String>,
}

/// Picks the next hop for `device` in `channel` at `now`.
pub fn next_hop<'a>(channel: &'a Channel, device: &DeviceView<'_>, now: Timestamp) -> Hop<'a> {
    let mut notes = Vec::new();
    let Some(booted) = device.booted_version else {
        return Hop {
            next: Next::NoBootedVersion,
            notes,
        };
    };
    let Some(current) = channel.release(device.compatible, booted) else {
        return Hop {
            next: Next::NotInChannel {
                version: booted.to_owned(),
            },
            notes,
        };
    };
    if let Some(reason) = &current.deadend {
        return Hop {
            next: Next::DeadEnd {
                version: booted.to_owned(),
                reason: reason.clone(),
            },
            notes,
        };
    }
    let barriers: Vec<&Release> = channel
        .releases
        .iter()
        .filter(|r| r.barrier && r.compatible == device.compatible)
        .collect();
    let mut available: Vec<&Release> = Vec::new();
    let mut waiting: Vec<(&Release, Timestamp)> = Vec::new();
    for edge in channel.edges.iter().filter(|e| e.from == booted) {
        let Some(target) = channel.release(device.compatible, &edge.to) else {
            continue;
        };
        let hop = format!("{booted} -> {}", target.version);
        let direction = compare(&target.version, booted);
        if direction == Ordering::Less
            && !(channel.channel.allow_downgrade && device.allow_downgrade)
        {
            notes.push(format!(
                "edge {hop} not taken: it is a downgrade, which needs allow-downgrade = true in \
                 both the channel (it says {}) and this device's [updates] (it says {})",
                channel.channel.allow_downgrade, device.allow_downgrade
            ));
            continue;
        }
        let (low, high) = match direction {
            Ordering::Less => (target.version.as_str(), booted),
            _ => (booted, target.version.as_str()),
        };
        if let Some(b) = barriers.iter().find(|b| {
            compare(&b.version, low) == Ordering::Greater
                && compare(&b.version, high) == Ordering::Less
        }) {
            notes.push(format!(
                "edge {hop} not taken: it crosses barrier {}, which every device must install \
                 on the way",
                b.version
            ));
            continue;
        }
        if device.failed.contains(&target.manifest_hash) {
            notes.push(format!(
                "edge {hop} not taken: release {} failed on this device before and is not \
                 retried automatically",
                target.version
            ));
            continue;
        }
        if let Some(r) = &target.rollout
            && !rollout::admits(r, device.wariness, now)
        {
            let at = rollout::joins_at(r, device.wariness);
            notes.push(format!(
                "edge {hop}: release {} is rolling out (at {now}: {}; this device's wariness \
                 {:.3} joins at {at})",
                target.version,
                match rollout::threshold(r, now) {
                    Some(t) => format!("{:.1} % of the fleet", t * 100.0),
                    None => format!("not started, starts {}", r.start),
                },
                device.wariness,
            ));
            waiting.push((target, at));
            continue;
        }
        available.push(target);
    }
    let highest = |a: &&Release, b: &&Release| compare(&a.version, &b.version);
    let next = if let Some(release) = available.iter().copied().max_by(highest) {
        Next::Update {
            release,
            from: booted.to_owned(),
        }
    } else if let Some((release, at)) = waiting.iter().copied().min_by_key(|(_, at)| *at) {
        Next::Wait {
            release,
            from: booted.to_owned(),
            at,
        }
    } else {
        Next::UpToDate {
            version: booted.to_owned(),
        }
    };
    Hop { next, notes }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::agent::channel::document::Header;
    use crate::agent::channel::document::tests::hash;
    use crate::agent::channel::{Edge, Rollout};

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

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

    fn channel(releases: Vec<Release>, edges: &[(&str, &str)]) -> Channel {
        let c = Channel {
            channel: Header {
                name: "stable".into(),
                sequence: 1,
                issued: t("2025-01-01T00:00:00Z"),
                expires: t("2026-01-01T00:00:00Z"),
                allow_downgrade: false,
            },
            releases,
            edges: edges
                .iter()
                .map(|(f, to)| Edge {
                    from: (*f).into(),
                    to: (*to).into(),
                })
                .collect(),
        };
        c.validate().unwrap();
        c
    }

    fn device(version: &str) -> DeviceView<'_> {
        DeviceView {
            compatible: "acme",
            booted_version: Some(version),
            wariness: 0.5,
            allow_downgrade: false,
            failed: &[],
        }
    }

    const NOW: &str = "2025-06-01T00:00:00Z";

    fn target<'a>(hop: &Hop<'a>) -> Option<&'a str> {
        match &hop.next {
            Next::Update { release, .. } => Some(release.version.as_str()),
            _ => None,
        }
    }

    /// 1 → 2 → 3 → 4 with 2 a barrier and direct edges 1 → 3, 1 → 4, 2 → 4.
    fn with_barrier() -> Channel {
        let mut two = release("2", 2);
        two.barrier = true;
        channel(
            vec![release("1", 1), two, release("3", 3), release("4", 4)],
            &[
                ("1", "2"),
                ("1", "3"),
                ("1", "4"),
                ("2", "3"),
                ("2", "4"),
                ("3", "4"),
            ],
        )
    }

    #[test]
    fn barriers_are_never_skipped() {
        let c = with_barrier();
        let hop = next_hop(&c, &device("1"), t(NOW));
        assert_eq!(target(&hop), Some("2"), "{hop:?}");
        assert_eq!(hop.notes.len(), 2, "{:?}", hop.notes);
        assert!(hop.notes.iter().all(|n| n.contains("crosses barrier 2")));
        // Past the barrier, the highest version is taken.
        assert_eq!(target(&next_hop(&c, &device("2"), t(NOW))), Some("4"));
        assert_eq!(
            next_hop(&c, &device("4"), t(NOW)).next,
            Next::UpToDate {
                version: "4".into()
            }
        );
    }

    #[test]
    fn an_edge_over_a_barrier_alone_leaves_the_device_where_it_is() {
        let mut two = release("2", 2);
        two.barrier = true;
        let c = channel(
            vec![release("1", 1), two, release("3", 3)],
            &[("1", "3"), ("2", "3")],
        );
        let hop = next_hop(&c, &device("1"), t(NOW));
        assert_eq!(
            hop.next,
            Next::UpToDate {
                version: "1".into()
            }
        );
        assert!(
            hop.notes[0].contains("crosses barrier 2"),
            "{:?}",
            hop.notes
        );
    }

    #[test]
    fn dead_ends_stop_automatic_updates() {
        let mut two = release("2", 2);
        two.deadend = Some("2 corrupts /data on rev-A boards; reflash".into());
        let c = channel(
            vec![release("1", 1), two, release("3", 3)],
            &[("1", "2"), ("2", "3")],
        );
        // Reaching a dead-end is allowed; leaving one is not.
        assert_eq!(target(&next_hop(&c, &device("1"), t(NOW))), Some("2"));
        match next_hop(&c, &device("2"), t(NOW)).next {
            Next::DeadEnd { version, reason } => {
                assert_eq!(version, "2");
                assert!(reason.contains("reflash"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn downgrades_need_the_channel_and_the_device() {
        let mut c = channel(vec![release("1", 1), release("2", 2)], &[("2", "1")]);
        let mut dev = device("2");
        for (channel_allows, device_allows, taken) in [
            (false, false, false),
            (true, false, false),
            (false, true, false),
            (true, true, true),
        ] {
            c.channel.allow_downgrade = channel_allows;
            dev.allow_downgrade = device_allows;
            let hop = next_hop(&c, &dev, t(NOW));
            assert_eq!(
                target(&hop).is_some(),
                taken,
                "{channel_allows} {device_allows}: {hop:?}"
            );
            if !taken {
                assert!(hop.notes[0].contains("downgrade"), "{:?}", hop.notes);
            }
        }
    }

    #[test]
    fn a_downgrade_does_not_cross_a_barrier_either() {
        let mut two = release("2", 2);
        two.barrier = true;
        let mut c = channel(vec![release("1", 1), two, release("3", 3)], &[("3", "1")]);
        c.channel.allow_downgrade = true;
        let mut dev = device("3");
        dev.allow_downgrade = true;
        let hop = next_hop(&c, &dev, t(NOW));
        assert_eq!(target(&hop), None);
        assert!(
            hop.notes[0].contains("crosses barrier 2"),
            "{:?}",
            hop.notes
        );
    }

    #[test]
    fn rollouts_wait_for_the_device_s_turn() {
        let mut two = release("2", 2);
        two.rollout = Some(Rollout {
            start: t("2025-06-02T00:00:00Z"),
            start_percentage: 10.0,
            duration: Duration::from_secs(10 * 3600),
        });
        let c = channel(vec![release("1", 1), two], &[("1", "2")]);
        let hop = next_hop(&c, &device("1"), t(NOW));
        match &hop.next {
            Next::Wait { release, at, .. } => {
                assert_eq!(release.version, "2");
                assert_eq!(*at, t("2025-06-02T04:26:40Z"));
            }
            other => panic!("{other:?}"),
        }
        assert!(hop.notes[0].contains("not started"), "{:?}", hop.notes);
        assert_eq!(
            target(&next_hop(&c, &device("1"), t("2025-06-02T04:26:40Z"))),
            Some("2")
        );
    }

    #[test]
    fn a_lower_available_release_beats_a_higher_waiting_one() {
        let mut three = release("3", 3);
        three.rollout = Some(Rollout {
            start: t("2025-07-01T00:00:00Z"),
            start_percentage: 0.0,
            duration: Duration::from_secs(3600),
        });
        let c = channel(
            vec![release("1", 1), release("2", 2), three],
            &[("1", "2"), ("1", "3")],
        );
        assert_eq!(target(&next_hop(&c, &device("1"), t(NOW))), Some("2"));
    }

    #[test]
    fn failed_releases_are_not_retried_and_other_devices_are_ignored() {
        let mut other = release("9", 9);
        other.compatible = "other-board".into();
        let c = channel(
            vec![release("1", 1), release("2", 2), other],
            &[("1", "2"), ("1", "9")],
        );
        let failed = vec![hash(2)];
        let mut dev = device("1");
        dev.failed = &failed;
        let hop = next_hop(&c, &dev, t(NOW));
        assert_eq!(
            hop.next,
            Next::UpToDate {
                version: "1".into()
            }
        );
        assert!(
            hop.notes[0].contains("failed on this device"),
            "{:?}",
            hop.notes
        );
        assert_eq!(
            next_hop(&c, &device("0.9"), t(NOW)).next,
            Next::NotInChannel {
                version: "0.9".into()
            }
        );
        let mut unknown = device("1");
        unknown.booted_version = None;
        assert_eq!(next_hop(&c, &unknown, t(NOW)).next, Next::NoBootedVersion);
    }
}
