//! Stacks on the runtimes users profile first: CPython (Debian's, and a shared libpython built
//! without frame pointers), C++ exceptions and Rust panics caught by `catch_unwind`, each
//! compared with `perf record --call-graph dwarf` on the same workload where perf can run.

mod common;

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
};

use common::*;

/// Seconds each workload runs: long enough that the first few hundred milliseconds of a
/// process (the dynamic linker, imports) are a small part.
const SECONDS: &str = "4";

/// The dynamic linker's entry: samples taken before `main` ran, complete when they reach it.
const LD_SO_ROOT: &str = "_dl_start";

fn python_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/workloads/alloc_heavy.py")
}

/// otelprof's samples of `cmd` (as pprof stacks) and its stderr.
fn otelprof_stacks(name: &str, cmd: &[&OsStr], env: &[(&str, &str)]) -> (Vec<Stack>, String) {
    let out = scratch(name).join("p.pb.gz");
    let mut c = otelprof();
    c.args(["record", "-F", "499", "-o"]).arg(&out).arg("--").args(cmd);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = run(&mut c);
    assert!(o.status.success(), "{}", stderr(&o));
    (stacks(&read_pprof(&out)), stderr(&o))
}

/// Whether a stack (function names, any order) is complete: it reaches `root`, or the dynamic
/// linker's entry for samples taken before `main`.
fn complete<'a>(mut functions: impl Iterator<Item = &'a str>, root: &str) -> bool {
    functions.any(|f| f == root || f == LD_SO_ROOT)
}

/// Share (complete, total) of otelprof's samples whose stack is complete.
fn share(stacks: &[Stack], root: &str) -> (i64, i64) {
    let total: i64 = stacks.iter().map(|s| s.count).sum();
    let ok: i64 =
        stacks.iter().filter(|s| complete(s.functions.iter().map(String::as_str), root)).map(|s| s.count).sum();
    (ok, total)
}

/// Whether perf can be used here; in CI it must.
fn perf_available(test: &str) -> bool {
    let ok = Command::new("perf").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "perf (Debian linux-perf) is required in CI");
        eprintln!("SKIPPED the perf comparison of {test}: no perf");
    }
    ok
}

/// Share (complete, total) of `perf record --call-graph dwarf` samples of `cmd` whose stack
/// reaches `root`, counted from `perf script`.
fn perf_share(name: &str, cmd: &[&OsStr], env: &[(&str, &str)], root: &str) -> (i64, i64) {
    let data = scratch(name).join("perf.data");
    let mut c = Command::new("perf");
    c.args(["record", "-q", "-F", "499", "--call-graph", "dwarf", "-o"]).arg(&data).arg("--").args(cmd);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = run(&mut c);
    assert!(o.status.success(), "perf record: {}", stderr(&o));
    let script = run(Command::new("perf").args(["script", "-F", "ip,sym", "-i"]).arg(&data));
    assert!(script.status.success(), "perf script: {}", stderr(&script));
    let text = String::from_utf8_lossy(&script.stdout);
    let blocks: Vec<&str> = text.split("\n\n").filter(|b| !b.trim().is_empty()).collect();
    let ok = blocks
        .iter()
        .filter(|b| complete(b.lines().filter_map(|l| l.split_whitespace().nth(1)?.split("+0x").next()), root))
        .count();
    (ok as i64, blocks.len() as i64)
}

/// otelprof's stacks of `cmd` are complete (reach `root`, or the dynamic linker's entry before
/// `main` runs) in ≥ 99 % of the samples, and in no fewer (less one point) than perf's with
/// DWARF unwinding on the same workload.
fn check_runtime(name: &str, cmd: &[&OsStr], env: &[(&str, &str)], root: &str) {
    let _g = bpf_lock();
    let (stacks, err) = otelprof_stacks(name, cmd, env);
    let (ok, total) = share(&stacks, root);
    let broken: Vec<String> = {
        let mut b: Vec<&Stack> =
            stacks.iter().filter(|s| !complete(s.functions.iter().map(String::as_str), root)).collect();
        b.sort_by_key(|s| -s.count);
        b.iter().take(8).map(|s| format!("{} x {}", s.count, s.functions.join(";"))).collect()
    };
    assert!(total > 500, "{name}: {total} samples\n{err}");
    assert!(ok * 100 >= total * 99, "{name}: {ok} of {total} stacks reach {root}\n{err}\nbroken: {broken:#?}");
    if perf_available(name) {
        let (perf_ok, perf_total) = perf_share(&format!("{name}-perf"), cmd, env, root);
        assert!(perf_total > 500, "{name}: perf took {perf_total} samples");
        let ours = ok as f64 * 100.0 / total as f64;
        let perf = perf_ok as f64 * 100.0 / perf_total as f64;
        eprintln!("{name}: complete stacks (to {root}): otelprof {ours:.2}% of {total}, perf --call-graph dwarf {perf:.2}% of {perf_total}");
        assert!(ours >= perf - 1.0, "{name}: otelprof {ours:.2}% vs perf {perf:.2}%\n{err}");
    }
}

