//! The built-in editors and converters: one [`Function`] entry each, grouped one module per
//! kind of work, all listed by [`all`]. `FUNCTIONS.md` beside `Cargo.toml` says which of
//! upstream's `ottlfuncs` exist here and which do not yet.
//!
//! Semantics follow upstream's `ottlfuncs` README and tests. Two choices of ours apply to every
//! group:
//! - Times are [`Value::Time`] (UTC nanoseconds) and durations [`Value::Duration`]: a time has
//!   no zone of its own, so calendar converters (`Hour`, `FormatTime`, …) read it in UTC.
//! - A converter that upstream documents as returning `nil` for an unusable input does so; one
//!   documented to fail returns an [`EvalError`] naming the function.

use crate::{
    error::EvalError,
    func::{Args, Function, Param, ParamType as T},
    value::Value,
};

mod collections;
mod editors;
mod hash;
mod ids;
mod metrics;
mod parse;
mod strings;
mod time;
mod types;

const fn req(name: &'static str, ty: T) -> Param {
    Param::required(name, ty)
}
const fn opt(name: &'static str, ty: T) -> Param {
    Param::optional(name, ty)
}

/// The groups, in the order `FUNCTIONS.md` lists them.
const GROUPS: &[&[Function]] = &[
    editors::EDITORS,
    strings::FUNCTIONS,
    hash::FUNCTIONS,
    types::FUNCTIONS,
    collections::FUNCTIONS,
    parse::FUNCTIONS,
    ids::FUNCTIONS,
    time::FUNCTIONS,
    metrics::FUNCTIONS,
];

pub use metrics::{function_choices, function_contexts, Choice};

/// Every built-in function.
pub(crate) fn all() -> impl Iterator<Item = &'static Function> {
    GROUPS.iter().flat_map(|g| g.iter())
}

/// The optional string argument at `i`.
fn opt_str<'a>(a: &'a Args<'_>, i: usize) -> Result<Option<&'a str>, EvalError> {
    a.get(i).map(Value::expect_str).transpose()
}

/// The string at `i` as upstream's `StringGetter` wants it: an error naming `func` for any
/// other type, nil included (`expected string but got nil`).
fn string_arg<'a>(a: &'a Args<'_>, i: usize, func: &str) -> Result<&'a str, EvalError> {
    match a.value(i) {
        Value::String(s) => Ok(s),
        other => Err(EvalError::new(format!("{func}: expected string but got {}", other.ty()))),
    }
}

/// An error from converter `func`.
fn fail(func: &str, msg: impl std::fmt::Display) -> EvalError {
    EvalError::new(format!("{func}: {msg}"))
}

#[cfg(test)]
mod test_support {
    //! Table tests evaluate OTTL expression text, so arguments go through the compiler's
    //! checks (literal types, regex compilation) exactly as in a statement.
    use crate::{context::LogContext, Compiler, Registry, Value};

    /// Evaluates `expr` on an empty log record: `Err` holds a compile or run error's text.
    pub fn eval(expr: &str) -> Result<Value, String> {
        let r = Registry::standard();
        let e = Compiler::new(&r).value::<LogContext>(expr).map_err(|e| e.to_string())?;
        e.eval(&LogContext::default()).map_err(|e| e.to_string())
    }

    /// Runs a table: each row is an expression and either the expected value or a fragment
    /// of the expected error.
    pub fn check(rows: &[(&str, Result<Value, &str>)]) {
        for (expr, want) in rows {
            let got = eval(expr);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert!(same(w, g), "{expr}: want {w:?}, got {g:?}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{expr}: want error with {w:?}, got {g:?}"),
                _ => panic!("{expr}: want {want:?}, got {got:?}"),
            }
        }
    }

    /// Equal values and types, maps compared without regard to key order.
    pub fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Map(x), Value::Map(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w)),
            _ => a == b,
        }
    }

    pub fn s(v: &str) -> Value {
        Value::String(v.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use crate::Registry;

    /// FUNCTIONS.md's "Built in" list is exactly the registry.
    #[test]
    fn functions_md_matches_registry() {
        let md = include_str!("../../FUNCTIONS.md");
        let built_in = md.split("## Built in").nth(1).and_then(|s| s.split("## Not yet").next()).unwrap();
        let mut listed: Vec<&str> =
            built_in.lines().filter_map(|l| l.strip_prefix("- `")).filter_map(|l| l.split('`').next()).collect();
        listed.sort_unstable();
        assert_eq!(listed, Registry::standard().names());
    }
}
