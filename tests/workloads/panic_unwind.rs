//! Rust panics caught with `catch_unwind` in a release build without frame pointers: the
//! unwinder meets the panic machinery's frames and the catch frame (`std::panicking::try`).
//! Usage: panic_unwind SECONDS
use std::{hint::black_box, panic, time::{Duration, Instant}};

#[inline(never)]
fn hot_leaf(n: u64) -> u64 {
    let mut a = 0u64;
    for i in 0..20_000u64 {
        a = a.wrapping_add(black_box((i ^ n).wrapping_mul(3)));
    }
    a
}

#[inline(never)]
fn thrower(depth: u64) -> u64 {
    if depth == 0 {
        let v = hot_leaf(black_box(depth));
        if black_box(v) != u64::MAX {
            panic!("bottom {v}");
        }
        return v;
    }
    black_box(thrower(depth - 1)) + 1
}

#[inline(never)]
fn catcher(depth: u64) -> u64 {
    match panic::catch_unwind(|| thrower(depth)) {
        Ok(v) => v,
        Err(_) => hot_leaf(black_box(7)),
    }
}

fn main() {
    panic::set_hook(Box::new(|_| {}));
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut n = 0u64;
    while Instant::now() < end {
        n = n.wrapping_add(catcher(black_box(20)));
    }
    black_box(n);
}
