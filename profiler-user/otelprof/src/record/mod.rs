//! `otelprof record`: the whole data path for one recording.
//!
//! Validate targets and output → load and attach BPF → (start the command) → read samples into
//! the aggregator until the duration passes, a signal arrives, or the targets are gone → drain →
//! symbolize → export → summary.

mod progress;
mod signals;
mod target;

use std::{
    collections::BTreeSet,
    fs::File,
    io::{BufWriter, Write},
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use profiler_common::{target as flags, Counter};
use prost::Message;
use symbolizer::Symbolizer;

pub use target::Target;

use otelprof_sampler::{
    aggregate::{Aggregator, Frame, ProfileType},
    process::ProcessTracker,
    session::{Session, SessionConfig},
    symbolize,
    tracer::{Tracer, TracerConfig},
    unwind::{deferred::CopyStats, own_shared_libraries, StoreStats},
};

use otelprof_collector::{
    exporter::{export_once, Client, RetryConfig},
    signal::Data,
};
use otelprof_encode::{
    otlp::{self, OtlpOptions},
    Format, Meta, Report,
};
use otelprof_sampler::unwind::UnwindMode;

use crate::cli::RecordArgs;

/// How long the end of a recording waits for tables still compiling (the samples waiting for
/// them unwind with them).
const FINISH_WAIT: Duration = Duration::from_secs(2);

/// Where the profile goes.
struct Outputs {
    /// The file, its format and the handle created up front.
    file: Option<(PathBuf, Format, File)>,
    /// With `--off-cpu` and a one-profile format (pprof, folded, SVG): the off-CPU profile's file.
    off_cpu_file: Option<(PathBuf, File)>,
    /// The `--export` URL and its client (made up front so a bad URL or TLS file fails
    /// before the recording).
    export: Option<(String, Client)>,
}

/// Checks the arguments a user can get wrong, before touching the kernel.
fn validate(args: &RecordArgs) -> Result<Outputs> {
    if args.frequency == 0 {
        bail!("bad frequency 0: -F takes samples per second per CPU, at least 1");
    }
    if let Some(d) = args.duration {
        if !(d.is_finite() && d > 0.0) {
            bail!("bad duration {d}: -d takes a positive number of seconds");
        }
    }
    if !args.ringbuf_size.is_power_of_two() || args.ringbuf_size < 4096 {
        bail!("bad --ringbuf-size {}: must be a power of two of at least 4096", args.ringbuf_size);
    }
    if args.include_idle && !args.all {
        bail!("--include-idle only makes sense with -a");
    }
    if !(args.off_cpu_threshold > 0.0 && args.off_cpu_threshold <= 1.0) {
        bail!("bad --off-cpu-threshold {}: a probability, more than 0 and at most 1", args.off_cpu_threshold);
    }
    let export = match &args.export {
        Some(url) => {
            let mut headers = std::collections::BTreeMap::new();
            for h in &args.export_headers {
                let Some((k, v)) = h.split_once('=') else { bail!("bad --export-header {h:?}: use NAME=VALUE") };
                headers.insert(k.trim().to_string(), v.trim().to_string());
            }
            let client = Client::from_url(url, &headers).map_err(|e| anyhow::anyhow!("{}", e.message))?;
            Some((url.clone(), client))
        }
        None => None,
    };
    let path = match (&args.output, &export) {
        (Some(p), _) => Some(p.clone()),
        (None, None) => Some(PathBuf::from("otelprof.pb.gz")),
        (None, Some(_)) => None,
    };
    let file = match path {
        Some(path) => {
            let Some(format) = args.format.or_else(|| Format::from_path(&path)) else {
                bail!(
                    "cannot tell the output format of {} from its extension; use .pb.gz, .folded, .svg, .otlp.pb or .otlp.json, or pass --format",
                    path.display()
                );
            };
            // Created now so an unwritable path fails before a long recording.
            let f = File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
            Some((path, format, f))
        }
        None => None,
    };
    let off_cpu_file = match &file {
        Some((path, format, _)) if args.off_cpu && !matches!(format, Format::OtlpProto | Format::OtlpJson) => {
            let p = otelprof_encode::off_cpu_path(path);
            let f = File::create(&p).with_context(|| format!("cannot write {}", p.display()))?;
            Some((p, f))
        }
        _ => None,
    };
    Ok(Outputs { file, off_cpu_file, export })
}

/// Runs a recording; the exit code is the command's for `-- CMD`, else 0.
pub fn run(args: RecordArgs) -> Result<ExitCode> {
    let target = Target::from_args(&args)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    // Inside the runtime: the gRPC client needs one to exist when it is built.
    rt.block_on(async {
        let outputs = validate(&args)?;
        record(args, target, outputs).await
    })
}

/// How the recording ended.
enum End {
    Duration,
    Signal(i32),
    TargetsExited,
    CommandExited(std::process::ExitStatus),
}

async fn record(args: RecordArgs, target: Target, outputs: Outputs) -> Result<ExitCode> {
    // The profile's time window opens before the programs attach and closes after the last
    // drain, on the clock sample timestamps are converted with, so every sample falls inside it.
    let tables = args.unwind != UnwindMode::Fp;
    let cache =
        (!args.no_unwind_cache).then(|| (args.unwind_cache.clone(), otelprof_sampler::unwind::DEFAULT_CACHE_MIB));
    // Tables the first samples will need, compiled before they are taken: the command's
    // executable and the system libraries (otelprof maps the same libc and ld.so).
    let mut preload = Vec::new();
    if tables {
        preload = own_shared_libraries();
        if let Target::Command { program, .. } = &target {
            preload.insert(0, program.clone());
        }
    }
    let mut session = Session::new(SessionConfig {
        tracer: TracerConfig {
            frequency_hz: args.frequency,
            filter_targets: !matches!(target, Target::All),
            sample_idle: args.include_idle,
            ringbuf_bytes: args.ringbuf_size,
            bpf_log: args.bpf_log,
            report_all_execs: false,
            dwarf_unwind: tables,
            off_cpu_threshold: args.off_cpu.then_some(args.off_cpu_threshold),
        },
        tables,
        cache,
        off_cpu_threshold: args.off_cpu_threshold,
        follow: None,
        preload,
    })?;
    let start_unix_ns = session.window_start();
    if args.bpf_stats {
        session.tracer.enable_stats()?;
    }
    let mut remaining: BTreeSet<u32> = BTreeSet::new();
    match &target {
        // Running targets: their tables and context readers before the first sample.
        Target::Pids(pids) => {
            for &pid in pids {
                session.observe(pid, flags::SAMPLE)?;
                remaining.insert(pid);
            }
        }
        Target::Command { .. } => session.observe(std::process::id(), flags::SPAWNER)?,
        Target::All => {}
    }
    session.start()?;
    let mut sigs = signals::listen().context("installing signal handlers")?;

    let mut child = match &target {
        Target::Command { program, args: cmd_args } => {
            let child = tokio::process::Command::new(program)
                .args(cmd_args)
                .spawn()
                .with_context(|| format!("cannot start {}", program.display()))?;
            Some(child)
        }
        _ => None,
    };
    let child_pid = child.as_ref().and_then(|c| c.id());
    // Targets that exited between validation and attach would never send an exit event (a
    // zombie whose parent has not reaped it yet included: before this, recording it hung).
    remaining.retain(|&pid| target::running(pid));
    tracing::info!(
        "recording {} at {} Hz{} on {} CPUs{}",
        describe(&target, child_pid),
        args.frequency,
        if args.off_cpu { format!(" and off CPU (threshold {})", args.off_cpu_threshold) } else { String::new() },
        session.tracer.cpus(),
        args.duration.map(|d| format!(" for {d}s")).unwrap_or_default()
    );
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d));
    let mut progress = progress::Progress::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));

    let end = if matches!(target, Target::Pids(_)) && remaining.is_empty() {
        End::TargetsExited
    } else {
        loop {
            tokio::select! {
                r = session.read() => {
                    r?;
                    for pid in session.exits() {
                        remaining.remove(pid);
                    }
                    if matches!(target, Target::Pids(_)) && remaining.is_empty() {
                        break End::TargetsExited;
                    }
                }
                Some(sig) = sigs.recv() => {
                    match child_pid {
                        Some(pid) if !sig.from_terminal => signals::forward(pid, sig.signal),
                        Some(_) => {}
                        None if signals::stops_recording(sig.signal) => break End::Signal(sig.signal),
                        None => {}
                    }
                }
                status = async { child.as_mut().expect("guarded").wait().await }, if child.is_some() => {
                    break End::CommandExited(status.context("waiting for the command")?);
                }
                _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                    break End::Duration;
                }
                _ = tick.tick() => {
                    session.tick()?;
                    for pid in session.exits() {
                        remaining.remove(pid);
                    }
                    progress.update(session.agg.total, session.tracer.counter(Counter::LostSamples), session.tracker.len());
                    if matches!(target, Target::Pids(_)) && remaining.is_empty() {
                        break End::TargetsExited;
                    }
                }
            }
        }
    };
    // Everything the kernel wrote before we stop belongs to the recording; processes read just
    // now (first seen in the last records) get their tables, so their stack copies can still
    // be unwound.
    session.finish(FINISH_WAIT);
    progress.finish();
    let duration_ns = session.clock.now_unix_ns().saturating_sub(start_unix_ns);
    let tracer = &session.tracer;
    let (lost_samples, lost_events, targets_full, unknown_pcs, copies_skipped) = (
        tracer.counter(Counter::LostSamples),
        tracer.counter(Counter::LostEvents),
        tracer.counter(Counter::TargetsFull),
        tracer.counter(Counter::UnknownPcs),
        tracer.counter(Counter::CopiesSkipped),
    );
    let off_cpu_counts = OffCpuCounts::read(tracer);
    let bpf_stats = args.bpf_stats.then(|| tracer.program_stats());
    let bad_records = session.bad_records();
    let Session { tracer, agg, tracker, view, .. } = session;
    drop(tracer); // detaches the programs (and drops the reader with the session)
                  // A duration bounds the whole run: a command still running then is stopped, and its status
                  // is still ours.
    let end = match (end, child.as_mut()) {
        (End::Duration, Some(c)) => {
            if let Some(pid) = c.id() {
                signals::forward(pid, libc::SIGTERM);
            }
            End::CommandExited(c.wait().await.context("waiting for the command")?)
        }
        (end, _) => end,
    };

    let mut symbolizer = Symbolizer::new(Default::default());
    let processes = tracker.snapshot(agg.pids(), agg.file_ids());
    let symbols = symbolize::symbolize(&agg, &processes, &mut symbolizer);
    let report = Report {
        agg: &agg,
        processes: &processes,
        symbols: &symbols,
        meta: {
            let (start_unix_ns, duration_ns) = agg.window(start_unix_ns, start_unix_ns + duration_ns);
            Meta { frequency_hz: args.frequency, start_unix_ns, duration_ns }
        },
        profile: ProfileType::Cpu,
    };
    let otlp = OtlpOptions {
        symbolize: args.symbolize,
        command_line: !args.no_command_line,
        resource: host_attributes(),
        ..Default::default()
    };
    let lost = lost_samples;
    // Bad records: the kernel wrote something this build cannot decode (counted, skipped).
    eprintln!(
        "otelprof: {} samples, {} lost, {} bad records, {} processes, {} threads, {:.1}% of {} frames symbolized",
        agg.total,
        lost,
        bad_records,
        agg.pids().len(),
        agg.thread_names.len(),
        symbols.stats.percent(),
        symbols.stats.frames,
    );
    if agg.ctx_status.iter().skip(1).any(|&n| n > 0) {
        eprintln!("otelprof: {}", link_summary(&agg));
    }
    if let Some(store) = &view.tables {
        eprintln!(
            "otelprof: {}",
            unwind_summary(&agg.unwind_status, &store.stats, &view.deferred.stats, copies_skipped, unknown_pcs)
        );
    }
    if let Some(line) = jit_summary(&agg, &tracker) {
        eprintln!("otelprof: {line}");
    }
    if args.off_cpu {
        eprintln!("otelprof: {}", off_cpu_summary(&agg, &off_cpu_counts, args.off_cpu_threshold));
    }
    for s in bpf_stats.iter().flatten() {
        eprintln!("otelprof: bpf {}: {} runs, {:.0} ns/run", s.name, s.runs, s.ns_per_run());
    }
    if let Some((path, format, file)) = outputs.file {
        let mut w = BufWriter::new(file);
        format.encoder(&otlp).write(&report, &mut w)?;
        w.flush().with_context(|| format!("writing {}", path.display()))?;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        eprintln!("otelprof: wrote {} ({}, {size} bytes)", path.display(), format.name());
        if let Some((off_path, off_file)) = outputs.off_cpu_file {
            let mut w = BufWriter::new(off_file);
            format.encoder(&otlp).write(&report.with_profile(ProfileType::OffCpu), &mut w)?;
            w.flush().with_context(|| format!("writing {}", off_path.display()))?;
            let size = std::fs::metadata(&off_path).map(|m| m.len()).unwrap_or(0);
            eprintln!("otelprof: wrote {} ({} off-CPU, {size} bytes)", off_path.display(), format.name());
        }
    }
    let mut export_failed = false;
    if let Some((endpoint, client)) = outputs.export {
        let req = otlp::build_valid(&report, &otlp)?;
        let retry = RetryConfig { max_elapsed_time: Duration::from_secs(30), ..RetryConfig::default() };
        let profiles = req.resource_profiles.len();
        match export_once(&client, Data::Profiles(req.clone()), &retry).await {
            Ok(sent) => eprintln!(
                "otelprof: exported {profiles} profiles to {endpoint}{}",
                if sent.rejected > 0 {
                    format!(" ({} rejected: {})", sent.rejected, sent.message)
                } else {
                    String::new()
                }
            ),
            Err(e) => {
                // Nothing is lost: the request goes to a file the user can send later.
                let keep = PathBuf::from(format!("otelprof-unsent-{}.otlp.pb", start_unix_ns / 1_000_000_000));
                let saved = std::fs::write(&keep, otlp::to_profiles_data(req).encode_to_vec());
                eprintln!(
                    "otelprof: export to {endpoint} failed: {e}; {}",
                    match saved {
                        Ok(()) => format!("the profile is kept in {}", keep.display()),
                        Err(w) => format!("and keeping it in {} failed too: {w}", keep.display()),
                    }
                );
                export_failed = true;
            }
        }
    }
    if lost_events > 0 || targets_full > 0 {
        eprintln!(
            "otelprof: also lost {} process events, {} processes not followed (target map full)",
            lost_events, targets_full
        );
    }
    if off_cpu_counts.lost + off_cpu_counts.map_full > 0 {
        eprintln!(
            "otelprof: off-CPU waits were lost ({} ring buffer full, {} wait map full); try a larger --ringbuf-size \
             or a lower --off-cpu-threshold",
            off_cpu_counts.lost, off_cpu_counts.map_full
        );
    }
    if lost > 0 {
        eprintln!(
            "otelprof: samples were lost because the ring buffer was full; try a larger --ringbuf-size or a lower -F"
        );
    }
    Ok(match end {
        _ if export_failed => ExitCode::from(1),
        End::CommandExited(status) => exit_code(status),
        End::Signal(sig) => {
            tracing::debug!("stopped by signal {sig}");
            ExitCode::SUCCESS
        }
        End::Duration | End::TargetsExited => ExitCode::SUCCESS,
    })
}

