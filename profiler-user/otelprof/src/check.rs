//! `otelprof check`: can this machine profile, and if not, what to do about it.

use std::process::ExitCode;

use otelprof_sampler::tracer::{
    self,
    privileges::{Caps, CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN},
    Tracer, TracerConfig,
};

struct Line {
    ok: bool,
    what: String,
    fix: Option<String>,
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// (major, minor) of a release string like `6.18.44-foo`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

pub fn run() -> anyhow::Result<ExitCode> {
    let mut lines = Vec::new();
    let release = kernel_release();
    let version = parse_release(&release);
    lines.push(Line {
        ok: version.is_some_and(|v| v >= (5, 17)),
        what: format!("kernel {release} (the sampler uses bpf_loop: 5.17+)"),
        fix: Some("upgrade the kernel to 5.17 or newer".into()),
    });
    lines.push(Line {
        ok: std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        what: "kernel BTF at /sys/kernel/btf/vmlinux".into(),
        fix: Some(
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (the unwinder reads the task's user registers through it)"
                .into(),
        ),
    });
    let caps = Caps::current();
    let has = |c: u32| caps.has(c);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    lines.push(Line {
        ok: caps.can_profile(),
        what: format!(
            "privileges: {}CAP_BPF={} CAP_PERFMON={} CAP_SYS_ADMIN={}",
            if root { "root, " } else { "" },
            has(CAP_BPF),
            has(CAP_PERFMON),
            has(CAP_SYS_ADMIN)
        ),
        fix: Some("run as root, or `setcap cap_bpf,cap_perfmon+ep $(which otelprof)`".into()),
    });
    let paranoid =
        std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").ok().and_then(|s| s.trim().parse::<i32>().ok());
    lines.push(Line {
        ok: has(CAP_PERFMON) || has(CAP_SYS_ADMIN) || paranoid.is_some_and(|p| p <= -1),
        what: format!("kernel.perf_event_paranoid = {}", paranoid.map(|p| p.to_string()).unwrap_or("?".into())),
        fix: Some("grant CAP_PERFMON, or `sysctl kernel.perf_event_paranoid=-1`".into()),
    });
    if let Some(max) = tracer::max_sample_rate() {
        lines.push(Line {
            ok: max >= 99,
            what: format!("kernel.perf_event_max_sample_rate = {max}"),
            fix: Some("`sysctl kernel.perf_event_max_sample_rate=1000`".into()),
        });
    }
    let load = Tracer::load(&TracerConfig {
        frequency_hz: 1,
        filter_targets: true,
        sample_idle: false,
        ringbuf_bytes: 4096 * 16,
        bpf_log: false,
        report_all_execs: false,
        dwarf_unwind: false,
        off_cpu_threshold: None,
    });
    let load = load.and_then(|mut t| t.start_sampling().map(|()| t));
    lines.push(match load {
        Ok(t) => Line { ok: true, what: format!("BPF programs load and attach on {} CPUs", t.cpus()), fix: None },
        Err(e) => Line { ok: false, what: "BPF programs load and attach".into(), fix: Some(e.to_string()) },
    });
    let ready = lines.iter().all(|l| l.ok);
    for l in &lines {
        println!("[{}] {}", if l.ok { " ok " } else { "FAIL" }, l.what);
        if !l.ok {
            if let Some(fix) = &l.fix {
                println!("       fix: {fix}");
            }
        }
    }
    println!("{}", if ready { "ready to profile" } else { "not ready: fix the lines marked FAIL" });
    Ok(if ready { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_kernel_releases() {
        assert_eq!(super::parse_release("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(super::parse_release("5.15.0"), Some((5, 15)));
        assert_eq!(super::parse_release("garbage"), None);
    }
}
