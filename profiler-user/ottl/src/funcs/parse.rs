//! Parsing: `ParseJSON`, `ParseKeyValue`, `ParseCSV`, `ParseInt`, `ParseSeverity`, `URL`,
//! `IsInCIDR`.

use std::net::IpAddr;

use super::{fail, opt, opt_str, req, string_arg};
use crate::{
    error::EvalError,
    func::{Args, Function, ParamType as T},
    value::{Map, Value},
};

pub(super) static FUNCTIONS: &[Function] = &[
    Function::converter("ParseJSON", &[req("target", T::String)], parse_json),
    Function::converter(
        "ParseKeyValue",
        &[req("target", T::String), opt("delimiter", T::String), opt("pair_delimiter", T::String)],
        parse_key_value,
    ),
    Function::converter(
        "ParseCSV",
        &[
            req("target", T::String),
            req("header", T::String),
            opt("delimiter", T::String),
            opt("header_delimiter", T::String),
            opt("mode", T::String),
        ],
        parse_csv,
    ),
    Function::converter("ParseInt", &[req("target", T::String), req("base", T::Int)], parse_int),
    Function::converter("ParseSeverity", &[req("target", T::Any), req("severity_mapping", T::Map)], parse_severity),
    Function::converter("URL", &[req("url_string", T::String)], url),
    Function::converter("IsInCIDR", &[req("target", T::String), req("networks", T::List)], is_in_cidr),
];

// --- ParseJSON ---------------------------------------------------------------------------------

/// A JSON document read straight into a [`Value`]: objects keep their key order, every
/// number is a float (as upstream's decoder gives `float64`), `null` is nil.
struct Json(Value);

impl<'de> serde::Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor).map(Json)
    }
}

struct JsonVisitor;

impl<'de> serde::de::Visitor<'de> for JsonVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Double(v as f64))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Double(v as f64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Double(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut l = Vec::new();
        while let Some(Json(v)) = seq.next_element()? {
            l.push(v);
        }
        Ok(Value::List(l))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = Map::new();
        while let Some((k, Json(v))) = map.next_entry::<String, Json>()? {
            m.insert(k, v);
        }
        Ok(Value::Map(m))
    }
}

fn parse_json(a: &Args<'_>) -> Result<Value, EvalError> {
    let s = string_arg(a, 0, "ParseJSON")?;
    match serde_json::from_str::<Json>(s) {
        Ok(Json(v @ (Value::Map(_) | Value::List(_)))) => Ok(v),
        Ok(Json(v)) => {
            Err(fail("ParseJSON", format!("could not convert parsed value of type {} to a map or list", v.ty())))
        }
        Err(e) => Err(fail("ParseJSON", e)),
    }
}

// --- ParseKeyValue -----------------------------------------------------------------------------

