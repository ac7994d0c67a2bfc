//! The `anomaly` receiver: the edge anomaly loop (issue #16) — sense → analyse → decide → act —
//! in the agent, as a receiver of logs (docs/design/0010).
//!
//! Every `interval` it reads the signals its rules watch ([`cpu`]: the node's CPU utilisation;
//! `target_cpu`: each process's, service's or container's share of the node's CPUs from the
//! profiler's own samples, through its [`ReceiverControl::cpu_by_target`](crate::component::ReceiverControl::cpu_by_target)),
//! feeds each rule's detector ([`detect`]: winsorized EWMA with a Z-score, warm-up, floor,
//! ceiling and k-of-n confirmation) and asks the caps ([`limit`]: cooldown per target, per
//! target and node-wide windows) whether a trigger may act. The actions are a closed set:
//! `burst` raises the profiling receiver's rate for a bounded window through its
//! [`ReceiverControl`](crate::component::ReceiverControl) (found in the host's registry, so it
//! follows a reload), and `event` sends a WARN log record ([`event`]) down the receiver's logs
//! pipelines. While a burst runs, the agent's own CPU use is watched over windows of 2 s: above
//! `budget.agent_cpu` the burst ends early. The agent never runs a command.
//!
//! A receiver because its output is data (the event records) that pipelines process and export
//! like any other, and because its rules are then an ordinary component config: a remote
//! (OpAMP) config changes them through the same verified swap, restarting the loop (its
//! baselines warm up again).
//!
//! Own metrics: `otelprof_anomaly_points_total{receiver,rule}`,
//! `otelprof_anomaly_triggers_total{receiver,rule,outcome}` (outcome `acted`, `cooldown`,
//! `target_cap`, `global_cap`), `otelprof_anomaly_bursts_total{receiver,outcome}` (`started`,
//! `failed`, `ended_early`), `otelprof_anomaly_signal_errors_total{receiver}`, and the
//! Collector's `otelcol_receiver_accepted_log_records` for the events.
//!
//! The same loop runs as the `anomaly` **connector** (`crate::connector::anomaly`) when rules
//! watch metrics ([`metric`]: gauges and sums chosen by an OTTL condition): a metrics pipeline
//! exports to it and a logs pipeline receives its events. The receiver form refuses metric
//! rules (it has no input pipeline).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    component::{Burst, ComponentError, ComponentId, CpuByTarget, Host, Outputs, Receiver, ReceiverFactory, TargetCpu},
    config::ConfigError,
    consumer::Consumer,
    health::{HealthHandle, Liveness},
    signal::{Data, Signal},
    telemetry::{add, Telemetry, Value},
};

pub mod config;
pub mod cpu;
pub mod detect;
pub mod engine;
pub mod event;
pub mod limit;
pub mod metric;

use config::{Action, AnomalyConfig, BurstScope, GroupBy, SignalKind};
use engine::{Engine, Point};
use event::{BurstOutcome, Event};
use limit::Denied;
use metric::MetricPoint;

/// Makes `anomaly` receivers.
pub struct AnomalyReceiverFactory;

impl ReceiverFactory for AnomalyReceiverFactory {
    fn kind(&self) -> &'static str {
        "anomaly"
    }

    fn signals(&self) -> &'static [Signal] {
        &[Signal::Logs]
    }

    fn create(
        &self,
        id: &ComponentId,
        config: serde_yaml::Value,
        path: &str,
    ) -> Result<Box<dyn Receiver>, ConfigError> {
        let config = AnomalyConfig::parse(path, config)?;
        if let Some(i) = config.rules.iter().position(|r| r.signal == SignalKind::Metric) {
            return Err(ConfigError::new(
                format!("{path}.rules[{i}].signal"),
                "a metric rule reads a metrics pipeline: declare the loop under `connectors:` (a metrics \
                 pipeline exports to it, a logs pipeline receives its events) instead of `receivers:`",
            ));
        }
        Ok(Box::new(AnomalyReceiver { id: id.to_string(), config }))
    }
}

