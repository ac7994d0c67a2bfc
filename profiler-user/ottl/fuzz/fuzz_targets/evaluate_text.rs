//! Statement text and the request both from the input: arbitrary statements, compiled in a
//! context of the request's signal, run on an arbitrary OTLP request through the `transform`
//! processor. Reaches what `parse_compile` cannot: running whatever compiles.
//!
//! Input: statement text, a NUL byte, a selector byte (low two bits: the signal; the next two:
//! which of the signal's contexts), then the protobuf request. Text that does not compile and
//! requests that do not decode are skipped.
//!
//! `cargo xtask fuzz --target evaluate_text` (see DEVELOPERS.md, "Fuzzing").
#![no_main]

use libfuzzer_sys::fuzz_target;
use otelprof_ottl_fuzz::{decode, signal_of, Transform};
use serde_yaml::{Mapping, Value};

/// The contexts of each signal, as `Signal::ALL` orders the signals.
const CONTEXTS: [&[&str]; 4] = [
    &["resource", "scope", "span", "spanevent"],
    &["resource", "scope", "metric", "datapoint"],
    &["resource", "scope", "log"],
    &["resource", "scope", "profile"],
];

fuzz_target!(init: otelprof_ottl_fuzz::catch_stack_overflows(), |data: &[u8]| {
    let Some(nul) = data.iter().position(|&b| b == 0) else { return };
    let (text, rest) = (&data[..nul], &data[nul + 1..]);
    let Ok(text) = std::str::from_utf8(text) else { return };
    let Some(&selector) = rest.first() else { return };
    let signal = signal_of(selector);
    let contexts = CONTEXTS[signal.index()];
    let context = contexts[usize::from(selector >> 2) % contexts.len()];
    let Some(request) = decode(rest) else { return };

    // A config built as YAML values, so the text needs no quoting.
    let mut group = Mapping::new();
    group.insert("context".into(), context.into());
    group.insert("statements".into(), Value::Sequence(vec![text.into()]));
    let mut config = Mapping::new();
    config.insert("error_mode".into(), "ignore".into());
    let key = ["trace", "metric", "log", "profile"][signal.index()];
    config.insert(format!("{key}_statements").into(), Value::Sequence(vec![Value::Mapping(group)]));
    let Ok(transform) = Transform::new(Value::Mapping(config)) else { return };
    transform.consume(request);
});
