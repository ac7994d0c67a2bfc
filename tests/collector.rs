//! The embedded collector end to end, with real peers only: `otelprof agent --config` between the
//! OpenTelemetry Python SDK (`sdk_send.py`), rotel-agent and an OTLP backend (`sink.py`), what
//! arrived checked by an independent decoder (`compare.py`, opentelemetry-proto) and against the
//! agent's own `/metrics`. See tests/python/collector/README.md for the harness.

mod common;

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use common::{agent::wait_for, collector::*, servers::*, *};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value, AnyValue, KeyValue},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message;

const SIGNALS: [(&str, &str); 3] = [("traces", "spans"), ("metrics", "metric_points"), ("logs", "log_records")];

/// One otlp receiver's config with both protocols on the given addresses.
fn protocols(grpc: SocketAddr, http: SocketAddr) -> String {
    format!("{{ protocols: {{ grpc: {{ endpoint: '{grpc}' }}, http: {{ endpoint: '{http}' }} }} }}")
}

/// `service.pipelines` lines for traces, metrics and logs (with an optional `/name`), all alike.
fn pipelines(name: &str, receivers: &str, processors: &str, exporters: &str) -> String {
    SIGNALS
        .iter()
        .map(|(s, _)| {
            format!(
                "    {s}{name}: {{ receivers: [{receivers}], processors: [{processors}], exporters: [{exporters}] }}\n"
            )
        })
        .collect()
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

/// A trace request with one span named `name` (ids derived from it), and `pad` bytes of
/// attribute to make it as large as a test needs.
fn one_span(name: &str, pad: usize) -> ExportTraceServiceRequest {
    let h = name.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    let mut attributes = vec![string("test", "collector")];
    if pad > 0 {
        // Incompressible (an xorshift stream): exporters queue requests gzipped, so padding
        // that compresses away would not fill their queue.
        let mut x = h | 1;
        let bytes: Vec<u8> = (0..pad)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        attributes.push(KeyValue {
            key: "pad".into(),
            value: Some(AnyValue { value: Some(any_value::Value::BytesValue(bytes)) }),
            ..Default::default()
        });
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string("service.name", "e2e-bad-input")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: [h.to_be_bytes(), (!h).to_be_bytes()].concat(),
                    span_id: h.rotate_left(7).to_be_bytes().to_vec(),
                    name: name.into(),
                    kind: 1,
                    start_time_unix_nano: 1_767_225_600_000_000_000,
                    end_time_unix_nano: 1_767_225_600_001_000_000,
                    attributes,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");

/// SDK → otelprof (otlp receiver: gRPC and HTTP) → resourcedetection + batch → `otlp` exporter →
/// sink, over every protocol the SDK speaks (gRPC and HTTP/protobuf gzipped, HTTP/JSON): every span, metric
/// point and log record arrives exactly once and unchanged, the resources gain only what the env
/// detector adds, and the agent's counters agree with what was sent and stored.
#[test]
fn sdk_clients_reach_the_exporter_unchanged() {
    if !python_peers("sdk_clients_reach_the_exporter_unchanged") {
        return;
    }
    let dir = scratch("collector-sdk");
    let sink = Sink::start(&dir);
    let (g, h) = (free_addr(), free_addr());
    let config = format!(
        "receivers:\n  otlp: {}\n\
         processors:\n  batch: {{ timeout: 200ms }}\n  resourcedetection: {{ detectors: [env] }}\n\
         exporters:\n  otlp: {{ endpoint: '127.0.0.1:{}', tls: {{ insecure: true }} }}\n\
         service:\n  pipelines:\n{}",
        protocols(g, h),
        sink.grpc,
        pipelines("", "otlp", "resourcedetection, batch", "otlp")
    );
    let agent = Collector::start_with_env(&dir, &config, &[("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=e2e")]);
    // The binary protocols gzip-compressed, as SDKs are often configured.
    let runs = [
        ("grpc", format!("http://{g}"), "gzip"),
        ("http/protobuf", format!("http://{h}"), "gzip"),
        ("http/json", format!("http://{h}"), "none"),
    ];
    let sends: Vec<Sent> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .enumerate()
            .map(|(i, (proto, url, compression))| {
                let (dir, seed) = (&dir, i as u32 + 1);
                let extra = ["--compression", compression];
                s.spawn(move || sdk_send_with(dir, proto, url, "traces,metrics,logs", seed, 1000 * seed as u64, &extra))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (signal, unit) in SIGNALS {
        let total: u64 = sends.iter().map(|s| s.items(signal)).sum();
        assert!(total > 0, "the SDK sent no {signal}");
        let grpc = sends[0].items(signal) as f64;
        let accepted = format!("otelcol_receiver_accepted_{unit}_total");
        agent.wait_value(&accepted, &[("transport", "grpc")], Duration::from_secs(10), |v| v == grpc);
        agent.wait_value(&accepted, &[("transport", "http")], Duration::from_secs(10), |v| v == total as f64 - grpc);
        let sent = format!("otelcol_exporter_sent_{unit}_total");
        agent.wait_value(&sent, &[("exporter", "otlp")], Duration::from_secs(10), |v| v == total as f64);
        for bad in
            [format!("otelcol_receiver_refused_{unit}_total"), format!("otelcol_exporter_send_failed_{unit}_total")]
        {
            assert_eq!(agent.value(&bad, &[]), 0.0, "{bad}\n{}", agent.metrics());
        }
    }
    let mut report = String::new();
    for sent in &sends {
        report = compare(sent, &sink.dir, &["--allow-extra-resource-attrs", "--allow-extra-items"]);
    }
    // Each send arrived whole; the sink holds nothing else (no duplicates from a retry, say).
    for (signal, _) in SIGNALS {
        let total: u64 = sends.iter().map(|s| s.items(signal)).sum();
        assert_eq!(received(&report, signal), total, "{signal} in the sink:\n{report}");
    }
    let stored = sink.dump();
    assert!(!stored.is_empty());
    for r in &stored {
        // The env detector's attribute was added; the SDK's own are still there (compare.py).
        assert_eq!(r.resource.get("deployment.environment").and_then(|v| v.as_str()), Some("e2e"), "{r:?}");
    }
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// rotel-agent, an independent Rust collector, on either side of otelprof: (a) SDK → rotel →
/// otelprof → sink, (b) SDK → otelprof → rotel → sink. Both ways everything arrives unchanged,
/// resources included (no processors here).
#[test]
fn rotel_both_ways() {
    const T: &str = "rotel_both_ways";
    if !python_peers(T) || !rotel_available(T) {
        return;
    }
    let dir = scratch("collector-rotel");
    let (dir_a, dir_b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let sink_a = Sink::start(&dir_a);
    let sink_b = Sink::start(&dir_b);
    let rotel_b = Rotel::start(&dir_b, "rotel", &format!("http://127.0.0.1:{}", sink_b.grpc));
    let (a_grpc, b_grpc, b_http) = (free_addr(), free_addr(), free_addr());
    let config = format!(
        "receivers:\n  otlp/from_rotel: {{ protocols: {{ grpc: {{ endpoint: '{a_grpc}' }} }} }}\n  otlp/to_rotel: {}\n\
         exporters:\n  otlp/sink: {{ endpoint: '127.0.0.1:{}', tls: {{ insecure: true }} }}\n  \
         otlp/rotel: {{ endpoint: 'http://127.0.0.1:{}' }}\n\
         service:\n  pipelines:\n{}{}",
        protocols(b_grpc, b_http),
        sink_a.grpc,
        rotel_b.grpc,
        pipelines("/a", "otlp/from_rotel", "", "otlp/sink"),
        pipelines("/b", "otlp/to_rotel", "", "otlp/rotel"),
    );
    let agent = Collector::start(&dir, &config);
    let rotel_a = Rotel::start(&dir_a, "rotel", &format!("http://{a_grpc}"));

    // (a) rotel in front. OTLP/JSON is not sent to rotel: its JSON receiver damages metrics
    // (see the harness README), which would be rotel's bug, not ours.
    let a = [
        sdk_send(&dir_a, "grpc", &format!("http://127.0.0.1:{}", rotel_a.grpc), "traces,metrics,logs", 1, 0),
        sdk_send(
            &dir_a,
            "http/protobuf",
            &format!("http://127.0.0.1:{}", rotel_a.http),
            "traces,metrics,logs",
            2,
            1000,
        ),
    ];
    // (b) rotel behind: its receiver gets otelprof's OTLP/gRPC export of what came in any form.
    let b = [
        sdk_send(&dir_b, "grpc", &format!("http://{b_grpc}"), "traces,metrics,logs", 3, 2000),
        sdk_send(&dir_b, "http/protobuf", &format!("http://{b_http}"), "traces,metrics,logs", 4, 3000),
        sdk_send(&dir_b, "http/json", &format!("http://{b_http}"), "traces,metrics,logs", 5, 4000),
    ];
    for (sends, sink, way) in [(&a[..], &sink_a, "rotel → otelprof"), (&b[..], &sink_b, "otelprof → rotel")] {
        let mut report = String::new();
        for sent in sends {
            report = compare(sent, &sink.dir, &["--allow-extra-items"]);
        }
        for (signal, _) in SIGNALS {
            let total: u64 = sends.iter().map(|s| s.items(signal)).sum();
            assert_eq!(received(&report, signal), total, "{way}: {signal} in the sink:\n{report}");
        }
    }
    for (signal, unit) in SIGNALS {
        let a_total: u64 = a.iter().map(|s| s.items(signal)).sum();
        let b_total: u64 = b.iter().map(|s| s.items(signal)).sum();
        let sent = format!("otelcol_exporter_sent_{unit}_total");
        agent.wait_value(&sent, &[("exporter", "otlp/sink")], Duration::from_secs(10), |v| v == a_total as f64);
        agent.wait_value(&sent, &[("exporter", "otlp/rotel")], Duration::from_secs(10), |v| v == b_total as f64);
    }
    assert_eq!(rotel_a.stop(), Some(0));
    let rotel_b_log = rotel_b.log();
    assert_eq!(rotel_b.stop(), Some(0), "{rotel_b_log}");
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// One agent runs the profiler and the otlp receiver: the `chain` workload's profiles and the
/// SDK's traces, sent while it is profiled, leave through one `otlphttp` exporter to the sink,
/// and both carry the host facts of the resourcedetection `system` detector.
#[test]
fn profiles_and_otlp_through_one_agent() {
    const T: &str = "profiles_and_otlp_through_one_agent";
    if !bpf_allowed(T) || !python_peers(T) {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("collector-profiles");
    let sink = Sink::start(&dir);
    let (g, h) = (free_addr(), free_addr());
    let config = format!(
        "receivers:\n  profiling:\n    samples_per_second: 99\n    reporter_interval: 1s\n    \
         targets: {{ executables: [chain] }}\n    unwind_cache: {{ dir: '{}' }}\n  otlp: {}\n\
         processors:\n  resourcedetection: {{ detectors: [system] }}\n  batch: {{ timeout: 200ms }}\n\
         exporters:\n  otlphttp: {{ endpoint: 'http://127.0.0.1:{}' }}\n\
         service:\n  pipelines:\n    \
         profiles: {{ receivers: [profiling], processors: [resourcedetection], exporters: [otlphttp] }}\n    \
         traces: {{ receivers: [otlp], processors: [resourcedetection, batch], exporters: [otlphttp] }}\n",
        dir.join("unwind").display(),
        protocols(g, h),
        sink.http
    );
    let agent = Collector::start(&dir, &config);
    let chain = std::process::Command::new(workload("chain")).arg("3").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let traces = sdk_send(&dir, "http/protobuf", &format!("http://{h}"), "traces", 7, 0);
    let cpu_s = wait_cpu_seconds(chain);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let mut stored = Vec::new();
    // At 99 Hz the CPU time `chain` got (up to 3 s; less on a busy machine) is ~99 ticks a
    // second; half of them is the bar (the samples are aggregated per stack, so their count
    // says nothing about the ticks).
    let bar = ((cpu_s * 99.0 / 2.0) as u64).max(10);
    wait_for(
        &format!("the workload's profiles in the sink ({bar} CPU-clock ticks of {cpu_s:.2} CPU-s)"),
        Duration::from_secs(15),
        || {
            stored = sink.dump();
            stored.iter().filter(|r| r.signal == "profiles").map(|r| r.events).sum::<u64>() >= bar
        },
    );
    compare(&traces, &sink.dir, &["--allow-extra-resource-attrs", "--signals", "traces"]);
    let stored = sink.dump();
    for r in &stored {
        assert_eq!(r.resource.get("host.name").and_then(|v| v.as_str()), Some(hostname.as_str()), "{r:?}");
        if r.signal == "profiles" {
            let exe = r.resource.get("process.executable.name").and_then(|v| v.as_str());
            assert_eq!(exe, Some("chain"), "only the target is profiled: {r:?}");
        }
    }
    assert!(stored.iter().any(|r| r.signal == "traces"), "{stored:?}");
    agent.wait_value("otelcol_exporter_sent_spans_total", &[("exporter", "otlphttp")], Duration::from_secs(5), |v| {
        v == traces.items("traces") as f64
    });
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// Bad requests of every kind against one running agent each get the status the OTLP spec and
/// the Collector give them, cost no memory to speak of, and lose nothing: after each one a good
/// request goes through, and in the end the sink holds exactly the good requests.
#[test]
fn bad_input_gets_its_status_and_loses_nothing() {
    if !python_peers("bad_input_gets_its_status_and_loses_nothing") {
        return;
    }
    let dir = scratch("collector-bad-input");
    let sink = Sink::start(&dir);
    let pki = make_pki(&dir);
    let token = dir.join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let [g, h, ga, ha, gt, ht] = [(); 6].map(|_| free_addr());
    let tls = format!(
        "tls: {{ cert_file: '{}', key_file: '{}', client_ca_file: '{}' }}",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display()
    );
    let auth = format!("auth: {{ bearer_token_file: '{}' }}", token.display());
    let config = format!(
        "receivers:\n  \
         otlp: {{ protocols: {{ grpc: {{ endpoint: '{g}', max_recv_msg_size_mib: 1 }}, \
         http: {{ endpoint: '{h}', max_request_body_size: 4194304 }} }} }}\n  \
         otlp/auth: {{ protocols: {{ grpc: {{ endpoint: '{ga}', {auth} }}, http: {{ endpoint: '{ha}', {auth} }} }} }}\n  \
         otlp/mtls: {{ protocols: {{ grpc: {{ endpoint: '{gt}', {tls} }}, http: {{ endpoint: '{ht}', {tls} }} }} }}\n\
         exporters:\n  otlp: {{ endpoint: '127.0.0.1:{}', tls: {{ insecure: true }} }}\n\
         service:\n  pipelines:\n    traces: {{ receivers: [otlp, otlp/auth, otlp/mtls], exporters: [otlp] }}\n",
        sink.grpc
    );
    let agent = Collector::start(&dir, &config);
    let mut goods: Vec<String> = Vec::new();
    let client_tls = HttpTls { ca: &pki.ca, cert: Some((&pki.client_cert, &pki.client_key)) };
    // A good request over the same door as the bad one, which must go through.
    let good_http = |goods: &mut Vec<String>, after: &str, url: &str, extra: &[(&str, &str)], tls: Option<&HttpTls>| {
        let name = format!("good after {after}");
        let mut headers = vec![PROTOBUF];
        headers.extend_from_slice(extra);
        let r = http_post(url, &headers, one_span(&name, 0).encode_to_vec(), tls);
        assert!(matches!(&r, Ok(a) if a.status == 200), "{name}: {r:?}\n{}", agent.log());
        goods.push(name);
    };
    let traces = |addr: SocketAddr, scheme: &str| format!("{scheme}://{addr}/v1/traces");
    let good = one_span("template", 0).encode_to_vec();
    let mut bad_utf8 = one_span("abc-not-utf8", 0).encode_to_vec();
    let at = bad_utf8.windows(12).position(|w| w == b"abc-not-utf8").unwrap();
    bad_utf8[at + 1] = 0xff;
    let big = one_span("too big", 5 << 20).encode_to_vec();

    // OTLP/HTTP: status codes as the OTLP/HTTP spec and the Collector's confighttp give them.
    let bomb = gzip_bomb(1024);
    assert!(bomb.len() < 2 << 20, "the bomb is {} bytes", bomb.len());
    let hwm_before = agent.mem_kib("VmHWM");
    // What, path, headers, body, expected status.
    type HttpCase<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16);
    let cases: [HttpCase; 6] = [
        ("a truncated protobuf", "/v1/traces", vec![PROTOBUF], good[..good.len() - 3].to_vec(), 400),
        ("a wrong content type", "/v1/traces", vec![("content-type", "text/plain")], good.clone(), 415),
        ("invalid UTF-8", "/v1/traces", vec![PROTOBUF], bad_utf8.clone(), 400),
        ("a gzip bomb (1 MiB to 1 GiB)", "/v1/traces", vec![PROTOBUF, ("content-encoding", "gzip")], bomb, 413),
        ("an oversized body", "/v1/traces", vec![PROTOBUF], big.clone(), 413),
        ("an unknown path", "/v1/nothing", vec![PROTOBUF], good.clone(), 404),
    ];
    for (what, path, headers, body, want) in cases {
        let t = Instant::now();
        let r = http_post(&format!("http://{h}{path}"), &headers, body, None).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.status, want, "{what} over HTTP: {r:?}");
        eprintln!("{what} over HTTP: {} in {:?}", r.status, t.elapsed());
        good_http(&mut goods, &format!("{what} over HTTP"), &traces(h, "http"), &[], None);
    }
    let growth = |hwm_before: u64| agent.mem_kib("VmHWM").saturating_sub(hwm_before) / 1024;
    eprintln!("peak RSS grew by {} MiB over the HTTP cases", growth(hwm_before));
    assert!(growth(hwm_before) < 128, "the bomb and the big body cost {} MiB of peak RSS", growth(hwm_before));

    // OTLP/gRPC, with grpcio as the client.
    let good_grpc = |goods: &mut Vec<String>, after: &str, addr: SocketAddr, how: &GrpcCall| {
        let name = format!("good after {after}");
        let r = grpc_raw(&dir, addr, TRACE_EXPORT, &one_span(&name, 0).encode_to_vec(), how);
        assert_eq!(r.code, "OK", "{name}: {r:?}\n{}", agent.log());
        goods.push(name);
    };
    let plain = GrpcCall::default();
    for (what, body, want) in [
        ("a truncated protobuf", &good[..good.len() - 3], "INVALID_ARGUMENT"),
        ("invalid UTF-8", &bad_utf8[..], "INVALID_ARGUMENT"),
        ("an oversized message", &big[..], "RESOURCE_EXHAUSTED"),
    ] {
        let r = grpc_raw(&dir, g, TRACE_EXPORT, body, &plain);
        assert_eq!(r.code, want, "{what} over gRPC: {r:?}");
        good_grpc(&mut goods, &format!("{what} over gRPC"), g, &plain);
    }
    // A gzip bomb inside a gRPC message is refused while it inflates.
    let r = grpc_raw(&dir, g, TRACE_EXPORT, &vec![0u8; 64 << 20][..], &GrpcCall { gzip: true, ..plain.clone() });
    assert_eq!(r.code, "RESOURCE_EXHAUSTED", "64 MiB of zeros, gzip-compressed, over gRPC: {r:?}");
    good_grpc(&mut goods, "a compressed oversized message over gRPC", g, &plain);
    eprintln!("peak RSS grew by {} MiB over the HTTP and gRPC cases", growth(hwm_before));
    assert!(growth(hwm_before) < 128, "the gRPC cases cost {} MiB of peak RSS", growth(hwm_before));

    // A bearer token is required on otlp/auth.
    for (what, header) in [("no token", None), ("a wrong token", Some("Bearer nope"))] {
        let mut headers = vec![PROTOBUF];
        headers.extend(header.map(|v| ("authorization", v)));
        let r = http_post(&traces(ha, "http"), &headers, good.clone(), None).unwrap();
        assert_eq!(r.status, 401, "{what} over HTTP: {r:?}");
        good_http(
            &mut goods,
            &format!("{what} over HTTP"),
            &traces(ha, "http"),
            &[("authorization", "Bearer s3cret-token")],
            None,
        );
    }
    let r = grpc_raw(&dir, ga, TRACE_EXPORT, &good, &plain);
    assert_eq!(r.code, "UNAUTHENTICATED", "no token over gRPC: {r:?}");
    let r = grpc_raw(&dir, ga, TRACE_EXPORT, &good, &GrpcCall { token: Some("nope"), ..plain.clone() });
    assert_eq!(r.code, "UNAUTHENTICATED", "a wrong token over gRPC: {r:?}");
    good_grpc(&mut goods, "no token over gRPC", ga, &GrpcCall { token: Some("s3cret-token"), ..plain.clone() });

    // Mutual TLS on otlp/mtls: a client without a certificate does not get in.
    let no_cert = HttpTls { ca: &pki.ca, cert: None };
    let r = http_post(&traces(ht, "https"), &[PROTOBUF], good.clone(), Some(&no_cert));
    assert!(r.is_err(), "a TLS client without a certificate got an HTTP answer: {r:?}");
    good_http(&mut goods, "no client certificate over HTTP", &traces(ht, "https"), &[], Some(&client_tls));
    let r = grpc_raw(&dir, gt, TRACE_EXPORT, &good, &GrpcCall { ca: Some(&pki.ca), ..plain.clone() });
    assert_eq!(r.code, "UNAVAILABLE", "a gRPC TLS client without a certificate: {r:?}");
    let with_cert = GrpcCall { ca: Some(&pki.ca), cert: Some((&pki.client_cert, &pki.client_key)), ..plain.clone() };
    good_grpc(&mut goods, "no client certificate over gRPC", gt, &with_cert);

    // Exactly the good requests, once each, in the sink and in the counters.
    let n = goods.len() as f64;
    agent.wait_value("otelcol_exporter_sent_spans_total", &[("exporter", "otlp")], Duration::from_secs(10), |v| v == n);
    assert_eq!(agent.value("otelcol_receiver_accepted_spans_total", &[]), n, "{}", agent.metrics());
    assert_eq!(agent.value("otelcol_receiver_refused_spans_total", &[]), 0.0, "bad requests are not refused items");
    let mut stored: Vec<String> = sink.dump().into_iter().flat_map(|r| r.names).collect();
    stored.sort();
    goods.sort();
    assert_eq!(stored, goods);
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// One pipeline, two exporters: `otlp/dead` points where nothing listens (a small queue, retries)
/// and `otlp/live` at the sink. The live backend gets every SDK batch; the dead one's full queue
/// drops and counts, never grows past its capacity, and the agent's memory stays flat.
#[test]
fn a_dead_backend_does_not_stall_the_other_exporter() {
    if !python_peers("a_dead_backend_does_not_stall_the_other_exporter") {
        return;
    }
    let dir = scratch("collector-dead-backend");
    let sink = Sink::start(&dir);
    let (g, h, dead) = (free_addr(), free_addr(), free_addr());
    let config = format!(
        "receivers:\n  otlp: {}\n\
         exporters:\n  \
         otlp/dead:\n    endpoint: 'http://{dead}'\n    timeout: 1s\n    \
         sending_queue: {{ queue_size: 2, num_consumers: 1 }}\n    \
         retry_on_failure: {{ initial_interval: 100ms, max_interval: 200ms, max_elapsed_time: 60s }}\n  \
         otlp/live: {{ endpoint: '127.0.0.1:{}', tls: {{ insecure: true }} }}\n\
         service:\n  pipelines:\n    traces: {{ receivers: [otlp], exporters: [otlp/dead, otlp/live] }}\n",
        protocols(g, h),
        sink.grpc
    );
    let agent = Collector::start(&dir, &config);
    let rss_idle = agent.mem_kib("VmRSS");
    let done = AtomicBool::new(false);
    let max_queue = AtomicU64::new(0);
    let sends: Vec<Sent> = std::thread::scope(|s| {
        // Watches the dead exporter's queue while the data comes in.
        let watcher = s.spawn(|| {
            let labels = [("exporter", "otlp/dead"), ("data_type", "traces")];
            while !done.load(Ordering::Relaxed) {
                let m = agent.metrics();
                let (size, capacity) = (
                    sum(&m, "otelcol_exporter_queue_size", &labels),
                    sum(&m, "otelcol_exporter_queue_capacity", &labels),
                );
                assert_eq!(capacity, 2.0, "{m}");
                assert!(size <= capacity, "the dead exporter's queue holds {size} > {capacity}");
                max_queue.fetch_max(size as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let senders: Vec<_> = (0..2u32)
            .map(|t| {
                let dir = &dir;
                s.spawn(move || {
                    (0..4u32)
                        .map(|i| {
                            let seed = 1 + t * 4 + i;
                            let (proto, url) = if seed % 2 == 0 {
                                ("grpc", format!("http://{g}"))
                            } else {
                                ("http/protobuf", format!("http://{h}"))
                            };
                            sdk_send(dir, proto, &url, "traces", seed, 1000 * seed as u64)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let sends = senders.into_iter().flat_map(|h| h.join().unwrap()).collect();
        done.store(true, Ordering::Relaxed);
        watcher.join().unwrap();
        sends
    });
    let total: u64 = sends.iter().map(|s| s.items("traces")).sum();
    let mut report = String::new();
    for sent in &sends {
        report = compare(sent, &sink.dir, &["--allow-extra-items"]);
    }
    assert_eq!(received(&report, "traces"), total, "{report}");
    agent.wait_value("otelcol_exporter_sent_spans_total", &[("exporter", "otlp/live")], Duration::from_secs(10), |v| {
        v == total as f64
    });
    let m = agent.metrics();
    assert_eq!(sum(&m, "otelcol_receiver_accepted_spans_total", &[]), total as f64, "{m}");
    assert_eq!(sum(&m, "otelcol_receiver_refused_spans_total", &[]), 0.0, "one live exporter is enough to take data");
    assert!(sum(&m, "otelcol_exporter_enqueue_failed_spans_total", &[("exporter", "otlp/dead")]) > 0.0, "{m}");
    assert_eq!(sum(&m, "otelcol_exporter_sent_spans_total", &[("exporter", "otlp/dead")]), 0.0, "{m}");
    assert_eq!(sum(&m, "otelcol_exporter_enqueue_failed_spans_total", &[("exporter", "otlp/live")]), 0.0, "{m}");
    assert!(max_queue.load(Ordering::Relaxed) > 0, "the watcher never saw the dead queue fill");
    let growth_mib = agent.mem_kib("VmHWM").saturating_sub(rss_idle) / 1024;
    assert!(growth_mib < 64, "peak RSS grew by {growth_mib} MiB for {total} spans");
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// A `memory_limiter` whose limit is a little above the agent's idle RSS, in front of a lone,
/// dead exporter with a big queue: as the queue fills memory the receiver turns the limiter's
/// refusal into backpressure, HTTP 503 with Retry-After and gRPC UNAVAILABLE, and counts it.
#[test]
fn memory_limiter_turns_into_backpressure() {
    if !python_peers("memory_limiter_turns_into_backpressure") {
        return;
    }
    let dir = scratch("collector-memory-limiter");
    let (g, h, dead) = (free_addr(), free_addr(), free_addr());
    let config = |limit_mib: u64, spike_mib: u64| {
        format!(
            "receivers:\n  otlp: {}\n\
             processors:\n  memory_limiter: {{ check_interval: 100ms, limit_mib: {limit_mib}, spike_limit_mib: {spike_mib} }}\n\
             exporters:\n  otlp/dead:\n    endpoint: 'http://{dead}'\n    \
             sending_queue: {{ queue_size: 100000 }}\n    retry_on_failure: {{ initial_interval: 1s, max_elapsed_time: 300s }}\n\
             service:\n  pipelines:\n    traces: {{ receivers: [otlp], processors: [memory_limiter], exporters: [otlp/dead] }}\n",
            protocols(g, h)
        )
    };
    // The idle RSS of this very config, with a limit it cannot reach.
    let idle = Collector::start(&dir, &config(1 << 20, 1024));
    let probe = http_post(&format!("http://{h}/v1/traces"), &[PROTOBUF], one_span("warm-up", 0).encode_to_vec(), None);
    assert_eq!(probe.map(|a| a.status), Ok(200));
    std::thread::sleep(Duration::from_millis(300));
    let idle_mib = idle.mem_kib("VmRSS") / 1024;
    let (code, log) = idle.stop();
    assert_eq!(code, Some(0), "{log}");

    // Soft limit 16 MiB above idle: reached after a few dozen 512 KiB requests held in the queue.
    let agent = Collector::start(&dir, &config(idle_mib + 24, 8));
    let mut accepted = 0;
    let refusal = (0..400)
        .find_map(|i| {
            let r = http_post(
                &format!("http://{h}/v1/traces"),
                &[PROTOBUF],
                one_span(&format!("fill {i}"), 512 << 10).encode_to_vec(),
                None,
            )
            .unwrap();
            match r.status {
                200 => {
                    accepted += 1;
                    None
                }
                _ => Some(r),
            }
        })
        .unwrap_or_else(|| {
            panic!(
                "400 requests of 512 KiB were all taken (RSS {} MiB, idle {idle_mib} MiB)",
                agent.mem_kib("VmRSS") / 1024
            )
        });
    assert_eq!(refusal.status, 503, "{refusal:?}");
    assert!(refusal.retry_after.is_some(), "a 503 without Retry-After: {refusal:?}");
    eprintln!(
        "refused after {accepted} requests, RSS {} MiB (idle {idle_mib} MiB), Retry-After {:?}",
        agent.mem_kib("VmRSS") / 1024,
        refusal.retry_after
    );
    let refused = agent.value("otelcol_receiver_refused_spans_total", &[("transport", "http")]);
    assert!(refused >= 1.0, "{}", agent.metrics());
    assert!(agent.value("otelcol_processor_refused_spans_total", &[("processor", "memory_limiter")]) >= 1.0);
    let r = grpc_raw(&dir, g, TRACE_EXPORT, &one_span("over gRPC", 0).encode_to_vec(), &GrpcCall::default());
    assert_eq!(r.code, "UNAVAILABLE", "{r:?}");
    assert!(r.trailers.iter().any(|t| t == "grpc-status-details-bin"), "UNAVAILABLE without RetryInfo: {r:?}");
    agent.wait_value("otelcol_receiver_refused_spans_total", &[("transport", "grpc")], Duration::from_secs(5), |v| {
        v >= 1.0
    });
    assert_eq!(agent.value("otelcol_exporter_enqueue_failed_spans_total", &[]), 0.0, "the queue was not what refused");
    assert_eq!(agent.value("otelcol_receiver_accepted_spans_total", &[]), accepted as f64);
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
}
