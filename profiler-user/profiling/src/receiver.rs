//! The `profiling` receiver: a sampling [`Session`] on its own thread, closing an interval
//! every `reporter_interval` and handing it to the reporting thread, which symbolizes and
//! encodes it and gives the OTLP request to the profiles pipelines.
//!
//! Its own thread and runtime: the sampling loop reads the BPF ring buffer, and nothing the
//! collector does (OTLP bursts, exporters, processors) may delay that. It never waits on the
//! pipelines either: the hand-over to the reporting thread drops when full, and the pipelines'
//! `consume` never blocks (a refusal drops the report, counted).
//!
//! Live changes (issue #14, the agent's remote config): [`Receiver::control`] hands out a
//! [`ProfilingControl`] whose `reconfigure` sends the new config to the sampling loop, which
//! applies `samples_per_second`, `targets` and `reporter_interval` without reloading BPF or
//! pausing sampling, and answers within [`RECONFIGURE_WAIT`]. A rate change cuts the open
//! interval first, so that report carries the rate its samples were taken at. Anything else,
//! and targets the loaded programs cannot filter for (every process ↔ a list, PIDs only → by
//! name), answers "restart needed" with nothing changed.
//!
//! Bursts (issue #16, the anomaly receiver's `burst` action): [`ProfilingControl::burst`] asks
//! the loop to sample at a higher rate until a deadline. The rate change cuts the interval as
//! above, so the reports of the window hold only its samples, each profile labelled
//! `profile.trigger: anomaly` and `profile.trigger.rule`; at the deadline (or an early end) the
//! rate returns to the configured one, which a config change during the burst updates.

use std::{
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use otelprof_collector::{
    component::{
        Burst, ComponentError, ComponentId, CpuByTarget, Host, Outputs, Receiver, ReceiverControl, ReceiverFactory,
    },
    config::ConfigError,
    health::Liveness,
    signal::Signal,
};
use otelprof_encode::{
    otlp::{BurstMark, OtlpOptions},
    Meta,
};
use otelprof_sampler::{
    session::{Interval, Session, SessionConfig},
    targets::Selector,
    thinning::Thinning,
    tracer::{max_sample_rate, TracerConfig},
    unwind::UnwindMode,
};
use profiler_common::target as flags;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    config::ProfilingConfig,
    metrics::{ProfilerMetrics, Tallies},
    reporter::{Job, ReportJob, Reporter},
    target_cpu::CpuByProcess,
};

/// How often the loop turns when no record wakes it: drains records that do not wake the
/// reader, reads contexts that are due, installs tables that arrived.
const TICK: Duration = Duration::from_millis(250);
/// How long the end waits for tables still compiling.
const FINISH_WAIT: Duration = Duration::from_secs(1);
/// How often the profiler's summary is logged.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// How long `reconfigure` waits for the sampling loop's answer (it turns every 250 ms at most,
/// and applying takes a few syscalls plus a scan of /proc for new targets).
pub const RECONFIGURE_WAIT: Duration = Duration::from_secs(2);

/// Makes the `profiling` receiver.
pub struct ProfilingFactory {
    metrics: Arc<ProfilerMetrics>,
}

impl ProfilingFactory {
    /// `metrics` are the profiler's own counters, which the agent also serves on `/metrics`.
    pub fn new(metrics: Arc<ProfilerMetrics>) -> Self {
        Self { metrics }
    }
}

impl ReceiverFactory for ProfilingFactory {
    fn kind(&self) -> &'static str {
        "profiling"
    }

    fn signals(&self) -> &'static [Signal] {
        &[Signal::Profiles]
    }

    fn create(
        &self,
        id: &ComponentId,
        config: serde_yaml::Value,
        path: &str,
    ) -> Result<Box<dyn Receiver>, ConfigError> {
        let config = ProfilingConfig::parse(path, config)?;
        let (tx, changes) = mpsc::channel(1);
        let (burst_tx, bursts) = mpsc::channel(4);
        let control = Arc::new(ProfilingControl {
            id: id.to_string(),
            tx,
            burst_tx,
            current: Mutex::new(config.clone()),
            cpu: Arc::default(),
        });
        Ok(Box::new(ProfilingReceiver {
            id: id.to_string(),
            config,
            metrics: self.metrics.clone(),
            control,
            changes,
            bursts,
        }))
    }
}

