//! The agent's own counters: logged periodically and served as Prometheus text on `/metrics`,
//! next to `/healthz` (the sampling loop is alive) and `/readyz` (programs attached) for
//! Kubernetes probes.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{aggregate::Aggregator, export::send::ExportStats};

/// How each user stack's unwind ended, by `profiler_common::unwind_status` value: the label of
/// `otelprof_unwind_stacks_total`.
const UNWIND_RESULTS: [&str; 7] =
    ["frame_pointers", "complete", "truncated", "fp_fallback", "read_fault", "no_user_regs", "no_tables"];

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
    pub ready: AtomicBool,
    /// Unix seconds of the sampling loop's last turn.
    pub heartbeat: AtomicU64,
    pub exporters: Vec<(String, Arc<ExportStats>)>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl AgentMetrics {
    pub fn beat(&self) {
        self.heartbeat.store(now_secs(), Ordering::Relaxed);
    }

    /// Alive: the loop turned within `within`.
    pub fn healthy(&self, within: Duration) -> bool {
        now_secs().saturating_sub(self.heartbeat.load(Ordering::Relaxed)) <= within.as_secs().max(1)
    }

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

/// Serves `/metrics`, `/healthz`, `/readyz` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<AgentMetrics>, health_window: Duration) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else { continue };
        let metrics = metrics.clone();
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
                "/healthz" if metrics.healthy(health_window) => ("200 OK", "ok\n".into(), "text/plain"),
                "/healthz" => ("503 Service Unavailable", "sampling loop stalled\n".into(), "text/plain"),
                "/readyz" if metrics.ready.load(Ordering::Relaxed) => ("200 OK", "ready\n".into(), "text/plain"),
                "/readyz" => ("503 Service Unavailable", "not ready\n".into(), "text/plain"),
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
        let text = m.render();
        assert!(text.contains("# TYPE otelprof_samples_total counter\notelprof_samples_total 42\n"), "{text}");
        assert!(text.contains("otelprof_export_success_total{exporter=\"otlp/a\"} 3\n"), "{text}");
        assert!(text.lines().all(|l| l.starts_with('#') || l.starts_with("otelprof_")));
        assert!(!m.healthy(Duration::from_secs(5)), "no heartbeat yet");
        m.beat();
        assert!(m.healthy(Duration::from_secs(5)));
    }

    #[test]
    fn tallies_keep_counting_across_intervals() {
        use crate::aggregate::Clock;
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
        t.publish(&open, &m);
        let text = m.render();
        assert!(text.contains("otelprof_samples_total 15\n"), "{text}");
        assert!(text.contains("otelprof_samples_linked_total 5\n"), "{text}");
        assert!(text.contains("otelprof_off_cpu_waits_total 3\n"), "{text}");
        assert!(text.contains("otelprof_off_cpu_lost_total{reason=\"wait_map_full\"} 0\n"), "{text}");
        assert!(text.contains("otelprof_unwind_stacks_total{result=\"complete\"} 14\n"), "{text}");
        assert!(text.contains("otelprof_unwind_stacks_total{result=\"read_fault\"} 1\n"), "{text}");
        assert!(text.contains("otelprof_unwind_stacks_total{result=\"no_tables\"} 0\n"), "{text}");
    }
}
