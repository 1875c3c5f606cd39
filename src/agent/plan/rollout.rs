//! Phased rollouts: which devices may take a release at a given time.
//!
//! The model is Zincati's (Fedora CoreOS): a release's rollout has a start
//! time `t0`, a start share `s` (`start-percentage` / 100) and a duration
//! `d`. The rollout's *threshold* at time `t` is
//!
//! ```text
//! threshold(t) = undefined                      t < t0   (nobody yet)
//!              = s + (1 - s) · (t - t0) / d     t0 ≤ t < t0 + d
//!              = 1                              t ≥ t0 + d (or d = 0)
//! ```
//!
//! and a device with *rollout wariness* `w` (0 = eager, 1 = cautious; by
//! default derived from its machine id, uniform over the fleet) joins once
//! `w ≤ threshold(t)`. So a share `s` of the fleet (the least wary) updates
//! at `t0`, the rest follows linearly, and a device with `w = 1` waits for
//! the end. Solving for `t`, a device joins at
//!
//! ```text
//! join(w) = t0                                   w ≤ s
//!         = t0 + d · (w - s) / (1 - s)           w > s
//! ```
//!
//! Unlike Zincati's graph server, a rollout that has not started includes
//! nobody, not even a device with wariness 0.

use jiff::{SignedDuration, Timestamp};

use crate::agent::channel::Rollout;

/// The share of the fleet (0.0–1.0) the rollout admits at `now`, or `None`
/// before it starts.
pub fn threshold(r: &Rollout, now: Timestamp) -> Option<f64> {
    if now < r.start {
        return None;
    }
    let s = (r.start_percentage / 100.0).clamp(0.0, 1.0);
    let d = r.duration.as_secs_f64();
    let elapsed = now.duration_since(r.start).as_secs_f64();
    if d <= 0.0 || elapsed >= d {
        return Some(1.0);
    }
    Some(s + (1.0 - s) * elapsed / d)
}

/// Whether a device with `wariness` may take the release at `now`.
pub fn admits(r: &Rollout, wariness: f64, now: Timestamp) -> bool {
    threshold(r, now).is_some_and(|t| wariness <= t)
}

/// When a device with `wariness` joins the rollout.
pub fn joins_at(r: &Rollout, wariness: f64) -> Timestamp {
    let s = (r.start_percentage / 100.0).clamp(0.0, 1.0);
    let w = wariness.clamp(0.0, 1.0);
    if w <= s || s >= 1.0 {
        return r.start;
    }
    let secs = r.duration.as_secs_f64() * (w - s) / (1.0 - s);
    // Rounded up, so that `admits(joins_at(w))` holds.
    r.start
        .saturating_add(SignedDuration::from_secs_f64(secs.ceil()))
        .unwrap_or(Timestamp::MAX)
}

/// A device's default wariness: derived from an identifier that is stable
/// for the device (its machine id), uniform over [0, 1].
pub fn wariness_from_id(id: &str) -> f64 {
    use sha2::{Digest as _, Sha256};
    let digest = Sha256::digest(format!("didymos rollout wariness\0{id}").as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (n >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// 10 % at 00:00, then linearly to 100 % at 10:00.
    fn rollout() -> Rollout {
        Rollout {
            start: t("2025-06-02T00:00:00Z"),
            start_percentage: 10.0,
            duration: Duration::from_secs(10 * 3600),
        }
    }

    #[test]
    fn threshold_over_time_follows_the_formula() {
        let r = rollout();
        assert_eq!(threshold(&r, t("2025-06-01T23:59:59Z")), None);
        let cases = [
            ("2025-06-02T00:00:00Z", 0.10),
            ("2025-06-02T01:00:00Z", 0.19),
            ("2025-06-02T05:00:00Z", 0.55),
            ("2025-06-02T09:00:00Z", 0.91),
            ("2025-06-02T10:00:00Z", 1.0),
            ("2025-06-03T00:00:00Z", 1.0),
        ];
        for (now, want) in cases {
            let got = threshold(&r, t(now)).unwrap();
            assert!((got - want).abs() < 1e-9, "{now}: {got} != {want}");
        }
    }

    #[test]
    fn wariness_zero_half_and_one() {
        let r = rollout();
        // w = 0: at the start, not a second before.
        assert!(!admits(&r, 0.0, t("2025-06-01T23:59:59Z")));
        assert!(admits(&r, 0.0, t("2025-06-02T00:00:00Z")));
        assert_eq!(joins_at(&r, 0.0), t("2025-06-02T00:00:00Z"));
        // w = 0.5: 0.1 + 0.9 · x / 10 h = 0.5  →  x = 4 h 26 min 40 s.
        assert_eq!(joins_at(&r, 0.5), t("2025-06-02T04:26:40Z"));
        assert!(!admits(&r, 0.5, t("2025-06-02T04:26:39Z")));
        assert!(admits(&r, 0.5, t("2025-06-02T04:26:40Z")));
        // w = 1: only at the end.
        assert_eq!(joins_at(&r, 1.0), t("2025-06-02T10:00:00Z"));
        assert!(!admits(&r, 1.0, t("2025-06-02T09:59:59Z")));
        assert!(admits(&r, 1.0, t("2025-06-02T10:00:00Z")));
    }

    #[test]
    fn zero_duration_and_full_start() {
        let mut r = rollout();
        r.duration = Duration::ZERO;
        assert!(admits(&r, 1.0, r.start));
        r.duration = Duration::from_secs(3600);
        r.start_percentage = 100.0;
        assert_eq!(joins_at(&r, 1.0), r.start);
    }

    #[test]
    fn default_wariness_is_spread_over_the_unit_interval() {
        let w: Vec<f64> = (0..2000)
            .map(|i| wariness_from_id(&format!("{i:032x}")))
            .collect();
        assert!(w.iter().all(|w| (0.0..1.0).contains(w)));
        let below_half = w.iter().filter(|w| **w < 0.5).count();
        assert!((900..1100).contains(&below_half), "{below_half}");
        assert_eq!(wariness_from_id("abc"), wariness_from_id("abc"));
    }
}
