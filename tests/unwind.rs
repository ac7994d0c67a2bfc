//! User-stack unwinding without frame pointers: compiled `.eh_frame` tables walked in BPF.

mod common;

use common::*;

const NOFP: [&str; 2] = ["-O2", "-fomit-frame-pointer"];

/// Share of samples whose leaf is `leaf` that reach `root` through every frame in `through` and
/// at least `rec_depth` recursion frames. (`rec(40)` leaves 40 frames: `rec(0)` tail-calls
/// `hot_leaf`, a jump that replaces its frame.)
fn complete_share(stacks: &[Stack], leaf: &str, through: &[&str], root: &str, rec_depth: usize) -> (i64, i64) {
    let mut total = 0;
    let mut complete = 0;
    for s in stacks.iter().filter(|s| s.functions.first().map(String::as_str) == Some(leaf)) {
        total += s.count;
        let recs = s.functions.iter().filter(|f| *f == "rec").count();
        let ok = recs >= rec_depth
            && through.iter().all(|t| s.functions.iter().any(|f| f == t))
            && s.functions.iter().any(|f| f == root);
        if ok {
            complete += s.count;
        }
    }
    (complete, total)
}

fn record(name: &str, args: &[&str], cmd: &[&std::ffi::OsStr]) -> (Vec<Stack>, String) {
    let dir = scratch(name);
    let out = dir.join("p.pb.gz");
    let o = run(otelprof().args(["record", "-F", "499"]).args(args).arg("-o").arg(&out).arg("--").args(cmd));
    assert!(o.status.success(), "{}", stderr(&o));
    (stacks(&read_pprof(&out)), stderr(&o))
}

#[test]
fn frame_pointer_less_code_unwinds_completely() {
    if !bpf_allowed("frame_pointer_less_code_unwinds_completely") {
        return;
    }
    let _g = bpf_lock();
    let exe = build_c("deep_nofp", &["deep_main.c", "deep_lib.c"], &NOFP);
    let (stacks, err) = record("unwind-exe", &["--unwind", "dwarf"], &[exe.as_os_str(), "2.5".as_ref()]);
    let (complete, total) = complete_share(&stacks, "hot_leaf", &["b", "a"], "main", 40);
    assert!(total > 500, "{total} samples in hot_leaf");
    assert!(complete * 100 >= total * 99, "complete chain in {complete} of {total}\n{err}");
    assert!(err.contains("unwind: ") && err.contains("% of"), "the summary reports the unwind rate: {err}");

    // The same binary by frame pointers: the chain breaks (this test can fail).
    let (fp, _) = record("unwind-exe-fp", &["--unwind", "fp"], &[exe.as_os_str(), "1".as_ref()]);
    let (fp_complete, fp_total) = complete_share(&fp, "hot_leaf", &["b", "a"], "main", 40);
    assert!(fp_complete * 2 < fp_total, "frame pointers cannot walk this code: {fp_complete} of {fp_total}");
}

#[test]
fn frame_pointer_less_shared_library_unwinds_completely() {
    if !bpf_allowed("frame_pointer_less_shared_library_unwinds_completely") {
        return;
    }
    let _g = bpf_lock();
    let lib = build_c("libdeep.so", &["deep_lib.c"], &["-O2", "-fomit-frame-pointer", "-shared", "-fPIC"]);
    let dir = lib.parent().unwrap().display().to_string();
    let exe = build_c(
        "deep_shared",
        &["deep_main.c"],
        &["-O2", "-fomit-frame-pointer", &format!("-L{dir}"), "-ldeep", &format!("-Wl,-rpath,{dir}")],
    );
    let (stacks, err) = record("unwind-lib", &[], &[exe.as_os_str(), "2.5".as_ref()]);
    let (complete, total) = complete_share(&stacks, "hot_leaf", &["b", "a"], "main", 40);
    assert!(total > 500 && complete * 100 >= total * 99, "complete chain in {complete} of {total}\n{err}");
}

#[test]
fn a_library_loaded_after_start_gets_its_table() {
    if !bpf_allowed("a_library_loaded_after_start_gets_its_table") {
        return;
    }
    let _g = bpf_lock();
    let lib = build_c("libdeep_dl.so", &["deep_lib.c"], &["-O2", "-fomit-frame-pointer", "-shared", "-fPIC"]);
    let exe = build_c("dlopen_main", &["dlopen_main.c"], &["-O2", "-fomit-frame-pointer", "-ldl"]);
    let (stacks, err) = record("unwind-dlopen", &[], &[exe.as_os_str(), lib.as_os_str(), "2.5".as_ref()]);
    let (complete, total) = complete_share(&stacks, "hot_leaf", &["b", "a", "run"], "main", 40);
    // The first samples in the new library come before its table is installed (BPF's report
    // brings it within milliseconds: 99.9% measured).
    assert!(total > 500 && complete * 100 >= total * 98, "complete chain in {complete} of {total}\n{err}");
    // BPF met the library's code before user space knew it and said so through the ring buffer.
    assert!(summary_count(&err, "new-code reports") >= 1, "{err}");
}

