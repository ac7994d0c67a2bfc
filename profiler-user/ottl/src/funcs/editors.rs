//! The editors: functions that change the record through their first (target) argument.
//!
//! Where an editor's target is not of the type it works on (e.g. `replace_pattern` on an int)
//! it does nothing, as upstream.

use regex::Regex;

use super::{opt, opt_str, req};
use crate::{
    error::EvalError,
    func::{Args, Function, Param, ParamType as T, Target},
    value::{Map, Value},
};
const REPLACE_TAIL: [Param; 2] = [opt("function", T::Function), opt("replacement_format", T::String)];

pub(super) static EDITORS: &[Function] = &[
    // --- editors ---
    Function::editor("set", &[req("target", T::Target), req("value", T::Any)], set),
    Function::editor("delete_key", &[req("target", T::Target), req("key", T::String)], delete_key),
    Function::editor(
        "delete_matching_keys",
        &[req("target", T::Target), req("pattern", T::Regex)],
        delete_matching_keys,
    ),
    Function::editor("keep_keys", &[req("target", T::Target), req("keys", T::List)], keep_keys),
    Function::editor("keep_matching_keys", &[req("target", T::Target), req("pattern", T::Regex)], keep_matching_keys),
    Function::editor("limit", &[req("target", T::Target), req("limit", T::Int), req("priority_keys", T::List)], limit),
    Function::editor(
        "truncate_all",
        &[
            req("target", T::Target),
            req("limit", T::Int),
            opt("utf8_safe", T::Bool),
            opt("truncation_marker", T::String),
        ],
        truncate_all,
    ),
    Function::editor(
        "delete_index",
        &[req("target", T::Target), req("start_index", T::Int), opt("end_index", T::Int)],
        delete_index,
    ),
    Function::editor("stringify_all", &[req("target", T::Target)], stringify_all),
    Function::editor(
        "replace_pattern",
        &[
            req("target", T::Target),
            req("regex", T::Regex),
            req("replacement", T::String),
            REPLACE_TAIL[0],
            REPLACE_TAIL[1],
        ],
        replace_pattern,
    ),
    Function::editor(
        "replace_all_patterns",
        &[
            req("target", T::Target),
            req("mode", T::String),
            req("regex", T::Regex),
            req("replacement", T::String),
            REPLACE_TAIL[0],
            REPLACE_TAIL[1],
        ],
        replace_all_patterns,
    ),
    Function::editor(
        "replace_match",
        &[
            req("target", T::Target),
            req("pattern", T::Glob),
            req("replacement", T::String),
            REPLACE_TAIL[0],
            REPLACE_TAIL[1],
        ],
        replace_match,
    ),
    Function::editor(
        "replace_all_matches",
        &[
            req("target", T::Target),
            req("pattern", T::Glob),
            req("replacement", T::String),
            REPLACE_TAIL[0],
            REPLACE_TAIL[1],
        ],
        replace_all_matches,
    ),
    Function::editor(
        "merge_maps",
        &[req("target", T::Target), req("source", T::Map), req("strategy", T::String)],
        merge_maps,
    ),
    Function::editor(
        "flatten",
        &[req("target", T::Target), opt("prefix", T::String), opt("depth", T::Int), opt("resolve_conflicts", T::Bool)],
        flatten,
    ),
    Function::editor("append", &[req("target", T::Target), opt("value", T::Any), opt("values", T::List)], append),
];

// --- helpers --------------------------------------------------------------------------------

/// The target as a map, or `None` when it is not one (editors then do nothing).
fn target_map(t: &dyn Target) -> Result<Option<Map>, EvalError> {
    Ok(match t.get()? {
        Value::Map(m) => Some(m),
        _ => None,
    })
}

