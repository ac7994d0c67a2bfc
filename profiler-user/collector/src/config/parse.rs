//! The config file, top to bottom: YAML, `${env:…}`, the component sections (each entry
//! parsed by its type's factory, connectors and extensions too), then
//! `service` (pipelines and telemetry), with the cross-checks between them: connectors used on
//! both sides and without cycles. Every error gets the position of its key path in the text.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::{
    env::{self, Lookup},
    positions::{join, Positions},
    service::{self, Pipeline, PipelineId, ServiceConfig},
    ConfigError, Warning,
};
use crate::{component::ComponentId, factories::Factories, signal::Signal};

/// The top-level keys, as in the Collector.
const TOP_LEVEL: [&str; 6] = ["receivers", "processors", "exporters", "connectors", "extensions", "service"];

/// Reads and parses a config file (see [`parse`]).
pub fn load(path: &std::path::Path, factories: &Factories) -> Result<(ServiceConfig, Vec<Warning>), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path.display().to_string(), format!("cannot read the config: {e}")))?;
    parse(&text, factories)
}

/// Parses and checks a whole config with the component types of `factories`. Nothing is
/// opened: the result is built into a [`crate::graph::Graph`]. Warnings are for the binary to
/// log.
pub fn parse(text: &str, factories: &Factories) -> Result<(ServiceConfig, Vec<Warning>), ConfigError> {
    parse_with_env(text, factories, &env::ProcessEnv)
}

/// [`parse`] with the environment variables of `env`.
pub(crate) fn parse_with_env(
    text: &str,
    factories: &Factories,
    env: &dyn Lookup,
) -> Result<(ServiceConfig, Vec<Warning>), ConfigError> {
    let positions = Positions::index(text);
    let mut warnings = Vec::new();
    let result = check(text, &positions, factories, env, &mut warnings);
    for w in &mut warnings {
        w.position = w.position.or_else(|| positions.locate(&w.path));
    }
    match result {
        Ok(config) => Ok((config, warnings)),
        Err(mut e) => {
            e.position = e.position.or_else(|| positions.locate(&e.path));
            Err(e)
        }
    }
}

/// A YAML syntax error: where the parser stopped, without serde_yaml's own "at line …".
fn syntax_error(e: serde_yaml::Error, positions: &Positions) -> ConfigError {
    let mut message = super::message(&e);
    while let Some(i) = message.find(" at line ") {
        let rest = &message[i + " at line ".len()..];
        let end = rest
            .find(" column ")
            .map(|j| j + " column ".len())
            .map(|j| j + rest[j..].find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len() - j))
            .unwrap_or(0);
        message.replace_range(i..i + " at line ".len() + end, "");
    }
    let (path, position) = match (positions.stopped_in(), positions.duplicate()) {
        (Some(p), _) => (p.to_string(), None),
        (None, Some((p, at))) => (p.clone(), Some(*at)),
        (None, None) => (String::new(), None),
    };
    let position = position.or_else(|| e.location().map(|l| super::Position { line: l.line(), column: l.column() }));
    let path = if path.is_empty() { "config".to_string() } else { path };
    ConfigError { path, message, position }
}

