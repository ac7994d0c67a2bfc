//! The `filter` processor: OTTL conditions that drop telemetry, on all four signals.
//!
//! ```yaml
//! processors:
//!   filter:
//!     error_mode: ignore            # propagate (default) | ignore | silent
//!     trace_conditions:             # each condition's context is inferred from its paths
//!       - resource.attributes["host.name"] == "localhost"    # drops the whole resource
//!       - span.name == "health"                              # drops the span
//!       - IsMatch(spanevent.name, ".*grpc.*")                # drops the event
//!       - context: span                                      # a group with its own error_mode
//!         conditions: ['attributes["x"] == true']
//!         error_mode: silent
//!     metric_conditions: [...]       # resource, scope, metric, datapoint
//!     log_conditions: [...]          # resource, scope, log
//!     profile_conditions: [...]      # resource, scope, profile
//! ```
//!
//! The older grouped shape is read too: `traces: {span: [...], spanevent: [...]}`,
//! `metrics: {metric: [...], datapoint: [...]}`, `logs: {log_record: [...]}` and
//! `profiles: {profile: [...]}`, where each list's context is its key. Using both shapes for
//! one signal is a config error, as upstream makes it.
//!
//! A record is dropped when any condition of its context holds. Contexts are evaluated from
//! the top (resource → scope → item → span event / data point), so a record dropped higher up
//! is not looked at lower down. Then containers left empty go: a metric whose data points were
//! all dropped, a scope without items, a resource without scopes (a span whose events were all
//! dropped stays). When nothing is left the request is not passed on and the call succeeds.
//!
//! A condition that fails on a record: under `ignore` (logged) and `silent` it counts as not
//! matching; under `propagate` the request is refused (`ConsumeError::Rejected`) and counted in
//! `otelcol_processor_dropped_{items}`. Dropped records are counted in
//! `otelcol_processor_filter_{spans,datapoints,logs,profiles}_filtered`.

use std::sync::Arc;

use async_trait::async_trait;
use otelprof_ottl::{context::Context, Compiler, Conditions, ErrorMode, Registry, RunError};
use serde::Deserialize;

