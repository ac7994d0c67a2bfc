//! Own metrics: every component registers its counters here at build time and updates plain
//! atomics afterwards; `/metrics` renders them as Prometheus text next to the profiler's.
//!
//! Names are the OpenTelemetry Collector's (`otelcol_receiver_accepted_spans`, …) with the
//! `_total` suffix its Prometheus endpoint gives counters, and its labels (`receiver`,
//! `transport`, `exporter`, `processor`, `data_type`), so existing Collector dashboards and
//! alerts work unchanged.

use std::{
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use crate::signal::Signal;

/// A value that only grows, or a gauge, shared between a component and `/metrics`.
pub type Value = Arc<AtomicU64>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

struct Entry {
    name: String,
    help: &'static str,
    kind: Kind,
    labels: Vec<(String, String)>,
    value: Value,
}

/// The registry of own metrics.
#[derive(Default)]
pub struct Telemetry {
    entries: Mutex<Vec<Entry>>,
}

impl Telemetry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn register(&self, kind: Kind, name: &str, help: &'static str, labels: &[(&str, &str)]) -> Value {
        let labels: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let Ok(mut entries) = self.entries.lock() else { return Value::default() };
        // The same series registered twice (one exporter in two pipelines) is one value.
        if let Some(e) = entries.iter().find(|e| e.name == name && e.labels == labels) {
            return e.value.clone();
        }
        let value = Value::default();
        entries.push(Entry { name: name.to_string(), help, kind, labels, value: value.clone() });
        value
    }

    /// A counter; the `_total` suffix is added when rendered.
    pub fn counter(&self, name: &str, help: &'static str, labels: &[(&str, &str)]) -> Value {
        self.register(Kind::Counter, name, help, labels)
    }

    pub fn gauge(&self, name: &str, help: &'static str, labels: &[(&str, &str)]) -> Value {
        self.register(Kind::Gauge, name, help, labels)
    }

    /// The counters of a receiver for one signal and transport (`grpc`, `http`, `bpf`).
    pub fn receiver(&self, id: &str, transport: &str, signal: Signal) -> ReceiverMetrics {
        let labels = [("receiver", id), ("transport", transport)];
        let items = signal.items();
        ReceiverMetrics {
            accepted: self.counter(
                &format!("otelcol_receiver_accepted_{items}"),
                "Items successfully pushed into the pipeline.",
                &labels,
            ),
            refused: self.counter(
                &format!("otelcol_receiver_refused_{items}"),
                "Items that could not be pushed into the pipeline.",
                &labels,
            ),
        }
    }

    /// The counters of a processor for one signal.
    pub fn processor(&self, id: &str, signal: Signal) -> ProcessorMetrics {
        let labels = [("processor", id), ("otel_signal", signal.name())];
        ProcessorMetrics {
            incoming: self.counter("otelcol_processor_incoming_items", "Items passed to the processor.", &labels),
            outgoing: self.counter("otelcol_processor_outgoing_items", "Items emitted by the processor.", &labels),
        }
    }

    /// The counters and queue gauges of an exporter for one signal.
    pub fn exporter(&self, id: &str, signal: Signal) -> ExporterMetrics {
        let labels = [("exporter", id)];
        let queue_labels = [("exporter", id), ("data_type", signal.name())];
        let items = signal.items();
        ExporterMetrics {
            sent: self.counter(
                &format!("otelcol_exporter_sent_{items}"),
                "Items successfully sent to the destination.",
                &labels,
            ),
            send_failed: self.counter(
                &format!("otelcol_exporter_send_failed_{items}"),
                "Items the exporter failed to send (after retries) and dropped.",
                &labels,
            ),
            enqueue_failed: self.counter(
                &format!("otelcol_exporter_enqueue_failed_{items}"),
                "Items dropped because the sending queue was full.",
                &labels,
            ),
            queue_size: self.gauge("otelcol_exporter_queue_size", "Current size of the sending queue.", &queue_labels),
            queue_capacity: self.gauge(
                "otelcol_exporter_queue_capacity",
                "Fixed capacity of the sending queue, in its sizer's unit.",
                &queue_labels,
            ),
        }
    }

    /// One log line: totals of every series whose name contains each of a few key words,
    /// e.g. `accepted 1200, refused 0, sent 1200, send_failed 0, enqueue_failed 0`.
    pub fn summary(&self) -> String {
        let Ok(entries) = self.entries.lock() else { return String::new() };
        let words = [
            ("receiver_accepted", "accepted"),
            ("receiver_refused", "refused"),
            ("exporter_sent", "sent"),
            ("exporter_send_failed", "send failed"),
            ("exporter_enqueue_failed", "dropped (queue full)"),
        ];
        let parts: Vec<String> = words
            .iter()
            .map(|(key, label)| {
                let n: u64 =
                    entries.iter().filter(|e| e.name.contains(key)).map(|e| e.value.load(Ordering::Relaxed)).sum();
                format!("{n} {label}")
            })
            .collect();
        format!("items {}", parts.join(", "))
    }

    /// Prometheus text exposition of every registered metric.
    pub fn render(&self, out: &mut String) {
        let Ok(entries) = self.entries.lock() else { return };
        let mut order: Vec<&Entry> = entries.iter().collect();
        order.sort_by(|a, b| a.name.cmp(&b.name));
        let mut last = "";
        for e in order {
            let name = match e.kind {
                Kind::Counter => format!("{}_total", e.name),
                Kind::Gauge => e.name.clone(),
            };
            if e.name != last {
                let kind = if e.kind == Kind::Counter { "counter" } else { "gauge" };
                let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", e.help);
                last = &e.name;
            }
            let labels: Vec<String> = e
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            let _ = writeln!(out, "{name}{{{}}} {}", labels.join(","), e.value.load(Ordering::Relaxed));
        }
    }
}

/// `otelcol_receiver_*` for one receiver, transport and signal.
#[derive(Clone)]
pub struct ReceiverMetrics {
    pub accepted: Value,
    pub refused: Value,
}

/// `otelcol_processor_*` for one processor and signal.
#[derive(Clone)]
pub struct ProcessorMetrics {
    pub incoming: Value,
    pub outgoing: Value,
}

/// `otelcol_exporter_*` for one exporter and signal.
#[derive(Clone)]
pub struct ExporterMetrics {
    pub sent: Value,
    pub send_failed: Value,
    pub enqueue_failed: Value,
    pub queue_size: Value,
    pub queue_capacity: Value,
}

/// Adds `n` to a counter.
pub fn add(v: &Value, n: u64) {
    v.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_collector_names_once_per_series() {
        let t = Telemetry::default();
        let m = t.receiver("otlp", "grpc", Signal::Traces);
        add(&m.accepted, 5);
        let again = t.receiver("otlp", "grpc", Signal::Traces);
        add(&again.accepted, 1);
        let mut out = String::new();
        t.render(&mut out);
        assert!(
            out.contains("otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"grpc\"} 6\n"),
            "{out}"
        );
        assert_eq!(out.matches("# TYPE otelcol_receiver_accepted_spans_total counter").count(), 1);
    }
}
