//! `receivers.anomaly`: the rules, the burst, the caps and the budget, with the defaults of
//! [`super::detect`] and [`super::limit`] (the README's "Edge anomaly loop" lists them).
//!
//! ```yaml
//! receivers:
//!   anomaly:
//!     interval: 1s                 # how often the signals are read
//!     rules:                       # default: one `node_cpu` rule with the detector defaults
//!       - name: node-cpu
//!         signal: node_cpu         # the node's CPU utilisation, 0..1 (/proc/stat), or
//!                                  # target_cpu: each process's (service's, container's)
//!                                  # share of the node's CPUs from the profiler's samples
//!                                  # metric (the `anomaly` connector only): each gauge or sum
//!                                  # data point of its metrics pipelines that `condition` selects
//!         group_by: process        # target_cpu only: process | service | container
//!         condition: 'metric.name == "queue.depth" and attributes["queue"] == "jobs"'  # metric only
//!         alpha: 0.2
//!         z_threshold: 3
//!         warmup: 10
//!         floor: 0.10
//!         ceiling: 0.80            # null: no ceiling rule
//!         confirm: { k: 3, n: 10 }
//!         min_stddev: 0.01
//!         actions: [burst, event]
//!     burst: { receiver: profiling, samples_per_second: 99, duration: 30s, scope: target }
//!     limits: { cooldown: 60s, per_target: 1, per_target_window: 20m, global: 10, global_window: 1h }
//!     budget: { agent_cpu: 0.5 }   # cores; a burst ends early when the agent uses more
//! ```

use std::{collections::HashSet, time::Duration};

use serde::Deserialize;

use super::{detect::DetectorConfig, limit::Limits};
use crate::config::{deserialize_at, ConfigError};

/// What a rule watches.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// The node's CPU utilisation over the last interval, 0..1 of all CPUs (`/proc/stat`).
    NodeCpu,
    /// Each target's share of the node's CPUs, 0..1, from the profiler's own samples over its
    /// last reports (so points come at the profiler's `reporter_interval`).
    TargetCpu,
    /// Gauge and sum data points received in the metrics pipelines that export to the
    /// `anomaly` connector, chosen by an OTTL condition of the `datapoint` context (points
    /// come as the senders export; a cumulative monotonic sum is turned into its rate per
    /// second, see [`super::metric`]).
    Metric,
}

impl SignalKind {
    pub fn name(self) -> &'static str {
        match self {
            SignalKind::NodeCpu => "node_cpu",
            SignalKind::TargetCpu => "target_cpu",
            SignalKind::Metric => "metric",
        }
    }
}

/// What a `target_cpu` rule calls a target.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// Each process (`name/pid`).
    #[default]
    Process,
    /// The processes with one `service.name` (OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES);
    /// processes without one are not watched.
    Service,
    /// The processes of one container (its id from the cgroup); others are not watched.
    Container,
}

/// What a trigger does: the closed set (the agent never runs commands).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The profiler samples at `burst.samples_per_second` for `burst.duration`.
    Burst,
    /// A WARN log record into the receiver's logs pipelines.
    Event,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Burst => "burst",
            Action::Event => "event",
        }
    }
}

/// `rules[i].confirm`: k of the last n points anomalous.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    pub k: usize,
    pub n: usize,
}

/// One rule as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    signal: SignalKind,
    #[serde(default)]
    group_by: Option<GroupBy>,
    #[serde(default)]
    alpha: Option<f64>,
    #[serde(default)]
    z_threshold: Option<f64>,
    #[serde(default)]
    warmup: Option<usize>,
    #[serde(default)]
    floor: Option<f64>,
    /// Absent: the default; `null`: none.
    #[serde(default, deserialize_with = "present")]
    ceiling: Option<Option<f64>>,
    #[serde(default)]
    confirm: Option<Confirm>,
    #[serde(default)]
    min_stddev: Option<f64>,
    #[serde(default)]
    actions: Option<Vec<Action>>,
    #[serde(default)]
    condition: Option<String>,
}

/// A key that is present is `Some` (its value may be `null`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// One checked rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub signal: SignalKind,
    pub group_by: GroupBy,
    pub detector: DetectorConfig,
    pub actions: Vec<Action>,
    /// A `metric` rule's OTTL condition (`datapoint` context), compiled by the connector.
    pub condition: Option<String>,
}

/// `burst`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BurstConfig {
    /// The receiver whose rate is raised (its id in `receivers:`).
    pub receiver: String,
    pub samples_per_second: u64,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// What a `target_cpu` rule's burst covers (a `node_cpu` rule's always covers the node).
    pub scope: BurstScope,
}

