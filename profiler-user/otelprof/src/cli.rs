//! Command-line interface, shaped after `perf record` and samply.

use std::{ffi::OsString, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use otelprof_encode::{otlp::SymbolizeMode, Format};
use otelprof_sampler::unwind::UnwindMode;

#[derive(Parser, Debug)]
#[command(name = "otelprof", version, about = "eBPF CPU profiler: record processes, commands or the whole system")]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `debug` or `otelprof=trace`.
    #[arg(long, global = true, env = "OTELPROF_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Sample stacks of processes, a command, or the whole system, and write a profile.
    Record(RecordArgs),
    /// Check whether this machine can run otelprof, and say how to fix what is missing.
    Check,
    /// Run the embedded collector with the profiler as its `profiling` receiver (the DaemonSet
    /// mode), until SIGTERM.
    Agent {
        /// Collector-style YAML (see the README); unknown keys and bad values are rejected.
        /// Given more than once, later files merge over earlier ones as in the Collector (maps key
        /// by key; lists and scalars replace). Without it, a built-in config that needs no backend
        /// (see --print-default-config).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Vec<PathBuf>,
        /// Print the built-in config and exit.
        #[arg(long, conflicts_with = "config")]
        print_default_config: bool,
    },
    /// Check a config completely (every component's settings, the pipeline graph) without
    /// starting anything: exit 0, or 2 with the error.
    Validate {
        /// As `agent --config`: more than once merges the files.
        #[arg(long, short = 'c', value_name = "FILE", required = true)]
        config: Vec<PathBuf>,
    },
}

/// A domain enum as a command-line value: the domain crates know nothing of clap; their
/// `NAMES` tables give the spellings, which `--help` lists.
fn choice<T: Copy + Send + Sync + 'static>(
    names: &'static [(&'static str, T)],
) -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(names.iter().map(|(n, _)| *n))
        .try_map(move |s| names.iter().find(|(n, _)| *n == s).map(|(_, v)| *v).ok_or("not a known value"))
}

#[derive(Args, Debug, Clone)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["pid", "all", "command"]))]
pub struct RecordArgs {
    /// Profile these running processes (all their threads); repeat for more.
    #[arg(short = 'p', long = "pid", value_name = "PID", num_args = 1)]
    pub pid: Vec<u32>,
    /// Profile every process on the system.
    #[arg(short = 'a', long = "all-cpus")]
    pub all: bool,
    /// Stop after this many seconds (default: until Ctrl-C, or until the targets exit).
    #[arg(short = 'd', long = "duration", value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Sampling frequency per CPU in Hz.
    #[arg(short = 'F', long = "frequency", value_name = "HZ", default_value_t = 99)]
    pub frequency: u64,
    /// Output file; the format follows the extension (.pb.gz/.pprof, .folded, .svg, .otlp.pb,
    /// .otlp.json). Default: otelprof.pb.gz, unless --export is given.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also send the profile as OTLP to grpc://host:port, grpcs://host:port or http(s)://host:port.
    #[arg(long, value_name = "URL")]
    pub export: Option<String>,
    /// Header for --export, e.g. `X-Scope-OrgID=tenant` (repeatable).
    #[arg(long = "export-header", value_name = "NAME=VALUE", requires = "export")]
    pub export_headers: Vec<String>,
    /// Output format, overriding the extension.
    #[arg(long, value_parser = choice(Format::NAMES))]
    pub format: Option<Format>,
    /// BPF ring buffer size in bytes (power of two, at least 4096).
    #[arg(long, value_name = "BYTES", default_value_t = profiler_common::DEFAULT_RINGBUF_BYTES)]
    pub ringbuf_size: u32,
    /// Also keep samples of the idle task (pid 0); with -a only.
    #[arg(long)]
    pub include_idle: bool,
    /// OTLP outputs: symbolize on this host (`host`) or leave it to the backend (`none`).
    #[arg(long, value_parser = choice(SymbolizeMode::NAMES), default_value = "host")]
    pub symbolize: SymbolizeMode,
    /// OTLP outputs: leave out `process.command_line`.
    #[arg(long)]
    pub no_command_line: bool,
    /// How to unwind user stacks: `auto` (compiled .eh_frame tables where a file has them, frame
    /// pointers elsewhere), `dwarf` (the same, and say which files have no table), `fp` (frame
    /// pointers only).
    #[arg(long, value_parser = choice(UnwindMode::NAMES), default_value = "auto")]
    pub unwind: UnwindMode,
    /// Keep compiled unwind tables in this directory between runs (created 0700, at most
    /// 512 MiB, least recently used go first), so large libraries are compiled once.
    #[arg(long, value_name = "DIR", default_value = otelprof_sampler::unwind::DEFAULT_CACHE_DIR)]
    pub unwind_cache: std::path::PathBuf,
    /// Compile every table afresh and keep none on disk.
    #[arg(long)]
    pub no_unwind_cache: bool,
    /// Also record where threads wait: an off-CPU profile (`off_cpu/nanoseconds`, from
    /// `sched_switch`) next to the CPU profile. pprof, folded and SVG outputs get a second file
    /// with `.offcpu` before the extension (`x.pb.gz` → `x.offcpu.pb.gz`); OTLP outputs carry
    /// both profiles in one request.
    #[arg(long)]
    pub off_cpu: bool,
    /// Probability (0 < P <= 1) that a switch-out is recorded; values are weighted by 1/P so
    /// totals stay estimates of the real time off CPU.
    #[arg(long, value_name = "P", default_value_t = 1.0, requires = "off_cpu")]
    pub off_cpu_threshold: f64,
    /// Measure the BPF programs' cost (kernel BPF statistics) and print ns per run at the end.
    #[arg(long)]
    pub bpf_stats: bool,
    /// Forward log messages from the BPF programs.
    #[arg(long)]
    pub bpf_log: bool,
    /// Command to run and profile from its first instruction (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}
