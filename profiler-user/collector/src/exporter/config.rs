//! The settings every network exporter shares, spelled as the Collector's `configtls`,
//! `configretry` and `exporterhelper` spell them, so a Collector config's exporter section
//! works here unchanged (or fails naming the key it does not support).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer};

use crate::config::ConfigError;

/// `compression:` of an exporter. Parsed by hand so an algorithm the Collector knows but this
/// build does not (zstd, snappy, …) fails with a message that says so, not "unknown variant".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        match s.as_str() {
            "gzip" => Ok(Compression::Gzip),
            "none" | "" => Ok(Compression::None),
            "zstd" | "snappy" | "zlib" | "deflate" | "lz4" | "x-snappy-framed" => Err(serde::de::Error::custom(
                format!("`{s}` is not supported by otelprof yet; use `gzip` (the default) or `none`"),
            )),
            _ => Err(serde::de::Error::custom(format!("unknown compression `{s}`; use `gzip` or `none`"))),
        }
    }
}

/// `compression_params:` (the Collector's key): the gzip level, 1 (fastest) to 9 (smallest).
///
/// The default is 1: an agent shares its node with the applications it serves, and on the
/// OTLP data measured here (docs/BENCHMARKS.md, section 9) level 1 costs about a third of the
/// CPU of zlib's default 6 for output about 10 % larger.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CompressionParams {
    #[serde(default = "fastest")]
    pub level: i64,
}

fn fastest() -> i64 {
    1
}

impl Default for CompressionParams {
    fn default() -> Self {
        Self { level: fastest() }
    }
}

impl CompressionParams {
    /// The checked gzip level; `path` is the exporter's key path.
    pub fn level(&self, path: &str) -> Result<u32, ConfigError> {
        match self.level {
            1..=9 => Ok(self.level as u32),
            l => Err(ConfigError::new(
                format!("{path}.compression_params.level"),
                format!("{l} is not a gzip level: 1 (fastest) to 9 (smallest)"),
            )),
        }
    }
}

/// `tls:` of an exporter (the Collector's `configtls.ClientConfig`, the parts that apply here).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// gRPC without TLS (plaintext) when the endpoint has no scheme.
    pub insecure: bool,
    /// TLS without verifying the server's certificate (OTLP/HTTP only; testing).
    pub insecure_skip_verify: bool,
    /// PEM CA bundle to trust in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    pub ca_pem: Option<String>,
    /// PEM client certificate and key, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub cert_pem: Option<String>,
    pub key_file: Option<PathBuf>,
    pub key_pem: Option<String>,
    /// The name to check the server's certificate against (OTLP/gRPC only).
    pub server_name_override: Option<String>,
}

/// The PEM contents of a [`TlsConfig`], read once when the exporter is created.
#[derive(Clone, Default)]
pub struct TlsMaterial {
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsConfig {
    /// Reads the PEM files (or takes the inline PEM); errors name the key under `path`.
    pub fn material(&self, path: &str) -> Result<TlsMaterial, ConfigError> {
        let pick = |key: &str, file: &Option<PathBuf>, pem: &Option<String>| -> Result<Option<Vec<u8>>, ConfigError> {
            match (file, pem) {
                (Some(_), Some(_)) => Err(ConfigError::new(
                    format!("{path}.{key}_file"),
                    format!("give either {key}_file or {key}_pem, not both"),
                )),
                (Some(f), None) => std::fs::read(f).map(Some).map_err(|e| {
                    ConfigError::new(format!("{path}.{key}_file"), format!("reading {}: {e}", f.display()))
                }),
                (None, Some(p)) => Ok(Some(p.as_bytes().to_vec())),
                (None, None) => Ok(None),
            }
        };
        let ca = pick("ca", &self.ca_file, &self.ca_pem)?;
        let cert = pick("cert", &self.cert_file, &self.cert_pem)?;
        let key = pick("key", &self.key_file, &self.key_pem)?;
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(ConfigError::new(path, "a client certificate and its key go together (cert_* and key_*)")),
        };
        Ok(TlsMaterial { ca, identity })
    }
}

/// `retry_on_failure:` (the Collector's `configretry.BackOffConfig`, with its defaults).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub enabled: bool,
    /// The first wait after a failure.
    #[serde(with = "humantime_serde")]
    pub initial_interval: Duration,
    /// Each wait is randomized by ± this fraction, so many exporters do not retry in step.
    pub randomization_factor: f64,
    /// Each wait is the previous one times this.
    pub multiplier: f64,
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
    /// How long one request is retried at most; 0 means until it succeeds or shutdown.
    #[serde(with = "humantime_serde")]
    pub max_elapsed_time: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            randomization_factor: 0.5,
            multiplier: 1.5,
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

impl RetryConfig {
    /// The Collector's checks (`configretry`), naming the key under `path`.
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if !(0.0..=1.0).contains(&self.randomization_factor) {
            return Err(ConfigError::new(format!("{path}.randomization_factor"), "must be within [0, 1]"));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 0.0) {
            return Err(ConfigError::new(format!("{path}.multiplier"), "must be non-negative"));
        }
        if !self.max_elapsed_time.is_zero() {
            if self.max_elapsed_time < self.initial_interval {
                return Err(ConfigError::new(
                    format!("{path}.max_elapsed_time"),
                    "must not be less than initial_interval",
                ));
            }
            if self.max_elapsed_time < self.max_interval {
                return Err(ConfigError::new(format!("{path}.max_elapsed_time"), "must not be less than max_interval"));
            }
        }
        Ok(())
    }
}

