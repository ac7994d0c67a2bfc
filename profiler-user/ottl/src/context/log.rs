//! The `log` context.

use opentelemetry_proto::tonic::{common::v1::InstrumentationScope, logs::v1::LogRecord, resource::v1::Resource};

use super::{cache_fns, fields::fld, parent_field, parents, Context, Field};
use crate::value::{Map, Value};

/// Statements over each log record.
#[derive(Clone, Debug, Default)]
pub struct LogContext {
    /// The resource.
    pub resource: Resource,
    /// The instrumentation scope.
    pub scope: InstrumentationScope,
    /// The log record.
    pub log: LogRecord,
    /// The per-record cache.
    pub cache: Map,
}

parents!(LogContext);

impl LogContext {
    fn rec(&self) -> &LogRecord {
        &self.log
    }
    fn rec_mut(&mut self) -> &mut LogRecord {
        &mut self.log
    }
}

impl Context for LogContext {
    const NAME: &'static str = "log";
    const PARENTS: &'static [&'static str] = &["resource", "instrumentation_scope", "scope"];
    fn field(path: &[&str]) -> Option<Field<Self>> {
        Some(match path {
            ["log", "time_unix_nano"] => fld!(nanos, rec, rec_mut, time_unix_nano),
            ["log", "observed_time_unix_nano"] => fld!(nanos, rec, rec_mut, observed_time_unix_nano),
            ["log", "time"] => fld!(time, rec, rec_mut, time_unix_nano),
            ["log", "observed_time"] => fld!(time, rec, rec_mut, observed_time_unix_nano),
            ["log", "severity_number"] => fld!(i32, rec, rec_mut, severity_number),
            ["log", "severity_text"] => fld!(str, rec, rec_mut, severity_text),
            ["log", "event_name"] => fld!(str, rec, rec_mut, event_name),
            ["log", "flags"] => fld!(u32, rec, rec_mut, flags),
            ["log", "attributes"] => fld!(attrs, rec, rec_mut, attributes),
            ["log", "dropped_attributes_count"] => fld!(u32, rec, rec_mut, dropped_attributes_count),
            ["log", "trace_id"] => fld!(id 16, rec, rec_mut, trace_id),
            ["log", "trace_id", "string"] => fld!(idhex 16, rec, rec_mut, trace_id),
            ["log", "span_id"] => fld!(id 8, rec, rec_mut, span_id),
            ["log", "span_id", "string"] => fld!(idhex 8, rec, rec_mut, span_id),
            ["log", "body"] => Field::Value {
                get: |c| c.log.body.as_ref().map_or(Value::Nil, Value::from_any_value),
                set: Some(|c, v| {
                    c.log.body = if v.is_nil() { None } else { Some(v.to_any_value()) };
                    Ok(())
                }),
            },
            ["log", "body", "string"] => Field::Value {
                get: |c| {
                    let v = c.log.body.as_ref().map_or(Value::Nil, Value::from_any_value);
                    Value::String(v.to_string_like().unwrap_or_default())
                },
                set: Some(|c, v| {
                    let s = v.expect_str()?.to_owned();
                    c.log.body = Some(Value::String(s).to_any_value());
                    Ok(())
                }),
            },
            _ => return parent_field(path),
        })
    }
    cache_fns!();
}
