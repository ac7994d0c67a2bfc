//! Off-CPU profiles (`record --off-cpu`): real BPF on `sched_switch`, a real workload that sleeps
//! in `nanosleep` 70 % of the time and spins 30 %, and the outputs read back by prost and by the
//! independent Python OTLP decoder.

mod common;

use std::path::Path;

use common::*;

/// What the workload measured itself.
struct Measured {
    slept_ns: i64,
    sleeps: i64,
    tid: i64,
}

fn measured(stdout: &[u8]) -> Measured {
    let text = String::from_utf8_lossy(stdout);
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse::<i64>().ok())
            .unwrap_or_else(|| panic!("the workload printed no {key:?}: {text}"))
    };
    Measured { slept_ns: get("slept_ns "), sleeps: get("sleeps "), tid: get("tid ") }
}

fn record(out: &Path, extra: &[&str], seconds: &str) -> (Measured, String) {
    let o = run(otelprof()
        .args(["record", "-F", "499"])
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg("--")
        .arg(workload("offcpu"))
        .arg(seconds));
    assert!(o.status.success(), "{}", stderr(&o));
    (measured(&o.stdout), stderr(&o))
}

fn through_nanosleep(functions: &[String]) -> bool {
    functions.iter().any(|f| f.contains("nanosleep")) && functions.iter().any(|f| f == "sleep_phase")
}

/// Share of the sleeper thread's CPU samples whose stack runs through `spin_phase`.
fn spin_share(p: &otelprof_proto::pprof::Profile, tid: i64) -> (f64, i64) {
    let thread: Vec<Stack> = stacks(p).into_iter().filter(|s| s.tid == tid).collect();
    let total: i64 = thread.iter().map(|s| s.count).sum();
    let spin: i64 = thread.iter().filter(|s| s.functions.iter().any(|f| f == "spin_phase")).map(|s| s.count).sum();
    (spin as f64 / total.max(1) as f64, total)
}

#[test]
fn off_cpu_time_goes_to_the_nanosleep_stack_and_cpu_samples_stay_the_same() {
    if !bpf_allowed("off_cpu_time_goes_to_the_nanosleep_stack_and_cpu_samples_stay_the_same") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("offcpu-pprof");

    // Without --off-cpu: the reference CPU profile, and no second file.
    let (base, _) = record(&dir.join("base.pb.gz"), &[], "3");
    assert!(!dir.join("base.offcpu.pb.gz").exists());
    let (base_share, base_samples) = spin_share(&read_pprof(&dir.join("base.pb.gz")), base.tid);

    let out = dir.join("run.pb.gz");
    let (m, log) = record(&out, &["--off-cpu"], "3");
    assert!(m.sleeps > 100, "the workload slept {} times", m.sleeps);
    assert!(log.contains("otelprof: off-CPU: "), "{log}");

    // CPU profile: unchanged by off-CPU profiling; the spinning function dominates.
    let cpu = read_pprof(&out);
    let (share, samples) = spin_share(&cpu, m.tid);
    eprintln!(
        "CPU samples of the sleeper in spin_phase: {:.1}% of {samples} with --off-cpu, {:.1}% of {base_samples} \
         without",
        share * 100.0,
        base_share * 100.0
    );
    assert!(samples > 100 && base_samples > 100, "{samples} / {base_samples} CPU samples");
    assert!(share >= 0.9 && base_share >= 0.9, "spin_phase share {share} with, {base_share} without --off-cpu");
    assert!((share - base_share).abs() <= 0.05, "spin_phase share {share} with, {base_share} without --off-cpu");

    // Off-CPU profile: its own file and sample types.
    let off = read_pprof(&dir.join("run.offcpu.pb.gz"));
    let s = |i: i64| off.string_table[i as usize].as_str();
    let types: Vec<(&str, &str)> = off.sample_type.iter().map(|t| (s(t.ty), s(t.unit))).collect();
    assert_eq!(types, [("switches", "count"), ("off_cpu", "nanoseconds")]);
    let waits = stacks(&off);
    let value_of = |pred: &dyn Fn(&Stack) -> bool| -> i64 {
        off.sample.iter().zip(&waits).filter(|(_, st)| pred(st)).map(|(smp, _)| smp.value[1]).sum()
    };
    let sleeping = value_of(&|st| st.tid == m.tid && through_nanosleep(&st.functions));
    let ratio = sleeping as f64 / m.slept_ns as f64;
    eprintln!(
        "off-CPU through nanosleep/sleep_phase: {:.3} s; slept (measured by the workload): {:.3} s; ratio {ratio:.3}",
        sleeping as f64 / 1e9,
        m.slept_ns as f64 / 1e9
    );
    assert!((0.9..=1.1).contains(&ratio), "attributed {sleeping} ns of {} ns slept", m.slept_ns);
    // The wait's kernel side: the scheduler under the nanosleep syscall.
    let sleeper_stack =
        waits.iter().find(|st| st.tid == m.tid && through_nanosleep(&st.functions)).expect("a wait through nanosleep");
    assert!(
        has_chain(&sleeper_stack.functions, &["schedule"]) || sleeper_stack.functions.iter().any(|f| f == "__schedule"),
        "{:?}",
        sleeper_stack.functions
    );
    assert_eq!(sleeper_stack.thread_name, "sleeper");
}

