//! TLS and mutual TLS on both servers, with certificates made by the `openssl` CLI.

use std::{path::Path, process::Command};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use super::*;

/// A CA, a server certificate for `localhost` / 127.0.0.1 and a client certificate, all
/// signed by the CA, in `dir`.
fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=otelprof test CA"],
    ]
    .concat());
    std::fs::write(dir.join("server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        let (key, csr, pem, ext) =
            (format!("{who}.key"), format!("{who}.csr"), format!("{who}.pem"), format!("{who}.ext"));
        run(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={who}")]].concat());
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
}

fn tls_yaml(protocol: &str, dir: &Path, mutual: bool) -> String {
    let d = dir.display();
    let client_ca = if mutual { format!("\n        client_ca_file: {d}/ca.pem") } else { String::new() };
    format!(
        "protocols:\n  {protocol}:\n    endpoint: 127.0.0.1:0\n    tls:\n        cert_file: {d}/server.pem\n        key_file: {d}/server.key{client_ca}\n"
    )
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

fn https_client(dir: &Path, addr: std::net::SocketAddr, with_cert: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&read(dir, "ca.pem")).unwrap())
        .resolve("localhost", addr);
    if with_cert {
        let identity = [read(dir, "client.pem"), read(dir, "client.key")].concat();
        builder = builder.identity(reqwest::Identity::from_pem(&identity).unwrap());
    }
    builder.build().unwrap()
}

async fn post_https(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    tag: &str,
) -> reqwest::Result<reqwest::StatusCode> {
    let url = format!("https://localhost:{}/v1/traces", addr.port());
    let body = traces(1, tag).encode_to_vec();
    Ok(client.post(url).header("content-type", "application/x-protobuf").body(body).send().await?.status())
}

#[tokio::test]
async fn http_over_tls_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    // Server TLS only: any client that trusts the CA gets in.
    let r = start(&tls_yaml("http", dir.path(), false), &[Signal::Traces]).await;
    let addr = r.listening.http().unwrap();
    assert_eq!(post_https(&https_client(dir.path(), addr, false), addr, "tls").await.unwrap(), 200);
    assert!(reqwest::get(format!("http://{addr}/v1/traces")).await.is_err(), "plain HTTP is not served");
    assert_eq!(r.sink.take(), [Data::Traces(traces(1, "tls"))]);
    r.stop().await;

    // Mutual TLS: a client without a certificate is turned away, one with it is served.
    let r = start(&tls_yaml("http", dir.path(), true), &[Signal::Traces]).await;
    let addr = r.listening.http().unwrap();
    assert!(post_https(&https_client(dir.path(), addr, false), addr, "anonymous").await.is_err());
    assert_eq!(post_https(&https_client(dir.path(), addr, true), addr, "mtls").await.unwrap(), 200);
    assert_eq!(r.sink.take(), [Data::Traces(traces(1, "mtls"))]);
    r.sink.assert_sent_from_loopback();
    assert_eq!(r.counter("otelcol_receiver_accepted_spans", "http"), 1);
    r.stop().await;
}

#[tokio::test]
async fn grpc_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let r = start(&tls_yaml("grpc", dir.path(), true), &[Signal::Traces]).await;
    let url = format!("https://{}", r.listening.grpc().unwrap());
    let tls = || {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(dir.path(), "ca.pem")))
            .domain_name("localhost")
    };
    let connect = |config: ClientTlsConfig| {
        let url = url.clone();
        async move { Channel::from_shared(url).unwrap().tls_config(config).unwrap().connect().await }
    };
    // Without a client certificate: the connection or the call fails; nothing is taken.
    if let Ok(channel) = connect(tls()).await {
        assert!(TraceServiceClient::new(channel).export(traces(1, "anonymous")).await.is_err());
    }
    let identity = Identity::from_pem(read(dir.path(), "client.pem"), read(dir.path(), "client.key"));
    let channel = connect(tls().identity(identity)).await.unwrap();
    TraceServiceClient::new(channel).export(traces(1, "mtls")).await.unwrap();
    assert_eq!(r.sink.take(), [Data::Traces(traces(1, "mtls"))]);
    // Over TLS too (tonic's TLS connect info): the pipeline saw the peer.
    r.sink.assert_sent_from_loopback();
    r.stop().await;
}

#[test]
fn unreadable_or_mismatched_files_fail_the_config_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let id = ComponentId::parse("otlp").unwrap();
    let create =
        |yaml: &str| OtlpReceiver::new(&id, serde_yaml::from_str(yaml).unwrap(), "receivers.otlp").unwrap_err();
    let d = dir.path().display();
    let e = create(&format!(
        "protocols:\n  http:\n    tls:\n      cert_file: {d}/nope.pem\n      key_file: {d}/server.key\n"
    ));
    assert_eq!(e.path, "receivers.otlp.protocols.http.tls.cert_file", "{e}");
    let e = create(&format!(
        "protocols:\n  grpc:\n    tls:\n      cert_file: {d}/server.pem\n      key_file: {d}/client.key\n"
    ));
    assert_eq!(e.path, "receivers.otlp.protocols.grpc.tls.key_file", "{e}");
    let e = create(&format!("protocols:\n  grpc:\n    tls:\n      cert_file: {d}/server.pem\n"));
    assert_eq!(e.path, "receivers.otlp.protocols.grpc.tls.key_file", "{e}");
    let e = create(&format!(
        "protocols:\n  http:\n    tls:\n      cert_file: {d}/server.pem\n      key_file: {d}/server.key\n      client_ca_file: {d}/server.key\n"
    ));
    assert_eq!(e.path, "receivers.otlp.protocols.http.tls.client_ca_file", "{e}");
}