/// What `queue_size` counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sizer {
    /// Export requests (the Collector's default).
    #[default]
    Requests,
    /// Spans, metric points, log records or profile samples.
    Items,
    /// Protobuf-encoded bytes: the sizer that bounds memory most directly.
    Bytes,
}

/// `sending_queue:` (the Collector's `exporterhelper` queue keys and defaults).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// `false`: no buffer; data is taken only while fewer than `num_consumers` requests are
    /// being sent, which is the closest a never-blocking `consume` gets to the Collector's
    /// synchronous send.
    pub enabled: bool,
    /// Sending tasks.
    pub num_consumers: usize,
    /// Capacity in `sizer` units; requests being sent count until they are done.
    pub queue_size: u64,
    pub sizer: Sizer,
    /// Must stay `false`: `consume` never blocks here; a full queue refuses, which receivers
    /// turn into backpressure for their senders.
    pub block_on_overflow: bool,
    /// Must stay `false`, for the same reason.
    pub wait_for_result: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            num_consumers: 10,
            queue_size: 1000,
            sizer: Sizer::Requests,
            block_on_overflow: false,
            wait_for_result: false,
        }
    }
}

impl QueueConfig {
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        if self.num_consumers == 0 {
            return Err(ConfigError::new(format!("{path}.num_consumers"), "must be at least 1"));
        }
        if self.enabled && self.queue_size == 0 {
            return Err(ConfigError::new(format!("{path}.queue_size"), "must be at least 1"));
        }
        let never_blocks = "is not supported: an exporter never blocks its caller; a full queue refuses \
                            the data and receivers pass that back to their senders as backpressure";
        if self.block_on_overflow {
            return Err(ConfigError::new(format!("{path}.block_on_overflow"), never_blocks));
        }
        if self.wait_for_result {
            return Err(ConfigError::new(format!("{path}.wait_for_result"), never_blocks));
        }
        Ok(())
    }

    /// The queue's effective sizer and capacity (see [`Self::enabled`]).
    pub fn bound(&self) -> (Sizer, u64) {
        if self.enabled {
            (self.sizer, self.queue_size)
        } else {
            (Sizer::Requests, self.num_consumers as u64)
        }
    }
}

/// Turns header maps into a sorted list with names lowercased (gRPC metadata wants that; HTTP
/// does not care).
pub fn headers(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect()
}

pub fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::deserialize_at;

    #[test]
    fn defaults_are_the_collectors_and_errors_name_the_key() {
        let q: QueueConfig = deserialize_at("x", serde_yaml::Value::Null).unwrap();
        assert_eq!((q.num_consumers, q.queue_size, q.sizer, q.enabled), (10, 1000, Sizer::Requests, true));
        let r: RetryConfig = deserialize_at("x", serde_yaml::from_str("initial_interval: 200ms").unwrap()).unwrap();
        assert_eq!(r.initial_interval, Duration::from_millis(200));
        assert_eq!((r.multiplier, r.randomization_factor, r.max_elapsed_time), (1.5, 0.5, Duration::from_secs(300)));
        let e = deserialize_at::<QueueConfig>(
            "exporters.otlp.sending_queue",
            serde_yaml::from_str("queue_size: -1").unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.path, "exporters.otlp.sending_queue.queue_size");
        let e = deserialize_at::<QueueConfig>("q", serde_yaml::from_str("sizer: pages").unwrap()).unwrap_err();
        assert_eq!(e.path, "q.sizer");
        let r = RetryConfig { max_elapsed_time: Duration::from_secs(1), ..Default::default() };
        assert_eq!(r.validate("e.retry_on_failure").unwrap_err().path, "e.retry_on_failure.max_elapsed_time");
        let blocking: QueueConfig =
            deserialize_at("q", serde_yaml::from_str("block_on_overflow: true").unwrap()).unwrap();
        assert_eq!(blocking.validate("q").unwrap_err().path, "q.block_on_overflow");
        let disabled: QueueConfig =
            deserialize_at("q", serde_yaml::from_str("{enabled: false, num_consumers: 3}").unwrap()).unwrap();
        assert_eq!(disabled.bound(), (Sizer::Requests, 3));
        #[derive(Deserialize, Debug)]
        struct C {
            #[allow(dead_code)]
            compression: Compression,
        }
        let e = deserialize_at::<C>("e", serde_yaml::from_str("compression: zstd").unwrap()).unwrap_err();
        assert!(e.message.contains("not supported"), "{e}");
        let tls = TlsConfig { cert_file: Some("/nonexistent/c.pem".into()), ..Default::default() };
        assert_eq!(tls.material("e.tls").err().unwrap().path, "e.tls.cert_file");
        let tls = TlsConfig { cert_pem: Some("c".into()), ..Default::default() };
        assert_eq!(tls.material("e.tls").err().unwrap().path, "e.tls");
    }
}
