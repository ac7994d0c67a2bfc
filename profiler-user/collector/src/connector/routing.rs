//! The `routing` connector: telemetry to pipelines chosen by OTTL conditions, on all four
//! signals, in the shape of the Collector's routing connector.
//!
//! ```yaml
//! connectors:
//!   routing:
//!     default_pipelines: [traces/other]     # what no route takes (dropped and counted if empty)
//!     error_mode: propagate                 # propagate (default) | ignore | silent
//!     table:
//!       - statement: route() where resource.attributes["tenant"] == "A"
//!         pipelines: [traces/a]
//!       - condition: attributes["tenant"] == "B"    # context: resource unless given
//!         pipelines: [traces/b, traces/audit]
//!       - context: span
//!         condition: span.attributes["http.route"] == "/login"
//!         pipelines: [traces/security]
//! service:
//!   pipelines:
//!     traces/in: {receivers: [otlp], exporters: [routing]}
//!     traces/a: {receivers: [routing], exporters: [otlp/a]}
//!     ...
//! ```
//!
//! **Semantics** (upstream's since `match_once` was removed): routes are tried in table order
//! and each record goes to the pipelines of the *first* route whose condition holds for it;
//! what no route takes goes to `default_pipelines`. A route of the `resource` context (the
//! default) moves whole resources; a `span`, `metric`, `datapoint`, `log` or `profile` route
//! moves single records, which keep their resource and scope (copied). A route given as a
//! `statement` is `route()` with a `where` clause (`route()` alone takes everything).
//!
//! **Cost**: each route evaluates its condition once per record of what is left; data is only
//! cloned when a route takes part of a request (a request that is routed whole, the common
//! case of one tenant per sender, is moved, not copied). Profiles requests that are split
//! carry the whole dictionary in each part, so every part still resolves.
//!
//! **Errors and refusals**: a condition that fails under `propagate` rejects the request
//! (nothing is sent); under `ignore` (logged) and `silent` the record is taken as not
//! matching, so it falls to later routes and the default, as upstream. When some of the
//! pipelines a request was split to refuse their part, the others keep theirs and the refused
//! items are counted (`otelprof_connector_routing_refused_items`); only when every part was
//! refused is the refusal passed back, so a retry duplicates nothing.
//!
//! Not yet: the `request` context (routing on the receiver's request headers), which needs
//! the OTLP receiver to pass request metadata down the pipeline.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use otelprof_ottl::{context::Context, lexer, parser, Compiler, Conditions, ErrorMode, Registry, RunError};
use serde::Deserialize;

use crate::{
    component::{BuildConnector, ComponentError, ComponentId, Connector, ConnectorFactory, Host, Routes},
    config::{deserialize_at, ConfigError, PipelineId},
    consumer::{ConsumeError, Consumer, Fanout},
    processor::{
        ottl::{
            filter::Filter,
            group::{self, Ctx, Group, GroupSpec, Source, Visitor},
        },
        pdata::for_each_resource,
    },
    signal::{Data, Signal},
    telemetry::{add, Value},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    table: Vec<RouteConfig>,
    #[serde(default)]
    default_pipelines: Vec<String>,
    #[serde(default)]
    error_mode: Option<String>,
    /// Removed upstream in v0.120; refused with a pointer instead of "unknown field".
    #[serde(default)]
    match_once: Option<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteConfig {
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    statement: Option<String>,
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    pipelines: Vec<String>,
}

/// One route, checked: its context, its condition's text (from `condition`, or the `where`
/// clause of a `statement`, spaced so positions stay those of the statement) and where it goes.
struct Route {
    ctx: Ctx,
    condition: Source,
    pipelines: Vec<PipelineId>,
}

pub struct RoutingFactory;

impl ConnectorFactory for RoutingFactory {
    fn kind(&self) -> &'static str {
        "routing"
    }

    fn pairs(&self) -> &'static [(Signal, Signal)] {
        &[
            (Signal::Traces, Signal::Traces),
            (Signal::Metrics, Signal::Metrics),
            (Signal::Logs, Signal::Logs),
            (Signal::Profiles, Signal::Profiles),
        ]
    }

    fn create(
        &self,
        _id: &ComponentId,
        config: serde_yaml::Value,
        path: &str,
    ) -> Result<Box<dyn BuildConnector>, ConfigError> {
        let config: Config = deserialize_at(path, config)?;
        if config.match_once.is_some() {
            return Err(ConfigError::new(
                format!("{path}.match_once"),
                "was removed (as upstream did in v0.120): each record goes to the first route that matches; \
                 use several routing connectors for independent tables",
            ));
        }
        let error_mode =
            group::error_mode(config.error_mode.as_deref(), &format!("{path}.error_mode"), ErrorMode::Propagate)?;
        if config.table.is_empty() {
            return Err(ConfigError::new(format!("{path}.table"), "required: at least one route"));
        }
        let mut routes = Vec::with_capacity(config.table.len());
        for (i, r) in config.table.into_iter().enumerate() {
            routes.push(route(r, &format!("{path}.table[{i}]"))?);
        }
        let default = pipeline_ids(config.default_pipelines, &format!("{path}.default_pipelines"))?;
        Ok(Box::new(Build { routes, default, error_mode, path: path.to_string() }))
    }
}

