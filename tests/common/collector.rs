//! Real peers for the embedded collector's end-to-end tests (`tests/collector.rs`): an
//! `otelprof agent` started from a Collector-shaped YAML, and the Python harness of
//! `tests/python/collector/` (README there): `sink.py` (an OTLP backend that stores each request),
//! `sdk_send.py` (the OpenTelemetry Python SDK sending), `compare.py` (an independent decoder that
//! checks what arrived) and `rotel.py` (the rotel-agent collector). Plus a grpcio client for raw
//! gRPC calls and a reqwest client for raw OTLP/HTTP posts, so bad input reaches the agent byte
//! for byte as written.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{otelprof, servers::http_get};

/// `tests/python/collector`.
pub fn harness() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/collector")
}

/// Whether a test that needs `what` may run: true when `probe` succeeds. In CI (CI set) a missing
/// peer fails the test; elsewhere the test is skipped and says how to install it.
fn peer_available(test: &str, what: &str, probe: &mut Command) -> bool {
    let ok = probe.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    let install = "pip install -r tests/python/collector/requirements.txt";
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {what} is required in CI ({install})");
    }
    eprintln!("SKIPPED {test}: {what} is missing ({install})");
    false
}

/// The Python harness's imports: the SDK and its OTLP exporters, grpcio, opentelemetry-proto.
pub fn python_peers(test: &str) -> bool {
    peer_available(
        test,
        "python3 with the OpenTelemetry SDK, its OTLP exporters and opentelemetry-proto",
        Command::new("python3").args([
            "-c",
            "import grpc, opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, \
             opentelemetry.exporter.otlp.proto.http, opentelemetry.proto.profiles.v1development",
        ]),
    )
}

/// rotel-agent (PyPI `rotel`), found by `rotel.py info`.
pub fn rotel_available(test: &str) -> bool {
    peer_available(
        test,
        "rotel-agent (PyPI rotel==0.0.1a15)",
        Command::new("python3").arg(harness().join("rotel.py")).arg("info"),
    )
}

/// A child in its own process group, stopped with SIGTERM to the group (so a Python wrapper and
/// what it started go together), killed after a grace period; also when a test fails first.
pub struct Group {
    child: Option<Child>,
    what: &'static str,
}

impl Group {
    pub fn spawn(what: &'static str, cmd: &mut Command) -> Self {
        let child = cmd.process_group(0).spawn().unwrap_or_else(|e| panic!("starting {what} ({cmd:?}): {e}"));
        Self { child: Some(child), what }
    }

