//! Stacks on real runtimes, otelprof next to `perf record --call-graph dwarf` on the same
//! workload in the same run: the share of samples whose stack is complete (reaches the
//! program's entry, or the dynamic linker's before `main`), and for JIT code the share of samples
//! naming the hot JavaScript function.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use super::{Plan, Tools};

/// One workload.
pub struct Runtime {
    pub label: String,
    cmd: Vec<OsString>,
    env: Vec<(String, String)>,
    /// A complete stack contains this function (or `_dl_start`, before `main`).
    root: &'static str,
    /// For JIT workloads: a sample is "named" when a frame contains this.
    named: Option<&'static str>,
}

/// Samples and how many were complete (and named).
#[derive(Clone, Copy, Debug, Default)]
pub struct Share {
    pub total: u64,
    pub complete: u64,
    pub named: u64,
}

impl Share {
    pub fn complete_pct(&self) -> f64 {
        pct(self.complete, self.total)
    }
    pub fn named_pct(&self) -> f64 {
        pct(self.named, self.total)
    }
}

fn pct(n: u64, total: u64) -> f64 {
    if total == 0 {
        f64::NAN
    } else {
        n as f64 * 100.0 / total as f64
    }
}

pub struct RuntimeResult {
    pub runtime: Runtime,
    pub otelprof: Share,
    pub perf: Option<Share>,
    /// otelprof's unwind line.
    pub summary: String,
}

impl RuntimeResult {
    pub fn root(&self) -> &str {
        self.runtime.root
    }
    pub fn is_jit(&self) -> bool {
        self.runtime.named.is_some()
    }
}

const LD_SO_ROOT: &str = "_dl_start";

/// Samples whose stack contains `root` (or `_dl_start`, before `main`) are complete; with `named`,
/// those with a frame containing it are named.
pub(super) fn counts<'a>(stacks: impl Iterator<Item = (Vec<&'a str>, u64)>, root: &str, named: Option<&str>) -> Share {
    let mut s = Share::default();
    for (frames, n) in stacks {
        s.total += n;
        // perf prints C++ names with their parameters: `node::Start(int, char**)`.
        let is_root =
            |f: &str| f == root || f == LD_SO_ROOT || f.strip_prefix(root).is_some_and(|r| r.starts_with('('));
        if frames.iter().any(|f| is_root(f)) {
            s.complete += n;
        }
        if let Some(name) = named {
            if frames.iter().any(|f| f.contains(name)) {
                s.named += n;
            }
        }
    }
    s
}

/// otelprof's folded output: (frames, process name first, and the count) per line.
pub(super) fn folded_stacks(text: &str) -> impl Iterator<Item = (Vec<&str>, u64)> {
    text.lines().filter_map(|l| {
        let (frames, n) = l.rsplit_once(' ')?;
        Some((frames.split(';').collect::<Vec<_>>(), n.parse::<u64>().ok()?))
    })
}

/// `perf script -F [comm,]ip,sym` output: (header line, frames leaf first) per sample. The
/// header is the command name with `comm`, empty without.
pub(super) fn perf_stacks(text: &str) -> impl Iterator<Item = (&str, Vec<&str>)> {
    text.split("\n\n").filter(|b| !b.trim().is_empty()).map(|b| {
        let header = b.lines().next().filter(|l| !l.starts_with(char::is_whitespace)).unwrap_or_default().trim();
        let frames: Vec<&str> = b
            .lines()
            .filter(|l| l.starts_with(char::is_whitespace))
            .filter_map(|l| {
                let sym = l.split_whitespace().nth(1)?;
                sym.split("+0x").next()
            })
            .collect();
        (header, frames)
    })
}

