//! `otelprof agent --config FILE`: YAML in the OpenTelemetry Collector's style.
//!
//! ```yaml
//! profiling:
//!   frequency: 19          # Hz per CPU
//!   interval: 10s          # one OTLP request per interval
//!   symbolize: host        # or none (backend symbolizes by build ID)
//!   off_cpu: { enabled: true, threshold: 0.1 }   # where threads wait (default off)
//!   targets:               # all empty (the default): the whole node
//!     pids: [1234]
//!     executables: ["python3*", "nginx"]
//!     containers: ["3f9b5c0e4a2d"]
//!     cgroups: ["/kubepods.slice/kubepods-burstable.slice"]
//! exporters:
//!   otlp:                  # gRPC; `otlp/NAME` for more than one
//!     endpoint: collector:4317
//!     tls: { insecure: true }
//!   otlphttp/pyroscope:    # HTTP
//!     endpoint: http://pyroscope:4040
//!     headers: { X-Scope-OrgID: tenant }
//! telemetry:
//!   metrics_address: 0.0.0.0:9464
//! ```
//!
//! Unknown keys and bad values are errors that name the key (`profiling.targets.pid: unknown
//! field`), so a typo never silently changes what the agent does.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use serde::Deserialize;

pub use otelprof_sampler::targets::Targets;

use otelprof_encode::otlp::SymbolizeMode;
use otelprof_sampler::unwind::UnwindMode;

use crate::send::{EndpointConfig, Protocol};

/// A config error, with the path of the key it is about.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { path: path.into(), message: message.into() }
}

/// Off-CPU profiling (`profiling.off_cpu`): a second profile type, `off_cpu/nanoseconds`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OffCpu {
    pub enabled: bool,
    /// Probability (0 < p <= 1) that a switch-out is recorded; values are weighted by 1/p. On a
    /// busy node a small one (0.01–0.1) bounds the cost, as with the OpenTelemetry eBPF
    /// profiler's `off_cpu_threshold`.
    pub threshold: f64,
}

impl Default for OffCpu {
    fn default() -> Self {
        Self { enabled: false, threshold: 1.0 }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profiling {
    pub frequency: u64,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    pub symbolize: SymbolizeMode,
    /// User stacks: `auto` (compiled .eh_frame tables where they exist), `dwarf`, or `fp`.
    pub unwind: UnwindMode,
    /// Include `process.command_line` in resources.
    pub command_line: bool,
    pub targets: Targets,
    /// Where threads wait, next to where they run.
    pub off_cpu: OffCpu,
    /// BPF ring buffer bytes (power of two).
    pub ringbuf_size: u32,
    /// Processes whose mappings are kept at most; the least recently sampled go first.
    pub max_processes: usize,
    /// Symbolized addresses cached at most.
    pub symbol_cache_entries: usize,
    /// Compiled unwind tables kept on disk across restarts.
    pub unwind_cache: UnwindCache,
}

/// `profiling.unwind_cache`: where compiled unwind tables are kept between runs, so a node's
/// large libraries are compiled once, not at every agent restart.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnwindCache {
    pub enabled: bool,
    /// A directory only root can write (it holds tables the unwinder trusts); created 0700.
    pub dir: std::path::PathBuf,
    /// Bound on the directory's entries; the least recently used go first.
    pub max_size_mib: u64,
}

impl Default for UnwindCache {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: otelprof_sampler::unwind::DEFAULT_CACHE_DIR.into(),
            max_size_mib: otelprof_sampler::unwind::DEFAULT_CACHE_MIB,
        }
    }
}

impl Default for Profiling {
    fn default() -> Self {
        Self {
            frequency: 19,
            interval: Duration::from_secs(10),
            symbolize: SymbolizeMode::Host,
            unwind: UnwindMode::Auto,
            command_line: true,
            targets: Targets::default(),
            off_cpu: OffCpu::default(),
            ringbuf_size: profiler_common::DEFAULT_RINGBUF_BYTES,
            max_processes: 4096,
            symbol_cache_entries: 1 << 18,
            unwind_cache: UnwindCache::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    /// Serve `/metrics` (Prometheus text), `/healthz` and `/readyz` here.
    pub metrics_address: Option<SocketAddr>,
    /// How often counters are logged.
    #[serde(with = "humantime_serde")]
    pub log_interval: Duration,
    /// How long queued profiles may take to flush on shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self { metrics_address: None, log_interval: Duration::from_secs(60), shutdown_timeout: Duration::from_secs(10) }
    }
}

/// A named exporter.
#[derive(Clone, Debug)]
pub struct Exporter {
    /// `otlp`, `otlp/primary`, `otlphttp/pyroscope`, …
    pub name: String,
    pub endpoint: EndpointConfig,
}

/// The whole agent configuration, validated.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub profiling: Profiling,
    pub exporters: Vec<Exporter>,
    pub telemetry: Telemetry,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    profiling: Profiling,
    exporters: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    telemetry: Telemetry,
}

