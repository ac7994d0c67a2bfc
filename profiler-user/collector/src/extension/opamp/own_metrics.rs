//! Own telemetry (issue #14): the agent's own metrics pushed as OTLP/HTTP to the destination an
//! OpAMP server offers in `connection_settings.own_metrics`.
//!
//! The metrics are the ones `/metrics` serves (the collector's `otelcol_*` and the profiler's
//! `otelprof_*`), so the source is that same Prometheus text: one rendering for the scraper and
//! the push, and every series a component registers reaches both without a second registry.
//!
//! - [`prometheus_to_otlp`]: the text → one `ExportMetricsServiceRequest`;
//! - [`OwnMetrics`]: a task that renders, converts and POSTs it every interval.
//!
//! ```ignore
//! let pusher = OwnMetrics::start(offered, render, resource, Duration::from_secs(10), outcome)?;
//! // ... new settings offered, or shutdown:
//! pusher.stop().await;
//! ```

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    metrics::v1::{
        metric, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, Sum,
    },
    resource::v1::Resource,
};
use otelprof_proto::opamp as pb;
use prost::Message;
use reqwest::{
    header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE},
    Url,
};
use tokio::{task::JoinHandle, time::MissedTickBehavior};
use tokio_util::sync::CancellationToken;

#[cfg(test)]
mod tests;

/// Gives the current Prometheus text (what `/metrics` serves), at each push.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;
/// Told each push's outcome: `Ok(())` after a 2xx, else the status or connection error. Called
/// from the pushing task, so it should only record (the next push waits for it).
pub type Outcome = Arc<dyn Fn(Result<(), String>) + Send + Sync>;

/// The instrumentation scope of every pushed metric.
pub const SCOPE_NAME: &str = "otelprof";

/// How long one push may take, connection included. A push slower than the interval delays the
/// next one (pushes never overlap or pile up).
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of an error answer's body goes into the outcome message.
const ERROR_BODY_CHARS: usize = 200;

/// How a family's samples become OTLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `counter`: a monotonic cumulative Sum.
    Counter,
    /// `gauge`, and `untyped`/`unknown` or no `# TYPE` at all: a Gauge (nothing says the value
    /// only grows, so claiming a Sum would be a guess).
    Gauge,
    /// `histogram`, `summary` and the other OpenMetrics families, or an unknown type: skipped.
    Skipped,
}

impl Kind {
    fn parse(word: &str) -> Option<Kind> {
        match word {
            "counter" => Some(Kind::Counter),
            "gauge" | "untyped" | "unknown" => Some(Kind::Gauge),
            "histogram" | "summary" | "gaugehistogram" | "stateset" | "info" => Some(Kind::Skipped),
            _ => None,
        }
    }
}

/// A sample's labels: names as written, values unescaped.
type Labels<'a> = Vec<(&'a str, String)>;

/// A sample line: `name{k="v",...} value [timestamp_ms]`.
#[derive(Debug, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    labels: Labels<'a>,
    value: number_data_point::Value,
    timestamp_ms: Option<i64>,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A metric (or label, without `:`) name at the start of `s`, and the rest.
fn take_name(s: &str, colon: bool) -> Option<(&str, &str)> {
    let ok = |c: char| is_name_char(c) && (colon || c != ':');
    let first = s.chars().next()?;
    if !is_name_start(first) || (!colon && first == ':') {
        return None;
    }
    let end = s.find(|c: char| !ok(c)).unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

/// A quoted label value at the start of `s` (after the opening quote), unescaped, and the rest
/// after the closing quote. `\\`, `\"` and `\n` are the only escapes the format has; any other
/// makes the line malformed, as in Prometheus' own parser.
fn take_label_value(s: &str) -> Result<(String, &str), &'static str> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, 'n')) => out.push('\n'),
                _ => return Err("bad escape in a label value"),
            },
            c => out.push(c),
        }
    }
    Err("unterminated label value")
}

/// `k="v", ...}` after the opening brace: the labels and the rest after the closing brace.
fn take_labels(mut s: &str) -> Result<(Labels<'_>, &str), &'static str> {
    let mut labels = Labels::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let (key, rest) = take_name(s, false).ok_or("bad label name")?;
        let rest = rest.trim_start().strip_prefix('=').ok_or("no '=' after a label name")?;
        let rest = rest.trim_start().strip_prefix('"').ok_or("label value not quoted")?;
        let (value, rest) = take_label_value(rest)?;
        if labels.iter().any(|(k, _)| *k == key) {
            return Err("label repeated");
        }
        labels.push((key, value));
        s = rest.trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("no ',' or '}' after a label");
        }
    }
}

