//! Writes the seed corpora checked in under `corpus/`: one small, valid request per signal
//! (with values the fixed statements' functions can parse: JSON, key-values, times, URLs,
//! IDs), and a few statements from `tests/ottl/conformance.yaml`.
//!
//! It also checks the `evaluate` target's fixed statements: they must compile (the target
//! would panic on its first input otherwise) and run on every seed request.
//!
//! Random bytes almost never decode as an OTLP request, so without these seeds `evaluate`
//! would spend its runs on rejected input. Rerun after changing what the seeds should hold:
//! `cargo run --manifest-path profiler-user/ottl/fuzz/Cargo.toml --example make_corpus`.

use std::{fs, path::Path};

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        profiles::v1development::ExportProfilesServiceRequest, trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{any_value::Value as V, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{
        metric::Data as MData, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum,
    },
    profiles::v1development::{KeyValueAndUnit, Profile, ProfilesDictionary, ResourceProfiles, ScopeProfiles},
    resource::v1::Resource,
    trace::v1::{span::Event, ResourceSpans, ScopeSpans, Span, Status},
};
use otelprof_ottl_fuzz::{decode, Transform, STATEMENTS};
use prost::Message;

/// Statements for `parse_compile` (and, with a request, `evaluate_text`): taken from the
/// conformance table, covering editors, converters, conditions, math, keys and enums.
const SEED_STATEMENTS: &[&str] = &[
    r#"set(span.attributes["redacted"], true) where resource.attributes["env"] == "prod""#,
    r#"set(span.name, Concat([span.name, "x"], "-")) where span.kind == SPAN_KIND_SERVER"#,
    r#"delete_matching_keys(span.attributes, "http\\..*")"#,
    r#"limit(span.attributes, 1, ["http.status_code"])"#,
    r#"replace_pattern(span.name, "^(\\w+) .*", "$1")"#,
    r#"replace_all_matches(span.attributes, "G*", "verb")"#,
    r#"set(span.attributes["dur"], span.end_time_unix_nano - span.start_time_unix_nano) where span.kind == SPAN_KIND_SERVER"#,
    r#"set(spanevent.attributes["span"], span.name)"#,
    r#"set(cache["seen"], true) where span.name == "GET /users""#,
    r#"set(log.body, "redacted") where IsMatch(log.body, "disk.*")"#,
    r#"set(log.attributes["first"], Split(log.body, " ")[0])"#,
    r#"delete_key(log.attributes, "user") where log.severity_number < SEVERITY_NUMBER_WARN"#,
    r#"set(metric.name, Concat(["app", metric.name], "."))"#,
    r#"set(datapoint.value_int, 0) where datapoint.value_int > 5"#,
    r#"set(metric.aggregation_temporality, AGGREGATION_TEMPORALITY_DELTA) where metric.type == METRIC_DATA_TYPE_SUM"#,
    r#"set(profile.attributes["host"], "h2") where profile.attributes["pid"] == 42"#,
    r#"flatten(log.body) where log.severity_number == 17"#,
    r#"(1 + 2) * 3 == 9 and not (span.name == "a" or -1.5 >= 0x01)"#,
];

fn s(v: &str) -> AnyValue {
    AnyValue { value: Some(V::StringValue(v.into())) }
}
fn i(v: i64) -> AnyValue {
    AnyValue { value: Some(V::IntValue(v)) }
}
fn kv(k: &str, v: AnyValue) -> KeyValue {
    KeyValue { key: k.into(), value: Some(v), ..Default::default() }
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", s("api")),
            kv("env", s("prod")),
            kv("x", AnyValue { value: Some(V::KvlistValue(KeyValueList { values: vec![kv("team", s("core"))] })) }),
        ],
        ..Default::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope { name: "lib".into(), version: "1.0".into(), ..Default::default() })
}

