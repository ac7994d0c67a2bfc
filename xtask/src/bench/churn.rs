//! The profiler's own cost under process churn (issue #11): a steady CPU-bound workload built
//! without frame pointers, alone (*steady*), with a fixed mix of short-lived processes started at
//! a fixed rate (*light churn*), and with that mix beside a cargo build that keeps compiling
//! (*heavy churn*). In each, every profiler records the whole system for the same window; per
//! profiler: CPU time (user + system, `wait4` rusage, reaped children included), BPF run time
//! (the kernel's BPF statistics, read from the profiler's own program file descriptors), each as
//! a share of the machine, peak RSS, and the share of the steady workload's samples whose stacks
//! are complete.

use std::{
    collections::BTreeMap,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{
    agent_cost::{agent_config, sink, ConfigShape},
    runtimes::{counts, folded_stacks, perf_stacks, Share},
    slowdown::{spawn, stop_with},
    Plan, Tools,
};

/// The steady workload's process name, to pick its samples out of system-wide profiles.
const STEADY: &str = "churn-steady";
/// Its two threads' stacks are complete when they reach glibc's thread entry (below it there is
/// only `clone3`).
pub const STEADY_ROOT: &str = "start_thread";
/// One short-lived process of the mix is started per period: 5 per second.
pub const CHURN_PERIOD: Duration = Duration::from_millis(200);
/// Mix processes still running when the next one is due are not waited for, up to this many;
/// past it a turn is skipped (and counted), so that an overloaded machine is not buried.
pub const MAX_RUNNING: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Steady,
    Light,
    Heavy,
}

impl Scenario {
    pub fn label(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Light => "light churn",
            Scenario::Heavy => "heavy churn",
        }
    }

    /// Issue #11's goal for otelprof's total (user + system + BPF) at `hz`, % of the machine.
    pub fn goal_pct(self, hz: u64) -> Option<f64> {
        match (self, hz) {
            (Scenario::Steady, 99) => Some(1.0),
            (Scenario::Light, 19) => Some(0.3),
            (Scenario::Heavy, 19) => Some(1.0),
            _ => None,
        }
    }
}

/// Issue #11's goal for the steady workload's complete stacks, %.
pub const GOAL_COMPLETE_PCT: f64 = 99.0;

/// A profiler under measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// `otelprof record -a`, with compiled tables (`--unwind auto`, true) or `--unwind fp`.
    Record { hz: u64, tables: bool },
    /// The `--baseline` binary's `record -a` with tables.
    Baseline { hz: u64 },
    /// `otelprof agent`, whole node, exporting OTLP/HTTP to a local sink.
    Agent { hz: u64 },
    /// The `--baseline` binary's agent, the same, from a config in the shape it reads.
    BaselineAgent { hz: u64 },
    /// `perf record -a -g`.
    Perf { hz: u64 },
}

impl Subject {
    pub fn hz(self) -> u64 {
        match self {
            Subject::Record { hz, .. }
            | Subject::Baseline { hz }
            | Subject::Agent { hz }
            | Subject::BaselineAgent { hz }
            | Subject::Perf { hz } => hz,
        }
    }

    pub fn is_otelprof(self) -> bool {
        !matches!(self, Subject::Perf { .. })
    }

    /// Unwinds with compiled tables: the complete-stacks goal applies (frame pointers cannot
    /// unwind the steady workload).
    pub fn uses_tables(self) -> bool {
        !matches!(self, Subject::Perf { .. } | Subject::Record { tables: false, .. })
    }

    pub fn label(self) -> String {
        match self {
            Subject::Record { hz, tables: true } => format!("otelprof record -a -F {hz}"),
            Subject::Record { hz, tables: false } => format!("otelprof record -a -F {hz} --unwind fp"),
            Subject::Baseline { hz } => format!("baseline: otelprof record -a -F {hz}"),
            Subject::Agent { hz } => format!("otelprof agent, {hz} Hz"),
            Subject::BaselineAgent { hz } => format!("baseline: otelprof agent, {hz} Hz"),
            Subject::Perf { hz } => format!("perf record -a -g -F {hz}"),
        }
    }

    fn slug(self) -> String {
        match self {
            Subject::Record { hz, tables } => format!("record-{hz}-{}", if tables { "tables" } else { "fp" }),
            Subject::Baseline { hz } => format!("baseline-{hz}"),
            Subject::Agent { hz } => format!("agent-{hz}"),
            Subject::BaselineAgent { hz } => format!("baseline-agent-{hz}"),
            Subject::Perf { hz } => format!("perf-{hz}"),
        }
    }
}

