//! `${env:VAR}` in config values, expanded as the OpenTelemetry Collector does, so the same
//! config (and the same Helm values) work in both:
//!
//! - `${env:NAME}` and `${NAME}` are the variable `NAME` (`[A-Za-z_][A-Za-z0-9_]*`);
//!   `${env:NAME:-default}` gives `default` when `NAME` is not set (a set but empty variable
//!   stays empty, as in the Collector).
//! - A value that is a single reference (`port: ${env:PORT}`) takes the variable's value as
//!   YAML: `4317` is a number, `true` a boolean. Inside other text
//!   (`http://${env:HOST}:4318`) it is inserted as text.
//! - `$$` is a literal `$` (`$${env:X}` stays `${env:X}`); a `$` before anything else is kept.
//! - An unset variable without a default is empty, with a [`Warning`] (the Collector logs it).
//! - `${1}` (not a variable name: Prometheus relabelling uses this) is kept as it is, with a
//!   warning; `${file:…}` and other config providers are refused: only `env` is supported.
//!
//! Only values are expanded, never keys, and values from the environment are not expanded
//! again.

use serde_yaml::Value;

use super::{positions::join, ConfigError, Warning};

/// Reads variables: the process environment, or a fixed set in tests.
pub trait Lookup {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Lookup for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Lookup for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Expands every string value under `path` in place.
pub fn expand(value: &mut Value, path: &str, env: &dyn Lookup, warnings: &mut Vec<Warning>) -> Result<(), ConfigError> {
    match value {
        Value::String(s) => {
            if let Some(new) = expand_scalar(s, path, env, warnings)? {
                *value = new;
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand(item, &format!("{path}[{i}]"), env, warnings)?;
            }
        }
        Value::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).unwrap_or_default().trim_end().to_string(),
                };
                expand(v, &join(path, &key), env, warnings)?;
            }
        }
        Value::Tagged(t) => expand(&mut t.value, path, env, warnings)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// One piece of a scalar: text, or a reference resolved to the variable's value.
enum Piece {
    Text(String),
    Var(String),
}

/// The expanded value of `s`, or `None` when it has nothing to expand.
fn expand_scalar(
    s: &str,
    path: &str,
    env: &dyn Lookup,
    warnings: &mut Vec<Warning>,
) -> Result<Option<Value>, ConfigError> {
    if !s.contains('$') {
        return Ok(None);
    }
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        text.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            text.push('$');
            rest = tail;
        } else if let Some(body) =
            after.strip_prefix('{').and_then(|b| b.find('}').map(|end| (&b[..end], &b[end + 1..])))
        {
            let (inner, tail) = body;
            match resolve(inner, path, env, warnings)? {
                Some(v) => {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Var(v));
                }
                None => {
                    text.push_str("${");
                    text.push_str(inner);
                    text.push('}');
                }
            }
            rest = tail;
        } else {
            text.push('$');
            rest = after;
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(Some(match pieces.as_slice() {
        // A whole value: typed as YAML, as if written there (an empty one stays text).
        [Piece::Var(v)] => retype(v),
        _ => Value::String(
            pieces
                .into_iter()
                .map(|p| match p {
                    Piece::Text(t) | Piece::Var(t) => t,
                })
                .collect(),
        ),
    }))
}

/// The variable's value as YAML: a scalar as its type, a mapping or list as written; text
/// that is not valid YAML, or is empty, stays text.
fn retype(v: &str) -> Value {
    if v.trim().is_empty() {
        return Value::String(v.to_string());
    }
    match serde_yaml::from_str::<Value>(v) {
        Ok(Value::Null) | Err(_) => Value::String(v.to_string()),
        Ok(typed) => typed,
    }
}

