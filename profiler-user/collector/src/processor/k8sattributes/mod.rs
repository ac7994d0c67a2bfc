//! The `k8sattributes` processor: adds the Kubernetes pod, namespace, node and workload of
//! the sender to the resource of every request, of every signal, profiles included.
//!
//! ```yaml
//! processors:
//!   k8sattributes:
//!     auth_type: serviceAccount          # default; or kubeConfig (kube_config_path, context)
//!     filter:
//!       node_from_env_var: NODE_NAME     # watch only this node's pods (downward API), read at start
//!       fields: [{key: status.phase, op: not-equals, value: Succeeded}]   # field selector
//!       labels: [{key: tier, value: web}, {key: canary, op: does-not-exist}] # label selector
//!     extract:
//!       metadata: [k8s.namespace.name, k8s.pod.name, k8s.pod.uid, k8s.container.name,
//!                  k8s.node.name, k8s.deployment.name, k8s.statefulset.name,
//!                  k8s.daemonset.name, k8s.job.name, k8s.cronjob.name,
//!                  service.name, service.namespace, service.version, service.instance.id]
//!       labels: [{tag_name: app, key: app.kubernetes.io/name, from: pod}]
//!       annotations: [{tag_name: team, key: example.com/team}]
//!       otel_annotations: true           # resource.opentelemetry.io/<attribute> annotations
//!       well_known_labels: false         # otelprof's: app.kubernetes.io/* labels in service.*
//!     pod_association:                   # the default:
//!       - sources: [{from: resource_attribute, name: k8s.pod.uid}]
//!       - sources: [{from: resource_attribute, name: k8s.pod.ip}]
//!       - sources: [{from: resource_attribute, name: container.id}]
//!       - sources: [{from: connection}]  # the sender's IP
//!     passthrough: false                 # true: only k8s.pod.ip from the connection
//!     exclude:                           # pods not kept (regex found in the name); the
//!       pods: [{name: jaeger-agent}, {name: jaeger-collector}]   # default, as the Collector's
//! ```
//!
//! Config keys, attribute names and semantics are the Collector's k8sattributes processor's,
//! so a user moving from the Collector recognises them:
//!
//! - **Association**: the `pod_association` rules in order; the first rule whose attributes
//!   are all on the resource decides (when its pod is not found, the resource is left
//!   unassociated, as in the Collector), counted in
//!   `otelprof_k8sattributes_unassociated_total` (per resource, not per item).
//!   `container.id` is the key for profiles: the profiler puts the id from the cgroup on them,
//!   and the store indexes every container's `status.containerStatuses[].containerID` without
//!   its `containerd://` prefix (the previous instance's id too, so a restart does not cut
//!   the join). Every `status.podIPs` entry is indexed (dual-stack); host-network pods are
//!   not indexed by IP (their IP is the node's).
//! - **Connection**: `from: connection` is the sender's IP as the receiver saw it (the
//!   request's [`client`]); when the rule that decides uses it, `k8s.pod.ip`
//!   is added, also in `passthrough`. Data flushed by `batch` has no sender: put this
//!   processor before `batch`, as the Collector's documentation says.
//! - **Attributes** are added, never overwriting one the resource already has (except a
//!   `service.name` of `unknown_service` or `unknown_service:…`, what SDKs and the profiler
//!   say when the application names none). Container
//!   attributes (`k8s.container.name`, `container.image.name`, `container.image.tag`) are
//!   added when the container is known: joined by `container.id`, or named by the
//!   resource's `k8s.container.name`.
//! - **Workloads** from the pod's controller owner: `k8s.replicaset.*`; `k8s.deployment.*` from
//!   the ReplicaSet's own controller owner (a cached ReplicaSet GET, see [`watch`]);
//!   `k8s.statefulset.*`, `k8s.daemonset.*`, `k8s.job.*`; `k8s.cronjob.name` from the Job's
//!   name (`<cronjob>-<minutes>`; see [`pod::cronjob_of_job`]).
//! - **`service.*`** by the semantic conventions' rules (non-normative "Populating resource
//!   attributes in Kubernetes"): `service.name` from the `resource.opentelemetry.io/service.name`
//!   annotation, then (with `well_known_labels`) `app.kubernetes.io/instance` and `…/name`,
//!   then the Deployment, ReplicaSet, StatefulSet, DaemonSet, CronJob, Job, pod name;
//!   `service.namespace` from its annotation, else the namespace; `service.version` from its
//!   annotation, the `app.kubernetes.io/version` label (opted in), else the container's image
//!   (`tag@digest`, digest, tag); `service.instance.id` from its annotation, else
//!   `<namespace>.<pod>.<container>`. This is how profiles of processes that publish no name
//!   get their workload's ([`pod::SERVICE_NAME_FROM`]).
//! - **Never blocking**: `consume` reads the store under a short read lock; the list/watch
//!   runs in its own task. With the API server unreachable, data passes unchanged (or with
//!   what was known before), and `otelprof_k8s_watch_errors_total` rises.
//! - **Node**: `filter.node_from_env_var` is read when the processor is built, so
//!   `otelprof validate` passes where it is unset; unset or empty at start, no pod is watched
//!   (watching the whole cluster from every node instead would cost far more), which is
//!   logged as an error and counted in `otelprof_k8s_watch_errors_total`.
//! - **RBAC**: `get`, `list`, `watch` on `pods`; `get` on `apps` `replicasets` when
//!   `k8s.deployment.name` / `.uid` is extracted without `deployment_name_from_replicaset`.
//!
//! - **Health**: the watch is `processor/<id>/watch` on `/healthz` and in OpAMP's component
//!   health: failed if it panics or ends unasked. An unreachable API server is not a failure
//!   (a restart would not mend it, and sampling and exporting go on): it is counted.
//!
//! Differences from the Collector (each refused in the config with a message, or listed here):
//!
//! - Without `pod_association` the rules are k8s.pod.uid, k8s.pod.ip, container.id, then the
//!   connection (the Collector's default is the connection alone; the profiler's data has no
//!   connection, and a gateway's the wrong one). In `passthrough` it is the connection alone.
//! - `wait_for_metadata: true` makes the processor's start wait for the first pod list
//!   (`wait_for_metadata_timeout`, default 10 s) and fail without it, as the Collector's: the
//!   agent does not start, a remote config is rolled back. Off by default: sampling should not
//!   wait for the API server.
//! - Refused as not supported yet: `auth_type: none`,
//!   `key_regex`, labels and annotations `from` anything but `pod`, and the metadata
//!   `k8s.cronjob.uid`, `k8s.cluster.uid`, `k8s.node.uid`, `container.image.repo_digests`.
//! - `filter.fields` / `filter.labels` go to the API server as selectors (so it sends only
//!   matching pods), with the Collector's operators; a key or value a selector cannot carry
//!   (`,`, `=`, `!`, a space) is refused.
//! - otelprof's own keys: `endpoint` (with `auth_type: kubeConfig`: a URL used without
//!   credentials, for tests and `kubectl proxy`), `max_pods` (default 1024: the store's
//!   bound; past it the oldest pod is evicted, counted in `otelprof_k8s_pods_evicted_total`)
//!   and `extract.well_known_labels` (the semantic conventions ask tools for this opt-in).
//! - A DELETED pod is kept 2 minutes for late data, as in the Collector, but is no longer
//!   found by its IP meanwhile (the next pod may have it); see [`store`].
//! - In `passthrough`, `extract` and `filter` have no effect (nothing is looked up).
//!
//! Own metrics (label `processor`): `otelprof_k8s_pods`, `otelprof_k8s_pods_evicted_total`,
//! `otelprof_k8s_watch_errors_total`, `otelprof_k8s_relists_total`,
//! `otelprof_k8sattributes_unassociated_total`.
//!
//! The tests run the watch against a local HTTP server that replays API responses from
//! `testdata/`; those JSON files are hand-written to the Kubernetes API's schema (no API
//! server can run where the tests run), not recorded from a cluster. `tests/kubernetes.rs`
//! runs the whole agent that way, with a real process in a container's cgroup.

