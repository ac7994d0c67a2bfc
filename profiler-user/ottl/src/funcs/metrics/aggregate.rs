//! `aggregate_on_attributes` and `aggregate_on_attribute_value`: merging a metric's points
//! that share their attributes (after dropping or relabelling some) into one point each.
//!
//! Points merge when their attributes (in any order) and time are equal, and for delta sums
//! and histograms their start time too; histogram points also need the same bounds, the same
//! min/max presence and flags, exponential histogram points the same scale and offsets. The
//! merged point is the group's first, with the earliest start time and every exemplar of the
//! group; groups come out in the order of their first point (upstream's order is Go's map
//! order, i.e. unspecified).

use std::collections::HashMap;

use opentelemetry_proto::tonic::{
    common::v1::KeyValue,
    metrics::v1::{
        exponential_histogram_data_point::Buckets, metric::Data, number_data_point::Value as Number,
        ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint,
    },
};

use super::{fail, metric_ctx};
use crate::{
    error::EvalError,
    func::{Args, Target},
    value::Value,
};

/// An aggregation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Agg {
    Sum,
    Max,
    Min,
    Mean,
    Median,
    Count,
}

fn agg(func: &str, name: &str) -> Result<Agg, EvalError> {
    Ok(match name {
        "sum" => Agg::Sum,
        "max" => Agg::Max,
        "min" => Agg::Min,
        "mean" => Agg::Mean,
        "median" => Agg::Median,
        "count" => Agg::Count,
        other => {
            return Err(fail(
                func,
                format!("invalid aggregation function {other:?} (sum, max, min, mean, median, count)"),
            ))
        }
    })
}

/// `aggregate_on_attributes(function, attributes?)`: without `attributes` the points keep all
/// theirs; with a list they keep only those keys (`[]`: none, so every point merges into one
/// per time).
pub(super) fn on_attributes(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    const F: &str = "aggregate_on_attributes";
    let f = agg(F, a.str(0)?)?;
    let keep = a.get(1).map(|_| a.strings(1)).transpose()?;
    let m = &mut metric_ctx(t, F)?.metric;
    check(F, m, f)?;
    if let Some(keep) = &keep {
        for_each_attributes(m, |attrs| attrs.retain(|kv| keep.contains(&kv.key.as_str())));
    }
    merge(m, f);
    Ok(())
}

/// `aggregate_on_attribute_value(function, attribute, values, new_value)`: points whose
/// string attribute `attribute` is one of `values` get `new_value` instead, then points merge.
pub(super) fn on_attribute_value(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    const F: &str = "aggregate_on_attribute_value";
    let f = agg(F, a.str(0)?)?;
    let attribute = a.str(1)?;
    let values = a.strings(2)?;
    let new_value = Value::String(a.str(3)?.to_owned()).to_any_value();
    let m = &mut metric_ctx(t, F)?.metric;
    check(F, m, f)?;
    for_each_attributes(m, |attrs| {
        for kv in attrs.iter_mut().filter(|kv| kv.key == attribute) {
            let v = kv.value.as_ref().map_or(Value::Nil, Value::from_any_value);
            if v.as_str().is_some_and(|s| values.contains(&s)) {
                kv.value = Some(new_value.clone());
            }
        }
    });
    merge(m, f);
    Ok(())
}

/// Summaries cannot be merged; histograms only summed (both as upstream documents).
fn check(func: &str, m: &Metric, f: Agg) -> Result<(), EvalError> {
    match &m.data {
        Some(Data::Summary(_)) => Err(fail(func, "does not support aggregating Summary metrics")),
        Some(Data::Histogram(_) | Data::ExponentialHistogram(_)) if f != Agg::Sum => {
            Err(fail(func, "histograms aggregate with \"sum\" only"))
        }
        _ => Ok(()),
    }
}

