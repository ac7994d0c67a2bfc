//! The `profile` context.
//!
//! OTLP profiles keep strings and attributes in a dictionary shared by the whole request
//! (`ProfilesDictionary`). Reading `profile.attributes` resolves `attribute_indices` through
//! the dictionary. Writing never edits a dictionary entry another profile may point at: each
//! written attribute re-uses an existing entry only when key and value are already equal,
//! otherwise it APPENDS a new `KeyValueAndUnit` (and its key string, when new) and the profile's
//! `attribute_indices` are re-pointed. Entries nobody points at any more stay (a later
//! compaction pass may drop them).
//!
//! `profile.sample_type` and `profile.period_type` read as maps `{"type": …, "unit": …}`
//! resolved through the string table; `profile.sample_type.type` / `.unit` (and the same for
//! `period_type`) read and write one string. A write interns the string (appending it when the
//! table lacks it) and re-points the profile's own `ValueType`, which no other profile shares.
//!
//! TODO: the samples and per-sample attributes (a `profile.sample` context) are not paths yet.

use opentelemetry_proto::tonic::{
    common::v1::InstrumentationScope,
    profiles::v1development::{KeyValueAndUnit, Profile, ProfilesDictionary, ValueType},
    resource::v1::Resource,
};

use super::{cache_fns, fields::fld, parent_field, parents, Context, Field};
use crate::{
    error::EvalError,
    value::{type_error, Map, Type, Value},
};

/// Statements over each profile.
#[derive(Clone, Debug, Default)]
pub struct ProfileContext {
    /// The request's dictionary.
    pub dictionary: ProfilesDictionary,
    /// The resource.
    pub resource: Resource,
    /// The instrumentation scope.
    pub scope: InstrumentationScope,
    /// The profile.
    pub profile: Profile,
    /// The per-record cache.
    pub cache: Map,
}

parents!(ProfileContext);

impl ProfileContext {
    fn p(&self) -> &Profile {
        &self.profile
    }
    fn p_mut(&mut self) -> &mut Profile {
        &mut self.profile
    }

    /// The profile's attributes, resolved through the dictionary (bad indices are skipped).
    pub fn attributes(&self) -> Map {
        let d = &self.dictionary;
        let mut m = Map::new();
        for &i in &self.profile.attribute_indices {
            let Some(kv) = usize::try_from(i).ok().and_then(|i| d.attribute_table.get(i)) else { continue };
            let key = d.string_table.get(kv.key_strindex as usize).cloned().unwrap_or_default();
            let v = kv.value.as_ref().map_or(Value::Nil, |v| Value::from_any_value_with_strings(v, &d.string_table));
            m.insert(key, v);
        }
        m
    }

    /// Replaces the profile's attributes, appending dictionary entries as the module docs say.
    pub fn set_attributes(&mut self, m: &Map) -> Result<(), EvalError> {
        let d = &mut self.dictionary;
        if d.attribute_table.is_empty() {
            // Index 0 holds the zero value by the format's rule; it never stands for an attribute.
            d.attribute_table.push(KeyValueAndUnit::default());
        }
        let mut indices = Vec::with_capacity(m.len());
        for (k, v) in m.iter() {
            let existing = d.attribute_table.iter().skip(1).position(|kv| {
                d.string_table.get(kv.key_strindex as usize).is_some_and(|s| s == k)
                    && kv.value.as_ref().map_or(Value::Nil, |x| Value::from_any_value_with_strings(x, &d.string_table))
                        == *v
            });
            let idx = match existing {
                Some(i) => i + 1,
                None => {
                    let key_strindex = intern(&mut d.string_table, k)?;
                    d.attribute_table.push(KeyValueAndUnit {
                        key_strindex,
                        value: Some(v.to_any_value()),
                        unit_strindex: 0,
                    });
                    d.attribute_table.len() - 1
                }
            };
            indices.push(i32::try_from(idx).map_err(|_| EvalError::new("attribute table full"))?);
        }
        self.profile.attribute_indices = indices;
        Ok(())
    }
}

/// Which of a profile's value types a path names.
#[derive(Clone, Copy)]
enum Which {
    Sample,
    Period,
}

fn value_type(p: &Profile, w: Which) -> Option<&ValueType> {
    match w {
        Which::Sample => p.sample_type.as_ref(),
        Which::Period => p.period_type.as_ref(),
    }
}

/// A string of the dictionary by index (`nil` when out of range).
fn string_at(d: &ProfilesDictionary, i: i32) -> Value {
    usize::try_from(i).ok().and_then(|i| d.string_table.get(i)).map_or(Value::Nil, |s| Value::String(s.clone()))
}

fn value_type_map(c: &ProfileContext, w: Which) -> Value {
    let Some(vt) = value_type(&c.profile, w) else { return Value::Nil };
    let mut m = Map::new();
    m.insert("type", string_at(&c.dictionary, vt.type_strindex));
    m.insert("unit", string_at(&c.dictionary, vt.unit_strindex));
    Value::Map(m)
}