/// Splits `s` on `delim` outside `"…"` and `'…'` quotes, dropping empty pieces.
fn split_quoted<'s>(s: &'s str, delim: &str) -> Result<Vec<&'s str>, EvalError> {
    let mut out = Vec::new();
    let (mut start, mut quote, mut i) = (0, None::<u8>, 0);
    let b = s.as_bytes();
    while i < b.len() {
        match (quote, b[i]) {
            (None, q @ (b'"' | b'\'')) => quote = Some(q),
            (Some(q), c) if c == q => quote = None,
            // Compared as bytes: `i` walks bytes and may be inside a multi-byte character,
            // where slicing the `str` would panic. A match starts and ends on char boundaries
            // (the delimiter is valid UTF-8), so the slices below are safe.
            (None, _) if b[i..].starts_with(delim.as_bytes()) => {
                out.push(&s[start..i]);
                i += delim.len();
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if let Some(q) = quote {
        return Err(fail("ParseKeyValue", format!("never reached the end of a quoted value (missing {})", q as char)));
    }
    out.push(&s[start..]);
    out.retain(|p| !p.trim().is_empty());
    Ok(out)
}

fn parse_key_value(a: &Args<'_>) -> Result<Value, EvalError> {
    let s = string_arg(a, 0, "ParseKeyValue")?;
    let delim = opt_str(a, 1)?.unwrap_or("=");
    let pair_delim = opt_str(a, 2)?.unwrap_or(" ");
    if s.is_empty() {
        return Err(fail("ParseKeyValue", "cannot parse from empty target"));
    }
    if delim == pair_delim {
        return Err(fail("ParseKeyValue", "pair delimiter cannot be equal to key value delimiter"));
    }
    let mut m = Map::new();
    for pair in split_quoted(s, pair_delim)? {
        let Some((k, v)) = pair.split_once(delim) else {
            return Err(fail("ParseKeyValue", format!("cannot split {pair:?} into 2 items, got 1 item(s)")));
        };
        let unquote = |x: &str| x.trim().trim_matches(['"', '\'']).trim().to_owned();
        let (k, v) = (unquote(k), Value::String(unquote(v)));
        // A repeated key collects its values in a list, in order.
        match m.get_mut(&k) {
            Some(Value::List(l)) => l.push(v),
            Some(prev) => *prev = Value::List(vec![std::mem::take(prev), v]),
            None => m.insert(k, v),
        }
    }
    Ok(Value::Map(m))
}

// --- ParseCSV ----------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum CsvMode {
    Strict,
    LazyQuotes,
    IgnoreQuotes,
}

/// One CSV record as Go's `encoding/csv` reads it (RFC 4180 quoting; `lazy` lets a quote
/// appear inside a field).
fn csv_fields(s: &str, delim: char, lazy: bool) -> Result<Vec<String>, EvalError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None if lazy => break,
                    None => return Err(fail("ParseCSV", "extraneous or missing \" in quoted-field")),
                    Some('"') => match chars.peek() {
                        Some('"') => {
                            field.push('"');
                            chars.next();
                        }
                        Some(&c) if c == delim => break,
                        None => break,
                        Some(_) if lazy => field.push('"'),
                        Some(_) => return Err(fail("ParseCSV", "extraneous or missing \" in quoted-field")),
                    },
                    Some(c) => field.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == delim {
                    break;
                }
                if c == '"' && !lazy {
                    return Err(fail("ParseCSV", "bare \" in non-quoted-field"));
                }
                field.push(c);
                chars.next();
            }
        }
        out.push(field);
        match chars.next() {
            Some(c) if c == delim => continue,
            _ => return Ok(out),
        }
    }
}

fn parse_csv(a: &Args<'_>) -> Result<Value, EvalError> {
    let target = string_arg(a, 0, "ParseCSV")?.trim_matches(['\n', '\r']);
    let header = string_arg(a, 1, "ParseCSV")?;
    let delim = opt_str(a, 2)?.unwrap_or(",");
    let header_delim = opt_str(a, 3)?.unwrap_or(delim);
    let mode = match opt_str(a, 4)?.unwrap_or("strict") {
        "strict" => CsvMode::Strict,
        "lazyQuotes" => CsvMode::LazyQuotes,
        "ignoreQuotes" => CsvMode::IgnoreQuotes,
        other => return Err(fail("ParseCSV", format!("unknown mode: {other}"))),
    };
    let one_char = |d: &str, what: &str| {
        let mut it = d.chars();
        match (it.next(), it.next()) {
            (Some(c), None) => Ok(c),
            _ => Err(fail("ParseCSV", format!("invalid {what} {d:?}: must be a single character"))),
        }
    };
    let (fields, names) = if mode == CsvMode::IgnoreQuotes {
        if delim.is_empty() || header_delim.is_empty() {
            return Err(fail("ParseCSV", "delimiter must not be empty"));
        }
        let split = |s: &str, d: &str| s.split(d).map(str::to_owned).collect::<Vec<_>>();
        (split(target, delim), split(header, header_delim))
    } else {
        let lazy = mode == CsvMode::LazyQuotes;
        (
            csv_fields(target, one_char(delim, "delimiter")?, lazy)?,
            csv_fields(header, one_char(header_delim, "header delimiter")?, lazy)?,
        )
    };
    if fields.len() != names.len() {
        return Err(fail(
            "ParseCSV",
            format!("wrong number of fields: expected {}, found {}", names.len(), fields.len()),
        ));
    }
    Ok(Value::Map(names.into_iter().zip(fields.into_iter().map(Value::String)).collect()))
}

// --- ParseInt ----------------------------------------------------------------------------------

