//! OTLP/HTTP: `POST` of protobuf or JSON export requests on hyper, HTTP/1.1 and HTTP/2, with
//! or without TLS.
//!
//! Answers as the OTLP/HTTP spec and the Collector give them, checked in this order:
//!
//! | case | status |
//! |---|---|
//! | token missing or wrong (`auth`) | 401, `WWW-Authenticate: Bearer` |
//! | unknown path, or a signal without pipeline | 404 |
//! | not `POST` | 405, `Allow: POST` |
//! | `Content-Type` not protobuf or JSON, `Content-Encoding` unknown | 415 |
//! | body over `max_request_body_size` (compressed or not) | 413 |
//! | body that does not decode | 400 |
//! | pipeline refused (retryable) | 503 + `Retry-After` (seconds; 1 unless the pipeline said) |
//! | pipeline rejected (permanent) | 400 |
//! | taken | 200 with an `Export*ServiceResponse` |
//!
//! Of the two codes the spec allows for "retry later" (429, 503) this uses 503, as the
//! Collector does for a refusing pipeline: 429 would say *this client* sends too much, while
//! the refusal is about the pipeline's memory or queues. Failures carry a `google.rpc.Status`
//! in the request's encoding, except 404/405/415, which are plain text as in the Collector
//! (the body's encoding is not known, or not one we speak).

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::{
    auth::BearerToken,
    decompress::{BodyError, ContentEncoding, Inflater},
    deliver::{Delivery, PerSignal},
    encoding::Encoding,
    grpc::DEFAULT_RETRY_AFTER,
    tls::Tls,
};
use crate::{client, consumer::ConsumeError, signal::Signal};

/// A TLS handshake that has not completed by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After an early answer (413, 415, …) up to this much of the unread body is read and thrown
/// away, so that an HTTP/1.1 client still sending sees the answer instead of a broken pipe
/// (a 5 MiB body refused after 4 MiB failed that way on a loaded machine). Nothing is kept:
/// the cost of a hostile sender is bandwidth, bounded by the bytes and the time.
const DISCARD_LIMIT: usize = 64 << 20;
const DISCARD_TIME: Duration = Duration::from_secs(5);

/// The HTTP server's checked settings.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Largest body after decompression (and before), in bytes.
    pub max_body_size: usize,
    pub tls: Option<Tls>,
    pub auth: Option<Arc<BearerToken>>,
    pub traces_path: String,
    pub metrics_path: String,
    pub logs_path: String,
}

