//! Maps and lists: `Keys`, `Values`, `ContainsValue`, `Index`, `SliceToMap`, `Sort`,
//! `Coalesce`.

use std::cmp::Ordering;

use super::{fail, opt, opt_str, req};
use crate::{
    error::EvalError,
    func::{Args, Function, ParamType as T},
    value::{Map, Value},
};

pub(super) static FUNCTIONS: &[Function] = &[
    Function::converter("Keys", &[req("target", T::Map)], |a| {
        Ok(Value::List(a.value(0).expect_map()?.iter().map(|(k, _)| Value::from(k)).collect()))
    }),
    Function::converter("Values", &[req("target", T::Map)], |a| {
        Ok(Value::List(a.value(0).expect_map()?.iter().map(|(_, v)| v.clone()).collect()))
    }),
    Function::converter("ContainsValue", &[req("target", T::List), req("item", T::Any)], |a| {
        let item = a.value(1);
        Ok(Value::Bool(a.value(0).expect_list()?.iter().any(|v| v.ottl_eq(item))))
    }),
    Function::converter("Index", &[req("target", T::Any), req("value", T::Any)], index),
    Function::converter(
        "SliceToMap",
        &[req("target", T::List), opt("key_path", T::List), opt("value_path", T::List)],
        slice_to_map,
    ),
    Function::converter("Sort", &[req("target", T::Any), opt("order", T::String)], sort),
    Function::converter("Coalesce", &[req("values", T::List)], |a| {
        Ok(a.value(0).expect_list()?.iter().find(|v| !v.is_nil()).cloned().unwrap_or(Value::Nil))
    }),
];

/// `Index`: the byte offset of a substring in a string, or the position of the first element
/// equal (by OTTL's `==`) in a list; `-1` when absent.
fn index(a: &Args<'_>) -> Result<Value, EvalError> {
    let found = match (a.value(0), a.value(1)) {
        (Value::String(s), Value::String(sub)) => s.find(sub.as_str()),
        (Value::String(_), other) => {
            return Err(fail("Index", format!("a string target needs a string value, got {}", other.ty())))
        }
        (Value::List(l), v) => l.iter().position(|x| x.ottl_eq(v)),
        (other, _) => return Err(fail("Index", format!("unsupported target type: {}", other.ty()))),
    };
    Ok(Value::Int(found.map_or(-1, |i| i as i64)))
}

/// The value at a path of keys inside nested maps.
fn at_path<'v>(mut v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    for key in path {
        v = match v {
            Value::Map(m) => m.get(key)?,
            _ => return None,
        };
    }
    Some(v)
}

fn slice_to_map(a: &Args<'_>) -> Result<Value, EvalError> {
    let list = a.value(0).expect_list()?;
    let key_path = a.get(1).map(|_| a.strings(1)).transpose()?;
    let value_path = a.get(2).map(|_| a.strings(2)).transpose()?;
    if key_path.as_ref().is_some_and(Vec::is_empty) {
        return Err(fail("SliceToMap", "key path must contain at least one element"));
    }
    let mut out = Map::new();
    for (i, item) in list.iter().enumerate() {
        if !matches!(item, Value::Map(_)) {
            return Err(fail("SliceToMap", format!("could not cast element {i} to a map, got {}", item.ty())));
        }
        let key = match &key_path {
            None => i.to_string(),
            Some(p) => match at_path(item, p) {
                Some(Value::String(k)) => k.clone(),
                Some(other) => {
                    return Err(fail(
                        "SliceToMap",
                        format!("key at {p:?} of element {i} is {}, not a string", other.ty()),
                    ))
                }
                None => return Err(fail("SliceToMap", format!("element {i} has no key at {p:?}"))),
            },
        };
        let value = match &value_path {
            None => item.clone(),
            Some(p) => at_path(item, p)
                .cloned()
                .ok_or_else(|| fail("SliceToMap", format!("element {i} has no value at {p:?}")))?,
        };
        out.insert(key, value);
    }
    Ok(Value::Map(out))
}

