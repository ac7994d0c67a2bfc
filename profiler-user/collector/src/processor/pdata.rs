//! Helpers on the OTLP request structures that processors share: visiting every resource of
//! any [`Data`], appending one request to another, and taking the first `n` items off a
//! request so a batch can be cut at an exact item count.
//!
//! Cutting keeps each item under a copy of its own resource and scope (and a metric's data
//! points under a copy of their metric's name, unit, type and temporality), so a split request
//! says exactly what the whole one said. Items are counted as [`Data::items`] counts them.
//!
//! Profiles are left out of append and split on purpose: a profiles request carries one
//! `dictionary` that its samples index into, so two requests cannot be concatenated without
//! re-indexing every sample, stack, location, function and string.

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{any_value::Value, AnyValue, KeyValue},
    logs::v1::{ResourceLogs, ScopeLogs},
    metrics::v1::{metric::Data as MetricData, Metric, ResourceMetrics, ScopeMetrics},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans},
};

use crate::signal::Data;

/// Calls `f` on the resource of every resource entry of `data`, of any signal. An entry
/// without a resource gets an empty one first, so attributes can be added to it.
///
/// In a profiles request, resource attribute keys and string values may be references into
/// the request's string table (`key_strindex`, `string_value_strindex`); they are replaced by
/// the strings first, so `f` sees plain attributes and may add or change them freely.
pub fn for_each_resource(data: &mut Data, mut f: impl FnMut(&mut Resource)) {
    match data {
        Data::Traces(r) => r.resource_spans.iter_mut().for_each(|e| f(e.resource.get_or_insert_with(Default::default))),
        Data::Metrics(r) => {
            r.resource_metrics.iter_mut().for_each(|e| f(e.resource.get_or_insert_with(Default::default)))
        }
        Data::Logs(r) => r.resource_logs.iter_mut().for_each(|e| f(e.resource.get_or_insert_with(Default::default))),
        Data::Profiles(r) => {
            let strings: &[String] = r.dictionary.as_ref().map_or(&[], |d| &d.string_table);
            for e in &mut r.resource_profiles {
                let resource = e.resource.get_or_insert_with(Default::default);
                resolve_strings(&mut resource.attributes, strings);
                f(resource);
            }
        }
    }
}

/// Replaces string-table references in `attrs` (and in lists and maps inside them) by their
/// strings. A reference outside the table becomes the empty string.
fn resolve_strings(attrs: &mut [KeyValue], strings: &[String]) {
    let lookup = |i: i32| usize::try_from(i).ok().and_then(|i| strings.get(i)).cloned().unwrap_or_default();
    for a in attrs {
        if a.key.is_empty() && a.key_strindex != 0 {
            a.key = lookup(a.key_strindex);
        }
        a.key_strindex = 0;
        if let Some(v) = a.value.as_mut() {
            resolve_value(v, strings);
        }
    }
}

fn resolve_value(v: &mut AnyValue, strings: &[String]) {
    match &mut v.value {
        Some(Value::StringValueStrindex(i)) => {
            let s = usize::try_from(*i).ok().and_then(|i| strings.get(i)).cloned().unwrap_or_default();
            v.value = Some(Value::StringValue(s));
        }
        Some(Value::ArrayValue(a)) => a.values.iter_mut().for_each(|x| resolve_value(x, strings)),
        Some(Value::KvlistValue(m)) => resolve_strings(&mut m.values, strings),
        _ => {}
    }
}

/// Why two requests could not be appended.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AppendError {
    #[error("cannot append {from} to {to}")]
    SignalMismatch { to: &'static str, from: &'static str },
    #[error("profiles requests share a dictionary and cannot be appended")]
    Profiles,
}

/// Appends the resource entries of `src` to `dst` (entries are not merged by resource: the
/// Collector does not either, and comparing resources costs more than it saves).
pub fn append(dst: &mut Data, src: Data) -> Result<(), AppendError> {
    match (dst, src) {
        (Data::Traces(d), Data::Traces(s)) => d.resource_spans.extend(s.resource_spans),
        (Data::Metrics(d), Data::Metrics(s)) => d.resource_metrics.extend(s.resource_metrics),
        (Data::Logs(d), Data::Logs(s)) => d.resource_logs.extend(s.resource_logs),
        (Data::Profiles(_), Data::Profiles(_)) => return Err(AppendError::Profiles),
        (d, s) => return Err(AppendError::SignalMismatch { to: d.signal().name(), from: s.signal().name() }),
    }
    Ok(())
}