/// Replaces every match of `re` in `s`: `replacement` with `$1` expansion, then (when given)
/// the converter applied to the expanded text and the result put through `format` (`%s`).
fn replace_regex(
    re: &Regex,
    s: &str,
    replacement: &str,
    func: Option<&Function>,
    format: Option<&str>,
) -> Result<String, EvalError> {
    let Some(func) = func else {
        return Ok(re.replace_all(s, replacement).into_owned());
    };
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for caps in re.captures_iter(s) {
        let m = caps.get(0).expect("group 0 always matches");
        out.push_str(&s[last..m.start()]);
        let mut expanded = String::new();
        caps.expand(replacement, &mut expanded);
        let v = func.call(vec![Value::String(expanded)])?;
        let v = v.to_string_like().unwrap_or_default();
        out.push_str(&format.unwrap_or("%s").replacen("%s", &v, 1));
        last = m.end();
    }
    out.push_str(&s[last..]);
    Ok(out)
}

/// The whole-value replacement of `replace_match`.
fn replace_whole(replacement: &str, func: Option<&Function>, format: Option<&str>) -> Result<String, EvalError> {
    match func {
        None => Ok(replacement.to_owned()),
        Some(f) => {
            let v = f.call(vec![Value::String(replacement.to_owned())])?.to_string_like().unwrap_or_default();
            Ok(format.unwrap_or("%s").replacen("%s", &v, 1))
        }
    }
}

// --- editors --------------------------------------------------------------------------------

fn set(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    // Upstream: a nil value is no action.
    match a.value(1) {
        Value::Nil => Ok(()),
        v => t.set(v.clone()),
    }
}

fn delete_key(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    if let Some(kvs) = t.attributes_mut() {
        let key = a.str(1)?;
        kvs.retain(|kv| kv.key != key);
        return Ok(());
    }
    let Some(mut m) = target_map(t)? else { return Ok(()) };
    if m.remove(a.str(1)?).is_some() {
        t.set(Value::Map(m))?;
    }
    Ok(())
}

fn delete_matching_keys(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    let re = a.regex(1)?;
    if let Some(kvs) = t.attributes_mut() {
        kvs.retain(|kv| !re.is_match(&kv.key));
        return Ok(());
    }
    let Some(mut m) = target_map(t)? else { return Ok(()) };
    let n = m.len();
    m.retain(|k, _| !re.is_match(k));
    if m.len() != n {
        t.set(Value::Map(m))?;
    }
    Ok(())
}

fn keep_keys(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    let keys = a.value(1).expect_list()?;
    let wanted = |k: &str| keys.iter().any(|x| matches!(x, Value::String(s) if s == k));
    if let Some(kvs) = t.attributes_mut() {
        if let Some(bad) = keys.iter().find(|x| !matches!(x, Value::String(_))) {
            return Err(crate::value::type_error(crate::value::Type::String, bad));
        }
        kvs.retain(|kv| wanted(&kv.key));
        return Ok(());
    }
    let keys = a.strings(1)?;
    let Some(mut m) = target_map(t)? else { return Ok(()) };
    m.retain(|k, _| keys.contains(&k));
    t.set(Value::Map(m))
}

fn keep_matching_keys(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    let re = a.regex(1)?;
    if let Some(kvs) = t.attributes_mut() {
        kvs.retain(|kv| re.is_match(&kv.key));
        return Ok(());
    }
    let Some(mut m) = target_map(t)? else { return Ok(()) };
    m.retain(|k, _| re.is_match(k));
    t.set(Value::Map(m))
}

fn limit(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    let limit = a.int(1)?;
    if limit < 0 {
        return Err(EvalError::new(format!("invalid limit for limit function, {limit} cannot be negative")));
    }
    let limit = limit as usize;
    let priority = a.strings(2)?;
    if priority.len() > limit {
        return Err(EvalError::new(format!(
            "invalid limit for limit function, {limit} cannot be less than number of priority attributes {}",
            priority.len()
        )));
    }
    let Some(m) = target_map(t)? else { return Ok(()) };
    if m.len() <= limit {
        return Ok(());
    }
    // Priority keys first (those present), then the others in order, up to `limit`.
    let kept_priority = m.iter().filter(|(k, _)| priority.contains(k)).count().min(limit);
    let mut others = limit - kept_priority;
    let mut out = Map::new();
    for (k, v) in m {
        if priority.contains(&k.as_str()) {
            out.insert(k, v);
        } else if others > 0 {
            others -= 1;
            out.insert(k, v);
        }
    }
    t.set(Value::Map(out))
}

