//! Inputs shared by otelprof's benchmarks: the same real addresses for every symbolizer.
//!
//! Each [`AddrSet`] holds addresses inside functions of a real binary (libc, a large Rust
//! binary) or of the running kernel, spread evenly over its symbols, as file offsets (what
//! otelprof and blazesym take) and virtual addresses (what addr2line takes).

pub mod otlp;

use std::path::{Path, PathBuf};

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

/// How many addresses each set holds at most.
pub const ADDRESSES: usize = 2000;

pub struct AddrSet {
    pub name: &'static str,
    /// `None` for the kernel.
    pub path: Option<PathBuf>,
    pub file_offsets: Vec<u64>,
    pub virt: Vec<u64>,
}

fn spread<T: Copy>(items: &[T], n: usize) -> Vec<T> {
    if items.len() <= n {
        return items.to_vec();
    }
    (0..n).map(|i| items[i * items.len() / n]).collect()
}

/// Addresses in the middle of every sized function symbol of the ELF at `path`.
pub fn elf_set(name: &'static str, path: &Path) -> AddrSet {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let file = object::File::parse(&*data).expect("an ELF file");
    let mut funcs: Vec<u64> = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 4)
        .map(|s| s.address() + s.size() / 2)
        .collect();
    funcs.sort_unstable();
    funcs.dedup();
    let segments: Vec<(u64, u64, u64)> =
        file.segments().map(|s| (s.address(), s.size(), s.file_range().0)).filter(|s| s.1 > 0).collect();
    let mut file_offsets = Vec::new();
    let mut virt = Vec::new();
    for v in spread(&funcs, ADDRESSES) {
        if let Some((a, _, off)) = segments.iter().find(|(a, sz, _)| *a <= v && v < a + sz) {
            virt.push(v);
            file_offsets.push(v - a + off);
        }
    }
    AddrSet { name, path: Some(path.to_path_buf()), file_offsets, virt }
}

/// The C library this process uses.
pub fn libc() -> AddrSet {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let path = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so"))
        .unwrap_or("/lib/x86_64-linux-gnu/libc.so.6")
        .to_string();
    elf_set("libc", Path::new(&path))
}

/// A large Rust binary with line tables: the running benchmark itself.
pub fn rust_binary() -> AddrSet {
    elf_set("rust", &std::env::current_exe().expect("own executable"))
}

/// Kernel text symbols from /proc/kallsyms (empty when addresses are hidden, i.e. not root).
pub fn kernel() -> AddrSet {
    let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let mut addrs: Vec<u64> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let a = u64::from_str_radix(f.next()?, 16).ok()?;
            let t = f.next()?;
            (a != 0 && (t == "t" || t == "T") && f.nth(1).is_none()).then_some(a + 4)
        })
        .collect();
    addrs.sort_unstable();
    let picked = spread(&addrs, ADDRESSES);
    AddrSet { name: "kernel", path: None, file_offsets: picked.clone(), virt: picked }
}
