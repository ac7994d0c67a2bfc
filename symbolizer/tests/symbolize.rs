//! The symbolizer on real binaries: a C program built here (inlining, DWARF lines, split debug
//! files), this Rust test binary (demangling) and the running kernel.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use object::{Object, ObjectSegment, ObjectSymbol};
use symbolizer::{Config, FileKey, Source, Symbolizer};

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("symbolizer-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Builds tests/data/inline.c at -O2 with DWARF into `dir`.
fn build_inline(dir: &Path) -> PathBuf {
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let cc =
        cc::Build::new().target(&triple).host(&triple).opt_level(2).debug(true).cargo_metadata(false).get_compiler();
    let exe = dir.join("inline");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/inline.c");
    let out = cc.to_command().arg(&src).arg("-Wl,--build-id").arg("-o").arg(&exe).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    exe
}

/// File offsets of every byte of function `name` in the ELF at `path`.
fn function_offsets(path: &Path, name: &str) -> Vec<u64> {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let sym = file.symbols().find(|s| s.name() == Ok(name)).unwrap_or_else(|| panic!("{name} not in symtab"));
    let seg = file
        .segments()
        .find(|s| s.address() <= sym.address() && sym.address() < s.address() + s.size())
        .expect("function inside a segment");
    let (seg_off, _) = seg.file_range();
    (0..sym.size()).map(|i| sym.address() + i - seg.address() + seg_off).collect()
}

fn line_of(marker: &str) -> u32 {
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/inline.c")).unwrap();
    src.lines().position(|l| l.contains(marker)).unwrap() as u32 + 1
}

fn assert_inlined_frames(sym: &mut Symbolizer, exe: &Path) {
    let key = FileKey::from_path(exe).unwrap();
    let offsets = function_offsets(Path::new(exe), "outer_fn");
    let symbols = sym.symbolize(&Source::Elf { key: &key, path: exe }, &offsets).unwrap();
    assert_eq!(symbols.len(), offsets.len());
    assert!(symbols.iter().all(|s| s.is_known()), "every byte of outer_fn is named");
    let expected_line = line_of("INL_WORK_LINE");
    let inlined = symbols
        .iter()
        .find(|s| {
            let f = s.frames();
            f.len() == 2 && f[0].function == "inl_work" && f[0].line == Some(expected_line)
        })
        .unwrap_or_else(|| panic!("no address resolved to inl_work:{expected_line} inside outer_fn: {:#?}", symbols));
    let f = inlined.frames();
    assert!(f[0].inlined && !f[1].inlined);
    assert_eq!(f[1].function, "outer_fn");
    assert!(f[0].file.as_deref().unwrap().ends_with("inline.c"));
    assert!(f[1].line.is_some(), "the caller's frame has the call site line");
}

#[test]
fn inlined_frames_with_files_and_lines() {
    let dir = scratch("inline");
    let exe = build_inline(&dir);
    let mut sym = Symbolizer::new(Config::default());
    assert_inlined_frames(&mut sym, &exe);
    let first = sym.stats();
    assert!(first.resolved > 0 && first.cache_hits == 0);
    // The same batch again comes from the cache.
    assert_inlined_frames(&mut sym, &exe);
    assert_eq!(sym.stats().resolved, first.resolved);
    assert!(sym.stats().cache_hits >= first.resolved);
}

fn objcopy(args: &[&str]) {
    let out = Command::new("objcopy").args(args).output().expect("objcopy (binutils) is installed with gcc");
    assert!(out.status.success(), "objcopy {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Splits DWARF out of `exe` into `debug`, leaving `exe` with symbols only.
fn split_debug(exe: &Path, debug: &Path) {
    objcopy(&["--only-keep-debug", exe.to_str().unwrap(), debug.to_str().unwrap()]);
    objcopy(&["--strip-debug", exe.to_str().unwrap()]);
}

#[test]
fn separate_debug_file_via_debuglink() {
    let dir = scratch("debuglink");
    let exe = build_inline(&dir);
    let debug = dir.join("inline.debug");
    split_debug(&exe, &debug);
    objcopy(&["--add-gnu-debuglink", debug.to_str().unwrap(), exe.to_str().unwrap()]);
    let mut sym = Symbolizer::new(Config::default());
    assert_inlined_frames(&mut sym, &exe);
}

#[test]
fn separate_debug_file_via_build_id_directory() {
    let dir = scratch("build-id");
    let exe = build_inline(&dir);
    let id = symbolizer::read_build_id(&exe).unwrap().expect("built with --build-id");
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let debug_root = dir.join("debug");
    let target = debug_root.join(".build-id").join(&hex[..2]).join(format!("{}.debug", &hex[2..]));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    split_debug(&exe, &target);
    // Without the debug directory the stripped binary has no line info.
    let mut plain = Symbolizer::new(Config { debug_dirs: vec![], ..Config::default() });
    let key = FileKey::from_path(&exe).unwrap();
    let offsets = function_offsets(&exe, "outer_fn");
    let s = plain.symbolize(&Source::Elf { key: &key, path: &exe }, &offsets[..1]).unwrap();
    assert_eq!(s[0].frames()[0].function, "outer_fn");
    assert_eq!(s[0].frames()[0].line, None);
    let mut sym = Symbolizer::new(Config { debug_dirs: vec![debug_root], ..Config::default() });
    assert_inlined_frames(&mut sym, &exe);
}

#[inline(never)]
fn rust_marker_function(x: u64) -> u64 {
    std::hint::black_box(x.wrapping_mul(31))
}

#[test]
fn rust_names_are_demangled() {
    let addr = rust_marker_function as *const () as u64;
    assert_eq!(rust_marker_function(1), 31);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let offset = maps
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (s, e) = f.next()?.split_once('-')?;
            let (s, e) = (u64::from_str_radix(s, 16).ok()?, u64::from_str_radix(e, 16).ok()?);
            let off = u64::from_str_radix(f.nth(1)?, 16).ok()?;
            (s <= addr && addr < e).then_some(addr - s + off)
        })
        .expect("own code is mapped");
    let key = FileKey::from_path(&exe).unwrap();
    let mut sym = Symbolizer::new(Config::default());
    let s = sym.symbolize(&Source::Elf { key: &key, path: &exe }, &[offset]).unwrap();
    let name = &s[0].frames().last().expect("known").function;
    assert!(name.ends_with("rust_marker_function"), "demangled Rust path, got {name}");
    assert!(name.contains("::") && !name.starts_with("_ZN") && !name.starts_with("_R"), "{name}");
}

#[test]
fn kernel_addresses_from_kallsyms() {
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
    let addr = kallsyms.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let a = u64::from_str_radix(f.next()?, 16).ok()?;
        let _ty = f.next()?;
        (f.next()? == "vfs_read" && a != 0).then_some(a)
    });
    let Some(addr) = addr else {
        if std::env::var_os("CI").is_some() {
            panic!("kallsyms addresses are hidden; CI runs as root and must see them");
        }
        eprintln!("SKIPPED kernel_addresses_from_kallsyms: /proc/kallsyms hides addresses (not root)");
        return;
    };
    let mut sym = Symbolizer::new(Config::default());
    let s = sym.symbolize(&Source::Kernel, &[addr + 4, addr]).unwrap();
    assert_eq!(s[0].frames()[0].function, "vfs_read");
    assert_eq!(s[1].frames()[0].function, "vfs_read");
}

