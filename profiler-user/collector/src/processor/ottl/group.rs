//! One config entry → one compiled [`Group`] of one OTTL context, and running a group over a
//! request.
//!
//! A config entry is a flat string (its context inferred from its paths) or an object
//! `{context, conditions, statements | conditions, error_mode}`. Inference follows upstream:
//! every path names its context (`span.name`, `resource.attributes["x"]`), and the statement
//! runs in the lowest context any of its paths needs — `set(span.attributes["env"],
//! resource.attributes["env"])` runs once per span, with the span's resource reachable. `cache`
//! paths do not count. A path without a context prefix cannot be placed and is an error in a
//! flat entry (inside a group with a `context` it means that context's field, as before).
//!
//! Functions count too, as upstream: an editor bound to contexts
//! ([`otelprof_ottl::function_contexts`], the metric functions) puts the statement in the
//! first of them that can read every path (`convert_sum_to_gauge()` alone runs per metric);
//! when none can (`convert_sum_to_gauge() where datapoint.attributes["x"] == "y"`), or when a
//! group's `context` is not one of them, the config is refused at the function. A literal
//! outside a function's fixed choices (`convert_gauge_to_sum("weekly", …)`) is refused at load
//! too, where upstream's parser refuses it.

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    profiles::v1development::ExportProfilesServiceRequest, trace::v1::ExportTraceServiceRequest,
};
use otelprof_ottl::{
    ast::{BoolExpr, Call, Expr, Key},
    context::{
        Context, DataPointContext, LogContext, MetricContext, ProfileContext, ResourceContext, ScopeContext,
        SpanContext, SpanEventContext,
    },
    parser, Compiler, ErrorMode, RunError,
};
use serde::Deserialize;

use super::walk;
use crate::{config::ConfigError, signal::Data, signal::Signal};

/// The OTTL contexts, as a config's `context:` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ctx {
    Resource,
    Scope,
    Span,
    SpanEvent,
    Metric,
    DataPoint,
    Log,
    Profile,
}

impl Ctx {
    /// A context name or path prefix (`scope` and `instrumentation_scope` are the same).
    pub fn parse(name: &str) -> Option<Ctx> {
        Some(match name {
            "resource" => Ctx::Resource,
            "scope" | "instrumentation_scope" => Ctx::Scope,
            "span" => Ctx::Span,
            "spanevent" => Ctx::SpanEvent,
            "metric" => Ctx::Metric,
            "datapoint" => Ctx::DataPoint,
            "log" => Ctx::Log,
            "profile" => Ctx::Profile,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Ctx::Resource => "resource",
            Ctx::Scope => "scope",
            Ctx::Span => "span",
            Ctx::SpanEvent => "spanevent",
            Ctx::Metric => "metric",
            Ctx::DataPoint => "datapoint",
            Ctx::Log => "log",
            Ctx::Profile => "profile",
        }
    }

    /// 0 for resources, 1 for scopes, 2 for the items under a scope, 3 for span events and
    /// data points.
    pub fn depth(self) -> u8 {
        match self {
            Ctx::Resource => 0,
            Ctx::Scope => 1,
            Ctx::Span | Ctx::Metric | Ctx::Log | Ctx::Profile => 2,
            Ctx::SpanEvent | Ctx::DataPoint => 3,
        }
    }

    /// The contexts of a signal, highest first.
    pub fn of(signal: Signal) -> &'static [Ctx] {
        match signal {
            Signal::Traces => &[Ctx::Resource, Ctx::Scope, Ctx::Span, Ctx::SpanEvent],
            Signal::Metrics => &[Ctx::Resource, Ctx::Scope, Ctx::Metric, Ctx::DataPoint],
            Signal::Logs => &[Ctx::Resource, Ctx::Scope, Ctx::Log],
            Signal::Profiles => &[Ctx::Resource, Ctx::Scope, Ctx::Profile],
        }
    }
}

/// `resource, scope, span, spanevent`.
fn names(signal: Signal) -> String {
    Ctx::of(signal).iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
}

/// `trace`, `metric`, `log`, `profile`: as in `trace_statements`.
pub fn singular(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "trace",
        Signal::Metrics => "metric",
        Signal::Logs => "log",
        Signal::Profiles => "profile",
    }
}

