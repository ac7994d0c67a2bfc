//! The `datapoint` context: every kind of metric data point, with `metric.*` readable.
//!
//! A path that does not exist on the current point's kind reads `nil` and refuses writes
//! (e.g. `datapoint.value_int` on a histogram point). TODO: `exemplars` and summary
//! `quantile_values` are not paths yet.

use opentelemetry_proto::tonic::{
    common::v1::{InstrumentationScope, KeyValue},
    metrics::v1::{
        exponential_histogram_data_point::Buckets, number_data_point, ExponentialHistogramDataPoint,
        HistogramDataPoint, Metric, NumberDataPoint, SummaryDataPoint,
    },
    resource::v1::Resource,
};

use super::{
    cache_fns, int_of, metric::metric_field, metric::HasMetric, parent_field, parents, set_time, set_u32, set_u64,
    time_of, Context, Field,
};
use crate::{
    error::EvalError,
    value::{Map, Value},
};

/// One data point of any kind.
#[derive(Clone, Debug, PartialEq)]
pub enum DataPoint {
    /// Gauge and sum points.
    Number(NumberDataPoint),
    /// Histogram points.
    Histogram(HistogramDataPoint),
    /// Exponential histogram points.
    ExponentialHistogram(ExponentialHistogramDataPoint),
    /// Summary points.
    Summary(SummaryDataPoint),
}

impl Default for DataPoint {
    fn default() -> Self {
        DataPoint::Number(NumberDataPoint::default())
    }
}

/// Statements over each data point.
#[derive(Clone, Debug, Default)]
pub struct DataPointContext {
    /// The resource.
    pub resource: Resource,
    /// The instrumentation scope.
    pub scope: InstrumentationScope,
    /// The point's metric (its data points list has a placeholder where this point was).
    pub metric: Metric,
    /// The point.
    pub datapoint: DataPoint,
    /// The per-record cache.
    pub cache: Map,
}

parents!(DataPointContext);

impl HasMetric for DataPointContext {
    fn metric(&self) -> &Metric {
        &self.metric
    }
    fn metric_mut(&mut self) -> &mut Metric {
        &mut self.metric
    }
}

macro_rules! common {
    ($dp:expr, $x:ident => $e:expr) => {
        match $dp {
            DataPoint::Number($x) => $e,
            DataPoint::Histogram($x) => $e,
            DataPoint::ExponentialHistogram($x) => $e,
            DataPoint::Summary($x) => $e,
        }
    };
}

fn attrs(c: &DataPointContext) -> &Vec<KeyValue> {
    common!(&c.datapoint, p => &p.attributes)
}
fn attrs_mut(c: &mut DataPointContext) -> &mut Vec<KeyValue> {
    common!(&mut c.datapoint, p => &mut p.attributes)
}

fn no_field(name: &str) -> EvalError {
    EvalError::new(format!("this data point has no {name}"))
}

fn u64_list(v: &[u64]) -> Value {
    Value::List(v.iter().map(|x| Value::Int(*x as i64)).collect())
}

fn set_u64_list(dst: &mut Vec<u64>, v: Value) -> Result<(), EvalError> {
    *dst = v
        .expect_list()?
        .iter()
        .map(|x| u64::try_from(x.expect_int()?).map_err(|_| EvalError::new("bucket counts are unsigned")))
        .collect::<Result<_, _>>()?;
    Ok(())
}

fn buckets(c: &DataPointContext, positive: bool) -> Option<&Buckets> {
    match &c.datapoint {
        DataPoint::ExponentialHistogram(p) => if positive { &p.positive } else { &p.negative }.as_ref(),
        _ => None,
    }
}

fn buckets_mut(c: &mut DataPointContext, positive: bool) -> Result<&mut Buckets, EvalError> {
    match &mut c.datapoint {
        DataPoint::ExponentialHistogram(p) => {
            Ok(if positive { &mut p.positive } else { &mut p.negative }.get_or_insert_with(Buckets::default))
        }
        _ => Err(no_field("buckets")),
    }
}

