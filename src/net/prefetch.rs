//! Fetching ahead of the reader: the ranges an install will read, merged,
//! cut into pieces, fetched by a few workers in parallel, handed to the
//! reader in order. Memory is bounded: workers run at most
//! [`Prefetch::window`] pieces ahead of the reader, and a piece is dropped as
//! soon as the reader has passed it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::client::Client;
use super::range::{self, Stats, Target};

/// Ranges closer than this are fetched as one (the gap comes along).
const MERGE_GAP: u64 = 64 * 1024;
/// The largest piece one request fetches.
const PIECE: u64 = 1024 * 1024;

pub(crate) struct Prefetch {
    pieces: Vec<(u64, u64)>,
    window: usize,
    state: Mutex<State>,
    changed: Condvar,
    stopped: AtomicBool,
}

#[derive(Default)]
struct State {
    /// The next piece a worker takes.
    next: usize,
    /// Pieces before this one were passed by the reader and dropped.
    consumed: usize,
    done: BTreeMap<usize, std::io::Result<Vec<u8>>>,
}

/// Merges sorted `(offset, len)` ranges that are closer than `gap`, then
/// cuts them into pieces of at most `piece` bytes.
pub(crate) fn plan(ranges: &[(u64, u64)], gap: u64, piece: u64) -> Vec<(u64, u64)> {
    let mut sorted: Vec<(u64, u64)> = ranges.iter().copied().filter(|r| r.1 > 0).collect();
    sorted.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (off, len) in sorted {
        let end = off + len;
        match merged.last_mut() {
            Some((m_off, m_len)) if off <= *m_off + *m_len + gap => {
                *m_len = (*m_len).max(end - *m_off);
            }
            _ => merged.push((off, len)),
        }
    }
    let mut out = Vec::new();
    for (off, len) in merged {
        let mut at = 0;
        while at < len {
            let n = piece.min(len - at);
            out.push((off + at, n));
            at += n;
        }
    }
    out
}

impl Prefetch {
    pub(crate) fn start(
        client: Client,
        target: Target,
        stats: Arc<Stats>,
        ranges: &[(u64, u64)],
    ) -> Arc<Self> {
        let workers = client.parallel.max(1);
        let this = Arc::new(Self {
            pieces: plan(ranges, MERGE_GAP, PIECE),
            window: workers * 2,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stopped: AtomicBool::new(false),
        });
        log::info!(
            "{}: fetching {} bytes in {} requests, {workers} at a time",
            target.shown,
            this.pieces.iter().map(|p| p.1).sum::<u64>(),
            this.pieces.len()
        );
        for _ in 0..workers.min(this.pieces.len()) {
            let (this, client, target, stats) =
                (this.clone(), client.clone(), target.clone(), stats.clone());
            std::thread::spawn(move || this.work(&client, &target, &stats));
        }
        this
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn work(&self, client: &Client, target: &Target, stats: &Stats) {
        loop {
            let i = {
                let mut s = self.lock();
                loop {
                    if self.stopped.load(Ordering::Relaxed) || s.next >= self.pieces.len() {
                        return;
                    }
                    if s.next < s.consumed + self.window {
                        break;
                    }
                    s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
                }
                s.next += 1;
                s.next - 1
            };
            let (off, len) = self.pieces[i];
            let mut bytes = Vec::with_capacity(len as usize);
            let result = range::fetch(client, target, off, len, stats, &mut |b| {
                bytes.extend_from_slice(b);
                Ok(())
            })
            .map(|()| bytes)
            .map_err(std::io::Error::from);
            let failed = result.is_err();
            self.lock().done.insert(i, result);
            self.changed.notify_all();
            if failed {
                // The reader reports it when it gets there; no point going on.
                self.stop();
                return;
            }
        }
    }

    /// Stops the workers at their next piece.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.changed.notify_all();
    }

    /// Fills `buf` from the pieces, waiting for them; `Ok(false)` when the
    /// range is not (or no longer) part of the plan.
    pub(crate) fn read(&self, buf: &mut [u8], offset: u64) -> std::io::Result<bool> {
        let end = offset + buf.len() as u64;
        // The first piece holding `offset`, and every piece up to `end` must
        // follow it without a gap.
        let first = self.pieces.partition_point(|(o, l)| o + l <= offset);
        let mut i = first;
        let mut at = offset;
        while at < end {
            match self.pieces.get(i) {
                Some((o, l)) if *o <= at && at < o + l => {
                    at = (o + l).min(end);
                    i += 1;
                }
                _ => return Ok(false),
            }
        }
        if first < self.lock().consumed {
            return Ok(false);
        }
        let mut filled = 0usize;
        for j in first..i {
            let (o, l) = self.pieces[j];
            let mut s = self.lock();
            // Passing a piece drops everything before it.
            if j > s.consumed {
                let consumed = s.consumed;
                for k in consumed..j {
                    s.done.remove(&k);
                }
                s.consumed = j;
                self.changed.notify_all();
            }
            loop {
                if s.done.contains_key(&j) {
                    break;
                }
                if self.stopped.load(Ordering::Relaxed) && s.next <= j {
                    return Ok(false);
                }
                s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            let bytes = match s.done.get(&j).expect("present") {
                Ok(b) => b,
                Err(_) => {
                    let e = s.done.remove(&j).expect("present").unwrap_err();
                    return Err(e);
                }
            };
            let from = (offset + filled as u64).saturating_sub(o) as usize;
            let n = ((l - from as u64) as usize).min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&bytes[from..from + n]);
            filled += n;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_merge_and_cut() {
        assert_eq!(plan(&[], 10, 100), []);
        // Close ranges merge (the gap comes along), far ones do not.
        assert_eq!(
            plan(&[(0, 10), (15, 5), (100, 10)], 10, 1000),
            [(0, 20), (100, 10)]
        );
        // Unsorted input, overlaps, empty ranges.
        assert_eq!(
            plan(&[(50, 10), (0, 10), (5, 10), (30, 0)], 0, 1000),
            [(0, 15), (50, 10)]
        );
        // Long ranges are cut into pieces.
        assert_eq!(plan(&[(0, 250)], 0, 100), [(0, 100), (100, 100), (200, 50)]);
    }
}