/// An environment variable's name, as the Collector accepts it.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The value of `${inner}`, or `None` to keep it as written.
fn resolve(
    inner: &str,
    path: &str,
    env: &dyn Lookup,
    warnings: &mut Vec<Warning>,
) -> Result<Option<String>, ConfigError> {
    let reference = match inner.split_once(':') {
        Some(("env", r)) => r,
        Some((scheme, _)) => {
            let hint = if valid_name(scheme) && inner[scheme.len()..].starts_with(":-") {
                format!("; for a variable with a default write `${{env:{inner}}}`")
            } else {
                String::new()
            };
            return Err(ConfigError::new(
                path,
                format!("`${{{inner}}}`: `{scheme}` is not a config provider otelprof supports (only `env`){hint}"),
            ));
        }
        None if valid_name(inner) => inner,
        None => {
            warnings.push(Warning {
                path: path.to_string(),
                message: format!(
                    "`${{{inner}}}` is not an environment variable reference (not a valid name): kept as written"
                ),
                position: None,
            });
            return Ok(None);
        }
    };
    let (name, default) = match reference.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if !valid_name(name) {
        return Err(ConfigError::new(
            path,
            format!("`${{{inner}}}`: `{name}` is not a valid environment variable name (letters, digits and `_`, not starting with a digit)"),
        ));
    }
    Ok(Some(match (env.get(name), default) {
        (Some(v), _) => v,
        (None, Some(d)) => d.to_string(),
        (None, None) => {
            warnings.push(Warning {
                path: path.to_string(),
                message: format!("environment variable `{name}` is not set: its value is empty"),
                position: None,
            });
            String::new()
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str) -> Result<(Value, Vec<Warning>), ConfigError> {
        let env = |name: &str| match name {
            "PORT" => Some("4317".to_string()),
            "HOST" => Some("collector".to_string()),
            "FLAG" => Some("true".to_string()),
            "EMPTY" => Some(String::new()),
            "TOKEN" => Some("a: b # not: expanded ${env:HOST}".to_string()),
            "LIST" => Some("[a, b]".to_string()),
            _ => None,
        };
        let mut v: Value = serde_yaml::from_str(yaml).unwrap();
        let mut warnings = Vec::new();
        expand(&mut v, "", &env, &mut warnings)?;
        Ok((v, warnings))
    }

    /// As written, nothing expanded.
    fn raw(yaml: &str) -> Value {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn value(yaml: &str) -> Value {
        let (v, w) = run(yaml).unwrap();
        assert_eq!(w, [], "{yaml}");
        v
    }

    #[test]
    fn whole_values_are_typed_and_inline_ones_are_text() {
        assert_eq!(value("p: ${env:PORT}"), raw("p: 4317"));
        assert_eq!(value("p: ${PORT}"), raw("p: 4317"), "the braces form is the env provider too");
        assert_eq!(value("p: \"${env:PORT}\""), raw("p: 4317"), "quoting the reference does not matter");
        assert_eq!(value("f: ${env:FLAG}"), raw("f: true"));
        assert_eq!(value("l: ${env:LIST}"), raw("l: [a, b]"));
        assert_eq!(value("e: http://${env:HOST}:${env:PORT}/v1"), raw("e: http://collector:4317/v1"));
        assert_eq!(value("t: ${env:TOKEN}"), raw("t: {a: b}"), "a whole value is YAML");
        assert_eq!(
            value("t: x${env:TOKEN}"),
            raw("t: 'xa: b # not: expanded ${env:HOST}'"),
            "inline it is text, and never expanded again"
        );
        assert_eq!(value("e: ${env:EMPTY}"), raw("e: ''"), "set but empty: empty text, no default");
        assert_eq!(value("e: ${env:EMPTY:-x}"), raw("e: ''"));
        assert_eq!(value("[a, {b: '${HOST}'}]"), raw("[a, {b: collector}]"), "in lists and nested maps");
        assert_eq!(value("${HOST}: 1"), raw("${HOST}: 1"), "keys are not expanded");
    }

    #[test]
    fn defaults_escapes_and_what_is_kept() {
        assert_eq!(value("p: ${env:NOPE:-4318}"), raw("p: 4318"));
        assert_eq!(value("p: ${env:NOPE:-}"), raw("p: ''"));
        assert_eq!(value("p: ${env:NOPE:-a:-b}"), raw("p: 'a:-b'"));
        assert_eq!(value("p: $${env:PORT}"), raw("p: '${env:PORT}'"));
        assert_eq!(value("p: a$$b$"), raw("p: a$b$"));
        assert_eq!(value("p: $$$${env:PORT}"), raw("p: $${env:PORT}"));
        assert_eq!(value("p: $$${env:PORT}"), raw("p: $4317"));
        assert_eq!(value("p: cost $5 ${unclosed"), raw("p: cost $5 ${unclosed"));
        assert_eq!(value("p: 5"), raw("p: 5"));
    }

    #[test]
    fn unset_variables_are_empty_with_a_warning() {
        let (v, w) = run("a: {b: [x, '${env:NOPE}']}").unwrap();
        assert_eq!(v, raw("a: {b: [x, '']}"));
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].path, "a.b[1]");
        assert_eq!(w[0].message, "environment variable `NOPE` is not set: its value is empty");
        let (v, w) = run("r: 'foo_${1}'").unwrap();
        assert_eq!(v, raw("r: 'foo_${1}'"));
        assert!(w[0].message.contains("kept as written"), "{w:?}");
    }

    #[test]
    fn other_providers_and_bad_names_are_errors() {
        let e = run("a: {b: '${file:/etc/x}'}").unwrap_err();
        assert_eq!(e.path, "a.b");
        assert!(e.message.contains("`file` is not a config provider otelprof supports (only `env`)"), "{e}");
        let e = run("a: ${PORT:-1}").unwrap_err();
        assert!(e.message.contains("write `${env:PORT:-1}`"), "{e}");
        let e = run("a: ${env:1X}").unwrap_err();
        assert!(e.message.contains("`1X` is not a valid environment variable name"), "{e}");
    }
}
