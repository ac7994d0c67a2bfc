//! OTTL, the OpenTelemetry Transformation Language, for otelprof's collector (issue #13).
//!
//! A pure library: no I/O, no async, no logging. The collector's `transform` and `filter`
//! processors and the `routing` connector compile their statements with it at config load
//! and run them on each record.
//!
//! ```
//! use otelprof_ottl::{context::SpanContext, Compiler, ErrorMode, Registry, Statements};
//!
//! let registry = Registry::standard();
//! let compiler = Compiler::new(&registry);
//! let stmt = compiler
//!     .statement::<SpanContext>(
//!         r#"set(span.attributes["card"], SHA256(span.attributes["card"])) where resource.attributes["env"] == "prod""#,
//!     )
//!     .unwrap();
//! let group = Statements::new(vec![stmt], ErrorMode::Propagate);
//! let mut ctx = SpanContext::default(); // a processor moves the real span, scope and resource in
//! group.execute(&mut ctx).unwrap();
//!
//! let err = compiler.statement::<SpanContext>(r#"set(span.name, Sha256("x"))"#).err().unwrap();
//! assert_eq!(err.to_string(), r#"1:16: unknown function "Sha256""#);
//! ```
//!
//! # Stages, one module each
//! - [`lexer`] → [`parser`] → [`ast`]: text to a tree with byte offsets; every error is
//!   `line:col: message` ([`CompileError`]).
//! - [`compile`]: the tree to closures, once. Paths resolve against the context's field table
//!   to `fn` pointers ([`context::Field`]); literal arguments are type-checked against the
//!   function's parameters; regex and glob literals are compiled; `and`/`or` short-circuit.
//! - [`context`]: the record types statements run on (`resource`, `instrumentation_scope`,
//!   `span`, `spanevent`, `log`, `metric`, `datapoint`, `profile`), each owning its record and
//!   its parents, plus the per-record `cache` map.
//! - [`value`]: the run-time [`Value`], OTLP `AnyValue` conversions, comparison and math rules.
//! - [`func`]: the function registry. A function is one [`func::Function`] entry (name,
//!   parameters, a plain `fn`); the built-ins live in `funcs/`, one module per group.
//! - [`Statements`] / [`Conditions`]: running a group on a record under an [`ErrorMode`]
//!   (`ignore` reports and goes on, `silent` goes on, `propagate` stops with a [`RunError`]).
//!
//! # Language implemented
//! Statements `editor(args) [where cond]`; `and`/`or`/`not` with upstream's precedence and
//! parentheses; `== != < <= > >=` with LANGUAGE.md's cross-type rules (ints and floats compare
//! numerically, strings and bools order, nil equals only nil, other mixes are "not equal" and
//! order false); literals string (escapes `\\ \" \n \r \t \uXXXX`), int, float, bool, nil,
//! bytes `0x…`; list and map literals; `+ - * /` with precedence, int/float and time/duration
//! arithmetic; paths with or without their context prefix and with string, int or computed
//! keys (`span.attributes[cache["k"]]`); converters indexed (`Split(x, ",")[0]`); enums
//! `SPAN_KIND_*`, `STATUS_CODE_*`, `SEVERITY_NUMBER_*`, `METRIC_DATA_TYPE_*`,
//! `AGGREGATION_TEMPORALITY_*` (accepted in every context); named and optional arguments,
//! converters passed by name (`replace_pattern(…, SHA256, "%s")`).
//!
//! Functions: upstream's 16 editors and 87 of its 106 converters (strings, hashes, casts,
//! maps and lists, parsing, IDs and encodings, time and duration), and 12 of the transform
//! processor's metric functions (`convert_*`, `extract_*`, `copy_metric`, `scale_metric`,
//! `aggregate_*`). `FUNCTIONS.md` lists exactly which exist and which do not yet; a test keeps
//! it equal to the registry. The metric functions work on the whole record rather than on a
//! path ([`func::Target::record`]); [`function_contexts`] says which contexts each runs in, so
//! that a processor can place a statement by its functions as well as by its paths.
//!
//! # Not done yet
//! - The converters `FUNCTIONS.md` lists under "Not yet" (lambdas, XML, grok, `UserAgent`,
//!   `CommunityID`, `IsRootSpan`) and the transform processor's `extract_percentile_metric`,
//!   `merge_histogram_buckets` and log/trace-only functions.
//! - Paths: writing `span.events`/`links`, `metric.data_points`, data point `exemplars` and
//!   summary `quantile_values` (all read-only lists of maps), profile samples and a per-sample
//!   context; `profile.attribute_indices` is read-only.
//! - Context inference from path prefixes (which context a flat statement list runs in) and
//!   walking OTLP requests into contexts are the processors' part.
//! - Performance: getters return owned [`Value`]s (a read of `span.name` copies the string;
//!   an attribute read converts only the looked-up entry). Already in place: map editors on an
//!   attribute list edit it in place ([`func::Target::attributes_mut`]), `attributes["k"] ==
//!   "literal"` compares the OTLP value without a copy, a one-key attribute write moves its
//!   value, and call arguments are evaluated on the stack. A borrowed read path is the next
//!   step (docs/BENCHMARKS.md section 10).
#![deny(missing_docs)]

pub mod ast;
pub mod compile;
pub mod context;
pub mod error;
pub mod func;
mod funcs;
pub mod lexer;
pub mod parser;
mod run;
pub mod value;

#[cfg(test)]
mod tests;

pub use compile::Compiler;
pub use error::{CompileError, EvalError, Pos, RunError};
pub use func::Registry;
pub use funcs::{function_choices, function_contexts, Choice};
pub use run::{Condition, Conditions, ErrorMode, Statement, Statements, ValueExpr};
pub use value::{Map, Value};
