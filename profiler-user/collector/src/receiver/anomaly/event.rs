//! The `event` action: one OTLP log record (severity WARN) per acted trigger, saying what was
//! seen (signal, value, baseline, deviation, Z-score, why) and what was done (the action and
//! its window), for the receiver's `logs` pipelines.
//!
//! Attributes (`anomaly.*` is this agent's namespace; `profile.trigger` is the label the
//! burst's profiles carry, so a backend can join the two): `event.name = otelprof.anomaly`,
//! `anomaly.rule`, `anomaly.signal`, `anomaly.target`, `anomaly.value`, `anomaly.ewma`,
//! `anomaly.stddev`, `anomaly.zscore`, `anomaly.reason` (`ceiling` | `zscore`),
//! `anomaly.actions` (what was done: `burst`, `event`), `anomaly.burst.samples_per_second`,
//! `anomaly.burst.scope` (`target` | `node`) and `anomaly.burst.processes` (for `target`),
//! `anomaly.window.start_unix_nano` / `anomaly.window.end_unix_nano` (the burst's window) or
//! `anomaly.burst.error` (why there was none), `profile.trigger = anomaly`.

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    resource::v1::Resource,
};

use super::detect::{Observation, Reason};

/// What became of a burst the trigger asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum BurstOutcome {
    /// The rule has no `burst` action.
    NotAsked,
    /// Started: rate, window (Unix ns), and how many processes it covers (`None`: all).
    Started { samples_per_second: u64, start_unix_ns: u64, end_unix_ns: u64, processes: Option<usize> },
    /// Not started, and why.
    Failed(String),
}

/// One acted trigger, as the event reports it.
#[derive(Clone, Debug)]
pub struct Event<'a> {
    pub rule: &'a str,
    pub signal: &'a str,
    pub target: &'a str,
    pub obs: &'a Observation,
    pub burst: BurstOutcome,
    pub time_unix_ns: u64,
}

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

fn f(key: &str, v: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(v))
}

fn i(key: &str, v: u64) -> KeyValue {
    kv(key, any_value::Value::IntValue(i64::try_from(v).unwrap_or(i64::MAX)))
}

/// The log record of `e`, in a request of its own (resource `service.name = otelprof`; the
/// pipeline's processors add the host's and the Kubernetes attributes).
pub fn request(e: &Event<'_>) -> ExportLogsServiceRequest {
    let reason = match e.obs.anomalous {
        Some(Reason::Ceiling) => "ceiling",
        Some(Reason::ZScore) => "zscore",
        None => "none",
    };
    let mut actions = Vec::new();
    let mut attributes = vec![
        s("event.name", "otelprof.anomaly"),
        s("anomaly.rule", e.rule),
        s("anomaly.signal", e.signal),
        s("anomaly.target", e.target),
        f("anomaly.value", e.obs.value),
        f("anomaly.ewma", e.obs.ewma),
        f("anomaly.stddev", e.obs.stddev),
        f("anomaly.zscore", e.obs.z),
        s("anomaly.reason", reason),
        s("profile.trigger", "anomaly"),
    ];
    let what = match &e.burst {
        BurstOutcome::NotAsked => String::new(),
        BurstOutcome::Started { samples_per_second, start_unix_ns, end_unix_ns, processes } => {
            actions.push("burst");
            attributes.push(i("anomaly.burst.samples_per_second", *samples_per_second));
            attributes.push(s("anomaly.burst.scope", if processes.is_some() { "target" } else { "node" }));
            if let Some(n) = processes {
                attributes.push(i("anomaly.burst.processes", *n as u64));
            }
            attributes.push(i("anomaly.window.start_unix_nano", *start_unix_ns));
            attributes.push(i("anomaly.window.end_unix_nano", *end_unix_ns));
            format!(
                "; profiling {} at {samples_per_second} Hz for {:.0} s",
                match processes {
                    Some(n) => format!("its {n} processes"),
                    None => "every process".into(),
                },
                end_unix_ns.saturating_sub(*start_unix_ns) as f64 / 1e9
            )
        }
        BurstOutcome::Failed(why) => {
            attributes.push(s("anomaly.burst.error", why.clone()));
            format!("; no burst: {why}")
        }
    };
    actions.push("event");
    attributes.push(s("anomaly.actions", actions.join(",")));
    let body = format!(
        "anomaly `{}`: {} of {} is {:.3} (EWMA {:.3}, σ {:.3}, z {:.1}, {reason}){what}",
        e.rule, e.signal, e.target, e.obs.value, e.obs.ewma, e.obs.stddev, e.obs.z
    );
    let record = LogRecord {
        time_unix_nano: e.time_unix_ns,
        observed_time_unix_nano: e.time_unix_ns,
        severity_number: SeverityNumber::Warn as i32,
        severity_text: "WARN".into(),
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(body)) }),
        attributes,
        event_name: "otelprof.anomaly".into(),
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource { attributes: vec![s("service.name", "otelprof")], ..Default::default() }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "otelprof/anomaly".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                log_records: vec![record],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}
