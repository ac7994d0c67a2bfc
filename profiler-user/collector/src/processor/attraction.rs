//! Attribute actions in the Collector's shape (`key`, `value`, `action: insert|update|upsert|
//! delete|hash|extract|convert`, `from_attribute`, `pattern`, `converted_type`), checked once
//! when the config is read and then applied to attribute lists. The `resource` processor uses
//! them on resource attributes; an `attributes` processor would use them on items.
//!
//! Semantics follow the Collector's `attraction` package:
//! - `insert` adds the key only when it is absent, `update` changes it only when present,
//!   `upsert` does either; the value comes from `value` (any YAML scalar, list or map, typed as
//!   written) or from another attribute (`from_attribute`; nothing happens when that one is
//!   absent).
//! - `delete` and `hash` act on `key` and on every key matching `pattern` (a regular
//!   expression, unanchored). `hash` replaces the value with the lowercase hex SHA-256 of its
//!   bytes: a string's UTF-8, a bool as one byte 0/1, an int and a double as 8 little-endian
//!   bytes (the double's IEEE bits); an empty string, a list or a map becomes `""`. Bytes are
//!   hashed as they are (the Collector turns them into `""`).
//! - `extract` matches `pattern` (every group named) against the string value of `key` and sets
//!   one string attribute per group, overwriting.
//! - `convert` turns the value of `key` into `int`, `double` or `string` when it can and leaves
//!   it as it is when it cannot (`"abc"` to int).
//!
//! Not supported: `from_context` (the request's client metadata does not travel with
//! [`crate::signal::Data`]); it is a config error rather than an action that never matches.

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, ArrayValue, KeyValue, KeyValueList};
use regex::Regex;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::ConfigError;

/// One action as written in the config.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub value: Option<serde_yaml::Value>,
    #[serde(default)]
    pub pattern: String,
    #[serde(default)]
    pub from_attribute: String,
    #[serde(default)]
    pub from_context: String,
    #[serde(default)]
    pub converted_type: String,
    #[serde(default)]
    pub action: String,
}

