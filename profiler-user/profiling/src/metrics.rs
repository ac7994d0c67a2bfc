//! The profiler's own counters (`otelprof_*`): logged periodically and served as Prometheus
//! text on the agent's `/metrics`, next to the collector's `otelcol_*`.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use otelprof_sampler::{aggregate::Aggregator, session::Session, tracer::Tracer};
use profiler_common::Counter;

/// How each user stack's unwind ended, by `profiler_common::unwind_status` value: the label of
/// `otelprof_unwind_stacks_total`.
const UNWIND_RESULTS: [&str; 8] = [
    "frame_pointers",
    "complete",
    "truncated",
    "fp_fallback",
    "read_fault",
    "no_user_regs",
    "no_tables",
    "complete_from_stack_copy",
];

/// Per-sample tallies of the intervals already reported: each interval starts a fresh
/// aggregator, and the counters must keep growing across them.
#[derive(Default)]
pub struct Tallies {
    samples: u64,
    off_cpu_waits: u64,
    linked: u64,
    unwind: [u64; 8],
}

impl Tallies {
    /// Adds an interval that is being closed.
    pub fn close(&mut self, agg: &Aggregator) {
        self.samples += agg.total;
        self.off_cpu_waits += agg.off_cpu_waits;
        self.linked += agg.linked;
        for (t, n) in self.unwind.iter_mut().zip(agg.unwind_status) {
            *t += n;
        }
    }

    /// Publishes the closed intervals plus the open one.
    pub fn publish(&self, open: &Aggregator, m: &ProfilerMetrics) {
        m.samples.store(self.samples + open.total, Ordering::Relaxed);
        m.off_cpu_waits.store(self.off_cpu_waits + open.off_cpu_waits, Ordering::Relaxed);
        m.linked_samples.store(self.linked + open.linked, Ordering::Relaxed);
        for ((slot, closed), now) in m.unwind_stacks.iter().zip(self.unwind).zip(open.unwind_status) {
            slot.store(closed + now, Ordering::Relaxed);
        }
    }
}

/// Counters and gauges of one agent.
#[derive(Default)]
pub struct ProfilerMetrics {
    pub samples: AtomicU64,
    /// Samples taken while their thread had an active span (OTEP 4947), so linked to a trace.
    pub linked_samples: AtomicU64,
    /// User stacks by how their unwind ended (`UNWIND_RESULTS`).
    pub unwind_stacks: [AtomicU64; 8],
    pub lost_samples: AtomicU64,
    pub lost_events: AtomicU64,
    /// Samples BPF sent with a copy of their user stack (no tables for it yet), and those it
    /// sent without one because the ring buffer was half full (docs/design/0005).
    pub stack_copies: [AtomicU64; 2],
    /// Off-CPU waits received (profiling.off_cpu), and those lost in BPF: ring buffer full at
    /// the switch-in, wait map full at the switch-out.
    pub off_cpu_waits: AtomicU64,
    pub off_cpu_lost: AtomicU64,
    pub off_cpu_map_full: AtomicU64,
    pub processes: AtomicU64,
    pub reports: AtomicU64,
    pub reports_dropped: AtomicU64,
    /// Bursts started (the anomaly receiver's `burst` action).
    pub bursts: AtomicU64,
    /// Samples of processes outside a burst of some, dropped to keep their configured rate.
    pub thinned: AtomicU64,
    /// The rate sampled at now: the configured one, or a burst's.
    pub samples_per_second: AtomicU64,
    /// Bytes of compiled unwind tables in the kernel.
    pub unwind_table_bytes: AtomicU64,
    /// Distinct files with a table loaded (shared by every process mapping them).
    pub unwind_table_files: AtomicU64,
    /// Processes with unwind tables installed.
    pub unwind_processes: AtomicU64,
    /// Tables released because no process used them any more.
    pub unwind_tables_released: AtomicU64,
    /// Tables by where they came from: compiled from a file's CFI, taken from the on-disk cache.
    pub unwind_tables_built: [AtomicU64; 2],
    /// Time the compile thread spent compiling, ms.
    pub unwind_compile_ms: AtomicU64,
    /// Perf map lines (JIT code names) by what became of them: entries kept, malformed lines
    /// skipped, entries dropped over a map's bound.
    pub perf_map_lines: [AtomicU64; 3],
    /// Ring-buffer records that could not be decoded (skipped).
    pub bad_records: AtomicU64,
    pub ready: AtomicBool,
}

