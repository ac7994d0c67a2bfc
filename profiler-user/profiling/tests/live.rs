//! Issue #14 with real BPF (root): the `profiling` receiver changes its rate and targets while
//! it runs, through the collector's `ReceiverControl`, without reloading its programs and
//! without a gap in sampling.
//!
//! One receiver (targets: busy child A, 19 Hz, reports every second) runs about 7 s:
//! 1. ~2 s at 19 Hz; then `samples_per_second: 99` → Ok(true);
//! 2. ~2 s at 99 Hz; then targets A → B → Ok(true);
//! 3. ~1.5 s; unsupported changes → Ok(false), invalid ones → Err naming the key.
//!
//! Checked from the OTLP requests the pipeline received: every sample of A taken before the
//! change is in a profile whose period is 1e9/19 ns, every one after in 1e9/99 ns; A's samples
//! per CPU-second of A rise at least 3x (5.2x expected; per CPU-second, so a busy machine that
//! gives A less CPU does not matter); the largest gap between A's consecutive samples across the
//! change is under 0.5 s; B is sampled only after it became a target and A no more after it
//! stopped being one.

use std::{
    process::{Child, Command},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::{
    collector::profiles::v1development::ExportProfilesServiceRequest, common::v1::any_value,
};
use otelprof_collector::{
    component::{Burst, Host, Outputs, ReceiverControl, ReceiverFactory},
    consumer::{ConsumeError, Consumer},
    signal::{Data, Signal},
};
use otelprof_profiling::{metrics::ProfilerMetrics, ProfilingFactory};

const PATH: &str = "receivers.profiling";

/// Keeps every profiles request.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<ExportProfilesServiceRequest>>>);

impl Consumer for Collect {
    fn consume(&self, data: Data) -> Result<(), ConsumeError> {
        if let Data::Profiles(req) = data {
            self.0.lock().unwrap().push(req);
        }
        Ok(())
    }
}

/// A busy child, killed when dropped.
struct Busy(Child);

impl Busy {
    fn spawn() -> Self {
        Self(Command::new("sh").args(["-c", "while :; do :; done"]).spawn().expect("sh"))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// CPU seconds used so far (utime + stime).
    fn cpu_s(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = after.split(' ').skip(11).take(2).map(|v| v.parse().unwrap()).collect();
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (f[0] + f[1]) as f64 / hz
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// (timestamp ns, profile period ns) of every CPU sample of `pid`, sorted by time.
fn samples_of(reqs: &[ExportProfilesServiceRequest], pid: u32) -> Vec<(u64, i64)> {
    labelled_samples_of(reqs, pid).into_iter().map(|(t, p, _)| (t, p)).collect()
}

/// [`samples_of`] with the `profile.trigger.rule` of each sample's profile ("" without).
fn labelled_samples_of(reqs: &[ExportProfilesServiceRequest], pid: u32) -> Vec<(u64, i64, String)> {
    let mut out = Vec::new();
    for req in reqs {
        let d = req.dictionary.as_ref().expect("a dictionary");
        let rule_of = |p: &opentelemetry_proto::tonic::profiles::v1development::Profile| {
            let mut trigger = (String::new(), String::new());
            for &i in &p.attribute_indices {
                let a = &d.attribute_table[i as usize];
                let v = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(v)) => v.clone(),
                    other => panic!("a profile attribute that is not a string: {other:?}"),
                };
                match d.string_table[a.key_strindex as usize].as_str() {
                    "profile.trigger" => trigger.0 = v,
                    "profile.trigger.rule" => trigger.1 = v,
                    other => panic!("unexpected profile attribute {other}"),
                }
            }
            assert_eq!(trigger.0.is_empty(), trigger.1.is_empty(), "trigger and rule go together");
            assert!(trigger.0.is_empty() || trigger.0 == "anomaly", "{trigger:?}");
            trigger.1
        };
        for rp in &req.resource_profiles {
            let is_pid = rp.resource.as_ref().is_some_and(|r| {
                r.attributes.iter().any(|kv| {
                    kv.key == "process.pid"
                        && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()),
                            Some(any_value::Value::IntValue(p)) if *p == pid as i64)
                })
            });
            if !is_pid {
                continue;
            }
            for sp in &rp.scope_profiles {
                // The CPU profile's period is 1e9/Hz; the off-CPU profile's is 1 (not on here).
                for p in sp.profiles.iter().filter(|p| p.period > 1) {
                    let rule = rule_of(p);
                    for s in &p.samples {
                        out.extend(s.timestamps_unix_nano.iter().map(|&t| (t, p.period, rule.clone())));
                    }
                }
            }
        }
    }
    out.sort_unstable();
    out
}

