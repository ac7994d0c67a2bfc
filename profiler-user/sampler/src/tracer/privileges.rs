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
