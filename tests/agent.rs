//! `otelprof agent` end to end: a running agent profiles test workloads and streams OTLP to real
//! gRPC and HTTP peers; backends that are down, refuse, or come back; and bad configs.

mod common;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use common::{agent::*, servers::*, *};
use tonic::Code;

const CHAIN: [&str; 4] = ["hot_leaf", "middle", "outer", "main"];

fn resource_attr<'a>(
    rp: &'a opentelemetry_proto::tonic::profiles::v1development::ResourceProfiles,
    key: &str,
) -> Option<&'a opentelemetry_proto::tonic::common::v1::any_value::Value> {
    rp.resource.as_ref()?.attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
}

#[test]
fn agent_streams_targeted_profiles_to_grpc_and_http() {
    if !bpf_allowed("agent_streams_targeted_profiles_to_grpc_and_http") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("agent-stream");
    let (gaddr, gstate) = grpc_server(vec![]);
    let (haddr, hstate) = http_server(vec![]);
    let agent = Agent::start(
        &dir,
        &format!(
            "profiling:\n  frequency: 199\n  interval: 1s\n  targets: {{ executables: [chain] }}\n\
             exporters:\n  otlp:\n    endpoint: {gaddr}\n    tls: {{ insecure: true }}\n    headers: {{ X-Scope-OrgID: t1 }}\n\
             \x20 otlphttp/second:\n    endpoint: http://{haddr}\n"
        ),
    );
    // Started after the agent: found through its exec, selected by name, filtered in BPF.
    let mut w = std::process::Command::new(workload("chain")).arg("2.5").spawn().unwrap();
    let pid = w.id() as i64;
    // Something that is not a target runs at the same time.
    let mut other = std::process::Command::new(workload("threads")).arg("2").stdout(Stdio::null()).spawn().unwrap();
    w.wait().unwrap();
    other.wait().unwrap();
    wait_for("both backends to receive the workload", Duration::from_secs(10), || {
        gstate.lock().unwrap().received.len() >= 2 && hstate.lock().unwrap().received.len() >= 2
    });
    let mut seen = 0.0;
    wait_for("the workload's samples", Duration::from_secs(5), || {
        seen = metric(&agent.metrics(), "otelprof_samples_total").unwrap();
        // chain shares 2 CPUs with the 3 spinning threads of the non-target for 2 of its 2.5 s.
        seen > 150.0
    });
    let m = agent.wait_metric("otelprof_export_success_total{exporter=\"otlp\"}", Duration::from_secs(5), |v| v >= 2.0);
    assert_eq!(metric(&m, "otelprof_lost_samples_total"), Some(0.0), "{m}");
    assert_eq!(http_get(agent.metrics, "/healthz").unwrap().0, 200);
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");

    for (name, state) in [("grpc", &gstate), ("http", &hstate)] {
        let s = state.lock().unwrap();
        let mut total = 0i64;
        let mut full = 0i64;
        for (i, r) in s.received.iter().enumerate() {
            if name == "grpc" {
                assert!(r.headers.contains(&("x-scope-orgid".into(), "t1".into())));
            }
            for rp in &r.request.resource_profiles {
                let exe = resource_attr(rp, "process.executable.name");
                assert_eq!(format!("{exe:?}"), "Some(StringValue(\"chain\"))", "only the target is profiled");
                assert_eq!(format!("{:?}", resource_attr(rp, "process.pid")), format!("Some(IntValue({pid}))"));
            }
            let file = dir.join(format!("{name}-{i}.pb"));
            std::fs::write(&file, &r.raw).unwrap();
            if let Some(summary) = python_otlp("request", &file) {
                for (f, n, _) in otlp_samples(&summary) {
                    total += n;
                    if has_chain(&f, &CHAIN) {
                        full += n;
                    }
                }
            }
        }
        if total > 0 {
            assert!(total > 150 && full * 100 >= total * 90, "{name}: full chain in {full} of {total}");
        }
    }
}

