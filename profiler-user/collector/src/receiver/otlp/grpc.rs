//! OTLP/gRPC: the four export services of `opentelemetry-proto` on a tonic server.
//!
//! - Only signals with a pipeline get a service, as in the Collector: an export of another
//!   signal is answered `UNIMPLEMENTED`.
//! - `max_recv_msg_size_mib` bounds each message after decompression: tonic refuses a larger
//!   length prefix before reading the body and stops inflating a gzip message at the limit
//!   (`RESOURCE_EXHAUSTED`; the tests prove both). zstd is not accepted on gRPC: tonic
//!   decodes it only with the C zstd library, which is not available here; clients get
//!   `UNIMPLEMENTED` naming the encoding. gzip is what OTLP exporters send by default.
//! - A pipeline's refusal becomes `UNAVAILABLE` with a `google.rpc.RetryInfo` detail (the
//!   OTLP spec's way to say "retry after"), a rejection `INVALID_ARGUMENT`.
//! - A gate wraps every call: the bearer token check (`UNAUTHENTICATED`), and two codes of
//!   tonic's that OTLP clients would misread: a message over the limit is `OUT_OF_RANGE` in
//!   tonic (retryable by the OTLP spec, so a client would resend it forever) and becomes
//!   `RESOURCE_EXHAUSTED` without `RetryInfo` (not retryable) as in grpc-go; a body that does
//!   not decode (bad protobuf, invalid UTF-8 in a string, broken gzip) is `INTERNAL` in tonic
//!   and becomes `INVALID_ARGUMENT`: the sender's data is at fault, not the server.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::{
    logs::v1::{
        logs_service_server::{LogsService, LogsServiceServer},
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    },
    metrics::v1::{
        metrics_service_server::{MetricsService, MetricsServiceServer},
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    },
    profiles::v1development::{
        profiles_service_server::{ProfilesService, ProfilesServiceServer},
        ExportProfilesServiceRequest, ExportProfilesServiceResponse,
    },
    trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
};
use tokio::net::TcpListener;
use tonic::{
    codec::CompressionEncoding,
    transport::{server::TcpIncoming, Server},
    Code, Request, Response, Status,
};
use tonic_types::{ErrorDetails, StatusExt};

use super::{
    auth::BearerToken,
    deliver::{Delivery, PerSignal},
    tls::Tls,
};
use crate::{client, consumer::ConsumeError, signal::Data};

/// What a refusal without its own `retry_after` asks the client to wait.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The gRPC server's checked settings.
#[derive(Clone, Debug)]
pub struct GrpcSettings {
    /// Largest message after decompression, in bytes.
    pub max_message_size: usize,
    pub max_concurrent_streams: Option<u32>,
    pub tls: Option<Tls>,
    pub auth: Option<Arc<BearerToken>>,
}

/// Serves until `shutdown` resolves, then lets calls in flight finish.
pub async fn serve(
    listener: TcpListener,
    settings: &GrpcSettings,
    deliveries: PerSignal<Arc<Delivery>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let mut builder = Server::builder().max_concurrent_streams(settings.max_concurrent_streams);
    if let Some(tls) = &settings.tls {
        builder = builder.tls_config(tls.tonic_config())?;
    }
    let limit = settings.max_message_size;
    let [traces, metrics, logs, profiles] = deliveries;
    builder
        .layer(GateLayer { auth: settings.auth.clone() })
        .add_optional_service(traces.map(|d| {
            TraceServiceServer::new(Export(d))
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit)
        }))
        .add_optional_service(metrics.map(|d| {
            MetricsServiceServer::new(Export(d))
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit)
        }))
        .add_optional_service(logs.map(|d| {
            LogsServiceServer::new(Export(d))
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit)
        }))
        .add_optional_service(profiles.map(|d| {
            ProfilesServiceServer::new(Export(d))
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit)
        }))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown)
        .await
}

/// One signal's export service.
struct Export(Arc<Delivery>);

impl Export {
    /// `remote_addr`: the peer of the call's connection (tonic's connect info, with or
    /// without TLS).
    fn deliver(&self, data: Data, remote_addr: Option<std::net::SocketAddr>) -> Result<(), Status> {
        self.0.deliver(data, client::Info { addr: remote_addr }).map_err(consume_status)
    }
}

/// A pipeline's answer as a gRPC status.
fn consume_status(e: ConsumeError) -> Status {
    match e {
        ConsumeError::Refused { reason, retry_after } => Status::with_error_details(
            Code::Unavailable,
            reason,
            ErrorDetails::with_retry_info(Some(retry_after.unwrap_or(DEFAULT_RETRY_AFTER))),
        ),
        ConsumeError::Rejected(reason) => Status::invalid_argument(reason),
    }
}

#[async_trait]
impl TraceService for Export {
    async fn export(
        &self,
        r: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let addr = r.remote_addr();
        self.deliver(Data::Traces(r.into_inner()), addr)?;
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[async_trait]
impl MetricsService for Export {
    async fn export(
        &self,
        r: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let addr = r.remote_addr();
        self.deliver(Data::Metrics(r.into_inner()), addr)?;
        Ok(Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

#[async_trait]
impl LogsService for Export {
    async fn export(
        &self,
        r: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let addr = r.remote_addr();
        self.deliver(Data::Logs(r.into_inner()), addr)?;
        Ok(Response::new(ExportLogsServiceResponse { partial_success: None }))
    }
}

#[async_trait]
impl ProfilesService for Export {
    async fn export(
        &self,
        r: Request<ExportProfilesServiceRequest>,
    ) -> Result<Response<ExportProfilesServiceResponse>, Status> {
        let addr = r.remote_addr();
        self.deliver(Data::Profiles(r.into_inner()), addr)?;
        Ok(Response::new(ExportProfilesServiceResponse { partial_success: None }))
    }
}

/// Wraps every service in a [`Gate`].
#[derive(Clone)]
struct GateLayer {
    auth: Option<Arc<BearerToken>>,
}

impl<S> tower_layer::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate { inner, auth: self.auth.clone() }
    }
}

/// Checks the token before a call and corrects tonic's decoding error codes after it (see
/// the module docs).
#[derive(Clone)]
struct Gate<S> {
    inner: S,
    auth: Option<Arc<BearerToken>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for Gate<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(auth) = &self.auth {
            let header = request.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
            if !auth.accepts(header) {
                let response = Status::unauthenticated("missing or wrong bearer token").into_http();
                return Box::pin(async move { Ok(response) });
            }
        }
        let call = self.inner.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            correct_decode_errors(response.headers_mut());
            Ok(response)
        })
    }
}

/// Rewrites a trailers-only error status of tonic's request decoding (see the module docs).
fn correct_decode_errors(headers: &mut http::HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else { return };
    let message = status.message();
    let corrected = match status.code() {
        Code::OutOfRange if message.contains("message length too large") => Status::resource_exhausted(message),
        Code::Internal if message.starts_with("failed to decode Protobuf message") => Status::invalid_argument(message),
        Code::Internal if message.starts_with("Error decompressing") => Status::invalid_argument(message),
        _ => return,
    };
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    // Only fails for a message that cannot be a header, and tonic's own messages can.
    let _ = corrected.add_header(headers);
}
