//! The `datapoint` context: every kind of metric data point, with `metric.*` readable.
//!
//! A path that does not exist on the current point's kind reads `nil` and refuses writes
//! (e.g. `datapoint.value_int` on a histogram point). `datapoint.exemplars` and the summary's
//! `datapoint.quantile_values` read as lists of maps and are read-only.
//!
//! While a point is visited its metric's point list is empty (the walk moved the points out),
//! so `metric.data_points` reads `[]` here. New metrics made from a point
//! (`convert_summary_sum_val_to_sum`, …) go to [`DataPointContext::new_metrics`], as in the
//! metric context.

use opentelemetry_proto::tonic::{
    common::v1::{InstrumentationScope, KeyValue},
    metrics::v1::{
        exemplar, exponential_histogram_data_point::Buckets, number_data_point, Exemplar,
        ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint, SummaryDataPoint,
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
    /// Metrics made by the statements, appended to the scope when the walk leaves it (see
    /// [`super::MetricContext::new_metrics`]).
    pub new_metrics: Vec<Metric>,
}

parents!(DataPointContext);

/// A borrowed data point of any kind.
#[derive(Clone, Copy, Debug)]
pub enum DataPointRef<'a> {
    /// Gauge and sum points.
    Number(&'a NumberDataPoint),
    /// Histogram points.
    Histogram(&'a HistogramDataPoint),
    /// Exponential histogram points.
    ExponentialHistogram(&'a ExponentialHistogramDataPoint),
    /// Summary points.
    Summary(&'a SummaryDataPoint),
}

impl DataPoint {
    /// The point, borrowed.
    pub fn as_ref(&self) -> DataPointRef<'_> {
        match self {
            DataPoint::Number(p) => DataPointRef::Number(p),
            DataPoint::Histogram(p) => DataPointRef::Histogram(p),
            DataPoint::ExponentialHistogram(p) => DataPointRef::ExponentialHistogram(p),
            DataPoint::Summary(p) => DataPointRef::Summary(p),
        }
    }
}

/// A point as a map whose keys are its `datapoint.*` path names (`metric.data_points`).
pub fn point_map(p: &DataPointRef<'_>) -> Value {
    let mut m = Map::new();
    macro_rules! common_fields {
        ($p:expr) => {{
            m.insert("attributes", Value::Map(Map::from_key_values(&$p.attributes)));
            m.insert("start_time_unix_nano", int_of($p.start_time_unix_nano));
            m.insert("time_unix_nano", int_of($p.time_unix_nano));
            m.insert("flags", Value::Int($p.flags.into()));
        }};
    }
    match *p {
        DataPointRef::Number(p) => {
            common_fields!(p);
            match p.value {
                Some(number_data_point::Value::AsInt(i)) => m.insert("value_int", Value::Int(i)),
                Some(number_data_point::Value::AsDouble(d)) => m.insert("value_double", Value::Double(d)),
                None => {}
            }
        }
        DataPointRef::Histogram(p) => {
            common_fields!(p);
            m.insert("count", int_of(p.count));
            if let Some(sum) = p.sum {
                m.insert("sum", Value::Double(sum));
            }
            m.insert("bucket_counts", u64_list(&p.bucket_counts));
            m.insert("explicit_bounds", Value::List(p.explicit_bounds.iter().map(|x| Value::Double(*x)).collect()));
        }
        DataPointRef::ExponentialHistogram(p) => {
            common_fields!(p);
            m.insert("count", int_of(p.count));
            if let Some(sum) = p.sum {
                m.insert("sum", Value::Double(sum));
            }
            m.insert("scale", Value::Int(p.scale.into()));
            m.insert("zero_count", int_of(p.zero_count));
            for (name, b) in [("positive", &p.positive), ("negative", &p.negative)] {
                let mut bm = Map::new();
                let b = b.clone().unwrap_or_default();
                bm.insert("offset", Value::Int(b.offset.into()));
                bm.insert("bucket_counts", u64_list(&b.bucket_counts));
                m.insert(name, Value::Map(bm));
            }
        }
        DataPointRef::Summary(p) => {
            common_fields!(p);
            m.insert("count", int_of(p.count));
            m.insert("sum", Value::Double(p.sum));
            m.insert("quantile_values", quantiles(p));
        }
    }
    Value::Map(m)
}

fn quantiles(p: &SummaryDataPoint) -> Value {
    Value::List(
        p.quantile_values
            .iter()
            .map(|q| {
                let mut m = Map::new();
                m.insert("quantile", Value::Double(q.quantile));
                m.insert("value", Value::Double(q.value));
                Value::Map(m)
            })
            .collect(),
    )
}

fn exemplars(list: &[Exemplar]) -> Value {
    Value::List(
        list.iter()
            .map(|e| {
                let mut m = Map::new();
                m.insert("filtered_attributes", Value::Map(Map::from_key_values(&e.filtered_attributes)));
                m.insert("time_unix_nano", int_of(e.time_unix_nano));
                match e.value {
                    Some(exemplar::Value::AsInt(i)) => m.insert("value_int", Value::Int(i)),
                    Some(exemplar::Value::AsDouble(d)) => m.insert("value_double", Value::Double(d)),
                    None => {}
                }
                m.insert("span_id", Value::Bytes(e.span_id.clone()));
                m.insert("trace_id", Value::Bytes(e.trace_id.clone()));
                Value::Map(m)
            })
            .collect(),
    )
}

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
            ["exemplars"] => Field::Value {
                get: |c| match &c.datapoint {
                    DataPoint::Number(p) => exemplars(&p.exemplars),
                    DataPoint::Histogram(p) => exemplars(&p.exemplars),
                    DataPoint::ExponentialHistogram(p) => exemplars(&p.exemplars),
                    DataPoint::Summary(_) => Value::Nil,
                },
                set: None,
            },
            ["quantile_values"] => Field::Value {
                get: |c| match &c.datapoint {
                    DataPoint::Summary(p) => quantiles(p),
                    _ => Value::Nil,
                },
                set: None,
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
