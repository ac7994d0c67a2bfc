//! A running `otelprof agent` for end-to-end tests: started from a config in the Collector's
//! shape with its telemetry server on a free port, awaited until ready, stopped with SIGTERM,
//! killed if a test fails first.

use std::{
    net::{SocketAddr, ToSocketAddrs},
    process::Child,
    time::{Duration, Instant},
};

use serde_yaml::{Mapping, Value};

use super::{otelprof, servers::*};

/// An agent process with its telemetry address (`/metrics`, `/healthz`, `/readyz`) and log file.
pub struct Agent {
    child: Option<Child>,
    pub metrics: SocketAddr,
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
    /// Writes `config` (a whole agent config: receivers, exporters, service.pipelines) with
    /// its `service.telemetry` completed by [`with_telemetry`], starts the agent and waits
    /// for `/readyz`.
    pub fn start(dir: &std::path::Path, config: &str) -> Self {
        Self::start_with_env(dir, config, &[])
    }

    /// [`Self::start`] with extra environment variables for the agent (fault-injection hooks).
    pub fn start_with_env(dir: &std::path::Path, config: &str, env: &[(&str, &str)]) -> Self {
        let (text, metrics) = with_telemetry(config);
        let path = dir.join("agent.yaml");
        std::fs::write(&path, text).unwrap();
        let log = dir.join("agent.log");
        let child = otelprof()
            .args(["agent", "--config"])
            .arg(&path)
            .envs(env.iter().copied())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut agent = Self { child: Some(child), metrics, log };
        let t = Instant::now();
        while http_get(agent.metrics, "/readyz").map(|r| r.0) != Some(200) {
            if let Some(Ok(Some(status))) = agent.child.as_mut().map(|c| c.try_wait()) {
                panic!("the agent exited ({status}) before it was ready: {}", agent.log());
            }
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
        self.wait_metrics(name, timeout, |m| metric(m, name).is_some_and(&ok))
    }

    /// Waits until `ok` holds for the whole metrics page (relations between counters), then
    /// returns it; `what` names the wait in the failure.
    pub fn wait_metrics(&self, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            let m = self.metrics();
            if ok(&m) {
                return m;
            }
            assert!(t.elapsed() < timeout, "timed out waiting for {what}\n{m}");
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

/// `config` with `service.telemetry` completed for a test, and the telemetry server's address:
/// `metrics.address` on a free loopback port unless the config names one (then that one),
/// `log_interval: 1s` and `shutdown_timeout: 3s` unless set. Keys the config has are kept.
pub fn with_telemetry(config: &str) -> (String, SocketAddr) {
    let mut root: Value = serde_yaml::from_str(config).expect("the test's agent config is YAML");
    let telemetry = child(child(&mut root, "service"), "telemetry");
    let metrics = child(telemetry, "metrics");
    let address = match metrics.get("address").and_then(Value::as_str) {
        Some(given) => given
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("service.telemetry.metrics.address `{given}` is not host:port")),
        None => {
            let free = free_addr();
            set_default(metrics, "address", &free.to_string());
            free
        }
    };
    set_default(telemetry, "log_interval", "1s");
    set_default(telemetry, "shutdown_timeout", "3s");
    (serde_yaml::to_string(&root).unwrap(), address)
}

/// The mapping under `key` of mapping `v`, made when missing or empty (`service:` alone).
fn child<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    let m = v.as_mapping_mut().unwrap_or_else(|| panic!("`{key}`'s parent is not a mapping"));
    let slot = m.entry(Value::from(key)).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Mapping(Mapping::new());
    }
    slot
}

fn set_default(v: &mut Value, key: &str, value: &str) {
    if let Some(m) = v.as_mapping_mut() {
        m.entry(Value::from(key)).or_insert_with(|| Value::from(value));
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

/// A config with the `profiling` receiver (`profiling`: its YAML settings, indented by four)
/// and the exporters of `exporters` (YAML under `exporters:`, indented by two) in one
/// `profiles` pipeline, with the host's attributes from resource detection as the default
/// config sets them.
pub fn profiles_config(profiling: &str, exporters: &str) -> String {
    let ids: Vec<&str> = exporters
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.trim_end().ends_with(':'))
        .map(|l| l.trim().trim_end_matches(':'))
        .collect();
    format!(
        "receivers:\n  profiling:\n{profiling}\
         processors:\n  resourcedetection:\n    detectors: [system]\n    system: {{ hostname_sources: [os] }}\n\
         exporters:\n{exporters}\
         service:\n  pipelines:\n    profiles:\n      receivers: [profiling]\n      processors: [resourcedetection]\n      exporters: [{}]\n",
        ids.join(", ")
    )
}
