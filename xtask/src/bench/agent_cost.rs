//! What the agent itself costs: CPU seconds per 1,000 samples and peak RSS of `otelprof agent`
//! exporting to a local OTLP/HTTP sink, with N background processes to track.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::{Plan, Tools};

#[derive(Clone, Debug)]
pub struct AgentCost {
    /// Which binary: `otelprof` (this build) or `baseline` (`--baseline`).
    pub who: &'static str,
    pub processes: usize,
    pub samples: u64,
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
    /// RSS just before stopping: anonymous (heap, parsed symbols) and file-backed (mapped
    /// binaries and the ring buffer, shared and reclaimable), MiB.
    pub anon_mib: f64,
    pub file_mib: f64,
    /// Of the file-backed RSS, the BPF maps the agent maps: the ring buffer (its data pages
    /// twice) and the unwind rows array (written in place). Kernel memory that exists whether
    /// mapped or not; all of it is resident from the start, so peak RSS minus this is the
    /// agent's own peak.
    pub bpf_map_mib: f64,
    /// Compiled unwind tables loaded into BPF (from the agent's /metrics), MiB.
    pub table_mib: f64,
    /// Distinct files with a table, and processes with tables installed (from /metrics).
    pub table_files: f64,
    pub table_processes: f64,
}

impl AgentCost {
    pub fn cpu_ms_per_1000_samples(&self) -> f64 {
        if self.samples == 0 {
            f64::NAN
        } else {
            self.cpu_seconds * 1000.0 / self.samples as f64 * 1000.0
        }
    }
}

/// Which agent config an otelprof binary reads: the current one runs an embedded collector
/// (receivers, processors, exporters, `service`), a `--baseline` built before it reads the old
/// shape (top-level `profiling`, `exporters`, `telemetry`) and rejects the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ConfigShape {
    Collector,
    Old,
}

impl ConfigShape {
    /// What the agent prints once its BPF programs are attached and it samples (the whole node).
    pub(super) fn ready_line(self) -> &'static str {
        match self {
            ConfigShape::Collector => "profiling every process at ",
            ConfigShape::Old => "agent profiling ",
        }
    }
}

/// What a benchmarked agent does, in either shape: the whole node at `hz`, one report per
/// `interval_s` seconds exported over OTLP/HTTP to the sink on `sink_port`, host attributes added
/// (the old agent's encoder did it; now the `resourcedetection` processor), the summary line
/// once an hour, and its metrics server on `metrics_port` (none when `None`).
pub(super) fn agent_config(
    shape: ConfigShape,
    hz: u64,
    interval_s: u64,
    sink_port: u16,
    metrics_port: Option<u16>,
) -> String {
    match shape {
        ConfigShape::Collector => format!(
            "receivers:\n  profiling:\n    samples_per_second: {hz}\n    reporter_interval: {interval_s}s\n\
             processors:\n  resourcedetection:\n    detectors: [env, system]\n    system: {{ hostname_sources: [os] }}\n\
             exporters:\n  otlphttp:\n    endpoint: http://127.0.0.1:{sink_port}\n\
             service:\n  pipelines:\n    profiles:\n      receivers: [profiling]\n      processors: [resourcedetection]\n      exporters: [otlphttp]\n\
             \x20 telemetry:\n    metrics: {{ address: \"{}\" }}\n    log_interval: 1h\n    shutdown_timeout: 10s\n",
            metrics_port.map(|p| format!("127.0.0.1:{p}")).unwrap_or_default()
        ),
        ConfigShape::Old => format!(
            "profiling:\n  frequency: {hz}\n  interval: {interval_s}s\nexporters:\n  otlphttp:\n    endpoint: http://127.0.0.1:{sink_port}\n\
             telemetry:\n  log_interval: 1h\n  shutdown_timeout: 10s\n{}",
            metrics_port.map(|p| format!("  metrics_address: 127.0.0.1:{p}\n")).unwrap_or_default()
        ),
    }
}

/// The samples of the agent's closing line: `stopped: profiling: 1234 samples, …` (the collector
/// agent), `profiling stopped: 1234 samples, …` (its receiver) or `stopped: 1234 samples, …`
/// (the old agent); the last such line counts.
fn closing_samples(log: &str) -> Option<u64> {
    log.lines().rev().filter_map(|l| l.split("stopped: ").nth(1)).find_map(|r| {
        let r = r.strip_prefix("profiling: ").unwrap_or(r);
        r.split(" samples").next()?.trim().parse().ok()
    })
}

/// An OTLP/HTTP sink on loopback that answers 200 to everything.
pub(super) fn sink() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let mut r = BufReader::new(conn);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let _ = r.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    Ok(port)
}

/// The agent's Prometheus endpoint's text (the HTTP response, headers included).
pub(super) fn metrics_text(port: u16) -> Option<String> {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    c.read_to_string(&mut text).ok()?;
    Some(text)
}

/// One unlabelled metric from the agent's Prometheus endpoint.
fn scrape(port: u16, name: &str) -> Option<f64> {
    metrics_text(port)?.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Resident KiB of the BPF maps process `pid` has mapped (`anon_inode:bpf-map` in its smaps).
pub fn bpf_map_rss_kib(pid: i32) -> f64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut in_map = false;
    let mut kib = 0.0;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first().is_some_and(|f| f.contains('-') && f.chars().all(|c| c.is_ascii_hexdigit() || c == '-')) {
            in_map = fields.get(5).is_some_and(|p| p.starts_with("anon_inode:bpf-map"));
        } else if in_map && fields.first() == Some(&"Rss:") {
            kib += fields.get(1).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        }
    }
    kib
}

