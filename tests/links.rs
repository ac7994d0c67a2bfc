//! Trace links: samples taken while a thread serves a span carry that span's IDs (OTEP 4947
//! thread context), and the process's published resource (OTEP 4719) describes it.
//!
//! The writer (`tests/workloads/ctx_main.c`) runs three threads through spans; span k of thread t
//! has trace_id `7e t k <pid LE> 0.. 01` and span_id `5b t k 0 0 0 0 01`, attributes
//! `http.route=/r/k` and `worker=wt`. Even spans spin in `spin_even`, odd ones in `spin_odd`, the
//! gaps between spans (no context) in `outside_span`: every sample's link can be checked against
//! its stack.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;

/// One sample as any output shows it.
struct Observed {
    functions: Vec<String>,
    count: i64,
    tid: i64,
    trace_id: String,
    span_id: String,
    attrs: HashMap<String, String>,
}

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2).filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect()
}

/// Checks every sample against the writer's scheme; returns (linked correctly, in spans).
fn check(samples: &[Observed], pid: u32, err: &str) {
    let (mut in_span, mut correct, mut wrong, mut outside_linked) = (0, 0, 0, 0);
    let mut threads: HashMap<i64, HashSet<u8>> = HashMap::new();
    let mut problems = Vec::new();
    for s in samples {
        let even = s.functions.iter().any(|f| f == "spin_even");
        let odd = s.functions.iter().any(|f| f == "spin_odd");
        let linked = !s.trace_id.is_empty();
        if !even && !odd {
            if s.functions.iter().any(|f| f == "outside_span") && linked {
                outside_linked += s.count;
            }
            continue;
        }
        in_span += s.count;
        if !linked {
            continue;
        }
        let (t, sp) = (bytes(&s.trace_id), bytes(&s.span_id));
        let ok = t.len() == 16
            && sp.len() == 8
            && t[0] == 0x7e
            && t[3..7] == pid.to_le_bytes()
            && t[15] == 1
            && sp[0] == 0x5b
            && sp[1] == t[1]
            && sp[2] == t[2]
            && sp[7] == 1
            && t[2].is_multiple_of(2) == even
            && s.attrs.get("http.route").map(String::as_str) == Some(&format!("/r/{}", t[2]))
            && s.attrs.get("worker").map(String::as_str) == Some(&format!("w{}", t[1]));
        if ok {
            correct += s.count;
            threads.entry(s.tid).or_default().insert(t[1]);
        } else {
            wrong += s.count;
            if problems.len() < 5 {
                problems.push(format!(
                    "{} {} {:?} in {:?}",
                    s.trace_id,
                    s.span_id,
                    s.attrs,
                    &s.functions[..3.min(s.functions.len())]
                ));
            }
        }
    }
    assert!(in_span > 300, "{in_span} samples in spans\n{err}");
    assert_eq!(wrong, 0, "samples carrying a wrong span: {problems:?}");
    assert_eq!(outside_linked, 0, "samples outside spans carry no link");
    assert!(correct * 100 >= in_span * 99, "{correct} of {in_span} samples in spans linked\n{err}");
    assert!(threads.len() == 3 && threads.values().all(|w| w.len() == 1), "each thread its own spans: {threads:?}");
}

/// Samples in `samples` that carry a link.
fn linked(samples: &[Observed]) -> i64 {
    samples.iter().filter(|s| !s.trace_id.is_empty()).map(|s| s.count).sum()
}

fn from_pprof(path: &std::path::Path) -> Vec<Observed> {
    stacks(&read_pprof(path))
        .into_iter()
        .map(|s| Observed {
            trace_id: s.label("trace_id").unwrap_or_default().to_string(),
            span_id: s.label("span_id").unwrap_or_default().to_string(),
            attrs: s.labels.iter().filter(|(k, _)| k == "http.route" || k == "worker").cloned().collect(),
            functions: s.functions,
            count: s.count,
            tid: s.tid,
        })
        .collect()
}

