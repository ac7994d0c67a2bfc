//! The `span` and `spanevent` contexts.
//!
//! `span.events` and `span.links` read as lists of maps (keys: the proto's field names; IDs
//! as bytes) and are read-only: events are edited one by one in the `spanevent` context.
//! `span.trace_state` is the W3C `tracestate` string; keyed, `span.trace_state["k"]` reads
//! and writes one entry (a new key is appended, `nil` removes it).

use opentelemetry_proto::tonic::{
    common::v1::InstrumentationScope,
    resource::v1::Resource,
    trace::v1::{
        span::{Event, Link},
        Span, Status,
    },
};

use super::{cache_fns, fields::fld, parent_field, parents, set_i32, set_string, Context, Field};
use crate::{
    error::EvalError,
    value::{type_error, Map, Type, Value},
};

/// Statements over each span.
#[derive(Clone, Debug, Default)]
pub struct SpanContext {
    /// The span's resource.
    pub resource: Resource,
    /// The span's instrumentation scope.
    pub scope: InstrumentationScope,
    /// The span.
    pub span: Span,
    /// The per-record cache.
    pub cache: Map,
}

/// Statements over each span event, with the span reachable as `span.*`.
#[derive(Clone, Debug, Default)]
pub struct SpanEventContext {
    /// The resource.
    pub resource: Resource,
    /// The instrumentation scope.
    pub scope: InstrumentationScope,
    /// The event's span (its `events` list has a placeholder where this event was).
    pub span: Span,
    /// The event.
    pub event: Event,
    /// The per-record cache.
    pub cache: Map,
}

/// Contexts that carry a span.
pub trait HasSpan {
    /// The span.
    fn span(&self) -> &Span;
    /// The span, mutable.
    fn span_mut(&mut self) -> &mut Span;
}

impl HasSpan for SpanContext {
    fn span(&self) -> &Span {
        &self.span
    }
    fn span_mut(&mut self) -> &mut Span {
        &mut self.span
    }
}

impl HasSpan for SpanEventContext {
    fn span(&self) -> &Span {
        &self.span
    }
    fn span_mut(&mut self) -> &mut Span {
        &mut self.span
    }
}

parents!(SpanContext);
parents!(SpanEventContext);

fn status_mut(s: &mut Span) -> &mut Status {
    s.status.get_or_insert_with(Status::default)
}

/// The entries of a W3C `tracestate` (`k1=v1,k2=v2`, blanks around entries allowed).
/// Entries without `=` are skipped.
fn trace_state(ts: &str) -> Map {
    let mut m = Map::new();
    for entry in ts.split(',').map(|e| e.trim_matches([' ', '\t'])) {
        if let Some((k, v)) = entry.split_once('=') {
            m.insert(k, Value::String(v.to_owned()));
        }
    }
    m
}

/// Writes the entries back as a `tracestate` string: values must be strings; `nil` drops the
/// entry.
fn set_trace_state(dst: &mut String, v: Value) -> Result<(), EvalError> {
    let Value::Map(m) = v else { return Err(type_error(Type::Map, &v)) };
    let mut out = Vec::with_capacity(m.len());
    for (k, v) in m.iter() {
        match v {
            Value::Nil => {}
            Value::String(s) => out.push(format!("{k}={s}")),
            other => return Err(type_error(Type::String, other)),
        }
    }
    *dst = out.join(",");
    Ok(())
}

fn events(list: &[Event]) -> Value {
    Value::List(
        list.iter()
            .map(|e| {
                let mut m = Map::new();
                m.insert("name", Value::String(e.name.clone()));
                m.insert("time_unix_nano", Value::Int(e.time_unix_nano as i64));
                m.insert("attributes", Value::Map(Map::from_key_values(&e.attributes)));
                m.insert("dropped_attributes_count", Value::Int(e.dropped_attributes_count.into()));
                Value::Map(m)
            })
            .collect(),
    )
}

fn links(list: &[Link]) -> Value {
    Value::List(
        list.iter()
            .map(|l| {
                let mut m = Map::new();
                m.insert("trace_id", Value::Bytes(l.trace_id.clone()));
                m.insert("span_id", Value::Bytes(l.span_id.clone()));
                m.insert("trace_state", Value::String(l.trace_state.clone()));
                m.insert("attributes", Value::Map(Map::from_key_values(&l.attributes)));
                m.insert("dropped_attributes_count", Value::Int(l.dropped_attributes_count.into()));
                m.insert("flags", Value::Int(l.flags.into()));
                Value::Map(m)
            })
            .collect(),
    )
}

