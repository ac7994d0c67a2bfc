//! `otelprof agent` and `otelprof validate`: the embedded collector (docs/design/0007) with the
//! profiler as its `profiling` receiver, configured in the OpenTelemetry Collector's shape.
//!
//! The binary only wires: the collector's built-in component types plus `profiling`, the
//! config checked into a graph, the telemetry server with the profiler's own counters, and the
//! shutdown on SIGTERM / SIGINT.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::{Context, Result};
use otelprof_collector::{
    component::Host,
    config::{self, ServiceConfig},
    extension::opamp::{
        supervisor::{startup_config, Managed},
        OpampConfig,
    },
    factories::Factories,
    graph::Graph,
    telemetry_server::{Endpoints, TelemetryServer},
};
use otelprof_profiling::{metrics::ProfilerMetrics, ProfilingFactory};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// The config used without `--config`: no backend needed (see the file's comments).
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");

/// The component types an agent config may use.
fn factories(metrics: &Arc<ProfilerMetrics>) -> Factories {
    Factories::builtin().with_receiver(ProfilingFactory::new(metrics.clone()))
}

/// Reads and checks a config, logging its warnings; `Err` is the message for exit status 2.
fn load(paths: &[PathBuf], factories: &Factories) -> Result<ServiceConfig, String> {
    load_text(paths, factories).map(|(_, cfg)| cfg)
}

/// [`load`], with the config's text: one file as written, several merged (later over
/// earlier, as the Collector merges repeated `--config`), none the built-in config.
fn load_text(paths: &[PathBuf], factories: &Factories) -> Result<(String, ServiceConfig), String> {
    let read = |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let text = match paths {
        [] => DEFAULT_CONFIG.to_string(),
        [one] => read(one)?,
        many => {
            let files =
                many.iter().map(|p| Ok((p.display().to_string(), read(p)?))).collect::<Result<Vec<_>, String>>()?;
            config::merge_files(&files).map_err(|e| e.to_string())?
        }
    };
    let (cfg, warnings) = config::parse(&text, factories).map_err(|e| e.to_string())?;
    for w in warnings {
        tracing::warn!("config: {w}");
    }
    Ok((text, cfg))
}

/// The agent under OpAMP control: what the supervisor needs, and the config it starts with.
struct Control {
    managed: Managed,
    text: String,
    hash: Option<Vec<u8>>,
}

/// With `extensions: opamp` listed: the supervisor, and the config to start with (the last
/// good remote config when one was persisted and still applies, else the local file's).
fn control(
    text: String,
    mut cfg: ServiceConfig,
    metrics: &Arc<ProfilerMetrics>,
) -> Result<(ServiceConfig, Option<Control>), String> {
    let Some(opamp) = cfg.extensions.values().find_map(|e| e.downcast_ref::<OpampConfig>()).cloned() else {
        return Ok((cfg, None));
    };
    let mut running = text.clone();
    let mut hash = None;
    if let Some((merged, h)) = startup_config(&text, &opamp, &factories(metrics)) {
        let (c, _) = config::parse(&merged, &factories(metrics)).map_err(|e| e.to_string())?;
        cfg = c;
        running = merged;
        hash = Some(h);
    }
    let host = Host::new(cfg.telemetry.shutdown_timeout);
    // What `/metrics` serves: the collector's series, then the profiler's.
    let (telemetry, profiler) = (host.telemetry.clone(), metrics.clone());
    let own_metrics = Arc::new(move || {
        let mut out = String::new();
        telemetry.render(&mut out);
        profiler.render_into(&mut out);
        out
    });
    let managed = Managed { local: text, factories: factories(metrics), host, opamp, own_metrics };
    Ok((cfg, Some(Control { managed, text: running, hash })))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")
}

