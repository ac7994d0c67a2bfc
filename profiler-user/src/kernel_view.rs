//! What the BPF programs know about each process: its unwind tables (`unwind`) and where its
//! threads keep their trace context (`context`). Both follow the process tracker: whenever a
//! process's mappings or published context were (re-)read, both are brought up to date, and both
//! are dropped when it exits.

use crate::{
    context::ThreadContexts,
    process::ProcessTracker,
    tracer::Tracer,
    unwind::{TableStore, IDLE_GRACE},
};

/// Per-process state installed in BPF maps.
pub struct KernelView {
    /// `None` with `--unwind fp`.
    pub tables: Option<TableStore>,
    pub contexts: ThreadContexts,
}

impl KernelView {
    pub fn new(tracer: &Tracer, tables: bool) -> Self {
        Self {
            tables: tables.then(|| TableStore::new(tracer.unwind_rows_capacity(), IDLE_GRACE)),
            contexts: ThreadContexts::default(),
        }
    }

    /// Installs what processes re-read since the last call need, and releases unwind tables
    /// idle past their grace period.
    pub fn sync(&mut self, tracker: &mut ProcessTracker, tracer: &mut Tracer) {
        // Re-reads postponed by the tracker's rate limit are due now or later; either way they
        // land in `take_refreshed`.
        tracker.refresh_pending();
        let refreshed = tracker.take_refreshed();
        for r in &refreshed {
            if let Some(t) = self.tables.as_mut() {
                t.install(r, tracer);
            }
            self.contexts.update(r, tracer);
        }
        self.contexts.retry_pending(tracer);
        if let Some(t) = self.tables.as_mut() {
            t.collect_idle();
        }
    }

    /// Forgets a process that exited.
    pub fn exited(&mut self, pid: u32, tracer: &mut Tracer) {
        if let Some(t) = self.tables.as_mut() {
            t.release_process(pid, tracer);
        }
        self.contexts.release(pid, tracer);
    }

    /// Forgets processes gone without an exit event (lost in a full ring buffer).
    pub fn reap(&mut self, tracer: &mut Tracer) {
        if let Some(t) = self.tables.as_mut() {
            for pid in t.reap(tracer) {
                self.contexts.release(pid, tracer);
            }
        }
    }
}
