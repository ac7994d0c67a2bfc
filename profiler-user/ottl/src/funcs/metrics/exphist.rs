//! `convert_exponential_histogram_to_histogram(distribution, explicit_bounds)`: an exponential
//! histogram becomes an explicit-bounds histogram.
//!
//! Each exponential bucket covers `(lower, upper]` with `lower = base^index`, `base =
//! 2^(2^-scale)` (negative buckets the mirror image). Its count goes to the explicit buckets by
//! `distribution`: `upper` puts it where its upper bound falls, `midpoint` where
//! `(lower + upper) / 2` falls, `uniform` spreads it evenly over every explicit bucket the range
//! overlaps (the remainder one by one from the lowest). The zero bucket's count goes where 0
//! falls. The result has `len(explicit_bounds) + 1` bucket counts, as OTLP requires: explicit
//! bucket `i` is `(bounds[i-1], bounds[i]]`, the last one `(bounds[n-1], +inf)`.
//!
//! Differences from upstream, whose implementation writes `len(bounds)` counts and so folds the
//! overflow bucket into the last one: here the counts follow OTLP's layout, the zero count is
//! always placed (upstream only when `bounds[0] == 0`), negative buckets are placed (upstream
//! drops them), and `random` (non-deterministic) is not offered.

use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, ExponentialHistogramDataPoint, Histogram,
    HistogramDataPoint,
};

use super::{fail, metric_ctx};
use crate::{
    error::EvalError,
    func::{Args, Target},
    value::Value,
};

const F: &str = "convert_exponential_histogram_to_histogram";

/// The distributions offered.
pub(super) const DISTRIBUTIONS: &[&str] = &["upper", "midpoint", "uniform"];

#[derive(Clone, Copy)]
enum Distribution {
    Upper,
    Midpoint,
    Uniform,
}

pub(super) fn to_histogram(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    let dist = match a.str(0)? {
        "upper" => Distribution::Upper,
        "midpoint" => Distribution::Midpoint,
        "uniform" => Distribution::Uniform,
        other => return Err(fail(F, format!("unknown distribution {other:?} (upper, midpoint, uniform)"))),
    };
    let bounds: Vec<f64> = a.value(1).expect_list()?.iter().map(Value::expect_f64).collect::<Result<_, _>>()?;
    if bounds.is_empty() {
        return Err(fail(F, "explicit bounds cannot be empty"));
    }
    if bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err(fail(F, "explicit bounds must increase"));
    }
    let m = &mut metric_ctx(t, F)?.metric;
    let Some(Data::ExponentialHistogram(e)) = &mut m.data else { return Ok(()) };
    let data_points = std::mem::take(&mut e.data_points).into_iter().map(|p| point(p, &bounds, dist)).collect();
    m.data = Some(Data::Histogram(Histogram { data_points, aggregation_temporality: e.aggregation_temporality }));
    Ok(())
}

fn point(p: ExponentialHistogramDataPoint, bounds: &[f64], dist: Distribution) -> HistogramDataPoint {
    let mut counts = vec![0u64; bounds.len() + 1];
    if p.zero_count > 0 {
        counts[bucket(bounds, 0.0)] += p.zero_count;
    }
    // base^index = 2^(index · 2^-scale): exact at scale ≤ 0, where the bounds are powers of 2.
    let step = (-f64::from(p.scale)).exp2();
    for (buckets, sign) in [(&p.positive, 1.0), (&p.negative, -1.0)] {
        let Some(Buckets { offset, bucket_counts }) = buckets else { continue };
        for (i, &count) in bucket_counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let index = f64::from(*offset) + i as f64;
            let (a, b) = ((index * step).exp2() * sign, ((index + 1.0) * step).exp2() * sign);
            let (lower, upper) = if a <= b { (a, b) } else { (b, a) };
            match dist {
                Distribution::Upper => counts[bucket(bounds, upper)] += count,
                Distribution::Midpoint => counts[bucket(bounds, (lower + upper) / 2.0)] += count,
                Distribution::Uniform => {
                    let first = bounds.iter().position(|&x| lower < x).unwrap_or(bounds.len());
                    let last = bucket(bounds, upper).max(first);
                    let n = (last - first + 1) as u64;
                    for (k, c) in counts[first..=last].iter_mut().enumerate() {
                        *c += count / n + u64::from((k as u64) < count % n);
                    }
                }
            }
        }
    }
    HistogramDataPoint {
        attributes: p.attributes,
        start_time_unix_nano: p.start_time_unix_nano,
        time_unix_nano: p.time_unix_nano,
        count: p.count,
        sum: p.sum,
        bucket_counts: counts,
        explicit_bounds: bounds.to_vec(),
        exemplars: p.exemplars,
        flags: p.flags,
        min: p.min,
        max: p.max,
    }
}

/// The explicit bucket that holds `v`: the first bound `>= v`, else the overflow bucket.
fn bucket(bounds: &[f64], v: f64) -> usize {
    bounds.iter().position(|&b| v <= b).unwrap_or(bounds.len())
}
