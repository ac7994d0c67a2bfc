//! Helpers shared by otelprof's integration tests: workloads built by the tests themselves,
//! the privilege policy for BPF tests, and independent readers of the outputs.
#![allow(dead_code)]

pub mod agent;
pub mod collector;
pub mod opamp;
pub mod servers;

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Mutex, MutexGuard, OnceLock},
};

use otelprof_proto::pprof;
use prost::Message;

/// The `otelprof` binary under test.
pub fn otelprof() -> Command {
    Command::new(env!("CARGO_BIN_EXE_otelprof"))
}

/// A scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("otelprof-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating scratch dir");
    dir
}

/// Builds `tests/workloads/NAME.c` once per test run with the C compiler the `cc` crate finds.
///
/// `-O0` with frame pointers: GCC omits the frame setup of leaf functions at -O1 and above even
/// with `-mno-omit-leaf-frame-pointer`, which hides a leaf's caller from frame-pointer unwinding.
pub fn workload(name: &str) -> PathBuf {
    build_c(name, &[&format!("{name}.c")], &["-O0", "-g", "-fno-omit-frame-pointer", "-pthread"])
}

/// Builds `tests/workloads/SOURCES` into `out` with `flags` (a C executable, or a shared library
/// with `-shared -fPIC`; C++ when a source ends in `.cpp`), once per test run.
pub fn build_c(out: &str, sources: &[&str], flags: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(out) {
        return p.clone();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("workloads");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(out);
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    // opt_level and debug are required outside build scripts; `flags` come later and win.
    let compiler = cc::Build::new()
        .target(&triple)
        .host(&triple)
        .cpp(sources.iter().any(|s| s.ends_with(".cpp")))
        .opt_level(0)
        .debug(false)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .get_compiler();
    let mut cmd = compiler.to_command();
    for s in sources {
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/workloads").join(s));
    }
    let o = cmd.args(flags).arg("-o").arg(&exe).current_dir(&dir).output().expect("running the C compiler");
    assert!(o.status.success(), "building {out}: {}", String::from_utf8_lossy(&o.stderr));
    built.insert(out.to_string(), exe.clone());
    exe
}

/// BPF tests run one at a time: they spin CPUs and measure sample shares.
pub fn bpf_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether this process may load BPF. In CI (CI=true, run as root) a BPF test must run, so a
/// missing privilege fails the test; elsewhere the test is skipped and says so.
pub fn bpf_allowed(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: BPF tests must run as root in CI");
    }
    eprintln!("SKIPPED {test}: loading BPF needs root (CAP_BPF + CAP_PERFMON); run the tests as root");
    false
}

/// Runs a command and returns its output, failing the test with its stderr if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"))
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Reads a gzipped pprof file with prost.
pub fn read_pprof(path: &Path) -> pprof::Profile {
    let gz = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut raw).expect("pprof output is gzip");
    pprof::Profile::decode(&raw[..]).expect("pprof output decodes")
}

/// A decoded pprof sample: its stack as function names (leaf first, inlined frames expanded) and
/// its labels.
#[derive(Debug, Clone)]
pub struct Stack {
    pub functions: Vec<String>,
    /// Per entry of `functions`, the file name of its location's mapping (`[vdso]`,
    /// `[kernel.kallsyms]`, a path; empty without a mapping).
    pub modules: Vec<String>,
    pub count: i64,
    pub pid: i64,
    pub tid: i64,
    pub thread_name: String,
    /// Every string label (key, value).
    pub labels: Vec<(String, String)>,
}

