//! Strings: case, trimming, prefixes, splitting, formatting, regex extraction.

use std::fmt::Write;

use super::{fail, opt, opt_str, req, string_arg};
use crate::{
    error::EvalError,
    func::{Args, Function, ParamType as T},
    value::{Map, Value},
};

pub(super) static FUNCTIONS: &[Function] = &[
    Function::converter("Concat", &[req("vals", T::List), req("delimiter", T::String)], concat),
    Function::converter("ConvertCase", &[req("target", T::Any), req("to_case", T::String)], convert_case),
    Function::converter("ToCamelCase", &[req("target", T::String)], |a| case(a, "ToCamelCase", camel)),
    Function::converter("ToSnakeCase", &[req("target", T::String)], |a| case(a, "ToSnakeCase", snake)),
    Function::converter("ToLowerCase", &[req("target", T::String)], |a| {
        Ok(a.value(0).to_string_like().map_or(Value::Nil, |s| Value::String(s.to_lowercase())))
    }),
    Function::converter("ToUpperCase", &[req("target", T::String)], |a| {
        Ok(a.value(0).to_string_like().map_or(Value::Nil, |s| Value::String(s.to_uppercase())))
    }),
    Function::converter("Trim", &[req("target", T::String), opt("replacement", T::String)], trim),
    Function::converter("TrimPrefix", &[req("value", T::String), req("prefix", T::String)], |a| {
        let s = string_arg(a, 0, "TrimPrefix")?;
        Ok(Value::from(s.strip_prefix(a.str(1)?).unwrap_or(s)))
    }),
    Function::converter("TrimSuffix", &[req("value", T::String), req("suffix", T::String)], |a| {
        let s = string_arg(a, 0, "TrimSuffix")?;
        Ok(Value::from(s.strip_suffix(a.str(1)?).unwrap_or(s)))
    }),
    Function::converter("HasPrefix", &[req("value", T::String), req("prefix", T::String)], |a| {
        Ok(Value::Bool(string_arg(a, 0, "HasPrefix")?.starts_with(a.str(1)?)))
    }),
    Function::converter("HasSuffix", &[req("value", T::String), req("suffix", T::String)], |a| {
        Ok(Value::Bool(string_arg(a, 0, "HasSuffix")?.ends_with(a.str(1)?)))
    }),
    Function::converter("Split", &[req("target", T::String), req("delimiter", T::String)], split),
    Function::converter(
        "Substring",
        &[req("target", T::String), req("start", T::Int), req("length", T::Int), opt("utf8_safe", T::Bool)],
        substring,
    ),
    Function::converter("Format", &[req("format", T::String), req("vals", T::List)], format),
    Function::converter("IsMatch", &[req("target", T::Any), req("pattern", T::Regex)], is_match),
    Function::converter("ExtractPatterns", &[req("target", T::String), req("pattern", T::Regex)], extract_patterns),
    Function::converter(
        "ToKeyValueString",
        &[
            req("target", T::Map),
            opt("delimiter", T::String),
            opt("pair_delimiter", T::String),
            opt("sort_output", T::Bool),
        ],
        to_key_value_string,
    ),
    Function::converter("IsValidLuhn", &[req("value", T::Any)], is_valid_luhn),
];

fn concat(a: &Args<'_>) -> Result<Value, EvalError> {
    let delim = a.str(1)?;
    let mut out = String::new();
    for (i, v) in a.value(0).expect_list()?.iter().enumerate() {
        if i > 0 {
            out.push_str(delim);
        }
        out.push_str(&v.to_string_like().unwrap_or_else(|| "<nil>".to_owned()));
    }
    Ok(Value::String(out))
}

fn convert_case(a: &Args<'_>) -> Result<Value, EvalError> {
    let f: fn(&str) -> String = match a.str(1)? {
        "lower" => str::to_lowercase,
        "upper" => str::to_uppercase,
        "snake" => snake,
        "camel" => camel,
        other => {
            return Err(fail(
                "ConvertCase",
                format!("invalid case: {other}, allowed cases are: lower, upper, snake, camel"),
            ))
        }
    };
    match a.value(0) {
        Value::Nil => Ok(Value::Nil),
        Value::String(s) => Ok(Value::String(f(s))),
        other => Err(fail("ConvertCase", format!("expected string but got {}", other.ty()))),
    }
}