/// What is measured in each scenario: the full run's subset keeps the section under 8 minutes,
/// the smoke run's under a minute (it only has to exercise every kind of subject).
fn subjects(plan: &Plan, scenario: Scenario, perf: bool) -> Vec<Subject> {
    let hz = if scenario == Scenario::Steady { 99 } else { 19 };
    let mut out = match (plan.smoke, scenario) {
        (false, Scenario::Steady) => vec![Subject::Record { hz, tables: true }, Subject::Record { hz, tables: false }],
        (false, _) => {
            vec![Subject::Record { hz, tables: true }, Subject::Record { hz, tables: false }, Subject::Agent { hz }]
        }
        (true, Scenario::Steady) => vec![Subject::Record { hz, tables: true }],
        (true, Scenario::Light) => vec![Subject::Record { hz, tables: false }, Subject::Agent { hz }],
        (true, Scenario::Heavy) => vec![Subject::Record { hz, tables: true }],
    };
    if plan.baseline.is_some() {
        out.push(Subject::Baseline { hz });
        if out.contains(&Subject::Agent { hz }) {
            out.push(Subject::BaselineAgent { hz });
        }
    }
    if perf && !(plan.smoke && scenario != Scenario::Steady) {
        out.push(Subject::Perf { hz });
    }
    out
}

/// One profiler in one scenario.
#[derive(Clone, Debug)]
pub struct ChurnRun {
    pub scenario: Scenario,
    pub subject: Subject,
    pub cpus: usize,
    /// From the moment the profiler was recording to the stop signal, seconds.
    pub window: f64,
    /// CPU seconds over its whole life (`wait4`): starting, the window, writing the profile.
    pub cpu_seconds: f64,
    /// Of which before it said it was recording (loading BPF).
    pub startup_cpu: f64,
    /// CPU seconds during the window after its first `warmup` seconds (`/proc/PID/stat`): the
    /// ongoing cost, without catching up with the processes that were running at the start.
    pub ongoing_cpu: f64,
    pub warmup: f64,
    /// BPF run time and runs of its programs during the window.
    pub bpf_ns: u64,
    pub bpf_runs: u64,
    pub peak_rss_mib: f64,
    /// Resident BPF maps mapped into the profiler at the end (ring buffer, unwind rows array):
    /// kernel memory, resident from the start; peak RSS minus this is the profiler's own.
    pub bpf_map_mib: f64,
    /// The steady workload's samples, and how many were complete; `None` where not read.
    pub stacks: Option<Share>,
    /// Processes forked on the whole machine per second during the window (`/proc/stat`).
    pub forks_per_second: f64,
}

impl ChurnRun {
    fn machine_pct(&self, seconds: f64) -> f64 {
        seconds * 100.0 / (self.window * self.cpus as f64).max(1e-9)
    }
    pub fn cpu_pct(&self) -> f64 {
        self.machine_pct(self.cpu_seconds)
    }
    pub fn ongoing_cpu_pct(&self) -> f64 {
        self.ongoing_cpu * 100.0 / ((self.window - self.warmup) * self.cpus as f64).max(1e-9)
    }
    pub fn bpf_pct(&self) -> f64 {
        self.machine_pct(self.bpf_ns as f64 / 1e9)
    }
    pub fn total_pct(&self) -> f64 {
        self.cpu_pct() + self.bpf_pct()
    }
    pub fn goal_pct(&self) -> Option<f64> {
        if self.subject.is_otelprof() {
            self.scenario.goal_pct(self.subject.hz())
        } else {
            None
        }
    }
}

/// What the background load did during one scenario.
#[derive(Clone, Debug)]
pub struct LoadStats {
    pub scenario: Scenario,
    pub seconds: f64,
    /// Mix processes started, and turns skipped because `MAX_RUNNING` were still running.
    pub started: u64,
    pub skipped: u64,
    /// Cargo builds that ran to the end (heavy churn).
    pub builds: u64,
}

impl LoadStats {
    pub fn started_per_second(&self) -> f64 {
        self.started as f64 / self.seconds.max(1e-9)
    }
}