/// The host's attributes for every resource, as the agent's `resourcedetection` processor
/// (system detector) sets them; none when the host says nothing.
fn host_attributes() -> Vec<opentelemetry_proto::tonic::common::v1::KeyValue> {
    use otelprof_collector::processor::resourcedetection::{system::SystemDetector, Detector};
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    SystemDetector::profile_defaults().detect(deadline).unwrap_or_else(|e| {
        tracing::warn!("{e}");
        Vec::new()
    })
}

/// What the kernel side counted about off-CPU waits.
#[derive(Clone, Copy, Debug, Default)]
pub struct OffCpuCounts {
    /// Switch-outs recorded (their stacks stored).
    pub waits: u64,
    /// Lost at switch-in: the ring buffer was full.
    pub lost: u64,
    /// Not recorded at switch-out: the wait map was full.
    pub map_full: u64,
}

impl OffCpuCounts {
    pub fn read(tracer: &Tracer) -> Self {
        Self {
            waits: tracer.counter(Counter::OffCpuWaits),
            lost: tracer.counter(Counter::OffCpuLost),
            map_full: tracer.counter(Counter::OffCpuMapFull),
        }
    }
}

/// The off-CPU line of the summary. Waits recorded but neither received nor lost were still
/// going on when profiling stopped (a wait is reported when it ends).
pub fn off_cpu_summary(agg: &Aggregator, c: &OffCpuCounts, threshold: f64) -> String {
    let pending = c.waits.saturating_sub(agg.off_cpu_waits + c.lost);
    format!(
        "off-CPU: {} waits, {:.3} s off CPU (threshold {threshold}, values weighted by 1/threshold); {} lost (ring \
         buffer full), {} not recorded (wait map full), {} still waiting at the end",
        agg.off_cpu_waits,
        agg.off_cpu_ns as f64 / 1e9,
        c.lost,
        c.map_full,
        pending,
    )
}

