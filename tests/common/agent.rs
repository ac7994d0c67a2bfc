//! A running `otelprof agent` for end-to-end tests: started from a config with its metrics
//! endpoint, awaited until ready, stopped with SIGTERM, killed if a test fails first.

use std::{
    process::Child,
    time::{Duration, Instant},
};

use super::{otelprof, servers::*};

/// An agent process with its metrics address and log file.
pub struct Agent {
    child: Option<Child>,
    pub metrics: std::net::SocketAddr,
    log: std::path::PathBuf,
}

impl Drop for Agent {
    /// A failed assertion must not leave an agent running.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Agent {
    /// Writes `config` plus a telemetry section, starts the agent and waits for `/readyz`.
    pub fn start(dir: &std::path::Path, config: &str) -> Self {
        Self::start_with_env(dir, config, &[])
    }

    /// [`Self::start`] with extra environment variables for the agent (fault-injection hooks).
    pub fn start_with_env(dir: &std::path::Path, config: &str, env: &[(&str, &str)]) -> Self {
        let metrics = free_addr();
        let path = dir.join("agent.yaml");
        std::fs::write(
            &path,
            format!("{config}\ntelemetry:\n  metrics_address: {metrics}\n  log_interval: 1s\n  shutdown_timeout: 3s\n"),
        )
        .unwrap();
        let log = dir.join("agent.log");
        let child = otelprof()
            .args(["agent", "--config"])
            .arg(&path)
            .envs(env.iter().copied())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let agent = Self { child: Some(child), metrics, log };
        let t = Instant::now();
        while http_get(agent.metrics, "/readyz").map(|r| r.0) != Some(200) {
            assert!(t.elapsed() < Duration::from_secs(15), "agent did not become ready: {}", agent.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        agent
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        http_get(self.metrics, "/metrics")
            .unwrap_or_else(|| panic!("metrics endpoint did not answer; agent log:\n{}", self.log()))
            .1
    }

    /// Waits until `ok` holds for metric `name`, then returns the whole metrics page. The
    /// backends' own state changes when a request arrives, before the agent has read the answer
    /// and counted it, so the agent's counters are awaited, never read once after a server-side wait.
    pub fn wait_metric(&self, name: &str, timeout: Duration, ok: impl Fn(f64) -> bool) -> String {
        let t = Instant::now();
        loop {
            let m = self.metrics();
            if metric(&m, name).is_some_and(&ok) {
                return m;
            }
            assert!(t.elapsed() < timeout, "timed out waiting for {name}\n{m}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then the exit status and stderr.
    pub fn stop(mut self) -> (Option<i32>, String) {
        let child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let o = child.wait_with_output().unwrap();
        (o.status.code(), self.log())
    }
}

/// Polls `f` every 100 ms until it holds; fails the test naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