pub struct Churn {
    pub cpus: usize,
    /// The fixed window each profiler records for, seconds.
    pub window: f64,
    /// The first part of each window left out of the ongoing CPU figure, seconds.
    pub warmup: f64,
    pub runs: Vec<ChurnRun>,
    pub loads: Vec<LoadStats>,
    /// `otelprof --version` and the path of the `--baseline` binary.
    pub baseline: Option<String>,
    /// The commit the current binary was built from.
    pub commit: String,
    /// The python the mix runs.
    pub python: String,
}

/// Enables the kernel's BPF statistics (`kernel.bpf_stats_enabled`) for every profiler alike,
/// and puts the previous setting back when dropped.
struct BpfStats {
    previous: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<Self> {
        let previous = std::fs::read_to_string(BPF_STATS).with_context(|| format!("reading {BPF_STATS}"))?;
        std::fs::write(BPF_STATS, "1").with_context(|| format!("enabling {BPF_STATS}"))?;
        Ok(BpfStats { previous: previous.trim().to_string() })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, &self.previous);
    }
}

/// Run time (ns) and runs of the BPF programs a process holds, from `/proc/PID/fdinfo` (each
/// program once, however many descriptors refer to it).
fn bpf_usage(pid: i32) -> (u64, u64) {
    let mut programs = BTreeMap::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return (0, 0) };
    for fd in fds.flatten() {
        let Ok(text) = std::fs::read_to_string(fd.path()) else { continue };
        let field = |key: &str| -> Option<u64> {
            text.lines().find_map(|l| l.strip_prefix(key)?.trim_start_matches([':', '\t', ' ']).parse().ok())
        };
        // Link descriptors name a program too, but carry no run time.
        if let (Some(id), Some(ns), Some(runs)) = (field("prog_id"), field("run_time_ns"), field("run_cnt")) {
            programs.insert(id, (ns, runs));
        }
    }
    programs.values().fold((0, 0), |(ns, runs), (n, r)| (ns + n, runs + r))
}

/// User + system CPU seconds of a running process and its reaped children, from `/proc/PID/stat`.
pub(super) fn cpu_so_far(pid: i32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name in parentheses: state is field 3, utime..cstime fields 14..17.
    let fields: Vec<&str> = text.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11..15).map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}

