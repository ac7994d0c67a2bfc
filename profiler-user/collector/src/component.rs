//! What every component shares: its id, the traits of the four kinds (receiver, processor,
//! exporter, connector), and the [`Host`] it is built with. Learning one component teaches all: a factory parses and checks the
//! component's config (errors name the key path), the result is built per pipeline signal,
//! registers its own metrics and health in the host, and stops in the graph's shutdown order
//! (receivers → processors → exporters).

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    config::ConfigError,
    consumer::Consumer,
    health::Health,
    signal::{Data, Signal},
    telemetry::Telemetry,
};

/// A component id: `type[/name]`, as the Collector writes them (`otlp`, `otlp/backup`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    kind: String,
    name: String,
}

impl ComponentId {
    /// Parses `type[/name]`; the type is `[a-zA-Z][a-zA-Z0-9_]*`, the name anything non-empty
    /// without whitespace.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (kind, name) = match s.split_once('/') {
            Some((k, n)) => (k, n),
            None => (s, ""),
        };
        let mut chars = kind.chars();
        let good_type = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !good_type {
            return Err(format!(
                "`{s}` is not a component id: `type[/name]`, the type a letter then letters, digits or `_`"
            ));
        }
        if s.contains('/') && (name.is_empty() || name.chars().any(char::is_whitespace)) {
            return Err(format!("`{s}` is not a component id: the name after `/` is empty or has spaces"));
        }
        Ok(Self { kind: kind.to_string(), name: name.to_string() })
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            f.write_str(&self.kind)
        } else {
            write!(f, "{}/{}", self.kind, self.name)
        }
    }
}

/// A component failed to build or start.
#[derive(Debug, thiserror::Error)]
#[error("{id}: {message}")]
pub struct ComponentError {
    pub id: String,
    pub message: String,
}

impl ComponentError {
    pub fn new(id: impl fmt::Display, message: impl fmt::Display) -> Self {
        Self { id: id.to_string(), message: message.to_string() }
    }
}

/// What the agent gives every component it builds.
#[derive(Clone)]
pub struct Host {
    /// Own metrics (`/metrics`).
    pub telemetry: Arc<Telemetry>,
    /// Liveness (`/healthz`, `/readyz`): long-running parts register here.
    pub health: Health,
    /// Cancelled when the agent stops: receivers stop taking data.
    pub stop: CancellationToken,
    /// How long the whole shutdown may take (`service.telemetry`'s … or the default 10 s).
    pub shutdown_timeout: Duration,
    /// The running receivers' controls by id, for components that act on another one (the
    /// anomaly receiver's `burst`); kept current across config reloads.
    pub controls: ReceiverControls,
    /// The anomaly loops' actions, kept across reloads so that restarting a loop resets no
    /// cap, and shared so that the node-wide cap counts every loop's.
    pub anomaly_history: crate::receiver::anomaly::limit::History,
}

impl Host {
    pub fn new(shutdown_timeout: Duration) -> Self {
        Self {
            telemetry: Telemetry::new(),
            health: Health::new(),
            stop: CancellationToken::new(),
            shutdown_timeout,
            controls: ReceiverControls::default(),
            anomaly_history: Default::default(),
        }
    }
}

/// The running receivers' [`ReceiverControl`]s by receiver id (`profiling`), shared by every
/// graph built with one [`Host`]: a receiver's control is added when it starts and removed when
/// it stops, so a reload that restarts a receiver leaves its new control here.
#[derive(Clone, Default)]
pub struct ReceiverControls {
    by_id: Arc<std::sync::RwLock<BTreeMap<String, Arc<dyn ReceiverControl>>>>,
}

impl ReceiverControls {
    /// The control of the running receiver `id`.
    pub fn get(&self, id: &str) -> Option<Arc<dyn ReceiverControl>> {
        self.by_id.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    pub(crate) fn insert(&self, id: &str, control: Arc<dyn ReceiverControl>) {
        self.by_id.write().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), control);
    }

    /// Removes `id`'s control if it is still `control` (a restarted receiver's newer one stays).
    pub(crate) fn remove(&self, id: &str, control: &Arc<dyn ReceiverControl>) {
        let mut by_id = self.by_id.write().unwrap_or_else(|e| e.into_inner());
        if by_id.get(id).is_some_and(|c| Arc::ptr_eq(c, control)) {
            by_id.remove(id);
        }
    }
}

/// Where a receiver sends each signal it produces: the first consumer of every pipeline it is
/// in (a fan-out when it is in several pipelines of the signal).
#[derive(Clone, Default)]
pub struct Outputs {
    by_signal: BTreeMap<Signal, Arc<dyn Consumer>>,
}

impl Outputs {
    pub fn insert(&mut self, signal: Signal, next: Arc<dyn Consumer>) {
        self.by_signal.insert(signal, next);
    }

