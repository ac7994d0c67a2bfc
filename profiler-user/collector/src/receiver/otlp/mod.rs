//! The `otlp` receiver: OTLP over gRPC (`:4317`) and HTTP (`:4318`) for traces, metrics,
//! logs and profiles, configured as the Collector's:
//!
//! ```yaml
//! receivers:
//!   otlp:
//!     protocols:
//!       grpc:                      # present = enabled, a null value = the defaults
//!         endpoint: localhost:4317
//!         max_recv_msg_size_mib: 4 # after decompression
//!         tls: { cert_file: server.pem, key_file: server.key, client_ca_file: ca.pem }
//!         auth: { bearer_token_file: /etc/otelprof/token }
//!       http:
//!         endpoint: localhost:4318
//!         max_request_body_size: 20971520   # bytes, after decompression
//! ```
//!
//! The parts: [`config`] (keys and defaults), [`grpc`] and [`http`] (the two servers and their
//! status codes), [`decompress`] / [`zstd`] (bodies inflated as they arrive, under the
//! limit), [`encoding`] / [`json`] (protobuf and OTLP/JSON), [`tls`], [`auth`] (bearer
//! token), [`deliver`] (handing data to the pipeline and counting it).
//!
//! Ports: an endpoint with port 0 binds a free port; [`Listening`] (taken from the receiver
//! before it starts) tells the bound addresses, and they are logged at `info`.

pub mod auth;
pub mod config;
pub mod decompress;
pub mod deliver;
pub mod encoding;
pub mod grpc;
pub mod http;
pub mod json;
pub mod tls;
pub mod zstd;

#[cfg(test)]
mod tests;

use std::{
    fmt::Display,
    net::SocketAddr,
    sync::{atomic::AtomicBool, Arc, OnceLock},
};

use async_trait::async_trait;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use self::{
    auth::BearerToken,
    config::{bind_address, Config},
    deliver::{Delivery, PerSignal},
    grpc::GrpcSettings,
    http::HttpSettings,
    tls::Tls,
};
use crate::{
    component::{ComponentError, ComponentId, Host, Outputs, Receiver, ReceiverFactory},
    config::{deserialize_at, ConfigError},
    health::{panic_message, HealthHandle, Liveness},
    signal::Signal,
};

/// Makes `otlp` receivers.
pub struct OtlpReceiverFactory;

impl ReceiverFactory for OtlpReceiverFactory {
    fn kind(&self) -> &'static str {
        "otlp"
    }

    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn create(
        &self,
        id: &ComponentId,
        config: serde_yaml::Value,
        path: &str,
    ) -> Result<Box<dyn Receiver>, ConfigError> {
        Ok(Box::new(OtlpReceiver::new(id, config, path)?))
    }
}

/// The addresses a receiver's servers bound, known once it started.
#[derive(Clone, Debug, Default)]
pub struct Listening {
    inner: Arc<(OnceLock<SocketAddr>, OnceLock<SocketAddr>)>,
}

impl Listening {
    pub fn grpc(&self) -> Option<SocketAddr> {
        self.inner.0.get().copied()
    }

    pub fn http(&self) -> Option<SocketAddr> {
        self.inner.1.get().copied()
    }
}

/// An `otlp` receiver with its config checked and its files (TLS, token) read.
#[derive(Debug)]
pub struct OtlpReceiver {
    id: ComponentId,
    grpc: Option<(String, GrpcSettings)>,
    http: Option<(String, HttpSettings)>,
    listening: Listening,
}

impl OtlpReceiver {
    /// Parses and checks the config at `path` (`receivers.otlp`); reads the TLS and token files.
    pub fn new(id: &ComponentId, config: serde_yaml::Value, path: &str) -> Result<Self, ConfigError> {
        let mut config: Config = deserialize_at(path, config)?;
        config::validate(&mut config, path)?;
        let load_auth = |auth: Option<config::AuthConfig>, at: &str| -> Result<_, ConfigError> {
            auth.map(|a| BearerToken::load(&a, &format!("{at}.auth")).map(Arc::new)).transpose()
        };
        let load_tls = |tls: Option<config::TlsConfig>, at: &str| -> Result<_, ConfigError> {
            tls.map(|t| Tls::load(&t, &format!("{at}.tls"))).transpose()
        };
        let grpc = match config.protocols.grpc {
            Some(g) => {
                let at = format!("{path}.protocols.grpc");
                let settings = GrpcSettings {
                    // validate() bounds it below 4 GiB.
                    max_message_size: usize::try_from(g.max_recv_msg_size_mib << 20).unwrap_or(usize::MAX),
                    max_concurrent_streams: g.max_concurrent_streams,
                    tls: load_tls(g.tls, &at)?,
                    auth: load_auth(g.auth, &at)?,
                };
                Some((g.endpoint, settings))
            }
            None => None,
        };
        let http = match config.protocols.http {
            Some(h) => {
                let at = format!("{path}.protocols.http");
                let settings = HttpSettings {
                    max_body_size: usize::try_from(h.max_request_body_size).unwrap_or(usize::MAX),
                    tls: load_tls(h.tls, &at)?,
                    auth: load_auth(h.auth, &at)?,
                    traces_path: h.traces_url_path,
                    metrics_path: h.metrics_url_path,
                    logs_path: h.logs_url_path,
                };
                Some((h.endpoint, settings))
            }
            None => None,
        };
        Ok(Self { id: id.clone(), grpc, http, listening: Listening::default() })
    }

