//! IDs and encodings: `TraceID`, `SpanID`, `ProfileID`, `UUID`, `UUIDv7`, `Base64Encode`,
//! `Base64Decode`, `Decode`.

use base64::Engine;

use super::{fail, opt_str, req, string_arg};
use crate::{
    error::EvalError,
    func::{Args, Function, ParamType as T},
    value::Value,
};

pub(super) static FUNCTIONS: &[Function] = &[
    Function::converter("TraceID", &[req("target", T::Any)], |a| id(a, 16, "TraceID")),
    Function::converter("SpanID", &[req("target", T::Any)], |a| id(a, 8, "SpanID")),
    Function::converter("ProfileID", &[req("target", T::Any)], |a| id(a, 16, "ProfileID")),
    Function::converter("UUID", &[], |_| Ok(Value::String(uuid_v4()?))),
    Function::converter("UUIDv7", &[], |_| Ok(Value::String(uuid_v7()?))),
    Function::converter("Base64Encode", &[req("value", T::String), super::opt("variant", T::String)], base64_encode),
    Function::converter("Base64Decode", &[req("value", T::String)], |a| {
        let s = string_arg(a, 0, "Base64Decode")?;
        let b = base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| fail("Base64Decode", e))?;
        Ok(Value::String(String::from_utf8_lossy(&b).into_owned()))
    }),
    Function::converter("Decode", &[req("value", T::Any), req("encoding", T::String)], decode),
];

/// An ID from `n` bytes, or from `2n` hex characters.
fn id(a: &Args<'_>, n: usize, name: &str) -> Result<Value, EvalError> {
    match a.value(0) {
        Value::Bytes(b) if b.len() == n => Ok(Value::Bytes(b.clone())),
        Value::Bytes(b) => Err(fail(name, format!("needs {n} bytes, got {}", b.len()))),
        Value::String(s) if s.len() == 2 * n => (0..n)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map(Value::Bytes)
            .map_err(|_| fail(name, format!("{s:?} is not hexadecimal"))),
        Value::String(s) => Err(fail(name, format!("needs {} hex characters, got {}", 2 * n, s.len()))),
        other => Err(fail(name, format!("needs bytes or a hex string, got {}", other.ty()))),
    }
}

fn random<const N: usize>() -> Result<[u8; N], EvalError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| EvalError::new(format!("no randomness for a UUID: {e}")))?;
    Ok(b)
}

fn uuid_text(b: [u8; 16]) -> String {
    let h = crate::value::hex(&b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// A random (version 4) UUID.
fn uuid_v4() -> Result<String, EvalError> {
    let mut b = random::<16>()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(uuid_text(b))
}

/// A time-ordered (version 7) UUID: 48 bits of unix milliseconds, then random bits.
fn uuid_v7() -> Result<String, EvalError> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| EvalError::new(format!("clock before 1970: {e}")))?
        .as_millis() as u64;
    let mut b = random::<16>()?;
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(uuid_text(b))
}

fn base64_engine(variant: &str) -> Option<base64::engine::GeneralPurpose> {
    use base64::engine::general_purpose as gp;
    Some(match variant {
        "base64" => gp::STANDARD,
        "base64-raw" => gp::STANDARD_NO_PAD,
        "base64-url" => gp::URL_SAFE,
        "base64-raw-url" => gp::URL_SAFE_NO_PAD,
        _ => return None,
    })
}

fn base64_encode(a: &Args<'_>) -> Result<Value, EvalError> {
    let s = string_arg(a, 0, "Base64Encode")?;
    let variant = opt_str(a, 1)?.unwrap_or("base64");
    let e =
        base64_engine(variant).ok_or_else(|| fail("Base64Encode", format!("unsupported base64 variant: {variant}")))?;
    Ok(Value::String(e.encode(s)))
}