fn check(
    text: &str,
    positions: &Positions,
    factories: &Factories,
    env: &dyn Lookup,
    warnings: &mut Vec<Warning>,
) -> Result<ServiceConfig, ConfigError> {
    let mut root: Value = serde_yaml::from_str(text).map_err(|e| syntax_error(e, positions))?;
    // `<<: *defaults` merge keys, which the Collector's YAML parser applies too.
    root.apply_merge().map_err(|e| ConfigError::new("config", format!("merging `<<` keys: {}", super::message(e))))?;
    env::expand(&mut root, "", env, warnings)?;
    let mut top = match root {
        Value::Mapping(m) => m,
        Value::Null => Mapping::new(),
        _ => {
            return Err(ConfigError::new(
                "config",
                "the config is a mapping of receivers, processors, exporters and service",
            ))
        }
    };
    for key in top.keys() {
        let k = key_text(key);
        if !TOP_LEVEL.contains(&k.as_str()) {
            return Err(old_or_unknown_top_level(&k, top.get(key)));
        }
    }
    let mut section = |name: &str| top.remove(name).unwrap_or(Value::Null);
    let (receivers, processors, exporters) = (section("receivers"), section("processors"), section("exporters"));
    let (connectors, extensions, service) = (section("connectors"), section("extensions"), section("service"));

    let mut declared = Declared::default();
    let mut sections = BTreeMap::new();
    let receivers = components(receivers, "receivers", &mut sections, |id, value, path| {
        let f = factories
            .receiver(id.kind())
            .ok_or_else(|| unknown_type("receiver", path, id, &factories.receiver_kinds()))?;
        declared.signals.insert(path.to_string(), f.signals());
        f.create(id, value, path)
    })?;
    let processors = components(processors, "processors", &mut sections, |id, value, path| {
        let f = factories
            .processor(id.kind())
            .ok_or_else(|| unknown_type("processor", path, id, &factories.processor_kinds()))?;
        declared.signals.insert(path.to_string(), f.signals());
        f.create(id, value, path)
    })?;
    let exporters = components(exporters, "exporters", &mut sections, |id, value, path| {
        let f = factories
            .exporter(id.kind())
            .ok_or_else(|| unknown_type("exporter", path, id, &factories.exporter_kinds()))?;
        declared.signals.insert(path.to_string(), f.signals());
        f.create(id, value, path)
    })?;
    let connectors = components(connectors, "connectors", &mut sections, |id, value, path| {
        let f = factories
            .connector(id.kind())
            .ok_or_else(|| unknown_type("connector", path, id, &factories.connector_kinds()))?;
        for section in ["receivers", "exporters"] {
            if declared.signals.contains_key(&format!("{section}.{id}")) {
                return Err(ConfigError::new(
                    path,
                    format!(
                        "`{id}` is also declared under `{section}:`: pipelines name connectors in their receivers \
                         and exporters lists, so a connector's id must differ from every receiver's and exporter's"
                    ),
                ));
            }
        }
        declared.connectors.insert(id.clone(), f.pairs());
        Ok(service::ConnectorConfig { pairs: f.pairs(), build: f.create(id, value, path)? })
    })?;
    let mut extensions = components(extensions, "extensions", &mut sections, |id, value, path| {
        let f = factories
            .extension(id.kind())
            .ok_or_else(|| unknown_type("extension", path, id, &factories.extension_kinds()))?;
        f.create(id, value, path)
    })?;

    let service = service_section(service)?;
    let mut enabled = BTreeMap::new();
    for (i, raw) in service.extensions.iter().enumerate() {
        let at = format!("service.extensions[{i}]");
        let id = ComponentId::parse(raw).map_err(|m| ConfigError::new(&at, m))?;
        if enabled.contains_key(&id) {
            return Err(ConfigError::new(at, format!("`{id}` is listed twice")));
        }
        let k = extensions
            .iter()
            .position(|(x, _)| *x == id)
            .ok_or_else(|| ConfigError::new(&at, format!("extension `{id}` is not declared under `extensions:`")))?;
        let (id, c) = extensions.swap_remove(k);
        enabled.insert(id, c);
    }
    for (id, _) in extensions {
        warnings.push(Warning {
            path: format!("extensions.{id}"),
            message: "declared but not listed in service.extensions: it is not started".to_string(),
            position: None,
        });
    }
    let telemetry = service::telemetry("service.telemetry", service.telemetry)?;
    let pipelines = pipelines(service.pipelines, &declared)?;
    connections(&pipelines, &declared, &connectors)?;

    // Only what a pipeline uses is kept (and later built); the rest was checked and is dropped.
    let mut used = HashSet::new();
    for p in &pipelines {
        for id in &p.receivers {
            used.insert(format!("receivers.{id}"));
            used.insert(format!("connectors.{id}"));
        }
        for id in &p.processors {
            used.insert(format!("processors.{id}"));
        }
        for id in &p.exporters {
            used.insert(format!("exporters.{id}"));
            used.insert(format!("connectors.{id}"));
        }
    }
    Ok(ServiceConfig {
        receivers: keep("receivers", receivers, &used, warnings),
        processors: keep("processors", processors, &used, warnings),
        exporters: keep("exporters", exporters, &used, warnings),
        connectors: keep("connectors", connectors, &used, warnings),
        pipelines,
        telemetry,
        extensions: enabled,
        sections,
    })
}

/// The components of a section that a pipeline uses; a warning for each other one.
fn keep<T>(
    section: &str,
    all: Vec<(ComponentId, T)>,
    used: &HashSet<String>,
    warnings: &mut Vec<Warning>,
) -> BTreeMap<ComponentId, T> {
    let mut kept = BTreeMap::new();
    for (id, c) in all {
        let path = format!("{section}.{id}");
        if used.contains(&path) {
            kept.insert(id, c);
        } else {
            warnings.push(Warning {
                path,
                message: "declared but used in no pipeline: it is not started".to_string(),
                position: None,
            });
        }
    }
    kept
}

/// A mapping key as text (keys are strings in any sensible config).
pub(crate) fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim_end().to_string(),
    }
}

/// The signals each declared component supports, by its path (`receivers.otlp`), and the
/// signal pairs of each connector.
#[derive(Default)]
struct Declared {
    signals: HashMap<String, &'static [Signal]>,
    connectors: HashMap<ComponentId, &'static [(Signal, Signal)]>,
}

