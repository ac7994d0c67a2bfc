//! The edge anomaly loop (issue #16, docs/design/0010): how long from a CPU step to the
//! profiler's burst, and what the loop costs.
//!
//! Latency: `otelprof agent` with a `profiling` receiver at 19 Hz (every process) and an
//! `anomaly` receiver with its defaults (the one `node_cpu` rule: warm-up 10, z 3, floor 0.10,
//! ceiling 0.80, 3 of 10) but for the interval (1 s, then 500 ms, one agent each), a short burst
//! and caps relaxed so that several rounds run in one agent. After the warm-up, each round starts
//! one busy process (`reference light SECONDS 1.0`: one CPU), notes the time, and polls
//! `/metrics` every 20 ms until `otelprof_anomaly_bursts_total{outcome="started"}` increments or
//! `otelprof_samples_per_second` rises; latency = that moment − the step. The burner stops, the
//! burst ends, and the detector gets [`SETTLE_POINTS`] quiet points (its 10-point confirmation
//! window clears and the baseline returns) before the next round.
//!
//! Cost: the criterion bench `benches/benches/anomaly.rs` (one tick: `/proc/stat`, the
//! utilisation, `Engine::observe`) as CPU % at each interval; and the agent's own CPU time
//! (`/proc/PID/stat`) over a quiet window, with and without the `anomaly` receiver.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{
    agent_cost::metrics_text,
    churn::cpu_so_far,
    collector::{free_port, show, Collector},
    micro::Micro,
    slowdown::median,
    Plan, Tools,
};

/// The profiler's rate outside bursts, and during them.
const BASE_HZ: u64 = 19;
const BURST_HZ: u64 = 99;
/// The burst window: short, so that rounds follow each other quickly (the default is 30 s).
const BURST: Duration = Duration::from_secs(2);
/// Points the detector gets after a round before the next step: more than its confirmation
/// window (10) so that no anomalous point of the last round counts, and enough for the EWMA
/// (α = 0.2: 0.8^15 ≈ 3.5 % of the step left) and its variance to return to the baseline.
const SETTLE_POINTS: f64 = 15.0;
/// The defaults the report compares with (`detect.rs`).
const CONFIRM_K: usize = 3;
const CEILING: f64 = 0.80;
const WARMUP_POINTS: f64 = 10.0;
const POLL: Duration = Duration::from_millis(20);

/// One step.
#[derive(Clone, Debug)]
pub struct Round {
    pub interval_ms: u64,
    /// Step → burst start, seconds.
    pub latency_s: f64,
    /// Points the rule judged between the step and the burst.
    pub points: f64,
    /// The node's utilisation between the end of the last round's burst and the step, 0..1.
    pub baseline: f64,
    /// The point that triggered, as the agent logged it.
    pub value: Option<f64>,
    /// `otelprof_samples_per_second` before the step, once the burst started, after it ended.
    pub rate_before: f64,
    pub rate_during: f64,
    pub rate_after: f64,
}

/// The agent's CPU over a quiet window, % of one CPU: the mean over the window and the standard
/// error of that mean from its [`SLICES`] slices.
#[derive(Clone, Copy, Debug)]
pub struct Cpu {
    pub pct: f64,
    pub stderr: f64,
}

/// Slices of the quiet window (their spread gives the noise).
const SLICES: usize = 6;

#[derive(Clone, Debug)]
pub struct Quiet {
    pub seconds: f64,
    /// Without and with the `anomaly` receiver.
    pub without: Cpu,
    pub with: Cpu,
}

pub struct AnomalyBench {
    pub rounds: Vec<Round>,
    pub rounds_per_interval: usize,
    pub intervals_ms: Vec<u64>,
    /// Steps without a burst, by interval.
    pub missed: Vec<(u64, usize)>,
    /// Why an interval has no rounds.
    pub errors: Vec<(u64, String)>,
    pub cpus: usize,
    pub command: String,
    pub config: String,
    pub quiet: Option<Quiet>,
    /// Why there is no quiet measurement.
    pub quiet_error: Option<String>,
}

