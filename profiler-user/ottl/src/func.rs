//! The function registry: how an editor or converter is declared and implemented.
//!
//! A function is one [`Function`] entry: a name (editors start lower-case, converters
//! upper-case, as LANGUAGE.md requires), a parameter list ([`Param`]: name, [`ParamType`],
//! optional or not) and an implementation that is a plain `fn` over already evaluated
//! arguments. The compiler checks arity, names, literal types and regex literals once, at
//! compile time; the implementation only sees [`Args`].
//!
//! ```
//! use otelprof_ottl::func::{Args, Function, Param, ParamType, Registry};
//! use otelprof_ottl::{EvalError, Value};
//!
//! fn double(args: &Args<'_>) -> Result<Value, EvalError> {
//!     Ok(Value::Int(args.int(0)? * 2))
//! }
//! const DOUBLE: Function = Function::converter(
//!     "Double",
//!     &[Param::required("value", ParamType::Int)],
//!     double,
//! );
//! let mut registry = Registry::standard();
//! registry.register(DOUBLE).unwrap();
//! assert!(registry.get("Double").is_some());
//! ```
//!
//! Arguments at call sites follow upstream: positional first, then `name = value` in any
//! order; a named argument may skip earlier optional ones; an absent optional argument is
//! [`Arg::Absent`] (read it with [`Args::get`]).

use std::{borrow::Cow, collections::HashMap};

use regex::Regex;

use crate::{error::EvalError, value::Value};

/// What a parameter accepts. Typed getters (`String`, `Int`, …) are checked at compile time
/// when the argument is a literal and at run time otherwise (a wrong type is an [`EvalError`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    /// Any value (upstream's `Getter`).
    Any,
    /// A string (`StringGetter`, or a `string` literal parameter).
    String,
    /// An int (`IntGetter`, `int64`).
    Int,
    /// A float; ints are accepted and widened (`FloatGetter`, `float64`).
    Float,
    /// A bool (`BoolGetter`, `bool`).
    Bool,
    /// A map (`PMapGetter`).
    Map,
    /// A list (slice parameters such as `keys []string`); the function checks the elements.
    List,
    /// A byte slice literal or bytes value.
    Bytes,
    /// An enum symbol (`SPAN_KIND_SERVER`, …), passed as its int value.
    Enum,
    /// A string literal that is a regular expression: compiled once, passed as
    /// [`Arg::Regex`]. A bad pattern is a compile error.
    Regex,
    /// A string literal that is a glob (`*`, `?`, `[…]`), as `replace_match` takes: compiled
    /// once to an anchored regex, passed as [`Arg::Regex`]. A bad glob is a compile error.
    Glob,
    /// The path an editor writes (upstream's `GetSetter`): must be a settable path. Only the
    /// first parameter of an editor may have this type; it is passed as the editor's
    /// [`Target`], and its slot in [`Args`] is [`Arg::Absent`].
    Target,
    /// A converter's name passed as a value (upstream's `Optional[FunctionGetter]`, e.g.
    /// `replace_pattern(…, function = SHA256)`), passed as [`Arg::Function`].
    Function,
}

/// One declared parameter.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    /// The snake_case name used for `name = value` arguments.
    pub name: &'static str,
    /// What it accepts.
    pub ty: ParamType,
    /// May be left out (all optional parameters come after the required ones).
    pub optional: bool,
}

impl Param {
    /// A required parameter.
    pub const fn required(name: &'static str, ty: ParamType) -> Param {
        Param { name, ty, optional: false }
    }
    /// An optional parameter.
    pub const fn optional(name: &'static str, ty: ParamType) -> Param {
        Param { name, ty, optional: true }
    }
}

