//! `otelprof record` end to end: real BPF, real processes, real binaries, and the outputs read
//! back by prost and by `go tool pprof`.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use common::*;

const CHAIN: [&str; 4] = ["hot_leaf", "middle", "outer", "main"];

#[test]
fn command_chain_pprof_full_stacks_and_exit_status() {
    if !bpf_allowed("command_chain_pprof_full_stacks_and_exit_status") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("chain-pprof");
    let out = dir.join("chain.pb.gz");
    let o =
        run(otelprof().args(["record", "-F", "499", "-o"]).arg(&out).arg("--").arg(workload("chain")).args(["2", "3"]));
    assert_eq!(o.status.code(), Some(3), "exit status of the command: {}", stderr(&o));

    let p = read_pprof(&out);
    let types: Vec<(String, String)> = p
        .sample_type
        .iter()
        .map(|t| (p.string_table[t.ty as usize].clone(), p.string_table[t.unit as usize].clone()))
        .collect();
    assert_eq!(types, [("samples".into(), "count".into()), ("cpu".into(), "nanoseconds".into())]);
    assert_eq!(p.period, 1_000_000_000 / 499);
    let stacks = stacks(&p);
    let total: i64 = stacks.iter().map(|s| s.count).sum();
    assert!(total > 400, "2 s at 499 Hz should give ~1000 samples, got {total}");
    let full: i64 = stacks.iter().filter(|s| has_chain(&s.functions, &CHAIN)).map(|s| s.count).sum();
    assert!(full * 100 >= total * 90, "full chain in {full} of {total} samples: {stacks:#?}");
    let leaf: i64 =
        stacks.iter().filter(|s| s.functions.first().map(String::as_str) == Some("hot_leaf")).map(|s| s.count).sum();
    assert!(leaf * 100 >= total * 80, "hot_leaf is the leaf in {leaf} of {total} samples");

    // The workload's mapping carries its file name and build ID; functions carry file and line.
    let exe = workload("chain");
    let m = p
        .mapping
        .iter()
        .find(|m| p.string_table[m.filename as usize] == exe.to_string_lossy())
        .expect("mapping of the workload");
    assert_eq!(p.string_table[m.build_id as usize].len(), 40, "GNU build ID as hex");
    assert_eq!(p.mapping[0].id, m.id, "the main binary is the first mapping (pprof's convention)");
    assert!(m.has_functions && m.has_line_numbers);
    let f = p.function.iter().find(|f| p.string_table[f.name as usize] == "hot_leaf").unwrap();
    assert!(p.string_table[f.filename as usize].ends_with("chain.c"));

    // Independent reader: go tool pprof.
    if let Some(top) = go_pprof(&["-top", "-nodecount=3"], &out) {
        let first = top.lines().skip_while(|l| !l.trim_start().starts_with("flat")).nth(1).unwrap_or("");
        assert!(first.ends_with("hot_leaf"), "top self function per go tool pprof: {top}");
        assert!(top.starts_with("File: chain\n"), "go tool pprof names the command's binary: {top}");
    }
    if let Some(traces) = go_pprof(&["-traces"], &out) {
        let lines: Vec<String> =
            traces.lines().map(|l| l.split_whitespace().last().unwrap_or("").to_string()).collect();
        assert!(has_chain(&lines, &CHAIN), "go tool pprof -traces shows the chain: {traces}");
        assert!(traces.contains("thread_name:  chain") || traces.contains("thread_name: chain"), "{traces}");
    }
}