/// Go's `strconv.ParseInt(s, base, 64)`: base 0 reads the `0b`/`0o`/`0`/`0x` prefix and allows
/// `_` between digits.
fn parse_int(a: &Args<'_>) -> Result<Value, EvalError> {
    let s = string_arg(a, 0, "ParseInt")?;
    let base = a.int(1)?;
    let syntax = || fail("ParseInt", format!("strconv.ParseInt: parsing {s:?}: invalid syntax"));
    if base < 0 || base == 1 || base > 36 {
        return Err(fail("ParseInt", format!("strconv.ParseInt: parsing {s:?}: invalid base {base}")));
    }
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if base == 0 {
        let lower = body.to_ascii_lowercase();
        let (r, skip) = if lower.starts_with("0x") {
            (16, 2)
        } else if lower.starts_with("0b") {
            (2, 2)
        } else if lower.starts_with("0o") {
            (8, 2)
        } else if lower.starts_with('0') && body.len() > 1 {
            (8, 1)
        } else {
            (10, 0)
        };
        let rest = &body[skip..];
        // Underscores only between digits (or right after a prefix), as Go's literals allow.
        if rest.starts_with('_') && skip == 0 || rest.ends_with('_') || rest.contains("__") {
            return Err(syntax());
        }
        (r, rest.replace('_', ""))
    } else {
        (base as u32, body.to_owned())
    };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return Err(syntax());
    }
    let signed = if neg { format!("-{digits}") } else { digits };
    i64::from_str_radix(&signed, radix).map(Value::Int).map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
            fail("ParseInt", format!("strconv.ParseInt: parsing {s:?}: value out of range"))
        }
        _ => syntax(),
    })
}

// --- ParseSeverity -----------------------------------------------------------------------------

/// Whether `target` meets one criterion: `{"equals": [..]}` or `{"range": {"min", "max"}}` /
/// `{"range": "2xx"}`.
fn severity_matches(target: &Value, criterion: &Value) -> Result<bool, EvalError> {
    let Value::Map(c) = criterion else {
        return Err(fail("ParseSeverity", format!("a criterion must be a map, got {}", criterion.ty())));
    };
    if let Some(eq) = c.get("equals") {
        let list = eq.expect_list().map_err(|_| fail("ParseSeverity", "\"equals\" must be a list"))?;
        if list.iter().any(|v| v.ottl_eq(target)) {
            return Ok(true);
        }
    }
    if let Some(range) = c.get("range") {
        let (min, max) = match range {
            Value::String(p) => match p.as_str() {
                "2xx" => (200, 299),
                "3xx" => (300, 399),
                "4xx" => (400, 499),
                "5xx" => (500, 599),
                other => return Err(fail("ParseSeverity", format!("unknown range placeholder {other:?}"))),
            },
            Value::Map(r) => {
                let bound = |k: &str| {
                    r.get(k)
                        .and_then(|v| if let Value::Int(i) = v { Some(*i) } else { None })
                        .ok_or_else(|| fail("ParseSeverity", format!("range needs an int {k:?}")))
                };
                (bound("min")?, bound("max")?)
            }
            other => {
                return Err(fail("ParseSeverity", format!("a range must be a map or placeholder, got {}", other.ty())))
            }
        };
        if let Value::Int(i) = target {
            if (min..=max).contains(i) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn parse_severity(a: &Args<'_>) -> Result<Value, EvalError> {
    let target = a.value(0);
    if !matches!(target, Value::String(_) | Value::Int(_)) {
        return Err(fail("ParseSeverity", format!("target must be a string or an int, got {}", target.ty())));
    }
    for (level, criteria) in a.value(1).expect_map()?.iter() {
        let list = criteria
            .expect_list()
            .map_err(|_| fail("ParseSeverity", format!("criteria of {level:?} must be a list")))?;
        for c in list {
            if severity_matches(target, c)? {
                return Ok(Value::from(level));
            }
        }
    }
    Err(fail("ParseSeverity", "no matching log level found for value"))
}

// --- URL ---------------------------------------------------------------------------------------

fn percent_decode(s: &str) -> Result<String, EvalError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(x) = hex else {
                return Err(fail(
                    "URL",
                    format!("invalid URL escape {:?}", s.get(i..(i + 3).min(s.len())).unwrap_or("%")),
                ));
            };
            out.push(x);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| fail("URL", "escape is not UTF-8"))
}

/// A URL split into ECS `url.*` fields the way Go's `url.Parse` splits it: `scheme:`,
/// `//user:pass@host:port`, path (decoded), `?query` (raw), `#fragment` (decoded).
fn url(a: &Args<'_>) -> Result<Value, EvalError> {
    let original = string_arg(a, 0, "URL")?;
    let mut rest = original;
    let mut m = Map::new();
    m.insert("url.original", Value::from(original));
    let (before_frag, fragment) = match rest.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (rest, None),
    };
    rest = before_frag;
    let mut scheme = "";
    if let Some(colon) = rest.find(':') {
        let cand = &rest[..colon];
        let valid = cand.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && cand.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if valid {
            scheme = cand;
            rest = &rest[colon + 1..];
        } else if colon == 0 {
            return Err(fail("URL", "missing protocol scheme"));
        }
    }
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    rest = before_query;
    let (mut user_info, mut host, mut port) = (None, "", None);
    if let Some(auth_and_path) = rest.strip_prefix("//") {
        let end = auth_and_path.find('/').unwrap_or(auth_and_path.len());
        let mut auth = &auth_and_path[..end];
        rest = &auth_and_path[end..];
        if let Some(at) = auth.rfind('@') {
            user_info = Some(&auth[..at]);
            auth = &auth[at + 1..];
        }
        host = auth;
        let port_at = if auth.starts_with('[') { auth.find("]:").map(|i| i + 1) } else { auth.rfind(':') };
        if let Some(i) = port_at {
            let p = &auth[i + 1..];
            if !p.is_empty() {
                port = Some(p.parse::<u16>().map_err(|_| fail("URL", format!("invalid port {p:?} after host")))?);
            }
            host = &auth[..i];
        }
    }
    let path = percent_decode(rest)?;
    m.insert("url.scheme", Value::from(scheme.to_ascii_lowercase()));
    m.insert("url.domain", Value::from(host.trim_start_matches('[').trim_end_matches(']')));
    m.insert("url.path", Value::String(path.clone()));
    if let Some(f) = fragment.filter(|f| !f.is_empty()) {
        m.insert("url.fragment", Value::String(percent_decode(f)?));
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        m.insert("url.query", Value::from(q));
    }
    if let Some(p) = port {
        m.insert("url.port", Value::Int(i64::from(p)));
    }
    if let Some(ui) = user_info.filter(|u| !u.is_empty()) {
        m.insert("url.user_info", Value::from(ui));
        let (user, pass) = ui.split_once(':').map_or((ui, None), |(u, p)| (u, Some(p)));
        m.insert("url.username", Value::String(percent_decode(user)?));
        if let Some(p) = pass {
            m.insert("url.password", Value::String(percent_decode(p)?));
        }
    }
    let last = path.rsplit('/').next().unwrap_or("");
    if let Some((_, ext)) = last.rsplit_once('.') {
        if !ext.is_empty() {
            m.insert("url.extension", Value::from(ext));
        }
    }
    Ok(Value::Map(m))
}

