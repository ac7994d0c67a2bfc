//! Real OTLP backends on loopback that record what they got and answer from a script: a tonic
//! server with opentelemetry-proto's generated service traits, and an axum (hyper) server that
//! decodes OTLP/HTTP itself.

use std::{
    collections::VecDeque,
    io::Read,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use opentelemetry_proto::tonic::collector::{
    logs::v1::{
        logs_service_server::{LogsService, LogsServiceServer},
        ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
    },
    metrics::v1::{
        metrics_service_server::{MetricsService, MetricsServiceServer},
        ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    },
    profiles::v1development::{
        profiles_service_server::{ProfilesService, ProfilesServiceServer},
        ExportProfilesPartialSuccess, ExportProfilesServiceRequest, ExportProfilesServiceResponse,
    },
    trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
};
use prost::Message;
use tonic::{codec::CompressionEncoding, Code, Request, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::signal::{Data, Signal};

/// How the backend answers one export.
#[derive(Clone, Debug)]
pub enum Answer {
    Ok,
    /// Accepted, but `n` items rejected with a message.
    Partial(i64, &'static str),
    /// gRPC UNAVAILABLE with RetryInfo / HTTP 503 with `Retry-After` (whole seconds for HTTP).
    Busy(Duration),
    /// gRPC INVALID_ARGUMENT / HTTP 400.
    Invalid,
}

/// One request as the backend saw it.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    /// The HTTP path, or the gRPC service.
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The request body after undoing `Content-Encoding` (HTTP only).
    pub body: Vec<u8>,
    pub data: Data,
    pub answered: Answer,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// What a backend got and what it will answer next (then `Ok` forever).
#[derive(Default)]
pub struct Backend {
    script: Mutex<VecDeque<Answer>>,
    pub received: Mutex<Vec<Received>>,
}

impl Backend {
    fn new(script: Vec<Answer>) -> Arc<Self> {
        Arc::new(Self { script: Mutex::new(script.into()), received: Mutex::default() })
    }

    fn next(&self) -> Answer {
        self.script.lock().unwrap().pop_front().unwrap_or(Answer::Ok)
    }

    pub fn got(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The requests answered with success (in full or in part).
    pub fn delivered(&self) -> Vec<Data> {
        self.got()
            .into_iter()
            .filter(|r| matches!(r.answered, Answer::Ok | Answer::Partial(..)))
            .map(|r| r.data)
            .collect()
    }
}

// ---- gRPC ----

#[derive(Clone)]
struct Grpc(Arc<Backend>);

impl Grpc {
    fn record(
        &self,
        service: &str,
        meta: &tonic::metadata::MetadataMap,
        data: Data,
    ) -> Result<Option<(i64, String)>, Status> {
        let headers = meta
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((k.to_string(), v.to_str().ok()?.to_string())),
                _ => None,
            })
            .collect();
        let answer = self.0.next();
        let body = data.encode_to_vec();
        self.0.received.lock().unwrap().push(Received {
            at: Instant::now(),
            path: service.into(),
            headers,
            body,
            data,
            answered: answer.clone(),
        });
        match answer {
            Answer::Ok => Ok(None),
            Answer::Partial(n, m) => Ok(Some((n, m.to_string()))),
            Answer::Busy(d) => {
                Err(Status::with_error_details(Code::Unavailable, "busy", ErrorDetails::with_retry_info(Some(d))))
            }
            Answer::Invalid => Err(Status::invalid_argument("bad data")),
        }
    }
}

#[async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        r: Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
        let (meta, _, msg) = r.into_parts();
        let p = self.record("TraceService", &meta, Data::Traces(msg))?;
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: p.map(|(n, m)| ExportTracePartialSuccess { rejected_spans: n, error_message: m }),
        }))
    }
}

#[async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        r: Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, Status> {
        let (meta, _, msg) = r.into_parts();
        let p = self.record("MetricsService", &meta, Data::Metrics(msg))?;
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: p.map(|(n, m)| ExportMetricsPartialSuccess { rejected_data_points: n, error_message: m }),
        }))
    }
}

#[async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        r: Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, Status> {
        let (meta, _, msg) = r.into_parts();
        let p = self.record("LogsService", &meta, Data::Logs(msg))?;
        Ok(tonic::Response::new(ExportLogsServiceResponse {
            partial_success: p.map(|(n, m)| ExportLogsPartialSuccess { rejected_log_records: n, error_message: m }),
        }))
    }
}

#[async_trait]
impl ProfilesService for Grpc {
    async fn export(
        &self,
        r: Request<ExportProfilesServiceRequest>,
    ) -> Result<tonic::Response<ExportProfilesServiceResponse>, Status> {
        let (meta, _, msg) = r.into_parts();
        let p = self.record("ProfilesService", &meta, Data::Profiles(msg))?;
        Ok(tonic::Response::new(ExportProfilesServiceResponse {
            partial_success: p.map(|(n, m)| ExportProfilesPartialSuccess { rejected_profiles: n, error_message: m }),
        }))
    }
}

