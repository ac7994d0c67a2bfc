//! `receivers.profiling`: the profiler's settings. Where a setting means the same as in the
//! OpenTelemetry eBPF profiler's collector receiver, it has that receiver's key name
//! (`samples_per_second`, `reporter_interval`, `off_cpu_threshold`); target selection and the
//! unwinding, symbolization and cache settings are otelprof's own.
//!
//! ```yaml
//! receivers:
//!   profiling:
//!     samples_per_second: 19     # per CPU
//!     reporter_interval: 10s     # one OTLP request per interval
//!     off_cpu_threshold: 0.1     # probability a switch-out is recorded; 0 (default) = off
//!     symbolize: host            # or none (the backend symbolizes by build ID)
//!     targets: { executables: ["python3*"], containers: [], cgroups: [], pids: [] }
//! ```
//!
//! `samples_per_second`, `targets` and `reporter_interval` can change while the receiver runs
//! (the agent's config reload, [`ProfilingConfig::restart_needed`]); every other key is fixed
//! for the life of its BPF programs and sampling session.

use std::time::Duration;

use otelprof_collector::config::{deserialize_at, ConfigError};
use otelprof_encode::otlp::SymbolizeMode;
use otelprof_sampler::{targets::Targets, unwind::UnwindMode};
use serde::Deserialize;

/// `receivers.profiling.unwind_cache`: where compiled unwind tables are kept between runs, so a
/// node's large libraries are compiled once, not at every agent restart.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnwindCache {
    pub enabled: bool,
    /// A directory only root can write (it holds tables the unwinder trusts); created 0700.
    pub dir: std::path::PathBuf,
    /// Bound on the directory's entries; the least recently used go first.
    pub max_size_mib: u64,
}

