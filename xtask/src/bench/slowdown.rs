//! Workload slowdown: the same fixed work alone and under each profiler, in alternating rounds.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::{Plan, Tools};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// otelprof record at a frequency, with compiled tables (true) or frame pointers only.
    Otelprof(u64, bool),
    PerfFp,
    PerfDwarf,
    /// otelprof record --off-cpu (threshold 1, tables) at 99 Hz: system-wide (`None`) or with one
    /// target process, so that most switches are of threads that are not targets.
    OffCpu(Option<u32>),
}

impl Mode {
    pub fn label(self) -> String {
        match self {
            Mode::Otelprof(hz, false) => format!("otelprof record -a -F {hz} --unwind fp"),
            Mode::Otelprof(hz, true) => format!("otelprof record -a -F {hz} --unwind auto (.eh_frame tables)"),
            Mode::PerfFp => "perf record -F 99 -g -a".into(),
            Mode::PerfDwarf => "perf record -F 99 --call-graph dwarf -a".into(),
            Mode::OffCpu(None) => "otelprof record -a --off-cpu".into(),
            Mode::OffCpu(Some(_)) => "otelprof record -p PID --off-cpu (another process)".into(),
        }
    }
}

/// One BPF program's cost, from `--bpf-stats`.
#[derive(Clone, Debug)]
pub struct BpfCost {
    pub program: String,
    pub runs: u64,
    pub ns_per_run: f64,
}

pub struct Slowdown {
    pub iterations: u64,
    pub alone_secs: Vec<f64>,
    /// Every run alone (two per round), for the noise figure.
    pub alone_runs: Vec<f64>,
    /// (mode, per-round ratios to alone)
    pub ratios: Vec<(Mode, Vec<f64>)>,
    /// From the last 99 Hz otelprof run.
    pub bpf: Vec<BpfCost>,
    pub samples_99hz: u64,
}

/// BPF cost per sample by unwinding mode and stack depth.
pub struct DepthCost {
    pub tables: bool,
    pub depth: u32,
    pub sample_ns_per_run: f64,
    pub runs: u64,
}

/// The workload at stack depth 10 and 100 for a few seconds, under each unwinding mode.
pub fn bpf_cost_by_depth(plan: &Plan, tools: &Tools) -> Result<Vec<DepthCost>> {
    let mut out = Vec::new();
    let secs = if plan.smoke { 1.0 } else { 4.0 };
    for depth in [10u32, 100] {
        for tables in [false, true] {
            out.push(depth_cost(tools, tables, depth, secs)?);
        }
    }
    Ok(out)
}

/// `sample`'s cost while the workload runs at `depth` (about `secs` seconds), the workload alone
/// sampled (`otelprof record -F 99 -p PID`) at the highest priority, so that the ticks land on it
/// even when other work (builds) shares the machine and the caches are the workload's, as on a
/// machine where it runs alone. Measured from the program's run-time statistics over that window
/// only (the `sample` program's `/proc/PID/fdinfo`), not over otelprof's start and end, when the
/// ticks are other processes' (which return at once, but from cold caches).
fn depth_cost(tools: &Tools, tables: bool, depth: u32, secs: f64) -> Result<DepthCost> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).to_string();
    let mut work = Command::new("nice")
        .args(["-n", "-20"])
        .arg(&tools.reference)
        .args(["work", "1000000000", &threads, &depth.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .context("starting the workload")?;
    let pid = work.id().to_string();
    let result = (|| {
        let mut record = Command::new(&tools.otelprof)
            .args(["record", "-F", "99", "--bpf-stats", "--unwind", if tables { "auto" } else { "fp" }, "-p", &pid])
            .arg("-o")
            .arg(tools.root.join("target/bench/otelprof-depth.pb.gz"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting otelprof record -p")?;
        let stderr = record.stderr.take().expect("piped");
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("recording ") {
                    let _ = ready_tx.send(());
                }
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = record.kill();
            let _ = record.wait();
            bail!("otelprof did not start");
        }
        // Tables installed, first samples past.
        std::thread::sleep(Duration::from_secs(1));
        let before = sample_stats(record.id())?;
        std::thread::sleep(Duration::from_secs_f64(secs));
        let after = sample_stats(record.id())?;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(record.id() as i32, libc::SIGINT) };
        record.wait()?;
        Ok((after.0 - before.0, after.1 - before.1))
    })();
    let _ = work.kill();
    let _ = work.wait();
    let (ns, runs) = result?;
    Ok(DepthCost { tables, depth, sample_ns_per_run: ns as f64 / runs.max(1) as f64, runs })
}

/// (run_time_ns, run_cnt) of the perf_event program (`sample`) process `pid` holds.
fn sample_stats(pid: u32) -> Result<(u64, u64)> {
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else { continue };
        let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok());
        // BPF_PROG_TYPE_PERF_EVENT
        if field("prog_type:") == Some(7) {
            return Ok((field("run_time_ns:").unwrap_or(0), field("run_cnt:").unwrap_or(0)));
        }
    }
    bail!("no perf_event program among otelprof's file descriptors")
}

