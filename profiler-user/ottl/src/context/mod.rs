//! Contexts: which paths a statement may use on which record, and how each path reads and
//! writes the OTLP structs.
//!
//! A context is a plain struct that owns the record being processed and its parents
//! ([`SpanContext`] holds the `Resource`, the `InstrumentationScope`, the `Span` and the
//! group's `cache`). A processor moves each record into the context (`std::mem::take`/`swap`),
//! runs the compiled statements and moves it back; owning instead of borrowing keeps the
//! compiled closures free of lifetimes (`Fn(&mut SpanContext)`), and the moves are a few
//! hundred bytes of `memcpy`, not clones.
//!
//! The [`Context`] trait maps a dotted path (`["span", "status", "code"]`) to a [`Field`]: a
//! pair of plain `fn` pointers (no captures, no boxing) over the context struct. Higher
//! contexts are reachable from lower ones through the `Has*` traits: [`resource_field`] and
//! [`scope_field`] serve every context that implements [`HasResource`] / [`HasScope`], so
//! `resource.attributes` means the same in a span, log or data point statement.
//!
//! Keys (`["k"][0]`) are not the context's business: the compiler applies them on top of the
//! field (with a direct lookup into the OTLP `KeyValue` list for attribute fields).
//!
//! Paths may omit the context's own prefix (`attributes["x"]` in a span statement is
//! `span.attributes["x"]`), as upstream's older syntax does. `cache` and `<context>.cache` are
//! the per-record cache map. Enum symbols are accepted in every context (upstream limits each
//! context to its proto's enums; a wider set changes no valid statement's meaning).

use opentelemetry_proto::tonic::{
    common::v1::{InstrumentationScope, KeyValue},
    resource::v1::Resource,
};

use crate::{error::EvalError, value::Map, value::Value};

mod datapoint;
mod fields;
mod log;
mod metric;
mod profile;
mod span;

pub use datapoint::{DataPoint, DataPointContext};
pub use log::LogContext;
pub use metric::MetricContext;
pub use profile::ProfileContext;
pub use span::{SpanContext, SpanEventContext};

/// Reads a field.
pub type GetFn<C> = fn(&C) -> Value;
/// Writes a field (the value's type is checked here).
pub type SetFn<C> = fn(&mut C, Value) -> Result<(), EvalError>;

/// What a path resolves to.
pub enum Field<C> {
    /// A field read and written as a whole [`Value`].
    Value {
        /// Reader.
        get: GetFn<C>,
        /// Writer; `None` for read-only fields.
        set: Option<SetFn<C>>,
    },
    /// An OTLP attribute list: keys look up the `KeyValue` directly, converting only the entry.
    Attributes {
        /// The list.
        get: fn(&C) -> &Vec<KeyValue>,
        /// The list, mutable.
        get_mut: fn(&mut C) -> &mut Vec<KeyValue>,
    },
    /// A [`Map`] held natively (the cache).
    Map {
        /// The map.
        get: fn(&C) -> &Map,
        /// The map, mutable.
        get_mut: fn(&mut C) -> &mut Map,
    },
}

/// A record type statements can run on.
pub trait Context: Sized + Send + Sync + 'static {
    /// The context's name, its path prefix (`"span"`).
    const NAME: &'static str;
    /// The path prefixes this context understands besides its own: the higher contexts.
    const PARENTS: &'static [&'static str];
    /// The field at `path` (a full path with its context prefix, keys removed).
    fn field(path: &[&str]) -> Option<Field<Self>>;
    /// The per-record cache.
    fn cache(&self) -> &Map;
    /// The per-record cache, mutable.
    fn cache_mut(&mut self) -> &mut Map;
    /// The value of an enum symbol.
    fn enum_value(name: &str) -> Option<i64> {
        enum_value(name)
    }
}

/// The enum symbols of the trace, log and metrics protos, and pdata's metric data types.
pub fn enum_value(name: &str) -> Option<i64> {
    Some(match name {
        "SPAN_KIND_UNSPECIFIED" => 0,
        "SPAN_KIND_INTERNAL" => 1,
        "SPAN_KIND_SERVER" => 2,
        "SPAN_KIND_CLIENT" => 3,
        "SPAN_KIND_PRODUCER" => 4,
        "SPAN_KIND_CONSUMER" => 5,
        "STATUS_CODE_UNSET" => 0,
        "STATUS_CODE_OK" => 1,
        "STATUS_CODE_ERROR" => 2,
        "AGGREGATION_TEMPORALITY_UNSPECIFIED" => 0,
        "AGGREGATION_TEMPORALITY_DELTA" => 1,
        "AGGREGATION_TEMPORALITY_CUMULATIVE" => 2,
        "METRIC_DATA_TYPE_NONE" => 0,
        "METRIC_DATA_TYPE_GAUGE" => 1,
        "METRIC_DATA_TYPE_SUM" => 2,
        "METRIC_DATA_TYPE_HISTOGRAM" => 3,
        "METRIC_DATA_TYPE_EXPONENTIAL_HISTOGRAM" => 4,
        "METRIC_DATA_TYPE_SUMMARY" => 5,
        _ => return severity_number(name),
    })
}

