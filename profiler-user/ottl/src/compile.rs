//! AST → closures, once per statement.
//!
//! Every path is resolved here against the context's [`Field`] table, so a record is never
//! looked up by path name at run time; literal arguments are type-checked against the
//! function's [`Param`]s, regex literals are compiled, enum symbols become ints, and literal
//! sub-expressions stay [`Ev::Const`] so calls borrow them instead of copying.
//!
//! Run-time shape: a getter is `Box<dyn Fn(&C) -> Result<Value, EvalError>>`, a setter
//! `Box<dyn Fn(&mut C, Value) -> Result<(), EvalError>>`, a condition
//! `Box<dyn Fn(&C) -> Result<bool, EvalError>>` (`and`/`or` short-circuit).

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use regex::Regex;

use crate::{
    ast::{self, BoolExpr, CmpOp, Expr, Key},
    context::{Context, Field},
    error::{CompileError, EvalError},
    func::{Arg, Args, Function, Implementation, ParamType, Registry, Target},
    parser,
    value::{Map, Type, Value},
};

pub(crate) type Getter<C> = Box<dyn Fn(&C) -> Result<Value, EvalError> + Send + Sync>;
pub(crate) type Setter<C> = Box<dyn Fn(&mut C, Value) -> Result<(), EvalError> + Send + Sync>;
pub(crate) type Cond<C> = Box<dyn Fn(&C) -> Result<bool, EvalError> + Send + Sync>;

/// A compiled value expression: a constant or a getter.
pub(crate) enum Ev<C> {
    Const(Value),
    Get(Getter<C>),
}

impl<C> Ev<C> {
    fn eval<'a>(&'a self, c: &C) -> Result<Cow<'a, Value>, EvalError> {
        match self {
            Ev::Const(v) => Ok(Cow::Borrowed(v)),
            Ev::Get(g) => g(c).map(Cow::Owned),
        }
    }
}

impl<C: 'static> Ev<C> {
    fn into_getter(self) -> Getter<C> {
        match self {
            Ev::Const(v) => Box::new(move |_| Ok(v.clone())),
            Ev::Get(g) => g,
        }
    }
}

/// A compiled key.
enum CKey<C> {
    Str(String),
    Int(i64),
    Dyn(Getter<C>),
}

enum RKey<'a> {
    Str(Cow<'a, str>),
    Int(i64),
}

impl<C> CKey<C> {
    fn resolve(&self, c: &C) -> Result<RKey<'_>, EvalError> {
        Ok(match self {
            CKey::Str(s) => RKey::Str(Cow::Borrowed(s)),
            CKey::Int(i) => RKey::Int(*i),
            CKey::Dyn(g) => match g(c)? {
                Value::String(s) => RKey::Str(Cow::Owned(s)),
                Value::Int(i) => RKey::Int(i),
                other => return Err(EvalError::new(format!("a key must be a string or an int, got {}", other.ty()))),
            },
        })
    }
}

fn index(v: Value, k: &RKey<'_>) -> Result<Value, EvalError> {
    match (v, k) {
        (Value::Nil, _) => Ok(Value::Nil),
        (Value::Map(mut m), RKey::Str(s)) => Ok(m.remove(s).unwrap_or(Value::Nil)),
        (Value::List(l), RKey::Int(i)) => {
            let n = l.len();
            usize::try_from(*i)
                .ok()
                .and_then(|i| l.into_iter().nth(i))
                .ok_or_else(|| EvalError::new(format!("index {i} out of bounds for a list of {n}")))
        }
        (Value::Map(_), RKey::Int(_)) => Err(EvalError::new("a map is indexed by string keys")),
        (Value::List(_), RKey::Str(_)) => Err(EvalError::new("a list is indexed by int keys")),
        (other, _) => Err(EvalError::new(format!("type {} cannot be indexed", other.ty()))),
    }
}

