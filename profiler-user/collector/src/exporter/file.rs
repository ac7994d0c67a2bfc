//! `file`: writes requests to a file in the Collector file exporter's format, so its readers
//! (the `otlpjsonfile` receiver, scripts) read ours:
//!
//! - `format: json` without compression: one OTLP/JSON export request per line;
//! - otherwise (`proto`, or any format with `compression: zstd`): each request (protobuf or
//!   JSON, zstd-compressed when asked) preceded by its length as a big-endian u32.
//!
//! One file for all the signals of an exporter, written by the sending queue's tasks on the
//! blocking pool (never on the caller of `consume`), so a slow disk fills the bounded queue and
//! is counted, not felt upstream. Concurrent senders may write requests out of arrival order;
//! `sending_queue: {num_consumers: 1}` keeps it. A `rotation:` block turns on rotation by size
//! (the exporter's `rotate` module); the buffer is flushed every `flush_interval` and at shutdown.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::Duration,
};

use async_trait::async_trait;
use serde::{Deserialize, Deserializer};

use super::{
    config::{QueueConfig, RetryConfig},
    json,
    queued::QueuedExporter,
    rotate::{Policy, RotatingFile},
    transport::{Payload, Request, SendError, Sent, Transport},
};
use crate::{
    component::{BuildExporter, ComponentError, ComponentId, Exporter, ExporterFactory, Host},
    config::{deserialize_at, ConfigError},
    signal::{Data, Signal},
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Proto,
}

/// `compression:` of `file`: none (absent or empty) or `zstd`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileCompression {
    #[default]
    None,
    Zstd,
}

impl<'de> Deserialize<'de> for FileCompression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Option::<String>::deserialize(d)?.unwrap_or_default().as_str() {
            "" | "none" => Ok(FileCompression::None),
            "zstd" => Ok(FileCompression::Zstd),
            other => {
                Err(serde::de::Error::custom(format!("unknown compression `{other}`; the file exporter knows zstd")))
            }
        }
    }
}

/// `rotation:` (lumberjack's keys, the Collector's defaults).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RotationConfig {
    /// Size before rotating; fractions are allowed (the Collector takes whole megabytes).
    pub max_megabytes: f64,
    /// Backups older than this many days are removed; 0 keeps them whatever their age.
    pub max_days: u64,
    /// Backups kept at most; 0 keeps all.
    pub max_backups: usize,
    /// Backup names in local time instead of UTC.
    pub localtime: bool,
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self { max_megabytes: 100.0, max_days: 0, max_backups: 100, localtime: false }
    }
}

/// `exporters.file`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub path: PathBuf,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub compression: FileCompression,
    /// Absent: one file that grows.
    #[serde(default)]
    pub rotation: Option<RotationConfig>,
    #[serde(default = "default_flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Append to an existing file instead of truncating it.
    #[serde(default)]
    pub append: bool,
    #[serde(default)]
    pub sending_queue: QueueConfig,
}

fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}

/// The file and how records are framed in it.
struct FileSink {
    path: PathBuf,
    file: Mutex<RotatingFile>,
    format: Format,
    compression: FileCompression,
}

impl FileSink {
    fn file(&self) -> MutexGuard<'_, RotatingFile> {
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The encoded request, before framing and compression.
    fn encode(&self, data: &Data) -> Result<Vec<u8>, String> {
        match self.format {
            Format::Json => json::encode(data).map_err(|e| format!("OTLP/JSON encoding: {e}")),
            Format::Proto => Ok(data.encode_to_vec()),
        }
    }

    /// Compresses and frames `payload` and writes it whole (on the blocking pool).
    fn write(&self, payload: Vec<u8>) -> std::io::Result<()> {
        let record = match (self.format, self.compression) {
            (Format::Json, FileCompression::None) => {
                let mut line = payload;
                line.push(b'\n');
                line
            }
            (_, compression) => {
                let body = match compression {
                    FileCompression::Zstd => ruzstd::encoding::compress_to_vec(
                        payload.as_slice(),
                        ruzstd::encoding::CompressionLevel::Fastest,
                    ),
                    FileCompression::None => payload,
                };
                let len = u32::try_from(body.len()).map_err(|_| {
                    std::io::Error::other(format!("a record of {} bytes does not fit its u32 length", body.len()))
                })?;
                let mut framed = Vec::with_capacity(body.len() + 4);
                framed.extend_from_slice(&len.to_be_bytes());
                framed.extend_from_slice(&body);
                framed
            }
        };
        self.file().write_record(&record)
    }

