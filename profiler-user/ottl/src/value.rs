//! The runtime [`Value`] every getter returns and every setter takes, its conversions to and
//! from OTLP's `AnyValue`, and OTTL's comparison and math rules.
//!
//! ```
//! use otelprof_ottl::value::{Map, Value};
//!
//! let mut m = Map::new();
//! m.insert("http.method", Value::from("GET"));
//! let any = Value::Map(m.clone()).to_any_value();
//! assert_eq!(Value::from_any_value(&any), Value::Map(m));
//! assert!(Value::Int(1).ottl_eq(&Value::Double(1.0)));
//! ```
//!
//! Design notes:
//! - Values are owned: a getter copies out of the record. That keeps getters and setters two
//!   plain closures per path, at the price of a copy for map-valued reads (a borrowed fast path
//!   for attribute reads is a later optimisation, measured against the benchmark).
//! - [`Map`] keeps insertion order, as OTLP's `KeyValueList` and pdata's `pcommon.Map` do; a
//!   lookup is a linear scan, which beats hashing for the few keys attributes carry.
//! - IDs (`trace_id`, `span_id`, `profile_id`) are [`Value::Bytes`]; enums are [`Value::Int`].
//! - [`Value::Time`] and [`Value::Duration`] are nanoseconds (unix epoch for times). They exist
//!   for the `*_time` paths and time math; written into an attribute they become
//!   `Int` nanoseconds (OTLP has no time value).

use std::cmp::Ordering;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue, KeyValueList};

use crate::error::EvalError;

/// An OTTL value at run time.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Value {
    /// `nil`, a missing map key, an empty OTLP value.
    #[default]
    Nil,
    /// `true` / `false`.
    Bool(bool),
    /// All integers (enums too) are `i64`, as in upstream.
    Int(i64),
    /// All floats are `f64`.
    Double(f64),
    /// UTF-8 text.
    String(String),
    /// Byte slices: `0x…` literals, bytes attributes, trace/span/profile IDs.
    Bytes(Vec<u8>),
    /// An ordered string-keyed map (attributes, `cache`, map literals).
    Map(Map),
    /// A list (OTLP `ArrayValue`, list literals).
    List(Vec<Value>),
    /// A point in time, nanoseconds since the unix epoch.
    Time(i64),
    /// A duration in nanoseconds.
    Duration(i64),
}

/// The type names used in error messages (`expected string, got int`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    /// [`Value::Nil`]
    Nil,
    /// [`Value::Bool`]
    Bool,
    /// [`Value::Int`]
    Int,
    /// [`Value::Double`]
    Double,
    /// [`Value::String`]
    String,
    /// [`Value::Bytes`]
    Bytes,
    /// [`Value::Map`]
    Map,
    /// [`Value::List`]
    List,
    /// [`Value::Time`]
    Time,
    /// [`Value::Duration`]
    Duration,
}

impl Type {
    /// Lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Type::Nil => "nil",
            Type::Bool => "bool",
            Type::Int => "int",
            Type::Double => "float",
            Type::String => "string",
            Type::Bytes => "bytes",
            Type::Map => "map",
            Type::List => "list",
            Type::Time => "time",
            Type::Duration => "duration",
        }
    }
}

