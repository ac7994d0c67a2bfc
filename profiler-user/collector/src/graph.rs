//! The pipelines of a checked config, built, started and shut down.
//!
//! **Wiring** ([`Graph::build`]), as the Collector does it:
//!
//! - one exporter per (exporter id, signal), shared by every pipeline of that signal that lists
//!   it, so one `otlp` exporter has one queue and one connection per signal;
//! - each pipeline's processors are its own instances, built back to front: the last one's
//!   next consumer is the fan-out to the pipeline's exporters, each earlier one's is the one
//!   after it;
//! - a receiver gets, per signal it produces, the first consumer of every pipeline of that
//!   signal it is in (a fan-out when there are several). So several receivers feed one
//!   pipeline (fan-in: they hold the same consumer) and one pipeline feeds several exporters
//!   (fan-out). Data is cloned only at a fan-out, once per extra consumer
//!   ([`crate::consumer::Fanout`]);
//! - a connector (`routing`) is one instance per (connector id, exporting signal, receiving
//!   signal): an exporter of every pipeline that lists it under `exporters`, handing data to
//!   the first consumers of the pipelines that list it under `receivers`. So pipelines are
//!   built fed-first (the config refused cycles), and a connector knows at build time every
//!   pipeline it can send to.
//!
//! Building parses nothing more and opens nothing: exporters and processors exist (an
//! exporter's sending task may be spawned, it connects lazily), receivers are not started.
//! That is what `otelprof validate` runs.
//!
//! **Start** ([`Graph::start`]): receivers last, once everything they feed exists; one that
//! fails to start (its port is taken) stops the ones already started and fails the start,
//! naming it. Then the graph is ready ([`Readiness`], `/readyz`).
//!
//! **Shutdown** ([`RunningGraph::shutdown`]), all within `shutdown_timeout` from one deadline:
//!
//! 1. not ready any more, and `host.stop` is cancelled: receivers stop taking data (their
//!    senders get refusals and retry elsewhere); the graph waits for each receiver's task, so
//!    nothing enters the pipelines after this step;
//! 2. processors' `shutdown`, pipeline by pipeline and in each from first to last: a processor
//!    that holds data (the batch processor) hands it on to the next, which is still running,
//!    and whose own shutdown comes after. Pipelines that feed connectors go before the
//!    pipelines they feed, and a connector shuts down between the two, so what a feeding
//!    pipeline's batch hands on at its shutdown still passes through the fed pipelines;
//! 3. exporters' `shutdown(deadline)`, all at once (they are independent): each sends what is
//!    queued until the deadline, then drops and counts the rest.
//!
//! Whatever has not finished by the deadline is left (a receiver's task is aborted) and logged
//! by name.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    component::{
        ComponentError, ComponentId, Connector, Exporter, Host, Outputs, Processor, Receiver, ReceiverControl,
        ReceiverControls, Routes,
    },
    config::{downstream, PipelineId, ServiceConfig, TelemetrySettings},
    consumer::{ConsumeError, Consumer, Fanout},
    health::Generation,
    signal::Data,
    signal::Signal,
    telemetry_server::Readiness,
};

/// A receiver, built and wired, not started.
struct WiredReceiver {
    id: ComponentId,
    receiver: Box<dyn Receiver>,
    outputs: Outputs,
    switches: BTreeMap<Signal, Arc<Switch>>,
    /// Its config section as written, to tell at a reload whether it changed.
    section: serde_yaml::Value,
}

/// A started receiver.
struct RunningReceiver {
    id: ComponentId,
    handle: JoinHandle<()>,
    /// Stops this receiver alone (a child of `host.stop`).
    stop: CancellationToken,
    switches: BTreeMap<Signal, Arc<Switch>>,
    control: Option<Arc<dyn ReceiverControl>>,
    section: serde_yaml::Value,
}

/// A receiver's output for one signal: the first consumers of its pipelines, which a reload
/// re-points at the next graph's pipelines while the receiver keeps running.
struct Switch {
    next: RwLock<Arc<dyn Consumer>>,
}

impl Switch {
    fn new(next: Arc<dyn Consumer>) -> Arc<Self> {
        Arc::new(Self { next: RwLock::new(next) })
    }

    fn current(&self) -> Arc<dyn Consumer> {
        self.next.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, next: Arc<dyn Consumer>) {
        *self.next.write().unwrap_or_else(|e| e.into_inner()) = next;
    }
}

impl Consumer for Switch {
    fn consume(&self, data: Data) -> Result<(), ConsumeError> {
        self.current().consume(data)
    }
}

/// A pipeline's processors, first to last.
struct ProcessorChain {
    pipeline: PipelineId,
    /// The pipeline's place in the config.
    index: usize,
    processors: Vec<(ComponentId, Arc<dyn Processor>)>,
}

/// The connector of one id for one (exporting, receiving) signal pair.
struct SignalConnector {
    id: ComponentId,
    from: Signal,
    to: Signal,
    connector: Arc<dyn Connector>,
    /// The pipelines that export to it (their indexes in the config).
    feeders: Vec<usize>,
}

