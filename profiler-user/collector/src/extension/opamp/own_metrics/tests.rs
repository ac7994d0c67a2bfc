use std::sync::{
    atomic::{AtomicU16, Ordering},
    Mutex,
};

use axum::{body::Bytes, extract::State, http::StatusCode, routing::post, Router};
use number_data_point::Value::{AsDouble, AsInt};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use tokio::{net::TcpListener, sync::mpsc};

use super::*;
use crate::{signal::Signal, telemetry, telemetry::Telemetry};

const START: u64 = 1_700_000_000_000_000_000;
const NOW: u64 = 1_700_000_060_000_000_000;

/// One point as the tests compare it: (attributes, value).
type Point = (Vec<(String, String)>, number_data_point::Value);

/// `"sum"` or `"gauge"`, the description, and the points of the metric `name`.
fn metric<'a>(req: &'a ExportMetricsServiceRequest, name: &str) -> (&'static str, &'a str, Vec<Point>) {
    let m = req.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name}"));
    let (kind, points) = match &m.data {
        Some(metric::Data::Sum(s)) => {
            assert!(s.is_monotonic, "{name}");
            assert_eq!(s.aggregation_temporality, AggregationTemporality::Cumulative as i32, "{name}");
            ("sum", &s.data_points)
        }
        Some(metric::Data::Gauge(g)) => ("gauge", &g.data_points),
        other => panic!("{name}: {other:?}"),
    };
    let points = points
        .iter()
        .map(|p| {
            assert_eq!(p.time_unix_nano, NOW, "{name}");
            assert_eq!(p.start_time_unix_nano, if kind == "sum" { START } else { 0 }, "{name}");
            let attrs = p
                .attributes
                .iter()
                .map(|kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => (kv.key.clone(), s.clone()),
                    other => panic!("{name}: attribute {}: {other:?}", kv.key),
                })
                .collect();
            (attrs, p.value.unwrap_or_else(|| panic!("{name}: no value")))
        })
        .collect();
    (kind, m.description.as_str(), points)
}

fn attrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn names(req: &ExportMetricsServiceRequest) -> Vec<&str> {
    req.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| m.name.as_str())
        .collect()
}

/// What the agent's `/metrics` serves: the collector's registry, then the profiler's text (as
/// `otelprof-profiling`'s `ProfilerMetrics` renders it).
fn agent_text(t: &Telemetry) -> String {
    let mut out = String::new();
    t.render(&mut out);
    out.push_str(
        "# HELP otelprof_samples_total Stack samples read from the kernel.\n\
         # TYPE otelprof_samples_total counter\n\
         otelprof_samples_total 42\n\
         # HELP otelprof_unwind_table_bytes Bytes of unwind tables loaded.\n\
         # TYPE otelprof_unwind_table_bytes gauge\n\
         otelprof_unwind_table_bytes 1.5e6\n\
         # HELP otelprof_cpu_ratio Share of a CPU the agent used.\n\
         # TYPE otelprof_cpu_ratio gauge\n\
         otelprof_cpu_ratio 0.25\n",
    );
    out
}