fn severity_number(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("SEVERITY_NUMBER_")?;
    if rest == "UNSPECIFIED" {
        return Some(0);
    }
    let (base, n) = [("TRACE", 0), ("DEBUG", 4), ("INFO", 8), ("WARN", 12), ("ERROR", 16), ("FATAL", 20)]
        .into_iter()
        .find_map(|(p, base)| rest.strip_prefix(p).map(|r| (base, r)))?;
    match n {
        "" => Some(base + 1),
        "2" | "3" | "4" => Some(base + n.parse::<i64>().ok()?),
        _ => None,
    }
}

/// Contexts that carry the resource.
pub trait HasResource {
    /// The resource.
    fn resource(&self) -> &Resource;
    /// The resource, mutable.
    fn resource_mut(&mut self) -> &mut Resource;
}

/// Contexts that carry the instrumentation scope.
pub trait HasScope {
    /// The scope.
    fn scope(&self) -> &InstrumentationScope;
    /// The scope, mutable.
    fn scope_mut(&mut self) -> &mut InstrumentationScope;
}

/// `resource.*` paths (the part after `resource`).
pub fn resource_field<C: HasResource>(rest: &[&str]) -> Option<Field<C>> {
    Some(match rest {
        ["attributes"] => {
            Field::Attributes { get: |c| &c.resource().attributes, get_mut: |c| &mut c.resource_mut().attributes }
        }
        ["dropped_attributes_count"] => Field::Value {
            get: |c| Value::Int(c.resource().dropped_attributes_count.into()),
            set: Some(|c, v| set_u32(&mut c.resource_mut().dropped_attributes_count, v)),
        },
        _ => return None,
    })
}

/// `instrumentation_scope.*` (also `scope.*`) paths (the part after the prefix).
pub fn scope_field<C: HasScope>(rest: &[&str]) -> Option<Field<C>> {
    Some(match rest {
        ["attributes"] => {
            Field::Attributes { get: |c| &c.scope().attributes, get_mut: |c| &mut c.scope_mut().attributes }
        }
        ["name"] => Field::Value {
            get: |c| Value::String(c.scope().name.clone()),
            set: Some(|c, v| set_string(&mut c.scope_mut().name, v)),
        },
        ["version"] => Field::Value {
            get: |c| Value::String(c.scope().version.clone()),
            set: Some(|c, v| set_string(&mut c.scope_mut().version, v)),
        },
        ["dropped_attributes_count"] => Field::Value {
            get: |c| Value::Int(c.scope().dropped_attributes_count.into()),
            set: Some(|c, v| set_u32(&mut c.scope_mut().dropped_attributes_count, v)),
        },
        _ => return None,
    })
}

/// Resolves the `resource.*` and `instrumentation_scope.*` / `scope.*` prefixes.
pub(crate) fn parent_field<C: HasResource + HasScope>(path: &[&str]) -> Option<Field<C>> {
    match path {
        ["resource", rest @ ..] => resource_field(rest),
        ["instrumentation_scope" | "scope", rest @ ..] => scope_field(rest),
        _ => None,
    }
}

/// The resource context: statements over each resource.
#[derive(Clone, Debug, Default)]
pub struct ResourceContext {
    /// The resource.
    pub resource: Resource,
    /// The cache.
    pub cache: Map,
}

impl HasResource for ResourceContext {
    fn resource(&self) -> &Resource {
        &self.resource
    }
    fn resource_mut(&mut self) -> &mut Resource {
        &mut self.resource
    }
}

impl Context for ResourceContext {
    const NAME: &'static str = "resource";
    const PARENTS: &'static [&'static str] = &[];
    fn field(path: &[&str]) -> Option<Field<Self>> {
        match path {
            ["resource", rest @ ..] => resource_field(rest),
            _ => None,
        }
    }
    fn cache(&self) -> &Map {
        &self.cache
    }
    fn cache_mut(&mut self) -> &mut Map {
        &mut self.cache
    }
}

/// The scope context: statements over each instrumentation scope.
#[derive(Clone, Debug, Default)]
pub struct ScopeContext {
    /// The resource of the scope.
    pub resource: Resource,
    /// The scope.
    pub scope: InstrumentationScope,
    /// The cache.
    pub cache: Map,
}

