//! The registry of component types: which `receivers:`, `processors:`, `exporters:` and
//! `connectors:` entries the config may have, and the factory that parses each one's config.
//!
//! [`Factories::builtin`] has everything this crate implements; the binary adds the types that
//! live elsewhere (the `profiling` receiver) with [`Factories::with_receiver`].

use crate::{
    component::{ConnectorFactory, ExporterFactory, ProcessorFactory, ReceiverFactory},
    extension::ExtensionFactory,
};

/// The component types a config may use.
#[derive(Default)]
pub struct Factories {
    pub receivers: Vec<Box<dyn ReceiverFactory>>,
    pub processors: Vec<Box<dyn ProcessorFactory>>,
    pub exporters: Vec<Box<dyn ExporterFactory>>,
    pub connectors: Vec<Box<dyn ConnectorFactory>>,
    pub extensions: Vec<Box<dyn ExtensionFactory>>,
}

impl Factories {
    /// No component types at all (tests build their own set).
    pub fn empty() -> Self {
        Self::default()
    }

    /// The types implemented in this crate.
    pub fn builtin() -> Self {
        Self {
            receivers: crate::receiver::factories(),
            processors: crate::processor::factories(),
            exporters: crate::exporter::factories(),
            connectors: crate::connector::factories(),
            extensions: crate::extension::factories(),
        }
    }

    pub fn with_receiver(mut self, factory: impl ReceiverFactory + 'static) -> Self {
        self.receivers.push(Box::new(factory));
        self
    }

    pub fn with_processor(mut self, factory: impl ProcessorFactory + 'static) -> Self {
        self.processors.push(Box::new(factory));
        self
    }

    pub fn with_exporter(mut self, factory: impl ExporterFactory + 'static) -> Self {
        self.exporters.push(Box::new(factory));
        self
    }

    pub fn with_connector(mut self, factory: impl ConnectorFactory + 'static) -> Self {
        self.connectors.push(Box::new(factory));
        self
    }

    pub fn with_extension(mut self, factory: impl ExtensionFactory + 'static) -> Self {
        self.extensions.push(Box::new(factory));
        self
    }

    /// The receiver factory of a type (`otlp`).
    pub fn receiver(&self, kind: &str) -> Option<&dyn ReceiverFactory> {
        self.receivers.iter().find(|f| f.kind() == kind).map(|f| &**f)
    }

    pub fn processor(&self, kind: &str) -> Option<&dyn ProcessorFactory> {
        self.processors.iter().find(|f| f.kind() == kind).map(|f| &**f)
    }

    /// The exporter factory of a type or one of its aliases (`otlp_grpc` for `otlp`).
    pub fn exporter(&self, kind: &str) -> Option<&dyn ExporterFactory> {
        self.exporters.iter().find(|f| f.kind() == kind || f.aliases().contains(&kind)).map(|f| &**f)
    }

    pub fn connector(&self, kind: &str) -> Option<&dyn ConnectorFactory> {
        self.connectors.iter().find(|f| f.kind() == kind).map(|f| &**f)
    }

    pub fn extension(&self, kind: &str) -> Option<&dyn ExtensionFactory> {
        self.extensions.iter().find(|f| f.kind() == kind).map(|f| &**f)
    }

