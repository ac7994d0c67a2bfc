//! otelprof's embedded OpenTelemetry collector.
//!
//! The shape is the OpenTelemetry Collector's, so that its users recognise it
//! (docs/design/0007-embedded-collector.md):
//!
//! `receiver` → (per pipeline) `processor` chain → fan-out → `exporter` queues → backends.
//!
//! - [`signal`]: the four signals and the data that crosses every seam ([`signal::Data`]: an
//!   OTLP export request).
//! - [`consumer`]: the one seam between components — a synchronous, never-blocking `consume`
//!   that either takes the data or refuses it (retryable or not).
//! - [`component`]: ids (`type[/name]`), the receiver / processor / exporter traits and the
//!   [`component::Host`] (own metrics, health, shutdown) every component gets.
//! - [`telemetry`]: own metrics in the Collector's names, served on `/metrics`.
//! - [`config`] and [`factories`]: the config file checked against the known component types;
//!   [`graph`]: the pipelines built from it, started and shut down in order;
//!   [`telemetry_server`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`processor`]: `batch`, `memory_limiter`, `resource`, `resourcedetection`.
//! - [`exporter`]: `otlp`, `otlphttp`, `debug`, `file` behind one bounded sending queue with retries.
//! - [`receiver`]: where data enters: the `otlp` receiver (OTLP/gRPC and OTLP/HTTP).

pub mod component;
pub mod config;
pub mod consumer;
pub mod exporter;
pub mod factories;
pub mod graph;
pub mod health;
pub mod processor;
pub mod receiver;
pub mod signal;
pub mod telemetry;
pub mod telemetry_server;