/// A converter: evaluated arguments in, a value out. Pure: no I/O, no state.
pub type ConverterFn = fn(&Args<'_>) -> Result<Value, EvalError>;

/// An editor: reads and writes its target path, with the other arguments evaluated.
pub type EditorFn = fn(&mut dyn Target, &Args<'_>) -> Result<(), EvalError>;

/// How a function runs.
#[derive(Clone, Copy)]
pub enum Implementation {
    /// A converter (name starts upper-case).
    Converter(ConverterFn),
    /// An editor (name starts lower-case).
    Editor(EditorFn),
}

impl std::fmt::Debug for Implementation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Implementation::Converter(_) => "Converter",
            Implementation::Editor(_) => "Editor",
        })
    }
}

/// One registry entry.
#[derive(Clone, Copy, Debug)]
pub struct Function {
    /// The name as written in statements.
    pub name: &'static str,
    /// Declared parameters, in positional order.
    pub params: &'static [Param],
    /// The implementation.
    pub imp: Implementation,
}

impl Function {
    /// A converter entry.
    pub const fn converter(name: &'static str, params: &'static [Param], f: ConverterFn) -> Self {
        Function { name, params, imp: Implementation::Converter(f) }
    }
    /// An editor entry.
    pub const fn editor(name: &'static str, params: &'static [Param], f: EditorFn) -> Self {
        Function { name, params, imp: Implementation::Editor(f) }
    }
    /// Whether this is an editor.
    pub fn is_editor(&self) -> bool {
        matches!(self.imp, Implementation::Editor(_))
    }
    /// Calls a converter with positional values (for [`Arg::Function`] arguments and tests).
    pub fn call(&self, values: Vec<Value>) -> Result<Value, EvalError> {
        match self.imp {
            Implementation::Converter(f) => {
                let args: Vec<Arg<'_>> = values.into_iter().map(|v| Arg::Value(Cow::Owned(v))).collect();
                f(&Args::new(&args))
            }
            Implementation::Editor(_) => Err(EvalError::new(format!("{} is an editor, not a converter", self.name))),
        }
    }
}

/// The place an editor writes: a compiled path bound to the current record.
pub trait Target {
    /// The current value (`Nil` when absent).
    fn get(&self) -> Result<Value, EvalError>;
    /// Writes a new value.
    fn set(&mut self, value: Value) -> Result<(), EvalError>;
    /// The whole record, for an editor without a target parameter that works on its context
    /// rather than on one path (the transform processor's metric functions downcast it to
    /// `MetricContext`). `None` for a path target.
    fn record(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
    /// The target as the OTLP attribute list it is (`span.attributes`), so map editors
    /// (`delete_key`, `keep_keys`, …) change it in place instead of converting the whole map
    /// to a [`Value`] and writing it back. `None` for any other target.
    fn attributes_mut(&mut self) -> Option<&mut Vec<opentelemetry_proto::tonic::common::v1::KeyValue>> {
        None
    }
}

/// A [`Target`] for editors that have none (their first parameter is not a target).
pub struct NoTarget;

impl Target for NoTarget {
    fn get(&self) -> Result<Value, EvalError> {
        Err(EvalError::new("function has no target"))
    }
    fn set(&mut self, _: Value) -> Result<(), EvalError> {
        Err(EvalError::new("function has no target"))
    }
}

/// One evaluated argument.
#[derive(Debug)]
pub enum Arg<'a> {
    /// An optional argument that was not given (and an editor's target slot).
    Absent,
    /// An evaluated value: borrowed for literals (no copy per call), owned otherwise.
    Value(Cow<'a, Value>),
    /// A regex compiled at compile time.
    Regex(&'a Regex),
    /// A converter passed by name.
    Function(&'a Function),
}

/// The evaluated arguments of one call, indexed by parameter position.
pub struct Args<'a> {
    args: &'a [Arg<'a>],
}

impl<'a> Args<'a> {
    /// Wraps evaluated arguments.
    pub fn new(args: &'a [Arg<'a>]) -> Self {
        Args { args }
    }
    /// Number of argument slots (the declared parameter count).
    pub fn len(&self) -> usize {
        self.args.len()
    }
    /// No arguments.
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }
    /// The raw argument at `i`.
    pub fn arg(&self, i: usize) -> &Arg<'a> {
        self.args.get(i).unwrap_or(&Arg::Absent)
    }
    /// The value at `i`; `None` when absent (or not a value).
    pub fn get(&self, i: usize) -> Option<&Value> {
        match self.arg(i) {
            Arg::Value(v) => Some(v.as_ref()),
            _ => None,
        }
    }
    /// The value at `i`, `Nil` when absent.
    pub fn value(&self, i: usize) -> &Value {
        const NIL: Value = Value::Nil;
        self.get(i).unwrap_or(&NIL)
    }
    /// The string at `i`, or a type error.
    pub fn str(&self, i: usize) -> Result<&str, EvalError> {
        self.value(i).expect_str()
    }
    /// The int at `i`, or a type error.
    pub fn int(&self, i: usize) -> Result<i64, EvalError> {
        self.value(i).expect_int()
    }
    /// The number at `i` as `f64`, or a type error.
    pub fn float(&self, i: usize) -> Result<f64, EvalError> {
        self.value(i).expect_f64()
    }
    /// The bool at `i`, or a type error.
    pub fn bool(&self, i: usize) -> Result<bool, EvalError> {
        self.value(i).expect_bool()
    }
    /// The compiled regex at `i`.
    pub fn regex(&self, i: usize) -> Result<&'a Regex, EvalError> {
        match self.arg(i) {
            Arg::Regex(r) => Ok(r),
            _ => Err(EvalError::new(format!("argument {i} is not a regex"))),
        }
    }
    /// The converter passed at `i`, if any.
    pub fn function(&self, i: usize) -> Option<&'a Function> {
        match self.arg(i) {
            Arg::Function(f) => Some(f),
            _ => None,
        }
    }
    /// The list of strings at `i` (each element must be a string).
    pub fn strings(&self, i: usize) -> Result<Vec<&str>, EvalError> {
        self.value(i).expect_list()?.iter().map(Value::expect_str).collect()
    }
}

