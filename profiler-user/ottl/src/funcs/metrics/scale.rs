//! `scale_metric(factor, unit?)`: every value of the metric times `factor`.

use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric::Data, number_data_point::Value as Number, Exemplar, NumberDataPoint,
};

use super::{fail, metric_ctx, type_name};
use crate::{
    error::EvalError,
    func::{Args, Target},
    funcs::opt_str,
};

const F: &str = "scale_metric";

/// Gauge and sum values (an int stays an int, truncated toward zero as Go's `int64(x)`),
/// histogram sums, min, max and bounds, summary sums and quantile values, and the exemplars
/// of each; then the unit when given. Exponential histograms are refused: their buckets are
/// powers of a base and cannot be scaled by an arbitrary factor.
pub(super) fn scale(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    let k = a.float(0)?;
    let unit = opt_str(a, 1)?;
    let m = &mut metric_ctx(t, F)?.metric;
    match &mut m.data {
        Some(Data::Gauge(g)) => g.data_points.iter_mut().for_each(|p| number(p, k)),
        Some(Data::Sum(s)) => s.data_points.iter_mut().for_each(|p| number(p, k)),
        Some(Data::Histogram(h)) => {
            for p in &mut h.data_points {
                for x in [&mut p.sum, &mut p.min, &mut p.max].into_iter().flatten() {
                    *x *= k;
                }
                p.explicit_bounds.iter_mut().for_each(|b| *b *= k);
                exemplars(&mut p.exemplars, k);
            }
        }
        Some(Data::Summary(s)) => {
            for p in &mut s.data_points {
                p.sum *= k;
                p.quantile_values.iter_mut().for_each(|q| q.value *= k);
            }
        }
        Some(Data::ExponentialHistogram(_)) | None => {
            return Err(fail(F, format!("{} metrics are not supported", type_name(m))));
        }
    }
    if let Some(u) = unit {
        m.unit = u.to_owned();
    }
    Ok(())
}

fn number(p: &mut NumberDataPoint, k: f64) {
    p.value = match p.value {
        Some(Number::AsInt(i)) => Some(Number::AsInt((i as f64 * k) as i64)),
        Some(Number::AsDouble(d)) => Some(Number::AsDouble(d * k)),
        None => None,
    };
    exemplars(&mut p.exemplars, k);
}

fn exemplars(list: &mut [Exemplar], k: f64) {
    for e in list {
        e.value = match e.value {
            Some(exemplar::Value::AsInt(i)) => Some(exemplar::Value::AsInt((i as f64 * k) as i64)),
            Some(exemplar::Value::AsDouble(d)) => Some(exemplar::Value::AsDouble(d * k)),
            None => None,
        };
    }
}