fn traces() -> ExportTraceServiceRequest {
    let span = Span {
        name: "GET /users/123".into(),
        kind: 2,
        flags: 4,
        trace_id: (1..=16).collect(),
        span_id: (1..=8).collect(),
        parent_span_id: (9..=16).collect(),
        trace_state: "a=b".into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_001_500_000_000,
        attributes: vec![
            kv("http.method", s("GET")),
            kv("payload", s(r#"{"user": {"id": 7, "tags": ["a", "b"]}, "ok": true}"#)),
            kv("list", AnyValue { value: Some(V::ArrayValue(ArrayValue { values: vec![s("k"), i(2)] })) }),
            kv("card", s("4111-1111-1111-1111")),
        ],
        events: vec![Event {
            name: "1s".into(),
            time_unix_nano: 1_700_000_000_500_000_000,
            attributes: vec![kv(
                "n",
                AnyValue { value: Some(V::KvlistValue(KeyValueList { values: vec![kv("a", i(1))] })) },
            )],
            ..Default::default()
        }],
        status: Some(Status { code: 0, message: "%Y-%m-%d %v %s".into() }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans { scope: scope(), spans: vec![span], ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn metrics() -> ExportMetricsServiceRequest {
    let attrs = vec![kv("cpu", s("0")), kv("div", i(3))];
    let gauge = Metric {
        name: "cpu.usage".into(),
        unit: "1".into(),
        data: Some(MData::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                attributes: attrs.clone(),
                time_unix_nano: 1_700_000_000_000_000_000,
                value: Some(number_data_point::Value::AsDouble(0.75)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    let sum = Metric {
        name: "http.requests".into(),
        data: Some(MData::Sum(Sum {
            data_points: vec![NumberDataPoint {
                attributes: attrs.clone(),
                value: Some(number_data_point::Value::AsInt(12)),
                ..Default::default()
            }],
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let histogram = Metric {
        name: "latency".into(),
        data: Some(MData::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: attrs,
                count: 3,
                sum: Some(4.5),
                bucket_counts: vec![1, 2],
                explicit_bounds: vec![1.0],
                ..Default::default()
            }],
            aggregation_temporality: 1,
        })),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: vec![gauge, sum, histogram],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn logs() -> ExportLogsServiceRequest {
    let records = vec![
        LogRecord {
            severity_number: 13,
            severity_text: "2024-01-02".into(),
            event_name: "%Y-%m-%d".into(),
            body: Some(s(r#"{"a": {"b": [1, "two"]}, "user": "bob"}"#)),
            attributes: vec![kv("trace", s("0102030405060708090a0b0c0d0e0f10")), kv("span", s("0102030405060708"))],
            ..Default::default()
        },
        LogRecord {
            severity_text: "ERR".into(),
            event_name: "user".into(),
            body: Some(s("user=bob status=500 disk full")),
            ..Default::default()
        },
    ];
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs { scope: scope(), log_records: records, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn profiles() -> ExportProfilesServiceRequest {
    let dictionary = ProfilesDictionary {
        string_table: vec![String::new(), "pid".into(), "host".into(), "h1".into()],
        attribute_table: vec![
            KeyValueAndUnit::default(),
            KeyValueAndUnit { key_strindex: 1, value: Some(i(42)), unit_strindex: 0 },
            KeyValueAndUnit {
                key_strindex: 2,
                value: Some(AnyValue { value: Some(V::StringValueStrindex(3)) }),
                unit_strindex: 0,
            },
        ],
        ..Default::default()
    };
    let profile = Profile {
        time_unix_nano: 1_700_000_000_000_000_000,
        duration_nano: 10_000_000_000,
        period: 10_000_000,
        profile_id: (1..=16).collect(),
        attribute_indices: vec![1, 2],
        original_payload_format: "10s".into(),
        original_payload: (1..=16).collect(),
        ..Default::default()
    };
    ExportProfilesServiceRequest {
        resource_profiles: vec![ResourceProfiles {
            resource: resource(),
            scope_profiles: vec![ScopeProfiles { scope: scope(), profiles: vec![profile], ..Default::default() }],
            ..Default::default()
        }],
        dictionary: Some(dictionary),
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn main() {
    // The processor logs each statement that fails on a record (`error_mode: ignore`): a
    // statement failing on every seed exercises less than it could.
    tracing_subscriber::fmt().without_time().with_target(false).with_writer(std::io::stderr).init();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    // Selector byte = the signal's index in `Signal::ALL`.
    let requests: [(&str, u8, Vec<u8>); 4] = [
        ("traces", 0, traces().encode_to_vec()),
        ("metrics", 1, metrics().encode_to_vec()),
        ("logs", 2, logs().encode_to_vec()),
        ("profiles", 3, profiles().encode_to_vec()),
    ];
    let config = serde_yaml::from_str(STATEMENTS).unwrap_or_else(|e| panic!("STATEMENTS is not YAML: {e}"));
    let transform = Transform::new(config).unwrap_or_else(|e| panic!("STATEMENTS do not compile: {e}"));
    for (name, selector, body) in &requests {
        let mut input = vec![*selector];
        input.extend_from_slice(body);
        transform.consume(decode(&input).unwrap_or_else(|| panic!("the {name} seed does not decode")));
        write(&corpus.join("evaluate"), name, &input);
    }
    for (n, statement) in SEED_STATEMENTS.iter().enumerate() {
        write(&corpus.join("parse_compile"), &format!("statement-{n:02}"), statement.as_bytes());
    }
    // evaluate_text: statement, NUL, selector (signal in bits 0-1, its context in bits 2-3), request.
    let pairs = [(0, 8u8), (7, 12), (9, 10), (12, 9), (13, 13), (15, 11)];
    for (k, (statement, selector)) in pairs.into_iter().enumerate() {
        let (_, _, body) = &requests[usize::from(selector & 3)];
        let mut input = SEED_STATEMENTS[statement].as_bytes().to_vec();
        input.push(0);
        input.push(selector);
        input.extend_from_slice(body);
        write(&corpus.join("evaluate_text"), &format!("seed-{k}"), &input);
    }
    println!("seeds written under {}", corpus.display());
}
