//! Real OTLP peers for the export tests, on loopback: a tonic gRPC `ProfilesService` and a
//! minimal HTTP/1.1 server, both answering from a script so tests can make a backend fail.

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::collector::profiles::v1development::{
    profiles_service_server::{ProfilesService, ProfilesServiceServer},
    ExportProfilesPartialSuccess, ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use prost::Message;
use tonic::{Code, Request, Response, Status};

/// What the server answers to the next call.
#[derive(Clone, Debug)]
pub enum Answer {
    Ok,
    /// Accept, but report rejected profiles.
    Partial(i64, &'static str),
    /// A gRPC status, with an optional RetryInfo delay.
    Grpc(Code, Option<Duration>),
    /// An HTTP status with an optional Retry-After (seconds).
    Http(u16, Option<u64>),
}

/// One received request: headers (lowercase names) and the decoded message.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub request: ExportProfilesServiceRequest,
    /// The request body as it arrived (HTTP: gunzipped; gRPC: re-encoded by prost).
    pub raw: Vec<u8>,
    pub path: String,
}

#[derive(Default)]
pub struct State {
    pub received: Vec<Received>,
    pub script: VecDeque<Answer>,
    pub calls: usize,
}

pub type Shared = Arc<Mutex<State>>;

fn next_answer(state: &Shared) -> Answer {
    let mut s = state.lock().unwrap();
    s.calls += 1;
    s.script.pop_front().unwrap_or(Answer::Ok)
}

#[derive(Clone)]
struct Grpc(Shared);

#[tonic::async_trait]
impl ProfilesService for Grpc {
    async fn export(
        &self,
        req: Request<ExportProfilesServiceRequest>,
    ) -> Result<Response<ExportProfilesServiceResponse>, Status> {
        let answer = next_answer(&self.0);
        let headers = req
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    Some((k.to_string(), v.to_str().unwrap_or("").to_string()))
                }
                _ => None,
            })
            .collect();
        let request = req.into_inner();
        let partial = match answer {
            Answer::Grpc(code, delay) => {
                return Err(match delay {
                    Some(d) => {
                        use tonic_types::{ErrorDetails, StatusExt};
                        Status::with_error_details(code, "scripted failure", ErrorDetails::with_retry_info(Some(d)))
                    }
                    None => Status::new(code, "scripted failure"),
                })
            }
            Answer::Partial(n, msg) => {
                Some(ExportProfilesPartialSuccess { rejected_profiles: n, error_message: msg.into() })
            }
            _ => None,
        };
        let raw = request.encode_to_vec();
        self.0.lock().unwrap().received.push(Received { headers, request, raw, path: String::new() });
        Ok(Response::new(ExportProfilesServiceResponse { partial_success: partial }))
    }
}

/// Starts a gRPC ProfilesService on 127.0.0.1 in a background thread with its own runtime.
pub fn grpc_server(script: Vec<Answer>) -> (SocketAddr, Shared) {
    grpc_server_at("127.0.0.1:0".parse().unwrap(), script)
}

/// A free loopback port (bound and released), for a backend that comes up later.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Like [`grpc_server`], on a given address.
pub fn grpc_server_at(at: SocketAddr, script: Vec<Answer>) -> (SocketAddr, Shared) {
    let state: Shared = Arc::new(Mutex::new(State { script: script.into(), ..Default::default() }));
    let listener = std::net::TcpListener::bind(at).unwrap();
    let addr = listener.local_addr().unwrap();
    serve_grpc(listener, state.clone(), None);
    (addr, state)
}

/// Serves the scripted ProfilesService on `listener` (optionally over TLS) in a background
/// thread with its own runtime.
fn serve_grpc(listener: std::net::TcpListener, state: Shared, tls: Option<tonic::transport::ServerTlsConfig>) {
    let svc = ProfilesServiceServer::new(Grpc(state))
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
            let mut builder = tonic::transport::Server::builder();
            if let Some(tls) = tls {
                builder = builder.tls_config(tls).unwrap();
            }
            builder.add_service(svc).serve_with_incoming(incoming).await.unwrap();
        });
    });
}

/// Starts a minimal HTTP/1.1 OTLP endpoint on 127.0.0.1 (one thread, one request per connection).
pub fn http_server(script: Vec<Answer>) -> (SocketAddr, Shared) {
    let state: Shared = Arc::new(Mutex::new(State { script: script.into(), ..Default::default() }));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let st = state.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = serve_http(&mut conn, &st);
        }
    });
    (addr, state)
}

fn serve_http(conn: &mut std::net::TcpStream, state: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    if headers.iter().any(|(k, v)| k == "content-encoding" && v == "gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out)?;
        body = out;
    }
    let answer = next_answer(state);
    let (status, extra, resp_body) = match answer {
        Answer::Http(code, retry) => {
            (code, retry.map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default(), b"scripted failure".to_vec())
        }
        Answer::Partial(n, msg) => {
            let r = ExportProfilesServiceResponse {
                partial_success: Some(ExportProfilesPartialSuccess { rejected_profiles: n, error_message: msg.into() }),
            };
            (200, String::new(), r.encode_to_vec())
        }
        _ => (200, String::new(), ExportProfilesServiceResponse::default().encode_to_vec()),
    };
    if status == 200 {
        let request = ExportProfilesServiceRequest::decode(&body[..]).expect("body is an ExportProfilesServiceRequest");
        state.lock().unwrap().received.push(Received { headers, request, raw: body, path });
    }
    write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        resp_body.len()
    )?;
    conn.write_all(&resp_body)?;
    conn.flush()
}

/// `GET path` on a plain HTTP server; (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut text = String::new();
    c.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// The value of an unlabelled (or exactly labelled) metric in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Test PKI made with the `openssl` CLI: a CA, a server certificate for 127.0.0.1/localhost and
/// a client certificate, all signed by the CA.
pub struct Pki {
    pub ca: std::path::PathBuf,
    pub server_cert: std::path::PathBuf,
    pub server_key: std::path::PathBuf,
    pub client_cert: std::path::PathBuf,
    pub client_key: std::path::PathBuf,
}

pub fn make_pki(dir: &std::path::Path) -> Pki {
    let sh = |script: &str| {
        let o = std::process::Command::new("sh").arg("-c").arg(script).current_dir(dir).output().expect("sh");
        assert!(o.status.success(), "openssl: {}", String::from_utf8_lossy(&o.stderr));
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=otelprof-test-ca 2>/dev/null");
    for (name, cn, ext) in [
        ("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "otelprof-agent", "extendedKeyUsage=clientAuth"),
    ] {
        sh(&format!(
            "openssl req -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr -subj /CN={cn} 2>/dev/null && \
             printf '%s\\n' '{ext}' > {name}.ext && \
             openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 1 -extfile {name}.ext 2>/dev/null"
        ));
    }
    Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    }
}

/// A gRPC ProfilesService over TLS that requires a client certificate signed by the test CA.
pub fn grpc_mtls_server(pki: &Pki) -> (SocketAddr, Shared) {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let state: Shared = Arc::new(Mutex::new(State::default()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(std::fs::read(&pki.server_cert).unwrap(), std::fs::read(&pki.server_key).unwrap()))
        .client_ca_root(Certificate::from_pem(std::fs::read(&pki.ca).unwrap()));
    serve_grpc(listener, state.clone(), Some(tls));
    (addr, state)
}