/// Pipeline indexes in an order where every pipeline comes after all those it feeds through
/// connectors (the config check refused cycles).
fn feeders_last(next: &[Vec<(usize, ComponentId)>]) -> Vec<usize> {
    fn visit(i: usize, next: &[Vec<(usize, ComponentId)>], seen: &mut [bool], out: &mut Vec<usize>) {
        if seen[i] {
            return;
        }
        seen[i] = true;
        for (j, _) in &next[i] {
            visit(*j, next, seen, out);
        }
        out.push(i);
    }
    let mut seen = vec![false; next.len()];
    let mut out = Vec::with_capacity(next.len());
    for i in 0..next.len() {
        visit(i, next, &mut seen, &mut out);
    }
    out
}

/// The exporter of one id for one signal.
struct SignalExporter {
    id: ComponentId,
    signal: Signal,
    exporter: Arc<dyn Exporter>,
    /// Its config section as written: an unchanged exporter is kept by a reload.
    section: serde_yaml::Value,
}

/// A built graph: everything wired, receivers not started.
pub struct Graph {
    host: Host,
    /// The components registered before this graph was built (the running graph's, when this
    /// one replaces it).
    before: Generation,
    readiness: Readiness,
    telemetry: TelemetrySettings,
    receivers: Vec<WiredReceiver>,
    /// Feeding pipelines before the pipelines they feed.
    chains: Vec<ProcessorChain>,
    connectors: Vec<SignalConnector>,
    exporters: Vec<SignalExporter>,
}

/// A started graph.
pub struct RunningGraph {
    host: Host,
    readiness: Readiness,
    telemetry: TelemetrySettings,
    receivers: Vec<RunningReceiver>,
    chains: Vec<ProcessorChain>,
    connectors: Vec<SignalConnector>,
    exporters: Vec<SignalExporter>,
}

/// What a shutdown left undone by its deadline: `receivers.otlp`, `processors.batch
/// (traces)`, `exporters.otlp (profiles)`. Empty when everything finished.
#[derive(Debug, Default, PartialEq)]
pub struct ShutdownReport {
    pub left: Vec<String>,
}

impl Graph {
    /// Builds every exporter and processor of `config` and wires the receivers to them; opens
    /// nothing and starts no receiver. Must run inside the tokio runtime (exporters spawn their
    /// sending tasks). An error names the component; the caller exits (parts built before it
    /// are not shut down).
    pub fn build(config: ServiceConfig, host: &Host) -> Result<Graph, ComponentError> {
        Self::build_with(config, host, &[])
    }

    /// [`Graph::build`] for a reload of `running`: its exporters whose config is unchanged are
    /// taken over (see [`RunningGraph::replace`]) instead of built anew.
    pub fn build_next(config: ServiceConfig, host: &Host, running: &RunningGraph) -> Result<Graph, ComponentError> {
        Self::build_with(config, host, &running.exporters)
    }

