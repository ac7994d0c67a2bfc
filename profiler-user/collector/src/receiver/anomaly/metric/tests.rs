//! The metric signal's extraction: which points each rule's condition selects, the series key,
//! and how gauges, non-monotonic sums and monotonic sums (cumulative, delta) become values.

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{any_value, AnyValue, KeyValue},
    metrics::v1::{
        metric::Data as MetricData, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
        Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    },
    resource::v1::Resource,
};

use super::*;

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn s(k: &str, v: &str) -> KeyValue {
    kv(k, any_value::Value::StringValue(v.into()))
}

fn point(v: f64, start: u64, t: u64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: start,
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: resource, ..Default::default() }),
            scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn gauge(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric { name: name.into(), data: Some(MetricData::Gauge(Gauge { data_points: points })), ..Default::default() }
}

fn sum(name: &str, monotonic: bool, temporality: AggregationTemporality, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(MetricData::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality as i32,
            is_monotonic: monotonic,
        })),
        ..Default::default()
    }
}

fn rules(yaml: &str) -> MetricRules {
    let cfg = AnomalyConfig::parse("connectors.anomaly", serde_yaml::from_str(yaml).unwrap()).unwrap();
    MetricRules::compile(&cfg, "connectors.anomaly").unwrap()
}

const S: u64 = 1_000_000_000;

#[test]
fn a_condition_selects_points_by_metric_name_and_attribute_and_each_series_is_a_target() {
    let r = rules(
        r#"rules:
  - { name: cpu, signal: node_cpu }
  - { name: q, signal: metric, condition: 'metric.name == "queue.depth" and attributes["queue"] == "email"' }
  - { name: all, signal: metric, condition: 'metric.name == "queue.depth"' }
"#,
    );
    let mut req = request(
        vec![s("service.name", "jobs"), kv("process.pid", any_value::Value::IntValue(42))],
        vec![
            gauge(
                "queue.depth",
                vec![point(7.0, 0, S, vec![s("queue", "email")]), point(3.0, 0, S, vec![s("queue", "sms")])],
            ),
            gauge("other", vec![point(1.0, 0, S, vec![s("queue", "email")])]),
        ],
    );
    let before = req.clone();
    let got = r.extract(&mut req, &mut Series::default());
    assert_eq!(req, before, "the request is only read");
    assert_eq!(got.errors, 0);
    let seen: Vec<(usize, &str, f64)> = got.points.iter().map(|p| (p.rule, p.target.as_str(), p.value)).collect();
    assert_eq!(
        seen,
        [
            (1, "jobs/queue.depth{queue=email}", 7.0),
            (2, "jobs/queue.depth{queue=email}", 7.0),
            (2, "jobs/queue.depth{queue=sms}", 3.0)
        ],
        "rule indices are the config's (rule 0 is not a metric rule)"
    );
    assert_eq!((got.points[0].pid, got.points[0].service.as_deref()), (Some(42), Some("jobs")));
}

