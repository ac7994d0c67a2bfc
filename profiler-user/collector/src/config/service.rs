//! The checked config: components built from their config, the pipelines that connect them,
//! and `service.telemetry` (where `/metrics`, `/healthz`, `/readyz` listen, log level, and
//! otelprof's own `shutdown_timeout` and `log_interval`).

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::Deserialize;

use super::ConfigError;
use crate::{
    component::{BuildConnector, BuildExporter, BuildProcessor, ComponentId, Receiver},
    extension::ExtensionConfig,
    signal::Signal,
};

/// A pipeline's id: `signal[/name]` (`traces`, `profiles/node`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipelineId {
    signal: Signal,
    name: String,
}

impl PipelineId {
    pub fn new(signal: Signal, name: &str) -> Self {
        Self { signal, name: name.to_string() }
    }

    /// Parses `signal[/name]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let id = ComponentId::parse(s).map_err(|_| format!("`{s}` is not a pipeline id: `signal[/name]`"))?;
        let signal = Signal::parse(id.kind()).ok_or_else(|| {
            format!("`{}` is not a signal: a pipeline is of traces, metrics, logs or profiles", id.kind())
        })?;
        Ok(Self { signal, name: id.name().to_string() })
    }

    pub fn signal(&self) -> Signal {
        self.signal
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            write!(f, "{}", self.signal)
        } else {
            write!(f, "{}/{}", self.signal, self.name)
        }
    }
}

/// One pipeline of `service.pipelines`: data from its receivers goes through its processors, in
/// order, to all of its exporters.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub id: PipelineId,
    pub receivers: Vec<ComponentId>,
    pub processors: Vec<ComponentId>,
    pub exporters: Vec<ComponentId>,
}

/// The whole config, checked: every component used by a pipeline, created by its factory (its
/// config parsed, nothing opened), and the pipelines in the file's order.
pub struct ServiceConfig {
    pub receivers: BTreeMap<ComponentId, Box<dyn Receiver>>,
    pub processors: BTreeMap<ComponentId, Box<dyn BuildProcessor>>,
    pub exporters: BTreeMap<ComponentId, Box<dyn BuildExporter>>,
    /// Connectors, each listed under `exporters` of some pipelines and `receivers` of others.
    pub connectors: BTreeMap<ComponentId, ConnectorConfig>,
    pub pipelines: Vec<Pipeline>,
    pub telemetry: TelemetrySettings,
    /// The extensions `service.extensions` lists, their configs checked by their factories.
    pub extensions: BTreeMap<ComponentId, ExtensionConfig>,
    /// Every kept component's config section as written (after `${env:…}`), by key path
    /// (`receivers.otlp`): a reload compares them to keep unchanged components running.
    pub sections: BTreeMap<String, serde_yaml::Value>,
}

impl fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("receivers", &self.receivers.keys().collect::<Vec<_>>())
            .field("processors", &self.processors.keys().collect::<Vec<_>>())
            .field("exporters", &self.exporters.keys().collect::<Vec<_>>())
            .field("connectors", &self.connectors.keys().collect::<Vec<_>>())
            .field("pipelines", &self.pipelines)
            .field("telemetry", &self.telemetry)
            .field("extensions", &self.extensions.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A connector's checked config and the signal pairs its type connects.
pub struct ConnectorConfig {
    /// (exporting pipeline's signal, receiving pipeline's signal).
    pub pairs: &'static [(Signal, Signal)],
    pub build: Box<dyn BuildConnector>,
}

/// `service.telemetry`.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetrySettings {
    pub metrics: MetricsSettings,
    pub logs: LogsSettings,
    /// otelprof's own: how long the whole shutdown may take (receivers stop, processors hand
    /// on what they hold, exporters flush their queues). Default 10 s.
    pub shutdown_timeout: Duration,
    /// otelprof's own: how often a summary line of the own metrics is logged. Default 60 s.
    pub log_interval: Duration,
}

/// `service.telemetry.metrics`.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsSettings {
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`host:port`), or `None` when
    /// `address: ""` or `level: none` turned the server off.
    pub address: Option<String>,
    pub level: MetricsLevel,
}

/// The Collector's `service.telemetry.metrics.level`. otelprof's own metrics are all at
/// `basic`/`normal`; `none` turns the telemetry server off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsLevel {
    None,
    Basic,
    #[default]
    Normal,
    Detailed,
}

/// `service.telemetry.logs`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsSettings {
    /// `debug`, `info`, `warn` or `error`, as the Collector's.
    pub level: LogLevel,
}

