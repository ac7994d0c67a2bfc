//! The agent under OpAMP control: the running graph, the OpAMP client, and the loop that
//! applies remote configs atomically, verifies them and rolls back (docs/design/0009-opamp.md).
//!
//! One task owns the [`RunningGraph`]; everything that changes it (a remote config, a
//! rollback) runs in that task, one at a time, so there is never a half-applied config.
//!
//! Apply, for an offered config whose hash differs from the last one received:
//! policy check ([`super::remote::Policy`]) → merged over the local file → parsed, OTTL
//! compiled and the graph built (not started) → `APPLYING` → [`RunningGraph::replace`] →
//! every component healthy within `config_apply_timeout` → `APPLIED`, the effective config
//! reported and the remote config persisted as the last good one. A failure before the swap
//! leaves the running graph untouched; a failure after it swaps the last good config back in
//! the same way. Either way `FAILED` names the key or component.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use otelprof_opamp::{capabilities as cap, Client, ClientSettings, ServerEvent, TlsSettings, Transport};
use otelprof_proto::opamp as pb;
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    config::OpampConfig,
    own_metrics::{string_kv as own_kv, OwnMetrics, Render},
    remote::{self, Policy},
};
use crate::{
    component::Host,
    config::{self, ConfigError, Pipeline},
    factories::Factories,
    graph::{Graph, RunningGraph},
    health::ComponentStatus,
};

/// The file in `storage.directory` that keeps the last remote config that was applied.
const LAST_GOOD: &str = "last_remote_config.pb";
/// How often component health is compared with what was last reported.
const HEALTH_EVERY: Duration = Duration::from_secs(1);

/// What the binary gives the supervisor.
pub struct Managed {
    /// The local config file's text (the base every remote config is merged over).
    pub local: String,
    pub factories: Factories,
    pub host: Host,
    pub opamp: OpampConfig,
    /// The agent's own metrics as `/metrics` serves them, for a server that asks for them.
    pub own_metrics: Render,
}

/// How often own metrics are pushed to a destination the server offered.
const OWN_METRICS_EVERY: Duration = Duration::from_secs(10);

/// The remote config that runs at start, when the last good one was persisted and still
/// passes the local policy: (its merged text, its hash).
pub fn startup_config(local: &str, opamp: &OpampConfig, factories: &Factories) -> Option<(String, Vec<u8>)> {
    if !opamp.remote_config.enabled {
        return None;
    }
    let path = opamp.storage.directory.join(LAST_GOOD);
    let bytes = std::fs::read(&path).ok()?;
    let offered = match pb::AgentRemoteConfig::decode(bytes.as_slice()) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("opamp: {}: not a remote config ({e}); running the local config", path.display());
            return None;
        }
    };
    let policy = match policy(opamp) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("opamp: {e}");
            return None;
        }
    };
    match merged(local, &offered, &policy, factories) {
        Ok(text) => {
            tracing::info!("opamp: running the last good remote config (persisted in {})", path.display());
            Some((text, offered.config_hash))
        }
        Err(e) => {
            tracing::warn!("opamp: the persisted remote config no longer applies ({e}); running the local config");
            None
        }
    }
}

fn policy(opamp: &OpampConfig) -> Result<Policy, String> {
    let public_key = match &opamp.remote_config.signature {
        Some(s) => Some(remote::read_public_key(&s.public_key_file)?),
        None => None,
    };
    Ok(Policy {
        allowed_paths: opamp.remote_config.allowed_paths.clone(),
        files_dir: opamp.remote_config.files_dir.clone(),
        public_key,
    })
}

/// The config map's files.
fn files(offered: &pb::AgentRemoteConfig) -> BTreeMap<String, Vec<u8>> {
    offered.config.iter().flat_map(|m| m.config_map.iter()).map(|(name, f)| (name.clone(), f.body.clone())).collect()
}

