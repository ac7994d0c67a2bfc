//! Sending one request with the OTLP retry rules: [`send_with_retry`] retries a
//! [`Transport`]'s retryable failures with the Collector's exponential backoff, waiting at least
//! as long as the server asked (`Retry-After`, gRPC `RetryInfo`), until `max_elapsed_time`.

use std::time::{Duration, Instant};

use super::{
    config::RetryConfig,
    transport::{Request, SendError, Transport},
};

/// A request that was delivered, after `attempts` tries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOutcome {
    pub attempts: u32,
    /// Items the server rejected in a partial success (in the signal's unit; profiles for
    /// profiles), and its message.
    pub rejected: i64,
    pub message: String,
}

/// Why a request was finally not delivered.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ExportError {
    #[error("not retryable: {message}")]
    Permanent { message: String, attempts: u32 },
    #[error("gave up after {attempts} attempts over {elapsed:?}: {last}")]
    GaveUp { attempts: u32, elapsed: Duration, last: String },
}

impl ExportError {
    pub fn attempts(&self) -> u32 {
        match self {
            ExportError::Permanent { attempts, .. } | ExportError::GaveUp { attempts, .. } => *attempts,
        }
    }
}

/// Pseudo-random fraction in [0, 1) for jitter (no need for a crypto RNG here).
fn jitter_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The waits between attempts: `initial_interval`, then times `multiplier` up to
/// `max_interval`, each randomized by ± `randomization_factor`.
pub struct Backoff {
    current: Duration,
    cfg: RetryConfig,
}

impl Backoff {
    pub fn new(cfg: &RetryConfig) -> Self {
        Self { current: cfg.initial_interval, cfg: cfg.clone() }
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.current.as_secs_f64();
        let spread = base * self.cfg.randomization_factor;
        let delay = base - spread + 2.0 * spread * jitter_fraction();
        let grown = (base * self.cfg.multiplier).min(self.cfg.max_interval.as_secs_f64());
        self.current = Duration::from_secs_f64(grown.max(0.0));
        Duration::from_secs_f64(delay.max(0.0))
    }
}

/// Sends `request`, retrying retryable failures while `retry` allows (once when disabled).
/// `on_retry` hears of every retry (its error and wait) for counting and logging. Shutdown
/// bounds it from outside, by dropping the future.
pub async fn send_with_retry<T: Transport + ?Sized>(
    transport: &T,
    request: &Request,
    retry: &RetryConfig,
    mut on_retry: impl FnMut(&str, Duration),
) -> Result<SendOutcome, ExportError> {
    // Tokio's clock, so tests with paused time see the waits.
    let started = tokio::time::Instant::now();
    let mut backoff = Backoff::new(retry);
    let mut attempts = 0u32;
    loop {
        let outcome = transport.send(request).await;
        attempts += 1;
        match outcome {
            Ok(sent) => return Ok(SendOutcome { attempts, rejected: sent.rejected, message: sent.message }),
            Err(SendError::Permanent(message)) => return Err(ExportError::Permanent { message, attempts }),
            Err(SendError::Retryable { message, retry_after }) => {
                let elapsed = started.elapsed();
                let delay = backoff.next_delay().max(retry_after.unwrap_or_default());
                let out_of_time = !retry.max_elapsed_time.is_zero() && elapsed + delay > retry.max_elapsed_time;
                if !retry.enabled || out_of_time {
                    return Err(ExportError::GaveUp { attempts, elapsed, last: message });
                }
                on_retry(&message, delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;

    use super::*;
    use crate::exporter::transport::Sent;

    #[test]
    fn backoff_grows_by_the_multiplier_is_capped_and_jittered() {
        let cfg = RetryConfig {
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(4),
            multiplier: 2.0,
            randomization_factor: 0.5,
            ..Default::default()
        };
        let mut b = Backoff::new(&cfg);
        for base in [1.0, 2.0, 4.0, 4.0, 4.0] {
            let d = b.next_delay().as_secs_f64();
            assert!(d >= base * 0.5 - 1e-9 && d <= base * 1.5 + 1e-9, "{d} around {base}");
        }
        let mut exact = Backoff::new(&RetryConfig { randomization_factor: 0.0, ..cfg });
        assert_eq!([exact.next_delay(), exact.next_delay()], [Duration::from_secs(1), Duration::from_secs(2)]);
    }

    /// Answers from a script, then succeeds.
    struct Scripted(Mutex<Vec<SendError>>);

    #[async_trait]
    impl Transport for Scripted {
        async fn send(&self, _: &Request) -> Result<Sent, SendError> {
            match self.0.lock().unwrap().pop() {
                Some(e) => Err(e),
                None => Ok(Sent { rejected: 2, message: "old".into() }),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_as_asked_and_gives_up_in_time() {
        let data = Request::data(crate::signal::Data::Logs(ExportLogsServiceRequest::default()));
        let retry = RetryConfig { initial_interval: Duration::from_millis(10), ..Default::default() };
        let busy = || SendError::Retryable { message: "busy".into(), retry_after: Some(Duration::from_secs(7)) };
        let t = Scripted(Mutex::new(vec![busy(), busy()]));
        let mut waits = vec![];
        let started = tokio::time::Instant::now();
        let out = send_with_retry(&t, &data, &retry, |_, d| waits.push(d)).await.unwrap();
        assert_eq!(out, SendOutcome { attempts: 3, rejected: 2, message: "old".into() });
        assert_eq!(waits, [Duration::from_secs(7); 2], "the server's wait wins over a shorter backoff");
        assert!(started.elapsed() >= Duration::from_secs(14));

        let t = Scripted(Mutex::new(vec![SendError::Permanent("bad".into()), busy()]));
        let e = send_with_retry(&t, &data, &retry, |_, _| {}).await.unwrap_err();
        assert_eq!(e, ExportError::Permanent { message: "bad".into(), attempts: 2 });

        let short = RetryConfig { max_elapsed_time: Duration::from_secs(10), ..retry.clone() };
        let t = Scripted(Mutex::new(vec![busy(), busy()]));
        let e = send_with_retry(&t, &data, &short, |_, _| {}).await.unwrap_err();
        assert!(matches!(e, ExportError::GaveUp { attempts: 2, .. }), "7 s + 7 s exceed 10 s: {e:?}");

        let off = RetryConfig { enabled: false, ..retry };
        let t = Scripted(Mutex::new(vec![busy()]));
        assert_eq!(send_with_retry(&t, &data, &off, |_, _| {}).await.unwrap_err().attempts(), 1);
    }
}
