//! The `memory_limiter` processor: refuses data, retryably, while the process uses more memory
//! than its soft limit, so receivers push back on their senders instead of the agent running
//! out of memory.
//!
//! ```yaml
//! processors:
//!   memory_limiter:
//!     check_interval: 1s          # required, > 0
//!     limit_mib: 400              # the hard limit; or limit_percentage of total memory
//!     spike_limit_mib: 80         # default 20% of the limit; soft limit = limit - spike
//! ```
//!
//! Every `check_interval` a timer task reads how much memory the process uses. At or above
//! the soft limit (`limit - spike`) every pipeline with this processor refuses new data with a
//! retryable refusal whose `retry_after` is `check_interval`, until a check finds usage below
//! the soft limit again. State changes are logged, not individual refusals; refused items are
//! counted as `otelcol_processor_refused_{spans,metric_points,log_records,profile_samples}`.
//!
//! Differences from the Collector, which limits the Go heap:
//! - Usage is the process's **resident set size** (`/proc/self/statm`), which is what the
//!   kernel's OOM killer and a container's memory limit see; there is no GC heap to read. RSS
//!   includes the profiler's own maps and caches, so leave room for them in the limit.
//! - Where the Collector forces a garbage collection (above the hard limit, and above the soft
//!   limit at most every `min_gc_interval_when_soft_limited`), otelprof asks the allocator to
//!   give freed memory back to the kernel (`malloc_trim(0)`, glibc only) and checks again.
//! - `limit_percentage` / `spike_limit_percentage` are of the cgroup v2 `memory.max` of the
//!   process's cgroup (the smallest along its path) when one is set, else of `MemTotal` in
//!   `/proc/meminfo`. cgroup v1 limits are not read.
//!
//! One limiter (one timer task) serves every pipeline its processor id is in, as in the
//! Collector.

use std::{
    io,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    component::{BuildProcessor, ComponentError, ComponentId, Host, Processor, ProcessorFactory},
    config::{deserialize_at, ConfigError},
    consumer::{ConsumeError, Consumer},
    health::Liveness,
    signal::{Data, Signal},
    telemetry::{add, ProcessorMetrics, Value},
};

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default, with = "humantime_serde")]
    check_interval: Duration,
    #[serde(default = "default_min_gc_soft", with = "humantime_serde")]
    min_gc_interval_when_soft_limited: Duration,
    #[serde(default, with = "humantime_serde")]
    min_gc_interval_when_hard_limited: Duration,
    #[serde(default)]
    limit_mib: u32,
    #[serde(default)]
    spike_limit_mib: u32,
    #[serde(default)]
    limit_percentage: u32,
    #[serde(default)]
    spike_limit_percentage: u32,
}

fn default_min_gc_soft() -> Duration {
    Duration::from_secs(10)
}

impl Config {
    /// The Collector's checks, in its order; errors name the key.
    fn check(&self, path: &str) -> Result<(), ConfigError> {
        let err = |key: &str, msg: &str| Err(ConfigError::new(format!("{path}.{key}"), msg));
        if self.check_interval.is_zero() {
            return err("check_interval", "must be greater than zero (1s is a good value)");
        }
        if self.min_gc_interval_when_soft_limited < self.min_gc_interval_when_hard_limited {
            return err("min_gc_interval_when_soft_limited", "must not be less than min_gc_interval_when_hard_limited");
        }
        if self.limit_mib == 0 && self.limit_percentage == 0 {
            return err("limit_mib", "limit_mib or limit_percentage must be greater than zero");
        }
        if self.limit_percentage > 100 {
            return err("limit_percentage", "must be at most 100");
        }
        if self.spike_limit_percentage > 100 {
            return err("spike_limit_percentage", "must be at most 100");
        }
        if self.limit_mib > 0 && self.limit_mib <= self.spike_limit_mib {
            return err("spike_limit_mib", "must be less than limit_mib");
        }
        if self.limit_percentage > 0 && self.limit_percentage <= self.spike_limit_percentage {
            return err("spike_limit_percentage", "must be less than limit_percentage");
        }
        Ok(())
    }

