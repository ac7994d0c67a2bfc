//! The `resourcedetection` processor: adds what detectors find out about the host and the
//! environment to the resource of every request, of every signal.
//!
//! ```yaml
//! processors:
//!   resourcedetection:
//!     detectors: [env, system]   # default [env]
//!     override: true             # detected attributes replace existing ones (default)
//!     timeout: 5s                # the most detection may take, at start
//!     system:
//!       hostname_sources: [os]   # default [dns, os]
//!       resource_attributes:
//!         host.id: {enabled: true}
//! ```
//!
//! Detection runs once, when the first pipeline with this processor is built (on the building
//! thread: a slow resolver holds the start up to `timeout`, as in the Collector's `Start`);
//! every request then gets the same attributes. With `override: false` attributes already on a resource win.
//! When several detectors find the same attribute, the first one listed wins, as in the
//! Collector. A detector that fails is logged and skipped; the others still apply.
//!
//! Detectors: [`env`](mod@env) (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`) and [`system`]
//! (`host.name`, `os.type`; `host.id`, `host.arch`, `os.description` when enabled). Adding one
//! (`process`, `k8snode`, a cloud's metadata service) is a module with a [`Detector`], its config
//! checked in `Detectors::check` under the key the Collector uses, and an arm in
//! `make_detector`.

pub mod env;
pub mod system;

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use serde::Deserialize;

use super::map_resources::MapResources;
use crate::{
    component::{BuildProcessor, ComponentError, ComponentId, Host, Processor, ProcessorFactory},
    config::{deserialize_at, ConfigError},
    consumer::Consumer,
    signal::Signal,
};

/// Finds the attributes of one aspect of where the agent runs.
pub trait Detector: Send + Sync {
    /// As in `detectors: [...]`.
    fn name(&self) -> &'static str;
    /// The attributes found; may block (a metadata service, DNS), but not past `deadline`.
    fn detect(&self, deadline: Instant) -> Result<Vec<KeyValue>, DetectError>;
}

/// A detector could not say anything.
#[derive(Debug, thiserror::Error)]
#[error("{detector} detector: {message}")]
pub struct DetectError {
    pub detector: &'static str,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_detectors")]
    detectors: Vec<String>,
    #[serde(default = "yes", rename = "override")]
    override_existing: bool,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    timeout: Duration,
    #[serde(default)]
    system: system::Config,
}

fn default_detectors() -> Vec<String> {
    vec!["env".into()]
}

fn yes() -> bool {
    true
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// The detectors' checked configs (checked whether listed or not, so a mistake in one is found
/// before it is enabled).
struct Detectors {
    system: system::SystemDetector,
}

impl Detectors {
    fn check(config: &Config, path: &str) -> Result<Self, ConfigError> {
        Ok(Self { system: system::SystemDetector::new(&config.system, &format!("{path}.system"))? })
    }
}

/// The detector named `name`; `None` when there is no such detector here.
fn make_detector(name: &str, checked: &Detectors) -> Option<Box<dyn Detector>> {
    Some(match name {
        "env" => Box::new(env::EnvDetector::from_process()),
        "system" => Box::new(checked.system.clone()),
        _ => return None,
    })
}

pub struct ResourceDetectionFactory;

impl ProcessorFactory for ResourceDetectionFactory {
    fn kind(&self) -> &'static str {
        "resourcedetection"
    }

    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn create(
        &self,
        id: &ComponentId,
        config: serde_yaml::Value,
        path: &str,
    ) -> Result<Box<dyn BuildProcessor>, ConfigError> {
        let c: Config = deserialize_at(path, config)?;
        let checked = Detectors::check(&c, path)?;
        let mut detectors = Vec::new();
        for (i, name) in c.detectors.iter().enumerate() {
            if c.detectors[..i].contains(name) {
                return Err(ConfigError::new(format!("{path}.detectors[{i}]"), format!("`{name}` is listed twice")));
            }
            match make_detector(name, &checked) {
                Some(d) => detectors.push(d),
                None => {
                    return Err(ConfigError::new(
                        format!("{path}.detectors[{i}]"),
                        format!("`{name}` is not a detector otelprof has; it has env and system"),
                    ))
                }
            }
        }
        Ok(Box::new(Build::new(id, detectors, c.override_existing, c.timeout)))
    }
}

struct Build {
    id: String,
    detectors: Vec<Box<dyn Detector>>,
    override_existing: bool,
    timeout: Duration,
    /// Found at the first build, shared by every pipeline.
    detected: OnceLock<Arc<Vec<KeyValue>>>,
}

impl Build {
    fn new(id: &ComponentId, detectors: Vec<Box<dyn Detector>>, override_existing: bool, timeout: Duration) -> Self {
        Self { id: id.to_string(), detectors, override_existing, timeout, detected: OnceLock::new() }
    }