/// `Sort`: ints, floats (mixed numbers compare as floats), strings; bools or any mix with
/// strings compare by their string form. Elements keep their types; the sort is stable.
fn sort(a: &Args<'_>) -> Result<Value, EvalError> {
    let order = opt_str(a, 1)?.unwrap_or("asc");
    let desc = match order {
        "asc" => false,
        "desc" => true,
        other => return Err(fail("Sort", format!("invalid sort order {other:?}, valid values are asc and desc"))),
    };
    let mut list = match a.value(0) {
        Value::List(l) => l.clone(),
        other => return Err(fail("Sort", format!("sort with unsupported type: {}", other.ty()))),
    };
    let all = |f: fn(&Value) -> bool| list.iter().all(f);
    let numeric = all(|v| matches!(v, Value::Int(_) | Value::Double(_)));
    let plain = all(|v| matches!(v, Value::Int(_) | Value::Double(_) | Value::String(_) | Value::Bool(_)));
    if !plain {
        return Err(fail("Sort", "sort with unsupported element type (only ints, doubles, strings and bools sort)"));
    }
    let key = |v: &Value| v.to_string_like().unwrap_or_default();
    let cmp = |x: &Value, y: &Value| {
        if numeric {
            x.ottl_cmp(y).unwrap_or(Ordering::Equal)
        } else {
            key(x).cmp(&key(y))
        }
    };
    if desc {
        list.sort_by(|x, y| cmp(y, x));
    } else {
        list.sort_by(|x, y| cmp(x, y));
    }
    Ok(Value::List(list))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{check, eval, s};
    use crate::Value::{self, Bool, Double, Int, List, Nil};

    fn map(pairs: &[(&str, Value)]) -> Value {
        Value::Map(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
    }

    #[test]
    fn keys_values_contains_index_table() {
        check(&[
            (r#"Keys({"k1":"v1", "k2": "v2"})"#, Ok(List(vec![s("k1"), s("k2")]))),
            (r#"Keys("x")"#, Err("must be a map")),
            (
                r#"Values({"key1": "value1", "key2": 5, "key3": [1,2]})"#,
                Ok(List(vec![s("value1"), Int(5), List(vec![Int(1), Int(2)])])),
            ),
            (r#"ContainsValue([1, 2, 3, 4, 5], 3)"#, Ok(Bool(true))),
            (r#"ContainsValue([1.1, 2.2, 3.3, 4.4], 4.4)"#, Ok(Bool(true))),
            (r#"ContainsValue(["GET", "PUT", "POST"], "GET")"#, Ok(Bool(true))),
            (r#"ContainsValue([1, 2], 2.0)"#, Ok(Bool(true))),
            (r#"ContainsValue(["1"], 1)"#, Ok(Bool(false))),
            (r#"Index("hello world", "world")"#, Ok(Int(6))),
            (r#"Index("hello world", "mars")"#, Ok(Int(-1))),
            (r#"Index(["a", "error", "b"], "error")"#, Ok(Int(1))),
            (r#"Index([90, 95], 95)"#, Ok(Int(1))),
            (r#"Index([90, 95], 96)"#, Ok(Int(-1))),
            (r#"Index(1, 1)"#, Err("unsupported target type")),
            (r#"Coalesce([nil, nil, "unknown"])"#, Ok(s("unknown"))),
            (r#"Coalesce([nil])"#, Ok(Nil)),
        ]);
    }

    #[test]
    fn slice_to_map_table() {
        let things = r#"[{"name": "foo", "value": 2}, {"name": "bar", "value": 5}]"#;
        let foo = map(&[("name", s("foo")), ("value", Int(2))]);
        let bar = map(&[("name", s("bar")), ("value", Int(5))]);
        let row = |args: &str| format!("SliceToMap({things}{args})");
        let rows = [
            (row(r#", ["name"]"#), Ok(map(&[("foo", foo.clone()), ("bar", bar.clone())]))),
            (row(""), Ok(map(&[("0", foo), ("1", bar)]))),
            (row(r#", ["name"], ["value"]"#), Ok(map(&[("foo", Int(2)), ("bar", Int(5))]))),
            (row(r#", ["value"]"#), Err("not a string".to_owned())),
            (row(r#", ["nope"]"#), Err("has no key".to_owned())),
            ("SliceToMap([1])".to_owned(), Err("to a map".to_owned())),
        ];
        for (expr, want) in rows {
            match (eval(&expr), want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{expr}"),
                (Err(g), Err(w)) => assert!(g.contains(&w), "{expr}: {g}"),
                (g, w) => panic!("{expr}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn sort_table() {
        check(&[
            (r#"Sort([3, 1, 2])"#, Ok(List(vec![Int(1), Int(2), Int(3)]))),
            (r#"Sort([3, 1, 2], "desc")"#, Ok(List(vec![Int(3), Int(2), Int(1)]))),
            (r#"Sort([2.5, 1, 2])"#, Ok(List(vec![Int(1), Int(2), Double(2.5)]))),
            (r#"Sort(["b", "a", "C"])"#, Ok(List(vec![s("C"), s("a"), s("b")]))),
            (r#"Sort([true, false])"#, Ok(List(vec![Bool(false), Bool(true)]))),
            (r#"Sort(["a", 10, 9, true])"#, Ok(List(vec![Int(10), Int(9), s("a"), Bool(true)]))),
            (r#"Sort([])"#, Ok(List(vec![]))),
            (r#"Sort([{"a":1}])"#, Err("unsupported element type")),
            (r#"Sort("abc")"#, Err("unsupported type")),
            (r#"Sort([1], "up")"#, Err("invalid sort order")),
        ]);
    }
}