    /// Where it listens, once started (for tests and for whoever configured port 0).
    pub fn listening(&self) -> Listening {
        self.listening.clone()
    }

    /// One delivery per signal that has a pipeline, counting under `transport`.
    fn deliveries(
        &self,
        outputs: &Outputs,
        host: &Host,
        transport: &str,
        open: &Arc<AtomicBool>,
    ) -> PerSignal<Arc<Delivery>> {
        let mut out: PerSignal<Arc<Delivery>> = Default::default();
        let id = self.id.to_string();
        for signal in outputs.signals() {
            if let Some(next) = outputs.get(signal) {
                let metrics = host.telemetry.receiver(&id, transport, signal);
                out[signal.index()] = Some(Arc::new(Delivery::new(next.clone(), metrics, open.clone())));
            }
        }
        out
    }
}

async fn bind(id: &ComponentId, protocol: &str, endpoint: &str) -> Result<TcpListener, ComponentError> {
    TcpListener::bind(bind_address(endpoint))
        .await
        .map_err(|e| ComponentError::new(id, format!("protocols.{protocol}: cannot listen on {endpoint}: {e}")))
}

#[async_trait]
impl Receiver for OtlpReceiver {
    async fn start(self: Box<Self>, outputs: Outputs, host: &Host) -> Result<JoinHandle<()>, ComponentError> {
        // Both are bound before either serves, so a failed bind starts nothing.
        let grpc_listener = match &self.grpc {
            Some((endpoint, _)) => Some(bind(&self.id, "grpc", endpoint).await?),
            None => None,
        };
        let http_listener = match &self.http {
            Some((endpoint, _)) => Some(bind(&self.id, "http", endpoint).await?),
            None => None,
        };
        let open = Arc::new(AtomicBool::new(true));
        // Receivers drain in half the shutdown budget; processors and exporters need the rest.
        let drain = host.shutdown_timeout / 2;
        let mut tasks = Vec::new();
        let local = |l: &TcpListener| l.local_addr().map_err(|e| ComponentError::new(&self.id, e));
        if let (Some(listener), Some((_, settings))) = (grpc_listener, self.grpc.as_ref()) {
            let addr = local(&listener)?;
            let _ = self.listening.inner.0.set(addr);
            tracing::info!("receiver {}: OTLP/gRPC listening on {addr}", self.id);
            let deliveries = self.deliveries(&outputs, host, "grpc", &open);
            let settings = settings.clone();
            let stop = host.stop.clone();
            let serve = async move {
                let serve = grpc::serve(listener, &settings, deliveries, stop.clone().cancelled_owned());
                tokio::select! {
                    result = serve => result,
                    _ = async { stop.cancelled().await; tokio::time::sleep(drain).await } => {
                        tracing::warn!("otlp grpc: calls still in flight after {drain:?}; no longer handing them on");
                        Ok(())
                    }
                }
            };
            let health = host.health.register(format!("receiver/{}/grpc", self.id), Liveness::Running);
            tasks.push(tokio::spawn(supervise(tokio::spawn(serve), health, host.stop.clone())));
        }
        if let (Some(listener), Some((_, settings))) = (http_listener, self.http.as_ref()) {
            let addr = local(&listener)?;
            let _ = self.listening.inner.1.set(addr);
            tracing::info!("receiver {}: OTLP/HTTP listening on {addr}", self.id);
            let deliveries = self.deliveries(&outputs, host, "http", &open);
            let settings = settings.clone();
            let stop = host.stop.clone();
            let serve = async move {
                http::serve(listener, &settings, deliveries, stop, drain).await;
                Ok::<(), std::convert::Infallible>(())
            };
            let health = host.health.register(format!("receiver/{}/http", self.id), Liveness::Running);
            tasks.push(tokio::spawn(supervise(tokio::spawn(serve), health, host.stop.clone())));
        }
        Ok(tokio::spawn(async move {
            for task in tasks {
                let _ = task.await;
            }
            // Anything still in flight (past the drain time) is refused from now on.
            open.store(false, std::sync::atomic::Ordering::Release);
        }))
    }
}

/// Reports a server task's end to health: as asked after `stop`, a failure otherwise.
async fn supervise<E: Display>(task: JoinHandle<Result<(), E>>, health: HealthHandle, stop: CancellationToken) {
    match task.await {
        Ok(Ok(())) if stop.is_cancelled() => health.stop(),
        Ok(Ok(())) => health.fail("stopped serving without being asked to"),
        Ok(Err(e)) => health.fail(format!("serving failed: {e}")),
        Err(e) if e.is_panic() => health.fail(format!("panicked: {}", panic_message(&*e.into_panic()))),
        Err(_) => health.fail("cancelled"),
    }
}