impl ProfilerMetrics {
    /// Prometheus text exposition format 0.0.4, appended to `out`.
    pub fn render_into(&self, out: &mut String) {
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let mut metric = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP otelprof_{name} {help}\n# TYPE otelprof_{name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(out, "otelprof_{name}{labels} {v}");
            }
        };
        let one = |v: u64| vec![(String::new(), v)];
        metric("samples_total", "counter", "CPU samples received from the kernel.", one(g(&self.samples)));
        metric(
            "samples_linked_total",
            "counter",
            "Samples taken while their thread had an active span (OTEP 4947 thread context), linked to its trace.",
            one(g(&self.linked_samples)),
        );
        metric(
            "unwind_stacks_total",
            "counter",
            "User stacks by how their unwind ended.",
            UNWIND_RESULTS
                .iter()
                .zip(&self.unwind_stacks)
                .map(|(r, v)| (format!("{{result=\"{r}\"}}"), g(v)))
                .collect(),
        );
        metric(
            "lost_samples_total",
            "counter",
            "Samples dropped in BPF because the ring buffer was full.",
            one(g(&self.lost_samples)),
        );
        metric(
            "lost_events_total",
            "counter",
            "Process events dropped in BPF because the ring buffer was full.",
            one(g(&self.lost_events)),
        );
        metric(
            "stack_copies_total",
            "counter",
            "Samples whose user stack BPF could not unwind with tables: sent with a stack copy for user space \
             to unwind, or skipped (ring buffer half full; frame pointers only).",
            ["sent", "skipped"]
                .iter()
                .zip(&self.stack_copies)
                .map(|(r, v)| (format!("{{result=\"{r}\"}}"), g(v)))
                .collect(),
        );
        metric(
            "bad_records_total",
            "counter",
            "Ring-buffer records that could not be decoded and were skipped.",
            one(g(&self.bad_records)),
        );
        metric(
            "off_cpu_waits_total",
            "counter",
            "Off-CPU waits received from the kernel (profiling.off_cpu).",
            one(g(&self.off_cpu_waits)),
        );
        metric(
            "off_cpu_lost_total",
            "counter",
            "Off-CPU waits lost in BPF: the ring buffer was full, or the map of pending waits was.",
            vec![
                ("{reason=\"ring_buffer_full\"}".to_string(), g(&self.off_cpu_lost)),
                ("{reason=\"wait_map_full\"}".to_string(), g(&self.off_cpu_map_full)),
            ],
        );
        metric("processes", "gauge", "Processes whose mappings are tracked.", one(g(&self.processes)));
        metric("reports_total", "counter", "Reporting intervals turned into OTLP requests.", one(g(&self.reports)));
        metric(
            "bursts_total",
            "counter",
            "High-resolution bursts started (the anomaly receiver's burst action).",
            one(g(&self.bursts)),
        );
        metric(
            "samples_thinned_total",
            "counter",
            "Samples of processes outside a burst of some processes, dropped to keep their configured rate.",
            one(g(&self.thinned)),
        );
        metric(
            "samples_per_second",
            "gauge",
            "The sampling rate in force: the configured one, or a burst's.",
            one(g(&self.samples_per_second)),
        );
        metric(
            "reports_dropped_total",
            "counter",
            "Reports dropped because symbolization fell behind.",
            one(g(&self.reports_dropped)),
        );
        metric(
            "unwind_table_bytes",
            "gauge",
            "Bytes of compiled .eh_frame tables loaded into BPF.",
            one(g(&self.unwind_table_bytes)),
        );
        metric(
            "unwind_table_files",
            "gauge",
            "Distinct files whose unwind table is loaded.",
            one(g(&self.unwind_table_files)),
        );
        metric("unwind_processes", "gauge", "Processes with unwind tables installed.", one(g(&self.unwind_processes)));
        metric(
            "unwind_tables_released_total",
            "counter",
            "Unwind tables released because no process used them.",
            one(g(&self.unwind_tables_released)),
        );
        metric(
            "unwind_tables_built_total",
            "counter",
            "Unwind tables made ready, by source: compiled from the file's CFI, or read from the on-disk cache.",
            ["compiled", "cache"]
                .iter()
                .zip(&self.unwind_tables_built)
                .map(|(s, v)| (format!("{{source=\"{s}\"}}"), g(v)))
                .collect(),
        );
        metric(
            "unwind_compile_milliseconds_total",
            "counter",
            "Time the unwind-table thread spent compiling CFI, in milliseconds.",
            one(g(&self.unwind_compile_ms)),
        );
        metric(
            "perf_map_lines_total",
            "counter",
            "Lines of JIT perf maps (/tmp/perf-PID.map) read: entries, malformed lines skipped, entries dropped over a map's bound.",
            ["entry", "malformed", "dropped"]
                .iter()
                .zip(&self.perf_map_lines)
                .map(|(r, v)| (format!("{{result=\"{r}\"}}"), g(v)))
                .collect(),
        );
    }

    /// The whole text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out);
        out
    }

    /// One log line with the essentials.
    pub fn log_line(&self) -> String {
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        format!(
            "{} samples, {} lost, {} processes, {} reports, {} dropped",
            g(&self.samples),
            g(&self.lost_samples),
            g(&self.processes),
            g(&self.reports),
            g(&self.reports_dropped),
        )
    }

    pub fn set(&self, slot: &AtomicU64, v: u64) {
        slot.store(v, Ordering::Relaxed);
    }

    /// The unwind table store's counters.
    pub fn publish_tables(&self, session: &Session) {
        if let Some(store) = session.view.tables.as_ref() {
            let s = &store.stats;
            self.set(&self.unwind_table_bytes, s.bytes());
            self.set(&self.unwind_table_files, s.files);
            self.set(&self.unwind_processes, s.processes);
            self.set(&self.unwind_tables_released, s.released);
            self.set(&self.unwind_tables_built[0], s.compiled);
            self.set(&self.unwind_tables_built[1], s.cache_hits);
            self.set(&self.unwind_compile_ms, s.compile_ms);
        }
    }

    /// Processes tracked and perf-map lines read, after a report.
    pub fn publish_processes(&self, session: &Session) {
        self.set(&self.processes, session.tracker.len() as u64);
        let m = &session.tracker.perf_maps;
        for (slot, v) in self.perf_map_lines.iter().zip([m.entries, m.malformed, m.dropped]) {
            self.set(slot, v);
        }
    }

    /// The BPF side's counters.
    pub fn publish_counters(&self, t: &Tracer) {
        self.set(&self.lost_samples, t.counter(Counter::LostSamples));
        self.set(&self.lost_events, t.counter(Counter::LostEvents));
        self.set(&self.stack_copies[0], t.counter(Counter::StackCopies));
        self.set(&self.stack_copies[1], t.counter(Counter::CopiesSkipped));
        self.set(&self.off_cpu_lost, t.counter(Counter::OffCpuLost));
        self.set(&self.off_cpu_map_full, t.counter(Counter::OffCpuMapFull));
    }
}

