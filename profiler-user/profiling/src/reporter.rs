//! The reporting thread: symbolizes each interval's samples, builds and validates the OTLP
//! request and hands it to the profiles pipelines (a `consume` that never blocks; a refusal
//! drops the report, counted as the receiver's refused samples).
//!
//! It runs on its own thread because the symbolizer is not `Send` and because parsing DWARF can
//! take long; the sampling loop only hands over finished intervals. The hand-over channel holds
//! a few reports: when symbolization falls further behind, reports are dropped and counted
//! instead of piling up in memory.
//!
//! The thread is a component of the agent's [`Health`](otelprof_collector::health::Health): a panic here
//! makes `/healthz` fail and is logged, and [`Reporter::finish`] returns it.

use std::sync::{
    atomic::Ordering,
    mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
    Arc,
};

use otelprof_collector::{
    consumer::Consumer,
    health::{panic_message, HealthHandle},
    signal::Data,
    telemetry::{add, ReceiverMetrics},
};
use otelprof_encode::{
    otlp::{self, BurstMark, OtlpOptions},
    Meta, Report,
};
use otelprof_sampler::{aggregate::Aggregator, process::ProcessSnapshot, symbolize};
use symbolizer::{FileKey, Symbolizer};

use crate::metrics::ProfilerMetrics;

/// Fault injection for tests, never for production: with this environment variable set to
/// [`FAULT_REPORTER_PANIC`], the reporting thread panics on its first report, so tests can check
/// that a dead reporter is seen (`/healthz`, the log, the exit status). Read once at start, and
/// logged when set.
pub const FAULT_INJECTION_ENV: &str = "OTELPROF_FAULT_INJECTION";
/// The value of [`FAULT_INJECTION_ENV`] that makes the reporting thread panic.
pub const FAULT_REPORTER_PANIC: &str = "reporter_panic";

/// Why the reporting thread ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ReporterError {
    #[error("the reporting thread panicked: {0}")]
    Panicked(String),
}

/// Reports waiting for the reporting thread at most: enough to ride out the first, slow
/// symbolization of large binaries, bounded so memory stays bounded.
const REPORTS_IN_FLIGHT: usize = 8;

pub enum Job {
    /// Boxed: an aggregator is large and the channel holds jobs inline.
    Report(Box<ReportJob>),
    /// Files no process maps any more: their cached symbols can go.
    Evict(Vec<FileKey>),
}

/// One closed interval and the process state its report needs.
pub struct ReportJob {
    pub agg: Aggregator,
    pub processes: ProcessSnapshot,
    pub meta: Meta,
    /// A burst's mark: the processes it sampled at its rate and the attributes saying why.
    pub burst: Option<BurstMark>,
}

pub struct Reporter {
    tx: SyncSender<Job>,
    thread: std::thread::JoinHandle<()>,
    metrics: Arc<ProfilerMetrics>,
}

impl Reporter {
    /// Starts the thread; `health` is its component in the agent's registry.
    pub fn spawn(
        opts: OtlpOptions,
        cache_entries: usize,
        next: Arc<dyn Consumer>,
        counts: ReceiverMetrics,
        metrics: Arc<ProfilerMetrics>,
        health: HealthHandle,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(REPORTS_IN_FLIGHT);
        let m = metrics.clone();
        let panic_on_report = std::env::var(FAULT_INJECTION_ENV).is_ok_and(|v| v == FAULT_REPORTER_PANIC);
        if panic_on_report {
            tracing::warn!(
                "{FAULT_INJECTION_ENV}={FAULT_REPORTER_PANIC}: the reporting thread will panic (a test hook)"
            );
        }
        let thread = std::thread::Builder::new()
            .name("otelprof-report".into())
            .spawn(move || health.watch(|| work(rx, opts, cache_entries, next, counts, m, panic_on_report)))?;
        Ok(Self { tx, thread, metrics })
    }

    /// Hands a job over without waiting; a full channel drops the report (counted).
    pub fn send(&self, job: Job) {
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(Job::Report(_))) => {
                self.metrics.reports_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("symbolization is behind: dropped a report");
            }
            Err(TrySendError::Full(Job::Evict(_))) => {}
            // The thread's end was logged once, loudly, by its health component.
            Err(TrySendError::Disconnected(Job::Report(_))) => {
                self.metrics.reports_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("the reporting thread is gone: dropped a report");
            }
            Err(TrySendError::Disconnected(Job::Evict(_))) => {}
        }
    }

    /// Hands over the last job, waiting for room, then waits for the thread to finish. A panic
    /// of the thread (now or earlier) is the error.
    pub fn finish(self, last: Option<Job>) -> Result<(), ReporterError> {
        if let Some(job) = last {
            // Fails only when the thread is gone, which the join below reports.
            let _ = self.tx.send(job);
        }
        drop(self.tx);
        self.thread.join().map_err(|payload| ReporterError::Panicked(panic_message(&*payload)))
    }
}

fn work(
    rx: Receiver<Job>,
    opts: OtlpOptions,
    cache_entries: usize,
    next: Arc<dyn Consumer>,
    counts: ReceiverMetrics,
    metrics: Arc<ProfilerMetrics>,
    panic_on_report: bool,
) {
    let mut symbolizer = Symbolizer::new(symbolizer::Config { cache_entries, ..Default::default() });
    for job in rx {
        match job {
            Job::Report(job) => {
                if panic_on_report {
                    panic!("{FAULT_INJECTION_ENV}={FAULT_REPORTER_PANIC}: the reporting thread panics as asked");
                }
                let ReportJob { agg, processes, meta, burst } = *job;
                let symbols = symbolize::symbolize(&agg, &processes, &mut symbolizer);
                // OTLP carries every profile type of the interval; `profile` is for one-type formats.
                let report =
                    Report { agg: &agg, processes: &processes, symbols: &symbols, meta, profile: Default::default() };
                let labelled;
                let opts = match burst {
                    None => &opts,
                    Some(mark) => {
                        labelled = OtlpOptions { burst: Some(mark), ..opts.clone() };
                        &labelled
                    }
                };
                match otlp::build_valid(&report, opts) {
                    Ok(req) => {
                        metrics.reports.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            samples = agg.total,
                            off_cpu_waits = agg.off_cpu_waits,
                            processes = req.resource_profiles.len(),
                            symbolized = format!("{:.1}%", symbols.stats.percent()),
                            "report ready"
                        );
                        let data = Data::Profiles(req);
                        let items = data.items();
                        match next.consume(data) {
                            Ok(()) => add(&counts.accepted, items),
                            Err(e) => {
                                add(&counts.refused, items);
                                tracing::warn!("the profiles pipeline refused a report of {items} samples: {e}");
                            }
                        }
                    }
                    Err(e) => tracing::error!("{e:#}"),
                }
            }
            Job::Evict(keys) => keys.iter().for_each(|k| symbolizer.evict_file(k)),
        }
    }
}
