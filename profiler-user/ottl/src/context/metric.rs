//! The `metric` context, and the `metric.*` paths every data point statement can read.
//!
//! `metric.data_points` reads the points as a list of maps (one map per point, with the
//! `datapoint.*` field names as keys, see [`super::datapoint::point_map`]); it is read-only,
//! as the points are edited one by one in the `datapoint` context.
//!
//! Functions that make new metrics (`copy_metric`, `extract_sum_metric`, …) cannot push them
//! into the scope's metric list while the walk holds it: they go to
//! [`MetricContext::new_metrics`], and the walk appends them to the scope once every metric of
//! the scope was visited.

use opentelemetry_proto::tonic::{
    common::v1::InstrumentationScope,
    metrics::v1::{metric::Data, Metric},
    resource::v1::Resource,
};

use super::{cache_fns, datapoint::DataPointRef, fields::fld, parent_field, parents, Context, Field};
use crate::{
    error::EvalError,
    value::{Map, Value},
};

/// Statements over each metric.
#[derive(Clone, Debug, Default)]
pub struct MetricContext {
    /// The resource.
    pub resource: Resource,
    /// The instrumentation scope.
    pub scope: InstrumentationScope,
    /// The metric.
    pub metric: Metric,
    /// The per-record cache.
    pub cache: Map,
    /// Metrics made by the statements (`copy_metric`, `extract_*`, `convert_summary_*`), in
    /// the order they were made. They belong after the scope's last metric: the walk appends
    /// them when it leaves the scope, so the group that made them does not visit them.
    pub new_metrics: Vec<Metric>,
}

parents!(MetricContext);

/// Contexts that carry a metric.
pub trait HasMetric {
    /// The metric.
    fn metric(&self) -> &Metric;
    /// The metric, mutable.
    fn metric_mut(&mut self) -> &mut Metric;
}

impl HasMetric for MetricContext {
    fn metric(&self) -> &Metric {
        &self.metric
    }
    fn metric_mut(&mut self) -> &mut Metric {
        &mut self.metric
    }
}

/// pdata's metric type numbers (`METRIC_DATA_TYPE_*`).
pub fn metric_type(m: &Metric) -> i64 {
    match m.data {
        None => 0,
        Some(Data::Gauge(_)) => 1,
        Some(Data::Sum(_)) => 2,
        Some(Data::Histogram(_)) => 3,
        Some(Data::ExponentialHistogram(_)) => 4,
        Some(Data::Summary(_)) => 5,
    }
}

fn temporality(m: &Metric) -> i64 {
    match &m.data {
        Some(Data::Sum(s)) => s.aggregation_temporality.into(),
        Some(Data::Histogram(h)) => h.aggregation_temporality.into(),
        Some(Data::ExponentialHistogram(h)) => h.aggregation_temporality.into(),
        _ => 0,
    }
}

fn set_temporality(m: &mut Metric, v: Value) -> Result<(), EvalError> {
    let t = i32::try_from(v.expect_int()?).map_err(|_| EvalError::new("aggregation temporality out of range"))?;
    match &mut m.data {
        Some(Data::Sum(s)) => s.aggregation_temporality = t,
        Some(Data::Histogram(h)) => h.aggregation_temporality = t,
        Some(Data::ExponentialHistogram(h)) => h.aggregation_temporality = t,
        // Gauges and summaries have no temporality: nothing to set, as upstream.
        _ => {}
    }
    Ok(())
}

/// The metric's points as a list of maps (empty for a metric without data).
fn data_points(m: &Metric) -> Value {
    use super::datapoint::point_map as map;
    let maps: Vec<Value> = match &m.data {
        None => Vec::new(),
        Some(Data::Gauge(x)) => x.data_points.iter().map(|p| map(&DataPointRef::Number(p))).collect(),
        Some(Data::Sum(x)) => x.data_points.iter().map(|p| map(&DataPointRef::Number(p))).collect(),
        Some(Data::Histogram(x)) => x.data_points.iter().map(|p| map(&DataPointRef::Histogram(p))).collect(),
        Some(Data::ExponentialHistogram(x)) => {
            x.data_points.iter().map(|p| map(&DataPointRef::ExponentialHistogram(p))).collect()
        }
        Some(Data::Summary(x)) => x.data_points.iter().map(|p| map(&DataPointRef::Summary(p))).collect(),
    };
    Value::List(maps)
}

/// `metric.*` paths (the part after `metric`).
pub fn metric_field<C: HasMetric>(rest: &[&str]) -> Option<Field<C>> {
    Some(match rest {
        ["name"] => fld!(str, metric, metric_mut, name),
        ["description"] => fld!(str, metric, metric_mut, description),
        ["unit"] => fld!(str, metric, metric_mut, unit),
        ["metadata"] => fld!(attrs, metric, metric_mut, metadata),
        ["type"] => Field::Value { get: |c| Value::Int(metric_type(c.metric())), set: None },
        ["data_points"] => Field::Value { get: |c| data_points(c.metric()), set: None },
        ["aggregation_temporality"] => Field::Value {
            get: |c| Value::Int(temporality(c.metric())),
            set: Some(|c, v| set_temporality(c.metric_mut(), v)),
        },
        ["is_monotonic"] => Field::Value {
            get: |c| Value::Bool(matches!(&c.metric().data, Some(Data::Sum(s)) if s.is_monotonic)),
            set: Some(|c, v| {
                let b = v.expect_bool()?;
                if let Some(Data::Sum(s)) = &mut c.metric_mut().data {
                    s.is_monotonic = b;
                }
                Ok(())
            }),
        },
        _ => return None,
    })
}

impl Context for MetricContext {
    const NAME: &'static str = "metric";
    const PARENTS: &'static [&'static str] = &["resource", "instrumentation_scope", "scope"];
    fn field(path: &[&str]) -> Option<Field<Self>> {
        match path {
            ["metric", rest @ ..] => metric_field(rest),
            _ => parent_field(path),
        }
    }
    cache_fns!();
}