fn route(r: RouteConfig, at: &str) -> Result<Route, ConfigError> {
    let ctx = match r.context.as_deref() {
        None => Ctx::Resource,
        Some("request") => {
            return Err(ConfigError::new(
                format!("{at}.context"),
                "the `request` context (request headers) is not supported yet: route on resource attributes",
            ))
        }
        Some(name) => match Ctx::parse(name) {
            Some(Ctx::SpanEvent) | None => {
                return Err(ConfigError::new(
                    format!("{at}.context"),
                    format!(
                        "{name:?} is not a routing context (resource, scope, span, metric, datapoint, log, profile)"
                    ),
                ))
            }
            Some(c) => c,
        },
    };
    let condition = match (r.statement, r.condition) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(at, "give either `statement` or `condition`, not both"));
        }
        (None, None) => return Err(ConfigError::new(at, "a route needs a `statement` or a `condition`")),
        (None, Some(text)) => Source { text, path: format!("{at}.condition") },
        (Some(text), None) => {
            let path = format!("{at}.statement");
            let text = where_clause(&text).map_err(|e| ConfigError::new(&path, e.to_string()))?;
            Source { text, path }
        }
    };
    if r.pipelines.is_empty() {
        return Err(ConfigError::new(format!("{at}.pipelines"), "required: at least one pipeline"));
    }
    Ok(Route { ctx, condition, pipelines: pipeline_ids(r.pipelines, &format!("{at}.pipelines"))? })
}

/// The condition of `route() where …`, with everything before it blanked (newlines kept) so
/// compile errors point into the statement as written; `true` for a bare `route()`.
fn where_clause(statement: &str) -> Result<String, otelprof_ottl::CompileError> {
    let ast = parser::parse_statement(statement)?;
    if ast.editor.name != "route" || !ast.editor.args.is_empty() || !ast.editor.keys.is_empty() {
        return Err(otelprof_ottl::CompileError::new(
            statement,
            ast.editor.at,
            format!("a routing statement is `route() where <condition>`, not {:?}", ast.editor.name),
        ));
    }
    if ast.condition.is_none() {
        return Ok("true".to_string());
    }
    let mut depth = 0i32;
    let mut at = None;
    for t in lexer::lex(statement)? {
        match t.tok {
            lexer::Tok::LParen | lexer::Tok::LBracket | lexer::Tok::LBrace => depth += 1,
            lexer::Tok::RParen | lexer::Tok::RBracket | lexer::Tok::RBrace => depth -= 1,
            lexer::Tok::Ident(ref w) if depth == 0 && w == "where" => {
                at = Some(t.at + w.len());
                break;
            }
            _ => {}
        }
    }
    let Some(at) = at else { return Ok("true".to_string()) };
    let blank: String = statement[..at].chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect();
    Ok(blank + &statement[at..])
}

fn pipeline_ids(list: Vec<String>, at: &str) -> Result<Vec<PipelineId>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| PipelineId::parse(s).map_err(|m| ConfigError::new(format!("{at}[{i}]"), m)))
        .collect()
}

struct Build {
    routes: Vec<Route>,
    default: Vec<PipelineId>,
    error_mode: ErrorMode,
    /// `connectors.routing`
    path: String,
}