    fn build_with(config: ServiceConfig, host: &Host, reuse: &[SignalExporter]) -> Result<Graph, ComponentError> {
        let before = host.health.generation();
        let ServiceConfig {
            receivers,
            processors,
            exporters: exporter_configs,
            connectors: connector_configs,
            pipelines,
            telemetry,
            extensions: _,
            mut sections,
        } = config;

        // One exporter per (id, signal), in the order pipelines first use them.
        let mut exporters: Vec<SignalExporter> = Vec::new();
        for p in &pipelines {
            let signal = p.id.signal();
            for id in &p.exporters {
                if connector_configs.contains_key(id) || exporters.iter().any(|e| e.id == *id && e.signal == signal) {
                    continue;
                }
                let section = sections.get(&format!("exporters.{id}")).cloned().unwrap_or_default();
                // An exporter of the running graph with the same config keeps running, with
                // its queue and connection: nothing queued is lost by a reload.
                let kept = reuse.iter().find(|e| e.id == *id && e.signal == signal && e.section == section);
                let exporter = match kept {
                    Some(e) => e.exporter.clone(),
                    None => {
                        let config = exporter_configs.get(id).ok_or_else(|| missing("exporters", id))?;
                        config.build(signal, host).map_err(|e| named("exporters", id, signal, e))?
                    }
                };
                exporters.push(SignalExporter { id: id.clone(), signal, exporter, section });
            }
        }

        // Pipelines fed through a connector are built before those that feed them, so a
        // connector is built knowing the first consumers of the pipelines it feeds.
        let next = downstream(&pipelines, |c| connector_configs.get(c).map(|x| x.pairs));
        let order = feeders_last(&next);
        let mut firsts: Vec<Option<Arc<dyn Consumer>>> = vec![None; pipelines.len()];
        let mut chains: Vec<Option<ProcessorChain>> = (0..pipelines.len()).map(|_| None).collect();
        let mut connectors: Vec<SignalConnector> = Vec::new();
        for &i in &order {
            let p = &pipelines[i];
            let signal = p.id.signal();
            let mut to_exporters: Vec<Arc<dyn Consumer>> = Vec::new();
            for id in &p.exporters {
                if let Some(c) = connector_configs.get(id) {
                    for &(from, to) in c.pairs.iter().filter(|(from, _)| *from == signal) {
                        if let Some(k) = connectors.iter().position(|x| x.id == *id && x.from == from && x.to == to) {
                            connectors[k].feeders.push(i);
                            to_exporters.push(connectors[k].connector.clone());
                            continue;
                        }
                        let mut routes = Routes::new();
                        for (j, q) in pipelines.iter().enumerate() {
                            if q.id.signal() == to && q.receivers.contains(id) {
                                let first = firsts[j].clone().ok_or_else(|| {
                                    ComponentError::new(format!("connectors.{id}"), "the pipelines form a cycle")
                                })?;
                                routes.insert(q.id.clone(), first);
                            }
                        }
                        if routes.is_empty() {
                            continue;
                        }
                        let connector =
                            c.build.build(from, to, routes, host).map_err(|e| named("connectors", id, signal, e))?;
                        to_exporters.push(connector.clone());
                        connectors.push(SignalConnector { id: id.clone(), from, to, connector, feeders: vec![i] });
                    }
                } else if let Some(e) = exporters.iter().find(|e| e.id == *id && e.signal == signal) {
                    to_exporters.push(e.exporter.clone());
                }
            }
            let mut next = Fanout::build(to_exporters);
            let mut chain = Vec::with_capacity(p.processors.len());
            for id in p.processors.iter().rev() {
                let config = processors.get(id).ok_or_else(|| missing("processors", id))?;
                let processor = config.build(signal, next, host).map_err(|e| named("processors", id, signal, e))?;
                next = processor.clone();
                chain.push((id.clone(), processor));
            }
            chain.reverse();
            chains[i] = Some(ProcessorChain { pipeline: p.id.clone(), index: i, processors: chain });
            firsts[i] = Some(next);
        }
        // Shut down feeders first: the reverse of the build order.
        let chains: Vec<ProcessorChain> = order.iter().rev().filter_map(|&i| chains[i].take()).collect();

        // Each receiver: per signal, the first consumers of its pipelines of that signal.
        let mut wired = Vec::new();
        for (id, receiver) in receivers {
            let mut by_signal: BTreeMap<Signal, Vec<Arc<dyn Consumer>>> = BTreeMap::new();
            for (p, first) in pipelines.iter().zip(&firsts) {
                if let (true, Some(first)) = (p.receivers.contains(&id), first) {
                    by_signal.entry(p.id.signal()).or_default().push(first.clone());
                }
            }
            let mut outputs = Outputs::default();
            let mut switches = BTreeMap::new();
            for (signal, consumers) in by_signal {
                let switch = Switch::new(Fanout::build(consumers));
                outputs.insert(signal, switch.clone());
                switches.insert(signal, switch);
            }
            let section = sections.remove(&format!("receivers.{id}")).unwrap_or_default();
            wired.push(WiredReceiver { id, receiver, outputs, switches, section });
        }

        Ok(Graph {
            host: host.clone(),
            before,
            readiness: Readiness::default(),
            telemetry,
            receivers: wired,
            chains,
            connectors,
            exporters,
        })
    }

    /// Ready once started, not ready from the beginning of shutdown: for `/readyz`.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// `service.telemetry`: where the telemetry server listens (`None`: it is off), log
    /// settings.
    pub fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are to be served, if anywhere.
    pub fn telemetry_address(&self) -> Option<&str> {
        self.telemetry.metrics.address.as_deref()
    }

    /// Shuts down what was built without starting it (after `otelprof validate`): processors
    /// and exporters, as [`RunningGraph::shutdown`] does.
    pub async fn shutdown(self) -> ShutdownReport {
        let Graph { host, readiness, telemetry, receivers: _, chains, connectors, exporters, .. } = self;
        RunningGraph { host, readiness, telemetry, receivers: Vec::new(), chains, connectors, exporters }
            .shutdown()
            .await
    }

    /// Starts the receivers (everything else exists already). A receiver that fails to start
    /// fails the start: those already started are stopped and the graph is shut down.
    pub async fn start(self) -> Result<RunningGraph, ComponentError> {
        let Graph { host, readiness, telemetry, receivers, chains, connectors, exporters, .. } = self;
        let mut running =
            RunningGraph { host, readiness, telemetry, receivers: Vec::new(), chains, connectors, exporters };
        let started = match start_processors(&running.chains, &running.host).await {
            Ok(()) => start_connectors(&running.connectors, &running.host).await,
            Err(e) => Err(e),
        };
        if let Err(error) = started {
            tracing::error!("{error}; stopping what had started");
            running.shutdown().await;
            return Err(error);
        }
        for r in receivers {
            match start_receiver(r, &running.host).await {
                Ok(r) => running.receivers.push(r),
                Err(error) => {
                    tracing::error!("{error}; stopping what had started");
                    running.shutdown().await;
                    return Err(error);
                }
            }
        }
        running.readiness.set(true);
        Ok(running)
    }
}

/// Starts every pipeline's processors (one instance per pipeline); most have nothing to start.
async fn start_processors(chains: &[ProcessorChain], host: &Host) -> Result<(), ComponentError> {
    for chain in chains {
        for (id, p) in &chain.processors {
            p.start(host)
                .await
                .map_err(|e| ComponentError::new(format!("processors.{id}"), format!("cannot start: {}", e.message)))?;
        }
    }
    Ok(())
}