use super::{
    group::{self, entries, singular, Compiled, Ctx, Group, GroupSpec, Kind, Source, Visitor},
    transform::{dropped_counter, Run},
};
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
    trace_conditions: Vec<serde_yaml::Value>,
    #[serde(default)]
    metric_conditions: Vec<serde_yaml::Value>,
    #[serde(default)]
    log_conditions: Vec<serde_yaml::Value>,
    #[serde(default)]
    profile_conditions: Vec<serde_yaml::Value>,
    #[serde(default)]
    traces: Option<Traces>,
    #[serde(default)]
    metrics: Option<Metrics>,
    #[serde(default)]
    logs: Option<Logs>,
    #[serde(default)]
    profiles: Option<Profiles>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Traces {
    #[serde(default)]
    span: Vec<String>,
    #[serde(default)]
    spanevent: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metrics {
    #[serde(default)]
    metric: Vec<String>,
    #[serde(default)]
    datapoint: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Logs {
    #[serde(default)]
    log_record: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profiles {
    #[serde(default)]
    profile: Vec<String>,
}

/// Condition groups compile to [`Conditions`].
pub struct Filter;

impl Compiled for Filter {
    type Of<C: Context> = Conditions<C>;
    fn compile<C: Context>(spec: &GroupSpec, compiler: &Compiler) -> Result<Conditions<C>, ConfigError> {
        Ok(Conditions { conditions: group::conditions(spec, compiler)?, error_mode: spec.error_mode })
    }
}

/// The compiled groups of each signal, highest context first.
struct Program {
    by_signal: [Vec<Group<Filter>>; 4],
}

pub struct FilterFactory;

/// One list of the old shape: its key, its context and its conditions.
type LegacyList = (&'static str, Ctx, Vec<String>);

/// The old shape's lists of one signal, under the signal's key.
fn legacy(c: &mut Config, signal: Signal) -> Option<(&'static str, Vec<LegacyList>)> {
    Some(match signal {
        Signal::Traces => {
            let t = c.traces.take()?;
            ("traces", vec![("span", Ctx::Span, t.span), ("spanevent", Ctx::SpanEvent, t.spanevent)])
        }
        Signal::Metrics => {
            let m = c.metrics.take()?;
            ("metrics", vec![("metric", Ctx::Metric, m.metric), ("datapoint", Ctx::DataPoint, m.datapoint)])
        }
        Signal::Logs => ("logs", vec![("log_record", Ctx::Log, c.logs.take()?.log_record)]),
        Signal::Profiles => ("profiles", vec![("profile", Ctx::Profile, c.profiles.take()?.profile)]),
    })
}

impl ProcessorFactory for FilterFactory {
    fn kind(&self) -> &'static str {
        "filter"
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
        let mut config: Config = deserialize_at(path, config)?;
        let mode =
            group::error_mode(config.error_mode.as_deref(), &format!("{path}.error_mode"), ErrorMode::Propagate)?;
        let registry = Registry::standard();
        let compiler = Compiler::new(&registry);
        let mut by_signal: [Vec<Group<Filter>>; 4] = Default::default();
        for signal in Signal::ALL {
            let flat = std::mem::take(match signal {
                Signal::Traces => &mut config.trace_conditions,
                Signal::Metrics => &mut config.metric_conditions,
                Signal::Logs => &mut config.log_conditions,
                Signal::Profiles => &mut config.profile_conditions,
            });
            let flat_key = format!("{path}.{}_conditions", singular(signal));
            let specs = match legacy(&mut config, signal) {
                Some((old_key, _)) if !flat.is_empty() => {
                    return Err(ConfigError::new(
                        flat_key,
                        format!("cannot be used together with `{old_key}`: give this signal's conditions in one shape"),
                    ))
                }
                Some((old_key, lists)) => lists
                    .into_iter()
                    .filter(|(_, _, l)| !l.is_empty())
                    .map(|(key, ctx, list)| GroupSpec {
                        ctx,
                        conditions: list
                            .into_iter()
                            .enumerate()
                            .map(|(i, text)| Source { text, path: format!("{path}.{old_key}.{key}[{i}]") })
                            .collect(),
                        statements: Vec::new(),
                        error_mode: mode,
                    })
                    .collect(),
                None => merge(entries(flat, &flat_key, signal, Kind::Condition, mode)?),
            };
            let mut groups = specs.iter().map(|s| Group::compile(s, &compiler)).collect::<Result<Vec<_>, _>>()?;
            groups.sort_by_key(|g| g.ctx().depth());
            by_signal[signal.index()] = groups;
        }
        Ok(Box::new(Build { id: id.to_string(), program: Arc::new(Program { by_signal }) }))
    }
}

/// Flat conditions of the same context and error mode become one group.
fn merge(specs: Vec<GroupSpec>) -> Vec<GroupSpec> {
    let mut out: Vec<GroupSpec> = Vec::new();
    for s in specs {
        match out.iter_mut().find(|o| o.ctx == s.ctx && o.error_mode == s.error_mode) {
            Some(o) => o.conditions.extend(s.conditions),
            None => out.push(s),
        }
    }
    out
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
        let what = match signal {
            Signal::Traces => "spans",
            Signal::Metrics => "datapoints",
            Signal::Logs => "logs",
            Signal::Profiles => "profiles",
        };
        Ok(Arc::new(FilterProcessor {
            id: self.id.clone(),
            signal,
            program: self.program.clone(),
            next,
            metrics: host.telemetry.processor(&self.id, signal),
            dropped: dropped_counter(host, &self.id, signal),
            filtered: host.telemetry.counter(
                &format!("otelcol_processor_filter_{what}_filtered"),
                "Items the filter processor dropped because a condition matched.",
                &[("processor", &self.id)],
            ),
        }))
    }
}

struct FilterProcessor {
    id: String,
    signal: Signal,
    program: Arc<Program>,
    next: Arc<dyn Consumer>,
    metrics: ProcessorMetrics,
    dropped: Value,
    filtered: Value,
}

impl Visitor<Filter> for Run<'_> {
    fn visit<C: Context>(&mut self, c: &Conditions<C>, ctx: &mut C) -> Result<bool, RunError> {
        Ok(!c.matches_reporting(ctx, &mut self.report())?)
    }
}

impl Consumer for FilterProcessor {
    fn consume(&self, mut data: Data) -> Result<(), ConsumeError> {
        let items = data.items();
        add(&self.metrics.incoming, items);
        let groups = &self.program.by_signal[self.signal.index()];
        if !groups.is_empty() {
            if let Data::Profiles(_) = data {
                for_each_resource(&mut data, |_| {});
            }
            let mut run = Run { id: &self.id };
            for g in groups {
                if let Err(e) = g.run(&mut data, &mut run) {
                    add(&self.dropped, items);
                    return Err(ConsumeError::Rejected(format!("{}: {e}", self.id)));
                }
            }
            group::prune(&mut data);
        }
        // In the signal's items: spans, data points, log records, profile samples.
        let out = data.items();
        add(&self.filtered, items.saturating_sub(out));
        if data.is_empty() {
            return Ok(());
        }
        self.next.consume(data)?;
        add(&self.metrics.outgoing, out);
        Ok(())
    }
}

#[async_trait]
impl Processor for FilterProcessor {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{consumer::testing::Sink, processor::pdata::testing::traces};

    #[test]
    fn dropped_spans_are_counted_and_an_empty_request_is_not_passed_on() {
        let host = Host::new(Duration::from_secs(1));
        let id = ComponentId::parse("filter").unwrap();
        let yaml = "trace_conditions: ['span.name != \"\"', 'span.name == \"\"']";
        let b = FilterFactory.create(&id, serde_yaml::from_str(yaml).unwrap(), "processors.filter").unwrap();
        let sink = Arc::new(Sink::default());
        let p = b.build(Signal::Traces, sink.clone(), &host).unwrap();
        p.consume(traces(0, &[&[2, 1]])).unwrap();
        assert!(sink.got.lock().unwrap().is_empty());
        let mut out = String::new();
        host.telemetry.render(&mut out);
        assert!(out.contains("otelcol_processor_filter_spans_filtered_total{processor=\"filter\"} 3\n"), "{out}");
        assert!(
            out.contains("otelcol_processor_incoming_items_total{processor=\"filter\",otel_signal=\"traces\"} 3\n"),
            "{out}"
        );
    }
}
