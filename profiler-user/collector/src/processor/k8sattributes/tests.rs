//! The processor against a local HTTP server that replays Kubernetes API responses from
//! `testdata/` (hand-written to the API's schema; see `testdata/README.md`): a list, a watch
//! with ADDED / MODIFIED / DELETED / BOOKMARK, a 410 that forces a re-list, ReplicaSet GETs.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{body::Body, extract::Request, http::StatusCode, response::Response, Router};
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        profiles::v1development::ExportProfilesServiceRequest, trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{any_value::Value as V, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::ResourceMetrics,
    profiles::v1development::{Profile, ResourceProfiles, Sample, ScopeProfiles},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};

use super::*;
use crate::{consumer::testing::Sink, processor::pdata::testing::str_kv};

const LIST_1: &str = include_str!("testdata/list-1.json");
const LIST_2: &str = include_str!("testdata/list-2.json");
const WATCH_1: &str = include_str!("testdata/watch-1.json");
const WATCH_2: &str = include_str!("testdata/watch-2.json");
const REPLICASETS: &[(&str, &str)] = &[
    ("web-7d9f8c6b5", include_str!("testdata/replicaset-web-7d9f8c6b5.json")),
    ("api-5c8d7f9b4", include_str!("testdata/replicaset-api-5c8d7f9b4.json")),
];

const WEB_UID: &str = "5b0c1f5e-8a43-4c1e-9d6b-2f7a9c3e1d01";
const WEB_CID: &str = "4a1c8e2f9b3d7a6c5e0f1b2d3c4a5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d";
const WEB_PREVIOUS_CID: &str = "1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e";
const SHIPPER_CID: &str = "b7e1c4a9d2f05863e7a1b4c9d2e5f8a3b6c9d2e5f8a1b4c7d0e3f6a9b2c5d8e1";
const DB_UID: &str = "a3d6e9f2-1b4c-4d7e-8f0a-3b6c9d2e5f81";
const AGENT_CID: &str = "d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeeff0";
const BACKUP_UID: &str = "9c8b7a6f-5e4d-4c3b-a2f1-0e9d8c7b6a51";
const API_CID: &str = "a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0";
const WORKER_IP: &str = "10.244.1.32";

/// The replaying API server. Lists are served in order (the last one again after that);
/// watch number `n` is held until the test has released more than `n` watches, then
/// streams its events one per line and ends; watches past the scripted ones stay open.
struct FakeApi {
    lists: Vec<&'static str>,
    watches: Vec<&'static str>,
    list_n: AtomicUsize,
    watch_n: AtomicUsize,
    released: tokio::sync::watch::Sender<usize>,
    requests: Mutex<Vec<String>>,
}

