//! Whether this process may load BPF and open system-wide perf events.

/// Linux capability numbers (`linux/capability.h`).
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The effective capability set of this process.
#[derive(Clone, Copy, Debug)]
pub struct Caps(u64);

impl Caps {
    /// Reads `CapEff` from `/proc/self/status` (empty when unreadable).
    pub fn current() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap_or("0").trim();
        Self(u64::from_str_radix(hex, 16).unwrap_or(0))
    }

    pub fn has(self, cap: u32) -> bool {
        self.0 & (1 << cap) != 0
    }

    /// Enough to load the programs and sample every CPU: CAP_SYS_ADMIN, or CAP_BPF + CAP_PERFMON.
    pub fn can_profile(self) -> bool {
        self.has(CAP_SYS_ADMIN) || (self.has(CAP_BPF) && self.has(CAP_PERFMON))
    }
}

/// This process's seccomp mode (`Seccomp:` of `/proc/self/status`): 0 off, 1 strict, 2 a
/// filter. A filter is what container runtimes install by default, and theirs allow `bpf(2)`
/// and `perf_event_open(2)` only with CAP_SYS_ADMIN, whatever other capabilities are held.
pub fn seccomp_mode() -> Option<u8> {
    seccomp_mode_in(&std::fs::read_to_string("/proc/self/status").ok()?)
}

fn seccomp_mode_in(status: &str) -> Option<u8> {
    status.lines().find_map(|l| l.strip_prefix("Seccomp:")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seccomp_mode_from_status() {
        assert_eq!(seccomp_mode_in("Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t1\n"), Some(2));
        assert_eq!(seccomp_mode_in("Seccomp:\t0\n"), Some(0));
        assert_eq!(seccomp_mode_in("Name:\tx\n"), None);
        assert!(seccomp_mode().is_some(), "this kernel reports it");
    }
}