/// Implements [`HasResource`] and [`HasScope`] for a context struct with `resource` and
/// `scope` fields, and the cache accessors.
macro_rules! parents {
    ($t:ty) => {
        impl $crate::context::HasResource for $t {
            fn resource(&self) -> &opentelemetry_proto::tonic::resource::v1::Resource {
                &self.resource
            }
            fn resource_mut(&mut self) -> &mut opentelemetry_proto::tonic::resource::v1::Resource {
                &mut self.resource
            }
        }
        impl $crate::context::HasScope for $t {
            fn scope(&self) -> &opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                &self.scope
            }
            fn scope_mut(&mut self) -> &mut opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                &mut self.scope
            }
        }
    };
}
pub(crate) use parents;

/// The cache accessors of [`Context`] for a struct with a `cache: Map` field.
macro_rules! cache_fns {
    () => {
        fn cache(&self) -> &$crate::value::Map {
            &self.cache
        }
        fn cache_mut(&mut self) -> &mut $crate::value::Map {
            &mut self.cache
        }
    };
}
pub(crate) use cache_fns;

parents!(ScopeContext);

impl Context for ScopeContext {
    const NAME: &'static str = "instrumentation_scope";
    const PARENTS: &'static [&'static str] = &["resource", "scope"];
    fn field(path: &[&str]) -> Option<Field<Self>> {
        parent_field(path)
    }
    cache_fns!();
}

// --- setters shared by the contexts -------------------------------------------------------

pub(crate) fn set_string(dst: &mut String, v: Value) -> Result<(), EvalError> {
    match v {
        Value::String(s) => {
            *dst = s;
            Ok(())
        }
        other => Err(crate::value::type_error(crate::value::Type::String, &other)),
    }
}

pub(crate) fn set_u32(dst: &mut u32, v: Value) -> Result<(), EvalError> {
    let i = v.expect_int()?;
    *dst = u32::try_from(i).map_err(|_| EvalError::new(format!("{i} does not fit a uint32 field")))?;
    Ok(())
}

pub(crate) fn set_i32(dst: &mut i32, v: Value) -> Result<(), EvalError> {
    let i = v.expect_int()?;
    *dst = i32::try_from(i).map_err(|_| EvalError::new(format!("{i} does not fit an int32 field")))?;
    Ok(())
}

pub(crate) fn set_i64(dst: &mut i64, v: Value) -> Result<(), EvalError> {
    *dst = v.expect_int()?;
    Ok(())
}

/// `u64` unix-nanosecond fields read as `Int` (`*_unix_nano` paths); negative writes refused.
pub(crate) fn set_u64(dst: &mut u64, v: Value) -> Result<(), EvalError> {
    let i = v.expect_int()?;
    *dst = u64::try_from(i).map_err(|_| EvalError::new(format!("{i} is negative: the field is unsigned")))?;
    Ok(())
}

/// `u64` unix-nanosecond fields read as `Time` (`time`, `start_time` paths).
pub(crate) fn set_time(dst: &mut u64, v: Value) -> Result<(), EvalError> {
    match v {
        Value::Time(t) | Value::Int(t) => set_u64(dst, Value::Int(t)),
        other => Err(crate::value::type_error(crate::value::Type::Time, &other)),
    }
}

pub(crate) fn time_of(ns: u64) -> Value {
    Value::Time(ns as i64)
}

pub(crate) fn int_of(ns: u64) -> Value {
    Value::Int(ns as i64)
}

/// Writes an ID of `n` bytes from bytes, or from hex text for the `.string` paths.
pub(crate) fn set_id(dst: &mut Vec<u8>, v: Value, n: usize, from_hex: bool) -> Result<(), EvalError> {
    let bytes = match v {
        Value::Bytes(b) if !from_hex => b,
        Value::String(s) if from_hex => {
            decode_hex(&s).ok_or_else(|| EvalError::new(format!("invalid hex id {s:?}")))?
        }
        other => {
            let want = if from_hex { crate::value::Type::String } else { crate::value::Type::Bytes };
            return Err(crate::value::type_error(want, &other));
        }
    };
    if bytes.len() != n {
        return Err(EvalError::new(format!("an id here is {n} bytes, got {}", bytes.len())));
    }
    *dst = bytes;
    Ok(())
}

pub(crate) fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums() {
        for (name, want) in [
            ("SPAN_KIND_CLIENT", Some(3)),
            ("STATUS_CODE_ERROR", Some(2)),
            ("SEVERITY_NUMBER_UNSPECIFIED", Some(0)),
            ("SEVERITY_NUMBER_TRACE", Some(1)),
            ("SEVERITY_NUMBER_INFO", Some(9)),
            ("SEVERITY_NUMBER_INFO4", Some(12)),
            ("SEVERITY_NUMBER_FATAL4", Some(24)),
            ("SEVERITY_NUMBER_FATAL5", None),
            ("METRIC_DATA_TYPE_SUMMARY", Some(5)),
            ("AGGREGATION_TEMPORALITY_CUMULATIVE", Some(2)),
            ("SPAN_KIND_NOPE", None),
        ] {
            assert_eq!(enum_value(name), want, "{name}");
        }
    }
}