    /// The consumer of `signal`, or `None` when no pipeline of that signal has this receiver.
    pub fn get(&self, signal: Signal) -> Option<&Arc<dyn Consumer>> {
        self.by_signal.get(&signal)
    }

    pub fn signals(&self) -> impl Iterator<Item = Signal> + '_ {
        self.by_signal.keys().copied()
    }
}

/// A receiver with its config checked, not yet started.
#[async_trait]
pub trait Receiver: Send {
    /// Opens what it serves (a failed bind fails the agent's start, naming the receiver) and
    /// spawns its tasks, which serve until `host.stop` is cancelled. The returned handle ends
    /// once the receiver stopped handing on data.
    async fn start(self: Box<Self>, outputs: Outputs, host: &Host) -> Result<JoinHandle<()>, ComponentError>;

    /// Its live-reconfiguration hook, when it has one; taken before `start`. `None` (the
    /// default): every config change restarts it.
    fn control(&self) -> Option<Arc<dyn ReceiverControl>> {
        None
    }
}

/// A started receiver's live-reconfiguration hook, taken before `start`.
///
/// Used by the agent's config reload (OpAMP remote config): a receiver whose config changed in
/// ways it can apply live keeps running, so what it holds (the profiler's loaded BPF programs,
/// open sockets) stays and what it produces has no gap; any other change restarts it.
pub trait ReceiverControl: Send + Sync {
    /// Applies `config` (this receiver's new raw config section, at key path `path`) to the running receiver.
    /// Ok(true): applied live; Ok(false): the change needs a restart (nothing was changed); Err: the config is invalid (ConfigError naming the key).
    fn reconfigure(&self, config: &serde_yaml::Value, path: &str) -> Result<bool, crate::config::ConfigError>;

    /// Starts a bounded high-resolution window (the anomaly receiver's `burst` action): the
    /// receiver samples at `burst.samples_per_second` until `burst.duration` is over (or
    /// [`Self::end_burst`]), labels what it takes then with the trigger, and returns to its
    /// configured rate exactly. A burst already running is extended to the later end. Err: this
    /// receiver has no bursts, or it could not start one (nothing changed).
    fn burst(&self, burst: Burst) -> Result<(), String> {
        let _ = burst;
        Err("this receiver has no burst mode".into())
    }

    /// Ends a running burst now (the anomaly receiver's budget guard); no-op without one.
    fn end_burst(&self) {}

    /// CPU time per process as this receiver measured it (the profiler: from its own samples),
    /// cumulative; the anomaly receiver's `target_cpu` signal. `None`: it measures none.
    fn cpu_by_target(&self) -> Option<CpuByTarget> {
        None
    }
}

/// Cumulative CPU time per process, from a profiler's samples: `cpu_ns` of each process over
/// the `covered_ns` of wall time reported so far. Two readings' differences give each
/// process's CPU share in between.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuByTarget {
    /// Wall time the reports so far cover, ns.
    pub covered_ns: u64,
    pub targets: Vec<TargetCpu>,
}

/// One process's cumulative CPU time and what it is grouped by.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetCpu {
    pub pid: u32,
    /// The executable's name (`comm`).
    pub name: String,
    /// `service.name` from the process's OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES.
    pub service: Option<String>,
    /// The container id from its cgroup.
    pub container: Option<String>,
    pub cpu_ns: u64,
}

/// A bounded high-resolution profiling window asked for by the anomaly receiver.
#[derive(Clone, Debug, PartialEq)]
pub struct Burst {
    pub samples_per_second: u64,
    pub duration: Duration,
    /// The rule that triggered it: profiles taken in the window carry `profile.trigger:
    /// anomaly` and `profile.trigger.rule: <rule>`.
    pub rule: String,
    /// Only these processes at the burst's rate (the others keep the configured rate); `None`:
    /// every process.
    pub pids: Option<Vec<u32>>,
}

/// A processor in one pipeline: a consumer that passes (changed) data to its next consumer.
#[async_trait]
pub trait Processor: Consumer {
    /// Called when its graph starts, before connectors and receivers (nothing has flowed
    /// yet): `k8sattributes` with `wait_for_metadata` waits for its pod list here. Never
    /// called for a graph that is only built and checked.
    async fn start(&self, _host: &Host) -> Result<(), ComponentError> {
        Ok(())
    }
    /// Called after every receiver stopped: hand on what is held (the batch processor's
    /// pending batch) and stop own tasks.
    async fn shutdown(&self) {}
}

/// An exporter for one signal: its `consume` only enqueues; its own tasks send.
#[async_trait]
pub trait Exporter: Consumer {
    /// Called after the processors: sends what is queued until `deadline`, then drops and
    /// counts the rest.
    async fn shutdown(&self, deadline: tokio::time::Instant);
}

