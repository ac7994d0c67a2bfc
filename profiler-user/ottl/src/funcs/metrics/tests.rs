//! The metric functions run through the compiler on metric and data point contexts.

use opentelemetry_proto::tonic::{
    common::v1::{any_value, AnyValue, KeyValue},
    metrics::v1::{
        exponential_histogram_data_point::Buckets, metric::Data, number_data_point::Value as Number,
        summary_data_point::ValueAtQuantile, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
        HistogramDataPoint, Metric, NumberDataPoint, Sum, Summary, SummaryDataPoint,
    },
};

use crate::{
    context::{DataPoint, DataPointContext, MetricContext, SpanContext},
    Compiler, Registry,
};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

fn num(attrs: &[(&str, &str)], v: Number, time: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
        time_unix_nano: time,
        value: Some(v),
        ..Default::default()
    }
}

fn metric(name: &str, data: Data) -> Metric {
    Metric { name: name.into(), description: "d".into(), unit: "ms".into(), data: Some(data), ..Default::default() }
}

/// Runs `stmt` on a metric context holding `m`; returns the context.
fn run(stmt: &str, m: Metric) -> Result<MetricContext, String> {
    let r = Registry::standard();
    let s = Compiler::new(&r).statement::<MetricContext>(stmt).map_err(|e| e.to_string())?;
    let mut c = MetricContext { metric: m, ..Default::default() };
    s.execute(&mut c).map_err(|e| e.to_string())?;
    Ok(c)
}

fn points(m: &Metric) -> Vec<NumberDataPoint> {
    match &m.data {
        Some(Data::Gauge(g)) => g.data_points.clone(),
        Some(Data::Sum(s)) => s.data_points.clone(),
        _ => panic!("not a number metric: {m:?}"),
    }
}

fn summary() -> Metric {
    metric(
        "rpc",
        Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                attributes: vec![kv("svc", "a")],
                time_unix_nano: 7,
                count: 4,
                sum: 10.5,
                quantile_values: vec![
                    ValueAtQuantile { quantile: 0.5, value: 2.0 },
                    ValueAtQuantile { quantile: 0.99, value: 5.0 },
                ],
                ..Default::default()
            }],
        }),
    )
}