/// The number just before `what` in the unwind summary line.
fn summary_count(err: &str, what: &str) -> u64 {
    let line = err.lines().find(|l| l.contains("unwind: ")).unwrap_or_else(|| panic!("no unwind summary: {err}"));
    let before = &line[..line.find(what).unwrap_or_else(|| panic!("no {what:?} in {line}"))];
    before
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count before {what:?}: {line}"))
}

#[test]
fn tables_of_exited_programs_are_released_and_reused() {
    if !bpf_allowed("tables_of_exited_programs_are_released_and_reused") {
        return;
    }
    let _g = bpf_lock();
    // Four builds of one program, told apart by their build IDs: four tables.
    let exes: Vec<_> = (0..4)
        .map(|i| {
            let id = format!("-Wl,--build-id=0x0e1f{i:04x}");
            build_c(&format!("deep_nofp_v{i}"), &["deep_main.c", "deep_lib.c"], &["-O2", "-fomit-frame-pointer", &id])
        })
        .collect();
    // v0..v3 run briefly one after another; v0 runs again (its idle table is reused) long enough
    // for the others' tables to pass the grace period and be released.
    let script = format!(
        "{0} 0.3; {1} 0.3; {2} 0.3; {3} 0.3; {0} 7",
        exes[0].display(),
        exes[1].display(),
        exes[2].display(),
        exes[3].display()
    );
    let (stacks, err) =
        record("unwind-release", &["--unwind", "dwarf"], &["/bin/sh".as_ref(), "-c".as_ref(), script.as_ref()]);
    let (complete, total) = complete_share(&stacks, "hot_leaf", &["b", "a"], "main", 40);
    assert!(total > 1000 && complete * 100 >= total * 99, "complete chain in {complete} of {total}\n{err}");
    assert!(summary_count(&err, "released") >= 3, "v1..v3 released: {err}");
    let line = err.lines().find(|l| l.contains("unwind: ")).unwrap();
    let kib = |what: &str| -> u64 {
        let at = line.find(what).unwrap_or_else(|| panic!("{what} in {line}")) + what.len();
        line[at..].split_whitespace().next().and_then(|n| n.parse().ok()).unwrap()
    };
    assert!(kib("peak ") > kib("rows, "), "less in use at the end than at the peak: {line}");
}

#[test]
fn signal_handler_frames_unwind_through_restore_rt() {
    if !bpf_allowed("signal_handler_frames_unwind_through_restore_rt") {
        return;
    }
    let _g = bpf_lock();
    let exe = build_c("signal_nofp", &["signal.c"], &NOFP);
    let (stacks, err) = record("unwind-signal", &[], &[exe.as_os_str(), "2".as_ref()]);
    let in_handler: Vec<&Stack> = stacks
        .iter()
        .filter(|s| s.functions.first().is_some_and(|f| f == "handler_spin" || f.contains("clock_gettime")))
        .collect();
    let total: i64 = in_handler.iter().filter(|s| s.functions.iter().any(|f| f == "on_signal")).map(|s| s.count).sum();
    let through: i64 = in_handler
        .iter()
        .filter(|s| {
            let f = &s.functions;
            let handler = f.iter().position(|x| x == "on_signal");
            let main_spin = f.iter().position(|x| x == "main_spin");
            matches!((handler, main_spin), (Some(h), Some(m)) if h < m) && f.iter().any(|x| x == "main")
        })
        .map(|s| s.count)
        .sum();
    assert!(total > 100, "samples inside the handler: {total}\n{err}");
    assert!(
        through * 100 >= total * 95,
        "handler stacks continue past the signal frame to main: {through} of {total}\n{err}"
    );
}

