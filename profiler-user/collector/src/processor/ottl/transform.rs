//! The `transform` processor: OTTL statements that change telemetry, on all four signals.
//!
//! ```yaml
//! processors:
//!   transform:
//!     error_mode: ignore            # propagate (default) | ignore | silent
//!     trace_statements:
//!       # flat: the context is the lowest one the statement's paths name (here: span)
//!       - set(span.attributes["card"], SHA256(span.attributes["card"])) where resource.attributes["env"] == "prod"
//!       # a group: its own context, conditions (ORed) and error_mode
//!       - context: resource
//!         conditions: ['resource.attributes["tenant"] == nil']
//!         statements: ['set(resource.attributes["tenant"], "default")']
//!         error_mode: silent
//!     metric_statements:
//!       - convert_sum_to_gauge() where metric.name == "system.processes.count"
//!     log_statements: [...]
//!     profile_statements: [...]
//! ```
//!
//! Each entry is one group, run over the whole request before the next entry, in order (as
//! upstream). Statements are compiled once at config load; one that does not parse or
//! type-check is a config error with its key path and position:
//! `processors.transform.log_statements[2]: 1:17: unknown function "Sha256"`.
//!
//! At run time a statement that fails on a record: `ignore` logs it and goes on with the next
//! statement, `silent` goes on without logging, `propagate` refuses the whole request
//! (`ConsumeError::Rejected`, a permanent error: the same data would fail again) and counts its
//! items in `otelcol_processor_dropped_{spans,…}`.
//!
//! Metrics: the transform processor's metric functions (`convert_sum_to_gauge()`,
//! `extract_sum_metric(true)`, `copy_metric(name = "x")`, `scale_metric(0.001, "s")`,
//! `aggregate_on_attributes("sum", ["host"])`, …) run in the metric context, which a flat
//! statement gets from them; a metric they make joins its scope once the group has walked it,
//! so the next entries see it and the group that made it does not.
//!
//! Profiles: the request's dictionary is shared by its profiles, so a write to a profile's
//! attributes appends dictionary entries and re-points the profile; no shared entry is edited.

use std::sync::Arc;

use async_trait::async_trait;
use otelprof_ottl::{context::Context, Compiler, ErrorMode, Registry, RunError, Statements};
use serde::Deserialize;

use super::group::{self, entries, singular, Compiled, Group, GroupSpec, Kind, Visitor};
use crate::{
    component::{BuildProcessor, ComponentError, ComponentId, Host, Processor, ProcessorFactory},
    config::{deserialize_at, ConfigError},
    consumer::{ConsumeError, Consumer},
    processor::pdata::for_each_resource,
    signal::{Data, Signal},
    telemetry::{add, ProcessorMetrics, Value},
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    error_mode: Option<String>,
    #[serde(default)]
    trace_statements: Vec<serde_yaml::Value>,
    #[serde(default)]
    metric_statements: Vec<serde_yaml::Value>,
    #[serde(default)]
    log_statements: Vec<serde_yaml::Value>,
    #[serde(default)]
    profile_statements: Vec<serde_yaml::Value>,
}

/// Statement groups compile to [`Statements`].
pub struct Transform;

impl Compiled for Transform {
    type Of<C: Context> = Statements<C>;
    fn compile<C: Context>(spec: &GroupSpec, compiler: &Compiler) -> Result<Statements<C>, ConfigError> {
        Ok(Statements {
            conditions: group::conditions(spec, compiler)?,
            statements: group::statements(spec, compiler)?,
            error_mode: spec.error_mode,
        })
    }
}

/// The compiled groups of each signal, in config order.
struct Program {
    by_signal: [Vec<Group<Transform>>; 4],
}

pub struct TransformFactory;

impl ProcessorFactory for TransformFactory {
    fn kind(&self) -> &'static str {
        "transform"
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
        let mode =
            group::error_mode(config.error_mode.as_deref(), &format!("{path}.error_mode"), ErrorMode::Propagate)?;
        let registry = Registry::standard();
        let compiler = Compiler::new(&registry);
        let mut by_signal: [Vec<Group<Transform>>; 4] = Default::default();
        for (signal, list) in [
            (Signal::Traces, config.trace_statements),
            (Signal::Metrics, config.metric_statements),
            (Signal::Logs, config.log_statements),
            (Signal::Profiles, config.profile_statements),
        ] {
            let key = format!("{path}.{}_statements", singular(signal));
            for spec in entries(list, &key, signal, Kind::Statement, mode)? {
                by_signal[signal.index()].push(Group::compile(&spec, &compiler)?);
            }
        }
        Ok(Box::new(Build { id: id.to_string(), program: Arc::new(Program { by_signal }) }))
    }
}