#[test]
fn sum_and_gauge_convert_both_ways() {
    let sum = metric(
        "s",
        Data::Sum(Sum {
            data_points: vec![num(&[], Number::AsInt(3), 1)],
            aggregation_temporality: 2,
            is_monotonic: true,
        }),
    );
    let c = run("convert_sum_to_gauge()", sum).unwrap();
    assert!(matches!(&c.metric.data, Some(Data::Gauge(g)) if g.data_points.len() == 1));
    let c = run(r#"convert_gauge_to_sum("delta", true)"#, c.metric).unwrap();
    let Some(Data::Sum(s)) = &c.metric.data else { panic!("{:?}", c.metric) };
    assert_eq!((s.aggregation_temporality, s.is_monotonic, s.data_points.len()), (1, true, 1));
    // Other types are left alone; an unknown temporality is an error.
    let c = run("convert_sum_to_gauge()", summary()).unwrap();
    assert_eq!(c.metric, summary());
    let e = run(r#"convert_gauge_to_sum("weekly", true)"#, summary()).unwrap_err();
    assert!(e.contains(r#"unknown aggregation temporality "weekly""#), "{e}");
}

#[test]
fn summary_conversions_make_new_metrics() {
    let c = run(r#"convert_summary_count_val_to_sum("cumulative", false)"#, summary()).unwrap();
    assert_eq!(c.metric, summary(), "the summary itself stays");
    let [m] = c.new_metrics.as_slice() else { panic!("{:?}", c.new_metrics) };
    assert_eq!((m.name.as_str(), m.unit.as_str(), m.description.as_str()), ("rpc_count", "ms", "d"));
    assert_eq!(points(m)[0].value, Some(Number::AsInt(4)));
    assert_eq!(points(m)[0].attributes, vec![kv("svc", "a")]);
    assert_eq!(points(m)[0].time_unix_nano, 7);

    let c = run(r#"convert_summary_sum_val_to_sum("delta", true, ".total")"#, summary()).unwrap();
    assert_eq!(c.new_metrics[0].name, "rpc.total");
    assert_eq!(points(&c.new_metrics[0])[0].value, Some(Number::AsDouble(10.5)));

    let c = run("convert_summary_quantile_val_to_gauge()", summary()).unwrap();
    let m = &c.new_metrics[0];
    assert_eq!(m.name, "rpc.quantiles");
    let p = points(m);
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].attributes, vec![kv("svc", "a"), kv("quantile", "0.50")]);
    assert_eq!(p[1].attributes, vec![kv("svc", "a"), kv("quantile", "0.99")]);
    assert_eq!(p[1].value, Some(Number::AsDouble(5.0)));
}

#[test]
fn summary_to_sum_in_the_datapoint_context_collects_the_visited_points() {
    let r = Registry::standard();
    let s = Compiler::new(&r)
        .statement::<DataPointContext>(
            r#"convert_summary_sum_val_to_sum("delta", false) where datapoint.attributes["svc"] != "b""#,
        )
        .unwrap();
    let Some(Data::Summary(sm)) = summary().data else { unreachable!() };
    let mut c = DataPointContext { metric: summary(), ..Default::default() };
    for (svc, sum) in [("a", 1.0), ("b", 2.0), ("c", 3.0)] {
        let mut p = sm.data_points[0].clone();
        p.attributes = vec![kv("svc", svc)];
        p.sum = sum;
        c.datapoint = DataPoint::Summary(p);
        s.execute(&mut c).unwrap();
    }
    let [m] = c.new_metrics.as_slice() else { panic!("{:?}", c.new_metrics) };
    let got: Vec<_> = points(m).iter().map(|p| p.value).collect();
    assert_eq!(got, vec![Some(Number::AsDouble(1.0)), Some(Number::AsDouble(3.0))]);
}

#[test]
fn extract_sum_and_count() {
    let h = metric(
        "lat",
        Data::Histogram(Histogram {
            aggregation_temporality: 1,
            data_points: vec![
                HistogramDataPoint { count: 3, sum: Some(9.0), ..Default::default() },
                HistogramDataPoint { count: 2, sum: None, ..Default::default() },
            ],
        }),
    );
    let c = run("extract_sum_metric(true)", h.clone()).unwrap();
    let m = &c.new_metrics[0];
    assert_eq!(m.name, "lat_sum");
    let Some(Data::Sum(s)) = &m.data else { panic!() };
    assert_eq!((s.aggregation_temporality, s.is_monotonic), (1, true));
    assert_eq!(s.data_points.len(), 1, "the point without a sum is skipped");
    let c = run(r#"extract_count_metric(false, ".n")"#, h).unwrap();
    let counts: Vec<_> = points(&c.new_metrics[0]).iter().map(|p| p.value).collect();
    assert_eq!(counts, vec![Some(Number::AsInt(3)), Some(Number::AsInt(2))]);
    assert_eq!(c.new_metrics[0].name, "lat.n");
    // A summary is cumulative; a sum is refused.
    let c = run("extract_count_metric(true)", summary()).unwrap();
    assert!(matches!(&c.new_metrics[0].data, Some(Data::Sum(s)) if s.aggregation_temporality == 2));
    let e = run("extract_sum_metric(true)", metric("x", Data::Gauge(Gauge::default()))).unwrap_err();
    assert!(e.contains("got Gauge"), "{e}");
}

#[test]
fn copy_metric_replaces_the_given_fields() {
    let c = run(r#"copy_metric(name = "rpc2", unit = "s")"#, summary()).unwrap();
    let mut want = summary();
    want.name = "rpc2".into();
    want.unit = "s".into();
    assert_eq!(c.new_metrics, vec![want]);
}

#[test]
fn scale_metric_values_and_unit() {
    let g = metric(
        "g",
        Data::Gauge(Gauge { data_points: vec![num(&[], Number::AsInt(7), 0), num(&[], Number::AsDouble(1.5), 0)] }),
    );
    let c = run(r#"scale_metric(0.5, "s")"#, g).unwrap();
    let got: Vec<_> = points(&c.metric).iter().map(|p| p.value).collect();
    assert_eq!(got, vec![Some(Number::AsInt(3)), Some(Number::AsDouble(0.75))]);
    assert_eq!(c.metric.unit, "s");
    let c = run("scale_metric(10)", summary()).unwrap();
    let Some(Data::Summary(s)) = &c.metric.data else { panic!() };
    assert_eq!(s.data_points[0].sum, 105.0);
    assert_eq!(s.data_points[0].quantile_values[1].value, 50.0);
    let e = run("scale_metric(2.0)", metric("e", Data::ExponentialHistogram(Default::default()))).unwrap_err();
    assert!(e.contains("ExponentialHistogram metrics are not supported"), "{e}");
}

fn three_points() -> Metric {
    metric(
        "g",
        Data::Gauge(Gauge {
            data_points: vec![
                num(&[("host", "a"), ("cpu", "0")], Number::AsInt(1), 5),
                num(&[("host", "a"), ("cpu", "1")], Number::AsInt(4), 5),
                num(&[("host", "b"), ("cpu", "0")], Number::AsInt(10), 5),
            ],
        }),
    )
}

#[test]
fn aggregate_on_attributes_by_function() {
    for (f, want) in [
        ("sum", vec![5, 10]),
        ("max", vec![4, 10]),
        ("min", vec![1, 10]),
        ("mean", vec![2, 10]),
        ("median", vec![2, 10]),
        ("count", vec![2, 1]),
    ] {
        let c = run(&format!(r#"aggregate_on_attributes("{f}", ["host"])"#), three_points()).unwrap();
        let p = points(&c.metric);
        let got: Vec<_> = p.iter().map(|p| p.value).collect();
        let want: Vec<_> = want.into_iter().map(|v| Some(Number::AsInt(v))).collect();
        assert_eq!(got, want, "{f}");
        assert_eq!(p[0].attributes, vec![kv("host", "a")], "{f}");
    }
    // No list: all attributes kept, nothing merges. `[]`: everything merges.
    let c = run(r#"aggregate_on_attributes("sum")"#, three_points()).unwrap();
    assert_eq!(points(&c.metric).len(), 3);
    let c = run(r#"aggregate_on_attributes("sum", [])"#, three_points()).unwrap();
    assert_eq!(points(&c.metric).iter().map(|p| p.value).collect::<Vec<_>>(), vec![Some(Number::AsInt(15))]);
    let e = run(r#"aggregate_on_attributes("avg")"#, three_points()).unwrap_err();
    assert!(e.contains("invalid aggregation function"), "{e}");
    let e = run(r#"aggregate_on_attributes("sum")"#, summary()).unwrap_err();
    assert!(e.contains("Summary"), "{e}");
}

#[test]
fn aggregate_on_attribute_value_relabels_then_merges() {
    let c = run(r#"aggregate_on_attribute_value("sum", "cpu", ["0", "1"], "all")"#, three_points()).unwrap();
    let p = points(&c.metric);
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].attributes, vec![kv("host", "a"), kv("cpu", "all")]);
    assert_eq!(p[0].value, Some(Number::AsInt(5)));
}

#[test]
fn exponential_histogram_to_explicit_buckets() {
    // Scale 0: bucket i is (2^i, 2^(i+1)]. Offset 1: buckets (2,4], (4,8], (8,16].
    let e = metric(
        "e",
        Data::ExponentialHistogram(ExponentialHistogram {
            aggregation_temporality: 2,
            data_points: vec![ExponentialHistogramDataPoint {
                count: 9,
                zero_count: 1,
                positive: Some(Buckets { offset: 1, bucket_counts: vec![2, 3, 3] }),
                ..Default::default()
            }],
        }),
    );
    let hist = |stmt: &str| {
        let c = run(stmt, e.clone()).unwrap();
        let Some(Data::Histogram(h)) = c.metric.data else { panic!("{:?}", c.metric) };
        assert_eq!(h.aggregation_temporality, 2);
        h.data_points[0].bucket_counts.clone()
    };
    // Zero → (-inf,3]. Upper bounds 4, 8 → (3,10]; 16 → (10,+inf).
    assert_eq!(hist(r#"convert_exponential_histogram_to_histogram("upper", [3.0, 10.0])"#), vec![1, 5, 3]);
    // Midpoints 3 → (-inf,3]; 6 → (3,10]; 12 → (10,+inf).
    assert_eq!(hist(r#"convert_exponential_histogram_to_histogram("midpoint", [3.0, 10.0])"#), vec![3, 3, 3]);
    // (2,4] overlaps two buckets: 1 + 1; (4,8] one: 3; (8,16] two: 2 + 1.
    assert_eq!(hist(r#"convert_exponential_histogram_to_histogram("uniform", [3.0, 10.0])"#), vec![2, 6, 1]);
    let e = run(r#"convert_exponential_histogram_to_histogram("upper", [])"#, e.clone()).unwrap_err();
    assert!(e.contains("cannot be empty"), "{e}");
}

#[test]
fn outside_the_metric_context_they_fail() {
    let r = Registry::standard();
    let s = Compiler::new(&r).statement::<SpanContext>("convert_sum_to_gauge()").unwrap();
    let e = s.execute(&mut SpanContext::default()).unwrap_err();
    assert!(e.to_string().contains("runs in the metric context only"), "{e}");
}

#[test]
fn contexts_and_choices_are_declared() {
    assert_eq!(crate::function_contexts("copy_metric"), Some(&["metric"][..]));
    assert_eq!(crate::function_contexts("convert_summary_sum_val_to_sum"), Some(&["metric", "datapoint"][..]));
    assert_eq!(crate::function_contexts("set"), None);
    assert_eq!(crate::function_choices("convert_gauge_to_sum")[0].values, &["cumulative", "delta"]);
    assert!(crate::function_choices("copy_metric").is_empty());
}