/// `span.*` paths (the part after `span`).
pub fn span_field<C: HasSpan>(rest: &[&str]) -> Option<Field<C>> {
    Some(match rest {
        ["name"] => fld!(str, span, span_mut, name),
        ["kind"] => fld!(i32, span, span_mut, kind),
        ["flags"] => fld!(u32, span, span_mut, flags),
        ["trace_id"] => fld!(id 16, span, span_mut, trace_id),
        ["trace_id", "string"] => fld!(idhex 16, span, span_mut, trace_id),
        ["span_id"] => fld!(id 8, span, span_mut, span_id),
        ["span_id", "string"] => fld!(idhex 8, span, span_mut, span_id),
        ["parent_span_id"] => fld!(id 8, span, span_mut, parent_span_id),
        ["parent_span_id", "string"] => fld!(idhex 8, span, span_mut, parent_span_id),
        ["trace_state"] => fld!(str, span, span_mut, trace_state),
        ["trace_state", "[]"] => Field::Value {
            get: |c| Value::Map(trace_state(&c.span().trace_state)),
            set: Some(|c, v| set_trace_state(&mut c.span_mut().trace_state, v)),
        },
        ["events"] => Field::Value { get: |c| events(&c.span().events), set: None },
        ["links"] => Field::Value { get: |c| links(&c.span().links), set: None },
        ["start_time_unix_nano"] => fld!(nanos, span, span_mut, start_time_unix_nano),
        ["end_time_unix_nano"] => fld!(nanos, span, span_mut, end_time_unix_nano),
        ["start_time"] => fld!(time, span, span_mut, start_time_unix_nano),
        ["end_time"] => fld!(time, span, span_mut, end_time_unix_nano),
        ["attributes"] => fld!(attrs, span, span_mut, attributes),
        ["dropped_attributes_count"] => fld!(u32, span, span_mut, dropped_attributes_count),
        ["dropped_events_count"] => fld!(u32, span, span_mut, dropped_events_count),
        ["dropped_links_count"] => fld!(u32, span, span_mut, dropped_links_count),
        ["status", "code"] => Field::Value {
            get: |c| Value::Int(c.span().status.as_ref().map_or(0, |s| s.code).into()),
            set: Some(|c, v| set_i32(&mut status_mut(c.span_mut()).code, v)),
        },
        ["status", "message"] => Field::Value {
            get: |c| Value::String(c.span().status.as_ref().map_or_else(String::new, |s| s.message.clone())),
            set: Some(|c, v| set_string(&mut status_mut(c.span_mut()).message, v)),
        },
        _ => return None,
    })
}

impl Context for SpanContext {
    const NAME: &'static str = "span";
    const PARENTS: &'static [&'static str] = &["resource", "instrumentation_scope", "scope"];
    fn field(path: &[&str]) -> Option<Field<Self>> {
        match path {
            ["span", rest @ ..] => span_field(rest),
            _ => parent_field(path),
        }
    }
    cache_fns!();
}

impl SpanEventContext {
    fn ev(&self) -> &Event {
        &self.event
    }
    fn ev_mut(&mut self) -> &mut Event {
        &mut self.event
    }
}

impl Context for SpanEventContext {
    const NAME: &'static str = "spanevent";
    const PARENTS: &'static [&'static str] = &["resource", "instrumentation_scope", "scope", "span"];
    fn field(path: &[&str]) -> Option<Field<Self>> {
        Some(match path {
            ["spanevent", "name"] => fld!(str, ev, ev_mut, name),
            ["spanevent", "time_unix_nano"] => fld!(nanos, ev, ev_mut, time_unix_nano),
            ["spanevent", "time"] => fld!(time, ev, ev_mut, time_unix_nano),
            ["spanevent", "attributes"] => fld!(attrs, ev, ev_mut, attributes),
            ["spanevent", "dropped_attributes_count"] => fld!(u32, ev, ev_mut, dropped_attributes_count),
            ["span", rest @ ..] => return span_field(rest),
            _ => return parent_field(path),
        })
    }
    cache_fns!();
}