/// Policy-checked, merged over `local` and parsed with every component's config checked;
/// the merged text.
fn merged(
    local: &str,
    offered: &pb::AgentRemoteConfig,
    policy: &Policy,
    factories: &Factories,
) -> Result<String, String> {
    let remote = policy.check(&files(offered)).map_err(|e| e.0)?;
    let text = remote::merged_text(local, remote).map_err(|e| e.0)?;
    config::parse(&text, factories).map_err(|e| without_position(&e))?;
    Ok(text)
}

/// A config error for the server: the key path and the message (positions would point into
/// the merged text, which the server never saw).
fn without_position(e: &ConfigError) -> String {
    format!("{}: {}", e.path, e.message)
}

/// The capabilities this agent has, exactly: AcceptsRemoteConfig only when the local config
/// enables remote configuration; AcceptsOpAMPConnectionSettings for the heartbeat interval and
/// client-certificate rotation (other offered settings are refused, reported through
/// ReportsConnectionSettingsStatus).
pub fn capabilities(opamp: &OpampConfig) -> u64 {
    let mut c = cap::REPORTS_STATUS
        | cap::REPORTS_EFFECTIVE_CONFIG
        | cap::REPORTS_HEALTH
        | cap::REPORTS_REMOTE_CONFIG
        | cap::REPORTS_HEARTBEAT
        | cap::ACCEPTS_OPAMP_CONNECTION_SETTINGS
        | cap::REPORTS_CONNECTION_SETTINGS_STATUS
        | cap::REPORTS_OWN_METRICS;
    if opamp.remote_config.enabled {
        c |= cap::ACCEPTS_REMOTE_CONFIG;
    }
    c
}

fn string_kv(key: &str, value: impl Into<String>) -> pb::KeyValue {
    pb::KeyValue {
        key: key.to_string(),
        value: Some(pb::AnyValue { value: Some(pb::any_value::Value::StringValue(value.into())) }),
    }
}

/// `AgentDescription`: identifying `service.name`, `service.version`, `service.instance.id`;
/// non-identifying `host.name`, `host.arch`, `os.type`, `os.description` and
/// `k8s.node.name` when `NODE_NAME` is set (the DaemonSet's downward API).
pub fn description(uid: [u8; 16]) -> pb::AgentDescription {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let node = std::env::var("NODE_NAME").ok().filter(|s| !s.is_empty());
    let host = node.clone().or_else(|| read("/proc/sys/kernel/hostname")).unwrap_or_else(|| "unknown".into());
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "x86",
        other => other,
    };
    let pretty = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())))
        .unwrap_or_else(|| "Linux".into());
    let kernel = read("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut non_identifying = vec![
        string_kv("host.name", host),
        string_kv("host.arch", arch),
        string_kv("os.type", "linux"),
        string_kv("os.description", format!("{pretty} (Linux {kernel})").trim().to_string()),
    ];
    if let Some(node) = node {
        non_identifying.push(string_kv("k8s.node.name", node));
    }
    pb::AgentDescription {
        identifying_attributes: vec![
            string_kv("service.name", "otelprof"),
            string_kv("service.version", env!("CARGO_PKG_VERSION")),
            string_kv("service.instance.id", uuid_text(uid)),
        ],
        non_identifying_attributes: non_identifying,
    }
}

