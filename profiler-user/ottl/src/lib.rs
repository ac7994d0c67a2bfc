//! OTTL, the OpenTelemetry Transformation Language, for otelprof's collector (issue #13).
//!
//! Work in progress: this commit holds the runtime [`Value`] and the function registry
//! ([`func`]); the parser, compiler and contexts follow.

#![deny(missing_docs)]

pub mod ast;
pub mod error;
pub mod func;
mod funcs;
pub mod lexer;
pub mod parser;
pub mod value;

pub use error::{CompileError, EvalError, Pos, RunError};
pub use value::{Map, Value};