fn yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).unwrap()
}

async fn reconfigure(control: &Arc<dyn ReceiverControl>, text: &str) -> Result<bool, String> {
    let (control, config) = (control.clone(), yaml(text));
    tokio::task::spawn_blocking(move || control.reconfigure(&config, PATH).map_err(|e| e.to_string())).await.unwrap()
}

/// A started `profiling` receiver whose pipeline keeps every request.
struct Running {
    control: Arc<dyn ReceiverControl>,
    collect: Collect,
    host: Host,
    done: tokio::task::JoinHandle<()>,
}

/// Creates the receiver from `config` (YAML) with `metrics` and starts it.
async fn start(config: &str, metrics: Arc<ProfilerMetrics>) -> Running {
    let factory = ProfilingFactory::new(metrics);
    let id = otelprof_collector::component::ComponentId::parse("profiling").unwrap();
    let receiver = factory.create(&id, yaml(config), PATH).unwrap();
    let control = receiver.control().expect("profiling has a live control");
    let collect = Collect::default();
    let mut outputs = Outputs::default();
    outputs.insert(Signal::Profiles, Arc::new(collect.clone()));
    let host = Host::new(Duration::from_secs(5));
    let done = receiver.start(outputs, &host).await.unwrap();
    Running { control, collect, host, done }
}

