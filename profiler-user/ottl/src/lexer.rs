//! Statement text → tokens with their byte offsets.
//!
//! Numbers are lexed unsigned; a leading `+`/`-` on a literal is applied by the parser (so
//! `1 - 1` is math and `-1` a literal). Strings are double-quoted with the escapes `\\ \" \n \r
//! \t \uXXXX`; any other escape is an error. Bytes are `0x` followed by an even number of hex
//! digits.

use crate::error::CompileError;

/// One token.
#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// An identifier: a path segment, function name, enum symbol or keyword.
    Ident(String),
    /// A string literal, unescaped.
    Str(String),
    /// An unsigned integer literal.
    Int(u64),
    /// An unsigned float literal.
    Float(f64),
    /// A `0x…` literal.
    Bytes(Vec<u8>),
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `[`
    LBracket,
    /// `]`
    RBracket,
    /// `{`
    LBrace,
    /// `}`
    RBrace,
    /// `,`
    Comma,
    /// `:`
    Colon,
    /// `.`
    Dot,
    /// `=` (named arguments)
    Assign,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Plus,
    /// `-`
    Minus,
    /// `*`
    Star,
    /// `/`
    Slash,
    /// End of input.
    Eof,
}

impl Tok {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("{s:?}"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Int(i) => format!("{i}"),
            Tok::Float(f) => format!("{f}"),
            Tok::Bytes(_) => "bytes literal".into(),
            Tok::Eof => "end of statement".into(),
            other => format!("{:?}", other.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::Dot => ".",
            Tok::Assign => "=",
            Tok::Eq => "==",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            _ => "",
        }
    }
}

/// A token and the byte offset where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    /// The token.
    pub tok: Tok,
    /// Byte offset in the source.
    pub at: usize,
}