fn from_otlp(summary: &serde_json::Value) -> Vec<Observed> {
    otlp_samples(summary)
        .into_iter()
        .map(|(functions, count, s)| {
            let a = &s["attributes"];
            let text = |k: &str| a[k].as_str().map(str::to_string);
            Observed {
                functions,
                count,
                tid: a["thread.id"].as_i64().unwrap_or(-1),
                trace_id: if s["link_index"].as_i64() == Some(0) {
                    String::new()
                } else {
                    s["trace_id"].as_str().unwrap().into()
                },
                span_id: s["span_id"].as_str().unwrap_or_default().into(),
                attrs: ["http.route", "worker"].iter().filter_map(|k| Some((k.to_string(), text(k)?))).collect(),
            }
        })
        .collect()
}

/// Records the writer; returns its PID (from the output) and stderr.
fn record_writer(name: &str, out: &str, cmd: &[&std::ffi::OsStr]) -> (std::path::PathBuf, String) {
    let dir = scratch(name);
    let path = dir.join(out);
    let o = run(otelprof()
        .args(["record", "-F", "499", "-o"])
        .arg(&path)
        .arg("--")
        .args(cmd)
        // The published context wins over the environment.
        .env("OTEL_SERVICE_NAME", "from-the-environment"));
    assert!(o.status.success(), "{}", stderr(&o));
    (path, stderr(&o))
}

fn pid_of(err: &str) -> u32 {
    let at = err.find("(PID ").unwrap_or_else(|| panic!("no PID in {err}")) + 5;
    err[at..].split(')').next().and_then(|p| p.parse().ok()).unwrap()
}

fn pprof_case(name: &str, cmd: &[&std::ffi::OsStr]) {
    let (path, err) = record_writer(name, "p.pb.gz", cmd);
    assert!(err.contains("trace links: "), "the summary says how many samples were linked: {err}");
    check(&from_pprof(&path), pid_of(&err), &err);
}

/// The writer's resource in a decoded OTLP summary carries the published process context.
/// Returns false when the summary has no resource of `pid`.
fn check_resource(summary: &serde_json::Value, pid: u32) -> bool {
    let resources = summary["resources"].as_array().unwrap();
    let Some(r) = resources.iter().find(|r| r["attributes"]["process.pid"].as_i64() == Some(pid as i64)) else {
        return false;
    };
    let a = &r["attributes"];
    assert_eq!(a["service.name"], "ctx-writer", "from the process context, over OTEL_SERVICE_NAME");
    assert_eq!(a["service.instance.id"], format!("instance-{pid}").as_str());
    assert_eq!(a["deployment.environment.name"], "otep-test");
    assert!(a.as_object().unwrap().keys().all(|k| !k.starts_with("threadlocal.")), "coordination keys stay out: {a}");
    true
}

fn otlp_case(name: &str, cmd: &[&std::ffi::OsStr]) {
    let (path, err) = record_writer(name, "p.otlp.pb", cmd);
    let Some(summary) = python_otlp("data", &path) else { return };
    let pid = pid_of(&err);
    check(&from_otlp(&summary), pid, &err);
    assert!(check_resource(&summary, pid), "no resource of the writer (PID {pid})");
}

const WRITER_FLAGS: [&str; 2] = ["-O2", "-pthread"];

/// The C writer with `otel_thread_ctx_v1` in the executable.
fn executable_writer() -> std::path::PathBuf {
    build_c(
        "ctx_exe",
        &["ctx_main.c", "ctx_tls.c"],
        &[WRITER_FLAGS[0], WRITER_FLAGS[1], "-Wl,--export-dynamic-symbol=otel_thread_ctx_v1"],
    )
}

#[test]
fn executable_tls_links_samples_in_pprof_and_otlp() {
    if !bpf_allowed("executable_tls_links_samples_in_pprof_and_otlp") {
        return;
    }
    let _g = bpf_lock();
    let exe = executable_writer();
    pprof_case("links-exe-pprof", &[exe.as_os_str(), "3".as_ref()]);
    otlp_case("links-exe-otlp", &[exe.as_os_str(), "3".as_ref()]);
}

