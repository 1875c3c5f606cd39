//! `[streaming] bandwidth-limit`: a token bucket shared by every request of
//! an install, so parallel range requests together stay under the limit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    bytes_per_second: u64,
    state: Mutex<(Instant, f64)>,
}

impl RateLimiter {
    pub fn new(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second: bytes_per_second.max(1),
            state: Mutex::new((Instant::now(), 0.0)),
        }
    }

    /// Accounts for `n` bytes received and sleeps as long as needed to stay
    /// at the limit. At most one second's worth of bytes may burst.
    pub fn take(&self, n: usize) {
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let rate = self.bytes_per_second as f64;
            let now = Instant::now();
            let elapsed = now.duration_since(s.0).as_secs_f64();
            // Tokens available: refilled by the time passed, capped at one second.
            let tokens = (s.1 + elapsed * rate).min(rate) - n as f64;
            s.0 = now;
            s.1 = tokens;
            (tokens < 0.0).then(|| Duration::from_secs_f64(-tokens / rate))
        };
        if let Some(d) = wait {
            std::thread::sleep(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_to_the_limit() {
        let l = RateLimiter::new(1_000_000);
        let start = Instant::now();
        // The first second's worth is the burst; the next 500 kB take ~0.5 s.
        l.take(1_000_000);
        l.take(500_000);
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(400), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
}