impl FakeApi {
    async fn start(lists: Vec<&'static str>, watches: Vec<&'static str>) -> (Arc<Self>, String) {
        let api = Arc::new(Self {
            lists,
            watches,
            list_n: AtomicUsize::new(0),
            watch_n: AtomicUsize::new(0),
            released: tokio::sync::watch::channel(0).0,
            requests: Mutex::new(Vec::new()),
        });
        let served = api.clone();
        let router = Router::new().fallback(move |req: Request| {
            let api = served.clone();
            async move { api.serve(req).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (api, url)
    }

    fn release(&self, watches: usize) {
        self.released.send_replace(watches);
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    async fn serve(&self, req: Request) -> Response {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        self.requests.lock().unwrap().push(format!("{path}?{query}"));
        let json = |status: StatusCode, body: Body| {
            Response::builder().status(status).header("content-type", "application/json").body(body).unwrap()
        };
        if path == "/api/v1/pods" {
            if query.split('&').any(|p| p == "watch=true" || p == "watch=1") {
                let n = self.watch_n.fetch_add(1, Ordering::SeqCst);
                let mut rx = self.released.subscribe();
                let _ = rx.wait_for(|r| *r > n).await;
                let Some(events) = self.watches.get(n) else {
                    let open = tokio_stream::pending::<Result<String, std::io::Error>>();
                    return json(StatusCode::OK, Body::from_stream(open));
                };
                let events: Vec<serde_json::Value> = serde_json::from_str(events).unwrap();
                let lines: Vec<Result<String, std::io::Error>> =
                    events.iter().map(|e| Ok(format!("{}\n", serde_json::to_string(e).unwrap()))).collect();
                return json(StatusCode::OK, Body::from_stream(tokio_stream::iter(lines)));
            }
            let n = self.list_n.fetch_add(1, Ordering::SeqCst).min(self.lists.len() - 1);
            return json(StatusCode::OK, Body::from(self.lists[n]));
        }
        if let Some(name) = path.strip_prefix("/apis/apps/v1/namespaces/shop/replicasets/") {
            if let Some((_, rs)) = REPLICASETS.iter().find(|(n, _)| *n == name) {
                return json(StatusCode::OK, Body::from(*rs));
            }
            let status = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("replicasets.apps \"{name}\" not found"), "reason": "NotFound",
                "details": {"name": name, "group": "apps", "kind": "replicasets"}, "code": 404
            });
            return json(StatusCode::NOT_FOUND, Body::from(status.to_string()));
        }
        json(StatusCode::NOT_FOUND, Body::from("{}"))
    }
}

const ALL_METADATA: &str = "[k8s.namespace.name, k8s.pod.name, k8s.pod.uid, k8s.pod.ip, k8s.node.name, \
    k8s.container.name, container.image.name, container.image.tag, k8s.replicaset.name, k8s.deployment.name, \
    k8s.deployment.uid, k8s.statefulset.name, k8s.daemonset.name, k8s.job.name, k8s.cronjob.name]";

fn checked(yaml: &str) -> Result<Checked, ConfigError> {
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    config::check(value, "processors.k8sattributes")
}

/// One processor per signal, all feeding `sink`, sharing one store and watch.
struct Rig {
    host: Host,
    sink: Arc<Sink>,
    processors: BTreeMap<&'static str, Arc<dyn Processor>>,
    store: Arc<Store>,
}

fn rig(yaml: &str) -> Rig {
    let host = Host::new(Duration::from_secs(1));
    let env: Env = Arc::new(|var: &str| (var == "NODE_NAME").then(|| "node-1".to_string()));
    let b = Build::new(&ComponentId::parse("k8sattributes").unwrap(), checked(yaml).unwrap(), env);
    let sink = Arc::new(Sink::default());
    let processors = Signal::ALL.iter().map(|s| (s.name(), b.build(*s, sink.clone(), &host).unwrap())).collect();
    let store = b.shared.get().unwrap().store.clone();
    Rig { host, sink, processors, store }
}

impl Rig {
    /// [`Self::send`] as a receiver does it for a request from `sender` (`ip:port`).
    fn send_from(&self, signal: Signal, attrs: &[(&str, &str)], sender: &str) -> BTreeMap<String, String> {
        crate::client::scope(crate::client::Info::from_addr(sender.parse().unwrap()), || self.send(signal, attrs))
    }

    /// Sends one resource with `attrs` through the `signal` processor; returns the resource
    /// attributes that came out.
    fn send(&self, signal: Signal, attrs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let resource =
            Some(Resource { attributes: attrs.iter().map(|(k, v)| str_kv(k, v)).collect(), ..Default::default() });
        let data = match signal {
            Signal::Traces => Data::Traces(ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource,
                    scope_spans: vec![ScopeSpans { spans: vec![Span::default()], ..Default::default() }],
                    ..Default::default()
                }],
            }),
            Signal::Logs => Data::Logs(ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource,
                    scope_logs: vec![ScopeLogs { log_records: vec![LogRecord::default()], ..Default::default() }],
                    ..Default::default()
                }],
            }),
            Signal::Metrics => Data::Metrics(ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics { resource, ..Default::default() }],
            }),
            Signal::Profiles => Data::Profiles(ExportProfilesServiceRequest {
                resource_profiles: vec![ResourceProfiles {
                    resource,
                    scope_profiles: vec![ScopeProfiles {
                        profiles: vec![Profile { samples: vec![Sample::default()], ..Default::default() }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                dictionary: None,
            }),
        };
        let sent = data.clone();
        self.processors[signal.name()].consume(data).unwrap();
        let got = self.sink.got.lock().unwrap().pop().unwrap();
        assert_eq!(got.signal(), sent.signal());
        let resource = match &got {
            Data::Traces(r) => r.resource_spans[0].resource.clone(),
            Data::Logs(r) => r.resource_logs[0].resource.clone(),
            Data::Metrics(r) => r.resource_metrics[0].resource.clone(),
            Data::Profiles(r) => r.resource_profiles[0].resource.clone(),
        };
        resource.unwrap().attributes.iter().map(|a: &KeyValue| (a.key.clone(), string(a))).collect()
    }

    fn metric(&self, series: &str) -> u64 {
        let mut out = String::new();
        self.host.telemetry.render(&mut out);
        out.lines()
            .find(|l| l.starts_with(&format!("{series}{{")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{out}"))
    }
}

fn string(a: &KeyValue) -> String {
    match a.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(V::StringValue(s)) => s.clone(),
        other => panic!("{other:?}"),
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

fn get<'a>(m: &'a BTreeMap<String, String>, k: &str) -> Option<&'a str> {
    m.get(k).map(String::as_str)
}

fn full_config(url: &str) -> String {
    format!(
        "{{auth_type: kubeConfig, endpoint: '{url}', filter: {{node_from_env_var: NODE_NAME}}, \
         extract: {{metadata: {ALL_METADATA}, labels: [{{tag_name: app, key: app.kubernetes.io/name, from: pod}}], \
         annotations: [{{tag_name: team, key: example.com/team}}]}}}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_watch_relist_and_the_join_on_every_signal() {
    let (api, url) = FakeApi::start(vec![LIST_1, LIST_2], vec![WATCH_1, WATCH_2]).await;
    let r = rig(&full_config(&url));

    // The first list: a Deployment's pod, a StatefulSet's, a host-network DaemonSet's.
    wait_until("the first list is in the store", || r.store.len() == 3).await;
    let reqs = api.requests();
    assert!(
        reqs[0].starts_with("/api/v1/pods?") && reqs[0].contains("fieldSelector=spec.nodeName%3Dnode-1"),
        "{reqs:?}"
    );

    // Profiles join by container.id (the profiler's, from the cgroup).
    let p = r.send(Signal::Profiles, &[("container.id", WEB_CID), ("service.name", "web-bin")]);
    assert_eq!(get(&p, "k8s.namespace.name"), Some("shop"));
    assert_eq!(get(&p, "k8s.pod.name"), Some("web-7d9f8c6b5-x2k4p"));
    assert_eq!(get(&p, "k8s.pod.uid"), Some(WEB_UID));
    assert_eq!(get(&p, "k8s.node.name"), Some("node-1"));
    assert_eq!(get(&p, "k8s.container.name"), Some("web"));
    assert_eq!(get(&p, "container.image.name"), Some("registry.example.com/shop/web"));
    assert_eq!(get(&p, "container.image.tag"), Some("2.4.1"));
    assert_eq!(get(&p, "k8s.replicaset.name"), Some("web-7d9f8c6b5"));
    // Through the ReplicaSet GET: its controller owner.
    assert_eq!(get(&p, "k8s.deployment.name"), Some("web"));
    assert_eq!(get(&p, "k8s.deployment.uid"), Some("11aa22bb-33cc-44dd-85ee-66ff77008811"));
    assert_eq!((get(&p, "app"), get(&p, "team")), (Some("web"), Some("checkout")));
    assert_eq!(get(&p, "service.name"), Some("web-bin"), "never overwritten");
    // The previous instance of a restarted container, and the pod's other container.
    let p = r.send(Signal::Profiles, &[("container.id", WEB_PREVIOUS_CID)]);
    assert_eq!((get(&p, "k8s.pod.uid"), get(&p, "k8s.container.name")), (Some(WEB_UID), Some("web")));
    let p = r.send(Signal::Profiles, &[("container.id", SHIPPER_CID)]);
    assert_eq!(get(&p, "k8s.container.name"), Some("log-shipper"));
    assert_eq!(get(&p, "container.image.name"), Some("docker.io/fluent/fluent-bit"));

    // Traces by k8s.pod.uid: the StatefulSet's pod.
    let t = r.send(Signal::Traces, &[("k8s.pod.uid", DB_UID), ("k8s.namespace.name", "mine")]);
    assert_eq!(get(&t, "k8s.statefulset.name"), Some("db"));
    assert_eq!(get(&t, "k8s.namespace.name"), Some("mine"), "an attribute the resource has is kept");
    assert_eq!(get(&t, "k8s.container.name"), None, "no container named: none added");
    // Logs by pod IP; with k8s.container.name the container's attributes come too.
    let l = r.send(Signal::Logs, &[("k8s.pod.ip", "10.244.1.13"), ("k8s.container.name", "postgres")]);
    assert_eq!((get(&l, "k8s.pod.name"), get(&l, "container.image.tag")), (Some("db-0"), Some("16")));
    // A host-network pod is not joined by IP (the node's), but is by container.id.
    let m = r.send(Signal::Metrics, &[("k8s.pod.ip", "192.168.10.5")]);
    assert_eq!(get(&m, "k8s.pod.name"), None);
    let m = r.send(Signal::Metrics, &[("container.id", AGENT_CID)]);
    assert_eq!(get(&m, "k8s.daemonset.name"), Some("node-agent"));
    assert_eq!(get(&m, "container.image.tag"), Some("1.0.0"));
    let unassociated = r.metric("otelprof_k8sattributes_unassociated_total");
    assert_eq!(unassociated, 1);

    // The watch: ADDED (a CronJob's pod), MODIFIED (an annotation), DELETED, BOOKMARK.
    api.release(1);
    wait_until("the watch events are applied", || r.store.is_deleted(DB_UID) && r.store.get(BACKUP_UID).is_some())
        .await;
    let t = r.send(Signal::Traces, &[("k8s.pod.uid", BACKUP_UID)]);
    assert_eq!(get(&t, "k8s.job.name"), Some("backup-29412345"));
    assert_eq!(get(&t, "k8s.cronjob.name"), Some("backup"));
    let l = r.send(Signal::Logs, &[("k8s.pod.ip", "10.244.1.20")]);
    assert_eq!(get(&l, "k8s.pod.uid"), Some(BACKUP_UID));
    let p = r.send(Signal::Profiles, &[("container.id", WEB_CID)]);
    assert_eq!(get(&p, "team"), Some("payments"), "MODIFIED replaced the pod");
    let t = r.send(Signal::Traces, &[("k8s.pod.uid", DB_UID)]);
    assert_eq!(get(&t, "k8s.pod.name"), Some("db-0"), "a DELETED pod's late data still joins (grace)");
    let l = r.send(Signal::Logs, &[("k8s.pod.ip", "10.244.1.13")]);
    assert_eq!(get(&l, "k8s.pod.name"), None, "but not by its IP, which the next pod may have");
    // The watch ended after the bookmark: it is reopened from the bookmark's version.
    wait_until("the watch is reopened", || api.requests().iter().filter(|q| q.contains("watch=true")).count() == 2)
        .await;
    let reqs = api.requests();
    let watches: Vec<&String> = reqs.iter().filter(|q| q.contains("watch=true")).collect();
    assert!(
        watches[0].contains("resourceVersion=1000") && watches[0].contains("allowWatchBookmarks=true"),
        "{watches:?}"
    );
    assert!(watches[1].contains("resourceVersion=1010"), "{watches:?}");
    assert_eq!(r.metric("otelprof_k8s_relists_total"), 0);

    // 410 Gone: the pods are listed again and the store becomes the new list.
    api.release(2);
    wait_until("the re-list is in the store", || r.store.by_container_id(API_CID).is_some()).await;
    assert_eq!(r.store.len(), 4, "exactly the new list: the deleted pod is gone with the old one");
    assert_eq!(r.metric("otelprof_k8s_relists_total"), 1);
    assert_eq!(r.metric("otelprof_k8s_pods"), 4);
    let p = r.send(Signal::Profiles, &[("container.id", API_CID)]);
    assert_eq!(get(&p, "k8s.deployment.name"), Some("api"));
    // Dual-stack: joined by either family's IP.
    let m = r.send(Signal::Metrics, &[("k8s.pod.ip", "fd00:10:244:1::1f")]);
    assert_eq!(get(&m, "k8s.pod.name"), Some("api-5c8d7f9b4-q8w2z"));
    // A ReplicaSet the API does not have (404): the name less the pod-template-hash.
    let t = r.send(Signal::Traces, &[("k8s.pod.ip", WORKER_IP)]);
    assert_eq!((get(&t, "k8s.deployment.name"), get(&t, "k8s.deployment.uid")), (Some("worker"), None));
    assert!(r.metric("otelprof_k8s_watch_errors_total") >= 1);
    // Every ReplicaSet was fetched once, however often its pods came.
    let reqs = api.requests();
    assert_eq!(reqs.iter().filter(|q| q.contains("/replicasets/web-7d9f8c6b5")).count(), 1, "{reqs:?}");
    assert_eq!(reqs.iter().filter(|q| q.contains("/replicasets/worker-6b7c9d8f7d")).count(), 1, "{reqs:?}");
    let p = r.send(Signal::Profiles, &[("container.id", WEB_CID)]);
    assert_eq!(get(&p, "k8s.deployment.name"), Some("web"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_annotations_and_container_attributes_only_when_configured() {
    let (_api, url) = FakeApi::start(vec![LIST_1], vec![]).await;
    let r = rig(&format!("{{auth_type: kubeConfig, endpoint: '{url}', filter: {{node: node-1}}}}"));
    wait_until("the list is in the store", || r.store.len() == 3).await;
    let p = r.send(Signal::Profiles, &[("container.id", WEB_CID)]);
    // The Collector's default metadata, and nothing else.
    let keys: Vec<&str> = p.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "container.id",
            "k8s.deployment.name",
            "k8s.namespace.name",
            "k8s.node.name",
            "k8s.pod.name",
            "k8s.pod.start_time",
            "k8s.pod.uid"
        ]
    );
    assert_eq!(get(&p, "k8s.pod.start_time"), Some("2026-11-30T08:15:02Z"));
}

/// `wait_for_metadata`: the start waits for the first list; without an API server it fails
/// after the timeout, naming the processor and the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_metadata_holds_the_start_until_the_pods_are_listed() {
    let (_api, url) = FakeApi::start(vec![LIST_1], vec![]).await;
    let r = rig(&format!(
        "{{auth_type: kubeConfig, endpoint: '{url}', filter: {{node: node-1}}, wait_for_metadata: true}}"
    ));
    r.processors["traces"].start(&r.host).await.unwrap();
    assert_eq!(r.store.len(), 3, "started once the list was in");
    let r = rig("{auth_type: kubeConfig, endpoint: 'http://127.0.0.1:1', wait_for_metadata: true, \
                 wait_for_metadata_timeout: 300ms}");
    let e = r.processors["logs"].start(&r.host).await.unwrap_err();
    assert_eq!(e.id, "processors.k8sattributes", "{e}");
    assert!(e.message.contains("wait_for_metadata: no pod list within 300ms"), "{e}");
    let r = rig("{auth_type: kubeConfig, endpoint: 'http://127.0.0.1:1'}");
    r.processors["logs"].start(&r.host).await.expect("without wait_for_metadata the start does not wait");
}

/// `exclude`: an excluded pod is not kept, so its records get nothing (and no ReplicaSet is
/// asked for it); the others are joined as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_pods_are_not_kept() {
    let (api, url) = FakeApi::start(vec![LIST_1], vec![]).await;
    let r = rig(&format!("{{auth_type: kubeConfig, endpoint: '{url}', filter: {{node: node-1}}, exclude: {{pods: [{{name: '^web-'}}]}}}}"));
    wait_until("the list is in the store", || r.store.len() == 2).await;
    let p = r.send(Signal::Profiles, &[("container.id", WEB_CID)]);
    assert_eq!(p.keys().collect::<Vec<_>>(), ["container.id"], "the excluded pod's container: nothing added");
    assert!(!api.requests().iter().any(|q| q.contains("replicasets")), "{:?}", api.requests());
    assert!(r.store.by_name("shop", "db-0").is_some(), "the others are kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_unreachable_passes_data_unchanged_and_counts_errors() {
    // Nothing listens on port 1 of the loopback.
    let r = rig("{auth_type: kubeConfig, endpoint: 'http://127.0.0.1:1'}");
    wait_until("an error is counted", || r.metric("otelprof_k8s_watch_errors_total") >= 1).await;
    for signal in Signal::ALL {
        let out = r.send(signal, &[("container.id", WEB_CID), ("service.name", "x")]);
        assert_eq!(out.len(), 2, "{signal}: {out:?}");
    }
    assert_eq!(r.metric("otelprof_k8sattributes_unassociated_total"), 4);
    assert_eq!(r.metric("otelprof_k8s_pods"), 0);
    // The watch is on /healthz, and an unreachable API server does not make the agent
    // unhealthy (it would be restarted for what it cannot mend); a processor shutdown ends
    // the watch as asked.
    let watch = |h: &crate::health::Health| {
        h.statuses().into_iter().find(|c| c.name == "processor/k8sattributes/watch").map(|c| c.status)
    };
    assert_eq!(watch(&r.host.health).as_deref(), Some("running"));
    assert_eq!(r.host.health.check(), Ok(()));
    r.processors["traces"].shutdown().await;
    wait_until("the watch ended", || watch(&r.host.health).is_none()).await;
    assert_eq!(r.host.health.check(), Ok(()), "ended as asked, not failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unset_node_variable_watches_nothing_and_says_so() {
    let host = Host::new(Duration::from_secs(1));
    let env: Env = Arc::new(|_: &str| None);
    let yaml = "{auth_type: kubeConfig, endpoint: 'http://127.0.0.1:1', filter: {node_from_env_var: NODE_NAME}}";
    let b = Build::new(&ComponentId::parse("k8sattributes").unwrap(), checked(yaml).unwrap(), env);
    let p = b.build(Signal::Traces, Arc::new(Sink::default()), &host).unwrap();
    p.consume(Data::Traces(ExportTraceServiceRequest::default())).unwrap();
    let mut out = String::new();
    host.telemetry.render(&mut out);
    assert!(out.contains("otelprof_k8s_watch_errors_total{processor=\"k8sattributes\"} 1"), "{out}");
}

#[test]
fn config_defaults_and_errors_name_the_key() {
    let c = checked("{filter: {node_from_env_var: NODE_NAME}}").unwrap();
    assert_eq!((c.auth.clone(), c.max_pods), (config::Auth::ServiceAccount, 1024));
    let node = c.node.clone().unwrap();
    assert_eq!(node.resolve(|_| Some(" node-1 ".into())).as_deref(), Ok("node-1"));
    assert!(node.resolve(|_| None).unwrap_err().contains("`NODE_NAME` is not set"));
    let by = |k| vec![Source::Attribute(k)];
    assert_eq!(
        c.associations,
        vec![by(SourceKey::PodUid), by(SourceKey::PodIp), by(SourceKey::ContainerId), vec![Source::Connection]]
    );
    let passthrough = checked("{passthrough: true}").unwrap();
    assert_eq!((passthrough.passthrough, passthrough.associations.clone()), (true, vec![vec![Source::Connection]]));
    assert!(c.wants("k8s.deployment.name") && !c.wants("k8s.container.name"));
    let ok = checked(
        "{auth_type: kubeConfig, kube_config_path: /tmp/kc, context: dev, \
          extract: {deployment_name_from_replicaset: true, labels: [{key: app}]}, \
          pod_association: [{sources: [{from: resource_attribute, name: k8s.pod.name}, \
                                       {from: resource_attribute, name: k8s.namespace.name}]}]}",
    )
    .unwrap();
    assert_eq!(ok.labels[0].tag_name, "k8s.pod.labels.app");
    // The Collector's default exclusions (also for an empty list), found anywhere in the name.
    for c in [&c, &checked("{exclude: {pods: []}}").unwrap()] {
        assert!(c.excludes("jaeger-agent-x7k2p") && c.excludes("my-jaeger-collector-0") && !c.excludes("web-1"));
    }
    assert_eq!(c.wait_for_metadata, None, "off by default");
    assert_eq!(checked("{wait_for_metadata: true}").unwrap().wait_for_metadata, Some(Duration::from_secs(10)));
    let own = checked("{exclude: {pods: [{name: '^db-'}]}}").unwrap();
    assert!(
        own.excludes("db-0") && !own.excludes("web-db-0") && !own.excludes("jaeger-agent-1"),
        "a list replaces them"
    );

    let p = "processors.k8sattributes";
    for (yaml, path, says) in [
        ("{nope: 1}", format!("{p}.nope"), "unknown field `nope`"),
        ("{extract: {metadata: [k8s.pod.name], lables: []}}", format!("{p}.extract.lables"), "unknown field `lables`"),
        ("{filter: {node_from_env_var: ''}}", format!("{p}.filter.node_from_env_var"), "empty"),
        ("{filter: {node: a, node_from_env_var: B}}", format!("{p}.filter.node"), "not both"),
        ("{filter: {fields: [{key: a}]}}", format!("{p}.filter.fields[0].value"), "required with `op: equals`"),
        ("{filter: {fields: [{key: a, op: exists}]}}", format!("{p}.filter.fields[0].op"), "use equals, not-equals"),
        ("{filter: {labels: [{key: a, op: exists, value: b}]}}", format!("{p}.filter.labels[0].value"), "not with"),
        ("{filter: {labels: [{key: 'a,b', value: c}]}}", format!("{p}.filter.labels[0].key"), "not a selector key"),
        (
            "{filter: {labels: [{key: a, value: b, operator: x}]}}",
            format!("{p}.filter.labels[0].operator"),
            "unknown field",
        ),
        ("{auth_type: none}", format!("{p}.auth_type"), "not supported"),
        ("{auth_type: tls}", format!("{p}.auth_type"), "not an auth type"),
        ("{endpoint: 'http://x'}", format!("{p}.endpoint"), "kubeConfig"),
        ("{extract: {metadata: [k8s.pod.nam]}}", format!("{p}.extract.metadata[0]"), "not a metadata attribute"),
        ("{extract: {metadata: [k8s.pod.name, k8s.cluster.uid]}}", format!("{p}.extract.metadata[1]"), "not supported"),
        ("{extract: {labels: [{key: a, from: namespace}]}}", format!("{p}.extract.labels[0].from"), "only `pod`"),
        (
            "{extract: {annotations: [{key_regex: '.*'}]}}",
            format!("{p}.extract.annotations[0].key_regex"),
            "not supported",
        ),
        (
            "{pod_association: [{sources: [{from: connection, name: k8s.pod.ip}]}]}",
            format!("{p}.pod_association[0].sources[0].name"),
            "not with `from: connection`",
        ),
        (
            "{pod_association: [{sources: [{from: header}]}]}",
            format!("{p}.pod_association[0].sources[0].from"),
            "use `resource_attribute` or `connection`",
        ),
        ("{extract: {metadata: [service.name, service.nam]}}", format!("{p}.extract.metadata[1]"), "not a metadata"),
        (
            "{pod_association: [{sources: [{from: resource_attribute, name: host.name}]}]}",
            format!("{p}.pod_association[0].sources[0].name"),
            "not supported",
        ),
        (
            "{pod_association: [{sources: [{from: resource_attribute, name: k8s.pod.name}]}]}",
            format!("{p}.pod_association[0].sources"),
            "both k8s.pod.name and k8s.namespace.name",
        ),
        (
            "{pod_association: [{sources: [{from: resource_attribute}]}]}",
            format!("{p}.pod_association[0].sources[0].name"),
            "required",
        ),
        ("{max_pods: 0}", format!("{p}.max_pods"), "at least 1"),
        ("{exclude: {pods: [{name: '(web'}]}}", format!("{p}.exclude.pods[0].name"), "not a regular expression"),
        ("{exclude: {pods: [{nme: web}]}}", format!("{p}.exclude.pods[0].nme"), "unknown field"),
        (
            "{wait_for_metadata: true, wait_for_metadata_timeout: 0s}",
            format!("{p}.wait_for_metadata_timeout"),
            "more than 0",
        ),
    ] {
        let e = checked(yaml).err().unwrap_or_else(|| panic!("{yaml} was accepted"));
        assert_eq!(e.path, path, "{yaml}: {e}");
        assert!(e.message.contains(says), "{yaml}: {e}");
    }
    // The factory is registered under the Collector's name.
    assert!(crate::processor::factories().iter().any(|f| f.kind() == "k8sattributes"));
}

/// `from: connection`: the address a receiver saw the request come from is the pod's IP, after
/// the resource's own keys, and `k8s.pod.ip` is added when the connection decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_senders_address_associates_after_the_resources_own_keys() {
    let (_api, url) = FakeApi::start(vec![LIST_1], vec![]).await;
    let r = rig(&format!(
        "{{auth_type: kubeConfig, endpoint: '{url}', filter: {{node: node-1}}, \
          extract: {{metadata: [k8s.pod.name, k8s.statefulset.name]}}}}"
    ));
    wait_until("the list is in the store", || r.store.len() == 3).await;
    let t = r.send_from(Signal::Traces, &[], "10.244.1.13:41000");
    assert_eq!((get(&t, "k8s.pod.name"), get(&t, "k8s.statefulset.name")), (Some("db-0"), Some("db")));
    assert_eq!(get(&t, "k8s.pod.ip"), Some("10.244.1.13"), "the connection's IP, as the Collector adds it");
    // A dual-stack listener sees an IPv4 client as an IPv4-mapped IPv6 address.
    let l = r.send_from(Signal::Logs, &[], "[::ffff:10.244.1.13]:41000");
    assert_eq!((get(&l, "k8s.pod.name"), get(&l, "k8s.pod.ip")), (Some("db-0"), Some("10.244.1.13")));
    // The resource's own keys come first: the web pod's uid, whoever sent it (a gateway).
    let m = r.send_from(Signal::Metrics, &[("k8s.pod.uid", WEB_UID)], "10.244.1.13:41000");
    assert_eq!((get(&m, "k8s.pod.name"), get(&m, "k8s.pod.ip")), (Some("web-7d9f8c6b5-x2k4p"), None));
    // An address no pod has: nothing found, counted; the IP is still the sender's.
    let before = r.metric("otelprof_k8sattributes_unassociated_total");
    let t = r.send_from(Signal::Traces, &[], "10.9.9.9:5000");
    assert_eq!((get(&t, "k8s.pod.name"), get(&t, "k8s.pod.ip")), (None, Some("10.9.9.9")));
    // No sender at all (the profiler's data, or data after `batch`): no rule applies.
    let p = r.send(Signal::Profiles, &[]);
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(r.metric("otelprof_k8sattributes_unassociated_total"), before + 2);
}

/// `passthrough: true`: only `k8s.pod.ip` from the connection, and the API is never asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_adds_the_senders_ip_and_watches_nothing() {
    let (api, url) = FakeApi::start(vec![LIST_1], vec![]).await;
    let r = rig(&format!("{{auth_type: kubeConfig, endpoint: '{url}', passthrough: true}}"));
    for signal in Signal::ALL {
        let out = r.send_from(signal, &[("service.name", "x")], "10.244.1.13:41000");
        assert_eq!(get(&out, "k8s.pod.ip"), Some("10.244.1.13"), "{signal}");
        assert_eq!(out.len(), 2, "{signal}: {out:?}");
    }
    let kept = r.send_from(Signal::Traces, &[("k8s.pod.ip", "10.1.1.1")], "10.244.1.13:41000");
    assert_eq!(get(&kept, "k8s.pod.ip"), Some("10.1.1.1"), "never overwritten");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(api.requests().is_empty(), "{:?}", api.requests());
    assert_eq!(r.store.len(), 0);
    assert_eq!(r.metric("otelprof_k8sattributes_unassociated_total"), 0);
}

/// `service.*` by the semantic conventions' rules: the `resource.opentelemetry.io/`
/// annotation, the well-known labels when opted in, the workload; `unknown_service…` (the
/// SDKs' and the profiler's fallback) counts as no name, a name the application chose stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_attributes_follow_the_semantic_conventions() {
    let (_api, url) = FakeApi::start(vec![LIST_1], vec![]).await;
    let service = "[service.name, service.namespace, service.version, service.instance.id]";
    let config = |extra: &str| {
        format!(
            "{{auth_type: kubeConfig, endpoint: '{url}', filter: {{node: node-1}}, \
              extract: {{metadata: {service}{extra}}}}}"
        )
    };
    let r = rig(&config(""));
    wait_until("the list is in the store", || r.store.len() == 3).await;
    // The Deployment's name (through the ReplicaSet GET) replaces the profiler's fallback; the
    // version is the image's tag and the digest the runtime resolved.
    let p = r.send(Signal::Profiles, &[("container.id", WEB_CID), ("service.name", "unknown_service:web-bin")]);
    assert_eq!(get(&p, "service.name"), Some("web"));
    assert_eq!(get(&p, "service.namespace"), Some("shop"));
    assert_eq!(
        get(&p, "service.version"),
        Some("2.4.1@sha256:9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b")
    );
    assert_eq!(get(&p, "service.instance.id"), Some("shop.web-7d9f8c6b5-x2k4p.web"));
    let named = r.send(Signal::Profiles, &[("container.id", WEB_CID), ("service.name", "checkout")]);
    assert_eq!(get(&named, "service.name"), Some("checkout"), "the application's own name stays");
    let sdk = r.send(Signal::Traces, &[("k8s.pod.uid", WEB_UID), ("service.name", "unknown_service")]);
    assert_eq!(get(&sdk, "service.name"), Some("web"));
    assert_eq!(get(&sdk, "service.version"), None, "no container named: no image");
    // The pod's annotation wins over the StatefulSet's name; without `otel_annotations` the
    // pod's other `resource.opentelemetry.io/` annotations are not copied.
    let db = r.send(Signal::Logs, &[("k8s.pod.ip", "10.244.1.13"), ("k8s.container.name", "postgres")]);
    assert_eq!(get(&db, "service.name"), Some("orders-db"));
    assert_eq!(
        get(&db, "service.version"),
        Some("16@sha256:0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c")
    );
    assert_eq!(get(&db, "deployment.environment.name"), None);
    // The DaemonSet's pod: its name, unless the well-known labels are opted in.
    let agent = r.send(Signal::Metrics, &[("container.id", AGENT_CID)]);
    assert_eq!(get(&agent, "service.name"), Some("node-agent"));

    let r = rig(&config(", otel_annotations: true, well_known_labels: true"));
    wait_until("the list is in the store", || r.store.len() == 3).await;
    let agent = r.send(Signal::Metrics, &[("container.id", AGENT_CID)]);
    assert_eq!(get(&agent, "service.name"), Some("node-agent-eu"), "app.kubernetes.io/instance before name");
    let db = r.send(Signal::Logs, &[("k8s.pod.ip", "10.244.1.13")]);
    assert_eq!(get(&db, "service.name"), Some("orders-db"), "the annotation before the labels");
    assert_eq!(get(&db, "deployment.environment.name"), Some("prod"));
}

/// `filter.fields` and `filter.labels` become the list's and the watch's selectors (the API
/// server filters), after the node's field selector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_become_the_apis_selectors() {
    let (api, url) = FakeApi::start(vec![LIST_1], vec![]).await;
    let r = rig(&format!(
        "{{auth_type: kubeConfig, endpoint: '{url}', filter: {{node_from_env_var: NODE_NAME, \
          fields: [{{key: status.phase, value: Running}}], \
          labels: [{{key: app.kubernetes.io/name, value: web}}, {{key: tier, op: not-equals, value: batch}}, \
                   {{key: canary, op: does-not-exist}}, {{key: team, op: exists}}]}}}}"
    ));
    wait_until("listed and watching", || api.requests().iter().any(|q| q.contains("watch=true"))).await;
    assert_eq!(r.store.len(), 3, "the replayed list (a real server would have filtered it)");
    let decoded = |q: &str| {
        let mut out = Vec::new();
        let b = q.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'%' if i + 2 < b.len() => {
                    out.push(u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap());
                    i += 3;
                }
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).unwrap()
    };
    let pods: Vec<String> =
        api.requests().iter().filter(|q| q.starts_with("/api/v1/pods")).map(|q| decoded(q)).collect();
    assert_eq!(pods.len(), 2, "{pods:?}");
    for q in &pods {
        let params: Vec<&str> = q.split_once('?').unwrap().1.split('&').collect();
        assert!(params.contains(&"fieldSelector=spec.nodeName=node-1,status.phase=Running"), "{q}");
        assert!(params.contains(&"labelSelector=app.kubernetes.io/name=web,tier!=batch,!canary,team"), "{q}");
    }
}
