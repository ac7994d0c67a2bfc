//! The anomaly loop's decisions, without I/O: each point of a signal goes to the detector of
//! every rule watching that signal (one detector per rule and target), and a rule's trigger
//! asks the caps ([`Limiter`]) whether to act. The receiver around it reads the signals, keeps
//! the time and carries the actions out; tests feed it synthetic series at synthetic times.

use std::{collections::HashMap, time::Instant};

use super::{
    config::{AnomalyConfig, Rule, SignalKind},
    detect::{Detector, Observation},
    limit::{Denied, History, Limiter},
};

/// Detectors per rule are kept for at most this many targets (the oldest seen is forgotten),
/// so a node with churning targets cannot grow the loop's memory without bound.
const MAX_TARGETS_PER_RULE: usize = 1024;

/// One rule's judgement of one point.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Index of the rule in the config.
    pub rule: usize,
    pub target: String,
    pub obs: Observation,
    /// For a trigger: whether the caps let it act (and if not, why); `None` for no trigger.
    pub decision: Option<Result<(), Denied>>,
}

struct RuleState {
    rule: Rule,
    /// Detector and the point count when it was last fed, by target.
    detectors: HashMap<String, (Detector, u64)>,
}

/// The rules' detectors and the shared caps.
pub struct Engine {
    rules: Vec<RuleState>,
    limiter: Limiter,
    points: u64,
}

impl Engine {
    /// With caps of its own (tests).
    pub fn new(cfg: &AnomalyConfig) -> Self {
        Self::shared(cfg, History::default(), "")
    }

    /// With caps over the agent's `history`, as component `owner` (see [`super::limit`]).
    pub fn shared(cfg: &AnomalyConfig, history: History, owner: &str) -> Self {
        Self {
            rules: cfg.rules.iter().map(|r| RuleState { rule: r.clone(), detectors: HashMap::new() }).collect(),
            limiter: Limiter::shared(cfg.limits.clone(), history, owner),
            points: 0,
        }
    }

    pub fn rule(&self, i: usize) -> &Rule {
        &self.rules[i].rule
    }

    /// Whether any rule watches `signal` (the receiver reads only those).
    pub fn watches(&self, signal: SignalKind) -> bool {
        self.rules.iter().any(|r| r.rule.signal == signal)
    }

    /// Takes one point of `signal` for `target` (`node` for node-wide signals) at `now`, for
    /// every rule watching `signal`.
    pub fn observe(&mut self, signal: SignalKind, target: &str, value: f64, now: Instant) -> Vec<Point> {
        let rules: Vec<usize> = (0..self.rules.len()).filter(|&i| self.rules[i].rule.signal == signal).collect();
        rules.into_iter().filter_map(|i| self.observe_rule(i, target, value, now)).collect()
    }

    /// The targets rule `i` has a baseline for (a target that was seen and now has no point
    /// is 0: a process that stopped using CPU).
    pub fn targets(&self, i: usize) -> Vec<String> {
        self.rules[i].detectors.keys().cloned().collect()
    }

    /// Takes one point of rule `i`'s signal for `target` at `now`.
    pub fn observe_rule(&mut self, i: usize, target: &str, value: f64, now: Instant) -> Option<Point> {
        self.points += 1;
        let state = &mut self.rules[i];
        if !state.detectors.contains_key(target) && state.detectors.len() >= MAX_TARGETS_PER_RULE {
            if let Some(oldest) = state.detectors.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone()) {
                state.detectors.remove(&oldest);
            }
        }
        let (detector, at) = state
            .detectors
            .entry(target.to_string())
            .or_insert_with(|| (Detector::new(state.rule.detector.clone()), 0));
        *at = self.points;
        let obs = detector.observe(value)?;
        let decision = obs.trigger.then(|| self.limiter.try_acquire(target, now));
        Some(Point { rule: i, target: target.to_string(), obs, decision })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::receiver::anomaly::config::AnomalyConfig;

    fn config(yaml: &str) -> AnomalyConfig {
        AnomalyConfig::parse("receivers.anomaly", serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    /// Feeds `series` one point a second; returns (second, decision) of every trigger.
    fn run(e: &mut Engine, t0: Instant, from: usize, series: &[f64]) -> Vec<(usize, Result<(), Denied>)> {
        let mut out = Vec::new();
        for (i, x) in series.iter().enumerate() {
            let s = from + i;
            for p in e.observe(SignalKind::NodeCpu, "node", *x, t0 + Duration::from_secs(s as u64)) {
                if let Some(d) = p.decision {
                    out.push((s, d));
                }
            }
        }
        out
    }

    #[test]
    fn a_step_acts_once_then_the_cooldown_and_caps_hold_repeated_spikes() {
        let mut e = Engine::new(&config(
            "limits: { cooldown: 60s, per_target: 2, per_target_window: 10m, global: 10, global_window: 1h }",
        ));
        let t0 = Instant::now();
        let idle = vec![0.05; 20];
        let mut spike = vec![0.95; 3];
        spike.extend(vec![0.05; 27]);
        let mut got = run(&mut e, t0, 0, &idle);
        assert!(got.is_empty());
        // Spikes every 30 s: the ceiling triggers on each spike point.
        for k in 0..6 {
            got.extend(run(&mut e, t0, 20 + 30 * k, &spike));
        }
        let acted: Vec<usize> = got.iter().filter(|(_, d)| d.is_ok()).map(|(s, _)| *s).collect();
        assert_eq!(acted, vec![20, 80], "first spike, then the next one after the 60 s cooldown; then 2 per 10 min");
        assert!(got.iter().any(|(_, d)| matches!(d, Err(Denied::Cooldown(_)))));
        assert!(got.iter().any(|(_, d)| *d == Err(Denied::TargetCap)));
    }

    #[test]
    fn rules_watch_only_their_signal_and_targets_have_their_own_detectors() {
        let mut e = Engine::new(&config(
            "rules: [{ name: a, signal: node_cpu, ceiling: 0.5, actions: [event] }, { name: b, signal: node_cpu }]",
        ));
        assert!(e.watches(SignalKind::NodeCpu));
        let now = Instant::now();
        let points = e.observe(SignalKind::NodeCpu, "node", 0.6, now);
        assert_eq!(points.len(), 2, "both rules judge the point");
        assert_eq!(points[0].decision, Some(Ok(())), "a's ceiling is 0.5");
        assert_eq!(points[1].decision, None, "b's ceiling is the default 0.8");
        let other = e.observe(SignalKind::NodeCpu, "pod-x", 0.6, now);
        assert_eq!(other[0].obs.ewma, 0.0, "a new target starts its own baseline");
        assert_eq!(other[0].decision, Some(Ok(())), "and has its own cooldown");
        assert_eq!(e.rule(0).name, "a");
    }
}