/// Writes the type (`unit == false`) or unit string of a value type.
fn set_value_type(c: &mut ProfileContext, w: Which, unit: bool, v: Value) -> Result<(), EvalError> {
    let Value::String(s) = v else { return Err(type_error(Type::String, &v)) };
    let i = intern(&mut c.dictionary.string_table, &s)?;
    let vt = match w {
        Which::Sample => &mut c.profile.sample_type,
        Which::Period => &mut c.profile.period_type,
    }
    .get_or_insert_with(ValueType::default);
    *if unit { &mut vt.unit_strindex } else { &mut vt.type_strindex } = i;
    Ok(())
}

/// The index of `s` in the string table, appending it when absent.
fn intern(table: &mut Vec<String>, s: &str) -> Result<i32, EvalError> {
    let i = match table.iter().position(|x| x == s) {
        Some(i) => i,
        None => {
            if table.is_empty() {
                // Index 0 is the empty string by the format's rule.
                table.push(String::new());
                if s.is_empty() {
                    return Ok(0);
                }
            }
            table.push(s.to_owned());
            table.len() - 1
        }
    };
    i32::try_from(i).map_err(|_| EvalError::new("string table full"))
}

impl Context for ProfileContext {
    const NAME: &'static str = "profile";
    const PARENTS: &'static [&'static str] = &["resource", "instrumentation_scope", "scope"];
    fn field(path: &[&str]) -> Option<Field<Self>> {
        Some(match path {
            ["profile", "time_unix_nano"] => fld!(nanos, p, p_mut, time_unix_nano),
            ["profile", "time"] => fld!(time, p, p_mut, time_unix_nano),
            ["profile", "duration_unix_nano"] => fld!(nanos, p, p_mut, duration_nano),
            ["profile", "duration"] => Field::Value {
                get: |c| Value::Duration(c.profile.duration_nano as i64),
                set: Some(|c, v| match v {
                    Value::Duration(d) | Value::Int(d) => super::set_u64(&mut c.profile.duration_nano, Value::Int(d)),
                    other => Err(type_error(Type::Duration, &other)),
                }),
            },
            ["profile", "period"] => fld!(i64, p, p_mut, period),
            ["profile", "sample_type"] => Field::Value { get: |c| value_type_map(c, Which::Sample), set: None },
            ["profile", "period_type"] => Field::Value { get: |c| value_type_map(c, Which::Period), set: None },
            ["profile", "sample_type", "type"] => Field::Value {
                get: |c| {
                    value_type(&c.profile, Which::Sample)
                        .map_or(Value::Nil, |t| string_at(&c.dictionary, t.type_strindex))
                },
                set: Some(|c, v| set_value_type(c, Which::Sample, false, v)),
            },
            ["profile", "sample_type", "unit"] => Field::Value {
                get: |c| {
                    value_type(&c.profile, Which::Sample)
                        .map_or(Value::Nil, |t| string_at(&c.dictionary, t.unit_strindex))
                },
                set: Some(|c, v| set_value_type(c, Which::Sample, true, v)),
            },
            ["profile", "period_type", "type"] => Field::Value {
                get: |c| {
                    value_type(&c.profile, Which::Period)
                        .map_or(Value::Nil, |t| string_at(&c.dictionary, t.type_strindex))
                },
                set: Some(|c, v| set_value_type(c, Which::Period, false, v)),
            },
            ["profile", "period_type", "unit"] => Field::Value {
                get: |c| {
                    value_type(&c.profile, Which::Period)
                        .map_or(Value::Nil, |t| string_at(&c.dictionary, t.unit_strindex))
                },
                set: Some(|c, v| set_value_type(c, Which::Period, true, v)),
            },
            ["profile", "profile_id"] => fld!(id 16, p, p_mut, profile_id),
            ["profile", "profile_id", "string"] => fld!(idhex 16, p, p_mut, profile_id),
            ["profile", "dropped_attributes_count"] => fld!(u32, p, p_mut, dropped_attributes_count),
            ["profile", "original_payload_format"] => fld!(str, p, p_mut, original_payload_format),
            ["profile", "original_payload"] => fld!(bytes, p, p_mut, original_payload),
            ["profile", "attribute_indices"] => Field::Value {
                get: |c| Value::List(c.profile.attribute_indices.iter().map(|i| Value::Int((*i).into())).collect()),
                set: None,
            },
            ["profile", "attributes"] => Field::Value {
                get: |c| Value::Map(c.attributes()),
                set: Some(|c, v| match v {
                    Value::Map(m) => c.set_attributes(&m),
                    other => Err(type_error(Type::Map, &other)),
                }),
            },
            _ => return parent_field(path),
        })
    }
    cache_fns!();
}