/// 8-4-4-4-12 hex.
pub fn uuid_text(u: [u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// One component's `ComponentHealth`.
fn component_health(s: &ComponentStatus) -> pb::ComponentHealth {
    pb::ComponentHealth {
        healthy: s.healthy,
        start_time_unix_nano: s.start_time_unix_nano,
        last_error: s.last_error.clone(),
        status: s.status.clone(),
        status_time_unix_nano: 0,
        component_health_map: Default::default(),
    }
}

/// The pipelines' members as health-registry name prefixes (`receiver/otlp`,
/// `processor/batch`, `exporter/otlp`), by pipeline id.
type Members = Vec<(String, Vec<String>)>;

/// [`members`] of a config's text (empty if it does not parse, which a running config does).
fn pipeline_members(text: &str, factories: &Factories) -> Members {
    config::parse(text, factories).map(|(c, _)| members(&c.pipelines)).unwrap_or_default()
}

fn members(pipelines: &[Pipeline]) -> Members {
    pipelines
        .iter()
        .map(|p| {
            let names = p
                .receivers
                .iter()
                .map(|id| format!("receiver/{id}"))
                .chain(p.processors.iter().map(|id| format!("processor/{id}")))
                .chain(p.exporters.iter().map(|id| format!("exporter/{id}")))
                .collect();
            (p.id.to_string(), names)
        })
        .collect()
}

/// Whether the health-registry name `name` (`exporter/otlp/b/traces`) is of the member
/// `prefix` (`exporter/otlp/b`), and how specific the match is (the longest wins, so
/// `exporter/otlp` does not take `exporter/otlp/b`'s entries).
fn belongs(name: &str, prefix: &str) -> Option<usize> {
    (name == prefix || name.strip_prefix(prefix).is_some_and(|r| r.starts_with('/'))).then_some(prefix.len())
}

/// `ComponentHealth` of the agent: healthy when every component is; one entry per pipeline
/// (`pipeline:traces`, healthy when all its components are) holding its components' entries
/// (`receiver/otlp/grpc`, `exporter/otlp/traces`, the names of `/healthz`); a component in no
/// pipeline is an entry of its own.
fn health(statuses: &[ComponentStatus], members: &Members, start: u64) -> pb::ComponentHealth {
    let unhealthy: Vec<&ComponentStatus> = statuses.iter().filter(|s| !s.healthy).collect();
    let mut map: std::collections::HashMap<String, pb::ComponentHealth> = Default::default();
    for s in statuses {
        // The pipelines whose most specific member this component is.
        let best = members.iter().flat_map(|(_, names)| names.iter().filter_map(|n| belongs(&s.name, n))).max();
        let owners: Vec<&String> = members
            .iter()
            .filter(|(_, names)| best.is_some() && names.iter().any(|n| belongs(&s.name, n) == best))
            .map(|(p, _)| p)
            .collect();
        if owners.is_empty() {
            map.insert(s.name.clone(), component_health(s));
        }
        for p in owners {
            let entry = map.entry(format!("pipeline:{p}")).or_insert_with(|| pb::ComponentHealth {
                healthy: true,
                start_time_unix_nano: start,
                status: "running".into(),
                ..Default::default()
            });
            if !s.healthy {
                entry.healthy = false;
                entry.status = "unhealthy".into();
                entry.last_error = format!("{}: {}", s.name, s.last_error);
            }
            entry.component_health_map.insert(s.name.clone(), component_health(s));
        }
    }
    pb::ComponentHealth {
        healthy: unhealthy.is_empty(),
        start_time_unix_nano: start,
        last_error: unhealthy.iter().map(|s| format!("{}: {}", s.name, s.last_error)).collect::<Vec<_>>().join("; "),
        status: if unhealthy.is_empty() { "running" } else { "unhealthy" }.to_string(),
        status_time_unix_nano: now_ns(),
        component_health_map: map,
    }
}

fn effective(text: &str) -> pb::EffectiveConfig {
    let file = pb::AgentConfigFile { body: remote::redacted(text).into_bytes(), content_type: "text/yaml".into() };
    pb::EffectiveConfig {
        config_map: Some(pb::AgentConfigMap { config_map: [(remote::CONFIG_FILE.to_string(), file)].into() }),
    }
}

fn status(hash: &[u8], s: pb::RemoteConfigStatuses, error: &str) -> pb::RemoteConfigStatus {
    pb::RemoteConfigStatus {
        last_remote_config_hash: hash.to_vec(),
        status: s as i32,
        error_message: error.to_string(),
    }
}

/// The client's transport from `server:`.
fn transport(opamp: &OpampConfig) -> Option<Transport> {
    let (e, ws) = opamp.endpoint()?;
    let tls = TlsSettings {
        ca_file: e.tls.ca_file.clone(),
        cert_file: e.tls.cert_file.clone(),
        key_file: e.tls.key_file.clone(),
        insecure_skip_verify: e.tls.insecure_skip_verify,
        server_name_override: e.tls.server_name_override.clone(),
    };
    let headers: Vec<(String, String)> = e.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Some(if ws {
        Transport::WebSocket { endpoint: e.endpoint.clone(), headers, tls }
    } else {
        Transport::Http {
            endpoint: e.endpoint.clone(),
            headers,
            tls,
            polling_interval: e.polling_interval.unwrap_or(Duration::from_secs(30)),
        }
    })
}

/// The instance UID: the configured one, else the stored one (made and stored once).
pub fn instance_uid(opamp: &OpampConfig) -> Result<[u8; 16], String> {
    if let Some(u) = opamp.configured_uid() {
        return Ok(u);
    }
    otelprof_opamp::instance_uid::load_or_create(&opamp.storage.directory)
        .map_err(|e| format!("extensions.opamp.storage.directory ({}): {e}", opamp.storage.directory.display()))
}

/// Writes `bytes` to `dir/name` atomically (a temporary file renamed over it).
fn persist(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(name))
}

/// A client certificate the server rotated the agent to: (cert, key, CA when offered), files
/// in `storage.directory`.
type Identity = (PathBuf, PathBuf, Option<PathBuf>);

/// The file in `storage.directory` naming the generation of the rotated client certificate.
const CURRENT_CERT: &str = "opamp-client-current";

/// The rotated client certificate kept in `dir`, if any (and its files still exist).
fn rotated_identity(dir: &Path) -> Option<Identity> {
    let n = std::fs::read_to_string(dir.join(CURRENT_CERT)).ok()?;
    let n: u64 = n.trim().parse().ok()?;
    identity_files(dir, n)
}

fn identity_paths(dir: &Path, n: u64) -> Identity {
    (
        dir.join(format!("opamp-client-{n}.pem")),
        dir.join(format!("opamp-client-{n}.key")),
        Some(dir.join(format!("opamp-client-{n}-ca.pem"))),
    )
}

fn identity_files(dir: &Path, n: u64) -> Option<Identity> {
    let (cert, key, ca) = identity_paths(dir, n);
    if !cert.exists() || !key.exists() {
        return None;
    }
    Some((cert, key, ca.filter(|c| c.exists())))
}

/// Writes an offered certificate as generation `n` (the key 0600).
fn write_identity(dir: &Path, n: u64, offered: &pb::TlsCertificate) -> std::io::Result<Identity> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    let (cert, key, ca) = identity_paths(dir, n);
    std::fs::write(&cert, &offered.cert)?;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&key)?;
    std::io::Write::write_all(&mut f, &offered.private_key)?;
    let ca = match ca {
        Some(ca) if !offered.ca_cert.is_empty() => {
            std::fs::write(&ca, &offered.ca_cert)?;
            Some(ca)
        }
        _ => None,
    };
    Ok((cert, key, ca))
}