/// One BPF session at a time: the tests count samples per CPU-second of busy children.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_targets_change_live_without_a_gap() {
    if !otelprof_sampler::tracer::privileges::Caps::current().can_profile() {
        eprintln!("skipped: loading BPF needs root (or CAP_BPF + CAP_PERFMON)");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let (a, b) = (Busy::spawn(), Busy::spawn());
    let base = "reporter_interval: 1s\nsymbolize: none\nunwind: fp\nunwind_cache: { enabled: false }\n";
    let config = |hz: u32, pid: u32| format!("{base}samples_per_second: {hz}\ntargets: {{ pids: [{pid}] }}\n");

    let Running { control, collect, host, done } = start(&config(19, a.pid()), Arc::default()).await;

    // 1: 19 Hz.
    let cpu0 = a.cpu_s();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu1, before_ns) = (a.cpu_s(), now_ns());
    assert_eq!(reconfigure(&control, &config(99, a.pid())).await, Ok(true), "the rate changes live");
    let (cpu2, after_ns) = (a.cpu_s(), now_ns());

    // 2: 99 Hz.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu3, retarget_ns) = (a.cpu_s(), now_ns());
    assert_eq!(reconfigure(&control, &config(99, b.pid())).await, Ok(true), "the targets change live");
    let retargeted_ns = now_ns();

    // 3: B only; what cannot change live, and what is invalid.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b_config = config(99, b.pid());
    let unsupported = [
        format!("{b_config}unwind: auto\n").replace("unwind: fp\n", ""),
        format!("{b_config}off_cpu_threshold: 0.5\n"),
        // Every process: the loaded programs filter by the target map.
        format!("{base}samples_per_second: 99\n"),
        // By name: the loaded programs report only targets' execs.
        format!("{base}samples_per_second: 99\ntargets: {{ executables: [sh] }}\n"),
    ];
    for text in &unsupported {
        assert_eq!(reconfigure(&control, text).await, Ok(false), "{text}");
    }
    let invalid = [
        (format!("{base}samples_per_second: 0\n"), "receivers.profiling.samples_per_second:"),
        (format!("{b_config}frequency: 99\n"), "receivers.profiling.frequency:"),
        (
            format!("{b_config}reporter_interval: 1ms\n").replace("reporter_interval: 1s\n", ""),
            "receivers.profiling.reporter_interval:",
        ),
    ];
    for (text, key) in &invalid {
        let e = reconfigure(&control, text).await.unwrap_err();
        assert!(e.starts_with(key), "{text}: {e}");
    }
    host.stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), done).await.unwrap().unwrap();

    let reqs = collect.0.lock().unwrap();
    let (p19, p99) = (1_000_000_000 / 19, 1_000_000_000 / 99);
    let sa = samples_of(&reqs, a.pid());
    let sb = samples_of(&reqs, b.pid());
    // The aggregator's clock and SystemTime may differ by a little.
    let slack = 5_000_000;
    let mislabelled: Vec<_> = sa
        .iter()
        .filter(|&&(t, p)| (t + slack < before_ns && p != p19) || (t > after_ns + slack && p != p99))
        .collect();
    assert!(mislabelled.is_empty(), "samples with another rate's period: {mislabelled:?}");
    let count = |from: u64, to: u64| sa.iter().filter(|(t, _)| (from..to).contains(t)).count() as f64;
    let first = sa.first().map(|s| s.0).unwrap_or(0);
    let rate19 = count(0, before_ns) / (cpu1 - cpu0).max(0.01);
    let rate99 = count(after_ns, retarget_ns) / (cpu3 - cpu2).max(0.01);
    let wall19 = count(0, before_ns) / ((before_ns - first.min(before_ns)) as f64 / 1e9).max(0.1);
    let wall99 = count(after_ns, retarget_ns) / ((retarget_ns - after_ns) as f64 / 1e9);
    let window: Vec<u64> =
        sa.iter().map(|s| s.0).filter(|&t| t + 1_000_000_000 > before_ns && t < after_ns + 1_000_000_000).collect();
    let gap = window.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(u64::MAX);
    // At the change: the last sample reported at 19 Hz and the first at 99 Hz.
    let last19 = sa.iter().filter(|s| s.1 == p19).map(|s| s.0).max().unwrap_or(0);
    let first99 = sa.iter().filter(|s| s.1 == p99).map(|s| s.0).min().unwrap_or(u64::MAX);
    let b_early = sb.iter().filter(|(t, _)| *t + slack < retarget_ns).count();
    let a_late = sa.iter().filter(|(t, _)| *t > retargeted_ns + 300_000_000).count();
    let b_late = sb.iter().filter(|(t, _)| *t > retargeted_ns).count();
    eprintln!(
        "A: {} samples; {rate19:.1}/CPU-s at 19 Hz, {rate99:.1}/CPU-s at 99 Hz ({:.2}x; per wall s {wall19:.1} → {wall99:.1}); \
         largest gap across the change {:.1} ms ({} samples in ±1 s), last 19 Hz sample → first 99 Hz one {:.1} ms; \
         reconfigure took {:.1} ms; \
         B: {b_early} samples before it was a target, {b_late} after; A: {a_late} samples 0.3 s after it was dropped",
        sa.len(),
        rate99 / rate19,
        gap as f64 / 1e6,
        window.len(),
        first99.saturating_sub(last19) as f64 / 1e6,
        (after_ns - before_ns) as f64 / 1e6,
    );
    assert!(last19 > 0 && first99 < u64::MAX, "reports at both rates");
    assert!(rate19 > 5.0 && rate99 / rate19 >= 3.0, "the rate did not rise ~5x");
    assert!(gap < 500_000_000, "sampling paused for {} ms across the change", gap / 1_000_000);
    assert_eq!(b_early, 0, "B sampled before it was a target");
    assert!(b_late > 20, "B not sampled after it became a target");
    assert_eq!(a_late, 0, "A still sampled after it stopped being a target");
}

