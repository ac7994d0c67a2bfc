//! `debug`: writes what reaches it to the log, as the Collector's debug exporter does, to see
//! what a pipeline carries without a backend.
//!
//! - `basic`: one line per request with its counts, in the Collector's words
//!   (`TracesExporter {"resource spans": 1, "spans": 2}`).
//! - `normal`: that line, then one line per span, metric data point, log record or profile
//!   sample.
//! - `detailed`: that line, then the whole request as pretty-printed OTLP/JSON.
//!
//! Through `tracing` at info, sampled per second as the Collector's logger samples
//! (`sampling_initial` entries, then every `sampling_thereafter`-th); with
//! `use_internal_logger: false`, to stdout, unsampled.

use std::{
    fmt::Write as _,
    io::Write as _,
    sync::{Arc, Mutex},
    time::Instant,
};

use async_trait::async_trait;
use opentelemetry_proto::tonic::{
    common::v1::{any_value::Value as AnyValue, AnyValue as Any, KeyValue},
    metrics::v1::{metric::Data as MetricData, number_data_point::Value as Number},
};
use serde::Deserialize;

use super::{
    config::{QueueConfig, RetryConfig},
    queued::QueuedExporter,
    transport::{Request, SendError, Sent, Transport},
};
use crate::{
    component::{BuildExporter, ComponentError, ComponentId, Exporter, ExporterFactory, Host},
    config::{deserialize_at, ConfigError},
    signal::{Data, Signal},
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    #[default]
    Basic,
    Normal,
    Detailed,
}

/// `exporters.debug`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    pub verbosity: Verbosity,
    pub sampling_initial: u64,
    pub sampling_thereafter: u64,
    pub use_internal_logger: bool,
    pub sending_queue: QueueConfig,
}

impl Default for DebugConfig {
    fn default() -> Self {
        Self {
            verbosity: Verbosity::Basic,
            sampling_initial: 2,
            sampling_thereafter: 1,
            use_internal_logger: true,
            sending_queue: QueueConfig::default(),
        }
    }
}

/// The Collector's log sampling: in each second, the first `initial` entries, then every
/// `thereafter`-th (0: none).
struct Sampler {
    initial: u64,
    thereafter: u64,
    window: Mutex<(Instant, u64)>,
}

impl Sampler {
    fn admit(&self, now: Instant) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(w.0).as_secs() >= 1 {
            *w = (now, 0);
        }
        let n = w.1;
        w.1 += 1;
        n < self.initial || (self.thereafter > 0 && (n - self.initial).is_multiple_of(self.thereafter))
    }
}

struct DebugWriter {
    id: String,
    verbosity: Verbosity,
    /// `None`: stdout, unsampled.
    sampler: Option<Sampler>,
}

#[async_trait]
impl Transport for DebugWriter {
    async fn send(&self, request: &Request) -> Result<Sent, SendError> {
        let data = request.as_data()?;
        if let Some(s) = &self.sampler {
            if !s.admit(Instant::now()) {
                return Ok(Sent::default());
            }
        }
        let mut text = basic_line(data);
        match self.verbosity {
            Verbosity::Basic => {}
            Verbosity::Normal => item_lines(data, &mut text),
            Verbosity::Detailed => {
                let value = match data {
                    Data::Traces(r) => serde_json::to_value(r),
                    Data::Metrics(r) => serde_json::to_value(r),
                    Data::Logs(r) => serde_json::to_value(r),
                    Data::Profiles(r) => serde_json::to_value(r),
                };
                let pretty = value.and_then(|v| serde_json::to_string_pretty(&v));
                let _ = write!(text, "\n{}", pretty.unwrap_or_else(|e| format!("(not encodable as OTLP/JSON: {e})")));
            }
        }
        if self.sampler.is_some() {
            tracing::info!(exporter = %self.id, "{text}");
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
        }
        Ok(Sent::default())
    }
}

