//! otelprof's sampling stages: from the kernel's records to symbolized per-interval profiles.
//! `otelprof record` and the agent's `profiling` receiver drive them through one [`session`].
//!
//! The data path, one folder per stage: `tracer` (load/attach BPF: CPU samples, and off-CPU
//! waits when asked) → `reader` (ring buffer) → `kernel_view` (what BPF knows per process:
//! `unwind` tables — compiled on their own threads, kept on disk by file identity, written into
//! the mapped rows array — and `context` readers; samples with stack copies wait there for their
//! tables) → `process` (maps, files, build IDs, perf maps of JIT code) → `aggregate` (stack
//! counts per profile type) → `symbolize`. Then the `otelprof-encode` crate writes them as
//! OTLP, pprof, folded stacks or SVG.
//!
//! `targets` chooses the processes the agent follows; `ratelimit` keeps hot-path logging
//! bounded.

pub mod aggregate;
pub mod context;
pub mod kernel_view;
pub mod process;
pub mod ratelimit;
pub mod reader;
pub mod session;
pub mod symbolize;
pub mod targets;
pub mod thinning;
pub mod tracer;
pub mod unwind;