impl Build {
    /// The routes' conditions compiled for `signal`; errors name the route's key.
    fn compile(&self, signal: Signal) -> Result<Vec<Group<Filter>>, ConfigError> {
        let registry = Registry::standard();
        let compiler = Compiler::new(&registry);
        self.routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if !Ctx::of(signal).contains(&r.ctx) {
                    return Err(ConfigError::new(
                        format!("{}.table[{i}].context", self.path),
                        format!("{:?} is not a context of {signal}", r.ctx.name()),
                    ));
                }
                let spec = GroupSpec {
                    ctx: r.ctx,
                    conditions: vec![Source { text: r.condition.text.clone(), path: r.condition.path.clone() }],
                    statements: Vec::new(),
                    error_mode: self.error_mode,
                };
                Group::compile(&spec, &compiler)
            })
            .collect()
    }

    /// The pipelines of `signal` named by route `i` (or by `default_pipelines` when `None`),
    /// with the key that names each.
    fn named(&self, i: Option<usize>, signal: Signal) -> impl Iterator<Item = (String, &PipelineId)> {
        let (key, list) = match i {
            Some(i) => (format!("{}.table[{i}].pipelines", self.path), &self.routes[i].pipelines),
            None => (format!("{}.default_pipelines", self.path), &self.default),
        };
        list.iter().enumerate().filter(move |(_, p)| p.signal() == signal).map(move |(j, p)| (format!("{key}[{j}]"), p))
    }
}

impl BuildConnector for Build {
    fn check(&self, from: Signal, to: Signal, receiving: &[PipelineId], _path: &str) -> Result<(), ConfigError> {
        self.compile(from)?;
        for i in (0..self.routes.len()).map(Some).chain([None]) {
            for (key, p) in self.named(i, to) {
                if !receiving.contains(p) {
                    return Err(ConfigError::new(
                        key,
                        format!(
                            "pipeline `{p}` does not list this connector under its receivers (those that do: {})",
                            receiving.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn build(
        &self,
        from: Signal,
        to: Signal,
        routes: Routes,
        host: &Host,
    ) -> Result<Arc<dyn Connector>, ComponentError> {
        let id = self.path.strip_prefix("connectors.").unwrap_or(&self.path).to_string();
        let groups = self.compile(from).map_err(|e| ComponentError::new(&self.path, e))?;
        let counter = |name: &str, help: &'static str, pipeline: &str| {
            host.telemetry.counter(name, help, &[("connector", &id), ("pipeline", pipeline)])
        };
        // A target per distinct pipeline list, with its counters.
        let target = |i: Option<usize>| -> Result<Option<Target>, ComponentError> {
            let ids: Vec<&PipelineId> = self.named(i, to).map(|(_, p)| p).collect();
            if ids.is_empty() {
                return Ok(None);
            }
            let mut consumers = Vec::new();
            for p in &ids {
                let c = routes.get(*p).ok_or_else(|| {
                    ComponentError::new(&self.path, format!("pipeline `{p}` does not receive from this connector"))
                })?;
                consumers.push(c.clone());
            }
            let names = ids.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",");
            Ok(Some(Target {
                next: Fanout::build(consumers),
                routed: counter(
                    "otelprof_connector_routing_routed_items",
                    "Items (spans, data points, log records, profiles) the routing connector handed to pipelines.",
                    &names,
                ),
                refused: counter(
                    "otelprof_connector_routing_refused_items",
                    "Items the routing connector's pipelines refused (counted as dropped when others took theirs).",
                    &names,
                ),
            }))
        };
        let mut table = Vec::with_capacity(groups.len());
        for (i, group) in groups.into_iter().enumerate() {
            table.push((group, target(Some(i))?));
        }
        Ok(Arc::new(Routing {
            id: id.clone(),
            signal: from,
            table,
            default: target(None)?,
            unrouted: counter(
                "otelprof_connector_routing_unrouted_items",
                "Items no route took while there are no default pipelines: dropped.",
                "",
            ),
            rejected: counter(
                "otelprof_connector_routing_rejected_items",
                "Items of requests rejected because a condition failed under error_mode: propagate.",
                "",
            ),
            last_warning: AtomicU64::new(0),
        }))
    }
}

/// Where a route sends: its pipelines' first consumers behind one fan-out.
struct Target {
    next: Arc<dyn Consumer>,
    routed: Value,
    refused: Value,
}

struct Routing {
    id: String,
    signal: Signal,
    /// The routes in table order; `None` when a route names no pipeline of this signal (what
    /// it takes is dropped, as upstream's router has no consumer for it).
    table: Vec<(Group<Filter>, Option<Target>)>,
    default: Option<Target>,
    unrouted: Value,
    rejected: Value,
    /// Unix seconds of the last refusal warning: at most one a minute.
    last_warning: AtomicU64,
}

/// Pass 1: evaluates a route's condition on every record, in walk order, keeping all.
struct Decide<'a> {
    id: &'a str,
    matched: Vec<bool>,
}

impl Visitor<Filter> for Decide<'_> {
    fn visit<C: Context>(&mut self, c: &Conditions<C>, ctx: &mut C) -> Result<bool, RunError> {
        let id = self.id;
        let m = c.matches_reporting(ctx, &mut |e| tracing::warn!(connector = id, "{e}"))?;
        self.matched.push(m);
        Ok(true)
    }
}

/// Pass 2: keeps the records pass 1 found matching (`keep == true`) or not matching.
struct Replay<'a> {
    matched: &'a [bool],
    next: usize,
    keep: bool,
}

impl Visitor<Filter> for Replay<'_> {
    fn visit<C: Context>(&mut self, _: &Conditions<C>, _: &mut C) -> Result<bool, RunError> {
        let m = self.matched.get(self.next).copied().unwrap_or(false);
        self.next += 1;
        Ok(m == self.keep)
    }
}

impl Routing {
    /// Splits `rest` into what `group` matches (returned) and what it does not (left in `rest`).
    fn take_matching(&self, group: &Group<Filter>, rest: &mut Data) -> Result<Option<Data>, RunError> {
        let mut decide = Decide { id: &self.id, matched: Vec::new() };
        group.run(rest, &mut decide)?;
        let matched = decide.matched;
        if !matched.contains(&true) {
            return Ok(None);
        }
        if matched.iter().all(|m| *m) {
            return Ok(Some(std::mem::replace(rest, Data::empty(self.signal))));
        }
        let mut taken = rest.clone();
        group.run(&mut taken, &mut Replay { matched: &matched, next: 0, keep: true })?;
        group.run(rest, &mut Replay { matched: &matched, next: 0, keep: false })?;
        group::prune(&mut taken);
        group::prune(rest);
        Ok(Some(taken))
    }