/// `truncate_all`: strings longer than `limit` bytes are cut, `truncation_marker` included in
/// the limit. The cut is always on a character boundary: `utf8_safe = false` is accepted but
/// cannot split a character here, since a [`Value::String`] is always valid UTF-8.
fn truncate_all(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    let limit = a.int(1)?;
    if limit < 0 {
        return Err(EvalError::new(format!("invalid limit for truncate_all function, {limit} cannot be negative")));
    }
    a.get(2).map(Value::expect_bool).transpose()?;
    let marker = opt_str(a, 3)?.unwrap_or("");
    let limit = limit as usize;
    if marker.len() > limit {
        return Err(EvalError::new(format!(
            "invalid truncation_marker for truncate_all function, {} bytes is longer than the limit {limit}",
            marker.len()
        )));
    }
    let Some(mut m) = target_map(t)? else { return Ok(()) };
    for (_, v) in m.iter_mut() {
        if let Value::String(s) = v {
            if s.len() > limit {
                // Cut at a char boundary at or below `limit` bytes: never split a character.
                let mut end = limit - marker.len();
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
                s.push_str(marker);
            }
        }
    }
    t.set(Value::Map(m))
}

/// `delete_index`: removes `[start, end)` (or the one element at `start`) from a list.
fn delete_index(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    let start = a.int(1)?;
    let Value::List(mut l) = t.get()? else {
        return Err(EvalError::new("delete_index: target is not a list"));
    };
    let end = a.get(2).map(Value::expect_int).transpose()?.unwrap_or(start.saturating_add(1));
    let len = l.len() as i64;
    if start < 0 || start >= len {
        return Err(EvalError::new(format!("delete_index: startIndex {start} out of bounds for a list of {len}")));
    }
    if end < start || end > len {
        return Err(EvalError::new(format!("delete_index: endIndex {end} must be between {start} and {len}")));
    }
    l.drain(start as usize..end as usize);
    t.set(Value::List(l))
}

/// `stringify_all`: every non-string value of a map becomes its string form (numbers and
/// bools formatted, bytes base64, maps and lists JSON, nil empty).
fn stringify_all(t: &mut dyn Target, _: &Args<'_>) -> Result<(), EvalError> {
    use base64::Engine;
    let Some(mut m) = target_map(t)? else { return Ok(()) };
    for (_, v) in m.iter_mut() {
        let s = match &*v {
            Value::String(_) => continue,
            Value::Nil => String::new(),
            Value::Bytes(b) => base64::engine::general_purpose::STANDARD.encode(b),
            other => other.to_json(),
        };
        *v = Value::String(s);
    }
    t.set(Value::Map(m))
}

fn replace_pattern(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    let Value::String(s) = t.get()? else { return Ok(()) };
    let out = replace_regex(a.regex(1)?, &s, a.str(2)?, a.function(3), opt_str(a, 4)?)?;
    if out != s {
        t.set(Value::String(out))?;
    }
    Ok(())
}

fn replace_all_patterns(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    let mode = a.str(1)?;
    let (re, repl, func, fmt) = (a.regex(2)?, a.str(3)?, a.function(4), opt_str(a, 5)?);
    let Some(m) = target_map(t)? else { return Ok(()) };
    let mut out = Map::new();
    match mode {
        "value" => {
            for (k, v) in m {
                let v = match v {
                    Value::String(s) => Value::String(replace_regex(re, &s, repl, func, fmt)?),
                    other => other,
                };
                out.insert(k, v);
            }
        }
        "key" => {
            for (k, v) in m {
                out.insert(replace_regex(re, &k, repl, func, fmt)?, v);
            }
        }
        other => return Err(EvalError::new(format!("invalid mode {other:?}, must be \"key\" or \"value\""))),
    }
    t.set(Value::Map(out))
}

