//! Symbolization, encoding and OTTL: runs the criterion benches of `benches/` and reads their results.

use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{Plan, Tools};

/// One criterion measurement.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub group: String,
    pub function: String,
    /// Mean nanoseconds per iteration.
    pub mean_ns: f64,
    /// Elements (addresses, samples) per iteration.
    pub elements: u64,
}

impl Measurement {
    pub fn per_second(&self) -> f64 {
        self.elements as f64 / (self.mean_ns / 1e9)
    }
}

pub struct Micro {
    pub results: Vec<Measurement>,
    /// `encode_sizes.json` written by the encode bench.
    pub sizes: Value,
}

pub fn run(plan: &Plan, tools: &Tools) -> Result<Micro> {
    run_benches(plan, tools, None)
}

/// Runs one bench of `benches/benches/` (all when `None`) and reads every result there is.
pub fn run_benches(plan: &Plan, tools: &Tools, bench: Option<&str>) -> Result<Micro> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&tools.root).args(["bench", "-p", "otelprof-benches"]);
    if let Some(bench) = bench {
        cmd.args(["--bench", bench]);
    }
    cmd.arg("--");
    if plan.smoke {
        cmd.arg("--quick");
    }
    if !cmd.status().context("cargo bench")?.success() {
        bail!("cargo bench failed");
    }
    let dir = super::target_dir(&tools.root).join("criterion");
    let mut results = Vec::new();
    for group in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?.flatten() {
        if !group.path().is_dir() {
            continue;
        }
        for func in std::fs::read_dir(group.path())?.flatten() {
            let new = func.path().join("new");
            let (Ok(est), Ok(bench)) = (
                std::fs::read_to_string(new.join("estimates.json")),
                std::fs::read_to_string(new.join("benchmark.json")),
            ) else {
                continue;
            };
            let est: Value = serde_json::from_str(&est)?;
            let bench: Value = serde_json::from_str(&bench)?;
            results.push(Measurement {
                group: bench["group_id"].as_str().unwrap_or("").to_string(),
                function: bench["function_id"].as_str().unwrap_or("").to_string(),
                mean_ns: est["mean"]["point_estimate"].as_f64().unwrap_or(f64::NAN),
                elements: bench["throughput"]["Elements"].as_u64().unwrap_or(1),
            });
        }
    }
    results.sort_by(|a, b| (&a.group, &a.function).cmp(&(&b.group, &b.function)));
    let sizes = std::fs::read_to_string(dir.join("encode_sizes.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    Ok(Micro { results, sizes })
}
