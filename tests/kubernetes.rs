//! The agent as the DaemonSet runs it, on a replayed cluster: `otelprof agent` with the
//! `k8sattributes` processor watching pods from a local HTTP server that answers as the
//! Kubernetes API does (a node-filtered `PodList`, a watch held open, ReplicaSet GETs; no API
//! server can run here, see the README), a real process profiled inside a container's cgroup,
//! and the OpenTelemetry Python SDK sending traces. What reaches the backend (`sink.py`,
//! decoded with opentelemetry-proto) must carry the pod and its workload: profiles joined by
//! `container.id` from the cgroup, traces by the sender's address (`from: connection`), and
//! `host.name` is the node.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::{agent::wait_for, collector::*, servers::free_addr, *};
use serde_json::json;

const NODE: &str = "node-e2e-1";
/// The container id the workload's cgroup carries (`cri-containerd-<id>.scope`, as containerd
/// names it under the kubelet's systemd cgroup driver).
const CONTAINER_ID: &str = "7e3f1a9c5b2d8e4f6a0c1b3d5e7f9a2c4b6d8e0f1a3c5e7b9d2f4a6c8e0b1d3f";

/// A pod of the replayed node. `ip` is its `status.podIP`; `replicaset` its controller owner.
fn pod(name: &str, uid: &str, ip: &str, replicaset: &str, container: &str, container_id: &str) -> serde_json::Value {
    json!({
        "metadata": {
            "name": name, "generateName": format!("{replicaset}-"), "namespace": "shop", "uid": uid,
            "resourceVersion": "5001", "creationTimestamp": "2026-12-01T09:00:00Z",
            "labels": {"app.kubernetes.io/name": container, "pod-template-hash": replicaset.rsplit('-').next()},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": replicaset,
                                 "uid": format!("{uid}-rs"), "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {"nodeName": NODE, "containers": [{"name": container, "image": format!("registry.example.com/shop/{container}:3.2.0")}]},
        "status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "192.168.50.10",
            "startTime": "2026-12-01T09:00:01Z",
            "containerStatuses": [{
                "name": container, "ready": true, "restartCount": 0, "started": true,
                "image": format!("registry.example.com/shop/{container}:3.2.0"),
                "imageID": format!("registry.example.com/shop/{container}@sha256:5d1e0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d"),
                "containerID": format!("containerd://{container_id}"),
                "state": {"running": {"startedAt": "2026-12-01T09:00:02Z"}}
            }]
        }
    })
}

fn replicaset(name: &str, deployment: &str) -> serde_json::Value {
    json!({
        "kind": "ReplicaSet", "apiVersion": "apps/v1",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("{name}-uid"), "resourceVersion": "4100",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment,
                                          "uid": format!("{deployment}-deployment-uid"), "controller": true}]},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": deployment}}}
    })
}

/// The replaying API server: HTTP/1.1 with keep-alive, one thread per connection. Watches are
/// answered with a chunked 200 and then held open (no event) until the server is dropped.
struct ReplayApi {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl ReplayApi {
    fn start(pods: serde_json::Value, replicasets: Vec<(String, serde_json::Value)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let list =
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "5001"}, "items": pods})
                .to_string();
        let (seen, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let (seen, stopped, list, replicasets) =
                    (seen.clone(), stopped.clone(), list.clone(), replicasets.clone());
                std::thread::spawn(move || serve(conn, &seen, &stopped, &list, &replicasets));
            }
        });
        Self { url, requests, stop }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for ReplayApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