fn replace_match(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    let Value::String(s) = t.get()? else { return Ok(()) };
    if a.regex(1)?.is_match(&s) {
        t.set(Value::String(replace_whole(a.str(2)?, a.function(3), opt_str(a, 4)?)?))?;
    }
    Ok(())
}

fn replace_all_matches(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    let glob = a.regex(1)?;
    let Some(mut m) = target_map(t)? else { return Ok(()) };
    let mut changed = false;
    for (_, v) in m.iter_mut() {
        if matches!(v, Value::String(s) if glob.is_match(s)) {
            *v = Value::String(replace_whole(a.str(2)?, a.function(3), opt_str(a, 4)?)?);
            changed = true;
        }
    }
    if changed {
        t.set(Value::Map(m))?;
    }
    Ok(())
}

fn merge_maps(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    let strategy = a.str(2)?;
    if !matches!(strategy, "insert" | "update" | "upsert") {
        return Err(EvalError::new(format!(
            "invalid value for strategy, {strategy:?} must be insert, update or upsert"
        )));
    }
    let Value::Map(source) = a.value(1) else { return Ok(()) };
    let Some(mut m) = target_map(t)? else { return Ok(()) };
    for (k, v) in source.iter() {
        let present = m.get(k).is_some();
        let write = match strategy {
            "insert" => !present,
            "update" => present,
            _ => true,
        };
        if write {
            m.insert(k, v.clone());
        }
    }
    t.set(Value::Map(m))
}

fn flatten(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    let prefix = opt_str(a, 1)?.unwrap_or("");
    let depth = match a.get(2) {
        Some(d) => {
            let d = d.expect_int()?;
            if d < 0 {
                return Err(EvalError::new("invalid depth for flatten function, cannot be negative"));
            }
            d as usize
        }
        None => usize::MAX,
    };
    let resolve = a.get(3).map(Value::expect_bool).transpose()?.unwrap_or(false);
    let Some(m) = target_map(t)? else { return Ok(()) };
    let mut out = Map::new();
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for (k, v) in m {
        let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
        flatten_into(&mut out, key, v, 0, depth, resolve, &mut seen);
    }
    t.set(Value::Map(out))
}

fn flatten_into(
    out: &mut Map,
    key: String,
    v: Value,
    level: usize,
    depth: usize,
    resolve: bool,
    seen: &mut std::collections::HashMap<String, usize>,
) {
    match v {
        Value::Map(m) if level < depth => {
            for (k, x) in m {
                flatten_into(out, format!("{key}.{k}"), x, level + 1, depth, resolve, seen);
            }
        }
        Value::List(l) if level < depth => {
            for (i, x) in l.into_iter().enumerate() {
                flatten_into(out, format!("{key}.{i}"), x, level + 1, depth, resolve, seen);
            }
        }
        v => {
            if resolve && out.get(&key).is_some() {
                // Conflicting keys get a numeric suffix instead of overwriting (upstream's
                // `resolve_conflicts`).
                let n = seen.entry(key.clone()).or_insert(0);
                loop {
                    *n += 1;
                    let k = format!("{key}.{n}");
                    if out.get(&k).is_none() {
                        out.insert(k, v);
                        return;
                    }
                }
            }
            out.insert(key, v);
        }
    }
}

fn append(t: &mut dyn Target, a: &Args<'_>) -> Result<(), EvalError> {
    let mut list = match t.get()? {
        Value::Nil => Vec::new(),
        Value::List(l) => l,
        scalar => vec![scalar],
    };
    if let Some(v) = a.get(1) {
        list.push(v.clone());
    }
    if let Some(vs) = a.get(2) {
        list.extend(vs.expect_list()?.iter().cloned());
    }
    if a.get(1).is_none() && a.get(2).is_none() {
        return Err(EvalError::new(
            "at least one of the optional arguments (\"value\" or \"values\") must be provided",
        ));
    }
    t.set(Value::List(list))
}