/// A value as an int when it is integral and exact (an `i64`, or a float with no fraction within
/// ±2⁵³ where every integer is exact), else a double (`NaN` and `±Inf` included).
fn parse_value(token: &str) -> Option<number_data_point::Value> {
    if let Ok(i) = token.parse::<i64>() {
        return Some(number_data_point::Value::AsInt(i));
    }
    let f: f64 = token.parse().ok()?;
    const EXACT: f64 = (1u64 << 53) as f64;
    if f.is_finite() && f.fract() == 0.0 && f.abs() <= EXACT {
        Some(number_data_point::Value::AsInt(f as i64))
    } else {
        Some(number_data_point::Value::AsDouble(f))
    }
}

fn parse_sample(line: &str) -> Result<Sample<'_>, &'static str> {
    let (name, rest) = take_name(line, true).ok_or("bad metric name")?;
    let (labels, rest) = match rest.trim_start().strip_prefix('{') {
        Some(inner) => take_labels(inner)?,
        None => (Vec::new(), rest),
    };
    if !rest.starts_with([' ', '\t']) {
        return Err("no space before the value");
    }
    let mut tokens = rest.split_whitespace();
    let value = tokens.next().and_then(parse_value).ok_or("bad value")?;
    let timestamp_ms = match tokens.next() {
        None => None,
        Some(t) => Some(t.parse::<i64>().ok().filter(|t| *t > 0).ok_or("bad timestamp")?),
    };
    if tokens.next().is_some() {
        return Err("text after the timestamp");
    }
    Ok(Sample { name, labels, value, timestamp_ms })
}

/// `# HELP` text: `\\` and `\n` are its escapes.
fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            ('\\', Some('n')) => {
                out.push('\n');
                chars.next();
            }
            (c, _) => out.push(c),
        }
    }
    out
}

pub(super) fn string_kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }),
        ..Default::default()
    }
}

/// The metrics being built, in the order their names first appear.
#[derive(Default)]
struct Families {
    /// Declared by `# TYPE`, or met without one (then [`Kind::Gauge`]).
    kinds: HashMap<String, Kind>,
    help: HashMap<String, String>,
    metrics: Vec<Metric>,
    index: HashMap<String, usize>,
}

impl Families {
    /// `# TYPE name kind`; false when malformed (the line is then counted as skipped).
    fn declare(&mut self, rest: &str) -> bool {
        let mut words = rest.split_whitespace();
        let (Some(name), Some(word), None) = (words.next(), words.next(), words.next()) else { return false };
        if take_name(name, true).is_none_or(|(n, tail)| n != name || !tail.is_empty()) {
            return false;
        }
        if self.kinds.contains_key(name) {
            // A second declaration of a family, or one after its samples (the format allows one,
            // before them): the first kind stands.
            return false;
        }
        let (kind, ok) = match Kind::parse(word) {
            Some(k) => (k, true),
            // An unknown type: its samples cannot be trusted to be a sum or a gauge.
            None => (Kind::Skipped, false),
        };
        self.kinds.insert(name.to_string(), kind);
        ok
    }

    /// The kind and family name a sample named `name` belongs to: its own name's, else the
    /// family its suffix points to (`x_total` of an OpenMetrics counter `x`; `x_bucket`,
    /// `x_sum`, `x_count`, … of a histogram or summary `x`), else an untyped series (a Gauge).
    fn family_of(&self, name: &str) -> (Kind, String) {
        if let Some(kind) = self.kinds.get(name) {
            return (*kind, name.to_string());
        }
        let declared = |suffix: &str| {
            let base = name.strip_suffix(suffix)?;
            self.kinds.get(base).map(|k| (*k, base.to_string()))
        };
        if let Some((Kind::Counter, base)) = declared("_total") {
            return (Kind::Counter, base);
        }
        // OpenMetrics' creation time of a counter (or of a histogram) is not a value.
        if let Some((Kind::Counter | Kind::Skipped, base)) = declared("_created") {
            return (Kind::Skipped, base);
        }
        for suffix in ["_bucket", "_sum", "_count", "_gsum", "_gcount", "_info"] {
            if let Some((Kind::Skipped, base)) = declared(suffix) {
                return (Kind::Skipped, base);
            }
        }
        (Kind::Gauge, name.to_string())
    }