#[test]
fn converts_the_agents_own_metrics_text() {
    let t = Telemetry::default();
    let r = t.receiver("otlp", "grpc", Signal::Traces);
    telemetry::add(&r.accepted, 5);
    telemetry::add(&r.refused, 1);
    let e = t.exporter("otlp/backend", Signal::Traces);
    telemetry::add(&e.sent, 4);
    e.queue_size.store(2, Ordering::Relaxed);
    e.queue_capacity.store(1000, Ordering::Relaxed);
    let text = agent_text(&t);
    let resource = vec![string_kv("service.name", "otelprof".into())];

    let (req, skipped) = prometheus_to_otlp(&text, resource.clone(), START, NOW);
    assert_eq!(skipped, 0, "{text}");
    assert_eq!(req.resource_metrics.len(), 1);
    let rm = &req.resource_metrics[0];
    assert_eq!(rm.resource.as_ref().map(|r| &r.attributes), Some(&resource));
    assert_eq!(rm.scope_metrics.len(), 1);
    assert_eq!(rm.scope_metrics[0].scope.as_ref().map(|s| s.name.as_str()), Some("otelprof"));
    assert_eq!(
        names(&req),
        [
            "otelcol_exporter_enqueue_failed_spans_total",
            "otelcol_exporter_queue_capacity",
            "otelcol_exporter_queue_size",
            "otelcol_exporter_send_failed_spans_total",
            "otelcol_exporter_sent_spans_total",
            "otelcol_receiver_accepted_spans_total",
            "otelcol_receiver_refused_spans_total",
            "otelprof_samples_total",
            "otelprof_unwind_table_bytes",
            "otelprof_cpu_ratio",
        ],
        "in the text's order, counters with their _total: {text}"
    );
    let receiver = attrs(&[("receiver", "otlp"), ("transport", "grpc")]);
    assert_eq!(
        metric(&req, "otelcol_receiver_accepted_spans_total"),
        ("sum", "Items successfully pushed into the pipeline.", vec![(receiver.clone(), AsInt(5))])
    );
    assert_eq!(metric(&req, "otelcol_receiver_refused_spans_total").2, vec![(receiver, AsInt(1))]);
    let exporter = attrs(&[("exporter", "otlp/backend")]);
    assert_eq!(
        metric(&req, "otelcol_exporter_sent_spans_total"),
        ("sum", "Items successfully sent to the destination.", vec![(exporter.clone(), AsInt(4))])
    );
    assert_eq!(metric(&req, "otelcol_exporter_send_failed_spans_total").2, vec![(exporter.clone(), AsInt(0))]);
    let queue = attrs(&[("exporter", "otlp/backend"), ("data_type", "traces")]);
    assert_eq!(
        metric(&req, "otelcol_exporter_queue_size"),
        ("gauge", "Current size of the sending queue.", vec![(queue.clone(), AsInt(2))])
    );
    assert_eq!(metric(&req, "otelcol_exporter_queue_capacity").2, vec![(queue, AsInt(1000))]);
    assert_eq!(
        metric(&req, "otelprof_samples_total"),
        ("sum", "Stack samples read from the kernel.", vec![(vec![], AsInt(42))])
    );
    assert_eq!(metric(&req, "otelprof_unwind_table_bytes").2, vec![(vec![], AsInt(1_500_000))], "1.5e6 is integral");
    assert_eq!(
        metric(&req, "otelprof_cpu_ratio"),
        ("gauge", "Share of a CPU the agent used.", vec![(vec![], AsDouble(0.25))])
    );

    // The same request once encoded and decoded: what a receiver gets.
    assert_eq!(ExportMetricsServiceRequest::decode(req.encode_to_vec().as_slice()).ok(), Some(req));
}

