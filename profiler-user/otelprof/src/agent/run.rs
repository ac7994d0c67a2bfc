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
    aggregate::{Aggregator, Clock},
    kernel_view::KernelView,
    process::ProcessTracker,
    reader::{Event, Reader},
    tracer::{Tracer, TracerConfig},
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

/// Closes the current interval and starts a new one; the closed one becomes a report job
/// (with the process state it needs) when it has samples.
fn close_interval(
    agg: &mut Aggregator,
    tracker: &ProcessTracker,
    window_start: &mut u64,
    clock: Clock,
    frequency_hz: u64,
) -> Option<Job> {
    let done = std::mem::replace(agg, Aggregator::new(clock));
    let now = clock.now_unix_ns();
    let (start_unix_ns, duration_ns) = done.window(*window_start, now);
    *window_start = now;
    (!done.is_empty()).then(|| {
        Job::Report(Box::new(ReportJob {
            processes: tracker.snapshot(done.pids(), done.file_ids()),
            meta: Meta { frequency_hz, start_unix_ns, duration_ns },
            agg: done,
        }))
    })
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
    let clock = Clock::new();
    let mut window_start = clock.now_unix_ns();
    let mut tracer = Tracer::load(&TracerConfig {
        frequency_hz: p.frequency,
        filter_targets: !p.targets.is_empty(),
        sample_idle: false,
        ringbuf_bytes: p.ringbuf_size,
        bpf_log: false,
        report_all_execs: p.targets.needs_exec_events(),
        dwarf_unwind: p.unwind != UnwindMode::Fp,
        off_cpu_threshold: p.off_cpu.enabled.then_some(p.off_cpu.threshold),
    })?;
    let off_cpu_threshold = p.off_cpu.threshold;
    let initial = selector.initial();
    for &pid in &initial {
        tracer.add_target(pid, flags::SAMPLE | flags::FOLLOW)?;
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
    let mut reader = Reader::new(tracer.take_events()?).context("watching the ring buffer")?;
    let tables = p.unwind != UnwindMode::Fp;
    let cache = (tables && p.unwind_cache.enabled)
        .then(|| otelprof_sampler::unwind::open_cache(&p.unwind_cache.dir, p.unwind_cache.max_size_mib))
        .flatten();
    let mut view = KernelView::new(&tracer, tables, cache)?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    let mut agg = Aggregator::new(clock);
    let mut tracker = ProcessTracker::default();
    // Targets running at start: their tables and context readers before their first sample,
    // which is why the sampler is attached only now.
    for &pid in &initial {
        tracker.observe(pid);
    }
    view.sync(&mut tracker, &mut tracer);
    tracer.start_sampling()?;
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
        tracer.cpus(),
        p.interval,
        cfg.exporters.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ")
    );

    let mut new_execs: Vec<u32> = Vec::new();
    let mut exited: Vec<u32> = Vec::new();
    // Tallies of closed intervals; the metrics add the open interval's.
    let mut tallies = metrics::Tallies::default();
    let handle = |ev: Event,
                  agg: &mut Aggregator,
                  tracker: &mut ProcessTracker,
                  view: &mut KernelView,
                  new_execs: &mut Vec<u32>,
                  exited: &mut Vec<u32>| match ev {
        Event::Sample(s) => view.sample(s, agg, tracker),
        Event::Exec { tgid, .. } => {
            view.exec(tgid);
            if tracker.knows(tgid) {
                tracker.exec(tgid);
            }
            new_execs.push(tgid);
        }
        Event::Exit { tgid } => {
            tracker.exited(tgid);
            exited.push(tgid);
        }
        Event::UnknownPc { tgid, .. } => tracker.request_refresh(tgid),
        Event::OffCpu { sample, off_cpu_ns } => agg.add_off_cpu(&sample, off_cpu_ns, off_cpu_threshold, tracker),
    };
    loop {
        tokio::select! {
            r = reader.read_batch(|ev| handle(ev, &mut agg, &mut tracker, &mut view, &mut new_execs, &mut exited)) => {
                r.context("reading the ring buffer")?;
                if p.targets.needs_exec_events() {
                    for pid in new_execs.drain(..) {
                        if selector.matches(pid) {
                            tracing::debug!(pid, "new target");
                            tracer.add_target(pid, flags::SAMPLE | flags::FOLLOW)?;
                            // Read at once, not at its first sample: its unwind tables are
                            // installed and its context polled from the program's start.
                            tracker.observe(pid);
                        }
                    }
                }
                new_execs.clear();
                view.sync(&mut tracker, &mut tracer);
                for pid in exited.drain(..) {
                    view.exited(pid, &mut tracer);
                }
                view.settle(&mut agg, &mut tracker, false);
                if let Some(store) = view.tables.as_ref() {
                    metrics.unwind_table_bytes.store(store.stats.bytes(), Ordering::Relaxed);
                    metrics.unwind_table_files.store(store.stats.files, Ordering::Relaxed);
                    metrics.unwind_processes.store(store.stats.processes, Ordering::Relaxed);
                    metrics.unwind_tables_released.store(store.stats.released, Ordering::Relaxed);
                    metrics.unwind_tables_built[0].store(store.stats.compiled, Ordering::Relaxed);
                    metrics.unwind_tables_built[1].store(store.stats.cache_hits, Ordering::Relaxed);
                    metrics.unwind_compile_ms.store(store.stats.compile_ms, Ordering::Relaxed);
                }
                tallies.publish(&agg, &metrics);
                metrics.bad_records.store(reader.bad_records(), Ordering::Relaxed);
            }
            _ = report_tick.tick() => {
                // The report's resources are the processes' latest contexts: read what is due.
                tracker.poll_contexts_before_report();
                view.sync(&mut tracker, &mut tracer);
                view.settle(&mut agg, &mut tracker, true);
                tallies.close(&agg);
                if let Some(job) = close_interval(&mut agg, &tracker, &mut window_start, clock, p.frequency) {
                    reporter.send(job);
                }
                view.reap(&mut tracer);
                let evicted = tracker.evict(p.max_processes);
                if !evicted.is_empty() {
                    reporter.send(Job::Evict(evicted));
                }
                metrics.processes.store(tracker.len() as u64, Ordering::Relaxed);
                let m = &tracker.perf_maps;
                for (slot, v) in metrics.perf_map_lines.iter().zip([m.entries, m.malformed, m.dropped]) {
                    slot.store(v, Ordering::Relaxed);
                }
            }
            _ = beat.tick() => {
                sampling.beat();
                // Off-CPU records do not wake the reader each (see the BPF side).
                reader.drain_now(|ev| handle(ev, &mut agg, &mut tracker, &mut view, &mut new_execs, &mut exited));
                tracker.poll_contexts();
                view.sync(&mut tracker, &mut tracer);
                view.settle(&mut agg, &mut tracker, false);
                metrics.lost_samples.store(tracer.counter(Counter::LostSamples), Ordering::Relaxed);
                metrics.lost_events.store(tracer.counter(Counter::LostEvents), Ordering::Relaxed);
                metrics.stack_copies[0].store(tracer.counter(Counter::StackCopies), Ordering::Relaxed);
                metrics.stack_copies[1].store(tracer.counter(Counter::CopiesSkipped), Ordering::Relaxed);
                metrics.off_cpu_lost.store(tracer.counter(Counter::OffCpuLost), Ordering::Relaxed);
                metrics.off_cpu_map_full.store(tracer.counter(Counter::OffCpuMapFull), Ordering::Relaxed);
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
    reader.drain_now(|ev| handle(ev, &mut agg, &mut tracker, &mut view, &mut new_execs, &mut exited));
    view.finish(&mut tracker, &mut tracer, Duration::from_secs(1));
    view.settle(&mut agg, &mut tracker, true);
    metrics.ready.store(false, Ordering::Relaxed);
    metrics.bad_records.store(reader.bad_records(), Ordering::Relaxed);
    drop(reader);
    drop(tracer);
    tallies.publish(&agg, &metrics);
    tracker.poll_contexts_before_report();
    let last = close_interval(&mut agg, &tracker, &mut window_start, clock, p.frequency);
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
