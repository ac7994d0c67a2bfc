//! One sampling session: the tracer, the ring-buffer reader, the process tracker, the kernel
//! view and the open interval's aggregator, driven in one order. `otelprof record` and the
//! agent's `profiling` receiver both run one; they differ only in when they close an interval
//! and what they do with it.
//!
//! The caller's loop is:
//!
//! ```text
//! Session::new → observe(pid)… → start()
//! loop {
//!     read().await            // a batch of records: samples, execs, exits, new-code reports
//!     every 250 ms: tick()    // records that do not wake the reader; contexts; tables
//!     every interval: close_interval() → report it → after_report()
//! }
//! finish() → close_interval()
//! ```
//!
//! While it runs, the rate and the targets can change without reloading anything (the agent's
//! remote config): [`Session::set_frequency`] cuts the open interval at the change, so no
//! sample is reported with a rate it was not taken at; [`Session::set_targets`] adds and removes
//! targets in the kernel's map, as far as the programs' load-time settings allow
//! ([`Session::can_retarget`]).
//!
//! Why this order (it used to live only in commit messages):
//! - **Install before forgetting the exited** ([`Session::settle_exits`]): a process that
//!   exited in this batch may still have stack copies waiting for its tables; its tables are
//!   installed (if they were compiling) and the copies unwound before its state is dropped.
//! - **Contexts before a report** ([`Session::close_interval`]): a report's resources are its
//!   processes' latest published contexts, so contexts due are read first, then tables synced
//!   and every waiting stack copy settled (`settle(all)`), and only then is the interval cut.
//! - **Reap and evict after the report** ([`Session::after_report`]): the report's snapshot
//!   holds what it needs; only then may exited processes' tables and old processes' mappings go.
//! - **A 250 ms tick**: off-CPU records and plain samples do not wake the reader each (BPF wakes
//!   it only when 256 KiB are unread), so the tick drains them; it also reads contexts a new
//!   process publishes within about its 200 ms back-off floor.

use std::{path::PathBuf, time::Duration};

use profiler_common::target as flags;

use crate::{
    aggregate::{Aggregator, Clock},
    kernel_view::KernelView,
    process::{ProcessSnapshot, ProcessTracker},
    reader::{Event, Reader},
    targets::{Selector, Targets},
    thinning::Thinning,
    tracer::{Tracer, TracerConfig, TracerError},
    unwind::open_cache,
};

/// Why a session could not start or read on.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Tracer(#[from] TracerError),
    #[error("watching the ring buffer: {0}")]
    Reader(#[source] std::io::Error),
}

/// What a session needs besides the tracer's settings.
pub struct SessionConfig {
    pub tracer: TracerConfig,
    /// Compiled unwind tables (`--unwind auto|dwarf`).
    pub tables: bool,
    /// Their on-disk cache: a directory and its bound in MiB. Opened once the programs
    /// loaded, so a missing privilege is the one error a user sees.
    pub cache: Option<(PathBuf, u64)>,
    /// Weight of an off-CPU record: 1 / the recording probability.
    pub off_cpu_threshold: f64,
    /// Processes followed from their exec when they match (the agent's executable, container
    /// and cgroup targets); `None` follows nothing new.
    pub follow: Option<Selector>,
    /// Files whose tables are compiled before sampling starts (the command `record` starts,
    /// the system libraries).
    pub preload: Vec<PathBuf>,
}

/// One closed interval and the process state its report needs.
pub struct Interval {
    pub agg: Aggregator,
    pub processes: ProcessSnapshot,
    /// Unix nanoseconds of the window's start, and its length.
    pub start_unix_ns: u64,
    pub duration_ns: u64,
}

/// The sampling stages of one recording or one agent, in one place.
pub struct Session {
    pub tracer: Tracer,
    reader: Reader,
    pub tracker: ProcessTracker,
    pub view: KernelView,
    /// The open interval.
    pub agg: Aggregator,
    pub clock: Clock,
    window_start: u64,
    follow: Option<Selector>,
    off_cpu_threshold: f64,
    /// Exits seen since the last read or tick, for callers that wait for their targets.
    exits: Vec<u32>,
    /// Exits whose state is dropped once their tables settled.
    exited: Vec<u32>,
    new_execs: Vec<u32>,
    /// A burst for some processes: the others' samples thinned to the configured rate.
    thinning: Option<Thinning>,
    /// Samples dropped by thinnings that ended.
    thinned_before: u64,
}