#[test]
fn unescapes_labels_and_reads_the_format_edges() {
    let text = "# TYPE esc gauge\n\
                esc{path=\"C:\\\\dir\",quote=\"say \\\"hi\\\"\",lines=\"a\\nb\",empty=\"\",} 3\n\
                \n\
                # a free comment\n\
                untyped_one{a=\"x\"} -2.5\n\
                spaced { b = \"y\" }   +Inf  1700000000123\r\n\
                # TYPE om counter\n\
                om_total 7\n\
                big 18446744073709551615\n";
    let (req, skipped) = prometheus_to_otlp(text, vec![], START, NOW);
    assert_eq!(skipped, 0);
    let m = &req.resource_metrics[0].scope_metrics[0].metrics;
    let point = |name: &str| match m.iter().find(|m| m.name == name).and_then(|m| m.data.clone()) {
        Some(metric::Data::Gauge(g)) => g.data_points[0].clone(),
        Some(metric::Data::Sum(s)) => s.data_points[0].clone(),
        other => panic!("{name}: {other:?}"),
    };
    let esc = point("esc");
    let got: Vec<(String, String)> = esc
        .attributes
        .iter()
        .map(|kv| match kv.value.as_ref().and_then(|v| v.value.clone()) {
            Some(any_value::Value::StringValue(s)) => (kv.key.clone(), s),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        attrs(&[("path", "C:\\dir"), ("quote", "say \"hi\""), ("lines", "a\nb")]),
        "the empty label is dropped"
    );
    assert_eq!(point("untyped_one").value, Some(AsDouble(-2.5)));
    let spaced = point("spaced");
    assert_eq!(spaced.value, Some(AsDouble(f64::INFINITY)));
    assert_eq!(spaced.time_unix_nano, 1_700_000_000_123_000_000, "the line's own timestamp");
    assert!(matches!(
        m.iter().find(|m| m.name == "om_total").and_then(|m| m.data.as_ref()),
        Some(metric::Data::Sum(_))
    ));
    assert_eq!(point("big").value, Some(AsDouble(18446744073709551615.0)), "beyond i64: a double");
}

#[test]
fn skips_histograms_summaries_and_malformed_lines_and_counts_them() {
    let text = "# TYPE good counter\n\
                good_total{a=\"1\"} 1\n\
                # TYPE latency histogram\n\
                latency_bucket{le=\"0.1\"} 3\n\
                latency_bucket{le=\"+Inf\"} 4\n\
                latency_sum 0.7\n\
                latency_count 4\n\
                # TYPE rpc summary\n\
                rpc{quantile=\"0.5\"} 0.2\n\
                rpc_sum 1\n\
                rpc_count 5\n\
                # TYPE weird sometype\n\
                weird 1\n\
                # TYPE\n\
                # TYPE good gauge\n\
                good_total{a=\"2\"} 2\n\
                # HELP\n\
                1bad 1\n\
                novalue\n\
                novalue{a=\"1\"}\n\
                nan_word abc\n\
                unclosed{a=\"1 2\n\
                badescape{a=\"\\t\"} 1\n\
                dup{a=\"1\",a=\"2\"} 1\n\
                nospace{a=\"1\"}1\n\
                extra 1 2 3\n\
                badts 1 -5\n\
                quoted_name{\"a.b\"=\"1\"} 1\n\
                ok_after 9\n\
                # TYPE late_counter counter\n\
                other 1\n\
                latency_bucket{le=\"1\"} 4\n\
                late_counter_total 3\n\
                late_counter_created 1700000000\n";
    let (req, skipped) = prometheus_to_otlp(text, vec![], START, NOW);
    // latency ×4, rpc ×3, `weird` type line + its sample, `# TYPE`, the second `# TYPE good`,
    // `# HELP`, 11 malformed samples, and apart from their family a histogram's bucket and a
    // counter's `_created`.
    assert_eq!(skipped, 4 + 3 + 2 + 1 + 1 + 1 + 11 + 2, "{:#?}", names(&req));
    assert_eq!(names(&req), ["good_total", "ok_after", "other", "late_counter_total"]);
    assert_eq!(metric(&req, "late_counter_total").0, "sum", "found by its family's name");
    let (kind, _, points) = metric(&req, "good_total");
    assert_eq!(kind, "sum", "the first declaration stands");
    assert_eq!(points, vec![(attrs(&[("a", "1")]), AsInt(1)), (attrs(&[("a", "2")]), AsInt(2))]);

    let (empty, skipped) = prometheus_to_otlp("", vec![], START, NOW);
    assert_eq!((empty.resource_metrics.len(), skipped), (0, 0));
    let (_, skipped) = prometheus_to_otlp("\u{0}\u{ffff}{}{\"\\\n}}} }{ 1\n#\n", vec![], START, NOW);
    assert_eq!(skipped, 2, "garbage is counted, not a panic");
}

#[test]
fn process_start_is_before_now() {
    let start = process_start_unix_ns().expect("/proc is there on Linux");
    let now = now_ns();
    assert!(start <= now && now - start < 24 * 3600 * 1_000_000_000, "{start} {now}");
}

/// A local OTLP/HTTP metrics receiver: every push decoded and handed over, answering with the
/// status set in `status`.
struct Sink {
    addr: std::net::SocketAddr,
    status: Arc<AtomicU16>,
    pushes: mpsc::UnboundedReceiver<(axum::http::HeaderMap, ExportMetricsServiceRequest)>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct SinkState {
    status: Arc<AtomicU16>,
    tx: mpsc::UnboundedSender<(axum::http::HeaderMap, ExportMetricsServiceRequest)>,
    /// Raw bodies, for the independent decoder.
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

async fn receive(
    State(s): State<SinkState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], Vec<u8>) {
    let Ok(req) = ExportMetricsServiceRequest::decode(body.as_ref()) else {
        return (StatusCode::BAD_REQUEST, [("content-type", "text/plain")], b"not OTLP".to_vec());
    };
    if let Ok(mut b) = s.bodies.lock() {
        b.push(body.to_vec());
    }
    let _ = s.tx.send((headers, req));
    match StatusCode::from_u16(s.status.load(Ordering::Relaxed)) {
        Ok(StatusCode::OK) | Err(_) => (
            StatusCode::OK,
            [("content-type", "application/x-protobuf")],
            ExportMetricsServiceResponse::default().encode_to_vec(),
        ),
        Ok(code) => (
            code,
            [("content-type", "application/x-protobuf")],
            RpcStatus { code: 14, message: "overloaded, come back later".into() }.encode_to_vec(),
        ),
    }
}

async fn sink() -> (Sink, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let status = Arc::new(AtomicU16::new(200));
    let (tx, pushes) = mpsc::unbounded_channel();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new().route("/v1/metrics", post(receive)).with_state(SinkState {
        status: status.clone(),
        tx,
        bodies: bodies.clone(),
    });
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (Sink { addr, status, pushes, server }, bodies)
}

fn settings(endpoint: String, headers: &[(&str, &str)]) -> pb::TelemetryConnectionSettings {
    pb::TelemetryConnectionSettings {
        destination_endpoint: endpoint,
        headers: Some(pb::Headers {
            headers: headers.iter().map(|(k, v)| pb::Header { key: k.to_string(), value: v.to_string() }).collect(),
        }),
        ..Default::default()
    }
}

type Outcomes = mpsc::UnboundedReceiver<Result<(), String>>;

fn outcomes() -> (Outcome, Outcomes) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(move |r: Result<(), String>| drop(tx.send(r))), rx)
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("in time").expect("open")
}