#[test]
fn command_is_profiled_from_its_first_instruction() {
    if !bpf_allowed("command_is_profiled_from_its_first_instruction") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("first-instruction");
    let out = dir.join("early.folded");
    // 0.25 s of spinning right at start, then 0.5 s of sleep: a profiler that attaches after
    // the command started misses the spin.
    let o = run(otelprof()
        .args(["record", "-F", "499", "-o"])
        .arg(&out)
        .arg("--")
        .arg(workload("chain"))
        .args(["0.25", "0", "0.5"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let folded = std::fs::read_to_string(&out).unwrap();
    let leaf: u64 = folded
        .lines()
        .filter(|l| l.contains(";main;outer;middle;hot_leaf "))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(leaf >= 60, "0.25 s at 499 Hz is ~125 samples of the spin, got {leaf}:\n{folded}");
}

#[test]
fn pid_mode_threads_names_and_tids() {
    if !bpf_allowed("pid_mode_threads_names_and_tids") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("threads");
    let out = dir.join("threads.pb.gz");
    let mut w = Command::new(workload("threads")).arg("2.5").stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(w.stdout.take().unwrap()).lines();
    let mut threads = std::collections::HashMap::new();
    for _ in 0..3 {
        let line = lines.next().unwrap().unwrap();
        let (tid, name) = line.split_once(' ').unwrap();
        threads.insert(tid.parse::<i64>().unwrap(), name.to_string());
    }
    let pid = w.id();
    // No -d: the recording ends when the target exits.
    let o = run(otelprof().args(["record", "-F", "199", "-p", &pid.to_string(), "-o"]).arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(w.wait().unwrap().success());

    let stacks = stacks(&read_pprof(&out));
    let spin: Vec<_> =
        stacks.iter().filter(|s| s.functions.first().map(String::as_str) == Some("worker_spin")).collect();
    assert!(!spin.is_empty(), "worker_spin samples: {stacks:#?}");
    for s in &spin {
        assert_eq!(s.pid, pid as i64);
        let expected = threads.get(&s.tid).unwrap_or_else(|| panic!("tid {} is not a worker: {threads:?}", s.tid));
        assert_eq!(&s.thread_name, expected);
        assert!(has_chain(&s.functions, &["worker_spin", "worker"]), "{:?}", s.functions);
    }
    let seen: std::collections::HashSet<i64> = spin.iter().map(|s| s.tid).collect();
    assert_eq!(seen.len(), 3, "all three workers sampled: {seen:?}");
    assert!(stacks.iter().all(|s| s.pid == pid as i64), "only the target process is sampled");
}

#[test]
fn kernel_frames_are_symbolized() {
    if !bpf_allowed("kernel_frames_are_symbolized") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("syscalls");
    let out = dir.join("sys.folded");
    let o = run(otelprof()
        .args(["record", "-F", "499", "--bpf-stats", "-o"])
        .arg(&out)
        .arg("--")
        .arg(workload("syscalls"))
        .arg("1.5"));
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let stats =
        err.lines().find(|l| l.starts_with("otelprof: bpf sample: ")).unwrap_or_else(|| panic!("--bpf-stats: {err}"));
    let runs: u64 = stats.split_whitespace().nth(3).unwrap().parse().unwrap();
    let ns: f64 = stats.split_whitespace().nth(5).unwrap().parse().unwrap();
    assert!(runs > 500 && ns > 0.0, "{stats}");
    let folded = std::fs::read_to_string(&out).unwrap();
    let mut total = 0u64;
    let mut kernel = 0u64;
    let mut named = 0u64;
    for line in folded.lines() {
        let (stack, n) = line.rsplit_once(' ').unwrap();
        let n: u64 = n.parse().unwrap();
        total += n;
        let kframes: Vec<&str> = stack.split(';').filter(|f| f.ends_with("_[k]")).collect();
        if !kframes.is_empty() {
            kernel += n;
            if kframes.iter().all(|f| !f.contains("+0x")) && stack.contains("entry_SYSCALL_64") {
                named += n;
            }
        }
    }
    assert!(kernel * 2 >= total, "most time is in the kernel: {kernel} of {total}\n{folded}");
    assert!(
        named * 100 >= kernel * 95,
        "kernel stacks symbolized through the syscall entry: {named} of {kernel}\n{folded}"
    );
    assert!(folded.contains("read_zero_[k]") || folded.contains("ksys_read_[k]"), "{folded}");
}

#[test]
fn svg_and_folded_outputs() {
    if !bpf_allowed("svg_and_folded_outputs") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("svg");
    let svg = dir.join("chain.svg");
    let o = run(otelprof().args(["record", "-o"]).arg(&svg).arg("--").arg(workload("chain")).arg("1"));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<?xml") && text.contains("<svg") && text.trim_end().ends_with("</svg>"));
    assert!(text.contains("hot_leaf") && text.contains("middle"), "flame graph names the functions");
    let summary = stderr(&o);
    assert!(summary.contains("samples") && summary.contains("lost") && summary.contains("symbolized"), "{summary}");
    assert!(summary.contains(" 0 bad records, "), "malformed ring-buffer records are counted: {summary}");
}

#[test]
fn missing_pid_fails_cleanly() {
    let o = run(otelprof().args(["record", "-p", "999999999", "-o", "/tmp/otelprof-never.pb.gz"]));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).trim(), "otelprof: error: no process with PID 999999999");
}

#[test]
fn user_errors_get_one_clear_line() {
    let dir = scratch("user-errors");
    let cases: [(&[&str], &str); 6] = [
        (&["record", "-F", "0", "-a"], "bad frequency 0"),
        (&["record", "-a", "-o", "/nonexistent-dir/x.pb.gz"], "cannot write /nonexistent-dir/x.pb.gz"),
        (&["record", "-a", "-o", "x.weird"], "cannot tell the output format"),
        (&["record", "--", "otelprof-no-such-command"], "command not found: otelprof-no-such-command"),
        (&["record", "-a", "-d", "0"], "bad duration 0"),
        (&["record", "-a", "--off-cpu", "--off-cpu-threshold", "0"], "bad --off-cpu-threshold 0"),
    ];
    for (args, expected) in cases {
        let o = run(otelprof().args(args).current_dir(&dir));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // Too high for the kernel's limit: checked against perf_event_max_sample_rate at load.
    if bpf_allowed("user_errors_get_one_clear_line (frequency limit)") {
        let o = run(otelprof().args(["record", "-a", "-F", "100000000", "-d", "1", "-o"]).arg(dir.join("x.pb.gz")));
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("perf_event_max_sample_rate"), "{}", stderr(&o));
    }
}

#[test]
fn check_reports_ready() {
    if !bpf_allowed("check_reports_ready") {
        return;
    }
    let o = run(otelprof().arg("check"));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains("BPF programs load and attach"), "{text}");
    assert!(text.trim_end().ends_with("ready to profile"), "{text}");
}

#[test]
fn inlined_functions_are_lines_of_one_location() {
    if !bpf_allowed("inlined_functions_are_lines_of_one_location") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("inline");
    let out = dir.join("inline.pb.gz");
    let o = run(otelprof().args(["record", "-F", "499", "-o"]).arg(&out).arg("--").arg(workload("inline")).arg("1"));
    assert!(o.status.success(), "{}", stderr(&o));
    let p = read_pprof(&out);
    let name = |id: u64| {
        let f = p.function.iter().find(|f| f.id == id).unwrap();
        p.string_table[f.name as usize].as_str()
    };
    let inline_locs: Vec<_> = p
        .location
        .iter()
        .filter(|l| {
            l.line.len() == 2
                && name(l.line[0].function_id) == "inlined_hot"
                && name(l.line[1].function_id) == "outer_inline"
        })
        .collect();
    assert!(!inline_locs.is_empty(), "a location with lines [inlined_hot, outer_inline]: {:#?}", p.location);
    let hot: i64 = stacks(&p)
        .iter()
        .filter(|s| s.functions.starts_with(&["inlined_hot".to_string(), "outer_inline".to_string()]))
        .map(|s| s.count)
        .sum();
    let total: i64 = stacks(&p).iter().map(|s| s.count).sum();
    assert!(hot * 100 >= total * 80, "inlined_hot leaf in {hot} of {total}");
    if let Some(traces) = go_pprof(&["-traces"], &out) {
        assert!(
            traces.contains("inlined_hot") && traces.contains("(inline)"),
            "go tool pprof marks the inlined frame: {traces}"
        );
    }
}

#[test]
fn deleted_binary_is_still_symbolized() {
    if !bpf_allowed("deleted_binary_is_still_symbolized") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("deleted");
    let exe = dir.join("chain-copy");
    std::fs::copy(workload("chain"), &exe).unwrap();
    let mut w = Command::new(&exe).arg("2").spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    // Like a container's binary, the path no longer leads to the file: only /proc/PID/map_files does.
    std::fs::remove_file(&exe).unwrap();
    let out = dir.join("deleted.pb.gz");
    let o = run(otelprof().args(["record", "-F", "299", "-d", "1", "-p", &w.id().to_string(), "-o"]).arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = w.wait();
    let p = read_pprof(&out);
    let stacks = stacks(&p);
    let total: i64 = stacks.iter().map(|s| s.count).sum();
    let full: i64 = stacks.iter().filter(|s| has_chain(&s.functions, &CHAIN)).map(|s| s.count).sum();
    assert!(total > 100 && full * 100 >= total * 90, "deleted binary symbolized: {full} of {total}: {stacks:#?}");
    let m = p
        .mapping
        .iter()
        .find(|m| p.string_table[m.filename as usize] == exe.to_string_lossy())
        .expect("mapping keeps the original path");
    assert_eq!(p.string_table[m.build_id as usize].len(), 40);
}

#[test]
fn children_of_the_command_are_followed() {
    if !bpf_allowed("children_of_the_command_are_followed") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("children");
    let out = dir.join("children.pb.gz");
    let script = format!("{} 1; {} 0.5 5", workload("chain").display(), workload("chain").display());
    let o = run(otelprof().args(["record", "-F", "299", "-o"]).arg(&out).args(["--", "sh", "-c"]).arg(&script));
    assert_eq!(o.status.code(), Some(5), "sh's status is its last child's: {}", stderr(&o));
    let stacks = stacks(&read_pprof(&out));
    let pids: std::collections::BTreeSet<i64> =
        stacks.iter().filter(|s| has_chain(&s.functions, &CHAIN)).map(|s| s.pid).collect();
    assert_eq!(pids.len(), 2, "both children of sh were profiled: {pids:?}");
    let total: i64 = stacks.iter().filter(|s| pids.contains(&s.pid)).map(|s| s.count).sum();
    assert!(total > 200, "1.5 s at 299 Hz over the two children (~450 on an idle machine), got {total}");
}

#[test]
fn whole_system_mode_sees_other_processes() {
    if !bpf_allowed("whole_system_mode_sees_other_processes") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("all");
    let out = dir.join("all.pb.gz");
    let mut w = Command::new(workload("chain")).arg("2").spawn().unwrap();
    let o = run(otelprof().args(["record", "-a", "-F", "199", "-d", "1", "-o"]).arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let pid = w.id() as i64;
    let _ = w.wait();
    let stacks = stacks(&read_pprof(&out));
    let mine: i64 = stacks.iter().filter(|s| s.pid == pid && has_chain(&s.functions, &CHAIN)).map(|s| s.count).sum();
    assert!(mine > 100, "the workload shows up in a system-wide profile with its chain: {mine}");
    assert!(stacks.iter().all(|s| s.pid != 0), "idle is skipped unless asked");
}

#[test]
fn signals_reach_the_command_once_and_its_status_is_ours() {
    if !bpf_allowed("signals_reach_the_command_once_and_its_status_is_ours") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("signals");
    let out = dir.join("sig.folded");
    // The command counts SIGTERMs; exits 40 + count on the first one after a grace period.
    let script = "n=0; trap 'n=$((n+1))' TERM; while [ $n -eq 0 ]; do sleep 0.05; done; sleep 0.3; exit $((40+n))";
    let log = dir.join("record.log");
    let rec = spawn_until_ready(
        otelprof().args(["record", "-o"]).arg(&out).args(["--", "sh", "-c", script]),
        &log,
        "recording ",
        std::time::Duration::from_secs(30),
    );
    // The shell installs its trap right after it starts.
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(rec.id() as i32, libc::SIGTERM) };
    let o = rec.wait_with_output().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(o.status.code(), Some(41), "forwarded exactly once, command's status returned: {text}");
    assert!(out.exists());
}

#[test]
fn sigint_ends_a_pid_recording_and_writes_the_profile() {
    if !bpf_allowed("sigint_ends_a_pid_recording_and_writes_the_profile") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("sigint");
    let out = dir.join("p.pb.gz");
    let mut w = Command::new(workload("chain")).arg("5").spawn().unwrap();
    let log = dir.join("record.log");
    let rec = spawn_until_ready(
        otelprof().args(["record", "-F", "199", "-p", &w.id().to_string(), "-o"]).arg(&out),
        &log,
        "recording ",
        std::time::Duration::from_secs(30),
    );
    std::thread::sleep(std::time::Duration::from_millis(1000));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(rec.id() as i32, libc::SIGINT) };
    let o = rec.wait_with_output().unwrap();
    let _ = w.kill();
    let _ = w.wait();
    assert!(o.status.success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    let total: i64 = stacks(&read_pprof(&out)).iter().map(|s| s.count).sum();
    assert!(total > 50, "samples until SIGINT: {total}");
}

#[test]
fn a_full_ring_buffer_is_counted_not_hidden() {
    if !bpf_allowed("a_full_ring_buffer_is_counted_not_hidden") {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("lost");
    let out = dir.join("lost.folded");
    // One page holds a single sample record; at the kernel's highest allowed rate on every CPU
    // the reader cannot keep up. (The kernel lowers that limit by itself when perf interrupts
    // take too long, so it is read, not assumed.)
    let max_rate: u64 = std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1000);
    let hz = max_rate.min(20_000).to_string();
    let o = run(otelprof()
        .args(["record", "-F", &hz, "--ringbuf-size", "4096", "-o"])
        .arg(&out)
        .arg("--")
        .arg(workload("threads"))
        .arg("1"));
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let summary = err.lines().find(|l| l.contains(" samples, ")).unwrap_or_else(|| panic!("summary: {err}"));
    let num = |word: &str| -> u64 {
        let words: Vec<&str> = summary.split([' ', ',', ':']).filter(|w| !w.is_empty()).collect();
        let i = words.iter().position(|w| *w == word).unwrap_or_else(|| panic!("{word} in {summary}"));
        words[i - 1].parse().unwrap()
    };
    let (samples, lost) = (num("samples"), num("lost"));
    assert!(lost > 0, "a one-page ring buffer at {hz} Hz loses samples, and says so: {summary}");
    let folded: u64 = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(folded, samples, "every sample that arrived is in the output");
    assert!(err.contains("larger --ringbuf-size"), "the summary says what to do: {err}");
}

#[test]
fn without_privileges_the_error_says_what_to_do() {
    if !bpf_allowed("without_privileges_the_error_says_what_to_do") {
        return;
    }
    // A copy nobody can reach, wherever the checkout lives.
    let dir = std::env::temp_dir().join(format!("otelprof-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("otelprof");
    std::fs::copy(env!("CARGO_BIN_EXE_otelprof"), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Drop to nobody with no capabilities, as an ordinary user would run it.
    let o = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"])
        .arg(&bin)
        .args(["record", "-a", "-d", "1", "-o", "/dev/null", "--format", "pprof"])
        .current_dir(&dir));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not permitted to load BPF programs") && err.contains("CAP_BPF"), "{err}");
    let o = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"])
        .arg(&bin)
        .arg("check")
        .current_dir(&dir));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("[FAIL] privileges") && out.contains("setcap"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