/// The loop with its config checked, not started.
pub struct AnomalyReceiver {
    id: String,
    config: AnomalyConfig,
}

/// The loop's own counters.
struct Metrics {
    telemetry: Arc<Telemetry>,
    /// `receiver` or `connector`: the label naming the component.
    kind: &'static str,
    id: String,
    accepted: Value,
    refused: Value,
    signal_errors: Value,
}

impl Metrics {
    fn counter(&self, name: &str, help: &'static str, labels: &[(&str, &str)]) -> Value {
        let mut all = vec![(self.kind, self.id.as_str())];
        all.extend_from_slice(labels);
        self.telemetry.counter(name, help, &all)
    }

    fn point(&self, rule: &str) {
        add(&self.counter("otelprof_anomaly_points", "Points judged by an anomaly rule.", &[("rule", rule)]), 1);
    }

    fn trigger(&self, rule: &str, outcome: &str) {
        let help = "Anomaly rule triggers, by whether the caps let them act.";
        add(&self.counter("otelprof_anomaly_triggers", help, &[("rule", rule), ("outcome", outcome)]), 1);
    }

    fn burst(&self, outcome: &str) {
        let help = "Bursts the anomaly loop started, could not start, or ended early (budget).";
        add(&self.counter("otelprof_anomaly_bursts", help, &[("outcome", outcome)]), 1);
    }
}

#[async_trait]
impl Receiver for AnomalyReceiver {
    async fn start(self: Box<Self>, outputs: Outputs, host: &Host) -> Result<JoinHandle<()>, ComponentError> {
        let next = outputs
            .get(Signal::Logs)
            .cloned()
            .ok_or_else(|| ComponentError::new(&self.id, "not in any logs pipeline (its events are log records)"))?;
        let (looped, first) = Loop::new("receiver", self.id, self.config, next, host, None)?;
        Ok(tokio::spawn(looped.run(first)))
    }
}

const PROC_STAT: &str = "/proc/stat";

/// A burst this loop started and still watches.
struct Bursting {
    until: Instant,
    /// The agent's CPU time and the wall time when the current budget window began.
    cpu: Duration,
    at: Instant,
}

/// The agent's CPU use during a burst is judged over windows of at least this long: the first
/// moments of a burst include reporting the interval it cut (symbolizing a whole report),
/// which is not the burst's cost.
const BUDGET_WINDOW: Duration = Duration::from_secs(2);

pub(crate) struct Loop {
    id: String,
    cfg: AnomalyConfig,
    next: Arc<dyn Consumer>,
    host: Host,
    metrics: Metrics,
    health: HealthHandle,
    bursting: Option<Bursting>,
    /// The node's CPUs: a target's share is its CPU time over this many CPUs' wall time.
    cpus: usize,
    /// The profiler's per-process totals at the last look (`target_cpu`).
    last_targets: Option<CpuByTarget>,
    /// The `metric` rules' points, from the connector's `consume`.
    metric_points: Option<mpsc::Receiver<MetricPoint>>,
}