/// Code in the vDSO has no file: it is unwound with the vDSO's own `.eh_frame` and named from the
/// kernel's image (`__vdso_clock_gettime`, in a `[vdso]` mapping), not left as `[unknown]+0x7ff…`.
#[test]
fn vdso_frames_are_named_and_unwound_through() {
    if !bpf_allowed("vdso_frames_are_named_and_unwound_through") {
        return;
    }
    let _g = bpf_lock();
    let exe = build_c("vdso_nofp", &["vdso.c"], &NOFP);
    let (stacks, err) = record("unwind-vdso", &[], &[exe.as_os_str(), "2".as_ref()]);
    let mine: Vec<&Stack> = stacks.iter().filter(|s| s.functions.iter().any(|f| f == "read_clocks")).collect();
    let total: i64 = mine.iter().map(|s| s.count).sum();
    let in_vdso: Vec<&&Stack> = mine.iter().filter(|s| s.modules.first().is_some_and(|m| m == "[vdso]")).collect();
    let vdso_total: i64 = in_vdso.iter().map(|s| s.count).sum();
    assert!(total > 500, "{total} samples of the workload\n{err}");
    assert!(vdso_total * 10 >= total * 3, "{vdso_total} of {total} samples in the vDSO\n{err}");
    let unnamed: Vec<&String> = in_vdso
        .iter()
        .flat_map(|s| s.functions.iter().zip(&s.modules).filter(|(_, m)| *m == "[vdso]").map(|(f, _)| f))
        .filter(|f| !f.contains("clock_gettime"))
        .collect();
    assert!(unnamed.is_empty(), "vDSO frames named from the kernel's image: {unnamed:?}");
    let through: i64 = in_vdso
        .iter()
        .filter(|s| {
            let at = s.functions.iter().position(|f| f == "read_clocks");
            at.is_some_and(|i| s.functions[i + 1..].iter().any(|f| f == "main"))
        })
        .map(|s| s.count)
        .sum();
    assert!(through * 100 >= vdso_total * 99, "vDSO stacks reach main: {through} of {vdso_total}\n{err}");
}

#[test]
fn rust_release_build_without_frame_pointers_unwinds_completely() {
    if !bpf_allowed("rust_release_build_without_frame_pointers_unwinds_completely") {
        return;
    }
    let _g = bpf_lock();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("workloads");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("deep_rust");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/workloads/deep_rust.rs");
    let o = run(std::process::Command::new("rustc")
        .args(["--edition", "2021", "-C", "opt-level=3", "-C", "force-frame-pointers=no", "-C", "debuginfo=0", "-o"])
        .arg(&exe)
        .arg(&src));
    assert!(o.status.success(), "rustc: {}", stderr(&o));
    let (stacks, err) = record("unwind-rust", &["--unwind", "dwarf"], &[exe.as_os_str(), "2.5".as_ref()]);
    // Rust names come demangled with their path: deep_rust::rec.
    let short: Vec<Stack> = stacks
        .into_iter()
        .map(|mut s| {
            for f in &mut s.functions {
                if let Some(n) = f.strip_prefix("deep_rust::") {
                    *f = n.to_string();
                }
            }
            s
        })
        .collect();
    let (complete, total) = complete_share(&short, "hot_leaf", &["b", "a"], "main", 40);
    assert!(total > 500 && complete * 100 >= total * 99, "complete chain in {complete} of {total}\n{err}");
}

/// Leaf-to-root function chains of `perf script` output for samples whose leaf is `leaf`.
fn perf_chains(script: &str, leaf: &str) -> std::collections::HashMap<Vec<String>, i64> {
    let mut chains = std::collections::HashMap::new();
    for block in script.split("\n\n") {
        let frames: Vec<String> = block
            .lines()
            .skip(1)
            .filter_map(|l| {
                let sym = l.split_whitespace().nth(1)?;
                // perf names GCC's alias for calls within a file (`rec.localalias`); otelprof
                // shows the function's own name.
                let name = sym.split("+0x").next()?;
                Some(name.strip_suffix(".localalias").unwrap_or(name).to_string())
            })
            .filter(|s| !s.is_empty() && s != "[unknown]")
            .collect();
        if frames.first().map(String::as_str) == Some(leaf) {
            *chains.entry(frames).or_insert(0) += 1;
        }
    }
    chains
}

#[test]
fn the_same_chains_as_perf_with_dwarf_unwinding() {
    if !bpf_allowed("the_same_chains_as_perf_with_dwarf_unwinding") {
        return;
    }
    if std::process::Command::new("perf").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        if std::env::var_os("CI").is_some() {
            panic!("perf (Debian linux-perf) is required in CI");
        }
        eprintln!("SKIPPED the_same_chains_as_perf_with_dwarf_unwinding: no perf");
        return;
    }
    let _g = bpf_lock();
    let exe = build_c("deep_nofp", &["deep_main.c", "deep_lib.c"], &NOFP);
    let dir = scratch("unwind-perf");
    let data = dir.join("perf.data");
    let o = run(std::process::Command::new("perf")
        .args(["record", "-q", "-F", "499", "--call-graph", "dwarf", "-o"])
        .arg(&data)
        .arg("--")
        .arg(&exe)
        .arg("1.5"));
    assert!(o.status.success(), "perf record: {}", stderr(&o));
    let script = run(std::process::Command::new("perf").args(["script", "-F", "ip,sym", "-i"]).arg(&data));
    assert!(script.status.success(), "perf script: {}", stderr(&script));
    let perf = perf_chains(&String::from_utf8_lossy(&script.stdout), "hot_leaf");
    let (perf_chain, perf_n) = perf.iter().max_by_key(|(_, n)| **n).expect("perf has hot_leaf samples");

    let (stacks, _) = record("unwind-perf-otelprof", &[], &[exe.as_os_str(), "1.5".as_ref()]);
    let mut ours: std::collections::HashMap<Vec<String>, i64> = std::collections::HashMap::new();
    for s in stacks.iter().filter(|s| s.functions.first().map(String::as_str) == Some("hot_leaf")) {
        *ours.entry(s.functions.clone()).or_insert(0) += s.count;
    }
    let (our_chain, our_n) = ours.iter().max_by_key(|(_, n)| **n).expect("otelprof has hot_leaf samples");
    // perf stops where its 8 KiB stack copy or libc's CFI ends; compare the frames both have.
    let common = perf_chain.len().min(our_chain.len());
    assert!(common >= 44, "both reach past the recursion: perf {perf_chain:?} ours {our_chain:?}");
    assert_eq!(
        &perf_chain[..common],
        &our_chain[..common],
        "same leaf-to-root chain ({perf_n} perf samples, {our_n} ours)"
    );
}

