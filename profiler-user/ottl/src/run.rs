//! Compiled statements and conditions, and running them under an [`ErrorMode`].

use crate::{
    compile::{run_editor, CArg, Cond, Getter, Setter},
    error::{EvalError, RunError},
    func::EditorFn,
    value::Value,
};

/// What a statement list does when a statement fails on a record (upstream's transform and
/// filter processors' `error_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ErrorMode {
    /// Report the error (the caller logs it) and go on with the next statement.
    Ignore,
    /// Go on with the next statement without reporting.
    Silent,
    /// Stop and return the error: the processor drops the payload and returns the error.
    #[default]
    Propagate,
}

impl std::str::FromStr for ErrorMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ignore" => Ok(ErrorMode::Ignore),
            "silent" => Ok(ErrorMode::Silent),
            "propagate" => Ok(ErrorMode::Propagate),
            other => Err(format!("unknown error_mode {other:?} (ignore, silent, propagate)")),
        }
    }
}

/// One compiled statement for context `C`.
pub struct Statement<C> {
    pub(crate) src: String,
    pub(crate) condition: Option<Cond<C>>,
    pub(crate) editor: EditorFn,
    pub(crate) target: Option<(Getter<C>, Setter<C>)>,
    /// The target as a whole attribute list, when it is one (in-place map editors).
    pub(crate) attrs: Option<crate::compile::AttrsMut<C>>,
    pub(crate) args: Vec<CArg<C>>,
}

impl<C: 'static> Statement<C> {
    /// The source text.
    pub fn source(&self) -> &str {
        &self.src
    }

    /// Runs the statement on one record: evaluates the `where` clause, then the editor.
    pub fn execute(&self, ctx: &mut C) -> Result<(), EvalError> {
        if let Some(cond) = &self.condition {
            if !cond(ctx)? {
                return Ok(());
            }
        }
        run_editor(self.editor, self.target.as_ref(), self.attrs, &self.args, ctx)
    }
}

/// One compiled condition for context `C`.
pub struct Condition<C> {
    pub(crate) src: String,
    pub(crate) cond: Cond<C>,
}

impl<C> Condition<C> {
    /// The source text.
    pub fn source(&self) -> &str {
        &self.src
    }
    /// Evaluates the condition on one record.
    pub fn eval(&self, ctx: &C) -> Result<bool, EvalError> {
        (self.cond)(ctx)
    }
}

/// One compiled value expression for context `C`.
pub struct ValueExpr<C> {
    pub(crate) src: String,
    pub(crate) get: Getter<C>,
}

impl<C> ValueExpr<C> {
    /// The source text.
    pub fn source(&self) -> &str {
        &self.src
    }
    /// Evaluates the expression on one record.
    pub fn eval(&self, ctx: &C) -> Result<Value, EvalError> {
        (self.get)(ctx)
    }
}

/// A statement group: optional group conditions (ORed; the statements run when any holds, as
/// the transform processor's `conditions`), the statements in order, and the error mode.
pub struct Statements<C> {
    /// Group conditions; empty means "always".
    pub conditions: Vec<Condition<C>>,
    /// The statements, run in order on each record.
    pub statements: Vec<Statement<C>>,
    /// What a failure does.
    pub error_mode: ErrorMode,
}

impl<C: 'static> Statements<C> {
    /// A group without conditions.
    pub fn new(statements: Vec<Statement<C>>, error_mode: ErrorMode) -> Self {
        Statements { conditions: Vec::new(), statements, error_mode }
    }

    /// Runs the group on one record. Under `propagate` the first error stops the run and is
    /// returned; under `ignore` and `silent` errors are skipped (use
    /// [`Statements::execute_reporting`] to log them under `ignore`).
    pub fn execute(&self, ctx: &mut C) -> Result<(), RunError> {
        self.execute_reporting(ctx, &mut |_| {})
    }

    /// Like [`Statements::execute`], handing each error skipped under `ignore` to `report`
    /// (the processor logs it; this crate does no I/O).
    pub fn execute_reporting(&self, ctx: &mut C, report: &mut dyn FnMut(RunError)) -> Result<(), RunError> {
        if !self.conditions.is_empty() {
            let mut any = false;
            for c in &self.conditions {
                match c.eval(ctx) {
                    Ok(true) => {
                        any = true;
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => self.fail(&c.src, e, report)?,
                }
            }
            if !any {
                return Ok(());
            }
        }
        for s in &self.statements {
            if let Err(e) = s.execute(ctx) {
                self.fail(&s.src, e, report)?;
            }
        }
        Ok(())
    }

    fn fail(&self, src: &str, e: EvalError, report: &mut dyn FnMut(RunError)) -> Result<(), RunError> {
        let err = RunError { statement: src.to_owned(), source: e };
        match self.error_mode {
            ErrorMode::Propagate => Err(err),
            ErrorMode::Ignore => {
                report(err);
                Ok(())
            }
            ErrorMode::Silent => Ok(()),
        }
    }
}

/// A list of conditions ORed together, as the filter processor and the routing connector use
/// them: [`Conditions::matches`] is true when any condition holds. A condition that fails is
/// false under `ignore`/`silent` and an error under `propagate`.
pub struct Conditions<C> {
    /// The conditions.
    pub conditions: Vec<Condition<C>>,
    /// What a failure does.
    pub error_mode: ErrorMode,
}

impl<C> Conditions<C> {
    /// Whether any condition holds for the record.
    pub fn matches(&self, ctx: &C) -> Result<bool, RunError> {
        self.matches_reporting(ctx, &mut |_| {})
    }

    /// Like [`Conditions::matches`], reporting errors skipped under `ignore`.
    pub fn matches_reporting(&self, ctx: &C, report: &mut dyn FnMut(RunError)) -> Result<bool, RunError> {
        for c in &self.conditions {
            match c.eval(ctx) {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) => {
                    let err = RunError { statement: c.src.clone(), source: e };
                    match self.error_mode {
                        ErrorMode::Propagate => return Err(err),
                        ErrorMode::Ignore => report(err),
                        ErrorMode::Silent => {}
                    }
                }
            }
        }
        Ok(false)
    }
}
