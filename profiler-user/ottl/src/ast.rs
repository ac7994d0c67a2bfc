//! The syntax tree the parser produces and the compiler consumes. Every node carries the byte
//! offset where it starts (`at`), so compile errors can say `line:col`.

use crate::value::MathOp;

/// `editor(args) [where condition]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    /// The editor invocation.
    pub editor: Call,
    /// The `where` clause.
    pub condition: Option<BoolExpr>,
}

/// A boolean expression (a `where` clause or a standalone condition).
#[derive(Clone, Debug, PartialEq)]
pub enum BoolExpr {
    /// `a or b or …`
    Or(Vec<BoolExpr>),
    /// `a and b and …`
    And(Vec<BoolExpr>),
    /// `not a`
    Not(Box<BoolExpr>),
    /// `left op right`
    Compare {
        /// Left operand.
        left: Expr,
        /// Operator.
        op: CmpOp,
        /// Right operand.
        right: Expr,
        /// Offset of the operator.
        at: usize,
    },
    /// `true`, `false`, or a converter that returns a bool.
    Term(Expr),
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
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
}

/// A value expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A literal: string, int, float, bool, nil, bytes.
    Literal(crate::value::Value, usize),
    /// An upper-case identifier not followed by `(`: an enum symbol (or a converter passed by
    /// name to a function parameter).
    Enum(String, usize),
    /// A path.
    Path(Path),
    /// A converter call, possibly indexed: `Split(x, ",")[0]`.
    Call(Call),
    /// `[a, b]`
    List(Vec<Expr>, usize),
    /// `{"k": v}`
    Map(Vec<(String, Expr)>, usize),
    /// `a op b`
    Math(Box<Expr>, MathOp, Box<Expr>, usize),
}

impl Expr {
    /// Where the expression starts.
    pub fn at(&self) -> usize {
        match self {
            Expr::Literal(_, at) | Expr::Enum(_, at) | Expr::List(_, at) | Expr::Map(_, at) => *at,
            Expr::Path(p) => p.at,
            Expr::Call(c) => c.at,
            Expr::Math(l, ..) => l.at(),
        }
    }
}

/// `a.b.c["k"][0]`: dotted fields, then keys.
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    /// The dotted names (the first may be a context name).
    pub fields: Vec<String>,
    /// Keys after the last field.
    pub keys: Vec<Key>,
    /// Offset of the first field.
    pub at: usize,
}

/// An index into a map or list.
#[derive(Clone, Debug, PartialEq)]
pub enum Key {
    /// `["k"]`
    String(String, usize),
    /// `[0]`
    Int(i64, usize),
    /// `[path]` or `[Converter(…)]`: evaluated at run time.
    Expr(Box<Expr>),
}

/// A function invocation.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// Function name.
    pub name: String,
    /// Arguments in source order.
    pub args: Vec<Argument>,
    /// Keys applied to a converter's result.
    pub keys: Vec<Key>,
    /// Offset of the name.
    pub at: usize,
}

/// One argument: positional or `name = value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Argument {
    /// The name, for named arguments.
    pub name: Option<String>,
    /// The value.
    pub value: Expr,
    /// Offset of the argument (of its name when named).
    pub at: usize,
}