pub mod config;
pub mod pod;
pub mod store;
pub mod watch;

#[cfg(test)]
mod tests;

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use async_trait::async_trait;
use opentelemetry_proto::tonic::{
    common::v1::{any_value::Value as AnyValueKind, AnyValue, KeyValue},
    resource::v1::Resource,
};
use tokio_util::sync::CancellationToken;

use self::{
    config::{Checked, Source, SourceKey},
    store::{Found, Store, StoreMetrics},
    watch::{Watch, WatchMetrics},
};
use super::map_resources::MapResources;
use crate::{
    client,
    component::{BuildProcessor, ComponentError, ComponentId, Host, Processor, ProcessorFactory},
    config::ConfigError,
    consumer::{ConsumeError, Consumer},
    health::Liveness,
    signal::{Data, Signal},
    telemetry::{add, Value},
};

pub struct K8sAttributesFactory;

impl ProcessorFactory for K8sAttributesFactory {
    fn kind(&self) -> &'static str {
        "k8sattributes"
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
        let checked = config::check(config, path)?;
        Ok(Box::new(Build::new(id, checked, Arc::new(|var: &str| std::env::var(var).ok()))))
    }
}

/// The store and its watch, shared by every pipeline the processor is in.
struct Shared {
    store: Arc<Store>,
    unassociated: Value,
    /// Stops the watch: the agent's stop, or the processor's shutdown (a config reload
    /// builds a new one with its own watch).
    stop: CancellationToken,
}

