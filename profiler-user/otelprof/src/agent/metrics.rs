//! The agent's own counters: logged periodically and served as Prometheus text on `/metrics`,
//! next to `/healthz` (every registered component is alive, see [`otelprof_collector::health`]) and `/readyz`
//! (programs attached, and healthy) for Kubernetes probes.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use otelprof_sampler::{aggregate::Aggregator, ratelimit::RateLimit};

use crate::send::ExportStats;

use otelprof_collector::health::Health;

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
    pub fn publish(&self, open: &Aggregator, m: &AgentMetrics) {
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
pub struct AgentMetrics {
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
    pub exporters: Vec<(String, Arc<ExportStats>)>,
}

impl AgentMetrics {
    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let mut out = String::new();
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
        let per = |f: fn(&ExportStats) -> &AtomicU64| {
            self.exporters.iter().map(|(n, s)| (format!("{{exporter=\"{n}\"}}"), g(f(s)))).collect::<Vec<_>>()
        };
        metric("export_success_total", "counter", "Export requests the backend accepted.", per(|s| &s.exported));
        metric("export_failure_total", "counter", "Export requests that failed for good.", per(|s| &s.failed));
        metric("export_retries_total", "counter", "Retried export attempts.", per(|s| &s.retries));
        metric(
            "export_rejected_profiles_total",
            "counter",
            "Profiles the backend rejected in a partial success.",
            per(|s| &s.rejected_profiles),
        );
        metric(
            "export_dropped_total",
            "counter",
            "Queued requests dropped to stay within the queue's bytes.",
            per(|s| &s.dropped_batches),
        );
        metric("export_dropped_bytes_total", "counter", "Bytes of queued requests dropped.", per(|s| &s.dropped_bytes));
        metric("export_queue_bytes", "gauge", "Bytes of requests waiting to be sent.", per(|s| &s.queue_bytes));
        out
    }

    /// One log line with the essentials.
    pub fn log_line(&self) -> String {
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let exp: Vec<String> = self
            .exporters
            .iter()
            .map(|(n, s)| {
                format!(
                    "{n}: {} ok, {} failed, {} dropped, {} B queued",
                    g(&s.exported),
                    g(&s.failed),
                    g(&s.dropped_batches),
                    g(&s.queue_bytes)
                )
            })
            .collect();
        format!(
            "{} samples, {} lost, {} processes, {} reports; {}",
            g(&self.samples),
            g(&self.lost_samples),
            g(&self.processes),
            g(&self.reports),
            exp.join("; ")
        )
    }
}

/// How long the metrics server waits after a failed `accept` (10 ms, doubling up to 1 s, back
/// to 10 ms after a success). A failing accept (EMFILE: out of file descriptors) fails again at
/// once, and retrying at once would spin a CPU; the pending connection stays queued meanwhile.
#[derive(Debug, Clone)]
pub struct AcceptBackoff {
    next: Duration,
}

impl AcceptBackoff {
    const MIN: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    pub fn new() -> Self {
        Self { next: Self::MIN }
    }

    /// The wait after one more failure in a row.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }

    /// An accept succeeded: the next failure waits the shortest again.
    pub fn succeeded(&mut self) {
        self.next = Self::MIN;
    }
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self::new()
    }
}

/// The answer to a probe: status line and body.
fn probe(path: &str, metrics: &AgentMetrics, health: &Health) -> (&'static str, String) {
    let unhealthy = |problems: Vec<otelprof_collector::health::Problem>| {
        let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        ("503 Service Unavailable", format!("unhealthy: {}\n", list.join("; ")))
    };
    match (path, health.check()) {
        ("/healthz", Ok(())) => ("200 OK", "ok\n".into()),
        ("/healthz", Err(problems)) => unhealthy(problems),
        ("/readyz", Err(problems)) => unhealthy(problems),
        ("/readyz", Ok(())) if metrics.ready.load(Ordering::Relaxed) => ("200 OK", "ready\n".into()),
        _ => ("503 Service Unavailable", "not ready\n".into()),
    }
}

/// Serves `/metrics`, `/healthz`, `/readyz` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<AgentMetrics>, health: Health) {
    let mut backoff = AcceptBackoff::new();
    let mut log_limit = RateLimit::new(Duration::from_secs(60));
    loop {
        let mut conn = match listener.accept().await {
            Ok((conn, _)) => {
                backoff.succeeded();
                conn
            }
            Err(e) => {
                let wait = backoff.failed();
                if let Some(held_back) = log_limit.allow() {
                    tracing::warn!(
                        "metrics endpoint: accepting a connection failed: {e}; retrying in {wait:?} \
                         ({held_back} more failures since the last report)"
                    );
                }
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            // Read the whole request head: closing a socket with unread bytes resets the
            // connection, and the client would lose the answer.
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            }
            let req = String::from_utf8_lossy(&buf);
            let path = req.split_whitespace().nth(1).unwrap_or("");
            let (status, body, ctype) = match path {
                "/metrics" => ("200 OK", metrics.render(), "text/plain; version=0.0.4"),
                "/healthz" | "/readyz" => {
                    let (status, body) = probe(path, &metrics, &health);
                    (status, body, "text/plain")
                }
                _ => ("404 Not Found", "not found\n".into(), "text/plain"),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
        });
    }
}

/// Binds the metrics listener (an error here is a config error the user must see at start).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text() {
        let stats = Arc::new(ExportStats::default());
        stats.exported.store(3, Ordering::Relaxed);
        let m = AgentMetrics { exporters: vec![("otlp/a".into(), stats)], ..Default::default() };
        m.samples.store(42, Ordering::Relaxed);
        m.perf_map_lines[1].store(2, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("otelprof_perf_map_lines_total{result=\"malformed\"} 2\n"), "{text}");
        assert!(text.contains("# TYPE otelprof_samples_total counter\notelprof_samples_total 42\n"), "{text}");
        assert!(text.contains("otelprof_export_success_total{exporter=\"otlp/a\"} 3\n"), "{text}");
        assert!(text.lines().all(|l| l.starts_with('#') || l.starts_with("otelprof_")));
        m.bad_records.store(2, Ordering::Relaxed);
        assert!(m.render().contains("otelprof_bad_records_total 2\n"));
    }

    #[test]
    fn probes_follow_every_component() {
        use otelprof_collector::health::Liveness;
        let m = AgentMetrics::default();
        let health = Health::new();
        let _sampling = health.register("sampling", Liveness::Heartbeat { within: Duration::from_secs(30) });
        let reporter = health.register("reporter", Liveness::Running);
        assert_eq!(probe("/healthz", &m, &health).0, "200 OK");
        assert_eq!(probe("/readyz", &m, &health).0, "503 Service Unavailable", "not attached yet");
        m.ready.store(true, Ordering::Relaxed);
        assert_eq!(probe("/readyz", &m, &health).0, "200 OK");
        reporter.fail("panicked: boom");
        for path in ["/healthz", "/readyz"] {
            let (status, body) = probe(path, &m, &health);
            assert_eq!((status, body.as_str()), ("503 Service Unavailable", "unhealthy: reporter: panicked: boom\n"));
        }
    }

    #[test]
    fn accept_backoff_doubles_to_a_second_and_resets() {
        let mut b = AcceptBackoff::new();
        let waits: Vec<u64> = (0..9).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(10));
        assert_eq!(b.failed(), Duration::from_millis(20));
    }

    #[test]
    fn tallies_keep_counting_across_intervals() {
        use otelprof_sampler::aggregate::Clock;
        let m = AgentMetrics::default();
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
        let text = m.render();
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
