//! What the exporter tests share: waiting for a condition, one request of each signal.

use std::time::Duration;

/// Polls `cond` until it holds; panics after 10 s (a test that hangs teaches nothing).
pub async fn wait_until(mut cond: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < give_up, "condition not met within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        profiles::v1development::ExportProfilesServiceRequest, trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics},
    profiles::v1development::{Profile, ProfilesDictionary, ResourceProfiles, Sample, ScopeProfiles},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};

use crate::signal::{Data, Signal};

pub const TRACE_ID: [u8; 16] =
    [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10];
pub const TRACE_ID_HEX: &str = "0123456789abcdeffedcba9876543210";
pub const SPAN_ID: [u8; 8] = [0xaa, 0xbb, 0xcc, 0xdd, 0x00, 0x11, 0x22, 0x33];
pub const SPAN_ID_HEX: &str = "aabbccdd00112233";

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

fn resource() -> Option<Resource> {
    Some(Resource { attributes: vec![kv("service.name", "checkout")], ..Default::default() })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope { name: "otelprof-test".into(), version: "1".into(), ..Default::default() })
}

/// One request of `signal` with `n` items (spans, points, log records, samples) whose ids are
/// [`TRACE_ID`] and [`SPAN_ID`], so JSON encodings can be checked for hex.
pub fn data(signal: Signal, n: usize) -> Data {
    match signal {
        Signal::Traces => Data::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource(),
                scope_spans: vec![ScopeSpans {
                    scope: scope(),
                    spans: (0..n)
                        .map(|i| Span {
                            trace_id: TRACE_ID.to_vec(),
                            span_id: SPAN_ID.to_vec(),
                            name: format!("GET /cart/{i}"),
                            kind: 2,
                            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                            end_time_unix_nano: 1_700_000_000_500_000_000,
                            attributes: vec![kv("http.method", "GET")],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }),
        Signal::Metrics => Data::Metrics(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource(),
                scope_metrics: vec![ScopeMetrics {
                    scope: scope(),
                    metrics: vec![Metric {
                        name: "queue.depth".into(),
                        unit: "1".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: (0..n)
                                .map(|i| NumberDataPoint {
                                    time_unix_nano: 1_700_000_000_000_000_000,
                                    value: Some(number_data_point::Value::AsInt(i as i64 * 10)),
                                    attributes: vec![kv("queue", &format!("q{i}"))],
                                    ..Default::default()
                                })
                                .collect(),
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }),
        Signal::Logs => Data::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource(),
                scope_logs: vec![ScopeLogs {
                    scope: scope(),
                    log_records: (0..n)
                        .map(|i| LogRecord {
                            time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                            severity_number: 9,
                            severity_text: "INFO".into(),
                            body: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(format!("paid order {i}"))),
                            }),
                            trace_id: TRACE_ID.to_vec(),
                            span_id: SPAN_ID.to_vec(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }),
        Signal::Profiles => Data::Profiles(ExportProfilesServiceRequest {
            resource_profiles: vec![ResourceProfiles {
                resource: resource(),
                scope_profiles: vec![ScopeProfiles {
                    scope: scope(),
                    profiles: vec![Profile {
                        profile_id: TRACE_ID.to_vec(),
                        time_unix_nano: 1_700_000_000_000_000_000,
                        duration_nano: 1_000_000_000,
                        period: 10_000_000,
                        samples: (0..n)
                            .map(|i| Sample { stack_index: i as i32, values: vec![i as i64 + 1], ..Default::default() })
                            .collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            dictionary: Some(ProfilesDictionary {
                string_table: vec!["".into(), "cpu".into(), "nanoseconds".into()],
                ..Default::default()
            }),
        }),
    }
}

use std::sync::Arc;

use crate::component::{BuildExporter, ComponentId, Exporter, ExporterFactory, Host};

pub fn host() -> Host {
    Host::new(Duration::from_secs(5))
}

/// Creates exporter `id` from YAML through its factory, as the pipeline builder does once per
/// exporter.
pub fn create(factory: &dyn ExporterFactory, id: &str, yaml: &str) -> Box<dyn BuildExporter> {
    let id = ComponentId::parse(id).unwrap();
    let config = serde_yaml::from_str(yaml).unwrap();
    factory.create(&id, config, &format!("exporters.{id}")).unwrap_or_else(|e| panic!("{e}"))
}

/// [`create`], then builds it for `signal`.
pub fn build(factory: &dyn ExporterFactory, id: &str, yaml: &str, signal: Signal, host: &Host) -> Arc<dyn Exporter> {
    create(factory, id, yaml).build(signal, host).unwrap_or_else(|e| panic!("{e}"))
}

/// The value of one rendered series (`name{labels}`), if registered.
pub fn metric(host: &Host, series: &str) -> Option<u64> {
    let mut out = String::new();
    host.telemetry.render(&mut out);
    out.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A deadline `secs` from now.
pub fn in_secs(secs: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(secs)
}
