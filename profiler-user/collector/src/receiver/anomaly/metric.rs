//! The `metric` signal: gauge and sum data points received in the metrics pipelines that export
//! to the `anomaly` connector, chosen per rule by an OTTL condition of the `datapoint` context.
//!
//! - **Series** (a rule's target): the resource's `service.name` (when it has one), the metric's
//!   name and the point's attributes, e.g. `checkout/queue.depth{queue=jobs}`; each series has
//!   its own baseline, cooldown and caps, as each process has for `target_cpu`.
//! - **Value**: a gauge's or a non-monotonic sum's value as it is; a monotonic sum's rate per
//!   second (a counter's level says nothing, its pace does): for cumulative temporality the
//!   difference from the series' previous point over the time between them (the first point
//!   of a series, and a reset, only set the base), for delta temporality the point's value over
//!   its own interval. Histograms and summaries are not points (their count or sum can be made
//!   a gauge with a `transform` statement first).
//! - **Scope of a burst**: the profiled processes with the resource's `process.pid`, else with
//!   its `service.name` (the profiler's per-target totals); none found → no burst for a
//!   `target` scope (said in the event), the node for a `node` scope.

use std::collections::HashMap;

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{any_value, AnyValue, KeyValue},
    metrics::v1::{metric::Data as MetricData, number_data_point, AggregationTemporality},
};
use otelprof_ottl::{context::DataPointContext, Compiler, Condition, Registry};

use super::config::{AnomalyConfig, SignalKind};
use crate::{config::ConfigError, processor::ottl::walk};

/// Series whose last cumulative value is kept at most (the oldest are forgotten first), so a
/// sender with churning attributes cannot grow the connector's memory without bound.
const MAX_SERIES: usize = 4096;

/// One point for rule `rule`.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricPoint {
    pub rule: usize,
    /// The series (module docs).
    pub target: String,
    pub value: f64,
    /// What a `target`-scoped burst covers: the resource's `process.pid` and `service.name`.
    pub pid: Option<u32>,
    pub service: Option<String>,
}

/// The compiled conditions of the config's `metric` rules.
pub struct MetricRules {
    rules: Vec<(usize, Condition<DataPointContext>)>,
}

/// A cumulative series' last value and time, and when it was last seen (for forgetting).
struct Last {
    value: f64,
    time_ns: u64,
    seen: u64,
}

/// What the extraction keeps between requests: the cumulative sums' last points.
#[derive(Default)]
pub struct Series {
    last: HashMap<String, Last>,
    clock: u64,
}

/// What one request gave.
#[derive(Debug, Default, PartialEq)]
pub struct Extracted {
    pub points: Vec<MetricPoint>,
    /// Conditions that failed to evaluate on a point (the point is not taken for that rule).
    pub errors: u64,
}

impl MetricRules {
    /// Compiles each `metric` rule's condition; errors name `{path}.rules[i].condition`.
    pub fn compile(cfg: &AnomalyConfig, path: &str) -> Result<Self, ConfigError> {
        let registry = Registry::standard();
        let compiler = Compiler::new(&registry);
        let mut rules = Vec::new();
        for (i, r) in cfg.rules.iter().enumerate() {
            if r.signal != SignalKind::Metric {
                continue;
            }
            let at = format!("{path}.rules[{i}].condition");
            let text = r.condition.as_deref().ok_or_else(|| ConfigError::new(&at, "required for a metric rule"))?;
            let c = compiler.condition::<DataPointContext>(text).map_err(|e| ConfigError::new(&at, e.to_string()))?;
            rules.push((i, c));
        }
        Ok(Self { rules })
    }

    /// The points of `request` each rule's condition selects.
    pub fn extract(&self, request: &mut ExportMetricsServiceRequest, series: &mut Series) -> Extracted {
        let mut out = Extracted::default();
        if self.rules.is_empty() {
            return out;
        }
        // The walk only reads: every point is kept.
        let _ = walk::data_points(request, &mut |c: &mut DataPointContext| {
            let Some(reading) = number(c) else { return Ok(true) };
            let selected: Vec<usize> = self
                .rules
                .iter()
                .filter_map(|(rule, cond)| match cond.eval(c) {
                    Ok(true) => Some(*rule),
                    Ok(false) => None,
                    Err(e) => {
                        out.errors += 1;
                        tracing::debug!("anomaly: condition {:?} on a data point: {e}", cond.source());
                        None
                    }
                })
                .collect();
            if selected.is_empty() {
                return Ok(true);
            }
            // Once per point, whatever the number of rules: a counter's base moves once.
            let key = series_key(c);
            let Some(value) = reading.resolve(&key, series) else { return Ok(true) };
            let pid = string_or_int(&c.resource.attributes, "process.pid").and_then(|p| p.parse().ok());
            let service = string_or_int(&c.resource.attributes, "service.name");
            for rule in selected {
                out.points.push(MetricPoint { rule, target: key.clone(), value, pid, service: service.clone() });
            }
            Ok(true)
        });
        out
    }
}