#[test]
fn debian_python_allocation_heavy_code_unwinds_to_main() {
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        assert!(std::env::var_os("CI").is_none(), "Debian's python3 is required in CI");
        eprintln!("SKIPPED debian_python_allocation_heavy_code_unwinds_to_main: no /usr/bin/python3");
        return;
    }
    if !bpf_allowed("debian_python_allocation_heavy_code_unwinds_to_main") {
        return;
    }
    // Debian's python3 links libpython statically; `main` is not in its symbol tables, and
    // perf and otelprof both name its callee Py_BytesMain.
    let script = python_script();
    check_runtime("py-debian", &[python.as_os_str(), script.as_os_str(), SECONDS.as_ref()], &[], "Py_BytesMain");
}

/// The program embedding Debian's shared libpython (`tests/workloads/embed_python.c`), or `None`
/// when its headers are missing (libpython3.11-dev; `.ci/run` installs it).
fn embedding_program() -> Option<PathBuf> {
    if !Path::new("/usr/include/python3.11/Python.h").exists() {
        assert!(std::env::var_os("CI").is_none(), "libpython3.11-dev is required in CI");
        return None;
    }
    Some(build_c("embed_python", &["embed_python.c"], &["-O2", "-I/usr/include/python3.11", "-lpython3.11"]))
}

#[test]
fn shared_libpython_allocation_heavy_code_unwinds_to_main() {
    if !bpf_allowed("shared_libpython_allocation_heavy_code_unwinds_to_main") {
        return;
    }
    let Some(exe) = embedding_program() else {
        eprintln!("SKIPPED shared_libpython_allocation_heavy_code_unwinds_to_main: no libpython3.11-dev");
        return;
    };
    // The interpreter's code is in a library that the dynamic linker maps right after exec, and
    // the script starts before the library's tables can be installed: those first samples are
    // unwound from their stack copies.
    let script = python_script();
    check_runtime("py-embedded", &[exe.as_os_str(), script.as_os_str()], &[("SECONDS", SECONDS)], "main");
}

/// CPython built from source with a shared libpython: every pyenv 3.10+ the machine has.
#[test]
fn source_built_cpython_allocation_heavy_code_unwinds_to_main() {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let versions = home.join(".pyenv/versions");
    let mut pythons: Vec<PathBuf> =
        std::fs::read_dir(&versions)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|v| {
                let name = v.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let minor: u32 = name.split('.').nth(1).and_then(|m| m.parse().ok()).unwrap_or(0);
                name.starts_with("3.")
                    && minor >= 10
                    && std::fs::read_dir(v.join("lib")).into_iter().flatten().flatten().any(|l| {
                        l.file_name().to_str().is_some_and(|n| n.starts_with("libpython3") && n.contains(".so."))
                    })
            })
            .collect();
    pythons.sort();
    if pythons.is_empty() {
        eprintln!("SKIPPED source_built_cpython_allocation_heavy_code_unwinds_to_main: no pyenv CPython with a shared libpython under {}", versions.display());
        return;
    }
    if !bpf_allowed("source_built_cpython_allocation_heavy_code_unwinds_to_main") {
        return;
    }
    for version in pythons {
        let name = version.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let minor: String = name.split('.').take(2).collect::<Vec<_>>().join(".");
        let python = version.join("bin").join(format!("python{minor}"));
        let script = python_script();
        let cmd = [python.as_os_str(), script.as_os_str(), SECONDS.as_ref()];
        check_runtime(&format!("py-{name}"), &cmd, &[], "Py_BytesMain");
    }
}

#[test]
fn cpp_exceptions_unwind_to_main() {
    if !bpf_allowed("cpp_exceptions_unwind_to_main") {
        return;
    }
    let exe = build_c("exceptions", &["exceptions.cpp"], &["-O2", "-fomit-frame-pointer"]);
    check_runtime("cpp-exceptions", &[exe.as_os_str(), SECONDS.as_ref()], &[], "main");
}

#[test]
fn rust_panics_caught_by_catch_unwind_unwind_to_main() {
    if !bpf_allowed("rust_panics_caught_by_catch_unwind_unwind_to_main") {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("workloads");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("panic_unwind");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/workloads/panic_unwind.rs");
    let o = run(Command::new("rustc")
        .args(["--edition", "2021", "-C", "opt-level=3", "-C", "force-frame-pointers=no", "-C", "panic=unwind"])
        .args(["-C", "debuginfo=0", "-o"])
        .arg(&exe)
        .arg(&src));
    assert!(o.status.success(), "rustc: {}", stderr(&o));
    // Rust's `main` is the crate's `panic_unwind::main`; the C `main` the runtime starts it from
    // is the root both profilers name.
    check_runtime("rust-panics", &[exe.as_os_str(), SECONDS.as_ref()], &[], "main");
}
