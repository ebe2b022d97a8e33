//! Token-bucket rate limit: Ingest's `pipeline.max_records_per_sec`, the generators'
//! pace, Sink's output cap and the admin API's per-principal limit. Pure: time is passed in. The bucket holds at most `burst` tokens, so a stall does not bank a burst.
use std::time::{Duration, Instant};

/// A token bucket refilled at `per_sec` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A full bucket.
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self { per_sec: f64::from(per_sec.max(1)), burst, tokens: burst, last: now }
    }

    /// The same bucket, emptied: the first tokens arrive at the rate, with no initial burst.
    pub fn empty(mut self) -> Self {
        self.tokens = 0.0;
        self
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_sec).min(self.burst);
        self.last = now;
    }

    /// Whole tokens available now.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.tokens.floor().max(0.0) as u64
    }

    /// Spend `n` tokens (records actually read; may dip below zero when a poll returned
    /// more than was available, which delays the next read accordingly).
    pub fn take(&mut self, n: u64) {
        self.tokens -= n as f64;
    }

    /// Time until one token is available.
    pub fn wait(&self) -> Duration {
        let missing = (1.0 - self.tokens).max(0.0);
        Duration::from_secs_f64(missing / self.per_sec).max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_at_rate_and_caps_burst() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(100, 10, t0);
        assert_eq!(r.available(t0), 10);
        r.take(10);
        assert_eq!(r.available(t0), 0);
        assert!(r.wait() >= Duration::from_millis(9) && r.wait() <= Duration::from_millis(11), "{:?}", r.wait());
        assert_eq!(r.available(t0 + Duration::from_millis(50)), 5);
        // A long stall banks no more than the burst.
        assert_eq!(r.available(t0 + Duration::from_secs(60)), 10);
    }

    #[test]
    fn empty_bucket_starts_without_burst() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(100, 100, t0).empty();
        assert_eq!(r.available(t0), 0);
        assert_eq!(r.available(t0 + Duration::from_millis(100)), 10);
    }

    #[test]
    fn average_rate_holds_over_time() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(1000, 50, t0);
        let mut taken = 0;
        for ms in 0..=2000u64 {
            let n = r.available(t0 + Duration::from_millis(ms));
            r.take(n);
            taken += n;
        }
        // 2 s at 1000/s plus the initial burst.
        assert!((2000..=2050).contains(&taken), "{taken}");
    }
}
