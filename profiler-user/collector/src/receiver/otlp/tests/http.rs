//! OTLP/HTTP with reqwest: both encodings, every compression, every status code of the spec.

use std::io::Write as _;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use reqwest::{header, StatusCode};

use super::*;

const ALL: &[Signal] = &[Signal::Traces, Signal::Metrics, Signal::Logs, Signal::Profiles];
const PROTOBUF: &str = "application/x-protobuf";

fn post(url: &str, content_type: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
    reqwest::Client::new().post(url).header(header::CONTENT_TYPE, content_type).body(body)
}

async fn status_body(response: reqwest::Response) -> (StatusCode, tonic_types::Status) {
    let code = response.status();
    let is_json = response.headers()[header::CONTENT_TYPE] == "application/json";
    let bytes = response.bytes().await.unwrap();
    let status = if is_json {
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        tonic_types::Status {
            code: v["code"].as_i64().unwrap() as i32,
            message: v["message"].as_str().unwrap().into(),
            details: vec![],
        }
    } else {
        tonic_types::Status::decode(bytes).unwrap()
    };
    (code, status)
}

fn compress(encoding: &str, data: &[u8]) -> Vec<u8> {
    match encoding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "zstd" => ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest),
        _ => data.to_vec(),
    }
}

#[tokio::test]
async fn takes_all_four_signals_in_protobuf_json_and_every_compression() {
    let r = start("protocols:\n  http:\n    endpoint: 127.0.0.1:0\n", ALL).await;
    for (path, data) in [
        ("/v1/traces", Data::Traces(traces(3, "t"))),
        ("/v1/metrics", Data::Metrics(metrics("m"))),
        ("/v1/logs", Data::Logs(logs(2, "l"))),
        ("/v1development/profiles", Data::Profiles(profiles("p"))),
        ("/v1/profiles", Data::Profiles(profiles("p2"))),
    ] {
        let response = post(&r.http_url(path), PROTOBUF, data.encode_to_vec()).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROTOBUF);
        let body = response.bytes().await.unwrap();
        assert_eq!(ExportTraceServiceResponse::decode(body).unwrap().partial_success, None);
        assert_eq!(r.sink.take(), [data], "{path}");
    }
    for encoding in ["gzip", "deflate", "zstd", "identity"] {
        let body = compress(encoding, &traces(2, encoding).encode_to_vec());
        let response = post(&r.http_url("/v1/traces"), PROTOBUF, body)
            .header(header::CONTENT_ENCODING, encoding)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{encoding}");
        assert_eq!(r.sink.take(), [Data::Traces(traces(2, encoding))], "{encoding}");
    }
    // The pipeline saw each request's peer (k8sattributes' `from: connection`).
    r.sink.assert_sent_from_loopback();
    // OTLP/JSON, gzipped; the answer is JSON too.
    let json = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
        {"timeUnixNano":"7","severityNumber":9,"body":{"stringValue":"json line"},"traceId":"0102030405060708090A0B0C0D0E0F10"}]}]}]}"#;
    let response = post(&r.http_url("/v1/logs"), "application/json; charset=utf-8", compress("gzip", json))
        .header(header::CONTENT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(response.text().await.unwrap(), "{}");
    let [Data::Logs(got)] = &r.sink.take()[..] else { panic!("one logs request") };
    let record = &got.resource_logs[0].scope_logs[0].log_records[0];
    assert_eq!(record.time_unix_nano, 7);
    assert_eq!(record.trace_id, (1..=16).collect::<Vec<u8>>());
    assert_eq!(r.counter("otelcol_receiver_accepted_spans", "http"), 3 + 4 * 2);
    assert_eq!(r.counter("otelcol_receiver_accepted_metric_points", "http"), 3);
    assert_eq!(r.counter("otelcol_receiver_accepted_log_records", "http"), 2 + 1);
    assert_eq!(r.counter("otelcol_receiver_accepted_profile_samples", "http"), 4);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_spec_status_and_good_ones_still_pass() {
    // Logs have no pipeline here; the limit is 4 MiB, so the 1 GiB gzip bomb (about 1 MiB)
    // passes the Content-Length check and is refused while it inflates.
    let yaml = "protocols:\n  http:\n    endpoint: 127.0.0.1:0\n    max_request_body_size: 4194304\n";
    let r = start(yaml, &[Signal::Traces, Signal::Metrics, Signal::Profiles]).await;
    let url = |p: &str| r.http_url(p);
    let good = || post(&url("/v1/traces"), PROTOBUF, traces(1, "good").encode_to_vec());
    let mut goods = 0;
    let check_good = || async {
        let response = good().send().await.unwrap();
        assert_eq!(response.status(), 200);
    };

    let plain = [
        ("unknown path", post(&url("/v1/nothing"), PROTOBUF, vec![]), StatusCode::NOT_FOUND),
        ("no pipeline", post(&url("/v1/logs"), PROTOBUF, logs(1, "x").encode_to_vec()), StatusCode::NOT_FOUND),
        ("GET", reqwest::Client::new().get(url("/v1/traces")), StatusCode::METHOD_NOT_ALLOWED),
        ("text/plain", post(&url("/v1/traces"), "text/plain", b"hi".to_vec()), StatusCode::UNSUPPORTED_MEDIA_TYPE),
    ];
    for (what, request, want) in plain {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), want, "{what}");
        if want == StatusCode::METHOD_NOT_ALLOWED {
            assert_eq!(response.headers()[header::ALLOW], "POST");
        }
        check_good().await;
        goods += 1;
    }

    let mut bad_utf8 = traces(1, "abc").encode_to_vec();
    let at = bad_utf8.windows(3).position(|w| w == b"abc").unwrap();
    bad_utf8[at + 1] = 0xff;
    let truncated = traces(2, "t").encode_to_vec();
    let zstd_bomb = compress("zstd", &vec![0u8; 16 << 20]);
    let gzip_bomb = gzip_bomb(1024);
    assert!(gzip_bomb.len() < 4 << 20 && zstd_bomb.len() < 4 << 20);
    let with_status = [
        ("truncated", PROTOBUF, None, truncated[..truncated.len() - 2].to_vec(), StatusCode::BAD_REQUEST, 3, "decode"),
        ("invalid utf-8", PROTOBUF, None, bad_utf8, StatusCode::BAD_REQUEST, 3, "UTF-8"),
        (
            "bad json",
            "application/json",
            None,
            br#"{"resourceSpans": 5}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            3,
            "resourceSpans",
        ),
        ("bad gzip", PROTOBUF, Some("gzip"), b"not gzip".to_vec(), StatusCode::BAD_REQUEST, 3, "gzip"),
        ("snappy", PROTOBUF, Some("snappy"), b"x".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE, 3, "snappy"),
        ("too large", PROTOBUF, None, vec![0u8; (4 << 20) + 1], StatusCode::PAYLOAD_TOO_LARGE, 8, "4194305 bytes"),
        ("gzip bomb", PROTOBUF, Some("gzip"), gzip_bomb, StatusCode::PAYLOAD_TOO_LARGE, 8, "after decompression"),
        (
            "zstd bomb",
            "application/json",
            Some("zstd"),
            zstd_bomb,
            StatusCode::PAYLOAD_TOO_LARGE,
            8,
            "after decompression",
        ),
    ];
    for (what, content_type, encoding, body, want, grpc_code, says) in with_status {
        let mut request = post(&url("/v1/traces"), content_type, body);
        if let Some(e) = encoding {
            request = request.header(header::CONTENT_ENCODING, e);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let content_type_back = response.headers()[header::CONTENT_TYPE].to_str().unwrap().to_string();
        assert_eq!(content_type_back, content_type, "{what}: the error is in the request's encoding");
        let (code, status) = status_body(response).await;
        assert_eq!((code, status.code), (want, grpc_code), "{what}: {}", status.message);
        assert!(status.message.contains(says), "{what}: {}", status.message);
        check_good().await;
        goods += 1;
    }
    assert!(peak_rss_mib() < 512, "a bomb was inflated past the limit: peak RSS {} MiB", peak_rss_mib());
    assert_eq!(r.sink.take().len(), goods);
    assert_eq!(r.counter("otelcol_receiver_accepted_spans", "http"), goods as u64);
    assert_eq!(r.counter("otelcol_receiver_refused_spans", "http"), 0, "undecodable requests are not items");
    r.stop().await;
}

