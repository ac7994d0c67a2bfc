//! The agent's own HTTP endpoints, at `service.telemetry.metrics.address`:
//!
//! - `/metrics`: Prometheus text of the collector's own metrics ([`crate::telemetry`], in the
//!   Collector's names) followed by every [`MetricsSource`] the binary registered (the
//!   profiler's `otelprof_*` counters);
//! - `/healthz`: 200 while every registered component is alive ([`crate::health`]), else 503
//!   naming each one that is not — a liveness probe restarts a wedged agent;
//! - `/readyz`: 200 once the pipelines started and while healthy; 503 before the start and
//!   from the beginning of shutdown, so a readiness probe stops routing OTLP senders to an
//!   agent that is going away.
//!
//! One listener, served with hyper's HTTP/1 connection handling; each connection is its own
//! task, so a slow scraper does not hold up a probe.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{CONTENT_TYPE, RETRY_AFTER},
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    component::{ComponentError, Host},
    health::Problem,
};

/// More Prometheus text for `/metrics`, rendered at each scrape after the collector's own.
pub trait MetricsSource: Send + Sync {
    fn render(&self, out: &mut String);
}

/// Whether the agent takes traffic: set by the graph once its receivers started, cleared when
/// shutdown begins. Cheap to clone; all clones are one flag.
#[derive(Clone, Default, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the endpoints answer from.
#[derive(Clone)]
pub struct Endpoints {
    host: Host,
    readiness: Readiness,
    sources: Vec<Arc<dyn MetricsSource>>,
}

/// An answer: status and a text body.
type Answer = (StatusCode, String);

impl Endpoints {
    pub fn new(host: &Host, readiness: Readiness) -> Self {
        Self { host: host.clone(), readiness, sources: Vec::new() }
    }

    /// Adds metrics rendered after the collector's own.
    pub fn with_source(mut self, source: Arc<dyn MetricsSource>) -> Self {
        self.sources.push(source);
        self
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        self.host.telemetry.render(&mut out);
        for s in &self.sources {
            s.render(&mut out);
        }
        out
    }

    fn unhealthy(problems: &[Problem]) -> Answer {
        let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {}\n", list.join("; ")))
    }

    fn healthz(&self) -> Answer {
        match self.host.health.check() {
            Ok(()) => (StatusCode::OK, "ok\n".into()),
            Err(problems) => Self::unhealthy(&problems),
        }
    }

    fn readyz(&self) -> Answer {
        match self.host.health.check() {
            Err(problems) => Self::unhealthy(&problems),
            Ok(()) if self.readiness.is_ready() => (StatusCode::OK, "ready\n".into()),
            Ok(()) => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into()),
        }
    }

    fn answer(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        let (status, body, content_type) = if method != Method::GET && method != Method::HEAD {
            (StatusCode::METHOD_NOT_ALLOWED, "GET only\n".to_string(), "text/plain; charset=utf-8")
        } else {
            match path {
                "/metrics" => (StatusCode::OK, self.metrics(), "text/plain; version=0.0.4; charset=utf-8"),
                "/healthz" => with_type(self.healthz()),
                "/readyz" => with_type(self.readyz()),
                _ => (
                    StatusCode::NOT_FOUND,
                    "not found: /metrics, /healthz or /readyz\n".into(),
                    "text/plain; charset=utf-8",
                ),
            }
        };
        let body = if method == Method::HEAD { String::new() } else { body };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(RETRY_AFTER, hyper::header::HeaderValue::from_static("1"));
        }
        response
    }
}

fn with_type((status, body): Answer) -> (StatusCode, String, &'static str) {
    (status, body, "text/plain; charset=utf-8")
}

/// How long the server waits after a failed `accept`: 10 ms, doubling up to 1 s, back to
/// 10 ms after a success. A failing accept (EMFILE: out of file descriptors) fails again at
/// once, and retrying at once would spin a CPU; the pending connection stays queued meanwhile.
#[derive(Debug, Clone)]
pub struct AcceptBackoff {
    next: Duration,
    /// Failures since the last success (for the log).
    in_a_row: u64,
}

impl AcceptBackoff {
    const MIN: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    pub fn new() -> Self {
        Self { next: Self::MIN, in_a_row: 0 }
    }

    /// The wait after one more failure in a row.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        self.in_a_row += 1;
        wait
    }

    /// An accept succeeded: the next failure waits the shortest again.
    pub fn succeeded(&mut self) {
        self.next = Self::MIN;
        self.in_a_row = 0;
    }

    /// Whether this failure is logged at `warn`: the first of a run, then every hundredth
    /// (a run lasts about a second per failure once at the longest wait).
    fn worth_a_warning(&self) -> bool {
        self.in_a_row == 1 || self.in_a_row.is_multiple_of(100)
    }
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self::new()
    }
}

