//! The four signals and the data that flows between components: an OTLP export request, as
//! received and as sent, so nothing is converted on the way through.

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        profiles::v1development::ExportProfilesServiceRequest, trace::v1::ExportTraceServiceRequest,
    },
    metrics::v1::metric::Data as MetricData,
};
use prost::Message;

/// A signal, the type of a pipeline (`service.pipelines.traces/name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
    Profiles,
}

impl Signal {
    pub const ALL: [Signal; 4] = [Signal::Traces, Signal::Metrics, Signal::Logs, Signal::Profiles];

    /// As in a pipeline id.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
            Signal::Profiles => "profiles",
        }
    }

    /// The unit of the Collector's item counters (`otelcol_receiver_accepted_spans`, …).
    pub fn items(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "metric_points",
            Signal::Logs => "log_records",
            Signal::Profiles => "profile_samples",
        }
    }

    /// Parses a pipeline id's type (`traces`, `metrics/app`).
    pub fn parse(s: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|x| x.name() == s)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One unit of data between components: an OTLP export request of one signal.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
    Profiles(ExportProfilesServiceRequest),
}

impl Data {
    pub fn signal(&self) -> Signal {
        match self {
            Data::Traces(_) => Signal::Traces,
            Data::Metrics(_) => Signal::Metrics,
            Data::Logs(_) => Signal::Logs,
            Data::Profiles(_) => Signal::Profiles,
        }
    }

    /// Items in the Collector's sense: spans, metric data points, log records, profile samples.
    pub fn items(&self) -> u64 {
        match self {
            Data::Traces(r) => r.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len() as u64).sum(),
            Data::Metrics(r) => r
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .map(|m| metric_points(m.data.as_ref()))
                .sum(),
            Data::Logs(r) => {
                r.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len() as u64).sum()
            }
            Data::Profiles(r) => r
                .resource_profiles
                .iter()
                .flat_map(|r| &r.scope_profiles)
                .flat_map(|s| &s.profiles)
                .map(|p| p.samples.len() as u64)
                .sum(),
        }
    }

    /// Protobuf-encoded size: what byte-sized queues and limits count.
    pub fn encoded_len(&self) -> usize {
        match self {
            Data::Traces(r) => r.encoded_len(),
            Data::Metrics(r) => r.encoded_len(),
            Data::Logs(r) => r.encoded_len(),
            Data::Profiles(r) => r.encoded_len(),
        }
    }

    /// The request as protobuf bytes.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        match self {
            Data::Traces(r) => r.encode_to_vec(),
            Data::Metrics(r) => r.encode_to_vec(),
            Data::Logs(r) => r.encode_to_vec(),
            Data::Profiles(r) => r.encode_to_vec(),
        }
    }

    /// Decodes a protobuf request of `signal`.
    pub fn decode(signal: Signal, bytes: &[u8]) -> Result<Data, prost::DecodeError> {
        Ok(match signal {
            Signal::Traces => Data::Traces(ExportTraceServiceRequest::decode(bytes)?),
            Signal::Metrics => Data::Metrics(ExportMetricsServiceRequest::decode(bytes)?),
            Signal::Logs => Data::Logs(ExportLogsServiceRequest::decode(bytes)?),
            Signal::Profiles => Data::Profiles(ExportProfilesServiceRequest::decode(bytes)?),
        })
    }

    /// An empty request of `signal`.
    pub fn empty(signal: Signal) -> Data {
        match signal {
            Signal::Traces => Data::Traces(Default::default()),
            Signal::Metrics => Data::Metrics(Default::default()),
            Signal::Logs => Data::Logs(Default::default()),
            Signal::Profiles => Data::Profiles(Default::default()),
        }
    }

    /// No resources at all (nothing to send).
    pub fn is_empty(&self) -> bool {
        match self {
            Data::Traces(r) => r.resource_spans.is_empty(),
            Data::Metrics(r) => r.resource_metrics.is_empty(),
            Data::Logs(r) => r.resource_logs.is_empty(),
            Data::Profiles(r) => r.resource_profiles.is_empty(),
        }
    }
}

/// Data points of one metric.
fn metric_points(data: Option<&MetricData>) -> u64 {
    match data {
        Some(MetricData::Gauge(g)) => g.data_points.len() as u64,
        Some(MetricData::Sum(s)) => s.data_points.len() as u64,
        Some(MetricData::Histogram(h)) => h.data_points.len() as u64,
        Some(MetricData::ExponentialHistogram(h)) => h.data_points.len() as u64,
        Some(MetricData::Summary(s)) => s.data_points.len() as u64,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;

    #[test]
    fn counts_spans_across_resources_and_scopes() {
        let scope = |n| ScopeSpans { spans: vec![Span::default(); n], ..Default::default() };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans { scope_spans: vec![scope(2), scope(3)], ..Default::default() },
                ResourceSpans { scope_spans: vec![scope(4)], ..Default::default() },
            ],
        };
        let d = Data::Traces(req);
        assert_eq!(d.items(), 9);
        assert_eq!(Data::decode(Signal::Traces, &d.encode_to_vec()).unwrap(), d);
        assert_eq!(Signal::parse("logs"), Some(Signal::Logs));
        assert_eq!(Signal::parse("log"), None);
    }
}