/// Starts an OpAMP client for `opamp`'s server, with `identity` instead of the configured
/// client certificate when given.
fn start_client(
    opamp: &OpampConfig,
    uid: [u8; 16],
    identity: Option<&Identity>,
) -> Option<(Client, mpsc::Receiver<ServerEvent>)> {
    let mut transport = transport(opamp)?;
    if let Some((cert, key, ca)) = identity {
        let tls = match &mut transport {
            Transport::WebSocket { tls, .. } | Transport::Http { tls, .. } => tls,
        };
        tls.cert_file = Some(cert.clone());
        tls.key_file = Some(key.clone());
        if let Some(ca) = ca {
            tls.ca_file = Some(ca.clone());
        }
    }
    let (tx, rx) = mpsc::channel(16);
    let client = Client::start(
        ClientSettings {
            transport,
            instance_uid: uid,
            description: description(uid),
            capabilities: capabilities(opamp),
        },
        tx,
    );
    Some((client, rx))
}

/// How long a client with a rotated certificate has to connect before the old one is kept.
const ROTATION_TIMEOUT: Duration = Duration::from_secs(10);

/// The own-metrics pusher's last outcome, shared with its task.
type LastOutcome = Arc<Mutex<Option<Result<(), String>>>>;

/// The supervisor's state between events.
struct State {
    local: String,
    factories: Factories,
    host: Host,
    opamp: OpampConfig,
    policy: Result<Policy, String>,
    client: Client,
    events: mpsc::Receiver<ServerEvent>,
    uid: [u8; 16],
    /// The config text running now, and the last good one to roll back to.
    good: String,
    /// The hash of the last remote config received, and the status reported for it.
    last: Option<(Vec<u8>, pb::RemoteConfigStatus)>,
    last_health: Option<Vec<ComponentStatus>>,
    /// The running config's pipelines and their components, for the health report.
    members: Members,
    render: Render,
    /// Own metrics being pushed: the pusher, the offer's hash and its last outcome (written by
    /// the pusher's task, reported at the next tick through the client of the moment).
    pusher: Option<(OwnMetrics, Vec<u8>, LastOutcome)>,
    start_ns: u64,
}

