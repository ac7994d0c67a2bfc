//! `wss://` and `https://` with a test CA made at run time: CA file, client certificate (mTLS),
//! server name override, and refusal of an unverifiable server.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use otelprof_opamp::{capabilities as cap, Client, ServerEvent, TlsSettings, Transport};
use prost::Message as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

struct Pki {
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    ca_der: CertificateDer<'static>,
    server_der: CertificateDer<'static>,
    server_key: Vec<u8>,
}

fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "otelprof test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["opamp.test".to_string()]).unwrap().signed_by(&server_key, &ca).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(vec!["agent.test".to_string()]).unwrap();
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client.signed_by(&client_key, &ca).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca_file: write("ca.pem", ca.pem()),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client-key.pem", client_key.serialize_pem()),
        ca_der: ca.der().clone(),
        server_der: server.der().clone(),
        server_key: server_key.serialize_der(),
        _dir: dir,
    }
}

fn server_config(pki: &Pki, require_client_cert: bool) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = if require_client_cert {
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap(),
        )
    } else {
        builder.with_no_client_auth()
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone()));
    Arc::new(builder.with_single_cert(vec![pki.server_der.clone()], key).unwrap())
}

fn mtls(pki: &Pki) -> TlsSettings {
    TlsSettings {
        ca_file: Some(pki.ca_file.clone()),
        cert_file: Some(pki.client_cert.clone()),
        key_file: Some(pki.client_key.clone()),
        insecure_skip_verify: false,
        server_name_override: Some("opamp.test".into()),
    }
}

#[tokio::test]
async fn wss_with_ca_file_client_certificate_and_name_override() {
    let pki = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("wss://{}/v1/opamp", listener.local_addr().unwrap());
    let transport = Transport::WebSocket { endpoint: url, headers: vec![], tls: mtls(&pki) };
    let (tx, _events) = mpsc::channel(16);
    let client = Client::start_with_options(settings(transport, cap::REPORTS_STATUS), tx, options());
    let (tcp, _) = listener.accept().await.unwrap();
    let tls = TlsAcceptor::from(server_config(&pki, true)).accept(tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.peer_certificates().map(|c| c.len()), Some(1), "client certificate presented");
    let mut ws = tokio_tungstenite::accept_async(tls).await.unwrap();
    use futures_util::StreamExt;
    let frame = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    let msg = otelprof_opamp::proto::AgentToServer::decode(&frame.into_data()[1..]).unwrap();
    assert_eq!(msg.instance_uid, vec![0x11; 16]);
    client.stop(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn wss_server_with_wrong_name_is_refused_unless_verification_is_off() {
    let pki = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("wss://{}/v1/opamp", listener.local_addr().unwrap());
    let config = server_config(&pki, false);
    let acceptor = TlsAcceptor::from(config);
    let server = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    if let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await {
                        use futures_util::StreamExt;
                        while ws.next().await.is_some() {}
                    }
                }
            });
        }
    });
    // The certificate names opamp.test, the URL says 127.0.0.1.
    let strict = TlsSettings { ca_file: Some(pki.ca_file.clone()), ..Default::default() };
    let (tx, mut events) = mpsc::channel(16);
    let transport = Transport::WebSocket { endpoint: url.clone(), headers: vec![], tls: strict };
    let client = Client::start_with_options(settings(transport, cap::REPORTS_STATUS), tx, options());
    let reason = event(&mut events, |e| match e {
        ServerEvent::ConnectFailed(r) => Some(r),
        _ => None,
    })
    .await;
    assert!(reason.contains("TLS"), "{reason}");
    assert_eq!(client.stats().connects, 0);
    client.stop(Duration::from_millis(100)).await;

    let (tx, mut events) = mpsc::channel(16);
    let transport = Transport::WebSocket {
        endpoint: url,
        headers: vec![],
        tls: TlsSettings { insecure_skip_verify: true, ..Default::default() },
    };
    let client = Client::start_with_options(settings(transport, cap::REPORTS_STATUS), tx, options());
    event(&mut events, |e| (e == ServerEvent::Connected).then_some(())).await;
    client.stop(Duration::from_millis(300)).await;
    server.abort();
}

#[tokio::test]
async fn https_with_client_certificate() {
    let pki = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/v1/opamp", listener.local_addr().unwrap());
    let transport =
        Transport::Http { endpoint: url, headers: vec![], tls: mtls(&pki), polling_interval: Duration::from_secs(30) };
    let (tx, mut events) = mpsc::channel(16);
    let client = Client::start_with_options(settings(transport, cap::REPORTS_STATUS), tx, options());
    let (tcp, _) = listener.accept().await.unwrap();
    let mut tls = TlsAcceptor::from(server_config(&pki, true)).accept(tcp).await.unwrap();
    assert!(tls.get_ref().1.peer_certificates().is_some());
    // A minimal HTTP/1.1 exchange: read the head and the body, answer 200 with no body.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, body_len) = loop {
        let n = tls.read(&mut chunk).await.unwrap();
        assert!(n > 0, "request");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            assert!(head.starts_with("post /v1/opamp"), "{head}");
            assert!(head.contains("opamp-instance-uid: 11111111-1111-1111-1111-111111111111"));
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse::<usize>().unwrap())
                .unwrap();
            break (i + 4, len);
        }
    };
    while buf.len() < head_end + body_len {
        let n = tls.read(&mut chunk).await.unwrap();
        buf.extend_from_slice(&chunk[..n]);
    }
    let msg = otelprof_opamp::proto::AgentToServer::decode(&buf[head_end..head_end + body_len]).unwrap();
    assert_eq!(msg.capabilities, cap::REPORTS_STATUS);
    tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
    event(&mut events, |e| (e == ServerEvent::Connected).then_some(())).await;
    client.stop(Duration::from_millis(200)).await;
}