fn accepted(req: &ExportMetricsServiceRequest) -> (i64, u64, u64) {
    let m = req.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == "otelcol_receiver_accepted_spans_total")
        .expect("the counter");
    match &m.data {
        Some(metric::Data::Sum(s)) => match s.data_points[0].value {
            Some(AsInt(v)) => (v, s.data_points[0].start_time_unix_nano, s.data_points[0].time_unix_nano),
            ref other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn pushes_every_interval_with_the_headers_and_reports_each_outcome() {
    let (mut sink, bodies) = sink().await;
    let t = Telemetry::new();
    let r = t.receiver("otlp", "grpc", Signal::Traces);
    telemetry::add(&r.accepted, 3);
    let rendered = t.clone();
    let render: Render = Arc::new(move || agent_text(&rendered));
    let (outcome, mut results) = outcomes();
    let resource = vec![string_kv("service.instance.id", "0190-test".into())];
    let pusher = OwnMetrics::start(
        settings(
            format!("http://{}/v1/metrics", sink.addr),
            &[("Authorization", "Bearer s3cret"), ("X-Tenant", "team-a"), ("content-type", "text/plain")],
        ),
        render,
        resource.clone(),
        Duration::from_millis(200),
        outcome,
    )
    .unwrap();

    let (headers, first) = next(&mut sink.pushes).await;
    let header = |h: &axum::http::HeaderMap, k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(header(&headers, "authorization").as_deref(), Some("Bearer s3cret"));
    assert_eq!(header(&headers, "x-tenant").as_deref(), Some("team-a"));
    assert_eq!(header(&headers, "content-type").as_deref(), Some("application/x-protobuf"), "ours wins");
    assert!(header(&headers, "user-agent").is_some_and(|u| u.starts_with("otelprof/")));
    assert_eq!(first.resource_metrics[0].resource.as_ref().map(|r| &r.attributes), Some(&resource));
    assert!(names(&first).contains(&"otelprof_samples_total"), "the profiler's text too");
    let (v1, start1, time1) = accepted(&first);
    assert_eq!(v1, 3);
    assert_eq!(next(&mut results).await, Ok(()));
    telemetry::add(&r.accepted, 4);

    let at = tokio::time::Instant::now();
    let (headers, second) = next(&mut sink.pushes).await;
    assert_eq!(header(&headers, "authorization").as_deref(), Some("Bearer s3cret"));
    let (v2, start2, time2) = accepted(&second);
    assert_eq!(v2, 7, "the counter grew between the pushes");
    assert_eq!(start2, start1, "one start time: cumulative");
    assert!(start1 <= time1 && time1 < time2, "{start1} {time1} {time2}");
    // An interval apart, less the first push's lateness (a loaded machine may delay it).
    assert!(time2 - time1 >= 100_000_000, "about an interval apart: {}", time2 - time1);
    assert!(at.elapsed() < Duration::from_secs(5));
    assert_eq!(next(&mut results).await, Ok(()));

    sink.status.store(503, Ordering::Relaxed);
    let failure = loop {
        match next(&mut results).await {
            Ok(()) => continue,
            Err(e) => break e,
        }
    };
    assert!(failure.contains("503"), "{failure}");
    assert!(failure.contains("overloaded, come back later"), "the server's google.rpc.Status: {failure}");
    assert!(failure.contains(&format!("http://{}/v1/metrics", sink.addr)), "{failure}");
    sink.status.store(200, Ordering::Relaxed);
    while next(&mut results).await.is_err() {}

    pusher.stop().await;
    // Nothing after stop: drain what was in flight, then silence for a few intervals.
    while sink.pushes.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(sink.pushes.try_recv().is_err(), "a push after stop");

    // The independent decoder (Python's generated OTLP classes) reads a pushed body the same,
    // when it is installed (OTELPROF_PYTHON names an interpreter that has it).
    if let Ok(python) = std::env::var("OTELPROF_PYTHON") {
        let body = bodies.lock().unwrap()[0].clone();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("body.pb");
        std::fs::write(&path, body).unwrap();
        let script = "import sys\n\
            from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as m\n\
            r = m.ExportMetricsServiceRequest()\n\
            r.ParseFromString(open(sys.argv[1], 'rb').read())\n\
            for s in r.resource_metrics[0].scope_metrics:\n\
            \x20   for x in s.metrics:\n\
            \x20       kind = x.WhichOneof('data')\n\
            \x20       for p in getattr(x, kind).data_points:\n\
            \x20           print(x.name, kind, p.WhichOneof('value'), p.as_int if p.HasField('as_int') else p.as_double, sorted((a.key, a.value.string_value) for a in p.attributes))\n";
        let out = std::process::Command::new(python).arg("-c").arg(script).arg(&path).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            text.contains(
                "otelcol_receiver_accepted_spans_total sum as_int 3 [('receiver', 'otlp'), ('transport', 'grpc')]"
            ),
            "{text}"
        );
        assert!(text.contains("otelprof_cpu_ratio gauge as_double 0.25 []"), "{text}");
    }
    sink.server.abort();
}

#[tokio::test]
async fn an_unreachable_destination_is_an_error_outcome() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let (outcome, mut results) = outcomes();
    let pusher = OwnMetrics::start(
        settings(format!("http://127.0.0.1:{port}/v1/metrics?token=s3cret"), &[]),
        Arc::new(String::new),
        vec![],
        Duration::from_millis(100),
        outcome,
    )
    .unwrap();
    let e = next(&mut results).await.unwrap_err();
    assert!(e.starts_with(&format!("pushing own metrics to http://127.0.0.1:{port}/v1/metrics: ")), "{e}");
    assert!(e.to_lowercase().contains("connect"), "the reason: {e}");
    assert!(!e.contains("s3cret"), "no query in the message: {e}");
    assert!(next(&mut results).await.is_err(), "not retried at once, but pushed again an interval later");
    pusher.stop().await;
}