#[test]
fn unknown_addresses_and_unreadable_files() {
    let dir = scratch("unknown");
    let exe = build_inline(&dir);
    let key = FileKey::from_path(&exe).unwrap();
    let mut sym = Symbolizer::new(Config::default());
    // Far past the end of the file: no symbol, but an answer.
    let s = sym.symbolize(&Source::Elf { key: &key, path: &exe }, &[0x7fff_0000]).unwrap();
    assert!(!s[0].is_known());
    // Not an ELF file: a clear error, counted, and later calls still work.
    let junk = dir.join("junk");
    std::fs::write(&junk, b"not an elf at all").unwrap();
    let junk_key = FileKey::Inode { dev: 1, ino: 2, size: 3, mtime: 4 };
    let e = sym.symbolize(&Source::Elf { key: &junk_key, path: &junk }, &[0x10]).unwrap_err();
    assert!(e.to_string().contains("junk"), "{e}");
    assert_eq!(sym.stats().file_errors, 1);
    assert_inlined_frames(&mut sym, &exe);
}

#[test]
fn a_batch_larger_than_the_cache_is_answered_whole() {
    let dir = scratch("tiny-cache");
    let exe = build_inline(&dir);
    let key = FileKey::from_path(&exe).unwrap();
    let offsets = function_offsets(&exe, "outer_fn");
    assert!(offsets.len() > 8);
    let mut sym = Symbolizer::new(Config { cache_entries: 4, ..Config::default() });
    let s = sym.symbolize(&Source::Elf { key: &key, path: &exe }, &offsets).unwrap();
    assert!(s.iter().all(|s| s.is_known()), "every answer survives eviction");
    assert_eq!(sym.cache().len(), 4, "the cache stays at its bound");
}

#[test]
fn parsed_files_are_bounded() {
    let dir = scratch("bounded-files");
    let exe = build_inline(&dir);
    let offsets = function_offsets(&exe, "outer_fn");
    let mut sym = Symbolizer::new(Config { max_parsed_files: 2, ..Config::default() });
    for i in 0..5 {
        // Five identities (as five different files would have); the result cache is keyed by them.
        let key = FileKey::Inode { dev: 0, ino: i, size: 0, mtime: 0 };
        let s = sym.symbolize(&Source::Elf { key: &key, path: &exe }, &offsets[..4]).unwrap();
        assert!(s.iter().all(|s| s.is_known()), "answers survive the rebuild");
    }
    assert_eq!(sym.stats().parsed_file_evictions, 2, "rebuilt before files 3 and 5");
}