/// Where an insert/update/upsert takes its value from.
#[derive(Clone, Debug)]
enum Source {
    Value(AnyValue),
    Attribute(String),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Write {
    Insert,
    Update,
    Upsert,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ConvertTo {
    Int,
    Double,
    String,
}

#[derive(Clone, Debug)]
enum Action {
    Write { how: Write, key: String, source: Source },
    Delete { key: String, pattern: Option<Regex> },
    Hash { key: String, pattern: Option<Regex> },
    Extract { key: String, regex: Regex, names: Vec<String> },
    Convert { key: String, to: ConvertTo },
}

/// A checked list of actions, applied in order.
#[derive(Clone, Debug, Default)]
pub struct Actions(Vec<Action>);

impl Actions {
    /// Checks `configs`, found at `path` (`processors.resource.attributes`); errors name the
    /// entry and key (`processors.resource.attributes[1].pattern: ...`).
    pub fn parse(configs: &[ActionConfig], path: &str) -> Result<Self, ConfigError> {
        configs
            .iter()
            .enumerate()
            .map(|(i, c)| parse_one(c, &format!("{path}[{i}]")))
            .collect::<Result<_, _>>()
            .map(Actions)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Applies every action, in order, to `attrs`.
    pub fn apply(&self, attrs: &mut Vec<KeyValue>) {
        for action in &self.0 {
            match action {
                Action::Write { how, key, source } => {
                    let value = match source {
                        Source::Value(v) => Some(v.clone()),
                        Source::Attribute(from) => find(attrs, from).and_then(|i| attrs[i].value.clone()),
                    };
                    let Some(value) = value else { continue };
                    match (find(attrs, key), how) {
                        (Some(i), Write::Update | Write::Upsert) => attrs[i].value = Some(value),
                        (None, Write::Insert | Write::Upsert) => {
                            attrs.push(KeyValue { key: key.clone(), value: Some(value), ..Default::default() })
                        }
                        _ => {}
                    }
                }
                Action::Delete { key, pattern } => {
                    attrs.retain(|a| !(a.key == *key || pattern.as_ref().is_some_and(|p| p.is_match(&a.key))))
                }
                Action::Hash { key, pattern } => {
                    for a in attrs.iter_mut() {
                        if a.key == *key || pattern.as_ref().is_some_and(|p| p.is_match(&a.key)) {
                            a.value = Some(string(hash(a.value.as_ref())));
                        }
                    }
                }
                Action::Extract { key, regex, names } => {
                    let Some(source) = find(attrs, key).and_then(|i| as_str(attrs[i].value.as_ref())) else { continue };
                    let Some(caps) = regex.captures(&source) else { continue };
                    let found: Vec<(String, String)> = names
                        .iter()
                        .enumerate()
                        .map(|(g, name)| (name.clone(), caps.get(g + 1).map_or("", |m| m.as_str()).to_string()))
                        .collect();
                    for (name, v) in found {
                        match find(attrs, &name) {
                            Some(i) => attrs[i].value = Some(string(v)),
                            None => attrs.push(KeyValue { key: name, value: Some(string(v)), ..Default::default() }),
                        }
                    }
                }
                Action::Convert { key, to } => {
                    if let Some(i) = find(attrs, key) {
                        if let Some(v) = convert(attrs[i].value.as_ref(), *to) {
                            attrs[i].value = Some(v);
                        } else {
                            tracing::debug!(key = %key, to = ?to, "attribute value cannot be converted; left as it is");
                        }
                    }
                }
            }
        }
    }
}

fn find(attrs: &[KeyValue], key: &str) -> Option<usize> {
    attrs.iter().position(|a| a.key == key)
}

fn string(s: String) -> AnyValue {
    AnyValue { value: Some(Value::StringValue(s)) }
}

fn as_str(v: Option<&AnyValue>) -> Option<String> {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn parse_one(c: &ActionConfig, at: &str) -> Result<Action, ConfigError> {
    let err = |field: &str, msg: String| ConfigError::new(format!("{at}.{field}"), msg);
    let action = c.action.to_ascii_lowercase();
    if !c.from_context.is_empty() {
        return Err(err(
            "from_context",
            "not supported: request metadata does not reach otelprof's processors; use `value` or `from_attribute`"
                .into(),
        ));
    }
    let has_value = c.value.as_ref().is_some_and(|v| !v.is_null());
    let sources = usize::from(has_value) + usize::from(!c.from_attribute.is_empty());
    let unused = |field: &str, set: bool| -> Result<(), ConfigError> {
        if set {
            Err(err(field, format!("not used by action `{action}`; remove it")))
        } else {
            Ok(())
        }
    };
    let regex = |what: &str| -> Result<Regex, ConfigError> {
        Regex::new(what).map_err(|e| err("pattern", format!("not a valid regular expression: {e}")))
    };
    let require_key = || -> Result<String, ConfigError> {
        if c.key.is_empty() {
            Err(err("key", "required".into()))
        } else {
            Ok(c.key.clone())
        }
    };
    match action.as_str() {
        "insert" | "update" | "upsert" => {
            let key = require_key()?;
            if sources == 0 {
                return Err(err("value", format!("action `{action}` needs `value` or `from_attribute`")));
            }
            if sources > 1 {
                return Err(err("from_attribute", "set either `value` or `from_attribute`, not both".into()));
            }
            unused("pattern", !c.pattern.is_empty())?;
            unused("converted_type", !c.converted_type.is_empty())?;
            let source = match &c.value {
                Some(v) if has_value => Source::Value(any_value(v).map_err(|m| err("value", m))?),
                _ => Source::Attribute(c.from_attribute.clone()),
            };
            let how = match action.as_str() {
                "insert" => Write::Insert,
                "update" => Write::Update,
                _ => Write::Upsert,
            };
            Ok(Action::Write { how, key, source })
        }
        "delete" | "hash" => {
            if c.key.is_empty() && c.pattern.is_empty() {
                return Err(err("key", format!("action `{action}` needs `key`, `pattern` or both")));
            }
            unused("value", has_value)?;
            unused("from_attribute", !c.from_attribute.is_empty())?;
            unused("converted_type", !c.converted_type.is_empty())?;
            let pattern = if c.pattern.is_empty() { None } else { Some(regex(&c.pattern)?) };
            Ok(if action == "delete" {
                Action::Delete { key: c.key.clone(), pattern }
            } else {
                Action::Hash { key: c.key.clone(), pattern }
            })
        }
        "extract" => {
            let key = require_key()?;
            unused("value", has_value)?;
            unused("from_attribute", !c.from_attribute.is_empty())?;
            unused("converted_type", !c.converted_type.is_empty())?;
            if c.pattern.is_empty() {
                return Err(err("pattern", "required for action `extract`".into()));
            }
            let re = regex(&c.pattern)?;
            let names: Vec<Option<&str>> = re.capture_names().skip(1).collect();
            if names.is_empty() {
                return Err(err("pattern", "has no named groups `(?P<name>...)` to extract into".into()));
            }
            if names.iter().any(Option::is_none) {
                return Err(err("pattern", "every group must be named `(?P<name>...)`".into()));
            }
            let names = names.into_iter().flatten().map(str::to_string).collect();
            Ok(Action::Extract { key, regex: re, names })
        }
        "convert" => {
            let key = require_key()?;
            unused("value", has_value)?;
            unused("from_attribute", !c.from_attribute.is_empty())?;
            unused("pattern", !c.pattern.is_empty())?;
            let to = match c.converted_type.as_str() {
                "int" => ConvertTo::Int,
                "double" => ConvertTo::Double,
                "string" => ConvertTo::String,
                "" => return Err(err("converted_type", "required for action `convert`: int, double or string".into())),
                other => return Err(err("converted_type", format!("`{other}` is not one of int, double, string"))),
            };
            Ok(Action::Convert { key, to })
        }
        "" => Err(err("action", "required: insert, update, upsert, delete, hash, extract or convert".into())),
        other => Err(err(
            "action",
            format!("`{other}` is not one of insert, update, upsert, delete, hash, extract, convert"),
        )),
    }
}

/// A config value as an attribute value, typed as written: `5` an int, `5.0` a double,
/// `"5"` a string, `true` a bool, lists and maps as arrays and key-value lists.
pub fn any_value(v: &serde_yaml::Value) -> Result<AnyValue, String> {
    use serde_yaml::Value as Y;
    let value = match v {
        Y::Null => return Ok(AnyValue { value: None }),
        Y::Bool(b) => Value::BoolValue(*b),
        Y::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::IntValue(i),
            (None, Some(f)) if n.is_f64() => Value::DoubleValue(f),
            _ => return Err(format!("{n} does not fit a 64-bit signed integer")),
        },
        Y::String(s) => Value::StringValue(s.clone()),
        Y::Sequence(items) => {
            Value::ArrayValue(ArrayValue { values: items.iter().map(any_value).collect::<Result<_, _>>()? })
        }
        Y::Mapping(m) => Value::KvlistValue(KeyValueList {
            values: m
                .iter()
                .map(|(k, v)| {
                    let key = k.as_str().ok_or_else(|| format!("map keys must be strings, not {k:?}"))?;
                    Ok(KeyValue { key: key.to_string(), value: Some(any_value(v)?), ..Default::default() })
                })
                .collect::<Result<_, String>>()?,
        }),
        Y::Tagged(t) => return any_value(&t.value),
    };
    Ok(AnyValue { value: Some(value) })
}

/// The hex SHA-256 of a value's bytes (see the module docs); `""` for values without bytes.
fn hash(v: Option<&AnyValue>) -> String {
    let bytes: Vec<u8> = match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.as_bytes().to_vec(),
        Some(Value::BoolValue(b)) => vec![u8::from(*b)],
        Some(Value::IntValue(i)) => i.to_le_bytes().to_vec(),
        Some(Value::DoubleValue(d)) => d.to_bits().to_le_bytes().to_vec(),
        Some(Value::BytesValue(b)) => b.clone(),
        _ => Vec::new(),
    };
    if bytes.is_empty() {
        return String::new();
    }
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `v` as `to`, or `None` when it cannot be converted.
fn convert(v: Option<&AnyValue>, to: ConvertTo) -> Option<AnyValue> {
    let v = v.and_then(|v| v.value.as_ref())?;
    let out = match (to, v) {
        (ConvertTo::Int, Value::IntValue(_)) | (ConvertTo::Double, Value::DoubleValue(_)) => v.clone(),
        (ConvertTo::String, Value::StringValue(_)) => v.clone(),
        (ConvertTo::Int, Value::DoubleValue(d)) => Value::IntValue(*d as i64),
        (ConvertTo::Int, Value::BoolValue(b)) => Value::IntValue(i64::from(*b)),
        (ConvertTo::Int, Value::StringValue(s)) => Value::IntValue(s.parse().ok()?),
        (ConvertTo::Double, Value::IntValue(i)) => Value::DoubleValue(*i as f64),
        (ConvertTo::Double, Value::BoolValue(b)) => Value::DoubleValue(f64::from(u8::from(*b))),
        (ConvertTo::Double, Value::StringValue(s)) => Value::DoubleValue(s.parse().ok()?),
        (ConvertTo::String, Value::BoolValue(b)) => Value::StringValue(b.to_string()),
        (ConvertTo::String, Value::IntValue(i)) => Value::StringValue(i.to_string()),
        (ConvertTo::String, Value::DoubleValue(d)) => Value::StringValue(d.to_string()),
        (ConvertTo::String, Value::ArrayValue(_) | Value::KvlistValue(_)) => {
            Value::StringValue(serde_json::to_string(&json(v)).ok()?)
        }
        _ => return None,
    };
    Some(AnyValue { value: Some(out) })
}

/// A list or map value as JSON, for `convert` to string.
fn json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    let inner = |a: &AnyValue| a.value.as_ref().map_or(J::Null, json);
    match v {
        Value::StringValue(s) => J::String(s.clone()),
        Value::BoolValue(b) => J::Bool(*b),
        Value::IntValue(i) => J::from(*i),
        Value::DoubleValue(d) => J::from(*d),
        Value::ArrayValue(a) => J::Array(a.values.iter().map(inner).collect()),
        Value::KvlistValue(m) => {
            J::Object(m.values.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(J::Null, inner))).collect())
        }
        Value::BytesValue(b) => J::Array(b.iter().map(|&x| J::from(x)).collect()),
        Value::StringValueStrindex(i) => J::from(*i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(yaml: &str) -> Result<Actions, ConfigError> {
        let list: Vec<ActionConfig> = serde_yaml::from_str(yaml).unwrap();
        Actions::parse(&list, "processors.resource.attributes")
    }

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
    }

    fn get<'a>(attrs: &'a [KeyValue], k: &str) -> Option<&'a Value> {
        attrs.iter().find(|a| a.key == k).and_then(|a| a.value.as_ref()).and_then(|v| v.value.as_ref())
    }

    #[test]
    fn writes_follow_insert_update_upsert_with_typed_values() {
        let a = actions(
            r#"
            - {key: a, value: 5, action: insert}       # present: untouched
            - {key: n, value: 5, action: insert}       # absent: an int
            - {key: d, value: 5.5, action: INSERT}     # upper case works, a double
            - {key: s, value: "5", action: upsert}     # a string
            - {key: b, value: true, action: upsert}
            - {key: l, value: [1, x], action: upsert}
            - {key: m, value: {k: v}, action: upsert}
            - {key: zz, value: 1, action: update}      # absent: nothing
            - {key: a, from_attribute: n, action: update}
            - {key: c, from_attribute: missing, action: upsert}
            "#,
        )
        .unwrap();
        let mut attrs = vec![kv("a", Value::StringValue("old".into()))];
        a.apply(&mut attrs);
        assert_eq!(get(&attrs, "a"), Some(&Value::IntValue(5)), "updated from n");
        assert_eq!(get(&attrs, "d"), Some(&Value::DoubleValue(5.5)));
        assert_eq!(get(&attrs, "s"), Some(&Value::StringValue("5".into())));
        assert_eq!(get(&attrs, "b"), Some(&Value::BoolValue(true)));
        let Some(Value::ArrayValue(l)) = get(&attrs, "l") else { panic!("{attrs:?}") };
        assert_eq!(l.values[1].value, Some(Value::StringValue("x".into())));
        let Some(Value::KvlistValue(m)) = get(&attrs, "m") else { panic!() };
        assert_eq!(m.values[0].key, "k");
        assert!(get(&attrs, "zz").is_none() && get(&attrs, "c").is_none());
        assert_eq!(attrs.iter().filter(|a| a.key == "a").count(), 1, "keys stay unique");
    }

    #[test]
    fn delete_and_hash_by_key_and_pattern() {
        let a = actions(
            r#"
            - {key: secret, action: hash}
            - {pattern: "^tmp\\.", action: delete}
            - {key: gone, action: delete}
            - {key: n, action: hash}
            "#,
        )
        .unwrap();
        let mut attrs = vec![
            kv("secret", Value::StringValue("abc".into())),
            kv("tmp.a", Value::IntValue(1)),
            kv("x.tmp.b", Value::IntValue(1)),
            kv("gone", Value::BoolValue(false)),
            kv("n", Value::IntValue(1)),
        ];
        a.apply(&mut attrs);
        // Independent: `printf abc | sha256sum`.
        assert_eq!(
            get(&attrs, "secret"),
            Some(&Value::StringValue("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into()))
        );
        // 1 as 8 little-endian bytes: `printf '\x01\0\0\0\0\0\0\0' | sha256sum`.
        assert_eq!(
            get(&attrs, "n"),
            Some(&Value::StringValue("7c9fa136d4413fa6173637e883b6998d32e1d675f88cddff9dcbcf331820f4b8".into()))
        );
        assert_eq!(attrs.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(), ["secret", "x.tmp.b", "n"]);
    }

    #[test]
    fn extract_and_convert() {
        let a = actions(
            r#"
            - {key: url, pattern: "^/api/(?P<version>v\\d+)/(?P<thing>\\w+)", action: extract}
            - {key: port, converted_type: int, action: convert}
            - {key: bad, converted_type: int, action: convert}
            - {key: ratio, converted_type: string, action: convert}
            - {key: on, converted_type: double, action: convert}
            - {key: f, converted_type: int, action: convert}
            "#,
        )
        .unwrap();
        let mut attrs = vec![
            kv("url", Value::StringValue("/api/v2/users?x".into())),
            kv("thing", Value::StringValue("old".into())),
            kv("port", Value::StringValue("8080".into())),
            kv("bad", Value::StringValue("80a".into())),
            kv("ratio", Value::DoubleValue(0.25)),
            kv("on", Value::BoolValue(true)),
            kv("f", Value::DoubleValue(-2.9)),
        ];
        a.apply(&mut attrs);
        assert_eq!(get(&attrs, "version"), Some(&Value::StringValue("v2".into())));
        assert_eq!(get(&attrs, "thing"), Some(&Value::StringValue("users".into())), "overwritten");
        assert_eq!(get(&attrs, "port"), Some(&Value::IntValue(8080)));
        assert_eq!(get(&attrs, "bad"), Some(&Value::StringValue("80a".into())), "left as it is");
        assert_eq!(get(&attrs, "ratio"), Some(&Value::StringValue("0.25".into())));
        assert_eq!(get(&attrs, "on"), Some(&Value::DoubleValue(1.0)));
        assert_eq!(get(&attrs, "f"), Some(&Value::IntValue(-2)), "truncated toward zero");
    }

    #[test]
    fn config_errors_name_the_entry_and_key() {
        let cases = [
            ("- {key: a, action: insert}", "processors.resource.attributes[0].value"),
            (
                "- {key: a, value: 1, from_attribute: b, action: upsert}",
                "processors.resource.attributes[0].from_attribute",
            ),
            ("- {value: 1, action: upsert}", "processors.resource.attributes[0].key"),
            ("- {key: a, action: delete}\n- {action: hash}", "processors.resource.attributes[1].key"),
            ("- {key: a, pattern: '(', action: delete}", "processors.resource.attributes[0].pattern"),
            ("- {key: a, pattern: '(\\d+)', action: extract}", "processors.resource.attributes[0].pattern"),
            ("- {key: a, converted_type: float, action: convert}", "processors.resource.attributes[0].converted_type"),
            ("- {key: a, action: rename}", "processors.resource.attributes[0].action"),
            ("- {key: a, from_context: metadata.x, action: insert}", "processors.resource.attributes[0].from_context"),
            ("- {key: a, value: 18446744073709551615, action: insert}", "processors.resource.attributes[0].value"),
        ];
        for (yaml, path) in cases {
            let e = actions(yaml).unwrap_err();
            assert_eq!(e.path, path, "{yaml}: {e}");
        }
    }
}