impl Managed {
    /// Runs until `stop`; returns the graph as it runs then, for the agent's shutdown.
    /// `running_text` is the config the graph was built from; `running_hash` the remote
    /// config's hash when it came from the persisted last good one.
    pub async fn run(
        self,
        mut running: RunningGraph,
        running_text: String,
        running_hash: Option<Vec<u8>>,
        stop: CancellationToken,
    ) -> RunningGraph {
        let Managed { local, factories, host, opamp, own_metrics } = self;
        let uid = match instance_uid(&opamp) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!("opamp: {e}; using a new instance UID for this run only");
                otelprof_opamp::instance_uid::new_v7()
            }
        };
        let identity = rotated_identity(&opamp.storage.directory);
        if identity.is_some() {
            tracing::info!("opamp: using the client certificate the server rotated to (in storage.directory)");
        }
        let Some((client, events)) = start_client(&opamp, uid, identity.as_ref()) else {
            tracing::error!("opamp: no server configured (extensions.opamp.server); not managed");
            stop.cancelled().await;
            return running;
        };
        client.set_effective_config(effective(&running_text));
        let members = pipeline_members(&running_text, &factories);
        let mut state = State {
            policy: policy(&opamp),
            local,
            factories,
            host,
            client,
            events,
            uid,
            members,
            render: own_metrics,
            pusher: None,
            good: running_text,
            last: None,
            last_health: None,
            start_ns: now_ns(),
            opamp,
        };
        if let Some(hash) = running_hash {
            let s = status(&hash, pb::RemoteConfigStatuses::Applied, "");
            state.client.set_remote_config_status(s.clone());
            state.last = Some((hash, s));
        }
        state.report_health();
        let mut tick = tokio::time::interval(HEALTH_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    state.report_health();
                    state.report_own_metrics();
                }
                event = state.events.recv() => match event {
                    None => break,
                    Some(ServerEvent::RemoteConfig(offered)) => running = state.apply(running, offered).await,
                    Some(ServerEvent::NewInstanceUid(uid)) => {
                        tracing::info!("opamp: the server assigned the instance UID {}", uuid_text(uid));
                        if state.opamp.configured_uid().is_none() {
                            if let Err(e) = otelprof_opamp::instance_uid::store(&state.opamp.storage.directory, uid) {
                                tracing::warn!("opamp: storing the new instance UID: {e}");
                            }
                        }
                    }
                    Some(ServerEvent::ConnectFailed(reason)) => tracing::debug!("opamp: {reason}"),
                    Some(ServerEvent::OpampConnectionSettings { settings, hash }) => state.rotate(settings, hash).await,
                    Some(ServerEvent::OwnMetrics { settings, hash }) => state.push_own_metrics(settings, hash).await,
                    Some(_) => {}
                },
            }
        }
        if let Some((pusher, _, _)) = state.pusher.take() {
            pusher.stop().await;
        }
        state.client.stop(Duration::from_secs(2)).await;
        running
    }
}