/// Starts every connector (one per id and signal pair); most have nothing to start.
async fn start_connectors(connectors: &[SignalConnector], host: &Host) -> Result<(), ComponentError> {
    for c in connectors {
        c.connector
            .start(host)
            .await
            .map_err(|e| ComponentError::new(format!("connectors.{}", c.id), format!("cannot start: {}", e.message)))?;
    }
    Ok(())
}

/// Starts one receiver with its own stop token.
async fn start_receiver(r: WiredReceiver, host: &Host) -> Result<RunningReceiver, ComponentError> {
    let control = r.receiver.control();
    let stop = host.stop.child_token();
    let own = Host { stop: stop.clone(), ..host.clone() };
    match r.receiver.start(r.outputs, &own).await {
        Ok(handle) => {
            if let Some(c) = &control {
                host.controls.insert(&r.id.to_string(), c.clone());
            }
            Ok(RunningReceiver { id: r.id, handle, stop, switches: r.switches, control, section: r.section })
        }
        Err(e) => Err(ComponentError::new(format!("receivers.{}", r.id), format!("cannot start: {}", e.message))),
    }
}

/// A running receiver's live reconfiguration, on a blocking thread (it waits for the
/// receiver's own thread to apply it); `None` when it has no control.
async fn reconfigure(
    control: Option<Arc<dyn ReceiverControl>>,
    section: &serde_yaml::Value,
    path: String,
) -> Option<Result<bool, crate::config::ConfigError>> {
    let control = control?;
    let section = section.clone();
    match tokio::task::spawn_blocking(move || control.reconfigure(&section, &path)).await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!("a receiver's reconfiguration panicked: {e}");
            None
        }
    }
}

/// Stops one receiver and waits for it until `deadline`; false when it had to be aborted.
async fn stop_receiver(r: RunningReceiver, deadline: Instant, controls: &ReceiverControls) -> bool {
    if let Some(c) = &r.control {
        controls.remove(&r.id.to_string(), c);
    }
    r.stop.cancel();
    let mut handle = r.handle;
    match tokio::time::timeout_at(deadline, &mut handle).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            if e.is_panic() {
                tracing::error!("receivers.{} panicked while stopping", r.id);
            }
            true
        }
        Err(_) => {
            handle.abort();
            false
        }
    }
}

/// What [`RunningGraph::replace`] did with each receiver.
#[derive(Debug, Default, PartialEq)]
pub struct ReplaceReport {
    /// Unchanged: kept running, now feeding the new pipelines.
    pub kept: Vec<String>,
    /// Changed in what it applies live (the profiler's frequency): kept running.
    pub reconfigured: Vec<String>,
    /// Changed otherwise: stopped, and the new one started.
    pub restarted: Vec<String>,
    pub stopped: Vec<String>,
    pub started: Vec<String>,
    /// Exporters (`otlp (traces)`) whose config is unchanged: kept running with their queues.
    pub kept_exporters: Vec<String>,
    /// Left unfinished by the old pipelines' shutdown deadline.
    pub left: Vec<String>,
}

/// A component the config check should have caught.
fn missing(section: &str, id: &ComponentId) -> ComponentError {
    ComponentError::new(format!("{section}.{id}"), "used in a pipeline but not in the config")
}

/// A build error, named as in the config, with the signal.
fn named(section: &str, id: &ComponentId, signal: Signal, e: ComponentError) -> ComponentError {
    ComponentError::new(format!("{section}.{id}"), format!("building for {signal}: {}", e.message))
}