#[test]
fn gauges_and_up_down_sums_are_levels_counters_are_rates_and_histograms_are_not_points() {
    let r = rules(r#"rules: [{ name: m, signal: metric, condition: 'true' }]"#);
    let mut series = Series::default();
    let batch = |t: u64, counter: f64, delta: f64| {
        request(
            vec![],
            vec![
                gauge("g", vec![point(0.5, 0, t, vec![])]),
                sum("updown", false, AggregationTemporality::Cumulative, vec![point(-3.0, S, t, vec![])]),
                sum("requests", true, AggregationTemporality::Cumulative, vec![point(counter, S, t, vec![])]),
                sum("bytes", true, AggregationTemporality::Delta, vec![point(delta, t - 2 * S, t, vec![])]),
                Metric {
                    name: "latency".into(),
                    data: Some(MetricData::Histogram(Histogram {
                        data_points: vec![HistogramDataPoint { count: 9, time_unix_nano: t, ..Default::default() }],
                        aggregation_temporality: 2,
                    })),
                    ..Default::default()
                },
            ],
        )
    };
    let values =
        |got: Extracted| -> Vec<(String, f64)> { got.points.into_iter().map(|p| (p.target, p.value)).collect() };
    let first = values(r.extract(&mut batch(10 * S, 100.0, 50.0), &mut series));
    let want = |v: &[(&str, f64)]| v.iter().map(|(k, x)| (k.to_string(), *x)).collect::<Vec<_>>();
    assert_eq!(
        first,
        want(&[("g", 0.5), ("updown", -3.0), ("bytes", 25.0)]),
        "a counter's first point only sets its base; a delta is per second of its 2 s"
    );
    let second = values(r.extract(&mut batch(15 * S, 600.0, 10.0), &mut series));
    assert_eq!(second, want(&[("g", 0.5), ("updown", -3.0), ("requests", 100.0), ("bytes", 5.0)]), "500 in 5 s");
    // A reset (the counter fell): a new base, no point.
    let third = values(r.extract(&mut batch(20 * S, 10.0, 10.0), &mut series));
    assert!(!third.iter().any(|(k, _)| k == "requests"), "{third:?}");
    let fourth = values(r.extract(&mut batch(21 * S, 30.0, 10.0), &mut series));
    assert!(fourth.contains(&("requests".to_string(), 20.0)), "{fourth:?}");
}

/// Two rules selecting the same counter both get its rate: the series' base moves once per
/// point, not once per rule.
#[test]
fn every_rule_selecting_a_counter_gets_its_rate() {
    let r = rules(
        r#"rules: [{ name: a, signal: metric, condition: 'true' }, { name: b, signal: metric, condition: 'metric.name == "requests"' }]"#,
    );
    let mut series = Series::default();
    let counter = |t: u64, v: f64| {
        request(vec![], vec![sum("requests", true, AggregationTemporality::Cumulative, vec![point(v, S, t, vec![])])])
    };
    assert!(r.extract(&mut counter(10 * S, 100.0), &mut series).points.is_empty(), "the base");
    let got: Vec<(usize, f64)> =
        r.extract(&mut counter(12 * S, 300.0), &mut series).points.iter().map(|p| (p.rule, p.value)).collect();
    assert_eq!(got, [(0, 100.0), (1, 100.0)], "200 in 2 s, for each rule");
}

#[test]
fn a_condition_that_fails_on_a_point_is_counted_and_a_bad_one_is_a_config_error() {
    let r = rules(r#"rules: [{ name: m, signal: metric, condition: 'Substring(attributes["n"], 0, 10) == "x"' }]"#);
    let mut req = request(vec![], vec![gauge("g", vec![point(1.0, 0, S, vec![s("n", "text")])])]);
    let got = r.extract(&mut req, &mut Series::default());
    assert!(got.points.is_empty());
    assert_eq!(got.errors, 1, "the attribute is shorter than the substring");
    let cfg = AnomalyConfig::parse(
        "connectors.anomaly",
        serde_yaml::from_str(r#"rules: [{ name: m, signal: cpu_metric }]"#).unwrap(),
    );
    assert_eq!(cfg.unwrap_err().path, "connectors.anomaly.rules[0].signal");
    let cfg = AnomalyConfig::parse(
        "connectors.anomaly",
        serde_yaml::from_str(r#"rules: [{ name: m, signal: metric, condition: 'metric.name ==' }]"#).unwrap(),
    )
    .unwrap();
    let e = MetricRules::compile(&cfg, "connectors.anomaly").err().expect("does not compile");
    assert_eq!(e.path, "connectors.anomaly.rules[0].condition", "{e}");
    let e = AnomalyConfig::parse(
        "connectors.anomaly",
        serde_yaml::from_str(r#"rules: [{ name: m, signal: metric }]"#).unwrap(),
    )
    .unwrap_err();
    assert_eq!(e.path, "connectors.anomaly.rules[0].condition", "{e}");
    let e = AnomalyConfig::parse(
        "connectors.anomaly",
        serde_yaml::from_str(r#"rules: [{ name: m, signal: node_cpu, condition: 'true' }]"#).unwrap(),
    )
    .unwrap_err();
    assert_eq!(e.path, "connectors.anomaly.rules[0].condition", "{e}");
}

#[test]
fn metric_rules_have_no_cpu_floor_or_ceiling_unless_set() {
    let cfg = AnomalyConfig::parse(
        "connectors.anomaly",
        serde_yaml::from_str(r#"rules: [{ name: m, signal: metric, condition: 'true' }, { name: n, signal: metric, condition: 'true', floor: 100, ceiling: 500 }]"#)
            .unwrap(),
    )
    .unwrap();
    assert_eq!((cfg.rules[0].detector.floor, cfg.rules[0].detector.ceiling), (f64::NEG_INFINITY, None));
    assert_eq!((cfg.rules[1].detector.floor, cfg.rules[1].detector.ceiling), (100.0, Some(500.0)));
}
