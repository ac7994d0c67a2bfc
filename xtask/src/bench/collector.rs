//! Collector: OTLP throughput and memory, `otelprof agent` next to `rotel-agent` (a Rust
//! OpenTelemetry collector, from the PyPI package `rotel`) on the same machine, with the same
//! load and the same sink.
//!
//! Each run starts a fresh sink (`otlp_sink`: an OTLP/gRPC server that counts and discards) and a
//! fresh collector (OTLP/gRPC receiver → OTLP/gRPC exporter with gzip to the sink), measures the
//! collector idle, then has `otlp_load` (a separate process, so that the generator's work is not
//! in the measured process) send requests of 1,000 pre-encoded, gzipped spans or log records, and
//! stops the clock when the sink has received every item that was accepted. The collector's cost:
//! its CPU time (`/proc/PID/stat`) from the start of the load until the sink had everything, less
//! what it used idle over as long, per million items, and its peak RSS (`VmHWM`). Rounds alternate
//! which collector goes first; the report gives medians.
//!
//! For traces a third subject, `otelprof agent` with a 5-statement OTTL `transform` before the
//! batch processor, gives what the transform adds per span (issue #13).

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{churn::cpu_so_far, slowdown::median, Plan, Tools};

/// The `rotel` release measured (PyPI version; its binary calls itself 0.0.1-alpha10). Installed
/// with pip when the Python on PATH does not have it.
pub const ROTEL_VERSION: &str = "0.0.1a15";
/// Items (spans or log records) per export request the generator sends.
const ITEMS_PER_REQUEST: u64 = 1000;
/// Distinct requests the generator builds and sends in turn.
const DISTINCT: usize = 16;
/// Requests in flight at once, over one HTTP/2 connection, as from a busy SDK or agent.
const CONCURRENCY: usize = 4;
/// No item reaching the sink for this long ends the wait: the rest is counted as lost.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Logs,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
        }
    }
    fn items(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Logs => "log records",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    Rotel,
    Otelprof,
    /// `otelprof agent` with [`TRANSFORM`] in its traces pipeline.
    OtelprofTransform,
}

impl Subject {
    pub fn label(self) -> &'static str {
        match self {
            Subject::Rotel => "rotel-agent",
            Subject::Otelprof => "otelprof agent",
            Subject::OtelprofTransform => "otelprof agent + 5-statement transform",
        }
    }
    fn slug(self) -> &'static str {
        match self {
            Subject::Rotel => "rotel",
            Subject::Otelprof => "otelprof",
            Subject::OtelprofTransform => "otelprof-transform",
        }
    }
}

/// The transform of [`Subject::OtelprofTransform`]: the statement kinds of issue #13 (those of
/// `benches/benches/ottl.rs`) on the attributes `otlp_load` sends; every statement has work on
/// most spans, none fails (the default `error_mode: propagate` would refuse the request).
const TRANSFORM: &str = r#"  transform:
    trace_statements:
      - 'set(span.attributes["tier"], "gold") where resource.attributes["deployment.environment.name"] == "production"'
      - 'replace_pattern(span.attributes["url.path"], "/[0-9]+", "/{id}")'
      - 'delete_key(span.attributes, "user_agent.original")'
      - 'keep_keys(span.attributes, ["http.request.method", "http.route", "http.response.status_code", "url.path", "server.address", "tier"])'
      - 'set(span.attributes["route.head"], ToUpperCase(Split(span.attributes["http.route"], "/")[1])) where span.attributes["http.route"] != nil'
"#;

/// One collector, one signal, one round.
#[derive(Clone, Debug)]
pub struct Run {
    pub subject: Subject,
    pub signal: Signal,
    /// Items the generator had accepted, and items the sink received.
    pub sent: u64,
    pub delivered: u64,
    /// Requests the generator retried (UNAVAILABLE, RESOURCE_EXHAUSTED) and gave up on.
    pub retries: u64,
    pub failed: u64,
    /// From the first request until the sink had every item, seconds.
    pub seconds: f64,
    /// Collector CPU over that time, less its idle rate over as long, seconds.
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
    /// RSS at the end of the idle window before the load, MiB.
    pub idle_rss_mib: f64,
    /// CPU used idle, % of one CPU.
    pub idle_cpu_pct: f64,
}

