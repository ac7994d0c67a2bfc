//! `otelprof agent`: continuous, node-wide (or targeted) profiling exported as OTLP Profiles.
//!
//! `config` (YAML, Collector style) → the sampler's `targets` (which processes; enforced in BPF) → `run` (the
//! sampling loop, one report per interval) → `reporter` (symbolize + encode on its own thread) →
//! the exporters' bounded queues. `metrics` serves the agent's own counters.

pub mod config;
pub mod metrics;
pub mod reporter;
mod run;

pub use run::run;
