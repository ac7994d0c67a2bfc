//! Changing a metric's type: sum ↔ gauge in place, and new sums or gauges from a summary's
//! counts, sums or quantiles.

use std::mem::take;

use opentelemetry_proto::tonic::{
    common::v1::KeyValue,
    metrics::v1::{
        metric::Data, number_data_point::Value as Number, Gauge, Metric, NumberDataPoint, Sum, SummaryDataPoint,
    },
};

use super::{derived, metric_ctx, metric_or_point, temporality, Record};
use crate::{
    error::EvalError,
    func::{Args, Target},
    funcs::opt_str,
};

/// `convert_sum_to_gauge()`: a sum becomes a gauge with the same points (temporality and
/// monotonicity are dropped); other types are left alone.
pub(super) fn sum_to_gauge(t: &mut dyn Target, _: &Args<'_>) -> Result<(), EvalError> {
    let m = &mut metric_ctx(t, "convert_sum_to_gauge")?.metric;
    if let Some(Data::Sum(s)) = &mut m.data {
        m.data = Some(Data::Gauge(Gauge { data_points: take(&mut s.data_points) }));
    }
    Ok(())
}

/// `convert_gauge_to_sum(aggregation_temporality, is_monotonic)`: a gauge becomes a sum with
/// the same points; other types are left alone.
pub(super) fn gauge_to_sum(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    const F: &str = "convert_gauge_to_sum";
    let aggregation_temporality = temporality(F, a.str(0)?)?;
    let is_monotonic = a.bool(1)?;
    let m = &mut metric_ctx(t, F)?.metric;
    if let Some(Data::Gauge(g)) = &mut m.data {
        let data_points = take(&mut g.data_points);
        m.data = Some(Data::Sum(Sum { data_points, aggregation_temporality, is_monotonic }));
    }
    Ok(())
}

/// `convert_summary_count_val_to_sum(aggregation_temporality, is_monotonic, suffix = "_count")`.
pub(super) fn summary_count_to_sum(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    summary_to_sum(t, a, "convert_summary_count_val_to_sum", "_count", |p| Number::AsInt(p.count as i64))
}

/// `convert_summary_sum_val_to_sum(aggregation_temporality, is_monotonic, suffix = "_sum")`.
pub(super) fn summary_sum_to_sum(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    summary_to_sum(t, a, "convert_summary_sum_val_to_sum", "_sum", |p| Number::AsDouble(p.sum))
}

/// A summary's points as a new sum named `<name><suffix>` with the summary's description and
/// unit, one point per summary point (attributes and timestamps kept).
///
/// In the metric context one new metric takes every point. In the data point context (where
/// upstream registers these two functions) each visited point is added to the metric its
/// summary made in this scope, so a `where` on the point picks which points convert; upstream
/// instead appends a copy of the whole summary per visited point.
fn summary_to_sum(
    t: &mut dyn Target,
    a: &Args<'_>,
    func: &str,
    default_suffix: &str,
    value: fn(&SummaryDataPoint) -> Number,
) -> Result<(), EvalError> {
    let aggregation_temporality = temporality(func, a.str(0)?)?;
    let is_monotonic = a.bool(1)?;
    let suffix = opt_str(a, 2)?.unwrap_or(default_suffix);
    let point = |p: &SummaryDataPoint| NumberDataPoint {
        attributes: p.attributes.clone(),
        start_time_unix_nano: p.start_time_unix_nano,
        time_unix_nano: p.time_unix_nano,
        value: Some(value(p)),
        ..Default::default()
    };
    let empty_sum = || Data::Sum(Sum { data_points: Vec::new(), aggregation_temporality, is_monotonic });
    match metric_or_point(t, func)? {
        Record::Metric(c) => {
            let Some(Data::Summary(s)) = &c.metric.data else { return Ok(()) };
            if s.data_points.is_empty() {
                return Ok(());
            }
            let mut new = derived(&c.metric, suffix, empty_sum());
            if let Some(Data::Sum(sum)) = &mut new.data {
                sum.data_points = s.data_points.iter().map(point).collect();
            }
            c.new_metrics.push(new);
        }
        Record::Point(c) => {
            let (Some(Data::Summary(_)), crate::context::DataPoint::Summary(p)) = (&c.metric.data, &c.datapoint) else {
                return Ok(());
            };
            let name = format!("{}{suffix}", c.metric.name);
            let i = match c.new_metrics.iter().position(|m| m.name == name && matches!(m.data, Some(Data::Sum(_)))) {
                Some(i) => i,
                None => {
                    c.new_metrics.push(derived(&c.metric, suffix, empty_sum()));
                    c.new_metrics.len() - 1
                }
            };
            if let Some(Data::Sum(sum)) = &mut c.new_metrics[i].data {
                sum.data_points.push(point(p));
            }
        }
    }
    Ok(())
}

/// `convert_summary_quantile_val_to_gauge(attribute_key = "quantile", suffix = ".quantiles")`:
/// a new gauge `<name><suffix>` with one point per quantile of each summary point: the
/// point's attributes plus `attribute_key` = the quantile as text (`"0.50"`, `"0.99"`, `"1"`:
/// upstream's spelling, at least two decimals below 1), the quantile's value as a double.
/// A summary without quantiles makes no metric.
pub(super) fn summary_quantiles_to_gauge(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    let key = opt_str(a, 0)?.unwrap_or("quantile");
    let suffix = opt_str(a, 1)?.unwrap_or(".quantiles");
    let c = metric_ctx(t, "convert_summary_quantile_val_to_gauge")?;
    let Some(Data::Summary(s)) = &c.metric.data else { return Ok(()) };
    let mut points = Vec::new();
    for p in &s.data_points {
        for q in &p.quantile_values {
            let mut attributes = p.attributes.clone();
            let label = crate::value::Value::String(quantile_label(q.quantile)).to_any_value();
            match attributes.iter_mut().find(|kv| kv.key == key) {
                Some(kv) => kv.value = Some(label),
                None => attributes.push(KeyValue { key: key.to_owned(), value: Some(label), ..Default::default() }),
            }
            points.push(NumberDataPoint {
                attributes,
                start_time_unix_nano: p.start_time_unix_nano,
                time_unix_nano: p.time_unix_nano,
                value: Some(Number::AsDouble(q.value)),
                ..Default::default()
            });
        }
    }
    if !points.is_empty() {
        let new: Metric = derived(&c.metric, suffix, Data::Gauge(Gauge { data_points: points }));
        c.new_metrics.push(new);
    }
    Ok(())
}

/// A quantile as upstream writes it: the shortest decimal, padded to two decimals when it is
/// shorter than four characters (`0.5` → `"0.50"`), except `"0"` and `"1"`.
fn quantile_label(q: f64) -> String {
    let mut s = q.to_string();
    if s.len() < 4 && s != "0" && s != "1" {
        s.push('0');
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantile_labels() {
        for (q, want) in [(0.5, "0.50"), (0.9, "0.90"), (0.99, "0.99"), (0.999, "0.999"), (0.0, "0"), (1.0, "1")] {
            assert_eq!(super::quantile_label(q), want);
        }
    }
}
