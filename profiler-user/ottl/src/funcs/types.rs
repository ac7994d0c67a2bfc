//! Type checks and casts: `Int`, `Double`, `String`, `Bool`, `Is*`, `Len`, `Hex`, `Log`.

use super::fail;
use crate::{
    error::EvalError,
    func::{Args, Function, ParamType as T},
    value::{hex, Value},
};

const VALUE: &[crate::func::Param] = &[super::req("value", T::Any)];

pub(super) static FUNCTIONS: &[Function] = &[
    Function::converter("Int", VALUE, int),
    Function::converter("Double", VALUE, double),
    Function::converter("String", VALUE, |a| Ok(a.value(0).to_string_like().map_or(Value::Nil, Value::String))),
    Function::converter("Bool", VALUE, boolean),
    Function::converter("IsString", VALUE, |a| Ok(Value::Bool(matches!(a.value(0), Value::String(_))))),
    Function::converter("IsInt", VALUE, |a| Ok(Value::Bool(matches!(a.value(0), Value::Int(_))))),
    Function::converter("IsDouble", VALUE, |a| Ok(Value::Bool(matches!(a.value(0), Value::Double(_))))),
    Function::converter("IsBool", VALUE, |a| Ok(Value::Bool(matches!(a.value(0), Value::Bool(_))))),
    Function::converter("IsMap", VALUE, |a| Ok(Value::Bool(matches!(a.value(0), Value::Map(_))))),
    Function::converter("IsList", VALUE, |a| Ok(Value::Bool(matches!(a.value(0), Value::List(_))))),
    Function::converter("IsEmpty", VALUE, |a| Ok(Value::Bool(is_empty(a.value(0))))),
    Function::converter("Len", &[super::req("target", T::Any)], len),
    Function::converter("Hex", VALUE, hex_of),
    Function::converter("Log", VALUE, log),
];

/// Int: floats truncate, bools are 0/1, strings parse as Go's `ParseInt` (base 10, no
/// spaces); anything else, or a failed parse, is nil.
fn int(a: &Args<'_>) -> Result<Value, EvalError> {
    Ok(match a.value(0) {
        Value::Int(i) => Value::Int(*i),
        Value::Double(f) => Value::Int(*f as i64),
        Value::Bool(b) => Value::Int(i64::from(*b)),
        Value::String(s) => s.parse::<i64>().map_or(Value::Nil, Value::Int),
        _ => Value::Nil,
    })
}

fn double(a: &Args<'_>) -> Result<Value, EvalError> {
    Ok(match a.value(0) {
        Value::Double(f) => Value::Double(*f),
        Value::Int(i) => Value::Double(*i as f64),
        Value::Bool(b) => Value::Double(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => parse_go_float(s).map_or(Value::Nil, Value::Double),
        _ => Value::Nil,
    })
}

/// Go's `ParseFloat` accepts `Inf`/`NaN` spellings and underscores only in some forms; the
/// common decimal and exponent forms are what Rust's parser accepts too.
pub(super) fn parse_go_float(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().trim_start_matches(['+', '-']) {
        "inf" | "infinity" | "nan" => s.parse().ok(),
        t if t.is_empty() || t.contains(char::is_alphabetic) && !t.contains('e') => None,
        _ => s.parse().ok(),
    }
}

/// Bool: Go's `ParseBool` spellings for strings, non-zero numbers are true; anything else nil.
fn boolean(a: &Args<'_>) -> Result<Value, EvalError> {
    Ok(match a.value(0) {
        Value::Bool(b) => Value::Bool(*b),
        Value::Int(i) => Value::Bool(*i != 0),
        Value::Double(f) => Value::Bool(*f != 0.0),
        Value::String(s) => match s.as_str() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Value::Bool(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Value::Bool(false),
            _ => Value::Nil,
        },
        _ => Value::Nil,
    })
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Nil => true,
        Value::Bool(b) => !b,
        Value::Int(i) | Value::Time(i) | Value::Duration(i) => *i == 0,
        Value::Double(f) => *f == 0.0,
        Value::String(s) => s.is_empty(),
        Value::Bytes(b) => b.iter().all(|&x| x == 0),
        Value::Map(m) => m.is_empty(),
        Value::List(l) => l.is_empty(),
    }
}

fn len(a: &Args<'_>) -> Result<Value, EvalError> {
    Ok(Value::Int(match a.value(0) {
        Value::String(s) => s.len() as i64,
        Value::Bytes(b) => b.len() as i64,
        Value::List(l) => l.len() as i64,
        Value::Map(m) => m.len() as i64,
        other => return Err(EvalError::new(format!("unsupported type {} for Len", other.ty()))),
    }))
}

/// Hex of the value's bytes as upstream's `ByteSliceLikeGetter` makes them: strings as UTF-8,
/// ints and floats as 8 big-endian bytes, bools as one byte, bytes as they are; nil is nil.
fn hex_of(a: &Args<'_>) -> Result<Value, EvalError> {
    let bytes = match a.value(0) {
        Value::Nil => return Ok(Value::Nil),
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Bytes(b) => b.clone(),
        Value::Int(i) => i.to_be_bytes().to_vec(),
        Value::Double(f) => f.to_bits().to_be_bytes().to_vec(),
        Value::Bool(b) => vec![u8::from(*b)],
        other => return Err(fail("Hex", format!("unsupported type: {}", other.ty()))),
    };
    Ok(Value::String(hex(&bytes)))
}

