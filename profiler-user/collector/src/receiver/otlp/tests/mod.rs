//! The receiver on real sockets, with real peers: tonic's generated OTLP clients, reqwest, raw
//! HTTP/2 for gRPC bodies no well-behaved client would send, and openssl-made certificates.

mod grpc;
mod http;
mod shutdown;
mod tls;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        profiles::v1development::ExportProfilesServiceRequest, trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{any_value::Value, AnyValue, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{
        metric, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics,
    },
    profiles::v1development::{Profile, ProfilesDictionary, ResourceProfiles, Sample, ScopeProfiles, ValueType},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use tokio::task::JoinHandle;

use super::{Listening, OtlpReceiver};
use crate::{
    component::{ComponentId, Host, Outputs, Receiver},
    consumer::{ConsumeError, Consumer},
    signal::{Data, Signal},
};

/// What the test consumer does with data.
#[derive(Clone, Debug)]
pub enum Mode {
    Take,
    Refuse(Option<Duration>),
    Reject,
}

/// Records what it takes, and who sent it; refuses or rejects when told to.
pub struct Recorder {
    pub got: Mutex<Vec<Data>>,
    /// The sender's IP as the pipeline saw it (`client::current`), per request taken.
    pub senders: Mutex<Vec<Option<std::net::IpAddr>>>,
    pub mode: Mutex<Mode>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self { got: Mutex::new(Vec::new()), senders: Mutex::new(Vec::new()), mode: Mutex::new(Mode::Take) }
    }
}

impl Recorder {
    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn take(&self) -> Vec<Data> {
        std::mem::take(&mut *self.got.lock().unwrap())
    }

    /// Asserts that every request taken so far came from the loopback, as the pipeline saw it.
    pub fn assert_sent_from_loopback(&self) {
        let senders = std::mem::take(&mut *self.senders.lock().unwrap());
        assert!(!senders.is_empty());
        let loopback = Some(std::net::IpAddr::from([127, 0, 0, 1]));
        assert!(senders.iter().all(|s| *s == loopback), "{senders:?}");
    }
}

impl Consumer for Recorder {
    fn consume(&self, data: Data) -> Result<(), ConsumeError> {
        match self.mode.lock().unwrap().clone() {
            Mode::Take => {
                self.got.lock().unwrap().push(data);
                self.senders.lock().unwrap().push(crate::client::current().and_then(|c| c.ip()));
                Ok(())
            }
            Mode::Refuse(retry_after) => Err(ConsumeError::Refused { reason: "queue full".into(), retry_after }),
            Mode::Reject => Err(ConsumeError::Rejected("not allowed".into())),
        }
    }
}

/// A started receiver and what the test needs around it.
pub struct Running {
    pub host: Host,
    pub listening: Listening,
    pub handle: JoinHandle<()>,
    pub sink: Arc<Recorder>,
}

/// Starts an `otlp` receiver from `yaml` (the value of `receivers.otlp`) with `signals`
/// going to one recorder.
pub async fn start(yaml: &str, signals: &[Signal]) -> Running {
    let sink = Arc::new(Recorder::default());
    start_with(yaml, signals, sink.clone(), sink).await
}

pub async fn start_with(yaml: &str, signals: &[Signal], next: Arc<dyn Consumer>, sink: Arc<Recorder>) -> Running {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let id = ComponentId::parse("otlp").unwrap();
    let receiver = OtlpReceiver::new(&id, serde_yaml::from_str(yaml).unwrap(), "receivers.otlp").unwrap();
    let listening = receiver.listening();
    let host = Host::new(Duration::from_secs(4));
    let mut outputs = Outputs::default();
    for s in signals {
        outputs.insert(*s, next.clone());
    }
    let handle = Box::new(receiver).start(outputs, &host).await.unwrap();
    Running { host, listening, handle, sink }
}