/// The agent's configuration: profiling at [`BASE_HZ`] (every process), and unless `interval`
/// is `None` the `anomaly` receiver at that interval with its events in a logs pipeline. Both
/// export to files in `dir`.
fn config(dir: impl std::fmt::Display, interval: Option<&str>, metrics_port: impl std::fmt::Display) -> String {
    let (anomaly, logs) = match interval {
        Some(interval) => (
            format!(
                "  anomaly:\n    interval: {interval}\n    \
                 burst: {{ receiver: profiling, samples_per_second: {BURST_HZ}, duration: {}s }}\n    \
                 limits: {{ cooldown: 1s, per_target: 1000, global: 1000 }}\n",
                BURST.as_secs()
            ),
            "    logs: { receivers: [anomaly], exporters: [file/events] }\n",
        ),
        None => (String::new(), ""),
    };
    format!(
        "receivers:\n  profiling:\n    samples_per_second: {BASE_HZ}\n    reporter_interval: 5s\n{anomaly}\
         exporters:\n  file/profiles: {{ path: '{dir}/profiles.json' }}\n  file/events: {{ path: '{dir}/events.json' }}\n\
         service:\n  pipelines:\n    profiles: {{ receivers: [profiling], exporters: [file/profiles] }}\n{logs}  \
         telemetry:\n    metrics: {{ address: '127.0.0.1:{metrics_port}' }}\n    log_interval: 1h\n"
    )
}

/// The sum of `name`'s samples whose labels include every one of `labels` (Prometheus text).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (series, value) = rest.rsplit_once(' ')?;
            if !(series.is_empty() || series.starts_with('{')) {
                return None; // another metric whose name starts with `name`
            }
            labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// The node's busy and total jiffies (`/proc/stat`'s `cpu` line, counted as the receiver does).
fn node_jiffies() -> Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = text.lines().find(|l| l.starts_with("cpu ")).context("/proc/stat has no `cpu` line")?;
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    Ok((busy, busy + at(3) + at(4)))
}

fn utilisation(from: (u64, u64), to: (u64, u64)) -> f64 {
    let total = to.1.saturating_sub(from.1);
    if total == 0 {
        f64::NAN
    } else {
        to.0.saturating_sub(from.0) as f64 / total as f64
    }
}

/// The value of the last "anomaly `RULE`: node_cpu of node is V" line the agent logged after
/// byte `from` of its log.
fn triggered_value(log: &Path, from: usize) -> Option<f64> {
    let text = std::fs::read_to_string(log).ok()?;
    text.get(from..)?.lines().rev().find_map(|l| {
        let v = l.split(" of node is ").nth(1)?;
        v.split(|c: char| !(c.is_ascii_digit() || c == '.')).next()?.parse().ok()
    })
}

/// A running agent and where its metrics are.
struct Agent {
    collector: Collector,
    port: u16,
    log: PathBuf,
}

impl Agent {
    fn start(tools: &Tools, dir: &Path, slug: &str, interval: Option<&str>) -> Result<(Agent, String, String)> {
        let sub = dir.join(slug);
        std::fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        let port = free_port()?;
        let yaml = config(sub.display(), interval, port);
        let path = sub.join("agent.yaml");
        std::fs::write(&path, &yaml).with_context(|| format!("writing {}", path.display()))?;
        let mut cmd = Command::new(&tools.otelprof);
        cmd.args(["agent", "--config"]).arg(&path);
        let shown = show(&cmd);
        let log = sub.join("agent.log");
        let collector = Collector::start(cmd, log.clone(), port).with_context(|| format!("otelprof agent ({slug})"))?;
        Ok((Agent { collector, port, log }, shown, yaml))
    }

    fn metrics(&self) -> Result<String> {
        metrics_text(self.port).with_context(|| format!("scraping the agent's /metrics on port {}", self.port))
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        Ok(metric(&self.metrics()?, name, labels))
    }

    /// Polls `name` every [`POLL`] until `done` holds; its last value, or an error after `timeout`.
    fn wait(&self, name: &str, labels: &[(&str, &str)], timeout: Duration, done: impl Fn(f64) -> bool) -> Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.value(name, labels)?;
            if done(v) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("{name}{labels:?} is {v} after {timeout:?}");
            }
            std::thread::sleep(POLL);
        }
    }

    fn log_len(&self) -> usize {
        std::fs::metadata(&self.log).map(|m| m.len() as usize).unwrap_or(0)
    }
}