/// The Collector's basic line.
pub fn basic_line(data: &Data) -> String {
    match data {
        Data::Traces(r) => {
            format!("TracesExporter {{\"resource spans\": {}, \"spans\": {}}}", r.resource_spans.len(), data.items())
        }
        Data::Metrics(r) => {
            let metrics: usize =
                r.resource_metrics.iter().flat_map(|r| &r.scope_metrics).map(|s| s.metrics.len()).sum();
            format!(
                "MetricsExporter {{\"resource metrics\": {}, \"metrics\": {metrics}, \"data points\": {}}}",
                r.resource_metrics.len(),
                data.items()
            )
        }
        Data::Logs(r) => {
            format!("LogsExporter {{\"resource logs\": {}, \"log records\": {}}}", r.resource_logs.len(), data.items())
        }
        Data::Profiles(r) => {
            let profiles: usize =
                r.resource_profiles.iter().flat_map(|r| &r.scope_profiles).map(|s| s.profiles.len()).sum();
            format!(
                "ProfilesExporter {{\"resource profiles\": {}, \"profiles\": {profiles}, \"samples\": {}}}",
                r.resource_profiles.len(),
                data.items()
            )
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn any(v: Option<&Any>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> String {
    kvs.iter().map(|kv| format!(" {}={}", kv.key, any(kv.value.as_ref()))).collect()
}

/// One line per item, after the basic line.
fn item_lines(data: &Data, out: &mut String) {
    match data {
        Data::Traces(r) => {
            for s in r.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
                let _ = write!(out, "\n{} {} {}{}", s.name, hex(&s.trace_id), hex(&s.span_id), attrs(&s.attributes));
            }
        }
        Data::Metrics(r) => {
            for m in r.resource_metrics.iter().flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics) {
                let number = |v: &Option<Number>| match v {
                    Some(Number::AsDouble(d)) => d.to_string(),
                    Some(Number::AsInt(i)) => i.to_string(),
                    None => String::new(),
                };
                match &m.data {
                    Some(MetricData::Gauge(g)) => g.data_points.iter().for_each(|p| {
                        let _ = write!(out, "\n{}{} {}", m.name, attrs(&p.attributes), number(&p.value));
                    }),
                    Some(MetricData::Sum(s)) => s.data_points.iter().for_each(|p| {
                        let _ = write!(out, "\n{}{} {}", m.name, attrs(&p.attributes), number(&p.value));
                    }),
                    Some(MetricData::Histogram(h)) => h.data_points.iter().for_each(|p| {
                        let _ = write!(
                            out,
                            "\n{}{} count={} sum={}",
                            m.name,
                            attrs(&p.attributes),
                            p.count,
                            p.sum.unwrap_or(0.0)
                        );
                    }),
                    Some(MetricData::ExponentialHistogram(h)) => h.data_points.iter().for_each(|p| {
                        let _ = write!(
                            out,
                            "\n{}{} count={} sum={}",
                            m.name,
                            attrs(&p.attributes),
                            p.count,
                            p.sum.unwrap_or(0.0)
                        );
                    }),
                    Some(MetricData::Summary(s)) => s.data_points.iter().for_each(|p| {
                        let _ = write!(out, "\n{}{} count={} sum={}", m.name, attrs(&p.attributes), p.count, p.sum);
                    }),
                    None => {}
                }
            }
        }
        Data::Logs(r) => {
            for l in r.resource_logs.iter().flat_map(|r| &r.scope_logs).flat_map(|s| &s.log_records) {
                let _ = write!(out, "\n{}{}", any(l.body.as_ref()), attrs(&l.attributes));
            }
        }
        Data::Profiles(r) => {
            for p in r.resource_profiles.iter().flat_map(|r| &r.scope_profiles).flat_map(|s| &s.profiles) {
                for s in &p.samples {
                    let _ = write!(out, "\n{} stack={} values={:?}", hex(&p.profile_id), s.stack_index, s.values);
                }
            }
        }
    }
}

/// Makes `debug` exporters.
pub struct DebugFactory;

impl ExporterFactory for DebugFactory {
    fn kind(&self) -> &'static str {
        "debug"
    }

    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn create(
        &self,
        id: &ComponentId,
        config: serde_yaml::Value,
        path: &str,
    ) -> Result<Box<dyn BuildExporter>, ConfigError> {
        let cfg: DebugConfig = deserialize_at(path, config)?;
        cfg.sending_queue.validate(&format!("{path}.sending_queue"))?;
        Ok(Box::new(BuildDebug { id: id.clone(), cfg }))
    }
}

struct BuildDebug {
    id: ComponentId,
    cfg: DebugConfig,
}

impl BuildExporter for BuildDebug {
    fn build(&self, signal: Signal, host: &Host) -> Result<Arc<dyn Exporter>, ComponentError> {
        let sampler = self.cfg.use_internal_logger.then(|| Sampler {
            initial: self.cfg.sampling_initial,
            thereafter: self.cfg.sampling_thereafter,
            window: Mutex::new((Instant::now(), 0)),
        });
        let writer = Arc::new(DebugWriter { id: self.id.to_string(), verbosity: self.cfg.verbosity, sampler });
        // Writing to the log does not fail: nothing to retry.
        let retry = RetryConfig { enabled: false, ..Default::default() };
        Ok(QueuedExporter::start(&self.id, signal, writer, &self.cfg.sending_queue, &retry, host))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn samples_as_the_collectors_logger() {
        let s = Sampler { initial: 2, thereafter: 3, window: Mutex::new((Instant::now(), 0)) };
        let now = Instant::now();
        let admitted: Vec<bool> = (0..8).map(|_| s.admit(now)).collect();
        assert_eq!(admitted, [true, true, true, false, false, true, false, false]);
        assert!(s.admit(now + Duration::from_secs(1)), "a new second starts over");
    }
}