impl Stack {
    /// A string label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

pub fn stacks(p: &pprof::Profile) -> Vec<Stack> {
    let s = |i: i64| p.string_table[i as usize].clone();
    let funcs: HashMap<u64, String> = p.function.iter().map(|f| (f.id, s(f.name))).collect();
    let locs: HashMap<u64, &pprof::Location> = p.location.iter().map(|l| (l.id, l)).collect();
    let maps: HashMap<u64, String> = p.mapping.iter().map(|m| (m.id, s(m.filename))).collect();
    p.sample
        .iter()
        .map(|sample| {
            let lines = || sample.location_id.iter().flat_map(|id| locs[id].line.iter().map(move |l| (id, l)));
            let functions = lines().map(|(_, l)| funcs[&l.function_id].clone()).collect();
            let modules = lines().map(|(id, _)| maps.get(&locs[id].mapping_id).cloned().unwrap_or_default()).collect();
            let label = |k: &str| sample.label.iter().find(|l| s(l.key) == k);
            Stack {
                functions,
                modules,
                count: sample.value[0],
                pid: label("pid").map(|l| l.num).unwrap_or(-1),
                tid: label("tid").map(|l| l.num).unwrap_or(-1),
                thread_name: label("thread_name").map(|l| s(l.str)).unwrap_or_default(),
                labels: sample.label.iter().filter(|l| l.str != 0).map(|l| (s(l.key), s(l.str))).collect(),
            }
        })
        .collect()
}

/// True when `chain` (leaf first) appears as consecutive frames of `functions`.
pub fn has_chain(functions: &[String], chain: &[&str]) -> bool {
    functions.windows(chain.len()).any(|w| w.iter().zip(chain).all(|(a, b)| a == b))
}

/// `go tool pprof ARGS FILE`, the independent reader. `None` (skip) when Go is not installed
/// outside CI; in CI its absence fails the test.
pub fn go_pprof(args: &[&str], file: &Path) -> Option<String> {
    let go = Command::new("go").arg("version").output();
    if go.map(|o| !o.status.success()).unwrap_or(true) {
        if std::env::var_os("CI").is_some() {
            panic!("`go` (Debian golang-go) is required in CI to check pprof output");
        }
        eprintln!("SKIPPED go tool pprof check: `go` not installed (apt-get install golang-go)");
        return None;
    }
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("PPROF_BINARY_PATH", "/nonexistent")
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("running go tool pprof");
    assert!(out.status.success(), "go tool pprof {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Decodes an OTLP file with the independent Python reader (`tests/python/otlp_check.py`,
/// opentelemetry-proto 1.45.2). `kind` is `request` or `data`. `None` (skip) when the Python
/// package is missing outside CI; in CI its absence fails the test.
pub fn python_otlp(kind: &str, file: &Path) -> Option<serde_json::Value> {
    let probe = Command::new("python3").args(["-c", "import opentelemetry.proto.profiles.v1development"]).output();
    if probe.map(|o| !o.status.success()).unwrap_or(true) {
        if std::env::var_os("CI").is_some() {
            panic!("python3 with opentelemetry-proto==1.45.2 is required in CI");
        }
        eprintln!("SKIPPED Python OTLP check: pip install opentelemetry-proto==1.45.2");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/otlp_check.py");
    let out = Command::new("python3").arg(script).arg(kind).arg(file).output().expect("running python3");
    assert!(
        out.status.success(),
        "the Python OTLP reader rejected {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("reader prints JSON"))
}

/// Leaf-first function names of every sample of every resource, with their counts.
pub fn otlp_samples(summary: &serde_json::Value) -> Vec<(Vec<String>, i64, serde_json::Value)> {
    let mut out = Vec::new();
    for r in summary["resources"].as_array().unwrap() {
        for p in r["profiles"].as_array().unwrap() {
            for s in p["samples"].as_array().unwrap() {
                let f = s["functions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
                out.push((f, s["count"].as_i64().unwrap(), s.clone()));
            }
        }
    }
    out
}

/// Starts `cmd` with its stderr going to `log` and returns once that log shows `ready` (the line
/// `record` and `agent` print after attaching), so that a test's signal or workload never races
/// BPF loading, which takes longer on a loaded CI machine. Fails the test with the log after
/// `timeout`, or when the process exits first.
pub fn spawn_until_ready(
    cmd: &mut Command,
    log: &Path,
    ready: &str,
    timeout: std::time::Duration,
) -> std::process::Child {
    let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
    let mut child = cmd.stderr(file).spawn().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let t = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(ready) {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{cmd:?} exited ({status}) before printing {ready:?}:\n{text}");
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not print {ready:?} within {timeout:?}:\n{text}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Waits until the workload `child` (just started) is doing its work, as `ready(pid)` tells from
/// `/proc`, so that a test attaching to a running process attaches to one past its start. Polls
/// every 10 ms; fails the test when the workload exits first or after `timeout`.
pub fn wait_until_running(
    child: &mut std::process::Child,
    what: &str,
    timeout: std::time::Duration,
    ready: impl Fn(u32) -> bool,
) {
    let t = std::time::Instant::now();
    while !ready(child.id()) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before it was running");
        }
        assert!(t.elapsed() < timeout, "{what} was not running within {timeout:?}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Threads of process `pid` (entries of `/proc/PID/task`; 0 when it is gone).
pub fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
}

/// Reaps `child` and returns the CPU time (user + system) it used, in seconds.
pub fn wait_cpu_seconds(child: std::process::Child) -> f64 {
    let pid = child.id() as i32;
    // SAFETY: wait4(2) on our own child, not reaped before (`child` is consumed); rusage is
    // plain data.
    let (status, usage) = unsafe {
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::wait4(pid, &mut status, 0, &mut usage), pid, "wait4");
        (status, usage)
    };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the workload failed: {status}");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU time process `pid` has used so far, in clock ticks (utime + stime of `/proc/PID/stat`).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; the first field after the name is 3.
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    tick(11) + tick(12)
}
