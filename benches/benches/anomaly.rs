//! The anomaly loop's analysis (issue #16): one tick of the `anomaly` receiver's loop without its
//! timer and actions, as `profiler-user/collector/src/receiver/anomaly/mod.rs` runs it every
//! `interval`: read the node's CPU times (`/proc/stat`), the utilisation since the last tick, and
//! one point through the engine (every rule's detector and, on a trigger, the caps).
//!
//! Two configurations: the default rule (`receivers: { anomaly: {} }`), and 10 rules on the
//! same signal (each point goes to every rule's detector). The series is the machine's real one,
//! so the detectors see what they would (a quiet or busy bench machine: rarely a trigger).
//! `cargo xtask bench` turns ns per tick into CPU % at 1 s and 500 ms intervals.

use std::{hint::black_box, path::Path, time::Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use otelprof_collector::receiver::anomaly::{
    config::{AnomalyConfig, SignalKind},
    cpu::CpuTimes,
    engine::Engine,
};

fn config(rules: usize) -> AnomalyConfig {
    let yaml = if rules == 1 {
        "{}".to_string()
    } else {
        let list: Vec<String> = (0..rules).map(|i| format!("{{ name: rule-{i}, signal: node_cpu }}")).collect();
        format!("{{ rules: [{}] }}", list.join(", "))
    };
    let value = serde_yaml::from_str(&yaml).expect("YAML");
    AnomalyConfig::parse("receivers.anomaly", value).expect("an anomaly config")
}

fn tick(c: &mut Criterion) {
    let stat = Path::new("/proc/stat");
    let mut g = c.benchmark_group("anomaly_tick");
    g.throughput(Throughput::Elements(1));
    for (name, rules) in [("default_rule", 1), ("10_rules", 10)] {
        let cfg = config(rules);
        assert_eq!(cfg.rules.len(), rules);
        let mut engine = Engine::new(&cfg);
        let mut prev = CpuTimes::read(stat).expect("/proc/stat");
        g.bench_function(name, |b| {
            b.iter(|| {
                let times = CpuTimes::read(stat).expect("/proc/stat");
                // Between two reads microseconds apart the jiffies rarely move: `None`, which the
                // loop skips; a quiet node's 5 % stands in then, so every tick observes a point.
                let u = times.utilisation_since(&prev).unwrap_or(0.05);
                prev = times;
                black_box(engine.observe(SignalKind::NodeCpu, "node", black_box(u), Instant::now()))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, tick);
criterion_main!(benches);
