//! Encoding cost per 10,000 samples: OTLP `ProfilesData` and pprof, each encoded and gzipped,
//! over a report built from real addresses of this process (so symbols are real), and the gzip
//! bytes per sample of each (written to `target/criterion/encode_sizes.json`).

use std::io::Write;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use otelprof_encode::{
    otlp::{self, OtlpOptions},
    pprof, Meta, Report,
};
use otelprof_sampler::{
    aggregate::{Aggregator, Clock},
    process::ProcessTracker,
    reader::Sample,
    symbolize,
};
use prost::Message;

const SAMPLES: usize = 10_000;

/// Code addresses of this process: evenly spread over its executable mappings.
fn code_addresses() -> Vec<u64> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut out = Vec::new();
    for l in maps.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 6 || !f[1].contains('x') || !f[5].starts_with('/') {
            continue;
        }
        let (s, e) = f[0].split_once('-').unwrap();
        let (s, e) = (u64::from_str_radix(s, 16).unwrap(), u64::from_str_radix(e, 16).unwrap());
        out.extend((0..400u64).map(|i| s + (e - s) * i / 400 + 1));
    }
    out
}

/// A deterministic report: 300 distinct stacks of depth 8 to 40 over real addresses, 8 threads,
/// 2 CPUs, 10,000 samples.
fn report_inputs() -> (Aggregator, ProcessTracker) {
    let addrs = code_addresses();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let stacks: Vec<Vec<u64>> = (0..300)
        .map(|_| {
            let depth = 8 + (next() % 33) as usize;
            (0..depth).map(|_| addrs[(next() % addrs.len() as u64) as usize]).collect()
        })
        .collect();
    let pid = std::process::id();
    let clock = Clock::new();
    let t0 = 1_000_000_000u64;
    let mut agg = Aggregator::new(clock);
    let mut tracker = ProcessTracker::default();
    for i in 0..SAMPLES {
        let s = Sample {
            tgid: pid,
            tid: pid + (next() % 8) as u32,
            cpu: (next() % 2) as u32,
            ktime_ns: t0 + i as u64 * 10_000_000,
            comm: format!("worker-{}", i % 8),
            kernel: Vec::new(),
            user: stacks[(next() % stacks.len() as u64) as usize].clone(),
            user_err: 0,
            user_unwind: 0,
            ctx_status: 0,
            link: None,
            stack_copy: None,
        };
        agg.add(&s, &mut tracker);
    }
    (agg, tracker)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn benches(c: &mut Criterion) {
    let (agg, tracker) = report_inputs();
    let processes = tracker.snapshot(agg.pids(), agg.file_ids());
    let mut sym = symbolizer::Symbolizer::new(Default::default());
    let symbols = symbolize::symbolize(&agg, &processes, &mut sym);
    let (start, duration) = agg.window(agg.first_ns, agg.last_ns + 1);
    let report = Report {
        agg: &agg,
        processes: &processes,
        symbols: &symbols,
        meta: Meta { frequency_hz: 99, start_unix_ns: start, duration_ns: duration },
        profile: Default::default(),
    };
    let opts = OtlpOptions::default();
    let otlp_bytes = gzip(&otlp::to_profiles_data(otlp::build_valid(&report, &opts).unwrap()).encode_to_vec());
    let pprof_bytes = gzip(&pprof::build(&report).encode_to_vec());
    let sizes = serde_json::json!({
        "samples": SAMPLES,
        "otlp_gzip_bytes_per_sample": otlp_bytes.len() as f64 / SAMPLES as f64,
        "pprof_gzip_bytes_per_sample": pprof_bytes.len() as f64 / SAMPLES as f64,
        "symbolized_percent": symbols.stats.percent(),
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("encode_sizes.json"), sizes.to_string()).unwrap();
    eprintln!("encode sizes: {sizes}");

    let mut g = c.benchmark_group("encode_10k_samples");
    g.throughput(Throughput::Elements(SAMPLES as u64));
    g.bench_function("otlp_gzip", |b| {
        b.iter(|| gzip(&otlp::to_profiles_data(otlp::build_valid(&report, &opts).unwrap()).encode_to_vec()))
    });
    g.bench_function("pprof_gzip", |b| b.iter(|| gzip(&pprof::build(&report).encode_to_vec())));
    g.finish();
}

criterion_group! {
    name = encode;
    config = Criterion::default().sample_size(10).warm_up_time(std::time::Duration::from_millis(500));
    targets = benches
}
criterion_main!(encode);
