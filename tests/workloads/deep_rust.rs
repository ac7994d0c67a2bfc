// A Rust release build without frame pointers for otelprof's unwinding tests:
// main -> a -> b -> rec(40) -> hot_leaf, built with
// `rustc -C opt-level=3 -C force-frame-pointers=no`. black_box keeps every level a real call.
use std::{
    hint::black_box,
    time::{Duration, Instant},
};

#[inline(never)]
fn hot_leaf() -> u64 {
    let mut h = 0u64;
    for i in 0..20_000u64 {
        h = black_box(h.wrapping_mul(31).wrapping_add(i));
    }
    h
}

#[inline(never)]
fn rec(d: u32) -> u64 {
    if d == 0 {
        return hot_leaf();
    }
    let r = rec(d - 1);
    black_box(r.wrapping_add(d as u64))
}

#[inline(never)]
fn b() -> u64 {
    black_box(rec(40))
}

#[inline(never)]
fn a() -> u64 {
    black_box(b())
}

fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        black_box(a());
    }
}