struct Build {
    id: String,
    program: Arc<Program>,
}

impl BuildProcessor for Build {
    fn build(
        &self,
        signal: Signal,
        next: Arc<dyn Consumer>,
        host: &Host,
    ) -> Result<Arc<dyn Processor>, ComponentError> {
        Ok(Arc::new(TransformProcessor {
            id: self.id.clone(),
            signal,
            program: self.program.clone(),
            next,
            metrics: host.telemetry.processor(&self.id, signal),
            dropped: dropped_counter(host, &self.id, signal),
        }))
    }
}

/// `otelcol_processor_dropped_{items}`: items of requests refused under `propagate`.
pub(super) fn dropped_counter(host: &Host, id: &str, signal: Signal) -> Value {
    host.telemetry.counter(
        &format!("otelcol_processor_dropped_{}", signal.items()),
        "Items dropped by the processor: an OTTL statement or condition failed under error_mode: propagate.",
        &[("processor", id)],
    )
}

struct TransformProcessor {
    id: String,
    signal: Signal,
    program: Arc<Program>,
    next: Arc<dyn Consumer>,
    metrics: ProcessorMetrics,
    dropped: Value,
}

/// Runs statements; errors skipped under `ignore` are logged.
pub(super) struct Run<'a> {
    pub id: &'a str,
}

impl Run<'_> {
    pub fn report(&self) -> impl FnMut(RunError) + '_ {
        move |e| tracing::warn!(processor = self.id, "{e}")
    }
}

impl Visitor<Transform> for Run<'_> {
    fn visit<C: Context>(&mut self, s: &Statements<C>, ctx: &mut C) -> Result<bool, RunError> {
        s.execute_reporting(ctx, &mut self.report())?;
        Ok(true)
    }
}

impl Consumer for TransformProcessor {
    fn consume(&self, mut data: Data) -> Result<(), ConsumeError> {
        let items = data.items();
        add(&self.metrics.incoming, items);
        let groups = &self.program.by_signal[self.signal.index()];
        if !groups.is_empty() {
            if let Data::Profiles(_) = data {
                // Resource attributes by string-table index become plain ones first.
                for_each_resource(&mut data, |_| {});
            }
            let mut run = Run { id: &self.id };
            for g in groups {
                if let Err(e) = g.run(&mut data, &mut run) {
                    add(&self.dropped, items);
                    return Err(ConsumeError::Rejected(format!("{}: {e}", self.id)));
                }
            }
        }
        let out = data.items();
        self.next.consume(data)?;
        add(&self.metrics.outgoing, out);
        Ok(())
    }
}

#[async_trait]
impl Processor for TransformProcessor {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{consumer::testing::Sink, processor::pdata::testing::traces};

    #[test]
    fn propagate_rejects_permanently_and_counts_the_items() {
        let host = Host::new(Duration::from_secs(1));
        let id = ComponentId::parse("transform/x").unwrap();
        let yaml = "trace_statements: ['set(span.kind, span.name)']";
        let b = TransformFactory.create(&id, serde_yaml::from_str(yaml).unwrap(), "processors.transform/x").unwrap();
        let sink = Arc::new(Sink::default());
        let p = b.build(Signal::Traces, sink.clone(), &host).unwrap();
        let err = p.consume(traces(0, &[&[2, 1]])).unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(sink.got.lock().unwrap().is_empty());
        let mut out = String::new();
        host.telemetry.render(&mut out);
        assert!(out.contains("otelcol_processor_dropped_spans_total{processor=\"transform/x\"} 3\n"), "{out}");
    }

    #[test]
    fn a_bad_statement_in_a_config_file_names_key_position_and_line() {
        let text = r#"
receivers:
  otlp:
    protocols: {grpc: {}}
processors:
  transform:
    log_statements:
      - set(log.attributes["a"], "1")
      - set(log.attributes["b"], "2")
      - set(log.body, Sha256(log.body))
exporters:
  debug: {}
service:
  pipelines:
    logs: {receivers: [otlp], processors: [transform], exporters: [debug]}
"#;
        let e = crate::config::parse(text, &crate::factories::Factories::builtin()).err().unwrap();
        assert_eq!(e.path, "processors.transform.log_statements[2]");
        assert_eq!(e.message, r#"1:15: unknown function "Sha256""#);
        assert!(e.to_string().contains("line 10"), "{e}");
    }
}
