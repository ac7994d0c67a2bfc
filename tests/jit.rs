//! JIT code: named from the runtime's perf map (`node --perf-basic-prof` writes
//! `/tmp/perf-PID.map`) and unwound through by frame pointers (V8 keeps them) back into node's
//! own code, which has tables.

mod common;

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
};

use common::*;

/// Node.js, which the tests need like the C compiler: missing only skips outside CI.
fn node() -> Option<PathBuf> {
    let node = PathBuf::from("/usr/bin/node");
    if node.exists() {
        return Some(node);
    }
    if std::env::var_os("CI").is_some() {
        panic!("node (/usr/bin/node) is required in CI for the JIT tests");
    }
    eprintln!("SKIPPED JIT test: no /usr/bin/node");
    None
}

/// A frame V8 named for the workload's JavaScript (`JS:*hotLeaf /…/jit_hot.js:6:17`).
fn is_workload_js(f: &str) -> bool {
    f.starts_with("JS:") && (f.contains("hotLeaf") || f.contains("jsCaller"))
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/workloads/jit_hot.js")
}

/// `otelprof record -F 499 -o OUT`, run in `dir`: with `--perf-basic-prof` V8 also writes an
/// `isolate-…-v8.log` into its working directory.
fn record_in(dir: &Path, out: &Path) -> std::process::Command {
    let mut cmd = otelprof();
    cmd.current_dir(dir).args(["record", "-F", "499", "-o"]).arg(out);
    cmd
}

