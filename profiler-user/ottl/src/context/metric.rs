//! The `metric` context, and the `metric.*` paths every data point statement can read.
//!
//! TODO: `metric.data_points` (the list) is not a path yet.

use opentelemetry_proto::tonic::{
    common::v1::InstrumentationScope,
    metrics::v1::{metric::Data, Metric},
    resource::v1::Resource,
};

use super::{cache_fns, fields::fld, parent_field, parents, Context, Field};
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

/// `metric.*` paths (the part after `metric`).
pub fn metric_field<C: HasMetric>(rest: &[&str]) -> Option<Field<C>> {
    Some(match rest {
        ["name"] => fld!(str, metric, metric_mut, name),
        ["description"] => fld!(str, metric, metric_mut, description),
        ["unit"] => fld!(str, metric, metric_mut, unit),
        ["metadata"] => fld!(attrs, metric, metric_mut, metadata),
        ["type"] => Field::Value { get: |c| Value::Int(metric_type(c.metric())), set: None },
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