/// One statement or condition from the config, with its key path.
pub struct Source {
    pub text: String,
    pub path: String,
}

/// A config entry, its context settled.
pub struct GroupSpec {
    pub ctx: Ctx,
    pub conditions: Vec<Source>,
    pub statements: Vec<Source>,
    pub error_mode: ErrorMode,
}

/// The object form of an entry; `statements` for transform, not for filter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub conditions: Vec<String>,
    #[serde(default)]
    pub statements: Option<Vec<String>>,
    #[serde(default)]
    pub error_mode: Option<String>,
}

/// `error_mode` at `path`; `None` is `default`.
pub fn error_mode(value: Option<&str>, path: &str, default: ErrorMode) -> Result<ErrorMode, ConfigError> {
    match value {
        None => Ok(default),
        Some(s) => s.parse().map_err(|e: String| ConfigError::new(path, e)),
    }
}

/// What is parsed: a statement (transform) or a condition (filter).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Statement,
    Condition,
}

/// Reads the list at `path` (`processors.transform.trace_statements`): each entry a string or
/// a group object.
pub fn entries(
    list: Vec<serde_yaml::Value>,
    path: &str,
    signal: Signal,
    kind: Kind,
    default_mode: ErrorMode,
) -> Result<Vec<GroupSpec>, ConfigError> {
    let mut out = Vec::with_capacity(list.len());
    for (i, v) in list.into_iter().enumerate() {
        let at = format!("{path}[{i}]");
        let spec = match v {
            serde_yaml::Value::String(text) => {
                let src = Source { text, path: at };
                let ctx = infer([(&src, kind)], signal)?;
                let (conditions, statements) = match kind {
                    Kind::Statement => (vec![], vec![src]),
                    Kind::Condition => (vec![src], vec![]),
                };
                GroupSpec { ctx, conditions, statements, error_mode: default_mode }
            }
            v @ serde_yaml::Value::Mapping(_) => {
                group(crate::config::deserialize_at(&at, v)?, &at, signal, kind, default_mode)?
            }
            _ => {
                let what = if kind == Kind::Statement { "a statement" } else { "a condition" };
                return Err(ConfigError::new(at, format!("expected {what} (a string) or a group (context, …)")));
            }
        };
        out.push(spec);
    }
    Ok(out)
}

fn group(
    g: GroupConfig,
    at: &str,
    signal: Signal,
    kind: Kind,
    default_mode: ErrorMode,
) -> Result<GroupSpec, ConfigError> {
    let error_mode = error_mode(g.error_mode.as_deref(), &format!("{at}.error_mode"), default_mode)?;
    let sources = |list: Vec<String>, key: &str| -> Vec<Source> {
        list.into_iter().enumerate().map(|(j, text)| Source { text, path: format!("{at}.{key}[{j}]") }).collect()
    };
    let conditions = sources(g.conditions, "conditions");
    let statements = match (kind, g.statements) {
        (Kind::Statement, Some(s)) if !s.is_empty() => sources(s, "statements"),
        (Kind::Statement, _) => {
            return Err(ConfigError::new(format!("{at}.statements"), "required: at least one statement"))
        }
        (Kind::Condition, Some(_)) => {
            return Err(ConfigError::new(format!("{at}.statements"), "a filter group has conditions, not statements"))
        }
        (Kind::Condition, None) => Vec::new(),
    };
    if kind == Kind::Condition && conditions.is_empty() {
        return Err(ConfigError::new(format!("{at}.conditions"), "required: at least one condition"));
    }
    let ctx = match g.context {
        Some(name) => match Ctx::parse(&name).filter(|c| Ctx::of(signal).contains(c)) {
            Some(c) => {
                for src in &statements {
                    let ast =
                        parser::parse_statement(&src.text).map_err(|e| ConfigError::new(&src.path, e.to_string()))?;
                    if let Some(bound) = function_bound(src, &ast.editor, signal)? {
                        if !bound.contexts.contains(&c) {
                            return Err(bound.refuse(format!(
                                "{:?} runs in the {} context, not in {}",
                                bound.name,
                                bound.contexts.iter().map(|c| c.name()).collect::<Vec<_>>().join(" or "),
                                c.name()
                            )));
                        }
                    }
                }
                c
            }
            None => {
                return Err(ConfigError::new(
                    format!("{at}.context"),
                    format!("{name:?} is not a context of {} {} ({})", singular(signal), plural(kind), names(signal)),
                ))
            }
        },
        None => infer(
            statements.iter().map(|s| (s, Kind::Statement)).chain(conditions.iter().map(|s| (s, Kind::Condition))),
            signal,
        )?,
    };
    Ok(GroupSpec { ctx, conditions, statements, error_mode })
}