    /// Hard and soft limits in bytes; `total` (total memory) is read only for percentages.
    fn limits(&self, total: impl FnOnce() -> io::Result<u64>) -> io::Result<(u64, u64)> {
        let (hard, spike) = if self.limit_mib != 0 {
            (u64::from(self.limit_mib) * MIB, u64::from(self.spike_limit_mib) * MIB)
        } else {
            let total = total()?;
            (u64::from(self.limit_percentage) * total / 100, u64::from(self.spike_limit_percentage) * total / 100)
        };
        let spike = if spike == 0 { hard / 5 } else { spike };
        Ok((hard, hard.saturating_sub(spike)))
    }
}

/// Where the limiter reads how much memory the process uses (a fake one in tests).
pub trait MemorySource: Send + Sync + 'static {
    /// Bytes in use now.
    fn used(&self) -> io::Result<u64>;
}

/// The process's resident set size, from `/proc/self/statm`.
pub struct ProcessRss;

impl MemorySource for ProcessRss {
    fn used(&self) -> io::Result<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm")?;
        let pages: u64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("unexpected /proc/self/statm: {statm:?}"))
        })?;
        // SAFETY: sysconf only reads a system setting.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Ok(pages * u64::try_from(page).unwrap_or(4096))
    }
}

/// Asks the allocator to return freed memory to the kernel: the closest thing to the
/// Collector's forced GC.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Total memory available to the process: the cgroup v2 limit when one is set, else
/// `MemTotal`.
pub fn total_memory() -> io::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let total = meminfo_total(&meminfo)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no MemTotal in /proc/meminfo"))?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok().and_then(|c| cgroup_v2_path(&c).map(str::to_string));
    let limit = cgroup.and_then(|p| cgroup_limit(Path::new("/sys/fs/cgroup"), &p));
    Ok(limit.map_or(total, |l| l.min(total)))
}

/// `MemTotal` in bytes from `/proc/meminfo`.
fn meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// The cgroup v2 path (`0::/path`) from `/proc/self/cgroup`.
fn cgroup_v2_path(cgroup: &str) -> Option<&str> {
    cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The smallest `memory.max` along `path` and its parents under `root`; `max` means none.
fn cgroup_limit(root: &Path, path: &str) -> Option<u64> {
    let mut dir = path.trim_matches('/');
    let mut best: Option<u64> = None;
    loop {
        let file = if dir.is_empty() { root.join("memory.max") } else { root.join(dir).join("memory.max") };
        if let Some(limit) = std::fs::read_to_string(file).ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            best = Some(best.map_or(limit, |b| b.min(limit)));
        }
        if dir.is_empty() {
            return best;
        }
        dir = dir.rsplit_once('/').map_or("", |(parent, _)| parent);
    }
}

pub struct MemoryLimiterFactory;

impl ProcessorFactory for MemoryLimiterFactory {
    fn kind(&self) -> &'static str {
        "memory_limiter"
    }

    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn create(
        &self,
        id: &ComponentId,
        config: serde_yaml::Value,
        path: &str,
    ) -> Result<Box<dyn BuildProcessor>, ConfigError> {
        Ok(Box::new(Build::parse(id, config, path)?))
    }
}

/// What frees memory when over a limit (counted in tests).
type Release = Arc<dyn Fn() + Send + Sync>;

struct Build {
    id: String,
    config: Config,
    source: Arc<dyn MemorySource>,
    release: Release,
    total: fn() -> io::Result<u64>,
    /// The limiter of every pipeline this processor is in, made at the first build.
    shared: Mutex<Option<Arc<Shared>>>,
}

impl Build {
    fn parse(id: &ComponentId, config: serde_yaml::Value, path: &str) -> Result<Self, ConfigError> {
        let config: Config = deserialize_at(path, config)?;
        config.check(path)?;
        Ok(Build {
            id: id.to_string(),
            config,
            source: Arc::new(ProcessRss),
            release: Arc::new(release_free_memory),
            total: total_memory,
            shared: Mutex::new(None),
        })
    }

