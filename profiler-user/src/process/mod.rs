//! Process state: what each sampled process has mapped, and the files behind the mappings.
//!
//! The tracker snapshots `/proc/PID/maps` when a process is first sampled and again after it
//! execs (or when a sample hits an address no snapshot covers, e.g. after `dlopen`). Samples are
//! normalized against the snapshot *when they are read*, into (file, file offset), so a process
//! that exits before the profile is written is still symbolized.

pub mod files;
pub mod layout;
pub mod maps;
pub mod metadata;
pub mod perf_map;
mod tracker;

pub use tracker::{Mapping, Normalized, ProcessSnapshot, ProcessTracker, Refreshed};
