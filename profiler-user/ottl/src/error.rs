//! The errors of each stage: [`ParseError`] and [`CompileError`] at config load (with the
//! position in the statement), [`EvalError`] while a statement runs over one record, and
//! [`RunError`] for a statement list run under an [`crate::ErrorMode`].

use std::fmt;

/// A byte offset in a statement, with its 1-based line and column (column counts chars).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    /// Byte offset from the start of the statement.
    pub offset: usize,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in chars.
    pub col: u32,
}

impl Pos {
    /// The position of byte `offset` in `src`.
    pub fn at(src: &str, offset: usize) -> Pos {
        let offset = offset.min(src.len());
        let before = &src[..offset];
        let line = before.matches('\n').count() as u32 + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = src[line_start..offset].chars().count() as u32 + 1;
        Pos { offset, line, col }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A statement or condition that does not lex, parse or type-check: `1:17: unknown function
/// "Sha256"`. Parsing and compiling share it, so a config loader reports both the same way.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct CompileError {
    /// Where in the statement.
    pub pos: Pos,
    /// What is wrong, without the position.
    pub message: String,
}

impl CompileError {
    /// An error at byte `offset` of `src`.
    pub fn new(src: &str, offset: usize, message: impl Into<String>) -> Self {
        CompileError { pos: Pos::at(src, offset), message: message.into() }
    }
}

/// Parse errors are compile errors: one type for "refused at config load".
pub type ParseError = CompileError;

/// A statement failed on one record (wrong type at run time, a bad index, a converter refusing
/// its input). The processor's `error_mode` decides what happens next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EvalError {
    /// What went wrong.
    pub message: String,
}

impl EvalError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        EvalError { message: message.into() }
    }
}

/// A statement list stopped under `error_mode: propagate`: which statement and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("failed to execute statement: {statement}: {source}")]
pub struct RunError {
    /// The statement's source text.
    pub statement: String,
    /// The evaluation error.
    #[source]
    pub source: EvalError,
}