impl Running {
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.listening.grpc().unwrap())
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listening.http().unwrap())
    }

    /// A receiver counter (`otelcol_receiver_accepted_spans`) for `transport`, as `/metrics` shows it.
    pub fn counter(&self, name: &str, transport: &str) -> u64 {
        let mut text = String::new();
        self.host.telemetry.render(&mut text);
        let prefix = format!("{name}_total{{receiver=\"otlp\",transport=\"{transport}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.parse().unwrap())
    }

    pub async fn stop(self) {
        self.host.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle).await.expect("stops").unwrap();
        assert_eq!(self.host.health.check(), Ok(()), "stopped as asked is healthy");
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

fn resource(tag: &str) -> Option<Resource> {
    Some(Resource { attributes: vec![kv("service.name", tag)], ..Default::default() })
}

/// `n` spans named after `tag`.
pub fn traces(n: usize, tag: &str) -> ExportTraceServiceRequest {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![i as u8 + 1; 16],
            span_id: vec![i as u8 + 2; 8],
            name: format!("{tag}-{i}"),
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_700_000_000_000_000_500 + i as u64,
            kind: 2,
            attributes: vec![kv("i", &i.to_string())],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(tag),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// A gauge with two points and a histogram with one: 3 items.
pub fn metrics(tag: &str) -> ExportMetricsServiceRequest {
    let point = |v| NumberDataPoint {
        time_unix_nano: 5,
        value: Some(number_data_point::Value::AsInt(v)),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(tag),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: format!("{tag}.gauge"),
                        data: Some(metric::Data::Gauge(Gauge { data_points: vec![point(1), point(-2)] })),
                        ..Default::default()
                    },
                    Metric {
                        name: format!("{tag}.histogram"),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                count: 3,
                                bucket_counts: vec![1, 2],
                                explicit_bounds: vec![10.0],
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// `n` log records.
pub fn logs(n: usize, tag: &str) -> ExportLogsServiceRequest {
    let log_records = (0..n)
        .map(|i| LogRecord {
            time_unix_nano: 7 + i as u64,
            severity_number: 9,
            body: Some(AnyValue { value: Some(Value::StringValue(format!("{tag} line {i}"))) }),
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(tag),
            scope_logs: vec![ScopeLogs { log_records, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// A profile with two samples.
pub fn profiles(tag: &str) -> ExportProfilesServiceRequest {
    ExportProfilesServiceRequest {
        resource_profiles: vec![ResourceProfiles {
            resource: resource(tag),
            scope_profiles: vec![ScopeProfiles {
                profiles: vec![Profile {
                    sample_type: Some(ValueType { type_strindex: 1, unit_strindex: 2 }),
                    samples: vec![
                        Sample { stack_index: 0, values: vec![10], ..Default::default() },
                        Sample { stack_index: 0, values: vec![20], ..Default::default() },
                    ],
                    time_unix_nano: 1,
                    duration_nano: 2,
                    profile_id: vec![9; 16],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
        dictionary: Some(ProfilesDictionary {
            string_table: vec![String::new(), "cpu".into(), "nanoseconds".into(), tag.into()],
            ..Default::default()
        }),
    }
}

/// A valid gzip stream of `mib` MiB of zeros, about 1 KiB per MiB, built without ever holding
/// the zeros it expands to: one MiB is deflated once with a full flush (which makes the block
/// independent of what precedes it), and that block is repeated.
pub fn gzip_bomb(mib: u32) -> Vec<u8> {
    use flate2::{Compress, Compression, Crc, FlushCompress};
    let zeros = vec![0u8; 1 << 20];
    let mut deflate = Compress::new(Compression::best(), false);
    let mut block = Vec::with_capacity(1 << 16);
    deflate.compress_vec(&zeros, &mut block, FlushCompress::Full).unwrap();
    assert_eq!(deflate.total_in(), 1 << 20, "one call deflates the whole MiB");
    let mut crc = Crc::new();
    let mut one = Crc::new();
    one.update(&zeros);
    for _ in 0..mib {
        crc.combine(&one);
    }
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.reserve(block.len() * mib as usize + 10);
    for _ in 0..mib {
        out.extend_from_slice(&block);
    }
    // A final, empty block with fixed codes: BFINAL=1, BTYPE=01, then the 7-bit end-of-block.
    out.extend_from_slice(&[0x03, 0x00]);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(mib << 20).to_le_bytes()); // ISIZE is the length mod 2^32
    out
}

/// The process's peak resident memory so far, in MiB.
pub fn peak_rss_mib() -> u64 {
    let mut usage = unsafe { std::mem::zeroed::<libc::rusage>() };
    // SAFETY: getrusage only writes the struct it is given.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    usage.ru_maxrss as u64 / 1024
}

#[test]
fn the_bomb_is_valid_gzip() {
    use super::decompress::{ContentEncoding, Inflater};
    let bomb = gzip_bomb(3);
    assert!(bomb.len() < 10_000, "{}", bomb.len());
    let mut inflater = Inflater::new(ContentEncoding::Gzip, 3 << 20);
    for chunk in bomb.chunks(1000) {
        inflater.push(chunk).unwrap();
    }
    let out = inflater.finish().unwrap();
    assert_eq!(out.len(), 3 << 20);
    assert!(out.iter().all(|&b| b == 0));
}