    fn warn_refused(&self, items: u64, e: &ConsumeError) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let last = self.last_warning.load(Ordering::Relaxed);
        if now >= last + 60
            && self.last_warning.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(connector = %self.id, "{items} items dropped: their pipelines refused them ({e}); the other routes kept theirs");
        }
    }
}

impl Consumer for Routing {
    fn consume(&self, mut data: Data) -> Result<(), ConsumeError> {
        let total = data.items();
        if let Data::Profiles(_) = data {
            for_each_resource(&mut data, |_| {});
        }
        // Decide everything first: a rejection sends nothing.
        let mut parts: Vec<(&Target, Data)> = Vec::new();
        let mut dropped = 0;
        for (group, target) in &self.table {
            if data.is_empty() {
                break;
            }
            match self.take_matching(group, &mut data) {
                Ok(None) => {}
                Ok(Some(part)) => match target {
                    Some(t) => parts.push((t, part)),
                    None => dropped += part.items(),
                },
                Err(e) => {
                    add(&self.rejected, total);
                    return Err(ConsumeError::Rejected(format!("{}: {e}", self.id)));
                }
            }
        }
        if !data.is_empty() {
            match &self.default {
                Some(t) => parts.push((t, data)),
                None => dropped += data.items(),
            }
        }
        add(&self.unrouted, dropped);
        let mut first_error = None;
        let mut refused = 0;
        let sent = parts.len();
        for (target, part) in parts {
            let items = part.items();
            match target.next.consume(part) {
                Ok(()) => add(&target.routed, items),
                Err(e) => {
                    add(&target.refused, items);
                    refused += 1;
                    first_error.get_or_insert((items, e));
                }
            }
        }
        match first_error {
            Some((_, e)) if refused == sent => Err(e),
            Some((items, e)) => {
                self.warn_refused(items, &e);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Connector for Routing {}

#[cfg(test)]
mod tests;
