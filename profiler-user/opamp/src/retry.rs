//! Waiting between connection attempts, and logging failures without flooding the log.

use std::time::{Duration, Instant, SystemTime};

use rand::Rng;

/// Exponential backoff with "equal jitter": each wait is between half and all of the current
/// step, so many agents restarted together do not reconnect in lockstep.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Backoff { initial, max: max.max(initial), step: initial }
    }

    pub(crate) fn next_wait(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    pub(crate) fn reset(&mut self) {
        self.step = self.initial;
    }
}

/// The longest server-requested wait honoured. A larger value is clamped, so a wrong header
/// cannot park an agent for days.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Parses an HTTP `Retry-After` value: delay seconds or an HTTP date.
/// The delay an HTTP answer asks for: `Retry-After` of a 503 or 429 (the HTTP transport's
/// POST and the WebSocket handshake alike), `None` for any other status.
pub(crate) fn retry_after_of(status: u16, headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    if status != 503 && status != 429 {
        return None;
    }
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, now)
}

pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Lets one log line through per `every`, counting the ones held back, for failures that repeat
/// every few seconds while a server is down.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) fn new(every: Duration) -> Self {
        LogLimiter { every, last: None, suppressed: 0 }
    }

    /// `Some(n)` when this occurrence may be logged, `n` being how many were held back since the
    /// previous logged one.
    pub(crate) fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let w: Vec<Duration> = (0..8).map(|_| b.next_wait()).collect();
        assert!(w[0] >= Duration::from_millis(500) && w[0] <= Duration::from_secs(1));
        assert!(w[1] >= Duration::from_secs(1) && w[1] <= Duration::from_secs(2));
        assert!(w[7] >= Duration::from_secs(15) && w[7] <= Duration::from_secs(30));
        b.reset();
        assert!(b.next_wait() <= Duration::from_secs(1));
    }

    #[test]
    fn retry_after_seconds_and_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        // 2015-10-21 07:28:00 GMT is `now`; 07:28:30 is 30 s later.
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("99999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn limiter_counts_held_back_lines() {
        let mut l = LogLimiter::new(Duration::from_secs(60));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        l.last = Some(Instant::now() - Duration::from_secs(61));
        assert_eq!(l.allow(), Some(2));
    }
}
