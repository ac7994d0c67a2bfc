//! Rate-limited logging for hot paths: a condition that can repeat for every record or every
//! connection (a malformed ring-buffer record, a failing `accept`) is logged at most once per
//! interval, with the number of occurrences held back since the last line, so the log stays
//! readable and cheap while the counters say how often it really happened.
//!
//! ```
//! use std::time::Duration;
//! use otelprof_sampler::ratelimit::RateLimit;
//!
//! let mut limit = RateLimit::new(Duration::from_secs(10));
//! for _ in 0..1000 {
//!     if let Some(held_back) = limit.allow() {
//!         eprintln!("something went wrong ({held_back} more since the last report)");
//!     }
//! }
//! ```

use std::time::{Duration, Instant};

/// Lets one event through per `interval` and counts the others.
#[derive(Debug, Clone)]
pub struct RateLimit {
    interval: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl RateLimit {
    pub const fn new(interval: Duration) -> Self {
        Self { interval, last: None, held_back: 0 }
    }

    /// `Some(n)` when this occurrence may be logged, `n` being the occurrences held back since
    /// the last one that was; `None` (counted) otherwise.
    pub fn allow(&mut self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    /// [`Self::allow`] as of `now` (tests move time without waiting).
    pub fn allow_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval_with_the_count_held_back() {
        let mut l = RateLimit::new(Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(l.allow_at(t), Some(0), "the first occurrence is logged");
        for i in 1..=99 {
            assert_eq!(l.allow_at(t + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(l.allow_at(t + Duration::from_secs(10)), Some(99));
        assert_eq!(l.allow_at(t + Duration::from_secs(11)), None);
        assert_eq!(l.allow_at(t + Duration::from_secs(30)), Some(1));
    }
}
