//! Configuration in the OpenTelemetry Collector's shape: errors name the key path and where it
//! is in the file.
//!
//! - [`parse`] / [`load`]: the whole file (`receivers`, `processors`, `exporters`, `service`)
//!   checked and every component's own config parsed by its factory, into a [`ServiceConfig`]
//!   the [`crate::graph`] is built from; mistakes that do not stop the agent come back as
//!   [`Warning`]s.
//! - [`deserialize_at`]: a component's config from its YAML value, for factories.
//! - `${env:VAR}` in values is expanded as the Collector does ([`env`]).
//! - [`merge_files`]: several files as one (repeated `--config`, as the Collector does), and
//!   [`merge`], the same deep merge a remote config is laid over the local file with.

use std::fmt;

use serde::de::DeserializeOwned;

mod env;
mod lenient;
mod merge;
mod parse;
mod positions;
mod service;

pub use merge::{merge, merge_files};
pub(crate) use parse::{downstream, key_text};
pub use parse::{load, parse};
pub use positions::Position;
pub use service::{
    ConnectorConfig, LogsSettings, MetricsLevel, MetricsSettings, Pipeline, PipelineId, ServiceConfig,
    TelemetrySettings,
};

/// A config error, with the path of the key it is about (`receivers.otlp.protocols.grpc`) and,
/// once the file's text is known, where that key is in it.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
#[error("{path}{}: {message}", at(position))]
pub struct ConfigError {
    pub path: String,
    pub message: String,
    /// Where `path` (or its nearest ancestor) is in the file; added by [`parse`], so
    /// factories leave it `None`.
    pub position: Option<Position>,
}

/// ` (line 4, column 17)` or nothing.
fn at(position: &Option<Position>) -> String {
    position.map(|p| format!(" ({p})")).unwrap_or_default()
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into(), position: None }
    }
}

/// Something in the config that does not stop the agent but is probably a mistake (a
/// component declared and used in no pipeline, an unset environment variable). The binary
/// logs each at `warn`.
#[derive(Clone, Debug, PartialEq)]
pub struct Warning {
    pub path: String,
    pub message: String,
    pub position: Option<Position>,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}: {}", self.path, at(&self.position), self.message)
    }
}

/// serde_yaml starts nested messages with its own `path: `; the path is reported separately.
fn message(e: impl std::fmt::Display) -> String {
    let m = e.to_string();
    match m.split_once(": ") {
        Some((head, rest)) if !head.is_empty() && !head.contains(' ') => rest.to_string(),
        _ => m,
    }
}

/// Deserializes a component's config from its YAML value; errors carry `prefix.inner.path`.
/// A missing (`null`) config means the defaults, as in the Collector (`batch:`).
///
/// As in the Collector, a number or boolean where text is expected is taken as its text
/// (`password: 1234`, or `${env:TOKEN}` whose value looks like a number).
pub fn deserialize_at<T: DeserializeOwned>(prefix: &str, value: serde_yaml::Value) -> Result<T, ConfigError> {
    let value = if value.is_null() { serde_yaml::Value::Mapping(Default::default()) } else { value };
    serde_path_to_error::deserialize(lenient::Lenient(value)).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." {
            prefix.to_string()
        } else if prefix.is_empty() {
            inner
        } else if inner.starts_with('[') {
            format!("{prefix}{inner}")
        } else {
            format!("{prefix}.{inner}")
        };
        ConfigError::new(path, message(e.into_inner()))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Endpoint {
        endpoint: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        port: Option<u16>,
        #[serde(default, with = "humantime_serde")]
        timeout: Option<std::time::Duration>,
        #[serde(default)]
        compression: Option<Compression>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Compression {
        Gzip,
        None,
    }

    #[test]
    fn numbers_and_booleans_are_text_where_text_is_expected() {
        let v = serde_yaml::from_str("{endpoint: 4317, headers: {k: 12, t: true}, port: 80, timeout: 5s}").unwrap();
        let e: Endpoint = deserialize_at("exporters.otlp", v).unwrap();
        assert_eq!(e.endpoint, "4317");
        assert_eq!(e.headers["k"], "12");
        assert_eq!(e.headers["t"], "true");
        assert_eq!(e.port, Some(80));
        assert_eq!(e.timeout, Some(std::time::Duration::from_secs(5)));
    }

    #[test]
    fn errors_name_the_inner_path_and_not_the_other_way_round() {
        let v = serde_yaml::from_str("{endpoint: x, port: '80'}").unwrap();
        let e = deserialize_at::<Endpoint>("exporters.otlp", v).unwrap_err();
        assert_eq!(e.path, "exporters.otlp.port");
        assert!(e.message.contains("invalid type: string \"80\""), "{e}");
        let v = serde_yaml::from_str("{endpoint: x, compression: zstd}").unwrap();
        let e = deserialize_at::<Endpoint>("exporters.otlp", v).unwrap_err();
        assert_eq!(e.path, "exporters.otlp.compression");
        assert!(e.message.contains("unknown variant `zstd`"), "{e}");
        let v = serde_yaml::from_str("{endpont: x}").unwrap();
        let e = deserialize_at::<Endpoint>("exporters.otlp", v).unwrap_err();
        assert_eq!(e.to_string(), "exporters.otlp.endpont: unknown field `endpont`, expected one of `endpoint`, `headers`, `port`, `timeout`, `compression`");
        let e = deserialize_at::<Endpoint>("exporters.otlp", serde_yaml::Value::Null).unwrap_err();
        assert_eq!(e.to_string(), "exporters.otlp: missing field `endpoint`");
        let e = ConfigError { position: Some(Position { line: 4, column: 17 }), ..e };
        assert_eq!(e.to_string(), "exporters.otlp (line 4, column 17): missing field `endpoint`");
    }

    #[test]
    fn sequences_index_without_a_dot() {
        let v = serde_yaml::from_str("[a, 3, [1]]").unwrap();
        let e = deserialize_at::<Vec<String>>("service.pipelines.traces.receivers", v).unwrap_err();
        assert_eq!(e.path, "service.pipelines.traces.receivers[2]");
    }
}
