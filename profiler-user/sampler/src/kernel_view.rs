//! What the BPF programs know about each process: its unwind tables (`unwind`) and where its
//! threads keep their trace context (`context`). Both follow the process tracker: whenever a
//! process's mappings or published context were (re-)read, both are brought up to date, and both
//! are dropped when it exits.
//!
//! Samples pass through here on their way to aggregation: those BPF sent with a stack copy wait
//! until their process's tables are installed and are unwound with them (`unwind::deferred`).

use crate::{
    aggregate::Aggregator,
    context::ThreadContexts,
    process::ProcessTracker,
    reader::Sample,
    tracer::{Tracer, TracerError},
    unwind::{cache::TableCache, deferred::Deferred, TableStore, IDLE_GRACE},
};

/// Per-process state installed in BPF maps.
pub struct KernelView {
    /// `None` with `--unwind fp`.
    pub tables: Option<TableStore>,
    pub contexts: ThreadContexts,
    /// Samples waiting for their process's tables.
    pub deferred: Deferred,
    /// Samples settled, to be aggregated by the next [`Self::sample`] or [`Self::settle`].
    ready: Vec<Sample>,
}

impl KernelView {
    /// With `tables`, user stacks are unwound with compiled tables (looked up in and stored to
    /// `cache` when there is one); else by frame pointers.
    pub fn new(tracer: &Tracer, tables: bool, cache: Option<TableCache>) -> Result<Self, TracerError> {
        let tables = match tables {
            true => Some(TableStore::new(Box::new(tracer.map_unwind_rows()?), IDLE_GRACE, cache)),
            false => None,
        };
        Ok(Self { tables, contexts: ThreadContexts::default(), deferred: Deferred::default(), ready: Vec::new() })
    }

    /// Aggregates a sample from the ring buffer, or keeps it until its stack copy can be
    /// unwound.
    pub fn sample(&mut self, s: Sample, agg: &mut Aggregator, tracker: &mut ProcessTracker) {
        match &self.tables {
            Some(t) if s.stack_copy.is_some() => {
                // A process seen first through such a sample is read now, so it gets tables.
                tracker.observe(s.tgid);
                self.deferred.admit(s, t, &mut self.ready)
            }
            _ => agg.add(&s, tracker),
        }
        for s in self.ready.drain(..) {
            agg.add(&s, tracker);
        }
    }

    /// Aggregates the waiting samples that the tables installed since can unwind, and those that
    /// waited long enough or whose process exited (`all`: every one, before a report or at the
    /// end).
    pub fn settle(&mut self, agg: &mut Aggregator, tracker: &mut ProcessTracker, all: bool) {
        if let Some(t) = &self.tables {
            if !self.deferred.is_empty() {
                self.deferred.retry(t, &[], all, &mut self.ready);
            }
        }
        for s in self.ready.drain(..) {
            agg.add(&s, tracker);
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
            t.poll(tracer);
            t.collect_idle();
        }
    }

    /// At the end: installs what was read last and waits (up to `max`) for the tables still
    /// compiling, so the samples waiting for them unwind with them.
    pub fn finish(&mut self, tracker: &mut ProcessTracker, tracer: &mut Tracer, max: std::time::Duration) {
        self.sync(tracker, tracer);
        if let Some(t) = self.tables.as_mut() {
            t.wait_compiled(tracer, max);
        }
    }

    /// The process called execve: its waiting samples were taken in the old program and are
    /// unwound with the old program's tables, before the new ones replace them.
    pub fn exec(&mut self, pid: u32) {
        if let Some(t) = self.tables.as_ref() {
            if !self.deferred.is_empty() {
                self.deferred.retry(t, &[pid], false, &mut self.ready);
            }
        }
    }

    /// Forgets a process that exited. Its waiting samples are unwound with its tables first.
    pub fn exited(&mut self, pid: u32, tracer: &mut Tracer) {
        if let Some(t) = self.tables.as_mut() {
            if !self.deferred.is_empty() {
                self.deferred.retry(t, &[pid], false, &mut self.ready);
            }
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
