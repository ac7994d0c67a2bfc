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

/// Anonymous executable memory, as a JIT runtime makes it, for unit tests; unmapped on drop.
#[cfg(test)]
pub(crate) struct AnonCode {
    pub start: u64,
    len: usize,
}

#[cfg(test)]
impl AnonCode {
    pub fn new(len: usize) -> Self {
        // SAFETY: a fresh anonymous mapping, unmapped on drop; nothing else uses it.
        let code = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(code, libc::MAP_FAILED);
        Self { start: code as u64, len }
    }
}

#[cfg(test)]
impl Drop for AnonCode {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { libc::munmap(self.start as *mut libc::c_void, self.len) };
    }
}
