//! Sending OTLP profiles to a backend: OTLP/gRPC (`ProfilesService/Export`) or OTLP/HTTP
//! (`POST /v1development/profiles`), with the OTLP specification's retry rules, behind a queue
//! bounded by bytes.
//!
//! - [`Client`] sends one request once and classifies the outcome ([`SendError::Retryable`] or
//!   [`SendError::Permanent`]), reading `partial_success` from a successful answer.
//! - [`export_with_retry`] retries retryable failures with exponential backoff and jitter,
//!   honouring the server's `Retry-After` / `RetryInfo`, until `max_elapsed_time`.
//! - [`queue::ExportQueue`] keeps at most `max_bytes` of requests; when the backend is slower than
//!   the profiler the oldest requests are dropped, and counted.

mod config;
mod grpc;
mod http;
pub mod queue;

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

pub use config::{Compression, EndpointConfig, Protocol, RetryConfig};
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;

/// How one send attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth retrying (backend down, overloaded, timed out); the server may say when.
    Retryable { message: String, retry_after: Option<Duration> },
    /// Retrying cannot help (invalid data, unauthenticated, bad endpoint).
    Permanent(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Retryable { message, .. } => write!(f, "{message} (retryable)"),
            SendError::Permanent(m) => write!(f, "{m}"),
        }
    }
}

/// A successful export; the server may still have rejected part of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    pub rejected_profiles: i64,
    pub message: String,
}

/// Counters of the export path, shared with the agent's metrics.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub exported: AtomicU64,
    pub failed: AtomicU64,
    pub retries: AtomicU64,
    pub rejected_profiles: AtomicU64,
    pub dropped_batches: AtomicU64,
    pub dropped_bytes: AtomicU64,
    pub queue_bytes: AtomicU64,
}

/// A connected (lazily: a backend that is down at start is fine) OTLP client.
pub enum Client {
    Grpc(grpc::GrpcClient),
    Http(http::HttpClient),
}

impl Client {
    pub fn new(cfg: &EndpointConfig) -> anyhow::Result<Self> {
        Ok(match cfg.protocol {
            Protocol::Grpc => Client::Grpc(grpc::GrpcClient::new(cfg)?),
            Protocol::Http => Client::Http(http::HttpClient::new(cfg)?),
        })
    }

    /// One attempt.
    pub async fn send(&self, req: &ExportProfilesServiceRequest) -> Result<Sent, SendError> {
        match self {
            Client::Grpc(c) => c.send(req).await,
            Client::Http(c) => c.send(req).await,
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

/// The delay before retry number `attempt` (0-based): exponential from `initial_interval` by
/// 1.5×, capped at `max_interval`, randomized by ±50% as the OTLP exporters do.
pub fn backoff(retry: &RetryConfig, attempt: u32) -> Duration {
    let base = retry.initial_interval.as_secs_f64() * 1.5f64.powi(attempt as i32);
    let capped = base.min(retry.max_interval.as_secs_f64());
    Duration::from_secs_f64(capped * (0.5 + jitter_fraction()))
}

/// Why an export finally failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("rejected: {0}")]
    Permanent(String),
    #[error("gave up after {attempts} attempts over {elapsed:?}: {last}")]
    GaveUp { attempts: u32, elapsed: Duration, last: String },
}

/// Sends `req`, retrying retryable failures until `retry.max_elapsed_time` (or once, when
/// retries are disabled). Shutdown bounds it from outside, by dropping the future.
pub async fn export_with_retry(
    client: &Client,
    req: &ExportProfilesServiceRequest,
    retry: &RetryConfig,
    stats: &ExportStats,
) -> Result<Sent, ExportError> {
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        let outcome = client.send(req).await;
        attempt += 1;
        match outcome {
            Ok(sent) => {
                stats.exported.fetch_add(1, Ordering::Relaxed);
                if sent.rejected_profiles > 0 || !sent.message.is_empty() {
                    stats.rejected_profiles.fetch_add(sent.rejected_profiles.max(0) as u64, Ordering::Relaxed);
                    tracing::warn!(
                        rejected = sent.rejected_profiles,
                        "backend accepted the export only in part: {}",
                        sent.message
                    );
                }
                return Ok(sent);
            }
            Err(SendError::Permanent(m)) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                return Err(ExportError::Permanent(m));
            }
            Err(SendError::Retryable { message, retry_after }) => {
                let delay = retry_after.unwrap_or_else(|| backoff(retry, attempt - 1));
                let elapsed = started.elapsed();
                if !retry.enabled || elapsed + delay > retry.max_elapsed_time {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    return Err(ExportError::GaveUp { attempts: attempt, elapsed, last: message });
                }
                stats.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("export failed ({message}); retry {attempt} in {delay:?}");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let r = RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(4),
            max_elapsed_time: Duration::from_secs(60),
        };
        for attempt in 0..10 {
            let d = backoff(&r, attempt).as_secs_f64();
            let base = (1.5f64.powi(attempt as i32)).min(4.0);
            assert!(d >= base * 0.5 - 1e-9 && d < base * 1.5 + 1e-9, "attempt {attempt}: {d} around {base}");
        }
    }
}
