//! `cargo xtask bench`: otelprof's cost, measured side by side with `perf` in one run, and
//! written to `docs/BENCHMARKS.md` with the machine, the command and the date.
//!
//! 1. [`slowdown`]: a fixed CPU-bound workload alone, under `otelprof record -a` (19 and 99 Hz)
//!    and under `perf record -a` (frame pointers and DWARF), in alternating rounds; median ratio.
//! 2. BPF cost per run of each program, from the kernel's BPF statistics (`--bpf-stats`).
//! 3. [`agent_cost`]: CPU seconds per 1,000 samples and peak RSS of `otelprof agent` with 10 and
//!    500 running processes.
//! 4. and 5. [`micro`]: criterion benches of symbolization (otelprof cold/warm, raw blazesym,
//!    addr2line) and encoding (OTLP, pprof).
//! 6. [`runtimes`]: complete stacks on real runtimes (CPython), otelprof next to
//!    `perf --call-graph dwarf` on the same workload.
//! 7. [`off_cpu`]: the `sched_switch` hook of off-CPU profiling, ns per switch, and switches per
//!    second at idle and under a ping-pong load.
//! 8. [`churn`]: the profilers' own cost (CPU, BPF run time, peak RSS) and the steady workload's
//!    complete stacks, steady and under process churn; `--baseline` adds an older otelprof.
//! 9. [`collector`]: the OTLP collector's CPU per million spans and log records and its peak RSS,
//!    `otelprof agent` next to `rotel-agent`, same load, same sink, and `otelprof agent` with a
//!    5-statement `transform` in its traces pipeline.
//! 10. [`micro`] again: OTTL, ns per statement per record and the `transform` processor's spans
//!     per second on in-memory requests.
//! 11. [`anomaly`]: the edge anomaly loop (issue #16): detection latency from a CPU step (a busy
//!     process) to the profiler's burst, in a real `otelprof agent` at 1 s and 500 ms intervals,
//!     next to the detector's expected latency; the analysis tick's cost (criterion,
//!     `benches/benches/anomaly.rs`) as CPU % per interval; the agent's CPU over a quiet window
//!     with and without the `anomaly` receiver.
//!
//! `--smoke` runs every part briefly and writes to `target/bench-smoke.md`: it checks the harness,
//! its numbers mean nothing. `--only churn` runs one section and writes it alone to
//! `target/bench-churn.md` (`target/bench-churn-smoke.md` with `--smoke`).

mod agent_cost;
mod anomaly;
mod churn;
mod collector;
mod machine;
mod micro;
mod off_cpu;
mod report;
mod runtimes;
mod slowdown;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// A section that can run alone (`--only`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// 8. Agent cost under process churn.
    Churn,
    /// The BPF cost of `sample` by stack depth (1, 10, 30), `--rounds` rounds of `--seconds`
    /// windows, medians; `--baseline` measured in the same rounds.
    Depth,
    /// 9. The OTLP collector (traces and logs, gRPC in and out) next to rotel-agent.
    Collector,
    /// 3. The agent's cost by process count; `--baseline` measured next to it.
    Agent,
    /// 10. OTTL statements and the transform processor (criterion, no root, no BPF).
    Ottl,
    /// 11. The anomaly loop: step → burst latency, and its analysis cost.
    Anomaly,
}

/// How much to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    pub smoke: bool,
    pub rounds: usize,
    /// Target wall time of one workload run, alone.
    pub seconds: f64,
    /// How long each agent-cost run lasts.
    pub agent_seconds: f64,
    /// Background process counts for the agent-cost runs.
    pub process_counts: Vec<usize>,
    /// How long each profiler records in each churn scenario.
    pub churn_window: f64,
    /// An older otelprof binary measured next to this one in the churn section.
    pub baseline: Option<PathBuf>,
    /// Run only this section.
    pub only: Option<Section>,
    pub out: PathBuf,
}

impl Plan {
    pub fn new(smoke: bool, rounds: Option<usize>, seconds: Option<f64>, root: &Path) -> Self {
        if smoke {
            Plan {
                smoke,
                rounds: rounds.unwrap_or(1),
                seconds: seconds.unwrap_or(1.0),
                agent_seconds: 3.0,
                process_counts: vec![10, 50],
                churn_window: 2.0,
                baseline: None,
                only: None,
                out: root.join("target/bench-smoke.md"),
            }
        } else {
            Plan {
                smoke,
                rounds: rounds.unwrap_or(5),
                seconds: seconds.unwrap_or(10.0),
                agent_seconds: 20.0,
                process_counts: vec![10, 500],
                churn_window: 20.0,
                baseline: None,
                only: None,
                out: root.join("docs/BENCHMARKS.md"),
            }
        }
    }

    /// Runs only `section`, written alone to `target/bench-SECTION[-smoke].md`.
    pub fn only(mut self, section: Section, root: &Path) -> Self {
        let name = match section {
            Section::Churn => "churn",
            Section::Depth => "depth",
            Section::Collector => "collector",
            Section::Agent => "agent",
            Section::Ottl => "ottl",
            Section::Anomaly => "anomaly",
        };
        self.only = Some(section);
        self.out = root.join(format!("target/bench-{name}{}.md", if self.smoke { "-smoke" } else { "" }));
        self
    }
}

/// Where cargo puts what it builds: `$CARGO_TARGET_DIR` when set, else the workspace's `target/`.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"))
}

/// Paths of the things under test.
pub struct Tools {
    pub root: PathBuf,
    pub otelprof: PathBuf,
    pub reference: PathBuf,
    pub perf: Option<PathBuf>,
}