impl std::fmt::Display for Type {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An ordered map with string keys: attributes, `cache`, map literals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Map(Vec<(String, Value)>);

impl Map {
    /// An empty map.
    pub fn new() -> Self {
        Map(Vec::new())
    }
    /// The value at `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    /// The value at `key`, mutable.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    /// Sets `key`: replaces in place when present (keeps its position), appends otherwise.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.get_mut(&key) {
            Some(v) => *v = value,
            None => self.0.push((key, value)),
        }
    }
    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }
    /// Keeps the entries for which `f` is true.
    pub fn retain(&mut self, mut f: impl FnMut(&str, &mut Value) -> bool) {
        self.0.retain_mut(|(k, v)| f(k, v));
    }
    /// Entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
    /// Entries in order, values mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut Value)> {
        self.0.iter_mut().map(|(k, v)| (k.as_str(), v))
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Keeps the first `n` entries.
    pub fn truncate(&mut self, n: usize) {
        self.0.truncate(n);
    }
    /// Removes all entries.
    pub fn clear(&mut self) {
        self.0.clear();
    }
    /// The map as OTLP attributes.
    pub fn to_key_values(&self) -> Vec<KeyValue> {
        self.0
            .iter()
            .map(|(k, v)| KeyValue { key: k.clone(), value: Some(v.to_any_value()), ..Default::default() })
            .collect()
    }
    /// OTLP attributes as a map (a repeated key keeps its last value at its first position).
    pub fn from_key_values(kvs: &[KeyValue]) -> Self {
        let mut m = Map(Vec::with_capacity(kvs.len()));
        for kv in kvs {
            m.insert(kv.key.clone(), kv.value.as_ref().map_or(Value::Nil, Value::from_any_value));
        }
        m
    }
}

impl FromIterator<(String, Value)> for Map {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        let mut m = Map::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

impl IntoIterator for Map {
    type Item = (String, Value);
    type IntoIter = std::vec::IntoIter<(String, Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Double(f)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<Map> for Value {
    fn from(m: Map) -> Self {
        Value::Map(m)
    }
}
impl From<Vec<Value>> for Value {
    fn from(l: Vec<Value>) -> Self {
        Value::List(l)
    }
}

impl Value {
    /// This value's type.
    pub fn ty(&self) -> Type {
        match self {
            Value::Nil => Type::Nil,
            Value::Bool(_) => Type::Bool,
            Value::Int(_) => Type::Int,
            Value::Double(_) => Type::Double,
            Value::String(_) => Type::String,
            Value::Bytes(_) => Type::Bytes,
            Value::Map(_) => Type::Map,
            Value::List(_) => Type::List,
            Value::Time(_) => Type::Time,
            Value::Duration(_) => Type::Duration,
        }
    }

    /// `Nil`.
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// The string inside, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The string inside, or an error naming the actual type.
    pub fn expect_str(&self) -> Result<&str, EvalError> {
        self.as_str().ok_or_else(|| type_error(Type::String, self))
    }
    /// The int inside, or an error naming the actual type.
    pub fn expect_int(&self) -> Result<i64, EvalError> {
        match self {
            Value::Int(i) => Ok(*i),
            _ => Err(type_error(Type::Int, self)),
        }
    }
    /// The number as `f64` (int or float), or an error.
    pub fn expect_f64(&self) -> Result<f64, EvalError> {
        match self {
            Value::Int(i) => Ok(*i as f64),
            Value::Double(f) => Ok(*f),
            _ => Err(type_error(Type::Double, self)),
        }
    }
    /// The bool inside, or an error.
    pub fn expect_bool(&self) -> Result<bool, EvalError> {
        match self {
            Value::Bool(b) => Ok(*b),
            _ => Err(type_error(Type::Bool, self)),
        }
    }
    /// The map inside, or an error.
    pub fn expect_map(&self) -> Result<&Map, EvalError> {
        match self {
            Value::Map(m) => Ok(m),
            _ => Err(type_error(Type::Map, self)),
        }
    }
    /// The list inside, or an error.
    pub fn expect_list(&self) -> Result<&[Value], EvalError> {
        match self {
            Value::List(l) => Ok(l),
            _ => Err(type_error(Type::List, self)),
        }
    }

    /// The value as a string the way upstream's `StringLikeGetter` sees it: strings as they
    /// are, bytes as lower-case hex, numbers and bools formatted, maps and lists as JSON;
    /// `None` for nil.
    pub fn to_string_like(&self) -> Option<String> {
        match self {
            Value::Nil => None,
            Value::String(s) => Some(s.clone()),
            Value::Bytes(b) => Some(hex(b)),
            other => Some(other.to_json()),
        }
    }

    /// A JSON rendering (maps and lists as JSON, bytes as base-16 strings, times and durations
    /// as their nanoseconds).
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        use std::fmt::Write;
        match self {
            Value::Nil => out.push_str("null"),
            Value::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Value::Int(i) | Value::Time(i) | Value::Duration(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Double(f) => {
                if f.is_finite() {
                    let _ = write!(out, "{f}");
                } else {
                    out.push_str("null");
                }
            }
            Value::String(s) => json_string(s, out),
            Value::Bytes(b) => json_string(&hex(b), out),
            Value::List(l) => {
                out.push('[');
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write_json(out);
                }
                out.push(']');
            }
            Value::Map(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_string(k, out);
                    out.push(':');
                    v.write_json(out);
                }
                out.push('}');
            }
        }
    }