fn serve(
    conn: TcpStream,
    seen: &Mutex<Vec<String>>,
    stop: &AtomicBool,
    list: &str,
    replicasets: &[(String, serde_json::Value)],
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
        // The rest of the head (GETs carry no body).
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
        }
        seen.lock().unwrap().push(target.clone());
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        if path == "/api/v1/pods" && query.split('&').any(|p| p == "watch=true" || p == "watch=1") {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
            let _ = out.write_all(head.as_bytes());
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
            return;
        }
        let (status, body) = if path == "/api/v1/pods" {
            ("200 OK", list.to_string())
        } else if let Some((_, rs)) = path
            .strip_prefix("/apis/apps/v1/namespaces/shop/replicasets/")
            .and_then(|name| replicasets.iter().find(|(n, _)| n == name))
        {
            ("200 OK", rs.to_string())
        } else {
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": format!("{path} not found"), "reason": "NotFound", "code": 404});
            ("404 Not Found", status.to_string())
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if out.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// A cgroup named as a container runtime names a container's, removed when dropped (after
/// its processes have exited). In the cgroup v2 hierarchy when one is mounted, else in v1's
/// `pids`: the profiler reads the id from any line of `/proc/PID/cgroup`.
struct ContainerCgroup {
    dirs: Vec<PathBuf>,
    procs: PathBuf,
}

impl ContainerCgroup {
    fn create(id: &str) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = |fstype: &str, option: Option<&str>| {
            mountinfo.lines().find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let mut r = right.split_whitespace();
                let (fs, _, opts) = (r.next()?, r.next()?, r.next().unwrap_or(""));
                let ok = fs == fstype && option.is_none_or(|o| opts.split(',').any(|x| x == o));
                let point = left.split_whitespace().nth(4)?;
                ok.then(|| PathBuf::from(point))
            })
        };
        let root = mount("cgroup2", None).or_else(|| mount("cgroup", Some("pids"))).expect("no cgroup hierarchy");
        let parent = root.join(format!("otelprof-test-kubepods-{}", std::process::id()));
        let scope = parent.join(format!("cri-containerd-{id}.scope"));
        std::fs::create_dir_all(&scope).unwrap_or_else(|e| panic!("creating {}: {e}", scope.display()));
        Self { procs: scope.join("cgroup.procs"), dirs: vec![scope, parent] }
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn attr<'a>(r: &'a Stored, key: &str) -> Option<&'a str> {
    r.resource.get(key).and_then(|v| v.as_str())
}

