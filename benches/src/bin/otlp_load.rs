//! `otlp_load`: OTLP/gRPC load for the collector benchmark. It builds `--distinct` export
//! requests of `--items` spans or log records each, with realistic content (a resource with 5
//! attributes, spans with 8 attributes and sometimes an event, log records with a message and 5
//! attributes, random ids), encodes and gzips each once, then sends `--requests` of them in turn,
//! `--concurrency` at a time, as gRPC unary calls with `grpc-encoding: gzip`. The bodies are sent
//! as they were framed, so the generator does neither protobuf nor gzip work per request and takes
//! as little CPU as possible from the collector under measurement.
//!
//! UNAVAILABLE and RESOURCE_EXHAUSTED answers (and failed connections) are retried after a short
//! backoff, and counted. At the end it prints one line:
//! `otlp_load: signal=traces requests=N items=N failed=N retries=N elapsed=SECONDS wire_bytes=N`,
//! where `items` were accepted (answered OK) and `failed` are requests given up on.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::{
    collector::{logs::v1::ExportLogsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
    trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status as SpanStatus},
};
use otelprof_benches::otlp::{gzip_frame, Signal};
use prost::Message;
use tonic::{codegen::Service, transport::Channel, Code, Status};

#[derive(Parser)]
#[command(about = "OTLP/gRPC load generator: pre-encoded, gzipped export requests")]
struct Args {
    /// The collector's OTLP/gRPC receiver, e.g. http://127.0.0.1:4317.
    #[arg(long)]
    endpoint: String,
    #[arg(long, value_enum, default_value = "traces")]
    signal: Signal,
    /// Requests to send in all.
    #[arg(long, default_value_t = 1000)]
    requests: u64,
    /// Items (spans or log records) per request.
    #[arg(long, default_value_t = 1000)]
    items: usize,
    /// Distinct requests built up front and sent in turn.
    #[arg(long, default_value_t = 16)]
    distinct: usize,
    /// Requests in flight at once (over one HTTP/2 connection).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Attempts per request before it counts as failed.
    #[arg(long, default_value_t = 20)]
    attempts: u32,
    /// Seed of the content (ids, attribute values).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// splitmix64: reproducible content without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn id(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    fn hex(&mut self, len: usize) -> String {
        self.id(len).iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn s(key: &str, value: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn i(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

const SERVICES: [&str; 5] = ["checkout", "cart", "payments", "inventory", "frontend"];
const METHODS: [&str; 4] = ["GET", "GET", "POST", "PUT"];
const ROUTES: [&str; 6] = [
    "/api/v1/orders/{id}",
    "/api/v1/cart/{id}/items",
    "/api/v1/products/{id}",
    "/api/v1/payments",
    "/api/v1/users/{id}/sessions",
    "/healthz",
];
const AGENTS: [&str; 3] = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "okhttp/4.12.0",
    "python-requests/2.31.0",
];

/// A service instance: 5 resource attributes, one per request.
fn resource(rng: &mut Rng) -> Resource {
    let service = rng.pick(&SERVICES);
    Resource {
        attributes: vec![
            s("service.name", service),
            s("service.version", format!("1.{}.{}", rng.below(20), rng.below(10))),
            s("service.instance.id", rng.hex(16)),
            s("host.name", format!("node-{:02}.prod.internal", rng.below(40))),
            s("deployment.environment.name", "production"),
        ],
        ..Default::default()
    }
}

fn scope(name: &str) -> InstrumentationScope {
    InstrumentationScope { name: name.into(), version: "0.52.0".into(), ..Default::default() }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// `n` spans in traces of about 10 spans (a server span and its children), 8 attributes each,
/// an event on about one span in eight.
fn spans(rng: &mut Rng, n: usize) -> Vec<Span> {
    let start = now_ns();
    let mut out = Vec::with_capacity(n);
    let (mut trace_id, mut root) = (Vec::new(), Vec::new());
    for k in 0..n {
        let first = k % 10 == 0;
        if first {
            trace_id = rng.id(16);
            root = rng.id(8);
        }
        let method = rng.pick(&METHODS);
        let route = rng.pick(&ROUTES);
        let code = [200, 200, 200, 200, 201, 204, 404, 500][rng.below(8) as usize];
        let begin = start + rng.below(1_000_000_000);
        let mut sp = Span {
            trace_id: trace_id.clone(),
            span_id: if first { root.clone() } else { rng.id(8) },
            parent_span_id: if first { Vec::new() } else { root.clone() },
            flags: 0x101,
            name: format!("{method} {route}"),
            kind: if first { span::SpanKind::Server } else { span::SpanKind::Client } as i32,
            start_time_unix_nano: begin,
            end_time_unix_nano: begin + 1000 + rng.below(50_000_000),
            attributes: vec![
                s("http.request.method", method),
                s("url.path", route.replace("{id}", &rng.below(100_000).to_string())),
                s("http.route", route),
                i("http.response.status_code", code),
                s("server.address", format!("{}.svc.cluster.local", rng.pick(&SERVICES))),
                i("server.port", 8080),
                s("user_agent.original", rng.pick(&AGENTS)),
                s("network.protocol.version", "1.1"),
            ],
            ..Default::default()
        };
        if code >= 500 {
            sp.status =
                Some(SpanStatus { code: status::StatusCode::Error as i32, message: "upstream returned 500".into() });
        }
        if rng.below(8) == 0 {
            sp.events.push(span::Event {
                time_unix_nano: begin + 500,
                name: "exception".into(),
                attributes: vec![
                    s("exception.type", "java.net.SocketTimeoutException"),
                    s("exception.message", format!("Read timed out after {} ms", 1000 + rng.below(4000))),
                ],
                ..Default::default()
            });
        }
        out.push(sp);
    }
    out
}

/// `n` log records: a formatted message, a severity, 5 attributes, trace context on half.
fn log_records(rng: &mut Rng, n: usize) -> Vec<LogRecord> {
    const SEVERITIES: [(i32, &str); 4] = [(9, "INFO"), (9, "INFO"), (13, "WARN"), (17, "ERROR")];
    const THREADS: [&str; 4] = ["http-nio-8080-exec-1", "http-nio-8080-exec-7", "scheduler-2", "main"];
    let start = now_ns();
    (0..n)
        .map(|_| {
            let (severity, text) = SEVERITIES[rng.below(4) as usize];
            let route = rng.pick(&ROUTES);
            let user = rng.below(1_000_000);
            let ms = rng.below(2000);
            let body = match rng.below(3) {
                0 => format!("Handled {} {route} for user {user} in {ms} ms", rng.pick(&METHODS)),
                1 => format!("Cache miss for key product:{user}:{}, loading from database (took {ms} ms)", rng.hex(4)),
                _ => format!(
                    "Retrying call to {}.svc.cluster.local after {ms} ms: connection reset by peer",
                    rng.pick(&SERVICES)
                ),
            };
            let time = start + rng.below(1_000_000_000);
            let traced = rng.below(2) == 0;
            LogRecord {
                time_unix_nano: time,
                observed_time_unix_nano: time + 1_000_000,
                severity_number: severity,
                severity_text: text.into(),
                body: Some(AnyValue { value: Some(any_value::Value::StringValue(body)) }),
                attributes: vec![
                    s("thread.name", rng.pick(&THREADS)),
                    s("code.function", "com.example.shop.OrderController.handle"),
                    s("http.route", route),
                    i("enduser.id", user as i64),
                    s("request.id", rng.hex(8)),
                ],
                flags: u32::from(traced),
                trace_id: if traced { rng.id(16) } else { Vec::new() },
                span_id: if traced { rng.id(8) } else { Vec::new() },
                ..Default::default()
            }
        })
        .collect()
}

/// The encoded export request number `k` of `signal`.
fn request(signal: Signal, seed: u64, k: usize, items: usize) -> Result<Vec<u8>> {
    let mut rng = Rng(seed.wrapping_mul(1_000_003).wrapping_add(k as u64));
    Ok(match signal {
        Signal::Traces => ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource(&mut rng)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope("io.opentelemetry.spring-webmvc-6.0")),
                    spans: spans(&mut rng, items),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec(),
        Signal::Logs => ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(resource(&mut rng)),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope("com.example.shop")),
                    log_records: log_records(&mut rng, items),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec(),
        Signal::Metrics => bail!("otlp_load sends traces or logs"),
    })
}

#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    wire_bytes: AtomicU64,
}