/// serde_yaml starts nested messages with its own `path: `; the path is reported separately.
fn message(e: impl std::fmt::Display) -> String {
    let m = e.to_string();
    match m.split_once(": ") {
        Some((head, rest)) if !head.is_empty() && !head.contains(' ') => rest.to_string(),
        _ => m,
    }
}

fn deserialize_at<T: serde::de::DeserializeOwned>(prefix: &str, value: serde_yaml::Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." { prefix.to_string() } else { format!("{prefix}.{inner}") };
        err(path, message(e.into_inner()))
    })
}

/// Parses and validates a config text.
pub fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
    let raw: Raw = serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)).map_err(|e| {
        let path = e.path().to_string();
        err(if path == "." { "config".into() } else { path }, message(e.into_inner()))
    })?;
    let mut exporters = Vec::new();
    for (name, value) in raw.exporters {
        let path = format!("exporters.{name}");
        let kind = name.split('/').next().unwrap_or("");
        let protocol = match kind {
            "otlp" => Protocol::Grpc,
            "otlphttp" => Protocol::Http,
            _ => return Err(err(path, format!("unknown exporter type `{kind}`: use otlp (gRPC) or otlphttp (HTTP)"))),
        };
        let mut endpoint: EndpointConfig = deserialize_at(&path, value)?;
        endpoint.protocol = protocol;
        endpoint.url().map_err(|e| err(format!("{path}.endpoint"), e.to_string()))?;
        endpoint.tls.read().map_err(|e| err(format!("{path}.tls"), format!("{e:#}")))?;
        if endpoint.sending_queue.queue_size == 0 {
            return Err(err(format!("{path}.sending_queue.queue_size"), "must be more than 0 bytes"));
        }
        exporters.push(Exporter { name, endpoint });
    }
    if exporters.is_empty() {
        return Err(err("exporters", "at least one exporter (otlp or otlphttp) is needed"));
    }
    let p = &raw.profiling;
    if p.frequency == 0 || p.frequency > 10_000 {
        return Err(err("profiling.frequency", format!("{} Hz is out of range (1..=10000)", p.frequency)));
    }
    if p.interval < Duration::from_millis(100) {
        return Err(err("profiling.interval", "must be at least 100ms"));
    }
    if !p.ringbuf_size.is_power_of_two() || p.ringbuf_size < 4096 {
        return Err(err("profiling.ringbuf_size", "must be a power of two of at least 4096"));
    }
    if !(p.off_cpu.threshold > 0.0 && p.off_cpu.threshold <= 1.0) {
        return Err(err(
            "profiling.off_cpu.threshold",
            format!("{} is not a probability (more than 0, at most 1)", p.off_cpu.threshold),
        ));
    }
    if p.max_processes == 0 {
        return Err(err("profiling.max_processes", "must be at least 1"));
    }
    for (i, c) in p.targets.containers.iter().enumerate() {
        if c.len() < 12 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err(
                format!("profiling.targets.containers[{i}]"),
                "a container ID or a prefix of at least 12 hex digits",
            ));
        }
    }
    Ok(AgentConfig { profiling: raw.profiling, exporters, telemetry: raw.telemetry })
}