/// The profiler with its config checked, not started.
pub struct ProfilingReceiver {
    id: String,
    config: ProfilingConfig,
    metrics: Arc<ProfilerMetrics>,
    control: Arc<ProfilingControl>,
    /// Live changes, for the sampling loop.
    changes: mpsc::Receiver<Change>,
    /// Bursts to start or end, for the sampling loop.
    bursts: mpsc::Receiver<BurstOrder>,
}

/// A burst to start, or the running one to end.
#[derive(Debug)]
enum BurstOrder {
    Start(Burst),
    End,
}

/// The burst in force in the sampling loop.
struct Bursting {
    samples_per_second: u64,
    until: tokio::time::Instant,
    labels: Vec<(String, String)>,
    /// Only these processes (the others are thinned to the configured rate); `None`: all.
    pids: Option<std::collections::HashSet<u32>>,
}

impl Bursting {
    /// The rate to sample at with `cfg` in force: the burst's, unless the config's is higher.
    fn rate(&self, cfg: &ProfilingConfig) -> u64 {
        self.samples_per_second.max(cfg.samples_per_second)
    }

    /// For a burst of some processes: what thins the others to `cfg`'s rate.
    fn thinning(&self, cfg: &ProfilingConfig) -> Option<Thinning> {
        let pids = self.pids.as_ref()?;
        Some(Thinning::new(pids.iter().copied(), cfg.samples_per_second, self.rate(cfg)))
    }
}

/// How an interval was sampled: the report's rate, and a burst's mark on the processes it
/// sampled at its own rate.
struct Rates {
    hz: u64,
    mark: Option<BurstMark>,
}

/// The rates of the open interval: sampled at `frequency`, under `burst` if any.
fn rates(frequency: u64, burst: &Option<Bursting>, cfg: &ProfilingConfig) -> Rates {
    match burst {
        None => Rates { hz: frequency, mark: None },
        Some(b) => Rates {
            // The processes outside a burst of some were thinned to the configured rate.
            hz: if b.pids.is_some() { cfg.samples_per_second.min(frequency) } else { frequency },
            mark: Some(BurstMark { pids: b.pids.clone(), frequency_hz: frequency, attributes: b.labels.clone() }),
        },
    }
}

/// A live change on its way to the sampling loop, and where its answer goes.
struct Change {
    config: ProfilingConfig,
    /// [`PENDING`] until the loop claims it ([`CLAIMED`]) or the caller gave up ([`ABANDONED`]):
    /// a change is applied only if claimed, so a caller that timed out can say "nothing changed".
    state: Arc<AtomicU8>,
    answer: std::sync::mpsc::SyncSender<bool>,
}

const PENDING: u8 = 0;
const CLAIMED: u8 = 1;
const ABANDONED: u8 = 2;