    /// From an OTLP value (`string_value_strindex` is read as `Nil`: use
    /// [`Value::from_any_value_with_strings`] where a profiles dictionary is at hand).
    pub fn from_any_value(any: &AnyValue) -> Value {
        Value::from_any_value_with_strings(any, &[])
    }

    /// From an OTLP value, resolving `string_value_strindex` in a profiles string table (an
    /// index out of range reads as `Nil`).
    pub fn from_any_value_with_strings(any: &AnyValue, strings: &[String]) -> Value {
        use any_value::Value as V;
        match &any.value {
            None => Value::Nil,
            Some(V::StringValue(s)) => Value::String(s.clone()),
            Some(V::BoolValue(b)) => Value::Bool(*b),
            Some(V::IntValue(i)) => Value::Int(*i),
            Some(V::DoubleValue(f)) => Value::Double(*f),
            Some(V::BytesValue(b)) => Value::Bytes(b.clone()),
            Some(V::ArrayValue(a)) => {
                Value::List(a.values.iter().map(|v| Value::from_any_value_with_strings(v, strings)).collect())
            }
            Some(V::KvlistValue(kv)) => {
                let mut m = Map(Vec::with_capacity(kv.values.len()));
                for e in &kv.values {
                    let key = if e.key.is_empty() && e.key_strindex != 0 {
                        strings.get(e.key_strindex as usize).cloned().unwrap_or_default()
                    } else {
                        e.key.clone()
                    };
                    let v = e.value.as_ref().map_or(Value::Nil, |v| Value::from_any_value_with_strings(v, strings));
                    m.insert(key, v);
                }
                Value::Map(m)
            }
            Some(V::StringValueStrindex(i)) => {
                strings.get(*i as usize).map_or(Value::Nil, |s| Value::String(s.clone()))
            }
        }
    }

    /// [`Value::to_any_value`], moving strings and bytes instead of copying them.
    pub fn into_any_value(self) -> AnyValue {
        use any_value::Value as V;
        match self {
            Value::String(s) => AnyValue { value: Some(V::StringValue(s)) },
            Value::Bytes(b) => AnyValue { value: Some(V::BytesValue(b)) },
            other => other.to_any_value(),
        }
    }

    /// To an OTLP value: `Nil` is an empty `AnyValue`, times and durations are `Int`
    /// nanoseconds.
    pub fn to_any_value(&self) -> AnyValue {
        use any_value::Value as V;
        let value = match self {
            Value::Nil => None,
            Value::Bool(b) => Some(V::BoolValue(*b)),
            Value::Int(i) | Value::Time(i) | Value::Duration(i) => Some(V::IntValue(*i)),
            Value::Double(f) => Some(V::DoubleValue(*f)),
            Value::String(s) => Some(V::StringValue(s.clone())),
            Value::Bytes(b) => Some(V::BytesValue(b.clone())),
            Value::List(l) => Some(V::ArrayValue(ArrayValue { values: l.iter().map(Value::to_any_value).collect() })),
            Value::Map(m) => Some(V::KvlistValue(KeyValueList { values: m.to_key_values() })),
        };
        AnyValue { value }
    }

