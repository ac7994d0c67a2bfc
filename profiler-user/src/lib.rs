//! otelprof's user side as a library; the `otelprof` binary (`main.rs`) is a thin shell over it,
//! and benchmarks use the stages directly.
//!
//! The data path, one folder per stage: `tracer` (load/attach BPF: CPU samples, and off-CPU
//! waits when asked) → `reader` (ring buffer) → `kernel_view` (what BPF knows per process:
//! `unwind` tables — compiled on their own threads, kept on disk by file identity, written into
//! the mapped rows array — and `context` readers; samples with stack copies wait there for their
//! tables) →
//! `process` (maps, files, build IDs, perf maps of JIT code) → `aggregate` (stack counts per
//! profile type) → `symbolize` → `export` (pprof, folded, SVG, OTLP files, OTLP senders).
//! `record` and `agent` wire them together;
//! `check` is the preflight; `health` (component liveness) and `ratelimit` (logging on hot
//! paths) are shared helpers.

pub mod agent;
pub mod aggregate;
pub mod check;
pub mod cli;
pub mod context;
pub mod export;
pub use otelprof_collector::health;
pub mod kernel_view;
pub mod process;
pub mod ratelimit;
pub mod reader;
pub mod record;
pub mod symbolize;
pub mod tracer;
pub mod unwind;