fn set_nested(v: &mut Value, keys: &[RKey<'_>], new: Value) -> Result<(), EvalError> {
    let Some((k, rest)) = keys.split_first() else {
        *v = new;
        return Ok(());
    };
    match k {
        RKey::Str(s) => {
            if v.is_nil() {
                *v = Value::Map(Map::new());
            }
            let Value::Map(m) = v else {
                return Err(EvalError::new(format!("type {} cannot be indexed by a string key", v.ty())));
            };
            if m.get(s).is_none() {
                m.insert(s.as_ref(), Value::Nil);
            }
            set_nested(m.get_mut(s).expect("inserted above"), rest, new)
        }
        RKey::Int(i) => {
            let Value::List(l) = v else {
                return Err(EvalError::new(format!("type {} cannot be indexed by an int key", v.ty())));
            };
            let n = l.len();
            let slot = usize::try_from(*i)
                .ok()
                .and_then(|i| l.get_mut(i))
                .ok_or_else(|| EvalError::new(format!("index {i} out of bounds for a list of {n}")))?;
            set_nested(slot, rest, new)
        }
    }
}

/// Sets `attrs[key]` (then `rest` inside it), adding the entry when absent.
fn set_attribute(attrs: &mut Vec<KeyValue>, key: &str, rest: &[RKey<'_>], v: Value) -> Result<(), EvalError> {
    let i = match attrs.iter().position(|kv| kv.key == key) {
        Some(i) => i,
        None => {
            attrs.push(KeyValue { key: key.to_string(), ..Default::default() });
            attrs.len() - 1
        }
    };
    let slot = &mut attrs[i];
    if rest.is_empty() {
        slot.value = Some(v.into_any_value());
    } else {
        let mut cur = slot.value.as_ref().map_or(Value::Nil, Value::from_any_value);
        set_nested(&mut cur, rest, v)?;
        slot.value = Some(cur.into_any_value());
    }
    Ok(())
}

fn resolve_all<C>(keys: &[CKey<C>], c: &C) -> Result<Vec<RKey<'static>>, EvalError> {
    keys.iter()
        .map(|k| {
            Ok(match k.resolve(c)? {
                RKey::Str(s) => RKey::Str(Cow::Owned(s.into_owned())),
                RKey::Int(i) => RKey::Int(i),
            })
        })
        .collect()
}

fn apply_keys<C>(mut v: Value, keys: &[CKey<C>], c: &C) -> Result<Value, EvalError> {
    for k in keys {
        v = index(v, &k.resolve(c)?)?;
    }
    Ok(v)
}

/// Compiles statements, conditions and values for contexts of type `C` with functions from a
/// [`Registry`].
///
/// Use one compiler for a whole config: it compiles each distinct regex (or glob) literal
/// once and shares it between the statements that use it. Compiling a regex costs far more
/// than the rest of a statement, and a config repeats patterns across statements and
/// contexts (the `parse_compile` fuzz target, which compiles one text in eight contexts,
/// spent two thirds of its time recompiling the same regexes).
pub struct Compiler<'r> {
    registry: &'r Registry,
    /// Compiled regexes by pattern (globs by their regex translation). A `Regex` is a
    /// reference-counted handle, so a hit is a cheap clone.
    regexes: Mutex<HashMap<String, Regex>>,
}

impl<'r> Compiler<'r> {
    /// A compiler over `registry`.
    pub fn new(registry: &'r Registry) -> Self {
        Compiler { registry, regexes: Mutex::default() }
    }