/// The agent's `/metrics` renders the profiler's counters after the collector's.
impl otelprof_collector::telemetry_server::MetricsSource for ProfilerMetrics {
    fn render(&self, out: &mut String) {
        self.render_into(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text() {
        let m = ProfilerMetrics::default();
        m.samples.store(42, Ordering::Relaxed);
        m.perf_map_lines[1].store(2, Ordering::Relaxed);
        let text = m.text();
        assert!(text.contains("otelprof_perf_map_lines_total{result=\"malformed\"} 2\n"), "{text}");
        assert!(text.contains("# TYPE otelprof_samples_total counter\notelprof_samples_total 42\n"), "{text}");
        assert!(text.lines().all(|l| l.starts_with('#') || l.starts_with("otelprof_")));
        m.bad_records.store(2, Ordering::Relaxed);
        assert!(m.text().contains("otelprof_bad_records_total 2\n"));
    }

    #[test]
    fn tallies_keep_counting_across_intervals() {
        use otelprof_sampler::aggregate::Clock;
        let m = ProfilerMetrics::default();
        let mut t = Tallies::default();
        let mut agg = Aggregator::new(Clock::new());
        agg.total = 10;
        agg.off_cpu_waits = 3;
        agg.linked = 4;
        agg.unwind_status[profiler_common::unwind_status::COMPLETE as usize] = 9;
        agg.unwind_status[profiler_common::unwind_status::READ_FAULT as usize] = 1;
        t.close(&agg);
        let mut open = Aggregator::new(Clock::new());
        open.total = 5;
        open.linked = 1;
        open.unwind_status[profiler_common::unwind_status::COMPLETE as usize] = 5;
        open.unwind_status[profiler_common::unwind_status::COPY_COMPLETE as usize] = 2;
        t.publish(&open, &m);
        m.stack_copies[0].store(3, Ordering::Relaxed);
        let text = m.text();
        assert!(text.contains("otelprof_samples_total 15\n"), "{text}");
        assert!(text.contains("otelprof_samples_linked_total 5\n"), "{text}");
        assert!(text.contains("otelprof_off_cpu_waits_total 3\n"), "{text}");
        assert!(text.contains("otelprof_off_cpu_lost_total{reason=\"wait_map_full\"} 0\n"), "{text}");
        assert!(text.contains("otelprof_unwind_stacks_total{result=\"complete\"} 14\n"), "{text}");
        assert!(text.contains("otelprof_unwind_stacks_total{result=\"read_fault\"} 1\n"), "{text}");
        assert!(text.contains("otelprof_unwind_stacks_total{result=\"no_tables\"} 0\n"), "{text}");
        assert!(text.contains("otelprof_unwind_stacks_total{result=\"complete_from_stack_copy\"} 2\n"), "{text}");
        assert!(text.contains("otelprof_stack_copies_total{result=\"sent\"} 3\n"), "{text}");
        assert!(text.contains("otelprof_stack_copies_total{result=\"skipped\"} 0\n"), "{text}");
    }
}
