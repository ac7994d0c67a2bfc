//! The client against an in-process HTTP OpAMP server.

mod common;

use std::time::{Duration, Instant};

use common::*;
use otelprof_opamp::{capabilities as cap, proto, Client, ServerEvent, TlsSettings, Transport};
use tokio::sync::mpsc;

const CAPS: u64 = cap::REPORTS_STATUS | cap::REPORTS_HEALTH;

fn http(url: &str, polling: Duration) -> Transport {
    Transport::Http {
        endpoint: url.into(),
        headers: vec![("Authorization".into(), "Bearer h".into())],
        tls: TlsSettings::default(),
        polling_interval: polling,
    }
}

#[tokio::test]
async fn posts_protobuf_with_instance_uid_header_polls_and_reads_gzip() {
    let mut server = HttpServer::start().await;
    let rc = proto::AgentRemoteConfig { config: None, config_hash: vec![9] };
    server.reply(Reply::Gzip(proto::ServerToAgent { remote_config: Some(rc.clone()), ..Default::default() }));
    let (tx, mut events) = mpsc::channel(16);
    let client = Client::start_with_options(settings(http(&server.url, Duration::from_secs(1)), CAPS), tx, options());
    let (headers, first) = server.recv().await;
    assert_eq!(headers["opamp-instance-uid"], "11111111-1111-1111-1111-111111111111");
    assert_eq!(headers["content-type"], "application/x-protobuf");
    assert_eq!(headers["authorization"], "Bearer h");
    assert_eq!(first.agent_description, Some(description()));
    assert_eq!(first.capabilities, CAPS);
    let got = event(&mut events, |e| match e {
        ServerEvent::RemoteConfig(r) => Some(r),
        _ => None,
    })
    .await;
    assert_eq!(got, rc, "gzip answer decoded");

    // Nothing changed: the next POST is the poll, minimal.
    let t0 = Instant::now();
    let (_, poll) = server.recv().await;
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(700) && waited <= Duration::from_millis(2500), "{waited:?}");
    assert_eq!(poll.sequence_num, first.sequence_num + 1);
    assert!(poll.agent_description.is_none());

    // A change is POSTed at once, not at the next poll.
    client.set_health(health(true));
    let t0 = Instant::now();
    let (_, changed) = server.recv().await;
    assert!(t0.elapsed() < Duration::from_millis(700), "{:?}", t0.elapsed());
    assert_eq!(changed.health, Some(health(true)));
    assert!(changed.agent_description.is_none());
    client.stop(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn status_503_retry_after_is_honoured_and_state_resent_in_full() {
    let mut server = HttpServer::start().await;
    server.reply(Reply::Status(503, Some("1")));
    let (tx, mut events) = mpsc::channel(16);
    let client = Client::start_with_options(settings(http(&server.url, Duration::from_secs(10)), CAPS), tx, options());
    let (_, first) = server.recv().await;
    let t0 = Instant::now();
    let reason = event(&mut events, |e| match e {
        ServerEvent::ConnectFailed(r) => Some(r),
        _ => None,
    })
    .await;
    assert!(reason.contains("503"), "{reason}");
    let (_, again) = server.recv().await;
    assert!(t0.elapsed() >= Duration::from_millis(900), "{:?}", t0.elapsed());
    assert_eq!(again.sequence_num, first.sequence_num + 1);
    assert_eq!(again.agent_description, Some(description()), "full state");
    assert_eq!(client.stats().connect_failures, 1);
    client.stop(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn offered_heartbeat_sets_the_polling_interval() {
    let mut server = HttpServer::start().await;
    server.reply(Reply::Msg(proto::ServerToAgent {
        connection_settings: Some(proto::ConnectionSettingsOffers {
            opamp: Some(proto::OpAmpConnectionSettings { heartbeat_interval_seconds: 1, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }));
    let (tx, _events) = mpsc::channel(16);
    let client = Client::start_with_options(settings(http(&server.url, Duration::from_secs(30)), CAPS), tx, options());
    server.recv().await;
    let t0 = Instant::now();
    server.recv().await;
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited <= Duration::from_millis(2500), "{waited:?}");
    client.stop(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn stop_posts_agent_disconnect() {
    let mut server = HttpServer::start().await;
    let (tx, _events) = mpsc::channel(16);
    let client = Client::start_with_options(settings(http(&server.url, Duration::from_secs(30)), CAPS), tx, options());
    let (_, first) = server.recv().await;
    client.stop(Duration::from_secs(2)).await;
    let (headers, last) = server.recv().await;
    assert!(last.agent_disconnect.is_some());
    assert_eq!(last.sequence_num, first.sequence_num + 1);
    assert!(headers.contains_key("opamp-instance-uid"));
}

#[tokio::test]
async fn oversized_response_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/opamp", listener.local_addr().unwrap());
    let (tx, mut events) = mpsc::channel(16);
    let client = Client::start_with_options(settings(http(&url, Duration::from_secs(30)), CAPS), tx, options());
    let (mut tcp, _) = listener.accept().await.unwrap();
    let mut buf = [0u8; 4096];
    let _ = tcp.read(&mut buf).await.unwrap();
    // Announces 64 MiB + 1 bytes; the client must not wait for (or allocate) them.
    tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 67108865\r\n\r\n").await.unwrap();
    let reason = event(&mut events, |e| match e {
        ServerEvent::ConnectFailed(r) => Some(r),
        _ => None,
    })
    .await;
    assert!(reason.contains("64 MiB"), "{reason}");
    assert_eq!(client.stats().refused_oversize, 1);
    client.stop(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn report_full_state_over_http_is_answered_at_once() {
    let mut server = HttpServer::start().await;
    server.reply(Reply::Msg(proto::ServerToAgent {
        flags: proto::ServerToAgentFlags::ReportFullState as u64,
        ..Default::default()
    }));
    let (tx, _events) = mpsc::channel(16);
    let client = Client::start_with_options(settings(http(&server.url, Duration::from_secs(30)), CAPS), tx, options());
    let (_, first) = server.recv().await;
    let (_, full) = server.recv().await;
    assert_eq!(full.sequence_num, first.sequence_num + 1);
    assert_eq!(full.agent_description, Some(description()));
    client.stop(Duration::from_millis(300)).await;
}
