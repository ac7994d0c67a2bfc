//! `cargo xtask`: the project's build orchestration, so nothing depends on ad-hoc shell scripts.
//!
//! - `setup`: installs what building the BPF programs needs (nightly rust-src, llvm-22-dev,
//!   bpf-linker 0.13.0). User-space builds never need it.
//! - `build-ebpf`: builds `profiler-ebpf/programs` for `bpfel-unknown-none`, strips debug sections
//!   and refreshes the committed object and its source hash in `profiler-ebpf/prebuilt/`.
//! - `check-ebpf`: fails when the committed object's recorded source hash does not match the
//!   sources (CI runs it on every change).
//! - `bench`: measures otelprof next to perf and writes `docs/BENCHMARKS.md`.
//! - `fuzz`: runs the OTTL fuzz targets for a fixed number of executions (CI runs it); installs
//!   cargo-fuzz when missing.

mod bench;
mod ebpf;
mod fuzz;
mod setup;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "otelprof build tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the BPF toolchain (nightly rust-src, llvm-22-dev, bpf-linker 0.13.0).
    Setup,
    /// Build the BPF object and update the committed copy and its source hash.
    BuildEbpf,
    /// Fail if the committed BPF object is stale against its sources.
    CheckEbpf,
    /// Exit 0 when the BPF toolchain is installed, 1 otherwise (used by .ci/run).
    HasToolchain,
    /// Measure otelprof next to perf and write docs/BENCHMARKS.md (as root).
    Bench {
        /// Run every part briefly to check the harness; writes target/bench-smoke.md.
        #[arg(long)]
        smoke: bool,
        /// Rounds of the slowdown benchmark (default 5; 1 with --smoke).
        #[arg(long)]
        rounds: Option<usize>,
        /// Seconds of one workload run alone (default 10; 1 with --smoke).
        #[arg(long)]
        seconds: Option<f64>,
        /// Run only this section, written alone to target/bench-SECTION.md.
        #[arg(long, value_enum)]
        only: Option<bench::Section>,
        /// An older otelprof binary to measure next to this one (churn section).
        #[arg(long, value_name = "PATH")]
        baseline: Option<std::path::PathBuf>,
    },
    /// Run the OTTL fuzz targets (profiler-user/ottl/fuzz) and fail on a crash, naming the
    /// reproducer. Needs nightly; installs cargo-fuzz when missing. Default executions:
    /// parse_compile 1,000,000, evaluate 200,000, evaluate_text 20,000.
    ///
    /// Examples: `cargo xtask fuzz`; `cargo xtask fuzz --target evaluate --runs 5000000`.
    Fuzz {
        /// Executions per target (instead of each target's default).
        #[arg(long)]
        runs: Option<u64>,
        /// Only this target: parse_compile, evaluate or evaluate_text.
        #[arg(long)]
        target: Option<String>,
        /// Parallel libFuzzer jobs per target, splitting the executions (default: one per core).
        #[arg(long)]
        jobs: Option<u64>,
        /// When nightly or cargo-fuzz cannot be installed, print SKIPPED and succeed (CI).
        #[arg(long)]
        skip_unavailable: bool,
    },
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse().cmd) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Setup => setup::run(),
        Cmd::BuildEbpf => ebpf::build(),
        Cmd::CheckEbpf => ebpf::check(),
        Cmd::Bench { smoke, rounds, seconds, only, baseline } => {
            let root = ebpf::root();
            let mut plan = bench::Plan::new(smoke, rounds, seconds, &root);
            plan.baseline = baseline;
            if let Some(section) = only {
                plan = plan.only(section, &root);
            }
            bench::run(plan, &root)
        }
        Cmd::Fuzz { runs, target, jobs, skip_unavailable } => {
            fuzz::run(fuzz::Options { runs, target, jobs, skip_unavailable })
        }
        Cmd::HasToolchain => {
            let missing = setup::missing();
            if missing.is_empty() {
                println!("BPF toolchain present");
                Ok(())
            } else {
                println!("BPF toolchain missing: {}", missing.join(", "));
                std::process::exit(1)
            }
        }
    }
}
