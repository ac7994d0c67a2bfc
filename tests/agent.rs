//! `otelprof agent` end to end: a running agent (the embedded collector with the `profiling`
//! receiver) profiles test workloads and streams OTLP to real gRPC and HTTP peers; backends
//! that are down, refuse, or come back; a dead component; and bad configs.

mod common;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use common::{agent::*, servers::*, *};
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use tonic::Code;

const CHAIN: [&str; 4] = ["hot_leaf", "middle", "outer", "main"];

fn resource_attr<'a>(
    rp: &'a opentelemetry_proto::tonic::profiles::v1development::ResourceProfiles,
    key: &str,
) -> Option<&'a opentelemetry_proto::tonic::common::v1::any_value::Value> {
    rp.resource.as_ref()?.attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
}

/// Profile samples (`Sample` messages: the Collector's items) in a request, counted here
/// independently of the agent's own counters.
fn samples_in(r: &ExportProfilesServiceRequest) -> u64 {
    r.resource_profiles
        .iter()
        .flat_map(|rp| &rp.scope_profiles)
        .flat_map(|sp| &sp.profiles)
        .map(|p| p.samples.len() as u64)
        .sum()
}

fn received_samples(state: &Shared) -> u64 {
    state.lock().unwrap().received.iter().map(|r| samples_in(&r.request)).sum()
}

/// A series of the metrics page, 0 when absent.
fn value(m: &str, series: &str) -> f64 {
    metric(m, series).unwrap_or(0.0)
}

const ACCEPTED: &str = "otelcol_receiver_accepted_profile_samples_total{receiver=\"profiling\",transport=\"bpf\"}";

fn sent(exporter: &str) -> String {
    format!("otelcol_exporter_sent_profile_samples_total{{exporter=\"{exporter}\"}}")
}

fn send_failed(exporter: &str) -> String {
    format!("otelcol_exporter_send_failed_profile_samples_total{{exporter=\"{exporter}\"}}")
}

fn enqueue_failed(exporter: &str) -> String {
    format!("otelcol_exporter_enqueue_failed_profile_samples_total{{exporter=\"{exporter}\"}}")
}

fn retries(exporter: &str) -> String {
    format!("otelprof_exporter_retries_total{{exporter=\"{exporter}\",data_type=\"profiles\"}}")
}

#[test]
fn agent_streams_targeted_profiles_to_grpc_and_http() {
    if !bpf_allowed("agent_streams_targeted_profiles_to_grpc_and_http") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("agent-stream");
    // The workload under a name of this test's own: other tests' `chain` (other test binaries
    // on the same machine) must not be targets.
    let exe = dir.join("agentchain");
    std::fs::copy(workload("chain"), &exe).unwrap();
    let (gaddr, gstate) = grpc_server(vec![]);
    let (haddr, hstate) = http_server(vec![]);
    let agent = Agent::start(
        &dir,
        &format!(
            "receivers:
  profiling:
    samples_per_second: 199
    reporter_interval: 1s
    targets: {{ executables: [agentchain] }}
exporters:
  otlp:
    endpoint: {gaddr}
    tls: {{ insecure: true }}
    headers: {{ X-Scope-OrgID: t1 }}
  otlphttp/second:
    endpoint: http://{haddr}
service:
  pipelines:
    profiles:
      receivers: [profiling]
      exporters: [otlp, otlphttp/second]
"
        ),
    );
    // Started after the agent: found through its exec, selected by name, filtered in BPF.
    let w = std::process::Command::new(&exe).arg("2.5").spawn().unwrap();
    let pid = w.id() as i64;
    // Something that is not a target runs at the same time.
    let mut other = std::process::Command::new(workload("threads")).arg("2").stdout(Stdio::null()).spawn().unwrap();
    let cpu = wait_cpu_seconds(w);
    other.wait().unwrap();
    wait_for("both backends to receive the workload", Duration::from_secs(10), || {
        gstate.lock().unwrap().received.len() >= 2 && hstate.lock().unwrap().received.len() >= 2
    });
    // chain shares 2 CPUs with the 3 spinning threads of the non-target (and whatever else
    // runs on the machine): its samples are expected from the CPU time it got, not its 2.5 s.
    let expected = (199.0 * cpu * 0.8).max(50.0);
    agent.wait_metric("otelprof_samples_total", Duration::from_secs(5), |seen| seen >= expected);
    // Every sample the receiver handed to the pipeline went to both exporters, and each
    // exporter's count is what its backend decoded.
    let m = agent.wait_metrics("every accepted sample sent to both backends", Duration::from_secs(10), |m| {
        let accepted = value(m, ACCEPTED);
        accepted > 0.0
            && value(m, &sent("otlp")) == accepted
            && value(m, &sent("otlphttp/second")) == accepted
            && received_samples(&gstate) as f64 == accepted
            && received_samples(&hstate) as f64 == accepted
    });
    for exporter in ["otlp", "otlphttp/second"] {
        assert_eq!(metric(&m, &send_failed(exporter)), Some(0.0), "{m}");
        assert_eq!(metric(&m, &enqueue_failed(exporter)), Some(0.0), "{m}");
    }
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
            } else {
                assert_eq!(r.path, "/v1development/profiles", "the Collector's OTLP/HTTP profiles path");
            }
            for rp in &r.request.resource_profiles {
                let exe = resource_attr(rp, "process.executable.name");
                assert_eq!(format!("{exe:?}"), "Some(StringValue(\"agentchain\"))", "only the target is profiled");
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
            assert!(total as f64 >= expected, "{name}: {total} samples for {cpu:.2} CPU s of the workload");
            assert!(full * 100 >= total * 90, "{name}: full chain in {full} of {total}");
        }
    }
    assert_eq!(received_samples(&gstate), received_samples(&hstate), "both pipelines' exporters got the same data");
}

