//! Configuration in the OpenTelemetry Collector's shape: errors name the key path.

use serde::de::DeserializeOwned;

/// A config error, with the path of the key it is about (`receivers.otlp.protocols.grpc`).
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
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
pub fn deserialize_at<T: DeserializeOwned>(prefix: &str, value: serde_yaml::Value) -> Result<T, ConfigError> {
    let value = if value.is_null() { serde_yaml::Value::Mapping(Default::default()) } else { value };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." { prefix.to_string() } else { format!("{prefix}.{inner}") };
        ConfigError::new(path, message(e.into_inner()))
    })
}
