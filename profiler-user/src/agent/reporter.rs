//! The reporting thread: symbolizes each interval's samples, builds and validates the OTLP
//! request and hands it to every exporter's queue.
//!
//! It runs on its own thread because the symbolizer is not `Send` and because parsing DWARF can
//! take long; the sampling loop only hands over finished intervals. The hand-over channel holds
//! a few reports: when symbolization falls further behind, reports are dropped and counted
//! instead of piling up in memory.

use std::sync::{
    atomic::Ordering,
    mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
    Arc,
};

use symbolizer::{FileKey, Symbolizer};

use super::metrics::AgentMetrics;
use crate::{
    aggregate::Aggregator,
    export::{
        otlp::{self, OtlpOptions},
        send::queue::ExportQueue,
        Meta, Report,
    },
    process::ProcessSnapshot,
    symbolize,
};

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
}

pub struct Reporter {
    tx: SyncSender<Job>,
    thread: std::thread::JoinHandle<()>,
    metrics: Arc<AgentMetrics>,
}

impl Reporter {
    pub fn spawn(
        opts: OtlpOptions,
        cache_entries: usize,
        queues: Vec<Arc<ExportQueue>>,
        metrics: Arc<AgentMetrics>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(REPORTS_IN_FLIGHT);
        let m = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("otelprof-report".into())
            .spawn(move || work(rx, opts, cache_entries, queues, m))?;
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
            Err(TrySendError::Disconnected(_)) => tracing::error!("the reporting thread is gone"),
        }
    }

    /// Hands over the last job, waiting for room, then waits for the thread to finish.
    pub fn finish(self, last: Option<Job>) {
        if let Some(job) = last {
            let _ = self.tx.send(job);
        }
        drop(self.tx);
        let _ = self.thread.join();
    }
}

fn work(
    rx: Receiver<Job>,
    opts: OtlpOptions,
    cache_entries: usize,
    queues: Vec<Arc<ExportQueue>>,
    metrics: Arc<AgentMetrics>,
) {
    let mut symbolizer = Symbolizer::new(symbolizer::Config { cache_entries, ..Default::default() });
    for job in rx {
        match job {
            Job::Report(job) => {
                let ReportJob { agg, processes, meta } = *job;
                let symbols = symbolize::symbolize(&agg, &processes, &mut symbolizer);
                // OTLP carries every profile type of the interval; `profile` is for one-type formats.
                let report =
                    Report { agg: &agg, processes: &processes, symbols: &symbols, meta, profile: Default::default() };
                match otlp::build_valid(&report, &opts) {
                    Ok(req) => {
                        metrics.reports.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            samples = agg.total,
                            off_cpu_waits = agg.off_cpu_waits,
                            processes = req.resource_profiles.len(),
                            symbolized = format!("{:.1}%", symbols.stats.percent()),
                            "report ready"
                        );
                        for q in &queues {
                            q.push(req.clone());
                        }
                    }
                    Err(e) => tracing::error!("{e:#}"),
                }
            }
            Job::Evict(keys) => keys.iter().for_each(|k| symbolizer.evict_file(k)),
        }
    }
}