/// "unwind: 99.2% of N stacks complete (...)"
/// The trace-link line of the summary: how many samples carried a span.
pub fn link_summary(agg: &Aggregator) -> String {
    use profiler_common::ctx_status as c;
    format!(
        "trace links: {} of {} samples linked to a span ({} with a context record, {} without an active span, \
         {} records being written, {} unreadable)",
        agg.linked,
        agg.total,
        agg.ctx_status[c::VALID as usize],
        agg.ctx_status[c::EMPTY as usize],
        agg.ctx_status[c::INVALID as usize],
        agg.ctx_status[c::FAULT as usize],
    )
}

/// How JIT frames were named: `None` when the recording had none.
pub fn jit_summary(agg: &Aggregator, tracker: &ProcessTracker) -> Option<String> {
    let (mut named, mut total) = (0u64, 0u64);
    for (_, f) in agg.frames.iter() {
        if let Frame::Jit { name, .. } = f {
            total += 1;
            named += name.is_some() as u64;
        }
    }
    let m = &tracker.perf_maps;
    (total > 0 || m.entries > 0).then(|| {
        format!(
            "JIT: {named} of {total} distinct JIT frames named from the perf maps of {} processes \
             ({} entries read, {} malformed lines skipped, {} entries over the bound dropped)",
            tracker.perf_map_processes, m.entries, m.malformed, m.dropped
        )
    })
}