/// Processes forked on the machine since boot.
fn forks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("processes ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// The short-lived processes of the mix, in turn.
struct Mix {
    python: String,
    dir: PathBuf,
    source: PathBuf,
}

impl Mix {
    fn command(&self, n: u64) -> Command {
        let mut c = match n % 4 {
            0 => Command::new("/bin/true"),
            1 => {
                let mut c = Command::new("sh");
                c.args(["-c", "true"]);
                c
            }
            2 => {
                let mut c = Command::new(&self.python);
                c.args(["-c", "pass"]);
                c
            }
            // A new file each time, with new contents (and so a new build ID), run once.
            _ => {
                let mut c = Command::new("sh");
                c.args(["-c", r#"cc -O2 -DN="$3" -o "$1" "$2" && "$1""#, "sh"])
                    .arg(self.dir.join(format!("small-{n}")))
                    .arg(&self.source)
                    .arg(n.to_string());
                c
            }
        };
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        c
    }
}

const SMALL_C: &str = r#"#include <stdio.h>
static int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
int main(void) { printf("%d %d\n", N, fib(20)); return 0; }
"#;

/// Starts the mix every `CHURN_PERIOD` until `stop`; returns (started, skipped).
fn churn_loop(mix: Mix, stop: Arc<AtomicBool>) -> (u64, u64) {
    let mut running: Vec<Child> = Vec::new();
    let (mut started, mut skipped) = (0u64, 0u64);
    let mut next = Instant::now();
    let mut turn = 0u64;
    while !stop.load(Ordering::Relaxed) {
        running.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        if running.len() >= MAX_RUNNING {
            skipped += 1;
        } else if let Ok(c) = mix.command(turn).spawn() {
            running.push(c);
            started += 1;
        }
        turn += 1;
        next += CHURN_PERIOD;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    // The last ones are short: let them end, then reap them.
    let deadline = Instant::now() + Duration::from_secs(10);
    for mut c in running {
        while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    (started, skipped)
}

/// A small crate with a build script and a proc-macro crate (a local path dependency using
/// `proc_macro` only): nothing from crates.io, so it builds offline.
fn write_crate(dir: &Path) -> Result<()> {
    let files: [(&str, String); 5] = [
        (
            "Cargo.toml",
            "[package]\nname = \"churn_app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n\
             churn_macro = { path = \"macro\" }\n\n[workspace]\n"
                .into(),
        ),
        (
            "build.rs",
            r#"use std::fmt::Write;
fn main() {
    let mut s = String::new();
    for i in 0..400 {
        let _ = writeln!(s, "pub fn f{i}(x: u64) -> u64 {{ let v: Vec<u64> = (0..x % 64 + {i}).map(|k| k.wrapping_mul({i} + 1)).collect(); v.iter().fold(x, |a, b| a.rotate_left(3) ^ b) }}");
    }
    let _ = writeln!(s, "pub fn all(x: u64) -> u64 {{ let mut a = x;");
    for i in 0..400 {
        let _ = writeln!(s, "a = f{i}(a);");
    }
    let _ = writeln!(s, "a }}");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("generated.rs");
    std::fs::write(out, s).unwrap();
}
"#
            .into(),
        ),
        (
            "src/main.rs",
            {
                let mut s = String::from("include!(concat!(env!(\"OUT_DIR\"), \"/generated.rs\"));\n");
                for i in 0..60 {
                    s += &format!(
                        "#[derive(churn_macro::Describe, Debug, Clone, PartialEq)]\npub struct S{i} {{ a: u64, b: String, c: Vec<u32> }}\n"
                    );
                }
                s += "fn main() {\n    let mut n = all(std::env::args().count() as u64);\n";
                for i in 0..60 {
                    s += &format!("    n += S{i}::describe().len() as u64;\n");
                }
                s += "    println!(\"{n}\");\n}\n";
                s
            },
        ),
        (
            "macro/Cargo.toml",
            "[package]\nname = \"churn_macro\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\nproc-macro = true\n".into(),
        ),
        (
            "macro/src/lib.rs",
            r#"use proc_macro::{TokenStream, TokenTree};

/// `impl T { pub fn describe() -> &'static str }` naming the struct and its fields.
#[proc_macro_derive(Describe)]
pub fn describe(input: TokenStream) -> TokenStream {
    let tokens: Vec<TokenTree> = input.into_iter().collect();
    let name = tokens
        .windows(2)
        .find_map(|w| match (&w[0], &w[1]) {
            (TokenTree::Ident(k), TokenTree::Ident(n)) if k.to_string() == "struct" => Some(n.to_string()),
            _ => None,
        })
        .unwrap_or_default();
    let body = tokens.iter().rev().find_map(|t| match t {
        TokenTree::Group(g) => Some(g.stream().to_string()),
        _ => None,
    });
    let text = format!("{name} {{ {} }}", body.unwrap_or_default()).replace('"', "'");
    format!("impl {name} {{ pub fn describe() -> &'static str {{ \"{text}\" }} }}").parse().unwrap()
}
"#
            .into(),
        ),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Builds the crate from a fresh target directory again and again until `stop`; returns the
/// builds that finished.
fn cargo_loop(dir: PathBuf, stop: Arc<AtomicBool>) -> Result<u64> {
    let target = dir.join("target");
    let log = dir.join("cargo-build.log");
    let mut builds = 0;
    while !stop.load(Ordering::Relaxed) {
        let _ = std::fs::remove_dir_all(&target);
        let mut child = Command::new("cargo")
            .args(["build", "--offline"])
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTC_WRAPPER")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_MAKEFLAGS")
            .env_remove("MAKEFLAGS")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            // Its own process group, so that stopping it mid-build stops rustc too.
            .process_group(0)
            .spawn()
            .context("starting cargo build")?;
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("cargo build of {} failed: {}", dir.display(), std::fs::read_to_string(&log)?);
                }
                builds += 1;
                break;
            }
            if stop.load(Ordering::Relaxed) {
                // SAFETY: killpg(2) on the process group of our own child (its id).
                unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
                let _ = child.wait();
                return Ok(builds);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(builds)
}

/// The workload and the churn of one scenario, running until `finish` (or drop).
struct Load {
    scenario: Scenario,
    started: Instant,
    steady: Child,
    stop: Arc<AtomicBool>,
    churn: Option<JoinHandle<(u64, u64)>>,
    cargo: Option<JoinHandle<Result<u64>>>,
}

impl Load {
    fn start(scenario: Scenario, steady_exe: &Path, python: &str, dir: &Path) -> Result<Load> {
        let steady = Command::new(steady_exe)
            .arg("86400")
            .stdout(Stdio::null())
            .spawn()
            .context("starting the steady workload")?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = Load { scenario, started: Instant::now(), steady, stop, churn: None, cargo: None };
        if scenario != Scenario::Steady {
            let mix_dir = dir.join("mix");
            let _ = std::fs::remove_dir_all(&mix_dir);
            std::fs::create_dir_all(&mix_dir)?;
            let source = mix_dir.join("small.c");
            std::fs::write(&source, SMALL_C)?;
            let mix = Mix { python: python.to_string(), dir: mix_dir, source };
            let stop = load.stop.clone();
            load.churn = Some(std::thread::spawn(move || churn_loop(mix, stop)));
        }
        if scenario == Scenario::Heavy {
            let crate_dir = dir.join("crate");
            write_crate(&crate_dir)?;
            let stop = load.stop.clone();
            load.cargo = Some(std::thread::spawn(move || cargo_loop(crate_dir, stop)));
        }
        Ok(load)
    }

    fn finish(mut self) -> Result<LoadStats> {
        self.stop.store(true, Ordering::Relaxed);
        let (started, skipped) = match self.churn.take() {
            Some(h) => h.join().unwrap_or((0, 0)),
            None => (0, 0),
        };
        let builds = match self.cargo.take() {
            Some(h) => h.join().unwrap_or_else(|_| Ok(0))?,
            None => 0,
        };
        Ok(LoadStats {
            scenario: self.scenario,
            seconds: self.started.elapsed().as_secs_f64(),
            started,
            skipped,
            builds,
        })
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.steady.kill();
        let _ = self.steady.wait();
        if let Some(h) = self.churn.take() {
            let _ = h.join();
        }
        if let Some(h) = self.cargo.take() {
            let _ = h.join();
        }
    }
}

/// What every measurement of the section shares.
struct Ctx<'a> {
    plan: &'a Plan,
    tools: &'a Tools,
    dir: PathBuf,
    cpus: usize,
    sink_port: u16,
}

fn measure(ctx: &Ctx, scenario: Scenario, subject: Subject) -> Result<ChurnRun> {
    let slug = format!("{}-{}", scenario.label().replace(' ', "-"), subject.slug());
    let folded = ctx.dir.join(format!("{slug}.folded"));
    let perf_data = ctx.dir.join(format!("{slug}.perf.data"));
    let hz = subject.hz().to_string();
    let record = |exe: &Path, tables: bool| {
        let mut c = Command::new(exe);
        c.args(["record", "-a", "-F", &hz, "--unwind", if tables { "auto" } else { "fp" }, "-o"]).arg(&folded);
        c
    };
    let (mut cmd, ready, signal) = match subject {
        Subject::Record { tables, .. } => (record(&ctx.tools.otelprof, tables), Some("recording "), libc::SIGINT),
        Subject::Baseline { .. } => {
            let exe = ctx.plan.baseline.as_deref().context("no --baseline")?;
            (record(exe, true), Some("recording "), libc::SIGINT)
        }
        Subject::Agent { .. } | Subject::BaselineAgent { .. } => {
            // The baseline binary predates the embedded collector: it gets the old config shape.
            let (exe, shape) = match subject {
                Subject::BaselineAgent { .. } => {
                    (ctx.plan.baseline.as_deref().context("no --baseline")?, ConfigShape::Old)
                }
                _ => (ctx.tools.otelprof.as_path(), ConfigShape::Collector),
            };
            let config = ctx.dir.join(format!("{slug}.yaml"));
            let interval = if ctx.plan.smoke { 1 } else { 5 };
            std::fs::write(&config, agent_config(shape, subject.hz(), interval, ctx.sink_port, None))?;
            let mut c = Command::new(exe);
            c.args(["agent", "--config"]).arg(&config);
            (c, Some(shape.ready_line()), libc::SIGTERM)
        }
        Subject::Perf { .. } => {
            let perf = ctx.tools.perf.as_ref().context("perf not found")?;
            let mut c = Command::new(perf);
            c.args(["record", "-q", "-a", "-g", "-F", &hz, "-o"]).arg(&perf_data);
            (c, None, libc::SIGINT)
        }
    };
    let running = spawn(&mut cmd, &subject.label(), ready)?;
    let pid = running.pid();
    let startup_cpu = cpu_so_far(pid);
    let (bpf_ns0, bpf_runs0) = bpf_usage(pid);
    let forks0 = forks();
    let t0 = Instant::now();
    let warmup = warmup(ctx.plan.churn_window);
    std::thread::sleep(Duration::from_secs_f64(warmup));
    let warm_cpu = cpu_so_far(pid);
    let warm_at = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs_f64(ctx.plan.churn_window).saturating_sub(t0.elapsed()));
    let (bpf_ns1, bpf_runs1) = bpf_usage(pid);
    let end_cpu = cpu_so_far(pid);
    let forks1 = forks();
    let bpf_map_mib = super::agent_cost::bpf_map_rss_kib(pid as i32) / 1024.0;
    let window = t0.elapsed().as_secs_f64();
    let (_, usage) =
        stop_with(running, signal).with_context(|| format!("{} in {}", subject.label(), scenario.label()))?;
    let stacks = match subject {
        Subject::Record { .. } | Subject::Baseline { .. } => {
            let text = std::fs::read_to_string(&folded).with_context(|| format!("reading {}", folded.display()))?;
            let steady = folded_stacks(&text).filter(|(frames, _)| frames.first() == Some(&STEADY));
            Some(counts(steady, STEADY_ROOT, None))
        }
        Subject::Perf { .. } => {
            let o = Command::new(ctx.tools.perf.as_ref().context("perf not found")?)
                .args(["script", "--comms", STEADY, "-F", "comm,ip,sym", "-i"])
                .arg(&perf_data)
                .stderr(Stdio::null())
                .output()
                .context("perf script")?;
            let text = String::from_utf8_lossy(&o.stdout);
            let steady = perf_stacks(&text).filter(|(comm, _)| *comm == STEADY).map(|(_, frames)| (frames, 1));
            Some(counts(steady, STEADY_ROOT, None))
        }
        Subject::Agent { .. } | Subject::BaselineAgent { .. } => None,
    };
    let _ = std::fs::remove_file(&perf_data);
    Ok(ChurnRun {
        scenario,
        subject,
        cpus: ctx.cpus,
        window,
        cpu_seconds: usage.cpu_seconds,
        startup_cpu,
        ongoing_cpu: (end_cpu - warm_cpu).max(0.0),
        warmup: warm_at,
        bpf_ns: bpf_ns1.saturating_sub(bpf_ns0),
        bpf_runs: bpf_runs1.saturating_sub(bpf_runs0),
        peak_rss_mib: usage.peak_rss_kib as f64 / 1024.0,
        bpf_map_mib,
        stacks,
        forks_per_second: forks1.saturating_sub(forks0) as f64 / window.max(1e-9),
    })
}

/// The first part of a window that the ongoing CPU figure leaves out.
fn warmup(window: f64) -> f64 {
    (window / 4.0).min(5.0)
}

/// `--version` of a binary and where it is.
fn describe_binary(exe: &Path) -> String {
    let version = Command::new(exe)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown version".into());
    format!("{version} at {}", exe.display())
}

fn commit(root: &Path) -> String {
    Command::new("git")
        .current_dir(root)
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown commit".into())
}

pub fn run(plan: &Plan, tools: &Tools) -> Result<Churn> {
    let dir = tools.root.join("target/bench/churn");
    std::fs::create_dir_all(&dir)?;
    if let Some(b) = &plan.baseline {
        if !b.is_file() {
            bail!("--baseline {}: no such file", b.display());
        }
    }
    let steady_exe = dir.join(STEADY);
    let status = Command::new("cc")
        .args(["-O2", "-fomit-frame-pointer", "-pthread", "-o"])
        .arg(&steady_exe)
        .arg(tools.root.join("tests/workloads/churn_steady.c"))
        .status()
        .context("cc (a C compiler is needed for the steady workload)")?;
    if !status.success() {
        bail!("building the steady workload failed");
    }
    // Debian's python3, not a pyenv shim (a shell script starting more processes).
    let python = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" }.to_string();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let ctx = Ctx { plan, tools, dir: dir.clone(), cpus, sink_port: sink()? };
    let _stats = BpfStats::enable()?;
    let mut runs = Vec::new();
    let mut loads = Vec::new();
    for scenario in [Scenario::Steady, Scenario::Light, Scenario::Heavy] {
        let load = Load::start(scenario, &steady_exe, &python, &dir)?;
        // Let the workload (and the first build) get going before the first window.
        std::thread::sleep(Duration::from_secs(1));
        for subject in subjects(plan, scenario, tools.perf.is_some()) {
            let t = Instant::now();
            let r = measure(&ctx, scenario, subject)?;
            let stacks = r
                .stacks
                .map(|s| format!(", {:.1}% of {} steady-workload stacks complete", s.complete_pct(), s.total))
                .unwrap_or_default();
            eprintln!(
                "xtask bench: churn {}: {}: {:.2} CPU s ({:.2}% of the machine; {:.2}% after {:.0} s) + {:.2}% BPF = \
                 {:.2}%, {:.0} MiB peak RSS{stacks} ({:.0} s)",
                scenario.label(),
                subject.label(),
                r.cpu_seconds,
                r.cpu_pct(),
                r.ongoing_cpu_pct(),
                r.warmup,
                r.bpf_pct(),
                r.total_pct(),
                r.peak_rss_mib,
                t.elapsed().as_secs_f64()
            );
            runs.push(r);
        }
        let stats = load.finish()?;
        if scenario != Scenario::Steady {
            eprintln!(
                "xtask bench: churn {}: {:.1} mix processes started per second, {} turns skipped, {} cargo builds",
                scenario.label(),
                stats.started_per_second(),
                stats.skipped,
                stats.builds
            );
        }
        loads.push(stats);
    }
    Ok(Churn {
        cpus,
        window: plan.churn_window,
        warmup: warmup(plan.churn_window),
        runs,
        loads,
        baseline: plan.baseline.as_deref().map(describe_binary),
        commit: commit(&tools.root),
        python,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_and_shares() {
        assert_eq!(Scenario::Light.goal_pct(19), Some(0.3));
        assert_eq!(Scenario::Steady.goal_pct(19), None);
        let r = ChurnRun {
            scenario: Scenario::Heavy,
            subject: Subject::Record { hz: 19, tables: true },
            cpus: 2,
            window: 20.0,
            cpu_seconds: 0.4,
            startup_cpu: 0.1,
            ongoing_cpu: 0.15,
            warmup: 5.0,
            bpf_ns: 40_000_000,
            bpf_runs: 760,
            peak_rss_mib: 80.0,
            bpf_map_mib: 48.0,
            stacks: None,
            forks_per_second: 5.0,
        };
        assert!((r.cpu_pct() - 1.0).abs() < 1e-9);
        assert!((r.ongoing_cpu_pct() - 0.5).abs() < 1e-9);
        assert!((r.bpf_pct() - 0.1).abs() < 1e-9);
        assert_eq!(r.goal_pct(), Some(1.0));
        assert_eq!(ChurnRun { subject: Subject::Perf { hz: 19 }, ..r }.goal_pct(), None);
    }

    #[test]
    fn the_baseline_agent_runs_where_the_agent_does() {
        let root = Path::new("/nonexistent");
        let mut plan = Plan::new(true, None, None, root);
        assert!(!subjects(&plan, Scenario::Light, false).contains(&Subject::BaselineAgent { hz: 19 }));
        plan.baseline = Some("/old/otelprof".into());
        let light = subjects(&plan, Scenario::Light, false);
        assert!(light.contains(&Subject::Agent { hz: 19 }) && light.contains(&Subject::BaselineAgent { hz: 19 }));
        assert!(!subjects(&plan, Scenario::Steady, false).contains(&Subject::BaselineAgent { hz: 99 }));
        assert_eq!(Subject::BaselineAgent { hz: 19 }.label(), "baseline: otelprof agent, 19 Hz");
    }

    #[test]
    fn steady_stacks() {
        let perf = "churn-steady \n\t    11f4 leaf\n\t 7f0012 start_thread+0x12\n\nopt cgu.00 \n\t 884cb52 foo\n\n";
        let stacks: Vec<_> = perf_stacks(perf).collect();
        assert_eq!(stacks, vec![("churn-steady", vec!["leaf", "start_thread"]), ("opt cgu.00", vec!["foo"])]);
        let folded =
            "churn-steady;clone3;start_thread;worker;leaf 9\nchurn-steady;[unknown]+0xfae05b1;leaf 1\nsh;main 4\n";
        let steady = folded_stacks(folded).filter(|(frames, _)| frames.first() == Some(&STEADY));
        let share = counts(steady, STEADY_ROOT, None);
        assert_eq!((share.total, share.complete), (10, 9));
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id() as i32;
        assert!(cpu_so_far(pid) >= 0.0);
        assert!(forks() > 0);
        // No BPF programs here.
        assert_eq!(bpf_usage(pid), (0, 0));
    }
}