#[tokio::test]
async fn refusal_is_503_with_retry_after_and_rejection_400() {
    let r = start("protocols:\n  http:\n    endpoint: 127.0.0.1:0\n", ALL).await;
    let send = |json: bool| {
        let body = traces(2, "x").encode_to_vec();
        if json {
            post(
                &r.http_url("/v1/traces"),
                "application/json",
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{},{}]}]}]}"#.to_vec(),
            )
        } else {
            post(&r.http_url("/v1/traces"), PROTOBUF, body)
        }
        .send()
    };
    r.sink.set(Mode::Refuse(None));
    let response = send(false).await.unwrap();
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    assert_eq!(status_body(response).await.0, StatusCode::SERVICE_UNAVAILABLE);
    r.sink.set(Mode::Refuse(Some(Duration::from_millis(2500))));
    let response = send(true).await.unwrap();
    assert_eq!(response.headers()[header::RETRY_AFTER], "3", "rounded up");
    let (code, status) = status_body(response).await;
    assert_eq!((code, status.code), (StatusCode::SERVICE_UNAVAILABLE, 14));
    r.sink.set(Mode::Reject);
    let (code, status) = status_body(send(false).await.unwrap()).await;
    assert_eq!((code, status.code), (StatusCode::BAD_REQUEST, 3));
    r.sink.set(Mode::Take);
    assert_eq!(send(false).await.unwrap().status(), 200);
    assert_eq!(r.counter("otelcol_receiver_refused_spans", "http"), 6);
    assert_eq!(r.counter("otelcol_receiver_accepted_spans", "http"), 2);
    r.stop().await;
}

#[tokio::test]
async fn a_bearer_token_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret").unwrap();
    let yaml = format!(
        "protocols:\n  http:\n    endpoint: 127.0.0.1:0\n    auth:\n      bearer_token_file: {}\n",
        token.display()
    );
    let r = start(&yaml, ALL).await;
    let request = || post(&r.http_url("/v1/traces"), PROTOBUF, traces(1, "t").encode_to_vec());
    let response = request().send().await.unwrap();
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(
        status_body(response).await,
        (
            StatusCode::UNAUTHORIZED,
            tonic_types::Status { code: 16, message: "missing or wrong bearer token".into(), details: vec![] }
        )
    );
    assert_eq!(request().bearer_auth("wrong").send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(request().bearer_auth("s3cret").send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(r.sink.take(), [Data::Traces(traces(1, "t"))]);
    r.stop().await;
}