    fn add(&mut self, sample: Sample<'_>, kind: Kind, family: &str, start_unix_ns: u64, now_unix_ns: u64) {
        self.kinds.entry(sample.name.to_string()).or_insert(kind);
        let time = sample.timestamp_ms.and_then(|t| (t as u64).checked_mul(1_000_000)).unwrap_or(now_unix_ns);
        let point = NumberDataPoint {
            // Prometheus: an empty label value is the same as no label.
            attributes: sample
                .labels
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| string_kv(k, v))
                .collect(),
            start_time_unix_nano: if kind == Kind::Counter { start_unix_ns } else { 0 },
            time_unix_nano: time,
            value: Some(sample.value),
            ..Default::default()
        };
        let i = match self.index.get(sample.name) {
            Some(i) => *i,
            None => {
                let data = match kind {
                    Kind::Counter => metric::Data::Sum(Sum {
                        data_points: Vec::new(),
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    }),
                    _ => metric::Data::Gauge(Gauge { data_points: Vec::new() }),
                };
                self.metrics.push(Metric {
                    name: sample.name.to_string(),
                    description: self.help.get(family).cloned().unwrap_or_default(),
                    data: Some(data),
                    ..Default::default()
                });
                self.index.insert(sample.name.to_string(), self.metrics.len() - 1);
                self.metrics.len() - 1
            }
        };
        match &mut self.metrics[i].data {
            Some(metric::Data::Sum(s)) => s.data_points.push(point),
            Some(metric::Data::Gauge(g)) => g.data_points.push(point),
            _ => {}
        }
    }
}

/// Prometheus text exposition (what `/metrics` serves) → one OTLP metrics request, and the
/// number of lines skipped.
///
/// - `# TYPE x counter` → a monotonic cumulative Sum starting at `start_unix_ns`; `gauge`,
///   `untyped` and series with no `# TYPE` → a Gauge. `# HELP` becomes the description.
/// - Each sample `name{k="v",...} value [timestamp_ms]` → a `NumberDataPoint`: `as_int` when the
///   value is integral (and exact), else `as_double`; the labels as string attributes, unescaped
///   (`\"`, `\\`, `\n`), an empty one dropped (Prometheus: the same as no label); the time is
///   `now_unix_ns` unless the line has a timestamp.
/// - The metric name is the series name as it stands: a counter keeps its `_total` suffix
///   (`otelcol_receiver_accepted_spans_total`), the name dashboards built on the Prometheus
///   endpoint already query. Removing it would give the Collector's own OTLP names, but then
///   one agent would show two names for one series depending on the path it took.
/// - Histogram and summary families (and OpenMetrics' other kinds) are skipped: each of their
///   sample lines is counted. Malformed lines are skipped and counted too; nothing panics.
///
/// The resource has `resource` as its attributes; the scope is [`SCOPE_NAME`]. A text with no
/// sample gives a request with no metric.
pub fn prometheus_to_otlp(
    text: &str,
    resource: Vec<KeyValue>,
    start_unix_ns: u64,
    now_unix_ns: u64,
) -> (ExportMetricsServiceRequest, usize) {
    let mut families = Families::default();
    let mut skipped = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            let (word, rest) = comment.split_once([' ', '\t']).unwrap_or((comment, ""));
            match word {
                "TYPE" => skipped += usize::from(!families.declare(rest)),
                "HELP" => match rest.trim_start().split_once([' ', '\t']) {
                    Some((name, help)) => {
                        families.help.entry(name.to_string()).or_insert_with(|| unescape_help(help.trim()));
                    }
                    None if take_name(rest.trim(), true).is_some() => {}
                    None => skipped += 1,
                },
                _ => {}
            }
            // Any other comment is just that.
            continue;
        }
        let Ok(sample) = parse_sample(line) else {
            skipped += 1;
            continue;
        };
        let (kind, family) = families.family_of(sample.name);
        if kind == Kind::Skipped {
            skipped += 1;
            continue;
        }
        families.add(sample, kind, &family, start_unix_ns, now_unix_ns);
    }
    let request = ExportMetricsServiceRequest {
        resource_metrics: if families.metrics.is_empty() {
            Vec::new()
        } else {
            vec![ResourceMetrics {
                resource: Some(Resource { attributes: resource, ..Default::default() }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: SCOPE_NAME.to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        ..Default::default()
                    }),
                    metrics: families.metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }]
        },
    };
    (request, skipped)
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// When this process started, from `/proc`: the counters being pushed count from then, so that
/// is their Sum's start time (a backend sees a restart as a new start, not as a drop).
fn process_start_unix_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces and ')': the fields that follow its last ')' start at
    // field 3 (state); `starttime` is field 22, in clock ticks after boot.
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let ticks_after_boot: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let boot_s: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf reads a constant of the system; no memory is involved.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    let ns = boot_s.checked_mul(1_000_000_000)?.checked_add(ticks_after_boot.checked_mul(1_000_000_000)? / hz)?;
    // Never after now (btime is rounded to the second).
    Some(ns.min(now_ns()))
}

