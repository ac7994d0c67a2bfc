//! OpAMP end to end (issue #14): the agent (`extensions: opamp`) against a real OpAMP server
//! (`tests/python/opamp/server.py`, protobuf classes generated from the same vendored protos),
//! over WebSocket and plain HTTP.

mod common;

use std::{
    net::TcpStream,
    path::Path,
    time::{Duration, Instant},
};

use common::{collector::Collector, opamp::*, scratch, servers::free_addr};
use serde_json::Value;

/// ReportsStatus | ReportsEffectiveConfig | ReportsHealth | ReportsRemoteConfig | ReportsHeartbeat
/// | AcceptsOpAMPConnectionSettings | ReportsConnectionSettingsStatus | ReportsOwnMetrics.
const REPORTS: u64 = 0x1 | 0x4 | 0x800 | 0x1000 | 0x2000 | 0x100 | 0x8000 | 0x40;
const ACCEPTS_REMOTE_CONFIG: u64 = 0x2;

fn num(v: &Value) -> u64 {
    v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_u64()).unwrap_or(0)
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300)).is_ok()
}

fn wait(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The agent's config: an otlp receiver on `port`, a debug exporter, and `opamp` as given.
fn config(port: u16, server: &str, dir: &Path, remote: &str) -> String {
    format!(
        "
receivers:
  otlp:
    protocols: {{http: {{endpoint: '127.0.0.1:{port}'}}}}
exporters:
  debug: {{}}
  otlphttp:
    endpoint: http://127.0.0.1:9
    headers: {{x-api-key: abc123secret}}
extensions:
  opamp:
    server: {server}
    storage: {{directory: '{state}'}}
    config_apply_timeout: 2s
{remote}
service:
  extensions: [opamp]
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
    logs: {{receivers: [otlp], exporters: [otlphttp]}}
",
        state = dir.join("state").display()
    )
}

fn remote_enabled(dir: &Path, extra: &str) -> String {
    format!(
        "    remote_config:
      enabled: true
      allowed_paths: [receivers.otlp, exporters.debug, processors]
      files_dir: '{}'
{extra}",
        dir.join("files").display()
    )
}

/// First message with the full state and the exact capability bits; later ones only what
/// changed; heartbeats at the offered interval; ReportFullState; secrets redacted;
/// agent_disconnect last.
#[test]
fn websocket_protocol_full_state_heartbeats_and_disconnect() {
    if !available("websocket_protocol_full_state_heartbeats_and_disconnect") {
        return;
    }
    let dir = scratch("opamp-ws");
    let server = OpampServer::start(&dir);
    let ws = format!("{{ws: {{endpoint: '{}'}}}}", server.ws_url());
    let agent = Collector::start(&dir, &config(free_addr().port(), &ws, &dir, ""));
    wait("a first message", Duration::from_secs(15), || !server.messages().is_empty());
    let first = &server.messages()[0];
    assert_eq!(num(&first["capabilities"]), REPORTS, "exact bits, no AcceptsRemoteConfig when not enabled: {first:#}");
    let ident = first["agent_description"]["identifying_attributes"].to_string();
    for want in ["service.name", "otelprof", "service.version", "service.instance.id"] {
        assert!(ident.contains(want), "{want}: {ident}");
    }
    let other = first["agent_description"]["non_identifying_attributes"].to_string();
    for want in ["host.name", "host.arch", "os.type", "os.description"] {
        assert!(other.contains(want), "{want}: {other}");
    }
    assert!(first["health"]["healthy"].as_bool().unwrap_or(false), "{first:#}");
    let traces = &first["health"]["component_health_map"]["pipeline:traces"];
    assert!(traces["healthy"].as_bool().unwrap_or(false), "health per pipeline: {first:#}");
    let members: Vec<&String> =
        traces["component_health_map"].as_object().map(|m| m.keys().collect()).unwrap_or_default();
    assert!(members.iter().any(|m| *m == "receiver/otlp/http"), "{members:?}");
    assert!(members.iter().any(|m| *m == "exporter/debug/traces"), "{members:?}");
    let logs = &first["health"]["component_health_map"]["pipeline:logs"]["component_health_map"];
    assert!(logs.get("exporter/otlphttp/logs").is_some() && logs.get("exporter/debug/traces").is_none(), "{logs:#}");
    let state = server.get("/state");
    let effective = state["effective_config"]["otelprof.yaml"]["body"].as_str().unwrap_or_default().to_string();
    assert!(effective.contains("x-api-key") && effective.contains("[REDACTED]"), "{effective}");
    assert!(!effective.contains("abc123secret"), "a header value was sent: {effective}");

    server.post("/connection_settings", serde_json::json!({ "heartbeat_interval_seconds": 1 }));
    let before = server.messages().len();
    wait("three heartbeats at 1 s", Duration::from_secs(10), || server.messages().len() >= before + 3);
    let msgs = server.messages();
    let base = num(&msgs[0]["sequence_num"]);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(num(&m["sequence_num"]), base + i as u64, "sequence numbers go up by one: {m:#}");
        assert_eq!(num(&m["capabilities"]), REPORTS, "capabilities in every message");
    }
    let heartbeat = msgs.last().unwrap();
    assert!(heartbeat.get("agent_description").is_none(), "later messages carry only what changed: {heartbeat:#}");
    assert!(heartbeat.get("effective_config").is_none(), "{heartbeat:#}");

    let n = server.messages().len();
    server.post("/flags", serde_json::json!({ "report_full_state": true }));
    wait("a full report after ReportFullState", Duration::from_secs(10), || {
        server.messages()[n..]
            .iter()
            .any(|m| m.get("agent_description").is_some() && m.get("effective_config").is_some())
    });

    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    let last = server.messages().last().cloned().unwrap();
    assert!(last.get("agent_disconnect").is_some(), "the last message says goodbye: {last:#}");
}

