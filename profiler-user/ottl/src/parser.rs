//! Tokens → [`crate::ast`], by recursive descent.
//!
//! Grammar (precedence low to high):
//! ```text
//! statement  := call ("where" or)? EOF
//! or         := and ("or" and)*
//! and        := not ("and" not)*
//! not        := "not" not | primary_b
//! primary_b  := "(" or ")" | math (cmp_op math)?      -- a lone term must be bool/converter
//! math       := term (("+"|"-") term)*
//! term       := factor (("*"|"/") factor)*
//! factor     := literal | ("+"|"-") number | list | map | path | call | enum | "(" math ")"
//! call       := Ident "(" (arg ("," arg)*)? ")" key*
//! arg        := (ident "=")? math
//! path       := ident ("." ident)* key*
//! key        := "[" (string | int | path | call) "]"
//! ```
//! A `(` in a condition can open a boolean group or a math group; the parser tries the
//! boolean group first and falls back to math when the group is followed by an operator.
//! The fallback parses math only (no boolean groups inside), so each `(` is tried as a
//! boolean group at most once and parsing stays within [`MAX_DEPTH`] times linear.
//!
//! Nesting is limited to [`MAX_DEPTH`] levels: statements come from config files and, later,
//! from OpAMP, and `((((…` or `f(f(f(…` must be an error, not a stack overflow here or in the
//! stages that walk the tree recursively (the compiler, the collector's context inference,
//! the compiled closures at run time, dropping the tree).

use crate::{
    ast::{Argument, BoolExpr, Call, CmpOp, Expr, Key, Path, Statement},
    error::CompileError,
    lexer::{lex, Tok, Token},
    value::{MathOp, Value},
};

/// Parses one statement.
pub fn parse_statement(src: &str) -> Result<Statement, CompileError> {
    let mut p = Parser::new(src)?;
    let editor = p.call()?;
    if editor.name.starts_with(|c: char| c.is_ascii_uppercase()) {
        return Err(p.error(editor.at, format!("{:?} is a converter: a statement starts with an editor", editor.name)));
    }
    if !editor.keys.is_empty() {
        return Err(p.error(editor.at, "an editor's result cannot be indexed"));
    }
    let condition = if p.eat_keyword("where") { Some(p.or()?) } else { None };
    p.expect_eof()?;
    Ok(Statement { editor, condition })
}

/// Parses one condition (a boolean expression, as in the filter processor).
pub fn parse_condition(src: &str) -> Result<BoolExpr, CompileError> {
    let mut p = Parser::new(src)?;
    let c = p.or()?;
    p.expect_eof()?;
    Ok(c)
}

/// Parses one value expression.
pub fn parse_value(src: &str) -> Result<Expr, CompileError> {
    let mut p = Parser::new(src)?;
    let e = p.math()?;
    p.expect_eof()?;
    Ok(e)
}

const KEYWORDS: &[&str] = &["where", "and", "or", "not", "true", "false", "nil"];

/// The deepest syntax tree the parser builds. Each parenthesis, `not`, list, map, call
/// argument list, computed key and each operator of a `+ - * /` chain (the tree of `a + b + c`
/// is left-deep) is one level. Real statements stay under 10; 100 leaves room for generated
/// ones while keeping every recursive walk of the tree far from the 2 MiB stack of a thread.
pub const MAX_DEPTH: usize = 100;

struct Parser<'s> {
    src: &'s str,
    toks: Vec<Token>,
    i: usize,
    /// Levels open at the current token (see [`MAX_DEPTH`]).
    depth: usize,
}

impl<'s> Parser<'s> {
    fn new(src: &'s str) -> Result<Self, CompileError> {
        Ok(Parser { src, toks: lex(src)?, i: 0, depth: 0 })
    }