    /// The child's stdout, when it was piped (once).
    pub fn child_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGTERM to the group, then the exit code (SIGKILL after `grace`).
    pub fn stop(&mut self, grace: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let pgid = child.id() as i32;
        // SAFETY: kill(2) on the process group of a child this test started.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let t = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if t.elapsed() > grace {
                eprintln!("{} did not stop within {grace:?} after SIGTERM: killed", self.what);
                // SAFETY: as above; the leader is not reaped yet, so the group id is still ours.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Spawns `cmd` (stdout piped) and waits for its `READY grpc=G http=H` line.
fn spawn_ready(what: &'static str, cmd: &mut Command, log: &Path) -> (Group, u16, u16) {
    let log_file = std::fs::File::create(log).unwrap();
    let mut group = Group::spawn(what, cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log_file));
    let stdout = group.child.as_mut().and_then(|c| c.stdout.take()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let port = |key: &str| -> Option<u16> {
        line.split_whitespace().find_map(|w| w.strip_prefix(key)).and_then(|p| p.parse().ok())
    };
    match (line.starts_with("READY"), port("grpc="), port("http=")) {
        (true, Some(g), Some(h)) => (group, g, h),
        _ => panic!(
            "{what} did not print READY (got {line:?}); its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        ),
    }
}

/// `sink.py`: an OTLP backend storing each request as `<signal>-<seq>.pb` in `dir`.
pub struct Sink {
    _proc: Group,
    pub grpc: u16,
    pub http: u16,
    pub dir: PathBuf,
}

impl Sink {
    pub fn start(dir: &Path) -> Self {
        let out = dir.join("sink");
        let mut cmd = Command::new("python3");
        cmd.arg(harness().join("sink.py")).arg("--out").arg(&out);
        let (proc, grpc, http) = spawn_ready("sink.py", &mut cmd, &dir.join("sink.log"));
        Self { _proc: proc, grpc, http, dir: out }
    }

    /// What the stored requests hold, decoded by the harness (see [`dump`]).
    pub fn dump(&self) -> Vec<Stored> {
        dump(&self.dir)
    }
}

/// `rotel.py run`: rotel-agent with OTLP receivers on free ports, exporting OTLP/gRPC to `export`.
pub struct Rotel {
    proc: Group,
    pub grpc: u16,
    pub http: u16,
    log: PathBuf,
}

impl Rotel {
    pub fn start(dir: &Path, name: &str, export: &str) -> Self {
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new("python3");
        cmd.arg(harness().join("rotel.py"))
            .args(["run", "--export", export, "--protocol", "grpc", "--log"])
            .arg(dir.join(format!("{name}-agent.log")));
        let (proc, grpc, http) = spawn_ready("rotel.py", &mut cmd, &log);
        Self { proc, grpc, http, log: dir.join(format!("{name}-agent.log")) }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM (rotel flushes its batches), the exit code.
    pub fn stop(mut self) -> Option<i32> {
        self.proc.stop(Duration::from_secs(10))
    }
}

/// What `sdk_send.py` sent, for `compare.py`.
pub struct Sent {
    pub manifest: PathBuf,
    pub protocol: String,
    pub stdout: String,
}

impl Sent {
    /// Items the SDK sent of `signal`, from its `<signal>: N sent in R requests` line.
    pub fn items(&self, signal: &str) -> u64 {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{signal}: "))?.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

/// Runs `sdk_send.py` and fails the test when an export failed. `seed` and `base_s` (seconds
/// after a fixed epoch) keep the ids and log keys of several sends into one sink apart.
pub fn sdk_send(dir: &Path, protocol: &str, endpoint: &str, signals: &str, seed: u32, base_s: u64) -> Sent {
    sdk_send_with(dir, protocol, endpoint, signals, seed, base_s, &[])
}

/// [`sdk_send`] with more `sdk_send.py` flags (`--compression gzip`).
pub fn sdk_send_with(
    dir: &Path,
    protocol: &str,
    endpoint: &str,
    signals: &str,
    seed: u32,
    base_s: u64,
    extra: &[&str],
) -> Sent {
    let manifest = dir.join(format!("manifest-{}-{seed}.json", protocol.replace('/', "-")));
    // A fixed base time (2026-01-01 + base_s) so log keys (time + severity + body) never collide.
    let base_ns = (1_767_225_600 + base_s) * 1_000_000_000;
    let o = Command::new("python3")
        .arg(harness().join("sdk_send.py"))
        .args(["--protocol", protocol, "--endpoint", endpoint, "--signals", signals, "--manifest"])
        .arg(&manifest)
        .args(["--seed", &seed.to_string(), "--base-time-ns", &base_ns.to_string(), "--timeout", "10"])
        .args(extra)
        .output()
        .expect("running sdk_send.py");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "sdk_send.py --protocol {protocol} to {endpoint} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    Sent { manifest, protocol: protocol.into(), stdout }
}

/// `compare.py` of `sent` against the sink directory (waiting up to 20 s for it to pass);
/// fails the test with its report, else returns it.
pub fn compare(sent: &Sent, sink: &Path, extra: &[&str]) -> String {
    let o = Command::new("python3")
        .arg(harness().join("compare.py"))
        .arg("--manifest")
        .arg(&sent.manifest)
        .arg("--sink")
        .arg(sink)
        .args(["--timeout", "20"])
        .args(extra)
        .output()
        .expect("running compare.py");
    let report = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "compare.py for the {} send failed:\n{report}", sent.protocol);
    report
}

/// Items of `signal` in the whole sink, from compare.py's `<signal>: N sent, M received` line.
pub fn received(report: &str, signal: &str) -> u64 {
    report
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{signal}: "))?.split(", ").nth(1)?.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no `{signal}:` line in compare.py's report:\n{report}"))
}

/// One resource of one stored request, as the harness's opentelemetry-proto decodes it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub file: String,
    pub signal: String,
    /// Resource attributes; scalar values as JSON scalars, others as their text form.
    pub resource: serde_json::Map<String, serde_json::Value>,
    /// Spans, metric data points, log records or profile samples (`Sample` messages: one per
    /// distinct stack and attributes in a report, as the exporters count them).
    pub items: u64,
    /// What the items stand for: for profiles the events the samples hold (the sum of their
    /// values: one per CPU-clock tick), for the other signals the items again.
    pub events: u64,
    /// Span names, metric names; empty for logs and profiles.
    pub names: Vec<String>,
    /// Profiles: each profile's period, attributes (from the dictionary) and sample times.
    pub profiles: Vec<ProfileView>,
    /// Logs: each record's severity number, body text and attributes.
    pub records: Vec<RecordView>,
}

/// One profile of a stored request.
#[derive(Debug, Clone)]
pub struct ProfileView {
    pub period: i64,
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// Every sample's timestamps (Unix ns).
    pub timestamps: Vec<u64>,
}

/// One log record of a stored request.
#[derive(Debug, Clone)]
pub struct RecordView {
    pub time_unix_nano: u64,
    pub severity: i64,
    pub body: String,
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

const DUMP_PY: &str = r#"
import json, os, sys
sys.path.insert(0, sys.argv[1])
from otlp_canon import SIGNALS
RES = {"traces": ("resource_spans", "scope_spans"), "metrics": ("resource_metrics", "scope_metrics"),
       "logs": ("resource_logs", "scope_logs"), "profiles": ("resource_profiles", "scope_profiles")}
def scalar(v):
    which = v.WhichOneof("value")
    x = getattr(v, which) if which else None
    return x if isinstance(x, (str, int, float, bool)) or x is None else str(x)
def points(m):
    kind = m.WhichOneof("data")
    return len(getattr(m, kind).data_points) if kind else 0
out = []
for f in sorted(os.listdir(sys.argv[2])):
    if not f.endswith(".pb") or f.startswith("refused-"):
        continue
    sig = f.split("-")[0]
    msg = SIGNALS[sig].request()
    with open(os.path.join(sys.argv[2], f), "rb") as fh:
        msg.ParseFromString(fh.read())
    rfield, sfield = RES[sig]
    for r in getattr(msg, rfield):
        attrs = {}
        for kv in r.resource.attributes:
            which = kv.value.WhichOneof("value")
            v = getattr(kv.value, which) if which else None
            attrs[kv.key] = v if isinstance(v, (str, int, float, bool)) or v is None else str(v)
        n, events, names, profiles, records = 0, 0, [], [], []
        for s in getattr(r, sfield):
            if sig == "traces":
                n += len(s.spans); names += [x.name for x in s.spans]
            elif sig == "metrics":
                n += sum(points(m) for m in s.metrics); names += [m.name for m in s.metrics]
            elif sig == "logs":
                n += len(s.log_records)
                for lr in s.log_records:
                    records.append({"time": lr.time_unix_nano, "severity": lr.severity_number,
                                    "body": str(scalar(lr.body)), "attributes": {a.key: scalar(a.value) for a in lr.attributes}})
            else:
                n += sum(len(p.samples) for p in s.profiles)
                events += sum(sum(x.values) for p in s.profiles for x in p.samples)
                d = msg.dictionary
                for p in s.profiles:
                    pattrs = {}
                    for i in p.attribute_indices:
                        a = d.attribute_table[i]
                        pattrs[d.string_table[a.key_strindex]] = scalar(a.value)
                    profiles.append({"period": p.period, "attributes": pattrs,
                                     "timestamps": [t for x in p.samples for t in x.timestamps_unix_nano]})
        if sig != "profiles":
            events = n
        out.append({"file": f, "signal": sig, "resource": attrs, "items": n, "events": events, "names": names,
                    "profiles": profiles, "records": records})
print(json.dumps(out))
"#;

/// Every resource of every stored (not refused) request in a sink directory, decoded by
/// opentelemetry-proto in Python.
pub fn dump(sink: &Path) -> Vec<Stored> {
    let o = Command::new("python3").args(["-c", DUMP_PY]).arg(harness()).arg(sink).output().expect("python3");
    assert!(o.status.success(), "decoding the sink's requests: {}", String::from_utf8_lossy(&o.stderr));
    let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).expect("the dump is JSON");
    v.into_iter()
        .map(|e| Stored {
            file: e["file"].as_str().unwrap().into(),
            signal: e["signal"].as_str().unwrap().into(),
            resource: e["resource"].as_object().unwrap().clone(),
            items: e["items"].as_u64().unwrap(),
            events: e["events"].as_u64().unwrap(),
            names: e["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect(),
            profiles: e["profiles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| ProfileView {
                    period: p["period"].as_i64().unwrap(),
                    attributes: p["attributes"].as_object().unwrap().clone(),
                    timestamps: p["timestamps"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect(),
                })
                .collect(),
            records: e["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| RecordView {
                    time_unix_nano: r["time"].as_u64().unwrap(),
                    severity: r["severity"].as_i64().unwrap(),
                    body: r["body"].as_str().unwrap().to_string(),
                    attributes: r["attributes"].as_object().unwrap().clone(),
                })
                .collect(),
        })
        .collect()
}

/// An `otelprof agent --config` from a given Collector-shaped YAML, with its own-metrics server on
/// a free port (`service.telemetry.metrics.address` is set here), awaited until `/readyz` is 200.
pub struct Collector {
    proc: Group,
    pub metrics: SocketAddr,
    log: PathBuf,
}

impl Collector {
    pub fn start(dir: &Path, yaml: &str) -> Self {
        Self::start_with_env(dir, yaml, &[])
    }

    pub fn start_with_env(dir: &Path, yaml: &str, env: &[(&str, &str)]) -> Self {
        let metrics = super::servers::free_addr();
        let mut config: serde_yaml::Value =
            serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("the test's config is not YAML: {e}\n{yaml}"));
        let service = config
            .as_mapping_mut()
            .unwrap()
            .entry("service".into())
            .or_insert_with(|| serde_yaml::Mapping::new().into());
        let telemetry = service
            .as_mapping_mut()
            .unwrap()
            .entry("telemetry".into())
            .or_insert_with(|| serde_yaml::Mapping::new().into());
        let t = telemetry.as_mapping_mut().unwrap();
        t.insert("metrics".into(), serde_yaml::from_str(&format!("{{ address: '{metrics}' }}")).unwrap());
        t.entry("shutdown_timeout".into()).or_insert("3s".into());
        let path = dir.join("agent.yaml");
        std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
        let log = dir.join("agent.log");
        let mut cmd = otelprof();
        cmd.args(["agent", "--config"])
            .arg(&path)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut agent = Self { proc: Group::spawn("otelprof agent", &mut cmd), metrics, log };
        let t = Instant::now();
        while http_get(agent.metrics, "/readyz").map(|r| r.0) != Some(200) {
            if let Some(Ok(Some(status))) = agent.proc.child.as_mut().map(|c| c.try_wait()) {
                panic!("the agent exited ({status}) before it was ready:\n{}", agent.log());
            }
            assert!(t.elapsed() < Duration::from_secs(30), "the agent did not become ready:\n{}", agent.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        http_get(self.metrics, "/metrics")
            .unwrap_or_else(|| panic!("the metrics endpoint did not answer; agent log:\n{}", self.log()))
            .1
    }

    /// The sum of every series of `name` that has all of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        sum(&self.metrics(), name, labels)
    }

    /// Waits until `ok` holds for [`Self::value`]; returns the value. Counters are awaited,
    /// never read once: the sink sees a request before the agent has read the answer.
    pub fn wait_value(&self, name: &str, labels: &[(&str, &str)], timeout: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        let t = Instant::now();
        loop {
            let m = self.metrics();
            let v = sum(&m, name, labels);
            if ok(v) {
                return v;
            }
            assert!(t.elapsed() < timeout, "timed out waiting for {name}{labels:?} (now {v}):\n{m}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
    pub fn mem_kib(&self, field: &str) -> u64 {
        proc_status_kib(self.pid(), field)
    }

    /// SIGTERM, then the exit code and the log.
    pub fn stop(mut self) -> (Option<i32>, String) {
        let code = self.proc.stop(Duration::from_secs(15));
        (code, self.log())
    }
}

/// A `/proc/PID/status` field in KiB (0 when absent).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The sum of every series of metric `name` in Prometheus text that carries all of `labels`.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            let labelset = match rest.strip_prefix('{') {
                Some(r) => r.strip_suffix('}')?,
                None if rest.is_empty() => "",
                None => return None,
            };
            let has = |(k, v): &(&str, &str)| {
                labelset.split("\",").any(|kv| kv.trim_end_matches('"') == format!("{k}=\"{v}"))
            };
            labels.iter().all(has).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// The answer to a raw gRPC call: the status code's name (`OK`, `INVALID_ARGUMENT`, …), its
/// message, and the names of the trailing metadata keys.
#[derive(Debug)]
pub struct GrpcAnswer {
    pub code: String,
    pub details: String,
    pub trailers: Vec<String>,
}

/// How a raw gRPC call connects.
#[derive(Default, Clone)]
pub struct GrpcCall<'a> {
    pub token: Option<&'a str>,
    /// TLS with this CA; with `cert` a client certificate and key too.
    pub ca: Option<&'a Path>,
    pub cert: Option<(&'a Path, &'a Path)>,
    pub gzip: bool,
}

const GRPC_PY: &str = r#"
import json, sys, grpc
a = json.loads(sys.argv[1])
body = open(a["body"], "rb").read()
if a.get("ca"):
    rd = lambda p: open(p, "rb").read() if p else None
    creds = grpc.ssl_channel_credentials(rd(a["ca"]), rd(a.get("key")), rd(a.get("cert")))
    ch = grpc.secure_channel(a["target"], creds, options=[("grpc.ssl_target_name_override", "localhost")])
else:
    ch = grpc.insecure_channel(a["target"])
md = [("authorization", "Bearer " + a["token"])] if a.get("token") else None
call = ch.unary_unary(a["method"])  # no serializers: the bytes go as they are
try:
    call(body, timeout=10, metadata=md, compression=grpc.Compression.Gzip if a.get("gzip") else None)
    print(json.dumps({"code": "OK", "details": "", "trailers": []}))
except grpc.RpcError as e:
    print(json.dumps({"code": e.code().name, "details": e.details() or "",
                      "trailers": [k for k, _ in (e.trailing_metadata() or [])]}))
"#;

pub const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// One unary gRPC call with `body` as the message bytes, made by grpcio (Python's gRPC, a C
/// implementation independent of tonic).
pub fn grpc_raw(dir: &Path, target: SocketAddr, method: &str, body: &[u8], how: &GrpcCall) -> GrpcAnswer {
    let file = dir.join("grpc-body.bin");
    std::fs::write(&file, body).unwrap();
    let path = |p: Option<&Path>| p.map(|p| p.display().to_string());
    let args = serde_json::json!({
        "target": target.to_string(), "method": method, "body": file, "token": how.token,
        "ca": path(how.ca), "cert": path(how.cert.map(|c| c.0)), "key": path(how.cert.map(|c| c.1)), "gzip": how.gzip,
    });
    let o = Command::new("python3").args(["-c", GRPC_PY, &args.to_string()]).output().expect("python3");
    assert!(o.status.success(), "the grpcio client failed: {}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON from the grpcio client");
    GrpcAnswer {
        code: v["code"].as_str().unwrap().into(),
        details: v["details"].as_str().unwrap().into(),
        trailers: v["trailers"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect(),
    }
}

/// An HTTP answer: status, `Retry-After`, body text.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: String,
}

/// TLS for [`http_post`]: the CA to trust and an optional client certificate (PEM files).
pub struct HttpTls<'a> {
    pub ca: &'a Path,
    pub cert: Option<(&'a Path, &'a Path)>,
}

/// `POST url` with `headers` and `body` exactly as given (reqwest, no compression of its own);
/// `Err` when no HTTP answer came (refused connection, failed TLS handshake).
pub fn http_post(
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    tls: Option<&HttpTls>,
) -> Result<HttpAnswer, String> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(20));
    if let Some(tls) = tls {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(tls.ca).unwrap()).unwrap();
        builder = builder.add_root_certificate(ca).tls_built_in_root_certs(false);
        if let Some((cert, key)) = tls.cert {
            let mut pem = std::fs::read(cert).unwrap();
            pem.extend(std::fs::read(key).unwrap());
            builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let mut req = client.post(url).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp.text().await.unwrap_or_default();
        Ok(HttpAnswer { status, retry_after, body })
    })
}

/// A gzip stream of `mib` MiB of zeros that is about `mib` KiB long: one full-flushed deflate
/// block of 1 MiB of zeros (which refers to nothing before it) repeated, then an empty final
/// block and the trailer. Built without compressing a GiB.
pub fn gzip_bomb(mib: u32) -> Vec<u8> {
    use flate2::{Compress, Compression, Crc, FlushCompress};
    let zeros = vec![0u8; 1 << 20];
    let mut deflate = Compress::new(Compression::best(), false);
    let mut block = Vec::with_capacity(1 << 16);
    deflate.compress_vec(&zeros, &mut block, FlushCompress::Full).unwrap();
    assert_eq!(deflate.total_in(), 1 << 20);
    let mut one = Crc::new();
    one.update(&zeros);
    let mut crc = Crc::new();
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    for _ in 0..mib {
        crc.combine(&one);
        out.extend_from_slice(&block);
    }
    // The final block: fixed Huffman codes (BFINAL=1, BTYPE=01) holding only end-of-block.
    out.extend_from_slice(&[0x03, 0x00]);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(mib << 20).to_le_bytes());
    out
}