/// Plain HTTP: the OpAMP-Instance-UID header, AcceptsRemoteConfig once enabled, the instance
/// UID made once and kept across restarts.
#[test]
fn http_transport_and_a_stored_instance_uid() {
    if !available("http_transport_and_a_stored_instance_uid") {
        return;
    }
    let dir = scratch("opamp-http");
    let server = OpampServer::start(&dir);
    let http = format!("{{http: {{endpoint: '{}', polling_interval: 1s}}}}", server.http_url());
    let cfg = config(free_addr().port(), &http, &dir, &remote_enabled(&dir, ""));
    let agent = Collector::start(&dir, &cfg);
    wait("a few polls", Duration::from_secs(15), || server.messages().len() >= 2);
    let m = server.messages();
    assert_eq!(m[0]["transport"], "http");
    assert_eq!(num(&m[0]["capabilities"]), REPORTS | ACCEPTS_REMOTE_CONFIG);
    let uid = m[0]["instance_uid_hex"].as_str().unwrap().to_string();
    let header = m[0]["instance_uid_header"].as_str().unwrap_or_default().replace('-', "");
    assert_eq!(header, uid, "the OpAMP-Instance-UID header is the message's uid");
    assert_eq!(&uid[12..13], "7", "a UUIDv7: {uid}");
    agent.stop();
    assert!(dir.join("state/instance_uid").exists());
    server.post("/reset", serde_json::json!({}));
    let agent = Collector::start(&dir, &cfg);
    wait("the restarted agent's first message", Duration::from_secs(15), || !server.messages().is_empty());
    assert_eq!(server.messages()[0]["instance_uid_hex"].as_str().unwrap(), uid, "the same uid after a restart");
    agent.stop();
}

