//! New metrics from a metric: its histogram or summary sums and counts as sums
//! (`extract_sum_metric`, `extract_count_metric`), or a copy (`copy_metric`).

use opentelemetry_proto::tonic::{
    common::v1::KeyValue,
    metrics::v1::{metric::Data, number_data_point::Value as Number, NumberDataPoint, Sum},
};

use super::{derived, fail, metric_ctx, type_name};
use crate::{
    error::EvalError,
    func::{Args, Target},
    funcs::opt_str,
};

/// What a point gives the new sum: its attributes, times and (when it has one) the value.
struct Source<'a> {
    attributes: &'a [KeyValue],
    start: u64,
    time: u64,
    value: Option<Number>,
}

/// `extract_sum_metric(is_monotonic, suffix = "_sum")`: a histogram's, exponential
/// histogram's or summary's point sums as a new sum `<name><suffix>` (points without a sum are
/// skipped; no points, no metric). Temporality is the source's (cumulative for a summary).
pub(super) fn sum(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    extract(t, a, "extract_sum_metric", "_sum", |sum, _| sum.map(Number::AsDouble))
}

/// `extract_count_metric(is_monotonic, suffix = "_count")`: the point counts, as ints.
pub(super) fn count(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    extract(t, a, "extract_count_metric", "_count", |_, count| Some(Number::AsInt(count as i64)))
}

fn extract(
    t: &mut dyn Target,
    a: &Args<'_>,
    func: &str,
    default_suffix: &str,
    pick: fn(Option<f64>, u64) -> Option<Number>,
) -> Result<(), EvalError> {
    let is_monotonic = a.bool(0)?;
    let suffix = opt_str(a, 1)?.unwrap_or(default_suffix);
    let c = metric_ctx(t, func)?;
    let (temporality, sources): (i32, Vec<Source<'_>>) = match &c.metric.data {
        Some(Data::Histogram(h)) => (
            h.aggregation_temporality,
            h.data_points
                .iter()
                .map(|p| Source {
                    attributes: &p.attributes,
                    start: p.start_time_unix_nano,
                    time: p.time_unix_nano,
                    value: pick(p.sum, p.count),
                })
                .collect(),
        ),
        Some(Data::ExponentialHistogram(h)) => (
            h.aggregation_temporality,
            h.data_points
                .iter()
                .map(|p| Source {
                    attributes: &p.attributes,
                    start: p.start_time_unix_nano,
                    time: p.time_unix_nano,
                    value: pick(p.sum, p.count),
                })
                .collect(),
        ),
        // Summaries have no temporality; the OpenMetrics model makes them cumulative.
        Some(Data::Summary(s)) => (
            2,
            s.data_points
                .iter()
                .map(|p| Source {
                    attributes: &p.attributes,
                    start: p.start_time_unix_nano,
                    time: p.time_unix_nano,
                    value: pick(Some(p.sum), p.count),
                })
                .collect(),
        ),
        _ => {
            return Err(fail(
                func,
                format!(
                    "requires an input metric of type Histogram, ExponentialHistogram or Summary, got {}",
                    type_name(&c.metric)
                ),
            ))
        }
    };
    let data_points: Vec<NumberDataPoint> = sources
        .into_iter()
        .filter_map(|s| {
            Some(NumberDataPoint {
                attributes: s.attributes.to_vec(),
                start_time_unix_nano: s.start,
                time_unix_nano: s.time,
                value: Some(s.value?),
                ..Default::default()
            })
        })
        .collect();
    if !data_points.is_empty() {
        let sum = Data::Sum(Sum { data_points, aggregation_temporality: temporality, is_monotonic });
        let new = derived(&c.metric, suffix, sum);
        c.new_metrics.push(new);
    }
    Ok(())
}

/// `copy_metric(name?, description?, unit?)`: a copy of the metric, with the given fields
/// replaced.
pub(super) fn copy(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    let c = metric_ctx(t, "copy_metric")?;
    let mut new = c.metric.clone();
    for (i, field) in [&mut new.name, &mut new.description, &mut new.unit].into_iter().enumerate() {
        if let Some(v) = opt_str(a, i)? {
            *field = v.to_owned();
        }
    }
    c.new_metrics.push(new);
    Ok(())
}