fn library(name: &str, tlsdesc: bool) -> std::path::PathBuf {
    let mut flags = vec!["-O2", "-fPIC", "-shared"];
    if tlsdesc {
        flags.push("-mtls-dialect=gnu2");
    }
    build_c(name, &["ctx_tls.c"], &flags)
}

#[test]
fn tlsdesc_library_links_samples() {
    if !bpf_allowed("tlsdesc_library_links_samples") {
        return;
    }
    let _g = bpf_lock();
    let lib = library("libctx_desc.so", true);
    let lib = lib.to_str().unwrap();
    // ctx_set is a weak reference in ctx_main.c: keep the library although nothing binds to it
    // strongly.
    let exe = build_c("ctx_lib_main", &["ctx_main.c"], &[WRITER_FLAGS[0], WRITER_FLAGS[1], "-Wl,--no-as-needed", lib]);
    pprof_case("links-tlsdesc", &[exe.as_os_str(), "3".as_ref()]);
}

#[test]
fn dlopened_libraries_link_samples() {
    if !bpf_allowed("dlopened_libraries_link_samples") {
        return;
    }
    let _g = bpf_lock();
    let exe = build_c("ctx_dl_main", &["ctx_main.c"], &[WRITER_FLAGS[0], WRITER_FLAGS[1], "-ldl"]);
    // TLSDESC in a library loaded after start: glibc gives it dynamic TLS, reached through the DTV.
    let desc = library("libctx_desc.so", true);
    otlp_case("links-dlopen-tlsdesc", &[exe.as_os_str(), "3".as_ref(), desc.as_os_str()]);
    // The traditional general-dynamic model (DTPMOD64/DTPOFF64 in the GOT).
    let gd = library("libctx_gd.so", false);
    pprof_case("links-dlopen-gd", &[exe.as_os_str(), "3".as_ref(), gd.as_os_str()]);
}

#[test]
fn rust_writer_crate_links_samples() {
    if !bpf_allowed("rust_writer_crate_links_samples") {
        return;
    }
    // The workspace's writer crate and its example, built like a user's application (release,
    // its own target directory so the outer cargo's lock is not needed).
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("context-writer");
    let o = run(std::process::Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", "otel-context-writer", "--example", "spans", "--target-dir"])
        .arg(&target)
        .current_dir(env!("CARGO_MANIFEST_DIR")));
    assert!(o.status.success(), "building the Rust writer: {}", stderr(&o));
    let exe = target.join("release/examples/spans");
    let _g = bpf_lock();
    pprof_case("links-rust-pprof", &[exe.as_os_str(), "3".as_ref()]);
    otlp_case("links-rust-otlp", &[exe.as_os_str(), "3".as_ref()]);
}

/// The agent links samples the same way: a writer started after the agent, found through its
/// exec, streamed over OTLP/HTTP; every request decoded by the Python reader.
#[test]
fn agent_links_samples_in_its_otlp_stream() {
    if !bpf_allowed("agent_links_samples_in_its_otlp_stream") {
        return;
    }
    let _g = bpf_lock();
    let exe = executable_writer();
    let dir = scratch("links-agent");
    let (haddr, hstate) = servers::http_server(vec![]);
    let agent = agent::Agent::start(
        &dir,
        &agent::profiles_config(
            "    samples_per_second: 499\n    reporter_interval: 1s\n    targets: { executables: [ctx_exe] }\n",
            &format!("  otlphttp:\n    endpoint: http://{haddr}\n"),
        ),
    );
    let mut w = std::process::Command::new(&exe)
        .arg("3")
        .env("OTEL_SERVICE_NAME", "from-the-environment")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = w.id();
    assert!(w.wait().unwrap().success());
    let m = agent.wait_metric("otelprof_samples_linked_total", std::time::Duration::from_secs(5), |v| v > 0.0);
    let linked_metric = servers::metric(&m, "otelprof_samples_linked_total").unwrap() as i64;
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    let received = hstate.lock().unwrap().received.clone();
    let mut samples = Vec::new();
    let mut with_resource = 0;
    for (i, r) in received.iter().enumerate() {
        let file = dir.join(format!("request-{i}.bin"));
        std::fs::write(&file, &r.raw).unwrap();
        let Some(summary) = python_otlp("request", &file) else { return };
        with_resource += check_resource(&summary, pid) as usize;
        samples.extend(from_otlp(&summary));
    }
    assert!(with_resource >= 2, "the writer's resource in {with_resource} of {} requests", received.len());
    check(&samples, pid, &log);
    // Read before the final drain: at most what the requests carry, and most of it.
    let exported = linked(&samples);
    assert!(
        linked_metric <= exported && linked_metric * 10 >= exported * 8,
        "otelprof_samples_linked_total {linked_metric} vs {exported} linked samples exported"
    );
}