impl Default for LogsSettings {
    fn default() -> Self {
        Self { level: LogLevel::Info }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// As a `tracing` filter directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// The Collector's default: local only, so a node's metrics are not open to the network
/// unless asked for.
pub const DEFAULT_METRICS_ADDRESS: &str = "localhost:8888";

/// `service.telemetry` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTelemetry {
    metrics: RawMetrics,
    logs: LogsSettings,
    #[serde(with = "humantime_serde")]
    shutdown_timeout: Duration,
    #[serde(with = "humantime_serde")]
    log_interval: Duration,
}

impl Default for RawTelemetry {
    fn default() -> Self {
        Self {
            metrics: RawMetrics::default(),
            logs: LogsSettings::default(),
            shutdown_timeout: Duration::from_secs(10),
            log_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    address: Option<String>,
    level: MetricsLevel,
    /// The Collector's newer form: one pull reader with a Prometheus exporter.
    readers: Option<Vec<Reader>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reader {
    pull: Pull,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Pull {
    exporter: PullExporter,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullExporter {
    prometheus: Prometheus,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Prometheus {
    #[serde(default = "localhost")]
    host: String,
    port: u16,
}

fn localhost() -> String {
    "localhost".to_string()
}

/// Parses and checks `service.telemetry` (at `path`).
pub fn telemetry(path: &str, value: serde_yaml::Value) -> Result<TelemetrySettings, ConfigError> {
    let raw: RawTelemetry = super::deserialize_at(path, value)?;
    let metrics_path = format!("{path}.metrics");
    let address = match (raw.metrics.address, raw.metrics.readers) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                format!("{metrics_path}.readers"),
                "give either `address` or `readers`, not both",
            ))
        }
        (Some(a), None) => a,
        (None, Some(readers)) => match readers.as_slice() {
            [] => String::new(),
            [r] => {
                let p = &r.pull.exporter.prometheus;
                if p.host.contains(':') {
                    format!("[{}]:{}", p.host, p.port)
                } else {
                    format!("{}:{}", p.host, p.port)
                }
            }
            _ => {
                return Err(ConfigError::new(
                    format!("{metrics_path}.readers[1]"),
                    "one reader (a pull reader with a Prometheus exporter) is supported",
                ))
            }
        },
        (None, None) => DEFAULT_METRICS_ADDRESS.to_string(),
    };
    if !address.is_empty() {
        check_address(&address).map_err(|m| ConfigError::new(format!("{metrics_path}.address"), m))?;
    }
    if raw.shutdown_timeout.is_zero() {
        return Err(ConfigError::new(format!("{path}.shutdown_timeout"), "must be more than 0"));
    }
    if raw.log_interval.is_zero() {
        return Err(ConfigError::new(format!("{path}.log_interval"), "must be more than 0"));
    }
    let on = !address.is_empty() && raw.metrics.level != MetricsLevel::None;
    Ok(TelemetrySettings {
        metrics: MetricsSettings { address: on.then_some(address), level: raw.metrics.level },
        logs: raw.logs,
        shutdown_timeout: raw.shutdown_timeout,
        log_interval: raw.log_interval,
    })
}

/// `host:port`, `[v6]:port` or `:port` (every interface).
fn check_address(a: &str) -> Result<(), String> {
    let bad = || format!("`{a}` is not `host:port`");
    let (host, port) = a.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!("`{a}`: write an IPv6 address in brackets, `[::1]:8888`"));
    }
    Ok(())
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        // The defaults of `RawTelemetry`, which cannot fail to check.
        telemetry("service.telemetry", serde_yaml::Value::Null).unwrap_or(Self {
            metrics: MetricsSettings { address: Some(DEFAULT_METRICS_ADDRESS.into()), level: MetricsLevel::Normal },
            logs: LogsSettings::default(),
            shutdown_timeout: Duration::from_secs(10),
            log_interval: Duration::from_secs(60),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<TelemetrySettings, ConfigError> {
        telemetry("service.telemetry", serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn defaults_are_the_collectors() {
        let t = TelemetrySettings::default();
        assert_eq!(t.metrics.address.as_deref(), Some("localhost:8888"));
        assert_eq!(t.metrics.level, MetricsLevel::Normal);
        assert_eq!(t.logs.level, LogLevel::Info);
        assert_eq!((t.shutdown_timeout, t.log_interval), (Duration::from_secs(10), Duration::from_secs(60)));
    }

    #[test]
    fn the_server_address_in_either_form_or_off() {
        let t = parse("{metrics: {address: '0.0.0.0:9464', level: detailed}, logs: {level: debug}, shutdown_timeout: 3s, log_interval: 1s}").unwrap();
        assert_eq!(t.metrics.address.as_deref(), Some("0.0.0.0:9464"));
        assert_eq!(t.metrics.level, MetricsLevel::Detailed);
        assert_eq!(t.logs.level.as_str(), "debug");
        assert_eq!((t.shutdown_timeout, t.log_interval), (Duration::from_secs(3), Duration::from_secs(1)));
        let t = parse("metrics: {readers: [{pull: {exporter: {prometheus: {host: '::1', port: 9000}}}}]}").unwrap();
        assert_eq!(t.metrics.address.as_deref(), Some("[::1]:9000"));
        assert_eq!(parse("metrics: {address: ''}").unwrap().metrics.address, None);
        assert_eq!(parse("metrics: {level: none}").unwrap().metrics.address, None);
        let e = parse("metrics: {address: 'localhost'}").unwrap_err();
        assert_eq!(e.path, "service.telemetry.metrics.address");
        let e = parse("metrics: {address: ':1', readers: []}").unwrap_err();
        assert_eq!(e.path, "service.telemetry.metrics.readers");
        let e = parse("metrics: {level: loud}").unwrap_err();
        assert_eq!(e.path, "service.telemetry.metrics.level");
        let e = parse("shutdown_timeout: 0s").unwrap_err();
        assert_eq!(e.path, "service.telemetry.shutdown_timeout");
    }

    #[test]
    fn pipeline_ids() {
        let id = PipelineId::parse("profiles/node").unwrap();
        assert_eq!((id.signal(), id.name(), id.to_string().as_str()), (Signal::Profiles, "node", "profiles/node"));
        assert_eq!(PipelineId::parse("traces").unwrap().to_string(), "traces");
        assert!(PipelineId::parse("spans").unwrap_err().contains("not a signal"));
        assert!(PipelineId::parse("traces/").is_err());
    }
}
