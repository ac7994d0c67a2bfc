//! Hashes: SHA1, SHA256, SHA512, MD5 (hex digests), FNV (int), Murmur3 and XXH3 (hex).
//!
//! Upstream's `SHA256` reads its input as a string-like value (bytes as hex, numbers
//! formatted); the other hashes take a string and fail on anything else, nil included.

use sha2::Digest;

use super::{req, string_arg};
use crate::{
    error::EvalError,
    func::{Args, Function, ParamType as T},
    value::{hex, Value},
};

pub(super) static FUNCTIONS: &[Function] = &[
    Function::converter("SHA1", &[req("input", T::String)], |a| digest::<sha1::Sha1>(a, "SHA1")),
    Function::converter("SHA256", &[req("input", T::Any)], sha256),
    Function::converter("SHA512", &[req("input", T::String)], |a| digest::<sha2::Sha512>(a, "SHA512")),
    Function::converter("MD5", &[req("input", T::String)], |a| digest::<md5::Md5>(a, "MD5")),
    Function::converter("FNV", &[req("input", T::String)], |a| {
        Ok(Value::Int(fnv1a_64(string_arg(a, 0, "FNV")?.as_bytes()) as i64))
    }),
    Function::converter("Murmur3Hash", &[req("target", T::String)], |a| {
        let h = murmur3_32(string_arg(a, 0, "Murmur3Hash")?.as_bytes());
        Ok(Value::String(hex(&h.to_le_bytes())))
    }),
    Function::converter("Murmur3Hash128", &[req("target", T::String)], |a| {
        let (h1, h2) = murmur3_128(string_arg(a, 0, "Murmur3Hash128")?.as_bytes());
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&h1.to_le_bytes());
        b[8..].copy_from_slice(&h2.to_le_bytes());
        Ok(Value::String(hex(&b)))
    }),
    Function::converter("XXH3", &[req("input", T::String)], |a| {
        let h = twox_hash::XxHash3_64::oneshot(string_arg(a, 0, "XXH3")?.as_bytes());
        Ok(Value::String(format!("{h:016x}")))
    }),
    Function::converter("XXH128", &[req("input", T::String)], |a| {
        let h = twox_hash::XxHash3_128::oneshot(string_arg(a, 0, "XXH128")?.as_bytes());
        Ok(Value::String(format!("{h:032x}")))
    }),
];

fn digest<D: Digest>(a: &Args<'_>, name: &str) -> Result<Value, EvalError> {
    Ok(Value::String(hex(&D::digest(string_arg(a, 0, name)?.as_bytes()))))
}

fn sha256(a: &Args<'_>) -> Result<Value, EvalError> {
    let s = a.value(0).to_string_like().ok_or_else(|| EvalError::new("SHA256 of nil"))?;
    Ok(Value::String(hex(&sha2::Sha256::digest(s.as_bytes()))))
}

/// FNV-1a, 64 bits.
fn fnv1a_64(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// MurmurHash3 x86 32-bit, seed 0.
fn murmur3_32(data: &[u8]) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h: u32 = 0;
    let mut blocks = data.chunks_exact(4);
    for blk in &mut blocks {
        let k = u32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]);
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let k = tail.iter().rev().fold(0u32, |k, &b| (k << 8) | u32::from(b));
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// MurmurHash3 x64 128-bit, seed 0: the two 64-bit halves.
fn murmur3_128(data: &[u8]) -> (u64, u64) {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    let (mut h1, mut h2) = (0u64, 0u64);
    let mut blocks = data.chunks_exact(16);
    for blk in &mut blocks {
        let k1 = u64::from_le_bytes(blk[..8].try_into().expect("8 bytes"));
        let k2 = u64::from_le_bytes(blk[8..].try_into().expect("8 bytes"));
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        h1 = h1.rotate_left(27).wrapping_add(h2).wrapping_mul(5).wrapping_add(0x52dc_e729);
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        h2 = h2.rotate_left(31).wrapping_add(h1).wrapping_mul(5).wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    let word = |bytes: &[u8]| bytes.iter().rev().fold(0u64, |k, &b| (k << 8) | u64::from(b));
    if tail.len() > 8 {
        h2 ^= word(&tail[8..]).wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    }
    if !tail.is_empty() {
        h1 ^= word(&tail[..tail.len().min(8)]).wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    }
    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{check, s};
    use crate::Value;

    #[test]
    fn hash_table() {
        check(&[
            (r#"SHA1("test")"#, Ok(s("a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"))),
            (r#"SHA1(1)"#, Err("must be a string")),
            (r#"SHA256("test")"#, Ok(s("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"))),
            (
                r#"SHA512("test")"#,
                Ok(s("ee26b0dd4af7e749aa1a8ee3c10ae9923f618980772e473f8819a5d4940e0db27ac185f8a0e1d5f84f88bc887fd67b143732c304cc5fa9ad8e6f57f50028a8ff")),
            ),
            (r#"MD5("test")"#, Ok(s("098f6bcd4621d373cade4e832627b4f6"))),
            (r#"MD5(log.attributes["none"])"#, Err("expected string but got nil")),
            (r#"FNV("hello world")"#, Ok(Value::Int(8618312879776256743))),
            (r#"FNV("")"#, Ok(Value::Int(-3750763034362895579))),
            (r#"FNV(10)"#, Err("must be a string")),
            (r#"Murmur3Hash("Hello World")"#, Ok(s("ce837619"))),
            (r#"Murmur3Hash("")"#, Ok(s("00000000"))),
            (r#"Murmur3Hash(123)"#, Err("must be a string")),
            (r#"Murmur3Hash128("Hello World")"#, Ok(s("dbc2a0c1ab26631a27b4c09fcf1fe683"))),
            (r#"Murmur3Hash128("")"#, Ok(s("00000000000000000000000000000000"))),
            (r#"XXH3("hello world")"#, Ok(s("d447b1ea40e6988b"))),
            (r#"XXH3("")"#, Ok(s("2d06800538d394c2"))),
            (r#"XXH3(log.attributes["none"])"#, Err("expected string but got nil")),
            (r#"XXH128("")"#, Ok(s("99aa06d3014798d86001c324468d497f"))),
        ]);
    }
}