/// `record -p` on a program that runs without frame pointers: its tables are installed before
/// the sampler starts, so no sample of the recording ends at the leaf for want of them (before,
/// 9-17 of ~500 samples at the start of every recording did).
#[test]
fn a_running_program_unwinds_completely_from_the_first_sample() {
    if !bpf_allowed("a_running_program_unwinds_completely_from_the_first_sample") {
        return;
    }
    let _g = bpf_lock();
    let exe = build_c("deep_nofp", &["deep_main.c", "deep_lib.c"], &NOFP);
    let dir = scratch("unwind-pid");
    let out = dir.join("p.pb.gz");
    let mut w = std::process::Command::new(&exe).arg("30").spawn().unwrap();
    let pid = w.id();
    // Past its exec and spinning.
    wait_until_running(&mut w, "deep_nofp", std::time::Duration::from_secs(10), |pid| {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == exe) && cpu_ticks(pid) > 0
    });
    let o = run(otelprof()
        .args(["record", "-F", "499", "-d", "3", "--unwind", "dwarf", "-p", &pid.to_string(), "-o"])
        .arg(&out));
    let _ = w.kill();
    let _ = w.wait();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let (complete, total) = complete_share(&stacks(&read_pprof(&out)), "hot_leaf", &["b", "a"], "main", 40);
    assert!(total > 500, "{total} samples in hot_leaf\n{err}");
    assert!(complete * 100 >= total * 99, "complete chain in {complete} of {total}\n{err}");
    assert_eq!(summary_count(&err, "without tables"), 0, "{err}");
}

#[test]
fn compiled_tables_are_kept_on_disk_for_the_next_run() {
    if !bpf_allowed("compiled_tables_are_kept_on_disk_for_the_next_run") {
        return;
    }
    let _g = bpf_lock();
    let exe = build_c("deep_nofp_cached", &["deep_main.c", "deep_lib.c"], &NOFP);
    let cache = scratch("unwind-cache").join("tables");
    let _ = std::fs::remove_dir_all(&cache);
    let args = ["--unwind-cache", cache.to_str().unwrap()];
    let (_, first) = record("unwind-cache-1", &args, &[exe.as_os_str(), "0.5".as_ref()]);
    assert_eq!(summary_count(&first, "from the cache"), 0, "an empty cache: {first}");
    let compiled = summary_count(&first, "compiled in");
    // libc and the other large tables (4,096 rows or more) were written; small ones are not.
    let entries = std::fs::read_dir(&cache)
        .unwrap()
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "tab")))
        .count();
    assert!(entries >= 1, "libc's table is on disk: {entries} entries\n{first}");
    // A new run (a restart) takes them from disk and compiles only the rest.
    let (stacks, second) = record("unwind-cache-2", &args, &[exe.as_os_str(), "1.5".as_ref()]);
    assert_eq!(summary_count(&second, "from the cache") as usize, entries, "{second}");
    assert_eq!(summary_count(&second, "compiled in") + entries as u64, compiled, "{first}\n{second}");
    // Tables from disk unwind as well as compiled ones.
    let (complete, total) = complete_share(&stacks, "hot_leaf", &["b", "a"], "main", 40);
    assert!(total > 300 && complete * 100 >= total * 99, "complete chain in {complete} of {total}\n{second}");
    // --no-unwind-cache compiles everything.
    let (_, third) = record("unwind-cache-3", &["--no-unwind-cache"], &[exe.as_os_str(), "0.3".as_ref()]);
    assert_eq!(summary_count(&third, "from the cache"), 0, "{third}");
}