    /// Opens one more level, or fails at the current token when that passes [`MAX_DEPTH`].
    /// The caller restores `depth` (see [`Parser::nested`]).
    fn enter(&mut self) -> Result<(), CompileError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(self.at(), format!("expression nested deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        Ok(())
    }

    /// Runs `f` one level deeper. The depth is restored on success and on error alike, so a
    /// boolean group that failed and is re-parsed as math starts from the right depth.
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, CompileError>) -> Result<T, CompileError> {
        let outer = self.depth;
        let r = self.enter().and_then(|()| f(self));
        self.depth = outer;
        r
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.i].tok
    }
    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.i + n).min(self.toks.len() - 1)].tok
    }
    fn at(&self) -> usize {
        self.toks[self.i].at
    }
    fn bump(&mut self) -> Token {
        let t = self.toks[self.i].clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }
    fn error(&self, at: usize, msg: impl Into<String>) -> CompileError {
        CompileError::new(self.src, at, msg)
    }
    fn unexpected(&self, wanted: &str) -> CompileError {
        self.error(self.at(), format!("expected {wanted}, found {}", self.peek().describe()))
    }
    fn expect(&mut self, t: Tok, wanted: &str) -> Result<usize, CompileError> {
        if *self.peek() == t {
            Ok(self.bump().at)
        } else {
            Err(self.unexpected(wanted))
        }
    }
    fn expect_eof(&self) -> Result<(), CompileError> {
        if *self.peek() == Tok::Eof {
            Ok(())
        } else {
            Err(self.unexpected("end of statement"))
        }
    }
    fn is_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == kw)
    }
    fn eat_keyword(&mut self, kw: &str) -> bool {
        let yes = self.is_keyword(kw);
        if yes {
            self.bump();
        }
        yes
    }

    fn or(&mut self) -> Result<BoolExpr, CompileError> {
        let mut v = vec![self.and()?];
        while self.eat_keyword("or") {
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 { v.pop().unwrap() } else { BoolExpr::Or(v) })
    }

    fn and(&mut self) -> Result<BoolExpr, CompileError> {
        let mut v = vec![self.not()?];
        while self.eat_keyword("and") {
            v.push(self.not()?);
        }
        Ok(if v.len() == 1 { v.pop().unwrap() } else { BoolExpr::And(v) })
    }

    fn not(&mut self) -> Result<BoolExpr, CompileError> {
        if self.eat_keyword("not") {
            return Ok(BoolExpr::Not(Box::new(self.nested(Self::not)?)));
        }
        self.bool_primary()
    }

    fn bool_primary(&mut self) -> Result<BoolExpr, CompileError> {
        if *self.peek() == Tok::LParen {
            let save = self.i;
            self.bump();
            if let Ok(inner) = self.nested(Self::or) {
                if *self.peek() == Tok::RParen {
                    self.bump();
                    if !is_cmp_or_math(self.peek()) {
                        return Ok(inner);
                    }
                }
            }
            self.i = save;
        }
        let start = self.at();
        let left = self.math()?;
        let op = match self.peek() {
            Tok::Eq => CmpOp::Eq,
            Tok::Ne => CmpOp::Ne,
            Tok::Lt => CmpOp::Lt,
            Tok::Le => CmpOp::Le,
            Tok::Gt => CmpOp::Gt,
            Tok::Ge => CmpOp::Ge,
            _ => {
                return match &left {
                    Expr::Literal(Value::Bool(_), _) | Expr::Call(_) => Ok(BoolExpr::Term(left)),
                    _ => Err(self.error(
                        start,
                        "a condition must be a comparison, a bool literal or a converter returning a bool",
                    )),
                };
            }
        };
        let at = self.bump().at;
        let right = self.math()?;
        Ok(BoolExpr::Compare { left, op, right, at })
    }

    /// `term (("+"|"-") term)*`; each operator is a level of the (left-deep) tree.
    fn math(&mut self) -> Result<Expr, CompileError> {
        let outer = self.depth;
        let r = self.chain(Self::term, |t| match t {
            Tok::Plus => Some(MathOp::Add),
            Tok::Minus => Some(MathOp::Sub),
            _ => None,
        });
        self.depth = outer;
        r
    }

    /// `factor (("*"|"/") factor)*`; each operator is a level of the (left-deep) tree.
    fn term(&mut self) -> Result<Expr, CompileError> {
        let outer = self.depth;
        let r = self.chain(Self::factor, |t| match t {
            Tok::Star => Some(MathOp::Mul),
            Tok::Slash => Some(MathOp::Div),
            _ => None,
        });
        self.depth = outer;
        r
    }

    /// A left-associative chain of `operand`s joined by the operators `op` accepts. Opens a
    /// level per operator and leaves restoring the depth to the caller.
    fn chain(
        &mut self,
        operand: fn(&mut Self) -> Result<Expr, CompileError>,
        op: fn(&Tok) -> Option<MathOp>,
    ) -> Result<Expr, CompileError> {
        let mut left = operand(self)?;
        while let Some(op) = op(self.peek()) {
            let at = self.bump().at;
            self.enter()?;
            let right = operand(self)?;
            left = Expr::Math(Box::new(left), op, Box::new(right), at);
        }
        Ok(left)
    }

    /// One operand, one level deeper: every recursion of the value grammar (groups, lists,
    /// maps, call arguments, keys) passes through here.
    fn factor(&mut self) -> Result<Expr, CompileError> {
        self.nested(Self::factor_inner)
    }

    fn factor_inner(&mut self) -> Result<Expr, CompileError> {
        let at = self.at();
        match self.peek().clone() {
            Tok::Str(s) => {
                self.bump();
                Ok(Expr::Literal(Value::String(s), at))
            }
            Tok::Int(_) | Tok::Float(_) => self.number(false, at),
            Tok::Plus | Tok::Minus => {
                let neg = *self.peek() == Tok::Minus;
                self.bump();
                if !matches!(self.peek(), Tok::Int(_) | Tok::Float(_)) {
                    return Err(self.unexpected("a number after the sign"));
                }
                self.number(neg, at)
            }
            Tok::Bytes(b) => {
                self.bump();
                Ok(Expr::Literal(Value::Bytes(b), at))
            }
            Tok::LBracket => {
                self.bump();
                let mut items = Vec::new();
                while *self.peek() != Tok::RBracket {
                    items.push(self.math()?);
                    if *self.peek() != Tok::Comma {
                        break;
                    }
                    self.bump();
                }
                self.expect(Tok::RBracket, "\",\" or \"]\"")?;
                Ok(Expr::List(items, at))
            }
            Tok::LBrace => {
                self.bump();
                let mut items = Vec::new();
                while *self.peek() != Tok::RBrace {
                    let Tok::Str(k) = self.peek().clone() else {
                        return Err(self.unexpected("a string map key"));
                    };
                    self.bump();
                    self.expect(Tok::Colon, "\":\"")?;
                    items.push((k, self.math()?));
                    if *self.peek() != Tok::Comma {
                        break;
                    }
                    self.bump();
                }
                self.expect(Tok::RBrace, "\",\" or \"}\"")?;
                Ok(Expr::Map(items, at))
            }
            Tok::LParen => {
                self.bump();
                let e = self.math()?;
                self.expect(Tok::RParen, "\")\"")?;
                Ok(e)
            }
            Tok::Ident(name) => match name.as_str() {
                "true" | "false" => {
                    self.bump();
                    Ok(Expr::Literal(Value::Bool(name == "true"), at))
                }
                "nil" => {
                    self.bump();
                    Ok(Expr::Literal(Value::Nil, at))
                }
                _ if KEYWORDS.contains(&name.as_str()) => Err(self.unexpected("a value")),
                _ if *self.peek_at(1) == Tok::LParen => {
                    let call = self.call()?;
                    if call.name.starts_with(|c: char| c.is_ascii_lowercase()) {
                        return Err(self.error(at, format!("editor {:?} cannot be used as a value", call.name)));
                    }
                    Ok(Expr::Call(call))
                }
                _ if name.starts_with(|c: char| c.is_ascii_uppercase()) => {
                    self.bump();
                    Ok(Expr::Enum(name, at))
                }
                _ => Ok(Expr::Path(self.path()?)),
            },
            _ => Err(self.unexpected("a value")),
        }
    }

    fn number(&mut self, neg: bool, at: usize) -> Result<Expr, CompileError> {
        let t = self.bump();
        let v = match t.tok {
            Tok::Int(u) => {
                let i = if neg {
                    if u > i64::MAX as u64 + 1 {
                        None
                    } else {
                        Some((u as i64).wrapping_neg())
                    }
                } else {
                    i64::try_from(u).ok()
                };
                Value::Int(i.ok_or_else(|| self.error(at, "integer out of range"))?)
            }
            Tok::Float(f) => Value::Double(if neg { -f } else { f }),
            _ => unreachable!("number() is called on a number"),
        };
        Ok(Expr::Literal(v, at))
    }

    fn call(&mut self) -> Result<Call, CompileError> {
        let at = self.at();
        let Tok::Ident(name) = self.peek().clone() else {
            return Err(self.unexpected("a function name"));
        };
        self.bump();
        self.expect(Tok::LParen, "\"(\"")?;
        let mut args = Vec::new();
        let mut seen_named = false;
        while *self.peek() != Tok::RParen {
            let arg_at = self.at();
            let named = matches!(self.peek(), Tok::Ident(_)) && *self.peek_at(1) == Tok::Assign;
            let arg_name = if named {
                let Tok::Ident(n) = self.bump().tok else { unreachable!() };
                self.bump();
                seen_named = true;
                Some(n)
            } else {
                if seen_named {
                    return Err(self.error(arg_at, "positional arguments must come before named arguments"));
                }
                None
            };
            let value = self.math()?;
            args.push(Argument { name: arg_name, value, at: arg_at });
            if *self.peek() != Tok::Comma {
                break;
            }
            self.bump();
        }
        self.expect(Tok::RParen, "\",\" or \")\"")?;
        let keys = self.keys()?;
        Ok(Call { name, args, keys, at })
    }

    fn path(&mut self) -> Result<Path, CompileError> {
        let at = self.at();
        let mut fields = Vec::new();
        loop {
            let Tok::Ident(name) = self.peek().clone() else {
                return Err(self.unexpected("a path field"));
            };
            if !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
                return Err(self.error(self.at(), format!("path fields are lower-case: {name:?}")));
            }
            self.bump();
            fields.push(name);
            if *self.peek() != Tok::Dot {
                break;
            }
            self.bump();
        }
        let keys = self.keys()?;
        Ok(Path { fields, keys, at })
    }

    fn keys(&mut self) -> Result<Vec<Key>, CompileError> {
        let mut keys = Vec::new();
        while *self.peek() == Tok::LBracket {
            self.bump();
            let at = self.at();
            let key = match self.peek().clone() {
                Tok::Str(s) => {
                    self.bump();
                    Key::String(s, at)
                }
                Tok::Int(u) => {
                    self.bump();
                    Key::Int(i64::try_from(u).map_err(|_| self.error(at, "index out of range"))?, at)
                }
                Tok::Ident(_) => match self.factor()? {
                    e @ (Expr::Path(_) | Expr::Call(_)) => Key::Expr(Box::new(e)),
                    _ => return Err(self.error(at, "a key is a string, an int, a path or a converter")),
                },
                _ => return Err(self.unexpected("a key (string, int, path or converter)")),
            };
            keys.push(key);
            self.expect(Tok::RBracket, "\"]\"")?;
        }
        Ok(keys)
    }
}

