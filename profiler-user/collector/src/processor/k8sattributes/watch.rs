//! The pod watch: list the pods (of the node, with `fieldSelector=spec.nodeName=…`), then
//! watch from the list's `resourceVersion`, keeping the [`Store`] in step.
//!
//! - A watch that ends (the server's `timeoutSeconds`) is reopened from the last
//!   `resourceVersion` seen, bookmarks included, so no event is missed and nothing re-listed.
//! - A `410 Gone` (an `ERROR` event, or the HTTP status) means that version is too old: the
//!   pods are listed again and the store replaced, counted in `otelprof_k8s_relists_total`.
//! - Any other error (API server unreachable, 5xx, a stream cut) is counted in
//!   `otelprof_k8s_watch_errors_total`, logged at most every 30 s, and followed by a re-list
//!   after a backoff (1 s doubling to 30 s). Meanwhile the store keeps what it had: metadata
//!   of pods still running stays right, and pods started since are simply not found.
//!
//! The loop is our own rather than kube-runtime's `watcher`, because the store needs whole
//! re-lists as one swap (its indexes by IP and container id), and the counters need to see
//! each error; it is also one dependency less to build.
//!
//! ReplicaSets are fetched (`GET`, cached by uid) to find the Deployment that owns them, the
//! way the Collector derives `k8s.deployment.name`: the ReplicaSet's controller owner of kind
//! Deployment. When the GET fails, or with `deployment_name_from_replicaset: true`, the name
//! is the ReplicaSet's name less its `-<pod-template-hash>`.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::Pod};
use kube::{
    api::{ListParams, WatchEvent, WatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    Api, Client,
};
use tokio_stream::StreamExt;

use super::{
    config::{Auth, Checked},
    pod::{controller_owner, deployment_from_replicaset_name, pod_meta, Deployment, PodMeta},
    store::Store,
};
use crate::telemetry::{add, Value};

/// How long the server keeps one watch open (it ends it then, and we reopen it).
const WATCH_TIMEOUT_SECONDS: u32 = 290;
/// A ReplicaSet GET that takes longer is given up (the name fallback applies).
const GET_TIMEOUT: Duration = Duration::from_secs(5);
/// ReplicaSets remembered; past it the cache is emptied (one node runs few).
const MAX_CACHED_REPLICASETS: usize = 4096;
/// A ReplicaSet whose GET failed is asked for again after this long.
const RETRY_FAILED_GET: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const LOG_EVERY: Duration = Duration::from_secs(30);
/// A watch that ended sooner is reopened only after this long.
const MIN_WATCH: Duration = Duration::from_secs(1);
/// How often deleted pods whose grace ended are removed while no event comes.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// The watch's own metrics.
#[derive(Clone, Default)]
pub struct WatchMetrics {
    /// `otelprof_k8s_watch_errors_total`.
    pub errors: Value,
    /// `otelprof_k8s_relists_total`: lists after the first (410 Gone, errors).
    pub relists: Value,
}

/// Why the watch could not go on.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("Kubernetes client config: {0}")]
    Config(String),
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("no answer in {0:?}")]
    Timeout(Duration),
    #[error("the API server ended the watch: {code} {reason}: {message}")]
    Status { code: u16, reason: String, message: String },
}

impl WatchError {
    fn is_gone(&self) -> bool {
        match self {
            WatchError::Status { code, .. } => *code == 410,
            WatchError::Api(kube::Error::Api(s)) => s.code == 410,
            _ => false,
        }
    }
}

/// The client for `auth`.
pub async fn client(auth: &Auth) -> Result<Client, WatchError> {
    let config = match auth {
        Auth::ServiceAccount => kube::Config::incluster().map_err(|e| WatchError::Config(e.to_string()))?,
        Auth::KubeConfig { path, context } => {
            let options = KubeConfigOptions { context: context.clone(), ..Default::default() };
            match path {
                Some(p) => {
                    let kc = Kubeconfig::read_from(p).map_err(|e| WatchError::Config(format!("{p}: {e}")))?;
                    kube::Config::from_custom_kubeconfig(kc, &options).await
                }
                None => kube::Config::from_kubeconfig(&options).await,
            }
            .map_err(|e| WatchError::Config(e.to_string()))?
        }
        Auth::Endpoint(url) => {
            let uri = url.parse().map_err(|e| WatchError::Config(format!("endpoint `{url}`: {e}")))?;
            kube::Config::new(uri)
        }
    };
    Client::try_from(config).map_err(WatchError::Api)
}