impl RunningGraph {
    /// See [`Graph::readiness`].
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    pub fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }

    pub fn telemetry_address(&self) -> Option<&str> {
        self.telemetry.metrics.address.as_deref()
    }

    /// Swaps in `next` (built from a new config with the same [`Host`]) while this graph
    /// runs, so that data keeps flowing (docs/design/0009):
    ///
    /// 1. a receiver whose config section is unchanged keeps running, and so does one whose
    ///    [`ReceiverControl`] applies the change live; their outputs are re-pointed at the new
    ///    pipelines at once;
    /// 2. every other old receiver is stopped (its last data still goes through the old
    ///    pipelines), then the new receivers are started;
    /// 3. the old pipelines are shut down as at the agent's shutdown: batches handed on,
    ///    exporters' queues sent, within `shutdown_timeout`.
    ///
    /// A receiver that cannot start is the error, returned with the graph as it now runs
    /// (the caller swaps the last good config back in the same way).
    pub async fn replace(self, next: Graph) -> (RunningGraph, Result<ReplaceReport, ComponentError>) {
        let RunningGraph { host, readiness, telemetry: _, receivers: old, chains, connectors, exporters } = self;
        let Graph {
            host: _,
            before,
            readiness: _,
            telemetry,
            receivers: wired,
            chains: c2,
            connectors: k2,
            exporters: e2,
        } = next;
        host.health.retire(&before);
        let deadline = Instant::now() + host.shutdown_timeout;
        let controls = host.controls.clone();
        let mut report = ReplaceReport::default();
        let mut old: BTreeMap<ComponentId, RunningReceiver> = old.into_iter().map(|r| (r.id.clone(), r)).collect();
        let mut running = RunningGraph {
            host,
            readiness,
            telemetry,
            receivers: Vec::new(),
            chains: c2,
            connectors: k2,
            exporters: e2,
        };
        // The new pipelines' processors and connectors run before any receiver is pointed at
        // them.
        let mut error = match start_processors(&running.chains, &running.host).await {
            Ok(()) => start_connectors(&running.connectors, &running.host).await.err(),
            Err(e) => Some(e),
        };
        let mut to_start = Vec::new();
        for w in wired {
            let Some(mut o) = old.remove(&w.id) else {
                to_start.push(w);
                continue;
            };
            let same_signals = o.switches.keys().eq(w.switches.keys());
            let live = if !same_signals {
                None
            } else if o.section == w.section {
                Some(false)
            } else {
                match reconfigure(o.control.clone(), &w.section, format!("receivers.{}", w.id)).await {
                    Some(Ok(true)) => Some(true),
                    Some(Err(e)) => {
                        tracing::warn!("receivers.{}: not reconfigured live ({e}); restarting it", w.id);
                        None
                    }
                    _ => None,
                }
            };
            match live {
                Some(reconfigured) => {
                    for (signal, switch) in &o.switches {
                        if let Some(new) = w.switches.get(signal) {
                            switch.set(new.current());
                        }
                    }
                    let name = w.id.to_string();
                    if reconfigured {
                        report.reconfigured.push(name)
                    } else {
                        report.kept.push(name)
                    }
                    o.section = w.section;
                    running.receivers.push(o);
                }
                None => {
                    report.restarted.push(w.id.to_string());
                    if !stop_receiver(o, deadline, &controls).await {
                        report.left.push(format!("receivers.{}", w.id));
                    }
                    to_start.push(w);
                }
            }
        }
        for (id, o) in old {
            report.stopped.push(id.to_string());
            if !stop_receiver(o, deadline, &controls).await {
                report.left.push(format!("receivers.{id}"));
            }
        }
        for w in to_start {
            let id = w.id.to_string();
            match start_receiver(w, &running.host).await {
                Ok(r) => {
                    if !report.restarted.contains(&id) {
                        report.started.push(id);
                    }
                    running.receivers.push(r);
                }
                Err(e) => {
                    tracing::error!("{e}");
                    error.get_or_insert(e);
                }
            }
        }
        // Exporters taken over by the new graph keep running.
        let (kept, exporters): (Vec<SignalExporter>, Vec<SignalExporter>) = exporters
            .into_iter()
            .partition(|e| running.exporters.iter().any(|n| Arc::ptr_eq(&n.exporter, &e.exporter)));
        report.kept_exporters = kept.iter().map(|e| format!("{} ({})", e.id, e.signal)).collect();
        let mut left = ShutdownReport::default();
        drain(chains, connectors, exporters, deadline, &mut left).await;
        running.host.health.settle(&before);
        report.left.extend(left.left);
        match error {
            Some(e) => (running, Err(e)),
            None => (running, Ok(report)),
        }
    }

    /// Stops everything in the order of the module docs, within `host.shutdown_timeout`.
    pub async fn shutdown(self) -> ShutdownReport {
        let RunningGraph { host, readiness, receivers, chains, connectors, exporters, .. } = self;
        readiness.set(false);
        host.health.shutting_down();
        let deadline = Instant::now() + host.shutdown_timeout;
        let mut report = ShutdownReport::default();

        host.stop.cancel();
        for r in receivers {
            let id = r.id.clone();
            if !stop_receiver(r, deadline, &host.controls).await {
                report.left.push(format!("receivers.{id}"));
            }
        }
        drain(chains, connectors, exporters, deadline, &mut report).await;
        if !report.left.is_empty() {
            tracing::warn!(
                "shutdown_timeout ({:?}) reached; left unfinished: {}",
                host.shutdown_timeout,
                report.left.join(", ")
            );
        }
        report
    }
}

/// Steps 2 and 3 of the shutdown (module docs): processors and connectors in order, then the
/// exporters all at once, until `deadline`.
async fn drain(
    chains: Vec<ProcessorChain>,
    connectors: Vec<SignalConnector>,
    exporters: Vec<SignalExporter>,
    deadline: Instant,
    report: &mut ShutdownReport,
) {
    // Pipelines feeding connectors first; a connector once every pipeline feeding it is
    // done, before the pipelines it feeds.
    let mut done = vec![false; chains.iter().map(|c| c.index + 1).max().unwrap_or(0)];
    let mut connectors: Vec<Option<SignalConnector>> = connectors.into_iter().map(Some).collect();
    for chain in &chains {
        for (id, processor) in &chain.processors {
            if tokio::time::timeout_at(deadline, processor.shutdown()).await.is_err() {
                report.left.push(format!("processors.{id} ({})", chain.pipeline));
            }
        }
        done[chain.index] = true;
        for slot in connectors.iter_mut() {
            if slot.as_ref().is_some_and(|c| c.feeders.iter().all(|&f| done[f])) {
                let Some(c) = slot.take() else { continue };
                if tokio::time::timeout_at(deadline, c.connector.shutdown()).await.is_err() {
                    report.left.push(format!("connectors.{} ({} → {})", c.id, c.from, c.to));
                }
            }
        }
    }

    let mut flushing = tokio::task::JoinSet::new();
    for e in exporters {
        let name = format!("exporters.{} ({})", e.id, e.signal);
        flushing.spawn(async move {
            let done = tokio::time::timeout_at(deadline, e.exporter.shutdown(deadline)).await.is_ok();
            (name, done)
        });
    }
    let mut late = Vec::new();
    while let Some(joined) = flushing.join_next().await {
        match joined {
            Ok((_, true)) => {}
            Ok((name, false)) => late.push(name),
            Err(e) => tracing::error!("an exporter's shutdown failed: {e}"),
        }
    }
    late.sort();
    report.left.extend(late);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        config::parse,
        factories::testing::{spans, Lab},
    };

    fn build(lab: &Lab, yaml: &str, timeout: Duration) -> (Graph, Host) {
        let (config, _) = parse(yaml, &lab.factories()).unwrap();
        let host = Host::new(timeout);
        (Graph::build(config, &host).unwrap(), host)
    }

    const FAN: &str = "