    /// OTTL's `==` (LANGUAGE.md "Comparison Rules"): int and float compare numerically, nil
    /// equals only nil (and empty bytes), values of different types are not equal; maps and
    /// lists compare structurally.
    pub fn ottl_eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Nil, Value::Nil) => true,
            (Value::Nil, Value::Bytes(b)) | (Value::Bytes(b), Value::Nil) => b.is_empty(),
            (Value::Int(a), Value::Double(b)) | (Value::Double(b), Value::Int(a)) => (*a as f64) == *b,
            (Value::List(a), Value::List(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.ottl_eq(y)),
            (Value::Map(a), Value::Map(b)) => {
                a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| v.ottl_eq(w)))
            }
            _ => self == other,
        }
    }

    /// OTTL's ordering for `< <= > >=`: `None` when the types do not order (then every
    /// ordering operator is false). Numbers (int and float mixed as float), strings (bytewise),
    /// bools (false < true), bytes, times and durations order; nil, maps and lists do not.
    pub fn ottl_cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Double(a), Value::Double(b)) => a.partial_cmp(b),
            (Value::Int(a), Value::Double(b)) => (*a as f64).partial_cmp(b),
            (Value::Double(a), Value::Int(b)) => a.partial_cmp(&(*b as f64)),
            (Value::String(a), Value::String(b)) => Some(a.as_str().cmp(b.as_str())),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Bytes(a), Value::Bytes(b)) => Some(a.cmp(b)),
            (Value::Time(a), Value::Time(b)) | (Value::Duration(a), Value::Duration(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// OTTL math (`+ - * /`): int with int, float with float (mixing them is an error, as
    /// upstream), and time/duration `+`/`-` per LANGUAGE.md. Integer division truncates; division
    /// by zero is an error; integer overflow wraps.
    pub fn math(&self, op: MathOp, other: &Value) -> Result<Value, EvalError> {
        use MathOp::*;
        use Value::*;
        Ok(match (self, op, other) {
            (Int(_), Div, Int(0)) => return Err(EvalError::new("attempted to divide by 0")),
            (Int(a), Add, Int(b)) => Int(a.wrapping_add(*b)),
            (Int(a), Sub, Int(b)) => Int(a.wrapping_sub(*b)),
            (Int(a), Mul, Int(b)) => Int(a.wrapping_mul(*b)),
            (Int(a), Div, Int(b)) => Int(a.wrapping_div(*b)),
            (Double(_), Div, Double(b)) if *b == 0.0 => return Err(EvalError::new("attempted to divide by 0")),
            (Double(a), Add, Double(b)) => Double(a + b),
            (Double(a), Sub, Double(b)) => Double(a - b),
            (Double(a), Mul, Double(b)) => Double(a * b),
            (Double(a), Div, Double(b)) => Double(a / b),
            (Time(a), Sub, Time(b)) => Duration(a.wrapping_sub(*b)),
            (Time(a), Add, Duration(b)) | (Duration(b), Add, Time(a)) => Time(a.wrapping_add(*b)),
            (Time(a), Sub, Duration(b)) => Time(a.wrapping_sub(*b)),
            (Duration(a), Add, Duration(b)) => Duration(a.wrapping_add(*b)),
            (Duration(a), Sub, Duration(b)) => Duration(a.wrapping_sub(*b)),
            (a, op, b) => {
                return Err(EvalError::new(format!("unsupported math: {} {} {}", a.ty(), op.symbol(), b.ty())))
            }
        })
    }
}

/// The math operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MathOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
}

impl MathOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            MathOp::Add => "+",
            MathOp::Sub => "-",
            MathOp::Mul => "*",
            MathOp::Div => "/",
        }
    }
}