#[test]
fn pod_and_workload_on_profiles_and_received_otlp() {
    const T: &str = "pod_and_workload_on_profiles_and_received_otlp";
    if !bpf_allowed(T) || !python_peers(T) {
        return;
    }
    let _g = bpf_lock();
    let dir = scratch("kubernetes-replayed");
    let cgroup = ContainerCgroup::create(CONTAINER_ID);
    // `web` runs the profiled process; `frontend`'s IP is the loopback, the address the SDK
    // sends from (a pod's own IP on a node).
    let other_id = "0".repeat(64);
    let api = ReplayApi::start(
        json!([
            pod(
                "web-5f7c9d8b6-m4x7q",
                "d2b1c0e9-7f6a-4b5c-9d8e-1a2b3c4d5e6f",
                "10.244.3.7",
                "web-5f7c9d8b6",
                "web",
                CONTAINER_ID
            ),
            pod(
                "frontend-6c8d9f7b5-p2n8r",
                "e3c2d1f0-8a7b-4c6d-8e9f-2b3c4d5e6f70",
                "127.0.0.1",
                "frontend-6c8d9f7b5",
                "frontend",
                &other_id
            ),
        ]),
        vec![
            ("web-5f7c9d8b6".to_string(), replicaset("web-5f7c9d8b6", "web")),
            ("frontend-6c8d9f7b5".to_string(), replicaset("frontend-6c8d9f7b5", "frontend")),
        ],
    );
    let sink = Sink::start(&dir);
    let otlp = free_addr();
    let config = format!(
        "receivers:\n  profiling:\n    samples_per_second: 99\n    reporter_interval: 1s\n    \
         targets: {{ executables: [chain] }}\n    unwind_cache: {{ dir: '{}' }}\n  \
         otlp: {{ protocols: {{ http: {{ endpoint: '{otlp}' }} }} }}\n\
         processors:\n  \
         k8sattributes:\n    auth_type: kubeConfig\n    endpoint: '{}'\n    filter: {{ node_from_env_var: NODE_NAME }}\n    \
         extract: {{ metadata: [k8s.namespace.name, k8s.pod.name, k8s.pod.uid, k8s.node.name, k8s.container.name, \
         k8s.deployment.name, service.name, service.namespace] }}\n  \
         resourcedetection: {{ detectors: [system] }}\n  batch: {{ timeout: 200ms }}\n\
         exporters:\n  otlphttp: {{ endpoint: 'http://127.0.0.1:{}' }}\n\
         service:\n  pipelines:\n    \
         profiles: {{ receivers: [profiling], processors: [k8sattributes, resourcedetection], exporters: [otlphttp] }}\n    \
         traces: {{ receivers: [otlp], processors: [k8sattributes, batch], exporters: [otlphttp] }}\n",
        dir.join("unwind").display(),
        api.url,
        sink.http
    );
    let agent = Collector::start_with_env(&dir, &config, &[("NODE_NAME", NODE)]);
    wait_for("the agent's pod list and watch", Duration::from_secs(15), || {
        api.requests().iter().any(|r| r.starts_with("/api/v1/pods?") && r.contains("watch=true"))
    });
    let requests = api.requests();
    assert!(
        requests.iter().all(|r| !r.starts_with("/api/v1/pods") || r.contains(&format!("spec.nodeName%3D{NODE}"))),
        "only this node's pods are asked for: {requests:?}"
    );

    // The shell joins the container's cgroup before it becomes `chain`.
    let script = format!("echo $$ > '{}' && exec '{}' 3", cgroup.procs.display(), workload("chain").display());
    let chain = Command::new("sh").args(["-c", &script]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    sdk_send(&dir, "http/protobuf", &format!("http://{otlp}"), "traces", 11, 0);
    let cpu_s = wait_cpu_seconds(chain);
    let bar = ((cpu_s * 99.0 / 2.0) as u64).max(10);
    let mut stored = Vec::new();
    wait_for(
        &format!("the workload's profiles and the traces in the sink ({bar} ticks of {cpu_s:.2} CPU-s)"),
        Duration::from_secs(20),
        || {
            stored = sink.dump();
            let events: u64 = stored.iter().filter(|r| r.signal == "profiles").map(|r| r.events).sum();
            events >= bar && stored.iter().any(|r| r.signal == "traces")
        },
    );
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");

    for r in &stored {
        match r.signal.as_str() {
            "profiles" => {
                assert_eq!(attr(r, "container.id"), Some(CONTAINER_ID), "{r:?}");
                assert_eq!(attr(r, "k8s.pod.name"), Some("web-5f7c9d8b6-m4x7q"), "{r:?}");
                assert_eq!(attr(r, "k8s.namespace.name"), Some("shop"), "{r:?}");
                assert_eq!(attr(r, "k8s.container.name"), Some("web"), "{r:?}");
                assert_eq!(attr(r, "k8s.deployment.name"), Some("web"), "through the ReplicaSet GET: {r:?}");
                assert_eq!(attr(r, "k8s.node.name"), Some(NODE), "{r:?}");
                // The process names no service: its workload's name replaces the fallback.
                assert_eq!(attr(r, "service.name"), Some("web"), "{r:?}");
                assert_eq!(attr(r, "service.namespace"), Some("shop"), "{r:?}");
                assert_eq!(attr(r, "host.name"), Some(NODE), "the node, never the pod's hostname: {r:?}");
                assert_eq!(attr(r, "process.executable.name"), Some("chain"), "{r:?}");
            }
            "traces" => {
                assert_eq!(attr(r, "k8s.pod.name"), Some("frontend-6c8d9f7b5-p2n8r"), "by the sender: {r:?}");
                assert_eq!(attr(r, "k8s.pod.ip"), Some("127.0.0.1"), "{r:?}");
                assert_eq!(attr(r, "k8s.deployment.name"), Some("frontend"), "{r:?}");
                assert_eq!(attr(r, "service.name"), Some("otelprof-peer-test"), "the SDK's own name stays: {r:?}");
            }
            other => panic!("unexpected {other}: {r:?}"),
        }
    }
    let requests = api.requests();
    assert_eq!(
        requests.iter().filter(|r| r.contains("/replicasets/web-5f7c9d8b6")).count(),
        1,
        "one GET per ReplicaSet: {requests:?}"
    );
    drop(cgroup);
}

/// `wait_for_metadata: true` with no API server: the agent does not start (exit 1) and says
/// which processor and setting held it, as the Collector does.
#[test]
fn wait_for_metadata_without_an_api_server_fails_the_start() {
    let dir = scratch("k8s-wait-for-metadata");
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  otlp: {{ protocols: {{ http: {{ endpoint: '{}' }} }} }}\n\
             processors:\n  k8sattributes:\n    auth_type: kubeConfig\n    endpoint: 'http://127.0.0.1:1'\n    \
             wait_for_metadata: true\n    wait_for_metadata_timeout: 500ms\n\
             exporters:\n  debug: {{}}\n\
             service:\n  pipelines:\n    traces: {{ receivers: [otlp], processors: [k8sattributes], exporters: [debug] }}\n",
            free_addr()
        ),
    )
    .unwrap();
    let out = otelprof().arg("agent").arg("--config").arg(&config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("processors.k8sattributes") && err.contains("wait_for_metadata: no pod list within 500ms"),
        "{err}"
    );
}