    pub fn extension_kinds(&self) -> Vec<&'static str> {
        self.extensions.iter().map(|f| f.kind()).collect()
    }

    /// The known receiver types, for errors that list them.
    pub fn receiver_kinds(&self) -> Vec<&'static str> {
        self.receivers.iter().map(|f| f.kind()).collect()
    }

    pub fn processor_kinds(&self) -> Vec<&'static str> {
        self.processors.iter().map(|f| f.kind()).collect()
    }

    pub fn connector_kinds(&self) -> Vec<&'static str> {
        self.connectors.iter().map(|f| f.kind()).collect()
    }

    /// The known exporter types and their aliases.
    pub fn exporter_kinds(&self) -> Vec<&'static str> {
        self.exporters.iter().flat_map(|f| std::iter::once(f.kind()).chain(f.aliases().iter().copied())).collect()
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Stand-ins for the real component types, named like them (`otlp`, `profiling`, `batch`,
    //! `debug`) so that test configs read like real ones. They record what happens to them in
    //! a [`Lab`]: builds, starts, stops, shutdowns, and the data each exporter took.

    use std::{
        collections::{HashMap, HashSet},
        sync::{Arc, Mutex, MutexGuard},
    };

    use async_trait::async_trait;
    use opentelemetry_proto::tonic::{
        collector::{metrics::v1::ExportMetricsServiceRequest, trace::v1::ExportTraceServiceRequest},
        metrics::v1::{metric, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics},
        trace::v1::{ResourceSpans, ScopeSpans, Span},
    };
    use serde::Deserialize;
    use tokio::task::JoinHandle;

    use super::Factories;
    use crate::{
        component::*,
        config::{deserialize_at, ConfigError},
        consumer::{ConsumeError, Consumer},
        signal::{Data, Signal},
    };

    #[derive(Default)]
    struct State {
        events: Vec<String>,
        outputs: HashMap<String, Outputs>,
        /// Per (exporter id, signal): the items and the address of each request taken.
        received: HashMap<(String, Signal), Vec<(u64, usize)>>,
        refusing: HashSet<String>,
    }

    /// What the test components did.
    #[derive(Clone, Default)]
    pub struct Lab {
        state: Arc<Mutex<State>>,
    }

    impl Lab {
        fn state(&self) -> MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(|e| e.into_inner())
        }

        fn event(&self, e: String) {
            self.state().events.push(e);
        }

        /// Component types that report to this lab.
        pub fn factories(&self) -> Factories {
            Factories::empty()
                .with_receiver(OtlpReceiver(self.clone()))
                .with_receiver(Profiling)
                .with_processor(Batch(self.clone()))
                .with_exporter(TestExporters { lab: self.clone(), kind: "otlp", aliases: &["otlp_grpc"] })
                .with_exporter(TestExporters { lab: self.clone(), kind: "debug", aliases: &[] })
                .with_connector(crate::connector::routing::RoutingFactory)
                .with_extension(crate::extension::opamp::OpampFactory)
        }

        /// The stand-in receivers and exporters with this crate's real processors.
        pub fn with_real_processors(&self) -> Factories {
            let mut f = self.factories();
            f.processors = Factories::builtin().processors;
            f
        }

        /// The outputs a started receiver was given.
        pub fn outputs(&self, id: &str) -> Outputs {
            self.state().outputs.get(id).cloned().unwrap_or_default()
        }

        /// The items of each request an exporter took.
        pub fn received(&self, id: &str, signal: Signal) -> Vec<u64> {
            self.state()
                .received
                .get(&(id.to_string(), signal))
                .map(|v| v.iter().map(|r| r.0).collect())
                .unwrap_or_default()
        }

        /// Where each request an exporter took was in memory (see [`address_of`]).
        pub fn addresses(&self, id: &str, signal: Signal) -> Vec<usize> {
            self.state()
                .received
                .get(&(id.to_string(), signal))
                .map(|v| v.iter().map(|r| r.1).collect())
                .unwrap_or_default()
        }

        /// Where the data's list of resources is: a clone has its own, a move keeps it.
        pub fn address_of(&self, data: &Data) -> usize {
            match data {
                Data::Traces(r) => r.resource_spans.as_ptr() as usize,
                Data::Metrics(r) => r.resource_metrics.as_ptr() as usize,
                Data::Logs(r) => r.resource_logs.as_ptr() as usize,
                Data::Profiles(r) => r.resource_profiles.as_ptr() as usize,
            }
        }

        /// The exporter `id` refuses from now on.
        pub fn refuse(&self, id: &str) {
            self.state().refusing.insert(id.to_string());
        }

        pub fn events(&self) -> Vec<String> {
            self.state().events.clone()
        }

        pub fn clear_events(&self) {
            self.state().events.clear();
        }
    }

    /// A traces request with `n` spans.
    pub fn spans(n: usize) -> Data {
        Data::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![Span::default(); n], ..Default::default() }],
                ..Default::default()
            }],
        })
    }

    /// A metrics request with one gauge of `n` points.
    pub fn points(n: usize) -> Data {
        let gauge = Gauge { data_points: vec![NumberDataPoint::default(); n] };
        Data::Metrics(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric { data: Some(metric::Data::Gauge(gauge)), ..Default::default() }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    /// `otlp` receiver stand-in: traces, metrics, logs.
    struct OtlpReceiver(Lab);

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct ReceiverConfig {
        /// Bound at start (to show what is opened when).
        listen: Option<String>,
        /// Its task does not end when asked.
        ignore_stop: bool,
        protocols: Option<Protocols>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Protocols {
        grpc: Option<Protocol>,
        http: Option<Protocol>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Protocol {
        #[allow(dead_code)]
        endpoint: String,
    }

    struct StartedReceiver {
        lab: Lab,
        id: ComponentId,
        config: ReceiverConfig,
    }

    impl ReceiverFactory for OtlpReceiver {
        fn kind(&self) -> &'static str {
            "otlp"
        }

        fn signals(&self) -> &'static [Signal] {
            &[Signal::Traces, Signal::Metrics, Signal::Logs]
        }

        fn create(
            &self,
            id: &ComponentId,
            config: serde_yaml::Value,
            path: &str,
        ) -> Result<Box<dyn Receiver>, ConfigError> {
            let config: ReceiverConfig = deserialize_at(path, config)?;
            if let Some(p) = &config.protocols {
                if p.grpc.is_none() && p.http.is_none() {
                    return Err(ConfigError::new(format!("{path}.protocols"), "enable grpc, http or both"));
                }
            }
            Ok(Box::new(StartedReceiver { lab: self.0.clone(), id: id.clone(), config }))
        }
    }

    #[async_trait]
    impl Receiver for StartedReceiver {
        async fn start(self: Box<Self>, outputs: Outputs, host: &Host) -> Result<JoinHandle<()>, ComponentError> {
            let listener = match &self.config.listen {
                Some(addr) => Some(std::net::TcpListener::bind(addr).map_err(|e| ComponentError::new(&self.id, e))?),
                None => None,
            };
            let name = format!("receivers.{}", self.id);
            self.lab.event(format!("start {name}"));
            self.lab.state().outputs.insert(self.id.to_string(), outputs);
            let stop = host.stop.clone();
            let lab = self.lab.clone();
            let ignore = self.config.ignore_stop;
            Ok(tokio::spawn(async move {
                let _open = listener;
                if ignore {
                    std::future::pending::<()>().await;
                }
                stop.cancelled().await;
                lab.event(format!("stopped {name}"));
            }))
        }
    }

    /// `profiling` receiver stand-in: profiles only.
    struct Profiling;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ProfilingConfig {
        #[allow(dead_code)]
        #[serde(default)]
        frequency: u32,
    }

    struct NeverStarted;

    #[async_trait]
    impl Receiver for NeverStarted {
        async fn start(self: Box<Self>, _outputs: Outputs, _host: &Host) -> Result<JoinHandle<()>, ComponentError> {
            Ok(tokio::spawn(async {}))
        }
    }

    impl ReceiverFactory for Profiling {
        fn kind(&self) -> &'static str {
            "profiling"
        }

        fn signals(&self) -> &'static [Signal] {
            &[Signal::Profiles]
        }

        fn create(
            &self,
            _id: &ComponentId,
            config: serde_yaml::Value,
            path: &str,
        ) -> Result<Box<dyn Receiver>, ConfigError> {
            let _: ProfilingConfig = deserialize_at(path, config)?;
            Ok(Box::new(NeverStarted))
        }
    }

    /// `batch` processor stand-in: passes data on, or holds it until shutdown (`hold: true`).
    struct Batch(Lab);

    #[derive(Deserialize, Default, Clone)]
    #[serde(deny_unknown_fields, default)]
    struct BatchConfig {
        hold: bool,
    }

    struct BatchBuilder {
        lab: Lab,
        id: ComponentId,
        config: BatchConfig,
    }

    struct BatchProcessor {
        lab: Lab,
        name: String,
        hold: bool,
        held: Mutex<Vec<Data>>,
        next: Arc<dyn Consumer>,
    }

    impl ProcessorFactory for Batch {
        fn kind(&self) -> &'static str {
            "batch"
        }

        fn signals(&self) -> &'static [Signal] {
            &Signal::ALL
        }

        fn create(
            &self,
            id: &ComponentId,
            config: serde_yaml::Value,
            path: &str,
        ) -> Result<Box<dyn BuildProcessor>, ConfigError> {
            Ok(Box::new(BatchBuilder { lab: self.0.clone(), id: id.clone(), config: deserialize_at(path, config)? }))
        }
    }

    impl BuildProcessor for BatchBuilder {
        fn build(
            &self,
            signal: Signal,
            next: Arc<dyn Consumer>,
            _host: &Host,
        ) -> Result<Arc<dyn Processor>, ComponentError> {
            let name = format!("processors.{} {signal}", self.id);
            self.lab.event(format!("build {name}"));
            Ok(Arc::new(BatchProcessor {
                lab: self.lab.clone(),
                name,
                hold: self.config.hold,
                held: Mutex::default(),
                next,
            }))
        }
    }

    impl Consumer for BatchProcessor {
        fn consume(&self, data: Data) -> Result<(), ConsumeError> {
            if self.hold {
                self.held.lock().unwrap_or_else(|e| e.into_inner()).push(data);
                return Ok(());
            }
            self.next.consume(data)
        }
    }

    #[async_trait]
    impl Processor for BatchProcessor {
        async fn shutdown(&self) {
            self.lab.event(format!("shutdown {}", self.name));
            let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()));
            for d in held {
                let _ = self.next.consume(d);
            }
        }
    }

    /// `otlp` and `debug` exporter stand-ins: take data (or refuse it, `refuse: true`).
    struct TestExporters {
        lab: Lab,
        kind: &'static str,
        aliases: &'static [&'static str],
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct ExporterConfig {
        refuse: bool,
    }

    struct ExporterBuilder {
        lab: Lab,
        id: ComponentId,
        refuse: bool,
    }

    struct TestExporter {
        lab: Lab,
        id: String,
        signal: Signal,
        refuse: bool,
    }

    impl ExporterFactory for TestExporters {
        fn kind(&self) -> &'static str {
            self.kind
        }

        fn aliases(&self) -> &'static [&'static str] {
            self.aliases
        }

        fn signals(&self) -> &'static [Signal] {
            &Signal::ALL
        }

        fn create(
            &self,
            id: &ComponentId,
            config: serde_yaml::Value,
            path: &str,
        ) -> Result<Box<dyn BuildExporter>, ConfigError> {
            let c: ExporterConfig = deserialize_at(path, config)?;
            Ok(Box::new(ExporterBuilder { lab: self.lab.clone(), id: id.clone(), refuse: c.refuse }))
        }
    }

    impl BuildExporter for ExporterBuilder {
        fn build(&self, signal: Signal, _host: &Host) -> Result<Arc<dyn Exporter>, ComponentError> {
            self.lab.event(format!("build exporters.{} {signal}", self.id));
            Ok(Arc::new(TestExporter { lab: self.lab.clone(), id: self.id.to_string(), signal, refuse: self.refuse }))
        }
    }

    impl Consumer for TestExporter {
        fn consume(&self, data: Data) -> Result<(), ConsumeError> {
            let mut state = self.lab.state();
            if self.refuse || state.refusing.contains(&self.id) {
                return Err(ConsumeError::refused("queue full"));
            }
            let taken = (data.items(), self.lab.address_of(&data));
            state.received.entry((self.id.clone(), self.signal)).or_default().push(taken);
            Ok(())
        }
    }

    #[async_trait]
    impl Exporter for TestExporter {
        async fn shutdown(&self, _deadline: tokio::time::Instant) {
            self.lab.event(format!("shutdown exporters.{} {}", self.id, self.signal));
        }
    }
}