/// Makes receivers of one type from their config.
pub trait ReceiverFactory: Send + Sync {
    fn kind(&self) -> &'static str;
    /// The signals it can produce.
    fn signals(&self) -> &'static [Signal];
    /// Parses and checks the config at `path` (`receivers.otlp`); nothing is opened yet.
    fn create(&self, id: &ComponentId, config: serde_yaml::Value, path: &str)
        -> Result<Box<dyn Receiver>, ConfigError>;
}

/// A processor's checked config: builds one processor per pipeline.
pub trait BuildProcessor: Send + Sync {
    fn build(&self, signal: Signal, next: Arc<dyn Consumer>, host: &Host)
        -> Result<Arc<dyn Processor>, ComponentError>;
}

/// Makes processors of one type from their config.
pub trait ProcessorFactory: Send + Sync {
    fn kind(&self) -> &'static str;
    fn signals(&self) -> &'static [Signal];
    fn create(
        &self,
        id: &ComponentId,
        config: serde_yaml::Value,
        path: &str,
    ) -> Result<Box<dyn BuildProcessor>, ConfigError>;
}

/// An exporter's checked config: builds one exporter per signal (shared by that signal's
/// pipelines). Building spawns the sending tasks, so it runs inside the runtime.
pub trait BuildExporter: Send + Sync {
    fn build(&self, signal: Signal, host: &Host) -> Result<Arc<dyn Exporter>, ComponentError>;
}

/// Makes exporters of one type from their config.
pub trait ExporterFactory: Send + Sync {
    fn kind(&self) -> &'static str;
    /// Other type names accepted for the same exporter (`otlp_grpc` for `otlp`).
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    fn signals(&self) -> &'static [Signal];
    fn create(
        &self,
        id: &ComponentId,
        config: serde_yaml::Value,
        path: &str,
    ) -> Result<Box<dyn BuildExporter>, ConfigError>;
}

/// A connector between pipelines: the exporter of the pipelines that list it under
/// `exporters` and the receiver of those that list it under `receivers` (the Collector's
/// connectors). Built once per (exporting signal, receiving signal); its `consume` is called
/// by the exporting pipelines and hands data on to the receiving pipelines' first consumers,
/// synchronously, so a refusal downstream reaches the sender.
#[async_trait]
pub trait Connector: Consumer {
    /// Called when its graph starts (before the receivers, so nothing has flowed yet): start
    /// what runs beside `consume` (the `anomaly` connector's loop). Never called for a graph
    /// that is only built and checked (`validate`, a remote config's verification).
    async fn start(&self, _host: &Host) -> Result<(), ComponentError> {
        Ok(())
    }
    /// Called after the processors of every pipeline that exports to it have shut down, and
    /// before those of the pipelines it feeds: hand on what is held.
    async fn shutdown(&self) {}
}

/// The pipelines a connector feeds, by id, each with its first consumer.
pub type Routes = BTreeMap<crate::config::PipelineId, Arc<dyn Consumer>>;

/// A connector's checked config: builds one connector per (exporting, receiving) signal pair.
pub trait BuildConnector: Send + Sync {
    /// Checks the config against the pipelines that receive from the connector (`receiving`,
    /// of signal `to`), when the whole config is known: a routing table that names a pipeline
    /// which does not receive from it is an error at `path`'s key.
    fn check(
        &self,
        from: Signal,
        to: Signal,
        receiving: &[crate::config::PipelineId],
        path: &str,
    ) -> Result<(), ConfigError>;
    /// Builds the connector for data of `from` handed on as `to` to `routes`.
    fn build(
        &self,
        from: Signal,
        to: Signal,
        routes: Routes,
        host: &Host,
    ) -> Result<Arc<dyn Connector>, ComponentError>;
}

/// Makes connectors of one type from their config.
pub trait ConnectorFactory: Send + Sync {
    fn kind(&self) -> &'static str;
    /// The (exporting pipeline's signal, receiving pipeline's signal) pairs it connects.
    fn pairs(&self) -> &'static [(Signal, Signal)];
    fn create(
        &self,
        id: &ComponentId,
        config: serde_yaml::Value,
        path: &str,
    ) -> Result<Box<dyn BuildConnector>, ConfigError>;
}

/// A consumer that does nothing but count: for tests and for `validate`.
pub struct Discard;

impl Consumer for Discard {
    fn consume(&self, _data: Data) -> Result<(), crate::consumer::ConsumeError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_as_the_collector_writes_them() {
        let id = ComponentId::parse("otlp/backup").unwrap();
        assert_eq!((id.kind(), id.name(), id.to_string().as_str()), ("otlp", "backup", "otlp/backup"));
        assert_eq!(ComponentId::parse("batch").unwrap().to_string(), "batch");
        for bad in ["", "/x", "1otlp", "otlp/", "ot lp", "otlp/a b"] {
            assert!(ComponentId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
