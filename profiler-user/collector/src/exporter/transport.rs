//! The one trait every exporter type implements: one attempt to deliver one request, with its
//! failure classified as the OTLP specification does (retryable or permanent), and the
//! server's partial success.

use std::time::Duration;

use async_trait::async_trait;

use crate::signal::{Data, Signal};

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

/// One request as the sending queue holds it and a transport sends it.
#[derive(Clone, Debug)]
pub struct Request {
    pub signal: Signal,
    /// Items in it (spans, points, records, samples), counted before any encoding.
    pub items: u64,
    pub payload: Payload,
}

/// What a request carries.
#[derive(Clone, Debug)]
pub enum Payload {
    /// The data as received: for transports that read it (debug, file).
    Data(Data),
    /// Encoded and compressed for the wire by [`Transport::prepare`]: what the network
    /// transports send, every attempt the same bytes.
    Wire(bytes::Bytes),
}

impl Request {
    /// A request that keeps `data` as it is.
    pub fn data(data: Data) -> Self {
        Self { signal: data.signal(), items: data.items(), payload: Payload::Data(data) }
    }

    /// The data, for transports that prepare none.
    pub fn as_data(&self) -> Result<&Data, SendError> {
        match &self.payload {
            Payload::Data(d) => Ok(d),
            Payload::Wire(_) => {
                Err(SendError::Permanent("an encoded request reached a transport that reads data".into()))
            }
        }
    }

    /// The wire bytes, for transports that prepared them.
    pub fn as_wire(&self) -> Result<&bytes::Bytes, SendError> {
        match &self.payload {
            Payload::Wire(b) => Ok(b),
            Payload::Data(_) => Err(SendError::Permanent("a request reached a network transport unencoded".into())),
        }
    }

    /// Bytes it holds: the wire bytes, or the data's protobuf size.
    pub fn bytes(&self) -> u64 {
        match &self.payload {
            Payload::Data(d) => d.encoded_len() as u64,
            Payload::Wire(b) => b.len() as u64,
        }
    }
}

/// Where one exporter's data goes: a backend, a file, the log.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Makes the queued request from `data`, on the caller of `consume`. Network transports
    /// encode and compress here: the queue then holds compact bytes instead of decoded
    /// structures (a tenth of the memory or less), a retry resends the same bytes without
    /// copying the data, and the work lands on the receiver that brought the data, which slows
    /// it down before the queue fills (backpressure). Others keep the data.
    fn prepare(&self, data: Data) -> Result<Request, SendError> {
        Ok(Request::data(data))
    }

    /// One attempt, its failure classified for [`super::retry::send_with_retry`].
    async fn send(&self, request: &Request) -> Result<Sent, SendError>;

    /// After the last request of a signal's queue: make what was written durable (a file's
    /// buffer is flushed).
    async fn shutdown(&self) {}
}
