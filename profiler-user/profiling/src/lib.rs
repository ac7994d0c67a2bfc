//! The profiler as the embedded collector's `profiling` receiver (docs/design/0007).
//!
//! `config` (`receivers.profiling`) → `receiver` (a sampling session on its own thread, an
//! interval closed every `reporter_interval`) → `reporter` (symbolize and encode as OTLP
//! Profiles on its own thread, hand to the profiles pipelines) ; `metrics` are the profiler's
//! own `otelprof_*` counters.
//!
//! The agent's config reload changes `samples_per_second`, `targets` and `reporter_interval`
//! of a running receiver through its [`receiver::ProfilingControl`] (the collector's
//! `ReceiverControl`): the BPF programs stay loaded and sampling does not pause
//! (`tests/live.rs` measures it).

pub mod config;
pub mod metrics;
pub mod receiver;
pub mod reporter;
pub mod target_cpu;

pub use receiver::ProfilingFactory;