impl Change {
    fn claim(&self) -> bool {
        self.state.compare_exchange(PENDING, CLAIMED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

/// The `profiling` receiver's [`ReceiverControl`]: applies a changed `samples_per_second`,
/// `targets` or `reporter_interval` to the running sampling session (see the module docs).
pub struct ProfilingControl {
    id: String,
    tx: mpsc::Sender<Change>,
    burst_tx: mpsc::Sender<BurstOrder>,
    /// CPU time per process from the samples, for the anomaly receiver.
    cpu: Arc<CpuByProcess>,
    /// The config in force: what a new one is compared with. Held while a change is applied,
    /// so changes apply one at a time.
    current: Mutex<ProfilingConfig>,
}

impl ReceiverControl for ProfilingControl {
    /// Blocks for at most [`RECONFIGURE_WAIT`] while the sampling loop applies the change
    /// (longer only when the loop claimed it just then and is finishing it).
    fn reconfigure(&self, config: &serde_yaml::Value, path: &str) -> Result<bool, ConfigError> {
        let new = ProfilingConfig::parse(path, config.clone())?;
        if let Some(max) = max_sample_rate() {
            if new.samples_per_second > max {
                return Err(ConfigError::new(
                    format!("{path}.samples_per_second"),
                    format!(
                        "{} Hz is above the kernel's limit (kernel.perf_event_max_sample_rate = {max})",
                        new.samples_per_second
                    ),
                ));
            }
        }
        let mut current = match self.current.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(key) = current.restart_needed(&new) {
            tracing::info!("receiver/{}: `{key}` changed, which needs a restart", self.id);
            return Ok(false);
        }
        if *current == new {
            return Ok(true);
        }
        let state = Arc::new(AtomicU8::new(PENDING));
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        if self.tx.try_send(Change { config: new.clone(), state: state.clone(), answer }).is_err() {
            tracing::info!("receiver/{}: not sampling, the change needs a restart", self.id);
            return Ok(false);
        }
        let applied = match answered.recv_timeout(RECONFIGURE_WAIT) {
            Ok(applied) => applied,
            Err(_) if state.compare_exchange(PENDING, ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_ok() => {
                tracing::warn!(
                    "receiver/{}: the sampling loop did not take the change within {RECONFIGURE_WAIT:?}; nothing changed",
                    self.id
                );
                false
            }
            // Claimed just as the wait ended: the loop is applying it and answers shortly
            // (a dropped answer means the loop ended before it changed anything).
            Err(_) => answered.recv().unwrap_or(false),
        };
        if applied {
            *current = new;
        }
        Ok(applied)
    }

    /// Queues the burst for the sampling loop (which logs a rate it cannot set); Err when the
    /// rate is above the kernel's limit or the loop is not running.
    fn burst(&self, burst: Burst) -> Result<(), String> {
        if burst.samples_per_second == 0 || burst.duration.is_zero() {
            return Err("a burst needs a rate and a duration".into());
        }
        if let Some(max) = max_sample_rate() {
            if burst.samples_per_second > max {
                return Err(format!(
                    "{} Hz is above the kernel's limit (kernel.perf_event_max_sample_rate = {max})",
                    burst.samples_per_second
                ));
            }
        }
        self.burst_tx
            .try_send(BurstOrder::Start(burst))
            .map_err(|e| format!("receiver/{}: the sampling loop does not take bursts now ({e})", self.id))
    }

    fn end_burst(&self) {
        let _ = self.burst_tx.try_send(BurstOrder::End);
    }

    fn cpu_by_target(&self) -> Option<CpuByTarget> {
        Some(self.cpu.snapshot())
    }
}

#[async_trait]
impl Receiver for ProfilingReceiver {
    async fn start(
        self: Box<Self>,
        outputs: Outputs,
        host: &Host,
    ) -> Result<tokio::task::JoinHandle<()>, ComponentError> {
        let id = self.id.clone();
        let next = outputs
            .get(Signal::Profiles)
            .cloned()
            .ok_or_else(|| ComponentError::new(&id, "not in any profiles pipeline"))?;
        let counts = host.telemetry.receiver(&id, "bpf", Signal::Profiles);
        let cfg = self.config;
        let metrics = self.metrics;
        let changes = self.changes;
        let bursts = self.bursts;
        let cpu = self.control.cpu.clone();
        let reporter = Reporter::spawn(
            OtlpOptions { symbolize: cfg.symbolize, command_line: cfg.command_line, ..Default::default() },
            cfg.symbol_cache_entries,
            next,
            counts,
            metrics.clone(),
            host.health.register(format!("receiver/{id}/reporter"), Liveness::Running),
        )
        .map_err(|e| ComponentError::new(&id, format!("starting the reporting thread: {e}")))?;
        let sampling = host.health.register(
            format!("receiver/{id}"),
            Liveness::Heartbeat { within: cfg.reporter_interval.max(Duration::from_secs(10)) * 3 },
        );
        let stop = host.stop.clone();
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("otelprof-sampler".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("starting the sampling runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(run(cfg, reporter, metrics, sampling, stop, Orders { changes, bursts, cpu }, ready_tx));
            })
            .map_err(|e| ComponentError::new(&id, format!("starting the sampling thread: {e}")))?;
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ComponentError::new(&id, e)),
            Err(_) => return Err(ComponentError::new(&id, "the sampling thread ended while starting")),
        }
        Ok(tokio::task::spawn_blocking(move || {
            if thread.join().is_err() {
                tracing::error!("receiver/{id}: the sampling thread panicked");
            }
        }))
    }

    fn control(&self) -> Option<Arc<dyn ReceiverControl>> {
        Some(self.control.clone())
    }
}

/// A closed interval sampled at `r` as the reporting thread's job. Its samples count towards
/// the CPU time per process first.
fn report_job(i: Interval, r: Rates, cpu: &CpuByProcess) -> Job {
    let Rates { hz, mark } = r;
    cpu.record(&i, |pid| match &mark {
        Some(m) if m.covers(pid) => m.frequency_hz,
        _ => hz,
    });
    Job::Report(Box::new(ReportJob {
        processes: i.processes,
        meta: Meta { frequency_hz: hz, start_unix_ns: i.start_unix_ns, duration_ns: i.duration_ns },
        agg: i.agg,
        burst: mark,
    }))
}

/// What the sampling loop shares with its control: the orders it takes (live config changes,
/// bursts) and the CPU time per process it measures.
struct Orders {
    changes: mpsc::Receiver<Change>,
    bursts: mpsc::Receiver<BurstOrder>,
    cpu: Arc<CpuByProcess>,
}

/// Loads the programs, says whether that worked, then samples until `stop`.
async fn run(
    cfg: ProfilingConfig,
    reporter: Reporter,
    metrics: Arc<ProfilerMetrics>,
    sampling: otelprof_collector::health::HealthHandle,
    stop: CancellationToken,
    orders: Orders,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let Orders { mut changes, mut bursts, cpu } = orders;
    let mut cfg = cfg;
    let mut session = match open(&cfg) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            sampling.stop();
            // The reporting thread ends with nothing to do.
            let _ = reporter.finish(None);
            return;
        }
    };
    tracing::info!(
        "profiling {} at {} Hz{} on {} CPUs, reporting every {:?}",
        cfg.describe_targets(),
        cfg.samples_per_second,
        cfg.off_cpu().map(|p| format!(" and off CPU (threshold {p})")).unwrap_or_default(),
        session.tracer.cpus(),
        cfg.reporter_interval,
    );
    metrics.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = ready.send(Ok(()));
    let mut frequency = cfg.samples_per_second;
    let mut burst: Option<Bursting> = None;
    let mut report_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + cfg.reporter_interval, cfg.reporter_interval);
    let mut log_tick = tokio::time::interval_at(tokio::time::Instant::now() + LOG_EVERY, LOG_EVERY);
    let mut tick = tokio::time::interval(TICK);
    // Tallies of closed intervals; the metrics add the open interval's.
    let mut tallies = Tallies::default();
    let failed = loop {
        metrics.samples_per_second.store(frequency, std::sync::atomic::Ordering::Relaxed);
        tokio::select! {
            r = session.read() => {
                if let Err(e) = r {
                    break Some(format!("reading the ring buffer: {e}"));
                }
                metrics.publish_tables(&session);
                tallies.publish(&session.agg, &metrics);
                metrics.set(&metrics.bad_records, session.bad_records());
            }
            _ = report_tick.tick() => {
                if let Some(i) = session.close_interval() {
                    tallies.close(&i.agg);
                    reporter.send(report_job(i, rates(frequency, &burst, &cfg), &cpu));
                }
                let evicted = session.after_report(cfg.max_processes);
                if !evicted.is_empty() {
                    reporter.send(Job::Evict(evicted));
                }
                metrics.publish_processes(&session);
            }
            _ = tick.tick() => {
                sampling.beat();
                if let Err(e) = session.tick() {
                    break Some(format!("following new targets: {e}"));
                }
                metrics.publish_counters(&session.tracer);
                metrics.set(&metrics.thinned, session.thinned());
            }
            _ = log_tick.tick() => tracing::info!("profiling: {}", metrics.log_line()),
            Some(change) = changes.recv() => {
                if !change.claim() {
                    continue; // the caller gave up waiting: nothing changes
                }
                let new = change.config;
                // During a burst the sampling rate stays the burst's (unless the new config's
                // is higher); the new rate is the one the burst returns to.
                let at = |c: &ProfilingConfig| match &burst {
                    Some(b) => ProfilingConfig { samples_per_second: b.rate(c), ..c.clone() },
                    None => c.clone(),
                };
                let (old_eff, new_eff) = (at(&cfg), at(&new));
                let applied = apply(&mut session, &old_eff, &new_eff, |i| {
                    tallies.close(&i.agg);
                    reporter.send(report_job(i, rates(frequency, &burst, &cfg), &cpu));
                });
                if applied {
                    frequency = new_eff.samples_per_second;
                    // The others of a burst of some are thinned to the new configured rate.
                    if let Some(t) = burst.as_ref().and_then(|b| b.thinning(&new)) {
                        session.set_thinning(Some(t));
                    }
                    if new.reporter_interval != cfg.reporter_interval {
                        report_tick = tokio::time::interval_at(
                            tokio::time::Instant::now() + new.reporter_interval,
                            new.reporter_interval,
                        );
                    }
                    cfg = new;
                }
                let _ = change.answer.send(applied);
            }
            Some(order) = bursts.recv() => {
                match order {
                    BurstOrder::Start(b) => {
                        let until = tokio::time::Instant::now() + b.duration;
                        if let Some(running) = &mut burst {
                            running.until = running.until.max(until);
                            tracing::info!(
                                "profiling: burst for rule `{}` extended to {:?} from now",
                                b.rule,
                                running.until.saturating_duration_since(tokio::time::Instant::now())
                            );
                            continue;
                        }
                        let next = Bursting {
                            samples_per_second: b.samples_per_second,
                            until,
                            labels: vec![
                                ("profile.trigger".into(), "anomaly".into()),
                                ("profile.trigger.rule".into(), b.rule.clone()),
                            ],
                            pids: b.pids.as_ref().map(|p| p.iter().copied().collect()),
                        };
                        let rate = next.rate(&cfg);
                        let cut = |i: Interval| {
                            tallies.close(&i.agg);
                            reporter.send(report_job(i, rates(frequency, &None, &cfg), &cpu));
                        };
                        match session.set_frequency(rate, cut) {
                            Ok(()) => {
                                session.set_thinning(next.thinning(&cfg));
                                tracing::info!(
                                    "profiling: burst at {rate} Hz for {:?} (rule `{}`; {}; configured {} Hz)",
                                    b.duration,
                                    b.rule,
                                    match &next.pids {
                                        Some(p) => format!("{} processes, the others thinned", p.len()),
                                        None => "every process".into(),
                                    },
                                    cfg.samples_per_second
                                );
                                metrics.bursts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                frequency = rate;
                                burst = Some(next);
                            }
                            Err(e) => tracing::error!("profiling: burst at {rate} Hz failed, staying at {frequency} Hz: {e}"),
                        }
                    }
                    BurstOrder::End => {
                        if burst.is_some() {
                            end_burst(&mut session, &mut burst, &mut frequency, &cfg, "ended early", |i, r| {
                                tallies.close(&i.agg);
                                reporter.send(report_job(i, r, &cpu));
                            });
                        }
                    }
                }
            }
            _ = sleep_until(burst.as_ref().map(|b| b.until)), if burst.is_some() => {
                end_burst(&mut session, &mut burst, &mut frequency, &cfg, "over", |i, r| {
                    tallies.close(&i.agg);
                    reporter.send(report_job(i, r, &cpu));
                });
            }
            _ = stop.cancelled() => break None,
        }
    };
    if let Some(e) = &failed {
        sampling.fail(e);
    } else {
        sampling.stop();
    }
    // The last interval: everything the kernel wrote, tables still compiling, then reported.
    session.finish(FINISH_WAIT);
    metrics.ready.store(false, std::sync::atomic::Ordering::Relaxed);
    metrics.set(&metrics.bad_records, session.bad_records());
    metrics.publish_counters(&session.tracer);
    tallies.publish(&session.agg, &metrics);
    let last = session.close_interval().map(|i| report_job(i, rates(frequency, &burst, &cfg), &cpu));
    drop(session); // detaches the programs
    if let Err(e) = reporter.finish(last) {
        tracing::error!("{e}");
    }
    tracing::info!("profiling stopped: {}", metrics.log_line());
}