/// `cargo xtask bench --only depth [--baseline OTELPROF]`: [`bpf_cost_by_depth`] at more depths,
/// `plan.rounds` times (the order of the binaries alternating), printed as medians.
pub fn depth_only(plan: &Plan, tools: &Tools) -> Result<String> {
    const DEPTHS: [u32; 3] = [1, 10, 30];
    let secs = if plan.smoke { 1.0 } else { plan.seconds };
    let base = plan.baseline.clone().map(|otelprof| Tools {
        root: tools.root.clone(),
        otelprof,
        reference: tools.reference.clone(),
        perf: None,
    });
    let mut bins: Vec<(String, &Tools)> = vec![("this build".into(), tools)];
    if let Some(b) = &base {
        bins.push((b.otelprof.display().to_string(), b));
    }
    // (binary, tables, depth) -> ns per run of each round
    let mut ns: std::collections::BTreeMap<(usize, bool, u32), Vec<f64>> = Default::default();
    for round in 0..plan.rounds {
        for depth in DEPTHS {
            for tables in [false, true] {
                for k in 0..bins.len() {
                    let b = (k + round) % bins.len();
                    let c = depth_cost(bins[b].1, tables, depth, secs)?;
                    eprintln!(
                        "xtask bench: round {}: {} {} depth {depth}: {:.0} ns/run ({} runs)",
                        round + 1,
                        bins[b].0,
                        if tables { "tables" } else { "fp" },
                        c.sample_ns_per_run,
                        c.runs,
                    );
                    ns.entry((b, tables, depth)).or_default().push(c.sample_ns_per_run);
                }
            }
        }
    }
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "## BPF cost by stack depth\n\n`sample` ns per run, median of {} rounds of {secs} s (`nice -n -20 reference work`, \
         `otelprof record -F 99 -p PID`, run time from the program's fdinfo over the window).\n",
        plan.rounds
    );
    let _ = writeln!(o, "| binary | unwinding | {} |", DEPTHS.map(|d| format!("depth {d}")).join(" | "));
    let _ = writeln!(o, "| --- | --- |{}", " --- |".repeat(DEPTHS.len()));
    for (b, (name, _)) in bins.iter().enumerate() {
        for tables in [false, true] {
            let cells = DEPTHS.map(|d| format!("{:.0}", median(ns.get(&(b, tables, d)).map_or(&[][..], |v| v))));
            let _ = writeln!(o, "| {name} | {} | {} |", if tables { "tables" } else { "fp" }, cells.join(" | "));
        }
    }
    print!("{o}");
    Ok(o)
}

fn workload_args(tools: &Tools, iterations: u64, depth: u32) -> Result<f64> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).to_string();
    let out = Command::new(&tools.reference)
        .args(["work", &iterations.to_string(), &threads, &depth.to_string()])
        .output()
        .context("running the workload")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .strip_prefix("elapsed ")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("workload printed {text:?}"))
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// The workload at its default depth (32) on every CPU.
fn workload(tools: &Tools, iterations: u64) -> Result<f64> {
    workload_args(tools, iterations, 32)
}