/// Reads an environment variable (tests give their own).
type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

struct Build {
    id: String,
    config: Arc<Checked>,
    env: Env,
    shared: OnceLock<Arc<Shared>>,
}

impl Build {
    fn new(id: &ComponentId, config: Checked, env: Env) -> Self {
        Self { id: id.to_string(), config: Arc::new(config), env, shared: OnceLock::new() }
    }

    /// Starts the watch at the first build (inside the runtime), once for all pipelines.
    fn shared(&self, host: &Host) -> Result<Arc<Shared>, ComponentError> {
        if let Some(s) = self.shared.get() {
            return Ok(s.clone());
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ComponentError::new(&self.id, "must be built inside the agent's runtime"))?;
        let labels = [("processor", self.id.as_str())];
        let t = &host.telemetry;
        let store_metrics = StoreMetrics {
            pods: t.gauge("otelprof_k8s_pods", "Pods in the k8sattributes store.", &labels),
            evicted: t.counter(
                "otelprof_k8s_pods_evicted",
                "Pods dropped from the k8sattributes store because it was full (max_pods).",
                &labels,
            ),
        };
        let watch_metrics = WatchMetrics {
            errors: t.counter(
                "otelprof_k8s_watch_errors",
                "Errors listing or watching pods, or getting ReplicaSets, from the Kubernetes API.",
                &labels,
            ),
            relists: t.counter("otelprof_k8s_relists", "Pod lists after the first (410 Gone or an error).", &labels),
        };
        let unassociated = t.counter(
            "otelprof_k8sattributes_unassociated",
            "Resources no pod was found for (per resource, not per item).",
            &labels,
        );
        let shared = self
            .shared
            .get_or_init(|| {
                let store = Arc::new(Store::new(self.config.max_pods, store_metrics));
                let stop = host.stop.child_token();
                match self.config.node.as_ref().map(|n| n.resolve(|v| (self.env)(v))).transpose() {
                    // Passthrough only reads the connection: no pod is watched.
                    Ok(_) if self.config.passthrough => {}
                    Ok(node) => {
                        let watch = Watch::new(self.config.clone(), node, store.clone(), watch_metrics);
                        // On /healthz (and OpAMP's component health) as failed if the watch
                        // panics or ends; an unreachable API server is not a failure of the
                        // agent (it keeps sampling and exporting): it is counted.
                        let health = host.health.register(format!("processor/{}/watch", self.id), Liveness::Running);
                        let (watch_stop, stopped) = (stop.clone(), health.clone());
                        runtime.spawn(health.watch_task(async move {
                            tokio::select! {
                                _ = watch_stop.cancelled() => stopped.stop(),
                                _ = watch.run() => {}
                            }
                        }));
                    }
                    // Watching every pod of the cluster from every node instead would be
                    // worse than no metadata: none is added, and it is said and counted.
                    Err(e) => {
                        tracing::error!(processor = %self.id, "{e}; no pod is watched and no Kubernetes metadata is added");
                        add(&watch_metrics.errors, 1);
                    }
                }
                Arc::new(Shared { store, unassociated, stop })
            })
            .clone();
        Ok(shared)
    }
}