/// A busy process on one CPU, killed when dropped.
struct Burner(Child);

impl Burner {
    fn start(tools: &Tools) -> Result<Burner> {
        Command::new(&tools.reference)
            .args(["light", "120", "1.0"])
            .stdout(Stdio::null())
            .spawn()
            .map(Burner)
            .context("starting the CPU burner (reference light)")
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const POINTS: &str = "otelprof_anomaly_points_total";
const RATE: &str = "otelprof_samples_per_second";
const BURSTS: &str = "otelprof_anomaly_bursts_total";
const STARTED: &[(&str, &str)] = &[("outcome", "started")];

/// `rounds` steps in one agent with the anomaly receiver at `interval_ms`.
fn latency(tools: &Tools, dir: &Path, interval_ms: u64, rounds: usize) -> Result<Latency> {
    let interval = Duration::from_millis(interval_ms);
    let (agent, command, yaml) =
        Agent::start(tools, dir, &format!("latency-{interval_ms}ms"), Some(&format!("{interval_ms}ms")))?;
    // The warm-up, and two points more.
    let mut settled = WARMUP_POINTS + 2.0;
    let mut quiet_from = node_jiffies()?;
    let mut out = Vec::new();
    let mut missed = 0;
    for round in 0..rounds {
        let timeout = interval * (SETTLE_POINTS as u32 + 20) + Duration::from_secs(10);
        agent.wait(POINTS, &[], timeout, |v| v >= settled).context("waiting for the detector to settle")?;
        let rate_before =
            agent.wait(RATE, &[], BURST + Duration::from_secs(10), |v| v == BASE_HZ as f64).with_context(|| {
                format!(
                    "waiting for the base rate before the step: the node is busy without the step ({:.0} % since \
                     the last round, ceiling 80 %), so the rule keeps bursting; measure on a quiet machine",
                    node_jiffies().map(|now| utilisation(quiet_from, now) * 100.0).unwrap_or(f64::NAN)
                )
            })?;
        let text = agent.metrics()?;
        let (bursts0, points0) = (metric(&text, BURSTS, STARTED), metric(&text, POINTS, &[]));
        let log0 = agent.log_len();
        let at_step = node_jiffies()?;
        let step = Instant::now();
        let burner = Burner::start(tools)?;
        let latency_s = loop {
            let text = agent.metrics()?;
            if metric(&text, BURSTS, STARTED) > bursts0 || metric(&text, RATE, &[]) > rate_before {
                break Some(step.elapsed().as_secs_f64());
            }
            // A noisy baseline (another job on the machine) can hide the step: a miss, not an end.
            if step.elapsed() > interval * 30 + Duration::from_secs(5) {
                break None;
            }
            std::thread::sleep(POLL);
        };
        let Some(latency_s) = latency_s else {
            drop(burner);
            eprintln!(
                "xtask bench: anomaly {interval_ms} ms round {}: no burst {:?} after the step",
                round + 1,
                step.elapsed()
            );
            missed += 1;
            settled = agent.value(POINTS, &[])? + SETTLE_POINTS;
            quiet_from = node_jiffies()?;
            continue;
        };
        let points = agent.value(POINTS, &[])? - points0;
        let rate_during =
            agent.wait(RATE, &[], Duration::from_secs(1), |v| v > rate_before).context("the burst's rate")?;
        drop(burner);
        let rate_after = agent
            .wait(RATE, &[], BURST + Duration::from_secs(10), |v| v <= rate_before)
            .context("waiting for the burst to end")?;
        // Let the agent's log line reach its file.
        std::thread::sleep(Duration::from_millis(100));
        let r = Round {
            interval_ms,
            latency_s,
            points,
            baseline: utilisation(quiet_from, at_step),
            value: triggered_value(&agent.log, log0),
            rate_before,
            rate_during,
            rate_after,
        };
        eprintln!(
            "xtask bench: anomaly {interval_ms} ms round {}: step → burst {:.3} s ({} points), baseline {:.1} %, \
             trigger at {}, {}/{}/{} Hz",
            round + 1,
            r.latency_s,
            r.points,
            r.baseline * 100.0,
            r.value.map(|v| format!("{:.1} %", v * 100.0)).unwrap_or("?".into()),
            r.rate_before,
            r.rate_during,
            r.rate_after
        );
        out.push(r);
        settled = agent.value(POINTS, &[])? + SETTLE_POINTS;
        quiet_from = node_jiffies()?;
    }
    drop(agent);
    Ok(Latency { rounds: out, missed, command, yaml })
}

/// The rounds of one interval.
struct Latency {
    rounds: Vec<Round>,
    /// Steps that brought no burst within 30 intervals (+ 5 s).
    missed: usize,
    command: String,
    yaml: String,
}

/// The agent's CPU over `seconds` of a quiet node, after 3 s to start.
fn quiet_cpu(tools: &Tools, dir: &Path, interval: Option<&str>, seconds: f64) -> Result<Cpu> {
    let slug = if interval.is_some() { "quiet-with" } else { "quiet-without" };
    let (agent, _, _) = Agent::start(tools, dir, slug, interval)?;
    std::thread::sleep(Duration::from_secs(3));
    let pid = agent.collector.pid();
    let (cpu0, t0) = (cpu_so_far(pid), Instant::now());
    let mut slices = Vec::new();
    let (mut cpu, mut t) = (cpu0, t0);
    for _ in 0..SLICES {
        std::thread::sleep(Duration::from_secs_f64(seconds / SLICES as f64));
        let (c, now) = (cpu_so_far(pid), Instant::now());
        slices.push((c - cpu) / (now - t).as_secs_f64() * 100.0);
        (cpu, t) = (c, now);
    }
    let pct = (cpu - cpu0) / (t - t0).as_secs_f64() * 100.0;
    drop(agent);
    let n = slices.len() as f64;
    let mean = slices.iter().sum::<f64>() / n;
    let var = slices.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Ok(Cpu { pct, stderr: (var / n).sqrt() })
}

pub fn run(plan: &Plan, tools: &Tools) -> Result<AnomalyBench> {
    let dir = tools.root.join("target/bench/anomaly");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (rounds, quiet_s) = if plan.smoke { (1, 3.0) } else { (5, 60.0) };
    let intervals_ms = vec![1000, 500];
    let mut all = Vec::new();
    let mut missed = Vec::new();
    let mut errors = Vec::new();
    let (mut command, mut yaml) = (String::new(), String::new());
    for &ms in &intervals_ms {
        eprintln!("xtask bench: anomaly: interval {ms} ms, {rounds} round(s)");
        let l = match latency(tools, &dir, ms, rounds) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("xtask bench: anomaly: interval {ms} ms: not measured: {e:#}");
                errors.push((ms, format!("{e:#}")));
                continue;
            }
        };
        all.extend(l.rounds);
        missed.push((ms, l.missed));
        if command.is_empty() {
            (command, yaml) = (l.command, l.yaml);
        }
    }
    eprintln!("xtask bench: anomaly: the agent's CPU over {quiet_s:.0} s quiet, without and with the receiver");
    let quiet = quiet_cpu(tools, &dir, None, quiet_s)
        .and_then(|without| Ok((without, quiet_cpu(tools, &dir, Some("1s"), quiet_s)?)));
    let (quiet, quiet_error) = match quiet {
        Ok((without, with)) => (Some(Quiet { seconds: quiet_s, without, with }), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    Ok(AnomalyBench {
        rounds: all,
        rounds_per_interval: rounds,
        intervals_ms,
        missed,
        errors,
        cpus,
        command,
        config: if yaml.is_empty() { config("DIR", Some("1s"), "PORT") } else { yaml }
            .replace(&dir.display().to_string(), "DIR"),
        quiet,
        quiet_error,
    })
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(v), min, max)
}

/// The section of the report.
pub fn render(o: &mut String, b: &AnomalyBench, micro: &Micro) {
    let _ = writeln!(o, "## 11. Anomaly loop: detection latency and cost\n");
    let step = 1.0 / b.cpus as f64;
    let ceiling = step >= CEILING;
    let _ = writeln!(
        o,
        "`otelprof agent` with a `profiling` receiver at {BASE_HZ} Hz (every process) and the `anomaly` receiver with \
         its defaults (one `node_cpu` rule: warm-up 10 points, z ≥ 3, floor 10 %, ceiling 80 %, 3 of the last 10 \
         points) but for the interval (1 s, then 500 ms: one agent each), a {} s burst at {BURST_HZ} Hz and caps \
         relaxed (cooldown 1 s, 1,000 per target and node-wide) so that {} round{} run in one agent. After the \
         warm-up each round starts one busy process (`reference light 120 1.0`: one CPU of {}, a step of {:.0} % of \
         the node), notes the time and polls `/metrics` every 20 ms until \
         `otelprof_anomaly_bursts_total{{outcome=\"started\"}}` increments or `otelprof_samples_per_second` rises: \
         *latency* is that moment less the step. The burner stops, the burst ends, and the rule gets {} quiet \
         points before the next step. *Baseline*: the node's utilisation (`/proc/stat`) from the end of the last \
         round to the step; *trigger*: the point that acted, from the agent's log.\n",
        BURST.as_secs(),
        b.rounds_per_interval,
        if b.rounds_per_interval == 1 { "" } else { "s" },
        b.cpus,
        step * 100.0,
        SETTLE_POINTS,
    );
    let expected = |ms: u64| -> String {
        let i = ms as f64 / 1000.0;
        if ceiling {
            format!("≤ {i:.1} s (the ceiling rule: 1 interval)")
        } else {
            format!(
                "{:.1}–{:.1} s (z-score, k = {CONFIRM_K} × interval, less the part of the first interval before the \
                 step; one interval more when that partial point is not yet anomalous)",
                (CONFIRM_K - 1) as f64 * i,
                CONFIRM_K as f64 * i
            )
        }
    };
    let _ = writeln!(
        o,
        "| interval | rounds (missed) | latency median | min | max | expected | points to trigger | baseline | trigger at | \
         rate before / during / after |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for &ms in &b.intervals_ms {
        let rs: Vec<&Round> = b.rounds.iter().filter(|r| r.interval_ms == ms).collect();
        let missed = b.missed.iter().find(|(i, _)| *i == ms).map(|(_, n)| *n).unwrap_or(0);
        if rs.is_empty() {
            let why = b.errors.iter().find(|(i, _)| *i == ms).map(|(_, e)| e.as_str()).unwrap_or("no round");
            let _ = writeln!(o, "| {ms} ms | 0 ({missed}) | not measured: {why} | | | {} | | | | |", expected(ms));
            continue;
        }
        let (med, min, max) = stats(&rs.iter().map(|r| r.latency_s).collect::<Vec<_>>());
        let values: Vec<f64> = rs.iter().filter_map(|r| r.value).collect();
        let trigger = if values.is_empty() {
            "?".to_string()
        } else {
            let (m, lo, hi) = stats(&values);
            format!("{:.0} % ({:.0}–{:.0} %)", m * 100.0, lo * 100.0, hi * 100.0)
        };
        let med_of = |f: fn(&Round) -> f64| median(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
        let _ = writeln!(
            o,
            "| {ms} ms | {} ({missed}) | {med:.2} s | {min:.2} s | {max:.2} s | {} | {:.0} | {:.1} % | {trigger} | {:.0} / {:.0} / \
             {:.0} Hz |",
            rs.len(),
            expected(ms),
            med_of(|r| r.points),
            med_of(|r| r.baseline) * 100.0,
            med_of(|r| r.rate_before),
            med_of(|r| r.rate_during),
            med_of(|r| r.rate_after),
        );
    }
    let _ = writeln!(
        o,
        "\nThe step is {:.0} % of the node, {} the 80 % ceiling: {}. Goal (issue #16): the burst within 3 s of the \
         step.\n",
        step * 100.0,
        if ceiling { "at or above" } else { "below" },
        if ceiling {
            "the ceiling rule acts on the first point after the step"
        } else {
            "the Z-score path, which needs 3 anomalous points (a step to ≥ 80 %, as with one busy process per CPU, \
             would take the ceiling rule's single interval)"
        }
    );

    let _ = writeln!(
        o,
        "Cost of the analysis: criterion (`benches/benches/anomaly.rs`), one tick as the loop runs it: \
         `CpuTimes::read(\"/proc/stat\")`, `utilisation_since`, `Engine::observe` of the point (every rule's \
         detector, the caps on a trigger); the loop's timer and actions not included.\n"
    );
    let _ = writeln!(o, "| rules | ns per tick | CPU at 1 s | CPU at 500 ms |\n| --- | --- | --- | --- |");
    for (f, label) in [("default_rule", "1 (default)"), ("10_rules", "10")] {
        match micro.results.iter().find(|m| m.group == "anomaly_tick" && m.function == f) {
            Some(m) => {
                let _ = writeln!(
                    o,
                    "| {label} | {:.0} | {:.5} % | {:.5} % |",
                    m.mean_ns,
                    m.mean_ns / 1e9 * 100.0,
                    m.mean_ns / 0.5e9 * 100.0
                );
            }
            None => {
                let _ = writeln!(o, "| {label} | n/a | | |");
            }
        }
    }
    match (&b.quiet, &b.quiet_error) {
        (Some(q), _) => {
            let diff = q.with.pct - q.without.pct;
            let noise = 2.0 * (q.with.stderr.powi(2) + q.without.stderr.powi(2)).sqrt();
            let _ = writeln!(
                o,
                "\nThe whole agent on a quiet node (its user + system time from `/proc/PID/stat` over {:.0} s, after \
                 3 s to start; profiling at {BASE_HZ} Hz in both; ± the standard error from {SLICES} slices of the \
                 window): {:.2} ± {:.2} % of one CPU without the `anomaly` receiver, {:.2} ± {:.2} % with it at 1 s: \
                 a difference of {diff:+.2} percentage points, {} noise (twice the combined standard error, \
                 {noise:.2}).\n",
                q.seconds,
                q.without.pct,
                q.without.stderr,
                q.with.pct,
                q.with.stderr,
                if diff.abs() <= noise { "within" } else { "beyond" },
            );
        }
        (None, Some(e)) => {
            let _ = writeln!(o, "\nThe quiet-window comparison did not run: {e}\n");
        }
        (None, None) => {}
    }
    let command = if b.command.is_empty() { format!("{} agent --config FILE", "otelprof") } else { b.command.clone() };
    let _ = writeln!(o, "- agent (first run; the config file changes per run): `{command}` with:\n");
    let _ = writeln!(o, "```yaml\n{}```\n", b.config);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labelled_metrics() {
        let text = "HTTP/1.1 200 OK\r\n\r\n# HELP x\n\
                    otelprof_anomaly_bursts_total{receiver=\"anomaly\",outcome=\"started\"} 2\n\
                    otelprof_anomaly_bursts_total{receiver=\"anomaly\",outcome=\"failed\"} 1\n\
                    otelprof_samples_per_second{receiver=\"profiling\"} 19\n\
                    otelprof_samples_per_second_other 5\n";
        assert_eq!(metric(text, BURSTS, STARTED), 2.0);
        assert_eq!(metric(text, BURSTS, &[]), 3.0);
        assert_eq!(metric(text, RATE, &[]), 19.0);
        assert_eq!(metric(text, "missing", &[]), 0.0);
    }

    #[test]
    fn config_has_the_receiver_only_when_asked() {
        let with = config("/d", Some("500ms"), 9);
        assert!(with.contains("interval: 500ms"), "{with}");
        assert!(with.contains("logs: { receivers: [anomaly]"), "{with}");
        assert!(with.contains("address: '127.0.0.1:9'"), "{with}");
        let without = config("/d", None, 9);
        assert!(!without.contains("anomaly"), "{without}");
    }

    #[test]
    fn utilisation_and_stats() {
        assert_eq!(utilisation((10, 100), (60, 200)), 0.5);
        assert!(utilisation((10, 100), (10, 100)).is_nan());
        assert_eq!(stats(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        let (busy, total) = node_jiffies().unwrap();
        assert!(total >= busy);
    }
}