pub struct Running {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

pub fn start(mode: Mode, tools: &Tools) -> Result<Option<Running>> {
    let tmp = tools.root.join("target/bench");
    let mut cmd = match mode {
        Mode::Otelprof(hz, tables) => {
            let mut c = Command::new(&tools.otelprof);
            c.args([
                "record",
                "-a",
                "-F",
                &hz.to_string(),
                "--bpf-stats",
                "--unwind",
                if tables { "auto" } else { "fp" },
            ])
            .arg("-o")
            .arg(tmp.join("otelprof.pb.gz"));
            c
        }
        Mode::OffCpu(target) => {
            let mut c = Command::new(&tools.otelprof);
            c.args(["record", "-F", "99", "--bpf-stats", "--off-cpu"]);
            match target {
                Some(pid) => c.args(["-p", &pid.to_string()]),
                None => c.arg("-a"),
            };
            c.arg("-o").arg(tmp.join("otelprof-offcpu.pb.gz"));
            c
        }
        Mode::PerfFp | Mode::PerfDwarf => {
            let Some(perf) = &tools.perf else { return Ok(None) };
            let mut c = Command::new(perf);
            c.args(["record", "-q", "-F", "99", "-a", "-o"]).arg(tmp.join("perf.data"));
            if mode == Mode::PerfFp {
                c.arg("-g");
            } else {
                c.args(["--call-graph", "dwarf"]);
            }
            c
        }
    };
    // otelprof says when its programs are attached; perf prints nothing on start.
    let ready = match mode {
        Mode::Otelprof(..) | Mode::OffCpu(_) => Some("recording "),
        _ => None,
    };
    spawn(&mut cmd, &mode.label(), ready).map(Some)
}

/// Starts a profiler with its stderr collected, and returns once it is recording: when a line of
/// its stderr contains `ready` (within 30 s), or with `None` (perf prints nothing on start) after
/// 1.5 s, time for it to open its events.
pub fn spawn(cmd: &mut Command, label: &str, ready: Option<&'static str>) -> Result<Running> {
    let mut child =
        cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().with_context(|| format!("starting {label}"))?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = mpsc::channel();
    let stderr = child.stderr.take().context("stderr is piped")?;
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if ready.is_some_and(|r| line.contains(r)) {
                let _ = ready_tx.send(());
            }
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
    if ready.is_some() {
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{label} did not start: {:?}", lines.lock().unwrap_or_else(|e| e.into_inner()));
        }
    } else {
        std::thread::sleep(Duration::from_millis(1500));
    }
    Ok(Running { child, stderr: lines })
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

/// What a profiler used over its whole life, from wait4(2): its own and its reaped children's.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    /// Peak resident set size (`ru_maxrss`), KiB.
    pub peak_rss_kib: i64,
}

pub fn stop(r: Running) -> Result<Vec<String>> {
    stop_with(r, libc::SIGINT).map(|(lines, _)| lines)
}