    fn shared(&self, host: &Host) -> Result<Arc<Shared>, ComponentError> {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = shared.as_ref() {
            return Ok(s.clone());
        }
        let (hard, soft) = self.config.limits(self.total).map_err(|e| {
            ComponentError::new(
                &self.id,
                format!("cannot read the total memory for limit_percentage ({e}); use limit_mib"),
            )
        })?;
        tracing::info!(
            processor = %self.id,
            limit_mib = hard / MIB,
            soft_limit_mib = soft / MIB,
            check_interval = ?self.config.check_interval,
            "memory limiter configured (on the process's resident set size)"
        );
        let limiter = Arc::new(Limiter {
            id: self.id.clone(),
            hard,
            soft,
            check_interval: self.config.check_interval,
            min_gc_soft: self.config.min_gc_interval_when_soft_limited,
            min_gc_hard: self.config.min_gc_interval_when_hard_limited,
            source: self.source.clone(),
            release: self.release.clone(),
            refusing: AtomicBool::new(false),
            last_release: Mutex::new(Instant::now()),
            read_failures: AtomicU64::new(0),
        });
        let s = Arc::new(Shared { limiter, timer: Mutex::new(Timer::default()), health: host.health.clone() });
        *shared = Some(s.clone());
        Ok(s)
    }
}

impl BuildProcessor for Build {
    fn build(
        &self,
        signal: Signal,
        next: Arc<dyn Consumer>,
        host: &Host,
    ) -> Result<Arc<dyn Processor>, ComponentError> {
        let shared = self.shared(host)?;
        shared.join()?;
        Ok(Arc::new(MemoryLimiter {
            shared,
            next,
            metrics: host.telemetry.processor(&self.id, signal),
            refused: host.telemetry.counter(
                &format!("otelcol_processor_refused_{}", signal.items()),
                "Items refused by the memory limiter because memory usage was above its soft limit.",
                &[("processor", &self.id)],
            ),
            stopped: AtomicBool::new(false),
        }))
    }
}

/// The checks and the refusing state, shared by the pipelines and the timer task.
struct Limiter {
    id: String,
    hard: u64,
    soft: u64,
    check_interval: Duration,
    min_gc_soft: Duration,
    min_gc_hard: Duration,
    source: Arc<dyn MemorySource>,
    release: Release,
    refusing: AtomicBool,
    last_release: Mutex<Instant>,
    read_failures: AtomicU64,
}

impl Limiter {
    fn refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }

    fn read(&self) -> Option<u64> {
        match self.source.used() {
            Ok(used) => Some(used),
            Err(e) => {
                let k = self.read_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if k.is_power_of_two() {
                    tracing::warn!(processor = %self.id, failures = k, "cannot read memory usage: {e}");
                }
                None
            }
        }
    }

    /// One check: refuse at or above the soft limit, free memory when over a limit for long
    /// enough, resume below the soft limit. A failed read changes nothing.
    async fn check(&self) {
        let Some(mut used) = self.read() else { return };
        tracing::debug!(processor = %self.id, used_mib = used / MIB, "memory usage");
        if used >= self.soft {
            let hard = used >= self.hard;
            let min_gap = if hard { self.min_gc_hard } else { self.min_gc_soft };
            let due = self.last_release.lock().unwrap_or_else(|e| e.into_inner()).elapsed() > min_gap;
            if due {
                let limit = if hard { "hard" } else { "soft" };
                tracing::info!(
                    processor = %self.id,
                    used_mib = used / MIB,
                    "memory usage is above the {limit} limit; returning freed memory to the kernel"
                );
                let release = self.release.clone();
                let _ = tokio::task::spawn_blocking(move || release()).await;
                *self.last_release.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                if let Some(after) = self.read() {
                    tracing::info!(processor = %self.id, used_mib = after / MIB, "memory usage after release");
                    used = after;
                }
            }
        }
        let above = used >= self.soft;
        let was = self.refusing.swap(above, Ordering::Relaxed);
        if above && !was {
            tracing::warn!(
                processor = %self.id,
                used_mib = used / MIB,
                soft_limit_mib = self.soft / MIB,
                "memory usage is above the soft limit; refusing data"
            );
        } else if !above && was {
            tracing::info!(processor = %self.id, used_mib = used / MIB, "memory usage back within limits; taking data again");
        }
    }
}