fn plural(kind: Kind) -> &'static str {
    match kind {
        Kind::Statement => "statements",
        Kind::Condition => "conditions",
    }
}

impl Ctx {
    /// The lower of two contexts.
    fn max_depth(self, other: Ctx) -> Ctx {
        if other.depth() > self.depth() {
            other
        } else {
            self
        }
    }
}

/// A statement's editor that runs in some contexts only, and where it is.
struct Bound<'a> {
    /// The contexts it runs in, preferred first (those of the signal).
    contexts: Vec<Ctx>,
    name: String,
    src: &'a Source,
    at: usize,
}

impl Bound<'_> {
    /// A config error at the function.
    fn refuse(&self, msg: String) -> ConfigError {
        ConfigError::new(&self.src.path, otelprof_ottl::CompileError::new(&self.src.text, self.at, msg).to_string())
    }
}

/// Checks the fixed-choice literals of the editor `call` and returns the contexts it is bound
/// to, if it is.
fn function_bound<'a>(src: &'a Source, call: &Call, signal: Signal) -> Result<Option<Bound<'a>>, ConfigError> {
    let here = |at: usize, msg: String| {
        ConfigError::new(&src.path, otelprof_ottl::CompileError::new(&src.text, at, msg).to_string())
    };
    for choice in otelprof_ottl::function_choices(&call.name) {
        let arg = call.args.iter().enumerate().find(|(i, a)| match &a.name {
            Some(n) => n == choice.param,
            None => *i == choice.index,
        });
        if let Some((_, a)) = arg {
            if let Expr::Literal(otelprof_ottl::Value::String(v), at) = &a.value {
                if !choice.values.contains(&v.as_str()) {
                    return Err(here(
                        *at,
                        format!("{:?}: {v:?} is not one of {}", call.name, choice.values.join(", ")),
                    ));
                }
            }
        }
    }
    let Some(names) = otelprof_ottl::function_contexts(&call.name) else { return Ok(None) };
    let contexts: Vec<Ctx> =
        names.iter().filter_map(|n| Ctx::parse(n)).filter(|c| Ctx::of(signal).contains(c)).collect();
    if contexts.is_empty() {
        return Err(here(
            call.at,
            format!(
                "{:?} runs in the {} context: it cannot be used in {} statements",
                call.name,
                names.join(" or "),
                singular(signal)
            ),
        ));
    }
    Ok(Some(Bound { contexts, name: call.name.clone(), src, at: call.at }))
}