/// A writer that publishes its contexts before otelprof attaches (`record -p`): its tables and
/// thread-context reader are in place before the sampler starts, so the first in-span samples
/// are linked too (before that was done first, the first ~15 samples of every recording at
/// 99 Hz were not).
#[test]
fn a_running_writer_is_linked_from_the_first_sample() {
    if !bpf_allowed("a_running_writer_is_linked_from_the_first_sample") {
        return;
    }
    let _g = bpf_lock();
    let exe = executable_writer();
    let dir = scratch("links-pid");
    let out = dir.join("p.pb.gz");
    let mut w = std::process::Command::new(&exe).arg("30").stdout(std::process::Stdio::null()).spawn().unwrap();
    let pid = w.id();
    // Published its process context and started its three span threads.
    wait_until_running(&mut w, "the writer", std::time::Duration::from_secs(10), |pid| {
        thread_count(pid) >= 4
            && std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains("OTEL_CTX"))
    });
    let o = run(otelprof().args(["record", "-F", "499", "-d", "3", "-p", &pid.to_string(), "-o"]).arg(&out));
    let _ = w.kill();
    let _ = w.wait();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    check(&from_pprof(&out), pid, &err);
}

/// The agent's targets selected by PID get their tables and thread-context readers before the
/// sampler starts, like `record -p`: a writer already in its spans is linked from the agent's
/// first sample.
#[test]
fn agent_pid_target_is_linked_from_the_first_sample() {
    if !bpf_allowed("agent_pid_target_is_linked_from_the_first_sample") {
        return;
    }
    let _g = bpf_lock();
    let exe = executable_writer();
    let dir = scratch("links-agent-pid");
    let mut w = std::process::Command::new(&exe).arg("30").stdout(std::process::Stdio::null()).spawn().unwrap();
    let pid = w.id();
    wait_until_running(&mut w, "the writer", std::time::Duration::from_secs(10), |pid| {
        thread_count(pid) >= 4
            && std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains("OTEL_CTX"))
    });
    let (haddr, hstate) = servers::http_server(vec![]);
    let agent = agent::Agent::start(
        &dir,
        &agent::profiles_config(
            &format!("    samples_per_second: 499\n    reporter_interval: 1s\n    targets: {{ pids: [{pid}] }}\n"),
            &format!("  otlphttp:\n    endpoint: http://{haddr}\n"),
        ),
    );
    agent.wait_metric("otelprof_samples_linked_total", std::time::Duration::from_secs(30), |v| v >= 600.0);
    let (code, log) = agent.stop();
    let _ = w.kill();
    let _ = w.wait();
    assert_eq!(code, Some(0), "{log}");
    let received = hstate.lock().unwrap().received.clone();
    let mut samples = Vec::new();
    for (i, r) in received.iter().enumerate() {
        let file = dir.join(format!("request-{i}.bin"));
        std::fs::write(&file, &r.raw).unwrap();
        let Some(summary) = python_otlp("request", &file) else { return };
        samples.extend(from_otlp(&summary));
    }
    check(&samples, pid, &log);
}