fn build(root: &Path) -> Result<Tools> {
    let status = Command::new("cargo")
        .current_dir(root)
        .args(["build", "--release", "-p", "otelprof", "--bin", "otelprof"])
        .status()
        .context("cargo build")?;
    if !status.success() {
        bail!("building otelprof failed");
    }
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let reference = out.join("reference");
    let status = Command::new("cc")
        .args(["-O2", "-fno-omit-frame-pointer", "-pthread", "-o"])
        .arg(&reference)
        .arg(root.join("benches/workloads/reference.c"))
        .status()
        .context("cc (a C compiler is needed for the reference workload)")?;
    if !status.success() {
        bail!("building the reference workload failed");
    }
    let perf = Command::new("perf")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("perf"));
    Ok(Tools { root: root.to_path_buf(), otelprof: target_dir(root).join("release/otelprof"), reference, perf })
}

pub fn run(plan: Plan, root: &Path) -> Result<()> {
    if plan.only == Some(Section::Ottl) {
        // Criterion alone: neither the profiler binary nor the reference workload.
        eprintln!("xtask bench: only: OTTL (criterion)");
        let tools = Tools { root: root.to_path_buf(), otelprof: PathBuf::new(), reference: PathBuf::new(), perf: None };
        let micro = micro::run_benches(&plan, &tools, Some("ottl"))?;
        let text =
            report::render_only(&plan, &machine::describe(), std::time::SystemTime::now(), |o| report::ottl(o, &micro));
        return write(&plan, text);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads BPF and runs perf -a: run it as root");
    }
    let tools = build(root)?;
    if tools.perf.is_none() {
        eprintln!("xtask bench: perf not found (apt-get install linux-perf): perf rows stay empty");
    }
    let started = std::time::SystemTime::now();
    let text = match plan.only {
        Some(Section::Churn) => {
            eprintln!("xtask bench: only: agent cost under process churn");
            let churn = churn::run(&plan, &tools)?;
            report::render_only(&plan, &machine::describe(), started, |o| report::churn(o, &churn))
        }
        Some(Section::Depth) => {
            eprintln!("xtask bench: only: BPF cost by stack depth");
            let table = slowdown::depth_only(&plan, &tools)?;
            report::render_only(&plan, &machine::describe(), started, |o| o.push_str(&table))
        }
        Some(Section::Agent) => {
            eprintln!("xtask bench: only: agent cost");
            let agent = agent_cost::run(&plan, &tools)?;
            report::render_only(&plan, &machine::describe(), started, |o| report::agent(o, &plan, &agent))
        }
        Some(Section::Ottl) => unreachable!("run above, without root or a build"),
        Some(Section::Collector) => {
            eprintln!("xtask bench: only: OTLP collector, otelprof agent and rotel-agent");
            let bench = collector::run(&plan, &tools)?;
            report::render_only(&plan, &machine::describe(), started, |o| collector::render(o, &bench))
        }
        Some(Section::Anomaly) => {
            eprintln!("xtask bench: only: anomaly loop, detection latency and cost");
            let micro = micro::run_benches(&plan, &tools, Some("anomaly"))?;
            let bench = anomaly::run(&plan, &tools)?;
            report::render_only(&plan, &machine::describe(), started, |o| anomaly::render(o, &bench, &micro))
        }
        None => {
            eprintln!("xtask bench: 1/5 workload slowdown ({} rounds of ~{}s per mode)", plan.rounds, plan.seconds);
            let slow = slowdown::run(&plan, &tools)?;
            eprintln!("xtask bench: BPF cost by stack depth");
            let depth = slowdown::bpf_cost_by_depth(&plan, &tools)?;
            eprintln!("xtask bench: off-CPU hook cost (sched_switch)");
            let switch = off_cpu::run(&plan, &tools)?;
            eprintln!("xtask bench: 2/5 agent cost");
            let agent = agent_cost::run(&plan, &tools)?;
            eprintln!("xtask bench: 3/5 symbolization and encoding (criterion)");
            let micro = micro::run(&plan, &tools)?;
            eprintln!("xtask bench: 4/5 stacks on real runtimes, otelprof and perf");
            let runtimes = runtimes::run(&plan, &tools)?;
            eprintln!("xtask bench: 5/5 agent cost under process churn");
            let churn = churn::run(&plan, &tools)?;
            eprintln!("xtask bench: OTLP collector, otelprof agent and rotel-agent");
            // Without rotel (no pip, say) the sections above still count.
            let collector = collector::run(&plan, &tools);
            let measured = report::Measured { slow, depth, agent, micro, runtimes, switch, churn };
            let mut text = report::render(&plan, &machine::describe(), started, &measured);
            match collector {
                Ok(bench) => collector::render(&mut text, &bench),
                Err(e) => text += &format!("## 9. Collector: OTLP throughput and memory\n\nNot run: {e:#}\n"),
            }
            report::ottl(&mut text, &measured.micro);
            eprintln!("xtask bench: anomaly loop, detection latency and cost");
            match anomaly::run(&plan, &tools) {
                Ok(bench) => anomaly::render(&mut text, &bench, &measured.micro),
                Err(e) => text += &format!("## 11. Anomaly loop: detection latency and cost\n\nNot run: {e:#}\n"),
            }
            text
        }
    };
    write(&plan, text)
}

fn write(plan: &Plan, text: String) -> Result<()> {
    eprintln!("xtask bench: writing {}", plan.out.display());
    if let Some(dir) = plan.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&plan.out, text).with_context(|| format!("writing {}", plan.out.display()))?;
    eprintln!("xtask bench: done: {}", plan.out.display());
    Ok(())
}
