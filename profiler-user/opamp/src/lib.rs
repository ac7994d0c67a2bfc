//! OpAMP client: how an otelprof agent is managed from an OpAMP server.
//!
//! The agent tells the client its state (description, capabilities, health, effective config,
//! status of remote config and connection settings) through cheap setters; the client keeps
//! one connection to the server (WebSocket, or HTTP polling), sends that state the way the
//! protocol wants it (full on every new connection, then only what changed, heartbeats), and
//! hands what the server offers (remote config, connection settings, commands, a new instance
//! UID) back to the agent as [`ServerEvent`]s. It reconnects on its own, with backoff and the
//! server's retry-after, so the agent never handles network errors.
//!
//! ```no_run
//! # async fn demo() -> Result<(), otelprof_opamp::Error> {
//! use otelprof_opamp::{capabilities as cap, instance_uid, Client, ClientSettings, Transport};
//! let (tx, mut events) = tokio::sync::mpsc::channel(16);
//! let client = Client::start(
//!     ClientSettings {
//!         transport: Transport::WebSocket {
//!             endpoint: "wss://opamp.example:4320/v1/opamp".into(),
//!             headers: vec![],
//!             tls: Default::default(),
//!         },
//!         instance_uid: instance_uid::load_or_create("/var/lib/otelprof".as_ref())?,
//!         description: Default::default(),
//!         capabilities: cap::REPORTS_STATUS | cap::REPORTS_HEALTH | cap::REPORTS_HEARTBEAT,
//!     },
//!     tx,
//! );
//! client.set_health(otelprof_opamp::proto::ComponentHealth { healthy: true, ..Default::default() });
//! while let Some(event) = events.recv().await {
//!     println!("{event:?}");
//! }
//! client.stop(std::time::Duration::from_secs(2)).await;
//! # Ok(()) }
//! ```
//!
//! Wire details: WebSocket binary frames start with the varint header 0; HTTP POSTs
//! `application/x-protobuf` with the `OpAMP-Instance-UID` header and accepts gzip answers;
//! messages over 64 MiB are refused both ways.

#![deny(missing_docs)]

pub mod capabilities;
mod codec;
mod conn;
mod error;
mod http;
pub mod instance_uid;
mod retry;
mod state;
mod tls;
mod ws;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

pub use codec::MAX_MESSAGE_BYTES;
pub use error::Error;
pub use http::INSTANCE_UID_HEADER;
/// The generated `opamp.v1` types the API uses.
pub use otelprof_proto::opamp as proto;

use conn::Ctx;
use retry::LogLimiter;
use state::{AgentState, Counters, Shared};

/// TLS for `wss://` and `https://` endpoints. The default verifies the server against the
/// system's roots and sends no client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of the CAs to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. For test servers only: logged as a warning.
    pub insecure_skip_verify: bool,
    /// Verify the server certificate against this name instead of the endpoint's host (and, on
    /// WebSocket, send it as SNI).
    pub server_name_override: Option<String>,
}

/// How to reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `ws://` or `wss://`: one long-lived connection, server messages arrive at any time.
    WebSocket {
        /// The URL, e.g. `wss://opamp.example:4320/v1/opamp`.
        endpoint: String,
        /// Extra request headers (e.g. `Authorization`).
        headers: Vec<(String, String)>,
        /// TLS for `wss://`.
        tls: TlsSettings,
    },
    /// `http://` or `https://`: a POST on every change and every polling interval.
    Http {
        /// The URL, e.g. `https://opamp.example:4320/v1/opamp`.
        endpoint: String,
        /// Extra request headers (e.g. `Authorization`).
        headers: Vec<(String, String)>,
        /// TLS for `https://`.
        tls: TlsSettings,
        /// How often to poll when the server offers no heartbeat interval.
        polling_interval: Duration,
    },
}

/// What the client starts with.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Where the server is.
    pub transport: Transport,
    /// The agent's instance UID (see [`instance_uid::load_or_create`]).
    pub instance_uid: [u8; 16],
    /// What the agent is (`service.name`, host, ...).
    pub description: proto::AgentDescription,
    /// [`capabilities`] bits; undefined bits are cleared.
    pub capabilities: u64,
}

/// Tuning that callers rarely change; tests shorten the waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// First wait after a failed connection (the wait doubles up to `backoff_max`, jittered).
    pub backoff_initial: Duration,
    /// Longest wait between connection attempts.
    pub backoff_max: Duration,
    /// Heartbeat interval when the agent has `REPORTS_HEARTBEAT` and the server offers none.
    pub default_heartbeat: Duration,
    /// Limit for connecting (TCP, TLS, WebSocket handshake), for one HTTP request and for one
    /// WebSocket send (a server that stops reading counts as a failed connection).
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            default_heartbeat: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// What the server said that the agent must act on, plus connection news.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// A connection is up (WebSocket handshake done, or first successful POST after a failure).
    Connected,
    /// A connection attempt or an established connection failed; the client retries by itself.
    ConnectFailed(String),
    /// A remote configuration offer; answer with [`Client::set_remote_config_status`].
    RemoteConfig(proto::AgentRemoteConfig),
    /// The server assigned a new instance UID; the client already uses it, the agent should
    /// store it ([`instance_uid::store`]).
    NewInstanceUid([u8; 16]),
    /// Where to send the agent's own metrics.
    OwnMetrics {
        /// The destination, headers and certificate offered.
        settings: proto::TelemetryConnectionSettings,
        /// `ConnectionSettingsOffers.hash`, for [`Client::set_connection_settings_status`].
        hash: Vec<u8>,
    },
    /// New OpAMP connection settings; the heartbeat interval in it is already applied, the rest
    /// is for the agent to verify and apply (by restarting the client), then report with
    /// [`Client::set_connection_settings_status`].
    OpampConnectionSettings {
        /// The offered settings.
        settings: proto::OpAmpConnectionSettings,
        /// `ConnectionSettingsOffers.hash`, for [`Client::set_connection_settings_status`].
        hash: Vec<u8>,
    },
    /// A command, e.g. restart.
    Command(proto::ServerToAgentCommand),
}

