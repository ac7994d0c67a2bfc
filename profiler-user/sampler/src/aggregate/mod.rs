//! Aggregation: identical stacks of one thread are counted once, with every sample's timestamp
//! kept (OTLP carries them per sample).
//!
//! Two profile types share the frames, stacks and mappings (so they are symbolized once and an
//! OTLP request has one dictionary): CPU samples ([`Aggregator::samples`]) and off-CPU waits
//! ([`Aggregator::off_cpu`], whose values are nanoseconds off CPU; see [`ProfileType`]).
//!
//! Addresses are normalized here, while the process still exists: a user address becomes a
//! [`Frame::User`] (mapping + file offset) through the [`ProcessTracker`]. Return addresses (every
//! frame but the leaf) are moved back by one byte so that they point into the call instruction;
//! symbolizing them then names the calling line, not the line after the call.

mod intern;

use std::{collections::HashMap, sync::Arc};

pub use intern::Interner;

use crate::{
    context::ThreadLink,
    process::{Mapping, Normalized, ProcessTracker},
    reader::Sample,
};

pub type FrameId = u32;
pub type StackId = u32;
pub type MappingId = u32;
pub type LinkId = u32;
/// Index of a JIT code name in [`Aggregator::jit_names`].
pub type JitNameId = u32;

/// One stack frame, normalized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Frame {
    /// A kernel address.
    Kernel { addr: u64 },
    /// A user address inside a file mapping.
    User { mapping: MappingId, addr: u64, file_offset: u64 },
    /// A user address in the vDSO, `offset` bytes into it (the same image in every process).
    Vdso { offset: u64 },
    /// JIT code (anonymous executable memory, or a range the process's perf map names), with
    /// the perf map's name for the code there when the sample was taken.
    Jit { addr: u64, name: Option<JitNameId> },
    /// A user address in no known mapping (a process that vanished, a bad frame pointer).
    Unmapped { addr: u64 },
}

/// A mapping of one process, as exporters need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcMapping {
    pub pid: u32,
    pub mapping: Mapping,
}

/// What identifies an aggregated sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleKey {
    pub pid: u32,
    pub tid: u32,
    /// CPU the samples were taken on (OTLP's `cpu.logical_number`).
    pub cpu: u32,
    pub stack: StackId,
    /// The span the thread was serving and its context attributes (OTEP 4947), if any.
    pub link: Option<LinkId>,
}

/// The profile types otelprof records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ProfileType {
    /// CPU samples (`samples/count`, period `cpu/nanoseconds`).
    #[default]
    Cpu,
    /// Off-CPU waits (`off_cpu/nanoseconds`): each value is the time a thread spent off CPU,
    /// divided by the off-CPU threshold (the probability a wait was recorded), so totals
    /// estimate the real time off CPU when only a share of the switches is recorded.
    OffCpu,
}

/// Count and timestamps of one [`SampleKey`].
#[derive(Clone, Debug, Default)]
pub struct SampleValue {
    pub count: u64,
    /// Unix nanoseconds of every sample, in arrival order (off-CPU: when the wait began).
    pub timestamps_ns: Vec<u64>,
    /// The value of each timestamp's event: empty for CPU samples (1 each), weighted
    /// nanoseconds off CPU for off-CPU waits.
    pub values: Vec<u64>,
}

impl SampleValue {
    /// Sum of the values: the sample count for CPU samples, nanoseconds for off-CPU waits.
    pub fn total(&self) -> u64 {
        if self.values.is_empty() {
            self.count
        } else {
            self.values.iter().sum()
        }
    }
}

