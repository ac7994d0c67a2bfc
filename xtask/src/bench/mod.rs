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
//!
//! `--smoke` runs every part briefly and writes to `target/bench-smoke.md`: it checks the harness,
//! its numbers mean nothing.

mod agent_cost;
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
                out: root.join("target/bench-smoke.md"),
            }
        } else {
            Plan {
                smoke,
                rounds: rounds.unwrap_or(5),
                seconds: seconds.unwrap_or(10.0),
                agent_seconds: 20.0,
                process_counts: vec![10, 500],
                out: root.join("docs/BENCHMARKS.md"),
            }
        }
    }
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
        .args(["build", "--release", "-p", "profiler-user", "--bin", "otelprof"])
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
    Ok(Tools { root: root.to_path_buf(), otelprof: root.join("target/release/otelprof"), reference, perf })
}

pub fn run(plan: Plan, root: &Path) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads BPF and runs perf -a: run it as root");
    }
    let tools = build(root)?;
    if tools.perf.is_none() {
        eprintln!("xtask bench: perf not found (apt-get install linux-perf): perf rows stay empty");
    }
    let started = std::time::SystemTime::now();
    eprintln!("xtask bench: 1/4 workload slowdown ({} rounds of ~{}s per mode)", plan.rounds, plan.seconds);
    let slow = slowdown::run(&plan, &tools)?;
    eprintln!("xtask bench: BPF cost by stack depth");
    let depth = slowdown::bpf_cost_by_depth(&plan, &tools)?;
    eprintln!("xtask bench: off-CPU hook cost (sched_switch)");
    let switch = off_cpu::run(&plan, &tools)?;
    eprintln!("xtask bench: 2/4 agent cost");
    let agent = agent_cost::run(&plan, &tools)?;
    eprintln!("xtask bench: 3/4 symbolization and encoding (criterion)");
    let micro = micro::run(&plan, &tools)?;
    eprintln!("xtask bench: 4/4 stacks on real runtimes, otelprof and perf");
    let runtimes = runtimes::run(&plan, &tools)?;
    eprintln!("xtask bench: writing {}", plan.out.display());
    let measured = report::Measured { slow, depth, agent, micro, runtimes, switch };
    let text = report::render(&plan, &machine::describe(), started, &measured);
    if let Some(dir) = plan.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&plan.out, text).with_context(|| format!("writing {}", plan.out.display()))?;
    eprintln!("xtask bench: done: {}", plan.out.display());
    Ok(())
}

/// `--only depth`: the BPF cost by stack depth alone, printed; `baselines` (other otelprof
/// binaries) are measured in the same rounds.
pub fn run_depth(plan: Plan, root: &Path, baselines: Vec<PathBuf>) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads BPF: run it as root");
    }
    slowdown::depth_only(&plan, &build(root)?, baselines)
}