    fn cx<'s>(&'s self, src: &'s str) -> Cx<'s, 'r> {
        Cx { src, registry: self.registry, regexes: &self.regexes }
    }

    /// How many distinct regexes this compiler has compiled.
    #[cfg(test)]
    pub(crate) fn regexes_compiled(&self) -> usize {
        self.regexes.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Parses and compiles one statement.
    pub fn statement<C: Context>(&self, src: &str) -> Result<crate::Statement<C>, CompileError> {
        let ast = parser::parse_statement(src)?;
        let cx = self.cx(src);
        let condition = ast.condition.as_ref().map(|c| cx.condition::<C>(c)).transpose()?;
        let call = &ast.editor;
        let func = cx.function(call)?;
        let Implementation::Editor(editor) = func.imp else {
            return Err(cx.err(call.at, format!("{:?} is a converter, not an editor", call.name)));
        };
        let mut args = cx.args::<C>(call, func)?;
        let target = match func.params.first() {
            Some(p) if p.ty == ParamType::Target => match std::mem::replace(&mut args[0], CArg::Absent) {
                CArg::Target(get, set) => Some((get, set)),
                _ => None,
            },
            _ => None,
        };
        let attrs = target.as_ref().and_then(|_| cx.attributes_target::<C>(call, &func));
        Ok(crate::Statement { src: src.to_owned(), condition, editor, target, attrs, args })
    }

    /// Parses and compiles one condition.
    pub fn condition<C: Context>(&self, src: &str) -> Result<crate::Condition<C>, CompileError> {
        let ast = parser::parse_condition(src)?;
        let cx = self.cx(src);
        Ok(crate::Condition { src: src.to_owned(), cond: cx.condition::<C>(&ast)? })
    }

    /// Parses and compiles one value expression (as used by e.g. the routing connector).
    pub fn value<C: Context>(&self, src: &str) -> Result<crate::ValueExpr<C>, CompileError> {
        let ast = parser::parse_value(src)?;
        let cx = self.cx(src);
        Ok(crate::ValueExpr { src: src.to_owned(), get: cx.expr::<C>(&ast)?.into_getter() })
    }
}

/// A compiled argument slot.
pub(crate) enum CArg<C> {
    Absent,
    Ev(Ev<C>),
    Regex(Regex),
    Function(Function),
    Target(Getter<C>, Setter<C>),
}

impl<C> CArg<C> {
    pub(crate) fn eval<'a>(&'a self, c: &C) -> Result<Arg<'a>, EvalError> {
        Ok(match self {
            CArg::Absent | CArg::Target(..) => Arg::Absent,
            CArg::Ev(e) => Arg::Value(e.eval(c)?),
            CArg::Regex(r) => Arg::Regex(r),
            CArg::Function(f) => Arg::Function(f),
        })
    }
}

/// A whole attribute list of the record, for editors that change it in place.
pub(crate) type AttrsMut<C> = fn(&mut C) -> &mut Vec<KeyValue>;

/// An editor's target bound to the record.
pub(crate) struct PathTarget<'a, C> {
    pub(crate) ctx: &'a mut C,
    pub(crate) get: &'a Getter<C>,
    pub(crate) set: &'a Setter<C>,
    /// Set when the target is a whole attribute list (`span.attributes`).
    pub(crate) attrs: Option<AttrsMut<C>>,
}

impl<C> Target for PathTarget<'_, C> {
    fn get(&self) -> Result<Value, EvalError> {
        (self.get)(self.ctx)
    }
    fn set(&mut self, value: Value) -> Result<(), EvalError> {
        (self.set)(self.ctx, value)
    }
    fn attributes_mut(&mut self) -> Option<&mut Vec<KeyValue>> {
        self.attrs.map(|f| f(self.ctx))
    }
}

/// The target of an editor without a target parameter: the record itself ([`Target::record`]).
struct RecordTarget<'a>(&'a mut dyn std::any::Any);

impl Target for RecordTarget<'_> {
    fn get(&self) -> Result<Value, EvalError> {
        Err(EvalError::new("function has no target"))
    }
    fn set(&mut self, _: Value) -> Result<(), EvalError> {
        Err(EvalError::new("function has no target"))
    }
    fn record(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self.0)
    }
}

/// How many arguments a call evaluates on the stack: more than any built-in function takes.
const INLINE_ARGS: usize = 8;

