//! OTEP 4719 process context: resource attributes a process publishes for out-of-process readers.
//!
//! The SDK maps a header (`[anon_shmem:OTEL_CTX]`, `[anon:OTEL_CTX]` or `/memfd:OTEL_CTX`) that
//! points at a protobuf `opentelemetry.proto.resource.v1.Resource`. Its attributes describe the
//! process better than anything a profiler can observe (`service.name`, `service.instance.id`,
//! ...); its `threadlocal.*` entries say how to read the thread contexts (OTEP 4947).

use std::{fs::File, os::unix::fs::FileExt};

use opentelemetry_proto::tonic::{
    common::v1::{any_value::Value as AnyValueKind, KeyValue},
    resource::v1::Resource,
};
use prost::Message;

use crate::process::maps::MapEntry;

/// Header layout: signature[8], version u32, payload_size u32, published_at_ns u64, payload u64.
const HEADER_LEN: usize = 32;
const SIGNATURE: &[u8; 8] = b"OTEL_CTX";
/// Payloads larger than this are refused (a hostile or corrupt header must not make us allocate
/// gigabytes).
const MAX_PAYLOAD: u32 = 1 << 20;
/// Attempts when the header changes under the reader (a concurrent update).
const ATTEMPTS: usize = 4;

/// Schema versions of the thread-local record this reader understands.
pub const SUPPORTED_THREAD_SCHEMAS: [&str; 3] = ["tls_v1", "tlsdesc_v1", "tlsdesc_v1_dev"];

/// A process's published context.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessContext {
    /// Where the header is (re-checked to notice a new publication).
    pub header_addr: u64,
    pub published_at_ns: u64,
    /// Resource attributes, without the `threadlocal.*` coordination entries.
    pub attributes: Vec<KeyValue>,
    /// `threadlocal.schema_version`.
    pub thread_schema: Option<String>,
    /// `threadlocal.attribute_key_map`: attribute names by key index.
    pub key_map: Vec<String>,
}

impl ProcessContext {
    /// Whether threads publish OTEP 4947 records this reader can read.
    pub fn has_thread_context(&self) -> bool {
        self.thread_schema.as_deref().is_some_and(|s| SUPPORTED_THREAD_SCHEMAS.contains(&s))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("reading process memory: {0}")]
    Memory(#[from] std::io::Error),
    #[error("no OTEL_CTX signature")]
    Signature,
    #[error("unsupported process context version {0}")]
    Version(u32),
    #[error("payload of {0} bytes is too large")]
    TooLarge(u32),
    #[error("the context kept changing while being read")]
    Unstable,
    #[error("payload is not a Resource: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// The mapping that holds the header, by its name.
pub fn find_mapping(entries: &[MapEntry]) -> Option<u64> {
    entries
        .iter()
        .find(|e| {
            e.path.starts_with("[anon_shmem:OTEL_CTX]")
                || e.path.starts_with("[anon:OTEL_CTX]")
                || e.path.starts_with("/memfd:OTEL_CTX")
        })
        .map(|e| e.start)
}

/// Opens a process's memory for reading.
pub fn open_memory(pid: u32) -> std::io::Result<File> {
    File::open(format!("/proc/{pid}/mem"))
}

struct Header {
    version: u32,
    payload_size: u32,
    published_at_ns: u64,
    payload: u64,
}

fn read_header(mem: &File, addr: u64) -> Result<Header, ContextError> {
    let mut b = [0u8; HEADER_LEN];
    mem.read_exact_at(&mut b, addr)?;
    if &b[0..8] != SIGNATURE {
        return Err(ContextError::Signature);
    }
    let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u64_at = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    let h = Header { version: u32_at(8), payload_size: u32_at(12), published_at_ns: u64_at(16), payload: u64_at(24) };
    if h.version != 1 && h.version != 2 {
        return Err(ContextError::Version(h.version));
    }
    Ok(h)
}

/// Only `published_at_ns`, to notice a new publication cheaply.
pub fn published_at(mem: &File, header_addr: u64) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    mem.read_exact_at(&mut b, header_addr + 16)?;
    Ok(u64::from_ne_bytes(b))
}

/// Reads the context at `header_addr` with the OTEP's consistency protocol: a header with
/// `published_at_ns == 0` is being updated, and a payload is only trusted when the header's
/// timestamp did not change while it was read.
pub fn read(mem: &File, header_addr: u64) -> Result<ProcessContext, ContextError> {
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let h = read_header(mem, header_addr)?;
        if h.published_at_ns == 0 {
            continue;
        }
        if h.payload_size > MAX_PAYLOAD {
            return Err(ContextError::TooLarge(h.payload_size));
        }
        let mut payload = vec![0u8; h.payload_size as usize];
        mem.read_exact_at(&mut payload, h.payload)?;
        if read_header(mem, header_addr)?.published_at_ns != h.published_at_ns {
            continue;
        }
        return Ok(decode(&payload, header_addr, h.published_at_ns)?);
    }
    Err(ContextError::Unstable)
}