impl Run {
    pub fn cpu_per_million(&self) -> f64 {
        if self.delivered == 0 {
            f64::NAN
        } else {
            self.cpu_seconds * 1e6 / self.delivered as f64
        }
    }
    pub fn items_per_second(&self) -> f64 {
        self.delivered as f64 / self.seconds.max(1e-9)
    }
}

pub struct CollectorBench {
    pub runs: Vec<Run>,
    pub rounds: usize,
    pub items_per_run: u64,
    pub idle_seconds: f64,
    /// `pip` version and `--version` of rotel-agent.
    pub rotel_version: String,
    /// The exact command lines of the first run of each (ports and files change per run).
    pub rotel_command: String,
    pub otelprof_command: String,
    pub otelprof_config: String,
    pub transform_config: String,
    pub load_command: String,
    /// Why otelprof has no rows, when it has none.
    pub otelprof_not_runnable: Option<String>,
}

/// Where the `rotel` package is: installs the pinned version with pip if it is missing or another
/// version, and returns its binary and version.
fn rotel() -> Result<(PathBuf, String)> {
    let find = || -> Option<(PathBuf, String)> {
        let o = Command::new("python3")
            .args([
                "-c",
                "import importlib.metadata as m, os, rotel; \
                 print(m.version('rotel')); print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
            ])
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        let mut lines = text.lines();
        let version = lines.next()?.trim().to_string();
        let exe = PathBuf::from(lines.next()?.trim());
        exe.is_file().then_some((exe, version))
    };
    if let Some(found) = find().filter(|(_, v)| v == ROTEL_VERSION) {
        return Ok(found);
    }
    eprintln!("xtask bench: installing rotel {ROTEL_VERSION} with pip");
    let o = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", &format!("rotel=={ROTEL_VERSION}")])
        .output()
        .context("python3 -m pip (python3 with pip is needed for rotel-agent)")?;
    match find() {
        Some(found) if found.1 == ROTEL_VERSION => Ok(found),
        _ => bail!(
            "rotel-agent is not installed and `python3 -m pip install rotel=={ROTEL_VERSION}` failed \
             (exit {:?}): {}; install it by hand with that command, for the python3 on PATH",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
    }
}

pub(super) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A field of `/proc/PID/status` in KiB (`VmRSS:`, `VmHWM:`).
fn status_kib(pid: i32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `otlp_sink` and the pipes to ask it for its totals.
struct Sink {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

impl Sink {
    fn start(exe: &Path) -> Result<Sink> {
        let mut child = Command::new(exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().context("stdout is piped")?);
        let mut line = String::new();
        stdout.read_line(&mut line).context("reading the sink's address")?;
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.rsplit(':').next()?.parse().ok())
            .with_context(|| format!("the sink said {line:?}"))?;
        Ok(Sink { child, stdin, stdout, port })
    }

    /// Items of `signal` received so far.
    fn received(&mut self, signal: Signal) -> Result<u64> {
        let stdin = self.stdin.as_mut().context("sink stopped")?;
        stdin.write_all(b"\n").context("asking the sink")?;
        stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).context("reading the sink's totals")?;
        totals(&line, signal.name()).with_context(|| format!("the sink said {line:?}"))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // The end of stdin stops it.
        self.stdin.take();
        let _ = self.child.wait();
    }
}

/// `key=N` in a line of the sink's totals.
fn totals(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// What `otlp_load` printed.
struct Sent {
    items: u64,
    failed: u64,
    retries: u64,
}

fn parse_load(text: &str) -> Option<Sent> {
    let line = text.lines().find(|l| l.starts_with("otlp_load: "))?;
    Some(Sent { items: totals(line, "items")?, failed: totals(line, "failed")?, retries: totals(line, "retries")? })
}

/// A collector under measurement.
pub(super) struct Collector {
    child: Child,
    log: PathBuf,
}

impl Collector {
    pub(super) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn first_log_line(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().next().unwrap_or("no output").to_string()
    }

    /// Returns once the receiver accepts connections; an error if the collector exits first
    /// (exit 2 is otelprof rejecting its configuration).
    pub(super) fn start(mut cmd: Command, log: PathBuf, port: u16) -> Result<Collector> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?);
        let child = cmd.spawn().with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let mut c = Collector { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.child.try_wait()? {
                // Let the last lines reach the file.
                std::thread::sleep(Duration::from_millis(50));
                if status.code() == Some(2) {
                    bail!("config rejected: {}", c.first_log_line());
                }
                bail!("exited with {status} before listening: {}", c.first_log_line());
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(c);
            }
            if Instant::now() > deadline {
                c.stop();
                bail!("not listening on port {port} after 30 s: {}", c.first_log_line());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub(super) fn stop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet waited for.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// What every run of the section shares.
struct Ctx {
    dir: PathBuf,
    sink_exe: PathBuf,
    load_exe: PathBuf,
    rotel: PathBuf,
    otelprof: PathBuf,
    requests: u64,
    idle_seconds: f64,
}

/// Ports of one run.
struct Ports {
    receiver: u16,
    http: u16,
    sink: u16,
}

/// The configuration `otelprof agent` is started with; `transform` puts [`TRANSFORM`] before the
/// batch processor of the traces pipeline.
fn otelprof_config(receiver: impl std::fmt::Display, sink: impl std::fmt::Display, transform: bool) -> String {
    let (processor, traces) = if transform { (TRANSFORM, "transform, batch") } else { ("", "batch") };
    format!(
        r#"receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:{receiver}" }}
processors:
  batch: {{}}
{processor}exporters:
  otlp:
    endpoint: "127.0.0.1:{sink}"
    tls: {{ insecure: true }}
    compression: gzip
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [{traces}], exporters: [otlp] }}
    logs: {{ receivers: [otlp], processors: [batch], exporters: [otlp] }}
  telemetry:
    metrics: {{ address: "127.0.0.1:0" }}
"#
    )
}

/// The collector's command line: rotel's defaults but for where it listens and exports (OTLP/gRPC
/// with gzip, which is its default too), and where it keeps its PID file and log. Every rotel flag
/// also reads a `ROTEL_*` variable: those are cleared, so that the defaults are rotel's own.
fn command(ctx: &Ctx, subject: Subject, p: &Ports, slug: &str) -> Result<Command> {
    Ok(match subject {
        Subject::Rotel => {
            let mut c = Command::new(&ctx.rotel);
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("ROTEL_") {
                    c.env_remove(name);
                }
            }
            c.arg("start")
                .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{}", p.receiver)])
                .args(["--otlp-http-endpoint", &format!("127.0.0.1:{}", p.http)])
                .args(["--exporter", "otlp"])
                .args(["--otlp-exporter-endpoint", &format!("http://127.0.0.1:{}", p.sink)])
                .args(["--otlp-exporter-protocol", "grpc", "--otlp-exporter-compression", "gzip"])
                .arg("--pid-file")
                .arg(ctx.dir.join(format!("{slug}.pid")))
                .arg("--log-file")
                .arg(ctx.dir.join(format!("{slug}.rotel.log")));
            c
        }
        Subject::Otelprof | Subject::OtelprofTransform => {
            let config = ctx.dir.join(format!("{slug}.yaml"));
            std::fs::write(&config, otelprof_config(p.receiver, p.sink, subject == Subject::OtelprofTransform))
                .with_context(|| format!("writing {}", config.display()))?;
            let mut c = Command::new(&ctx.otelprof);
            c.args(["agent", "--config"]).arg(&config);
            c
        }
    })
}

fn load_command(ctx: &Ctx, signal: Signal, receiver: u16) -> Command {
    let mut c = Command::new(&ctx.load_exe);
    c.args(["--endpoint", &format!("http://127.0.0.1:{receiver}"), "--signal", signal.name()])
        .args(["--requests", &ctx.requests.to_string(), "--items", &ITEMS_PER_REQUEST.to_string()])
        .args(["--distinct", &DISTINCT.to_string(), "--concurrency", &CONCURRENCY.to_string()]);
    c
}

pub(super) fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// One collector with one signal: idle, then the load until the sink has it all.
fn measure(ctx: &Ctx, subject: Subject, signal: Signal, round: usize, commands: &mut Commands) -> Result<Run> {
    let slug = format!("{}-{}-{round}", subject.slug(), signal.name());
    let mut sink = Sink::start(&ctx.sink_exe)?;
    let ports = Ports { receiver: free_port()?, http: free_port()?, sink: sink.port };
    let cmd = command(ctx, subject, &ports, &slug)?;
    let shown = show(&cmd);
    let collector = Collector::start(cmd, ctx.dir.join(format!("{slug}.log")), ports.receiver)?;
    let pid = collector.pid();

    // Idle: listening, exporter set up, nothing to do.
    std::thread::sleep(Duration::from_millis(500));
    let cpu0 = cpu_so_far(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(ctx.idle_seconds));
    let idle_cpu = cpu_so_far(pid) - cpu0;
    let idle_rate = idle_cpu / t0.elapsed().as_secs_f64();
    let idle_rss_mib = status_kib(pid, "VmRSS:") / 1024.0;

    let mut load = load_command(ctx, signal, ports.receiver);
    let load_shown = show(&load);
    let cpu1 = cpu_so_far(pid);
    let start = Instant::now();
    let out = load.stderr(Stdio::inherit()).output().context("running otlp_load")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("otlp_load failed ({}): {text}", out.status);
    }
    let sent = parse_load(&text).with_context(|| format!("otlp_load printed {text:?}"))?;
    // Until the sink has every accepted item (or nothing more comes).
    let (mut delivered, mut progress) = (0, Instant::now());
    loop {
        let now = sink.received(signal)?;
        if now > delivered {
            (delivered, progress) = (now, Instant::now());
        }
        if delivered >= sent.items || progress.elapsed() > DRAIN_TIMEOUT {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The clock stops when the last item arrived, not when the wait noticed it gave up.
    let seconds = if delivered >= sent.items { start.elapsed() } else { progress - start }.as_secs_f64();
    let cpu = cpu_so_far(pid) - cpu1;
    let peak_rss_mib = status_kib(pid, "VmHWM:") / 1024.0;
    drop(collector);
    drop(sink);

    commands.note(subject, shown, load_shown);
    Ok(Run {
        subject,
        signal,
        sent: sent.items,
        delivered,
        retries: sent.retries,
        failed: sent.failed,
        seconds,
        cpu_seconds: (cpu - idle_rate * seconds).max(0.0),
        peak_rss_mib,
        idle_rss_mib,
        idle_cpu_pct: idle_rate * 100.0,
    })
}

/// The first command line of each kind, for the report.
#[derive(Default)]
struct Commands {
    rotel: Option<String>,
    otelprof: Option<String>,
    load: Option<String>,
}

impl Commands {
    fn note(&mut self, subject: Subject, collector: String, load: String) {
        let slot = match subject {
            Subject::Rotel => &mut self.rotel,
            Subject::Otelprof => &mut self.otelprof,
            // Same binary and command line, another config file.
            Subject::OtelprofTransform => return,
        };
        slot.get_or_insert(collector);
        self.load.get_or_insert(load);
    }
}

fn build_tools(root: &Path) -> Result<()> {
    let status = Command::new("cargo")
        .current_dir(root)
        .args(["build", "--release", "-p", "otelprof-benches", "--bin", "otlp_load", "--bin", "otlp_sink"])
        .status()
        .context("cargo build of otlp_load and otlp_sink")?;
    if !status.success() {
        bail!("building otlp_load and otlp_sink failed");
    }
    Ok(())
}

pub fn run(plan: &Plan, tools: &Tools) -> Result<CollectorBench> {
    let dir = tools.root.join("target/bench/collector");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    build_tools(&tools.root)?;
    let (rotel, pip_version) = rotel()?;
    let agent_version = Command::new(&rotel)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let (rounds, requests, idle_seconds) = if plan.smoke { (1, 20, 1.0) } else { (3, 1000, 3.0) };
    let ctx = Ctx {
        dir,
        sink_exe: super::target_dir(&tools.root).join("release/otlp_sink"),
        load_exe: super::target_dir(&tools.root).join("release/otlp_load"),
        rotel,
        otelprof: tools.otelprof.clone(),
        requests,
        idle_seconds,
    };
    let mut commands = Commands::default();
    let mut runs = Vec::new();
    let mut not_runnable = None;
    for round in 0..rounds {
        for (k, signal) in [Signal::Traces, Signal::Logs].into_iter().enumerate() {
            // Alternate who goes first, so that neither always meets a warmer (or busier) machine.
            let mut order = vec![Subject::Rotel, Subject::Otelprof];
            if signal == Signal::Traces {
                order.push(Subject::OtelprofTransform);
            }
            if (round + k) % 2 == 1 {
                order.reverse();
            }
            for subject in order {
                if subject != Subject::Rotel && not_runnable.is_some() {
                    continue;
                }
                let r = match measure(&ctx, subject, signal, round, &mut commands) {
                    Ok(r) => r,
                    // The collector in otelprof may not be there yet: its absence is a finding,
                    // not a reason to lose rotel's rows.
                    Err(e) if subject != Subject::Rotel => {
                        let why = format!("{e:#}");
                        eprintln!("xtask bench: collector: otelprof: not runnable ({why})");
                        not_runnable = Some(why);
                        continue;
                    }
                    Err(e) => return Err(e.context(format!("rotel-agent, {}, round {}", signal.name(), round + 1))),
                };
                eprintln!(
                    "xtask bench: collector {} {}: {:.2} CPU s per million {}, {:.1} MiB peak RSS, {:.1} MiB idle, \
                     {}/{} delivered, {:.0} items/s",
                    subject.label(),
                    signal.name(),
                    r.cpu_per_million(),
                    signal.items(),
                    r.peak_rss_mib,
                    r.idle_rss_mib,
                    r.delivered,
                    r.sent,
                    r.items_per_second()
                );
                runs.push(r);
            }
        }
    }
    Ok(CollectorBench {
        runs,
        rounds,
        items_per_run: requests * ITEMS_PER_REQUEST,
        idle_seconds,
        rotel_version: format!("PyPI rotel {pip_version} ({agent_version})"),
        rotel_command: commands.rotel.unwrap_or_default(),
        otelprof_command: commands
            .otelprof
            .unwrap_or_else(|| format!("{} agent --config FILE", tools.otelprof.display())),
        otelprof_config: otelprof_config("RECV_PORT", "SINK_PORT", false),
        transform_config: TRANSFORM.to_string(),
        load_command: commands.load.unwrap_or_default(),
        otelprof_not_runnable: not_runnable,
    })
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

/// The section of the report.
pub fn render(o: &mut String, c: &CollectorBench) {
    let _ = writeln!(o, "## 9. Collector: OTLP throughput and memory, otelprof agent vs rotel-agent\n");
    let _ = writeln!(
        o,
        "Both collectors on this machine, one at a time, with the same load and the same sink: OTLP/gRPC in, \
         OTLP/gRPC out with gzip (rotel always compresses its export) to `otlp_sink`, which counts the items and \
         discards them. In each run a fresh sink and a fresh collector start; the collector idles {:.0} s (idle \
         RSS and CPU), then `otlp_load` (`benches/src/bin/otlp_load.rs`, its own process) sends {} requests of \
         {} items, {} in flight over one connection: {} distinct requests built once (a resource with 5 \
         attributes; spans with 8 attributes, an event on one in eight, random ids, in traces of 10; log records \
         with a formatted message, 5 attributes and trace context on half), encoded and gzipped once, then sent \
         as they are, so the generator does no protobuf or gzip work per request. The clock stops when the sink \
         has every accepted item. *CPU*: the collector's user + system time (`/proc/PID/stat`) from the first \
         request until then, less its idle rate over as long, per million items delivered; *peak RSS*: `VmHWM` \
         then. {} round{}, alternating which collector goes first; medians.\n",
        c.idle_seconds,
        c.items_per_run / ITEMS_PER_REQUEST,
        ITEMS_PER_REQUEST,
        CONCURRENCY,
        DISTINCT,
        c.rounds,
        if c.rounds == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        o,
        "| signal | collector | CPU s per million items | peak RSS | idle RSS | idle CPU | items per second | \
         delivered / sent | retries / failed requests |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let med = |runs: &[&Run], f: fn(&Run) -> f64| median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
    for signal in [Signal::Traces, Signal::Logs] {
        let mut medians = Vec::new();
        let mut transform = None;
        let subjects: &[Subject] = match signal {
            Signal::Traces => &[Subject::Rotel, Subject::Otelprof, Subject::OtelprofTransform],
            Signal::Logs => &[Subject::Rotel, Subject::Otelprof],
        };
        for &subject in subjects {
            let runs: Vec<&Run> = c.runs.iter().filter(|r| r.subject == subject && r.signal == signal).collect();
            if runs.is_empty() {
                let why = c.otelprof_not_runnable.as_deref().unwrap_or("not run");
                let _ = writeln!(o, "| {} | `{}` | not runnable ({why}) | | | | | | |", signal.name(), subject.label());
                continue;
            }
            let (cpu, peak, idle) =
                (med(&runs, Run::cpu_per_million), med(&runs, |r| r.peak_rss_mib), med(&runs, |r| r.idle_rss_mib));
            if subject == Subject::OtelprofTransform {
                transform = Some((cpu, peak, idle));
            } else {
                medians.push((cpu, peak, idle));
            }
            let sum = |f: fn(&Run) -> u64| runs.iter().map(|r| f(r)).sum::<u64>();
            let _ = writeln!(
                o,
                "| {} | `{}` | {cpu:.2} | {peak:.1} MiB | {idle:.1} MiB | {:.2} % | {:.0} | {} / {} | {} / {} |",
                signal.name(),
                subject.label(),
                med(&runs, |r| r.idle_cpu_pct),
                med(&runs, Run::items_per_second),
                sum(|r| r.delivered),
                sum(|r| r.sent),
                sum(|r| r.retries),
                sum(|r| r.failed)
            );
        }
        if let [(rc, rp, ri), (oc, op, oi)] = medians[..] {
            let _ = writeln!(
                o,
                "| {} | otelprof / rotel | {} | {} | {} | | | | |",
                signal.name(),
                ratio(oc, rc),
                ratio(op, rp),
                ratio(oi, ri)
            );
            if let Some((tc, tp, ti)) = transform {
                let _ = writeln!(
                    o,
                    "| {} | otelprof + transform / otelprof | {} | {} | {} | | | | |",
                    signal.name(),
                    ratio(tc, oc),
                    ratio(tp, op),
                    ratio(ti, oi)
                );
            }
        }
    }
    let _ = writeln!(
        o,
        "\nGoal: otelprof at or below rotel-agent in CPU per million items and in peak RSS; the 5-statement \
         transform adding ≤ 30 % CPU per span (otelprof + transform / otelprof ≤ 1.30×).\n"
    );
    let _ = writeln!(o, "- rotel: {}; its command (first run; ports and files change per run):", c.rotel_version);
    let _ = writeln!(o, "  `{}`", c.rotel_command);
    let _ = writeln!(o, "- otelprof: `{}` with:\n", c.otelprof_command);
    let _ = writeln!(o, "```yaml\n{}```\n", c.otelprof_config);
    let _ = writeln!(o, "- otelprof + transform: the same, with `processors: [transform, batch]` for traces and:\n");
    let _ = writeln!(o, "```yaml\n{}```\n", c.transform_config);
    let _ = writeln!(o, "- load (first run): `{}`\n", c.load_command);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sink_and_load_lines() {
        let sink = "traces=3000 logs=0 metrics=0 requests=3 bytes=1 rejected=0\n";
        assert_eq!(totals(sink, "traces"), Some(3000));
        assert_eq!(totals(sink, "logs"), Some(0));
        assert_eq!(totals(sink, "spans"), None);
        let load = "otlp_load: signal=logs requests=20 items=20000 failed=1 retries=2 elapsed=0.1 wire_bytes=9\n";
        let sent = parse_load(load).unwrap();
        assert_eq!((sent.items, sent.failed, sent.retries), (20000, 1, 2));
        assert!(parse_load("nothing").is_none());
    }

    #[test]
    fn config_has_the_ports() {
        let c = otelprof_config(4317, 9999, false);
        assert!(c.contains("grpc: { endpoint: \"127.0.0.1:4317\" }"));
        assert!(c.contains("endpoint: \"127.0.0.1:9999\""));
        assert!(c.contains("batch: {}"));
        assert!(!c.contains("transform"));
        let t = otelprof_config(4317, 9999, true);
        assert!(t.contains("processors: [transform, batch], exporters"), "{t}");
        assert!(t.contains("  transform:\n    trace_statements:\n"), "{t}");
        assert!(t.contains("logs: { receivers: [otlp], processors: [batch]"), "{t}");
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id() as i32;
        assert!(status_kib(pid, "VmRSS:") > 0.0);
        assert!(status_kib(pid, "VmHWM:") >= status_kib(pid, "VmRSS:") - 1024.0);
    }
}