enum Outcome {
    Ok,
    Retry(String),
    Fail(String),
}

/// One unary call with a pre-framed body; the gRPC status is in the headers (trailers-only
/// answers) or in the trailers.
async fn call(channel: &mut Channel, uri: &http::Uri, frame: Bytes) -> Outcome {
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(uri.clone())
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-encoding", "gzip")
        .header("grpc-accept-encoding", "gzip")
        .body(tonic::body::Body::new(Full::new(frame)));
    let request = match request {
        Ok(r) => r,
        Err(e) => return Outcome::Fail(format!("building the request: {e}")),
    };
    if let Err(e) = std::future::poll_fn(|cx| channel.poll_ready(cx)).await {
        return Outcome::Retry(format!("connection: {e}"));
    }
    let response = match channel.call(request).await {
        Ok(r) => r,
        Err(e) => return Outcome::Retry(format!("connection: {e}")),
    };
    let http_status = response.status();
    let (parts, body) = response.into_parts();
    let status = match Status::from_header_map(&parts.headers) {
        Some(s) => Some(s),
        None => match body.collect().await {
            Ok(collected) => collected.trailers().and_then(Status::from_header_map),
            Err(e) => return Outcome::Retry(format!("reading the answer: {e}")),
        },
    };
    match status {
        Some(s) if s.code() == Code::Ok => Outcome::Ok,
        Some(s) if matches!(s.code(), Code::Unavailable | Code::ResourceExhausted) => {
            Outcome::Retry(format!("{:?}: {}", s.code(), s.message()))
        }
        Some(s) => Outcome::Fail(format!("{:?}: {}", s.code(), s.message())),
        None if matches!(http_status.as_u16(), 429 | 502 | 503 | 504) => Outcome::Retry(format!("HTTP {http_status}")),
        None => Outcome::Fail(format!("HTTP {http_status} without a gRPC status")),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.distinct == 0 || args.concurrency == 0 {
        bail!("--distinct and --concurrency must be at least 1");
    }
    let frames = (0..args.distinct)
        .map(|k| {
            let message = request(args.signal, args.seed, k, args.items)?;
            gzip_frame(&message).context("gzip")
        })
        .collect::<Result<Vec<Bytes>>>()?;
    let frames = Arc::new(frames);
    let uri: http::Uri = format!("{}{}", args.endpoint.trim_end_matches('/'), args.signal.path())
        .parse()
        .with_context(|| format!("--endpoint {}", args.endpoint))?;

    // One thread: the generator shares the machine with the collector under measurement.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    let stats = Arc::new(Stats::default());
    let next = Arc::new(AtomicU64::new(0));
    let elapsed = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(args.endpoint.clone())
            .with_context(|| format!("--endpoint {}", args.endpoint))?
            .connect()
            .await
            .with_context(|| format!("connecting to {}", args.endpoint))?;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..args.concurrency {
            let (mut channel, uri, frames, stats, next) =
                (channel.clone(), uri.clone(), frames.clone(), stats.clone(), next.clone());
            let (total, attempts) = (args.requests, args.attempts);
            tasks.push(tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= total {
                        break;
                    }
                    let frame = frames[k as usize % frames.len()].clone();
                    let mut attempt = 0;
                    loop {
                        attempt += 1;
                        stats.wire_bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
                        match call(&mut channel, &uri, frame.clone()).await {
                            Outcome::Ok => {
                                stats.ok.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Outcome::Retry(why) if attempt < attempts => {
                                if stats.retries.fetch_add(1, Ordering::Relaxed) == 0 {
                                    eprintln!("otlp_load: retrying: {why}");
                                }
                                let backoff = Duration::from_millis((10u64 << attempt.min(7)).min(1000));
                                tokio::time::sleep(backoff).await;
                            }
                            Outcome::Retry(why) | Outcome::Fail(why) => {
                                if stats.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                    eprintln!("otlp_load: request failed: {why}");
                                }
                                break;
                            }
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.context("sender task")?;
        }
        anyhow::Ok(started.elapsed())
    })?;
    let ok = stats.ok.load(Ordering::Relaxed);
    println!(
        "otlp_load: signal={} requests={ok} items={} failed={} retries={} elapsed={:.3} wire_bytes={}",
        args.signal.name(),
        ok * args.items as u64,
        stats.failed.load(Ordering::Relaxed),
        stats.retries.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        stats.wire_bytes.load(Ordering::Relaxed)
    );
    Ok(())
}
