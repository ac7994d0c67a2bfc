//! The cost of off-CPU profiling's `sched_switch` hook (`on_switch`): ns per context switch from
//! the kernel's BPF statistics (`--bpf-stats`), and how many switches per second there are to
//! pay it for, at idle and under a context-switch-heavy load (`reference pingpong`: two threads
//! passing a byte through pipes).

use std::{
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result};

use super::{
    slowdown::{parse_bpf, start, stop, Mode},
    Plan, Tools,
};

/// One measurement of the hook.
#[derive(Clone, Debug)]
pub struct SwitchCost {
    /// What ran meanwhile.
    pub load: &'static str,
    pub mode: Mode,
    pub seconds: f64,
    /// Runs of `on_switch`: every context switch of every CPU.
    pub switches: u64,
    pub ns_per_switch: f64,
    /// Off-CPU waits otelprof received, and those lost because the ring buffer was full (from
    /// its summary line).
    pub waits: u64,
    pub lost: u64,
}

impl SwitchCost {
    pub fn switches_per_second(&self) -> f64 {
        self.switches as f64 / self.seconds.max(1e-9)
    }
}

/// (waits received, waits lost to a full ring buffer) from otelprof's summary line
/// `off-CPU: N waits, ...; L lost (ring buffer full), ...`.
fn waits(lines: &[String]) -> (u64, u64) {
    let Some(line) = lines.iter().find_map(|l| l.strip_prefix("otelprof: off-CPU: ")) else { return (0, 0) };
    let waits = line.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let lost = line
        .split_once(" lost (ring buffer full)")
        .and_then(|(head, _)| head.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    (waits, lost)
}

fn measure(mode: Mode, load: &'static str, plan: &Plan, tools: &Tools) -> Result<SwitchCost> {
    let secs = if plan.smoke { 1.0 } else { 5.0 };
    let running = start(mode, tools)?.context("otelprof always runs")?;
    let t = Instant::now();
    if load == "idle" {
        std::thread::sleep(std::time::Duration::from_secs_f64(secs));
    } else {
        let out = Command::new(&tools.reference)
            .args(["pingpong", &secs.to_string()])
            .output()
            .context("running reference pingpong")?;
        if !out.status.success() {
            anyhow::bail!("reference pingpong failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let seconds = t.elapsed().as_secs_f64();
    let lines = stop(running)?;
    let (costs, _) = parse_bpf(&lines);
    let hook = costs.iter().find(|c| c.program == "on_switch");
    let (waits, lost) = waits(&lines);
    Ok(SwitchCost {
        load,
        mode,
        seconds,
        switches: hook.map(|c| c.runs).unwrap_or(0),
        ns_per_switch: hook.map(|c| c.ns_per_run).unwrap_or(f64::NAN),
        waits,
        lost,
    })
}

/// A process that only sleeps: the target of the filtered run, so that nearly every switch is of
/// a thread that is not a target.
fn sleeper() -> Result<Child> {
    Command::new("sleep").arg("3600").stdout(Stdio::null()).spawn().context("starting sleep")
}

pub fn run(plan: &Plan, tools: &Tools) -> Result<Vec<SwitchCost>> {
    let mut out = vec![measure(Mode::OffCpu(None), "idle", plan, tools)?];
    out.push(measure(Mode::OffCpu(None), "pingpong", plan, tools)?);
    let mut target = sleeper()?;
    let filtered = measure(Mode::OffCpu(Some(target.id())), "pingpong", plan, tools);
    let _ = target.kill();
    let _ = target.wait();
    out.push(filtered?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_wait_count() {
        let lines = vec![
            "otelprof: bpf on_switch: 1000 runs, 250 ns/run".to_string(),
            "otelprof: off-CPU: 387 waits, 5.228 s off CPU (threshold 1, values weighted by 1/threshold); 12 lost \
             (ring buffer full), 0 not recorded (wait map full), 2 still waiting at the end"
                .to_string(),
        ];
        assert_eq!(super::waits(&lines), (387, 12));
    }
}
