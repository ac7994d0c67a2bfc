//! OTLP/gRPC with tonic's generated clients, and raw HTTP/2 for what they would not send.

use std::{io::Write as _, time::Duration};

use opentelemetry_proto::tonic::collector::{
    logs::v1::logs_service_client::LogsServiceClient, metrics::v1::metrics_service_client::MetricsServiceClient,
    profiles::v1development::profiles_service_client::ProfilesServiceClient,
    trace::v1::trace_service_client::TraceServiceClient,
};
use prost::Message;
use tonic::{codec::CompressionEncoding, Code};
use tonic_types::StatusExt;

use super::*;

const ALL: &[Signal] = &[Signal::Traces, Signal::Metrics, Signal::Logs, Signal::Profiles];
const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

#[tokio::test]
async fn takes_all_four_signals_and_counts_their_items() {
    let r = start("protocols:\n  grpc:\n    endpoint: 127.0.0.1:0\n", ALL).await;
    let url = r.grpc_url();
    let mut t = TraceServiceClient::connect(url.clone()).await.unwrap();
    let response = t.export(traces(3, "plain")).await.unwrap().into_inner();
    assert_eq!(response.partial_success, None);
    // gzip, as OTLP exporters send by default.
    let mut tz = TraceServiceClient::connect(url.clone()).await.unwrap().send_compressed(CompressionEncoding::Gzip);
    tz.export(traces(2, "gzip")).await.unwrap();
    MetricsServiceClient::connect(url.clone()).await.unwrap().export(metrics("m")).await.unwrap();
    LogsServiceClient::connect(url.clone()).await.unwrap().export(logs(4, "l")).await.unwrap();
    ProfilesServiceClient::connect(url.clone()).await.unwrap().export(profiles("p")).await.unwrap();
    assert_eq!(
        r.sink.take(),
        [
            Data::Traces(traces(3, "plain")),
            Data::Traces(traces(2, "gzip")),
            Data::Metrics(metrics("m")),
            Data::Logs(logs(4, "l")),
            Data::Profiles(profiles("p")),
        ]
    );
    // The pipeline saw each call's peer (k8sattributes' `from: connection`).
    r.sink.assert_sent_from_loopback();
    assert_eq!(r.counter("otelcol_receiver_accepted_spans", "grpc"), 5);
    assert_eq!(r.counter("otelcol_receiver_accepted_metric_points", "grpc"), 3);
    assert_eq!(r.counter("otelcol_receiver_accepted_log_records", "grpc"), 4);
    assert_eq!(r.counter("otelcol_receiver_accepted_profile_samples", "grpc"), 2);
    assert_eq!(r.counter("otelcol_receiver_refused_spans", "grpc"), 0);
    r.stop().await;
}

