//! Exporters: where a pipeline's data leaves the agent, in the Collector's shape and keys.
//!
//! | type (alias)             | goes to                                   | module          |
//! |--------------------------|-------------------------------------------|-----------------|
//! | `otlp` (`otlp_grpc`)     | an OTLP/gRPC backend                      | [`otlp_grpc`]   |
//! | `otlphttp` (`otlp_http`) | an OTLP/HTTP backend, protobuf or JSON    | [`otlp_http`]   |
//! | `debug`                  | the log (or stdout)                       | [`debug`]       |
//! | `file`                   | a file, JSON lines or length-prefixed     | [`file`](mod@file) |
//!
//! Every type is a [`Transport`] (one attempt to deliver one request) behind the same
//! [`QueuedExporter`]: `consume` only offers to a bounded [sending queue](queue) and refuses
//! when it is full; `num_consumers` tasks send with [retries](retry); every request ends
//! counted once as sent, send failed or enqueue failed. So a dead or slow backend costs at most
//! the queue's bound in memory and shows in `otelcol_exporter_*`, never upstream as a stall.
//!
//! Outside pipelines, [`export_once`] sends one request with a [`Client`] (`otelprof record
//! --export`).

mod client;
pub mod config;
pub mod debug;
pub mod file;
pub mod json;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod queue;
mod queued;
pub mod retry;
mod rotate;
mod transport;

#[cfg(test)]
mod tests;

pub use client::{export_once, Client};
pub use config::{Compression, QueueConfig, RetryConfig, Sizer, TlsConfig};
pub use queued::QueuedExporter;
pub use retry::{ExportError, SendOutcome};
pub use transport::{SendError, Sent, Transport};

use crate::component::ExporterFactory;

/// The factories of every exporter type, for the pipeline builder's registry.
pub fn factories() -> Vec<Box<dyn ExporterFactory>> {
    vec![
        Box::new(otlp_grpc::OtlpGrpcFactory),
        Box::new(otlp_http::OtlpHttpFactory),
        Box::new(debug::DebugFactory),
        Box::new(file::FileFactory),
    ]
}
