//! The OTTL processors (`transform`, `filter`) end to end, issue #13: an `otelprof agent` that
//! redacts, reduces and tags what the OpenTelemetry Python SDK sends (`sdk_send.py`) and drops
//! some of it, and a `profile_statements` case on the profiling receiver's own output; what
//! arrives at `sink.py` is decoded in Python (opentelemetry-proto, `otlp_check.py`), not by us.
//! A bad statement is refused at config load with its place.
//!
//! Routing: the `routing` connector sends each tenant's telemetry to its own exporter.

mod common;

use std::{
    collections::BTreeSet,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{agent::wait_for, collector::*, servers::free_addr, *};
use serde_json::Value;

/// The card number the SDK sets on every span; the agent hashes it only for `env=prod`.
const CARD: &str = "4111111111111111";

/// Every span, metric data point and log record of the sink's requests, decoded with
/// opentelemetry-proto, each with its resource's `env`; and the SHA-256 (hex) of argv[3] by
/// hashlib, what `SHA256(...)` must give.
const DECODE_PY: &str = r#"
import hashlib, json, os, sys
sys.path.insert(0, sys.argv[1])
from otlp_canon import SIGNALS
def val(v):
    which = v.WhichOneof("value")
    x = getattr(v, which) if which else None
    return x if isinstance(x, (str, int, float, bool)) or x is None else str(x)
def attrs(kvs):
    return {kv.key: val(kv.value) for kv in kvs}
out = {"sha256": hashlib.sha256(sys.argv[3].encode()).hexdigest(), "spans": [], "points": [], "logs": []}
for f in sorted(os.listdir(sys.argv[2])):
    if not f.endswith(".pb") or f.startswith("refused-"):
        continue
    sig = f.split("-")[0]
    msg = SIGNALS[sig].request()
    with open(os.path.join(sys.argv[2], f), "rb") as fh:
        msg.ParseFromString(fh.read())
    if sig == "traces":
        for r in msg.resource_spans:
            env = attrs(r.resource.attributes).get("env")
            for s in r.scope_spans:
                for x in s.spans:
                    out["spans"].append({"env": env, "name": x.name, "attributes": attrs(x.attributes)})
    elif sig == "metrics":
        for r in msg.resource_metrics:
            env = attrs(r.resource.attributes).get("env")
            for s in r.scope_metrics:
                for m in s.metrics:
                    kind = m.WhichOneof("data")
                    for p in (getattr(m, kind).data_points if kind else []):
                        out["points"].append({"env": env, "metric": m.name, "attributes": attrs(p.attributes)})
    elif sig == "logs":
        for r in msg.resource_logs:
            env = attrs(r.resource.attributes).get("env")
            for s in r.scope_logs:
                for x in s.log_records:
                    out["logs"].append({"env": env, "severity_number": x.severity_number,
                                        "severity_text": x.severity_text, "attributes": attrs(x.attributes)})
print(json.dumps(out))
"#;

/// What [`DECODE_PY`] prints for a sink directory.
fn decode(sink: &Path) -> Value {
    let o = Command::new("python3").args(["-c", DECODE_PY]).arg(harness()).arg(sink).arg(CARD).output().unwrap();
    assert!(o.status.success(), "decoding the sink's requests: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("the decoder prints JSON")
}

fn records<'a>(decoded: &'a Value, kind: &str, env: &str) -> Vec<&'a Value> {
    decoded[kind].as_array().unwrap().iter().filter(|r| r["env"] == env).collect()
}

/// A string attribute of a decoded record.
fn attr<'a>(record: &'a Value, key: &str) -> Option<&'a str> {
    record["attributes"][key].as_str()
}

