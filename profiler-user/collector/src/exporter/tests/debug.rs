//! `debug`: what it writes to the log, captured from a real `tracing` subscriber.

use std::sync::{Arc, Mutex};

use super::support::*;
use crate::{exporter::debug::DebugFactory, signal::Signal};

/// Everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Runs `body` on a current-thread runtime with a subscriber writing into the returned text
/// (the exporter's senders run on this thread, so they log into it).
fn logged(body: impl std::future::Future<Output = ()>) -> String {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(body);
    out.text()
}

#[test]
fn basic_writes_one_line_per_request_with_its_counts() {
    let text = logged(async {
        let host = host();
        let traces = build(&DebugFactory, "debug", "sampling_initial: 10", Signal::Traces, &host);
        let metrics = build(&DebugFactory, "debug", "sampling_initial: 10", Signal::Metrics, &host);
        traces.consume(data(Signal::Traces, 3)).unwrap();
        metrics.consume(data(Signal::Metrics, 2)).unwrap();
        traces.shutdown(in_secs(5)).await;
        metrics.shutdown(in_secs(5)).await;
    });
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains(" INFO ") && lines[0].contains("exporter=debug"), "{text}");
    assert!(lines[0].contains(r#"TracesExporter {"resource spans": 1, "spans": 3}"#), "{text}");
    assert!(lines[1].contains(r#"MetricsExporter {"resource metrics": 1, "metrics": 1, "data points": 2}"#), "{text}");
}

#[test]
fn normal_adds_a_line_per_item_and_sampling_drops_the_excess() {
    let text = logged(async {
        let host = host();
        let yaml =
            "{verbosity: normal, sampling_initial: 1, sampling_thereafter: 0, sending_queue: {num_consumers: 1}}";
        let logs = build(&DebugFactory, "debug/n", yaml, Signal::Logs, &host);
        logs.consume(data(Signal::Logs, 2)).unwrap();
        logs.consume(data(Signal::Logs, 5)).unwrap();
        logs.shutdown(in_secs(5)).await;
        assert_eq!(metric(&host, "otelcol_exporter_sent_log_records_total{exporter=\"debug/n\"}"), Some(7));
    });
    assert_eq!(text.matches("LogsExporter").count(), 1, "the second request was sampled out: {text}");
    assert!(text.contains(r#"LogsExporter {"resource logs": 1, "log records": 2}"#), "{text}");
    assert!(text.contains("\npaid order 0\npaid order 1"), "{text}");
}