#[test]
fn backend_down_at_start_then_up_within_the_queue_bound() {
    if !bpf_allowed("backend_down_at_start_then_up_within_the_queue_bound") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("agent-down");
    let backend = free_addr();
    // In requests (the Collector's default sizer): a request being retried stays in the queue.
    const BOUND: f64 = 2.0;
    let agent = Agent::start(
        &dir,
        &format!(
            "receivers:
  profiling: {{ samples_per_second: 99, reporter_interval: 300ms }}
exporters:
  otlp:
    endpoint: {backend}
    tls: {{ insecure: true }}
    compression: none
    retry_on_failure: {{ initial_interval: 100ms, max_interval: 300ms, max_elapsed_time: 1m }}
    sending_queue: {{ queue_size: {BOUND} }}
service:
  pipelines:
    profiles: {{ receivers: [profiling], exporters: [otlp] }}
"
        ),
    );
    let mut w = std::process::Command::new(workload("threads")).arg("8").stdout(Stdio::null()).spawn().unwrap();
    let size = "otelcol_exporter_queue_size{exporter=\"otlp\",data_type=\"profiles\"}";
    let capacity = "otelcol_exporter_queue_capacity{exporter=\"otlp\",data_type=\"profiles\"}";
    let t = Instant::now();
    let mut largest = 0.0f64;
    // Reports keep coming while the backend is down: the queue fills to its bound and what
    // does not fit is refused and counted, never held (the first report can take a while:
    // symbolizing this machine's large debug binaries).
    loop {
        let m = agent.metrics();
        let (queued, cap) = (metric(&m, size).unwrap(), metric(&m, capacity).unwrap());
        assert_eq!(cap, BOUND, "{m}");
        assert!(queued <= cap, "queue within its bound while the backend is down: {queued}\n{m}");
        largest = largest.max(queued);
        if value(&m, &enqueue_failed("otlp")) > 0.0 && t.elapsed() > Duration::from_millis(2500) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the full queue never refused a report\n{m}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(largest, BOUND, "the queue filled up");
    let m = agent.metrics();
    assert_eq!(value(&m, &sent("otlp")), 0.0, "{m}");
    assert!(value(&m, &retries("otlp")) >= 1.0, "export attempts against the down backend\n{m}");
    assert_eq!(http_get(agent.metrics, "/healthz").unwrap().0, 200, "sampling goes on");
    let (_, state) = grpc_server_at(backend, vec![]);
    wait_for("data after the backend came up", Duration::from_secs(10), || !state.lock().unwrap().received.is_empty());
    w.wait().unwrap();
    let m = agent.wait_metric(&sent("otlp"), Duration::from_secs(5), |v| v >= 1.0);
    assert!(value(&m, &sent("otlp")) <= received_samples(&state) as f64, "{m}");
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

/// The OTLP specification's retry rules: INVALID_ARGUMENT fails the request for good (its
/// samples counted as failed, no retry); UNAVAILABLE is tried again and then succeeds.
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
            "receivers:
  profiling:
    samples_per_second: 99
    reporter_interval: 500ms
    targets: {{ executables: [chain] }}
exporters:
  otlp:
    endpoint: {gaddr}
    tls: {{ insecure: true }}
    retry_on_failure: {{ initial_interval: 100ms }}
service:
  pipelines:
    profiles: {{ receivers: [profiling], exporters: [otlp] }}
"
        ),
    );
    let mut w = std::process::Command::new(workload("chain")).arg("2").spawn().unwrap();
    w.wait().unwrap();
    wait_for("three calls", Duration::from_secs(10), || gstate.lock().unwrap().calls >= 3);
    // Every accepted sample settled (sent, or failed for good), and the sent ones are exactly
    // what the backend accepted: all read at one moment, so a report still arriving is waited for.
    let m = agent.wait_metrics("every accepted sample sent or failed", Duration::from_secs(10), |m| {
        let (ok, failed) = (value(m, &sent("otlp")), value(m, &send_failed("otlp")));
        let s = gstate.lock().unwrap();
        let backend: u64 = s.received.iter().map(|r| samples_in(&r.request)).sum();
        ok > 0.0 && ok + failed == value(m, ACCEPTED) && backend as f64 == ok && s.received.len() + 2 == s.calls
    });
    assert!(value(&m, &send_failed("otlp")) > 0.0, "INVALID_ARGUMENT: the request's samples failed for good\n{m}");
    assert_eq!(value(&m, &retries("otlp")), 1.0, "UNAVAILABLE was retried, INVALID_ARGUMENT not\n{m}");
    let (code, _) = agent.stop();
    assert_eq!(code, Some(0));
}