/// Reads and parses a config file.
pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| err(path.display().to_string(), e.to_string()))?;
    parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config_parses() {
        let c = parse(
            r#"
profiling:
  frequency: 49
  interval: 2s
  symbolize: none
  off_cpu: { enabled: true, threshold: 0.25 }
  targets: { executables: ["python3*"], containers: ["3f9b5c0e4a2d"] }
exporters:
  otlp:
    endpoint: collector:4317
    tls: { insecure: true }
    retry_on_failure: { initial_interval: 100ms, max_elapsed_time: 1m }
  otlphttp/pyroscope:
    endpoint: http://pyroscope:4040
    headers: { X-Scope-OrgID: tenant }
    compression: none
    timeout: 3s
    sending_queue: { queue_size: 1048576 }
telemetry:
  metrics_address: 127.0.0.1:9464
"#,
        )
        .unwrap();
        assert_eq!(c.profiling.frequency, 49);
        assert_eq!(c.profiling.interval, Duration::from_secs(2));
        assert_eq!(c.profiling.symbolize, SymbolizeMode::None);
        assert!(c.profiling.off_cpu.enabled);
        assert_eq!(c.profiling.off_cpu.threshold, 0.25);
        assert!(c.profiling.targets.needs_exec_events());
        assert_eq!(c.exporters.len(), 2);
        let grpc = &c.exporters[0];
        assert_eq!((grpc.name.as_str(), grpc.endpoint.protocol), ("otlp", Protocol::Grpc));
        assert_eq!(grpc.endpoint.url().unwrap(), "http://collector:4317");
        assert_eq!(grpc.endpoint.retry_on_failure.initial_interval, Duration::from_millis(100));
        let http = &c.exporters[1];
        assert_eq!(http.endpoint.url().unwrap(), "http://pyroscope:4040/v1development/profiles");
        assert_eq!(http.endpoint.headers["X-Scope-OrgID"], "tenant");
        assert_eq!(http.endpoint.sending_queue.queue_size, 1 << 20);
        assert_eq!(c.telemetry.metrics_address.unwrap().port(), 9464);
    }

    #[test]
    fn documented_configs_parse() {
        // The README's agent example.
        let readme = include_str!("../../../../README.md");
        let section = readme.split("## `otelprof agent`").nth(1).expect("README has the agent section");
        let yaml = section.split("```yaml\n").nth(1).and_then(|b| b.split("```").next()).expect("a yaml block");
        let c = parse(yaml).unwrap_or_else(|e| panic!("README agent config: {e}"));
        assert_eq!(c.exporters[0].endpoint.headers["X-Scope-OrgID"], "tenant");
        // The DaemonSet's ConfigMap.
        let manifest = include_str!("../../../../deploy/daemonset.yaml");
        let cm: serde_yaml::Value = serde_yaml::Deserializer::from_str(manifest)
            .map(serde_yaml::Value::deserialize)
            .next()
            .expect("first document")
            .expect("valid YAML");
        let text = cm["data"]["agent.yaml"].as_str().expect("ConfigMap holds agent.yaml");
        parse(text).unwrap_or_else(|e| panic!("deploy/daemonset.yaml agent config: {e}"));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "profiling: { frequncy: 19 }\nexporters: { otlp: { endpoint: 'x:1' } }",
                "profiling.frequncy: unknown field `frequncy`",
            ),
            (
                "profiling: { frequency: fast }\nexporters: { otlp: { endpoint: 'x:1' } }",
                "profiling.frequency: invalid type",
            ),
            ("profiling: { frequency: 0 }\nexporters: { otlp: { endpoint: 'x:1' } }", "profiling.frequency: 0 Hz"),
            (
                "profiling: { targets: { pid: [1] } }\nexporters: { otlp: { endpoint: 'x:1' } }",
                "profiling.targets.pid: unknown field `pid`",
            ),
            (
                "exporters: { otlp: { endpoint: 'x:1', tls: { insecure: yes please } } }",
                "exporters.otlp.tls.insecure: invalid type",
            ),
            (
                "exporters: { otlp: { endpoint: 'x:1', retry_on_failure: { initial_interval: soon } } }",
                "exporters.otlp.retry_on_failure.initial_interval:",
            ),
            ("exporters: { zipkin: { endpoint: 'x:1' } }", "exporters.zipkin: unknown exporter type `zipkin`"),
            (
                "exporters: { otlphttp: { endpoint: 'pyroscope:4040' } }",
                "exporters.otlphttp.endpoint: otlphttp endpoint",
            ),
            (
                "exporters: { otlp: { endpoint: 'x:1', tls: { ca_file: /nonexistent/ca.pem } } }",
                "exporters.otlp.tls: reading /nonexistent/ca.pem",
            ),
            ("exporters: {}", "exporters: at least one exporter"),
            (
                "profiling: { off_cpu: { enabled: true, treshold: 0.1 } }\nexporters: { otlp: { endpoint: 'x:1' } }",
                "profiling.off_cpu.treshold: unknown field `treshold`",
            ),
            (
                "profiling: { off_cpu: { enabled: true, threshold: 0 } }\nexporters: { otlp: { endpoint: 'x:1' } }",
                "profiling.off_cpu.threshold: 0 is not a probability",
            ),
            ("profiling: { interval: 10s }", "config: missing field `exporters`"),
            (
                "profiling: { targets: { containers: [abc] } }\nexporters: { otlp: { endpoint: 'x:1' } }",
                "profiling.targets.containers[0]:",
            ),
        ];
        for (text, expected) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(expected), "{text:?}\n  gave: {e}\n  want: {expected}");
        }
    }
}