impl BuildProcessor for Build {
    fn build(
        &self,
        signal: Signal,
        next: Arc<dyn Consumer>,
        host: &Host,
    ) -> Result<Arc<dyn Processor>, ComponentError> {
        let shared = self.shared(host)?;
        let (config, on) = (self.config.clone(), shared.clone());
        let by_connection = config.associations.iter().flatten().any(|s| *s == Source::Connection);
        let annotate = Arc::new(move |r: &mut Resource| {
            // The sender's IP, read only when a rule can use it.
            let sender = by_connection.then(client::current).flatten().and_then(|c| c.ip()).map(|ip| ip.to_string());
            if !associate(&config, &on.store, r, sender.as_deref()) {
                add(&on.unassociated, 1);
            }
        });
        let metrics = host.telemetry.processor(&self.id, signal);
        let wait_for_metadata = self.config.wait_for_metadata.filter(|_| !self.config.passthrough);
        Ok(Arc::new(K8sAttributes {
            inner: MapResources::new(next, metrics, annotate),
            shared,
            id: format!("processors.{}", self.id),
            wait_for_metadata,
        }))
    }
}

/// The processor of one pipeline: every resource annotated (the shared resource walk of
/// [`MapResources`]), plus the watch's end at shutdown.
pub struct K8sAttributes {
    inner: MapResources,
    shared: Arc<Shared>,
    /// `processors.<id>`, for the start's error.
    id: String,
    /// Not in passthrough, which lists nothing.
    wait_for_metadata: Option<Duration>,
}

impl Consumer for K8sAttributes {
    fn consume(&self, data: Data) -> Result<(), ConsumeError> {
        self.inner.consume(data)
    }
}

#[async_trait]
impl Processor for K8sAttributes {
    /// With `wait_for_metadata`, waits for the first pod list (the Collector's behaviour: a
    /// start without metadata fails, and so does the agent's start or the remote config).
    async fn start(&self, _host: &Host) -> Result<(), ComponentError> {
        let Some(timeout) = self.wait_for_metadata else { return Ok(()) };
        if self.shared.store.wait_synced(timeout).await {
            return Ok(());
        }
        Err(ComponentError::new(
            &self.id,
            format!(
                "wait_for_metadata: no pod list within {timeout:?} (the API server's errors are in the log and \
                 otelprof_k8s_watch_errors_total)"
            ),
        ))
    }

    /// Stops the watch (shared by the processor's pipelines, which shut down together).
    async fn shutdown(&self) {
        self.shared.stop.cancel();
    }
}

/// The resource's string attribute `key`, when set and not empty.
fn string_attr<'a>(r: &'a Resource, key: &str) -> Option<&'a str> {
    r.attributes.iter().find(|a| a.key == key).and_then(|a| match a.value.as_ref()?.value.as_ref()? {
        AnyValueKind::StringValue(s) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    })
}

/// `unknown_service`, alone or as `unknown_service:<executable>`: the name an SDK gives when
/// the application set none (and the profiler's encoder, likewise). It counts as no
/// `service.name`, so the pod's can replace it (as CloudWatch's and Kyma's agents do).
fn is_unknown_service(v: &AnyValue) -> bool {
    matches!(&v.value, Some(AnyValueKind::StringValue(s)) if s == "unknown_service" || s.starts_with("unknown_service:"))
}