/// SDK → otlp receiver → transform (redact `card` where `env` is `prod`, tag spans and logs,
/// `keep_keys` on data points) → filter (logs below INFO) → otlp exporter → sink, sent twice
/// (env=prod, env=dev). The hash is hashlib's only for prod, every span is tagged, every data
/// point keeps only `method`, the logs below INFO are gone and the others arrived changed as
/// configured, and the agent's counters agree from receiver to exporter.
#[test]
fn sdk_telemetry_is_redacted_reduced_and_tagged() {
    const T: &str = "sdk_telemetry_is_redacted_reduced_and_tagged";
    if !python_peers(T) {
        return;
    }
    let dir = scratch("ottl-sdk");
    let sink = Sink::start(&dir);
    let g = free_addr();
    let config = format!(
        r#"receivers:
  otlp: {{ protocols: {{ grpc: {{ endpoint: '{g}' }} }} }}
processors:
  transform:
    trace_statements:
      - 'set(span.attributes["card"], SHA256(span.attributes["card"])) where resource.attributes["env"] == "prod"'
      - 'set(span.attributes["tagged"], "yes")'
    metric_statements:
      - 'keep_keys(datapoint.attributes, ["method"])'
    log_statements:
      - 'set(log.attributes["tagged"], "yes")'
      - 'set(log.severity_text, "FATAL") where log.severity_number == SEVERITY_NUMBER_FATAL'
  filter:
    log_conditions:
      - 'log.severity_number < SEVERITY_NUMBER_INFO'
exporters:
  otlp: {{ endpoint: '127.0.0.1:{}', tls: {{ insecure: true }} }}
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [transform, filter], exporters: [otlp] }}
    metrics: {{ receivers: [otlp], processors: [transform, filter], exporters: [otlp] }}
    logs: {{ receivers: [otlp], processors: [transform, filter], exporters: [otlp] }}