/// A call's evaluated arguments: on the stack for up to [`INLINE_ARGS`], so a call allocates
/// nothing for them.
// The inline variant is large on purpose: it lives on the stack for one call.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Evaluated<'a> {
    Inline([Arg<'a>; INLINE_ARGS], usize),
    Heap(Vec<Arg<'a>>),
}

impl<'a> Evaluated<'a> {
    pub(crate) fn of<C>(args: &'a [CArg<C>], c: &C) -> Result<Self, EvalError> {
        if args.len() > INLINE_ARGS {
            return Ok(Evaluated::Heap(args.iter().map(|a| a.eval(c)).collect::<Result<_, _>>()?));
        }
        let mut inline: [Arg<'a>; INLINE_ARGS] = std::array::from_fn(|_| Arg::Absent);
        for (slot, a) in inline.iter_mut().zip(args) {
            *slot = a.eval(c)?;
        }
        Ok(Evaluated::Inline(inline, args.len()))
    }

    pub(crate) fn args(&self) -> Args<'_> {
        Args::new(match self {
            Evaluated::Inline(a, n) => &a[..*n],
            Evaluated::Heap(v) => v,
        })
    }
}

/// Runs an editor over evaluated arguments.
pub(crate) fn run_editor<C: 'static>(
    editor: crate::func::EditorFn,
    target: Option<&(Getter<C>, Setter<C>)>,
    attrs: Option<AttrsMut<C>>,
    args: &[CArg<C>],
    c: &mut C,
) -> Result<(), EvalError> {
    let evaluated = Evaluated::of(args, c)?;
    let args = evaluated.args();
    match target {
        Some((get, set)) => editor(&mut PathTarget { ctx: c, get, set, attrs }, &args),
        None => editor(&mut RecordTarget(c), &args),
    }
}

struct Cx<'s, 'r> {
    src: &'s str,
    registry: &'r Registry,
    regexes: &'s Mutex<HashMap<String, Regex>>,
}

impl Cx<'_, '_> {
    fn err(&self, at: usize, msg: impl Into<String>) -> CompileError {
        CompileError::new(self.src, at, msg)
    }

    /// `pattern` compiled, from the compiler's cache when an earlier statement used it.
    fn regex(&self, pattern: &str) -> Result<Regex, regex::Error> {
        if let Some(r) = self.regexes.lock().unwrap_or_else(PoisonError::into_inner).get(pattern) {
            return Ok(r.clone());
        }
        let r = Regex::new(pattern)?;
        self.regexes.lock().unwrap_or_else(PoisonError::into_inner).insert(pattern.to_owned(), r.clone());
        Ok(r)
    }

    fn function(&self, call: &ast::Call) -> Result<Function, CompileError> {
        self.registry
            .get(&call.name)
            .copied()
            .ok_or_else(|| self.err(call.at, format!("unknown function {:?}", call.name)))
    }

    fn condition<C: Context>(&self, b: &BoolExpr) -> Result<Cond<C>, CompileError> {
        Ok(match b {
            BoolExpr::Or(v) => {
                let parts = v.iter().map(|x| self.condition::<C>(x)).collect::<Result<Vec<_>, _>>()?;
                Box::new(move |c| {
                    for p in &parts {
                        if p(c)? {
                            return Ok(true);
                        }
                    }
                    Ok(false)
                })
            }
            BoolExpr::And(v) => {
                let parts = v.iter().map(|x| self.condition::<C>(x)).collect::<Result<Vec<_>, _>>()?;
                Box::new(move |c| {
                    for p in &parts {
                        if !p(c)? {
                            return Ok(false);
                        }
                    }
                    Ok(true)
                })
            }
            BoolExpr::Not(x) => {
                let inner = self.condition::<C>(x)?;
                Box::new(move |c| Ok(!inner(c)?))
            }
            BoolExpr::Term(e) => match self.expr::<C>(e)? {
                Ev::Const(v) => {
                    let b = v.expect_bool().map_err(|e| self.err(e_at(b), e.message))?;
                    Box::new(move |_| Ok(b))
                }
                Ev::Get(g) => Box::new(move |c| {
                    g(c)?.expect_bool().map_err(|e| EvalError::new(format!("condition: {}", e.message)))
                }),
            },
            BoolExpr::Compare { left, op, right, .. } => {
                if let Some(fast) =
                    self.attribute_is::<C>(left, *op, right).or_else(|| self.attribute_is::<C>(right, *op, left))
                {
                    return Ok(fast);
                }
                let l = self.expr::<C>(left)?;
                let r = self.expr::<C>(right)?;
                let op = *op;
                Box::new(move |c| Ok(compare(&*l.eval(c)?, op, &*r.eval(c)?)))
            }
        })
    }

    /// `attributes["k"] == "literal"` (or `!=`), the most common condition, compared on the
    /// OTLP value in place: no conversion, no copy. Same result as the general path (a missing
    /// key or a value of another type is not equal).
    fn attribute_is<C: Context>(&self, path: &Expr, op: CmpOp, literal: &Expr) -> Option<Cond<C>> {
        let (Expr::Path(p), Expr::Literal(Value::String(want), _)) = (path, literal) else { return None };
        let equal = match op {
            CmpOp::Eq => true,
            CmpOp::Ne => false,
            _ => return None,
        };
        let [Key::String(key, _)] = p.keys.as_slice() else { return None };
        let Ok(Field::Attributes { get, .. }) = self.field::<C>(p) else { return None };
        let (key, want) = (key.clone(), want.clone());
        Some(Box::new(move |c| {
            let value = get(c).iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref());
            let same = matches!(value, Some(any_value::Value::StringValue(s)) if *s == want);
            Ok(same == equal)
        }))
    }

    fn expr<C: Context>(&self, e: &Expr) -> Result<Ev<C>, CompileError> {
        Ok(match e {
            Expr::Literal(v, _) => Ev::Const(v.clone()),
            Expr::Enum(name, at) => Ev::Const(Value::Int(
                C::enum_value(name).ok_or_else(|| self.err(*at, format!("unknown enum symbol {name:?}")))?,
            )),
            Expr::List(items, _) => {
                let items = items.iter().map(|x| self.expr::<C>(x)).collect::<Result<Vec<_>, _>>()?;
                if items.iter().all(|x| matches!(x, Ev::Const(_))) {
                    Ev::Const(Value::List(
                        items
                            .into_iter()
                            .map(|x| match x {
                                Ev::Const(v) => v,
                                Ev::Get(_) => unreachable!(),
                            })
                            .collect(),
                    ))
                } else {
                    Ev::Get(Box::new(move |c| {
                        items.iter().map(|x| x.eval(c).map(Cow::into_owned)).collect::<Result<_, _>>().map(Value::List)
                    }))
                }
            }
            Expr::Map(items, _) => {
                let items = items
                    .iter()
                    .map(|(k, x)| Ok((k.clone(), self.expr::<C>(x)?)))
                    .collect::<Result<Vec<_>, CompileError>>()?;
                Ev::Get(Box::new(move |c| {
                    let mut m = Map::new();
                    for (k, x) in &items {
                        m.insert(k.clone(), x.eval(c)?.into_owned());
                    }
                    Ok(Value::Map(m))
                }))
            }
            Expr::Math(l, op, r, _) => {
                let l = self.expr::<C>(l)?;
                let r = self.expr::<C>(r)?;
                let op = *op;
                Ev::Get(Box::new(move |c| l.eval(c)?.math(op, &*r.eval(c)?)))
            }
            Expr::Path(p) => Ev::Get(self.path::<C>(p)?.0),
            Expr::Call(call) => {
                let func = self.function(call)?;
                let Implementation::Converter(f) = func.imp else {
                    return Err(self.err(call.at, format!("{:?} is an editor, not a converter", call.name)));
                };
                let args = self.args::<C>(call, func)?;
                let keys = self.keys::<C>(&call.keys)?;
                Ev::Get(Box::new(move |c| {
                    let v = f(&Evaluated::of(&args, c)?.args())?;
                    apply_keys(v, &keys, c)
                }))
            }
        })
    }

    fn keys<C: Context>(&self, keys: &[Key]) -> Result<Vec<CKey<C>>, CompileError> {
        keys.iter()
            .map(|k| {
                Ok(match k {
                    Key::String(s, _) => CKey::Str(s.clone()),
                    Key::Int(i, _) => CKey::Int(*i),
                    Key::Expr(e) => CKey::Dyn(self.expr::<C>(e)?.into_getter()),
                })
            })
            .collect()
    }

    /// The context's field a path names (keys aside).
    fn field<C: Context>(&self, p: &ast::Path) -> Result<Field<C>, CompileError> {
        let fields: Vec<&str> = p.fields.iter().map(String::as_str).collect();
        let full: Vec<&str> = if fields[0] == C::NAME || C::PARENTS.contains(&fields[0]) || fields[0] == "cache" {
            fields.clone()
        } else {
            std::iter::once(C::NAME).chain(fields.iter().copied()).collect()
        };
        let field = if full == ["cache"] || full == [C::NAME, "cache"] {
            Some(Field::Map { get: C::cache, get_mut: C::cache_mut })
        } else if p.keys.is_empty() {
            C::field(&full)
        } else {
            // A context may read a keyed path its own way, under the name with a trailing
            // "[]" (`span.trace_state["k"]`: the entries of a string).
            C::field(&[full.as_slice(), &["[]"]].concat()).or_else(|| C::field(&full))
        };
        field.ok_or_else(|| self.err(p.at, format!("unknown path {:?} in context {}", fields.join("."), C::NAME)))
    }

    /// The setter-free in-place access to an editor's target when it is a whole attribute
    /// list (`span.attributes`, no keys).
    fn attributes_target<C: Context>(&self, call: &ast::Call, func: &Function) -> Option<AttrsMut<C>> {
        let first = func.params.first()?;
        let arg = call.args.iter().find(|a| a.name.as_deref().is_none_or(|n| n == first.name))?;
        let ast::Expr::Path(p) = &arg.value else { return None };
        if !p.keys.is_empty() {
            return None;
        }
        match self.field::<C>(p).ok()? {
            Field::Attributes { get_mut, .. } => Some(get_mut),
            _ => None,
        }
    }

    /// Resolves a path to its getter and (when writable) setter.
    fn path<C: Context>(&self, p: &ast::Path) -> Result<(Getter<C>, Option<Setter<C>>), CompileError> {
        let field = self.field::<C>(p)?;
        let keys = self.keys::<C>(&p.keys)?;
        Ok(match field {
            Field::Value { get, set } => {
                let keys = std::sync::Arc::new(keys);
                let k2 = keys.clone();
                let getter: Getter<C> = Box::new(move |c| apply_keys(get(c), &keys, c));
                let setter: Option<Setter<C>> = set.map(|set| -> Setter<C> {
                    if k2.is_empty() {
                        Box::new(set)
                    } else {
                        Box::new(move |c, v| {
                            let rk = resolve_all(&k2, c)?;
                            let mut whole = get(c);
                            set_nested(&mut whole, &rk, v)?;
                            set(c, whole)
                        })
                    }
                });
                (getter, setter)
            }
            Field::Map { get, get_mut } => {
                let keys = std::sync::Arc::new(keys);
                let k2 = keys.clone();
                let getter: Getter<C> = Box::new(move |c| match keys.split_first() {
                    None => Ok(Value::Map(get(c).clone())),
                    Some((first, rest)) => {
                        let v = match first.resolve(c)? {
                            RKey::Str(s) => get(c).get(&s).cloned().unwrap_or(Value::Nil),
                            RKey::Int(_) => return Err(EvalError::new("a map is indexed by string keys")),
                        };
                        apply_keys(v, rest, c)
                    }
                });
                let setter: Setter<C> = Box::new(move |c, v| {
                    let rk = resolve_all(&k2, c)?;
                    let m = get_mut(c);
                    let mut whole = Value::Map(std::mem::take(m));
                    let r = set_nested(&mut whole, &rk, v);
                    *m = match whole {
                        Value::Map(x) => x,
                        other => {
                            return Err(EvalError::new(format!("cache must be a map, got {}", other.ty())));
                        }
                    };
                    r
                });
                (getter, Some(setter))
            }
            Field::Attributes { get, get_mut } => {
                let keys = std::sync::Arc::new(keys);
                let k2 = keys.clone();
                let getter: Getter<C> = Box::new(move |c| match keys.split_first() {
                    None => Ok(Value::Map(Map::from_key_values(get(c)))),
                    Some((first, rest)) => {
                        let v = match first.resolve(c)? {
                            RKey::Str(s) => get(c)
                                .iter()
                                .find(|kv| kv.key == *s)
                                .and_then(|kv| kv.value.as_ref())
                                .map_or(Value::Nil, Value::from_any_value),
                            RKey::Int(_) => return Err(EvalError::new("attributes are indexed by string keys")),
                        };
                        apply_keys(v, rest, c)
                    }
                });
                let setter: Setter<C> = Box::new(move |c, v| {
                    // The common case, one literal key: no key vector, no key copy.
                    if let [CKey::Str(s)] = k2.as_slice() {
                        return set_attribute(get_mut(c), s, &[], v);
                    }
                    let rk = resolve_all(&k2, c)?;
                    let attrs = get_mut(c);
                    match rk.split_first() {
                        None => {
                            let Value::Map(m) = v else {
                                return Err(crate::value::type_error(Type::Map, &v));
                            };
                            *attrs = m.to_key_values();
                            Ok(())
                        }
                        Some((RKey::Str(s), rest)) => set_attribute(attrs, s, rest, v),
                        Some((RKey::Int(_), _)) => Err(EvalError::new("attributes are indexed by string keys")),
                    }
                });
                (getter, Some(setter))
            }
        })
    }

    /// Matches a call's arguments to the function's parameters and compiles each.
    fn args<C: Context>(&self, call: &ast::Call, func: Function) -> Result<Vec<CArg<C>>, CompileError> {
        let params = func.params;
        let mut slots: Vec<Option<&ast::Argument>> = vec![None; params.len()];
        for (i, a) in call.args.iter().enumerate() {
            let idx = match &a.name {
                None => {
                    if i >= params.len() {
                        return Err(self.err(
                            a.at,
                            format!(
                                "{:?} takes at most {} arguments, got {}",
                                func.name,
                                params.len(),
                                call.args.len()
                            ),
                        ));
                    }
                    i
                }
                Some(n) => params
                    .iter()
                    .position(|p| p.name == n)
                    .ok_or_else(|| self.err(a.at, format!("{:?} has no parameter named {n:?}", func.name)))?,
            };
            if slots[idx].is_some() {
                return Err(self.err(a.at, format!("argument {:?} of {:?} given twice", params[idx].name, func.name)));
            }
            slots[idx] = Some(a);
        }
        let mut out = Vec::with_capacity(params.len());
        for (p, slot) in params.iter().zip(slots) {
            let Some(a) = slot else {
                if p.optional {
                    out.push(CArg::Absent);
                    continue;
                }
                return Err(self.err(call.at, format!("{:?} is missing required argument {:?}", func.name, p.name)));
            };
            let v = &a.value;
            let bad = |what: &str| self.err(v.at(), format!("argument {:?} of {:?} must be {what}", p.name, func.name));
            out.push(match p.ty {
                ParamType::Target => {
                    let Expr::Path(path) = v else { return Err(bad("a path")) };
                    let (get, set) = self.path::<C>(path)?;
                    let set =
                        set.ok_or_else(|| self.err(v.at(), format!("path {:?} is read-only", path.fields.join("."))))?;
                    CArg::Target(get, set)
                }
                ParamType::Regex => {
                    let Expr::Literal(Value::String(s), _) = v else { return Err(bad("a string literal")) };
                    CArg::Regex(self.regex(s).map_err(|e| self.err(v.at(), format!("invalid regex {s:?}: {e}")))?)
                }
                ParamType::Glob => {
                    let Expr::Literal(Value::String(s), _) = v else { return Err(bad("a string literal")) };
                    CArg::Regex(
                        self.regex(&glob_to_regex(s))
                            .map_err(|e| self.err(v.at(), format!("invalid glob {s:?}: {e}")))?,
                    )
                }
                ParamType::Function => {
                    let Expr::Enum(name, at) = v else { return Err(bad("a converter name")) };
                    let f = self.registry.get(name).copied().filter(|f| !f.is_editor());
                    CArg::Function(f.ok_or_else(|| self.err(*at, format!("unknown function {name:?}")))?)
                }
                ty => {
                    let ev = self.expr::<C>(v)?;
                    if let Ev::Const(c) = &ev {
                        check_literal(ty, c).map_err(bad)?;
                    }
                    CArg::Ev(ev)
                }
            });
        }
        Ok(out)
    }
}

