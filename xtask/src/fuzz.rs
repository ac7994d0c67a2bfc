//! `cargo xtask fuzz`: runs the OTTL fuzz targets (`profiler-user/ottl/fuzz`) for a fixed
//! number of executions each and fails on the first crash, naming the reproducer.
//!
//! CI runs it after the tests. It needs nightly (the sanitizer-coverage flags) and cargo-fuzz,
//! which it installs when missing; where neither can be had, `--skip-unavailable` makes it say
//! so loudly and succeed, so a machine without the toolchain does not fail CI for that alone.
//!
//! Each target runs as one libFuzzer job per core, the jobs sharing a working corpus under the
//! target directory (kept between local runs, so coverage accumulates) and reading the
//! checked-in seeds from `fuzz/corpus/<target>/` without writing there. Crashes, timeouts and
//! out-of-memory inputs land in `<target dir>/fuzz/artifacts/<target>/`, the jobs' logs in
//! `<target dir>/fuzz/runs/<target>/`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::setup;

/// The fuzz crate, relative to the workspace root. cargo-fuzz runs from its parent (the crate
/// it fuzzes) and finds it as `fuzz/`.
const FUZZ_PARENT: &str = "profiler-user/ottl";

/// One fuzz target and its CI budget.
pub struct Target {
    pub name: &'static str,
    /// Executions per run (libFuzzer `-runs`).
    pub runs: u64,
    /// The safety cap (libFuzzer `-max_total_time`, seconds): a slow machine stops early and
    /// says so instead of running past CI's budget.
    pub max_seconds: u64,
}

/// What `cargo xtask fuzz` runs by default, in order. The run counts fit the CI budget on a
/// 2-core machine (DEVELOPERS.md, "Fuzzing", has the measured rates).
pub const TARGETS: &[Target] = &[
    Target { name: "parse_compile", runs: 1_000_000, max_seconds: 240 },
    Target { name: "evaluate", runs: 200_000, max_seconds: 90 },
    Target { name: "evaluate_text", runs: 20_000, max_seconds: 30 },
];

/// A single input that takes longer than this (seconds) is reported as a hang.
const TIMEOUT_SECONDS: u64 = 10;
/// An input that makes the process grow past this (MiB) is reported as a memory blow-up.
const RSS_LIMIT_MB: u64 = 2048;

/// Command-line choices.
pub struct Options {
    /// Executions per target instead of each target's default.
    pub runs: Option<u64>,
    /// Only this target.
    pub target: Option<String>,
    /// Parallel libFuzzer jobs per target (default: the machine's cores).
    pub jobs: Option<u64>,
    /// Succeed (with a loud SKIPPED line) when nightly or cargo-fuzz cannot be installed.
    pub skip_unavailable: bool,
}

/// What one target's run achieved.
struct Outcome {
    executions: u64,
    exec_per_sec: u64,
    seconds: f64,
}

pub fn run(opts: Options) -> Result<()> {
    let targets: Vec<&Target> = match &opts.target {
        None => TARGETS.iter().collect(),
        Some(name) => {
            let t = TARGETS.iter().find(|t| t.name == name).with_context(|| {
                let names: Vec<_> = TARGETS.iter().map(|t| t.name).collect();
                format!("unknown fuzz target {name:?} (targets: {})", names.join(", "))
            })?;
            vec![t]
        }
    };
    if let Err(why) = ensure_cargo_fuzz() {
        if opts.skip_unavailable {
            println!("SKIPPED: fuzzing needs nightly Rust and cargo-fuzz, which could not be had here: {why:#}");
            return Ok(());
        }
        return Err(why);
    }

    let root = crate::ebpf::root();
    let dir = target_dir(&root).join("fuzz");
    let jobs = opts.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64)).max(1);
    let started = Instant::now();
    build(&root, &dir)?;
    let built = started.elapsed().as_secs_f64();
    println!("fuzz: built the fuzz targets in {built:.0} s");

    let mut rows = Vec::new();
    for t in targets {
        let runs = opts.runs.unwrap_or(t.runs);
        let out = run_one(&root, &dir, t, runs, jobs)?;
        if out.executions < runs {
            println!(
                "fuzz: {}: stopped by the {} s cap after {} of {runs} executions (a slow or busy machine)",
                t.name, t.max_seconds, out.executions
            );
        }
        rows.push((t.name, out));
    }
    println!(
        "fuzz: no crash, hang or memory blow-up (build {built:.0} s, total {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    for (name, o) in rows {
        println!(
            "fuzz:   {name:<14} {:>9} executions in {:>4.0} s, {:>6} exec/s",
            o.executions, o.seconds, o.exec_per_sec
        );
    }
    Ok(())
}