#[derive(Default)]
struct Timer {
    /// Pipelines built and not shut down.
    users: usize,
    task: Option<(CancellationToken, JoinHandle<()>)>,
}

/// The limiter and its timer task, shared by the pipelines of one processor id.
struct Shared {
    limiter: Arc<Limiter>,
    timer: Mutex<Timer>,
    health: crate::health::Health,
}

impl Shared {
    fn timer(&self) -> MutexGuard<'_, Timer> {
        self.timer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pipeline starts using the limiter; the first one starts the timer task.
    fn join(&self) -> Result<(), ComponentError> {
        let mut t = self.timer();
        if t.task.is_none() {
            let id = &self.limiter.id;
            let runtime = tokio::runtime::Handle::try_current()
                .map_err(|_| ComponentError::new(id, "the memory limiter must be built inside the tokio runtime"))?;
            let stop = CancellationToken::new();
            let health = self.health.register(format!("processor/{id}"), Liveness::Running);
            let task = runtime.spawn(health.watch_task(run_checks(self.limiter.clone(), stop.clone())));
            t.task = Some((stop, task));
        }
        t.users += 1;
        Ok(())
    }

    /// A pipeline stops using the limiter; the last one stops the timer task.
    async fn leave(&self) {
        let task = {
            let mut t = self.timer();
            t.users = t.users.saturating_sub(1);
            if t.users > 0 {
                return;
            }
            t.task.take()
        };
        if let Some((stop, task)) = task {
            stop.cancel();
            let _ = task.await;
        }
    }
}

/// Checks at once, then every `check_interval`, until stopped.
async fn run_checks(limiter: Arc<Limiter>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(limiter.check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => limiter.check().await,
        }
    }
}

/// The memory limiter in one pipeline.
pub struct MemoryLimiter {
    shared: Arc<Shared>,
    next: Arc<dyn Consumer>,
    metrics: ProcessorMetrics,
    refused: Value,
    stopped: AtomicBool,
}

impl Consumer for MemoryLimiter {
    fn consume(&self, data: Data) -> Result<(), ConsumeError> {
        let n = data.items();
        add(&self.metrics.incoming, n);
        let limiter = &self.shared.limiter;
        if limiter.refusing() {
            add(&self.refused, n);
            return Err(ConsumeError::Refused {
                reason: format!("{}: memory usage is above the soft limit of {} MiB", limiter.id, limiter.soft / MIB),
                retry_after: Some(limiter.check_interval),
            });
        }
        self.next.consume(data)?;
        add(&self.metrics.outgoing, n);
        Ok(())
    }
}

