//! An in-process OpAMP test server (WebSocket and HTTP) on real sockets, and helpers.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use otelprof_opamp::proto;
use otelprof_opamp::{ClientOptions, ClientSettings, ServerEvent, TlsSettings, Transport};
use prost::Message as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub const WAIT: Duration = Duration::from_secs(5);

pub fn options() -> ClientOptions {
    ClientOptions {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..Default::default()
    }
}

pub fn description() -> proto::AgentDescription {
    proto::AgentDescription {
        identifying_attributes: vec![proto::KeyValue {
            key: "service.name".into(),
            value: Some(proto::AnyValue { value: Some(proto::any_value::Value::StringValue("otelprof".into())) }),
        }],
        non_identifying_attributes: vec![],
    }
}

pub fn settings(transport: Transport, caps: u64) -> ClientSettings {
    ClientSettings { transport, instance_uid: [0x11; 16], description: description(), capabilities: caps }
}

pub fn ws_transport(url: &str) -> Transport {
    Transport::WebSocket {
        endpoint: url.into(),
        headers: vec![("Authorization".into(), "Bearer t".into())],
        tls: TlsSettings::default(),
    }
}

pub fn health(ok: bool) -> proto::ComponentHealth {
    proto::ComponentHealth { healthy: ok, ..Default::default() }
}

/// Waits for the first event that `pick` accepts, skipping others.
pub async fn event<T>(rx: &mut mpsc::Receiver<ServerEvent>, mut pick: impl FnMut(ServerEvent) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let ev = rx.recv().await.expect("event channel open");
            if let Some(t) = pick(ev) {
                return t;
            }
        }
    })
    .await
    .expect("event in time")
}

pub struct WsServer {
    listener: TcpListener,
    pub url: String,
}

impl WsServer {
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/v1/opamp", listener.local_addr().unwrap());
        WsServer { listener, url }
    }

    pub async fn accept_tcp(&self) -> TcpStream {
        let (tcp, _) =
            tokio::time::timeout(WAIT, self.listener.accept()).await.expect("client connects in time").unwrap();
        tcp
    }

    pub async fn accept(&self) -> WsConn {
        let tcp = self.accept_tcp().await;
        WsConn { ws: tokio_tungstenite::accept_async(tcp).await.unwrap() }
    }
}

pub struct WsConn {
    pub ws: WebSocketStream<TcpStream>,
}

impl WsConn {
    /// The next agent message (panics after 5 s or on a close).
    pub async fn recv(&mut self) -> proto::AgentToServer {
        self.recv_within(WAIT).await.expect("agent message in time")
    }

    /// The next agent message, `None` if none came in `d`.
    pub async fn recv_within(&mut self, d: Duration) -> Option<proto::AgentToServer> {
        let next = tokio::time::timeout(d, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Binary(b))) => {
                        assert_eq!(b[0], 0, "varint header 0");
                        return proto::AgentToServer::decode(&b[1..]).unwrap();
                    }
                    Some(Ok(Message::Close(_))) | None => panic!("connection closed"),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => panic!("ws error {e}"),
                }
            }
        });
        next.await.ok()
    }

    pub async fn send(&mut self, m: proto::ServerToAgent) {
        let mut b = vec![0u8];
        m.encode(&mut b).unwrap();
        self.ws.send(Message::Binary(b.into())).await.unwrap();
    }
}

/// What the HTTP test server answers to the next POST.
pub enum Reply {
    Msg(proto::ServerToAgent),
    Gzip(proto::ServerToAgent),
    Status(u16, Option<&'static str>),
}

#[derive(Clone)]
struct HttpState {
    tx: mpsc::UnboundedSender<(HeaderMap, proto::AgentToServer)>,
    replies: Arc<Mutex<VecDeque<Reply>>>,
}

pub struct HttpServer {
    pub url: String,
    pub requests: mpsc::UnboundedReceiver<(HeaderMap, proto::AgentToServer)>,
    replies: Arc<Mutex<VecDeque<Reply>>>,
}

impl HttpServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/opamp", listener.local_addr().unwrap());
        let (tx, requests) = mpsc::unbounded_channel();
        let replies = Arc::new(Mutex::new(VecDeque::new()));
        let app = axum::Router::new()
            .route("/v1/opamp", axum::routing::post(handle))
            .with_state(HttpState { tx, replies: replies.clone() });
        tokio::spawn(async move { axum::serve(listener, app).await });
        HttpServer { url, requests, replies }
    }

    pub fn reply(&self, r: Reply) {
        self.replies.lock().unwrap().push_back(r);
    }

    pub async fn recv(&mut self) -> (HeaderMap, proto::AgentToServer) {
        tokio::time::timeout(WAIT, self.requests.recv()).await.expect("POST in time").unwrap()
    }
}

async fn handle(State(st): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let msg = proto::AgentToServer::decode(body).unwrap();
    let _ = st.tx.send((headers, msg));
    let reply = st.replies.lock().unwrap().pop_front();
    match reply {
        None => (StatusCode::OK, Vec::new()).into_response(),
        Some(Reply::Msg(m)) => (StatusCode::OK, m.encode_to_vec()).into_response(),
        Some(Reply::Gzip(m)) => {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&m.encode_to_vec()).unwrap();
            let body = enc.finish().unwrap();
            (StatusCode::OK, [("content-encoding", "gzip")], body).into_response()
        }
        Some(Reply::Status(code, retry_after)) => {
            let status = StatusCode::from_u16(code).unwrap();
            match retry_after {
                Some(r) => (status, [("retry-after", r)], Vec::new()).into_response(),
                None => (status, Vec::new()).into_response(),
            }
        }
    }
}