/// `Decode`: the four base64 variants, and the character sets `utf-8`, `us-ascii` and
/// `iso-8859-1` (with their common aliases). Other IANA encodings are not built in yet.
fn decode(a: &Args<'_>) -> Result<Value, EvalError> {
    let bytes: &[u8] = match a.value(0) {
        Value::String(s) => s.as_bytes(),
        Value::Bytes(b) => b,
        other => return Err(fail("Decode", format!("unsupported type provided to Decode function: {}", other.ty()))),
    };
    let encoding = a.str(1)?;
    if let Some(e) = base64_engine(encoding) {
        let b = e.decode(bytes).map_err(|err| fail("Decode", format!("could not decode: {err}")))?;
        return Ok(Value::String(String::from_utf8_lossy(&b).into_owned()));
    }
    match encoding.to_ascii_lowercase().as_str() {
        "utf-8" | "utf8" => Ok(Value::String(String::from_utf8_lossy(bytes).into_owned())),
        "us-ascii" | "ascii" | "ansi_x3.4-1968" => {
            Ok(Value::String(bytes.iter().map(|&b| if b < 0x80 { b as char } else { '\u{FFFD}' }).collect()))
        }
        "iso-8859-1" | "latin1" | "iso_8859-1" | "l1" => Ok(Value::String(bytes.iter().map(|&b| b as char).collect())),
        other => Err(fail("Decode", format!("could not get encoding for {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{check, eval, s};
    use crate::Value::{self, Bytes};

    #[test]
    fn id_table() {
        check(&[
            (r#"TraceID(0x00112233445566778899aabbccddeeff)"#, Ok(Bytes((0..16).map(|i| i * 0x11).collect()))),
            (
                r#"TraceID("a389023abaa839283293ed323892389d")"#,
                Ok(Bytes(vec![
                    0xa3, 0x89, 0x02, 0x3a, 0xba, 0xa8, 0x39, 0x28, 0x32, 0x93, 0xed, 0x32, 0x38, 0x92, 0x38, 0x9d,
                ])),
            ),
            (r#"SpanID("0102030405060708")"#, Ok(Bytes((1..=8).collect()))),
            (r#"SpanID(0x0000000000000000)"#, Ok(Bytes(vec![0; 8]))),
            (r#"ProfileID("00112233445566778899aabbccddeeff")"#, Ok(Bytes((0..16).map(|i| i * 0x11).collect()))),
            (r#"SpanID(0x0102)"#, Err("needs 8 bytes")),
            (r#"SpanID("01020304050607zz")"#, Err("not hexadecimal")),
            (r#"TraceID("abc")"#, Err("needs 32 hex characters")),
            (r#"TraceID(1)"#, Err("needs bytes or a hex string")),
        ]);
    }

    #[test]
    fn uuid_shape() {
        for (f, version) in [("UUID()", '4'), ("UUIDv7()", '7')] {
            let Ok(Value::String(u)) = eval(f) else { panic!("{f}") };
            let parts: Vec<_> = u.split('-').map(str::len).collect();
            assert_eq!(parts, [8, 4, 4, 4, 12], "{u}");
            assert_eq!(u.as_bytes()[14] as char, version, "{u}");
            assert!(matches!(u.as_bytes()[19], b'8' | b'9' | b'a' | b'b'), "{u}");
            assert_ne!(eval(f).unwrap(), Value::String(u), "two calls differ");
        }
    }

    #[test]
    fn encoding_table() {
        check(&[
            (r#"Base64Encode("test string")"#, Ok(s("dGVzdCBzdHJpbmc="))),
            (r#"Base64Encode("test string", "base64-raw")"#, Ok(s("dGVzdCBzdHJpbmc"))),
            (r#"Base64Encode("??>", "base64-url")"#, Ok(s("Pz8-"))),
            (r#"Base64Encode("??>", "base64")"#, Ok(s("Pz8+"))),
            (r#"Base64Encode("x", "base32")"#, Err("unsupported base64 variant")),
            (r#"Base64Decode("aGVsbG8gd29ybGQ=")"#, Ok(s("hello world"))),
            (r#"Base64Decode("!!")"#, Err("Base64Decode")),
            (r#"Decode("aGVsbG8gd29ybGQ=", "base64")"#, Ok(s("hello world"))),
            (r#"Decode("aGVsbG8gd29ybGQ", "base64-raw")"#, Ok(s("hello world"))),
            (r#"Decode("Pz8-", "base64-url")"#, Ok(s("??>"))),
            (r#"Decode("hello", "us-ascii")"#, Ok(s("hello"))),
            (r#"Decode(0xe9, "iso-8859-1")"#, Ok(s("é"))),
            (r#"Decode("x", "ebcdic-1")"#, Err("could not get encoding")),
            (r#"Decode(1, "base64")"#, Err("unsupported type")),
        ]);
    }
}