pub fn unwind_summary(
    status: &[u64; 8],
    store: &StoreStats,
    copies: &CopyStats,
    copies_skipped: u64,
    unknown_pcs: u64,
) -> String {
    use profiler_common::unwind_status as u;
    let total: u64 = status.iter().sum();
    let pct = |n: u64| if total == 0 { 0.0 } else { 100.0 * n as f64 / total as f64 };
    format!(
        "unwind: {:.1}% of {total} user stacks complete with tables ({} unwound here from {} stack copies, \
         {} not copied: ring buffer half full); \
         {} fell back to frame pointers, {} truncated, \
         {} read faults, {} without tables, {} without user registers; tables: {} files, {} rows, {} KiB, peak {} KiB, \
         {} released, {} files without, {} compiled in {} ms, {} from the cache; {} new-code reports",
        pct(status[u::COMPLETE as usize] + status[u::COPY_COMPLETE as usize]),
        status[u::COPY_COMPLETE as usize],
        copies.received,
        copies_skipped,
        status[u::FP_FALLBACK as usize],
        status[u::TRUNCATED as usize],
        status[u::READ_FAULT as usize],
        status[u::NO_TABLES as usize],
        status[u::NO_USER_REGS as usize],
        store.files,
        store.rows,
        store.bytes() / 1024,
        store.peak_bytes() / 1024,
        store.released,
        store.failed + store.full,
        store.compiled,
        store.compile_ms,
        store.cache_hits,
        unknown_pcs,
    )
}

fn describe(target: &Target, child: Option<u32>) -> String {
    match target {
        Target::Pids(p) => format!("PIDs {p:?}"),
        Target::All => "all processes".into(),
        Target::Command { program, .. } => {
            format!("{} (PID {})", program.display(), child.unwrap_or(0))
        }
    }
}

/// The command's exit status as ours: its code, or 128 + signal like a shell.
fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    if let Some(code) = status.code() {
        ExitCode::from(code as u8)
    } else if let Some(sig) = status.signal() {
        ExitCode::from(128u8.wrapping_add(sig as u8))
    } else {
        ExitCode::FAILURE
    }
}
