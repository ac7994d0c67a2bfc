//! Which processes the agent profiles. User space decides, BPF enforces: a matching process is
//! put into the `TARGETS` map (with FOLLOW, so its forks are profiled too) and every other
//! process's samples are dropped in the kernel.

use crate::process::metadata;

/// Which processes to profile; all empty means every process on the node.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Targets {
    pub pids: Vec<u32>,
    /// Glob patterns (`*`, `?`) on the executable's file name.
    pub executables: Vec<String>,
    /// Container IDs, or prefixes of at least 12 hex digits.
    pub containers: Vec<String>,
    /// cgroup path prefixes as `/proc/PID/cgroup` shows them.
    pub cgroups: Vec<String>,
}

impl Targets {
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty() && self.executables.is_empty() && self.containers.is_empty() && self.cgroups.is_empty()
    }

    /// Whether new processes must be examined when they exec.
    pub fn needs_exec_events(&self) -> bool {
        !(self.executables.is_empty() && self.containers.is_empty() && self.cgroups.is_empty())
    }
}

/// `*` (any run) and `?` (one character) glob match.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Decides whether a process is a target.
pub struct Selector {
    targets: Targets,
}

impl Selector {
    pub fn new(targets: Targets) -> Self {
        Self { targets }
    }

    /// Whether `pid` matches by executable name, container or cgroup (explicit PIDs are added
    /// once, at start).
    pub fn matches(&self, pid: u32) -> bool {
        let t = &self.targets;
        if !t.executables.is_empty() {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .or_else(|| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|c| c.trim_end().to_string())
                });
            if exe.is_some_and(|e| t.executables.iter().any(|p| glob(p, &e))) {
                return true;
            }
        }
        if t.containers.is_empty() && t.cgroups.is_empty() {
            return false;
        }
        let Ok(cgroup) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else { return false };
        if let Some(id) = metadata::container_id(&cgroup) {
            if t.containers.iter().any(|c| id.starts_with(&c.to_ascii_lowercase())) {
                return true;
            }
        }
        cgroup
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .any(|path| t.cgroups.iter().any(|c| path.starts_with(c.as_str())))
    }

    /// Targets at start: the configured PIDs that exist, and every running process that matches.
    pub fn initial(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .targets
            .pids
            .iter()
            .copied()
            .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            .collect();
        if self.targets.needs_exec_events() {
            let pids = std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok());
            out.extend(pids.filter(|&p| self.matches(p)));
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("python3*", "python3.11"));
        assert!(glob("*sql*", "postgresql"));
        assert!(glob("ng?nx", "nginx"));
        assert!(glob("*", ""));
        assert!(!glob("python3*", "python2"));
        assert!(!glob("nginx", "nginx-debug"));
        assert!(glob("a*b*c", "aXbYc") && !glob("a*b*c", "aXbY"));
    }

    #[test]
    fn selects_running_processes_by_executable_name() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let s = Selector::new(Targets { executables: vec!["sle?p".into()], ..Default::default() });
        assert!(s.matches(child.id()));
        assert!(s.initial().contains(&child.id()));
        assert!(!s.matches(std::process::id()), "the test binary is not `sleep`");
        let none = Selector::new(Targets { pids: vec![child.id(), u32::MAX - 2], ..Default::default() });
        assert_eq!(none.initial(), vec![child.id()], "only PIDs that exist");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
