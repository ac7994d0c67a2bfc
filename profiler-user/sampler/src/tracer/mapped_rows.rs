//! The `UNWIND_ROWS` array mapped into otelprof's memory (the map is `BPF_F_MMAPABLE`).
//!
//! Tables are written into it in place: a 1.3-million-row library costs one `memcpy` instead of
//! 1.3 million `bpf(BPF_MAP_UPDATE_ELEM)` calls (which were two thirds of the agent's CPU time
//! under process churn, docs/design/0006-agent-cost.md). The same memory is what user space reads
//! when it walks stack copies, so it keeps no second copy of the rows.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
    ptr::NonNull,
};

use profiler_common::UnwindRow;

use crate::unwind::RowSpace;

/// A shared, writable mapping of the rows array. The kernel keeps the map alive while mapped.
pub struct MappedRows {
    ptr: NonNull<UnwindRow>,
    len: usize,
    bytes: usize,
}

// SAFETY: the mapping is plain memory owned by this value; nothing else in the process aliases it.
unsafe impl Send for MappedRows {}

impl MappedRows {
    /// Maps the `entries` rows of the array map behind `fd`.
    pub(super) fn map(fd: BorrowedFd<'_>, entries: u32) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let len = entries as usize;
        let bytes = (len * size_of::<UnwindRow>()).next_multiple_of(page);
        if bytes == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the rows array has no entries"));
        }
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks size and flags (it
        // refuses maps created without BPF_F_MMAPABLE).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<UnwindRow>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len, bytes })
    }
}

impl RowSpace for MappedRows {
    fn rows(&self) -> &[UnwindRow] {
        // SAFETY: `len` rows of mapped, initialized memory (array maps are zero-filled) that live
        // as long as `self`; user space writes them only through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn write(&mut self, start: u32, rows: &[UnwindRow]) -> bool {
        let start = start as usize;
        if start.checked_add(rows.len()).is_none_or(|end| end > self.len) {
            return false;
        }
        // SAFETY: in bounds (checked above); the source is a distinct Rust slice. BPF may read
        // these rows only after user space lists them in a process's mappings, which happens
        // after this copy.
        unsafe { std::ptr::copy_nonoverlapping(rows.as_ptr(), self.ptr.as_ptr().add(start), rows.len()) };
        true
    }
}

impl Drop for MappedRows {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.bytes) };
    }
}
