//! The `anomaly` receiver: the edge anomaly loop (issue #16) — sense → analyse → decide → act —
//! in the agent, as a receiver of logs (docs/design/0010).
//!
//! Every `interval` it reads the signals its rules watch ([`cpu`]: the node's CPU utilisation),
//! feeds each rule's detector ([`detect`]: winsorized EWMA with a Z-score, warm-up, floor,
//! ceiling and k-of-n confirmation) and asks the caps ([`limit`]: cooldown per target, per
//! target and node-wide windows) whether a trigger may act. The actions are a closed set:
//! `burst` raises the profiling receiver's rate for a bounded window through its
//! [`ReceiverControl`](crate::component::ReceiverControl) (found in the host's registry, so it
//! follows a reload), and `event` sends a WARN log record ([`event`]) down the receiver's logs
//! pipelines. While a burst runs, the agent's own CPU use is watched: above `budget.agent_cpu`
//! the burst ends early. The agent never runs a command.
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
//! Not yet (README): the per-target CPU share from the profiler's samples, OTLP gauges chosen
//! by an OTTL condition, bursts for one target only.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use tokio::task::JoinHandle;

use crate::{
    component::{Burst, ComponentError, ComponentId, Host, Outputs, Receiver, ReceiverFactory},
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

use config::{Action, AnomalyConfig, SignalKind};
use engine::{Engine, Point};
use event::{BurstOutcome, Event};
use limit::Denied;

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
    id: String,
    accepted: Value,
    refused: Value,
    signal_errors: Value,
}

impl Metrics {
    fn counter(&self, name: &str, help: &'static str, labels: &[(&str, &str)]) -> Value {
        let mut all = vec![("receiver", self.id.as_str())];
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
        let id = self.id.clone();
        let next = outputs
            .get(Signal::Logs)
            .cloned()
            .ok_or_else(|| ComponentError::new(&id, "not in any logs pipeline (its events are log records)"))?;
        // The first reading, so a broken /proc is an error at start rather than a silent loop.
        let first = cpu::CpuTimes::read(std::path::Path::new(PROC_STAT))
            .map_err(|e| ComponentError::new(&id, format!("reading the node's CPU time: {e}")))?;
        let counts = host.telemetry.receiver(&id, "internal", Signal::Logs);
        let metrics = Metrics {
            telemetry: host.telemetry.clone(),
            id: id.clone(),
            accepted: counts.accepted,
            refused: counts.refused,
            signal_errors: host.telemetry.counter(
                "otelprof_anomaly_signal_errors",
                "Signal readings that failed (the point is skipped).",
                &[("receiver", &id)],
            ),
        };
        let health = host.health.register(
            format!("receiver/{id}"),
            Liveness::Heartbeat { within: self.config.interval.max(Duration::from_secs(1)) * 5 },
        );
        tracing::info!(
            "receiver {id}: {} rule(s) every {:?}; bursts of {} at {} Hz for {:?}",
            self.config.rules.len(),
            self.config.interval,
            self.config.burst.receiver,
            self.config.burst.samples_per_second,
            self.config.burst.duration
        );
        let looped = Loop { id, cfg: self.config, next, host: host.clone(), metrics, health, bursting: None };
        Ok(tokio::spawn(looped.run(first)))
    }
}

const PROC_STAT: &str = "/proc/stat";

/// A burst this loop started and still watches.
struct Bursting {
    until: Instant,
    /// The agent's CPU time and the wall time at the last look.
    cpu: Duration,
    at: Instant,
}

struct Loop {
    id: String,
    cfg: AnomalyConfig,
    next: Arc<dyn Consumer>,
    host: Host,
    metrics: Metrics,
    health: HealthHandle,
    bursting: Option<Bursting>,
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

impl Loop {
    async fn run(mut self, first: cpu::CpuTimes) {
        let mut engine = Engine::new(&self.cfg);
        let mut prev = first;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + self.cfg.interval, self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = self.host.stop.clone();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            self.health.beat();
            let now = Instant::now();
            self.watch_budget(now);
            if engine.watches(SignalKind::NodeCpu) {
                match cpu::CpuTimes::read(std::path::Path::new(PROC_STAT)) {
                    Ok(times) => {
                        if let Some(u) = times.utilisation_since(&prev) {
                            let points = engine.observe(SignalKind::NodeCpu, "node", u, now);
                            self.act(&engine, points, now);
                        }
                        prev = times;
                    }
                    Err(e) => {
                        add(&self.metrics.signal_errors, 1);
                        tracing::warn!("receiver {}: {e}", self.id);
                    }
                }
            }
        }
        self.health.stop();
    }

    /// Ends this loop's burst early when the agent uses more CPU than its budget; forgets a
    /// burst whose window is over.
    fn watch_budget(&mut self, now: Instant) {
        let Some(b) = &mut self.bursting else { return };
        if now >= b.until {
            self.bursting = None;
            return;
        }
        let cpu = cpu::own_cpu_time();
        let wall = now.saturating_duration_since(b.at);
        if wall.is_zero() {
            return;
        }
        let cores = cpu.saturating_sub(b.cpu).as_secs_f64() / wall.as_secs_f64();
        b.cpu = cpu;
        b.at = now;
        if cores > self.cfg.budget.agent_cpu {
            if let Some(control) = self.host.controls.get(&self.cfg.burst.receiver) {
                control.end_burst();
            }
            self.metrics.burst("ended_early");
            tracing::warn!(
                "receiver {}: the agent used {cores:.2} CPU cores during the burst, over its budget of {}: burst ended",
                self.id,
                self.cfg.budget.agent_cpu
            );
            self.bursting = None;
        }
    }

    /// Counts the points and carries out the triggers the caps allowed.
    fn act(&mut self, engine: &Engine, points: Vec<Point>, now: Instant) {
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
                        self.burst(&rule.name, now)
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

    /// Asks the burst receiver for a burst.
    fn burst(&mut self, rule: &str, now: Instant) -> BurstOutcome {
        let b = &self.cfg.burst;
        let Some(control) = self.host.controls.get(&b.receiver) else {
            self.metrics.burst("failed");
            return BurstOutcome::Failed(format!("no running receiver `{}` takes bursts", b.receiver));
        };
        let started = SystemTime::now();
        match control.burst(Burst { samples_per_second: b.samples_per_second, duration: b.duration, rule: rule.into() })
        {
            Ok(()) => {
                self.metrics.burst("started");
                self.bursting = Some(Bursting { until: now + b.duration, cpu: cpu::own_cpu_time(), at: now });
                BurstOutcome::Started {
                    samples_per_second: b.samples_per_second,
                    start_unix_ns: unix_ns(started),
                    end_unix_ns: unix_ns(started + b.duration),
                }
            }
            Err(e) => {
                self.metrics.burst("failed");
                BurstOutcome::Failed(e)
            }
        }
    }
}