receivers: {otlp/a: , otlp/b: }
exporters: {otlp/ok: , otlp/full: {refuse: true}, debug: }
service:
  pipelines:
    traces: {receivers: [otlp/a, otlp/b], exporters: [otlp/ok, otlp/full]}
    traces/solo: {receivers: [otlp/a], exporters: [debug]}
    logs: {receivers: [otlp/b], exporters: [debug]}
";

    #[tokio::test]
    async fn fan_in_and_fan_out_with_one_exporter_refusing() {
        let lab = Lab::default();
        let (graph, _) = build(&lab, FAN, Duration::from_secs(5));
        let running = graph.start().await.unwrap();
        let a = lab.outputs("otlp/a");
        let b = lab.outputs("otlp/b");
        assert_eq!(a.signals().collect::<Vec<_>>(), [Signal::Traces]);
        assert_eq!(b.signals().collect::<Vec<_>>(), [Signal::Traces, Signal::Logs]);
        for (n, out) in [(1, &a), (2, &b), (3, &a)] {
            let taken = out.get(Signal::Traces).unwrap().consume(spans(n));
            assert_eq!(taken, Ok(()), "one exporter refusing does not refuse the data");
        }
        assert_eq!(lab.received("otlp/ok", Signal::Traces), [1, 2, 3], "both receivers reach the pipeline");
        assert_eq!(lab.received("otlp/full", Signal::Traces), [] as [u64; 0]);
        assert_eq!(lab.received("debug", Signal::Traces), [1, 3], "only a's pipeline traces/solo");
        lab.refuse("otlp/ok");
        lab.refuse("debug");
        let all_refused = a.get(Signal::Traces).unwrap().consume(spans(4));
        assert!(all_refused.unwrap_err().is_retryable(), "refused when every exporter refused");
        b.get(Signal::Logs).unwrap().consume(crate::signal::Data::Logs(Default::default())).unwrap_err();
        assert_eq!(running.shutdown().await, ShutdownReport::default());
    }

    /// A reload keeps an unchanged receiver running and feeding the new pipelines, restarts a
    /// changed one, stops a removed one, and the old pipelines hand on what they hold.
    #[tokio::test]
    async fn replace_keeps_unchanged_receivers_and_drains_the_old_pipelines() {
        let lab = Lab::default();
        let (config, _) = parse(
            "
receivers: {otlp: , otlp/2: , otlp/gone: }
processors: {batch/hold: {hold: true}}
exporters: {otlp: , debug/same: }
service:
  pipelines:
    traces: {receivers: [otlp, otlp/2, otlp/gone], processors: [batch/hold], exporters: [otlp]}
    logs: {receivers: [otlp], exporters: [debug/same]}
",
            &lab.factories(),
        )
        .unwrap();
        let host = Host::new(Duration::from_secs(5));
        let running = Graph::build(config, &host).unwrap().start().await.unwrap();
        let kept = lab.outputs("otlp");
        kept.get(Signal::Traces).unwrap().consume(spans(5)).unwrap();
        assert_eq!(lab.received("otlp", Signal::Traces), [] as [u64; 0], "held by batch/hold");
        lab.clear_events();

        let (config, _) = parse(
            "
receivers: {otlp: , otlp/2: {listen: '127.0.0.1:0'}, otlp/new: }
exporters: {debug: , debug/same: }
service:
  pipelines:
    traces: {receivers: [otlp, otlp/2, otlp/new], exporters: [debug]}
    logs: {receivers: [otlp], exporters: [debug/same]}
",
            &lab.factories(),
        )
        .unwrap();
        let next = Graph::build_next(config, &host, &running).unwrap();
        let (running, report) = running.replace(next).await;
        let report = report.unwrap();
        assert_eq!(report.kept, ["otlp"]);
        assert_eq!(report.restarted, ["otlp/2"]);
        assert_eq!(report.stopped, ["otlp/gone"]);
        assert_eq!(report.started, ["otlp/new"]);
        assert!(report.left.is_empty(), "{report:?}");
        assert_eq!(report.kept_exporters, ["debug/same (logs)"], "an unchanged exporter keeps running");
        assert!(!lab.events().iter().any(|e| e.contains("debug/same") && e.contains("shutdown")), "{:?}", lab.events());
        let events = lab.events();
        for e in [
            "stopped receivers.otlp/2",
            "stopped receivers.otlp/gone",
            "start receivers.otlp/2",
            "start receivers.otlp/new",
        ] {
            assert!(events.iter().any(|x| x == e), "{e}: {events:?}");
        }
        assert!(
            !events.iter().any(|x| x == "stopped receivers.otlp"),
            "the unchanged receiver kept running: {events:?}"
        );
        assert_eq!(lab.received("otlp", Signal::Traces), [5], "what the old pipeline held was handed on at the swap");
        kept.get(Signal::Traces).unwrap().consume(spans(3)).unwrap();
        assert_eq!(lab.received("debug", Signal::Traces), [3], "the kept receiver feeds the new pipeline");
        assert!(readiness_of(&running));
        running.shutdown().await;
    }

    fn readiness_of(g: &RunningGraph) -> bool {
        g.readiness().is_ready()
    }

    #[tokio::test]
    async fn data_is_cloned_only_at_a_fan_out() {
        let lab = Lab::default();
        let (graph, _) = build(
            &lab,
            "
receivers: {otlp: }
processors: {batch: }
exporters: {otlp: , debug: }
service:
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [otlp]}
    metrics: {receivers: [otlp], exporters: [otlp, debug]}
",
            Duration::from_secs(5),
        );
        let running = graph.start().await.unwrap();
        let out = lab.outputs("otlp");
        let data = spans(7);
        let sent = lab.address_of(&data);
        out.get(Signal::Traces).unwrap().consume(data).unwrap();
        assert_eq!(lab.addresses("otlp", Signal::Traces), [sent], "one pipeline, one exporter: the same data, moved");
        let metrics = crate::factories::testing::points(2);
        let sent = lab.address_of(&metrics);
        out.get(Signal::Metrics).unwrap().consume(metrics).unwrap();
        let got = [lab.addresses("otlp", Signal::Metrics), lab.addresses("debug", Signal::Metrics)].concat();
        assert_eq!(got.iter().filter(|a| **a == sent).count(), 1, "two exporters: one gets the original, {got:?}");
        assert_eq!(got.len(), 2);
        running.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_stops_receivers_then_processors_in_order_then_exporters() {
        let lab = Lab::default();
        let (graph, host) = build(
            &lab,
            "
receivers: {otlp: , otlp/2: }
processors: {batch/hold: {hold: true}, batch/pass: }
exporters: {otlp: , debug: }
service:
  pipelines:
    traces: {receivers: [otlp, otlp/2], processors: [batch/hold, batch/pass], exporters: [otlp, debug]}
",
            Duration::from_secs(5),
        );
        assert_eq!(
            lab.events(),
            [
                "build exporters.otlp traces",
                "build exporters.debug traces",
                "build processors.batch/pass traces",
                "build processors.batch/hold traces"
            ]
        );
        let readiness = graph.readiness();
        assert!(!readiness.is_ready());
        let running = graph.start().await.unwrap();
        assert!(readiness.is_ready());
        lab.outputs("otlp").get(Signal::Traces).unwrap().consume(spans(5)).unwrap();
        assert_eq!(lab.received("otlp", Signal::Traces), [] as [u64; 0], "held by batch/hold");
        lab.clear_events();
        let report = running.shutdown().await;
        assert_eq!(report, ShutdownReport::default());
        assert!(!readiness.is_ready());
        assert!(host.stop.is_cancelled());
        let events = lab.events();
        let mut receivers = events[..2].to_vec();
        receivers.sort();
        assert_eq!(receivers, ["stopped receivers.otlp", "stopped receivers.otlp/2"], "{events:?}");
        assert_eq!(events[2..4], ["shutdown processors.batch/hold traces", "shutdown processors.batch/pass traces"]);
        let mut exporters = events[4..].to_vec();
        exporters.sort();
        assert_eq!(exporters, ["shutdown exporters.debug traces", "shutdown exporters.otlp traces"]);
        assert_eq!(lab.received("otlp", Signal::Traces), [5], "what the processor held reached the exporters");
        assert_eq!(lab.received("debug", Signal::Traces), [5]);
    }

    #[tokio::test]
    async fn a_connector_feeds_pipelines_built_before_it_and_shuts_down_between_them() {
        let lab = Lab::default();
        let (graph, _) = build(
            &lab,
            r#"
receivers: {otlp: }
processors: {batch/hold: {hold: true}, batch: }
exporters: {otlp: , debug: }
connectors:
  routing:
    default_pipelines: [traces/b]
    table: [{condition: 'attributes["tenant"] == "A"', pipelines: [traces/a]}]
service:
  pipelines:
    traces/in: {receivers: [otlp], processors: [batch/hold], exporters: [routing]}
    traces/a: {receivers: [routing], processors: [batch], exporters: [otlp]}
    traces/b: {receivers: [routing], exporters: [debug]}
"#,
            Duration::from_secs(5),
        );
        assert_eq!(
            lab.events(),
            [
                "build exporters.otlp traces",
                "build exporters.debug traces",
                "build processors.batch traces",
                "build processors.batch/hold traces"
            ],
            "the fed pipelines first"
        );
        let running = graph.start().await.unwrap();
        lab.outputs("otlp").get(Signal::Traces).unwrap().consume(spans(5)).unwrap();
        assert_eq!(lab.received("debug", Signal::Traces), [] as [u64; 0], "held by batch/hold");
        lab.clear_events();
        assert_eq!(running.shutdown().await, ShutdownReport::default());
        let events = lab.events();
        let at = |e: &str| events.iter().position(|x| x == e).unwrap_or_else(|| panic!("no {e}: {events:?}"));
        assert!(at("shutdown processors.batch/hold traces") < at("shutdown processors.batch traces"), "{events:?}");
        assert_eq!(
            lab.received("debug", Signal::Traces),
            [5],
            "no tenant: the default pipeline, after the feeder's flush"
        );
        assert_eq!(lab.received("otlp", Signal::Traces), [] as [u64; 0]);
    }

    #[tokio::test]
    async fn a_receiver_that_does_not_stop_is_left_at_the_deadline() {
        let lab = Lab::default();
        let (graph, _) = build(
            &lab,
            "
receivers: {otlp: {ignore_stop: true}, otlp/2: }
exporters: {debug: }
service: {pipelines: {logs: {receivers: [otlp, otlp/2], exporters: [debug]}}}
",
            Duration::from_millis(100),
        );
        let report = graph.start().await.unwrap().shutdown().await;
        assert_eq!(report.left, ["receivers.otlp"]);
        assert!(lab.events().contains(&"shutdown exporters.debug logs".to_string()), "the rest still shuts down");
    }

    #[tokio::test]
    async fn a_receiver_that_fails_to_start_stops_the_others() {
        let lab = Lab::default();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (graph, host) = build(
            &lab,
            &format!(
                "
receivers: {{otlp: , otlp/bad: {{listen: '{}'}}}}
exporters: {{debug: }}
service: {{pipelines: {{logs: {{receivers: [otlp, otlp/bad], exporters: [debug]}}}}}}
",
                taken.local_addr().unwrap()
            ),
            Duration::from_secs(5),
        );
        let readiness = graph.readiness();
        let e = graph.start().await.err().unwrap();
        assert_eq!(e.id, "receivers.otlp/bad");
        assert!(e.message.starts_with("cannot start: "), "{e}");
        assert!(!readiness.is_ready());
        assert!(host.stop.is_cancelled());
        let events = lab.events();
        assert!(events.contains(&"stopped receivers.otlp".to_string()), "{events:?}");
        assert!(events.contains(&"shutdown exporters.debug logs".to_string()), "{events:?}");
    }

    #[tokio::test]
    async fn the_real_batch_processor_hands_on_its_batch_at_shutdown() {
        let lab = Lab::default();
        let text = "
receivers: {otlp: }
processors: {batch: {timeout: 1h, send_batch_size: 100}, memory_limiter: {check_interval: 1s, limit_mib: 100000}}
exporters: {otlp: }
service: {pipelines: {traces: {receivers: [otlp], processors: [memory_limiter, batch], exporters: [otlp]}}}
";
        let (config, warnings) = parse(text, &lab.with_real_processors()).unwrap();
        assert_eq!(warnings, []);
        let host = Host::new(Duration::from_secs(5));
        let running = Graph::build(config, &host).unwrap().start().await.unwrap();
        for _ in 0..3 {
            lab.outputs("otlp").get(Signal::Traces).unwrap().consume(spans(5)).unwrap();
        }
        assert_eq!(lab.received("otlp", Signal::Traces), [] as [u64; 0], "batched, below size, before the timeout");
        assert_eq!(running.shutdown().await, ShutdownReport::default());
        assert_eq!(lab.received("otlp", Signal::Traces), [15], "one batch, handed on before the exporter stopped");
        let bad = text.replace("send_batch_size: 100", "send_batch_size: many");
        let e = parse(&bad, &lab.with_real_processors()).unwrap_err();
        assert_eq!(e.path, "processors.batch.send_batch_size");
        assert_eq!(e.position.map(|p| (p.line, p.column)), Some((3, 52)), "{e}");
    }

    #[tokio::test]
    async fn building_to_validate_opens_nothing() {
        let lab = Lab::default();
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let (graph, _) = build(
            &lab,
            &format!(
                "
receivers: {{otlp: {{listen: '{addr}'}}}}
exporters: {{otlp: }}
service: {{pipelines: {{traces: {{receivers: [otlp], exporters: [otlp]}}}}, telemetry: {{metrics: {{address: '127.0.0.1:1'}}}}}}
"
            ),
            Duration::from_secs(5),
        );
        assert_eq!(graph.telemetry_address(), Some("127.0.0.1:1"));
        assert_eq!(lab.events(), ["build exporters.otlp traces"], "built, not started");
        assert_eq!(graph.shutdown().await, ShutdownReport::default());
        assert_eq!(lab.events(), ["build exporters.otlp traces", "shutdown exporters.otlp traces"]);
        let rebound = std::net::TcpListener::bind(addr);
        assert!(rebound.is_ok(), "the receiver's address was never opened: {rebound:?}");
    }
}