/// Takes the first `n` items off `data` and returns them as a request of the same signal;
/// `data` keeps the rest. With `n` at or above `data.items()` everything is taken. `None` for
/// profiles (see the module docs).
pub fn split_front(data: &mut Data, n: u64) -> Option<Data> {
    Some(match data {
        Data::Traces(r) => {
            Data::Traces(ExportTraceServiceRequest { resource_spans: take_front(&mut r.resource_spans, n) })
        }
        Data::Metrics(r) => {
            Data::Metrics(ExportMetricsServiceRequest { resource_metrics: take_front(&mut r.resource_metrics, n) })
        }
        Data::Logs(r) => Data::Logs(ExportLogsServiceRequest { resource_logs: take_front(&mut r.resource_logs, n) }),
        Data::Profiles(_) => return None,
    })
}

/// A level of the OTLP tree that holds items: a resource entry, a scope entry, a metric.
trait Node: Sized {
    fn items(&self) -> u64;
    /// Moves the first `n` items (fewer than `self.items()`) into a new node with a copy of
    /// this node's header.
    fn take_items(&mut self, n: u64) -> Self;
}

/// Moves nodes holding the first `n` items out of `list`, cutting the node that straddles
/// the boundary in two. Nodes without items that come before the cut go along.
fn take_front<T: Node>(list: &mut Vec<T>, n: u64) -> Vec<T> {
    let mut left = n;
    let mut whole = 0;
    for node in list.iter() {
        let c = node.items();
        if c > left {
            break;
        }
        left -= c;
        whole += 1;
    }
    let mut out: Vec<T> = list.drain(..whole).collect();
    if left > 0 {
        if let Some(straddling) = list.first_mut() {
            out.push(straddling.take_items(left));
        }
    }
    out
}

/// `Node` for a resource or scope entry: `$children` is the list of the level below, taken
/// with `$take`; every other field is the header that both halves keep.
macro_rules! entry_node {
    ($ty:ty, $children:ident, $count:expr, $take:expr) => {
        impl Node for $ty {
            fn items(&self) -> u64 {
                #[allow(clippy::redundant_closure_call)]
                ($count)(&self.$children)
            }
            fn take_items(&mut self, n: u64) -> Self {
                let taken = ($take)(&mut self.$children, n);
                Self { $children: taken, ..self.header() }
            }
        }
    };
}

/// The header of an entry: everything but its children.
trait Header {
    fn header(&self) -> Self;
}

macro_rules! header {
    ($ty:ty { $($field:ident),* }) => {
        impl Header for $ty {
            fn header(&self) -> Self {
                Self { $($field: self.$field.clone(),)* ..Default::default() }
            }
        }
    };
}

header!(ResourceSpans { resource, schema_url });
header!(ScopeSpans { scope, schema_url });
header!(ResourceLogs { resource, schema_url });
header!(ScopeLogs { scope, schema_url });
header!(ResourceMetrics { resource, schema_url });
header!(ScopeMetrics { scope, schema_url });

fn leaves<T>(v: &[T]) -> u64 {
    v.len() as u64
}

fn take_leaves<T>(v: &mut Vec<T>, n: u64) -> Vec<T> {
    let n = (n as usize).min(v.len());
    v.drain(..n).collect()
}

fn sum_items<T: Node>(v: &[T]) -> u64 {
    v.iter().map(Node::items).sum()
}

entry_node!(ResourceSpans, scope_spans, sum_items, take_front);
entry_node!(ScopeSpans, spans, leaves, take_leaves);
entry_node!(ResourceLogs, scope_logs, sum_items, take_front);
entry_node!(ScopeLogs, log_records, leaves, take_leaves);
entry_node!(ResourceMetrics, scope_metrics, sum_items, take_front);
entry_node!(ScopeMetrics, metrics, sum_items, take_front);