/// The error for a top-level key that is not the Collector's, with where old otelprof keys went.
fn old_or_unknown_top_level(key: &str, value: Option<&Value>) -> ConfigError {
    match key {
        "profiling" => ConfigError::new(
            "profiling",
            "the profiler is now the `profiling` receiver: move `profiling:` under `receivers:` and add it to \
             a `profiles` pipeline (see README)",
        ),
        "telemetry" => {
            let has = |k: &str| value.and_then(|v| v.get(k)).is_some();
            if has("metrics_address") {
                ConfigError::new("telemetry.metrics_address", "moved to service.telemetry.metrics.address")
            } else {
                ConfigError::new(
                    "telemetry",
                    "moved to service.telemetry (metrics.address, logs.level, shutdown_timeout, log_interval)",
                )
            }
        }
        _ => ConfigError::new(key, format!("unknown key `{key}`: expected one of {}", TOP_LEVEL.join(", "))),
    }
}

fn unknown_type(what: &str, path: &str, id: &ComponentId, known: &[&str]) -> ConfigError {
    let known =
        if known.is_empty() { "none are built in".to_string() } else { format!("known types: {}", known.join(", ")) };
    ConfigError::new(path, format!("unknown {what} type `{}` ({known})", id.kind()))
}

/// Parses a component section (`receivers:`): ids checked, each entry created by `create`.
fn components<T>(
    section: Value,
    name: &str,
    sections: &mut BTreeMap<String, Value>,
    mut create: impl FnMut(&ComponentId, Value, &str) -> Result<T, ConfigError>,
) -> Result<Vec<(ComponentId, T)>, ConfigError> {
    let entries = match section {
        Value::Null => return Ok(Vec::new()),
        Value::Mapping(m) => m,
        _ => return Err(ConfigError::new(name, "must be a mapping of component ids (`type[/name]`) to their config")),
    };
    let mut out = Vec::new();
    for (key, value) in entries {
        let key = key_text(&key);
        let path = join(name, &key);
        let id = ComponentId::parse(&key).map_err(|m| ConfigError::new(&path, m))?;
        sections.insert(path.clone(), value.clone());
        out.push((id.clone(), create(&id, value, &path)?));
    }
    Ok(out)
}

/// `service:` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    extensions: Vec<String>,
    /// Kept as a mapping: the file's order of pipelines is kept.
    #[serde(default)]
    pipelines: Mapping,
    #[serde(default)]
    telemetry: Value,
}

fn service_section(value: Value) -> Result<RawService, ConfigError> {
    if value.is_null() {
        return Err(ConfigError::new("service", "missing: `service.pipelines` says which components run"));
    }
    super::deserialize_at("service", value)
}

/// `service.pipelines.<id>` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    #[serde(default)]
    receivers: Vec<String>,
    #[serde(default)]
    processors: Vec<String>,
    #[serde(default)]
    exporters: Vec<String>,
}

/// The three lists of a pipeline, for checks that treat them alike.
#[derive(Clone, Copy)]
enum List {
    Receivers,
    Processors,
    Exporters,
}

impl List {
    fn name(self) -> &'static str {
        match self {
            List::Receivers => "receivers",
            List::Processors => "processors",
            List::Exporters => "exporters",
        }
    }

    fn singular(self) -> &'static str {
        match self {
            List::Receivers => "receiver",
            List::Processors => "processor",
            List::Exporters => "exporter",
        }
    }
}

fn pipelines(raw: Mapping, declared: &Declared) -> Result<Vec<Pipeline>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::new("service.pipelines", "at least one pipeline is needed"));
    }
    let mut out = Vec::new();
    for (key, value) in raw {
        let key = key_text(&key);
        let path = join("service.pipelines", &key);
        let id = PipelineId::parse(&key).map_err(|m| ConfigError::new(&path, m))?;
        let p: RawPipeline = if value.is_null() {
            RawPipeline { receivers: vec![], processors: vec![], exporters: vec![] }
        } else {
            super::deserialize_at(&path, value)?
        };
        let receivers = list(&path, &id, List::Receivers, p.receivers, declared)?;
        let processors = list(&path, &id, List::Processors, p.processors, declared)?;
        let exporters = list(&path, &id, List::Exporters, p.exporters, declared)?;
        out.push(Pipeline { id, receivers, processors, exporters });
    }
    Ok(out)
}