/// The lowest context the paths of `sources` need, or the first context their functions are
/// bound to that can read those paths. Errors carry the source's key path and the position in
/// it.
pub fn infer<'a>(sources: impl IntoIterator<Item = (&'a Source, Kind)>, signal: Signal) -> Result<Ctx, ConfigError> {
    let mut deepest: Option<Ctx> = None;
    let mut bounds: Vec<Bound<'a>> = Vec::new();
    let mut first_path = None;
    for (src, kind) in sources {
        first_path.get_or_insert_with(|| src.path.clone());
        let err = |e: otelprof_ottl::CompileError| ConfigError::new(&src.path, e.to_string());
        let mut paths = Vec::new();
        match kind {
            Kind::Statement => {
                let ast = parser::parse_statement(&src.text).map_err(err)?;
                bounds.extend(function_bound(src, &ast.editor, signal)?);
                call_paths(&ast.editor, &mut paths);
                if let Some(c) = &ast.condition {
                    bool_paths(c, &mut paths);
                }
            }
            Kind::Condition => bool_paths(&parser::parse_condition(&src.text).map_err(err)?, &mut paths),
        }
        for (first, at) in paths {
            if first == "cache" {
                continue;
            }
            let here = |msg: String| err(otelprof_ottl::CompileError::new(&src.text, at, msg));
            let ctx = match Ctx::parse(&first) {
                Some(c) if Ctx::of(signal).contains(&c) => c,
                Some(c) => {
                    return Err(here(format!(
                        "{:?} paths cannot be used in {} {} (contexts: {})",
                        c.name(),
                        singular(signal),
                        plural(kind),
                        names(signal)
                    )))
                }
                None => {
                    return Err(here(format!(
                        "cannot infer the context of path {first:?}: prefix it with its context ({}) or put it in a group with a `context`",
                        names(signal)
                    )))
                }
            };
            deepest = Some(deepest.map_or(ctx, |d| d.max_depth(ctx)));
        }
    }
    if let Some(first) = bounds.first() {
        // The first context every bound function runs in that reads the deepest path.
        let fits = |c: &Ctx| deepest.is_none_or(|d| c.depth() >= d.depth());
        return match first.contexts.iter().copied().find(|c| fits(c) && bounds.iter().all(|b| b.contexts.contains(c))) {
            Some(c) => Ok(c),
            None => {
                let b = bounds.iter().find(|b| !b.contexts.iter().any(fits)).unwrap_or(first);
                let wanted = b.contexts.iter().map(|c| c.name()).collect::<Vec<_>>().join(" or ");
                let need = deepest.map_or("another", Ctx::name);
                Err(b.refuse(format!(
                    "{:?} runs in the {wanted} context, but the paths here need the {need} context: put them in separate groups",
                    b.name
                )))
            }
        };
    }
    deepest.ok_or_else(|| {
        ConfigError::new(
            first_path.unwrap_or_default(),
            format!(
                "cannot infer the context: no path names one ({}); put it in a group with a `context`",
                names(signal)
            ),
        )
    })
}

fn call_paths(c: &Call, out: &mut Vec<(String, usize)>) {
    for a in &c.args {
        expr_paths(&a.value, out);
    }
    keys_paths(&c.keys, out);
}

fn keys_paths(keys: &[Key], out: &mut Vec<(String, usize)>) {
    for k in keys {
        if let Key::Expr(e) = k {
            expr_paths(e, out);
        }
    }
}

fn expr_paths(e: &Expr, out: &mut Vec<(String, usize)>) {
    match e {
        Expr::Literal(..) | Expr::Enum(..) => {}
        Expr::Path(p) => {
            if let Some(first) = p.fields.first() {
                out.push((first.clone(), p.at));
            }
            keys_paths(&p.keys, out);
        }
        Expr::Call(c) => call_paths(c, out),
        Expr::List(items, _) => items.iter().for_each(|x| expr_paths(x, out)),
        Expr::Map(items, _) => items.iter().for_each(|(_, x)| expr_paths(x, out)),
        Expr::Math(l, _, r, _) => {
            expr_paths(l, out);
            expr_paths(r, out);
        }
    }
}

fn bool_paths(b: &BoolExpr, out: &mut Vec<(String, usize)>) {
    match b {
        BoolExpr::Or(xs) | BoolExpr::And(xs) => xs.iter().for_each(|x| bool_paths(x, out)),
        BoolExpr::Not(x) => bool_paths(x, out),
        BoolExpr::Compare { left, right, .. } => {
            expr_paths(left, out);
            expr_paths(right, out);
        }
        BoolExpr::Term(e) => expr_paths(e, out),
    }
}

/// What a processor compiles a [`GroupSpec`] into, for each context `C`.
pub trait Compiled {
    type Of<C: Context>: Send + Sync;
    fn compile<C: Context>(spec: &GroupSpec, compiler: &Compiler) -> Result<Self::Of<C>, ConfigError>;
}

/// Compiles the conditions of `spec` for context `C`.
pub fn conditions<C: Context>(
    spec: &GroupSpec,
    compiler: &Compiler,
) -> Result<Vec<otelprof_ottl::Condition<C>>, ConfigError> {
    spec.conditions
        .iter()
        .map(|s| compiler.condition::<C>(&s.text).map_err(|e| ConfigError::new(&s.path, e.to_string())))
        .collect()
}

