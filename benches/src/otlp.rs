//! What `otlp_load` and `otlp_sink` (the collector benchmark's load generator and sink) share:
//! the signals and their gRPC paths, a codec that hands message bytes through untouched, and a
//! count of the items in an export request that skips everything but the nesting.

use bytes::{Buf, BufMut, Bytes};
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    Status,
};

/// An OTLP signal the benchmark sends or counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Signal {
    Traces,
    Logs,
    Metrics,
}

impl Signal {
    /// The gRPC service (`NamedService::NAME`).
    pub fn service(self) -> &'static str {
        match self {
            Signal::Traces => "opentelemetry.proto.collector.trace.v1.TraceService",
            Signal::Logs => "opentelemetry.proto.collector.logs.v1.LogsService",
            Signal::Metrics => "opentelemetry.proto.collector.metrics.v1.MetricsService",
        }
    }

    /// The path of the `Export` method.
    pub fn path(self) -> String {
        format!("/{}/Export", self.service())
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
        }
    }
}

/// A gRPC codec for messages that are already protobuf bytes: nothing is encoded or decoded, the
/// bytes go through as they are (tonic still frames and (de)compresses them).
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

#[derive(Debug)]
pub struct RawEncoder;

#[derive(Debug)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

// The three export requests nest alike: request.resource_* (1) → scope_* (2) → items (2), where
// the items are spans, log records or metrics. Decoding only that nesting (prost skips the other
// fields without reading them) counts the items at a fraction of the cost of a full decode.

#[derive(Clone, PartialEq, prost::Message)]
struct Request {
    #[prost(message, repeated, tag = "1")]
    resources: Vec<Resource>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Resource {
    #[prost(message, repeated, tag = "2")]
    scopes: Vec<Scope>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Scope {
    #[prost(message, repeated, tag = "2")]
    items: Vec<Item>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Item {}

/// Spans, log records or metrics in an encoded `Export*ServiceRequest`.
pub fn count_items(message: &[u8]) -> Result<u64, prost::DecodeError> {
    let request = <Request as prost::Message>::decode(message)?;
    Ok(request.resources.iter().flat_map(|r| &r.scopes).map(|s| s.items.len() as u64).sum())
}

/// The gRPC frame of a message compressed with gzip: flag 1 (compressed), big-endian length,
/// bytes; what a client sends as the body of a unary call with `grpc-encoding: gzip`.
pub fn gzip_frame(message: &[u8]) -> std::io::Result<Bytes> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(message)?;
    let compressed = gz.finish()?;
    let len = u32::try_from(compressed.len()).map_err(|_| std::io::Error::other("message over 4 GiB"))?;
    let mut frame = Vec::with_capacity(5 + compressed.len());
    frame.put_u8(1);
    frame.put_u32(len);
    frame.extend_from_slice(&compressed);
    Ok(frame.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        collector::logs::v1::ExportLogsServiceRequest,
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    };
    use prost::Message;

    #[test]
    fn counts_items_across_resources_and_scopes() {
        let scope = |n| ScopeLogs { log_records: vec![LogRecord::default(); n], ..Default::default() };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![
                ResourceLogs { scope_logs: vec![scope(3), scope(0)], ..Default::default() },
                ResourceLogs { scope_logs: vec![scope(4)], ..Default::default() },
            ],
        };
        assert_eq!(count_items(&request.encode_to_vec()).unwrap(), 7);
        assert_eq!(count_items(&[]).unwrap(), 0);
        assert!(count_items(&[0x0a, 0x05]).is_err());
    }

    #[test]
    fn frame_has_flag_and_length() {
        let f = gzip_frame(b"hello").unwrap();
        assert_eq!(f[0], 1);
        assert_eq!(u32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize, f.len() - 5);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&f[5..]), &mut out).unwrap();
        assert_eq!(out, b"hello");
    }
}
