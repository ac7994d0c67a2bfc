//! `otlp` and `otlphttp` against real backends: every signal on the wire, the retry rules,
//! a dead backend, shutdown, and the one-shot client.

use std::{collections::BTreeMap, time::Duration};

use super::{
    backends::{self, Answer},
    support::*,
};
use crate::{
    component::ExporterFactory,
    exporter::{export_once, otlp_grpc::OtlpGrpcFactory, otlp_http::OtlpHttpFactory, Client, RetryConfig},
    signal::Signal,
};

fn items_series(kind: &str, signal: Signal, exporter: &str) -> String {
    format!("otelcol_exporter_{kind}_{}_total{{exporter=\"{exporter}\"}}", signal.items())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signal_through_otlp_arrives_gzipped_with_headers() {
    let (addr, backend) = backends::grpc(vec![]).await;
    let host = host();
    let yaml = format!("endpoint: {addr}\ntls: {{insecure: true}}\nheaders: {{X-Scope-OrgID: tenant-a}}");
    for signal in Signal::ALL {
        let e = build(&OtlpGrpcFactory, "otlp", &yaml, signal, &host);
        e.consume(data(signal, 3)).unwrap();
        e.shutdown(in_secs(5)).await;
        assert_eq!(metric(&host, &items_series("sent", signal, "otlp")), Some(3), "{signal}");
    }
    let got = backend.got();
    let services: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(services, ["TraceService", "MetricsService", "LogsService", "ProfilesService"]);
    for (r, signal) in got.iter().zip(Signal::ALL) {
        assert_eq!(r.data, data(signal, 3), "{signal} arrives unchanged");
        assert_eq!(r.header("grpc-encoding"), Some("gzip"));
        assert_eq!(r.header("x-scope-orgid"), Some("tenant-a"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signal_through_otlphttp_as_protobuf_and_json() {
    let (addr, backend) = backends::http(vec![]).await;
    let host = host();
    for encoding in ["proto", "json"] {
        let yaml = format!("endpoint: http://{addr}/\nencoding: {encoding}\nheaders: {{X-Scope-OrgID: t}}");
        for signal in Signal::ALL {
            let e = build(&OtlpHttpFactory, &format!("otlphttp/{encoding}"), &yaml, signal, &host);
            e.consume(data(signal, 2)).unwrap();
            e.shutdown(in_secs(5)).await;
        }
    }
    let got = backend.got();
    assert_eq!(got.len(), 8);
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).take(4).collect();
    assert_eq!(paths, ["/v1/traces", "/v1/metrics", "/v1/logs", "/v1development/profiles"]);
    for (i, r) in got.iter().enumerate() {
        let signal = Signal::ALL[i % 4];
        assert_eq!(r.data, data(signal, 2), "{signal} arrives unchanged");
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.header("x-scope-orgid"), Some("t"));
        let json = i >= 4;
        assert_eq!(r.header("content-type"), Some(if json { "application/json" } else { "application/x-protobuf" }));
        assert_eq!(
            metric(&host, &items_series("sent", signal, if json { "otlphttp/json" } else { "otlphttp/proto" })),
            Some(2)
        );
    }
    // OTLP/JSON as the specification writes it, read without the exporter's types.
    let v = |i: usize| -> serde_json::Value { serde_json::from_slice(&got[4 + i].body).unwrap() };
    let span = &v(0)["resourceSpans"][0]["scopeSpans"][0]["spans"][1];
    assert_eq!(span["traceId"], TRACE_ID_HEX);
    assert_eq!(span["spanId"], SPAN_ID_HEX);
    assert_eq!(span["startTimeUnixNano"], "1700000000000000001", "64-bit integers as strings");
    assert_eq!(span["name"], "GET /cart/1");
    assert_eq!(v(0)["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"], "checkout");
    assert_eq!(v(1)["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][1]["asInt"], "10");
    let log = &v(2)["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
    assert_eq!(
        (&log["traceId"], &log["spanId"], &log["severityText"]),
        (&TRACE_ID_HEX.into(), &SPAN_ID_HEX.into(), &"INFO".into())
    );
    let profiles = v(3);
    assert_eq!(profiles["resourceProfiles"][0]["scopeProfiles"][0]["profiles"][0]["profileId"], TRACE_ID_HEX);
    assert_eq!(profiles["dictionary"]["stringTable"][1], "cpu");
}

fn fast_retry() -> &'static str {
    "retry_on_failure: {initial_interval: 10ms, max_interval: 50ms}"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_retries_unavailable_after_the_servers_retry_info() {
    let wait = Duration::from_millis(200);
    let (addr, backend) = backends::grpc(vec![Answer::Busy(wait), Answer::Busy(wait)]).await;
    let host = host();
    let e =
        build(&OtlpGrpcFactory, "otlp", &format!("endpoint: http://{addr}\n{}", fast_retry()), Signal::Traces, &host);
    e.consume(data(Signal::Traces, 4)).unwrap();
    wait_until(|| backend.delivered().len() == 1).await;
    e.shutdown(in_secs(5)).await;
    let got = backend.got();
    assert_eq!(got.len(), 3, "two refusals, then delivered once");
    assert!(got[1].at - got[0].at >= wait && got[2].at - got[1].at >= wait, "waited as RetryInfo asked");
    assert_eq!(metric(&host, "otelprof_exporter_retries_total{exporter=\"otlp\",data_type=\"traces\"}"), Some(2));
    assert_eq!(metric(&host, &items_series("sent", Signal::Traces, "otlp")), Some(4));
    assert_eq!(metric(&host, &items_series("send_failed", Signal::Traces, "otlp")), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlphttp_retries_503_after_retry_after() {
    let (addr, backend) =
        backends::http(vec![Answer::Busy(Duration::from_secs(1)), Answer::Busy(Duration::ZERO)]).await;
    let host = host();
    let e =
        build(&OtlpHttpFactory, "otlphttp", &format!("endpoint: http://{addr}\n{}", fast_retry()), Signal::Logs, &host);
    e.consume(data(Signal::Logs, 5)).unwrap();
    wait_until(|| backend.delivered().len() == 1).await;
    e.shutdown(in_secs(5)).await;
    let got = backend.got();
    assert_eq!(got.len(), 3);
    assert!(got[1].at - got[0].at >= Duration::from_secs(1), "Retry-After: 1 was honoured");
    assert_eq!(metric(&host, "otelprof_exporter_retries_total{exporter=\"otlphttp\",data_type=\"logs\"}"), Some(2));
    assert_eq!(metric(&host, &items_series("sent", Signal::Logs, "otlphttp")), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_are_dropped_and_counted_not_retried() {
    let host = host();
    let (g, grpc) = backends::grpc(vec![Answer::Invalid]).await;
    let (h, http) = backends::http(vec![Answer::Invalid]).await;
    let cases: [(&dyn ExporterFactory, &str, String); 2] = [
        (&OtlpGrpcFactory, "otlp", format!("endpoint: http://{g}\n{}", fast_retry())),
        (&OtlpHttpFactory, "otlphttp", format!("endpoint: http://{h}\n{}", fast_retry())),
    ];
    for (factory, id, yaml) in cases {
        let e = build(factory, id, &yaml, Signal::Metrics, &host);
        e.consume(data(Signal::Metrics, 3)).unwrap();
        e.shutdown(in_secs(5)).await;
        assert_eq!(metric(&host, &items_series("send_failed", Signal::Metrics, id)), Some(3), "{id}");
        assert_eq!(metric(&host, &items_series("sent", Signal::Metrics, id)), Some(0), "{id}");
        let retries = format!("otelprof_exporter_retries_total{{exporter=\"{id}\",data_type=\"metrics\"}}");
        assert_eq!(metric(&host, &retries), Some(0), "{id}");
    }
    assert_eq!((grpc.got().len(), http.got().len()), (1, 1), "tried once each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_fills_the_bounded_queue_then_refuses() {
    let dead = backends::dead_addr();
    let host = host();
    let common = "sending_queue: {num_consumers: 1, queue_size: 2}\n\
                  retry_on_failure: {initial_interval: 20ms, max_interval: 20ms}\ntimeout: 1s";
    let cases: [(&dyn ExporterFactory, &str, String); 2] = [
        (&OtlpGrpcFactory, "otlp", format!("endpoint: {dead}\ntls: {{insecure: true}}\n{common}")),
        (&OtlpHttpFactory, "otlphttp", format!("endpoint: http://{dead}\n{common}")),
    ];
    for (factory, id, yaml) in cases {
        let e = build(factory, id, &yaml, Signal::Logs, &host);
        let size = format!("otelcol_exporter_queue_size{{exporter=\"{id}\",data_type=\"logs\"}}");
        let capacity = format!("otelcol_exporter_queue_capacity{{exporter=\"{id}\",data_type=\"logs\"}}");
        let mut refused = 0;
        for _ in 0..10 {
            match e.consume(data(Signal::Logs, 2)) {
                Ok(()) => {}
                Err(err) => {
                    assert!(err.is_retryable(), "{err}");
                    refused += 1;
                }
            }
            assert!(metric(&host, &size) <= Some(2), "never above the bound");
        }
        assert_eq!(metric(&host, &capacity), Some(2));
        assert_eq!(refused, 8, "{id}: two requests held (one being retried), the rest refused");
        assert_eq!(metric(&host, &items_series("enqueue_failed", Signal::Logs, id)), Some(16));
        e.shutdown(tokio::time::Instant::now() + Duration::from_millis(300)).await;
        assert_eq!(metric(&host, &items_series("send_failed", Signal::Logs, id)), Some(4), "{id}: cut off and counted");
        assert_eq!(metric(&host, &size), Some(0));
    }
    assert_eq!(host.health.check(), Ok(()), "a dead backend is not a broken exporter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_queue_before_the_deadline() {
    let (addr, backend) = backends::grpc(vec![]).await;
    let host = host();
    let yaml = format!("endpoint: http://{addr}\nsending_queue: {{num_consumers: 2, queue_size: 100}}");
    let e = build(&OtlpGrpcFactory, "otlp", &yaml, Signal::Profiles, &host);
    for _ in 0..20 {
        e.consume(data(Signal::Profiles, 3)).unwrap();
    }
    e.shutdown(in_secs(10)).await;
    assert_eq!(backend.delivered().len(), 20, "everything queued before shutdown was sent");
    assert_eq!(metric(&host, &items_series("sent", Signal::Profiles, "otlp")), Some(60));
    assert_eq!(metric(&host, &items_series("send_failed", Signal::Profiles, "otlp")), Some(0));
    assert!(e.consume(data(Signal::Profiles, 1)).unwrap_err().is_retryable(), "no data taken after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_once_sends_one_request_and_reports_partial_success() {
    let (g, grpc) = backends::grpc(vec![Answer::Partial(1, "too old")]).await;
    let (h, http) = backends::http(vec![Answer::Busy(Duration::ZERO), Answer::Partial(2, "dup")]).await;
    let headers = BTreeMap::from([("X-Scope-OrgID".to_string(), "tenant-a".to_string())]);
    let retry = RetryConfig { initial_interval: Duration::from_millis(10), ..Default::default() };

    let client = Client::from_url(&format!("grpc://{g}"), &headers).unwrap();
    let out = export_once(&client, data(Signal::Profiles, 2), &retry).await.unwrap();
    assert_eq!((out.attempts, out.rejected, out.message.as_str()), (1, 1, "too old"));
    assert_eq!(grpc.got()[0].header("x-scope-orgid"), Some("tenant-a"));

    let client = Client::from_url(&format!("http://{h}/v1development/profiles"), &headers).unwrap();
    let out = export_once(&client, data(Signal::Profiles, 2), &retry).await.unwrap();
    assert_eq!((out.attempts, out.rejected, out.message.as_str()), (2, 2, "dup"));
    assert_eq!(http.got()[1].path, "/v1development/profiles");
    assert_eq!(http.delivered(), [data(Signal::Profiles, 2)]);

    let dead = Client::from_url(&format!("grpc://{}", backends::dead_addr()), &headers).unwrap();
    let off = RetryConfig { enabled: false, ..retry };
    assert_eq!(export_once(&dead, data(Signal::Profiles, 1), &off).await.unwrap_err().attempts(), 1);
    let e = Client::from_url("ftp://x:1", &headers).err().unwrap();
    assert!(e.to_string().contains("bad export URL"), "{e}");
    assert!(Client::from_url("http://", &headers).is_err());
}

#[test]
fn clients_are_made_before_the_runtime_and_connect_on_first_send() {
    let client = Client::from_url("grpcs://collector.example:4317", &BTreeMap::new()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let off = RetryConfig { enabled: false, ..Default::default() };
    let e = rt.block_on(export_once(&client, data(Signal::Logs, 1), &off)).unwrap_err();
    assert_eq!(e.attempts(), 1, "{e}");
}
