//! Arbitrary text parsed and compiled as a statement, a condition and a value expression in
//! every OTTL context. Whatever the text, the answer is a compiled statement or a
//! `line:col: message` error: never a panic, a stack overflow (deep nesting is refused by the
//! parser's depth limit), a hang or unbounded memory.
//!
//! `cargo xtask fuzz --target parse_compile` (see DEVELOPERS.md, "Fuzzing").
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use otelprof_ottl::{
    context::{
        Context, DataPointContext, LogContext, MetricContext, ProfileContext, ResourceContext, ScopeContext,
        SpanContext, SpanEventContext,
    },
    parser, Compiler, Registry,
};

/// What the text parses as; compiling is worth trying (in every context) only for those.
struct Parsed {
    statement: bool,
    condition: bool,
    value: bool,
}

fn compile_in<C: Context>(compiler: &Compiler, src: &str, parsed: &Parsed) {
    if parsed.statement {
        check(src, compiler.statement::<C>(src).err());
    }
    if parsed.condition {
        check(src, compiler.condition::<C>(src).err());
    }
    if parsed.value {
        check(src, compiler.value::<C>(src).err());
    }
}

/// Checks a parse error like a compile error; true when there was none.
fn ok(src: &str, r: Result<(), otelprof_ottl::CompileError>) -> bool {
    let e = r.err();
    let parsed = e.is_none();
    check(src, e);
    parsed
}

/// An error must point inside the text: the position is what a config error shows the user.
fn check(src: &str, err: Option<otelprof_ottl::CompileError>) {
    if let Some(e) = err {
        assert!(e.pos.offset <= src.len(), "{e} is past the end of {src:?}");
        assert!(e.pos.line >= 1 && e.pos.col >= 1, "{e}");
        assert!(!e.message.is_empty(), "an error without a message for {src:?}");
    }
}

/// Built once: the registry is the same for every input, and building it per input would
/// take a large share of each run.
fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::standard)
}

fuzz_target!(init: otelprof_ottl_fuzz::catch_stack_overflows(), |data: &[u8]| {
    // Lossy, not `from_utf8(..).ok()`: invalid bytes become U+FFFD, so every input is text.
    let src = String::from_utf8_lossy(data);
    // Parsing does not depend on the context: parse once per form, and compile (which parses
    // again) in the 8 contexts only what parsed. Most fuzz inputs do not parse, so this keeps
    // the executions per second several times higher without losing a compile.
    let parsed = Parsed {
        statement: ok(&src, parser::parse_statement(&src).map(drop)),
        condition: ok(&src, parser::parse_condition(&src).map(drop)),
        value: ok(&src, parser::parse_value(&src).map(drop)),
    };
    let compiler = Compiler::new(registry());
    compile_in::<ResourceContext>(&compiler, &src, &parsed);
    compile_in::<ScopeContext>(&compiler, &src, &parsed);
    compile_in::<SpanContext>(&compiler, &src, &parsed);
    compile_in::<SpanEventContext>(&compiler, &src, &parsed);
    compile_in::<MetricContext>(&compiler, &src, &parsed);
    compile_in::<DataPointContext>(&compiler, &src, &parsed);
    compile_in::<LogContext>(&compiler, &src, &parsed);
    compile_in::<ProfileContext>(&compiler, &src, &parsed);
});