impl Node for Metric {
    fn items(&self) -> u64 {
        match &self.data {
            Some(MetricData::Gauge(g)) => leaves(&g.data_points),
            Some(MetricData::Sum(s)) => leaves(&s.data_points),
            Some(MetricData::Histogram(h)) => leaves(&h.data_points),
            Some(MetricData::ExponentialHistogram(h)) => leaves(&h.data_points),
            Some(MetricData::Summary(s)) => leaves(&s.data_points),
            None => 0,
        }
    }

    fn take_items(&mut self, n: u64) -> Self {
        // The data keeps its type and temporality; only the points move.
        let data = self.data.as_mut().map(|d| match d {
            MetricData::Gauge(g) => MetricData::Gauge(opentelemetry_proto::tonic::metrics::v1::Gauge {
                data_points: take_leaves(&mut g.data_points, n),
            }),
            MetricData::Sum(s) => MetricData::Sum(opentelemetry_proto::tonic::metrics::v1::Sum {
                data_points: take_leaves(&mut s.data_points, n),
                aggregation_temporality: s.aggregation_temporality,
                is_monotonic: s.is_monotonic,
            }),
            MetricData::Histogram(h) => MetricData::Histogram(opentelemetry_proto::tonic::metrics::v1::Histogram {
                data_points: take_leaves(&mut h.data_points, n),
                aggregation_temporality: h.aggregation_temporality,
            }),
            MetricData::ExponentialHistogram(h) => {
                MetricData::ExponentialHistogram(opentelemetry_proto::tonic::metrics::v1::ExponentialHistogram {
                    data_points: take_leaves(&mut h.data_points, n),
                    aggregation_temporality: h.aggregation_temporality,
                })
            }
            MetricData::Summary(s) => MetricData::Summary(opentelemetry_proto::tonic::metrics::v1::Summary {
                data_points: take_leaves(&mut s.data_points, n),
            }),
        });
        Metric {
            name: self.name.clone(),
            description: self.description.clone(),
            unit: self.unit.clone(),
            metadata: self.metadata.clone(),
            data,
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Requests for tests whose items carry where they came from, so a test can check that
    //! every item arrived exactly once and under its own resource and scope.

    use opentelemetry_proto::tonic::{
        common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue},
        logs::v1::LogRecord,
        metrics::v1::{Gauge, NumberDataPoint},
        trace::v1::Span,
    };

    use super::*;

    pub fn kv(key: &str, v: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
    }

    pub fn str_kv(key: &str, v: &str) -> KeyValue {
        kv(key, Value::StringValue(v.into()))
    }

    fn resource(r: usize) -> Option<Resource> {
        Some(Resource { attributes: vec![str_kv("res", &format!("r{r}"))], ..Default::default() })
    }

    fn scope(s: usize) -> Option<InstrumentationScope> {
        Some(InstrumentationScope { name: format!("s{s}"), ..Default::default() })
    }

    /// Spans named `r{r}/s{s}/{i}` under resource `res=r{r}` and scope `s{s}`; `shape[r][s]`
    /// spans in scope `s` of resource `r`, numbered from `first`.
    pub fn traces(first: usize, shape: &[&[usize]]) -> Data {
        let mut next = first;
        let resource_spans = shape
            .iter()
            .enumerate()
            .map(|(r, scopes)| ResourceSpans {
                resource: resource(r),
                scope_spans: scopes
                    .iter()
                    .enumerate()
                    .map(|(s, &n)| ScopeSpans {
                        scope: scope(s),
                        spans: (0..n)
                            .map(|_| {
                                next += 1;
                                Span { name: format!("r{r}/s{s}/{}", next - 1), ..Default::default() }
                            })
                            .collect(),
                        schema_url: format!("scope-schema-{s}"),
                    })
                    .collect(),
                schema_url: format!("resource-schema-{r}"),
            })
            .collect();
        Data::Traces(ExportTraceServiceRequest { resource_spans })
    }

    /// Log records with bodies `r{r}/s{s}/{i}`, shaped as [`traces`].
    pub fn logs(first: usize, shape: &[&[usize]]) -> Data {
        let mut next = first;
        let resource_logs = shape
            .iter()
            .enumerate()
            .map(|(r, scopes)| ResourceLogs {
                resource: resource(r),
                scope_logs: scopes
                    .iter()
                    .enumerate()
                    .map(|(s, &n)| ScopeLogs {
                        scope: scope(s),
                        log_records: (0..n)
                            .map(|_| {
                                next += 1;
                                LogRecord {
                                    body: Some(AnyValue {
                                        value: Some(Value::StringValue(format!("r{r}/s{s}/{}", next - 1))),
                                    }),
                                    ..Default::default()
                                }
                            })
                            .collect(),
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: String::new(),
            })
            .collect();
        Data::Logs(ExportLogsServiceRequest { resource_logs })
    }

    /// One resource, one scope, gauge and sum metrics with `points[m]` points each; every
    /// point's `time_unix_nano` numbers it.
    pub fn metrics(points: &[usize]) -> Data {
        let mut next = 0u64;
        let metrics = points
            .iter()
            .enumerate()
            .map(|(m, &n)| {
                let data_points: Vec<NumberDataPoint> = (0..n)
                    .map(|_| {
                        next += 1;
                        NumberDataPoint { time_unix_nano: next, ..Default::default() }
                    })
                    .collect();
                let data = if m % 2 == 0 {
                    MetricData::Gauge(Gauge { data_points })
                } else {
                    MetricData::Sum(opentelemetry_proto::tonic::metrics::v1::Sum {
                        data_points,
                        aggregation_temporality: 2,
                        is_monotonic: true,
                    })
                };
                Metric { name: format!("m{m}"), unit: "By".into(), data: Some(data), ..Default::default() }
            })
            .collect();
        Data::Metrics(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource(0),
                scope_metrics: vec![ScopeMetrics { scope: scope(0), metrics, schema_url: String::new() }],
                schema_url: String::new(),
            }],
        })
    }