/// Natural logarithm; strings parse as floats, bools are 0/1; zero or below is an error.
fn log(a: &Args<'_>) -> Result<Value, EvalError> {
    let x = match a.value(0) {
        Value::Int(i) => *i as f64,
        Value::Double(f) => *f,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::String(s) => parse_go_float(s).ok_or_else(|| fail("Log", format!("cannot parse {s:?} as a number")))?,
        other => return Err(fail("Log", format!("unsupported type: {}", other.ty()))),
    };
    if x <= 0.0 {
        return Err(fail("Log", "value must be greater than zero"));
    }
    Ok(Value::Double(x.ln()))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{check, s};
    use crate::Value::{self, Bool, Double, Int, Nil};

    #[test]
    fn cast_table() {
        check(&[
            (r#"Int("50")"#, Ok(Int(50))),
            (r#"Int("2.0")"#, Ok(Nil)),
            (r#"Int(1.9)"#, Ok(Int(1))),
            (r#"Int(-1.9)"#, Ok(Int(-1))),
            (r#"Int(true)"#, Ok(Int(1))),
            (r#"Int({"a":1})"#, Ok(Nil)),
            (r#"Double("2.0")"#, Ok(Double(2.0))),
            (r#"Double("1e3")"#, Ok(Double(1000.0))),
            (r#"Double("x")"#, Ok(Nil)),
            (r#"Double(false)"#, Ok(Double(0.0))),
            (r#"Double(2)"#, Ok(Double(2.0))),
            (r#"Double([1])"#, Ok(Nil)),
            (r#"Bool("true")"#, Ok(Bool(true))),
            (r#"Bool("0")"#, Ok(Bool(false))),
            (r#"Bool("T")"#, Ok(Bool(true))),
            (r#"Bool("yes")"#, Ok(Nil)),
            (r#"Bool(0.0)"#, Ok(Bool(false))),
            (r#"Bool(5)"#, Ok(Bool(true))),
            (r#"Bool(nil)"#, Ok(Nil)),
            (r#"String("test")"#, Ok(s("test"))),
            (r#"String(false)"#, Ok(s("false"))),
            (r#"String([1,2,3])"#, Ok(s("[1,2,3]"))),
            (r#"String(0x0102)"#, Ok(s("0102"))),
            (r#"String(nil)"#, Ok(Nil)),
        ]);
    }

    #[test]
    fn check_table() {
        let t = || Ok(Value::Bool(true));
        let f = || Ok(Value::Bool(false));
        check(&[
            (r#"IsBool(false)"#, t()),
            (r#"IsBool(42)"#, f()),
            (r#"IsDouble(1.5)"#, t()),
            (r#"IsDouble(1)"#, f()),
            (r#"IsInt(1)"#, t()),
            (r#"IsString("a")"#, t()),
            (r#"IsString(nil)"#, f()),
            (r#"IsMap({"a":1})"#, t()),
            (r#"IsList([1])"#, t()),
            (r#"IsEmpty(nil)"#, t()),
            (r#"IsEmpty("")"#, t()),
            (r#"IsEmpty(0)"#, t()),
            (r#"IsEmpty(false)"#, t()),
            (r#"IsEmpty({})"#, t()),
            (r#"IsEmpty([])"#, t()),
            (r#"IsEmpty(0x00000000)"#, t()),
            (r#"IsEmpty(" ")"#, f()),
            (r#"IsEmpty([nil])"#, f()),
            (r#"Len("abc")"#, Ok(Int(3))),
            (r#"Len([1,2])"#, Ok(Int(2))),
            (r#"Len({"a":1})"#, Ok(Int(1))),
            (r#"Len(1)"#, Err("unsupported type")),
        ]);
    }

    #[test]
    fn hex_and_log_table() {
        check(&[
            (r#"Hex(1.1)"#, Ok(s("3ff199999999999a"))),
            (r#"Hex("1")"#, Ok(s("31"))),
            (r#"Hex(true)"#, Ok(s("01"))),
            (r#"Hex(false)"#, Ok(s("00"))),
            (r#"Hex(12)"#, Ok(s("000000000000000c"))),
            (r#"Hex(0x02)"#, Ok(s("02"))),
            (r#"Hex(nil)"#, Ok(Nil)),
            (r#"Hex({"hi":"hi"})"#, Err("unsupported type")),
            (r#"Log(1)"#, Ok(Double(0.0))),
            (r#"Log("1")"#, Ok(Double(0.0))),
            (r#"Log(true)"#, Ok(Double(0.0))),
            (r#"Log(false)"#, Err("greater than zero")),
            (r#"Log(-1.5)"#, Err("greater than zero")),
            (r#"Log(nil)"#, Err("unsupported type")),
        ]);
    }
}