"#,
        sink.grpc
    );
    let agent = Collector::start(&dir, &config);
    let url = format!("http://{g}");
    let card = format!("card={CARD}");
    let send = |env: &str, seed: u32| {
        let extra = ["--resource-attr", &format!("env={env}"), "--span-attr", &card];
        sdk_send_with(&dir, "grpc", &url, "traces,metrics,logs", seed, 1000 * seed as u64, &extra)
    };
    let sends = [("prod", send("prod", 1)), ("dev", send("dev", 2))];
    // Of the SDK's 6 log records per send, DEBUG2 and TRACE are below INFO.
    const FILTERED_PER_SEND: u64 = 2;

    // Counters, from receiver to exporter: the transform passes everything on, the filter
    // drops exactly the low-severity logs, nothing is refused or fails.
    for (signal, unit, filtered_name) in
        [("traces", "spans", "spans"), ("metrics", "metric_points", "datapoints"), ("logs", "log_records", "logs")]
    {
        let total: u64 = sends.iter().map(|(_, s)| s.items(signal)).sum();
        assert!(total > 0, "the SDK sent no {signal}");
        let filtered = if signal == "logs" { FILTERED_PER_SEND * sends.len() as u64 } else { 0 };
        let out = (total - filtered) as f64;
        let wait = |name: &str, labels: &[(&str, &str)], want: f64| {
            agent.wait_value(name, labels, Duration::from_secs(10), |v| v == want);
        };
        wait(&format!("otelcol_exporter_sent_{unit}_total"), &[("exporter", "otlp")], out);
        wait(&format!("otelcol_receiver_accepted_{unit}_total"), &[("receiver", "otlp")], total as f64);
        for (processor, outgoing) in [("transform", total as f64), ("filter", out)] {
            let labels = [("processor", processor), ("otel_signal", signal)];
            wait("otelcol_processor_incoming_items_total", &labels, total as f64);
            wait("otelcol_processor_outgoing_items_total", &labels, outgoing);
        }
        wait(&format!("otelcol_processor_filter_{filtered_name}_filtered_total"), &[], filtered as f64);
        for bad in [
            format!("otelcol_processor_dropped_{unit}_total"),
            format!("otelcol_receiver_refused_{unit}_total"),
            format!("otelcol_exporter_send_failed_{unit}_total"),
        ] {
            assert_eq!(agent.value(&bad, &[]), 0.0, "{bad}\n{}", agent.metrics());
        }
    }

    let decoded = decode(&sink.dir);
    let hashed = decoded["sha256"].as_str().unwrap();
    assert_eq!(hashed.len(), 64, "{hashed}");
    for (env, sent) in &sends {
        // Traces: the card is hashlib's SHA-256 hex for prod only; every span is tagged; the
        // other attributes are untouched.
        let spans = records(&decoded, "spans", env);
        assert_eq!(spans.len() as u64, sent.items("traces"), "{env} spans: {spans:?}");
        let want = if *env == "prod" { hashed } else { CARD };
        for s in &spans {
            assert_eq!(attr(s, "card"), Some(want), "{env}: {s}");
            assert_eq!(attr(s, "tagged"), Some("yes"), "{env}: {s}");
        }
        let root = spans.iter().find(|s| s["name"] == "GET /checkout").expect("the root span arrived");
        assert_eq!(attr(root, "http.route"), Some("/checkout"), "{root}");

        // Metrics: every data point arrived, with `method` as its only attribute key; the
        // counter's two attribute sets are still told apart by it.
        let points = records(&decoded, "points", env);
        assert_eq!(points.len() as u64, sent.items("metrics"), "{env} points: {points:?}");
        for p in &points {
            let keys: Vec<&String> = p["attributes"].as_object().unwrap().keys().collect();
            assert!(keys.iter().all(|k| *k == "method"), "{env}: only `method` is kept: {p}");
        }
        let methods: BTreeSet<&str> =
            points.iter().filter(|p| p["metric"] == "peer.requests").filter_map(|p| attr(p, "method")).collect();
        assert_eq!(methods, BTreeSet::from(["GET", "POST"]), "{env}: {points:?}");

        // Logs: those below INFO are gone; the rest arrived tagged, the FATAL one named.
        let logs = records(&decoded, "logs", env);
        assert_eq!(logs.len() as u64, sent.items("logs") - FILTERED_PER_SEND, "{env} logs: {logs:?}");
        let severities: BTreeSet<u64> = logs.iter().map(|l| l["severity_number"].as_u64().unwrap()).collect();
        assert_eq!(severities, BTreeSet::from([9, 13, 17, 21]), "INFO, WARN, ERROR, FATAL: {logs:?}");
        for l in &logs {
            assert_eq!(attr(l, "tagged"), Some("yes"), "{env}: {l}");
            if l["severity_number"] == 21 {
                assert_eq!(l["severity_text"], "FATAL", "{env}: {l}");
            }
        }
    }
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// SDK → otlp receiver → transform (tag) → `routing` connector, three sends with tenants A, B
/// and C: A's traces, metrics and logs go through the `*/a` pipelines to sink A, B's to sink B,
/// C's (no route) to the default pipelines' `debug` exporter. Each sink holds exactly its
/// tenant's records, all of them, tagged; the connector's counters agree.
#[test]
fn sdk_telemetry_is_routed_by_tenant_to_two_exporters() {
    const T: &str = "sdk_telemetry_is_routed_by_tenant_to_two_exporters";
    if !python_peers(T) {
        return;
    }
    let dir = scratch("ottl-route");
    let (dir_a, dir_b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let (sink_a, sink_b) = (Sink::start(&dir_a), Sink::start(&dir_b));
    let g = free_addr();
    let mut pipelines = String::new();
    for signal in ["traces", "metrics", "logs"] {
        pipelines += &format!(
            "    {signal}: {{ receivers: [otlp], processors: [transform], exporters: [routing] }}
    {signal}/a: {{ receivers: [routing], exporters: [otlp/a] }}
    {signal}/b: {{ receivers: [routing], exporters: [otlp/b] }}
    {signal}/other: {{ receivers: [routing], exporters: [debug] }}
"
        );
    }
    let config = format!(
        r#"receivers:
  otlp: {{ protocols: {{ grpc: {{ endpoint: '{g}' }} }} }}
processors:
  transform:
    trace_statements: ['set(span.attributes["tagged"], "yes")']
    metric_statements: ['set(datapoint.attributes["tagged"], "yes")']
    log_statements: ['set(log.attributes["tagged"], "yes")']
connectors:
  routing:
    default_pipelines: [traces/other, metrics/other, logs/other]
    table:
      - statement: route() where resource.attributes["tenant"] == "A"
        pipelines: [traces/a, metrics/a, logs/a]
      - condition: attributes["tenant"] == "B"
        pipelines: [traces/b, metrics/b, logs/b]
exporters:
  otlp/a: {{ endpoint: '127.0.0.1:{}', tls: {{ insecure: true }} }}
  otlp/b: {{ endpoint: '127.0.0.1:{}', tls: {{ insecure: true }} }}
  debug: {{ verbosity: basic }}
service:
  pipelines:
{pipelines}"#,
        sink_a.grpc, sink_b.grpc
    );
    let agent = Collector::start(&dir, &config);
    let url = format!("http://{g}");
    let send = |tenant: &str, seed: u32| {
        let extra = ["--resource-attr", &format!("tenant={tenant}"), "--resource-attr", &format!("env={tenant}")];
        sdk_send_with(&dir, "grpc", &url, "traces,metrics,logs", seed, 1000 * seed as u64, &extra)
    };
    let sends = [("A", send("A", 1)), ("B", send("B", 2)), ("C", send("C", 3))];

    for (signal, unit) in [("traces", "spans"), ("metrics", "metric_points"), ("logs", "log_records")] {
        let sent = |tenant: &str| sends.iter().find(|(t, _)| *t == tenant).map_or(0, |(_, s)| s.items(signal));
        for (tenant, pipeline) in [("A", "a"), ("B", "b"), ("C", "other")] {
            assert!(sent(tenant) > 0, "the SDK sent no {signal} for {tenant}");
            let labels = [("connector", "routing"), ("pipeline", &format!("{signal}/{pipeline}") as &str)];
            agent.wait_value("otelprof_connector_routing_routed_items_total", &labels, Duration::from_secs(10), |v| {
                v == sent(tenant) as f64
            });
        }
        for exporter in ["otlp/a", "otlp/b"] {
            let want = sent(if exporter == "otlp/a" { "A" } else { "B" }) as f64;
            agent.wait_value(
                &format!("otelcol_exporter_sent_{unit}_total"),
                &[("exporter", exporter)],
                Duration::from_secs(10),
                |v| v == want,
            );
        }
        for bad in ["otelprof_connector_routing_unrouted_items_total", "otelprof_connector_routing_refused_items_total"]
        {
            assert_eq!(agent.value(bad, &[]), 0.0, "{bad}\n{}", agent.metrics());
        }
    }

    for (sink, tenant) in [(&sink_a, "A"), (&sink_b, "B")] {
        let decoded = decode(&sink.dir);
        let (_, sent) = sends.iter().find(|(t, _)| *t == tenant).unwrap();
        for (kind, signal) in [("spans", "traces"), ("points", "metrics"), ("logs", "logs")] {
            let all = decoded[kind].as_array().unwrap();
            let mine = records(&decoded, kind, tenant);
            assert_eq!(mine.len(), all.len(), "sink {tenant} holds only {tenant}'s {kind}: {all:?}");
            assert_eq!(mine.len() as u64, sent.items(signal), "sink {tenant}: every {kind} of {tenant}");
            for r in &mine {
                assert_eq!(attr(r, "tagged"), Some("yes"), "{tenant}: {r}");
            }
        }
    }
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// The profiling receiver targets two copies of `chain`; `profile_statements` renames the
/// service of one (A) and a `profile_conditions` drops the other (B). In the sink, decoded and
/// checked by `otlp_check.py`, every request is valid OTLP, A's profiles carry
/// `service.name: renamed`, and none of B's arrived, although B was sampled (the filter
/// counted its samples); the counters add up from receiver to exporter.
#[test]
fn profile_statements_rename_a_service_and_drop_a_process() {
    const T: &str = "profile_statements_rename_a_service_and_drop_a_process";
    if !bpf_allowed(T) || !python_peers(T) {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("ottl-profiles");
    // Names of this test's own (short enough to be whole in `comm`): other tests' `chain`
    // must not be targets.
    let (a, b) = ("ottlrename", "ottldrop");
    let (exe_a, exe_b) = (dir.join(a), dir.join(b));
    std::fs::copy(workload("chain"), &exe_a).unwrap();
    std::fs::copy(workload("chain"), &exe_b).unwrap();
    let sink = Sink::start(&dir);
    let config = format!(
        r#"receivers:
  profiling:
    samples_per_second: 99
    reporter_interval: 1s
    targets: {{ executables: [{a}, {b}] }}
    unwind_cache: {{ dir: '{}' }}
processors:
  transform:
    profile_statements:
      - 'set(resource.attributes["service.name"], "renamed") where resource.attributes["process.executable.name"] == "{a}"'
  filter:
    profile_conditions:
      - 'resource.attributes["process.executable.name"] == "{b}"'
exporters:
  otlphttp: {{ endpoint: 'http://127.0.0.1:{}' }}
service:
  pipelines:
    profiles: {{ receivers: [profiling], processors: [transform, filter], exporters: [otlphttp] }}
"#,
        dir.join("unwind").display(),
        sink.http
    );
    let agent = Collector::start(&dir, &config);
    let mut workloads = [&exe_a, &exe_b].map(|exe| Command::new(exe).arg("3").spawn().unwrap());
    let filtered = "otelcol_processor_filter_profiles_filtered_total";
    let samples_of_a = |stored: &[Stored]| -> u64 {
        stored
            .iter()
            .filter(|r| r.signal == "profiles")
            .filter(|r| r.resource.get("process.executable.name").and_then(Value::as_str) == Some(a))
            .map(|r| r.events)
            .sum()
    };
    // CPU-clock ticks (samples are aggregated per stack: their count says little): 20 ticks
    // at 99 Hz are 0.2 CPU-s of A, which it gets even on a busy machine.
    wait_for("A's samples (20 ticks) in the sink and B's filtered", Duration::from_secs(20), || {
        samples_of_a(&sink.dump()) >= 20 && agent.value(filtered, &[]) > 0.0
    });
    for w in &mut workloads {
        assert!(w.wait().unwrap().success());
    }

    // Once the workloads are gone the counters settle: every sample the receiver accepted went
    // through the transform, the filter passed on all but the ones it counted, the exporter
    // sent those.
    let settled = || {
        let m = agent.metrics();
        let v = |name: &str, labels: &[(&str, &str)]| sum(&m, name, labels);
        let accepted = v("otelcol_receiver_accepted_profile_samples_total", &[("receiver", "profiling")]);
        let io = |p: &str, dir: &str| v(&format!("otelcol_processor_{dir}_items_total"), &[("processor", p)]);
        let sent = v("otelcol_exporter_sent_profile_samples_total", &[("exporter", "otlphttp")]);
        let ok = accepted > 0.0
            && io("transform", "incoming") == accepted
            && io("transform", "outgoing") == accepted
            && io("filter", "incoming") == accepted
            && io("filter", "outgoing") + v(filtered, &[]) == accepted
            && io("filter", "outgoing") == sent;
        (ok, accepted, sent, m)
    };
    let t = Instant::now();
    let sent = loop {
        let (ok, accepted, sent, m) = settled();
        if ok {
            // Two reporter intervals later nothing new may have come.
            std::thread::sleep(Duration::from_secs(2));
            let (still, again, _, _) = settled();
            if still && again == accepted {
                break sent;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(20), "the counters did not settle:\n{m}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for bad in ["otelcol_processor_dropped_profile_samples_total", "otelcol_exporter_send_failed_profile_samples_total"]
    {
        assert_eq!(agent.value(bad, &[]), 0.0, "{bad}\n{}", agent.metrics());
    }

    let stored = sink.dump();
    let in_sink: u64 = stored.iter().filter(|r| r.signal == "profiles").map(|r| r.items).sum();
    assert_eq!(in_sink as f64, sent, "the sink holds what the exporter sent: {stored:?}");
    let mut files: Vec<_> = std::fs::read_dir(&sink.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name().unwrap().to_str().unwrap().starts_with("profiles-")
                && p.extension().is_some_and(|e| e == "pb")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no profiles in the sink");
    let mut renamed = 0;
    for file in &files {
        // The reader checks the dictionary's invariants and fails on a broken request.
        let summary = python_otlp("request", file).expect("python_peers checked opentelemetry-proto");
        for r in summary["resources"].as_array().unwrap() {
            let at = &r["attributes"];
            assert_ne!(at["process.executable.name"], b, "B's profiles are dropped: {}: {r}", file.display());
            assert_eq!(at["process.executable.name"], a, "only the targets are profiled: {}: {r}", file.display());
            assert_eq!(at["service.name"], "renamed", "{}: {r}", file.display());
            // Ticks, not stacks: samples are aggregated per stack, and A's few stacks may be
            // fewer than 20 although the sink counted 20 ticks.
            renamed += r["profiles"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|p| p["samples"].as_array().unwrap())
                .map(|s| s["count"].as_u64().unwrap())
                .sum::<u64>();
        }
    }
    assert!(renamed >= 20, "{renamed} ticks of A");
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// A statement that does not compile is a config error naming the key, the place in the
/// statement and the line of the file: `validate` and `agent` both exit 2 with it.
#[test]
fn a_bad_statement_is_refused_with_its_position() {
    let dir = scratch("ottl-bad-statement");
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        r#"receivers:
  otlp:
    protocols: { grpc: { endpoint: '127.0.0.1:0' } }
processors:
  transform:
    log_statements:
      - 'set(log.body, Sha256("x"))'
exporters:
  debug:
service:
  pipelines:
    logs: { receivers: [otlp], processors: [transform], exporters: [debug] }
"#,
    )
    .unwrap();
    let want = r#"otelprof: config error: processors.transform.log_statements[0] (line 7, column 9): 1:15: unknown function "Sha256""#;
    for cmd in ["validate", "agent"] {
        let o = run(otelprof().args([cmd, "--config"]).arg(&path));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {err}");
        assert_eq!(err.trim(), want, "{cmd}");
    }
}