/// An error and its causes, one after the other (reqwest's own text says only "error sending
/// request"; the reason, such as "Connection refused", is in its sources).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The destination as shown in logs and outcomes: no user info, no query (either may hold a
/// credential).
fn shown(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{}://{host}:{p}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

/// `google.rpc.Status`, which an OTLP/HTTP server puts in the body of an error answer.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// A failed push: what the outcome says, and what decides whether it is logged again (a
/// different status or a different transport error).
struct Failure {
    key: String,
    message: String,
}

/// Everything one push needs.
struct Pusher {
    client: reqwest::Client,
    url: Url,
    shown: String,
    headers: HeaderMap,
    render: Render,
    resource: Vec<KeyValue>,
    start_unix_ns: u64,
    /// Lines skipped at the last push, to log a change only.
    skipped: usize,
}

impl Pusher {
    fn new(
        settings: &pb::TelemetryConnectionSettings,
        render: Render,
        resource: Vec<KeyValue>,
    ) -> Result<Pusher, String> {
        let endpoint = settings.destination_endpoint.trim();
        let url = Url::parse(endpoint)
            .map_err(|e| format!("own_metrics destination_endpoint {endpoint:?}: not a URL ({e})"))?;
        let shown = shown(&url);
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!("own_metrics destination_endpoint {shown}: not an http:// or https:// URL"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("own_metrics destination_endpoint {shown}: no host"));
        }
        let mut headers = HeaderMap::new();
        for h in settings.headers.iter().flat_map(|h| &h.headers) {
            let name = HeaderName::from_bytes(h.key.trim().as_bytes())
                .map_err(|e| format!("own_metrics header {:?}: {e}", h.key))?;
            // The value is not shown: it is typically a credential.
            let mut value = HeaderValue::from_str(&h.value)
                .map_err(|e| format!("own_metrics header {:?}: bad value: {e}", h.key))?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        // Ours, whatever was offered: the body is what it is.
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));

        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(PUSH_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("otelprof/", env!("CARGO_PKG_VERSION")));
        if let Some(c) = &settings.certificate {
            if !c.cert.is_empty() || !c.private_key.is_empty() {
                let mut pem = c.cert.clone();
                pem.push(b'\n');
                pem.extend_from_slice(&c.private_key);
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| format!("own_metrics certificate (cert, private_key): {}", with_causes(&e)))?;
                builder = builder.identity(identity);
            }
            // The spec advises against trusting the offered CA "for any purposes"; it is trusted
            // here for this one connection only, beside the system roots, so a destination with a
            // private CA works. That grants the server nothing: it chooses the destination anyway.
            if !c.ca_cert.is_empty() {
                let cas = reqwest::Certificate::from_pem_bundle(&c.ca_cert)
                    .map_err(|e| format!("own_metrics certificate (ca_cert): {}", with_causes(&e)))?;
                if cas.is_empty() {
                    return Err("own_metrics certificate (ca_cert): no PEM certificate".into());
                }
                for ca in cas {
                    builder = builder.add_root_certificate(ca);
                }
            }
        }
        let client = builder.build().map_err(|e| format!("own_metrics client for {shown}: {}", with_causes(&e)))?;
        Ok(Pusher {
            client,
            url,
            shown,
            headers,
            render,
            resource,
            start_unix_ns: process_start_unix_ns().unwrap_or_else(now_ns),
            skipped: 0,
        })
    }

    /// Renders, converts and POSTs once.
    async fn push(&mut self) -> Result<(), Failure> {
        let text = (self.render)();
        let (request, skipped) = prometheus_to_otlp(&text, self.resource.clone(), self.start_unix_ns, now_ns());
        if skipped != self.skipped {
            tracing::debug!(
                "own metrics: {skipped} line(s) of the metrics text skipped (histograms, summaries, malformed)"
            );
            self.skipped = skipped;
        }
        let sent = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(request.encode_to_vec())
            .send()
            .await
            .map_err(|e| {
                // reqwest's text would show the URL with its query; ours is shown instead.
                let cause = with_causes(&e.without_url());
                Failure { key: cause.clone(), message: format!("pushing own metrics to {}: {cause}", self.shown) }
            })?;
        let status = sent.status();
        let is_protobuf = sent
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-protobuf"));
        // Read to the end either way, so the connection can be used again.
        let body = sent.bytes().await.unwrap_or_default();
        if status.is_success() {
            return Ok(());
        }
        let detail = match RpcStatus::decode(body.as_ref()) {
            Ok(s) if is_protobuf && !s.message.is_empty() => s.message,
            _ if is_protobuf => String::new(),
            _ => String::from_utf8_lossy(&body).split_whitespace().collect::<Vec<_>>().join(" "),
        };
        let detail: String = detail.chars().take(ERROR_BODY_CHARS).collect();
        let message = if detail.is_empty() {
            format!("pushing own metrics to {}: the server answered {status}", self.shown)
        } else {
            format!("pushing own metrics to {}: the server answered {status}: {detail}", self.shown)
        };
        Err(Failure { key: status.as_str().to_string(), message })
    }
}

