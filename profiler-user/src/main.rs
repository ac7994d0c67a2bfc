//! `otelprof`: the user-space side of the profiler.
//!
//! The data path, one folder per stage: `tracer` (load/attach BPF) → `reader` (ring buffer) →
//! `process` (maps, files, build IDs) → `aggregate` (stack counts) → `symbolize` → `export`
//! (pprof, folded, SVG). `record` wires them together for the CLI; `check` is the preflight.

mod agent;
mod aggregate;
mod check;
mod cli;
mod export;
mod process;
mod reader;
mod record;
mod symbolize;
mod tracer;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    let result = match cli.command {
        cli::Command::Record(args) => record::run(args),
        cli::Command::Check => check::run(),
        cli::Command::Agent { config } => agent::run(&config),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("otelprof: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