impl State {
    /// `connection_settings.own_metrics` offered: the agent's own metrics (the `otelcol_*` and
    /// `otelprof_*` series of `/metrics`) go to that OTLP/HTTP destination every 10 s, until
    /// another offer replaces it (an empty destination stops them). The outcome is reported as
    /// the offer's connection settings status: APPLIED once a push succeeded, FAILED with the
    /// reason otherwise.
    async fn push_own_metrics(&mut self, settings: pb::TelemetryConnectionSettings, hash: Vec<u8>) {
        if let Some((old, _, _)) = self.pusher.take() {
            old.stop().await;
        }
        if settings.destination_endpoint.is_empty() {
            return self.connection_status(&hash, pb::ConnectionSettingsStatuses::Applied, "");
        }
        let last: LastOutcome = Arc::default();
        let sink = last.clone();
        let outcome: super::own_metrics::Outcome = Arc::new(move |r| {
            *sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        });
        let resource = vec![
            own_kv("service.name", "otelprof".into()),
            own_kv("service.version", env!("CARGO_PKG_VERSION").into()),
            own_kv("service.instance.id", uuid_text(self.uid)),
        ];
        tracing::info!("opamp: sending own metrics to {}", settings.destination_endpoint);
        match OwnMetrics::start(settings, self.render.clone(), resource, OWN_METRICS_EVERY, outcome) {
            Ok(p) => {
                self.connection_status(&hash, pb::ConnectionSettingsStatuses::Applying, "");
                self.pusher = Some((p, hash, last));
            }
            Err(e) => self.connection_status(&hash, pb::ConnectionSettingsStatuses::Failed, &e),
        }
    }

    /// The own-metrics pusher's last outcome as the offer's status (the client sends it only
    /// when it changed).
    fn report_own_metrics(&mut self) {
        let Some((_, hash, last)) = &self.pusher else { return };
        let outcome = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let hash = hash.clone();
        match outcome {
            Some(Ok(())) => self.connection_status(&hash, pb::ConnectionSettingsStatuses::Applied, ""),
            Some(Err(e)) => self.connection_status(&hash, pb::ConnectionSettingsStatuses::Failed, &e),
            None => {}
        }
    }

    fn connection_status(&self, hash: &[u8], s: pb::ConnectionSettingsStatuses, error: &str) {
        if s == pb::ConnectionSettingsStatuses::Failed {
            tracing::warn!("opamp: connection settings refused: {error}");
        }
        self.client.set_connection_settings_status(pb::ConnectionSettingsStatus {
            last_connection_settings_hash: hash.to_vec(),
            status: s as i32,
            error_message: error.to_string(),
        });
    }

