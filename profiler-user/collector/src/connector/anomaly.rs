//! The `anomaly` connector: the edge anomaly loop (`crate::receiver::anomaly`, issue #16) fed
//! by a metrics pipeline as well, for rules that watch gauges and sums received from
//! applications (`signal: metric`, chosen by an OTTL condition; docs/design/0010).
//!
//! ```yaml
//! connectors:
//!   anomaly:
//!     rules:
//!       - name: queue
//!         signal: metric
//!         condition: 'metric.name == "jobs.queue.depth" and attributes["queue"] == "email"'
//!         floor: 100            # in the metric's units: no floor or ceiling unless set
//!         min_stddev: 5
//!       - name: node-cpu        # the receiver form's signals work here too
//!         signal: node_cpu
//!     burst: { scope: target }  # a metric's processes: its process.pid, else its service.name
//! service:
//!   pipelines:
//!     metrics: { receivers: [otlp], exporters: [otlphttp, anomaly] }
//!     logs/anomaly: { receivers: [anomaly], exporters: [otlphttp] }
//! ```
//!
//! The config is the receiver's, plus `metric` rules. `consume` evaluates the conditions on the
//! request's gauge and sum points on the sender's thread and queues the selected points (a
//! bounded queue: when the loop falls behind, points are dropped and counted in
//! `otelprof_anomaly_points_dropped`, never blocking the pipeline); the loop task judges them
//! as they come and runs the `interval` tick for the other signals. Metrics end here: the
//! connector hands on only its events (log records).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    component::{BuildConnector, ComponentError, ComponentId, Connector, ConnectorFactory, Host, Routes},
    config::{ConfigError, PipelineId},
    consumer::{ConsumeError, Consumer, Fanout},
    receiver::anomaly::{
        config::AnomalyConfig,
        metric::{MetricPoint, MetricRules, Series},
        Loop,
    },
    signal::{Data, Signal},
    telemetry::{add, Value},
};

/// Points waiting for the loop at most; beyond, new points are dropped and counted.
const QUEUE: usize = 4096;

pub struct AnomalyConnectorFactory;

impl ConnectorFactory for AnomalyConnectorFactory {
    fn kind(&self) -> &'static str {
        "anomaly"
    }

    fn pairs(&self) -> &'static [(Signal, Signal)] {
        &[(Signal::Metrics, Signal::Logs)]
    }

    fn create(
        &self,
        id: &ComponentId,
        config: serde_yaml::Value,
        path: &str,
    ) -> Result<Box<dyn BuildConnector>, ConfigError> {
        let config = AnomalyConfig::parse(path, config)?;
        // Compiled here so a condition that does not compile is a config error at its key.
        MetricRules::compile(&config, path)?;
        Ok(Box::new(Build { id: id.to_string(), config, path: path.to_string() }))
    }
}

struct Build {
    id: String,
    config: AnomalyConfig,
    /// `connectors.anomaly`
    path: String,
}

impl BuildConnector for Build {
    fn check(&self, _from: Signal, _to: Signal, _receiving: &[PipelineId], _path: &str) -> Result<(), ConfigError> {
        Ok(())
    }

    fn build(
        &self,
        _from: Signal,
        _to: Signal,
        routes: Routes,
        host: &Host,
    ) -> Result<Arc<dyn Connector>, ComponentError> {
        let rules = MetricRules::compile(&self.config, &self.path).map_err(|e| ComponentError::new(&self.path, e))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let counter = |name: &str, help: &'static str| host.telemetry.counter(name, help, &[("connector", &self.id)]);
        Ok(Arc::new(AnomalyConnector {
            id: self.id.clone(),
            config: self.config.clone(),
            rules,
            series: Mutex::new(Series::default()),
            next: Fanout::build(routes.into_values().collect()),
            tx,
            rx: Mutex::new(Some(rx)),
            task: Mutex::new(None),
            dropped: counter(
                "otelprof_anomaly_points_dropped",
                "Metric points the anomaly loop had no room for (it fell behind): not judged.",
            ),
            errors: counter(
                "otelprof_anomaly_condition_errors",
                "Metric rule conditions that failed on a data point (the point is not taken).",
            ),
        }))
    }
}

struct AnomalyConnector {
    id: String,
    config: AnomalyConfig,
    rules: MetricRules,
    series: Mutex<Series>,
    /// The logs pipelines it feeds.
    next: Arc<dyn Consumer>,
    tx: mpsc::Sender<MetricPoint>,
    /// Until the loop starts.
    rx: Mutex<Option<mpsc::Receiver<MetricPoint>>>,
    /// The loop's stop token and task once started.
    task: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
    dropped: Value,
    errors: Value,
}