fn e_at(b: &BoolExpr) -> usize {
    match b {
        BoolExpr::Term(e) => e.at(),
        _ => 0,
    }
}

/// `Err(expected)` when a literal cannot be of the parameter's type.
fn check_literal(ty: ParamType, v: &Value) -> Result<(), &'static str> {
    let ok = match ty {
        ParamType::Any => true,
        ParamType::String => matches!(v, Value::String(_)),
        ParamType::Int | ParamType::Enum => matches!(v, Value::Int(_)),
        ParamType::Float => matches!(v, Value::Int(_) | Value::Double(_)),
        ParamType::Bool => matches!(v, Value::Bool(_)),
        ParamType::Map => matches!(v, Value::Map(_)),
        ParamType::List => matches!(v, Value::List(_)),
        ParamType::Bytes => matches!(v, Value::Bytes(_)),
        ParamType::Regex | ParamType::Glob | ParamType::Target | ParamType::Function => false,
    };
    if ok {
        return Ok(());
    }
    Err(match ty {
        ParamType::String => "a string",
        ParamType::Int => "an int",
        ParamType::Enum => "an enum",
        ParamType::Float => "a number",
        ParamType::Bool => "a bool",
        ParamType::Map => "a map",
        ParamType::List => "a list",
        ParamType::Bytes => "bytes",
        _ => "something else",
    })
}