/// A panic on the reporting thread (made with the agent's fault-injection hook) is not
/// invisible: `/healthz` and `/readyz` fail naming `receiver/profiling/reporter`, the log says
/// so once at ERROR, and the agent's exit status reports it. (Before, the sampling loop's
/// heartbeat kept `/healthz` at 200 while nothing was exported.)
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
            "receivers:
  profiling:
    samples_per_second: 49
    reporter_interval: 2s
    targets: {{ executables: [chain] }}
exporters:
  otlphttp:
    endpoint: http://{haddr}
service:
  pipelines:
    profiles: {{ receivers: [profiling], exporters: [otlphttp] }}
"
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
    assert!(body.contains("receiver/profiling/reporter: panicked: "), "/healthz names the dead component: {body}");
    assert!(!body.contains("receiver/profiling: "), "the sampling loop itself is alive: {body}");
    let ready = http_get(agent.metrics, "/readyz").unwrap();
    assert_eq!(ready.0, 503, "{}", ready.1);
    assert!(ready.1.contains("receiver/profiling/reporter: panicked: "), "{}", ready.1);
    let (code, log) = agent.stop();
    assert_eq!(code, Some(1), "the reporter's panic is the agent's error: {log}");
    let errors: Vec<&str> =
        log.lines().filter(|l| l.contains("ERROR") && l.contains("receiver/profiling/reporter failed")).collect();
    assert_eq!(errors.len(), 1, "logged once, at ERROR, naming the component: {log}");
    assert!(errors[0].contains("OTELPROF_FAULT_INJECTION"), "with the panic's message: {}", errors[0]);
    assert!(log.contains("the reporting thread panicked"), "shutdown surfaces the join error: {log}");
    assert!(hstate.lock().unwrap().received.is_empty(), "nothing was reported");
}

/// A pipeline for the cases below that are not about it.
const PIPELINE: &str = "service:\n  pipelines:\n    profiles: { receivers: [profiling], exporters: [debug] }\n";

