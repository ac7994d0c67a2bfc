//! The `env` detector: the agent's own `OTEL_RESOURCE_ATTRIBUTES` (`k=v,k2=v2`, keys and values
//! percent-decoded) and `OTEL_SERVICE_NAME` (which wins for `service.name`), read once when
//! the processor is created.
//!
//! A malformed `OTEL_RESOURCE_ATTRIBUTES` (an entry without `=`, an empty key, an escape that
//! decodes to invalid UTF-8) is dropped whole and reported, as the SDK specification asks:
//! half of a list is more misleading than none. Empty entries (`a=1,,b=2`) are skipped.

use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use percent_encoding::percent_decode_str;

use super::{DetectError, Detector};

const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

#[derive(Clone, Debug, Default)]
pub struct EnvDetector {
    resource_attributes: Option<String>,
    service_name: Option<String>,
}

impl EnvDetector {
    /// The detector for the given variables (tests pass them in instead of changing the
    /// process environment).
    pub fn new(resource_attributes: Option<String>, service_name: Option<String>) -> Self {
        Self { resource_attributes, service_name }
    }

    /// The detector for this process's environment, read now.
    pub fn from_process() -> Self {
        Self::new(std::env::var(RESOURCE_ATTRIBUTES).ok(), std::env::var(SERVICE_NAME).ok())
    }
}

impl Detector for EnvDetector {
    fn name(&self) -> &'static str {
        "env"
    }

    fn detect(&self, _deadline: Instant) -> Result<Vec<KeyValue>, DetectError> {
        let mut attrs: Vec<(String, String)> = Vec::new();
        let mut problem = None;
        if let Some(list) = &self.resource_attributes {
            match parse_resource_attributes(list) {
                Ok(parsed) => attrs = parsed,
                Err(e) => problem = Some(e),
            }
        }
        if let Some(name) = self.service_name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            attrs.retain(|(k, _)| k != "service.name");
            attrs.push(("service.name".into(), name.to_string()));
        }
        if let Some(e) = problem {
            // The service name still applies; the list is reported and left out.
            tracing::warn!("{RESOURCE_ATTRIBUTES} is ignored: {e}");
        }
        Ok(attrs
            .into_iter()
            .map(|(key, v)| KeyValue {
                key,
                value: Some(AnyValue { value: Some(Value::StringValue(v)) }),
                ..Default::default()
            })
            .collect())
    }
}

/// Parses `k=v,k2=v2`; a later duplicate key replaces an earlier one.
pub fn parse_resource_attributes(list: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for entry in list.split(',') {
        if entry.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = entry.split_once('=') else {
            return Err(format!("`{}` is not key=value", entry.trim()));
        };
        let key = decode(k.trim())?;
        if key.is_empty() {
            return Err(format!("`{}` has an empty key", entry.trim()));
        }
        let value = decode(v.trim())?;
        out.retain(|(ek, _)| *ek != key);
        out.push((key, value));
    }
    Ok(out)
}

fn decode(s: &str) -> Result<String, String> {
    percent_decode_str(s).decode_utf8().map(|c| c.into_owned()).map_err(|_| format!("`{s}` does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(attrs: Option<&str>, service: Option<&str>) -> Vec<(String, String)> {
        EnvDetector::new(attrs.map(String::from), service.map(String::from))
            .detect(Instant::now())
            .unwrap()
            .into_iter()
            .map(|kv| match kv.value.and_then(|v| v.value) {
                Some(Value::StringValue(s)) => (kv.key, s),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn reads_percent_decoded_pairs_and_the_service_name_wins() {
        assert_eq!(
            detect(
                Some(" service.name=from-attrs , deployment.environment.name=prod%2Ceu,team=a%3Db,,k%20x=1"),
                Some("checkout")
            ),
            pairs(&[
                ("deployment.environment.name", "prod,eu"),
                ("team", "a=b"),
                ("k x", "1"),
                ("service.name", "checkout")
            ])
        );
        assert_eq!(detect(Some("service.name=svc,a=1,a=2"), None), pairs(&[("service.name", "svc"), ("a", "2")]));
        assert_eq!(detect(None, Some(" ")), pairs(&[]), "a blank service name is no name");
    }

    #[test]
    fn a_malformed_list_is_dropped_whole() {
        assert_eq!(detect(Some("a=1,oops,b=2"), Some("svc")), pairs(&[("service.name", "svc")]));
        assert_eq!(detect(Some("=1"), None), pairs(&[]));
        assert_eq!(detect(Some("a=%FF"), None), pairs(&[]));
        assert!(parse_resource_attributes("a=1,oops").unwrap_err().contains("oops"));
    }
}
