//! `otlp_sink`: an OTLP/gRPC server for traces, metrics and logs that accepts gzip, counts the
//! items of each request (spans, metrics, log records) without decoding them, and discards them.
//! It is where the collectors under benchmark export to.
//!
//! The first line it prints is `listening ADDR`. Then, for every line it reads on stdin, it prints
//! the totals so far on one line (`traces=N logs=N metrics=N requests=N bytes=N rejected=N`;
//! `bytes` are decompressed message bytes, `rejected` requests that did not decode). It prints
//! the totals once more and exits at the end of stdin or on SIGTERM.

use std::{
    convert::Infallible,
    io::{BufRead, Write},
    marker::PhantomData,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use anyhow::{Context as _, Result};
use clap::Parser;
use otelprof_benches::otlp::{count_items, RawCodec, Signal};
use tonic::{
    codec::CompressionEncoding,
    codegen::{http, tokio_stream::wrappers::TcpListenerStream, Body, BoxFuture, Bytes, Service, StdError},
    server::{Grpc, NamedService, UnaryService},
    Code, Request, Response, Status,
};

#[derive(Parser)]
#[command(about = "OTLP/gRPC sink: counts spans, metrics and log records, and discards them")]
struct Args {
    /// Where to listen; port 0 picks a free port (printed on the first line).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Largest decompressed request accepted, MiB (collectors batch thousands of items).
    #[arg(long, default_value_t = 256)]
    max_message_mib: usize,
}

#[derive(Default)]
struct Totals {
    items: [AtomicU64; 3],
    requests: AtomicU64,
    bytes: AtomicU64,
    rejected: AtomicU64,
}

impl Totals {
    fn line(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "traces={} logs={} metrics={} requests={} bytes={} rejected={}",
            get(&self.items[0]),
            get(&self.items[1]),
            get(&self.items[2]),
            get(&self.requests),
            get(&self.bytes),
            get(&self.rejected)
        )
    }
}

/// One signal's service, as a type: tonic routes by `NamedService::NAME`.
trait Kind: Send + Sync + 'static {
    const SIGNAL: Signal;
    const NAME: &'static str;
}

struct Traces;
struct Logs;
struct Metrics;

impl Kind for Traces {
    const SIGNAL: Signal = Signal::Traces;
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}
impl Kind for Logs {
    const SIGNAL: Signal = Signal::Logs;
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}
impl Kind for Metrics {
    const SIGNAL: Signal = Signal::Metrics;
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}

fn index(signal: Signal) -> usize {
    match signal {
        Signal::Traces => 0,
        Signal::Logs => 1,
        Signal::Metrics => 2,
    }
}

struct Sink<K> {
    totals: Arc<Totals>,
    max_message: usize,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Sink<K> {
    fn clone(&self) -> Self {
        Sink { totals: self.totals.clone(), max_message: self.max_message, kind: PhantomData }
    }
}

impl<K: Kind> NamedService for Sink<K> {
    const NAME: &'static str = K::NAME;
}

/// The `Export` method: count, discard, answer with an empty response (no partial success).
struct Export<K> {
    totals: Arc<Totals>,
    kind: PhantomData<fn() -> K>,
}

impl<K: Kind> UnaryService<Bytes> for Export<K> {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let totals = self.totals.clone();
        Box::pin(async move {
            let message = request.into_inner();
            totals.requests.fetch_add(1, Ordering::Relaxed);
            totals.bytes.fetch_add(message.len() as u64, Ordering::Relaxed);
            match count_items(&message) {
                Ok(n) => {
                    totals.items[index(K::SIGNAL)].fetch_add(n, Ordering::Relaxed);
                    Ok(Response::new(Bytes::new()))
                }
                Err(e) => {
                    totals.rejected.fetch_add(1, Ordering::Relaxed);
                    Err(Status::invalid_argument(format!("not an OTLP {} export request: {e}", K::SIGNAL.name())))
                }
            }
        })
    }
}

impl<K: Kind, B> Service<http::Request<B>> for Sink<K>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let totals = self.totals.clone();
        let max_message = self.max_message;
        let export = request.uri().path() == K::SIGNAL.path();
        Box::pin(async move {
            if !export {
                return Ok(Status::new(Code::Unimplemented, "only Export").into_http());
            }
            let mut grpc =
                Grpc::new(RawCodec).accept_compressed(CompressionEncoding::Gzip).max_decoding_message_size(max_message);
            Ok(grpc.unary(Export::<K> { totals, kind: PhantomData }, request).await)
        })
    }
}

fn sink<K: Kind>(totals: &Arc<Totals>, max_message: usize) -> Sink<K> {
    Sink { totals: totals.clone(), max_message, kind: PhantomData }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let totals = Arc::new(Totals::default());
    let max_message = args.max_message_mib << 20;
    // One thread: the sink shares the machine with the collector under measurement.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(args.listen))
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let server = tonic::transport::Server::builder()
        .add_service(sink::<Traces>(&totals, max_message))
        .add_service(sink::<Logs>(&totals, max_message))
        .add_service(sink::<Metrics>(&totals, max_message))
        .serve_with_incoming(TcpListenerStream::new(listener));
    let serving = runtime.spawn(server);

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {addr}")?;
        out.flush()?;
    }
    // Answer on stdout for every line on stdin; end with stdin.
    let reader = {
        let totals = totals.clone();
        std::thread::spawn(move || -> std::io::Result<()> {
            for line in std::io::stdin().lock().lines() {
                line?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", totals.line())?;
                out.flush()?;
            }
            Ok(())
        })
    };
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stdin_closed = tokio::task::spawn_blocking(move || reader.join());
        tokio::select! {
            _ = term.recv() => {}
            _ = stdin_closed => {}
            r = serving => r.context("sink server task")?.context("sink server")?,
        }
        anyhow::Ok(())
    })?;
    println!("{}", totals.line());
    Ok(())
}