/// Converts `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) to Unix time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Clock {
    pub fn new() -> Self {
        Self { offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC) }
    }

    pub fn to_unix_ns(self, ktime_ns: u64) -> u64 {
        (ktime_ns as i128 + self.offset_ns).max(0) as u64
    }

    pub fn now_unix_ns(self) -> u64 {
        self.to_unix_ns(clock_ns(libc::CLOCK_MONOTONIC) as u64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// All samples of a recording, deduplicated.
#[derive(Default)]
pub struct Aggregator {
    pub frames: Interner<Frame>,
    /// Stacks leaf first: kernel frames, then user frames.
    pub stacks: Interner<Box<[FrameId]>>,
    pub mappings: Interner<ProcMapping>,
    /// Thread contexts of the samples.
    pub links: Interner<ThreadLink>,
    /// Names of JIT code from perf maps (V8 writes the same name for every recompilation).
    pub jit_names: Interner<Arc<str>>,
    pub samples: HashMap<SampleKey, SampleValue>,
    /// Off-CPU waits (profile type [`ProfileType::OffCpu`]).
    pub off_cpu: HashMap<SampleKey, SampleValue>,
    /// Off-CPU waits added, and their weighted nanoseconds.
    pub off_cpu_waits: u64,
    pub off_cpu_ns: u64,
    /// Latest name of every thread (tid -> comm).
    pub thread_names: HashMap<u32, String>,
    /// Total samples added.
    pub total: u64,
    /// Samples whose user stack could not be read (bpf_get_stack error).
    pub user_stack_errors: u64,
    /// Samples per `unwind_status` value (index), for the unwind summary.
    pub unwind_status: [u64; 8],
    /// Samples per `ctx_status` value (index); `linked` of them named a span.
    pub ctx_status: [u64; 8],
    pub linked: u64,
    /// Unix nanoseconds of the earliest and latest sample (0 when empty).
    pub first_ns: u64,
    pub last_ns: u64,
    clock: Clock,
    scratch: Vec<FrameId>,
}

impl Aggregator {
    pub fn new(clock: Clock) -> Self {
        Self { clock, ..Default::default() }
    }

    /// Adds one sample, normalizing its user frames against `tracker`.
    pub fn add(&mut self, s: &Sample, tracker: &mut ProcessTracker) {
        let stack = self.stack(s, tracker);
        // Attribute names are resolved at export time from the latest process context: a key
        // appended later is published with a new `published_at_ns`, which the tracker's context
        // poll notices, so no per-sample check is needed here.
        let link = s.link.as_ref().map(|l| {
            if l.has_span() {
                self.linked += 1;
            }
            self.links.intern_ref(l)
        });
        let ts = self.clock.to_unix_ns(s.ktime_ns);
        self.note_time(ts);
        let v = self.samples.entry(SampleKey { pid: s.tgid, tid: s.tid, cpu: s.cpu, stack, link }).or_default();
        v.count += 1;
        v.timestamps_ns.push(ts);
        if s.user_err != 0 {
            self.user_stack_errors += 1;
        }
        self.unwind_status[(s.user_unwind as usize).min(7)] += 1;
        self.ctx_status[(s.ctx_status as usize).min(7)] += 1;
        self.total += 1;
    }

    /// Adds one off-CPU wait of `off_cpu_ns`, recorded with probability `threshold` (0 < t <= 1):
    /// its value is `off_cpu_ns / threshold`. `s` holds the thread's stacks and the time it was
    /// switched out.
    pub fn add_off_cpu(&mut self, s: &Sample, off_cpu_ns: u64, threshold: f64, tracker: &mut ProcessTracker) {
        let stack = self.stack(s, tracker);
        let ts = self.clock.to_unix_ns(s.ktime_ns);
        self.note_time(ts);
        let value = if threshold > 0.0 && threshold < 1.0 {
            (off_cpu_ns as f64 / threshold).round() as u64
        } else {
            off_cpu_ns
        };
        let v = self.off_cpu.entry(SampleKey { pid: s.tgid, tid: s.tid, cpu: s.cpu, stack, link: None }).or_default();
        v.count += 1;
        v.timestamps_ns.push(ts);
        v.values.push(value);
        self.off_cpu_waits += 1;
        self.off_cpu_ns += value;
    }

    /// The samples of one profile type.
    pub fn profile(&self, profile: ProfileType) -> &HashMap<SampleKey, SampleValue> {
        match profile {
            ProfileType::Cpu => &self.samples,
            ProfileType::OffCpu => &self.off_cpu,
        }
    }

    /// True when neither CPU samples nor off-CPU waits were added.
    pub fn is_empty(&self) -> bool {
        self.total == 0 && self.off_cpu_waits == 0
    }

    /// Interns the sample's stack (kernel frames, then user frames, leaf first) and notes its
    /// thread's name.
    fn stack(&mut self, s: &Sample, tracker: &mut ProcessTracker) -> StackId {
        tracker.observe(s.tgid);
        let mut frames = std::mem::take(&mut self.scratch);
        frames.clear();
        for (i, &addr) in s.kernel.iter().enumerate() {
            let addr = if i == 0 { addr } else { addr.saturating_sub(1) };
            frames.push(self.frames.intern(Frame::Kernel { addr }));
        }
        // A sample taken in the kernel has the user address the task returns to: a return address.
        let exact_user_leaf = s.kernel.is_empty();
        for (i, &raw) in s.user.iter().enumerate() {
            let addr = if i == 0 && exact_user_leaf { raw } else { raw.saturating_sub(1) };
            let frame = match tracker.normalize(s.tgid, addr) {
                Some(Normalized::File { mapping, file_offset }) => Frame::User {
                    mapping: self.mappings.intern(ProcMapping { pid: s.tgid, mapping }),
                    addr,
                    file_offset,
                },
                Some(Normalized::Vdso { offset }) => Frame::Vdso { offset },
                Some(Normalized::Jit { name }) => Frame::Jit { addr, name: name.map(|n| self.jit_names.intern(n)) },
                None => Frame::Unmapped { addr },
            };
            frames.push(self.frames.intern(frame));
        }
        let stack = self.stacks.intern(frames.as_slice().into());
        self.scratch = frames;
        if self.thread_names.get(&s.tid).map(String::as_str) != Some(s.comm.as_str()) {
            self.thread_names.insert(s.tid, s.comm.clone());
        }
        stack
    }

    fn note_time(&mut self, ts: u64) {
        self.first_ns = if self.is_empty() { ts } else { self.first_ns.min(ts) };
        self.last_ns = self.last_ns.max(ts);
    }

    /// Files the report's mappings refer to.
    pub fn file_ids(&self) -> std::collections::BTreeSet<crate::process::files::FileId> {
        self.mappings.iter().map(|(_, m)| m.mapping.file).collect()
    }

    /// The time window `[start, end)` widened to cover every sample: (start, duration).
    pub fn window(&self, start_ns: u64, end_ns: u64) -> (u64, u64) {
        let (start, end) = if self.is_empty() {
            (start_ns, end_ns)
        } else {
            (start_ns.min(self.first_ns), end_ns.max(self.last_ns + 1))
        };
        (start, end.saturating_sub(start))
    }

    /// Distinct processes with samples or off-CPU waits.
    pub fn pids(&self) -> std::collections::BTreeSet<u32> {
        self.samples.keys().chain(self.off_cpu.keys()).map(|k| k.pid).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_identical_stacks_once_and_adjusts_return_addresses() {
        let me = std::process::id();
        let code = counts_identical_stacks_once_and_adjusts_return_addresses as *const () as u64;
        let mut tracker = ProcessTracker::default();
        let mut agg = Aggregator::default();
        for _ in 0..3 {
            agg.add(&Sample::with_stacks(me, me, vec![], vec![code, code + 8]), &mut tracker);
        }
        agg.add(
            &Sample::with_stacks(me, me + 1, vec![0xffff_ffff_8100_0000, 0xffff_ffff_8100_0100], vec![code]),
            &mut tracker,
        );
        assert_eq!(agg.total, 4);
        assert_eq!(agg.samples.len(), 2);
        let (k, v) = agg.samples.iter().find(|(k, _)| k.tid == me).unwrap();
        assert_eq!(v.count, 3);
        assert_eq!(v.timestamps_ns.len(), 3);
        let stack = agg.stacks.get(k.stack);
        let addrs: Vec<u64> = stack
            .iter()
            .map(|&f| match agg.frames.get(f) {
                Frame::User { addr, .. } => *addr,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(addrs, [code, code + 7], "leaf exact, caller moved into the call");
        let (k2, _) = agg.samples.iter().find(|(k, _)| k.tid == me + 1).unwrap();
        let kinds: Vec<Frame> = agg.stacks.get(k2.stack).iter().map(|&f| *agg.frames.get(f)).collect();
        assert_eq!(kinds[0], Frame::Kernel { addr: 0xffff_ffff_8100_0000 });
        assert_eq!(kinds[1], Frame::Kernel { addr: 0xffff_ffff_8100_00ff });
        assert!(
            matches!(kinds[2], Frame::User { addr, .. } if addr == code - 1),
            "user ip under a kernel frame is a return address"
        );
    }
}