fn one(
    plan: &Plan,
    (who, binary, shape): (&'static str, &std::path::Path, ConfigShape),
    tools: &Tools,
    processes: usize,
    port: u16,
) -> Result<AgentCost> {
    let dir = tools.root.join("target/bench");
    let mut background = Vec::new();
    // About one CPU of demand in total whatever N is: N processes to track, not an overload that
    // would starve the agent (and everything else) of CPU.
    let duty = (1.0 / processes as f64).min(0.1);
    for _ in 0..processes {
        background.push(
            Command::new(&tools.reference)
                .args(["light", &format!("{}", plan.agent_seconds + 30.0), &format!("{duty:.5}")])
                .stdout(Stdio::null())
                .spawn()
                .context("starting background processes")?,
        );
    }
    let metrics_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = dir.join("agent-bench.yaml");
    let interval = if plan.smoke { 1 } else { 5 };
    std::fs::write(&config, agent_config(shape, 99, interval, port, Some(metrics_port)))?;
    let log = dir.join("agent-bench.log");
    let agent = Command::new(binary)
        .args(["agent", "--config"])
        .arg(&config)
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting the agent")?;
    std::thread::sleep(Duration::from_secs_f64(plan.agent_seconds));
    let pid = agent.id() as i32;
    let status_kb = |key: &str| -> f64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let (anon_mib, file_mib) = (status_kb("RssAnon:") / 1024.0, status_kb("RssFile:") / 1024.0);
    let bpf_map_mib = bpf_map_rss_kib(pid) / 1024.0;
    let table_mib = scrape(metrics_port, "otelprof_unwind_table_bytes").unwrap_or(f64::NAN) / (1024.0 * 1024.0);
    let table_files = scrape(metrics_port, "otelprof_unwind_table_files").unwrap_or(f64::NAN);
    let table_processes = scrape(metrics_port, "otelprof_unwind_processes").unwrap_or(f64::NAN);
    // SAFETY: kill(2) and wait4(2) on our own child; rusage is plain data.
    let (status, usage) = unsafe {
        libc::kill(pid, libc::SIGTERM);
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::wait4(pid, &mut status, 0, &mut usage);
        (status, usage)
    };
    for mut b in background {
        let _ = b.kill();
        let _ = b.wait();
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("the agent did not exit cleanly: {text}");
    }
    let samples = closing_samples(&text).with_context(|| format!("no closing line in the agent log: {text}"))?;
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(AgentCost {
        who,
        processes,
        samples,
        cpu_seconds: secs(usage.ru_utime) + secs(usage.ru_stime),
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        anon_mib,
        file_mib,
        bpf_map_mib,
        table_mib,
        table_files,
        table_processes,
    })
}

/// This build's agent, and with `--baseline` the older one (in its own config shape) right
/// after it on the same load, so the profiler's cost before and after a restructure is side by
/// side.
pub fn run(plan: &Plan, tools: &Tools) -> Result<Vec<AgentCost>> {
    let port = sink()?;
    let mut subjects = vec![("otelprof", tools.otelprof.as_path(), ConfigShape::Collector)];
    if let Some(b) = &plan.baseline {
        subjects.push(("baseline", b.as_path(), ConfigShape::Old));
    }
    let mut out = Vec::new();
    for &n in &plan.process_counts {
        for &subject in &subjects {
            let c = one(plan, subject, tools, n, port)?;
            eprintln!(
            "xtask bench: {} agent with {n} processes: {} samples, {:.2} CPU s, {:.1} ms per 1000 samples, {:.1} MiB peak RSS",
            c.who,
            c.samples,
            c.cpu_seconds,
            c.cpu_ms_per_1000_samples(),
            c.peak_rss_mib
        );
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_lines_of_either_agent() {
        let new = "INFO profiling stopped: 900 samples, 0 lost\nINFO stopped: profiling: 901 samples, 0 lost, 3 processes; collector: items 40 accepted\n";
        assert_eq!(closing_samples(new), Some(901));
        assert_eq!(closing_samples("INFO profiling stopped: 900 samples, 0 lost\n"), Some(900));
        assert_eq!(closing_samples("INFO stopped: 1234 samples, 0 lost\n"), Some(1234));
        assert_eq!(closing_samples("INFO stopping\n"), None);
    }

    #[test]
    fn configs_in_both_shapes() {
        let new = agent_config(ConfigShape::Collector, 99, 5, 4318, Some(9000));
        for key in ["receivers:\n  profiling:\n    samples_per_second: 99\n", "reporter_interval: 5s", "service:\n"] {
            assert!(new.contains(key), "{key} in\n{new}");
        }
        assert!(new.contains("metrics: { address: \"127.0.0.1:9000\" }"), "{new}");
        assert!(agent_config(ConfigShape::Collector, 19, 1, 1, None).contains("address: \"\""), "no server");
        let old = agent_config(ConfigShape::Old, 19, 1, 4318, Some(9000));
        assert!(old.starts_with("profiling:\n  frequency: 19\n  interval: 1s\n"), "{old}");
        assert!(old.contains("  metrics_address: 127.0.0.1:9000\n"), "{old}");
        assert!(!agent_config(ConfigShape::Old, 19, 1, 4318, None).contains("metrics_address"));
    }
}