/// Remote configs: applied (the receiver moves without an agent restart); the same hash not
/// applied twice; a config that does not parse, one outside the allow-list and one whose
/// receiver cannot start all FAILED with the old config still serving (the last one rolled
/// back); and an agent restarted while the server is down runs the last good config.
#[test]
fn remote_configs_applied_refused_rolled_back_and_persisted() {
    if !available("remote_configs_applied_refused_rolled_back_and_persisted") {
        return;
    }
    let dir = scratch("opamp-remote");
    let server = OpampServer::start(&dir);
    let ws = format!("{{ws: {{endpoint: '{}'}}}}", server.ws_url());
    let (p1, p2) = (free_addr().port(), free_addr().port());
    let agent = Collector::start(&dir, &config(p1, &ws, &dir, &remote_enabled(&dir, "")));
    wait("the agent connected", Duration::from_secs(15), || !server.messages().is_empty());
    assert!(port_open(p1));

    let moved = format!("receivers:\n  otlp:\n    protocols: {{http: {{endpoint: '127.0.0.1:{p2}'}}}}\n");
    let h = server.offer(&[("otelprof.yaml", &moved)]);
    server.wait_status(&h, "APPLIED", Duration::from_secs(15));
    assert!(port_open(p2) && !port_open(p1), "the receiver moved to {p2}");
    let statuses: Vec<String> = server
        .messages()
        .iter()
        .filter_map(|m| m["remote_config_status"]["status"].as_str().map(str::to_string))
        .collect();
    assert!(statuses.iter().any(|s| s.ends_with("APPLYING")), "APPLYING before APPLIED: {statuses:?}");
    let effective = server.get("/state")["effective_config"]["otelprof.yaml"]["body"].as_str().unwrap().to_string();
    assert!(effective.contains(&p2.to_string()), "the new effective config: {effective}");
    assert_eq!(agent.log().matches("opamp: applying a remote config").count(), 1);

    // The same config offered again (same hash): not applied again, its status reported again.
    server.offer(&[("otelprof.yaml", &moved)]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(agent.log().matches("opamp: applying a remote config").count(), 1, "{}", agent.log());

    let bad = "receivers:\n  otlp:\n    protocols: {http: {endpont: '127.0.0.1:1'}}\n";
    let h = server.offer(&[("otelprof.yaml", bad)]);
    let e = server.wait_status(&h, "FAILED", Duration::from_secs(15));
    assert!(e.contains("receivers.otlp.protocols.http.endpont") || e.contains("endpont"), "{e}");
    assert!(port_open(p2), "the old config still runs");

    let outside = "exporters:\n  otlphttp: {endpoint: 'http://evil:4318'}\n";
    let h = server.offer(&[("otelprof.yaml", outside)]);
    let e = server.wait_status(&h, "FAILED", Duration::from_secs(15));
    assert!(e.starts_with("exporters.otlphttp.endpoint: not in remote_config.allowed_paths"), "{e}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p3 = taken.local_addr().unwrap().port();
    let cannot_start = format!("receivers:\n  otlp:\n    protocols: {{http: {{endpoint: '127.0.0.1:{p3}'}}}}\n");
    let h = server.offer(&[("otelprof.yaml", &cannot_start)]);
    let e = server.wait_status(&h, "FAILED", Duration::from_secs(20));
    assert!(e.contains("receivers.otlp") && e.contains("rolled back"), "{e}");
    wait("the rolled-back receiver", Duration::from_secs(10), || port_open(p2));
    drop(taken);
    let health = server.get("/state")["health"].clone();
    assert!(health["healthy"].as_bool().unwrap_or(false), "healthy again after the rollback: {health:#}");

    // Restarted while the server is down: the last good remote config runs.
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    let ws_port = server.ws;
    server.stop();
    let dead = format!("{{ws: {{endpoint: 'ws://127.0.0.1:{ws_port}/v1/opamp'}}}}");
    let agent = Collector::start(&dir, &config(p1, &dead, &dir, &remote_enabled(&dir, "")));
    wait("the persisted config's receiver", Duration::from_secs(10), || port_open(p2));
    assert!(!port_open(p1), "not the local file's port");
    assert!(agent.log().contains("running the last good remote config"), "{}", agent.log());
    agent.stop();
}

/// With `signature.public_key_file`, a remote config applies only with a detached Ed25519
/// signature that verifies: missing, wrong and right.
#[test]
fn signed_remote_configs() {
    if !available("signed_remote_configs") {
        return;
    }
    let dir = scratch("opamp-signed");
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (public, private) = keygen(&keys);
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (_, wrong_key) = keygen(&other);
    let server = OpampServer::start(&dir);
    let ws = format!("{{ws: {{endpoint: '{}'}}}}", server.ws_url());
    let extra = format!("      signature: {{public_key_file: '{}'}}\n", public.display());
    let (p1, p2) = (free_addr().port(), free_addr().port());
    let agent = Collector::start(&dir, &config(p1, &ws, &dir, &remote_enabled(&dir, &extra)));
    wait("the agent connected", Duration::from_secs(15), || !server.messages().is_empty());
    let body = format!("receivers:\n  otlp:\n    protocols: {{http: {{endpoint: '127.0.0.1:{p2}'}}}}\n");

    let h = server.offer(&[("otelprof.yaml", &body)]);
    let e = server.wait_status(&h, "FAILED", Duration::from_secs(15));
    assert!(e.starts_with("signature required"), "{e}");

    let bad_sig = sign(&wrong_key, &body, &dir);
    let h = server.offer(&[("otelprof.yaml", &body), ("otelprof.yaml.sig", &bad_sig)]);
    let e = server.wait_status(&h, "FAILED", Duration::from_secs(15));
    assert!(e.starts_with("signature does not verify"), "{e}");
    assert!(port_open(p1) && !port_open(p2));

    let good = sign(&private, &body, &dir);
    let h = server.offer(&[("otelprof.yaml", &body), ("otelprof.yaml.sig", &good)]);
    server.wait_status(&h, "APPLIED", Duration::from_secs(15));
    assert!(port_open(p2));
    agent.stop();
}

/// The server refuses with Retry-After: the agent waits at least that long before it
/// reconnects. The server restarts: the agent reconnects and sends its full state again.
#[test]
fn retry_after_is_honoured_and_a_restarted_server_gets_the_full_state() {
    if !available("retry_after_is_honoured_and_a_restarted_server_gets_the_full_state") {
        return;
    }
    let dir = scratch("opamp-retry");
    let server = OpampServer::start(&dir);
    let ws = format!("{{ws: {{endpoint: '{}'}}}}", server.ws_url());
    let agent = Collector::start(&dir, &config(free_addr().port(), &ws, &dir, ""));
    wait("the agent connected", Duration::from_secs(15), || !server.messages().is_empty());

    server.post("/unavailable", serde_json::json!({ "count": 1, "retry_after_seconds": 3, "ws_mode": "handshake" }));
    server.post("/reset", serde_json::json!({}));
    server.post("/disconnect", serde_json::json!({}));
    wait("a refusal", Duration::from_secs(15), || server.get("/refusals").as_array().is_some_and(|a| !a.is_empty()));
    let refused_at = server.get("/refusals")[0]["at"].as_f64().or_else(|| server.get("/refusals")[0]["time"].as_f64());
    wait("the reconnection", Duration::from_secs(20), || !server.messages().is_empty());
    let back_at = server.messages()[0]["received_at"].as_f64().unwrap();
    if let Some(refused_at) = refused_at {
        assert!(back_at - refused_at >= 2.9, "reconnected {:.2} s after a Retry-After of 3 s", back_at - refused_at);
    }

    let ws_port = server.ws;
    server.stop();
    std::thread::sleep(Duration::from_millis(500));
    let server = OpampServer::start_on(&dir, ws_port, 0);
    wait("the agent back on the restarted server", Duration::from_secs(40), || !server.messages().is_empty());
    let first = &server.messages()[0];
    assert!(
        first.get("agent_description").is_some() && first.get("effective_config").is_some(),
        "full state: {first:#}"
    );
    agent.stop();
}

/// The profiler's rate raised over OpAMP: `APPLIED`, the same agent process and BPF programs
/// (the receiver is reconfigured live, not restarted), the exported profiles' period goes
/// from 1/19 s to 1/99 s, and the target's samples have no gap across the change.
#[test]
fn a_remote_config_raises_the_sampling_rate_without_a_restart_or_a_gap() {
    use common::{bpf_allowed, bpf_lock, servers::grpc_server, workload};
    let test = "a_remote_config_raises_the_sampling_rate_without_a_restart_or_a_gap";
    if !available(test) || !bpf_allowed(test) {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("opamp-rate");
    let exe = dir.join("opampchain");
    std::fs::copy(workload("chain"), &exe).unwrap();
    let busy = std::process::Command::new(&exe).arg("30").spawn().unwrap();
    let server = OpampServer::start(&dir);
    let (gaddr, received) = grpc_server(vec![]);
    let cfg = format!(
        "
receivers:
  profiling:
    samples_per_second: 19
    reporter_interval: 1s
    targets: {{pids: [{pid}]}}
exporters:
  otlp: {{endpoint: '{gaddr}', tls: {{insecure: true}}}}
extensions:
  opamp:
    server: {{ws: {{endpoint: '{ws}'}}}}
    storage: {{directory: '{state}'}}
    remote_config: {{enabled: true, allowed_paths: [receivers.profiling.samples_per_second, receivers.profiling.targets]}}
service:
  extensions: [opamp]
  pipelines:
    profiles: {{receivers: [profiling], exporters: [otlp]}}
",
        pid = busy.id(),
        ws = server.ws_url(),
        state = dir.join("state").display()
    );
    let agent = Collector::start(&dir, &cfg);
    let periods = || -> Vec<(i64, Vec<u64>)> {
        received
            .lock()
            .unwrap()
            .received
            .iter()
            .flat_map(|r| r.request.resource_profiles.iter())
            .flat_map(|rp| &rp.scope_profiles)
            .flat_map(|sp| &sp.profiles)
            .map(|p| (p.period, p.samples.iter().flat_map(|s| s.timestamps_unix_nano.iter().copied()).collect()))
            .collect()
    };
    let at_19 = 1_000_000_000 / 19;
    let at_99 = 1_000_000_000 / 99;
    wait("two reports at 19 Hz", Duration::from_secs(20), || {
        periods().iter().filter(|(p, s)| *p == at_19 && !s.is_empty()).count() >= 2
    });
    let h = server.offer(&[("otelprof.yaml", "receivers:\n  profiling:\n    samples_per_second: 99\n")]);
    server.wait_status(&h, "APPLIED", Duration::from_secs(15));
    wait("two reports at 99 Hz", Duration::from_secs(20), || {
        periods().iter().filter(|(p, s)| *p == at_99 && !s.is_empty()).count() >= 2
    });
    let log = agent.log();
    assert!(log.contains("reconfigured live [\"profiling\"]"), "{log}");
    assert_eq!(log.matches(" CPUs, reporting every ").count(), 1, "the programs were loaded once: {log}");
    assert!(!log.contains("profiling stopped"), "the profiler never stopped: {log}");
    let all = periods();
    for (p, _) in &all {
        assert!(*p == at_19 || *p == at_99, "every profile says its rate: {p}");
    }
    // Across the change, the busy target's samples keep coming: no gap over 0.5 s.
    let last_19 = all.iter().filter(|(p, _)| *p == at_19).flat_map(|(_, t)| t).max().copied().unwrap();
    let first_99 = all.iter().filter(|(p, _)| *p == at_99).flat_map(|(_, t)| t).min().copied().unwrap();
    assert!(first_99 >= last_19, "the 99 Hz samples follow the 19 Hz ones");
    assert!(
        first_99 - last_19 < 500_000_000,
        "a gap of {} ms in sampling at the change",
        (first_99 - last_19) / 1_000_000
    );
    let n19: usize = all.iter().filter(|(p, _)| *p == at_19).map(|(_, t)| t.len()).sum();
    let n99: usize = all.iter().filter(|(p, _)| *p == at_99).map(|(_, t)| t.len()).sum();
    eprintln!(
        "samples: {n19} at 19 Hz, {n99} at 99 Hz; {} ms from the last 19 Hz sample to the first 99 Hz one",
        (first_99 - last_19) / 1_000_000
    );

    // The targets changed remotely too: the other process is profiled from then on, live.
    let other = std::process::Command::new(&exe).arg("30").spawn().unwrap();
    let pids = |want: u32| {
        received.lock().unwrap().received.iter().flat_map(|r| r.request.resource_profiles.iter()).any(|rp| {
            rp.resource.as_ref().is_some_and(|r| {
                r.attributes.iter().any(|kv| {
                    kv.key == "process.pid"
                        && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()),
                            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(p)) if *p == want as i64)
                })
            })
        })
    };
    assert!(!pids(other.id()), "not a target yet");
    let retarget =
        format!("receivers:\n  profiling:\n    samples_per_second: 99\n    targets: {{pids: [{}]}}\n", other.id());
    let h = server.offer(&[("otelprof.yaml", &retarget)]);
    server.wait_status(&h, "APPLIED", Duration::from_secs(15));
    wait("profiles of the new target", Duration::from_secs(20), || pids(other.id()));
    let log = agent.log();
    assert_eq!(log.matches("reconfigured live [\"profiling\"]").count(), 2, "{log}");
    assert_eq!(log.matches(" CPUs, reporting every ").count(), 1, "still the first load: {log}");
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    for mut p in [busy, other] {
        let _ = p.kill();
        let _ = p.wait();
    }
}