/// Records `node --perf-basic-prof jit_hot.js` into `out` (run in its directory); returns
/// otelprof's stderr.
fn record_node(node: &Path, out: &Path) -> String {
    let script = script();
    let dir = out.parent().unwrap_or(Path::new("."));
    let o = run(record_in(dir, out).arg("--").arg(node).args([
        OsStr::new("--perf-basic-prof"),
        script.as_os_str(),
        OsStr::new("3000"),
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    stderr(&o)
}

/// (samples, samples with the workload's JavaScript names, of those the ones reaching
/// `node::Start`).
fn shares(stacks: &[Stack]) -> (i64, i64, i64) {
    let total = stacks.iter().map(|s| s.count).sum();
    let named = stacks.iter().filter(|s| s.functions.iter().any(|f| is_workload_js(f)));
    let named_total = named.clone().map(|s| s.count).sum();
    let to_start = named.filter(|s| s.functions.iter().any(|f| f.starts_with("node::Start"))).map(|s| s.count).sum();
    (total, named_total, to_start)
}

/// V8 leaves its perf map behind when node exits.
fn remove_perf_maps(pids: impl IntoIterator<Item = i64>) {
    for pid in pids {
        let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    }
}

#[test]
fn javascript_frames_are_named_from_the_perf_map_and_unwound_to_node_start() {
    if !bpf_allowed("javascript_frames_are_named_from_the_perf_map_and_unwound_to_node_start") {
        return;
    }
    let Some(node) = node() else { return };
    let _g = bpf_lock();
    let dir = scratch("jit-node");
    let out = dir.join("p.pb.gz");
    let err = record_node(&node, &out);
    let stacks = stacks(&read_pprof(&out));
    remove_perf_maps(stacks.iter().map(|s| s.pid));

    let (total, named_total, to_start) = shares(&stacks);
    let named: Vec<&Stack> = stacks.iter().filter(|s| s.functions.iter().any(|f| is_workload_js(f))).collect();
    eprintln!("JS named in {named_total} of {total} samples; {to_start} of those reach node::Start");
    assert!(total > 500, "{total} samples\n{err}");
    assert!(named_total * 100 >= total * 70, "JS names in {named_total} of {total} samples\n{err}");
    assert!(to_start * 100 >= named_total * 90, "node::Start reached by {to_start} of {named_total}\n{err}");
    // The hot function itself, not only its caller.
    assert!(named.iter().any(|s| s.functions.iter().any(|f| f.starts_with("JS:") && f.contains("hotLeaf"))));
    // JIT frames sit in the `[jit]` mapping.
    for s in &named {
        for (f, m) in s.functions.iter().zip(&s.modules) {
            if f.starts_with("JS:") {
                assert_eq!(m, "[jit]", "{f}");
            }
        }
    }
    assert!(err.contains("otelprof: JIT: "), "the summary says how JIT frames were named:\n{err}");

    // The independent pprof reader sees the names too.
    if let Some(traces) = go_pprof(&["-traces"], &out) {
        assert!(traces.contains("hotLeaf"), "{traces}");
    }
}

#[test]
fn otlp_marks_javascript_frames_as_jit() {
    if !bpf_allowed("otlp_marks_javascript_frames_as_jit") {
        return;
    }
    let Some(node) = node() else { return };
    let _g = bpf_lock();
    let dir = scratch("jit-node-otlp");
    let out = dir.join("p.otlp.pb");
    let err = record_node(&node, &out);
    let Some(summary) = python_otlp("data", &out) else { return };
    let pids = summary["resources"].as_array().unwrap().iter().filter_map(|r| r["attributes"]["process.pid"].as_i64());
    remove_perf_maps(pids);
    let samples = otlp_samples(&summary);
    let mut named = 0;
    for (functions, count, sample) in &samples {
        if !functions.iter().any(|f| is_workload_js(f)) {
            continue;
        }
        named += count;
        // Functions are flattened over the locations' lines (native ones may have inlined
        // levels), so compare counts: every JS function comes from a location of type `jit`.
        let types = sample["frame_types"].as_array().unwrap();
        let jit = types.iter().filter(|t| *t == "jit").count();
        let js = functions.iter().filter(|f| f.starts_with("JS:")).count();
        assert!(jit >= js && js > 0, "{js} JS functions, frame types {types:?}");
    }
    assert!(named > 0, "no JavaScript frames in the OTLP output\n{err}");
    let mappings = summary["mappings"].as_array().unwrap();
    assert!(mappings.iter().any(|m| m["filename"] == "[jit]"), "{mappings:?}");
}

/// A runtime in a container writes its perf map into its own `/tmp`, named by the PID it sees:
/// here node is PID 1 of a new PID namespace with a private tmpfs on `/tmp`, invisible from the
/// host's `/tmp`, and its map is found under `/proc/PID/root/tmp/perf-1.map`.
#[test]
fn a_runtime_in_its_own_namespaces_is_named_from_its_own_tmp() {
    if !bpf_allowed("a_runtime_in_its_own_namespaces_is_named_from_its_own_tmp") {
        return;
    }
    let Some(node) = node() else { return };
    if !Path::new("/usr/bin/unshare").exists() {
        eprintln!("SKIPPED: no unshare (util-linux)");
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("jit-node-namespaces");
    let out = dir.join("p.pb.gz");
    // The script goes into the private /tmp too: the checkout itself may be under the host's
    // /tmp (CI clones there), which the new tmpfs hides.
    let inner = format!(
        "s=\"$(cat '{}')\" && mount -t tmpfs otelprof-test /tmp && printf '%s\\n' \"$s\" > /tmp/jit_hot.js && \
         exec {} --perf-basic-prof /tmp/jit_hot.js 3000",
        script().display(),
        node.display()
    );
    let o = run(record_in(&dir, &out).args([
        "--",
        "/usr/bin/unshare",
        "--mount",
        "--pid",
        "--fork",
        "--mount-proc",
        "sh",
        "-c",
        &inner,
    ]));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let (total, named, to_start) = shares(&stacks(&read_pprof(&out)));
    eprintln!("JS named in {named} of {total} samples; {to_start} of those reach node::Start");
    assert!(named * 100 >= total * 70, "JS names in {named} of {total} samples\n{err}");
    assert!(to_start * 100 >= named * 90, "node::Start reached by {to_start} of {named}\n{err}");
}