fn is_cmp_or_math(t: &Tok) -> bool {
    matches!(
        t,
        Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge | Tok::Plus | Tok::Minus | Tok::Star | Tok::Slash
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(at: usize, fields: &[&str], keys: Vec<Key>) -> Expr {
        Expr::Path(Path { fields: fields.iter().map(|s| s.to_string()).collect(), keys, at })
    }

    #[test]
    fn statement_shape() {
        let s = parse_statement(r#"set(span.attributes["a"][0], Concat(["x", 1], sep = "-")) where span.name == "n""#)
            .unwrap();
        assert_eq!(s.editor.name, "set");
        assert_eq!(
            s.editor.args[0].value,
            path(4, &["span", "attributes"], vec![Key::String("a".into(), 20), Key::Int(0, 25)])
        );
        let Expr::Call(c) = &s.editor.args[1].value else { panic!() };
        assert_eq!(c.name, "Concat");
        assert_eq!(c.args[1].name.as_deref(), Some("sep"));
        assert!(matches!(s.condition, Some(BoolExpr::Compare { op: CmpOp::Eq, .. })));
    }

    #[test]
    fn precedence() {
        // not > and > or
        let c = parse_condition("a == 1 or b == 2 and not c == 3").unwrap();
        let BoolExpr::Or(v) = c else { panic!("{c:?}") };
        assert!(matches!(&v[1], BoolExpr::And(w) if matches!(w[1], BoolExpr::Not(_))));
        // * over +, left associative
        let e = parse_value("1 + 2 * 3 - 4").unwrap();
        let Expr::Math(l, MathOp::Sub, _, _) = e else { panic!("{e:?}") };
        assert!(matches!(*l, Expr::Math(_, MathOp::Add, ref r, _) if matches!(**r, Expr::Math(_, MathOp::Mul, _, _))));
        // parenthesised boolean group vs math group
        assert!(matches!(parse_condition("(a == 1 or b == 2) and c == 3").unwrap(), BoolExpr::And(_)));
        assert!(matches!(parse_condition("(1 + 2) * 3 == 9").unwrap(), BoolExpr::Compare { .. }));
        assert!(matches!(parse_condition("(x) == 9").unwrap(), BoolExpr::Compare { .. }));
    }

    #[test]
    fn literals_and_keys() {
        let cases: Vec<(&str, Expr)> = vec![
            ("-1", Expr::Literal(Value::Int(-1), 0)),
            ("+.5", Expr::Literal(Value::Double(0.5), 0)),
            ("-9223372036854775808", Expr::Literal(Value::Int(i64::MIN), 0)),
            ("nil", Expr::Literal(Value::Nil, 0)),
            ("0x01", Expr::Literal(Value::Bytes(vec![1]), 0)),
            ("SPAN_KIND_SERVER", Expr::Enum("SPAN_KIND_SERVER".into(), 0)),
            ("cache[\"x\"]", path(0, &["cache"], vec![Key::String("x".into(), 6)])),
            ("a[b.c]", path(0, &["a"], vec![Key::Expr(Box::new(path(2, &["b", "c"], vec![])))])),
            ("{}", Expr::Map(vec![], 0)),
            ("[]", Expr::List(vec![], 0)),
        ];
        for (src, want) in cases {
            assert_eq!(parse_value(src).unwrap(), want, "{src}");
        }
    }

    /// Found by `fuzz/parse_compile`: deep nesting overflowed the stack (the test thread's
    /// 2 MiB fit about 3,000 parentheses), and long operator chains built trees as deep as they
    /// were long, which the compiler then walked recursively.
    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let n = 100_000;
        let cases = [
            format!("set(x, {}1", "(".repeat(n)),
            format!("set(x, 1) where {}x", "(".repeat(n)),
            format!("set(x, 1) where {}true", "not ".repeat(n)),
            format!("set(x, {}1", "F(".repeat(n)),
            format!("set(x, {}", "[".repeat(n)),
            format!("set(x, {}", "{\"k\": ".repeat(n)),
            format!("set(x, a{}", "[b".repeat(n)),
            format!("set(x, 1{})", " + 1".repeat(n)),
            format!("set(x, 1{})", " * 1".repeat(n)),
            format!("set(x, 1) where 1{} == 1", " - 1".repeat(n)),
        ];
        for src in &cases {
            let e = parse_statement(src).unwrap_err();
            assert_eq!(e.message, "expression nested deeper than 100 levels", "{}…", &src[..30]);
        }
    }

    #[test]
    fn nesting_up_to_the_limit_parses() {
        // Each "(" is a level and so is the literal inside: 99 parentheses fit, 100 do not.
        let deepest = |d: usize| format!("set(x, {}1{})", "(".repeat(d), ")".repeat(d));
        assert!(parse_statement(&deepest(MAX_DEPTH - 1)).is_ok());
        let e = parse_statement(&deepest(MAX_DEPTH)).unwrap_err();
        assert_eq!(e.to_string(), format!("1:{}: expression nested deeper than 100 levels", 8 + MAX_DEPTH));
        let chain = |ops: usize| format!("1{}", " + 1".repeat(ops));
        assert!(parse_value(&chain(MAX_DEPTH - 1)).is_ok());
        assert!(parse_value(&chain(MAX_DEPTH)).is_err());
        // A boolean group at the limit, re-parsed as math, is still refused the same way.
        let group = |d: usize| format!("{}x == 1{}", "(".repeat(d), ")".repeat(d));
        assert!(parse_condition(&group(MAX_DEPTH - 1)).is_ok());
        assert_eq!(parse_condition(&group(MAX_DEPTH)).unwrap_err().message, "expression nested deeper than 100 levels");
    }

    #[test]
    fn error_positions() {
        let cases = [
            ("set(x, 1", "1:9: expected \",\" or \")\", found end of statement"),
            ("set(x, 1) where", "1:16: expected a value, found end of statement"),
            ("set(x 1)", "1:7: expected \",\" or \")\", found 1"),
            ("Set(x, 1)", "1:1: \"Set\" is a converter: a statement starts with an editor"),
            ("set(a = 1, 2)", "1:12: positional arguments must come before named arguments"),
            (
                "set(x, 1) where x",
                "1:17: a condition must be a comparison, a bool literal or a converter returning a bool",
            ),
            ("set(x, 1) where x == 1 y", "1:24: expected end of statement, found \"y\""),
            ("set(x, f(1))", "1:8: editor \"f\" cannot be used as a value"),
            ("set(x, {1: 2})", "1:9: expected a string map key, found 1"),
            ("set(x,\n  -y)", "2:4: expected a number after the sign, found \"y\""),
            ("set(x.Y, 1)", "1:7: path fields are lower-case: \"Y\""),
            ("set(x[1.5], 1)", "1:7: expected a key (string, int, path or converter), found 1.5"),
        ];
        for (src, want) in cases {
            assert_eq!(parse_statement(src).unwrap_err().to_string(), want, "{src}");
        }
    }
}