/// Sends `signal`, waits for the profiler to exit, and returns its stderr lines and resource use.
/// Exiting with 0, or killed by `signal` itself, is a normal stop.
pub fn stop_with(r: Running, signal: i32) -> Result<(Vec<String>, Usage)> {
    let pid = r.pid();
    // SAFETY: kill(2) and wait4(2) on our own child, which nothing else waits for; rusage is
    // plain data.
    let (waited, status, usage) = unsafe {
        libc::kill(pid, signal);
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        let waited = libc::wait4(pid, &mut status, 0, &mut usage);
        (waited, status, usage)
    };
    if waited != pid {
        bail!("waiting for the profiler: {}", std::io::Error::last_os_error());
    }
    // perf re-raises SIGINT once its data is written, as shell tools do: a normal stop.
    let normal = (libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
        || (libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == signal);
    // The reader thread ends with the pipe.
    std::thread::sleep(Duration::from_millis(50));
    let lines = std::mem::take(&mut *r.stderr.lock().unwrap_or_else(|e| e.into_inner()));
    if !normal {
        bail!("profiler exited with status {status:#x}: {}", lines.join("\n"));
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((lines, Usage { cpu_seconds: secs(usage.ru_utime) + secs(usage.ru_stime), peak_rss_kib: usage.ru_maxrss }))
}

pub fn parse_bpf(lines: &[String]) -> (Vec<BpfCost>, u64) {
    let mut costs = Vec::new();
    let mut samples = 0;
    for l in lines {
        if let Some(rest) = l.strip_prefix("otelprof: bpf ") {
            // "sample: 1000 runs, 2454 ns/run"
            let w: Vec<&str> = rest.split([' ', ':', ',']).filter(|w| !w.is_empty()).collect();
            if w.len() >= 4 {
                costs.push(BpfCost {
                    program: w[0].into(),
                    runs: w[1].parse().unwrap_or(0),
                    ns_per_run: w[3].parse().unwrap_or(0.0),
                });
            }
        } else if let Some(rest) = l.strip_prefix("otelprof: ") {
            if let Some(n) = rest.split(" samples,").next().and_then(|n| n.parse().ok()) {
                samples = n;
            }
        }
    }
    (costs, samples)
}

pub fn run(plan: &Plan, tools: &Tools) -> Result<Slowdown> {
    // Calibrate the fixed work to about `plan.seconds` alone.
    let probe = 50_000u64;
    let t = workload(tools, probe)?;
    let iterations = ((probe as f64 * plan.seconds / t.max(1e-3)) as u64).max(probe);
    let modes = [
        Mode::Otelprof(19, false),
        Mode::Otelprof(19, true),
        Mode::Otelprof(99, false),
        Mode::Otelprof(99, true),
        Mode::PerfFp,
        Mode::PerfDwarf,
    ];
    let mut ratios: Vec<(Mode, Vec<f64>)> = modes.iter().map(|m| (*m, Vec::new())).collect();
    let mut alone_secs = Vec::new();
    let mut alone_runs = Vec::new();
    let mut bpf = Vec::new();
    let mut samples_99hz = 0;
    for round in 0..plan.rounds {
        // Alone first and last, profilers in a rotating order between.
        let alone_a = workload(tools, iterations)?;
        let mut order: Vec<usize> = (0..modes.len()).collect();
        order.rotate_left(round % modes.len());
        let mut times = vec![f64::NAN; modes.len()];
        for i in order {
            let mode = modes[i];
            let Some(running) = start(mode, tools)? else { continue };
            let t = workload(tools, iterations)?;
            let lines = stop(running)?;
            if mode == Mode::Otelprof(99, false) {
                (bpf, samples_99hz) = parse_bpf(&lines);
            }
            times[i] = t;
        }
        let alone_b = workload(tools, iterations)?;
        let alone = (alone_a + alone_b) / 2.0;
        alone_runs.extend([alone_a, alone_b]);
        alone_secs.push(alone);
        for (i, t) in times.iter().enumerate() {
            if t.is_finite() {
                ratios[i].1.push(t / alone);
            }
        }
        eprintln!(
            "xtask bench: round {}: alone {alone:.2}s; {}",
            round + 1,
            modes
                .iter()
                .zip(&times)
                .map(|(m, t)| format!("{} {:.3}×", m.label(), t / alone))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(Slowdown { iterations, alone_secs, alone_runs, ratios, bpf, samples_99hz })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_bpf_lines() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let lines = vec![
            "otelprof: 1960 samples, 0 lost, 3 processes, 5 threads, 99.0% of 80 frames symbolized".to_string(),
            "otelprof: bpf sample: 2000 runs, 2454 ns/run".to_string(),
        ];
        let (costs, samples) = parse_bpf(&lines);
        assert_eq!(samples, 1960);
        assert_eq!(costs.len(), 1);
        assert_eq!((costs[0].program.as_str(), costs[0].runs, costs[0].ns_per_run), ("sample", 2000, 2454.0));
    }
}