/// Checks one list of a pipeline: ids declared, of a type that supports the pipeline's signal,
/// none twice; receivers and exporters not empty.
fn list(
    path: &str,
    pipeline: &PipelineId,
    which: List,
    ids: Vec<String>,
    declared: &Declared,
) -> Result<Vec<ComponentId>, ConfigError> {
    let list_path = format!("{path}.{}", which.name());
    if ids.is_empty() && !matches!(which, List::Processors) {
        return Err(ConfigError::new(list_path, format!("a pipeline needs at least one {}", which.singular())));
    }
    let mut out: Vec<ComponentId> = Vec::new();
    for (i, raw) in ids.iter().enumerate() {
        let at = format!("{list_path}[{i}]");
        let id = ComponentId::parse(raw).map_err(|m| ConfigError::new(&at, m))?;
        if let Some(pairs) = declared.connectors.get(&id) {
            connector_in_list(&at, pipeline, which, &id, pairs)?;
            if let Some(first) = out.iter().position(|x| *x == id) {
                return Err(ConfigError::new(
                    at,
                    format!(
                        "`{id}` is already in this pipeline ({}[{first}]): a component is listed once",
                        which.name()
                    ),
                ));
            }
            out.push(id);
            continue;
        }
        let Some(signals) = declared.signals.get(&format!("{}.{id}", which.name())) else {
            return Err(ConfigError::new(
                at,
                format!("{} `{id}` is not declared under `{}:`", which.singular(), which.name()),
            ));
        };
        if !signals.contains(&pipeline.signal()) {
            let supported: Vec<&str> = signals.iter().map(|s| s.name()).collect();
            return Err(ConfigError::new(
                at,
                format!(
                    "the {} `{id}` does not support {} (it supports {}), so it cannot be in pipeline `{pipeline}`",
                    which.singular(),
                    pipeline.signal(),
                    supported.join(", ")
                ),
            ));
        }
        if let Some(first) = out.iter().position(|x| *x == id) {
            return Err(ConfigError::new(
                at,
                format!("`{id}` is already in this pipeline ({}[{first}]): a component is listed once", which.name()),
            ));
        }
        out.push(id);
    }
    Ok(out)
}

/// A connector in a pipeline's list: only receivers and exporters, and only for a signal it
/// connects on that side.
fn connector_in_list(
    at: &str,
    pipeline: &PipelineId,
    which: List,
    id: &ComponentId,
    pairs: &[(Signal, Signal)],
) -> Result<(), ConfigError> {
    let side: Vec<Signal> = match which {
        List::Processors => {
            return Err(ConfigError::new(
                at,
                format!("`{id}` is a connector: it goes in a pipeline's receivers or exporters, not its processors"),
            ))
        }
        List::Exporters => pairs.iter().map(|p| p.0).collect(),
        List::Receivers => pairs.iter().map(|p| p.1).collect(),
    };
    if side.contains(&pipeline.signal()) {
        return Ok(());
    }
    let mut names: Vec<&str> = side.iter().map(|s| s.name()).collect();
    names.dedup();
    Err(ConfigError::new(
        at,
        format!(
            "the connector `{id}` cannot be a{} {} of {} (it takes {}), so it cannot be in pipeline `{pipeline}`",
            if matches!(which, List::Exporters) { "n" } else { "" },
            which.singular(),
            pipeline.signal(),
            names.join(", ")
        ),
    ))
}

/// The checks that need every pipeline: each connector is used on both sides for a pair of
/// signals it connects, its own config agrees with the pipelines it feeds, and no pipeline
/// feeds itself through connectors.
fn connections(
    pipelines: &[Pipeline],
    declared: &Declared,
    connectors: &[(ComponentId, service::ConnectorConfig)],
) -> Result<(), ConfigError> {
    let path_of = |p: &Pipeline, which: List, id: &ComponentId| {
        let list = match which {
            List::Receivers => &p.receivers,
            List::Processors => &p.processors,
            List::Exporters => &p.exporters,
        };
        let i = list.iter().position(|x| x == id).unwrap_or(0);
        format!("{}.{}[{i}]", join("service.pipelines", &p.id.to_string()), which.name())
    };
    for (id, connector) in connectors {
        let pairs = connector.pairs;
        let exporting: Vec<&Pipeline> = pipelines.iter().filter(|p| p.exporters.contains(id)).collect();
        let receiving: Vec<&Pipeline> = pipelines.iter().filter(|p| p.receivers.contains(id)).collect();
        for p in &exporting {
            if !receiving.iter().any(|q| pairs.contains(&(p.id.signal(), q.id.signal()))) {
                return Err(ConfigError::new(
                    path_of(p, List::Exporters, id),
                    format!(
                        "the connector `{id}` is an exporter of `{}` but no pipeline it can feed lists it under \
                         receivers: data sent to it would go nowhere",
                        p.id
                    ),
                ));
            }
        }
        for q in &receiving {
            if !exporting.iter().any(|p| pairs.contains(&(p.id.signal(), q.id.signal()))) {
                return Err(ConfigError::new(
                    path_of(q, List::Receivers, id),
                    format!(
                        "the connector `{id}` is a receiver of `{}` but no pipeline that can feed it lists it under \
                         exporters: it would never receive anything",
                        q.id
                    ),
                ));
            }
        }
        for &(from, to) in pairs {
            if !exporting.iter().any(|p| p.id.signal() == from) {
                continue;
            }
            let fed: Vec<PipelineId> = receiving.iter().filter(|q| q.id.signal() == to).map(|q| q.id.clone()).collect();
            if !fed.is_empty() {
                connector.build.check(from, to, &fed, &format!("connectors.{id}"))?;
            }
        }
    }
    if let Some(cycle) = cycle(pipelines, declared) {
        let first = &pipelines[cycle[0].0];
        let text: Vec<String> =
            cycle.iter().map(|(p, c)| format!("{} → {c}", pipelines[*p].id)).chain([first.id.to_string()]).collect();
        return Err(ConfigError::new(
            path_of(first, List::Exporters, &cycle[0].1),
            format!("the pipelines form a cycle through connectors: {}", text.join(" → ")),
        ));
    }
    Ok(())
}