/// Issue #16's `burst` action: 19 Hz, then a 1.5 s burst at 99 Hz, then 19 Hz again; then a
/// 30 s burst ended early after 1 s. Every sample inside a window is in a profile at 99 Hz's
/// period labelled with its rule, every one outside at 19 Hz's without a label; the rate gauge
/// follows; a burst above the kernel's limit is refused with nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_raises_the_rate_for_its_window_only_and_labels_it() {
    if !otelprof_sampler::tracer::privileges::Caps::current().can_profile() {
        eprintln!("skipped: loading BPF needs root (or CAP_BPF + CAP_PERFMON)");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let a = Busy::spawn();
    let config = format!(
        "reporter_interval: 1s\nsymbolize: none\nunwind: fp\nunwind_cache: {{ enabled: false }}\n\
         samples_per_second: 19\ntargets: {{ pids: [{}] }}\n",
        a.pid()
    );
    let metrics = Arc::new(ProfilerMetrics::default());
    let Running { control, collect, host, done } = start(&config, metrics.clone()).await;
    let rate = || metrics.samples_per_second.load(std::sync::atomic::Ordering::Relaxed);
    let wait_rate = |hz: u64| async move {
        for _ in 0..50 {
            if rate() == hz {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the rate is {} Hz, not {hz}", rate());
    };

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rate(), 19);
    let too_fast =
        Burst { samples_per_second: 10_000_000, duration: Duration::from_secs(1), rule: "x".into(), pids: None };
    assert!(control.burst(too_fast).unwrap_err().contains("kernel's limit"));
    let b1 = now_ns();
    control
        .burst(Burst { samples_per_second: 99, duration: Duration::from_millis(1500), rule: "step".into(), pids: None })
        .unwrap();
    wait_rate(99).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    wait_rate(19).await;
    let e1 = now_ns();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b2 = now_ns();
    control
        .burst(Burst { samples_per_second: 99, duration: Duration::from_secs(30), rule: "long".into(), pids: None })
        .unwrap();
    wait_rate(99).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    control.end_burst();
    wait_rate(19).await;
    let e2 = now_ns();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let a_cpu_s = a.cpu_s();
    host.stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), done).await.unwrap().unwrap();
    assert_eq!(metrics.bursts.load(std::sync::atomic::Ordering::Relaxed), 2);

    // The CPU time per process (the anomaly receiver's target_cpu signal) from the samples,
    // each interval at its own rate, next to what the kernel says A used.
    let by_target = control.cpu_by_target().expect("the profiler measures CPU per process");
    let mine: Vec<_> = by_target.targets.iter().filter(|t| t.pid == a.pid()).collect();
    assert_eq!(mine.len(), 1, "{by_target:?}");
    let measured_s = mine[0].cpu_ns as f64 / 1e9;
    eprintln!(
        "A: {measured_s:.2} CPU-s from the samples, {a_cpu_s:.2} from /proc; {:.2} s covered",
        by_target.covered_ns as f64 / 1e9
    );
    assert!(measured_s > 0.6 * a_cpu_s && measured_s < 1.3 * a_cpu_s, "{measured_s} vs {a_cpu_s}");
    assert_eq!(mine[0].name, "sh");

    let reqs = collect.0.lock().unwrap();
    let (p19, p99) = (1_000_000_000 / 19, 1_000_000_000 / 99);
    let s = labelled_samples_of(&reqs, a.pid());
    let slack = 5_000_000;
    let inside = |t: u64, from: u64, to: u64| t + slack >= from && t <= to + slack;
    let wrong: Vec<_> = s
        .iter()
        .filter(|(t, p, rule)| {
            let expect = if inside(*t, b1, e1) {
                Some("step")
            } else if inside(*t, b2, e2) {
                Some("long")
            } else {
                None
            };
            match (expect, rule.as_str()) {
                // Samples within a few ms of an edge may fall on either side.
                (Some(r), got) => !((got == r && *p == p99) || (got.is_empty() && *p == p19)),
                (None, got) => !(got.is_empty() && *p == p19),
            }
        })
        .collect();
    assert!(wrong.is_empty(), "samples labelled or timed against their window: {wrong:?}");
    let count = |rule: &str| s.iter().filter(|x| x.2 == rule).count();
    let before = s.iter().filter(|x| x.0 + slack < b1).count();
    let after = s.iter().filter(|x| x.0 > e2 + slack).count();
    eprintln!(
        "{} samples: {before} before, {} in `step`, {} in `long`, {after} after",
        s.len(),
        count("step"),
        count("long")
    );
    assert!(count("step") > 60, "1.5 s at 99 Hz of a busy child");
    assert!(count("long") > 40, "1 s at 99 Hz of a busy child");
    assert!(before > 10 && after > 10, "19 Hz before and after");
    assert!(count("long") < 160, "the long burst ended early");
}