#[test]
fn backend_down_at_start_then_up_within_the_queue_bound() {
    if !bpf_allowed("backend_down_at_start_then_up_within_the_queue_bound") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("agent-down");
    let backend = free_addr();
    const BOUND: f64 = 60_000.0;
    let agent = Agent::start(
        &dir,
        &format!(
            "profiling:\n  frequency: 99\n  interval: 300ms\n\
             exporters:\n  otlp:\n    endpoint: {backend}\n    tls: {{ insecure: true }}\n    compression: none\n\
             \x20   retry_on_failure: {{ initial_interval: 100ms, max_interval: 300ms, max_elapsed_time: 1m }}\n\
             \x20   sending_queue: {{ queue_size: {BOUND} }}\n"
        ),
    );
    let mut w = std::process::Command::new(workload("threads")).arg("8").stdout(Stdio::null()).spawn().unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(2500) {
        let m = agent.metrics();
        let queued = metric(&m, "otelprof_export_queue_bytes{exporter=\"otlp\"}").unwrap();
        assert!(queued <= BOUND, "queue within its bound while the backend is down: {queued}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(http_get(agent.metrics, "/healthz").unwrap().0, 200, "sampling goes on");
    // The backend comes up only once the agent has been seen retrying against it (the first
    // report can take a while: symbolizing this machine's large debug binaries).
    wait_for("export attempts against the down backend", Duration::from_secs(30), || {
        metric(&agent.metrics(), "otelprof_export_retries_total{exporter=\"otlp\"}").unwrap_or(0.0) >= 1.0
    });
    let (_, state) = grpc_server_at(backend, vec![]);
    wait_for("data after the backend came up", Duration::from_secs(10), || !state.lock().unwrap().received.is_empty());
    w.wait().unwrap();
    agent.wait_metric("otelprof_export_success_total{exporter=\"otlp\"}", Duration::from_secs(5), |v| v >= 1.0);
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    let received = state.lock().unwrap();
    assert!(received.received.iter().any(|r| r
        .request
        .dictionary
        .as_ref()
        .unwrap()
        .string_table
        .iter()
        .any(|s| s == "worker_spin")));
}

#[test]
fn invalid_argument_is_counted_not_retried() {
    if !bpf_allowed("invalid_argument_is_counted_not_retried") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("agent-invalid");
    let (gaddr, gstate) =
        grpc_server(vec![Answer::Grpc(Code::InvalidArgument, None), Answer::Grpc(Code::Unavailable, None)]);
    let agent = Agent::start(
        &dir,
        &format!(
            "profiling:\n  frequency: 99\n  interval: 500ms\n\
             exporters:\n  otlp:\n    endpoint: {gaddr}\n    tls: {{ insecure: true }}\n\
             \x20   retry_on_failure: {{ initial_interval: 100ms }}\n"
        ),
    );
    let mut w = std::process::Command::new(workload("chain")).arg("2").spawn().unwrap();
    w.wait().unwrap();
    wait_for("three calls", Duration::from_secs(10), || gstate.lock().unwrap().calls >= 3);
    let m = agent.wait_metric("otelprof_export_success_total{exporter=\"otlp\"}", Duration::from_secs(5), |v| v >= 1.0);
    assert_eq!(
        metric(&m, "otelprof_export_failure_total{exporter=\"otlp\"}"),
        Some(1.0),
        "INVALID_ARGUMENT: failed once, for good\n{m}"
    );
    assert!(
        metric(&m, "otelprof_export_retries_total{exporter=\"otlp\"}").unwrap() >= 1.0,
        "UNAVAILABLE was retried\n{m}"
    );
    let (code, _) = agent.stop();
    assert_eq!(code, Some(0));
}

/// A panic on the reporting thread (made with the agent's fault-injection hook) is not
/// invisible: `/healthz` and `/readyz` fail naming the reporter, the log says so once at ERROR,
/// and the agent's exit status reports it. (Before, the sampling loop's heartbeat kept
/// `/healthz` at 200 while nothing was exported.)
#[test]
fn a_dead_reporter_makes_the_agent_unhealthy() {
    if !bpf_allowed("a_dead_reporter_makes_the_agent_unhealthy") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("agent-dead-reporter");
    let (haddr, hstate) = http_server(vec![]);
    let agent = Agent::start_with_env(
        &dir,
        &format!(
            "profiling:\n  frequency: 49\n  interval: 2s\n  targets: {{ executables: [chain] }}\n\
             exporters:\n  otlphttp:\n    endpoint: http://{haddr}\n"
        ),
        &[("OTELPROF_FAULT_INJECTION", "reporter_panic")],
    );
    // Its samples make a report after one interval, and that report kills the reporting thread.
    let mut w = std::process::Command::new(workload("chain")).arg("30").spawn().unwrap();
    wait_for("/healthz to fail", Duration::from_secs(30), || {
        http_get(agent.metrics, "/healthz").is_some_and(|(code, _)| code != 200)
    });
    let _ = w.kill();
    let _ = w.wait();
    let (code, body) = http_get(agent.metrics, "/healthz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("reporter: panicked: "), "/healthz names the dead component: {body}");
    let ready = http_get(agent.metrics, "/readyz").unwrap();
    assert_eq!(ready.0, 503, "{}", ready.1);
    let (code, log) = agent.stop();
    assert_eq!(code, Some(1), "the reporter's panic is the agent's error: {log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR") && l.contains("reporter failed")).collect();
    assert_eq!(errors.len(), 1, "logged once, at ERROR, naming the component: {log}");
    assert!(errors[0].contains("OTELPROF_FAULT_INJECTION"), "with the panic's message: {}", errors[0]);
    assert!(log.contains("the reporting thread panicked"), "shutdown surfaces the join error: {log}");
    assert!(hstate.lock().unwrap().received.is_empty(), "nothing was reported");
}

#[test]
fn bad_configs_exit_2_naming_the_key() {
    let dir = scratch("agent-bad-config");
    let cases = [
        (
            "exporters: { otlp: { endpoint: 'x:1' } }\nprofling: {}\n",
            "config error: profling: unknown field `profling`",
        ),
        (
            "profiling: { frequency: -5 }\nexporters: { otlp: { endpoint: 'x:1' } }\n",
            "config error: profiling.frequency:",
        ),
        ("exporters: { otlp: { endpont: 'x:1' } }\n", "config error: exporters.otlp.endpont: unknown field `endpont`"),
        ("exporters: [1, 2\n", "config error: exporters: invalid type: sequence, expected a map"),
        ("profiling:\n\tfrequency: 1\n", "config error: profiling: found character that cannot start any token"),
    ];
    for (text, expected) in cases {
        let path = dir.join("bad.yaml");
        std::fs::write(&path, text).unwrap();
        let o = run(otelprof().args(["agent", "--config"]).arg(&path));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{text}: {err}");
        assert!(err.starts_with(&format!("otelprof: {expected}")), "{text}:\n{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let o = run(otelprof().args(["agent", "--config", "/nonexistent/agent.yaml"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/agent.yaml"), "{}", stderr(&o));
}