#[tokio::test]
async fn refuses_a_destination_that_cannot_work() {
    let start = |s: pb::TelemetryConnectionSettings| {
        let (outcome, _) = outcomes();
        OwnMetrics::start(s, Arc::new(String::new), vec![], Duration::from_secs(10), outcome).err()
    };
    let good = || settings("https://metrics.example:4318/v1/metrics".into(), &[("Authorization", "Bearer x")]);
    let e = start(settings("ftp://metrics.example/v1/metrics".into(), &[])).unwrap();
    assert!(e.contains("not an http:// or https:// URL"), "{e}");
    let e = start(settings("metrics.example:4318".into(), &[])).unwrap();
    assert!(e.contains("own_metrics destination_endpoint"), "{e}");
    let e = start(settings("".into(), &[])).unwrap();
    assert!(e.contains("not a URL"), "{e}");
    let e = start(settings("https://metrics.example/v1/metrics".into(), &[("bad header", "v")])).unwrap();
    assert!(e.contains("own_metrics header \"bad header\""), "{e}");
    let e = start(settings("https://metrics.example/v1/metrics".into(), &[("x-token", "line\nbreak")])).unwrap();
    assert!(e.contains("own_metrics header \"x-token\": bad value") && !e.contains("break"), "{e}");

    let mut s = good();
    s.certificate = Some(pb::TlsCertificate {
        cert: b"not a pem".to_vec(),
        private_key: b"nor this".to_vec(),
        ..Default::default()
    });
    let e = start(s).unwrap();
    assert!(e.contains("own_metrics certificate (cert, private_key)"), "{e}");
    let mut s = good();
    s.certificate = Some(pb::TlsCertificate { ca_cert: b"not a pem".to_vec(), ..Default::default() });
    let e = start(s).unwrap();
    assert!(e.contains("own_metrics certificate (ca_cert)"), "{e}");

    let (outcome, _) = outcomes();
    let e = OwnMetrics::start(good(), Arc::new(String::new), vec![], Duration::ZERO, outcome).err().unwrap();
    assert!(e.contains("interval"), "{e}");

    assert!(start(good()).is_none(), "https with headers and no certificate starts");
    let mut s = good();
    s.certificate = Some(pb::TlsCertificate::default());
    assert!(start(s).is_none(), "an empty certificate message is no certificate");
}