impl Default for UnwindCache {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: otelprof_sampler::unwind::DEFAULT_CACHE_DIR.into(),
            max_size_mib: otelprof_sampler::unwind::DEFAULT_CACHE_MIB,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfilingConfig {
    /// Samples per second per CPU.
    pub samples_per_second: u64,
    /// One report (OTLP request) per interval.
    #[serde(with = "humantime_serde")]
    pub reporter_interval: Duration,
    /// Probability (0 < p <= 1) that a switch-out is recorded for the off-CPU profile; values
    /// are weighted by 1/p. 0 turns off-CPU profiling off.
    pub off_cpu_threshold: f64,
    pub symbolize: SymbolizeMode,
    /// User stacks: `auto` (compiled .eh_frame tables where they exist), `dwarf`, or `fp`.
    pub unwind: UnwindMode,
    /// Include `process.command_line` in resources (it may hold secrets).
    pub command_line: bool,
    pub targets: Targets,
    /// BPF ring buffer bytes (power of two).
    pub ringbuf_size: u32,
    /// Processes whose mappings are kept at most; the least recently sampled go first.
    pub max_processes: usize,
    /// Symbolized addresses cached at most.
    pub symbol_cache_entries: usize,
    pub unwind_cache: UnwindCache,
}

impl Default for ProfilingConfig {
    fn default() -> Self {
        Self {
            samples_per_second: 19,
            reporter_interval: Duration::from_secs(10),
            off_cpu_threshold: 0.0,
            symbolize: SymbolizeMode::Host,
            unwind: UnwindMode::Auto,
            command_line: true,
            targets: Targets::default(),
            ringbuf_size: profiler_common::DEFAULT_RINGBUF_BYTES,
            max_processes: 4096,
            symbol_cache_entries: 1 << 18,
            unwind_cache: UnwindCache::default(),
        }
    }
}

impl ProfilingConfig {
    /// Parses and checks the config at `path` (`receivers.profiling`).
    pub fn parse(path: &str, value: serde_yaml::Value) -> Result<Self, ConfigError> {
        let c: ProfilingConfig = deserialize_at(path, value)?;
        let at = |key: &str| format!("{path}.{key}");
        if c.samples_per_second == 0 || c.samples_per_second > 10_000 {
            return Err(ConfigError::new(
                at("samples_per_second"),
                format!("{} Hz is out of range (1..=10000)", c.samples_per_second),
            ));
        }
        if c.reporter_interval < Duration::from_millis(100) {
            return Err(ConfigError::new(at("reporter_interval"), "must be at least 100ms"));
        }
        if !c.ringbuf_size.is_power_of_two() || c.ringbuf_size < 4096 {
            return Err(ConfigError::new(at("ringbuf_size"), "must be a power of two of at least 4096"));
        }
        if !(0.0..=1.0).contains(&c.off_cpu_threshold) {
            return Err(ConfigError::new(
                at("off_cpu_threshold"),
                format!("{} is not a probability (0 turns off-CPU profiling off, at most 1)", c.off_cpu_threshold),
            ));
        }
        if c.max_processes == 0 {
            return Err(ConfigError::new(at("max_processes"), "must be at least 1"));
        }
        for (i, id) in c.targets.containers.iter().enumerate() {
            if id.len() < 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::new(
                    at(&format!("targets.containers[{i}]")),
                    "a container ID or a prefix of at least 12 hex digits",
                ));
            }
        }
        Ok(c)
    }

    /// Whether going from `self` to `new` changes a key that cannot change while sampling
    /// (anything but `samples_per_second`, `targets` and `reporter_interval`): the first such
    /// key, for the log. Whether the new targets fit the loaded programs is the session's to
    /// say (`Session::can_retarget`).
    pub fn restart_needed(&self, new: &ProfilingConfig) -> Option<&'static str> {
        let live = ProfilingConfig {
            samples_per_second: self.samples_per_second,
            targets: self.targets.clone(),
            reporter_interval: self.reporter_interval,
            ..new.clone()
        };
        if live == *self {
            return None;
        }
        let keys: [(&'static str, bool); 9] = [
            ("off_cpu_threshold", live.off_cpu_threshold != self.off_cpu_threshold),
            ("symbolize", live.symbolize != self.symbolize),
            ("unwind", live.unwind != self.unwind),
            ("command_line", live.command_line != self.command_line),
            ("ringbuf_size", live.ringbuf_size != self.ringbuf_size),
            ("max_processes", live.max_processes != self.max_processes),
            ("symbol_cache_entries", live.symbol_cache_entries != self.symbol_cache_entries),
            ("unwind_cache", live.unwind_cache != self.unwind_cache),
            ("(another key)", true),
        ];
        keys.into_iter().find(|(_, changed)| *changed).map(|(key, _)| key)
    }

    /// Off-CPU profiling, when on: its recording probability.
    pub fn off_cpu(&self) -> Option<f64> {
        (self.off_cpu_threshold > 0.0).then_some(self.off_cpu_threshold)
    }

    /// Which processes, for the start-up log line.
    pub fn describe_targets(&self) -> String {
        let t = &self.targets;
        if t.is_empty() {
            return "every process".into();
        }
        let mut parts = Vec::new();
        for (what, list) in [("executables", &t.executables), ("containers", &t.containers), ("cgroups", &t.cgroups)] {
            if !list.is_empty() {
                parts.push(format!("{what} {}", list.join(", ")));
            }
        }
        if !t.pids.is_empty() {
            parts.push(format!("PIDs {:?}", t.pids));
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ProfilingConfig, ConfigError> {
        ProfilingConfig::parse("receivers.profiling", serde_yaml::from_str(text).unwrap())
    }

    #[test]
    fn keys_and_defaults() {
        let c = parse("samples_per_second: 49\nreporter_interval: 2s\noff_cpu_threshold: 0.25\ntargets: { executables: [\"python3*\"] }").unwrap();
        assert_eq!((c.samples_per_second, c.reporter_interval), (49, Duration::from_secs(2)));
        assert_eq!(c.off_cpu(), Some(0.25));
        assert!(c.targets.needs_exec_events());
        let d = ProfilingConfig::parse("receivers.profiling", serde_yaml::Value::Null).unwrap();
        assert_eq!((d.samples_per_second, d.off_cpu()), (19, None));
    }

    #[test]
    fn live_keys_need_no_restart() {
        let old = parse("samples_per_second: 19\ntargets: { pids: [1] }").unwrap();
        let live = parse("samples_per_second: 99\nreporter_interval: 2s\ntargets: { pids: [2, 3] }").unwrap();
        assert_eq!(old.restart_needed(&live), None);
        assert_eq!(old.restart_needed(&old.clone()), None);
        let cases = [
            ("unwind: fp", "unwind"),
            ("off_cpu_threshold: 0.5", "off_cpu_threshold"),
            ("ringbuf_size: 4096", "ringbuf_size"),
            ("symbolize: none\nsamples_per_second: 99", "symbolize"),
            ("unwind_cache: { enabled: false }", "unwind_cache"),
        ];
        for (text, key) in cases {
            assert_eq!(old.restart_needed(&parse(text).unwrap()), Some(key), "{text}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("frequency: 19", "receivers.profiling.frequency: unknown field `frequency`"),
            ("samples_per_second: 0", "receivers.profiling.samples_per_second: 0 Hz"),
            ("off_cpu_threshold: 2", "receivers.profiling.off_cpu_threshold: 2 is not a probability"),
            ("targets: { pid: [1] }", "receivers.profiling.targets.pid: unknown field `pid`"),
            ("targets: { containers: [abc] }", "receivers.profiling.targets.containers[0]:"),
            ("ringbuf_size: 5000", "receivers.profiling.ringbuf_size: must be a power of two"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}\n  gave: {e}\n  want: {want}");
        }
    }
}