/// `expected T, got U` as an [`EvalError`].
pub fn type_error(expected: Type, got: &Value) -> EvalError {
    EvalError::new(format!("expected {expected}, got {}", got.ty()))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn json_string(s: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_value_round_trip() {
        let mut inner = Map::new();
        inner.insert("b", Value::Bytes(vec![1, 2]));
        let mut m = Map::new();
        m.insert("s", "x".into());
        m.insert("i", 3i64.into());
        m.insert("f", 1.5f64.into());
        m.insert("t", true.into());
        m.insert("n", Value::Nil);
        m.insert("l", Value::List(vec![1i64.into(), "a".into()]));
        m.insert("m", Value::Map(inner));
        let v = Value::Map(m);
        assert_eq!(Value::from_any_value(&v.to_any_value()), v);
    }

    #[test]
    fn strindex_resolves_in_the_dictionary() {
        let strings = vec![String::new(), "svc".to_owned()];
        let any = AnyValue { value: Some(any_value::Value::StringValueStrindex(1)) };
        assert_eq!(Value::from_any_value_with_strings(&any, &strings), Value::from("svc"));
        assert_eq!(Value::from_any_value(&any), Value::Nil);
    }

    #[test]
    fn map_insert_keeps_position() {
        let mut m = Map::new();
        m.insert("a", 1i64.into());
        m.insert("b", 2i64.into());
        m.insert("a", 3i64.into());
        let keys: Vec<_> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(m.get("a"), Some(&Value::Int(3)));
    }

    #[test]
    fn comparison_table() {
        use Ordering::*;
        use Value::*;
        // (left, right, ==, ordering)
        let cases: Vec<(Value, Value, bool, Option<Ordering>)> = vec![
            (Int(1), Int(1), true, Some(Equal)),
            (Int(1), Double(1.0), true, Some(Equal)),
            (Double(2.5), Int(2), false, Some(Greater)),
            (String("a".into()), String("b".into()), false, Some(Less)),
            (Bool(false), Bool(true), false, Some(Less)),
            (Nil, Nil, true, None),
            (Nil, Int(0), false, None),
            (Nil, String(std::string::String::new()), false, None),
            (Nil, Bytes(vec![]), true, None),
            (Int(1), String("1".into()), false, None),
            (Bool(true), Int(1), false, None),
            (List(vec![Int(1)]), List(vec![Double(1.0)]), true, None),
            (Time(5), Time(6), false, Some(Less)),
            (Duration(5), Int(5), false, None),
        ];
        for (a, b, eq, ord) in cases {
            assert_eq!(a.ottl_eq(&b), eq, "{a:?} == {b:?}");
            assert_eq!(a.ottl_cmp(&b), ord, "{a:?} cmp {b:?}");
        }
    }

    #[test]
    fn math_table() {
        use MathOp::*;
        use Value::*;
        let ok = [
            (Int(7), Div, Int(2), Int(3)),
            (Int(-7), Div, Int(2), Int(-3)),
            (Double(1.5), Mul, Double(2.0), Double(3.0)),
            (Time(10), Sub, Time(4), Duration(6)),
            (Duration(3), Add, Time(4), Time(7)),
            (Time(10), Sub, Duration(4), Time(6)),
            (Duration(1), Sub, Duration(4), Duration(-3)),
        ];
        for (a, op, b, want) in ok {
            assert_eq!(a.math(op, &b).unwrap(), want, "{a:?} {op:?} {b:?}");
        }
        for (a, op, b) in [
            (Int(1), Div, Int(0)),
            (Int(1), Add, Double(1.0)),
            (Time(1), Mul, Duration(2)),
            (String("a".into()), Add, String("b".into())),
        ] {
            assert!(a.math(op, &b).is_err(), "{a:?} {op:?} {b:?}");
        }
    }

    #[test]
    fn json_rendering() {
        let mut m = Map::new();
        m.insert("k", Value::List(vec![Value::Int(1), "a\"b".into(), Value::Nil]));
        assert_eq!(Value::Map(m).to_json(), r#"{"k":[1,"a\"b",null]}"#);
    }
}