#[test]
fn start_outside_a_runtime_is_an_error_not_a_panic() {
    let (outcome, _) = outcomes();
    let e = OwnMetrics::start(
        settings("http://127.0.0.1:1/v1/metrics".into(), &[]),
        Arc::new(String::new),
        vec![],
        Duration::from_secs(1),
        outcome,
    )
    .err()
    .unwrap();
    assert!(e.contains("Tokio runtime"), "{e}");
}

/// A CA, a server certificate for `localhost` and a client certificate it signed, made by the
/// `openssl` CLI in `dir`.
fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=own CA"]]
        .concat());
    std::fs::write(dir.join("server.ext"), "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n").unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        let (key, csr, pem, ext) =
            (format!("{who}.key"), format!("{who}.csr"), format!("{who}.pem"), format!("{who}.ext"));
        run(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={who}")]].concat());
        run(&[
            "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-out", &pem, "-days", "2", "-extfile",
            &ext,
        ]);
    }
}

/// An HTTPS server on 127.0.0.1 that requires a client certificate signed by `ca.pem` and
/// answers 200 to every request, handing over the path of each.
async fn mtls_sink(dir: &std::path::Path) -> (u16, mpsc::UnboundedReceiver<String>, tokio::task::JoinHandle<()>) {
    use rustls::{server::WebPkiClientVerifier, RootCertStore, ServerConfig};
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read("ca.pem")) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read("server.pem")).collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(&read("server.key")).unwrap();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                // A client without the certificate fails here; the pusher sees the error.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let _ = tx.send(req.uri().path().to_string());
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                            hyper::body::Bytes::new(),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, rx, server)
}

#[tokio::test]
async fn https_with_the_offered_client_certificate_and_ca() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    let (port, mut paths, server) = mtls_sink(dir.path()).await;
    let push_once = |certificate: Option<pb::TlsCertificate>| {
        let mut s = settings(format!("https://localhost:{port}/v1/metrics"), &[]);
        s.certificate = certificate;
        async move {
            let (outcome, mut results) = outcomes();
            let pusher =
                OwnMetrics::start(s, Arc::new(|| "up 1\n".to_string()), vec![], Duration::from_secs(60), outcome)
                    .unwrap();
            let result = next(&mut results).await;
            pusher.stop().await;
            result
        }
    };
    let full =
        pb::TlsCertificate { cert: read("client.pem"), private_key: read("client.key"), ca_cert: read("ca.pem") };

    assert_eq!(push_once(Some(full.clone())).await, Ok(()), "client identity presented, server trusted via ca_cert");
    assert_eq!(next(&mut paths).await, "/v1/metrics");

    let e = push_once(Some(pb::TlsCertificate { ca_cert: read("ca.pem"), ..Default::default() })).await.unwrap_err();
    assert!(e.starts_with(&format!("pushing own metrics to https://localhost:{port}/v1/metrics: ")), "{e}");
    assert!(e.to_lowercase().contains("certificate"), "the server requires a client certificate: {e}");
    let e = push_once(Some(pb::TlsCertificate { ca_cert: Vec::new(), ..full })).await.unwrap_err();
    assert!(e.to_lowercase().contains("certificate"), "the server's CA is not trusted without ca_cert: {e}");
    assert!(paths.try_recv().is_err(), "no request got through without the certificate or the CA");
    server.abort();
}