fn case(a: &Args<'_>, name: &str, f: fn(&str) -> String) -> Result<Value, EvalError> {
    match a.value(0) {
        Value::Nil => Ok(Value::Nil),
        _ => Ok(Value::String(f(string_arg(a, 0, name)?))),
    }
}

/// snake_case the way upstream's case library does it: a boundary where letter case or
/// digit-ness changes, an acronym kept as one word (`CPUUtilization` → `cpu_utilization`),
/// space, `-`, `.` and `_` as separators.
fn snake(s: &str) -> String {
    let b = s.trim().as_bytes();
    let mut out = Vec::with_capacity(b.len() + 4);
    for (i, &c) in b.iter().enumerate() {
        let (cap, low, num) = (c.is_ascii_uppercase(), c.is_ascii_lowercase(), c.is_ascii_digit());
        let lc = c.to_ascii_lowercase();
        if let Some(&n) = b.get(i + 1) {
            let (ncap, nlow, nnum) = (n.is_ascii_uppercase(), n.is_ascii_lowercase(), n.is_ascii_digit());
            if (cap && (nlow || nnum)) || (low && (ncap || nnum)) || (num && (ncap || nlow)) {
                if cap && nlow && i > 0 && b[i - 1].is_ascii_uppercase() {
                    out.push(b'_');
                }
                out.push(lc);
                if low || num || nnum {
                    out.push(b'_');
                }
                continue;
            }
        }
        out.push(if matches!(c, b' ' | b'_' | b'-' | b'.') { b'_' } else { lc });
    }
    String::from_utf8(out).unwrap_or_default()
}