/// Sleeps until `at`; forever without one (the `select!` branch is disabled then anyway).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Ends the burst: the window's last interval is reported at the burst's rate with its labels,
/// and sampling returns to the configured rate (`why` says how it ended, for the log).
fn end_burst(
    session: &mut Session,
    burst: &mut Option<Bursting>,
    frequency: &mut u64,
    cfg: &ProfilingConfig,
    why: &str,
    mut report: impl FnMut(Interval, Rates),
) {
    let window = rates(*frequency, burst, cfg);
    let Some(_) = burst.take() else { return };
    let was = *frequency;
    let result = session.set_frequency(cfg.samples_per_second, |i| report(i, window));
    // Every process is sampled alike again (at the burst's rate if the rate could not return).
    session.set_thinning(None);
    match result {
        Ok(()) => {
            *frequency = cfg.samples_per_second;
            tracing::info!("profiling: burst {why}, back at {} Hz", cfg.samples_per_second);
        }
        Err(e) => {
            // The rate stays the burst's; the labels stop, so what follows is not called a burst.
            tracing::error!(
                "profiling: returning to {} Hz after the burst failed, still at {was} Hz: {e}",
                cfg.samples_per_second
            );
        }
    }
}

/// Applies a live change (`new` differs from `old` only in live keys); false when the loaded
/// programs cannot follow it, with nothing changed. `report` takes the interval a rate change
/// cuts, to report it with the old rate.
fn apply(session: &mut Session, old: &ProfilingConfig, new: &ProfilingConfig, report: impl FnOnce(Interval)) -> bool {
    let retarget = new.targets != old.targets;
    if retarget && !session.can_retarget(&new.targets) {
        tracing::info!(
            "profiling: targets {} → {} need other BPF load-time settings (filtering, exec reports): restart needed",
            old.describe_targets(),
            new.describe_targets()
        );
        return false;
    }
    if new.samples_per_second != old.samples_per_second {
        if let Err(e) = session.set_frequency(new.samples_per_second, report) {
            tracing::error!(
                "profiling: changing the rate to {} Hz failed, still at {} Hz: {e}",
                new.samples_per_second,
                old.samples_per_second
            );
            return false;
        }
        tracing::info!(
            "profiling: now at {} Hz (was {} Hz), BPF programs kept",
            new.samples_per_second,
            old.samples_per_second
        );
    }
    if retarget {
        let (added, removed) = session.set_targets(new.targets.clone());
        tracing::info!("profiling: now {} ({added} processes added, {removed} removed)", new.describe_targets());
    }
    if new.reporter_interval != old.reporter_interval {
        tracing::info!("profiling: reporting every {:?} (was {:?})", new.reporter_interval, old.reporter_interval);
    }
    true
}