impl Session {
    /// Loads and attaches the programs (not sampling yet, except with a tracer that samples
    /// the whole system from the start) and prepares the stages.
    pub fn new(cfg: SessionConfig) -> Result<Self, SessionError> {
        let clock = Clock::new();
        let window_start = clock.now_unix_ns();
        let mut tracer = Tracer::load(&cfg.tracer)?;
        let reader = Reader::new(tracer.take_events()?).map_err(SessionError::Reader)?;
        let cache = cfg.cache.filter(|_| cfg.tables).and_then(|(dir, mib)| open_cache(&dir, mib));
        let mut view = KernelView::new(&tracer, cfg.tables, cache)?;
        if let Some(store) = view.tables.as_mut() {
            if !cfg.preload.is_empty() {
                store.preload(&cfg.preload, &mut tracer);
            }
        }
        Ok(Self {
            tracer,
            reader,
            tracker: ProcessTracker::default(),
            view,
            agg: Aggregator::new(clock),
            clock,
            window_start,
            follow: cfg.follow,
            off_cpu_threshold: cfg.off_cpu_threshold,
            exits: Vec::new(),
            exited: Vec::new(),
            new_execs: Vec::new(),
            thinning: None,
            thinned_before: 0,
        })
    }

    /// Samples `pid` (with `flags`) and reads it now, so its tables and context readers are in
    /// place before its first sample.
    pub fn observe(&mut self, pid: u32, target_flags: u8) -> Result<(), SessionError> {
        self.tracer.add_target(pid, target_flags)?;
        if target_flags & flags::SAMPLE != 0 {
            self.tracker.observe(pid);
        }
        Ok(())
    }

    /// Installs what the observed targets need, then attaches the sampler: which is why
    /// sampling starts only now.
    pub fn start(&mut self) -> Result<(), SessionError> {
        self.view.sync(&mut self.tracker, &mut self.tracer);
        self.tracer.start_sampling()?;
        Ok(())
    }

    /// Samples at `hz` per CPU from now on, without a pause. The open interval is cut first
    /// (what the kernel wrote drained, then closed as [`Session::close_interval`] does) and
    /// handed to `report`, so its samples are reported with the rate they were taken at; only
    /// those the kernel writes between the cut and the change (one ioctl per CPU) count to the
    /// next. On an error the rate is unchanged (the interval was cut all the same).
    pub fn set_frequency(&mut self, hz: u64, report: impl FnOnce(Interval)) -> Result<(), SessionError> {
        self.drain();
        if let Some(done) = self.close_interval() {
            report(done);
        }
        self.tracer.set_frequency(hz)?;
        Ok(())
    }

    /// Whether [`Session::set_targets`] can apply `targets`: the programs filter by the target
    /// map exactly when there are targets, and report every exec when the targets select new
    /// processes by name, container or cgroup. Both are load-time settings (see
    /// [`crate::tracer`]), so going from every process to a list or back, or from PIDs only to
    /// selecting by name, needs a new session.
    pub fn can_retarget(&self, targets: &Targets) -> bool {
        self.tracer.filters_targets() != targets.is_empty()
            && (!targets.needs_exec_events() || self.tracer.reports_all_execs())
    }

    /// Replaces the targets while sampling (check [`Session::can_retarget`] first; without a
    /// filter this only changes what is followed). Processes the new targets select now are
    /// added as at start (their tables and context readers installed before their samples are
    /// unwound), and followed from their exec on; ids in the map that are no longer selected
    /// (nor children or threads of a selected process) are taken out. Returns how many were
    /// added and removed. A process that could not be added (the map is full) is logged and
    /// skipped, as a new target met at its exec is.
    pub fn set_targets(&mut self, targets: Targets) -> (usize, usize) {
        let selector = Selector::new(targets);
        let mut added = 0;
        if self.tracer.filters_targets() {
            let before: std::collections::HashSet<u32> = self.tracer.target_ids().into_iter().collect();
            for pid in selector.initial() {
                match self.observe(pid, flags::SAMPLE | flags::FOLLOW) {
                    Ok(()) => added += usize::from(!before.contains(&pid)),
                    Err(e) => tracing::warn!(pid, "new target not added: {e}"),
                }
            }
        }
        let removed =
            if self.tracer.filters_targets() { selector.dropped(&self.tracer.target_ids()) } else { Vec::new() };
        for &id in &removed {
            self.tracer.remove_target(id);
        }
        self.view.sync(&mut self.tracker, &mut self.tracer);
        self.follow = selector.targets().needs_exec_events().then_some(selector);
        (added, removed.len())
    }

    /// Unix nanoseconds when the open interval started (before the programs attached, for the
    /// first).
    pub fn window_start(&self) -> u64 {
        self.window_start
    }

    /// Processes that exited since the last `read` or `tick`.
    pub fn exits(&self) -> &[u32] {
        &self.exits
    }

    /// Waits for the next batch of records and handles it.
    pub async fn read(&mut self) -> Result<(), SessionError> {
        self.exits.clear();
        let Self { reader, agg, tracker, view, exits, exited, new_execs, off_cpu_threshold, thinning, .. } = self;
        reader
            .read_batch(|ev| handle(ev, agg, tracker, view, exits, exited, new_execs, *off_cpu_threshold, thinning))
            .await
            .map_err(SessionError::Reader)?;
        self.follow_new()?;
        self.view.sync(&mut self.tracker, &mut self.tracer);
        self.settle_exits();
        Ok(())
    }

    /// The 250 ms housekeeping: records that did not wake the reader, contexts that are due,
    /// tables that arrived.
    pub fn tick(&mut self) -> Result<(), SessionError> {
        self.exits.clear();
        self.drain();
        self.follow_new()?;
        self.tracker.poll_contexts();
        self.view.sync(&mut self.tracker, &mut self.tracer);
        self.settle_exits();
        Ok(())
    }

