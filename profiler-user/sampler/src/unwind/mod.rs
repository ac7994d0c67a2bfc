//! Native unwind information: `.eh_frame` / `.debug_frame` compiled into compact, sorted tables
//! of [`UnwindRow`]s that the BPF unwinder can binary-search.
//!
//! Most binaries users run (distribution libc, release builds) have no frame pointers, so stacks
//! walked by frame pointers stop after a frame or two. Their call frame information (CFI) says,
//! for every instruction, where the caller's frame is; this module evaluates the CFI in user
//! space once per file and keeps only what the unwinder needs per pc range: how to compute the
//! CFA and where the caller's rbp was saved.
//!
//! - `compile`: CFI → rows, checked against binutils' `readelf --debug-dump=frames-interp`.
//! - `compiler`: the threads that compile files (large ones apart), looking in `cache` (tables
//!   kept on disk by build ID or file identity, across restarts) first.
//! - `store`: rows written into the mapped BPF rows array once per file, per-process mapping
//!   lists, reference counts that release tables no process uses (`alloc`: the free rows).
//!   docs/design/0006-agent-cost.md says why it is built this way.
//! - The walker is BPF (`profiler-ebpf/programs/src/unwind.rs`); `deferred` walks, by the same
//!   rules, the stack copies BPF sends for samples it had no tables for yet.

mod alloc;
pub mod cache;
mod compile;
mod compiler;
pub mod deferred;
mod store;

pub use compile::{compile, UnwindError, UnwindTable};
pub use profiler_common::{cfa, rbp, UnwindRow};
pub use store::{own_shared_libraries, RowSpace, StoreStats, TableStore, UnwindMaps, IDLE_GRACE};

/// Where compiled tables are kept between runs unless configured otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/otelprof/unwind";
/// The on-disk cache's default bound, MiB.
pub const DEFAULT_CACHE_MIB: u64 = 512;

/// Opens the on-disk table cache at `dir`; a cache that cannot be used is a warning, not an
/// error: tables are then compiled at every start.
pub fn open_cache(dir: &std::path::Path, max_mib: u64) -> Option<cache::TableCache> {
    match cache::TableCache::open(dir, max_mib.saturating_mul(1 << 20)) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("unwind table cache off: {e}");
            None
        }
    }
}

/// How user stacks are unwound: `auto` (compiled `.eh_frame` tables where they exist, frame
/// pointers elsewhere), `dwarf` (the same, named for `perf --call-graph dwarf` users), or `fp`
/// (frame pointers only, no tables).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnwindMode {
    #[default]
    Auto,
    Dwarf,
    Fp,
}

impl UnwindMode {
    /// Each mode with its name, as the command line and the config spell them.
    pub const NAMES: &[(&str, UnwindMode)] = &[("auto", Self::Auto), ("dwarf", Self::Dwarf), ("fp", Self::Fp)];
}
