//! CPU time per process from the profiler's own samples (issue #16's per-target signal): each
//! closed interval adds `samples × period` to its processes' totals and its wall time to the
//! covered time, so the anomaly receiver can take two readings and divide.
//!
//! Counted where every interval is handed to the reporting thread (a rate change cuts the
//! interval first, so each interval has one period). Bounded: a process that has not been
//! sampled for [`FORGET_AFTER`] intervals is forgotten, and at most [`MAX_PROCESSES`] are kept
//! (the longest unsampled go first).

use std::{collections::HashMap, sync::Mutex};

use otelprof_collector::component::{CpuByTarget, TargetCpu};
use otelprof_sampler::session::Interval;

const FORGET_AFTER: u64 = 60;
const MAX_PROCESSES: usize = 4096;

#[derive(Default)]
struct Inner {
    covered_ns: u64,
    intervals: u64,
    /// Per pid: the process and the interval it was last sampled in.
    by_pid: HashMap<u32, (TargetCpu, u64)>,
}

/// The totals, shared by the sampling loop (writes) and the receiver's control (reads).
#[derive(Default)]
pub struct CpuByProcess {
    inner: Mutex<Inner>,
}

impl CpuByProcess {
    /// Adds a closed interval, each process's samples taken at `hz_of(pid)`.
    pub fn record(&self, i: &Interval, hz_of: impl Fn(u32) -> u64) {
        let mut per_pid: HashMap<u32, u64> = HashMap::new();
        for (k, v) in &i.agg.samples {
            *per_pid.entry(k.pid).or_default() += v.count;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.intervals += 1;
        inner.covered_ns += i.duration_ns;
        let now = inner.intervals;
        for (pid, samples) in per_pid {
            let entry = inner.by_pid.entry(pid).or_insert_with(|| {
                let info = i.processes.info(pid);
                let service = info
                    .and_then(|p| p.otel_attributes.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone()));
                let target = TargetCpu {
                    pid,
                    name: info.map(|p| p.comm.clone()).unwrap_or_default(),
                    service,
                    container: info.and_then(|p| p.container_id.clone()),
                    cpu_ns: 0,
                };
                (target, now)
            });
            entry.0.cpu_ns += samples * (1_000_000_000 / hz_of(pid).max(1));
            entry.1 = now;
        }
        inner.by_pid.retain(|_, (_, last)| now - *last < FORGET_AFTER);
        if inner.by_pid.len() > MAX_PROCESSES {
            let mut last: Vec<(u64, u32)> = inner.by_pid.iter().map(|(pid, (_, l))| (*l, *pid)).collect();
            last.sort_unstable();
            let excess = inner.by_pid.len() - MAX_PROCESSES;
            for (_, pid) in last.into_iter().take(excess) {
                inner.by_pid.remove(&pid);
            }
        }
    }

    pub fn snapshot(&self) -> CpuByTarget {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        CpuByTarget { covered_ns: inner.covered_ns, targets: inner.by_pid.values().map(|(t, _)| t.clone()).collect() }
    }
}