/// Compiles the statements of `spec` for context `C`.
pub fn statements<C: Context>(
    spec: &GroupSpec,
    compiler: &Compiler,
) -> Result<Vec<otelprof_ottl::Statement<C>>, ConfigError> {
    spec.statements
        .iter()
        .map(|s| compiler.statement::<C>(&s.text).map_err(|e| ConfigError::new(&s.path, e.to_string())))
        .collect()
}

/// A compiled group of one context.
pub enum Group<K: Compiled> {
    Resource(K::Of<ResourceContext>),
    Scope(K::Of<ScopeContext>),
    Span(K::Of<SpanContext>),
    SpanEvent(K::Of<SpanEventContext>),
    Metric(K::Of<MetricContext>),
    DataPoint(K::Of<DataPointContext>),
    Log(K::Of<LogContext>),
    Profile(K::Of<ProfileContext>),
}

/// What is done to each record a group visits: returns whether the record is kept.
pub trait Visitor<K: Compiled> {
    fn visit<C: Context>(&mut self, compiled: &K::Of<C>, ctx: &mut C) -> Result<bool, RunError>;
}

impl<K: Compiled> Group<K> {
    pub fn compile(spec: &GroupSpec, compiler: &Compiler) -> Result<Self, ConfigError> {
        Ok(match spec.ctx {
            Ctx::Resource => Group::Resource(K::compile(spec, compiler)?),
            Ctx::Scope => Group::Scope(K::compile(spec, compiler)?),
            Ctx::Span => Group::Span(K::compile(spec, compiler)?),
            Ctx::SpanEvent => Group::SpanEvent(K::compile(spec, compiler)?),
            Ctx::Metric => Group::Metric(K::compile(spec, compiler)?),
            Ctx::DataPoint => Group::DataPoint(K::compile(spec, compiler)?),
            Ctx::Log => Group::Log(K::compile(spec, compiler)?),
            Ctx::Profile => Group::Profile(K::compile(spec, compiler)?),
        })
    }

    pub fn ctx(&self) -> Ctx {
        match self {
            Group::Resource(_) => Ctx::Resource,
            Group::Scope(_) => Ctx::Scope,
            Group::Span(_) => Ctx::Span,
            Group::SpanEvent(_) => Ctx::SpanEvent,
            Group::Metric(_) => Ctx::Metric,
            Group::DataPoint(_) => Ctx::DataPoint,
            Group::Log(_) => Ctx::Log,
            Group::Profile(_) => Ctx::Profile,
        }
    }

    /// Visits every record of the group's context in `data`, dropping those the visitor does
    /// not keep. A group of a context the signal does not have visits nothing (the config
    /// refuses those).
    pub fn run(&self, data: &mut Data, v: &mut impl Visitor<K>) -> Result<(), RunError> {
        match (self, data) {
            (Group::Resource(g), data) => walk::resources(data, &mut |c| v.visit(g, c)),
            (Group::Scope(g), data) => walk::scopes(data, &mut |c| v.visit(g, c)),
            (Group::Span(g), Data::Traces(r)) => walk::spans(r, &mut |c| v.visit(g, c)),
            (Group::SpanEvent(g), Data::Traces(r)) => walk::span_events(r, &mut |c| v.visit(g, c)),
            (Group::Metric(g), Data::Metrics(r)) => walk::metrics(r, &mut |c| v.visit(g, c)),
            (Group::DataPoint(g), Data::Metrics(r)) => walk::data_points(r, &mut |c| v.visit(g, c)),
            (Group::Log(g), Data::Logs(r)) => walk::logs(r, &mut |c| v.visit(g, c)),
            (Group::Profile(g), Data::Profiles(r)) => walk::profiles(r, &mut |c| v.visit(g, c)),
            _ => Ok(()),
        }
    }
}

/// Removes scopes without items and resources without scopes (the filter processor's rule).
pub fn prune(data: &mut Data) {
    match data {
        Data::Traces(ExportTraceServiceRequest { resource_spans: l }) => walk::prune(l),
        Data::Metrics(ExportMetricsServiceRequest { resource_metrics: l }) => walk::prune(l),
        Data::Logs(ExportLogsServiceRequest { resource_logs: l }) => walk::prune(l),
        Data::Profiles(ExportProfilesServiceRequest { resource_profiles: l, .. }) => walk::prune(l),
    }
}