#[test]
fn bad_configs_exit_2_naming_the_key_and_where_it_is() {
    let dir = scratch("agent-bad-config");
    // Positions are where the key's value starts (the nearest ancestor's for a missing key).
    let cases = [
        // A key the receiver does not have (the old name of samples_per_second).
        (
            format!("receivers:\n  profiling:\n    frequency: 19\nexporters:\n  debug:\n{PIPELINE}"),
            "receivers.profiling.frequency (line 3, column 16): unknown field `frequency`, expected one of `samples_per_second`",
        ),
        (
            format!("receivers:\n  profiling: {{ samples_per_second: -5 }}\nexporters:\n  debug:\n{PIPELINE}"),
            "receivers.profiling.samples_per_second (line 2, column 36): invalid value: integer `-5`",
        ),
        (
            format!("receivers:\n  profiling: {{ off_cpu: {{ enabled: true }} }}\nexporters:\n  debug:\n{PIPELINE}"),
            "receivers.profiling.off_cpu (line 2, column 25): unknown field `off_cpu`",
        ),
        (
            "receivers:\n  profiling:\nexporters:\n  otlp: { endpont: 'x:1' }\n\
             service:\n  pipelines:\n    profiles: { receivers: [profiling], exporters: [otlp] }\n"
                .to_string(),
            "exporters.otlp.endpont (line 4, column 20): unknown field `endpont`",
        ),
        // A pipeline naming a component that is not declared.
        (
            "receivers:\n  profiling:\nexporters:\n  debug:\n\
             service:\n  pipelines:\n    profiles: { receivers: [profiling], exporters: [otlp] }\n"
                .to_string(),
            "service.pipelines.profiles.exporters[0] (line 7, column 53): exporter `otlp` is not declared under `exporters:`",
        ),
        // A component type otelprof does not have.
        (
            "receivers:\n  profiling:\nexporters:\n  kafka:\n\
             service:\n  pipelines:\n    profiles: { receivers: [profiling], exporters: [kafka] }\n"
                .to_string(),
            "exporters.kafka (line 4, column 3): unknown exporter type `kafka` (known types: ",
        ),
        // The old config shape says where its keys went.
        (
            "profiling:\n  frequency: 19\nexporters:\n  otlp: { endpoint: 'x:1' }\n".to_string(),
            "profiling (line 1, column 1): the profiler is now the `profiling` receiver: move `profiling:` under `receivers:`",
        ),
        (
            format!("receivers:\n  profiling:\nexporters:\n  debug:\n{PIPELINE}telemetry:\n  metrics_address: 0.0.0.0:9464\n"),
            "telemetry.metrics_address (line 9, column 20): moved to service.telemetry.metrics.address",
        ),
        // `${env:VAR}` is expanded before the value is checked.
        (
            format!("receivers:\n  profiling:\n    samples_per_second: ${{env:OTELPROF_TEST_HZ}}\nexporters:\n  debug:\n{PIPELINE}"),
            "receivers.profiling.samples_per_second (line 3, column 25): 0 Hz is out of range",
        ),
        ("exporters: [1, 2\n".to_string(), "exporters (line 2, column 1): did not find expected ',' or ']'"),
        ("receivers:\n\tprofiling: {}\n".to_string(), "receivers (line 2, column 1): found character that cannot start any token"),
    ];
    let mut wrong = Vec::new();
    for (text, expected) in &cases {
        let path = dir.join("bad.yaml");
        std::fs::write(&path, text).unwrap();
        let o = run(otelprof().args(["agent", "--config"]).arg(&path).env("OTELPROF_TEST_HZ", "0"));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{text}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        if !err.starts_with(&format!("otelprof: config error: {expected}")) {
            wrong.push(format!("{text}\n  gave: {err}  want: {expected}"));
        }
        // `validate` checks the same without starting anything.
        let v = run(otelprof().args(["validate", "--config"]).arg(&path).env("OTELPROF_TEST_HZ", "0"));
        assert_eq!((v.status.code(), stderr(&v)), (Some(2), err), "{text}");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // With the variable set to a good value the same file is valid: the expansion is real.
    let path = dir.join("env.yaml");
    std::fs::write(&path, &cases[8].0).unwrap();
    let o = run(otelprof().args(["validate", "--config"]).arg(&path).env("OTELPROF_TEST_HZ", "49"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(otelprof().args(["agent", "--config", "/nonexistent/agent.yaml"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/agent.yaml"), "{}", stderr(&o));
}

/// `--config` given twice: the second file merges over the first, as in the Collector (maps key
/// by key, lists and scalars replace); a mistake in either is still named by its key.
#[test]
fn repeated_config_files_merge_in_order() {
    let dir = scratch("agent-two-configs");
    let base = dir.join("base.yaml");
    std::fs::write(
        &base,
        "receivers:\n  profiling: { samples_per_second: 19 }\nexporters:\n  debug: {}\n\
         service:\n  pipelines:\n    profiles: { receivers: [profiling], exporters: [debug] }\n",
    )
    .unwrap();
    let over = dir.join("over.yaml");
    std::fs::write(&over, "receivers:\n  profiling: { reporter_interval: 2s }\n").unwrap();
    let o = run(otelprof().args(["validate", "--config"]).arg(&base).arg("--config").arg(&over));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains(" + "), "both files named: {}", stderr(&o));
    // The later file's value wins and is checked like any other.
    std::fs::write(&over, "receivers:\n  profiling: { samples_per_second: 0 }\n").unwrap();
    let o = run(otelprof().args(["validate", "-c"]).arg(&base).arg("-c").arg(&over));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("receivers.profiling.samples_per_second") && stderr(&o).contains("0 Hz"),
        "{}",
        stderr(&o)
    );
    // Alone, the second file is not a config: the merge is real.
    let o = run(otelprof().args(["validate", "-c"]).arg(&over));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    std::fs::write(&over, "receivers: [unclosed\n").unwrap();
    let o = run(otelprof().args(["validate", "-c"]).arg(&base).arg("-c").arg(&over));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("over.yaml: not YAML"), "{}", stderr(&o));
}
