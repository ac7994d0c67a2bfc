//! The agent's main loop: sample, report every interval, export, until SIGTERM.

use std::{
    path::Path,
    process::ExitCode,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use anyhow::{Context, Result};
use profiler_common::{target as flags, Counter};
use tokio::signal::unix::{signal, SignalKind};

use super::{
    config::{self, AgentConfig},
    metrics::{self, AgentMetrics},
    reporter::{Job, ReportJob, Reporter},
};
use otelprof_encode::{otlp::OtlpOptions, Meta};
use otelprof_sampler::{
    session::{Interval, Session, SessionConfig},
    tracer::TracerConfig,
};
use otelprof_sampler::{targets::Selector, unwind::UnwindMode};

use crate::send::{
    queue::{self, ExportQueue},
    Client, ExportStats,
};
use otelprof_collector::health::{Health, Liveness};

/// `otelprof agent --config FILE`. A bad config exits with 2 and names the key.
pub fn run(path: &Path) -> Result<ExitCode> {
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("otelprof: config error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(agent(cfg))
}

/// A closed interval as the reporting thread's job.
fn report_job(i: Interval, frequency_hz: u64) -> Job {
    Job::Report(Box::new(ReportJob {
        processes: i.processes,
        meta: Meta { frequency_hz, start_unix_ns: i.start_unix_ns, duration_ns: i.duration_ns },
        agg: i.agg,
    }))
}

/// The unwind table store's counters into the metrics.
fn publish_tables(session: &Session, metrics: &AgentMetrics) {
    if let Some(store) = session.view.tables.as_ref() {
        metrics.unwind_table_bytes.store(store.stats.bytes(), Ordering::Relaxed);
        metrics.unwind_table_files.store(store.stats.files, Ordering::Relaxed);
        metrics.unwind_processes.store(store.stats.processes, Ordering::Relaxed);
        metrics.unwind_tables_released.store(store.stats.released, Ordering::Relaxed);
        metrics.unwind_tables_built[0].store(store.stats.compiled, Ordering::Relaxed);
        metrics.unwind_tables_built[1].store(store.stats.cache_hits, Ordering::Relaxed);
        metrics.unwind_compile_ms.store(store.stats.compile_ms, Ordering::Relaxed);
    }
}

fn describe(t: &super::config::Targets) -> String {
    if t.is_empty() {
        return "every process".into();
    }
    let mut parts = Vec::new();
    for (what, list) in [("executables", &t.executables), ("containers", &t.containers), ("cgroups", &t.cgroups)] {
        if !list.is_empty() {
            parts.push(format!("{what} {}", list.join(", ")));
        }
    }
    if !t.pids.is_empty() {
        parts.push(format!("PIDs {:?}", t.pids));
    }
    parts.join("; ")
}

async fn agent(cfg: AgentConfig) -> Result<ExitCode> {
    let p = &cfg.profiling;
    let selector = Selector::new(p.targets.clone());
    let tables = p.unwind != UnwindMode::Fp;
    let cache = (tables && p.unwind_cache.enabled)
        .then(|| otelprof_sampler::unwind::open_cache(&p.unwind_cache.dir, p.unwind_cache.max_size_mib))
        .flatten();
    let initial = selector.initial();
    let mut session = Session::new(SessionConfig {
        tracer: TracerConfig {
            frequency_hz: p.frequency,
            filter_targets: !p.targets.is_empty(),
            sample_idle: false,
            ringbuf_bytes: p.ringbuf_size,
            bpf_log: false,
            report_all_execs: p.targets.needs_exec_events(),
            dwarf_unwind: tables,
            off_cpu_threshold: p.off_cpu.enabled.then_some(p.off_cpu.threshold),
        },
        tables,
        cache,
        off_cpu_threshold: p.off_cpu.threshold,
        follow: p.targets.needs_exec_events().then_some(selector),
        preload: Vec::new(),
    })?;
    // Targets running at start: their tables and context readers before their first sample.
    for &pid in &initial {
        session.observe(pid, flags::SAMPLE | flags::FOLLOW)?;
    }

    // Every component that works on its own reports here; /healthz and /readyz follow them all.
    let health = Health::new();
    let mut queues = Vec::new();
    let mut senders = Vec::new();
    let mut stats = Vec::new();
    for e in &cfg.exporters {
        let s = Arc::new(ExportStats::default());
        let client = Client::new(&e.endpoint).with_context(|| format!("exporter {}", e.name))?;
        let q = ExportQueue::new(e.endpoint.sending_queue.queue_size as usize, s.clone());
        let alive = health.register(format!("exporter/{}", e.name), Liveness::Running);
        senders.push(tokio::spawn(alive.watch_task(queue::run_sender(
            q.clone(),
            client,
            e.endpoint.retry_on_failure.clone(),
            s.clone(),
        ))));
        queues.push(q);
        stats.push((e.name.clone(), s));
    }
    let metrics = Arc::new(AgentMetrics { exporters: stats, ..Default::default() });
    if let Some(addr) = cfg.telemetry.metrics_address {
        let listener = metrics::bind(addr).await.with_context(|| format!("serving metrics on {addr}"))?;
        tokio::spawn(metrics::serve(listener, metrics.clone(), health.clone()));
    }
    let otlp = OtlpOptions { symbolize: p.symbolize, command_line: p.command_line };
    let reporter = Reporter::spawn(
        otlp,
        p.symbol_cache_entries,
        queues.clone(),
        metrics.clone(),
        health.register("reporter", Liveness::Running),
    )
    .context("starting the reporter")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    session.start()?;
    let mut report_tick = tokio::time::interval_at(tokio::time::Instant::now() + p.interval, p.interval);
    let mut log_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + cfg.telemetry.log_interval, cfg.telemetry.log_interval);
    // As often as `record` polls: a context a new process publishes is then read within about
    // its 200 ms back-off floor, not up to a second later, after its samples were reported.
    let mut beat = tokio::time::interval(Duration::from_millis(250));
    // The loop turns at least every 250 ms (`beat`); silence for several report intervals
    // means it is stuck.
    let sampling =
        health.register("sampling", Liveness::Heartbeat { within: p.interval.max(Duration::from_secs(10)) * 3 });
    metrics.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        "agent profiling {} at {} Hz{} on {} CPUs, reporting every {:?} to {}",
        describe(&p.targets),
        p.frequency,
        if p.off_cpu.enabled { format!(" and off CPU (threshold {})", p.off_cpu.threshold) } else { String::new() },
        session.tracer.cpus(),
        p.interval,
        cfg.exporters.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ")
    );

    // Tallies of closed intervals; the metrics add the open interval's.
    let mut tallies = metrics::Tallies::default();
    loop {
        tokio::select! {
            r = session.read() => {
                r.context("reading the ring buffer")?;
                publish_tables(&session, &metrics);
                tallies.publish(&session.agg, &metrics);
                metrics.bad_records.store(session.bad_records(), Ordering::Relaxed);
            }
            _ = report_tick.tick() => {
                let interval = session.close_interval();
                if let Some(i) = interval {
                    tallies.close(&i.agg);
                    reporter.send(report_job(i, p.frequency));
                }
                let evicted = session.after_report(p.max_processes);
                if !evicted.is_empty() {
                    reporter.send(Job::Evict(evicted));
                }
                metrics.processes.store(session.tracker.len() as u64, Ordering::Relaxed);
                let m = &session.tracker.perf_maps;
                for (slot, v) in metrics.perf_map_lines.iter().zip([m.entries, m.malformed, m.dropped]) {
                    slot.store(v, Ordering::Relaxed);
                }
            }
            _ = beat.tick() => {
                sampling.beat();
                session.tick()?;
                let t = &session.tracer;
                metrics.lost_samples.store(t.counter(Counter::LostSamples), Ordering::Relaxed);
                metrics.lost_events.store(t.counter(Counter::LostEvents), Ordering::Relaxed);
                metrics.stack_copies[0].store(t.counter(Counter::StackCopies), Ordering::Relaxed);
                metrics.stack_copies[1].store(t.counter(Counter::CopiesSkipped), Ordering::Relaxed);
                metrics.off_cpu_lost.store(t.counter(Counter::OffCpuLost), Ordering::Relaxed);
                metrics.off_cpu_map_full.store(t.counter(Counter::OffCpuMapFull), Ordering::Relaxed);
            }
            _ = log_tick.tick() => tracing::info!("{}", metrics.log_line()),
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }

    tracing::info!("stopping: final report, then flushing exports for at most {:?}", cfg.telemetry.shutdown_timeout);
    // From here components end because they are asked to.
    health.shutting_down();
    sampling.stop();
    session.finish(Duration::from_secs(1));
    metrics.ready.store(false, Ordering::Relaxed);
    metrics.bad_records.store(session.bad_records(), Ordering::Relaxed);
    tallies.publish(&session.agg, &metrics);
    let last = session.close_interval().map(|i| report_job(i, p.frequency));
    drop(session); // detaches the programs
    let reported = tokio::task::spawn_blocking(move || reporter.finish(last)).await.context("reporter thread")?;
    // What was queued before a reporter failure still goes out.
    let deadline = tokio::time::Instant::now() + cfg.telemetry.shutdown_timeout;
    for (q, sender) in queues.iter().zip(senders) {
        queue::shutdown(q, sender, deadline.saturating_duration_since(tokio::time::Instant::now())).await;
    }
    tracing::info!("stopped: {}", metrics.log_line());
    reported?;
    Ok(ExitCode::SUCCESS)
}
