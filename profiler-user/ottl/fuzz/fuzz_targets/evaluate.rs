//! Arbitrary OTLP requests through the real `transform` processor running a fixed, broad set
//! of statements ([`otelprof_ottl_fuzz::STATEMENTS`]): a hostile request must come out
//! transformed or refused, never as a panic or a hang.
//!
//! Input: a selector byte (its low two bits pick traces, metrics, logs or profiles), then the
//! protobuf `Export*ServiceRequest`. Bytes that do not decode are skipped.
//!
//! `cargo xtask fuzz --target evaluate` (see DEVELOPERS.md, "Fuzzing").
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use otelprof_ottl_fuzz::{decode, Transform, STATEMENTS};

fn transform() -> &'static Transform {
    static T: OnceLock<Transform> = OnceLock::new();
    T.get_or_init(|| {
        let config = serde_yaml::from_str(STATEMENTS).expect("STATEMENTS is YAML");
        Transform::new(config).unwrap_or_else(|e| panic!("the fuzz target's own statements do not compile: {e}"))
    })
}

fuzz_target!(init: otelprof_ottl_fuzz::catch_stack_overflows(), |data: &[u8]| {
    if let Some(request) = decode(data) {
        transform().consume(request);
    }
});
