//! Node CPU utilisation from `/proc/stat`, the anomaly loop's first signal (issue #16), and
//! the agent's own CPU use, for the burst budget.
//!
//! The aggregate `cpu` line's jiffies: busy = user + nice + system + irq + softirq + steal,
//! idle = idle + iowait (iowait is time a CPU had nothing to run); guest time is already inside
//! user/nice and is not added again. Utilisation over an interval is Δbusy / (Δbusy + Δidle), in
//! [0, 1] for the whole node.

use std::path::Path;

/// The aggregate `cpu` line's busy and idle jiffies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub idle: u64,
}

impl CpuTimes {
    /// Parses `/proc/stat`'s text; the message says what was wrong.
    pub fn parse(text: &str) -> Result<CpuTimes, String> {
        let line =
            text.lines().find(|l| l.split_whitespace().next() == Some("cpu")).ok_or("no aggregate `cpu` line")?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse::<u64>().map_err(|e| format!("`cpu` line field `{f}`: {e}")))
            .collect::<Result<_, _>>()?;
        if fields.len() < 4 {
            return Err(format!("`cpu` line has {} fields, at least 4 expected", fields.len()));
        }
        let at = |i: usize| fields.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal guest guest_nice
        Ok(CpuTimes { busy: at(0) + at(1) + at(2) + at(5) + at(6) + at(7), idle: at(3) + at(4) })
    }

    /// Reads `path` (`/proc/stat`).
    pub fn read(path: &Path) -> Result<CpuTimes, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The node's utilisation between `earlier` and `self`; `None` when no time passed (or the
    /// counters went backwards, which only a wrapped or reset counter does).
    pub fn utilisation_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let busy = self.busy.checked_sub(earlier.busy)?;
        let idle = self.idle.checked_sub(earlier.idle)?;
        let total = busy + idle;
        (total > 0).then(|| busy as f64 / total as f64)
    }
}

/// The node's CPUs: the `cpuN` lines of `/proc/stat` (every online CPU, whatever this
/// process's affinity or cgroup allows it), at least 1.
pub fn node_cpus(proc_stat: &str) -> usize {
    proc_stat
        .lines()
        .filter(|l| l.strip_prefix("cpu").is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit())))
        .count()
        .max(1)
}

/// CPU time (user + system) the agent has used so far, all threads: `getrusage(RUSAGE_SELF)`.
pub fn own_cpu_time() -> std::time::Duration {
    // SAFETY: getrusage(2) fills the plain-data struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return std::time::Duration::ZERO;
        }
        u
    };
    let d = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec.max(0) as u64)
            + std::time::Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    d(usage.ru_utime) + d(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_aggregate_line_and_computes_utilisation() {
        let a = "cpu  100 10 50 800 40 5 5 0 7 0\ncpu0 50 5 25 400 20 2 3 0 0 0\nintr 1 2\n";
        let b = "cpu  160 10 70 840 40 5 15 0 9 0\ncpu0 80 5 35 420 20 2 8 0 0 0\n";
        let (a, b) = (CpuTimes::parse(a).unwrap(), CpuTimes::parse(b).unwrap());
        assert_eq!(a, CpuTimes { busy: 170, idle: 840 });
        assert_eq!(b, CpuTimes { busy: 260, idle: 880 });
        assert_eq!(b.utilisation_since(&a), Some(90.0 / 130.0));
        assert_eq!(a.utilisation_since(&b), None, "backwards");
        assert_eq!(a.utilisation_since(&a), None, "no time passed");
        assert_eq!(node_cpus("cpu  1 2 3 4\ncpu0 1 2 3 4\ncpu1 1 2 3 4\nintr 1\n"), 2);
        assert_eq!(node_cpus("intr 1\n"), 1);
    }

    #[test]
    fn malformed_text_is_an_error_naming_what() {
        assert_eq!(CpuTimes::parse("intr 1\n").unwrap_err(), "no aggregate `cpu` line");
        assert!(CpuTimes::parse("cpu 1 2 x 4\n").unwrap_err().contains("field `x`"));
        assert!(CpuTimes::parse("cpu 1 2\n").unwrap_err().contains("2 fields"));
        // Old kernels have only four fields.
        assert_eq!(CpuTimes::parse("cpu 1 2 3 4\n").unwrap(), CpuTimes { busy: 6, idle: 4 });
    }

    #[test]
    fn the_real_proc_stat_reads_and_a_busy_loop_shows() {
        let before = CpuTimes::read(Path::new("/proc/stat")).unwrap();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = CpuTimes::read(Path::new("/proc/stat")).unwrap();
        let u = after.utilisation_since(&before).unwrap();
        assert!(u > 0.0 && u <= 1.0, "{u}");
    }

    #[test]
    fn own_cpu_time_grows_with_a_busy_loop() {
        let before = own_cpu_time();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(200) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        let used = own_cpu_time() - before;
        assert!(used >= std::time::Duration::from_millis(50), "{used:?}");
    }
}