#[test]
fn otlp_carries_both_profiles_with_their_sample_types() {
    if !bpf_allowed("otlp_carries_both_profiles_with_their_sample_types") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("offcpu-otlp");
    let out = dir.join("run.otlp.pb");
    let (m, _) = record(&out, &["--off-cpu"], "1.5");
    assert!(!dir.join("run.offcpu.otlp.pb").exists(), "OTLP holds both profiles in one file");
    let Some(summary) = python_otlp("data", &out) else { return };
    let resource = summary["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["attributes"]["process.executable.name"] == "offcpu")
        .unwrap_or_else(|| panic!("a resource for the workload: {summary:#}"));
    let profiles = resource["profiles"].as_array().unwrap();
    let types: Vec<&serde_json::Value> = profiles.iter().map(|p| &p["sample_type"]).collect();
    assert_eq!(
        types,
        [&serde_json::json!(["samples", "count"]), &serde_json::json!(["off_cpu", "nanoseconds"])],
        "{profiles:#?}"
    );
    assert_eq!(profiles[1]["period_type"], serde_json::json!(["off_cpu", "nanoseconds"]));
    let sleeping: i64 = profiles[1]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["attributes"]["thread.id"].as_i64() == Some(m.tid))
        .filter(|s| {
            let f: Vec<String> =
                s["functions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
            through_nanosleep(&f)
        })
        .map(|s| s["count"].as_i64().unwrap())
        .sum();
    let ratio = sleeping as f64 / m.slept_ns as f64;
    assert!((0.9..=1.1).contains(&ratio), "OTLP: {sleeping} ns off CPU through nanosleep of {} ns slept", m.slept_ns);
    let spin: i64 = profiles[0]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["functions"].as_array().unwrap().iter().any(|f| f == "spin_phase"))
        .map(|s| s["count"].as_i64().unwrap())
        .sum();
    assert!(spin > 0, "CPU samples of spin_phase in the CPU profile");
}

#[test]
fn agent_exports_off_cpu_profiles_when_configured() {
    if !bpf_allowed("agent_exports_off_cpu_profiles_when_configured") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("offcpu-agent");
    let (addr, state) = common::servers::grpc_server(vec![]);
    let agent = common::agent::Agent::start(
        &dir,
        &common::agent::profiles_config(
            "    samples_per_second: 99\n    reporter_interval: 1s\n    off_cpu_threshold: 1.0\n    targets: { executables: [offcpu] }\n",
            &format!("  otlp:\n    endpoint: {addr}\n    tls: {{ insecure: true }}\n"),
        ),
    );
    let w = std::process::Command::new(workload("offcpu"))
        .arg("2")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting the workload");
    let o = w.wait_with_output().expect("waiting for the workload");
    let m = measured(&o.stdout);
    agent.wait_metric("otelprof_off_cpu_waits_total", std::time::Duration::from_secs(5), |v| v >= m.sleeps as f64);
    let metrics = agent.metrics();
    let lost = |reason: &str| {
        common::servers::metric(&metrics, &format!("otelprof_off_cpu_lost_total{{reason=\"{reason}\"}}"))
    };
    assert_eq!((lost("ring_buffer_full"), lost("wait_map_full")), (Some(0.0), Some(0.0)), "{metrics}");
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("and off CPU (threshold 1)"), "{log}");

    let mut sleeping = 0i64;
    for (i, r) in state.lock().unwrap().received.iter().enumerate() {
        let file = dir.join(format!("request-{i}.pb"));
        std::fs::write(&file, &r.raw).unwrap();
        let Some(summary) = python_otlp("request", &file) else { return };
        for res in summary["resources"].as_array().unwrap() {
            for p in res["profiles"].as_array().unwrap() {
                if p["sample_type"] != serde_json::json!(["off_cpu", "nanoseconds"]) {
                    continue;
                }
                for s in p["samples"].as_array().unwrap() {
                    let f: Vec<String> =
                        s["functions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
                    // Through nanosleep, not necessarily sleep_phase: the agent selects the
                    // workload at its exec and installs its unwind tables a moment later (a
                    // debug build on a busy machine: up to ~0.5 s); until then libc's frames are
                    // unwound by frame pointers, which skip its caller.
                    if s["attributes"]["thread.id"].as_i64() == Some(m.tid) && f.iter().any(|f| f.contains("nanosleep"))
                    {
                        sleeping += s["count"].as_i64().unwrap();
                    }
                }
            }
        }
    }
    let ratio = sleeping as f64 / m.slept_ns as f64;
    eprintln!("agent: {sleeping} ns off CPU through nanosleep of {} ns slept ({ratio:.3})", m.slept_ns);
    assert!((0.9..=1.1).contains(&ratio), "agent: {sleeping} ns off CPU through nanosleep of {} ns slept", m.slept_ns);
}