/// Adds `key` unless the resource has it; only `service.name` = `unknown_service…` is
/// replaced (see [`is_unknown_service`]).
fn add_attr(r: &mut Resource, key: &str, value: &str) {
    let new = || Some(AnyValue { value: Some(AnyValueKind::StringValue(value.to_string())) });
    match r.attributes.iter_mut().find(|a| a.key == key) {
        None => r.attributes.push(KeyValue { key: key.to_string(), value: new(), ..Default::default() }),
        Some(a) if key == "service.name" && a.value.as_ref().is_some_and(is_unknown_service) => a.value = new(),
        Some(_) => {}
    }
}

/// Finds the resource's pod by the first rule whose sources all have a value (resource
/// attributes, the `sender`'s IP), and adds the pod's attributes. Returns whether a pod was
/// found (always true in passthrough, which looks nothing up).
fn associate(config: &Checked, store: &Store, r: &mut Resource, sender: Option<&str>) -> bool {
    let value = |s: &Source| match s {
        Source::Attribute(k) => string_attr(r, k.attribute()),
        Source::Connection => sender,
    };
    // A rule whose sources are not all there does not apply: try the next one. One that
    // applies decides, found or not.
    let Some((rule, values)) = config.associations.iter().find_map(|rule| {
        let values: Option<Vec<(SourceKey, &str)>> = rule.iter().map(|s| value(s).map(|v| (s.key(), v))).collect();
        values.map(|v| (rule, v))
    }) else {
        return config.passthrough;
    };
    let found = (!config.passthrough).then(|| lookup(store, &values)).flatten();
    // As the Collector: the deciding rule's connection is the pod's IP, also in passthrough.
    if let Some(ip) = sender.filter(|_| rule.contains(&Source::Connection)) {
        add_attr(r, "k8s.pod.ip", ip);
    }
    if config.passthrough {
        return true;
    }
    let Some(found) = found else { return false };
    let container = found.container.and_then(|i| found.pod.containers.get(i)).or_else(|| {
        let name = string_attr(r, "k8s.container.name")?;
        found.pod.containers.iter().find(|c| c.name == name)
    });
    let mut add_attr = |key: &str, value: &str| add_attr(r, key, value);
    for (k, v) in &found.pod.attributes {
        add_attr(k, v);
    }
    if let Some(c) = container {
        for (k, v) in &c.attributes {
            add_attr(k, v);
        }
        if config.wants("container.id") {
            if let Some(id) = c.ids.first() {
                add_attr("container.id", id);
            }
        }
    }
    true
}

/// The pod matching every (key, value) of a rule.
fn lookup(store: &Store, values: &[(SourceKey, &str)]) -> Option<Found> {
    let get = |k: SourceKey| values.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let found = if let Some(uid) = get(SourceKey::PodUid) {
        store.by_uid(uid)
    } else if let Some(id) = get(SourceKey::ContainerId) {
        store.by_container_id(id)
    } else if let Some(ip) = get(SourceKey::PodIp) {
        store.by_ip(ip)
    } else {
        store.by_name(get(SourceKey::Namespace)?, get(SourceKey::PodName)?)
    }?;
    let pod = &found.pod;
    let all_match = values.iter().all(|(k, v)| match k {
        SourceKey::PodUid => pod.uid == *v,
        SourceKey::PodIp => pod.ips.iter().any(|ip| ip == v),
        SourceKey::ContainerId => pod.containers.iter().any(|c| c.ids.iter().any(|id| id == v)),
        SourceKey::PodName => pod.name == *v,
        SourceKey::Namespace => pod.namespace == *v,
    });
    if !all_match {
        return None;
    }
    let container = found.container.or_else(|| {
        let id = get(SourceKey::ContainerId)?;
        pod.containers.iter().position(|c| c.ids.iter().any(|i| i == id))
    });
    Some(Found { container, ..found })
}