#[tokio::test]
async fn a_signal_without_pipeline_is_unimplemented() {
    let r = start("protocols:\n  grpc:\n    endpoint: 127.0.0.1:0\n", &[Signal::Traces]).await;
    let e = LogsServiceClient::connect(r.grpc_url()).await.unwrap().export(logs(1, "x")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    TraceServiceClient::connect(r.grpc_url()).await.unwrap().export(traces(1, "ok")).await.unwrap();
    assert_eq!(r.sink.take().len(), 1);
    r.stop().await;
}

#[tokio::test]
async fn refusal_is_unavailable_with_retry_info_and_rejection_invalid_argument() {
    let r = start("protocols:\n  grpc:\n    endpoint: 127.0.0.1:0\n", ALL).await;
    let mut client = TraceServiceClient::connect(r.grpc_url()).await.unwrap();
    r.sink.set(Mode::Refuse(Some(Duration::from_secs(3))));
    let e = client.export(traces(2, "a")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(e.get_details_retry_info().and_then(|i| i.retry_delay), Some(Duration::from_secs(3)));
    r.sink.set(Mode::Refuse(None));
    let e = client.export(traces(1, "b")).await.unwrap_err();
    assert_eq!(e.get_details_retry_info().and_then(|i| i.retry_delay), Some(Duration::from_secs(1)));
    r.sink.set(Mode::Reject);
    let e = client.export(traces(4, "c")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.get_details_retry_info().is_none());
    r.sink.set(Mode::Take);
    client.export(traces(5, "d")).await.unwrap();
    assert_eq!(r.sink.take(), [Data::Traces(traces(5, "d"))]);
    assert_eq!(r.counter("otelcol_receiver_refused_spans", "grpc"), 2 + 1 + 4);
    assert_eq!(r.counter("otelcol_receiver_accepted_spans", "grpc"), 5);
    r.stop().await;
}

/// Posts one gRPC message frame as given over HTTP/2 (prior knowledge, as gRPC does) and
/// returns the status of a trailers-only answer (`None` when the call went through).
async fn raw_call(url: &str, compressed: bool, encoding: Option<&str>, payload: &[u8]) -> Option<(Code, String)> {
    let mut body = vec![u8::from(compressed)];
    body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    body.extend_from_slice(payload);
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut request = client
        .post(format!("{url}{TRACE_EXPORT}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body);
    if let Some(e) = encoding {
        request = request.header("grpc-encoding", e);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let status = tonic::Status::from_header_map(response.headers())?;
    Some((status.code(), status.message().to_string()))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_refused_and_good_ones_still_taken() {
    // The default limit, 4 MiB: the bomb (about 1 MiB) passes the length check and is refused
    // while it inflates.
    let r = start("protocols:\n  grpc:\n    endpoint: 127.0.0.1:0\n", ALL).await;
    let url = r.grpc_url();
    let mut client = TraceServiceClient::connect(url.clone()).await.unwrap();
    let good = traces(2, "good").encode_to_vec();
    // A raw call with a good message goes through: the harness itself is sound.
    assert_eq!(raw_call(&url, false, None, &good).await, None);
    assert_eq!(raw_call(&url, true, Some("gzip"), &gzip(&good)).await, None);
    // A string that is not UTF-8: `abc` with its `b` replaced.
    let mut bad_utf8 = traces(1, "abc").encode_to_vec();
    let at = bad_utf8.windows(3).position(|w| w == b"abc").unwrap();
    bad_utf8[at + 1] = 0xff;
    let over_limit = vec![0u8; (4 << 20) + 1];
    let bomb = gzip_bomb(1024);
    assert!(bomb.len() < 2 << 20);
    // What, compressed flag, grpc-encoding, payload, expected code, part of the message.
    type Case<'a> = (&'a str, bool, Option<&'a str>, &'a [u8], Code, &'a str);
    let cases: [Case; 6] = [
        ("truncated", false, None, &good[..good.len() - 3], Code::InvalidArgument, "decode"),
        ("invalid utf-8", false, None, &bad_utf8, Code::InvalidArgument, "UTF-8"),
        ("broken gzip", true, Some("gzip"), b"not gzip", Code::InvalidArgument, "decompressing"),
        ("over the limit", false, None, &over_limit, Code::ResourceExhausted, "too large"),
        ("1 GiB gzip bomb", true, Some("gzip"), &bomb, Code::ResourceExhausted, "while decompressing"),
        ("zstd", true, Some("zstd"), b"whatever", Code::Unimplemented, "zstd"),
    ];
    for (what, compressed, encoding, payload, want, says) in cases {
        let (code, message) = raw_call(&url, compressed, encoding, payload).await.unwrap_or((Code::Ok, String::new()));
        assert_eq!(code, want, "{what}: {message}");
        assert!(message.contains(says), "{what}: {message}");
        client.export(traces(1, what)).await.unwrap_or_else(|e| panic!("after {what}: {e:?}"));
    }
    assert!(peak_rss_mib() < 512, "the bomb was inflated past the limit: peak RSS {} MiB", peak_rss_mib());
    assert_eq!(r.sink.take().len(), 2 + cases.len());
    assert_eq!(r.counter("otelcol_receiver_accepted_spans", "grpc"), 2 * 2 + cases.len() as u64);
    assert_eq!(r.counter("otelcol_receiver_refused_spans", "grpc"), 0, "undecodable requests are not items");
    r.stop().await;
}

#[tokio::test]
async fn a_bearer_token_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let yaml = format!(
        "protocols:\n  grpc:\n    endpoint: 127.0.0.1:0\n    auth:\n      bearer_token_file: {}\n",
        token.display()
    );
    let r = start(&yaml, ALL).await;
    let mut client = TraceServiceClient::connect(r.grpc_url()).await.unwrap();
    let e = client.export(traces(1, "none")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let with = |token: &str| {
        let mut request = tonic::Request::new(traces(1, "t"));
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    assert_eq!(client.export(with("wrong")).await.unwrap_err().code(), Code::Unauthenticated);
    client.export(with("s3cret")).await.unwrap();
    assert_eq!(r.sink.take(), [Data::Traces(traces(1, "t"))]);
    assert_eq!(r.counter("otelcol_receiver_accepted_spans", "grpc"), 1);
    r.stop().await;
}