/// `$CARGO_TARGET_DIR` when set, else the workspace's `target/`: never the fuzz crate's own
/// `target/`, which would put a second full build inside the source tree.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"))
}

/// `cargo +nightly fuzz …` with the workspace's stable settings removed.
fn cargo_fuzz(root: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root.join(FUZZ_PARENT))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args(["+nightly", "fuzz"]);
    cmd
}

/// Nightly must be there (this machine's image ships it; xtask `setup` checks the same way);
/// cargo-fuzz is installed when missing (about 3 minutes, once per machine).
fn ensure_cargo_fuzz() -> Result<()> {
    if !setup::has_nightly() {
        bail!("no nightly toolchain (`rustup toolchain install nightly` where the network allows)");
    }
    let has = |c: &mut Command| c.output().map(|o| o.status.success()).unwrap_or(false);
    if has(Command::new("cargo").args(["+nightly", "fuzz", "--version"])) {
        return Ok(());
    }
    eprintln!("fuzz: installing cargo-fuzz (cargo +nightly install cargo-fuzz --locked)");
    let status = Command::new("cargo")
        .env_remove("RUSTUP_TOOLCHAIN")
        .args(["+nightly", "install", "cargo-fuzz", "--locked"])
        .status()
        .context("starting cargo install")?;
    if !status.success() {
        bail!("`cargo +nightly install cargo-fuzz --locked` failed ({status})");
    }
    Ok(())
}

/// How the targets are built:
/// - no sanitizer: the fuzzed code is safe Rust; AddressSanitizer would double the build and
///   halve the executions for nothing it could find there (stack overflows are caught without
///   it, see `catch_stack_overflows` in the fuzz crate);
/// - debug assertions stay on (cargo-fuzz's default): integer overflow panics, as in tests;
/// - 16 codegen units instead of cargo-fuzz's 1: the build is most of CI's fuzz step.
fn build_flags(dir: &Path) -> Vec<String> {
    vec!["--sanitizer=none".into(), "--codegen-units=16".into(), "--target-dir".into(), dir.display().to_string()]
}

fn build(root: &Path, dir: &Path) -> Result<()> {
    let status =
        cargo_fuzz(root).arg("build").args(build_flags(dir)).status().context("starting cargo +nightly fuzz build")?;
    if !status.success() {
        bail!("building the fuzz targets failed ({status})");
    }
    Ok(())
}

/// The host triple, where cargo-fuzz puts the binaries (`<target dir>/<triple>/release/`).
fn host_triple() -> Result<String> {
    let out = Command::new("rustc").args(["+nightly", "-vV"]).output().context("running rustc +nightly -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV printed no host line")
}

/// What one libFuzzer job's log says.
#[derive(Default)]
struct JobLog {
    executions: u64,
    exec_per_sec: u64,
    /// The file libFuzzer wrote the failing input to.
    reproducer: Option<String>,
    tail: Vec<String>,
}