#[async_trait]
impl Processor for MemoryLimiter {
    async fn shutdown(&self) {
        if !self.stopped.swap(true, Ordering::Relaxed) {
            self.shared.leave().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{consumer::testing::Sink, processor::pdata::testing::traces};

    /// Memory usage set by the test.
    #[derive(Default)]
    struct Fake {
        used: AtomicU64,
        /// Usage after a release, if it frees anything.
        after_release: Mutex<Option<u64>>,
        releases: AtomicU64,
    }

    impl MemorySource for Fake {
        fn used(&self) -> io::Result<u64> {
            Ok(self.used.load(Ordering::Relaxed))
        }
    }

    fn build(yaml: &str, fake: &Arc<Fake>) -> Build {
        let id = ComponentId::parse("memory_limiter").unwrap();
        let mut b = Build::parse(&id, serde_yaml::from_str(yaml).unwrap(), "processors.memory_limiter").unwrap();
        b.source = fake.clone();
        let f = fake.clone();
        b.release = Arc::new(move || {
            f.releases.fetch_add(1, Ordering::Relaxed);
            if let Some(after) = *f.after_release.lock().unwrap() {
                f.used.store(after, Ordering::Relaxed);
            }
        });
        b.total = || Ok(1000 * MIB);
        b
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_above_the_soft_limit_and_takes_data_again_below_it() {
        let host = Host::new(Duration::from_secs(1));
        let fake = Arc::new(Fake::default());
        fake.used.store(50 * MIB, Ordering::Relaxed);
        let b = build("{check_interval: 1s, limit_mib: 100, spike_limit_mib: 20}", &fake);
        let sink = Arc::new(Sink::default());
        let traces_p = b.build(Signal::Traces, sink.clone(), &host).unwrap();
        let logs_p = b.build(Signal::Logs, sink.clone(), &host).unwrap();
        let limiter = b.shared(&host).unwrap().limiter.clone();
        assert_eq!((limiter.hard, limiter.soft), (100 * MIB, 80 * MIB));

        // The first check, at once, sees 50 MiB.
        tokio::time::sleep(Duration::from_millis(1)).await;
        traces_p.consume(traces(0, &[&[2]])).unwrap();
        fake.used.store(80 * MIB, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(998)).await;
        traces_p.consume(traces(0, &[&[2]])).unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        // The check at 1 s saw 80 MiB: at the soft limit.
        let e = traces_p.consume(traces(0, &[&[3]])).unwrap_err();
        assert_eq!(
            e,
            ConsumeError::Refused {
                reason: "memory_limiter: memory usage is above the soft limit of 80 MiB".into(),
                retry_after: Some(Duration::from_secs(1)),
            }
        );
        assert!(logs_p.consume(crate::processor::pdata::testing::logs(0, &[&[1]])).is_err(), "every pipeline");
        assert_eq!(fake.releases.load(Ordering::Relaxed), 0, "soft-limited: no release within 10 s of start");

        fake.used.store(79 * MIB, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        traces_p.consume(traces(0, &[&[1]])).unwrap();
        assert_eq!(sink.got.lock().unwrap().len(), 3);

        let mut out = String::new();
        host.telemetry.render(&mut out);
        assert!(out.contains("otelcol_processor_refused_spans_total{processor=\"memory_limiter\"} 3\n"), "{out}");
        assert!(out.contains("otelcol_processor_refused_log_records_total{processor=\"memory_limiter\"} 1\n"), "{out}");

        host.health.shutting_down();
        traces_p.shutdown().await;
        assert!(b.shared(&host).unwrap().timer().task.is_some(), "the logs pipeline still uses it");
        logs_p.shutdown().await;
        assert!(b.shared(&host).unwrap().timer().task.is_none(), "the last one stops the timer");
        assert_eq!(host.health.check(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn above_the_hard_limit_memory_is_released_and_a_successful_release_avoids_refusing() {
        let host = Host::new(Duration::from_secs(1));
        let fake = Arc::new(Fake::default());
        let b = build("{check_interval: 1s, limit_mib: 100}", &fake);
        // The limiter alone, without the timer task: the test runs the checks.
        let limiter = b.shared(&host).unwrap().limiter.clone();
        assert_eq!(limiter.soft, 80 * MIB, "spike defaults to 20%");

        fake.used.store(120 * MIB, Ordering::Relaxed);
        *fake.after_release.lock().unwrap() = Some(60 * MIB);
        tokio::time::advance(Duration::from_millis(1)).await;
        limiter.check().await;
        assert_eq!(fake.releases.load(Ordering::Relaxed), 1);
        assert!(!limiter.refusing(), "the release brought usage below the soft limit");

        // Released memory that does not come back: refuse.
        fake.used.store(120 * MIB, Ordering::Relaxed);
        *fake.after_release.lock().unwrap() = None;
        tokio::time::advance(Duration::from_millis(1)).await;
        limiter.check().await;
        assert_eq!(fake.releases.load(Ordering::Relaxed), 2, "min_gc_interval_when_hard_limited is 0");
        assert!(limiter.refusing());

        // Between the limits: released at most every min_gc_interval_when_soft_limited (10 s).
        fake.used.store(90 * MIB, Ordering::Relaxed);
        tokio::time::advance(Duration::from_secs(9)).await;
        limiter.check().await;
        assert_eq!(fake.releases.load(Ordering::Relaxed), 2);
        tokio::time::advance(Duration::from_secs(2)).await;
        limiter.check().await;
        assert_eq!(fake.releases.load(Ordering::Relaxed), 3);
        assert!(limiter.refusing());
    }

    #[test]
    fn percentages_are_of_total_memory_and_config_errors_name_the_key() {
        let c = |y: &str| -> Result<Config, ConfigError> {
            let c: Config = deserialize_at("processors.memory_limiter", serde_yaml::from_str(y).unwrap())?;
            c.check("processors.memory_limiter")?;
            Ok(c)
        };
        let p = c("{check_interval: 1s, limit_percentage: 80, spike_limit_percentage: 15}").unwrap();
        assert_eq!(p.limits(|| Ok(1000 * MIB)).unwrap(), (800 * MIB, 650 * MIB));
        let m = c("{check_interval: 1s, limit_mib: 100, limit_percentage: 50}").unwrap();
        assert_eq!(m.limits(|| panic!("not read")).unwrap().0, 100 * MIB, "limit_mib wins");
        for (yaml, key) in [
            ("{limit_mib: 100}", "check_interval"),
            ("{check_interval: 1s}", "limit_mib"),
            ("{check_interval: 1s, limit_mib: 100, spike_limit_mib: 100}", "spike_limit_mib"),
            ("{check_interval: 1s, limit_percentage: 101}", "limit_percentage"),
            ("{check_interval: 1s, limit_percentage: 50, spike_limit_percentage: 50}", "spike_limit_percentage"),
            (
                "{check_interval: 1s, limit_mib: 1, min_gc_interval_when_hard_limited: 1m}",
                "min_gc_interval_when_soft_limited",
            ),
            ("{check_interval: 1s, limit_mib: -1}", "limit_mib"),
            ("{check_interval: 1s, limit_mib: 1, ballast_size_mib: 5}", "ballast_size_mib"),
        ] {
            let e = c(yaml).unwrap_err();
            assert_eq!(e.path, format!("processors.memory_limiter.{key}"), "{yaml}: {e}");
        }
    }

    #[test]
    fn reads_meminfo_and_cgroup_v2_limits() {
        assert_eq!(meminfo_total("MemFree: 1 kB\nMemTotal:       16384 kB\n"), Some(16384 * 1024));
        assert_eq!(
            cgroup_v2_path("12:cpu:/x\n0::/system.slice/otelprof.service\n"),
            Some("/system.slice/otelprof.service")
        );
        let root = std::env::temp_dir().join(format!("otelprof-cgroup-{}", std::process::id()));
        let leaf = root.join("a/b");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(root.join("a/memory.max"), "1048576\n").unwrap();
        std::fs::write(leaf.join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit(&root, "/a/b"), Some(1048576), "the parent's limit applies");
        std::fs::write(leaf.join("memory.max"), "4096\n").unwrap();
        assert_eq!(cgroup_limit(&root, "/a/b"), Some(4096));
        assert_eq!(cgroup_limit(&root, "/"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn reads_this_process_rss_and_total_memory() {
        let total = total_memory().unwrap();
        let before = ProcessRss.used().unwrap();
        assert!(before > MIB && before < total, "{before} of {total}");
        // Touch 64 MiB: the resident set grows by about that much.
        let block = std::hint::black_box(vec![1u8; 64 * MIB as usize]);
        let after = ProcessRss.used().unwrap();
        assert!(after >= before + 32 * MIB, "{before} → {after}");
        std::hint::black_box(block);
    }
}