/// CamelCase (first letter upper) the way upstream's case library does it: separators dropped
/// and the next letter capitalised, a letter after a digit capitalised, a run of capitals
/// lowered after its first.
fn camel(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let (mut cap_next, mut prev_cap) = (true, false);
    for &c in s.trim().as_bytes() {
        let (cap, low) = (c.is_ascii_uppercase(), c.is_ascii_lowercase());
        let v = if cap_next {
            c.to_ascii_uppercase()
        } else if prev_cap && cap {
            c.to_ascii_lowercase()
        } else {
            c
        };
        prev_cap = cap;
        if cap || low {
            out.push(v);
            cap_next = false;
        } else if c.is_ascii_digit() {
            out.push(v);
            cap_next = true;
        } else if c.is_ascii() {
            cap_next = matches!(c, b'_' | b' ' | b'-' | b'.');
        } else {
            out.push(c);
            cap_next = false;
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// `Trim`: removes leading and trailing characters in the cut set (default a space).
fn trim(a: &Args<'_>) -> Result<Value, EvalError> {
    let s = string_arg(a, 0, "Trim")?;
    let set = opt_str(a, 1)?.unwrap_or(" ");
    Ok(Value::from(s.trim_matches(|c| set.contains(c))))
}

fn split(a: &Args<'_>) -> Result<Value, EvalError> {
    let Some(s) = a.value(0).to_string_like() else { return Ok(Value::Nil) };
    let d = a.str(1)?;
    if d.is_empty() {
        return Ok(Value::List(s.chars().map(|c| Value::String(c.to_string())).collect()));
    }
    Ok(Value::List(s.split(d).map(|p| Value::String(p.to_owned())).collect()))
}

fn substring(a: &Args<'_>) -> Result<Value, EvalError> {
    let s = string_arg(a, 0, "Substring")?;
    let (start, length) = (a.int(1)?, a.int(2)?);
    let utf8_safe = a.get(3).map(Value::expect_bool).transpose()?.unwrap_or(false);
    if start < 0 {
        return Err(EvalError::new(format!("invalid start for substring function, {start} cannot be negative")));
    }
    if length <= 0 {
        return Err(EvalError::new(format!(
            "invalid length for substring function, {length} cannot be negative or zero"
        )));
    }
    let (mut start, mut end) = (start as usize, (start as usize).saturating_add(length as usize));
    if end > s.len() {
        return Err(EvalError::new(format!(
            "invalid range for substring function, {end} cannot be past the end of the string"
        )));
    }
    if utf8_safe {
        while !s.is_char_boundary(start) {
            start += 1;
        }
        while end > start && !s.is_char_boundary(end) {
            end -= 1;
        }
    }
    s.get(start..end)
        .map(|x| Value::String(x.to_owned()))
        .ok_or_else(|| EvalError::new("invalid range for substring function: not on a character boundary"))
}

fn is_match(a: &Args<'_>) -> Result<Value, EvalError> {
    let re = a.regex(1)?;
    Ok(Value::Bool(a.value(0).to_string_like().is_some_and(|s| re.is_match(&s))))
}

fn extract_patterns(a: &Args<'_>) -> Result<Value, EvalError> {
    let re = a.regex(1)?;
    if re.capture_names().flatten().next().is_none() {
        return Err(fail("ExtractPatterns", "at least 1 named capture group must be supplied in the given regex"));
    }
    let s = string_arg(a, 0, "ExtractPatterns")?;
    let mut m = Map::new();
    if let Some(caps) = re.captures(s) {
        for name in re.capture_names().flatten() {
            // An optional group that did not take part reads as an empty string, as in Go.
            let v = caps.name(name).map_or("", |c| c.as_str());
            m.insert(name, Value::from(v));
        }
    }
    Ok(Value::Map(m))
}

fn to_key_value_string(a: &Args<'_>) -> Result<Value, EvalError> {
    let m = a.value(0).expect_map()?;
    let delim = opt_str(a, 1)?.unwrap_or("=");
    let pair = opt_str(a, 2)?.unwrap_or(" ");
    let sort = a.get(3).map(Value::expect_bool).transpose()?.unwrap_or(false);
    if delim == pair {
        return Err(fail("ToKeyValueString", "delimiter cannot be set to the same value as pair_delimiter"));
    }
    let quote = |s: String| {
        if s.contains(delim) || s.contains(pair) {
            format!("\"{}\"", s.replace('"', "\\\""))
        } else {
            s
        }
    };
    let mut pairs: Vec<(String, String)> =
        m.iter().map(|(k, v)| (quote(k.to_owned()), quote(v.to_string_like().unwrap_or_default()))).collect();
    if sort {
        pairs.sort();
    }
    let parts: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}{delim}{v}")).collect();
    Ok(Value::String(parts.join(pair)))
}

fn is_valid_luhn(a: &Args<'_>) -> Result<Value, EvalError> {
    let digits = match a.value(0) {
        Value::String(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => return Err(fail("IsValidLuhn", format!("unsupported type: {}", other.ty()))),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail("IsValidLuhn", "value must consist of digits only"));
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let d = d * 2;
                if d > 9 {
                    d - 9
                } else {
                    d
                }
            } else {
                d
            }
        })
        .sum();
    Ok(Value::Bool(sum.is_multiple_of(10)))
}

// --- Format: Go's fmt.Sprintf verbs over OTTL values ------------------------------------------

fn format(a: &Args<'_>) -> Result<Value, EvalError> {
    let f = string_arg(a, 0, "Format")?;
    Ok(Value::String(sprintf(f, a.value(1).expect_list()?)))
}

/// Go's type name for a value, as `%!d(string=x)` and `%T` print it.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Nil => "<nil>",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int64",
        Value::Double(_) => "float64",
        Value::String(_) => "string",
        Value::Bytes(_) => "[]uint8",
        Value::Map(_) => "map[string]interface {}",
        Value::List(_) => "[]interface {}",
        Value::Time(_) => "time.Time",
        Value::Duration(_) => "time.Duration",
    }
}

/// `%v` of a value.
fn go_plain(v: &Value) -> String {
    match v {
        Value::Nil => "<nil>".to_owned(),
        Value::String(s) => s.clone(),
        Value::Double(f) => go_float_g(*f, None),
        Value::Bytes(b) => format!("{b:?}").replace(',', ""),
        other => other.to_string_like().unwrap_or_default(),
    }
}