/// `burst.scope`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BurstScope {
    /// Only the anomalous target's processes at the burst rate; the others keep theirs.
    #[default]
    Target,
    /// Every process.
    Node,
}

impl Default for BurstConfig {
    fn default() -> Self {
        Self {
            receiver: "profiling".into(),
            samples_per_second: 99,
            duration: Duration::from_secs(30),
            scope: BurstScope::Target,
        }
    }
}

/// `limits` as written (each key optional; the defaults of [`Limits`]).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default, with = "humantime_serde")]
    cooldown: Option<Duration>,
    #[serde(default)]
    per_target: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    per_target_window: Option<Duration>,
    #[serde(default)]
    global: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    global_window: Option<Duration>,
}

/// `budget`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// CPU cores the agent may use during a burst (user + system time of the whole agent per
    /// wall second); above it the burst ends early. The default is the DaemonSet's CPU limit.
    pub agent_cpu: f64,
}

impl Default for Budget {
    fn default() -> Self {
        Self { agent_cpu: 0.5 }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default, with = "humantime_serde")]
    interval: Option<Duration>,
    #[serde(default)]
    rules: Option<Vec<RawRule>>,
    #[serde(default)]
    burst: BurstConfig,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    budget: Budget,
}

/// `receivers.anomaly`, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct AnomalyConfig {
    pub interval: Duration,
    pub rules: Vec<Rule>,
    pub burst: BurstConfig,
    pub limits: Limits,
    pub budget: Budget,
}

/// The shortest `interval`: /proc/stat counts in clock ticks (10 ms), so shorter intervals
/// measure mostly rounding.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

impl AnomalyConfig {
    /// Parses and checks the section at `path`; errors name the key.
    pub fn parse(path: &str, value: serde_yaml::Value) -> Result<Self, ConfigError> {
        let raw: Raw = deserialize_at(path, value)?;
        let interval = raw.interval.unwrap_or(Duration::from_secs(1));
        if interval < MIN_INTERVAL {
            return Err(ConfigError::new(
                format!("{path}.interval"),
                format!("{interval:?} is shorter than {MIN_INTERVAL:?}"),
            ));
        }
        let raw_rules = raw.rules.unwrap_or_else(|| {
            vec![RawRule {
                name: "node-cpu".into(),
                signal: SignalKind::NodeCpu,
                group_by: None,
                alpha: None,
                z_threshold: None,
                warmup: None,
                floor: None,
                ceiling: None,
                confirm: None,
                min_stddev: None,
                actions: None,
                condition: None,
            }]
        });
        let mut names = HashSet::new();
        let mut rules = Vec::new();
        for (i, r) in raw_rules.into_iter().enumerate() {
            let at = format!("{path}.rules[{i}]");
            if r.name.trim().is_empty() {
                return Err(ConfigError::new(format!("{at}.name"), "a rule needs a name"));
            }
            if !names.insert(r.name.clone()) {
                return Err(ConfigError::new(format!("{at}.name"), format!("`{}` names another rule too", r.name)));
            }
            let mut d = DetectorConfig::default();
            if r.signal == SignalKind::Metric {
                // The CPU defaults mean nothing in a metric's own units: no floor, no ceiling
                // unless the rule sets them (README).
                (d.floor, d.ceiling) = (f64::NEG_INFINITY, None);
            }
            let confirm = r.confirm.unwrap_or(Confirm { k: d.confirm_k, n: d.confirm_n });
            let detector = DetectorConfig {
                alpha: r.alpha.unwrap_or(d.alpha),
                z_threshold: r.z_threshold.unwrap_or(d.z_threshold),
                warmup: r.warmup.unwrap_or(d.warmup),
                floor: r.floor.unwrap_or(d.floor),
                ceiling: r.ceiling.unwrap_or(d.ceiling),
                confirm_k: confirm.k,
                confirm_n: confirm.n,
                min_stddev: r.min_stddev.unwrap_or(d.min_stddev),
            };
            if let Err(e) = detector.check() {
                // The message starts with the setting's name.
                let key = e.split(':').next().unwrap_or("").split(' ').next().unwrap_or("");
                return Err(ConfigError::new(format!("{at}.{key}"), e));
            }
            if detector.min_stddev.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
                return Err(ConfigError::new(format!("{at}.min_stddev"), "must be more than 0"));
            }
            let actions = r.actions.unwrap_or_else(|| vec![Action::Burst, Action::Event]);
            if actions.is_empty() {
                return Err(ConfigError::new(format!("{at}.actions"), "a rule needs at least one action"));
            }
            if r.group_by.is_some() && r.signal != SignalKind::TargetCpu {
                return Err(ConfigError::new(format!("{at}.group_by"), "only a target_cpu rule groups targets"));
            }
            match (&r.condition, r.signal) {
                (None, SignalKind::Metric) => {
                    return Err(ConfigError::new(
                        format!("{at}.condition"),
                        "a metric rule needs an OTTL condition choosing its data points, e.g. \
                         'metric.name == \"queue.depth\"'",
                    ))
                }
                (Some(_), s) if s != SignalKind::Metric => {
                    return Err(ConfigError::new(format!("{at}.condition"), "only a metric rule has a condition"))
                }
                _ => {}
            }
            rules.push(Rule {
                name: r.name,
                signal: r.signal,
                group_by: r.group_by.unwrap_or_default(),
                detector,
                actions,
                condition: r.condition,
            });
        }
        if rules.is_empty() {
            return Err(ConfigError::new(format!("{path}.rules"), "no rules: leave the key out for the default rule"));
        }
        let b = &raw.burst;
        if b.receiver.is_empty() {
            return Err(ConfigError::new(format!("{path}.burst.receiver"), "names no receiver"));
        }
        if b.samples_per_second == 0 {
            return Err(ConfigError::new(format!("{path}.burst.samples_per_second"), "must be more than 0"));
        }
        if b.duration < Duration::from_secs(1) {
            return Err(ConfigError::new(
                format!("{path}.burst.duration"),
                format!("{:?} is shorter than a second", b.duration),
            ));
        }
        let d = Limits::default();
        let l = raw.limits;
        let limits = Limits {
            cooldown: l.cooldown.unwrap_or(d.cooldown),
            per_target: l.per_target.unwrap_or(d.per_target),
            per_target_window: l.per_target_window.unwrap_or(d.per_target_window),
            global: l.global.unwrap_or(d.global),
            global_window: l.global_window.unwrap_or(d.global_window),
        };
        if raw.budget.agent_cpu.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(ConfigError::new(format!("{path}.budget.agent_cpu"), "must be more than 0 (cores)"));
        }
        Ok(Self { interval, rules, burst: raw.burst, limits, budget: raw.budget })
    }
}

