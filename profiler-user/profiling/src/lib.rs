//! The profiler as the embedded collector's `profiling` receiver (docs/design/0007).
//!
//! `config` (`receivers.profiling`) → `receiver` (a sampling session on its own thread, an
//! interval closed every `reporter_interval`) → `reporter` (symbolize and encode as OTLP
//! Profiles on its own thread, hand to the profiles pipelines) ; `metrics` are the profiler's
//! own `otelprof_*` counters.

pub mod config;
pub mod metrics;
pub mod receiver;
pub mod reporter;

pub use receiver::ProfilingFactory;