/// Counters of what the client did, for the agent's own metrics and for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages sent (WebSocket frames, successful POSTs).
    pub sent: u64,
    /// Server messages received.
    pub received: u64,
    /// Connections established.
    pub connects: u64,
    /// Connections established after the first (`connects - 1`).
    pub reconnects: u64,
    /// Failed connection attempts and dropped connections.
    pub connect_failures: u64,
    /// Messages refused for being over 64 MiB, either direction.
    pub refused_oversize: u64,
    /// `ServerErrorResponse`s received.
    pub server_errors: u64,
    /// Server messages that could not be decoded and were ignored.
    pub decode_errors: u64,
}

/// The OpAMP client: a handle to the connection task. Cloning is cheap; the task stops when
/// [`Client::stop`] is called or the last handle is dropped (then with a 1 s grace for the
/// disconnect message).
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    stop: watch::Sender<Option<tokio::time::Instant>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Client {
    /// Starts the connection task on the current tokio runtime (panics outside one, like
    /// `tokio::spawn`). Events go to `events`; offers and commands wait for room in the
    /// channel, connection news is dropped when it is full.
    pub fn start(settings: ClientSettings, events: mpsc::Sender<ServerEvent>) -> Client {
        Self::start_with_options(settings, events, ClientOptions::default())
    }

    /// [`Client::start`] with non-default waits.
    pub fn start_with_options(
        settings: ClientSettings,
        events: mpsc::Sender<ServerEvent>,
        options: ClientOptions,
    ) -> Client {
        let shared = Arc::new(Shared {
            state: Mutex::new(AgentState::new(settings.instance_uid, settings.description, settings.capabilities)),
            wake: Notify::new(),
            counters: Counters::default(),
        });
        let (stop, stop_rx) = watch::channel(None);
        let ctx = Ctx {
            shared: shared.clone(),
            events,
            options,
            log_server_error: LogLimiter::new(Duration::from_secs(60)),
            log_decode: LogLimiter::new(Duration::from_secs(60)),
            log_oversize: LogLimiter::new(Duration::from_secs(60)),
        };
        let task = tokio::spawn(conn::run(settings.transport, ctx, stop_rx));
        Client { inner: Arc::new(Inner { shared, stop, task: Mutex::new(Some(task)) }) }
    }

    fn update(&self, f: impl FnOnce(&mut AgentState) -> bool) {
        let changed = f(&mut self.inner.shared.state());
        if changed {
            self.inner.shared.wake.notify_one();
        }
    }

    /// Reports the agent's health (sent only if it differs from the last value).
    pub fn set_health(&self, h: proto::ComponentHealth) {
        self.update(|s| s.set_health(h))
    }

    /// Reports the configuration the agent runs with.
    pub fn set_effective_config(&self, c: proto::EffectiveConfig) {
        self.update(|s| s.set_effective_config(c))
    }

    /// Reports what became of the last remote configuration.
    pub fn set_remote_config_status(&self, s: proto::RemoteConfigStatus) {
        self.update(|st| st.set_remote_config_status(s))
    }

    /// Changes the capabilities (sent in every message; undefined bits cleared).
    pub fn set_capabilities(&self, caps: u64) {
        self.update(|s| s.set_capabilities(caps))
    }

    /// Changes the instance UID used from the next message on.
    pub fn set_instance_uid(&self, uid: [u8; 16]) {
        self.update(|s| s.set_instance_uid(uid))
    }

    /// Reports what became of the last offered connection settings.
    pub fn set_connection_settings_status(&self, s: proto::ConnectionSettingsStatus) {
        self.update(|st| st.set_connection_settings_status(s))
    }

    /// Changes the agent description (e.g. after the host name changed).
    pub fn set_description(&self, d: proto::AgentDescription) {
        self.update(|s| s.set_description(d))
    }

    /// The instance UID in use (the server may have replaced the one the client started with).
    pub fn instance_uid(&self) -> [u8; 16] {
        self.inner.shared.state().instance_uid
    }

    /// What the client has done so far.
    pub fn stats(&self) -> Stats {
        self.inner.shared.counters.snapshot()
    }

    /// Sends a last message with `agent_disconnect` and closes the connection, all within
    /// `within` (best effort: a server that does not answer in time is cut off).
    pub async fn stop(self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let _ = self.inner.stop.send(Some(deadline));
        let task = self.inner.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut task) = task {
            // A little past the deadline: the task gives up on the server at the deadline itself.
            let grace = deadline + Duration::from_millis(200);
            if tokio::time::timeout_at(grace, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}
