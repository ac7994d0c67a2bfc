//! `otelprof record --export`: real OTLP/gRPC and OTLP/HTTP peers on loopback, the OTLP retry
//! rules, and nothing lost when the backend refuses.

mod common;

use std::time::Duration;

use common::{
    agent::{profiles_config, Agent},
    servers::*,
    *,
};
use tonic::Code;

fn record_export(name: &str, url: &str, extra: &[&str]) -> (std::process::Output, std::path::PathBuf) {
    let dir = scratch(name);
    let o = run(otelprof()
        .current_dir(&dir)
        .args(["record", "-F", "199", "--export", url])
        .args(extra)
        .arg("--")
        .arg(workload("chain"))
        .arg("0.8"));
    (o, dir)
}

fn assert_chain_profile(r: &Received) {
    let rp = r.request.resource_profiles.iter().find(|rp| {
        rp.resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .any(|kv| kv.key == "process.executable.name" && format!("{:?}", kv.value).contains("\"chain\""))
    });
    assert!(rp.is_some(), "a resource for the workload");
    let dict = r.request.dictionary.as_ref().unwrap();
    assert!(dict.string_table.iter().any(|s| s == "hot_leaf"), "symbolized on the host");
}

#[test]
fn grpc_export_with_headers_and_gzip() {
    if !bpf_allowed("grpc_export_with_headers_and_gzip") {
        return;
    }
    let _g = bpf_lock();
    let (addr, state) = grpc_server(vec![]);
    let (o, dir) =
        record_export("export-grpc", &format!("grpc://{addr}"), &["--export-header", "X-Scope-OrgID=tenant-a"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("exported 1 profiles"), "{}", stderr(&o));
    assert!(!dir.join("otelprof.pb.gz").exists(), "no default file when exporting");
    let s = state.lock().unwrap();
    assert_eq!(s.received.len(), 1);
    let r = &s.received[0];
    assert!(r.headers.contains(&("x-scope-orgid".into(), "tenant-a".into())), "{:?}", r.headers);
    assert!(r.headers.iter().any(|(k, v)| k == "grpc-encoding" && v == "gzip"), "{:?}", r.headers);
    assert_chain_profile(r);
    let file = dir.join("received.pb");
    std::fs::write(&file, &r.raw).unwrap();
    if let Some(summary) = python_otlp("request", &file) {
        assert!(otlp_samples(&summary).iter().any(|(f, _, _)| f.first().map(String::as_str) == Some("hot_leaf")));
    }
}

#[test]
fn http_export_posts_protobuf_to_the_profiles_path() {
    if !bpf_allowed("http_export_posts_protobuf_to_the_profiles_path") {
        return;
    }
    let _g = bpf_lock();
    let (addr, state) = http_server(vec![]);
    let (o, dir) = record_export("export-http", &format!("http://{addr}"), &["--export-header", "X-Scope-OrgID=t"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = state.lock().unwrap();
    assert_eq!(s.received.len(), 1);
    let r = &s.received[0];
    assert_eq!(r.path, "/v1development/profiles");
    assert!(r.headers.contains(&("content-type".into(), "application/x-protobuf".into())));
    assert!(r.headers.contains(&("content-encoding".into(), "gzip".into())));
    assert!(r.headers.contains(&("x-scope-orgid".into(), "t".into())));
    assert_chain_profile(r);
    let file = dir.join("received.pb");
    std::fs::write(&file, &r.raw).unwrap();
    python_otlp("request", &file);
}

#[test]
fn retryable_failures_are_retried_as_the_server_asks() {
    if !bpf_allowed("retryable_failures_are_retried_as_the_server_asks") {
        return;
    }
    let _g = bpf_lock();
    let (gaddr, gstate) = grpc_server(vec![Answer::Grpc(Code::Unavailable, Some(Duration::from_millis(300)))]);
    let (o, _) = record_export("export-retry-grpc", &format!("grpc://{gaddr}"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(gstate.lock().unwrap().calls, 2, "UNAVAILABLE, then OK");
    assert_eq!(gstate.lock().unwrap().received.len(), 1);

    let (haddr, hstate) = http_server(vec![Answer::Http(503, Some(1)), Answer::Http(429, Some(1))]);
    let (o, _) = record_export("export-retry-http", &format!("http://{haddr}"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(hstate.lock().unwrap().calls, 3, "503, 429, then OK");
}

#[test]
fn invalid_data_is_not_retried_and_nothing_is_lost() {
    if !bpf_allowed("invalid_data_is_not_retried_and_nothing_is_lost") {
        return;
    }
    let _g = bpf_lock();
    let (addr, state) = grpc_server(vec![Answer::Grpc(Code::InvalidArgument, None)]);
    let (o, dir) = record_export("export-invalid", &format!("grpc://{addr}"), &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(state.lock().unwrap().calls, 1, "INVALID_ARGUMENT is not retried");
    assert!(err.contains("InvalidArgument") && err.contains("kept in"), "{err}");
    let kept: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("otelprof-unsent-"))
        .collect();
    assert_eq!(kept.len(), 1, "the profile is kept");
    if let Some(summary) = python_otlp("data", &kept[0].path()) {
        assert!(!otlp_samples(&summary).is_empty());
    }
}

#[test]
fn partial_success_is_reported_not_retried() {
    if !bpf_allowed("partial_success_is_reported_not_retried") {
        return;
    }
    let _g = bpf_lock();
    let (addr, state) = http_server(vec![Answer::Partial(1, "one too old")]);
    let (o, _) = record_export("export-partial", &format!("http://{addr}"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(state.lock().unwrap().calls, 1);
    assert!(stderr(&o).contains("1 rejected: one too old"), "{}", stderr(&o));
}

#[test]
fn a_bad_export_url_fails_before_recording() {
    let o = run(otelprof().args(["record", "-a", "--export", "ftp://x:1"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("bad export URL"), "{}", stderr(&o));
}

/// Runs an agent targeting `chain` with one exporter section (`record` takes URLs, so TLS
/// settings are tested through the agent's exporter config) while `chain` runs; returns its log.
fn run_agent_briefly(dir: &std::path::Path, exporter: &str) -> String {
    let agent = Agent::start(
        dir,
        &profiles_config(
            "    samples_per_second: 99\n    reporter_interval: 500ms\n    targets: { executables: [chain] }\n",
            exporter,
        ),
    );
    let _ = std::process::Command::new(workload("chain")).arg("1.2").status();
    std::thread::sleep(Duration::from_millis(1500));
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    log
}

#[test]
fn grpc_export_over_mutual_tls() {
    if !bpf_allowed("grpc_export_over_mutual_tls") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("export-mtls-grpc");
    let pki = make_pki(&dir);
    let (addr, state) = grpc_mtls_server(&pki);
    let log = run_agent_briefly(
        &dir,
        &format!(
            "  otlp:\n    endpoint: localhost:{}\n    tls:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n",
            addr.port(),
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    );
    assert!(!state.lock().unwrap().received.is_empty(), "profiles arrived over mTLS: {log}");
    // Without the client certificate the server refuses the connection: nothing arrives.
    let (addr2, state2) = grpc_mtls_server(&pki);
    let log2 = run_agent_briefly(
        &dir,
        &format!(
            "  otlp:\n    endpoint: localhost:{}\n    retry_on_failure: {{ enabled: false }}\n    tls:\n      ca_file: {}\n",
            addr2.port(),
            pki.ca.display()
        ),
    );
    assert!(state2.lock().unwrap().received.is_empty(), "{log2}");
    assert!(log2.contains("export failed"), "the refusal is logged: {log2}");
}

#[test]
fn http_export_over_mutual_tls_to_an_independent_server() {
    if !bpf_allowed("http_export_over_mutual_tls_to_an_independent_server") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("export-mtls-http");
    let pki = make_pki(&dir);
    let out = dir.join("received");
    std::fs::create_dir_all(&out).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/tls_otlp_server.py");
    let mut server = std::process::Command::new("python3")
        .arg(script)
        .args([&pki.server_cert, &pki.server_key, &pki.ca, &out])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.as_mut().unwrap()), &mut port).unwrap();
    let log = run_agent_briefly(
        &dir,
        &format!(
            "  otlphttp:\n    endpoint: https://localhost:{}\n    tls:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n",
            port.trim(),
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    );
    let _ = server.kill();
    let _ = server.wait();
    let peer = std::fs::read_to_string(out.join("0.peer")).unwrap_or_else(|_| panic!("nothing arrived: {log}"));
    assert_eq!(peer, "/v1development/profiles otelprof-agent", "path and client certificate seen by the server");
    python_otlp("request", &out.join("0.bin"));
}
