//! The compile threads: files' CFI is turned into tables here, off the sampling loop.
//!
//! Compiling a compiler's 100 MB library takes seconds; done on the loop that drains the ring
//! buffer, it stalled sampling (lost samples) and the agent's probes. Here the loop hands over a
//! [`Job`] and goes on; the table comes back as a [`Built`] and is placed on a later pass. Until
//! then the processes that need it send stack copies for the code it covers, which wait for it
//! (docs/design/0005-stack-copies.md, 0006-agent-cost.md).
//!
//! With a [`TableCache`] the thread looks there first and stores what it compiled, so a table
//! costs its compile once per file across restarts.

use std::{
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use profiler_common::UnwindRow;

use super::{
    cache::{Cached, CachedTable, TableCache},
    compile,
    store::TableKey,
};
use crate::process::{
    files::{self, MappedFile},
    layout,
};

/// What to compile: a file a process maps (kept open by the handle inside), or the vDSO.
pub enum Source {
    File(Arc<MappedFile>),
    /// A file by path (a preload, before any process maps it).
    Path(std::path::PathBuf),
    Vdso,
}

pub struct Job {
    pub key: TableKey,
    pub source: Source,
    /// The path to name the file by in logs.
    pub name: String,
}

/// A table's rows: compiled now, or mapped from the cache.
pub enum Rows {
    Compiled(Vec<UnwindRow>),
    Cached(CachedTable),
}

impl std::ops::Deref for Rows {
    type Target = [UnwindRow];
    fn deref(&self) -> &[UnwindRow] {
        match self {
            Rows::Compiled(r) => r,
            Rows::Cached(c) => c.rows(),
        }
    }
}

/// Tables smaller than this are not written to the cache: they compile in about the time a
/// cache entry takes to write (and a build directory's fresh binaries would only churn it).
const MIN_CACHED_ROWS: usize = 4096;

/// A table ready to place.
pub struct Compiled {
    pub rows: Rows,
    /// The file's load segments (to turn mapping offsets into its virtual addresses).
    pub segments: layout::Segments,
}

/// What came of a [`Job`].
pub struct Built {
    pub key: TableKey,
    pub name: String,
    /// `Err`: why the file has no table (its frames fall back to frame pointers).
    pub outcome: Result<Compiled, String>,
    /// Time spent compiling (zero for a cache hit).
    pub compile_time: Duration,
    pub from_cache: bool,
}

/// Files larger than this are compiled on a thread of their own, so a compiler's 100 MB
/// library (seconds of work) never holds up the tables of the small programs around it.
const LARGE_FILE: u64 = 16 << 20;

/// The compile threads (one for small files, one for large ones) and their channels.
pub struct Compiler {
    /// Jobs for small files, and for large ones.
    lanes: [Option<mpsc::Sender<Job>>; 2],
    built: mpsc::Receiver<Built>,
    in_flight: usize,
}

impl Compiler {
    /// Starts the threads. Each runs its jobs in the order submitted.
    pub fn spawn(cache: Option<Arc<TableCache>>) -> Self {
        let (built_tx, built) = mpsc::channel::<Built>();
        let lanes = ["otelprof-unwind", "otelprof-unwind-large"].map(|name| {
            let (jobs, job_rx) = mpsc::channel::<Job>();
            let built_tx = built_tx.clone();
            let cache = cache.clone();
            let started = std::thread::Builder::new().name(name.into()).spawn(move || {
                for job in job_rx {
                    if built_tx.send(run(job, cache.as_deref())).is_err() {
                        break;
                    }
                }
            });
            match started {
                Ok(_) => Some(jobs),
                Err(e) => {
                    tracing::warn!("cannot start the unwind-table thread {name} ({e}): its files get no tables");
                    None
                }
            }
        });
        Self { lanes, built, in_flight: 0 }
    }

    /// Queues a job; false when its thread is gone (the file then gets no table).
    pub fn submit(&mut self, job: Job) -> bool {
        let path = match &job.source {
            Source::File(f) => Some(f.open_path.as_path()),
            Source::Path(p) => Some(p.as_path()),
            Source::Vdso => None,
        };
        let large = path.and_then(|p| std::fs::metadata(p).ok()).is_some_and(|m| m.len() > LARGE_FILE);
        let sent = self.lanes[large as usize].as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if sent {
            self.in_flight += 1;
        }
        sent
    }

    /// A finished job, if one is ready; `wait`: block up to that long for one.
    pub fn next(&mut self, wait: Option<Duration>) -> Option<Built> {
        if self.in_flight == 0 {
            return None;
        }
        let got = match wait {
            None => self.built.try_recv().ok(),
            Some(d) => self.built.recv_timeout(d).ok(),
        };
        if got.is_some() {
            self.in_flight -= 1;
        }
        got
    }

    /// Jobs submitted and not yet returned by [`Self::next`].
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

/// One job: the cache, else the file's CFI (then stored in the cache).
fn run(job: Job, cache: Option<&TableCache>) -> Built {
    let Job { key, source, name } = job;
    let started = Instant::now();
    let mut from_cache = false;
    let outcome = (|| {
        let mapped;
        let data: &[u8] = match &source {
            Source::File(f) => {
                mapped = files::map_readonly(&f.open_path).map_err(|e| e.to_string())?;
                &mapped
            }
            Source::Path(p) => {
                mapped = files::map_readonly(p).map_err(|e| e.to_string())?;
                &mapped
            }
            Source::Vdso => symbolizer::vdso::own_image().ok_or("the vDSO image could not be read")?,
        };
        let segments = object::File::parse(data).map(|f| layout::segments(&f)).unwrap_or_default();
        // The vDSO is not cached (its key is the same on every kernel).
        let cache = cache.zip(match &key {
            TableKey::File(k) => Some(k),
            TableKey::Vdso => None,
        });
        if let Some((cache, k)) = cache {
            match cache.get(k) {
                Some(Cached::Table(t)) => {
                    from_cache = true;
                    return Ok(Compiled { rows: Rows::Cached(t), segments });
                }
                Some(Cached::Failed(reason)) => {
                    from_cache = true;
                    return Err(reason);
                }
                None => {}
            }
        }
        match compile(data) {
            Ok(table) => {
                if let Some((cache, k)) = cache.filter(|_| table.rows.len() >= MIN_CACHED_ROWS) {
                    if let Err(e) = cache.put(k, &table) {
                        tracing::debug!("{name}: table not cached: {e}");
                    }
                }
                Ok(Compiled { rows: Rows::Compiled(table.rows), segments })
            }
            Err(e) => {
                let reason = e.to_string();
                if let Some((cache, k)) = cache {
                    if let Err(e) = cache.put_failed(k, &reason) {
                        tracing::debug!("{name}: failure not cached: {e}");
                    }
                }
                Err(reason)
            }
        }
    })();
    let compile_time = if from_cache { Duration::ZERO } else { started.elapsed() };
    Built { key, name, outcome, compile_time, from_cache }
}