/// Serves until `stop` is cancelled; then stops accepting, lets requests in flight finish for
/// up to `drain`, and closes what is left.
pub async fn serve(
    listener: TcpListener,
    settings: &HttpSettings,
    deliveries: PerSignal<Arc<Delivery>>,
    stop: CancellationToken,
    drain: Duration,
) {
    let handler = Arc::new(Handler::new(settings, deliveries));
    let tls = settings.tls.as_ref().map(|t| tokio_rustls::TlsAcceptor::from(t.http_config()));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let watcher = graceful.watcher();
                    let (handler, tls) = (handler.clone(), tls.clone());
                    connections.spawn(async move {
                        match tls {
                            None => serve_connection(TokioIo::new(tcp), peer, handler, watcher).await,
                            Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                                Ok(Ok(stream)) => serve_connection(TokioIo::new(stream), peer, handler, watcher).await,
                                Ok(Err(e)) => tracing::debug!("otlp http: TLS handshake failed: {e}"),
                                Err(_) => tracing::debug!("otlp http: TLS handshake timed out"),
                            },
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::debug!("otlp http: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("otlp http: requests still in flight after {drain:?}; closing their connections");
        connections.abort_all();
    }
    while connections.join_next().await.is_some() {}
}

/// `peer`: the connection's remote address, the sender of every request on it.
async fn serve_connection<I>(
    io: TokioIo<I>,
    peer: std::net::SocketAddr,
    handler: Arc<Handler>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let sender = client::Info::from_addr(peer);
    let service = hyper::service::service_fn(move |request| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler.handle(request, sender).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timer makes hyper enforce its HTTP/1 header read timeout (slow clients).
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    if let Err(e) = watcher.watch(builder.serve_connection(io, service)).await {
        tracing::debug!("otlp http: connection ended: {e}");
    }
}

struct Handler {
    routes: Vec<(String, Signal)>,
    deliveries: PerSignal<Arc<Delivery>>,
    limit: usize,
    auth: Option<Arc<BearerToken>>,
}

type Answer = Response<Full<Bytes>>;

impl Handler {
    fn new(settings: &HttpSettings, deliveries: PerSignal<Arc<Delivery>>) -> Self {
        // Profiles are at the Collector's path and at the one the signal will have once stable.
        let routes = vec![
            (settings.traces_path.clone(), Signal::Traces),
            (settings.metrics_path.clone(), Signal::Metrics),
            (settings.logs_path.clone(), Signal::Logs),
            ("/v1development/profiles".to_string(), Signal::Profiles),
            ("/v1/profiles".to_string(), Signal::Profiles),
        ];
        Self { routes, deliveries, limit: settings.max_body_size, auth: settings.auth.clone() }
    }

    async fn handle(&self, request: Request<Incoming>, sender: client::Info) -> Answer {
        let (parts, body) = request.into_parts();
        let header = |name| parts.headers.get(name).map(HeaderValue::as_bytes);
        let encoding = Encoding::from_content_type(header(header::CONTENT_TYPE));
        let early = match self.check(&parts, encoding) {
            Ok(checked) => checked,
            Err(answer) => {
                discard(body).await;
                return *answer;
            }
        };
        let (signal, encoding, content_encoding) = early;
        let declared = header(header::CONTENT_LENGTH).and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
        if let Some(n) = declared.filter(|&n| n > self.limit as u64) {
            discard(body).await;
            let message = format!("the request body ({n} bytes) is larger than {} bytes", self.limit);
            return status(StatusCode::PAYLOAD_TOO_LARGE, encoding, Code::ResourceExhausted, &message);
        }
        let bytes = match read_body(body, content_encoding, self.limit).await {
            Ok(bytes) => bytes,
            Err(ReadError::Body(e @ BodyError::TooLarge { .. })) => {
                tracing::debug!("otlp http: {e}");
                return self.too_large(encoding);
            }
            Err(ReadError::Body(e)) => {
                return status(StatusCode::BAD_REQUEST, encoding, Code::InvalidArgument, &e.to_string())
            }
            Err(ReadError::Transport(e)) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    encoding,
                    Code::InvalidArgument,
                    &format!("reading the body: {e}"),
                )
            }
        };
        let data = match encoding.decode(signal, &bytes) {
            Ok(data) => data,
            Err(e) => {
                let message = format!("the {signal} request does not decode: {e}");
                return status(StatusCode::BAD_REQUEST, encoding, Code::InvalidArgument, &message);
            }
        };
        drop(bytes);
        let Some(delivery) = &self.deliveries[signal.index()] else {
            return text(StatusCode::NOT_FOUND, "404 page not found");
        };
        match delivery.deliver(data, sender) {
            Ok(()) => {
                let mut answer = Response::new(Full::new(Bytes::from(encoding.success())));
                answer.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(encoding.content_type()));
                answer
            }
            Err(ConsumeError::Refused { reason, retry_after }) => {
                let mut answer = status(StatusCode::SERVICE_UNAVAILABLE, encoding, Code::Unavailable, &reason);
                let wait = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
                let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
                answer.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                answer
            }
            Err(ConsumeError::Rejected(reason)) => {
                status(StatusCode::BAD_REQUEST, encoding, Code::InvalidArgument, &reason)
            }
        }
    }

    /// Everything decided from the head alone: auth, route, method, media type, coding.
    fn check(
        &self,
        parts: &http::request::Parts,
        encoding: Option<Encoding>,
    ) -> Result<(Signal, Encoding, ContentEncoding), Box<Answer>> {
        let header = |name| parts.headers.get(name).map(HeaderValue::as_bytes);
        if let Some(auth) = &self.auth {
            if !auth.accepts(header(header::AUTHORIZATION)) {
                let message = "missing or wrong bearer token";
                let mut answer = match encoding {
                    Some(e) => status(StatusCode::UNAUTHORIZED, e, Code::Unauthenticated, message),
                    None => text(StatusCode::UNAUTHORIZED, message),
                };
                answer.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return Err(Box::new(answer));
            }
        }
        let path = parts.uri.path();
        let signal = self
            .routes
            .iter()
            .find(|(p, s)| p == path && self.deliveries[s.index()].is_some())
            .map(|(_, s)| *s)
            .ok_or_else(|| Box::new(text(StatusCode::NOT_FOUND, "404 page not found")))?;
        if parts.method != Method::POST {
            let mut answer = text(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed, supported: [POST]");
            answer.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
            return Err(Box::new(answer));
        }
        let encoding = encoding.ok_or_else(|| {
            Box::new(text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "415 unsupported media type, supported: [application/json, application/x-protobuf]",
            ))
        })?;
        let content_encoding = ContentEncoding::parse(header(header::CONTENT_ENCODING))
            .map_err(|m| Box::new(status(StatusCode::UNSUPPORTED_MEDIA_TYPE, encoding, Code::InvalidArgument, &m)))?;
        Ok((signal, encoding, content_encoding))
    }

    fn too_large(&self, encoding: Encoding) -> Answer {
        let message = format!("the request body is larger than {} bytes (after decompression)", self.limit);
        status(StatusCode::PAYLOAD_TOO_LARGE, encoding, Code::ResourceExhausted, &message)
    }
}

enum ReadError {
    Body(BodyError),
    Transport(hyper::Error),
}

/// Reads and decompresses the body chunk by chunk as it arrives; stops at the limit.
async fn read_body(mut body: Incoming, encoding: ContentEncoding, limit: usize) -> Result<Vec<u8>, ReadError> {
    let mut inflater = Inflater::new(encoding, limit);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReadError::Transport)?;
        if let Some(chunk) = frame.data_ref() {
            if let Err(e) = inflater.push(chunk) {
                if matches!(e, BodyError::TooLarge { .. }) {
                    discard(body).await;
                }
                return Err(ReadError::Body(e));
            }
        }
    }
    inflater.finish().map_err(ReadError::Body)
}

/// Reads and drops what is left of a body, up to [`DISCARD_LIMIT`] / [`DISCARD_TIME`].
async fn discard(mut body: Incoming) {
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > DISCARD_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
}

fn text(code: StatusCode, message: &'static str) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from_static(message.as_bytes())));
    *answer.status_mut() = code;
    answer.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    answer
}

fn status(code: StatusCode, encoding: Encoding, grpc: Code, message: &str) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(encoding.status(grpc, message))));
    *answer.status_mut() = code;
    answer.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(encoding.content_type()));
    answer
}
