//! Symbolization throughput on the same real addresses: otelprof's symbolizer cold (new, parses
//! the file) and warm (answers from its cache), raw blazesym (file parsed, no result cache) and
//! the addr2line crate (gimli). Throughput is in frames (addresses) per second.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use otelprof_benches::{kernel, libc, rust_binary, AddrSet};
use symbolizer::{Config, FileKey, Source, Symbolizer};

fn source<'a>(set: &'a AddrSet, key: &'a FileKey) -> Source<'a> {
    match &set.path {
        Some(path) => Source::Elf { key, path },
        None => Source::Kernel,
    }
}

fn bench_set(c: &mut Criterion, set: AddrSet) {
    if set.file_offsets.is_empty() {
        eprintln!("skipping {}: no addresses (kallsyms hidden?)", set.name);
        return;
    }
    let key = match &set.path {
        Some(p) => FileKey::from_path(p).expect("file key"),
        None => FileKey::Kernel,
    };
    let mut g = c.benchmark_group(format!("symbolize_{}", set.name));
    g.throughput(Throughput::Elements(set.file_offsets.len() as u64));
    g.bench_function("otelprof_cold", |b| {
        b.iter_batched(
            || Symbolizer::new(Config::default()),
            |mut s| s.symbolize(&source(&set, &key), &set.file_offsets).expect("symbolizes"),
            BatchSize::PerIteration,
        )
    });
    let mut warm = Symbolizer::new(Config::default());
    warm.symbolize(&source(&set, &key), &set.file_offsets).expect("symbolizes");
    g.bench_function("otelprof_warm", |b| {
        b.iter(|| warm.symbolize(&source(&set, &key), &set.file_offsets).expect("symbolizes"))
    });

    let blaze = blazesym::symbolize::Symbolizer::builder().enable_inlined_fns(true).enable_code_info(true).build();
    let (bsrc, input) = match &set.path {
        Some(p) => (
            blazesym::symbolize::source::Source::Elf(blazesym::symbolize::source::Elf::new(p)),
            blazesym::symbolize::Input::FileOffset(set.file_offsets.as_slice()),
        ),
        None => (
            blazesym::symbolize::source::Source::Kernel(Default::default()),
            blazesym::symbolize::Input::AbsAddr(set.file_offsets.as_slice()),
        ),
    };
    blaze.symbolize(&bsrc, input).expect("blazesym symbolizes");
    g.bench_function("blazesym_warm", |b| b.iter(|| blaze.symbolize(&bsrc, input).expect("blazesym symbolizes")));

    if let Some(path) = &set.path {
        let loader = addr2line::Loader::new(path).expect("addr2line loads the file");
        // DWARF frames, else the symbol table: the same answer the others give (libc has no
        // DWARF here, and a DWARF-only lookup would "win" by naming nothing).
        let name_all = || {
            let mut named = 0usize;
            for &a in &set.virt {
                let mut found = false;
                if let Ok(mut frames) = loader.find_frames(a) {
                    while let Ok(Some(f)) = frames.next() {
                        found |= f.function.is_some();
                    }
                }
                if !found {
                    found = loader.find_symbol(a).is_some();
                }
                named += found as usize;
            }
            named
        };
        assert!(name_all() * 10 >= set.virt.len() * 9, "addr2line names the addresses of {}", set.name);
        g.bench_function("addr2line_warm", |b| b.iter(name_all));
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_set(c, libc());
    bench_set(c, rust_binary());
    bench_set(c, kernel());
}

criterion_group! {
    name = symbolize;
    config = Criterion::default().sample_size(10).warm_up_time(std::time::Duration::from_millis(500));
    targets = benches
}
criterion_main!(symbolize);