// --- IsInCIDR ----------------------------------------------------------------------------------

fn in_network(ip: IpAddr, net: &str) -> Result<bool, EvalError> {
    let bad = || fail("IsInCIDR", format!("invalid CIDR address: {net}"));
    let (addr, bits) = net.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let bits: u32 = bits.parse().map_err(|_| bad())?;
    Ok(match (ip, addr) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => return Err(bad()),
        _ => false,
    })
}

/// Whether the target IP falls in any network; a target that is not an IP is `false`, a bad
/// network an error.
fn is_in_cidr(a: &Args<'_>) -> Result<Value, EvalError> {
    let target = string_arg(a, 0, "IsInCIDR")?;
    let nets = a.strings(1)?;
    let Ok(ip) = target.parse::<IpAddr>() else { return Ok(Value::Bool(false)) };
    for n in nets {
        if in_network(ip, n)? {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{check, s};

    /// Fuzz finding F1: the delimiter search walked bytes and sliced inside `é`.
    #[test]
    fn key_value_pairs_with_non_ascii_text() {
        let got = super::split_quoted("é=ü a=b", " ").unwrap();
        assert_eq!(got, ["é=ü", "a=b"]);
        assert_eq!(super::split_quoted("é", " ").unwrap(), ["é"]);
        assert_eq!(super::split_quoted("aéb→c", "→").unwrap(), ["aéb", "c"]);
    }
    use crate::Value::{self, Bool, Double, Int, List, Map, Nil};

    fn map(pairs: &[(&str, Value)]) -> Value {
        Map(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
    }

    #[test]
    fn json_table() {
        check(&[
            (r#"ParseJSON("{\"attr\":true}")"#, Ok(map(&[("attr", Bool(true))]))),
            (r#"ParseJSON("[\"attr1\",\"attr2\"]")"#, Ok(List(vec![s("attr1"), s("attr2")]))),
            (
                r#"ParseJSON("{\"n\":1,\"f\":1.5,\"z\":null,\"o\":{\"l\":[1,\"a\"]}}")"#,
                Ok(map(&[
                    ("n", Double(1.0)),
                    ("f", Double(1.5)),
                    ("z", Nil),
                    ("o", map(&[("l", List(vec![Double(1.0), s("a")]))])),
                ])),
            ),
            (r#"ParseJSON("{")"#, Err("ParseJSON")),
            (r#"ParseJSON("1")"#, Err("to a map or list")),
            (r#"ParseJSON(1)"#, Err("must be a string")),
        ]);
    }

    #[test]
    fn key_value_table() {
        check(&[
            (r#"ParseKeyValue("k1=v1 k2=v2 k3=v3")"#, Ok(map(&[("k1", s("v1")), ("k2", s("v2")), ("k3", s("v3"))]))),
            (
                r#"ParseKeyValue("k1!v1_k2!v2_k3!v3", "!", "_")"#,
                Ok(map(&[("k1", s("v1")), ("k2", s("v2")), ("k3", s("v3"))])),
            ),
            (r#"ParseKeyValue("a=\"x y\"   b='1 2'")"#, Ok(map(&[("a", s("x y")), ("b", s("1 2"))]))),
            (r#"ParseKeyValue("a=1=2")"#, Ok(map(&[("a", s("1=2"))]))),
            (r#"ParseKeyValue("a=1 a=2 a=3")"#, Ok(map(&[("a", List(vec![s("1"), s("2"), s("3")]))]))),
            (r#"ParseKeyValue("")"#, Err("empty target")),
            (r#"ParseKeyValue("a=1", "=", "=")"#, Err("cannot be equal")),
            (r#"ParseKeyValue("a=1 b")"#, Err("cannot split")),
            (r#"ParseKeyValue("a=\"1 b=2")"#, Err("quoted value")),
        ]);
    }

    #[test]
    fn csv_table() {
        let joe =
            || map(&[("phone", s("999-999-9999")), ("name", s("Joe Smith")), ("email", s("joe.smith@example.com"))]);
        check(&[
            (r#"ParseCSV("999-999-9999,Joe Smith,joe.smith@example.com", "phone,name,email")"#, Ok(joe())),
            (
                r#"ParseCSV("999-999-9999|Joe Smith|joe.smith@example.com\n", "phone|name|email", delimiter="|")"#,
                Ok(joe()),
            ),
            (
                r#"ParseCSV("999-999-9999|Joe Smith|joe.smith@example.com", "phone,name,email", delimiter="|", header_delimiter=",")"#,
                Ok(joe()),
            ),
            (r#"ParseCSV("\"a,b\",\"c\"\"d\"", "x,y")"#, Ok(map(&[("x", s("a,b")), ("y", s("c\"d"))]))),
            (
                r#"ParseCSV("\"555-555-5556,Joe Smith\",joe.smith@example.com", "phone,name,email", mode="ignoreQuotes")"#,
                Ok(map(&[
                    ("phone", s("\"555-555-5556")),
                    ("name", s("Joe Smith\"")),
                    ("email", s("joe.smith@example.com")),
                ])),
            ),
            (r#"ParseCSV("a\"b,c", "x,y", mode="lazyQuotes")"#, Ok(map(&[("x", s("a\"b")), ("y", s("c"))]))),
            (r#"ParseCSV("a\"b,c", "x,y")"#, Err("bare \"")),
            (r#"ParseCSV("\"a\"b,c", "x,y")"#, Err("extraneous")),
            (r#"ParseCSV("a,b,c", "x,y")"#, Err("wrong number of fields")),
            (r#"ParseCSV("a,b", "x,y", mode="fast")"#, Err("unknown mode")),
            (r#"ParseCSV("a,b", "x,y", delimiter="||")"#, Err("single character")),
        ]);
    }

    #[test]
    fn parse_int_table() {
        check(&[
            (r#"ParseInt("12345", 10)"#, Ok(Int(12345))),
            (r#"ParseInt("0xAA", 0)"#, Ok(Int(170))),
            (r#"ParseInt("AA", 16)"#, Ok(Int(170))),
            (r#"ParseInt("-20", 8)"#, Ok(Int(-16))),
            (r#"ParseInt("0b1111_0000", 0)"#, Ok(Int(240))),
            (r#"ParseInt("0b10110", 0)"#, Ok(Int(22))),
            (r#"ParseInt("0xFF", 0)"#, Ok(Int(255))),
            (r#"ParseInt("-0xFF", 0)"#, Ok(Int(-255))),
            (r#"ParseInt("-0o123", 0)"#, Ok(Int(-83))),
            (r#"ParseInt("0123", 0)"#, Ok(Int(83))),
            (r#"ParseInt("1_000", 10)"#, Err("invalid syntax")),
            (r#"ParseInt("notANumber", 10)"#, Err("invalid syntax")),
            (r#"ParseInt("9223372036854775808", 10)"#, Err("out of range")),
            (r#"ParseInt("1", -1)"#, Err("invalid base")),
        ]);
    }

    #[test]
    fn severity_table() {
        let mapping = r#"{"info":[{"equals": ["inf"]}, {"range":{"min":200, "max":299}}], "error":[{"range":"4xx"}, {"equals": ["err", "error"]}]}"#;
        let row = |t: &str| format!("ParseSeverity({t}, {mapping})");
        let rows = [
            (row(r#""inf""#), Ok(s("info"))),
            (row("250"), Ok(s("info"))),
            (row("404"), Ok(s("error"))),
            (row(r#""error""#), Ok(s("error"))),
            (row(r#""debug""#), Err("no matching log level")),
            (row("1.5"), Err("string or an int")),
        ];
        for (expr, want) in rows {
            check(&[(expr.as_str(), want)]);
        }
    }

    #[test]
    fn url_table() {
        check(&[
            (
                r#"URL("http://www.example.com")"#,
                Ok(map(&[
                    ("url.original", s("http://www.example.com")),
                    ("url.scheme", s("http")),
                    ("url.domain", s("www.example.com")),
                    ("url.path", s("")),
                ])),
            ),
            (
                r#"URL("http://myusername:mypassword@www.example.com:80/foo.gif?key1=val1&key2=val2#fragment")"#,
                Ok(map(&[
                    (
                        "url.original",
                        s("http://myusername:mypassword@www.example.com:80/foo.gif?key1=val1&key2=val2#fragment"),
                    ),
                    ("url.scheme", s("http")),
                    ("url.domain", s("www.example.com")),
                    ("url.path", s("/foo.gif")),
                    ("url.fragment", s("fragment")),
                    ("url.query", s("key1=val1&key2=val2")),
                    ("url.port", Int(80)),
                    ("url.user_info", s("myusername:mypassword")),
                    ("url.username", s("myusername")),
                    ("url.password", s("mypassword")),
                    ("url.extension", s("gif")),
                ])),
            ),
            (
                r#"URL("https://[::1]:8443/a%20b")"#,
                Ok(map(&[
                    ("url.original", s("https://[::1]:8443/a%20b")),
                    ("url.scheme", s("https")),
                    ("url.domain", s("::1")),
                    ("url.path", s("/a b")),
                    ("url.port", Int(8443)),
                ])),
            ),
            (r#"URL("http://h:port/")"#, Err("invalid port")),
            (r#"URL("/p%zz")"#, Err("invalid URL escape")),
            (r#"URL(nil)"#, Err("must be a string")),
        ]);
    }

    #[test]
    fn cidr_table() {
        check(&[
            (r#"IsInCIDR("192.168.1.10", ["192.168.0.0/16"])"#, Ok(Bool(true))),
            (r#"IsInCIDR("10.1.2.3", ["192.168.0.0/16", "10.0.0.0/8"])"#, Ok(Bool(true))),
            (r#"IsInCIDR("11.1.2.3", ["192.168.0.0/16", "10.0.0.0/8"])"#, Ok(Bool(false))),
            (r#"IsInCIDR("2001:db8::1", ["2001:db8::/32"])"#, Ok(Bool(true))),
            (r#"IsInCIDR("2001:db8::1", ["10.0.0.0/8"])"#, Ok(Bool(false))),
            (r#"IsInCIDR("not an ip", ["10.0.0.0/8"])"#, Ok(Bool(false))),
            (r#"IsInCIDR("10.0.0.1", ["10.0.0.0/33"])"#, Err("invalid CIDR")),
            (r#"IsInCIDR("10.0.0.1", ["10.0.0.0"])"#, Err("invalid CIDR")),
        ]);
    }
}