    /// Offered OpAMP connection settings: the heartbeat interval is applied by the client; a
    /// client certificate is tried on a second connection, and only once that one is up does
    /// it replace the current one (kept in `storage.directory` for restarts). Anything else
    /// (another server, other headers) is refused: the server's address and credentials are
    /// the local config's.
    async fn rotate(&mut self, offered: pb::OpAmpConnectionSettings, hash: Vec<u8>) {
        let endpoint = self.opamp.endpoint().map(|(e, _)| e.endpoint.clone()).unwrap_or_default();
        if !offered.destination_endpoint.is_empty() && offered.destination_endpoint != endpoint {
            let e = "changing the OpAMP server remotely is not supported (only the client certificate and the heartbeat interval)";
            return self.connection_status(&hash, pb::ConnectionSettingsStatuses::Failed, e);
        }
        if offered.headers.as_ref().is_some_and(|h| !h.headers.is_empty()) {
            let e = "changing the OpAMP connection's headers remotely is not supported";
            return self.connection_status(&hash, pb::ConnectionSettingsStatuses::Failed, e);
        }
        let Some(cert) = offered.certificate.filter(|c| !c.cert.is_empty()) else {
            // A heartbeat interval only: the client applied it.
            return self.connection_status(&hash, pb::ConnectionSettingsStatuses::Applied, "");
        };
        if !(endpoint.starts_with("wss://") || endpoint.starts_with("https://")) {
            let e = "a client certificate needs a TLS connection (wss:// or https://)";
            return self.connection_status(&hash, pb::ConnectionSettingsStatuses::Failed, e);
        }
        self.connection_status(&hash, pb::ConnectionSettingsStatuses::Applying, "");
        let dir = self.opamp.storage.directory.clone();
        let current = std::fs::read_to_string(dir.join(CURRENT_CERT)).ok().and_then(|n| n.trim().parse::<u64>().ok());
        let next = current.map_or(1, |n| n + 1);
        let identity = match write_identity(&dir, next, &cert) {
            Ok(i) => i,
            Err(e) => {
                let e = format!("storing the offered certificate in {}: {e}", dir.display());
                return self.connection_status(&hash, pb::ConnectionSettingsStatuses::Failed, &e);
            }
        };
        tracing::info!("opamp: trying the offered client certificate on a second connection");
        let Some((client, mut events)) = start_client(&self.opamp, self.uid, Some(&identity)) else {
            return self.connection_status(&hash, pb::ConnectionSettingsStatuses::Failed, "no server configured");
        };
        let outcome = tokio::time::timeout(ROTATION_TIMEOUT, async {
            loop {
                match events.recv().await {
                    Some(ServerEvent::Connected) => return Ok(()),
                    Some(ServerEvent::ConnectFailed(e)) => return Err(e),
                    Some(_) => {}
                    None => return Err("the client ended".to_string()),
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err(format!("no connection within {ROTATION_TIMEOUT:?}")));
        match outcome {
            Ok(()) => {
                let old = std::mem::replace(&mut self.client, client);
                self.events = events;
                // The new connection reports the whole state from its first message.
                self.client.set_effective_config(effective(&self.good));
                if let Some((_, st)) = &self.last {
                    self.client.set_remote_config_status(st.clone());
                }
                self.last_health = None;
                self.report_health();
                if let Err(e) = persist(&dir, CURRENT_CERT, next.to_string().as_bytes()) {
                    tracing::warn!("opamp: recording the rotated certificate: {e}");
                }
                if let Some(n) = current {
                    for f in [identity_paths(&dir, n).0, identity_paths(&dir, n).1] {
                        let _ = std::fs::remove_file(f);
                    }
                    if let Some(ca) = identity_paths(&dir, n).2 {
                        let _ = std::fs::remove_file(ca);
                    }
                }
                tracing::info!("opamp: connected with the rotated client certificate; the old connection is closed");
                old.stop(Duration::from_secs(1)).await;
                self.connection_status(&hash, pb::ConnectionSettingsStatuses::Applied, "");
            }
            Err(e) => {
                client.stop(Duration::from_millis(200)).await;
                for f in [Some(identity.0), Some(identity.1), identity.2].into_iter().flatten() {
                    let _ = std::fs::remove_file(f);
                }
                let e = format!("the offered client certificate did not connect ({e}); the current one is kept");
                self.connection_status(&hash, pb::ConnectionSettingsStatuses::Failed, &e);
            }
        }
    }

    fn report_health(&mut self) {
        let now = self.host.health.statuses();
        if self.last_health.as_ref() != Some(&now) {
            self.client.set_health(health(&now, &self.members, self.start_ns));
            self.last_health = Some(now);
        }
    }

    fn report(&mut self, hash: &[u8], s: pb::RemoteConfigStatuses, error: &str) {
        let st = status(hash, s, error);
        if s == pb::RemoteConfigStatuses::Failed {
            tracing::warn!("opamp: remote config refused: {error}");
        }
        self.client.set_remote_config_status(st.clone());
        self.last = Some((hash.to_vec(), st));
    }

    async fn apply(&mut self, running: RunningGraph, offered: pb::AgentRemoteConfig) -> RunningGraph {
        let hash = offered.config_hash.clone();
        if let Some((last, st)) = &self.last {
            if *last == hash {
                // Received before: not applied again; its status is reported again.
                self.client.set_remote_config_status(st.clone());
                return running;
            }
        }
        if !self.opamp.remote_config.enabled {
            self.report(
                &hash,
                pb::RemoteConfigStatuses::Failed,
                "remote configuration is not enabled in the local config (extensions.opamp.remote_config.enabled)",
            );
            return running;
        }
        let policy = match &self.policy {
            Ok(p) => p,
            Err(e) => {
                let e = e.clone();
                self.report(&hash, pb::RemoteConfigStatuses::Failed, &e);
                return running;
            }
        };
        let text = match merged(&self.local, &offered, policy, &self.factories) {
            Ok(t) => t,
            Err(e) => {
                self.report(&hash, pb::RemoteConfigStatuses::Failed, &e);
                return running;
            }
        };
        // Built (every exporter and processor made, OTTL compiled) before anything is stopped.
        let next = match config::parse(&text, &self.factories)
            .map_err(|e| without_position(&e))
            .and_then(|(cfg, _)| Graph::build_next(cfg, &self.host, &running).map_err(|e| e.to_string()))
        {
            Ok(g) => g,
            Err(e) => {
                self.report(&hash, pb::RemoteConfigStatuses::Failed, &e);
                return running;
            }
        };
        self.report(&hash, pb::RemoteConfigStatuses::Applying, "");
        tracing::info!("opamp: applying a remote config");
        let (running, result) = running.replace(next).await;
        let failure = match result {
            Ok(report) => {
                tracing::info!(
                    "opamp: swapped in: kept {:?}, reconfigured live {:?}, restarted {:?}, started {:?}, stopped {:?}; exporters kept {:?}",
                    report.kept,
                    report.reconfigured,
                    report.restarted,
                    report.started,
                    report.stopped,
                    report.kept_exporters
                );
                self.wait_healthy().await.err()
            }
            Err(e) => Some(e.to_string()),
        };
        match failure {
            None => {
                self.good = text;
                self.members = pipeline_members(&self.good, &self.factories);
                self.client.set_effective_config(effective(&self.good));
                if let Err(e) = persist(&self.opamp.storage.directory, LAST_GOOD, &offered.encode_to_vec()) {
                    tracing::warn!(
                        "opamp: persisting the remote config in {}: {e}",
                        self.opamp.storage.directory.display()
                    );
                }
                self.report(&hash, pb::RemoteConfigStatuses::Applied, "");
                self.report_health();
                running
            }
            Some(e) => {
                let running = self.roll_back(running).await;
                self.report(
                    &hash,
                    pb::RemoteConfigStatuses::Failed,
                    &format!("{e} (rolled back to the last good config)"),
                );
                self.report_health();
                running
            }
        }
    }

    /// Every component healthy within `config_apply_timeout`: a short settling time, then
    /// checks until the health is good or the time is up.
    async fn wait_healthy(&self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.opamp.config_apply_timeout;
        let settle = (self.opamp.config_apply_timeout / 5).min(Duration::from_millis(500));
        tokio::time::sleep(settle).await;
        loop {
            match self.host.health.check() {
                Ok(()) => return Ok(()),
                Err(problems) if tokio::time::Instant::now() >= deadline => {
                    let p: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                    return Err(format!(
                        "not healthy within config_apply_timeout ({:?}): {}",
                        self.opamp.config_apply_timeout,
                        p.join("; ")
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The last good config swapped back in, the same way.
    async fn roll_back(&mut self, running: RunningGraph) -> RunningGraph {
        tracing::warn!("opamp: rolling back to the last good config");
        let next = match config::parse(&self.good, &self.factories)
            .map_err(|e| e.to_string())
            .and_then(|(cfg, _)| Graph::build_next(cfg, &self.host, &running).map_err(|e| e.to_string()))
        {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("opamp: the last good config no longer builds ({e}); keeping what runs");
                return running;
            }
        };
        let (running, result) = running.replace(next).await;
        if let Err(e) = result {
            tracing::error!("opamp: rolling back: {e}");
        }
        running
    }
}