#[cfg(test)]
mod tests {
    use crate::{context::LogContext, Compiler, ErrorMode, Registry, Statements, Value};

    /// Runs `stmts` on an empty log record, then reads `log.attributes["x"]`.
    fn after(stmts: &[&str]) -> Result<Value, String> {
        let r = Registry::standard();
        let c = Compiler::new(&r);
        let list = stmts.iter().map(|s| c.statement::<LogContext>(s)).collect::<Result<Vec<_>, _>>();
        let mut ctx = LogContext::default();
        Statements::new(list.map_err(|e| e.to_string())?, ErrorMode::Propagate)
            .execute(&mut ctx)
            .map_err(|e| e.to_string())?;
        c.value::<LogContext>(r#"log.attributes["x"]"#).unwrap().eval(&ctx).map_err(|e| e.to_string())
    }

    #[test]
    fn new_editor_table() {
        use super::super::test_support::same;
        let set = r#"set(log.attributes["x"], ["a", "b", "c", "d"])"#;
        let list = |v: &[&str]| Value::List(v.iter().map(|s| Value::from(*s)).collect());
        let map = |v: &[(&str, &str)]| Value::Map(v.iter().map(|(k, x)| ((*k).to_owned(), Value::from(*x))).collect());
        let rows: Vec<(Vec<&str>, Result<Value, &str>)> = vec![
            (vec![set, r#"delete_index(log.attributes["x"], 0)"#], Ok(list(&["b", "c", "d"]))),
            (vec![set, r#"delete_index(log.attributes["x"], 1, 3)"#], Ok(list(&["a", "d"]))),
            (
                vec![set, r#"delete_index(log.attributes["x"], Len(log.attributes["x"]) - 1)"#],
                Ok(list(&["a", "b", "c"])),
            ),
            (vec![set, r#"delete_index(log.attributes["x"], 2, 2)"#], Ok(list(&["a", "b", "c", "d"]))),
            (vec![set, r#"delete_index(log.attributes["x"], 4)"#], Err("out of bounds")),
            (vec![set, r#"delete_index(log.attributes["x"], 2, 1)"#], Err("must be between")),
            (
                vec![
                    r#"set(log.attributes["x"], {"i": 42, "f": 3.14, "b": true, "s": "s", "m": {"a": [1]}, "y": 0x0102})"#,
                    r#"stringify_all(log.attributes["x"])"#,
                ],
                Ok(map(&[("i", "42"), ("f", "3.14"), ("b", "true"), ("s", "s"), ("m", r#"{"a":[1]}"#), ("y", "AQI=")])),
            ),
            (
                vec![
                    r#"set(log.attributes["x"], {"a": "0123456789", "b": "short"})"#,
                    r#"truncate_all(log.attributes["x"], 8, truncation_marker = "...")"#,
                ],
                Ok(map(&[("a", "01234..."), ("b", "short")])),
            ),
            (
                vec![r#"set(log.attributes["x"], {"a": "一二三"})"#, r#"truncate_all(log.attributes["x"], 5, false)"#],
                Ok(map(&[("a", "一")])),
            ),
            (
                vec![
                    r#"set(log.attributes["x"], {"a": "abc"})"#,
                    r#"truncate_all(log.attributes["x"], 2, true, "...")"#,
                ],
                Err("longer than the limit"),
            ),
        ];
        for (stmts, want) in rows {
            match (after(&stmts), want) {
                (Ok(g), Ok(w)) => assert!(same(&g, &w), "{stmts:?}: want {w:?}, got {g:?}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{stmts:?}: {g}"),
                (g, w) => panic!("{stmts:?}: want {w:?}, got {g:?}"),
            }
        }
    }
}