/// One OTLP/JSON span with `service.name` = `svc`, posted to the agent's OTLP/HTTP receiver.
fn post_span(port: u16, name: &str) {
    use std::io::{Read, Write};
    let body = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},"scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"{name}","kind":1,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000001000000000"}}]}}]}}]}}"#
    );
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        c,
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// OTTL statements and an exporter changed remotely: the new statement runs on the next span,
/// the exporter writes where the new config says (under `files_dir`), and a statement that
/// does not compile is FAILED naming the key with the old statements still running.
#[test]
fn ottl_statements_and_exporters_changed_remotely() {
    if !available("ottl_statements_and_exporters_changed_remotely") {
        return;
    }
    let dir = scratch("opamp-ottl");
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let server = OpampServer::start(&dir);
    let port = free_addr().port();
    let a = dir.join("a.jsonl");
    let cfg = format!(
        "
receivers:
  otlp: {{protocols: {{http: {{endpoint: '127.0.0.1:{port}'}}}}}}
processors:
  transform: {{trace_statements: ['set(span.attributes[\"stage\"], \"local\")']}}
exporters:
  file: {{path: '{a}', flush_interval: 100ms}}
extensions:
  opamp:
    server: {{ws: {{endpoint: '{ws}'}}}}
    storage: {{directory: '{state}'}}
    remote_config:
      enabled: true
      allowed_paths: [processors.transform/*, exporters.file.path]
      files_dir: '{files}'
service:
  extensions: [opamp]
  pipelines:
    traces: {{receivers: [otlp], processors: [transform], exporters: [file]}}
",
        a = a.display(),
        ws = server.ws_url(),
        state = dir.join("state").display(),
        files = files.display(),
    );
    let agent = Collector::start(&dir, &cfg);
    wait("the agent connected", Duration::from_secs(15), || !server.messages().is_empty());
    post_span(port, "one");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    wait("span one in a.jsonl", Duration::from_secs(10), || read(&a).contains("\"one\""));
    assert!(read(&a).contains("local"));

    let b = files.join("b.jsonl");
    let remote = format!(
        "processors:\n  transform:\n    trace_statements: ['set(span.attributes[\"stage\"], \"remote\")']\nexporters:\n  file: {{path: '{}'}}\n",
        b.display()
    );
    let h = server.offer(&[("otelprof.yaml", &remote)]);
    server.wait_status(&h, "APPLIED", Duration::from_secs(15));
    post_span(port, "two");
    wait("span two in b.jsonl", Duration::from_secs(10), || read(&b).contains("\"two\""));
    assert!(read(&b).contains("remote") && !read(&b).contains("local"), "{}", read(&b));
    assert!(!read(&a).contains("\"two\""), "the old file no longer gets spans");

    let broken =
        "processors:\n  transform:\n    trace_statements: ['set(span.attributes[\"x\"], Sha256(span.name))']\n";
    let h = server.offer(&[("otelprof.yaml", broken)]);
    let e = server.wait_status(&h, "FAILED", Duration::from_secs(15));
    assert!(e.starts_with("processors.transform.trace_statements[0]") && e.contains("Sha256"), "{e}");
    post_span(port, "three");
    wait("span three in b.jsonl", Duration::from_secs(10), || read(&b).contains("\"three\""));
    assert_eq!(read(&b).matches("remote").count(), 2, "the last good statements still run: {}", read(&b));

    let outside = "exporters:\n  file: {path: /tmp/elsewhere.jsonl}\n";
    let h = server.offer(&[("otelprof.yaml", outside)]);
    let e = server.wait_status(&h, "FAILED", Duration::from_secs(15));
    assert!(e.starts_with("exporters.file.path: `/tmp/elsewhere.jsonl` is not under remote_config.files_dir"), "{e}");
    agent.stop();
}

/// Client-certificate rotation over mutual TLS: the offered certificate is tried on a second
/// connection and replaces the first once it works (APPLIED, later messages come over it); a
/// certificate the server does not trust is FAILED and the current connection is kept; the
/// rotated certificate is used again after a restart.
#[test]
fn client_certificates_are_rotated_over_mutual_tls() {
    if !available("client_certificates_are_rotated_over_mutual_tls") {
        return;
    }
    let dir = scratch("opamp-mtls");
    let pki = pki(&dir.join("pki"));
    let p = |k: &str| pki[k].as_str().unwrap().to_string();
    let server = OpampServer::start_with(
        &dir,
        0,
        0,
        &["--tls-cert", &p("server_cert"), "--tls-key", &p("server_key"), "--client-ca", &p("ca")],
    );
    let wss = format!(
        "{{ws: {{endpoint: '{}', tls: {{ca_file: '{}', cert_file: '{}', key_file: '{}'}}}}}}",
        server.wss_url(),
        p("ca"),
        p("client1_cert"),
        p("client1_key")
    );
    let cfg = config(free_addr().port(), &wss, &dir, "");
    let agent = Collector::start(&dir, &cfg);
    wait("a message over mTLS", Duration::from_secs(15), || !server.messages().is_empty());
    assert_eq!(server.messages()[0]["client_cert_cn"], "otelprof-client-1");

    let status = |hash: &str, want: &str| {
        let b64 = hash_b64(hash);
        server.wait_state(&format!("connection settings {want}"), Duration::from_secs(25), |s| {
            let c = &s["connection_settings_status"];
            (c["last_connection_settings_hash"].as_str() == Some(b64.as_str())
                && c["status"].as_str().is_some_and(|x| x.ends_with(want)))
            .then(|| c["error_message"].as_str().unwrap_or_default().to_string())
        })
    };
    let offer = |cert: &str, key: &str| -> String {
        let r = server.post(
            "/connection_settings",
            serde_json::json!({ "opamp_certificate": { "cert_file": p(cert), "key_file": p(key) } }),
        );
        r["hash"].as_str().unwrap().to_string()
    };

    let h = offer("bad_cert", "bad_key");
    let e = status(&h, "FAILED");
    assert!(e.contains("did not connect") && e.contains("current one is kept"), "{e}");
    let n = server.messages().len();
    server.post("/flags", serde_json::json!({ "report_full_state": true }));
    wait("a message over the kept connection", Duration::from_secs(10), || server.messages().len() > n);
    assert_eq!(server.messages().last().unwrap()["client_cert_cn"], "otelprof-client-1");

    let h = offer("client2_cert", "client2_key");
    status(&h, "APPLIED");
    let n = server.messages().len();
    server.post("/flags", serde_json::json!({ "report_full_state": true }));
    wait("a message after the rotation", Duration::from_secs(10), || server.messages().len() > n);
    assert_eq!(server.messages().last().unwrap()["client_cert_cn"], "otelprof-client-2");

    agent.stop();
    server.post("/reset", serde_json::json!({}));
    let agent = Collector::start(&dir, &cfg);
    wait("the restarted agent", Duration::from_secs(15), || !server.messages().is_empty());
    assert_eq!(server.messages()[0]["client_cert_cn"], "otelprof-client-2", "the rotated certificate is kept");
    agent.stop();
}

/// The server offers an own-metrics destination: the agent's `otelcol_*` series arrive there
/// as OTLP/HTTP (stored by the harness's OTLP sink, decoded by opentelemetry-proto in Python)
/// under `service.name` otelprof and its instance id, and the offer is reported APPLIED; an
/// unreachable destination is reported FAILED.
#[test]
fn own_metrics_are_delivered_to_the_offered_destination() {
    use common::collector::{python_peers, Sink};
    let test = "own_metrics_are_delivered_to_the_offered_destination";
    if !available(test) || !python_peers(test) {
        return;
    }
    let dir = scratch("opamp-own-metrics");
    let sink = Sink::start(&dir);
    let server = OpampServer::start(&dir);
    let ws = format!("{{ws: {{endpoint: '{}'}}}}", server.ws_url());
    let agent = Collector::start(&dir, &config(free_addr().port(), &ws, &dir, ""));
    wait("the agent connected", Duration::from_secs(15), || !server.messages().is_empty());
    let uid = server.messages()[0]["instance_uid_hex"].as_str().unwrap().to_string();
    let status = |hash: &str, want: &str| {
        let b64 = hash_b64(hash);
        server.wait_state(&format!("own metrics {want}"), Duration::from_secs(20), |s| {
            let c = &s["connection_settings_status"];
            (c["last_connection_settings_hash"].as_str() == Some(b64.as_str())
                && c["status"].as_str().is_some_and(|x| x.ends_with(want)))
            .then(|| c["error_message"].as_str().unwrap_or_default().to_string())
        })
    };
    let r = server.post(
        "/connection_settings",
        serde_json::json!({ "own_metrics_endpoint": format!("http://127.0.0.1:{}/v1/metrics", sink.http) }),
    );
    status(r["hash"].as_str().unwrap(), "APPLIED");
    wait("own metrics in the sink", Duration::from_secs(15), || sink.dump().iter().any(|s| s.signal == "metrics"));
    let stored = sink.dump();
    let own = stored.iter().find(|s| s.signal == "metrics").unwrap();
    assert_eq!(own.resource["service.name"], "otelprof");
    let instance = own.resource["service.instance.id"].as_str().unwrap().replace('-', "");
    assert_eq!(instance, uid, "the OpAMP instance");
    assert!(own.names.iter().any(|n| n.starts_with("otelcol_exporter_")), "{:?}", own.names);
    assert!(own.items >= 4, "{own:?}");

    let dead = free_addr();
    let r = server.post(
        "/connection_settings",
        serde_json::json!({ "own_metrics_endpoint": format!("http://{dead}/v1/metrics") }),
    );
    let e = status(r["hash"].as_str().unwrap(), "FAILED");
    assert!(!e.is_empty(), "the reason is reported");
    agent.stop();
}

/// Issue #16 over OpAMP: a server changes an anomaly rule and sees it take effect — the local
/// rule cannot trigger (floor 0.99, no ceiling); the remote one triggers on any point (floor and
/// ceiling 0), and the profiler bursts. A remote config that loosens the local caps is refused,
/// naming the key, and the rule in force stays.
#[test]
fn a_remote_config_changes_an_anomaly_rule_and_it_takes_effect() {
    use common::{bpf_allowed, bpf_lock};
    let test = "a_remote_config_changes_an_anomaly_rule_and_it_takes_effect";
    if !available(test) || !bpf_allowed(test) {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("opamp-anomaly");
    let server = OpampServer::start(&dir);
    let cfg = format!(
        "
receivers:
  profiling: {{samples_per_second: 19, reporter_interval: 1s, targets: {{executables: [opamp-none]}}}}
  anomaly:
    interval: 200ms
    rules: [{{name: quiet, signal: node_cpu, floor: 0.99, ceiling: null}}]
    burst: {{samples_per_second: 49, duration: 2s}}
    limits: {{cooldown: 60s}}
exporters:
  debug: {{}}
extensions:
  opamp:
    server: {{ws: {{endpoint: '{ws}'}}}}
    storage: {{directory: '{state}'}}
    remote_config: {{enabled: true, allowed_paths: [receivers.anomaly.rules, receivers.anomaly.limits]}}
service:
  extensions: [opamp]
  pipelines:
    profiles: {{receivers: [profiling], exporters: [debug]}}
    logs: {{receivers: [anomaly], exporters: [debug]}}
",
        ws = server.ws_url(),
        state = dir.join("state").display()
    );
    let agent = Collector::start(&dir, &cfg);
    agent.wait_value("otelprof_anomaly_points_total", &[("rule", "quiet")], Duration::from_secs(10), |v| v >= 5.0);
    assert_eq!(agent.value("otelprof_anomaly_bursts_total", &[]), 0.0);

    // Loosening the caps: refused whole, naming the key; nothing changes.
    let looser = "receivers:\n  anomaly:\n    limits: {cooldown: 1s}\n";
    let h = server.offer(&[("otelprof.yaml", looser)]);
    let e = server.wait_status(&h, "FAILED", Duration::from_secs(15));
    assert!(e.contains("receivers.anomaly.limits") && e.contains("tighten"), "{e}");

    let eager = "receivers:\n  anomaly:\n    rules: [{name: eager, signal: node_cpu, floor: 0.0, ceiling: 0.0}]\n";
    let h = server.offer(&[("otelprof.yaml", eager)]);
    server.wait_status(&h, "APPLIED", Duration::from_secs(15));
    agent.wait_value("otelprof_anomaly_bursts_total", &[("outcome", "started")], Duration::from_secs(10), |v| v == 1.0);
    agent.wait_value("otelprof_samples_per_second", &[], Duration::from_secs(5), |v| v == 49.0);
    agent.wait_value("otelprof_samples_per_second", &[], Duration::from_secs(8), |v| v == 19.0);
    // The cooldown (60 s, local) holds the eager rule to one burst.
    agent.wait_value(
        "otelprof_anomaly_triggers_total",
        &[("rule", "eager"), ("outcome", "cooldown")],
        Duration::from_secs(5),
        |v| v >= 3.0,
    );
    assert_eq!(agent.value("otelprof_anomaly_bursts_total", &[("outcome", "started")]), 1.0);
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
}