/// A glob (`*` any run, `?` one char, `[…]`/`[!…]` classes, `\\` escapes) as an anchored regex.
pub fn glob_to_regex(glob: &str) -> String {
    let mut out = String::from("^(?s:");
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push_str(&regex::escape(&n.to_string()));
                }
            }
            '[' => {
                out.push('[');
                if chars.peek() == Some(&'!') {
                    chars.next();
                    out.push('^');
                }
                for n in chars.by_ref() {
                    if n == ']' {
                        break;
                    }
                    if n == '\\' || n == '[' {
                        out.push('\\');
                    }
                    out.push(n);
                }
                out.push(']');
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out.push_str(")$");
    out
}

/// Applies a comparison operator under OTTL's rules ([`Value::ottl_eq`], [`Value::ottl_cmp`]).
pub fn compare(l: &Value, op: CmpOp, r: &Value) -> bool {
    use std::cmp::Ordering::*;
    match op {
        CmpOp::Eq => l.ottl_eq(r),
        CmpOp::Ne => !l.ottl_eq(r),
        CmpOp::Lt => l.ottl_cmp(r) == Some(Less),
        CmpOp::Le => matches!(l.ottl_cmp(r), Some(Less | Equal)),
        CmpOp::Gt => l.ottl_cmp(r) == Some(Greater),
        CmpOp::Ge => matches!(l.ottl_cmp(r), Some(Greater | Equal)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        context::{LogContext, SpanContext},
        ErrorMode, Statements,
    };

    #[test]
    fn a_compiler_compiles_each_pattern_once_and_shares_it() {
        let registry = Registry::standard();
        let c = Compiler::new(&registry);
        let span = c.statement::<SpanContext>(r#"replace_pattern(span.name, "a+", "b")"#).unwrap();
        let log = c.statement::<LogContext>(r#"set(log.body, "x") where IsMatch(log.body, "a+")"#).unwrap();
        c.condition::<SpanContext>(r#"IsMatch(span.name, "c")"#).unwrap();
        c.statement::<SpanContext>(r#"replace_match(span.name, "a*", "g")"#).unwrap();
        assert!(c.statement::<SpanContext>(r#"replace_pattern(span.name, "(", "b")"#).is_err());
        assert_eq!(c.regexes_compiled(), 3, "\"a+\" twice, \"c\", the glob \"a*\"; not the invalid one");

        // The shared regex matches in both statements.
        let mut s = SpanContext::default();
        s.span.name = "xaay".into();
        Statements::new(vec![span], ErrorMode::Propagate).execute(&mut s).unwrap();
        assert_eq!(s.span.name, "xby");
        let mut l = LogContext::default();
        l.log.body = Some(Value::from("aa").to_any_value());
        Statements::new(vec![log], ErrorMode::Propagate).execute(&mut l).unwrap();
        assert_eq!(l.log.body, Some(Value::from("x").to_any_value()));
    }
}