/// Go's `%g` (shortest representation, exponent for large or small magnitudes).
fn go_float_g(f: f64, prec: Option<usize>) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    let s = match prec {
        Some(p) => format!("{:.*e}", p.saturating_sub(1), f),
        None => format!("{f:e}"),
    };
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let limit = prec.map_or(21, |p| p.max(1) as i32);
    if exp < -4 || exp >= limit {
        let mant =
            if prec.is_some() && mant.contains('.') { mant.trim_end_matches('0').trim_end_matches('.') } else { mant };
        format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        let digits = mant.replace(['.', '-'], "").len() as i32;
        let decimals = (digits - 1 - exp).max(0) as usize;
        let out = format!("{f:.decimals$}");
        if prec.is_some() && out.contains('.') {
            out.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            out
        }
    }
}

struct Spec {
    minus: bool,
    plus: bool,
    zero: bool,
    space: bool,
    sharp: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

fn pad(spec: &Spec, body: String, numeric: bool) -> String {
    let Some(w) = spec.width else { return body };
    let n = body.chars().count();
    if n >= w {
        return body;
    }
    let fill = w - n;
    if spec.minus {
        body + &" ".repeat(fill)
    } else if spec.zero && numeric {
        let (sign, digits) = match body.as_bytes().first() {
            Some(b'-' | b'+' | b' ') => body.split_at(1),
            _ => ("", body.as_str()),
        };
        format!("{sign}{}{digits}", "0".repeat(fill))
    } else {
        " ".repeat(fill) + &body
    }
}

fn signed(spec: &Spec, negative: bool, digits: String) -> String {
    let sign = if negative {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    };
    format!("{sign}{digits}")
}

fn format_one(spec: &Spec, verb: char, v: &Value) -> Option<(String, bool)> {
    Some(match (verb, v) {
        ('v', Value::Int(i)) | ('d', Value::Int(i)) => (signed(spec, *i < 0, i.unsigned_abs().to_string()), true),
        ('v' | 'g', Value::Double(f)) => (signed(spec, f.is_sign_negative(), go_float_g(f.abs(), spec.prec)), true),
        ('v', _) => (go_plain(v), false),
        ('b', Value::Int(i)) => (signed(spec, *i < 0, format!("{:b}", i.unsigned_abs())), true),
        ('o', Value::Int(i)) => (signed(spec, *i < 0, format!("{:o}", i.unsigned_abs())), true),
        ('x', Value::Int(i)) => {
            (signed(spec, *i < 0, format!("{}{:x}", if spec.sharp { "0x" } else { "" }, i.unsigned_abs())), true)
        }
        ('X', Value::Int(i)) => {
            (signed(spec, *i < 0, format!("{}{:X}", if spec.sharp { "0X" } else { "" }, i.unsigned_abs())), true)
        }
        ('x', Value::String(s)) => (crate::value::hex(s.as_bytes()), false),
        ('X', Value::String(s)) => (crate::value::hex(s.as_bytes()).to_uppercase(), false),
        ('x', Value::Bytes(b)) => (crate::value::hex(b), false),
        ('X', Value::Bytes(b)) => (crate::value::hex(b).to_uppercase(), false),
        ('c', Value::Int(i)) => (char::from_u32(*i as u32).unwrap_or('\u{FFFD}').to_string(), false),
        ('f' | 'F', Value::Double(f)) => {
            (signed(spec, f.is_sign_negative(), format!("{:.*}", spec.prec.unwrap_or(6), f.abs())), true)
        }
        ('e', Value::Double(f)) => {
            let s = format!("{:.*e}", spec.prec.unwrap_or(6), f.abs());
            let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
            let e: i32 = e.parse().unwrap_or(0);
            (signed(spec, f.is_sign_negative(), format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())), true)
        }
        ('s', Value::String(s)) => (spec.prec.map_or(s.clone(), |p| s.chars().take(p).collect()), false),
        ('s', Value::Bytes(b)) => (String::from_utf8_lossy(b).into_owned(), false),
        ('s', Value::Map(_) | Value::List(_)) => (go_plain(v), false),
        ('q', Value::String(s)) => (format!("{s:?}"), false),
        ('t', Value::Bool(b)) => (b.to_string(), false),
        ('T', _) => (go_type(v).to_owned(), false),
        _ => return None,
    })
}