/// Logs at most once per [`LOG_EVERY`], saying how many were held back.
struct Throttled {
    last: Option<Instant>,
    held: u64,
}

impl Throttled {
    fn warn(&mut self, what: &str, e: &WatchError) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.held += 1;
            return;
        }
        tracing::warn!(
            "k8sattributes: {what}: {e}; pod metadata may be missing or stale until it recovers ({} similar errors not logged)",
            self.held
        );
        self.last = Some(now);
        self.held = 0;
    }
}

/// The pod watch of one processor.
pub struct Watch {
    config: Arc<Checked>,
    /// The resolved `filter.node`.
    node: Option<String>,
    store: Arc<Store>,
    metrics: WatchMetrics,
    /// ReplicaSet uid → its Deployment (a GET's answer), or the name fallback after a failed
    /// GET with when to ask again (so a slow API server costs one timeout per ReplicaSet a
    /// minute, not one per pod event).
    replicasets: HashMap<String, (Option<Deployment>, Option<Instant>)>,
    log: Throttled,
}

impl Watch {
    pub fn new(config: Arc<Checked>, node: Option<String>, store: Arc<Store>, metrics: WatchMetrics) -> Self {
        Self { config, node, store, metrics, replicasets: HashMap::new(), log: Throttled { last: None, held: 0 } }
    }

    /// The node's, then `filter.fields`.
    fn field_selector(&self) -> Option<String> {
        let node = self.node.as_ref().map(|n| format!("spec.nodeName={n}"));
        let parts: Vec<String> = node.into_iter().chain(self.config.field_selector.clone()).collect();
        (!parts.is_empty()).then(|| parts.join(","))
    }

    fn error(&mut self, what: &str, e: &WatchError) {
        add(&self.metrics.errors, 1);
        self.log.warn(what, e);
    }

