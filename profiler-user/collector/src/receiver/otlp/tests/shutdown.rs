//! Stopping: requests in flight finish and are answered, new connections are not taken, and
//! the receiver's handle ends after that.

use std::sync::mpsc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

use super::*;

/// Holds every request inside `consume` until the test lets it go (a test-only consumer: the
/// real ones never block).
struct Held {
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
    sink: Arc<Recorder>,
}

impl Consumer for Held {
    fn consume(&self, data: Data) -> Result<(), ConsumeError> {
        self.entered.lock().unwrap().send(()).unwrap();
        self.release.lock().unwrap().recv().unwrap();
        self.sink.consume(data)
    }
}

async fn held(yaml: &str) -> (Running, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let sink = Arc::new(Recorder::default());
    let held = Arc::new(Held { entered: Mutex::new(entered_tx), release: Mutex::new(release_rx), sink: sink.clone() });
    let r = start_with(yaml, &[Signal::Traces], held, sink).await;
    (r, entered_rx, release_tx)
}

/// Waits (off the runtime) until a request is inside the consumer.
async fn wait_entered(entered: mpsc::Receiver<()>) -> mpsc::Receiver<()> {
    tokio::task::spawn_blocking(move || {
        entered.recv_timeout(Duration::from_secs(10)).expect("a request reached the consumer");
        entered
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_finishes_requests_in_flight_then_ends() {
    let (r, entered, release) = held("protocols:\n  http:\n    endpoint: 127.0.0.1:0\n").await;
    let url = r.http_url("/v1/traces");
    let body = traces(2, "in flight").encode_to_vec();
    let request = tokio::spawn(
        reqwest::Client::new().post(url.clone()).header("content-type", "application/x-protobuf").body(body).send(),
    );
    let _entered = wait_entered(entered).await;
    r.host.stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!r.handle.is_finished(), "a request is still in flight");
    // The listener is closed: no new connections.
    assert!(tokio::net::TcpStream::connect(r.listening.http().unwrap()).await.is_err());
    release.send(()).unwrap();
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::timeout(Duration::from_secs(5), r.handle).await.expect("ends once drained").unwrap();
    assert_eq!(r.sink.take(), [Data::Traces(traces(2, "in flight"))]);
    assert_eq!(r.host.health.check(), Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_finishes_calls_in_flight_then_ends() {
    let (r, entered, release) = held("protocols:\n  grpc:\n    endpoint: 127.0.0.1:0\n").await;
    let mut client = TraceServiceClient::connect(r.grpc_url()).await.unwrap();
    let call = tokio::spawn(async move { client.export(traces(3, "in flight")).await });
    let _entered = wait_entered(entered).await;
    r.host.stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!r.handle.is_finished(), "a call is still in flight");
    release.send(()).unwrap();
    call.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(5), r.handle).await.expect("ends once drained").unwrap();
    assert!(tokio::net::TcpStream::connect(r.listening.grpc().unwrap()).await.is_err());
    assert_eq!(r.sink.take(), [Data::Traces(traces(3, "in flight"))]);
    assert_eq!(r.host.health.check(), Ok(()));
}

#[tokio::test]
async fn a_taken_port_fails_the_start_naming_the_protocol() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = taken.local_addr().unwrap().port();
    let id = ComponentId::parse("otlp/second").unwrap();
    let yaml = format!("protocols:\n  grpc:\n    endpoint: 127.0.0.1:0\n  http:\n    endpoint: 127.0.0.1:{port}\n");
    let receiver = OtlpReceiver::new(&id, serde_yaml::from_str(&yaml).unwrap(), "receivers.otlp/second").unwrap();
    let listening = receiver.listening();
    let e = Box::new(receiver).start(Outputs::default(), &Host::new(Duration::from_secs(1))).await.unwrap_err();
    assert_eq!(e.id, "otlp/second");
    assert!(e.message.contains("protocols.http") && e.message.contains(&port.to_string()), "{e}");
    assert_eq!(listening.grpc(), None, "nothing was started");
}
