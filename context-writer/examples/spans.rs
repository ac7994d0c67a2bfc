//! A Rust writer for otelprof's trace-link tests (the same scheme as tests/workloads/ctx_main.c):
//! three threads run spans one after another; span k of thread t has trace_id
//! `7e t k <pid LE> 0.. 01` and span_id `5b t k 0 0 0 0 01`, attributes `http.route=/r/k` and
//! `worker=wt`; even spans spin in `spin_even`, odd ones in `spin_odd`, gaps in `outside_span`.
//!
//! `cargo run --release -p otel-context-writer --example spans -- SECONDS`

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use otel_context_writer::{ProcessContext, ThreadRecord};

#[no_mangle]
#[inline(never)]
pub extern "C" fn spin_even(until: &Instant) {
    while Instant::now() < *until {
        black_box(0);
    }
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn spin_odd(until: &Instant) {
    // Not the same code as spin_even, or the compiler folds the two into one symbol.
    while Instant::now() < *until {
        black_box(1);
    }
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn outside_span(until: &Instant) {
    while Instant::now() < *until {
        black_box(2);
    }
}

fn worker(t: u8, deadline: Instant) {
    let pid = std::process::id().to_le_bytes();
    let mut k: u8 = 0;
    while Instant::now() < deadline {
        let mut trace = [0u8; 16];
        trace[..3].copy_from_slice(&[0x7e, t, k]);
        trace[3..7].copy_from_slice(&pid);
        trace[15] = 1;
        let span = [0x5b, t, k, 0, 0, 0, 0, 1];
        let mut record = ThreadRecord::new(trace, span, 1);
        record.push_attr(0, &format!("/r/{k}")).expect("fits");
        record.push_attr(1, &format!("w{t}")).expect("fits");
        {
            let _span = record.attach();
            let end = Instant::now() + Duration::from_millis(20);
            if k.is_multiple_of(2) {
                spin_even(&end);
            } else {
                spin_odd(&end);
            }
        }
        outside_span(&(Instant::now() + Duration::from_millis(10)));
        k = (k + 1) % 250;
    }
}

fn main() {
    let seconds: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let instance = format!("instance-{}", std::process::id());
    let _ctx = ProcessContext::publish(
        &[
            ("service.name", "ctx-writer"),
            ("service.instance.id", &instance),
            ("deployment.environment.name", "otep-test"),
        ],
        &["http.route", "worker"],
    )
    .expect("publishing the process context");
    // Requests start a little after SDK initialisation, as in a service.
    std::thread::sleep(Duration::from_millis(600));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..3).map(|t| std::thread::spawn(move || worker(t, deadline))).collect();
    for t in threads {
        t.join().expect("worker");
    }
}
