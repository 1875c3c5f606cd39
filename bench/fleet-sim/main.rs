//! bench/fleet-sim: 10,000 simulated devices with the default (machine-id
//! derived) rollout wariness poll one channel with a phased rollout; the
//! real planner (`didymos::agent::plan`) decides for each poll. Prints how
//! many devices run the new release over time against the rollout's
//! threshold, and the requests the channel's server sees. A benchmark, not
//! a test: bench/fleet-sim/run plots it (BENCHMARKS.md).
//!
//!   fleet-sim OUT_DIR [DEVICES]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use didymos::agent::channel::document::Header;
use didymos::agent::channel::{Channel, Edge, Release, Rollout};
use didymos::agent::plan::rollout::{threshold, wariness_from_id};
use didymos::agent::plan::{DeviceView, Next, next_hop};
use jiff::{SignedDuration, Timestamp};

/// A small deterministic generator (xorshift64*), so runs are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn channel(t0: Timestamp) -> Channel {
    let release = |v: &str, n: u8| Release {
        version: v.into(),
        compatible: "acme-gateway".into(),
        manifest_hash: format!("{n:02x}").repeat(32),
        bundles: vec![format!("bundles/acme-{v}.raucb")],
        barrier: false,
        deadend: None,
        rollout: None,
    };
    let mut two = release("2.0", 2);
    two.rollout = Some(Rollout {
        start: t0,
        start_percentage: 5.0,
        duration: Duration::from_secs(24 * 3600),
    });
    Channel {
        channel: Header {
            name: "stable".into(),
            sequence: 1,
            issued: t0,
            expires: t0.checked_add(SignedDuration::from_hours(24 * 30)).unwrap(),
            allow_downgrade: false,
        },
        releases: vec![release("1.0", 1), two],
        edges: vec![Edge {
            from: "1.0".into(),
            to: "2.0".into(),
        }],
    }
}

struct Run {
    /// (minutes since start, devices on 2.0)
    updated: Vec<(i64, usize)>,
    /// polls per minute
    per_minute: Vec<usize>,
}

fn simulate(
    devices: usize,
    poll: Duration,
    jitter: Duration,
    start: Timestamp,
    hours: i64,
    c: &Channel,
) -> Run {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let ids: Vec<String> = (0..devices)
        .map(|_| format!("{:016x}{:016x}", rng.next(), rng.next()))
        .collect();
    let wariness: Vec<f64> = ids.iter().map(|id| wariness_from_id(id)).collect();
    let mut on_new = vec![false; devices];
    let poll_s = poll.as_secs() as i64;
    let jitter_s = jitter.as_secs().max(1);
    // (next poll in seconds since start, device)
    let mut queue: BinaryHeap<Reverse<(i64, usize)>> = (0..devices)
        .map(|i| Reverse((rng.below(poll_s as u64) as i64, i)))
        .collect();
    let end = hours * 3600;
    let mut per_minute = vec![0usize; (end / 60) as usize + 1];
    let mut updated_at = Vec::new();
    let failed: Vec<String> = Vec::new();
    while let Some(Reverse((t, i))) = queue.pop() {
        if t > end {
            break;
        }
        per_minute[(t / 60) as usize] += 1;
        if !on_new[i] {
            let now = start.checked_add(SignedDuration::from_secs(t)).unwrap();
            let view = DeviceView {
                compatible: "acme-gateway",
                booted_version: Some("1.0"),
                wariness: wariness[i],
                allow_downgrade: false,
                failed: &failed,
            };
            if let Next::Update { .. } = next_hop(c, &view, now).next {
                on_new[i] = true;
                updated_at.push(t);
            }
        }
        queue.push(Reverse((t + poll_s + rng.below(jitter_s) as i64, i)));
    }
    updated_at.sort();
    let mut updated = Vec::new();
    let mut k = 0;
    for m in (0..=end / 60).step_by(10) {
        while k < updated_at.len() && updated_at[k] <= m * 60 {
            k += 1;
        }
        updated.push((m, k));
    }
    Run {
        updated,
        per_minute,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(args.get(1).expect("usage: fleet-sim OUT_DIR [DEVICES]"));
    let devices: usize = args
        .get(2)
        .map_or(10_000, |n| n.parse().expect("a number of devices"));
    std::fs::create_dir_all(&out).unwrap();
    let start: Timestamp = "2030-06-01T00:00:00Z".parse().unwrap();
    // The rollout starts two hours in: 5 % at once, everybody after 24 h.
    let t0 = start.checked_add(SignedDuration::from_hours(2)).unwrap();
    let c = channel(t0);
    let hours = 30;
    let polls = [("5min", 300u64), ("1h", 3600), ("6h", 6 * 3600)];
    let runs: Vec<(&str, Run)> = polls
        .iter()
        .map(|(name, s)| {
            (
                *name,
                simulate(
                    devices,
                    Duration::from_secs(*s),
                    Duration::from_secs(*s / 12),
                    start,
                    hours,
                    &c,
                ),
            )
        })
        .collect();
    let rollout = c.releases[1].rollout.clone().unwrap();
    let mut csv = String::from("hours,threshold");
    for (name, _) in &runs {
        csv.push_str(&format!(",poll_{name}"));
    }
    csv.push('\n');
    for (row, (m, _)) in runs[0].1.updated.iter().enumerate() {
        let now = start.checked_add(SignedDuration::from_mins(*m)).unwrap();
        let th = threshold(&rollout, now).unwrap_or(0.0) * devices as f64;
        csv.push_str(&format!("{:.3},{:.0}", *m as f64 / 60.0, th));
        for (_, r) in &runs {
            csv.push_str(&format!(",{}", r.updated[row].1));
        }
        csv.push('\n');
    }
    std::fs::write(out.join("updated.csv"), csv).unwrap();
    println!(
        "| poll interval (jitter 1/12 of it) | devices on 2.0 at t0+6h | at t0+12h | at t0+24h | at t0+28h | polls per second: mean | peak minute |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, r) in &runs {
        let at = |h: i64| {
            r.updated
                .iter()
                .find(|(m, _)| *m == (h + 2) * 60)
                .map_or(0, |(_, n)| *n)
        };
        // Skip the first poll interval, whose polls are spread by the start offsets only.
        let steady = &r.per_minute[60.min(r.per_minute.len())..];
        let mean = steady.iter().sum::<usize>() as f64 / steady.len() as f64 / 60.0;
        let peak = *steady.iter().max().unwrap_or(&0) as f64 / 60.0;
        println!(
            "| {name} | {} | {} | {} | {} | {mean:.2} | {peak:.2} |",
            at(6),
            at(12),
            at(24),
            at(28)
        );
    }
    let th = |h: i64| {
        threshold(
            &rollout,
            t0.checked_add(SignedDuration::from_hours(h)).unwrap(),
        )
        .unwrap()
            * devices as f64
    };
    println!(
        "| (the rollout's threshold × {devices}) | {:.0} | {:.0} | {:.0} | {:.0} | | |",
        th(6),
        th(12),
        th(24),
        th(28)
    );
}