    /// Everything the kernel wrote so far, without waiting.
    fn drain(&mut self) {
        let Self { reader, agg, tracker, view, exits, exited, new_execs, off_cpu_threshold, thinning, .. } = self;
        reader.drain_now(|ev| handle(ev, agg, tracker, view, exits, exited, new_execs, *off_cpu_threshold, thinning));
    }

    /// Starts following new processes that match the targets.
    fn follow_new(&mut self) -> Result<(), SessionError> {
        let execs = std::mem::take(&mut self.new_execs);
        if let Some(selector) = &self.follow {
            for pid in execs {
                if selector.matches(pid) {
                    tracing::debug!(pid, "new target");
                    self.tracer.add_target(pid, flags::SAMPLE | flags::FOLLOW)?;
                    // Read at once, not at its first sample: its unwind tables are installed
                    // and its context polled from the program's start.
                    self.tracker.observe(pid);
                }
            }
        }
        Ok(())
    }

    /// Install before forgetting the exited: their stack copies are unwound with what they
    /// had (and nothing is installed for a process already gone).
    fn settle_exits(&mut self) {
        for pid in self.exited.drain(..) {
            self.view.exited(pid, &mut self.tracer);
        }
        self.view.settle(&mut self.agg, &mut self.tracker, false);
    }

    /// Closes the open interval (see the module docs for the order) and opens the next;
    /// `None` when it had no samples.
    pub fn close_interval(&mut self) -> Option<Interval> {
        self.tracker.poll_contexts_before_report();
        self.view.sync(&mut self.tracker, &mut self.tracer);
        self.view.settle(&mut self.agg, &mut self.tracker, true);
        let done = std::mem::replace(&mut self.agg, Aggregator::new(self.clock));
        let now = self.clock.now_unix_ns();
        let (start_unix_ns, duration_ns) = done.window(self.window_start, now);
        self.window_start = now;
        (!done.is_empty()).then(|| Interval {
            processes: self.tracker.snapshot(done.pids(), done.file_ids()),
            agg: done,
            start_unix_ns,
            duration_ns,
        })
    }

    /// After an interval was reported: exited processes' tables go, and the least recently
    /// sampled processes beyond `max_processes`; returns the files no process maps any more
    /// (their cached symbols can go).
    pub fn after_report(&mut self, max_processes: usize) -> Vec<symbolizer::FileKey> {
        self.view.reap(&mut self.tracer);
        self.tracker.evict(max_processes)
    }

    /// The end: everything the kernel wrote before, tables still compiling for at most `wait`
    /// (the stack copies waiting for them are unwound with them), every copy settled.
    pub fn finish(&mut self, wait: Duration) {
        self.drain();
        self.view.finish(&mut self.tracker, &mut self.tracer, wait);
        self.view.settle(&mut self.agg, &mut self.tracker, true);
    }

    /// Thins the samples of processes outside a burst (`None`: keeps every sample); what the
    /// kernel wrote before is read first, under the thinning in force then.
    pub fn set_thinning(&mut self, thinning: Option<Thinning>) {
        self.drain();
        if let Some(old) = std::mem::replace(&mut self.thinning, thinning) {
            self.thinned_before += old.dropped;
        }
    }

    /// Samples dropped by thinning so far (counted, never hidden).
    pub fn thinned(&self) -> u64 {
        self.thinned_before + self.thinning.as_ref().map_or(0, |t| t.dropped)
    }

    /// Records the kernel sent that this build cannot decode.
    pub fn bad_records(&self) -> u64 {
        self.reader.bad_records()
    }
}

/// One record into the stages.
#[allow(clippy::too_many_arguments)]
fn handle(
    ev: Event,
    agg: &mut Aggregator,
    tracker: &mut ProcessTracker,
    view: &mut KernelView,
    exits: &mut Vec<u32>,
    exited: &mut Vec<u32>,
    new_execs: &mut Vec<u32>,
    off_cpu_threshold: f64,
    thinning: &mut Option<Thinning>,
) {
    match ev {
        Event::Sample(s) => {
            if thinning.as_mut().is_none_or(|t| t.admit(s.tgid)) {
                view.sample(s, agg, tracker)
            }
        }
        Event::Exec { tgid, .. } => {
            view.exec(tgid);
            // A process not sampled yet is read at its first sample: one that never is costs
            // nothing (docs/design/0006-agent-cost.md).
            if tracker.knows(tgid) {
                tracker.exec(tgid);
            }
            new_execs.push(tgid);
        }
        Event::Exit { tgid } => {
            tracker.exited(tgid);
            exits.push(tgid);
            exited.push(tgid);
        }
        Event::UnknownPc { tgid, .. } => tracker.request_refresh(tgid),
        Event::OffCpu { sample, off_cpu_ns } => agg.add_off_cpu(&sample, off_cpu_ns, off_cpu_threshold, tracker),
    }
}