fn decode(payload: &[u8], header_addr: u64, published_at_ns: u64) -> Result<ProcessContext, prost::DecodeError> {
    let resource = Resource::decode(payload)?;
    let mut ctx = ProcessContext { header_addr, published_at_ns, ..Default::default() };
    for kv in resource.attributes {
        let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
        match (kv.key.as_str(), value) {
            ("threadlocal.schema_version", Some(AnyValueKind::StringValue(s))) => ctx.thread_schema = Some(s.clone()),
            ("threadlocal.attribute_key_map", Some(AnyValueKind::ArrayValue(a))) => {
                ctx.key_map = a
                    .values
                    .iter()
                    .map(|v| match &v.value {
                        Some(AnyValueKind::StringValue(s)) => s.clone(),
                        _ => String::new(),
                    })
                    .collect();
            }
            (k, _) if k.starts_with("threadlocal.") => {}
            _ => ctx.attributes.push(kv),
        }
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue};

    use super::*;

    fn s(v: &str) -> Option<AnyValue> {
        Some(AnyValue { value: Some(AnyValueKind::StringValue(v.into())) })
    }

    /// Publishes a context in this process's memory, as an SDK would (header + payload).
    fn publish(resource: &Resource, published_at_ns: u64, version: u32) -> (Box<[u8; HEADER_LEN]>, Vec<u8>) {
        let payload = resource.encode_to_vec();
        let mut h = Box::new([0u8; HEADER_LEN]);
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&version.to_ne_bytes());
        h[12..16].copy_from_slice(&(payload.len() as u32).to_ne_bytes());
        h[16..24].copy_from_slice(&published_at_ns.to_ne_bytes());
        h[24..32].copy_from_slice(&(payload.as_ptr() as u64).to_ne_bytes());
        (h, payload)
    }

    #[test]
    fn reads_resource_and_thread_reference_data() {
        let resource = Resource {
            attributes: vec![
                KeyValue { key: "service.name".into(), value: s("checkout"), key_strindex: 0 },
                KeyValue { key: "threadlocal.schema_version".into(), value: s("tls_v1"), key_strindex: 0 },
                KeyValue {
                    key: "threadlocal.attribute_key_map".into(),
                    value: Some(AnyValue {
                        value: Some(AnyValueKind::ArrayValue(ArrayValue {
                            values: vec![s("http.route").unwrap(), s("user").unwrap()],
                        })),
                    }),
                    key_strindex: 0,
                },
            ],
            ..Default::default()
        };
        let (header, _payload) = publish(&resource, 42, 2);
        let mem = open_memory(std::process::id()).unwrap();
        let addr = header.as_ptr() as u64;
        let ctx = read(&mem, addr).unwrap();
        assert_eq!(ctx.published_at_ns, 42);
        assert_eq!(ctx.attributes.len(), 1, "threadlocal.* are coordination data, not attributes");
        assert_eq!(ctx.attributes[0].key, "service.name");
        assert!(ctx.has_thread_context());
        assert_eq!(ctx.key_map, ["http.route", "user"]);
        assert_eq!(published_at(&mem, addr).unwrap(), 42);

        // Version 1 is accepted, others are not; a missing signature is no context.
        let (v1, _p1) = publish(&resource, 7, 1);
        assert!(read(&mem, v1.as_ptr() as u64).is_ok());
        let (v3, _p3) = publish(&resource, 7, 3);
        assert!(matches!(read(&mem, v3.as_ptr() as u64), Err(ContextError::Version(3))));
        let zeros = [0u8; HEADER_LEN];
        assert!(matches!(read(&mem, zeros.as_ptr() as u64), Err(ContextError::Signature)));
        // An update in progress (published_at_ns == 0) is never read as a context.
        let (busy, _pb) = publish(&resource, 0, 2);
        assert!(matches!(read(&mem, busy.as_ptr() as u64), Err(ContextError::Unstable)));
        // Garbage payloads and absurd sizes are errors, not panics.
        let (mut bad, _pbad) = publish(&resource, 9, 2);
        bad[12..16].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(matches!(read(&mem, bad.as_ptr() as u64), Err(ContextError::TooLarge(_))));
        let junk = [0xffu8; 16];
        let (mut j, _pj) = publish(&resource, 9, 2);
        j[12..16].copy_from_slice(&16u32.to_ne_bytes());
        j[24..32].copy_from_slice(&(junk.as_ptr() as u64).to_ne_bytes());
        assert!(matches!(read(&mem, j.as_ptr() as u64), Err(ContextError::Decode(_))));
    }

    #[test]
    fn finds_the_mapping_by_name() {
        let entries = crate::process::maps::parse(
            "7f0000000000-7f0000001000 rw-s 00000000 00:01 1234 /memfd:OTEL_CTX (deleted)\n\
             7f0000002000-7f0000003000 rw-p 00000000 00:00 0 [anon:other]\n",
        );
        assert_eq!(find_mapping(&entries), Some(0x7f0000000000));
        let shmem =
            crate::process::maps::parse("7f0000004000-7f0000005000 rw-s 00000000 00:01 9 [anon_shmem:OTEL_CTX]\n");
        assert_eq!(find_mapping(&shmem), Some(0x7f0000004000));
        assert_eq!(find_mapping(&entries[1..]), None);
    }
}
