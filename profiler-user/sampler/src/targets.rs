//! Which processes the agent profiles. User space decides, BPF enforces: a matching process is
//! put into the `TARGETS` map (with FOLLOW, so its forks are profiled too) and every other
//! process's samples are dropped in the kernel.
//!
//! Targets can change while sampling (the agent's remote config): [`Selector::initial`] gives
//! the processes the new targets select now, added like those at start, and
//! [`Selector::dropped`] those in the map the new targets no longer select, taken out.

use crate::process::metadata;

/// Which processes to profile; all empty means every process on the node.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
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

    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// Whether `pid` is a target by itself: a configured PID or a match.
    pub fn selects(&self, pid: u32) -> bool {
        self.targets.pids.contains(&pid) || self.matches(pid)
    }

    /// Of `in_map` (the ids in the `TARGETS` map), those these targets do not select: not
    /// selected themselves (or, for a thread, its process not), and not descended from a
    /// process that is (a followed target's children stay). Ids whose process is gone are
    /// left to `on_exit`.
    pub fn dropped(&self, in_map: &[u32]) -> Vec<u32> {
        let mut kept = std::collections::HashMap::new();
        let mut out = Vec::new();
        for &id in in_map {
            let Some(tgid) = tgid_of(id) else { continue };
            if !self.keeps(tgid, &mut kept) {
                out.push(id);
            }
        }
        out.sort_unstable();
        out
    }

    /// `pid` or one of its ancestors is selected; answers are memoized in `kept`.
    fn keeps(&self, pid: u32, kept: &mut std::collections::HashMap<u32, bool>) -> bool {
        let mut chain = Vec::new();
        let mut at = Some(pid);
        let mut answer = false;
        // Bounded: a parent chain is short, and a cycle (a PID reused mid-walk) must not spin.
        for _ in 0..64 {
            let Some(p) = at.filter(|&p| p > 1) else { break };
            if let Some(&known) = kept.get(&p) {
                answer = known;
                break;
            }
            chain.push(p);
            if self.selects(p) {
                answer = true;
                break;
            }
            at = parent_of(p);
        }
        for p in chain {
            kept.insert(p, answer);
        }
        answer
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

/// A `/proc/ID/status` field's first number (`Tgid`, `PPid`); works for thread ids too.
fn status_field(id: u32, field: &str) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{id}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
}

fn tgid_of(id: u32) -> Option<u32> {
    status_field(id, "Tgid")
}

fn parent_of(pid: u32) -> Option<u32> {
    status_field(pid, "PPid")
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

    #[test]
    fn dropped_keeps_targets_their_children_and_threads() {
        let me = std::process::id();
        // A child of this process, and a thread of this process.
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        let map = [me, tid, child.id()];
        let by_pid = Selector::new(Targets { pids: vec![me], ..Default::default() });
        assert_eq!(by_pid.dropped(&map), Vec::<u32>::new(), "the target, its thread and its child stay");
        let by_name = Selector::new(Targets { executables: vec!["sleep".into()], ..Default::default() });
        let mut want = vec![me, tid];
        want.sort_unstable();
        assert_eq!(by_name.dropped(&map), want, "only `sleep` is selected now");
        assert_eq!(by_name.dropped(&[u32::MAX - 2]), Vec::<u32>::new(), "gone ids are left to on_exit");
        done_tx.send(()).unwrap();
        thread.join().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