/// Loads and attaches the programs for `cfg` and observes the targets running now.
fn open(cfg: &ProfilingConfig) -> Result<Session, String> {
    let selector = Selector::new(cfg.targets.clone());
    let tables = cfg.unwind != UnwindMode::Fp;
    let cache = cfg.unwind_cache.enabled.then(|| (cfg.unwind_cache.dir.clone(), cfg.unwind_cache.max_size_mib));
    let initial = selector.initial();
    let mut session = Session::new(SessionConfig {
        tracer: TracerConfig {
            frequency_hz: cfg.samples_per_second,
            filter_targets: !cfg.targets.is_empty(),
            sample_idle: false,
            ringbuf_bytes: cfg.ringbuf_size,
            bpf_log: false,
            report_all_execs: cfg.targets.needs_exec_events(),
            dwarf_unwind: tables,
            off_cpu_threshold: cfg.off_cpu(),
        },
        tables,
        cache,
        off_cpu_threshold: cfg.off_cpu().unwrap_or(1.0),
        follow: cfg.targets.needs_exec_events().then_some(selector),
        preload: Vec::new(),
    })
    .map_err(|e| e.to_string())?;
    // Targets running at start: their tables and context readers before their first sample.
    for &pid in &initial {
        session.observe(pid, flags::SAMPLE | flags::FOLLOW).map_err(|e| e.to_string())?;
    }
    session.start().map_err(|e| e.to_string())?;
    Ok(session)
}