/// A burst of one process: A is sampled at 99 Hz and labelled for the window, B (busy too,
/// also a target) keeps 19 Hz, unlabelled, its extra samples thinned and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_one_process_leaves_the_others_at_their_rate() {
    if !otelprof_sampler::tracer::privileges::Caps::current().can_profile() {
        eprintln!("skipped: loading BPF needs root (or CAP_BPF + CAP_PERFMON)");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let (a, b) = (Busy::spawn(), Busy::spawn());
    let config = format!(
        "reporter_interval: 1s\nsymbolize: none\nunwind: fp\nunwind_cache: {{ enabled: false }}\n\
         samples_per_second: 19\ntargets: {{ pids: [{}, {}] }}\n",
        a.pid(),
        b.pid()
    );
    let metrics = Arc::new(ProfilerMetrics::default());
    let Running { control, collect, host, done } = start(&config, metrics.clone()).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (a0, b0) = (a.cpu_s(), b.cpu_s());
    let from = now_ns();
    let burst =
        Burst { samples_per_second: 99, duration: Duration::from_secs(3), rule: "a".into(), pids: Some(vec![a.pid()]) };
    control.burst(burst).unwrap();
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let (a1, b1, to) = (a.cpu_s(), b.cpu_s(), now_ns());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    host.stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), done).await.unwrap().unwrap();
    let thinned = metrics.thinned.load(std::sync::atomic::Ordering::Relaxed);

    let reqs = collect.0.lock().unwrap();
    let (p19, p99) = (1_000_000_000 / 19, 1_000_000_000 / 99);
    let sa = labelled_samples_of(&reqs, a.pid());
    let sb = labelled_samples_of(&reqs, b.pid());
    let slack = 20_000_000;
    let in_window = |t: u64| t > from + slack && t + slack < to.min(from + 3_000_000_000);
    let a_in: Vec<_> = sa.iter().filter(|s| in_window(s.0)).collect();
    let b_in: Vec<_> = sb.iter().filter(|s| in_window(s.0)).collect();
    assert!(a_in.iter().all(|s| s.1 == p99 && s.2 == "a"), "A in the window: {a_in:?}");
    assert!(sb.iter().all(|s| s.1 == p19 && s.2.is_empty()), "B is never part of the burst: {sb:?}");
    let window_s = (to.min(from + 3_000_000_000) - from - 2 * slack) as f64 / 1e9;
    let (a_share, b_share) = ((a1 - a0) / 3.3, (b1 - b0) / 3.3);
    let a_rate = a_in.len() as f64 / (window_s * a_share);
    let b_rate = b_in.len() as f64 / (window_s * b_share);
    eprintln!(
        "in the window: A {} samples ({a_rate:.1}/CPU-s), B {} ({b_rate:.1}/CPU-s); {thinned} thinned",
        a_in.len(),
        b_in.len()
    );
    assert!(a_rate > 60.0, "A at ~99 Hz per CPU-second: {a_rate}");
    assert!(b_rate > 10.0 && b_rate < 30.0, "B at ~19 Hz per CPU-second: {b_rate}");
    assert!(thinned > 50, "B's extra samples counted: {thinned}");
}