/// A bound listener, not yet serving: binding is part of the agent's start, so a taken port
/// fails it naming the address.
pub struct TelemetryServer {
    listener: TcpListener,
}

/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

impl TelemetryServer {
    /// Binds `address` (`host:port`, as in the config; `localhost` resolves).
    pub async fn bind(address: &str) -> Result<Self, ComponentError> {
        let listener = TcpListener::bind(address).await.map_err(|e| {
            ComponentError::new("service.telemetry.metrics.address", format!("cannot listen on {address}: {e}"))
        })?;
        Ok(Self { listener })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ComponentError> {
        self.listener.local_addr().map_err(|e| ComponentError::new("service.telemetry.metrics.address", e.to_string()))
    }

    /// Serves until [`ServerHandle::stop`].
    pub fn serve(self, endpoints: Endpoints) -> ServerHandle {
        let stop = CancellationToken::new();
        let addr = self.listener.local_addr().ok();
        let task = tokio::spawn(accept_loop(self.listener, Arc::new(endpoints), stop.clone()));
        ServerHandle { stop, task, addr }
    }
}

/// A serving telemetry server.
pub struct ServerHandle {
    stop: CancellationToken,
    task: JoinHandle<()>,
    addr: Option<SocketAddr>,
}

impl ServerHandle {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Stops accepting and closes open connections.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn accept_loop(listener: TcpListener, endpoints: Arc<Endpoints>, stop: CancellationToken) {
    let mut backoff = AcceptBackoff::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff.succeeded();
                stream
            }
            Err(e) => {
                let wait = backoff.failed();
                if backoff.worth_a_warning() {
                    tracing::warn!(
                        "telemetry endpoint: accepting a connection failed {} time(s) in a row: {e}; retrying in {wait:?}",
                        backoff.in_a_row
                    );
                } else {
                    tracing::debug!("telemetry endpoint: accepting a connection failed: {e}");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        let endpoints = endpoints.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = endpoints.answer(req.method(), req.uri().path());
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!("telemetry endpoint: connection ended: {e}");
                },
                _ = stop.cancelled() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Liveness;

    struct Profiler;

    impl MetricsSource for Profiler {
        fn render(&self, out: &mut String) {
            out.push_str("# TYPE otelprof_samples_total counter\notelprof_samples_total 42\n");
        }
    }

    async fn get(client: &reqwest::Client, addr: SocketAddr, path: &str) -> (u16, String) {
        let r = client.get(format!("http://{addr}{path}")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness_over_a_socket() {
        let host = Host::new(Duration::from_secs(1));
        crate::telemetry::add(&host.telemetry.receiver("otlp", "grpc", crate::signal::Signal::Traces).accepted, 3);
        let ready = Readiness::default();
        let server = TelemetryServer::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let handle = server.serve(Endpoints::new(&host, ready.clone()).with_source(Arc::new(Profiler)));
        assert_eq!(handle.local_addr(), Some(addr));
        let client = reqwest::Client::new();

        let (code, text) = get(&client, addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            text.contains("otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"grpc\"} 3\n"),
            "{text}"
        );
        assert!(text.ends_with("otelprof_samples_total 42\n"), "the binary's sources come after: {text}");

        assert_eq!(get(&client, addr, "/healthz").await, (200, "ok\n".into()));
        assert_eq!(get(&client, addr, "/readyz").await, (503, "not ready\n".into()), "before the start");
        ready.set(true);
        assert_eq!(get(&client, addr, "/readyz").await, (200, "ready\n".into()));

        let exporter = host.health.register("exporter/otlp", Liveness::Running);
        exporter.fail("panicked: queue bug");
        for path in ["/healthz", "/readyz"] {
            assert_eq!(get(&client, addr, path).await, (503, "unhealthy: exporter/otlp: panicked: queue bug\n".into()));
        }
        assert_eq!(get(&client, addr, "/nope").await.0, 404);
        let post = client.post(format!("http://{addr}/metrics")).send().await.unwrap();
        assert_eq!(post.status().as_u16(), 405);

        handle.stop().await;
        assert!(client.get(format!("http://{addr}/healthz")).send().await.is_err(), "stopped: nothing listens");
    }

    #[tokio::test]
    async fn a_taken_port_fails_naming_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let e = TelemetryServer::bind(&addr).await.err().unwrap();
        assert_eq!(e.id, "service.telemetry.metrics.address");
        assert!(e.message.starts_with(&format!("cannot listen on {addr}: ")), "{e}");
    }

    #[test]
    fn accept_backoff_doubles_to_a_second_and_resets() {
        let mut b = AcceptBackoff::new();
        let waits: Vec<u64> = (0..9).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(10));
        assert!(b.worth_a_warning(), "the first failure of a run is logged");
        assert_eq!(b.failed(), Duration::from_millis(20));
        assert!(!b.worth_a_warning(), "the next ones are not");
    }
}
