//! What `record` profiles, validated before any BPF is loaded.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

use crate::cli::RecordArgs;

/// The resolved target of a recording.
#[derive(Debug, Clone)]
pub enum Target {
    /// Running processes (tgids).
    Pids(Vec<u32>),
    /// Every process.
    All,
    /// A command to start; `program` is the resolved executable.
    Command { program: PathBuf, args: Vec<OsString> },
}

/// The thread-group ID of `pid`, or an error naming what is wrong.
pub fn tgid_of(pid: u32) -> Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|_| anyhow::anyhow!("no process with PID {pid}"))?;
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("cannot read the thread group of PID {pid}"))?;
    Ok(tgid)
}

/// Whether process `pid` still runs: it has a `/proc` entry and has not exited. A zombie (exited,
/// not yet reaped by its parent) keeps its `/proc` entry but will never send an exit event again.
pub fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the command name, which is in parentheses and may contain anything.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X" | "x") | None)
}

/// Finds `name` the way execvp would: as a path when it has a slash, else along `$PATH`.
pub fn resolve_program(name: &OsString) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &Path| p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false);
    let path = Path::new(name);
    if name.to_string_lossy().contains('/') {
        if executable(path) {
            return Ok(path.to_path_buf());
        }
        bail!("command not found or not executable: {}", path.display());
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(path))
        .find(|p| executable(p))
        .with_context(|| format!("command not found: {}", path.display()))
}

impl Target {
    pub fn from_args(args: &RecordArgs) -> Result<Self> {
        if !args.command.is_empty() {
            let program = resolve_program(&args.command[0])?;
            return Ok(Self::Command { program, args: args.command[1..].to_vec() });
        }
        if args.all {
            return Ok(Self::All);
        }
        let mut pids = Vec::new();
        for &pid in &args.pid {
            let tgid = tgid_of(pid)?;
            if tgid != pid {
                tracing::warn!("PID {pid} is a thread of process {tgid}; profiling the whole process");
            }
            if !pids.contains(&tgid) {
                pids.push(tgid);
            }
        }
        Ok(Self::Pids(pids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_programs_and_rejects_missing_ones() {
        assert!(resolve_program(&"sh".into()).unwrap().ends_with("sh"));
        assert!(resolve_program(&"/bin/sh".into()).is_ok());
        let e = resolve_program(&"otelprof-no-such-command".into()).unwrap_err();
        assert_eq!(e.to_string(), "command not found: otelprof-no-such-command");
        assert!(resolve_program(&"/nonexistent/x".into()).is_err());
    }

    #[test]
    fn zombies_and_missing_processes_are_not_running() {
        assert!(running(std::process::id()));
        assert!(!running(u32::MAX - 1));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped: a zombie until `wait` below.
        let t = std::time::Instant::now();
        while running(pid) {
            assert!(t.elapsed() < std::time::Duration::from_secs(10), "`true` did not exit");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "a zombie keeps its /proc entry");
        child.wait().unwrap();
    }

    #[test]
    fn tgid_of_self_and_missing() {
        assert_eq!(tgid_of(std::process::id()).unwrap(), std::process::id());
        assert_eq!(tgid_of(u32::MAX - 1).unwrap_err().to_string(), format!("no process with PID {}", u32::MAX - 1));
    }
}