/// Go's `fmt.Sprintf` for the verbs OTTL values can meet (`%v %s %d %f %e %g %x %X %o %b %c
/// %q %t %T %%`, flags `-+ 0#`, width and precision). Mismatches print as Go prints them:
/// `%!d(string=x)`, `%!d(MISSING)`, `%!(EXTRA int64=1)`.
fn sprintf(f: &str, args: &[Value]) -> String {
    let mut out = String::with_capacity(f.len() + 16);
    let mut chars = f.chars().peekable();
    let mut next = 0;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec =
            Spec { minus: false, plus: false, zero: false, space: false, sharp: false, width: None, prec: None };
        while let Some(&fl) = chars.peek() {
            match fl {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '0' => spec.zero = true,
                ' ' => spec.space = true,
                '#' => spec.sharp = true,
                _ => break,
            }
            chars.next();
        }
        let num = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
            let mut n: Option<usize> = None;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = Some(n.unwrap_or(0) * 10 + d as usize);
                chars.next();
            }
            n
        };
        spec.width = num(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.prec = Some(num(&mut chars).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(v) = args.get(next) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next += 1;
        match format_one(&spec, verb, v) {
            Some((body, numeric)) => out.push_str(&pad(&spec, body, numeric)),
            None => {
                let _ = write!(out, "%!{verb}({}={})", go_type(v), go_plain(v));
            }
        }
    }
    if next < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[next..].iter().map(|v| format!("{}={}", go_type(v), go_plain(v))).collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{check, s};
    use crate::Value;

    #[test]
    fn case_and_trim_table() {
        check(&[
            (r#"ConvertCase("simpleString", "snake")"#, Ok(s("simple_string"))),
            (r#"ConvertCase("simple_string", "snake")"#, Ok(s("simple_string"))),
            (r#"ConvertCase("CPUUtilizationMetric", "snake")"#, Ok(s("cpu_utilization_metric"))),
            (r#"ConvertCase("simple-string", "snake")"#, Ok(s("simple_string"))),
            (r#"ConvertCase("", "snake")"#, Ok(s(""))),
            (r#"ConvertCase(nil, "snake")"#, Ok(Value::Nil)),
            (r#"ConvertCase("my_metric", "camel")"#, Ok(s("MyMetric"))),
            (r#"ConvertCase("MY_METRIC", "lower")"#, Ok(s("my_metric"))),
            (r#"ConvertCase("my_metric", "upper")"#, Ok(s("MY_METRIC"))),
            (r#"ConvertCase("x", "kebab")"#, Err("invalid case: kebab")),
            (r#"ConvertCase(1, "snake")"#, Err("expected string but got int")),
            (r#"ToCamelCase("my_metric_name")"#, Ok(s("MyMetricName"))),
            (r#"ToSnakeCase("MyMetricName")"#, Ok(s("my_metric_name"))),
            (r#"ToLowerCase("MyMetricName")"#, Ok(s("mymetricname"))),
            (r#"ToUpperCase("MyMetricName")"#, Ok(s("MYMETRICNAME"))),
            (r#"Trim(" this is a test ", " ")"#, Ok(s("this is a test"))),
            (r#"Trim("!!this is a test!!", "!!")"#, Ok(s("this is a test"))),
            (r#"Trim("  x  ")"#, Ok(s("x"))),
            (r#"Trim(nil)"#, Err("must be a string")),
            (r#"TrimPrefix("ingest_service", "ingest_")"#, Ok(s("service"))),
            (r#"TrimPrefix("service", "ingest_")"#, Ok(s("service"))),
            (r#"TrimSuffix("ingest_service", "_service")"#, Ok(s("ingest"))),
            (r#"HasPrefix("ingest_service", "ingest_")"#, Ok(Value::Bool(true))),
            (r#"HasPrefix("service", "ingest_")"#, Ok(Value::Bool(false))),
            (r#"HasSuffix("ingest_service", "_service")"#, Ok(Value::Bool(true))),
            (r#"HasSuffix(Len("a"), "_service")"#, Err("expected string but got int")),
        ]);
    }

    #[test]
    fn split_substring_match_table() {
        check(&[
            (r#"Split("A|B|C", "|")"#, Ok(Value::List(vec![s("A"), s("B"), s("C")]))),
            (r#"Substring("123456789", 0, 3)"#, Ok(s("123"))),
            (r#"Substring("一二三", 0, 4, true)"#, Ok(s("一"))),
            (r#"Substring("一二三", 1, 4, true)"#, Ok(s(""))),
            (r#"Substring("一二三", 1, 5, true)"#, Ok(s("二"))),
            (r#"Substring("一二三", 0, 4)"#, Err("character boundary")),
            (r#"Substring("123", 1, 5)"#, Err("past the end")),
            (r#"Substring("123", -1, 1)"#, Err("cannot be negative")),
            (r#"IsMatch("string", ".*ring")"#, Ok(Value::Bool(true))),
            (r#"IsMatch(nil, ".*")"#, Ok(Value::Bool(false))),
            (
                r#"ExtractPatterns("k8s change GIT_SHA=abc123 done", "GIT_SHA=(?P<git_sha>\\w+)")"#,
                Ok(Value::Map([("git_sha".to_owned(), s("abc123"))].into_iter().collect())),
            ),
            (r#"ExtractPatterns("nothing", "GIT_SHA=(?P<sha>\\w+)")"#, Ok(Value::Map(Default::default()))),
            (r#"ExtractPatterns("x", "(\\w+)")"#, Err("named capture group")),
            (r#"ExtractPatterns(Len("a"), "(?P<a>\\w+)")"#, Err("expected string but got int")),
        ]);
    }

    #[test]
    fn format_table() {
        check(&[
            (r#"Format("%02d", [7])"#, Ok(s("07"))),
            (r#"Format("%04d-%02d-%02d", [2024, 3, 9])"#, Ok(s("2024-03-09"))),
            (r#"Format("%s/%s/%04d.log", ["host", "prog", 12])"#, Ok(s("host/prog/0012.log"))),
            (
                r#"Format("%.2f|%v|%t|%x|%5s|%-3d|", [1.5, 2.5, true, 255, "ab", 1])"#,
                Ok(s("1.50|2.5|true|ff|   ab|1  |")),
            ),
            (r#"Format("%d", ["x"])"#, Ok(s("%!d(string=x)"))),
            (r#"Format("%d %d", [1])"#, Ok(s("1 %!d(MISSING)"))),
            (r#"Format("%d", [1, 2])"#, Ok(s("1%!(EXTRA int64=2)"))),
            (r#"Format("100%%", [])"#, Ok(s("100%"))),
            (r#"Format("%v %v", [1e21, 0.000001])"#, Ok(s("1e+21 1e-06"))),
        ]);
    }

    #[test]
    fn key_value_string_and_luhn_table() {
        check(&[
            (r#"ToKeyValueString({"k1":"v1","k2":"v2","k3":"v3"})"#, Ok(s("k1=v1 k2=v2 k3=v3"))),
            (r#"ToKeyValueString({"k2":"v2","k1":"v1"}, ":", ",", true)"#, Ok(s("k1:v1,k2:v2"))),
            (
                r#"ToKeyValueString({"k1":"v1","k2":{"k3":"v3","k4":["v4","v5"]}})"#,
                Ok(s(r#"k1=v1 k2={"k3":"v3","k4":["v4","v5"]}"#)),
            ),
            (r#"ToKeyValueString({"k1":"v1","k2":"v=2","k3":"\"v=3\""})"#, Ok(s(r#"k1=v1 k2="v=2" k3="\"v=3\"""#))),
            (r#"ToKeyValueString({"a":"b"}, "=", "=")"#, Err("same value")),
            (r#"IsValidLuhn("17893729974")"#, Ok(Value::Bool(true))),
            (r#"IsValidLuhn(17893729974)"#, Ok(Value::Bool(true))),
            (r#"IsValidLuhn("17893729975")"#, Ok(Value::Bool(false))),
            (r#"IsValidLuhn("1789-3729")"#, Err("digits only")),
            (r#"IsValidLuhn(1.5)"#, Err("unsupported type")),
        ]);
    }
}
