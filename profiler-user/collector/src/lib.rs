//! otelprof's embedded OpenTelemetry collector.
//!
//! The shape is the OpenTelemetry Collector's, so that its users recognise it
//! (docs/design/0007-embedded-collector.md):
//!
//! `receiver` → (per pipeline) `processor` chain → fan-out → `exporter` queues → backends.
//!
//! The data path, one folder per stage: [`receiver`] (`otlp`: OTLP/gRPC and OTLP/HTTP;
//! `anomaly`: the edge anomaly loop, whose events are log records and whose bursts go to the
//! profiler through the host's receiver controls, issue #16 and docs/design/0010; the
//! profiler's `profiling` receiver lives in the `otelprof-profiling` crate) → [`processor`]
//! (`memory_limiter`, `batch`, `resource`, `resourcedetection`, `k8sattributes` (issue #15), and OTTL's `transform` and
//! `filter`, issue #13) → [`exporter`] (`otlp`, `otlphttp`, `debug`, `file`, behind one bounded
//! sending queue with retries); between pipelines, [`connector`] (`routing`: OTTL conditions
//! choose the pipelines, issue #13; `anomaly`: the same anomaly loop fed by a metrics pipeline,
//! for rules on applications' gauges and sums).
//!
//! What they share:
//! - [`signal`]: the four signals and the data that crosses every seam ([`signal::Data`]: an
//!   OTLP export request).
//! - [`consumer`]: the one seam between components — a synchronous, never-blocking `consume`
//!   that either takes the data or refuses it (retryable or not); [`client`]: who sent the
//!   request being consumed (the sender's address, for `k8sattributes`' `from: connection`).
//! - [`component`]: ids (`type[/name]`), the receiver / processor / exporter / connector
//!   traits and the [`component::Host`] (own metrics, health, shutdown) every component gets.
//! - [`config`] and [`factories`]: the config file checked against the known component types;
//!   [`graph`]: the pipelines built from it, started, swapped for a new config while running
//!   (unchanged receivers and exporters kept, docs/design/0009) and shut down in order.
//! - [`extension`]: what is not on the data path — `opamp` (issue #14): the remote config
//!   policy and the supervisor that applies, verifies and rolls back configs from an OpAMP
//!   server (the protocol client is the `otelprof-opamp` crate).
//! - [`telemetry`] and [`telemetry_server`]: own metrics in the Collector's names, `/metrics`,
//!   `/healthz`, `/readyz`; [`health`]: component liveness.

pub mod client;
pub mod component;
pub mod config;
pub mod connector;
pub mod consumer;
pub mod exporter;
pub mod extension;
pub mod factories;
pub mod graph;
pub mod health;
pub mod processor;
pub mod receiver;
pub mod signal;
pub mod telemetry;
pub mod telemetry_server;