/// What a `target_cpu` rule grouping by `g` calls `t`'s target (`None`: not watched).
fn group_key(t: &TargetCpu, g: GroupBy) -> Option<String> {
    match g {
        GroupBy::Process => Some(format!("{}/{}", t.name, t.pid)),
        GroupBy::Service => t.service.clone(),
        GroupBy::Container => t.container.clone(),
    }
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

impl Loop {
    /// The loop of the `kind` (`receiver` | `connector`) `id`, registered on the host's health
    /// and telemetry, with the first /proc/stat reading (so a broken /proc is an error at start
    /// rather than a silent loop); `metric_points` brings the `metric` rules' points.
    pub(crate) fn new(
        kind: &'static str,
        id: String,
        cfg: AnomalyConfig,
        next: Arc<dyn Consumer>,
        host: &Host,
        metric_points: Option<mpsc::Receiver<MetricPoint>>,
    ) -> Result<(Loop, cpu::CpuTimes), ComponentError> {
        let first = cpu::CpuTimes::read(std::path::Path::new(PROC_STAT))
            .map_err(|e| ComponentError::new(&id, format!("reading the node's CPU time: {e}")))?;
        let cpus = std::fs::read_to_string(PROC_STAT).map(|t| cpu::node_cpus(&t)).unwrap_or(1);
        let (accepted, refused) = if kind == "receiver" {
            let counts = host.telemetry.receiver(&id, "internal", Signal::Logs);
            (counts.accepted, counts.refused)
        } else {
            let help = "Anomaly events (log records) the connector's logs pipelines accepted or refused.";
            let c =
                |outcome| host.telemetry.counter("otelprof_anomaly_events", help, &[(kind, &id), ("outcome", outcome)]);
            (c("accepted"), c("refused"))
        };
        let metrics = Metrics {
            telemetry: host.telemetry.clone(),
            kind,
            id: id.clone(),
            accepted,
            refused,
            signal_errors: host.telemetry.counter(
                "otelprof_anomaly_signal_errors",
                "Signal readings that failed (the point is skipped).",
                &[(kind, &id)],
            ),
        };
        let health = host.health.register(
            format!("{kind}/{id}"),
            Liveness::Heartbeat { within: cfg.interval.max(Duration::from_secs(1)) * 5 },
        );
        tracing::info!(
            "{kind} {id}: {} rule(s) every {:?}; bursts of {} at {} Hz for {:?}",
            cfg.rules.len(),
            cfg.interval,
            cfg.burst.receiver,
            cfg.burst.samples_per_second,
            cfg.burst.duration
        );
        let l = Loop {
            id,
            cfg,
            next,
            host: host.clone(),
            metrics,
            health,
            bursting: None,
            cpus,
            last_targets: None,
            metric_points,
        };
        Ok((l, first))
    }

    pub(crate) async fn run(mut self, first: cpu::CpuTimes) {
        let mut engine = Engine::shared(&self.cfg, self.host.anomaly_history.clone(), &self.id);
        let mut prev = first;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + self.cfg.interval, self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = self.host.stop.clone();
        let mut metric_points = self.metric_points.take();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
                p = async { metric_points.as_mut()?.recv().await }, if metric_points.is_some() => {
                    match p {
                        Some(p) => {
                            let now = Instant::now();
                            self.watch_budget(now);
                            let points = engine.observe_rule(p.rule, &p.target, p.value, now);
                            self.act(&engine, points.into_iter().collect(), now, Some(&p));
                        }
                        None => metric_points = None,
                    }
                    continue;
                }
            }
            self.health.beat();
            let now = Instant::now();
            self.watch_budget(now);
            if engine.watches(SignalKind::NodeCpu) {
                match cpu::CpuTimes::read(std::path::Path::new(PROC_STAT)) {
                    Ok(times) => {
                        if let Some(u) = times.utilisation_since(&prev) {
                            let points = engine.observe(SignalKind::NodeCpu, "node", u, now);
                            self.act(&engine, points, now, None);
                        }
                        prev = times;
                    }
                    Err(e) => {
                        add(&self.metrics.signal_errors, 1);
                        tracing::warn!("receiver {}: {e}", self.id);
                    }
                }
            }
            if engine.watches(SignalKind::TargetCpu) {
                let points = self.target_points(&mut engine, now);
                self.act(&engine, points, now, None);
            }
        }
        self.health.stop();
    }

    /// The `target_cpu` points since the last look: each target's CPU time in the profiler's
    /// reports since then over the wall time they cover and the node's CPUs. None until the
    /// profiler reported again (its reports, not this loop's interval, set the pace).
    fn target_points(&mut self, engine: &mut Engine, now: Instant) -> Vec<Point> {
        let Some(totals) = self.host.controls.get(&self.cfg.burst.receiver).and_then(|c| c.cpu_by_target()) else {
            add(&self.metrics.signal_errors, 1);
            tracing::debug!(
                "receiver {}: no running receiver `{}` measures CPU per target",
                self.id,
                self.cfg.burst.receiver
            );
            return Vec::new();
        };
        let Some(last) = self.last_targets.replace(totals.clone()) else { return Vec::new() };
        let covered = totals.covered_ns.saturating_sub(last.covered_ns);
        if covered == 0 {
            return Vec::new();
        }
        let before: HashMap<u32, u64> = last.targets.iter().map(|t| (t.pid, t.cpu_ns)).collect();
        let mut points = Vec::new();
        for i in 0..self.cfg.rules.len() {
            let rule = &self.cfg.rules[i];
            if rule.signal != SignalKind::TargetCpu {
                continue;
            }
            let mut used: HashMap<String, u64> = engine.targets(i).into_iter().map(|k| (k, 0)).collect();
            for t in &totals.targets {
                let ns = t.cpu_ns.saturating_sub(before.get(&t.pid).copied().unwrap_or(0));
                if let Some(key) = group_key(t, rule.group_by) {
                    *used.entry(key).or_default() += ns;
                }
            }
            let wall = covered as f64 * self.cpus as f64;
            for (key, ns) in used {
                points.extend(engine.observe_rule(i, &key, ns as f64 / wall, now));
            }
        }
        points
    }

    /// Ends this loop's burst early when the agent uses more CPU than its budget; forgets a
    /// burst whose window is over.
    fn watch_budget(&mut self, now: Instant) {
        let Some(b) = &mut self.bursting else { return };
        if now >= b.until {
            self.bursting = None;
            return;
        }
        let wall = now.saturating_duration_since(b.at);
        if wall < BUDGET_WINDOW {
            return;
        }
        let cpu = cpu::own_cpu_time();
        let cores = cpu.saturating_sub(b.cpu).as_secs_f64() / wall.as_secs_f64();
        b.cpu = cpu;
        b.at = now;
        if cores > self.cfg.budget.agent_cpu {
            if let Some(control) = self.host.controls.get(&self.cfg.burst.receiver) {
                control.end_burst();
            }
            self.metrics.burst("ended_early");
            tracing::warn!(
                "receiver {}: the agent used {cores:.2} CPU cores over {wall:.1?} of the burst, over its budget of {}: burst ended",
                self.id,
                self.cfg.budget.agent_cpu
            );
            self.bursting = None;
        }
    }

    /// Counts the points and carries out the triggers the caps allowed; `origin` is the
    /// metric point they judged (a `metric` rule's burst covers its processes).
    fn act(&mut self, engine: &Engine, points: Vec<Point>, now: Instant, origin: Option<&MetricPoint>) {
        for p in points {
            let rule = engine.rule(p.rule);
            self.metrics.point(&rule.name);
            let Some(decision) = p.decision else { continue };
            match decision {
                Err(denied) => {
                    let outcome = match denied {
                        Denied::Cooldown(_) => "cooldown",
                        Denied::TargetCap => "target_cap",
                        Denied::GlobalCap => "global_cap",
                    };
                    self.metrics.trigger(&rule.name, outcome);
                    tracing::debug!("receiver {}: rule `{}` triggered, not acting: {denied:?}", self.id, rule.name);
                }
                Ok(()) => {
                    self.metrics.trigger(&rule.name, "acted");
                    let burst = if rule.actions.contains(&Action::Burst) {
                        let target_scope = self.cfg.burst.scope == BurstScope::Target;
                        match (rule.signal, origin) {
                            // A target_cpu rule's burst covers the target's processes as of the
                            // last reading (processes it starts during the burst are not covered).
                            (SignalKind::TargetCpu, _) if target_scope => {
                                let pids = self
                                    .last_targets
                                    .iter()
                                    .flat_map(|l| &l.targets)
                                    .filter(|t| group_key(t, rule.group_by).as_deref() == Some(p.target.as_str()))
                                    .map(|t| t.pid)
                                    .collect::<Vec<u32>>();
                                self.burst(&rule.name, Some(pids), now)
                            }
                            (SignalKind::Metric, Some(m)) if target_scope => match self.metric_pids(m) {
                                Ok(pids) => self.burst(&rule.name, Some(pids), now),
                                Err(why) => {
                                    self.metrics.burst("failed");
                                    BurstOutcome::Failed(why)
                                }
                            },
                            _ => self.burst(&rule.name, None, now),
                        }
                    } else {
                        BurstOutcome::NotAsked
                    };
                    tracing::warn!(
                        "receiver {}: anomaly `{}`: {} of {} is {:.3} (EWMA {:.3}, σ {:.3}, z {:.1}); {burst:?}",
                        self.id,
                        rule.name,
                        rule.signal.name(),
                        p.target,
                        p.obs.value,
                        p.obs.ewma,
                        p.obs.stddev,
                        p.obs.z
                    );
                    if rule.actions.contains(&Action::Event) {
                        let event = Event {
                            rule: &rule.name,
                            signal: rule.signal.name(),
                            target: &p.target,
                            obs: &p.obs,
                            burst,
                            time_unix_ns: unix_ns(SystemTime::now()),
                        };
                        let data = Data::Logs(event::request(&event));
                        match self.next.consume(data) {
                            Ok(()) => add(&self.metrics.accepted, 1),
                            Err(e) => {
                                add(&self.metrics.refused, 1);
                                tracing::warn!(
                                    "receiver {}: the logs pipeline refused the anomaly event: {e}",
                                    self.id
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The profiled processes a metric point belongs to: the resource's `process.pid` if the
    /// profiler sees it, else those with its `service.name`.
    fn metric_pids(&self, m: &MetricPoint) -> Result<Vec<u32>, String> {
        let totals = self
            .host
            .controls
            .get(&self.cfg.burst.receiver)
            .and_then(|c| c.cpu_by_target())
            .ok_or_else(|| format!("no running receiver `{}` measures CPU per target", self.cfg.burst.receiver))?;
        if let Some(pid) = m.pid.filter(|pid| totals.targets.iter().any(|t| t.pid == *pid)) {
            return Ok(vec![pid]);
        }
        let pids: Vec<u32> =
            totals.targets.iter().filter(|t| t.service.is_some() && t.service == m.service).map(|t| t.pid).collect();
        if pids.is_empty() {
            return Err(format!(
                "no profiled process has the series' {} (burst.scope: target)",
                match (&m.pid, &m.service) {
                    (Some(pid), _) => format!("process.pid {pid}"),
                    (None, Some(s)) => format!("service.name {s:?}"),
                    (None, None) => "process (its resource has neither process.pid nor service.name)".into(),
                }
            ));
        }
        Ok(pids)
    }

    /// Asks the burst receiver for a burst.
    fn burst(&mut self, rule: &str, pids: Option<Vec<u32>>, now: Instant) -> BurstOutcome {
        let b = &self.cfg.burst;
        let Some(control) = self.host.controls.get(&b.receiver) else {
            self.metrics.burst("failed");
            return BurstOutcome::Failed(format!("no running receiver `{}` takes bursts", b.receiver));
        };
        let started = SystemTime::now();
        let scope = pids.as_ref().map(|p| p.len());
        let burst = Burst { samples_per_second: b.samples_per_second, duration: b.duration, rule: rule.into(), pids };
        match control.burst(burst) {
            Ok(()) => {
                self.metrics.burst("started");
                self.bursting = Some(Bursting { until: now + b.duration, cpu: cpu::own_cpu_time(), at: now });
                BurstOutcome::Started {
                    samples_per_second: b.samples_per_second,
                    start_unix_ns: unix_ns(started),
                    end_unix_ns: unix_ns(started + b.duration),
                    processes: scope,
                }
            }
            Err(e) => {
                self.metrics.burst("failed");
                BurstOutcome::Failed(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::component::{ReceiverControl, TargetCpu};

    /// A profiler's control whose per-process totals the test sets.
    #[derive(Default)]
    struct Totals(Mutex<CpuByTarget>);

    impl ReceiverControl for Totals {
        fn reconfigure(&self, _: &serde_yaml::Value, _: &str) -> Result<bool, ConfigError> {
            Ok(false)
        }

        fn cpu_by_target(&self) -> Option<CpuByTarget> {
            Some(self.0.lock().unwrap().clone())
        }
    }

    fn target(pid: u32, service: Option<&str>, cpu_s: f64) -> TargetCpu {
        TargetCpu {
            pid,
            name: "w".into(),
            service: service.map(Into::into),
            container: None,
            cpu_ns: (cpu_s * 1e9) as u64,
        }
    }

    #[test]
    fn target_shares_are_cpu_time_over_covered_time_and_cpus_per_group() {
        let cfg = AnomalyConfig::parse(
            "receivers.anomaly",
            serde_yaml::from_str(
                "rules: [{ name: p, signal: target_cpu }, { name: s, signal: target_cpu, group_by: service }]",
            )
            .unwrap(),
        )
        .unwrap();
        let host = Host::new(Duration::from_secs(1));
        let totals = Arc::new(Totals::default());
        host.controls.insert("profiling", totals.clone());
        let counts = host.telemetry.receiver("anomaly", "internal", Signal::Logs);
        let metrics = Metrics {
            telemetry: host.telemetry.clone(),
            kind: "receiver",
            id: "anomaly".into(),
            accepted: counts.accepted,
            refused: counts.refused,
            signal_errors: Value::default(),
        };
        let health = host.health.register("receiver/anomaly".to_string(), Liveness::Running);
        struct Drop;
        impl Consumer for Drop {
            fn consume(&self, _: Data) -> Result<(), crate::consumer::ConsumeError> {
                Ok(())
            }
        }
        let mut l = Loop {
            id: "anomaly".into(),
            cfg: cfg.clone(),
            next: Arc::new(Drop),
            host: host.clone(),
            metrics,
            health,
            bursting: None,
            cpus: 2,
            last_targets: None,
            metric_points: None,
        };
        let mut engine = Engine::new(&cfg);
        let set = |covered_s: f64, targets: Vec<TargetCpu>| {
            *totals.0.lock().unwrap() = CpuByTarget { covered_ns: (covered_s * 1e9) as u64, targets };
        };
        let now = Instant::now();
        set(10.0, vec![target(1, Some("a"), 1.0), target(2, Some("a"), 1.0), target(3, None, 5.0)]);
        assert!(l.target_points(&mut engine, now).is_empty(), "the first look is the baseline");
        assert!(l.target_points(&mut engine, now).is_empty(), "no new report, no points");
        // 2 s later: pid 1 used 1 s, pid 2 0.5 s, pid 3 nothing, pid 4 (new) 2 s.
        set(
            12.0,
            vec![target(1, Some("a"), 2.0), target(2, Some("a"), 1.5), target(3, None, 5.0), target(4, Some("b"), 2.0)],
        );
        let mut got: Vec<(String, String, f64)> = l
            .target_points(&mut engine, now)
            .into_iter()
            .map(|p| (cfg.rules[p.rule].name.clone(), p.target, (p.obs.value * 1000.0).round() / 1000.0))
            .collect();
        got.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let want = [
            ("p", "w/1", 0.25),
            ("p", "w/2", 0.125),
            ("p", "w/3", 0.0),
            ("p", "w/4", 0.5),
            ("s", "a", 0.375),
            ("s", "b", 0.5),
        ];
        let want: Vec<(String, String, f64)> =
            want.iter().map(|(r, t, v)| (r.to_string(), t.to_string(), *v)).collect();
        assert_eq!(got, want, "shares of 2 CPUs over 2 s; pid 3 used none; it has no service");
        // Next report: pid 1 stopped using CPU: a point of 0 for it, not silence.
        set(13.0, vec![target(1, Some("a"), 2.0), target(2, Some("a"), 1.5), target(4, Some("b"), 3.0)]);
        let zero = l.target_points(&mut engine, now).into_iter().find(|p| p.target == "w/1").map(|p| p.obs.value);
        assert_eq!(zero, Some(0.0));
    }
}