    /// Runs until dropped (the caller selects it against the stop token).
    pub async fn run(mut self) {
        let mut backoff = Duration::from_secs(1);
        let client = loop {
            match client(&self.config.auth).await {
                Ok(c) => break c,
                Err(e) => {
                    self.error("cannot make the Kubernetes client", &e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        let pods: Api<Pod> = match &self.config.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let mut first = true;
        loop {
            if !first {
                add(&self.metrics.relists, 1);
            }
            first = false;
            let version = match self.list(&pods, &client).await {
                Ok(v) => v,
                Err(e) => {
                    self.error("listing pods failed", &e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = Duration::from_secs(1);
            match self.watch(&pods, &client, version).await {
                Err(e) if e.is_gone() => {
                    tracing::debug!("k8sattributes: {e}; listing again");
                }
                Err(e) => {
                    self.error("watching pods failed", &e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Ok(()) => {}
            }
        }
    }

    /// Lists every pod (in pages of 500), replaces the store; returns the list's version.
    async fn list(&mut self, pods: &Api<Pod>, client: &Client) -> Result<String, WatchError> {
        let mut params = ListParams::default().limit(500);
        if let Some(f) = self.field_selector() {
            params = params.fields(&f);
        }
        if let Some(l) = &self.config.label_selector {
            params = params.labels(l);
        }
        let mut items = Vec::new();
        let version = loop {
            let page = pods.list(&params).await?;
            items.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break page.metadata.resource_version.unwrap_or_default(),
            }
        };
        let mut metas = Vec::with_capacity(items.len());
        for p in &items {
            if let Some(m) = self.meta(p, client).await {
                metas.push(m);
            }
        }
        self.store.replace_all(metas);
        Ok(version)
    }

    /// Watches from `version` until an error; a watch the server ended is reopened from the
    /// last version seen.
    async fn watch(&mut self, pods: &Api<Pod>, client: &Client, mut version: String) -> Result<(), WatchError> {
        let mut params = WatchParams::default().timeout(WATCH_TIMEOUT_SECONDS);
        if let Some(f) = self.field_selector() {
            params = params.fields(&f);
        }
        if let Some(l) = &self.config.label_selector {
            params = params.labels(l);
        }
        loop {
            let opened = Instant::now();
            let stream = pods.watch(&params, &version).await?;
            let mut stream = std::pin::pin!(stream);
            let mut sweep = tokio::time::interval(SWEEP_EVERY);
            loop {
                // Deleted pods' grace ends even when no event comes.
                let event = tokio::select! {
                    e = stream.next() => e,
                    now = sweep.tick() => {
                        self.store.sweep(now.into_std());
                        continue;
                    }
                };
                let Some(event) = event else { break };
                match event? {
                    WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                        if let Some(v) = p.metadata.resource_version.clone() {
                            version = v;
                        }
                        if let Some(m) = self.meta(&p, client).await {
                            self.store.upsert(m);
                        }
                    }
                    WatchEvent::Deleted(p) => {
                        if let Some(v) = p.metadata.resource_version.clone() {
                            version = v;
                        }
                        if let Some(uid) = &p.metadata.uid {
                            self.store.remove(uid, Instant::now());
                        }
                    }
                    WatchEvent::Bookmark(b) => version = b.metadata.resource_version,
                    WatchEvent::Error(s) => {
                        return Err(WatchError::Status { code: s.code, reason: s.reason, message: s.message })
                    }
                }
            }
            // A server (or proxy) that ends every watch at once must not be asked in a loop.
            if opened.elapsed() < MIN_WATCH {
                tokio::time::sleep(MIN_WATCH).await;
            }
        }
    }

    /// The pod's metadata as the store keeps it; `None` for an excluded pod (no ReplicaSet
    /// is asked for it either).
    async fn meta(&mut self, pod: &Pod, client: &Client) -> Option<PodMeta> {
        if self.config.excludes(pod.metadata.name.as_deref().unwrap_or_default()) {
            return None;
        }
        let deployment = self.deployment(pod, client).await;
        pod_meta(pod, &self.config, deployment.as_ref())
    }

    /// The Deployment owning the pod's ReplicaSet, when the config wants it.
    async fn deployment(&mut self, pod: &Pod, client: &Client) -> Option<Deployment> {
        // `service.name` is the Deployment's name before the ReplicaSet's.
        let wanted = ["k8s.deployment.name", "k8s.deployment.uid", "service.name"];
        if !wanted.iter().any(|m| self.config.wants(m)) {
            return None;
        }
        let (rs_name, rs_uid) = controller_owner(pod, "ReplicaSet")?;
        let hash = pod.metadata.labels.as_ref().and_then(|l| l.get("pod-template-hash")).map(String::as_str);
        let by_name = || deployment_from_replicaset_name(rs_name, hash).map(|name| Deployment { name, uid: None });
        if self.config.deployment_name_from_replicaset {
            return by_name();
        }
        if let Some((found, retry_at)) = self.replicasets.get(rs_uid) {
            if retry_at.is_none_or(|t| Instant::now() < t) {
                return found.clone();
            }
        }
        if self.replicasets.len() >= MAX_CACHED_REPLICASETS {
            self.replicasets.clear();
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
        match tokio::time::timeout(GET_TIMEOUT, api.get(rs_name)).await {
            Ok(Ok(rs)) => {
                let found = rs
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                    .map(|o| Deployment { name: o.name.clone(), uid: Some(o.uid.clone()) });
                self.replicasets.insert(rs_uid.to_string(), (found.clone(), None));
                found
            }
            failed => {
                let e = match failed {
                    Ok(Err(e)) => WatchError::Api(e),
                    _ => WatchError::Timeout(GET_TIMEOUT),
                };
                self.error(&format!("getting ReplicaSet {namespace}/{rs_name} failed"), &e);
                let found = by_name();
                self.replicasets.insert(rs_uid.to_string(), (found.clone(), Some(Instant::now() + RETRY_FAILED_GET)));
                found
            }
        }
    }
}
