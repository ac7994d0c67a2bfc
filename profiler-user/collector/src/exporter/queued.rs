//! The one exporter loop every exporter type runs (the Collector's `exporterhelper`):
//! `consume` only offers the data to the [sending queue](super::queue) and answers at once;
//! `num_consumers` sender tasks take requests off it and hand them to the exporter's
//! [`Transport`] with [retries](super::retry). Each request ends counted exactly once:
//! `otelcol_exporter_sent_*`, `otelcol_exporter_send_failed_*` (permanent error, retries
//! exhausted, cut off at shutdown) or `otelcol_exporter_enqueue_failed_*` (never queued).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::{
    config::{QueueConfig, RetryConfig},
    queue::{OfferError, Queue},
    retry::send_with_retry,
    transport::Transport,
};
use crate::{
    component::{ComponentId, Exporter, Host},
    consumer::{ConsumeError, Consumer},
    health::{panic_message, HealthHandle, Liveness},
    signal::{Data, Signal},
    telemetry::{add, ExporterMetrics, Value},
};

/// True for the first few events and then every 100th: warnings on paths a dead backend
/// makes hot stay readable.
fn worth_logging(count: &AtomicU64) -> bool {
    let n = count.fetch_add(1, Ordering::Relaxed);
    n < 5 || n.is_multiple_of(100)
}

/// What the sender tasks share.
struct Shared {
    id: String,
    signal: Signal,
    queue: Arc<Queue>,
    transport: Arc<dyn Transport>,
    retry: RetryConfig,
    metrics: ExporterMetrics,
    retries: Value,
    /// Set when the shutdown deadline passed: senders drop what they hold.
    cut_off: CancellationToken,
    failures_logged: AtomicU64,
}

/// A queued exporter of one signal.
pub struct QueuedExporter {
    shared: Arc<Shared>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    health: HealthHandle,
    refusals_logged: AtomicU64,
}

/// Counts a request as failed unless it was settled, so a sender cut off at shutdown or
/// unwinding from a panic still accounts for what it held.
struct InFlight<'a> {
    items: u64,
    failed: &'a Value,
    settled: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.settled {
            add(self.failed, self.items);
        }
    }
}

impl QueuedExporter {
    /// Registers the metrics and health of exporter `id` for `signal` and spawns its senders
    /// (so it must run inside the runtime).
    pub fn start(
        id: &ComponentId,
        signal: Signal,
        transport: Arc<dyn Transport>,
        queue: &QueueConfig,
        retry: &RetryConfig,
        host: &Host,
    ) -> Arc<Self> {
        let name = id.to_string();
        let metrics = host.telemetry.exporter(&name, signal);
        let retries = host.telemetry.counter(
            "otelprof_exporter_retries",
            "Send attempts that failed retryably and were tried again.",
            &[("exporter", &name), ("data_type", signal.name())],
        );
        let (sizer, capacity) = queue.bound();
        let q = Queue::new(sizer, capacity, metrics.queue_size.clone(), &metrics.queue_capacity);
        let shared = Arc::new(Shared {
            id: name.clone(),
            signal,
            queue: q,
            transport,
            retry: retry.clone(),
            metrics,
            retries,
            cut_off: CancellationToken::new(),
            failures_logged: AtomicU64::new(0),
        });
        let health = host.health.register(format!("exporter/{name}/{signal}"), Liveness::Running);
        let mut senders = JoinSet::new();
        for _ in 0..queue.num_consumers {
            senders.spawn(send_loop(shared.clone()));
        }
        let supervisor = tokio::spawn(supervise(senders, health.clone()));
        Arc::new(Self { shared, supervisor: Mutex::new(Some(supervisor)), health, refusals_logged: AtomicU64::new(0) })
    }
}

/// Waits for the senders; a panic marks the exporter failed at once (the other senders go on).
async fn supervise(mut senders: JoinSet<()>, health: HealthHandle) {
    while let Some(ended) = senders.join_next().await {
        if let Err(e) = ended {
            if e.is_panic() {
                health.fail(format!("a sender panicked: {}", panic_message(&*e.into_panic())));
            }
        }
    }
}