/// A number point's value as its metric's kind asks it to be read.
enum Reading {
    /// Taken as it is (gauge, non-monotonic sum).
    Level(f64),
    /// Per second over the point's own interval (delta monotonic sum).
    Delta { value: f64, start_ns: u64, time_ns: u64 },
    /// Per second since the series' previous point (cumulative monotonic sum).
    Cumulative { value: f64, start_ns: u64, time_ns: u64 },
}

impl Reading {
    fn resolve(&self, key: &str, series: &mut Series) -> Option<f64> {
        match *self {
            Reading::Level(v) => Some(v),
            Reading::Delta { value, start_ns, time_ns } => {
                let secs = time_ns.checked_sub(start_ns).filter(|d| *d > 0 && start_ns > 0)? as f64 / 1e9;
                Some(value / secs)
            }
            Reading::Cumulative { value, start_ns, time_ns } => {
                series.clock += 1;
                let seen = series.clock;
                if !series.last.contains_key(key) && series.last.len() >= MAX_SERIES {
                    if let Some(oldest) = series.last.iter().min_by_key(|(_, l)| l.seen).map(|(k, _)| k.clone()) {
                        series.last.remove(&oldest);
                    }
                }
                let prev = series.last.insert(key.to_string(), Last { value, time_ns, seen })?;
                // A reset (the value fell, or the series restarted after the previous point)
                // only sets the new base.
                if value < prev.value || start_ns > prev.time_ns || time_ns <= prev.time_ns {
                    return None;
                }
                Some((value - prev.value) / ((time_ns - prev.time_ns) as f64 / 1e9))
            }
        }
    }
}

/// The reading of the context's point, if it is a gauge or sum point with a value.
fn number(c: &DataPointContext) -> Option<Reading> {
    use otelprof_ottl::context::DataPoint;
    let DataPoint::Number(p) = &c.datapoint else { return None };
    let v = match p.value? {
        number_data_point::Value::AsDouble(d) => d,
        number_data_point::Value::AsInt(i) => i as f64,
    };
    Some(match &c.metric.data {
        Some(MetricData::Gauge(_)) => Reading::Level(v),
        Some(MetricData::Sum(s)) if !s.is_monotonic => Reading::Level(v),
        Some(MetricData::Sum(s)) if s.aggregation_temporality == AggregationTemporality::Delta as i32 => {
            Reading::Delta { value: v, start_ns: p.start_time_unix_nano, time_ns: p.time_unix_nano }
        }
        Some(MetricData::Sum(_)) => {
            Reading::Cumulative { value: v, start_ns: p.start_time_unix_nano, time_ns: p.time_unix_nano }
        }
        _ => return None,
    })
}

/// `service/metric{k=v,…}` (attributes sorted by key).
fn series_key(c: &DataPointContext) -> String {
    use otelprof_ottl::context::DataPoint;
    let mut key = String::new();
    if let Some(s) = string_or_int(&c.resource.attributes, "service.name") {
        key.push_str(&s);
        key.push('/');
    }
    key.push_str(&c.metric.name);
    let attributes = match &c.datapoint {
        DataPoint::Number(p) => &p.attributes,
        _ => return key,
    };
    if !attributes.is_empty() {
        let mut pairs: Vec<(&str, String)> =
            attributes.iter().map(|kv| (kv.key.as_str(), kv.value.as_ref().map(render).unwrap_or_default())).collect();
        pairs.sort();
        key.push('{');
        key.push_str(&pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","));
        key.push('}');
    }
    key
}

fn render(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(_) => "…".into(),
        None => String::new(),
    }
}

/// A string or integer attribute as text (`process.pid` is an int, some senders send text).
fn string_or_int(attributes: &[KeyValue], key: &str) -> Option<String> {
    let v = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match &v.value {
        Some(any_value::Value::StringValue(s)) if !s.is_empty() => Some(s.clone()),
        Some(any_value::Value::IntValue(i)) => Some(i.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