fn for_each_attributes(m: &mut Metric, mut f: impl FnMut(&mut Vec<KeyValue>)) {
    match &mut m.data {
        Some(Data::Gauge(x)) => x.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        Some(Data::Sum(x)) => x.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        Some(Data::Histogram(x)) => x.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        Some(Data::ExponentialHistogram(x)) => x.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        Some(Data::Summary(x)) => x.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        None => {}
    }
}

fn merge(m: &mut Metric, f: Agg) {
    const DELTA: i32 = 1;
    match &mut m.data {
        Some(Data::Gauge(x)) => {
            let groups = group(std::mem::take(&mut x.data_points), |p| key(&p.attributes, p.time_unix_nano, None));
            x.data_points = groups.into_iter().filter_map(|g| numbers(g, f)).collect();
        }
        Some(Data::Sum(x)) => {
            let delta = x.aggregation_temporality == DELTA;
            let groups = group(std::mem::take(&mut x.data_points), |p| {
                key(&p.attributes, p.time_unix_nano, delta.then_some(p.start_time_unix_nano))
            });
            x.data_points = groups.into_iter().filter_map(|g| numbers(g, f)).collect();
        }
        Some(Data::Histogram(x)) => {
            let delta = x.aggregation_temporality == DELTA;
            let groups = group(std::mem::take(&mut x.data_points), |p| {
                let bounds: Vec<u64> = p.explicit_bounds.iter().map(|b| b.to_bits()).collect();
                let extra = format!("{bounds:?} {} {} {}", p.min.is_some(), p.max.is_some(), p.flags);
                key(&p.attributes, p.time_unix_nano, delta.then_some(p.start_time_unix_nano)) + &extra
            });
            x.data_points = groups.into_iter().filter_map(histograms).collect();
        }
        Some(Data::ExponentialHistogram(x)) => {
            let delta = x.aggregation_temporality == DELTA;
            let groups = group(std::mem::take(&mut x.data_points), |p| {
                let offset = |b: &Option<Buckets>| b.as_ref().map_or(0, |b| b.offset);
                let extra = format!(
                    "{} {} {} {} {} {}",
                    p.scale,
                    p.min.is_some(),
                    p.max.is_some(),
                    p.flags,
                    offset(&p.positive),
                    offset(&p.negative)
                );
                key(&p.attributes, p.time_unix_nano, delta.then_some(p.start_time_unix_nano)) + &extra
            });
            x.data_points = groups.into_iter().filter_map(exponential).collect();
        }
        Some(Data::Summary(_)) | None => {}
    }
}

/// Attributes in a canonical order, time and (when it counts) start time as one string.
fn key(attrs: &[KeyValue], time: u64, start: Option<u64>) -> String {
    let mut parts: Vec<(&str, String)> = attrs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_ref().map_or(Value::Nil, Value::from_any_value).to_json()))
        .collect();
    parts.sort_unstable();
    format!("{parts:?} {time} {start:?} ")
}

/// Splits `points` into groups of equal key, in the order of each group's first point.
fn group<P>(points: Vec<P>, key: impl Fn(&P) -> String) -> Vec<Vec<P>> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<P>> = Vec::new();
    for p in points {
        let i = *index.entry(key(&p)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(p);
    }
    groups
}