/// The workloads this machine can run.
fn runtimes(plan: &Plan, tools: &Tools) -> Result<Vec<Runtime>> {
    let secs = if plan.smoke { "1" } else { "5" };
    let workloads = tools.root.join("tests/workloads");
    let script = workloads.join("alloc_heavy.py").into_os_string();
    let mut out = Vec::new();
    if Path::new("/usr/bin/python3").exists() {
        out.push(Runtime {
            label: "Debian python3 (libpython linked in), allocation-heavy script".into(),
            cmd: vec!["/usr/bin/python3".into(), script.clone(), secs.into()],
            env: Vec::new(),
            root: "Py_BytesMain",
            named: None,
        });
    }
    if Path::new("/usr/include/python3.11/Python.h").exists() {
        let exe = tools.root.join("target/bench/embed_python");
        let status = Command::new("cc")
            .args(["-O2", "-I/usr/include/python3.11"])
            .arg(workloads.join("embed_python.c"))
            .args(["-lpython3.11", "-o"])
            .arg(&exe)
            .status()
            .context("cc")?;
        if !status.success() {
            bail!("building embed_python failed");
        }
        out.push(Runtime {
            label: "Debian's shared libpython3.11 embedded in a C program, same script".into(),
            cmd: vec![exe.into_os_string(), script.clone()],
            env: vec![("SECONDS".into(), secs.into())],
            root: "main",
            named: None,
        });
    }
    if Path::new("/usr/bin/node").exists() {
        let ms = if plan.smoke { "1000" } else { "5000" };
        out.push(Runtime {
            label: "node --perf-basic-prof, a hot JS function called from another (`jit_hot.js`)".into(),
            cmd: vec![
                "/usr/bin/node".into(),
                "--perf-basic-prof".into(),
                workloads.join("jit_hot.js").into_os_string(),
                ms.into(),
            ],
            env: Vec::new(),
            root: "node::Start",
            named: Some("hotLeaf"),
        });
    }
    if let Some(python) = newest_pyenv() {
        out.push(Runtime {
            label: format!("CPython built from source, shared libpython ({}), same script", python.display()),
            cmd: vec![python.into_os_string(), script.clone(), secs.into()],
            env: Vec::new(),
            root: "Py_BytesMain",
            named: None,
        });
    }
    Ok(out)
}

/// The newest pyenv CPython 3.10+ with a shared libpython, if the machine has one.
fn newest_pyenv() -> Option<PathBuf> {
    let versions = PathBuf::from(std::env::var_os("HOME")?).join(".pyenv/versions");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(versions)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let minor: u32 = name.strip_prefix("3.")?.split('.').next()?.parse().ok()?;
            let shared = std::fs::read_dir(e.path().join("lib"))
                .ok()?
                .flatten()
                .any(|l| l.file_name().to_str().is_some_and(|n| n.starts_with("libpython3") && n.contains(".so.")));
            (minor >= 10 && shared).then(|| (minor, e.path().join("bin").join(format!("python3.{minor}"))))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

fn otelprof_run(tools: &Tools, rt: &Runtime, dir: &Path) -> Result<(Share, String)> {
    let out = dir.join("otelprof.folded");
    let mut c = Command::new(&tools.otelprof);
    c.args(["record", "-F", "499", "-o"]).arg(&out).arg("--").args(&rt.cmd);
    // node writes V8 logs (`isolate-*-v8.log`) into its working directory: this run's, not the
    // checkout's.
    c.envs(rt.env.iter().map(|(k, v)| (k, v))).current_dir(dir);
    let o = c.output().context("otelprof record")?;
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    if !o.status.success() {
        bail!("otelprof record {}: {err}", rt.label);
    }
    let text = std::fs::read_to_string(&out)?;
    let summary = err.lines().find(|l| l.contains("unwind: ")).unwrap_or_default().trim().to_string();
    Ok((counts(folded_stacks(&text), rt.root, rt.named), summary))
}

fn perf_run(rt: &Runtime, dir: &Path) -> Result<Share> {
    let data = dir.join("perf.data");
    let mut c = Command::new("perf");
    c.args(["record", "-q", "-F", "499", "--call-graph", "dwarf", "-o"]).arg(&data).arg("--").args(&rt.cmd);
    c.envs(rt.env.iter().map(|(k, v)| (k, v))).current_dir(dir);
    let o = c.output().context("perf record")?;
    if !o.status.success() {
        bail!("perf record {}: {}", rt.label, String::from_utf8_lossy(&o.stderr));
    }
    let o = Command::new("perf").args(["script", "-F", "ip,sym", "-i"]).arg(&data).output().context("perf script")?;
    let text = String::from_utf8_lossy(&o.stdout);
    Ok(counts(perf_stacks(&text).map(|(_, frames)| (frames, 1)), rt.root, rt.named))
}

pub fn run(plan: &Plan, tools: &Tools) -> Result<Vec<RuntimeResult>> {
    let mut results = Vec::new();
    for (i, rt) in runtimes(plan, tools)?.into_iter().enumerate() {
        let dir = tools.root.join(format!("target/bench/runtime-{i}"));
        std::fs::create_dir_all(&dir)?;
        eprintln!("xtask bench:   {}", rt.label);
        let (otelprof, summary) = otelprof_run(tools, &rt, &dir)?;
        let perf = match &tools.perf {
            Some(_) => Some(perf_run(&rt, &dir)?),
            None => None,
        };
        results.push(RuntimeResult { runtime: rt, otelprof, perf, summary });
    }
    Ok(results)
}