    /// Every span as `(resource, scope, span name)`, in order.
    pub fn span_paths(data: &Data) -> Vec<(String, String, String)> {
        let Data::Traces(r) = data else { return Vec::new() };
        let mut out = Vec::new();
        for rs in &r.resource_spans {
            let res = res_name(rs.resource.as_ref());
            for ss in &rs.scope_spans {
                let scope = ss.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default();
                for span in &ss.spans {
                    out.push((res.clone(), scope.clone(), span.name.clone()));
                }
            }
        }
        out
    }

    /// Every log record as `(resource, scope, body)`, in order.
    pub fn log_paths(data: &Data) -> Vec<(String, String, String)> {
        let Data::Logs(r) = data else { return Vec::new() };
        let mut out = Vec::new();
        for rl in &r.resource_logs {
            let res = res_name(rl.resource.as_ref());
            for sl in &rl.scope_logs {
                let scope = sl.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default();
                for rec in &sl.log_records {
                    let body = match rec.body.as_ref().and_then(|b| b.value.as_ref()) {
                        Some(Value::StringValue(s)) => s.clone(),
                        _ => String::new(),
                    };
                    out.push((res.clone(), scope.clone(), body));
                }
            }
        }
        out
    }

    fn res_name(r: Option<&Resource>) -> String {
        r.and_then(|r| r.attributes.iter().find(|a| a.key == "res"))
            .and_then(|a| a.value.as_ref())
            .and_then(|v| match &v.value {
                Some(Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;

    use super::{testing::*, *};

    #[test]
    fn splitting_keeps_every_span_once_under_its_resource_and_scope() {
        let whole = traces(0, &[&[3, 0, 2], &[4], &[1, 1]]);
        let expected = span_paths(&whole);
        assert_eq!(expected.len(), 11);
        for cut in 0..=12 {
            let mut rest = whole.clone();
            let front = split_front(&mut rest, cut).unwrap();
            assert_eq!(front.items(), cut.min(11), "cut at {cut}");
            assert_eq!(rest.items(), 11 - cut.min(11));
            let mut got = span_paths(&front);
            got.extend(span_paths(&rest));
            assert_eq!(got, expected, "cut at {cut}");
            // Headers travel with both halves.
            for part in [&front, &rest] {
                let Data::Traces(r) = part else { unreachable!() };
                for rs in &r.resource_spans {
                    let res = rs.resource.as_ref().unwrap().attributes[0].value.clone().unwrap().value.unwrap();
                    let opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(res) = res else {
                        panic!()
                    };
                    assert_eq!(rs.schema_url, format!("resource-schema-{}", &res[1..]));
                    for ss in &rs.scope_spans {
                        assert_eq!(ss.schema_url, format!("scope-schema-{}", &ss.scope.as_ref().unwrap().name[1..]));
                    }
                }
            }
        }
    }

    #[test]
    fn splitting_cuts_inside_a_metric_keeping_its_type_and_temporality() {
        let mut rest = metrics(&[3, 4]);
        let front = split_front(&mut rest, 5).unwrap();
        assert_eq!((front.items(), rest.items()), (5, 2));
        let (Data::Metrics(f), Data::Metrics(r)) = (&front, &rest) else { panic!() };
        let fm = &f.resource_metrics[0].scope_metrics[0].metrics;
        let rm = &r.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(fm.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["m0", "m1"]);
        assert_eq!(rm.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["m1"]);
        let (Some(MetricData::Sum(a)), Some(MetricData::Sum(b))) = (&fm[1].data, &rm[0].data) else { panic!() };
        assert_eq!((a.aggregation_temporality, a.is_monotonic), (2, true));
        assert_eq!((b.aggregation_temporality, b.is_monotonic), (2, true));
        assert_eq!(a.data_points.iter().map(|p| p.time_unix_nano).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(b.data_points.iter().map(|p| p.time_unix_nano).collect::<Vec<_>>(), [6, 7]);
        assert_eq!(rm[0].unit, "By");
    }

    #[test]
    fn append_concatenates_and_refuses_profiles_and_other_signals() {
        let mut a = logs(0, &[&[2]]);
        append(&mut a, logs(2, &[&[1], &[1]])).unwrap();
        assert_eq!(
            log_paths(&a).into_iter().map(|p| p.2).collect::<Vec<_>>(),
            ["r0/s0/0", "r0/s0/1", "r0/s0/2", "r1/s0/3"]
        );
        assert_eq!(append(&mut a, traces(0, &[&[1]])), Err(AppendError::SignalMismatch { to: "logs", from: "traces" }));
        let p = || Data::Profiles(ExportProfilesServiceRequest::default());
        assert_eq!(append(&mut p(), p()), Err(AppendError::Profiles));
        assert!(split_front(&mut p(), 1).is_none());
    }

    #[test]
    fn profile_resource_attributes_referring_to_the_string_table_become_plain() {
        use opentelemetry_proto::tonic::profiles::v1development::{ProfilesDictionary, ResourceProfiles};
        let mut d = Data::Profiles(ExportProfilesServiceRequest {
            resource_profiles: vec![ResourceProfiles {
                resource: Some(Resource {
                    attributes: vec![
                        KeyValue {
                            key_strindex: 1,
                            value: Some(AnyValue { value: Some(Value::StringValueStrindex(2)) }),
                            ..Default::default()
                        },
                        KeyValue { key_strindex: 9, ..Default::default() },
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            dictionary: Some(ProfilesDictionary {
                string_table: vec!["".into(), "service.name".into(), "checkout".into()],
                ..Default::default()
            }),
        });
        let mut seen = Vec::new();
        for_each_resource(&mut d, |r| seen = r.attributes.clone());
        assert_eq!(seen[0], str_kv("service.name", "checkout"));
        assert_eq!((seen[1].key.as_str(), seen[1].key_strindex), ("", 0), "out of the table: empty");
    }

    #[test]
    fn every_resource_of_every_signal_is_visited() {
        let mut d = traces(0, &[&[1], &[1]]);
        if let Data::Traces(r) = &mut d {
            r.resource_spans[1].resource = None;
        }
        let mut n = 0;
        for_each_resource(&mut d, |r| {
            n += 1;
            r.dropped_attributes_count = 7;
        });
        assert_eq!(n, 2);
        let Data::Traces(r) = &d else { panic!() };
        assert!(r.resource_spans.iter().all(|e| e.resource.as_ref().unwrap().dropped_attributes_count == 7));
    }
}