/// The pipelines each pipeline feeds through connectors: `(index of the fed pipeline, the
/// connector)`.
pub(crate) fn downstream(
    pipelines: &[Pipeline],
    connector_pairs: impl Fn(&ComponentId) -> Option<&'static [(Signal, Signal)]>,
) -> Vec<Vec<(usize, ComponentId)>> {
    pipelines
        .iter()
        .map(|p| {
            let mut out = Vec::new();
            for c in &p.exporters {
                let Some(pairs) = connector_pairs(c) else { continue };
                for (j, q) in pipelines.iter().enumerate() {
                    if q.receivers.contains(c) && pairs.contains(&(p.id.signal(), q.id.signal())) {
                        out.push((j, c.clone()));
                    }
                }
            }
            out
        })
        .collect()
}

/// A cycle of pipelines through connectors, as (pipeline index, connector it exports to), if any.
fn cycle(pipelines: &[Pipeline], declared: &Declared) -> Option<Vec<(usize, ComponentId)>> {
    let next = downstream(pipelines, |c| declared.connectors.get(c).copied());
    // 0: not seen, 1: on the current path, 2: done.
    let mut state = vec![0u8; pipelines.len()];
    let mut path: Vec<(usize, ComponentId)> = Vec::new();
    fn visit(
        i: usize,
        next: &[Vec<(usize, ComponentId)>],
        state: &mut [u8],
        path: &mut Vec<(usize, ComponentId)>,
    ) -> Option<usize> {
        state[i] = 1;
        for (j, c) in &next[i] {
            path.push((i, c.clone()));
            match state[*j] {
                1 => return Some(*j),
                0 => {
                    if let Some(start) = visit(*j, next, state, path) {
                        return Some(start);
                    }
                }
                _ => {}
            }
            path.pop();
        }
        state[i] = 2;
        None
    }
    for i in 0..pipelines.len() {
        if state[i] == 0 {
            if let Some(start) = visit(i, &next, &mut state, &mut path) {
                let from = path.iter().position(|(p, _)| *p == start).unwrap_or(0);
                return Some(path.split_off(from));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        config::{service::LogLevel, MetricsLevel, Position},
        factories::testing::Lab,
    };

    /// A fixed environment.
    fn env(name: &str) -> Option<String> {
        match name {
            "HTTP_ENDPOINT" => Some("0.0.0.0:4318".into()),
            "FREQ" => Some("49".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<(ServiceConfig, Vec<Warning>), ConfigError> {
        parse_with_env(text, &Lab::default().factories(), &env)
    }

    /// The text at a position.
    fn text_at(text: &str, p: Position) -> &str {
        let line = text.lines().nth(p.line - 1).unwrap_or("");
        line.char_indices().nth(p.column - 1).map(|(i, _)| &line[i..]).unwrap_or("")
    }

    /// Parses `text`, expecting an error at `path`, whose message contains `message`, pointing
    /// at line `line` where the text starts with `there`.
    #[track_caller]
    fn fails(text: &str, path: &str, message: &str, line: usize, there: &str) {
        let e = parse(text).err().unwrap_or_else(|| panic!("parsed: {text}"));
        assert_eq!(e.path, path, "{e}");
        assert!(e.message.contains(message), "{e}\nexpected: {message}");
        let p = e.position.unwrap_or_else(|| panic!("no position: {e}"));
        assert_eq!(p.line, line, "{e}");
        assert!(text_at(text, p).starts_with(there), "{e} points at `{}`, not at `{there}`", text_at(text, p));
        assert!(e.to_string().starts_with(&format!("{path} (line {line}, column {}): ", p.column)), "{e}");
    }

    const FULL: &str = r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 0.0.0.0:4317
      http:
        endpoint: ${env:HTTP_ENDPOINT}
  otlp/unused:
  profiling:
    frequency: ${env:FREQ}
processors:
  batch:
  batch/hold: {hold: true}
exporters:
  otlp:
  otlp_grpc/backup:
  debug:
connectors: {}
extensions: {}
service:
  extensions: []
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp, debug]
    profiles/node:
      receivers: [profiling]
      processors: [batch, batch/hold]
      exporters: [otlp_grpc/backup]
  telemetry:
    metrics: {address: "localhost:9464", level: detailed}
    logs: {level: debug}
    shutdown_timeout: 3s
    log_interval: 1s
"#;

    #[test]
    fn a_full_config_parses_with_its_warnings() {
        let (c, warnings) = parse(FULL).unwrap();
        let ids = |m: Vec<&ComponentId>| m.into_iter().map(|i| i.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(c.receivers.keys().collect()), ["otlp", "profiling"], "otlp/unused is not kept");
        assert_eq!(ids(c.processors.keys().collect()), ["batch", "batch/hold"]);
        assert_eq!(ids(c.exporters.keys().collect()), ["debug", "otlp", "otlp_grpc/backup"], "an alias is a type");
        let pipelines: Vec<String> = c.pipelines.iter().map(|p| p.id.to_string()).collect();
        assert_eq!(pipelines, ["traces", "profiles/node"], "in the file's order");
        let node = &c.pipelines[1];
        assert_eq!(node.id.signal(), Signal::Profiles);
        assert_eq!(ids(node.processors.iter().collect()), ["batch", "batch/hold"], "in the pipeline's order");
        let t = &c.telemetry;
        assert_eq!(t.metrics.address.as_deref(), Some("localhost:9464"));
        assert_eq!(t.metrics.level, MetricsLevel::Detailed);
        assert_eq!(t.logs.level, LogLevel::Debug);
        assert_eq!((t.shutdown_timeout, t.log_interval), (Duration::from_secs(3), Duration::from_secs(1)));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(
            warnings[0].to_string(),
            "receivers.otlp/unused (line 9, column 3): declared but used in no pipeline: it is not started"
        );
    }

    #[test]
    fn environment_variables_are_expanded_and_unset_ones_warned_about() {
        let text = "receivers: {otlp: {protocols: {http: {endpoint: '${env:NOPE}'}}}}\nexporters: {debug: }\n\
                    service: {pipelines: {logs: {receivers: [otlp], exporters: ['${env:EXPORTER:-debug}']}}}\n";
        let (c, warnings) = parse(text).unwrap();
        assert_eq!(c.pipelines[0].exporters[0].to_string(), "debug", "a default");
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].path, "receivers.otlp.protocols.http.endpoint");
        assert!(warnings[0].message.contains("`NOPE` is not set"));
        assert_eq!(warnings[0].position.map(|p| p.line), Some(1));
        // A whole-value reference is typed: a number where the config wants a number.
        let typed = FULL.replace("frequency: ${env:FREQ}", "frequency: ${env:HTTP_ENDPOINT}");
        fails(
            &typed,
            "receivers.profiling.frequency",
            "invalid type: string \"0.0.0.0:4318\", expected u32",
            11,
            "${env:HTTP",
        );
        let provider = FULL.replace("${env:FREQ}", "${file:/x}");
        fails(&provider, "receivers.profiling.frequency", "`file` is not a config provider", 11, "${file");
    }

    #[test]
    fn component_errors_name_the_key_and_where_it_is() {
        let bad = FULL.replace("endpoint: 0.0.0.0:4317", "endpoint: {port: 1}");
        fails(&bad, "receivers.otlp.protocols.grpc.endpoint", "invalid type: map, expected a string", 6, "{port: 1}");
        let bad = FULL.replace("endpoint: 0.0.0.0:4317", "endpont: 0.0.0.0:4317");
        fails(&bad, "receivers.otlp.protocols.grpc.endpont", "unknown field `endpont`", 6, "0.0.0.0:4317");
        let bad = FULL.replace("  batch/hold: {hold: true}", "  batch/hold: {hold: 3}");
        fails(&bad, "processors.batch/hold.hold", "invalid type: integer `3`, expected a boolean", 14, "3}");
        let bad = FULL.replace("  otlp/unused:\n", "  zipkin:\n");
        fails(&bad, "receivers.zipkin", "unknown receiver type `zipkin` (known types: otlp, profiling)", 9, "zipkin:");
        let bad = FULL.replace("  debug:\n", "  kafka:\n");
        fails(
            &bad,
            "exporters.kafka",
            "unknown exporter type `kafka` (known types: otlp, otlp_grpc, debug)",
            18,
            "kafka",
        );
        let bad = FULL.replace("  otlp/unused:\n", "  otlp/:\n");
        fails(&bad, "receivers.otlp/", "is not a component id", 9, "otlp/:");
        // A semantic check of the factory (not serde's) is located the same way.
        let bad = FULL.replace(
            "      grpc:\n        endpoint: 0.0.0.0:4317\n      http:\n        endpoint: ${env:HTTP_ENDPOINT}\n",
            "      {}\n",
        );
        fails(&bad, "receivers.otlp.protocols", "enable grpc, http or both", 4, "protocols:");
    }

    #[test]
    fn pipeline_errors_name_the_list_entry() {
        let bad = FULL.replace("receivers: [otlp]", "receivers: [otlp/missing]");
        fails(
            &bad,
            "service.pipelines.traces.receivers[0]",
            "receiver `otlp/missing` is not declared under `receivers:`",
            25,
            "otlp/missing",
        );
        let bad = FULL.replace("exporters: [otlp, debug]", "exporters: [otlp, debug/2]");
        fails(&bad, "service.pipelines.traces.exporters[1]", "exporter `debug/2` is not declared", 27, "debug/2");
        let bad = FULL.replace("receivers: [otlp]", "receivers: [profiling]");
        fails(
            &bad,
            "service.pipelines.traces.receivers[0]",
            "the receiver `profiling` does not support traces (it supports profiles), so it cannot be in pipeline `traces`",
            25,
            "profiling]",
        );
        let bad = FULL.replace("processors: [batch, batch/hold]", "processors: [batch/hold, batch, batch/hold]");
        fails(
            &bad,
            "service.pipelines.profiles/node.processors[2]",
            "`batch/hold` is already in this pipeline (processors[0])",
            30,
            "batch/hold]",
        );
        let bad = FULL.replace("      receivers: [otlp]\n", "");
        fails(&bad, "service.pipelines.traces.receivers", "a pipeline needs at least one receiver", 24, "traces:");
        let bad = FULL.replace("exporters: [otlp_grpc/backup]", "exporters: []");
        fails(&bad, "service.pipelines.profiles/node.exporters", "a pipeline needs at least one exporter", 31, "[]");
        let bad = FULL.replace("    profiles/node:", "    spans/node:");
        fails(&bad, "service.pipelines.spans/node", "`spans` is not a signal", 28, "spans/node:");
        let bad = FULL.replace("      processors: [batch]\n", "      processor: [batch]\n");
        fails(&bad, "service.pipelines.traces.processor", "unknown field `processor`", 26, "[batch]");
    }

    /// Traces in through `otlp`, routed by tenant to `traces/a` and `traces/b`.
    const ROUTED: &str = r#"
receivers: {otlp: }
exporters: {otlp: , debug: }
connectors:
  routing:
    default_pipelines: [traces/b]
    table:
      - condition: attributes["tenant"] == "A"
        pipelines: [traces/a]
service:
  pipelines:
    traces/in: {receivers: [otlp], exporters: [routing]}
    traces/a: {receivers: [routing], exporters: [otlp]}
    traces/b: {receivers: [routing], exporters: [debug]}
"#;

    #[test]
    fn connectors_join_pipelines_and_are_checked_on_both_sides() {
        let (c, warnings) = parse(ROUTED).unwrap();
        assert_eq!(warnings, []);
        assert_eq!(c.connectors.keys().map(|k| k.to_string()).collect::<Vec<_>>(), ["routing"]);
        assert_eq!(c.pipelines[0].exporters[0].to_string(), "routing");

        let bad = ROUTED.replace("    traces/a: {receivers: [routing], exporters: [otlp]}\n", "");
        fails(&bad, "connectors.routing.table[0].pipelines[0]", "pipeline `traces/a` does not list", 9, "traces/a");
        let bad = ROUTED.replace("receivers: [otlp], exporters: [routing]", "receivers: [otlp], exporters: [otlp]");
        fails(&bad, "service.pipelines.traces/a.receivers[0]", "would never receive anything", 13, "routing");
        let bad = ROUTED.replace(
            "traces/a: {receivers: [routing], exporters: [otlp]}\n    traces/b: {receivers: [routing], exporters: [debug]}",
            "traces/a: {receivers: [otlp], exporters: [otlp]}\n    traces/b: {receivers: [otlp], exporters: [debug]}",
        );
        fails(&bad, "service.pipelines.traces/in.exporters[0]", "data sent to it would go nowhere", 12, "routing");
        let bad = ROUTED
            .replace("exporters: [otlp]}", "exporters: [otlp]}\n    logs: {receivers: [routing], exporters: [debug]}");
        fails(&bad, "service.pipelines.logs.receivers[0]", "would never receive anything", 14, "routing");
        let bad = ROUTED.replace(
            "traces/a: {receivers: [routing], exporters: [otlp]}",
            "traces/a: {receivers: [routing], processors: [routing], exporters: [otlp]}",
        );
        fails(&bad, "service.pipelines.traces/a.processors[0]", "is a connector", 13, "routing");
        let bad = ROUTED.replace(
            "traces/b: {receivers: [routing], exporters: [debug]}",
            "traces/b: {receivers: [routing], exporters: [routing]}",
        );
        fails(
            &bad,
            "service.pipelines.traces/b.exporters[0]",
            "cycle through connectors: traces/b → routing → traces/b",
            14,
            "routing",
        );
        let two = ROUTED
            .replace(
                "connectors:\n",
                "connectors:\n  routing/2: {table: [{statement: route(), pipelines: [traces/in]}]}\n",
            )
            .replace(
                "traces/b: {receivers: [routing], exporters: [debug]}",
                "traces/b: {receivers: [routing], exporters: [routing/2]}",
            )
            .replace("traces/in: {receivers: [otlp]", "traces/in: {receivers: [otlp, routing/2]");
        let e = parse(&two).err().unwrap();
        assert!(e.message.contains("traces/in → routing → traces/b → routing/2 → traces/in"), "{e}");
    }

    #[test]
    fn sections_and_old_keys() {
        let bad = FULL.replace("connectors: {}", "connectors: {forward: }");
        fails(&bad, "connectors.forward", "unknown connector type `forward` (known types: routing)", 19, "forward");
        let bad = FULL.replace("extensions: {}", "extensions:\n  opamp: {}");
        fails(&bad, "extensions.opamp", "missing field `server`", 21, "{}");
        let bad = FULL.replace("extensions: {}", "extensions:\n  health_check: {}");
        fails(&bad, "extensions.health_check", "unknown extension type `health_check` (known types: opamp)", 21, "{}");
        let bad = FULL.replace("  extensions: []", "  extensions: [opamp]");
        fails(&bad, "service.extensions[0]", "extension `opamp` is not declared under `extensions:`", 22, "opamp]");
        let bad = FULL.replace("  pipelines:", "  pipeline:");
        fails(&bad, "service.pipeline", "unknown field `pipeline`", 23, "pipeline:");
        let bad = FULL.replace("service:\n", "service:\n  x: 1\n");
        fails(&bad, "service.x", "unknown field `x`", 22, "1");
        let bad = format!("{FULL}profling: {{}}\n");
        fails(
            &bad,
            "profling",
            "unknown key `profling`: expected one of receivers, processors, exporters, connectors, extensions, service",
            37,
            "{}",
        );
        let old = "profiling:\n  frequency: 49\nexporters:\n  otlp: {}\n";
        fails(
            old,
            "profiling",
            "the profiler is now the `profiling` receiver: move `profiling:` under `receivers:`",
            1,
            "profiling:",
        );
        let old = format!("{FULL}telemetry:\n  log_interval: 1s\n  metrics_address: 127.0.0.1:9464\n");
        fails(&old, "telemetry.metrics_address", "moved to service.telemetry.metrics.address", 39, "127.0.0.1:9464");
        let none = "receivers: {otlp: }\nexporters: {debug: }\n";
        let e = parse(none).unwrap_err();
        assert_eq!((e.path.as_str(), e.position), ("service", Some(Position { line: 1, column: 1 })), "{e}");
        let empty = "receivers: {otlp: }\nexporters: {debug: }\nservice: {pipelines: {}}\n";
        fails(empty, "service.pipelines", "at least one pipeline is needed", 3, "{}}");
        let bad = FULL.replace("level: detailed", "level: loud");
        fails(&bad, "service.telemetry.metrics.level", "unknown variant `loud`", 33, "loud");
    }

    #[test]
    fn yaml_syntax_errors_say_where() {
        let tab = "receivers:\n  otlp:\n\tprotocols: {}\n";
        let e = parse(tab).unwrap_err();
        assert_eq!(e.path, "receivers.otlp");
        assert_eq!(e.position, Some(Position { line: 3, column: 1 }));
        assert_eq!(e.to_string(), "receivers.otlp (line 3, column 1): found character that cannot start any token, while scanning for the next token");
        let e = parse("exporters: [1, 2\n").unwrap_err();
        assert_eq!(e.path, "exporters", "{e}");
        assert!(e.message.starts_with("did not find expected ',' or ']'"), "{e}");
        let twice = "receivers: {otlp: }\nexporters: {debug: }\nreceivers: {}\n";
        let e = parse(twice).unwrap_err();
        assert_eq!((e.path.as_str(), e.position), ("receivers", Some(Position { line: 3, column: 12 })), "{e}");
        assert!(e.message.contains("duplicate entry with key \"receivers\""), "{e}");
        let nested = "service:\n  pipelines: {}\n  pipelines: {}\n";
        let e = parse(nested).unwrap_err();
        assert_eq!(e.to_string(), "service.pipelines (line 3, column 14): duplicate entry with key \"pipelines\"");
        let e = parse("- a\n").unwrap_err();
        assert_eq!(e.path, "config");
    }

    #[test]
    fn anchors_and_merge_keys_work_as_in_the_collector() {
        let text = "receivers: {otlp: }\nexporters:\n  otlp: &common {refuse: true}\n  debug:\n    <<: *common\n    \
                    refuse: false\nservice: {pipelines: {logs: {receivers: [otlp], exporters: [debug, otlp]}}}\n";
        let (c, warnings) = parse(text).unwrap();
        assert_eq!(c.exporters.len(), 2);
        assert_eq!(warnings, []);
        let bad = text.replace("refuse: true", "refuse: 1");
        let e = parse(&bad).unwrap_err();
        assert_eq!((e.path.as_str(), e.position.map(|p| p.line)), ("exporters.otlp.refuse", Some(3)), "{e}");
        let bad = text.replace("    refuse: false\n", "    refuse: []\n");
        let e = parse(&bad).unwrap_err();
        assert_eq!((e.path.as_str(), e.position.map(|p| p.line)), ("exporters.debug.refuse", Some(6)), "{e}");
    }

    #[test]
    fn an_empty_file_needs_a_service() {
        let e = parse("").unwrap_err();
        assert_eq!(e.path, "service");
    }
}
