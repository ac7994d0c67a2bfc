//! The one trait every exporter type implements: one attempt to deliver one request, with its
//! failure classified as the OTLP specification does (retryable or permanent), and the
//! server's partial success.

use std::time::Duration;

use async_trait::async_trait;

use crate::signal::Data;

/// How one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth retrying (backend down, overloaded, timed out); the server may say when.
    Retryable { message: String, retry_after: Option<Duration> },
    /// Retrying cannot help (invalid data, unauthenticated, bad endpoint, a failed write).
    Permanent(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Retryable { message, .. } => write!(f, "{message} (retryable)"),
            SendError::Permanent(m) => f.write_str(m),
        }
    }
}

/// A successful attempt; the server may still have rejected part of it (`partial_success`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    /// `rejected_spans` / `rejected_data_points` / `rejected_log_records` / `rejected_profiles`.
    pub rejected: i64,
    pub message: String,
}

/// Where one exporter's data goes: a backend, a file, the log.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// One attempt, its failure classified for [`super::retry::send_with_retry`].
    async fn send(&self, data: &Data) -> Result<Sent, SendError>;

    /// After the last request of a signal's queue: make what was written durable (a file's
    /// buffer is flushed).
    async fn shutdown(&self) {}
}