/// Splits `src` into tokens, ending with [`Tok::Eof`].
pub fn lex(src: &str) -> Result<Vec<Token>, CompileError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, msg: String| CompileError::new(src, at, msg);
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let tok = if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            Tok::Ident(src[start..i].to_owned())
        } else if c == b'0' && b.get(i + 1).is_some_and(|&x| x == b'x' || x == b'X') {
            i += 2;
            let hs = i;
            while i < b.len() && b[i].is_ascii_hexdigit() {
                i += 1;
            }
            let digits = &src[hs..i];
            if digits.is_empty() || !digits.len().is_multiple_of(2) {
                return Err(err(start, "bytes literal needs an even number of hex digits".into()));
            }
            Tok::Bytes(
                (0..digits.len()).step_by(2).map(|k| u8::from_str_radix(&digits[k..k + 2], 16).unwrap()).collect(),
            )
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let mut float = false;
            if i < b.len() && b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                float = true;
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                let mut j = i + 1;
                if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
                    j += 1;
                }
                if j < b.len() && b[j].is_ascii_digit() {
                    float = true;
                    i = j;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            if i < b.len() && (b[i].is_ascii_alphabetic() || b[i] == b'_') {
                return Err(err(start, format!("invalid number {:?}", &src[start..=i])));
            }
            let text = &src[start..i];
            if float {
                Tok::Float(text.parse().map_err(|_| err(start, format!("invalid float {text:?}")))?)
            } else {
                Tok::Int(text.parse().map_err(|_| err(start, format!("integer {text} out of range")))?)
            }
        } else if c == b'"' {
            i += 1;
            let mut s = String::new();
            loop {
                let Some(ch) = src[i..].chars().next() else {
                    return Err(err(start, "unterminated string".into()));
                };
                match ch {
                    '"' => {
                        i += 1;
                        break;
                    }
                    '\\' => {
                        let Some(e) = src[i + 1..].chars().next() else {
                            return Err(err(start, "unterminated string".into()));
                        };
                        match e {
                            '\\' => s.push('\\'),
                            '"' => s.push('"'),
                            'n' => s.push('\n'),
                            'r' => s.push('\r'),
                            't' => s.push('\t'),
                            'u' => {
                                let hex = src.get(i + 2..i + 6).filter(|h| h.bytes().all(|x| x.is_ascii_hexdigit()));
                                let ch = hex.and_then(|h| u32::from_str_radix(h, 16).ok()).and_then(char::from_u32);
                                let Some(ch) = ch else {
                                    return Err(err(i, "invalid \\u escape".into()));
                                };
                                s.push(ch);
                                i += 4;
                            }
                            other => return Err(err(i, format!("invalid escape \\{other}"))),
                        }
                        i += 1 + e.len_utf8();
                    }
                    ch => {
                        s.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            Tok::Str(s)
        } else {
            let two = |t: Tok| (t, 2);
            let one = |t: Tok| (t, 1);
            let next = b.get(i + 1).copied();
            let (tok, n) = match (c, next) {
                (b'=', Some(b'=')) => two(Tok::Eq),
                (b'!', Some(b'=')) => two(Tok::Ne),
                (b'<', Some(b'=')) => two(Tok::Le),
                (b'>', Some(b'=')) => two(Tok::Ge),
                (b'=', _) => one(Tok::Assign),
                (b'<', _) => one(Tok::Lt),
                (b'>', _) => one(Tok::Gt),
                (b'(', _) => one(Tok::LParen),
                (b')', _) => one(Tok::RParen),
                (b'[', _) => one(Tok::LBracket),
                (b']', _) => one(Tok::RBracket),
                (b'{', _) => one(Tok::LBrace),
                (b'}', _) => one(Tok::RBrace),
                (b',', _) => one(Tok::Comma),
                (b':', _) => one(Tok::Colon),
                (b'.', _) => one(Tok::Dot),
                (b'+', _) => one(Tok::Plus),
                (b'-', _) => one(Tok::Minus),
                (b'*', _) => one(Tok::Star),
                (b'/', _) => one(Tok::Slash),
                _ => {
                    let ch = src[i..].chars().next().unwrap_or('?');
                    return Err(err(i, format!("unexpected character {ch:?}")));
                }
            };
            i += n;
            tok
        };
        out.push(Token { tok, at: start });
    }
    out.push(Token { tok: Tok::Eof, at: src.len() });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        lex(src).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn token_table() {
        use Tok::*;
        let cases: Vec<(&str, Vec<Tok>)> = vec![
            ("a.b", vec![Ident("a".into()), Dot, Ident("b".into()), Eof]),
            ("1 1.5 .5 2e3", vec![Int(1), Float(1.5), Float(0.5), Float(2000.0), Eof]),
            ("0x0aFF", vec![Bytes(vec![0x0a, 0xff]), Eof]),
            (r#""a\"b\\c\n\u00e9""#, vec![Str("a\"b\\c\né".into()), Eof]),
            ("== != <= >= < > =", vec![Eq, Ne, Le, Ge, Lt, Gt, Assign, Eof]),
            ("x-1", vec![Ident("x".into()), Minus, Int(1), Eof]),
            ("{\"k\": [1]}", vec![LBrace, Str("k".into()), Colon, LBracket, Int(1), RBracket, RBrace, Eof]),
            ("\"é\" x", vec![Str("é".into()), Ident("x".into()), Eof]),
        ];
        for (src, want) in cases {
            assert_eq!(toks(src), want, "{src}");
        }
    }

    #[test]
    fn error_table() {
        let cases = [
            ("set(x, \"abc", "1:8: unterminated string"),
            ("set(x, 0x1)", "1:8: bytes literal needs an even number of hex digits"),
            ("a\n  # b", "2:3: unexpected character '#'"),
            ("\"\\q\"", "1:2: invalid escape \\q"),
            ("99999999999999999999", "1:1: integer 99999999999999999999 out of range"),
            ("12abc", "1:1: invalid number \"12a\""),
        ];
        for (src, want) in cases {
            assert_eq!(lex(src).unwrap_err().to_string(), want, "{src}");
        }
    }
}