    fn flush(&self) -> std::io::Result<()> {
        self.file().flush()
    }
}

struct FileWriter(Arc<FileSink>);

#[async_trait]
impl Transport for FileWriter {
    /// Encoded (and compressed) at once: the queue holds what will be written.
    fn prepare(&self, data: Data) -> Result<Request, SendError> {
        let payload = self.0.encode(&data).map_err(SendError::Permanent)?;
        Ok(Request { signal: data.signal(), items: data.items(), payload: Payload::Wire(payload.into()) })
    }

    async fn send(&self, request: &Request) -> Result<Sent, SendError> {
        let payload = request.as_wire()?.to_vec();
        let sink = self.0.clone();
        match tokio::task::spawn_blocking(move || sink.write(payload)).await {
            Ok(Ok(())) => Ok(Sent::default()),
            Ok(Err(e)) => Err(SendError::Permanent(format!("writing {}: {e}", self.0.path.display()))),
            Err(e) => Err(SendError::Permanent(format!("writing {}: {e}", self.0.path.display()))),
        }
    }

    async fn shutdown(&self) {
        let sink = self.0.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || sink.flush()).await {
            tracing::warn!("flushing {}: {e}", self.0.path.display());
        }
    }
}

/// Flushes every `every` while the exporter (its builder or any signal's sender) holds the sink.
async fn flush_periodically(sink: Weak<FileSink>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(sink) = sink.upgrade() else { return };
        let path = sink.path.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || sink.flush()).await {
            tracing::debug!("flushing {}: {e}", path.display());
        }
    }
}

/// Makes `file` exporters.
pub struct FileFactory;

impl ExporterFactory for FileFactory {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn create(
        &self,
        id: &ComponentId,
        config: serde_yaml::Value,
        path: &str,
    ) -> Result<Box<dyn BuildExporter>, ConfigError> {
        let cfg: FileConfig = deserialize_at(path, config)?;
        if cfg.path.as_os_str().is_empty() {
            return Err(ConfigError::new(format!("{path}.path"), "required: the file to write"));
        }
        if cfg.flush_interval.is_zero() {
            return Err(ConfigError::new(format!("{path}.flush_interval"), "must be more than 0"));
        }
        if let Some(r) = &cfg.rotation {
            if !(r.max_megabytes.is_finite() && r.max_megabytes > 0.0) {
                return Err(ConfigError::new(format!("{path}.rotation.max_megabytes"), "must be more than 0"));
            }
        }
        cfg.sending_queue.validate(&format!("{path}.sending_queue"))?;
        Ok(Box::new(BuildFile { id: id.clone(), cfg, sink: Mutex::new(None) }))
    }
}

struct BuildFile {
    id: ComponentId,
    cfg: FileConfig,
    /// The one file every signal of this exporter writes to, opened at the first build (kept
    /// here so a signal built later appends to it rather than truncating it again).
    sink: Mutex<Option<Arc<FileSink>>>,
}

impl BuildFile {
    fn sink(&self) -> Result<Arc<FileSink>, ComponentError> {
        let mut cached = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = cached.as_ref() {
            return Ok(s.clone());
        }
        let policy = self.cfg.rotation.as_ref().map(|r| Policy {
            max_bytes: ((r.max_megabytes * 1024.0 * 1024.0) as u64).max(1),
            max_backups: r.max_backups,
            max_age: (r.max_days > 0).then(|| Duration::from_secs(r.max_days * 86_400)),
            localtime: r.localtime,
        });
        let file = RotatingFile::open(&self.cfg.path, self.cfg.append, policy)
            .map_err(|e| ComponentError::new(&self.id, format!("opening {}: {e}", self.cfg.path.display())))?;
        let sink = Arc::new(FileSink {
            path: self.cfg.path.clone(),
            file: Mutex::new(file),
            format: self.cfg.format,
            compression: self.cfg.compression,
        });
        tokio::spawn(flush_periodically(Arc::downgrade(&sink), self.cfg.flush_interval));
        *cached = Some(sink.clone());
        Ok(sink)
    }
}

impl BuildExporter for BuildFile {
    fn build(&self, signal: Signal, host: &Host) -> Result<Arc<dyn Exporter>, ComponentError> {
        let writer = Arc::new(FileWriter(self.sink()?));
        // A failed write is reported and counted, not retried (as the Collector's exporter).
        let retry = RetryConfig { enabled: false, ..Default::default() };
        Ok(QueuedExporter::start(&self.id, signal, writer, &self.cfg.sending_queue, &retry, host))
    }
}
