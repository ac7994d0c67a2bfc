//! The `resource` processor: attribute actions on the resource of every request, for every
//! signal, profiles included.
//!
//! ```yaml
//! processors:
//!   resource:
//!     attributes:
//!       - {key: deployment.environment.name, value: prod, action: upsert}
//!       - {key: k8s.cluster.name, from_attribute: cluster, action: insert}
//!       - {key: cluster, action: delete}
//! ```
//!
//! The actions and their semantics are the Collector's; see [`super::attraction`].

use std::sync::Arc;

use serde::Deserialize;

use super::{
    attraction::{ActionConfig, Actions},
    map_resources::MapResources,
};
use crate::{
    component::{BuildProcessor, ComponentError, ComponentId, Host, Processor, ProcessorFactory},
    config::{deserialize_at, ConfigError},
    consumer::Consumer,
    signal::Signal,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    attributes: Vec<ActionConfig>,
}

pub struct ResourceFactory;

impl ProcessorFactory for ResourceFactory {
    fn kind(&self) -> &'static str {
        "resource"
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
        let config: Config = deserialize_at(path, config)?;
        if config.attributes.is_empty() {
            return Err(ConfigError::new(format!("{path}.attributes"), "required: at least one action"));
        }
        let actions = Actions::parse(&config.attributes, &format!("{path}.attributes"))?;
        Ok(Box::new(Build { id: id.to_string(), actions: Arc::new(actions) }))
    }
}

struct Build {
    id: String,
    actions: Arc<Actions>,
}

impl BuildProcessor for Build {
    fn build(
        &self,
        signal: Signal,
        next: Arc<dyn Consumer>,
        host: &Host,
    ) -> Result<Arc<dyn Processor>, ComponentError> {
        let actions = self.actions.clone();
        let metrics = host.telemetry.processor(&self.id, signal);
        Ok(Arc::new(MapResources::new(next, metrics, Arc::new(move |r| actions.apply(&mut r.attributes)))))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry_proto::tonic::{
        collector::profiles::v1development::ExportProfilesServiceRequest,
        common::v1::any_value::Value,
        profiles::v1development::{Profile, ResourceProfiles, Sample, ScopeProfiles},
    };

    use super::*;
    use crate::{consumer::testing::Sink, processor::pdata::testing::traces, signal::Data};

    fn build(yaml: &str, signal: Signal, sink: Arc<Sink>, host: &Host) -> Arc<dyn Processor> {
        let id = ComponentId::parse("resource").unwrap();
        let b = ResourceFactory.create(&id, serde_yaml::from_str(yaml).unwrap(), "processors.resource").unwrap();
        b.build(signal, sink, host).unwrap()
    }

    fn attrs(r: &Option<opentelemetry_proto::tonic::resource::v1::Resource>) -> Vec<(String, Value)> {
        r.as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|a| (a.key.clone(), a.value.clone().unwrap().value.unwrap()))
            .collect()
    }

    #[test]
    fn applies_to_every_resource_of_traces_and_profiles() {
        let host = Host::new(Duration::from_secs(1));
        let yaml = "attributes: [{key: env, value: prod, action: upsert}, {key: res, action: delete}]";
        let sink = Arc::new(Sink::default());
        let p = build(yaml, Signal::Traces, sink.clone(), &host);
        p.consume(traces(0, &[&[1], &[2]])).unwrap();
        let profiles = Data::Profiles(ExportProfilesServiceRequest {
            resource_profiles: vec![ResourceProfiles {
                resource: None,
                scope_profiles: vec![ScopeProfiles {
                    profiles: vec![Profile { samples: vec![Sample::default(); 3], ..Default::default() }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            dictionary: None,
        });
        let pp = build(yaml, Signal::Profiles, sink.clone(), &host);
        pp.consume(profiles).unwrap();
        let got = sink.got.lock().unwrap();
        let Data::Traces(t) = &got[0] else { panic!() };
        for rs in &t.resource_spans {
            assert_eq!(attrs(&rs.resource), [("env".to_string(), Value::StringValue("prod".into()))]);
        }
        let Data::Profiles(p) = &got[1] else { panic!() };
        assert_eq!(attrs(&p.resource_profiles[0].resource), [("env".to_string(), Value::StringValue("prod".into()))]);
        let mut out = String::new();
        host.telemetry.render(&mut out);
        assert!(
            out.contains("otelcol_processor_outgoing_items_total{processor=\"resource\",otel_signal=\"profiles\"} 3"),
            "{out}"
        );
    }

    #[test]
    fn a_missing_or_empty_list_is_a_config_error() {
        let id = ComponentId::parse("resource").unwrap();
        for yaml in ["", "attributes: []"] {
            let e = ResourceFactory
                .create(&id, serde_yaml::from_str(yaml).unwrap_or_default(), "processors.resource")
                .err()
                .unwrap();
            assert_eq!(e.path, "processors.resource.attributes");
        }
        let e = ResourceFactory
            .create(&id, serde_yaml::from_str("actions: []").unwrap(), "processors.resource")
            .err()
            .unwrap();
        assert!(e.to_string().contains("unknown field `actions`"), "{e}");
    }
}
