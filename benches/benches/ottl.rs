//! OTTL (issue #13): one statement on one record, for each statement kind the issue names, and
//! the `transform` processor with five statements on an in-memory request of 1,000 spans,
//! built through its real factory.
//!
//! The record is a realistic span: a resource with 5 attributes, a span with 8 (as the
//! collector benchmark's load). Each iteration runs on a fresh copy of it; the copy is made and
//! dropped outside the measured time (`iter_batched`), so the numbers are the statement's alone.

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use otelprof_collector::{
    component::{ComponentId, Host, ProcessorFactory},
    consumer::{ConsumeError, Consumer},
    processor::ottl::transform::TransformFactory,
    signal::{Data, Signal},
};
use otelprof_ottl::{context::SpanContext, Compiler, Registry, Statement};

/// The statements, by kind: what the report calls them, and the statement.
const STATEMENTS: [(&str, &str); 5] = [
    (
        "set_where",
        r#"set(span.attributes["tier"], "gold") where resource.attributes["deployment.environment"] == "prod""#,
    ),
    ("replace_pattern", r#"replace_pattern(span.attributes["http.url"], "token=[^&]*", "token=***")"#),
    ("keep_keys", r#"keep_keys(span.attributes, ["http.method", "http.route", "http.status_code", "http.url"])"#),
    ("delete_key", r#"delete_key(span.attributes, "user.email")"#),
    (
        "converter_chain",
        r#"set(span.attributes["route.head"], ToUpperCase(Split(span.attributes["http.route"], "/")[1]))"#,
    ),
];

/// Spans per request of the processor bench.
const SPANS: usize = 1000;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn resource() -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", s("checkout")),
            kv("service.version", s("1.42.0")),
            kv("deployment.environment", s("prod")),
            kv("host.name", s("web-17.eu-west-1.internal")),
            kv("telemetry.sdk.language", s("rust")),
        ],
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope { name: "otelprof-bench".into(), version: "1.0".into(), ..Default::default() }
}

fn span(i: usize) -> Span {
    Span {
        trace_id: (i as u128 * 0x9e37_79b9_7f4a_7c15).to_be_bytes().to_vec(),
        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
        name: format!("GET /api/v1/orders/{}", i % 10),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64 * 1000,
        end_time_unix_nano: 1_700_000_000_000_500_000 + i as u64 * 1000,
        attributes: vec![
            kv("http.method", s("GET")),
            kv("http.route", s("/api/v1/orders/{id}")),
            kv("http.url", s(&format!("https://shop.example.com/api/v1/orders/{i}?token=abc{i}def&page=2"))),
            kv("http.status_code", any_value::Value::IntValue(200)),
            kv("net.peer.ip", s("10.1.2.3")),
            kv("user.email", s("someone@example.com")),
            kv("user_agent.original", s("Mozilla/5.0 (X11; Linux x86_64)")),
            kv("thread.id", any_value::Value::IntValue(i as i64 % 64)),
        ],
        ..Default::default()
    }
}

fn record() -> SpanContext {
    SpanContext { resource: resource(), scope: scope(), span: span(7), ..Default::default() }
}

/// A request of `SPANS` spans: one resource, one scope.
fn request() -> Data {
    Data::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource()),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans: (0..SPANS).map(span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn statements(c: &mut Criterion) {
    let registry = Registry::standard();
    let compiler = Compiler::new(&registry);
    let mut g = c.benchmark_group("ottl_statement");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    for (name, src) in STATEMENTS {
        let stmt: Statement<SpanContext> = compiler.statement(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        // The statement does what it says on this record.
        let mut check = record();
        stmt.execute(&mut check).unwrap();
        assert_ne!(format!("{:?}", check.span), format!("{:?}", record().span), "{name} changed nothing");
        let base = record();
        g.bench_function(name, |b| {
            b.iter_batched(
                || base.clone(),
                |mut ctx| {
                    stmt.execute(black_box(&mut ctx)).unwrap();
                    ctx
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Keeps nothing: the next consumer of the processor.
struct Discard;

impl Consumer for Discard {
    fn consume(&self, data: Data) -> Result<(), ConsumeError> {
        // Dropped here, inside the measured time, with or without statements alike.
        black_box(&data);
        Ok(())
    }
}

fn processor(c: &mut Criterion) {
    let host = Host::new(Duration::from_secs(1));
    let mut g = c.benchmark_group("ottl_transform_1k_spans");
    g.throughput(Throughput::Elements(SPANS as u64));
    g.measurement_time(Duration::from_secs(5));
    let list: Vec<String> = STATEMENTS.iter().map(|(_, s)| format!("'{}'", s.replace('\'', "''"))).collect();
    for (name, yaml) in [
        ("transform_5_statements", format!("trace_statements: [{}]", list.join(", "))),
        ("transform_no_statements", "{}".to_string()),
    ] {
        let id = ComponentId::parse("transform/bench").unwrap();
        let build = TransformFactory
            .create(&id, serde_yaml::from_str(&yaml).unwrap(), "processors.transform/bench")
            .unwrap_or_else(|e| panic!("{yaml}: {e}"));
        let p = build.build(Signal::Traces, Arc::new(Discard), &host).unwrap();
        let base = request();
        g.bench_function(name, |b| {
            b.iter_batched(|| base.clone(), |data| p.consume(data).unwrap(), BatchSize::LargeInput)
        });
    }
    g.finish();
}

criterion_group!(benches, statements, processor);
criterion_main!(benches);
