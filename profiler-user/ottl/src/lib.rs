//! OTTL, the OpenTelemetry Transformation Language, for otelprof's collector (issue #13).
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
pub use run::{Condition, Conditions, ErrorMode, Statement, Statements, ValueExpr};
pub use value::{Map, Value};
