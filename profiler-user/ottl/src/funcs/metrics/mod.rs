//! The transform processor's metric functions (upstream keeps them in
//! `processor/transformprocessor/internal/metrics`, not in `ottlfuncs`): editors that change a
//! whole metric (`convert_sum_to_gauge`, `scale_metric`, `aggregate_on_attributes`, …) or make
//! new ones (`copy_metric`, `extract_sum_metric`, `convert_summary_*`, …).
//!
//! They have no target path: they reach the record through [`Target::record`] and downcast
//! it to [`MetricContext`] (or, for the two summary conversions, [`DataPointContext`] too).
//! In any other context they fail with "runs in the metric context only"; the transform
//! processor places a statement that calls one in the metric context and refuses one it cannot
//! place there at config load ([`function_contexts`]).
//!
//! New metrics go to the context's `new_metrics`, and the walk appends them to the scope's
//! metric list once the whole scope was visited: the statement group that made a metric never
//! visits it, later groups (a flat list's next statements) do. Upstream appends to the list
//! being walked, so the same group visits the new metric too, and a `copy_metric()` whose
//! `where` also matches the copy never ends; here it makes one copy.

use opentelemetry_proto::tonic::metrics::v1::{metric::Data, Metric};

use super::{fail, opt, req};
use crate::{
    context::{DataPointContext, MetricContext},
    error::EvalError,
    func::{Function, ParamType as T, Target},
};

mod aggregate;
mod convert;
mod exphist;
mod extract;
mod scale;

pub(super) static FUNCTIONS: &[Function] = &[
    Function::editor("convert_sum_to_gauge", &[], convert::sum_to_gauge),
    Function::editor(
        "convert_gauge_to_sum",
        &[req("string_agg_temp", T::String), req("monotonic", T::Bool)],
        convert::gauge_to_sum,
    ),
    Function::editor(
        "convert_summary_count_val_to_sum",
        &[req("string_agg_temp", T::String), req("monotonic", T::Bool), opt("suffix", T::String)],
        convert::summary_count_to_sum,
    ),
    Function::editor(
        "convert_summary_sum_val_to_sum",
        &[req("string_agg_temp", T::String), req("monotonic", T::Bool), opt("suffix", T::String)],
        convert::summary_sum_to_sum,
    ),
    Function::editor(
        "convert_summary_quantile_val_to_gauge",
        &[opt("attribute_key", T::String), opt("suffix", T::String)],
        convert::summary_quantiles_to_gauge,
    ),
    Function::editor(
        "convert_exponential_histogram_to_histogram",
        &[req("distribution_fn", T::String), req("explicit_bounds", T::List)],
        exphist::to_histogram,
    ),
    Function::editor("extract_sum_metric", &[req("monotonic", T::Bool), opt("suffix", T::String)], extract::sum),
    Function::editor("extract_count_metric", &[req("monotonic", T::Bool), opt("suffix", T::String)], extract::count),
    Function::editor(
        "copy_metric",
        &[opt("name", T::String), opt("description", T::String), opt("unit", T::String)],
        extract::copy,
    ),
    Function::editor("scale_metric", &[req("multiplier", T::Float), opt("unit", T::String)], scale::scale),
    Function::editor(
        "aggregate_on_attributes",
        &[req("aggregation_function", T::String), opt("attributes", T::List)],
        aggregate::on_attributes,
    ),
    Function::editor(
        "aggregate_on_attribute_value",
        &[
            req("aggregation_function", T::String),
            req("attribute", T::String),
            req("values", T::List),
            req("new_value", T::String),
        ],
        aggregate::on_attribute_value,
    ),
];

/// The contexts a context-bound function runs in, the first preferred; `None` for a
/// function that runs in every context. The transform processor infers a statement's
/// context from this as well as from its paths.
pub fn function_contexts(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "convert_summary_count_val_to_sum" | "convert_summary_sum_val_to_sum" => Some(&["metric", "datapoint"]),
        _ if FUNCTIONS.iter().any(|f| f.name == name) => Some(&["metric"]),
        _ => None,
    }
}

/// A string parameter that takes one of a fixed set of values.
#[derive(Clone, Copy, Debug)]
pub struct Choice {
    /// The parameter's position.
    pub index: usize,
    /// The parameter's name (for `name = value` arguments).
    pub param: &'static str,
    /// What it may be.
    pub values: &'static [&'static str],
}

const TEMPORALITY: &[&str] = &["cumulative", "delta"];
const AGGREGATIONS: &[&str] = &["sum", "max", "min", "mean", "median", "count"];

/// The fixed-choice string parameters of `name`, so that a literal outside the set is refused
/// at config load (upstream checks them when the statement is parsed), not on every record.
pub fn function_choices(name: &str) -> &'static [Choice] {
    const TEMP: &[Choice] = &[Choice { index: 0, param: "string_agg_temp", values: TEMPORALITY }];
    const AGG: &[Choice] = &[Choice { index: 0, param: "aggregation_function", values: AGGREGATIONS }];
    const DIST: &[Choice] = &[Choice { index: 0, param: "distribution_fn", values: exphist::DISTRIBUTIONS }];
    match name {
        "convert_gauge_to_sum" | "convert_summary_count_val_to_sum" | "convert_summary_sum_val_to_sum" => TEMP,
        "aggregate_on_attributes" | "aggregate_on_attribute_value" => AGG,
        "convert_exponential_histogram_to_histogram" => DIST,
        _ => &[],
    }
}

/// The metric context the statement runs on.
fn metric_ctx<'a>(t: &'a mut dyn Target, func: &str) -> Result<&'a mut MetricContext, EvalError> {
    t.record()
        .and_then(|r| r.downcast_mut::<MetricContext>())
        .ok_or_else(|| fail(func, "runs in the metric context only"))
}

/// The record of a function that runs in the metric or the data point context.
enum Record<'a> {
    Metric(&'a mut MetricContext),
    Point(&'a mut DataPointContext),
}

fn metric_or_point<'a>(t: &'a mut dyn Target, func: &str) -> Result<Record<'a>, EvalError> {
    let r = t.record().ok_or_else(|| fail(func, "runs in the metric or datapoint context only"))?;
    let rec = if r.is::<MetricContext>() {
        r.downcast_mut::<MetricContext>().map(Record::Metric)
    } else {
        r.downcast_mut::<DataPointContext>().map(Record::Point)
    };
    rec.ok_or_else(|| fail(func, "runs in the metric or datapoint context only"))
}

/// `AGGREGATION_TEMPORALITY_*` from its config name.
fn temporality(func: &str, name: &str) -> Result<i32, EvalError> {
    match name {
        "delta" => Ok(1),
        "cumulative" => Ok(2),
        other => Err(fail(func, format!("unknown aggregation temporality {other:?} (cumulative, delta)"))),
    }
}

/// pdata's name of a metric's type, for messages.
fn type_name(m: &Metric) -> &'static str {
    match m.data {
        None => "Empty",
        Some(Data::Gauge(_)) => "Gauge",
        Some(Data::Sum(_)) => "Sum",
        Some(Data::Histogram(_)) => "Histogram",
        Some(Data::ExponentialHistogram(_)) => "ExponentialHistogram",
        Some(Data::Summary(_)) => "Summary",
    }
}

/// A new metric with `src`'s name plus `suffix`, its description and unit, and `data`.
fn derived(src: &Metric, suffix: &str, data: Data) -> Metric {
    Metric {
        name: format!("{}{suffix}", src.name),
        description: src.description.clone(),
        unit: src.unit.clone(),
        data: Some(data),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
