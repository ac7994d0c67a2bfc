//! Fuzzes the unwind table compiler with arbitrary bytes: hostile or broken ELF/DWARF must give
//! an error or a table, never a panic, a hang or an out-of-bounds read.
//!
//! `cd profiler-user && cargo +nightly fuzz run unwind_compile -- -max_total_time=60`
//! (seed the corpus with real ELF files, e.g. `cp /lib/x86_64-linux-gnu/libc.so.6 fuzz/corpus/unwind_compile/`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = otelprof_sampler::unwind::compile(data) {
        // Whatever came out must be usable: sorted rows, lookups in range.
        assert!(table.rows.windows(2).all(|w| w[0].pc < w[1].pc));
        for r in table.rows.iter().take(64) {
            let _ = table.lookup(r.pc);
        }
    }
});