async fn send_loop(s: Arc<Shared>) {
    loop {
        let lease = tokio::select! {
            biased;
            _ = s.cut_off.cancelled() => return,
            lease = s.queue.pop() => match lease {
                Some(l) => l,
                None => return,
            },
        };
        let items = lease.request.items;
        let mut held = InFlight { items, failed: &s.metrics.send_failed, settled: false };
        let on_retry = |message: &str, wait: Duration| {
            add(&s.retries, 1);
            tracing::debug!(exporter = %s.id, signal = %s.signal, "export failed ({message}); retrying in {wait:?}");
        };
        let result = tokio::select! {
            biased;
            // `held` counts the request as failed when it is dropped below.
            _ = s.cut_off.cancelled() => return,
            r = send_with_retry(&*s.transport, &lease.request, &s.retry, on_retry) => r,
        };
        held.settled = true;
        match result {
            Ok(out) => {
                add(&s.metrics.sent, items);
                if (out.rejected > 0 || !out.message.is_empty()) && worth_logging(&s.failures_logged) {
                    tracing::warn!(
                        exporter = %s.id, signal = %s.signal, rejected = out.rejected,
                        "the backend accepted the export only in part: {}", out.message
                    );
                }
            }
            Err(e) => {
                add(&s.metrics.send_failed, items);
                if worth_logging(&s.failures_logged) {
                    tracing::warn!(exporter = %s.id, signal = %s.signal, "export failed, dropped {items} {}: {e}", s.signal.items());
                }
            }
        }
    }
}

/// An exporter dropped without a shutdown (a pipeline that failed to start) lets its senders
/// finish what is queued and end.
impl Drop for QueuedExporter {
    fn drop(&mut self) {
        self.shared.queue.close();
    }
}

impl Consumer for QueuedExporter {
    fn consume(&self, data: Data) -> Result<(), ConsumeError> {
        if data.is_empty() {
            return Ok(());
        }
        let s = &self.shared;
        let items = data.items();
        let request = match s.transport.prepare(data) {
            Ok(r) => r,
            Err(e) => {
                // The data cannot be encoded for this backend: retrying it cannot help.
                add(&s.metrics.send_failed, items);
                return Err(ConsumeError::Rejected(format!("exporter {}: {e}", s.id)));
            }
        };
        match s.queue.offer(request) {
            Ok(()) => Ok(()),
            Err(e) => {
                add(&s.metrics.enqueue_failed, items);
                if !matches!(e, OfferError::Closed) && worth_logging(&self.refusals_logged) {
                    tracing::warn!(exporter = %s.id, signal = %s.signal, "refused {items} {}: {e}", s.signal.items());
                }
                Err(ConsumeError::refused(format!("exporter {}: {e}", s.id)))
            }
        }
    }
}

#[async_trait]
impl Exporter for QueuedExporter {
    async fn shutdown(&self, deadline: tokio::time::Instant) {
        let s = &self.shared;
        s.queue.close();
        let supervisor = self.supervisor.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut supervisor) = supervisor else { return };
        if tokio::time::timeout_at(deadline, &mut supervisor).await.is_err() {
            s.cut_off.cancel();
            let _ = supervisor.await;
        }
        // Left when the deadline cut the senders off, or when every sender panicked.
        let rest = s.queue.drain();
        if !rest.is_empty() || s.cut_off.is_cancelled() {
            let items: u64 = rest.iter().map(|r| r.items).sum();
            add(&s.metrics.send_failed, items);
            tracing::warn!(
                exporter = %s.id, signal = %s.signal,
                "shutdown: dropped {} queued requests ({items} {}) and any being sent",
                rest.len(), s.signal.items()
            );
        }
        debug_assert_eq!(s.queue.size(), 0, "every lease ended with its sender");
        s.transport.shutdown().await;
        self.health.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use opentelemetry_proto::tonic::{
        collector::logs::v1::ExportLogsServiceRequest,
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    };

    use super::*;
    use crate::exporter::{
        tests::support::wait_until,
        transport::{Request, SendError, Sent},
    };