/// `otelprof validate --config FILE`: the config parsed, every component's settings checked
/// and the graph built, nothing started. Exit 0, or 2 with the error.
pub fn validate(paths: &[PathBuf]) -> Result<ExitCode> {
    let metrics = Arc::new(ProfilerMetrics::default());
    let cfg = match load(paths, &factories(&metrics)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("otelprof: config error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let pipelines = cfg.pipelines.len();
    // Exporters are built inside a runtime (they own sending tasks), and shut down unused.
    let built = runtime()?.block_on(async move {
        let host = Host::new(cfg.telemetry.shutdown_timeout);
        let graph = Graph::build(cfg, &host)?;
        graph.shutdown().await;
        Ok::<_, otelprof_collector::component::ComponentError>(())
    });
    match built {
        Ok(()) => {
            let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            eprintln!("otelprof: {} is valid ({pipelines} pipelines)", names.join(" + "));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("otelprof: config error: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// `otelprof agent [--config FILE]`: runs until SIGTERM or SIGINT. A bad config exits with 2
/// and names the key and its position.
pub fn run(paths: &[PathBuf]) -> Result<ExitCode> {
    let metrics = Arc::new(ProfilerMetrics::default());
    let loaded = load_text(paths, &factories(&metrics)).and_then(|(text, cfg)| control(text, cfg, &metrics));
    let (cfg, control) = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("otelprof: config error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if paths.is_empty() {
        tracing::info!(
            "no --config: running the built-in config (otelprof agent --print-default-config shows it): \
             profiles and the OTLP sent to localhost:4317/4318 go to ./otelprof-data.jsonl, with a summary line per batch"
        );
    }
    runtime()?.block_on(agent(cfg, metrics, control))
}

async fn agent(cfg: ServiceConfig, metrics: Arc<ProfilerMetrics>, control: Option<Control>) -> Result<ExitCode> {
    // Under OpAMP, the supervisor's host: the graphs it swaps in share its health and metrics.
    let host = match &control {
        Some(c) => c.managed.host.clone(),
        None => Host::new(cfg.telemetry.shutdown_timeout),
    };
    let log_interval = cfg.telemetry.log_interval;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let graph = Graph::build(cfg, &host)?;
    let server = match graph.telemetry_address() {
        Some(addr) => {
            let server = TelemetryServer::bind(addr).await?;
            let endpoints = Endpoints::new(&host, graph.readiness()).with_source(metrics.clone());
            tracing::info!("own metrics on http://{}/metrics (and /healthz, /readyz)", server.local_addr()?);
            Some(server.serve(endpoints))
        }
        None => None,
    };
    let running = graph.start().await?;
    let stop_control = CancellationToken::new();
    // Under OpAMP the supervisor owns the running graph (it swaps configs in) until the end.
    let owner = match control {
        Some(c) => {
            tracing::info!("opamp: managed by an OpAMP server (extensions.opamp)");
            Err(tokio::spawn(c.managed.run(running, c.text, c.hash, stop_control.clone())))
        }
        None => Ok(running),
    };
    let mut log_tick = tokio::time::interval_at(tokio::time::Instant::now() + log_interval, log_interval);
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = log_tick.tick() => tracing::info!("{}", summary(&host, &metrics)),
        }
    }
    let running = match owner {
        Ok(running) => running,
        Err(supervisor) => {
            stop_control.cancel();
            supervisor.await.context("the OpAMP supervisor ended abnormally")?
        }
    };
    tracing::info!("stopping: receivers, then processors, then exporters, within {:?}", host.shutdown_timeout);
    let report = running.shutdown().await;
    if !report.left.is_empty() {
        tracing::warn!("shutdown deadline passed with work left in: {}", report.left.join(", "));
    }
    if let Some(server) = server {
        server.stop().await;
    }
    tracing::info!("stopped: {}", summary(&host, &metrics));
    // A component that failed (a panicked reporting thread) is the agent's error.
    Ok(match host.health.check() {
        Ok(()) => ExitCode::SUCCESS,
        Err(problems) => {
            for p in problems {
                tracing::error!("{p}");
            }
            ExitCode::from(1)
        }
    })
}

/// The periodic log line: the profiler's counters and the collector's totals.
fn summary(host: &Host, metrics: &ProfilerMetrics) -> String {
    format!("profiling: {}; collector: {}", metrics.log_line(), host.telemetry.summary())
}

#[cfg(test)]
mod tests {
    //! The configs in the documentation are checked by the same parser and component types as
    //! the binary's, so a renamed key or a changed default cannot leave them behind.

    use super::*;
    use otelprof_collector::signal::Signal;

    /// The first ```yaml block of the README's `otelprof agent` section.
    fn readme_example() -> String {
        let readme = include_str!("../../../../README.md");
        let section =
            readme.split("\n## `otelprof agent`\n").nth(1).expect("the README has an `otelprof agent` section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let block = section.split("```yaml\n").nth(1).expect("the agent section has a yaml block");
        block.split("\n```").next().expect("the yaml block ends").to_string()
    }

    /// The kustomize base's files: the agent config (its ConfigMap's `agent.yaml`, made by the
    /// kustomization's `configMapGenerator`), the kustomization and the DaemonSet.
    const BASE_CONFIG: &str = include_str!("../../../../deploy/kubernetes/base/agent.yaml");
    const BASE_KUSTOMIZATION: &str = include_str!("../../../../deploy/kubernetes/base/kustomization.yaml");
    const BASE_DAEMONSET: &str = include_str!("../../../../deploy/kubernetes/base/daemonset.yaml");

    /// Parses `text` as the binary does; warnings other than unset environment variables
    /// (a component declared and used by no pipeline) fail too.
    fn check(what: &str, text: &str) -> ServiceConfig {
        let metrics = Arc::new(ProfilerMetrics::default());
        let (cfg, warnings) = config::parse(text, &factories(&metrics)).unwrap_or_else(|e| panic!("{what}: {e}"));
        let warnings: Vec<String> =
            warnings.iter().filter(|w| !w.message.contains("is not set")).map(|w| w.to_string()).collect();
        assert!(warnings.is_empty(), "{what}: {warnings:?}");
        cfg
    }

    fn signals(cfg: &ServiceConfig) -> Vec<Signal> {
        cfg.pipelines.iter().map(|p| p.id.signal()).collect()
    }

    #[test]
    fn the_readme_example_is_a_valid_config() {
        let cfg = check("README", &readme_example());
        let all = signals(&cfg);
        for s in Signal::ALL {
            assert!(all.contains(&s), "README: a {s} pipeline");
        }
        let kinds = |ids: Vec<String>| ids.iter().map(|id| id.split('/').next().unwrap_or("").to_string()).collect();
        let receivers: Vec<String> = kinds(cfg.receivers.keys().map(|id| id.to_string()).collect());
        let exporters: Vec<String> = kinds(cfg.exporters.keys().map(|id| id.to_string()).collect());
        let processors: Vec<String> = kinds(cfg.processors.keys().map(|id| id.to_string()).collect());
        for want in ["profiling", "otlp"] {
            assert!(receivers.iter().any(|r| r == want), "README: receiver {want}: {receivers:?}");
        }
        for want in ["otlp", "otlphttp"] {
            assert!(exporters.iter().any(|e| e == want), "README: exporter {want}: {exporters:?}");
        }
        for want in ["memory_limiter", "resourcedetection", "batch"] {
            assert!(processors.iter().any(|p| p == want), "README: processor {want}: {processors:?}");
        }
        assert_eq!(cfg.telemetry.metrics.address.as_deref(), Some("0.0.0.0:8888"));
    }

    /// Every complete config (a ```yaml block with `service:`) of the README's OTTL section.
    #[test]
    fn the_readme_routing_example_is_a_valid_config() {
        let readme = include_str!("../../../../README.md");
        let section =
            readme.split("\n### Transforming, filtering and routing with OTTL").nth(1).expect("the OTTL section");
        let section = section.split("\n### ").next().unwrap_or(section);
        let configs: Vec<&str> = section
            .split("```yaml\n")
            .skip(1)
            .filter_map(|b| b.split("\n```").next())
            .filter(|b| b.contains("\nservice:"))
            .collect();
        assert_eq!(configs.len(), 1, "one complete config in the OTTL section");
        let cfg = check("README routing", configs[0]);
        assert_eq!(cfg.connectors.keys().map(|c| c.to_string()).collect::<Vec<_>>(), ["routing"]);
        assert_eq!(cfg.pipelines.len(), 4);
    }

    /// The complete config of the README's OpAMP section, with its two key files made here.
    #[test]
    fn the_readme_opamp_example_is_a_valid_config() {
        let readme = include_str!("../../../../README.md");
        let section = readme.split("\n### Remote control with OpAMP").nth(1).expect("the OpAMP section");
        let section = section.split("\n### ").next().unwrap_or(section);
        let block = section.split("```yaml\n").nth(1).and_then(|b| b.split("\n```").next()).expect("a yaml block");
        let dir = std::env::temp_dir().join(format!("otelprof-readme-opamp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, key) = (dir.join("ca.pem"), dir.join("k.pub"));
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n").unwrap();
        // RFC 8032's first test vector's public key (32 raw bytes).
        let rfc8032: Vec<u8> = (0..32)
            .map(|i| {
                u8::from_str_radix(
                    &"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"[2 * i..2 * i + 2],
                    16,
                )
                .unwrap()
            })
            .collect();
        std::fs::write(&key, rfc8032).unwrap();
        let text = block
            .replace("/etc/otelprof/opamp-ca.pem", &ca.display().to_string())
            .replace("/etc/otelprof/opamp-ed25519.pub", &key.display().to_string());
        let cfg = check("README OpAMP", &text);
        let opamp = cfg.extensions.values().find_map(|e| e.downcast_ref::<OpampConfig>()).expect("the opamp extension");
        assert!(opamp.remote_config.enabled && opamp.remote_config.signature.is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The `opamp` overlay: its opamp.yaml merged over the base's agent.yaml (as the patched
    /// DaemonSet's two `--config` flags do) is a valid config with the extension listed.
    #[test]
    fn the_opamp_overlay_merges_into_a_valid_managed_config() {
        let overlay = include_str!("../../../../deploy/kubernetes/overlays/opamp/opamp.yaml");
        let patch = include_str!("../../../../deploy/kubernetes/overlays/opamp/daemonset-opamp.yaml");
        for file in ["/etc/otelprof/agent.yaml", "/etc/otelprof/opamp.yaml"] {
            assert!(patch.contains(&format!("\"--config\", \"{file}\"")), "the DaemonSet passes {file}");
        }
        let merged =
            config::merge_files(&[("agent.yaml".into(), BASE_CONFIG.into()), ("opamp.yaml".into(), overlay.into())])
                .unwrap()
                .replace("${env:OPAMP_ENDPOINT}", "ws://opamp-server.observability:4320/v1/opamp");
        let cfg = check("base + overlays/opamp", &merged);
        let opamp = cfg.extensions.values().find_map(|e| e.downcast_ref::<OpampConfig>()).expect("the opamp extension");
        assert!(opamp.remote_config.enabled);
        assert!(opamp.storage.directory.starts_with("/var/lib/otelprof"), "on the overlay's hostPath");
        assert_eq!(cfg.pipelines.len(), 4, "the base's pipelines are kept");
    }

    #[test]
    fn the_daemonset_config_is_valid_and_serves_its_probes() {
        let cfg = check("deploy/kubernetes/base/agent.yaml", BASE_CONFIG);
        let mut all = signals(&cfg);
        all.sort_by_key(|s| s.name());
        let mut want = Signal::ALL.to_vec();
        want.sort_by_key(|s| s.name());
        assert_eq!(all, want, "one pipeline per signal");
        let profiles = cfg.pipelines.iter().find(|p| p.id.signal() == Signal::Profiles).expect("a profiles pipeline");
        assert_eq!(profiles.receivers.iter().map(|r| r.to_string()).collect::<Vec<_>>(), ["profiling"]);
        for p in cfg.pipelines.iter().filter(|p| p.id.signal() != Signal::Profiles) {
            assert_eq!(p.receivers.iter().map(|r| r.to_string()).collect::<Vec<_>>(), ["otlp"], "{}", p.id);
        }
        // Every signal gets the pod's metadata; for OTLP it is found by the sender's address,
        // which is gone after `batch` (the request's client, as in the Collector).
        for p in &cfg.pipelines {
            let processors: Vec<String> = p.processors.iter().map(|r| r.to_string()).collect();
            let k8s = processors.iter().position(|x| x == "k8sattributes");
            assert!(k8s.is_some(), "{}: {processors:?}", p.id);
            if let Some(batch) = processors.iter().position(|x| x == "batch") {
                assert!(k8s < Some(batch), "{}: k8sattributes before batch: {processors:?}", p.id);
            }
        }
        // The probes and the Prometheus annotation use the port the telemetry server listens on.
        let manifest = BASE_DAEMONSET;
        let address = cfg.telemetry.metrics.address.expect("the telemetry server is on");
        let port = address.rsplit(':').next().unwrap_or_default();
        assert!(manifest.contains(&format!("containerPort: {port}")), "{address}");
        assert!(manifest.contains(&format!("prometheus.io/port: \"{port}\"")), "{address}");
        for port in ["4317", "4318"] {
            assert!(manifest.contains(&format!("containerPort: {port}")), "the otlp receiver's port {port}");
        }
    }

    /// The DaemonSet runs the config above: the kustomization makes the ConfigMap from
    /// agent.yaml, the DaemonSet mounts it where `--config` points; and the only directory the
    /// config writes (the unwind cache) is on a writable volume, the root filesystem being
    /// read-only.
    #[test]
    fn the_daemonset_runs_that_config_and_writes_only_to_its_volume() {
        let yaml = |what: &str, text: &str| -> serde_yaml::Value {
            serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"))
        };
        let kustomization = yaml("kustomization.yaml", BASE_KUSTOMIZATION);
        let generator = &kustomization["configMapGenerator"][0];
        let configmap = generator["name"].as_str().expect("a configMapGenerator");
        assert_eq!(generator["files"][0].as_str(), Some("agent.yaml"));

        let ds = yaml("daemonset.yaml", BASE_DAEMONSET);
        assert_eq!(ds["kind"].as_str(), Some("DaemonSet"));
        let pod = &ds["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let volumes = pod["volumes"].as_sequence().expect("volumes");
        let mounts = container["volumeMounts"].as_sequence().expect("volumeMounts");
        let mount_of = |volume: &serde_yaml::Value| {
            let name = volume["name"].as_str();
            mounts.iter().find(|m| m["name"].as_str() == name).unwrap_or_else(|| panic!("{name:?} is not mounted"))
        };
        let config_volume = volumes
            .iter()
            .find(|v| v["configMap"]["name"].as_str() == Some(configmap))
            .expect("a volume of the generated ConfigMap");
        let config_dir = mount_of(config_volume)["mountPath"].as_str().expect("a mountPath");
        let args: Vec<&str> =
            container["args"].as_sequence().expect("args").iter().filter_map(|a| a.as_str()).collect();
        assert_eq!(args, ["agent", "--config", &format!("{config_dir}/agent.yaml")]);

        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
        assert_eq!(security["privileged"].as_bool(), Some(false));
        for host_path in volumes.iter().filter(|v| v["hostPath"].is_mapping()) {
            assert_eq!(mount_of(host_path)["readOnly"].as_bool(), Some(true), "{host_path:?}");
        }
        let writable: Vec<&str> = volumes
            .iter()
            .filter(|v| v["emptyDir"].is_mapping())
            .filter_map(|v| mount_of(v)["mountPath"].as_str())
            .collect();
        let config = yaml("agent.yaml", BASE_CONFIG);
        let cache = &config["receivers"]["profiling"]["unwind_cache"];
        if cache["enabled"].as_bool() != Some(false) {
            let dir = cache["dir"].as_str().unwrap_or(otelprof_sampler::unwind::DEFAULT_CACHE_DIR);
            assert!(writable.iter().any(|w| dir.starts_with(&format!("{w}/"))), "{dir} is not under {writable:?}");
        }
        assert!(config["extensions"].is_null(), "an extension (opamp keeps state): give it a writable volume");
    }

    #[test]
    fn the_built_in_config_is_valid() {
        check("default.yaml", DEFAULT_CONFIG);
    }
}