/// What was last logged, so a failure is logged once per change of outcome and not every
/// interval.
#[derive(Default)]
enum Logged {
    #[default]
    Nothing,
    Ok,
    Failed(String),
}

impl Logged {
    fn note(&mut self, result: &Result<(), Failure>, shown: &str) {
        match (result, &*self) {
            (Ok(()), Logged::Ok) => {}
            (Ok(()), Logged::Nothing) => {
                tracing::info!("own metrics: pushing to {shown}");
                *self = Logged::Ok;
            }
            (Ok(()), Logged::Failed(_)) => {
                tracing::info!("own metrics: pushing to {shown} again");
                *self = Logged::Ok;
            }
            (Err(f), Logged::Failed(key)) if *key == f.key => {}
            (Err(f), _) => {
                tracing::warn!("own metrics: {} (not retried; the next push carries the totals)", f.message);
                *self = Logged::Failed(f.key.clone());
            }
        }
    }
}

/// A running pusher of the agent's own metrics to the destination of
/// `connection_settings.own_metrics`.
///
/// Every interval it calls `render` (the Prometheus text `/metrics` serves), converts it with
/// [`prometheus_to_otlp`] and POSTs it as `application/x-protobuf` with the offered headers;
/// the first push is at once, so a wrong destination shows in the outcome without waiting an
/// interval. Each push's outcome goes to `outcome` (for the OpAMP status) and, once per change,
/// to the log.
///
/// A failed push is not retried, and a `Retry-After` is not waited for beyond the interval: the
/// values are cumulative, so the next push carries everything the lost one had; a retry would
/// only compete with it. Pushes never overlap: a slow one delays the next.
///
/// Dropping it stops the task too; [`OwnMetrics::stop`] also waits for it to end.
pub struct OwnMetrics {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl OwnMetrics {
    /// Starts pushing (in a Tokio runtime). An `http://` destination is allowed — the spec lets
    /// the agent refuse it, but a cluster-internal collector often has no TLS — and warned about
    /// once. With `certificate`, `cert` + `private_key` are the client identity and `ca_cert` an
    /// extra root for this connection. `tls` and `proxy` (Development in the spec) are not used.
    ///
    /// Err, naming the field, for a destination that cannot work: not an `http(s)://` URL, a
    /// header that is not one, a certificate that is not PEM, a zero interval, no runtime.
    pub fn start(
        settings: pb::TelemetryConnectionSettings,
        render: Render,
        resource: Vec<KeyValue>,
        interval: Duration,
        outcome: Outcome,
    ) -> Result<OwnMetrics, String> {
        if interval.is_zero() {
            return Err("own metrics: the push interval is zero".into());
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| format!("own metrics: started outside a Tokio runtime ({e})"))?;
        let mut pusher = Pusher::new(&settings, render, resource)?;
        if pusher.url.scheme() == "http" {
            tracing::warn!(
                "own metrics: {} is plain http://: the metrics and the offered headers go unencrypted",
                pusher.shown
            );
        }
        let stop = CancellationToken::new();
        let cancelled = stop.clone();
        let task = runtime.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut logged = Logged::default();
            loop {
                tokio::select! {
                    _ = cancelled.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let result = tokio::select! {
                    _ = cancelled.cancelled() => return,
                    r = pusher.push() => r,
                };
                logged.note(&result, &pusher.shown);
                outcome(result.map_err(|f| f.message));
            }
        });
        Ok(OwnMetrics { stop, task })
    }

    /// Ends the task (a push in flight is abandoned; no last push) and waits for it.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }
}

impl Drop for OwnMetrics {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