/// Functions by name. [`Registry::standard`] holds every built-in; more can be added one
/// entry at a time with [`Registry::register`].
#[derive(Clone, Debug, Default)]
pub struct Registry {
    functions: HashMap<&'static str, Function>,
}

/// Registering a function whose name or shape breaks the rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("function {name:?}: {reason}")]
pub struct RegisterError {
    /// The function's name.
    pub name: &'static str,
    /// What is wrong.
    pub reason: &'static str,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Every built-in editor and converter.
    pub fn standard() -> Self {
        let mut r = Registry::new();
        for f in crate::funcs::all() {
            r.register(*f).expect("built-in functions are well-formed");
        }
        r
    }

    /// Adds a function; a later entry with the same name replaces the earlier one.
    pub fn register(&mut self, f: Function) -> Result<(), RegisterError> {
        let err = |reason| Err(RegisterError { name: f.name, reason });
        let first = f.name.chars().next();
        match (&f.imp, first) {
            (Implementation::Editor(_), Some(c)) if c.is_ascii_lowercase() => {}
            (Implementation::Converter(_), Some(c)) if c.is_ascii_uppercase() => {}
            (Implementation::Editor(_), _) => return err("editor names start lower-case"),
            (Implementation::Converter(_), _) => return err("converter names start upper-case"),
        }
        let mut seen_optional = false;
        for (i, p) in f.params.iter().enumerate() {
            if p.optional {
                seen_optional = true;
            } else if seen_optional {
                return err("a required parameter follows an optional one");
            }
            if p.ty == ParamType::Target && (i != 0 || !f.is_editor()) {
                return err("only an editor's first parameter may be a target");
            }
        }
        self.functions.insert(f.name, f);
        Ok(())
    }

    /// The function called `name`.
    pub fn get(&self, name: &str) -> Option<&Function> {
        self.functions.get(name)
    }

    /// All names, sorted (for docs and "did you mean").
    pub fn names(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.functions.keys().copied().collect();
        v.sort_unstable();
        v
    }
}