/// A tonic server for all four services on a free loopback port, accepting gzip.
pub async fn grpc(script: Vec<Answer>) -> (SocketAddr, Arc<Backend>) {
    let backend = Backend::new(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let g = Grpc(backend.clone());
    let gz = CompressionEncoding::Gzip;
    let router = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(g.clone()).accept_compressed(gz))
        .add_service(MetricsServiceServer::new(g.clone()).accept_compressed(gz))
        .add_service(LogsServiceServer::new(g.clone()).accept_compressed(gz))
        .add_service(ProfilesServiceServer::new(g).accept_compressed(gz));
    tokio::spawn(router.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));
    (addr, backend)
}

// ---- HTTP ----

fn signal_of(path: &str) -> Option<Signal> {
    Signal::ALL.into_iter().find(|s| path.ends_with(crate::exporter::otlp_http::OtlpHttpConfig::signal_path(*s)))
}

/// Undoes `Content-Encoding` and decodes the body by `Content-Type`, independently of the
/// exporter's own encoder: flate2 for gzip, prost or opentelemetry-proto's serde for JSON.
fn decode_http(signal: Signal, headers: &HeaderMap, body: &[u8]) -> Result<(Vec<u8>, Data), String> {
    let body = match headers.get("content-encoding").and_then(|v| v.to_str().ok()) {
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body).read_to_end(&mut out).map_err(|e| format!("gunzip: {e}"))?;
            out
        }
        None => body.to_vec(),
        Some(other) => return Err(format!("unexpected content-encoding {other}")),
    };
    let data = match headers.get("content-type").and_then(|v| v.to_str().ok()) {
        Some("application/x-protobuf") => Data::decode(signal, &body).map_err(|e| e.to_string())?,
        Some("application/json") => match signal {
            Signal::Traces => Data::Traces(serde_json::from_slice(&body).map_err(|e| e.to_string())?),
            Signal::Metrics => Data::Metrics(serde_json::from_slice(&body).map_err(|e| e.to_string())?),
            Signal::Logs => Data::Logs(serde_json::from_slice(&body).map_err(|e| e.to_string())?),
            Signal::Profiles => Data::Profiles(serde_json::from_slice(&body).map_err(|e| e.to_string())?),
        },
        other => return Err(format!("unexpected content-type {other:?}")),
    };
    Ok((body, data))
}

fn partial_body(signal: Signal, n: i64, m: &str) -> Vec<u8> {
    let m = m.to_string();
    match signal {
        Signal::Traces => ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess { rejected_spans: n, error_message: m }),
        }
        .encode_to_vec(),
        Signal::Metrics => ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess { rejected_data_points: n, error_message: m }),
        }
        .encode_to_vec(),
        Signal::Logs => ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess { rejected_log_records: n, error_message: m }),
        }
        .encode_to_vec(),
        Signal::Profiles => ExportProfilesServiceResponse {
            partial_success: Some(ExportProfilesPartialSuccess { rejected_profiles: n, error_message: m }),
        }
        .encode_to_vec(),
    }
}

async fn handle(backend: Arc<Backend>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let Some(signal) = signal_of(&path) else { return (StatusCode::NOT_FOUND, "no such path").into_response() };
    let (body, data) = match decode_http(signal, &headers, &body) {
        Ok(x) => x,
        Err(e) => return (StatusCode::UNSUPPORTED_MEDIA_TYPE, e).into_response(),
    };
    let answer = backend.next();
    backend.received.lock().unwrap().push(Received {
        at: Instant::now(),
        path,
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect(),
        body,
        data,
        answered: answer.clone(),
    });
    let proto = [("content-type", "application/x-protobuf")];
    match answer {
        Answer::Ok => (StatusCode::OK, proto, Vec::new()).into_response(),
        Answer::Partial(n, m) => (StatusCode::OK, proto, partial_body(signal, n, m)).into_response(),
        Answer::Busy(d) => {
            (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", d.as_secs().to_string())], "busy").into_response()
        }
        Answer::Invalid => (StatusCode::BAD_REQUEST, "bad data").into_response(),
    }
}

/// An axum server taking OTLP/HTTP for every signal on a free loopback port.
pub async fn http(script: Vec<Answer>) -> (SocketAddr, Arc<Backend>) {
    let backend = Backend::new(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let b = backend.clone();
    let app = axum::Router::new()
        .fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| handle(b.clone(), uri, headers, body));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, backend)
}

/// A loopback address nothing listens on (bound, then closed).
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}