impl Context for DataPointContext {
    const NAME: &'static str = "datapoint";
    const PARENTS: &'static [&'static str] = &["resource", "instrumentation_scope", "scope", "metric"];
    fn field(path: &[&str]) -> Option<Field<Self>> {
        let rest = match path {
            ["metric", rest @ ..] => return metric_field(rest),
            ["datapoint", rest @ ..] => rest,
            _ => return parent_field(path),
        };
        Some(match rest {
            ["attributes"] => Field::Attributes { get: attrs, get_mut: attrs_mut },
            ["start_time_unix_nano"] => Field::Value {
                get: |c| int_of(common!(&c.datapoint, p => p.start_time_unix_nano)),
                set: Some(|c, v| common!(&mut c.datapoint, p => set_u64(&mut p.start_time_unix_nano, v))),
            },
            ["time_unix_nano"] => Field::Value {
                get: |c| int_of(common!(&c.datapoint, p => p.time_unix_nano)),
                set: Some(|c, v| common!(&mut c.datapoint, p => set_u64(&mut p.time_unix_nano, v))),
            },
            ["start_time"] => Field::Value {
                get: |c| time_of(common!(&c.datapoint, p => p.start_time_unix_nano)),
                set: Some(|c, v| common!(&mut c.datapoint, p => set_time(&mut p.start_time_unix_nano, v))),
            },
            ["time"] => Field::Value {
                get: |c| time_of(common!(&c.datapoint, p => p.time_unix_nano)),
                set: Some(|c, v| common!(&mut c.datapoint, p => set_time(&mut p.time_unix_nano, v))),
            },
            ["flags"] => Field::Value {
                get: |c| Value::Int(common!(&c.datapoint, p => p.flags).into()),
                set: Some(|c, v| common!(&mut c.datapoint, p => set_u32(&mut p.flags, v))),
            },
            ["value_double"] => Field::Value {
                get: |c| match &c.datapoint {
                    DataPoint::Number(p) => match p.value {
                        Some(number_data_point::Value::AsDouble(d)) => Value::Double(d),
                        _ => Value::Double(0.0),
                    },
                    _ => Value::Nil,
                },
                set: Some(|c, v| match &mut c.datapoint {
                    DataPoint::Number(p) => {
                        p.value = Some(number_data_point::Value::AsDouble(v.expect_f64()?));
                        Ok(())
                    }
                    _ => Err(no_field("value_double")),
                }),
            },
            ["value_int"] => Field::Value {
                get: |c| match &c.datapoint {
                    DataPoint::Number(p) => match p.value {
                        Some(number_data_point::Value::AsInt(i)) => Value::Int(i),
                        _ => Value::Int(0),
                    },
                    _ => Value::Nil,
                },
                set: Some(|c, v| match &mut c.datapoint {
                    DataPoint::Number(p) => {
                        p.value = Some(number_data_point::Value::AsInt(v.expect_int()?));
                        Ok(())
                    }
                    _ => Err(no_field("value_int")),
                }),
            },
            ["count"] => Field::Value {
                get: |c| match &c.datapoint {
                    DataPoint::Histogram(p) => int_of(p.count),
                    DataPoint::ExponentialHistogram(p) => int_of(p.count),
                    DataPoint::Summary(p) => int_of(p.count),
                    DataPoint::Number(_) => Value::Nil,
                },
                set: Some(|c, v| match &mut c.datapoint {
                    DataPoint::Histogram(p) => set_u64(&mut p.count, v),
                    DataPoint::ExponentialHistogram(p) => set_u64(&mut p.count, v),
                    DataPoint::Summary(p) => set_u64(&mut p.count, v),
                    DataPoint::Number(_) => Err(no_field("count")),
                }),
            },
            ["sum"] => Field::Value {
                get: |c| match &c.datapoint {
                    DataPoint::Histogram(p) => p.sum.map_or(Value::Nil, Value::Double),
                    DataPoint::ExponentialHistogram(p) => p.sum.map_or(Value::Nil, Value::Double),
                    DataPoint::Summary(p) => Value::Double(p.sum),
                    DataPoint::Number(_) => Value::Nil,
                },
                set: Some(|c, v| {
                    let f = v.expect_f64()?;
                    match &mut c.datapoint {
                        DataPoint::Histogram(p) => p.sum = Some(f),
                        DataPoint::ExponentialHistogram(p) => p.sum = Some(f),
                        DataPoint::Summary(p) => p.sum = f,
                        DataPoint::Number(_) => return Err(no_field("sum")),
                    }
                    Ok(())
                }),
            },
            ["bucket_counts"] => Field::Value {
                get: |c| match &c.datapoint {
                    DataPoint::Histogram(p) => u64_list(&p.bucket_counts),
                    _ => Value::Nil,
                },
                set: Some(|c, v| match &mut c.datapoint {
                    DataPoint::Histogram(p) => set_u64_list(&mut p.bucket_counts, v),
                    _ => Err(no_field("bucket_counts")),
                }),
            },
            ["explicit_bounds"] => Field::Value {
                get: |c| match &c.datapoint {
                    DataPoint::Histogram(p) => {
                        Value::List(p.explicit_bounds.iter().map(|x| Value::Double(*x)).collect())
                    }
                    _ => Value::Nil,
                },
                set: Some(|c, v| match &mut c.datapoint {
                    DataPoint::Histogram(p) => {
                        p.explicit_bounds = v.expect_list()?.iter().map(Value::expect_f64).collect::<Result<_, _>>()?;
                        Ok(())
                    }
                    _ => Err(no_field("explicit_bounds")),
                }),
            },
            ["scale"] => Field::Value {
                get: |c| match &c.datapoint {
                    DataPoint::ExponentialHistogram(p) => Value::Int(p.scale.into()),
                    _ => Value::Nil,
                },
                set: Some(|c, v| match &mut c.datapoint {
                    DataPoint::ExponentialHistogram(p) => super::set_i32(&mut p.scale, v),
                    _ => Err(no_field("scale")),
                }),
            },
            ["zero_count"] => Field::Value {
                get: |c| match &c.datapoint {
                    DataPoint::ExponentialHistogram(p) => int_of(p.zero_count),
                    _ => Value::Nil,
                },
                set: Some(|c, v| match &mut c.datapoint {
                    DataPoint::ExponentialHistogram(p) => set_u64(&mut p.zero_count, v),
                    _ => Err(no_field("zero_count")),
                }),
            },
            ["positive", "offset"] => Field::Value {
                get: |c| buckets(c, true).map_or(Value::Nil, |b| Value::Int(b.offset.into())),
                set: Some(|c, v| super::set_i32(&mut buckets_mut(c, true)?.offset, v)),
            },
            ["positive", "bucket_counts"] => Field::Value {
                get: |c| buckets(c, true).map_or(Value::Nil, |b| u64_list(&b.bucket_counts)),
                set: Some(|c, v| set_u64_list(&mut buckets_mut(c, true)?.bucket_counts, v)),
            },
            ["negative", "offset"] => Field::Value {
                get: |c| buckets(c, false).map_or(Value::Nil, |b| Value::Int(b.offset.into())),
                set: Some(|c, v| super::set_i32(&mut buckets_mut(c, false)?.offset, v)),
            },
            ["negative", "bucket_counts"] => Field::Value {
                get: |c| buckets(c, false).map_or(Value::Nil, |b| u64_list(&b.bucket_counts)),
                set: Some(|c, v| set_u64_list(&mut buckets_mut(c, false)?.bucket_counts, v)),
            },
            _ => return None,
        })
    }
    cache_fns!();
}
