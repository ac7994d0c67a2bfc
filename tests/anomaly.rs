//! Issue #16 end to end with real load, real BPF and a real OTLP backend (`sink.py`, decoded by
//! opentelemetry-proto): the agent's `anomaly` receiver watches the node's CPU, a CPU-heavy
//! process appears, the profiler bursts from 19 to 99 Hz for the window, the event arrives as a
//! log record, the rate returns exactly, and a second spike inside the cooldown does not act;
//! two minutes of a steady but noisy load never trigger; as the `anomaly` connector, a step in an
//! application's OTLP gauge bursts the application's process.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{collector::*, *};

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn str_attr<'a>(m: &'a serde_json::Map<String, serde_json::Value>, key: &str) -> &'a str {
    m.get(key).and_then(|v| v.as_str()).unwrap_or_else(|| panic!("no string attribute {key}: {m:?}"))
}

fn num_attr(m: &serde_json::Map<String, serde_json::Value>, key: &str) -> f64 {
    m.get(key).and_then(|v| v.as_f64()).unwrap_or_else(|| panic!("no number attribute {key}: {m:?}"))
}

/// Baseline, then one `chain` per CPU appears (the node goes to ~100 %): the rule (floor 0.6,
/// so that a machine half busy with something else stays quiet; the default ceiling 0.8 and
/// Z-score 3 after a 6-point warm-up at 500 ms) triggers, the profiler samples at 99 Hz for 4 s,
/// and the profiles of that window — and only those — carry `profile.trigger` with the rule at
/// 99 Hz's period. (The Z-score path alone, k-of-n included, is tested on synthetic series in
/// the collector crate: a step that stays under the ceiling needs a quiet machine.)
#[test]
fn a_cpu_step_bursts_the_profiler_for_its_window_and_reports_the_event() {
    const T: &str = "a_cpu_step_bursts_the_profiler_for_its_window_and_reports_the_event";
    if !bpf_allowed(T) || !python_peers(T) {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("anomaly-step");
    let sink = Sink::start(&dir);
    let config = format!(
        "receivers:\n  profiling:\n    samples_per_second: 19\n    reporter_interval: 1s\n    \
         targets: {{ executables: [chain] }}\n    unwind_cache: {{ dir: '{}' }}\n  \
         anomaly:\n    interval: 500ms\n    \
         rules: [{{ name: node-cpu-step, signal: node_cpu, floor: 0.6, warmup: 6 }}]\n    \
         burst: {{ receiver: profiling, samples_per_second: 99, duration: 4s }}\n\
         exporters:\n  otlphttp: {{ endpoint: 'http://127.0.0.1:{}' }}\n\
         service:\n  pipelines:\n    \
         profiles: {{ receivers: [profiling], exporters: [otlphttp] }}\n    \
         logs: {{ receivers: [anomaly], exporters: [otlphttp] }}\n",
        dir.join("unwind").display(),
        sink.http
    );
    let agent = Collector::start(&dir, &config);
    let points = |a: &Collector| a.value("otelprof_anomaly_points_total", &[("rule", "node-cpu-step")]);
    // The baseline: past the warm-up.
    agent.wait_value("otelprof_anomaly_points_total", &[("rule", "node-cpu-step")], Duration::from_secs(15), |v| {
        v >= 10.0
    });
    let acted = |a: &Collector| a.value("otelprof_anomaly_triggers_total", &[("outcome", "acted")]);
    assert_eq!(acted(&agent), 0.0, "a trigger before the step: the baseline was not quiet\n{}", agent.metrics());
    assert_eq!(agent.value("otelprof_samples_per_second", &[]), 19.0);

    // The step.
    let step_ns = now_ns();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let spawn = |secs: &str| -> Vec<std::process::Child> {
        (0..cpus).map(|_| std::process::Command::new(workload("chain")).arg(secs).spawn().unwrap()).collect()
    };
    let step = spawn("9");
    let points_at_step = points(&agent);
    agent.wait_value("otelprof_anomaly_bursts_total", &[("outcome", "started")], Duration::from_secs(10), |v| v == 1.0);
    let points_to_trigger = points(&agent) - points_at_step;
    agent.wait_value("otelprof_samples_per_second", &[], Duration::from_secs(2), |v| v == 99.0);
    // The window ends 4 s after it started: the rate returns exactly.
    agent.wait_value("otelprof_samples_per_second", &[], Duration::from_secs(8), |v| v == 19.0);
    let back_ns = now_ns();

    // A second spike inside the cooldown does not act.
    let second = spawn("3");
    agent.wait_value("otelprof_anomaly_triggers_total", &[("outcome", "cooldown")], Duration::from_secs(10), |v| {
        v >= 1.0
    });
    let cpu_s: f64 = step.into_iter().map(wait_cpu_seconds).sum();
    second.into_iter().for_each(|c| {
        wait_cpu_seconds(c);
    });
    assert_eq!(acted(&agent), 1.0, "one trigger acted\n{}", agent.metrics());
    assert_eq!(agent.value("otelprof_anomaly_bursts_total", &[("outcome", "started")]), 1.0);
    assert_eq!(agent.value("otelprof_bursts_total", &[]), 1.0, "the profiler started one burst");
    agent.wait_value("otelcol_exporter_sent_log_records_total", &[], Duration::from_secs(5), |v| v == 1.0);
    // Every report is in the sink: what the profiler handed on was sent.
    let accepted =
        agent.wait_value("otelcol_receiver_accepted_profile_samples_total", &[], Duration::from_secs(5), |v| v > 0.0);
    std::thread::sleep(Duration::from_millis(1500));
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");

    let stored = sink.dump();
    let records: Vec<&RecordView> = stored.iter().filter(|r| r.signal == "logs").flat_map(|r| &r.records).collect();
    assert_eq!(records.len(), 1, "exactly one event: {records:?}");
    let e = records[0];
    assert_eq!(e.severity, 13, "WARN");
    assert!(e.body.contains("node-cpu-step"), "{}", e.body);
    let a = &e.attributes;
    assert_eq!(str_attr(a, "event.name"), "otelprof.anomaly");
    assert_eq!(str_attr(a, "anomaly.rule"), "node-cpu-step");
    assert_eq!(str_attr(a, "anomaly.signal"), "node_cpu");
    assert_eq!(str_attr(a, "anomaly.target"), "node");
    assert_eq!(str_attr(a, "anomaly.actions"), "burst,event");
    assert_eq!(str_attr(a, "profile.trigger"), "anomaly");
    assert!(["zscore", "ceiling"].contains(&str_attr(a, "anomaly.reason")));
    let value = num_attr(a, "anomaly.value");
    let (ewma, stddev, z) = (num_attr(a, "anomaly.ewma"), num_attr(a, "anomaly.stddev"), num_attr(a, "anomaly.zscore"));
    assert!((0.6..=1.0).contains(&value) && ewma < 0.6, "{a:?}");
    assert_eq!(num_attr(a, "anomaly.burst.samples_per_second"), 99.0);
    let start = num_attr(a, "anomaly.window.start_unix_nano") as u64;
    let end = num_attr(a, "anomaly.window.end_unix_nano") as u64;
    assert_eq!(end - start, 4_000_000_000, "the window is the configured 4 s");

    // The profiles: inside the window 99 Hz and labelled, outside 19 Hz and not.
    let (p19, p99) = (1_000_000_000i64 / 19, 1_000_000_000i64 / 99);
    let slack = 100_000_000; // the profiler's clock vs the event's, and the loop's turn
    let mut labelled = 0;
    let mut after = 0;
    let mut wrong = Vec::new();
    for r in stored.iter().filter(|r| r.signal == "profiles") {
        for p in &r.profiles {
            let rule = p.attributes.get("profile.trigger.rule").and_then(|v| v.as_str());
            for &t in &p.timestamps {
                let inside = t + slack >= start && t <= end + slack;
                let clearly_outside = t + slack < start || t > end + slack;
                match rule {
                    Some("node-cpu-step") if p.period == p99 && inside => labelled += 1,
                    None if p.period == p19 && !(t > start + slack && t + slack < end) => {
                        if t > end && clearly_outside {
                            after += 1;
                        }
                    }
                    _ => wrong.push((t, p.period, rule.map(str::to_string))),
                }
            }
        }
    }
    eprintln!(
        "step → burst start {:.2} s ({points_to_trigger} points at 500 ms); event: value {value:.3}, EWMA {ewma:.3}, \
         σ {stddev:.3}, z {z:.1}; {labelled} samples at 99 Hz in the window, {after} at 19 Hz after it; \
         the step's chains used {cpu_s:.2} CPU-s; the rate was back {:.2} s after the window's end; {accepted} samples accepted",
        start.saturating_sub(step_ns) as f64 / 1e9,
        back_ns.saturating_sub(end) as f64 / 1e9,
    );
    assert!(wrong.is_empty(), "samples whose period or label does not match their time: {wrong:?}");
    assert!(start > step_ns, "the burst came after the step");
    // The issue's bound: the burst starts within 3 s of the step.
    assert!(start - step_ns <= 3_000_000_000, "{:.2} s from step to burst", (start - step_ns) as f64 / 1e9);
    // 4 s of every CPU busy at 99 Hz is ~396 per CPU; a quarter of one CPU's is the bar.
    assert!(labelled >= 100, "{labelled} samples labelled at 99 Hz");
    assert!(after >= 10, "19 Hz again after the window: {after}");
}

/// The budget guard: a burst ends early when the agent uses more CPU than `budget.agent_cpu`
/// (here a microsecond per second, which any agent exceeds), and the rate returns at once
/// rather than after the 30 s window.
#[test]
fn a_burst_over_the_agents_cpu_budget_ends_early() {
    const T: &str = "a_burst_over_the_agents_cpu_budget_ends_early";
    if !bpf_allowed(T) {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("anomaly-budget");
    let config = "receivers:\n  profiling: { samples_per_second: 19, reporter_interval: 1s }\n  \
         anomaly:\n    interval: 200ms\n    \
         rules: [{ name: always, signal: node_cpu, floor: 0.0, ceiling: 0.0 }]\n    \
         burst: { samples_per_second: 49, duration: 30s }\n    budget: { agent_cpu: 0.000001 }\n\
         exporters:\n  debug: {}\n\
         service:\n  pipelines:\n    profiles: { receivers: [profiling], exporters: [debug] }\n    \
         logs: { receivers: [anomaly], exporters: [debug] }\n";
    let agent = Collector::start(&dir, config);
    agent.wait_value("otelprof_anomaly_bursts_total", &[("outcome", "started")], Duration::from_secs(10), |v| v == 1.0);
    let started = std::time::Instant::now();
    agent.wait_value("otelprof_anomaly_bursts_total", &[("outcome", "ended_early")], Duration::from_secs(10), |v| {
        v == 1.0
    });
    agent.wait_value("otelprof_samples_per_second", &[], Duration::from_secs(5), |v| v == 19.0);
    let ended = started.elapsed();
    assert!(ended < Duration::from_secs(20), "the burst ran {ended:?} of its 30 s");
    assert!(agent.log().contains("over its budget"), "{}", agent.log());
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// The `target_cpu` signal from the profiler's own samples, grouped by `service.name`: a
/// service idles along (a shell that wakes every 200 ms), then a busy process of the same
/// service appears; the service's share of the node jumps, the rule triggers for that service
/// (not the node, whose other processes the rule does not watch), and the burst covers that
/// service's processes only: their profiles are at 99 Hz and labelled, those of a busy process
/// outside the service stay at 19 Hz, unlabelled.
#[test]
fn a_service_whose_cpu_share_jumps_triggers_its_rule() {
    const T: &str = "a_service_whose_cpu_share_jumps_triggers_its_rule";
    if !bpf_allowed(T) || !python_peers(T) {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("anomaly-service");
    let sink = Sink::start(&dir);
    let service = "anomaly-svc";
    let config = format!(
        "receivers:\n  profiling:\n    samples_per_second: 19\n    reporter_interval: 1s\n    \
         unwind_cache: {{ dir: '{}' }}\n  \
         anomaly:\n    interval: 500ms\n    \
         rules: [{{ name: svc-step, signal: target_cpu, group_by: service, warmup: 5 }}]\n    \
         burst: {{ receiver: profiling, samples_per_second: 99, duration: 3s }}\n\
         exporters:\n  otlphttp: {{ endpoint: 'http://127.0.0.1:{}' }}\n\
         service:\n  pipelines:\n    \
         profiles: {{ receivers: [profiling], exporters: [otlphttp] }}\n    \
         logs: {{ receivers: [anomaly], exporters: [otlphttp] }}\n",
        dir.join("unwind").display(),
        sink.http
    );
    let agent = Collector::start(&dir, &config);
    // Process groups, killed with their children (the idle shell's `sleep`) when the test ends,
    // also when it fails first.
    let shell = |what: &'static str, script: &str, service: Option<&str>| {
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", script]).env_remove("OTEL_SERVICE_NAME");
        if let Some(s) = service {
            cmd.env("OTEL_SERVICE_NAME", s);
        }
        Group::spawn(what, &mut cmd)
    };
    let mut idle = shell(
        "the idle shell",
        "while :; do i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 0.2; done",
        Some(service),
    );
    // The service's baseline: its warm-up of 5 points at the profiler's 1 s reports.
    agent.wait_value("otelprof_anomaly_points_total", &[("rule", "svc-step")], Duration::from_secs(20), |v| v >= 8.0);
    assert_eq!(agent.value("otelprof_anomaly_triggers_total", &[]), 0.0, "{}", agent.metrics());
    let mut outsider = shell("the outsider", "while :; do :; done", None);
    let outsider_pid = outsider.id();
    let mut busy = shell("the busy shell", "while :; do :; done", Some(service));
    agent.wait_value("otelprof_anomaly_bursts_total", &[("outcome", "started")], Duration::from_secs(10), |v| v == 1.0);
    agent.wait_value("otelprof_samples_per_second", &[], Duration::from_secs(8), |v| v == 19.0);
    for c in [&mut busy, &mut idle, &mut outsider] {
        c.stop(Duration::from_secs(1));
    }
    agent.wait_value("otelcol_exporter_sent_log_records_total", &[], Duration::from_secs(5), |v| v == 1.0);
    std::thread::sleep(Duration::from_millis(1500));
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");

    let stored = sink.dump();
    let records: Vec<&RecordView> = stored.iter().filter(|r| r.signal == "logs").flat_map(|r| &r.records).collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let a = &records[0].attributes;
    assert_eq!(str_attr(a, "anomaly.signal"), "target_cpu");
    assert_eq!(str_attr(a, "anomaly.target"), service);
    let value = num_attr(a, "anomaly.value");
    assert!(value > 0.2, "the busy process is half the node: {a:?}");
    assert_eq!(str_attr(a, "anomaly.burst.scope"), "target");
    assert!(num_attr(a, "anomaly.burst.processes") >= 2.0, "the idle and the busy shell: {a:?}");
    let (p19, p99) = (1_000_000_000i64 / 19, 1_000_000_000i64 / 99);
    let of_outsider: Vec<(i64, Option<&str>)> = stored
        .iter()
        .filter(|r| r.signal == "profiles")
        .filter(|r| r.resource.get("process.pid").and_then(|v| v.as_u64()) == Some(outsider_pid as u64))
        .flat_map(|r| &r.profiles)
        .map(|p| (p.period, p.attributes.get("profile.trigger.rule").and_then(|v| v.as_str())))
        .collect();
    assert!(!of_outsider.is_empty(), "the outsider was profiled");
    assert!(of_outsider.iter().all(|p| *p == (p19, None)), "outside the burst: {of_outsider:?}");
    let service_periods: std::collections::BTreeSet<i64> = stored
        .iter()
        .filter(|r| r.signal == "profiles")
        .filter(|r| r.resource.get("service.name").and_then(|v| v.as_str()) == Some(service))
        .flat_map(|r| &r.profiles)
        .filter(|p| p.attributes.contains_key("profile.trigger.rule"))
        .map(|p| p.period)
        .collect();
    assert_eq!(service_periods, [p99].into(), "the service's labelled profiles are at 99 Hz");
    let labelled: usize = stored
        .iter()
        .filter(|r| r.signal == "profiles")
        .filter(|r| r.resource.get("service.name").and_then(|v| v.as_str()) == Some(service))
        .flat_map(|r| &r.profiles)
        .filter(|p| p.attributes.get("profile.trigger.rule").and_then(|v| v.as_str()) == Some("svc-step"))
        .map(|p| p.timestamps.len())
        .sum();
    eprintln!(
        "event value {value:.3} (EWMA {:.3}); {labelled} of the service's samples in the burst",
        num_attr(a, "anomaly.ewma")
    );
    assert!(labelled >= 40, "the service's samples at 99 Hz in the 3 s window: {labelled}");
}

/// Seconds of a steady, noisy CPU load: every second a busy share drawn uniformly from
/// 20–80 % of one CPU (a fixed seed), the rest asleep.
const NOISY_LOAD: &str = r#"
import random, sys, time
random.seed(16)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    start = time.monotonic()
    busy = start + random.uniform(0.2, 0.8)
    while time.monotonic() < busy:
        pass
    time.sleep(max(0.0, start + 1.0 - time.monotonic()))
"#;

/// The other side of detection: two minutes of a load that is steady but noisy (each second's
/// share of one CPU drawn from 20–80 %, so the node swings between ~10 % and ~40 % every
/// second) never trigger the default rule (Z-score 3 after 10 points of warm-up, 3 of the last
/// 10 anomalous, floor 10 %, ceiling 80 %): no event, no burst, the rate stays 19 Hz.
#[test]
fn two_minutes_of_steady_noisy_load_never_trigger() {
    const T: &str = "two_minutes_of_steady_noisy_load_never_trigger";
    if !bpf_allowed(T) {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("anomaly-noise");
    let config = "receivers:\n  profiling: { samples_per_second: 19, reporter_interval: 1s }\n  \
         anomaly:\n    interval: 1s\n    rules: [{ name: node-cpu, signal: node_cpu }]\n\
         exporters:\n  debug: {}\n\
         service:\n  pipelines:\n    profiles: { receivers: [profiling], exporters: [debug] }\n    \
         logs: { receivers: [anomaly], exporters: [debug] }\n";
    let agent = Collector::start(&dir, config);
    let mut load =
        Group::spawn("the noisy load", std::process::Command::new("python3").args(["-c", NOISY_LOAD, "135"]));
    let load_pid = load.id();
    // 10 points of warm-up, then two minutes watched.
    agent
        .wait_value("otelprof_anomaly_points_total", &[("rule", "node-cpu")], Duration::from_secs(150), |v| v >= 130.0);
    let load_cpu_s = cpu_ticks(load_pid) as f64 / 100.0;
    let metrics = agent.metrics();
    load.stop(Duration::from_secs(1));
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    eprintln!("the noisy load used {load_cpu_s:.1} CPU-s in the agent's first 130 points");
    // Uniform shares of 0.2–0.8 average 0.5 of a CPU: the load was there.
    assert!(load_cpu_s > 40.0, "the noisy load used only {load_cpu_s:.1} CPU-s");
    for series in ["otelprof_anomaly_triggers_total", "otelprof_anomaly_bursts_total", "otelprof_bursts_total"] {
        assert_eq!(sum(&metrics, series, &[]), 0.0, "{series}\n{metrics}");
    }
    assert_eq!(sum(&metrics, "otelprof_samples_per_second", &[]), 19.0, "{metrics}");
}

/// The `metric` signal through the `anomaly` connector: an application (the Python SDK, OTLP/HTTP
/// every 200 ms, busy on a CPU) reports the gauge `queue.depth` for two queues; the rule's OTTL
/// condition selects `queue=email`, whose depth steps from ~10 to 200. The rule triggers for
/// that series, the burst covers the application's process (found by its `service.name`), whose
/// profiles in the window carry the rule at 99 Hz, and the event reaches the OTLP sink; the
/// other queue (500 throughout) does nothing.
#[test]
fn a_step_in_an_applications_gauge_bursts_its_processes() {
    const T: &str = "a_step_in_an_applications_gauge_bursts_its_processes";
    if !bpf_allowed(T) || !python_peers(T) {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("anomaly-metric");
    let sink = Sink::start(&dir);
    let otlp = common::servers::free_addr();
    let service = "gauge-step-svc";
    let config = format!(
        "receivers:\n  profiling:\n    samples_per_second: 19\n    reporter_interval: 1s\n    \
         unwind_cache: {{ dir: '{}' }}\n  \
         otlp: {{ protocols: {{ http: {{ endpoint: '{otlp}' }} }} }}\n\
         connectors:\n  anomaly:\n    \
         rules: [{{ name: queue, signal: metric, \
         condition: 'metric.name == \"queue.depth\" and attributes[\"queue\"] == \"email\"', \
         warmup: 5, floor: 50, min_stddev: 1 }}]\n    \
         burst: {{ receiver: profiling, samples_per_second: 99, duration: 3s }}\n\
         exporters:\n  otlphttp: {{ endpoint: 'http://127.0.0.1:{}' }}\n\
         service:\n  pipelines:\n    \
         profiles: {{ receivers: [profiling], exporters: [otlphttp] }}\n    \
         metrics: {{ receivers: [otlp], exporters: [anomaly] }}\n    \
         logs: {{ receivers: [anomaly], exporters: [otlphttp] }}\n",
        dir.join("unwind").display(),
        sink.http
    );
    let agent = Collector::start(&dir, &config);
    let app = std::process::Command::new("python3")
        .arg(harness().join("gauge_step.py"))
        .args(["--endpoint", &format!("http://{otlp}"), "--base-s", "5", "--step-s", "4"])
        .env("OTEL_SERVICE_NAME", service)
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&app.stdout).to_string();
    assert!(app.status.success(), "{out}\n{}", String::from_utf8_lossy(&app.stderr));
    let step: Vec<u64> = out
        .lines()
        .find_map(|l| l.strip_prefix("step "))
        .map(|l| l.split(" pid ").filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_default();
    let [step_ns, pid] = step[..] else { panic!("no `step <ns> pid <pid>` line: {out}") };
    agent.wait_value("otelcol_exporter_sent_log_records_total", &[], Duration::from_secs(10), |v| v == 1.0);
    agent.wait_value("otelprof_samples_per_second", &[], Duration::from_secs(8), |v| v == 19.0);
    std::thread::sleep(Duration::from_millis(1500));
    let points = agent.value("otelprof_anomaly_points_total", &[("rule", "queue")]);
    let acted = agent.value("otelprof_anomaly_triggers_total", &[("outcome", "acted")]);
    let dropped = agent.value("otelprof_anomaly_points_dropped_total", &[]);
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(points >= 20.0, "9 s of exports every 200 ms of the selected series: {points} points");
    assert_eq!((acted, dropped), (1.0, 0.0), "one trigger acted (the rest in its cooldown), no point dropped");

    let stored = sink.dump();
    let records: Vec<&RecordView> = stored.iter().filter(|r| r.signal == "logs").flat_map(|r| &r.records).collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let a = &records[0].attributes;
    assert_eq!(str_attr(a, "anomaly.signal"), "metric");
    assert_eq!(str_attr(a, "anomaly.target"), format!("{service}/queue.depth{{queue=email}}"));
    assert_eq!(num_attr(a, "anomaly.value"), 200.0);
    assert_eq!(str_attr(a, "anomaly.burst.scope"), "target", "{a:?}");
    // The application's process, and any other the profiler saw with its service name (the
    // pyenv shim's short-lived helpers inherit OTEL_SERVICE_NAME).
    assert!(num_attr(a, "anomaly.burst.processes") >= 1.0, "{a:?}");
    let start = num_attr(a, "anomaly.window.start_unix_nano") as u64;
    assert!(start > step_ns, "the burst came after the step");
    eprintln!("step → burst {:.2} s (exports every 200 ms, 3 of 10 points confirm)", (start - step_ns) as f64 / 1e9);
    let (p19, p99) = (1_000_000_000i64 / 19, 1_000_000_000i64 / 99);
    let of_app: Vec<(i64, Option<&str>)> = stored
        .iter()
        .filter(|r| r.signal == "profiles")
        .filter(|r| r.resource.get("process.pid").and_then(|v| v.as_u64()) == Some(pid))
        .flat_map(|r| &r.profiles)
        .map(|p| (p.period, p.attributes.get("profile.trigger.rule").and_then(|v| v.as_str())))
        .collect();
    assert!(of_app.contains(&(p99, Some("queue"))), "the application's profiles in the window: {of_app:?}");
    assert!(of_app.contains(&(p19, None)), "and before it: {of_app:?}");
    assert!(
        of_app.iter().all(|p| *p == (p99, Some("queue")) || *p == (p19, None)),
        "labelled at 99 Hz or unlabelled at 19 Hz: {of_app:?}"
    );
}
