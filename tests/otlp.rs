//! OTLP Profiles output of `otelprof record`, read back by the independent Python decoder
//! (opentelemetry-proto 1.45.2) and by serde for OTLP/JSON.

mod common;

use common::*;

const CHAIN: [&str; 4] = ["hot_leaf", "middle", "outer", "main"];

#[test]
fn otlp_proto_resource_samples_and_mappings() {
    if !bpf_allowed("otlp_proto_resource_samples_and_mappings") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("otlp-proto");
    let out = dir.join("chain.otlp.pb");
    let o = run(otelprof().args(["record", "-F", "499", "-o"]).arg(&out).arg("--").arg(workload("chain")).arg("1.5"));
    assert!(o.status.success(), "{}", stderr(&o));
    let Some(summary) = python_otlp("data", &out) else { return };
    let resources = summary["resources"].as_array().unwrap();
    let chain = resources
        .iter()
        .find(|r| r["attributes"]["process.executable.name"] == "chain")
        .unwrap_or_else(|| panic!("a resource for the workload: {summary:#}"));
    let a = &chain["attributes"];
    let pid = a["process.pid"].as_i64().unwrap();
    assert_eq!(
        a["service.name"], "unknown_service:chain",
        "service.name falls back to the SDK default with the executable"
    );
    assert_eq!(a["process.executable.path"], workload("chain").to_string_lossy().as_ref());
    assert_eq!(a["host.arch"], "amd64");
    assert_eq!(a["os.type"], "linux");
    assert!(a["host.name"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(a["process.command_line"].as_str().unwrap().ends_with("chain 1.5"));
    let prof = &chain["profiles"][0];
    assert_eq!(prof["scope"], "otelprof");
    assert_eq!(prof["sample_type"], serde_json::json!(["samples", "count"]));
    assert_eq!(prof["period_type"], serde_json::json!(["cpu", "nanoseconds"]));
    assert_eq!(prof["period"], 1_000_000_000 / 499);
    assert_eq!(prof["profile_id"].as_str().unwrap().len(), 32);

    let samples = prof["samples"].as_array().unwrap();
    let total: i64 = samples.iter().map(|s| s["count"].as_i64().unwrap()).sum();
    let full: i64 = samples
        .iter()
        .filter(|s| {
            let f: Vec<String> =
                s["functions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect();
            has_chain(&f, &CHAIN)
        })
        .map(|s| s["count"].as_i64().unwrap())
        .sum();
    assert!(total > 400 && full * 100 >= total * 90, "full chain in {full} of {total}");
    let ncpu = std::thread::available_parallelism().unwrap().get() as i64;
    for s in samples {
        assert_eq!(s["timestamps"], s["count"], "one timestamp per sample");
        assert_eq!(s["attributes"]["thread.id"].as_i64(), Some(pid));
        assert_eq!(s["attributes"]["thread.name"], "chain");
        assert!((0..ncpu).contains(&s["attributes"]["cpu.logical_number"].as_i64().unwrap()));
        let types: Vec<&str> = s["frame_types"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        let user_from = types.iter().position(|t| *t == "native").unwrap_or(types.len());
        assert!(
            types[..user_from].iter().all(|t| *t == "kernel") && types[user_from..].iter().all(|t| *t == "native"),
            "{types:?}"
        );
        if s["functions"][0] == "hot_leaf" {
            assert!(user_from == 0, "samples in hot_leaf are user-only: {types:?}");
        }
    }
    let m = summary["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["filename"] == workload("chain").to_string_lossy().as_ref())
        .expect("mapping of the workload");
    assert_eq!(m["attributes"]["process.executable.build_id.gnu"].as_str().unwrap().len(), 40);
    assert_eq!(m["attributes"]["process.executable.build_id.htlhash"].as_str().unwrap().len(), 32);
}

#[test]
fn service_name_and_attributes_come_from_the_process_environment() {
    if !bpf_allowed("service_name_and_attributes_come_from_the_process_environment") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("otlp-env");
    let out = dir.join("env.otlp.pb");
    let o = run(otelprof()
        .args(["record", "-F", "299", "--no-command-line", "-o"])
        .arg(&out)
        .args([
            "--",
            "env",
            "OTEL_SERVICE_NAME=checkout",
            "OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=test%2C1,service.name=ignored",
        ])
        .arg(workload("chain"))
        .arg("1"));
    assert!(o.status.success(), "{}", stderr(&o));
    let Some(summary) = python_otlp("data", &out) else { return };
    let r = summary["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["attributes"]["process.executable.name"] == "chain")
        .unwrap_or_else(|| panic!("{summary:#}"));
    assert_eq!(r["attributes"]["service.name"], "checkout", "OTEL_SERVICE_NAME wins");
    assert_eq!(r["attributes"]["deployment.environment.name"], "test,1");
    assert!(r["attributes"].get("process.command_line").is_none(), "--no-command-line");
}

#[test]
fn kernel_frames_are_typed_kernel() {
    if !bpf_allowed("kernel_frames_are_typed_kernel") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("otlp-kernel");
    let out = dir.join("sys.otlp.pb");
    let o = run(otelprof().args(["record", "-F", "499", "-o"]).arg(&out).arg("--").arg(workload("syscalls")).arg("1"));
    assert!(o.status.success(), "{}", stderr(&o));
    let Some(summary) = python_otlp("data", &out) else { return };
    let samples = otlp_samples(&summary);
    let with_kernel: Vec<_> = samples.iter().filter(|(_, _, s)| s["frame_types"][0] == "kernel").collect();
    assert!(!with_kernel.is_empty());
    let (mut total, mut via_syscall, mut without_entry) = (0i64, 0i64, Vec::new());
    for (f, n, s) in &with_kernel {
        let types: Vec<&str> = s["frame_types"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        let first_native = types.iter().position(|t| *t == "native").unwrap_or(types.len());
        assert!(types[first_native..].iter().all(|t| *t == "native"), "kernel frames first, then user: {types:?}");
        // A kernel stack starts at a kernel entry: a syscall, or an exception/interrupt (a page
        // fault or timer tick can land in this workload too). The kernel's own unwinder very
        // rarely stops at the first frame (a sample in a retpoline thunk, which has no frame of
        // its own: CI once got `__pi___x86_indirect_thunk_rax` alone, 1 sample of hundreds).
        let entry = |p: &str| f.iter().any(|n| n.contains(p));
        if !(entry("entry_SYSCALL_64") || entry("asm_exc_") || entry("asm_sysvec_") || entry("asm_common_interrupt")) {
            without_entry.push((*n, f.clone()));
        }
        total += n;
        if entry("entry_SYSCALL_64") {
            via_syscall += n;
        }
    }
    let truncated: i64 = without_entry.iter().map(|(n, _)| n).sum();
    assert!(
        truncated * 100 <= total,
        "kernel stacks without an entry frame: {truncated} of {total}: {without_entry:?}"
    );
    assert!(via_syscall * 100 >= total * 90, "a syscall loop is mostly in syscalls: {via_syscall} of {total}");
    let kernel = summary["mappings"].as_array().unwrap().iter().find(|m| m["filename"] == "[kernel.kallsyms]").unwrap();
    if std::path::Path::new("/sys/kernel/notes").exists() {
        assert_eq!(kernel["attributes"]["process.executable.build_id.gnu"].as_str().map(str::len), Some(40));
    }
}

#[test]
fn symbolize_none_leaves_addresses_for_the_backend() {
    if !bpf_allowed("symbolize_none_leaves_addresses_for_the_backend") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("otlp-none");
    let out = dir.join("none.otlp.pb");
    let o = run(otelprof()
        .args(["record", "-F", "299", "--symbolize", "none", "-o"])
        .arg(&out)
        .arg("--")
        .arg(workload("chain"))
        .arg("1"));
    assert!(o.status.success(), "{}", stderr(&o));
    let Some(summary) = python_otlp("data", &out) else { return };
    assert_eq!(summary["functions"], 1, "only the zero function");
    let exe = workload("chain");
    let size = std::fs::metadata(&exe).unwrap().len();
    let mapping_of_exe = summary["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .position(|m| m["filename"] == exe.to_string_lossy().as_ref())
        .unwrap();
    let mut seen = 0;
    for (f, _, s) in otlp_samples(&summary) {
        assert!(f.is_empty(), "no functions");
        for (m, a) in s["mappings"].as_array().unwrap().iter().zip(s["addresses"].as_array().unwrap()) {
            if m.as_u64() == Some(mapping_of_exe as u64) {
                assert!(a.as_u64().unwrap() < size, "a file-relative address inside the file");
                seen += 1;
            }
        }
    }
    assert!(seen > 0);
}

#[test]
fn otlp_json_is_the_same_data() {
    if !bpf_allowed("otlp_json_is_the_same_data") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("otlp-json");
    let out = dir.join("chain.otlp.json");
    let o = run(otelprof().args(["record", "-F", "299", "-o"]).arg(&out).arg("--").arg(workload("chain")).arg("1"));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    // OTLP/JSON conventions: camelCase keys, hex IDs, 64-bit integers as strings.
    let prof = &v["resourceProfiles"][0]["scopeProfiles"][0]["profiles"][0];
    assert!(prof["profileId"].as_str().unwrap().chars().all(|c| c.is_ascii_hexdigit()));
    assert!(prof["samples"][0]["timestampsUnixNano"][0].is_string());
    assert!(v["dictionary"]["stringTable"][0] == "");
    // Decoded back into the protobuf types it round-trips to the same wire message.
    let data: opentelemetry_proto::tonic::profiles::v1development::ProfilesData = serde_json::from_str(&text).unwrap();
    let pb = dir.join("from-json.otlp.pb");
    std::fs::write(&pb, prost::Message::encode_to_vec(&data)).unwrap();
    let Some(summary) = python_otlp("data", &pb) else { return };
    let total: i64 = otlp_samples(&summary).iter().map(|(_, c, _)| c).sum();
    assert!(total > 200, "{total}");
}