fn read_job_log(path: &Path) -> Result<JobLog> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut job = JobLog::default();
    for line in text.lines() {
        if let Some(v) = stat(line, "stat::number_of_executed_units:") {
            job.executions = v;
        }
        if let Some(v) = stat(line, "stat::average_exec_per_sec:") {
            job.exec_per_sec = v;
        }
        if let Some(path) = line.split("Test unit written to ").nth(1) {
            job.reproducer = Some(path.trim().to_owned());
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    job.tail = lines[lines.len().saturating_sub(60)..].iter().map(|l| (*l).to_owned()).collect();
    Ok(job)
}

/// Runs the target's binary (built by `build`) as `jobs` parallel libFuzzer jobs sharing one
/// working corpus, `runs / jobs` executions each. The binary is run directly rather than
/// through `cargo fuzz run` so its per-job logs (`fuzz-<n>.log`, written to the working
/// directory) land under the target directory, not in the source tree.
fn run_one(root: &Path, dir: &Path, t: &Target, runs: u64, jobs: u64) -> Result<Outcome> {
    let work = dir.join("runs").join(t.name);
    let corpus = dir.join("corpus").join(t.name);
    let artifacts = dir.join("artifacts").join(t.name);
    for d in [&work, &corpus, &artifacts] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    for n in 0..64 {
        let _ = fs::remove_file(work.join(format!("fuzz-{n}.log")));
    }
    let seeds = root.join(FUZZ_PARENT).join("fuzz/corpus").join(t.name);
    let binary = dir.join(host_triple()?).join("release").join(t.name);
    let parent_log = work.join("libfuzzer.log");
    let log = fs::File::create(&parent_log).with_context(|| format!("creating {}", parent_log.display()))?;

    println!(
        "\nfuzz: {} for {runs} executions in {jobs} jobs (cap {} s), logs in {}",
        t.name,
        t.max_seconds,
        work.display()
    );
    let started = Instant::now();
    let status = Command::new(&binary)
        .current_dir(&work)
        // The first corpus directory is where libFuzzer writes new inputs; the seeds only read.
        .arg(&corpus)
        .arg(&seeds)
        .arg(format!("-runs={}", runs.div_ceil(jobs)))
        .arg(format!("-jobs={jobs}"))
        .arg(format!("-workers={jobs}"))
        .arg(format!("-max_total_time={}", t.max_seconds))
        .arg(format!("-timeout={TIMEOUT_SECONDS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .stdout(log.try_clone().context("duplicating the log file")?)
        .stderr(log)
        .status()
        .with_context(|| format!("starting {}", binary.display()))?;
    let seconds = started.elapsed().as_secs_f64();

    let mut total = Outcome { executions: 0, exec_per_sec: 0, seconds };
    let mut failed = Vec::new();
    for n in 0..jobs {
        let path = work.join(format!("fuzz-{n}.log"));
        let job = read_job_log(&path)?;
        total.executions += job.executions;
        total.exec_per_sec += job.exec_per_sec;
        if job.reproducer.is_some() {
            failed.push((path, job));
        }
    }
    if status.success() && failed.is_empty() {
        return Ok(total);
    }

    eprintln!("\nfuzz: {} FAILED ({status})", t.name);
    let Some((path, job)) = failed.into_iter().next() else {
        bail!("fuzz target {} failed without writing a reproducer ({status}); see {}", t.name, parent_log.display());
    };
    eprintln!("fuzz: the last lines of {}:", path.display());
    for line in &job.tail {
        eprintln!("  {line}");
    }
    let reproducer = job.reproducer.unwrap_or_default();
    bail!(
        "fuzz target {} found a crash, hang or memory blow-up; reproducer: {reproducer}\n\
         replay it: {} {reproducer}\n\
         (or: cd {FUZZ_PARENT} && cargo +nightly fuzz run --sanitizer=none {} {reproducer})",
        t.name,
        binary.display(),
        t.name,
    )
}

/// The number after `key` in a libFuzzer `stat::` line.
fn stat(line: &str, key: &str) -> Option<u64> {
    line.strip_prefix(key)?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_stats() {
        assert_eq!(stat("stat::number_of_executed_units: 1000001", "stat::number_of_executed_units:"), Some(1_000_001));
        assert_eq!(stat("stat::average_exec_per_sec:     6410", "stat::average_exec_per_sec:"), Some(6410));
        assert_eq!(stat("#1024 pulse cov: 3", "stat::average_exec_per_sec:"), None);
    }

    #[test]
    fn every_target_has_a_seed_corpus() {
        let root = crate::ebpf::root();
        for t in TARGETS {
            let seeds = root.join(FUZZ_PARENT).join("fuzz/corpus").join(t.name);
            let n = fs::read_dir(&seeds).map(|d| d.count()).unwrap_or(0);
            assert!(n > 0, "{} has no seeds in {}", t.name, seeds.display());
            let bin = root.join(FUZZ_PARENT).join("fuzz/fuzz_targets").join(format!("{}.rs", t.name));
            assert!(bin.exists(), "{} is not a fuzz target: {} is missing", t.name, bin.display());
        }
    }
}