/// Number points: the first point's value type decides whether the result is an int or a
/// double (an int mean or median truncates, as upstream).
fn numbers(group: Vec<NumberDataPoint>, f: Agg) -> Option<NumberDataPoint> {
    let n = group.len();
    let start = group.iter().map(|p| p.start_time_unix_nano).min()?;
    let values: Vec<Option<Number>> = group.iter().map(|p| p.value).collect();
    let mut points = group.into_iter();
    let mut base = points.next()?;
    for p in points {
        base.exemplars.extend(p.exemplars);
    }
    base.start_time_unix_nano = start;
    base.value = Some(match base.value {
        Some(Number::AsInt(_)) => {
            let ints: Vec<i64> = values.iter().map(as_int).collect();
            Number::AsInt(match f {
                Agg::Sum => ints.iter().fold(0i64, |s, x| s.wrapping_add(*x)),
                Agg::Mean => ints.iter().fold(0i64, |s, x| s.wrapping_add(*x)) / n as i64,
                Agg::Max => ints.iter().copied().max()?,
                Agg::Min => ints.iter().copied().min()?,
                Agg::Count => n as i64,
                Agg::Median => {
                    let mut v = ints;
                    v.sort_unstable();
                    match n % 2 {
                        1 => v[n / 2],
                        _ => ((i128::from(v[n / 2 - 1]) + i128::from(v[n / 2])) / 2) as i64,
                    }
                }
            })
        }
        _ => {
            let floats: Vec<f64> = values.iter().map(as_f64).collect();
            Number::AsDouble(match f {
                Agg::Sum => floats.iter().sum(),
                Agg::Mean => floats.iter().sum::<f64>() / n as f64,
                Agg::Max => floats.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                Agg::Min => floats.iter().copied().fold(f64::INFINITY, f64::min),
                Agg::Count => n as f64,
                Agg::Median => {
                    let mut v = floats;
                    v.sort_unstable_by(f64::total_cmp);
                    match n % 2 {
                        1 => v[n / 2],
                        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
                    }
                }
            })
        }
    });
    Some(base)
}

fn as_int(v: &Option<Number>) -> i64 {
    match v {
        Some(Number::AsInt(i)) => *i,
        Some(Number::AsDouble(d)) => *d as i64,
        None => 0,
    }
}

fn as_f64(v: &Option<Number>) -> f64 {
    match v {
        Some(Number::AsInt(i)) => *i as f64,
        Some(Number::AsDouble(d)) => *d,
        None => 0.0,
    }
}

/// Adds `more` to `counts` bucket by bucket (the longer list wins its tail).
fn add_counts(counts: &mut Vec<u64>, more: &[u64]) {
    if counts.len() < more.len() {
        counts.resize(more.len(), 0);
    }
    for (c, m) in counts.iter_mut().zip(more) {
        *c = c.saturating_add(*m);
    }
}

fn add_sum(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
    }
}

/// Histogram points, summed.
fn histograms(group: Vec<HistogramDataPoint>) -> Option<HistogramDataPoint> {
    let mut points = group.into_iter();
    let mut base = points.next()?;
    for p in points {
        base.count = base.count.saturating_add(p.count);
        base.sum = add_sum(base.sum, p.sum);
        base.min = base.min.map(|m| p.min.map_or(m, |x| m.min(x)));
        base.max = base.max.map(|m| p.max.map_or(m, |x| m.max(x)));
        add_counts(&mut base.bucket_counts, &p.bucket_counts);
        base.exemplars.extend(p.exemplars);
        base.start_time_unix_nano = base.start_time_unix_nano.min(p.start_time_unix_nano);
    }
    Some(base)
}

/// Exponential histogram points (same scale and offsets), summed.
fn exponential(group: Vec<ExponentialHistogramDataPoint>) -> Option<ExponentialHistogramDataPoint> {
    let mut points = group.into_iter();
    let mut base = points.next()?;
    for p in points {
        base.count = base.count.saturating_add(p.count);
        base.sum = add_sum(base.sum, p.sum);
        base.zero_count = base.zero_count.saturating_add(p.zero_count);
        base.min = base.min.map(|m| p.min.map_or(m, |x| m.min(x)));
        base.max = base.max.map(|m| p.max.map_or(m, |x| m.max(x)));
        for (mine, theirs) in [(&mut base.positive, p.positive), (&mut base.negative, p.negative)] {
            if let Some(theirs) = theirs {
                add_counts(&mut mine.get_or_insert_with(Buckets::default).bucket_counts, &theirs.bucket_counts);
            }
        }
        base.exemplars.extend(p.exemplars);
        base.start_time_unix_nano = base.start_time_unix_nano.min(p.start_time_unix_nano);
    }
    Some(base)
}