impl AnomalyConfig {
    /// The first cap `self` (a remote config's section) loosens relative to `local` (the local
    /// file's, or the defaults when the local file has no such receiver): its key below the
    /// section and why. A remote config may tighten the caps, never loosen them.
    pub fn loosens(&self, local: &AnomalyConfig) -> Option<(&'static str, String)> {
        let (r, l) = (&self.limits, &local.limits);
        if r.within(l) != *r {
            return Some(("limits", format!("{r:?} is looser than the local {l:?}")));
        }
        let (r, l) = (&self.burst, &local.burst);
        if r.samples_per_second > l.samples_per_second {
            return Some((
                "burst.samples_per_second",
                format!("{} Hz is above the local {} Hz", r.samples_per_second, l.samples_per_second),
            ));
        }
        if r.duration > l.duration {
            return Some(("burst.duration", format!("{:?} is longer than the local {:?}", r.duration, l.duration)));
        }
        if r.scope == BurstScope::Node && l.scope == BurstScope::Target {
            return Some(("burst.scope", "node is wider than the local target".into()));
        }
        if r.receiver != l.receiver {
            return Some(("burst.receiver", format!("`{}` is not the local `{}`", r.receiver, l.receiver)));
        }
        if self.budget.agent_cpu > local.budget.agent_cpu {
            return Some((
                "budget.agent_cpu",
                format!("{} cores is above the local {}", self.budget.agent_cpu, local.budget.agent_cpu),
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<AnomalyConfig, ConfigError> {
        AnomalyConfig::parse("receivers.anomaly", serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn an_empty_section_is_the_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.rules.len(), 1);
        assert_eq!(c.rules[0].name, "node-cpu");
        assert_eq!(c.rules[0].signal, SignalKind::NodeCpu);
        assert_eq!(c.rules[0].detector, DetectorConfig::default());
        assert_eq!(c.rules[0].actions, vec![Action::Burst, Action::Event]);
        assert_eq!(c.burst, BurstConfig::default());
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.budget.agent_cpu, 0.5);
    }

    #[test]
    fn rules_override_each_setting_and_null_removes_the_ceiling() {
        let c = parse(
            "interval: 500ms\nrules:\n  - { name: a, signal: node_cpu, alpha: 0.5, warmup: 4, ceiling: null, \
             confirm: { k: 2, n: 5 }, actions: [event] }\n\
             burst: { samples_per_second: 199, duration: 5s }\nlimits: { cooldown: 2m, global: 3 }\n",
        )
        .unwrap();
        let r = &c.rules[0];
        assert_eq!((r.detector.alpha, r.detector.warmup, r.detector.ceiling), (0.5, 4, None));
        assert_eq!((r.detector.confirm_k, r.detector.confirm_n), (2, 5));
        assert_eq!(r.actions, vec![Action::Event]);
        assert_eq!(r.group_by, GroupBy::Process);
        assert_eq!(c.burst.receiver, "profiling");
        assert_eq!((c.burst.samples_per_second, c.burst.duration), (199, Duration::from_secs(5)));
        assert_eq!((c.limits.cooldown, c.limits.global), (Duration::from_secs(120), 3));
        assert_eq!(c.limits.per_target, 1, "unset caps keep their defaults");
        let c = parse("rules: [{ name: s, signal: target_cpu, group_by: service }]").unwrap();
        assert_eq!((c.rules[0].signal, c.rules[0].group_by), (SignalKind::TargetCpu, GroupBy::Service));
    }

    #[test]
    fn mistakes_name_their_key() {
        let cases = [
            ("interval: 10ms", "receivers.anomaly.interval"),
            ("rules: []", "receivers.anomaly.rules"),
            ("rules: [{ name: a, signal: disk }]", "receivers.anomaly.rules[0].signal"),
            ("rules: [{ name: a, signal: node_cpu, alhpa: 1 }]", "receivers.anomaly.rules[0].alhpa"),
            ("rules: [{ name: a, signal: node_cpu, alpha: 0 }]", "receivers.anomaly.rules[0].alpha"),
            ("rules: [{ name: a, signal: node_cpu, confirm: { k: 4, n: 3 } }]", "receivers.anomaly.rules[0].confirm"),
            ("rules: [{ name: a, signal: node_cpu, floor: 0.9 }]", "receivers.anomaly.rules[0].ceiling"),
            ("rules: [{ name: a, signal: node_cpu, actions: [] }]", "receivers.anomaly.rules[0].actions"),
            ("rules: [{ name: a, signal: node_cpu, actions: [iptables] }]", "receivers.anomaly.rules[0].actions[0]"),
            (
                "rules: [{ name: a, signal: node_cpu }, { name: a, signal: node_cpu }]",
                "receivers.anomaly.rules[1].name",
            ),
            ("rules: [{ name: a, signal: node_cpu, group_by: service }]", "receivers.anomaly.rules[0].group_by"),
            ("rules: [{ name: a, signal: target_cpu, group_by: pod }]", "receivers.anomaly.rules[0].group_by"),
            ("burst: { duration: 100ms }", "receivers.anomaly.burst.duration"),
            ("burst: { samples_per_second: 0 }", "receivers.anomaly.burst.samples_per_second"),
            ("limits: { cooldown: soon }", "receivers.anomaly.limits.cooldown"),
            ("budget: { agent_cpu: 0 }", "receivers.anomaly.budget.agent_cpu"),
        ];
        for (yaml, key) in cases {
            let e = parse(yaml).expect_err(yaml);
            assert_eq!(e.path, key, "{yaml}: {e}");
        }
    }

    #[test]
    fn a_remote_section_may_tighten_the_caps_never_loosen_them() {
        let local = parse("burst: { samples_per_second: 99, duration: 30s }").unwrap();
        assert_eq!(parse("limits: { cooldown: 10m, global: 2 }").unwrap().loosens(&local), None);
        assert_eq!(parse("burst: { samples_per_second: 49, duration: 10s }").unwrap().loosens(&local), None);
        let cases = [
            ("limits: { cooldown: 1s }", "limits"),
            ("limits: { global: 100 }", "limits"),
            ("burst: { samples_per_second: 999 }", "burst.samples_per_second"),
            ("burst: { duration: 10m }", "burst.duration"),
            ("burst: { receiver: profiling/other }", "burst.receiver"),
            ("burst: { scope: node }", "burst.scope"),
            ("budget: { agent_cpu: 2 }", "budget.agent_cpu"),
        ];
        for (yaml, key) in cases {
            assert_eq!(parse(yaml).unwrap().loosens(&local).map(|l| l.0), Some(key), "{yaml}");
        }
    }
}