    fn logs(n: usize) -> Data {
        Data::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs { log_records: vec![LogRecord::default(); n], ..Default::default() }],
                ..Default::default()
            }],
        })
    }

    /// Holds every request until released; panics on a request of 13 items.
    #[derive(Default)]
    struct Gate {
        open: AtomicBool,
        opened: tokio::sync::Notify,
        got: Mutex<Vec<u64>>,
    }

    #[async_trait]
    impl Transport for Gate {
        async fn send(&self, request: &Request) -> Result<Sent, SendError> {
            if request.items == 13 {
                panic!("unlucky request");
            }
            while !self.open.load(Ordering::Relaxed) {
                let n = self.opened.notified();
                if self.open.load(Ordering::Relaxed) {
                    break;
                }
                n.await;
            }
            self.got.lock().unwrap().push(request.items);
            Ok(Default::default())
        }
    }

    fn open(g: &Gate) {
        g.open.store(true, Ordering::Relaxed);
        g.opened.notify_waiters();
    }

    fn metric(host: &Host, line: &str) -> bool {
        let mut out = String::new();
        host.telemetry.render(&mut out);
        out.contains(line)
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_counts_and_shutdown_drains() {
        let host = Host::new(Duration::from_secs(5));
        let gate = Arc::new(Gate::default());
        let queue = QueueConfig { num_consumers: 1, queue_size: 2, ..Default::default() };
        let id = ComponentId::parse("test/q").unwrap();
        let e = QueuedExporter::start(&id, Signal::Logs, gate.clone(), &queue, &RetryConfig::default(), &host);
        e.consume(logs(1)).unwrap();
        e.consume(logs(2)).unwrap();
        let refused = e.consume(logs(4)).unwrap_err();
        assert!(refused.is_retryable(), "{refused}");
        assert!(metric(&host, "otelcol_exporter_enqueue_failed_log_records_total{exporter=\"test/q\"} 4\n"));
        assert!(metric(&host, "otelcol_exporter_queue_size{exporter=\"test/q\",data_type=\"logs\"} 2\n"));
        assert!(metric(&host, "otelcol_exporter_queue_capacity{exporter=\"test/q\",data_type=\"logs\"} 2\n"));
        e.consume(Data::Logs(Default::default())).unwrap();
        open(&gate);
        e.shutdown(tokio::time::Instant::now() + Duration::from_secs(5)).await;
        assert_eq!(*gate.got.lock().unwrap(), [1, 2], "drained in order, the empty request not sent");
        assert!(metric(&host, "otelcol_exporter_sent_log_records_total{exporter=\"test/q\"} 3\n"));
        assert!(metric(&host, "otelcol_exporter_queue_size{exporter=\"test/q\",data_type=\"logs\"} 0\n"));
        assert!(e.consume(logs(1)).unwrap_err().is_retryable(), "closed after shutdown");
        assert_eq!(host.health.check(), Ok(()), "stopped as asked");
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_deadline_the_rest_is_dropped_and_counted() {
        let host = Host::new(Duration::from_secs(5));
        let gate = Arc::new(Gate::default());
        let queue = QueueConfig { num_consumers: 2, queue_size: 10, ..Default::default() };
        let id = ComponentId::parse("test").unwrap();
        let e = QueuedExporter::start(&id, Signal::Logs, gate.clone(), &queue, &RetryConfig::default(), &host);
        for n in [1, 2, 3, 4] {
            e.consume(logs(n)).unwrap();
        }
        e.shutdown(tokio::time::Instant::now() + Duration::from_secs(2)).await;
        assert!(gate.got.lock().unwrap().is_empty());
        assert!(
            metric(&host, "otelcol_exporter_send_failed_log_records_total{exporter=\"test\"} 10\n"),
            "in flight and queued"
        );
        assert!(metric(&host, "otelcol_exporter_queue_size{exporter=\"test\",data_type=\"logs\"} 0\n"));
    }

    #[tokio::test]
    async fn a_panicking_sender_marks_the_exporter_failed() {
        let host = Host::new(Duration::from_secs(5));
        let gate = Arc::new(Gate::default());
        open(&gate);
        let queue = QueueConfig { num_consumers: 2, ..Default::default() };
        let id = ComponentId::parse("test").unwrap();
        let e = QueuedExporter::start(&id, Signal::Logs, gate.clone(), &queue, &RetryConfig::default(), &host);
        e.consume(logs(13)).unwrap();
        wait_until(|| host.health.check().is_err()).await;
        let problems = host.health.check().unwrap_err();
        assert_eq!(problems[0].component, "exporter/test/logs");
        assert!(problems[0].reason.contains("unlucky request"), "{problems:?}");
        e.consume(logs(1)).unwrap();
        e.shutdown(tokio::time::Instant::now() + Duration::from_secs(5)).await;
        assert_eq!(*gate.got.lock().unwrap(), [1], "the other sender goes on");
        assert!(metric(&host, "otelcol_exporter_send_failed_log_records_total{exporter=\"test\"} 13\n"));
    }
}