impl Consumer for AnomalyConnector {
    fn consume(&self, data: Data) -> Result<(), ConsumeError> {
        let Data::Metrics(mut request) = data else { return Ok(()) };
        let extracted = {
            let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
            self.rules.extract(&mut request, &mut series)
        };
        add(&self.errors, extracted.errors);
        for p in extracted.points {
            if self.tx.try_send(p).is_err() {
                add(&self.dropped, 1);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Connector for AnomalyConnector {
    async fn start(&self, host: &Host) -> Result<(), ComponentError> {
        let Some(rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Err(ComponentError::new(&self.id, "started twice"));
        };
        let stop = host.stop.child_token();
        let own = Host { stop: stop.clone(), ..host.clone() };
        let (looped, first) =
            Loop::new("connector", self.id.clone(), self.config.clone(), self.next.clone(), &own, Some(rx))?;
        let handle = tokio::spawn(looped.run(first));
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some((stop, handle));
        Ok(())
    }

    async fn shutdown(&self) {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((stop, handle)) = task {
            stop.cancel();
            if let Err(e) = handle.await {
                tracing::error!("connectors.{}: the anomaly loop ended badly: {e}", self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry_proto::tonic::{
        collector::metrics::v1::ExportMetricsServiceRequest,
        common::v1::{any_value, AnyValue, KeyValue},
        metrics::v1::{metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics},
        resource::v1::Resource,
    };

    use super::*;
    use crate::{
        component::{Burst, CpuByTarget, ReceiverControl, TargetCpu},
        config::parse,
        factories::testing::Lab,
        graph::Graph,
    };

    /// A profiler's control that records the bursts asked of it and knows two processes.
    #[derive(Default)]
    struct Profiler(Mutex<Vec<Burst>>);

    impl ReceiverControl for Profiler {
        fn reconfigure(&self, _: &serde_yaml::Value, _: &str) -> Result<bool, ConfigError> {
            Ok(false)
        }

        fn burst(&self, burst: Burst) -> Result<(), String> {
            self.0.lock().unwrap().push(burst);
            Ok(())
        }

        fn cpu_by_target(&self) -> Option<CpuByTarget> {
            let t = |pid, service: &str| TargetCpu {
                pid,
                name: "w".into(),
                service: Some(service.into()),
                container: None,
                cpu_ns: 0,
            };
            Some(CpuByTarget { covered_ns: 0, targets: vec![t(7, "jobs"), t(8, "jobs"), t(9, "web")] })
        }
    }

    fn rendered(host: &Host) -> String {
        let mut text = String::new();
        host.telemetry.render(&mut text);
        text
    }

    fn depth(service: &str, queue: &str, v: f64) -> Data {
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
            ..Default::default()
        };
        let point = NumberDataPoint {
            attributes: vec![kv("queue", queue)],
            time_unix_nano: 1,
            value: Some(number_data_point::Value::AsDouble(v)),
            ..Default::default()
        };
        Data::Metrics(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource { attributes: vec![kv("service.name", service)], ..Default::default() }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "queue.depth".into(),
                        data: Some(metric::Data::Gauge(Gauge { data_points: vec![point] })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    /// Through a real graph: points of the selected series go to the loop; a step in one
    /// series bursts that service's processes and sends one event down the logs pipeline;
    /// the other queue's series (not selected) and the steady series do nothing.
    #[tokio::test]
    async fn a_step_in_a_selected_gauge_bursts_its_service_and_sends_an_event() {
        let lab = Lab::default();
        let factories = lab.factories().with_connector(AnomalyConnectorFactory);
        let (config, _) = parse(
            r#"
receivers: {otlp: }
exporters: {debug: }
connectors:
  anomaly:
    rules:
      - { name: queue, signal: metric, condition: 'metric.name == "queue.depth" and attributes["queue"] == "email"', warmup: 5, min_stddev: 1 }
service:
  pipelines:
    metrics: {receivers: [otlp], exporters: [anomaly]}
    logs: {receivers: [anomaly], exporters: [debug]}
"#,
            &factories,
        )
        .unwrap();
        let host = Host::new(Duration::from_secs(5));
        let profiler = Arc::new(Profiler::default());
        host.controls.insert("profiling", profiler.clone());
        let running = Graph::build(config, &host).unwrap().start().await.unwrap();
        let metrics = lab.outputs("otlp").get(Signal::Metrics).cloned().unwrap();
        let wait_points = |n: f64| {
            let host = host.clone();
            async move {
                let name = "otelprof_anomaly_points_total";
                for _ in 0..200 {
                    let text = rendered(&host);
                    let got: f64 = text
                        .lines()
                        .filter(|l| l.starts_with(name))
                        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                        .sum();
                    if got >= n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("the loop did not judge {n} points:\n{}", rendered(&host));
            }
        };
        for i in 0..10 {
            metrics.consume(depth("jobs", "email", 10.0 + (i % 2) as f64)).unwrap();
            metrics.consume(depth("web", "sms", 500.0)).unwrap();
        }
        wait_points(10.0).await;
        assert!(profiler.0.lock().unwrap().is_empty(), "a steady series does not trigger");
        assert!(lab.received("debug", Signal::Logs).is_empty());
        // A step: 3 of the next points far above the baseline confirm it (3 of 10).
        for _ in 0..3 {
            metrics.consume(depth("jobs", "email", 200.0)).unwrap();
        }
        wait_points(13.0).await;
        let bursts = profiler.0.lock().unwrap().clone();
        assert_eq!(bursts.len(), 1, "{bursts:?}");
        assert_eq!(bursts[0].rule, "queue");
        assert_eq!(bursts[0].pids, Some(vec![7, 8]), "the processes of service jobs");
        assert_eq!(lab.received("debug", Signal::Logs), [1], "one event");
        assert!(rendered(&host).contains("otelprof_anomaly_triggers_total{connector=\"anomaly\""));
        running.shutdown().await;
    }

    /// A remote config that changes the rule restarts the loop (connectors are rebuilt on a
    /// reload); the restarted loop must still honour the cooldown of the trigger before it.
    #[tokio::test]
    async fn a_reload_resets_no_cooldown() {
        let lab = Lab::default();
        let factories = lab.factories().with_connector(AnomalyConnectorFactory);
        let yaml = |z: u32| {
            format!(
                r#"
receivers: {{otlp: }}
exporters: {{debug: }}
connectors:
  anomaly:
    rules:
      - {{ name: queue, signal: metric, condition: 'metric.name == "queue.depth"', warmup: 3, min_stddev: 1, z_threshold: {z}, confirm: {{k: 1, n: 1}} }}
    burst: {{ scope: node }}
service:
  pipelines:
    metrics: {{receivers: [otlp], exporters: [anomaly]}}
    logs: {{receivers: [anomaly], exporters: [debug]}}
"#
            )
        };
        let host = Host::new(Duration::from_secs(5));
        let profiler = Arc::new(Profiler::default());
        host.controls.insert("profiling", profiler.clone());
        let (config, _) = parse(&yaml(3), &factories).unwrap();
        let running = Graph::build(config, &host).unwrap().start().await.unwrap();
        let triggers = |outcome: &str| -> f64 {
            rendered(&host)
                .lines()
                .filter(|l| {
                    l.starts_with("otelprof_anomaly_triggers_total") && l.contains(&format!("outcome=\"{outcome}\""))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let feed = |values: &[f64]| {
            let metrics = lab.outputs("otlp").get(Signal::Metrics).cloned().unwrap();
            for v in values {
                metrics.consume(depth("jobs", "email", *v)).unwrap();
            }
        };
        let settle = |what: &'static str, outcome: &'static str, n: f64| {
            let triggers = &triggers;
            async move {
                for _ in 0..200 {
                    if triggers(outcome) >= n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("{what}: {outcome} never reached {n}");
            }
        };
        feed(&[10.0, 11.0, 10.0, 11.0, 200.0]);
        settle("the first step", "acted", 1.0).await;
        assert_eq!(profiler.0.lock().unwrap().len(), 1);

        let (config, _) = parse(&yaml(4), &factories).unwrap();
        let next = Graph::build_next(config, &host, &running).unwrap();
        let (running, report) = running.replace(next).await;
        report.unwrap();
        // The restarted loop warms up again, then sees another step within the 60 s cooldown.
        feed(&[10.0, 11.0, 10.0, 11.0, 200.0]);
        settle("the step after the reload", "cooldown", 1.0).await;
        assert_eq!(triggers("acted"), 1.0);
        assert_eq!(profiler.0.lock().unwrap().len(), 1, "no second burst");
        running.shutdown().await;
    }

    #[test]
    fn the_receiver_form_refuses_metric_rules_and_points_at_the_connector() {
        use crate::component::ReceiverFactory;
        let yaml = serde_yaml::from_str("rules: [{ name: m, signal: metric, condition: 'true' }]").unwrap();
        let e = crate::receiver::anomaly::AnomalyReceiverFactory
            .create(&ComponentId::parse("anomaly").unwrap(), yaml, "receivers.anomaly")
            .err()
            .expect("refused");
        assert_eq!(e.path, "receivers.anomaly.rules[0].signal");
        assert!(e.message.contains("connectors:"), "{e}");
    }
}
