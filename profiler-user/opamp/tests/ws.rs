//! The client against an in-process WebSocket OpAMP server.

mod common;

use std::time::{Duration, Instant};

use common::*;
use otelprof_opamp::{capabilities as cap, proto, Client, ServerEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const CAPS: u64 = cap::REPORTS_STATUS | cap::REPORTS_HEALTH | cap::REPORTS_EFFECTIVE_CONFIG;

#[tokio::test]
async fn full_state_first_then_only_changes_and_full_on_request() {
    let server = WsServer::bind().await;
    let (tx, mut events) = mpsc::channel(16);
    let client = Client::start_with_options(settings(ws_transport(&server.url), CAPS), tx, options());
    let mut conn = server.accept().await;
    assert_eq!(event(&mut events, |e| (e == ServerEvent::Connected).then_some(())).await, ());

    let first = conn.recv().await;
    assert_eq!(first.instance_uid, vec![0x11; 16]);
    assert_eq!(first.capabilities, CAPS);
    assert_eq!(first.agent_description, Some(description()));
    assert!(first.agent_disconnect.is_none());

    client.set_health(health(true));
    let second = conn.recv().await;
    assert_eq!(second.sequence_num, first.sequence_num + 1);
    assert_eq!(second.capabilities, CAPS, "capabilities in every message");
    assert_eq!(second.instance_uid, vec![0x11; 16]);
    assert_eq!(second.health, Some(health(true)));
    assert!(second.agent_description.is_none(), "unchanged description omitted");

    let cfg = proto::EffectiveConfig { config_map: Some(proto::AgentConfigMap::default()) };
    client.set_effective_config(cfg.clone());
    let third = conn.recv().await;
    assert_eq!(third.sequence_num, second.sequence_num + 1);
    assert_eq!(third.effective_config, Some(cfg.clone()));
    assert!(third.health.is_none() && third.agent_description.is_none());

    // Same value again: nothing is sent.
    client.set_health(health(true));
    assert!(conn.recv_within(Duration::from_millis(300)).await.is_none());

    conn.send(proto::ServerToAgent {
        instance_uid: vec![0x11; 16],
        flags: proto::ServerToAgentFlags::ReportFullState as u64,
        ..Default::default()
    })
    .await;
    let full = conn.recv().await;
    assert_eq!(full.sequence_num, third.sequence_num + 1);
    assert_eq!(full.agent_description, Some(description()));
    assert_eq!(full.health, Some(health(true)));
    assert_eq!(full.effective_config, Some(cfg));
    let stats = client.stats();
    assert_eq!((stats.sent, stats.received, stats.connects), (4, 1, 1));
    client.stop(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn heartbeat_at_the_offered_interval() {
    let server = WsServer::bind().await;
    let (tx, mut events) = mpsc::channel(16);
    let client =
        Client::start_with_options(settings(ws_transport(&server.url), CAPS | cap::REPORTS_HEARTBEAT), tx, options());
    let mut conn = server.accept().await;
    let first = conn.recv().await;
    conn.send(proto::ServerToAgent {
        instance_uid: vec![0x11; 16],
        connection_settings: Some(proto::ConnectionSettingsOffers {
            opamp: Some(proto::OpAmpConnectionSettings {
                destination_endpoint: server.url.clone(),
                heartbeat_interval_seconds: 1,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    let offered = event(&mut events, |e| match e {
        ServerEvent::OpampConnectionSettings { settings, .. } => Some(settings),
        _ => None,
    })
    .await;
    assert_eq!(offered.heartbeat_interval_seconds, 1);
    let t0 = Instant::now();
    let hb1 = conn.recv().await;
    let t1 = Instant::now();
    let hb2 = conn.recv().await;
    let t2 = Instant::now();
    // The first heartbeat comes 1 s after the first message (which was before t0).
    // Upper bounds are loose: the test machine is shared and may be busy.
    assert!(t1 - t0 <= Duration::from_millis(2500), "{:?}", t1 - t0);
    let gap = t2 - t1;
    assert!(gap >= Duration::from_millis(900) && gap <= Duration::from_millis(2500), "{gap:?}");
    for (i, hb) in [hb1, hb2].iter().enumerate() {
        assert_eq!(hb.sequence_num, first.sequence_num + 1 + i as u64);
        assert_eq!(hb.instance_uid, vec![0x11; 16]);
        assert!(hb.agent_description.is_none(), "heartbeats are minimal");
    }
    client.stop(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn new_instance_uid_is_adopted_and_reported() {
    let server = WsServer::bind().await;
    let (tx, mut events) = mpsc::channel(16);
    let client = Client::start_with_options(settings(ws_transport(&server.url), CAPS), tx, options());
    let mut conn = server.accept().await;
    conn.recv().await;
    let new_uid = [0x22; 16];
    conn.send(proto::ServerToAgent {
        instance_uid: vec![0x11; 16],
        agent_identification: Some(proto::AgentIdentification { new_instance_uid: new_uid.to_vec() }),
        ..Default::default()
    })
    .await;
    let got = event(&mut events, |e| match e {
        ServerEvent::NewInstanceUid(u) => Some(u),
        _ => None,
    })
    .await;
    assert_eq!(got, new_uid);
    assert_eq!(client.instance_uid(), new_uid);
    // The client says so at once with the new UID.
    let next = conn.recv().await;
    assert_eq!(next.instance_uid, new_uid.to_vec());
    client.set_health(health(false));
    assert_eq!(conn.recv().await.instance_uid, new_uid.to_vec());
    client.stop(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn remote_config_and_command_reach_the_agent() {
    let server = WsServer::bind().await;
    let (tx, mut events) = mpsc::channel(16);
    let client = Client::start_with_options(settings(ws_transport(&server.url), CAPS), tx, options());
    let mut conn = server.accept().await;
    conn.recv().await;
    let rc = proto::AgentRemoteConfig { config: Some(proto::AgentConfigMap::default()), config_hash: vec![1, 2, 3] };
    conn.send(proto::ServerToAgent {
        remote_config: Some(rc.clone()),
        connection_settings: Some(proto::ConnectionSettingsOffers {
            own_metrics: Some(proto::TelemetryConnectionSettings {
                destination_endpoint: "https://m.example/v1/metrics".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    let got = event(&mut events, |e| match e {
        ServerEvent::RemoteConfig(r) => Some(r),
        _ => None,
    })
    .await;
    assert_eq!(got, rc);
    let m = event(&mut events, |e| match e {
        ServerEvent::OwnMetrics { settings, .. } => Some(settings),
        _ => None,
    })
    .await;
    assert_eq!(m.destination_endpoint, "https://m.example/v1/metrics");
    conn.send(proto::ServerToAgent {
        command: Some(proto::ServerToAgentCommand { r#type: proto::CommandType::Restart as i32 }),
        ..Default::default()
    })
    .await;
    let cmd = event(&mut events, |e| match e {
        ServerEvent::Command(c) => Some(c),
        _ => None,
    })
    .await;
    assert_eq!(cmd.r#type, proto::CommandType::Restart as i32);
    client.set_remote_config_status(proto::RemoteConfigStatus {
        last_remote_config_hash: vec![1, 2, 3],
        status: proto::RemoteConfigStatuses::Applied as i32,
        error_message: String::new(),
    });
    let status = conn.recv().await;
    assert_eq!(status.remote_config_status.map(|s| s.last_remote_config_hash), Some(vec![1, 2, 3]));
    client.stop(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn unavailable_retry_after_is_honoured() {
    let server = WsServer::bind().await;
    let (tx, mut events) = mpsc::channel(16);
    let client = Client::start_with_options(settings(ws_transport(&server.url), CAPS), tx, options());
    let mut conn = server.accept().await;
    conn.recv().await;
    conn.send(proto::ServerToAgent {
        error_response: Some(proto::ServerErrorResponse {
            r#type: proto::ServerErrorResponseType::Unavailable as i32,
            error_message: "busy".into(),
            details: Some(proto::server_error_response::Details::RetryInfo(proto::RetryInfo {
                retry_after_nanoseconds: 1_200_000_000,
            })),
        }),
        ..Default::default()
    })
    .await;
    let t0 = Instant::now();
    let reason = event(&mut events, |e| match e {
        ServerEvent::ConnectFailed(r) => Some(r),
        _ => None,
    })
    .await;
    assert!(reason.contains("unavailable"), "{reason}");
    let mut again = server.accept().await;
    let waited = t0.elapsed();
    // The backoff alone would have reconnected after at most 50 ms.
    assert!(waited >= Duration::from_millis(1100), "reconnected after {waited:?}");
    let first = again.recv().await;
    assert_eq!(first.agent_description, Some(description()), "full state again");
    let stats = client.stats();
    assert_eq!((stats.server_errors, stats.reconnects), (1, 1));
    client.stop(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn handshake_503_retry_after_is_honoured() {
    let server = WsServer::bind().await;
    let (tx, _events) = mpsc::channel(16);
    let client = Client::start_with_options(settings(ws_transport(&server.url), CAPS), tx, options());
    let mut tcp = server.accept_tcp().await;
    let mut buf = [0u8; 4096];
    let _ = tcp.read(&mut buf).await.unwrap();
    tcp.write_all(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n").await.unwrap();
    drop(tcp);
    let t0 = Instant::now();
    let mut conn = server.accept().await;
    assert!(t0.elapsed() >= Duration::from_millis(900), "{:?}", t0.elapsed());
    conn.recv().await;
    assert_eq!(client.stats().connect_failures, 1);
    client.stop(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn oversized_frame_is_refused_and_the_client_reconnects() {
    let server = WsServer::bind().await;
    let (tx, _events) = mpsc::channel(16);
    let client = Client::start_with_options(settings(ws_transport(&server.url), CAPS), tx, options());
    let mut conn = server.accept().await;
    conn.recv().await;
    // A binary frame header announcing 64 MiB + 1 bytes; the payload never needs to follow.
    let mut header = vec![0x82, 127];
    header.extend_from_slice(&((64u64 << 20) + 1).to_be_bytes());
    conn.ws.get_mut().write_all(&header).await.unwrap();
    let mut again = server.accept().await;
    again.recv().await;
    let stats = client.stats();
    assert_eq!(stats.refused_oversize, 1);
    assert_eq!(stats.reconnects, 1);
    client.stop(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn stop_sends_agent_disconnect_then_closes() {
    let server = WsServer::bind().await;
    let (tx, _events) = mpsc::channel(16);
    let client = Client::start_with_options(settings(ws_transport(&server.url), CAPS), tx, options());
    let mut conn = server.accept().await;
    let first = conn.recv().await;
    let stopping = tokio::spawn(client.stop(Duration::from_secs(2)));
    let last = conn.recv().await;
    assert!(last.agent_disconnect.is_some());
    assert_eq!(last.sequence_num, first.sequence_num + 1);
    // Then a close frame.
    use futures_util::StreamExt;
    let closing = tokio::time::timeout(WAIT, conn.ws.next()).await.unwrap();
    assert!(matches!(closing, Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(_))))), "{closing:?}");
    // tungstenite answers the close; the client task then ends well within the limit.
    let t = Instant::now();
    while conn.ws.next().await.is_some() {}
    tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
#[allow(clippy::result_large_err)] // tungstenite's callback signature
async fn headers_are_sent_on_the_handshake() {
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    let server = WsServer::bind().await;
    let (tx, _events) = mpsc::channel(16);
    let client = Client::start_with_options(settings(ws_transport(&server.url), CAPS), tx, options());
    let tcp = server.accept_tcp().await;
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let cb = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let auth = req.headers().get("authorization");
        let _ = seen_tx.send(auth.map(|v| v.to_str().unwrap_or_default().to_string()));
        Ok(resp)
    };
    let _ws = tokio_tungstenite::accept_hdr_async(tcp, cb).await.unwrap();
    assert_eq!(seen_rx.recv().unwrap().as_deref(), Some("Bearer t"));
    client.stop(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn latest_state_wins_without_a_queue() {
    let server = WsServer::bind().await;
    let (tx, _events) = mpsc::channel(16);
    let client = Client::start_with_options(settings(ws_transport(&server.url), CAPS), tx, options());
    let mut conn = server.accept().await;
    conn.recv().await;
    for i in 0..100u64 {
        client.set_health(proto::ComponentHealth { healthy: true, status_time_unix_nano: i, ..Default::default() });
    }
    // However many messages the burst became, they are few and the last carries the last value.
    let mut last = None;
    let mut count = 0;
    while let Some(m) = conn.recv_within(Duration::from_millis(300)).await {
        count += 1;
        last = m.health.or(last);
    }
    assert!(count <= 3, "{count} messages for one burst");
    assert_eq!(last.map(|h| h.status_time_unix_nano), Some(99));
    client.stop(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn unreachable_server_is_retried_with_backoff_and_reported() {
    // A port nobody listens on: bind, note it, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (tx, mut events) = mpsc::channel(64);
    let client =
        Client::start_with_options(settings(ws_transport(&format!("ws://127.0.0.1:{port}/")), CAPS), tx, options());
    for _ in 0..3 {
        let reason = event(&mut events, |e| match e {
            ServerEvent::ConnectFailed(r) => Some(r),
            _ => None,
        })
        .await;
        assert!(reason.contains("connecting to 127.0.0.1"), "{reason}");
    }
    assert!(client.stats().connect_failures >= 3);
    assert_eq!(client.stats().connects, 0);
    client.stop(Duration::from_millis(100)).await;
}