    fn detected(&self) -> Arc<Vec<KeyValue>> {
        self.detected
            .get_or_init(|| {
                let found = detect_all(&self.detectors, Instant::now() + self.timeout);
                tracing::info!(
                    processor = %self.id,
                    attributes = ?found.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(),
                    "resource detected"
                );
                Arc::new(found)
            })
            .clone()
    }
}

/// Runs the detectors in order; the first to find an attribute wins.
fn detect_all(detectors: &[Box<dyn Detector>], deadline: Instant) -> Vec<KeyValue> {
    let mut out: Vec<KeyValue> = Vec::new();
    for d in detectors {
        match d.detect(deadline) {
            Ok(attrs) => {
                for a in attrs {
                    if !out.iter().any(|o| o.key == a.key) {
                        out.push(a);
                    }
                }
            }
            Err(e) => tracing::warn!("resource detection: {e}; its attributes are left out"),
        }
    }
    out
}

impl BuildProcessor for Build {
    fn build(
        &self,
        signal: Signal,
        next: Arc<dyn Consumer>,
        host: &Host,
    ) -> Result<Arc<dyn Processor>, ComponentError> {
        let detected = self.detected();
        let override_existing = self.override_existing;
        let metrics = host.telemetry.processor(&self.id, signal);
        Ok(Arc::new(MapResources::new(
            next,
            metrics,
            Arc::new(move |r| {
                for a in detected.iter() {
                    match r.attributes.iter_mut().find(|e| e.key == a.key) {
                        Some(existing) if override_existing => existing.value = a.value.clone(),
                        Some(_) => {}
                        None => r.attributes.push(a.clone()),
                    }
                }
            }),
        )))
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

    use super::*;
    use crate::{
        consumer::testing::Sink,
        processor::pdata::testing::{str_kv, traces},
        signal::Data,
    };

    struct Fixed(&'static str, Vec<KeyValue>);

    impl Detector for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        fn detect(&self, _: Instant) -> Result<Vec<KeyValue>, DetectError> {
            if self.1.is_empty() {
                return Err(DetectError { detector: self.0, message: "nothing here".into() });
            }
            Ok(self.1.clone())
        }
    }

    fn resource_attrs(d: &Data) -> Vec<(String, String)> {
        let Data::Traces(t) = d else { panic!() };
        t.resource_spans[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|a| match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => (a.key.clone(), s.clone()),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn run(override_existing: bool) -> Vec<(String, String)> {
        let id = ComponentId::parse("resourcedetection").unwrap();
        let detectors: Vec<Box<dyn Detector>> = vec![
            Box::new(Fixed("first", vec![str_kv("res", "detected"), str_kv("host.name", "a")])),
            Box::new(Fixed("broken", vec![])),
            Box::new(Fixed("second", vec![str_kv("host.name", "b"), str_kv("os.type", "linux")])),
        ];
        let b = Build::new(&id, detectors, override_existing, Duration::from_secs(1));
        let sink = Arc::new(Sink::default());
        let p = b.build(Signal::Traces, sink.clone(), &Host::new(Duration::from_secs(1))).unwrap();
        p.consume(traces(0, &[&[1]])).unwrap();
        let got = sink.got.lock().unwrap();
        resource_attrs(&got[0])
    }

    #[test]
    fn first_detector_wins_and_override_decides_over_existing_attributes() {
        let s = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        assert_eq!(run(true), s(&[("res", "detected"), ("host.name", "a"), ("os.type", "linux")]));
        assert_eq!(run(false), s(&[("res", "r0"), ("host.name", "a"), ("os.type", "linux")]));
    }

    #[test]
    fn config_defaults_and_errors() {
        let id = ComponentId::parse("resourcedetection").unwrap();
        let c = |y: &str| {
            ResourceDetectionFactory.create(&id, serde_yaml::from_str(y).unwrap(), "processors.resourcedetection")
        };
        let d: Config = deserialize_at("p", serde_yaml::Value::Null).unwrap();
        assert_eq!(
            (d.detectors, d.override_existing, d.timeout),
            (vec!["env".to_string()], true, Duration::from_secs(5))
        );
        assert!(c("{detectors: [env, system], override: false, timeout: 2s}").is_ok());
        assert_eq!(c("{detectors: [env, ec2]}").err().unwrap().path, "processors.resourcedetection.detectors[1]");
        assert_eq!(c("{detectors: [env, env]}").err().unwrap().path, "processors.resourcedetection.detectors[1]");
        assert_eq!(
            c("{detectors: [system], system: {hostname_sources: [cname]}}").err().unwrap().path,
            "processors.resourcedetection.system.hostname_sources[0]"
        );
        assert!(c("{ec2: {}}").err().unwrap().message.contains("unknown field `ec2`"));
    }
}
