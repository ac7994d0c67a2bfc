//! Publish OpenTelemetry context for out-of-process readers (eBPF profilers such as otelprof).
//!
//! - [`ProcessContext::publish`] (OTEP 4719): resource attributes in a memory mapping named
//!   `OTEL_CTX`, plus the `threadlocal.*` reference data thread contexts need.
//! - [`ThreadRecord`] (OTEP 4947): the active span of the current thread (trace ID, span ID,
//!   flags, small string attributes) behind the `otel_thread_ctx_v1` thread-local, which a
//!   profiler reads when it samples the thread.
//!
//! # Keeping `otel_thread_ctx_v1` in `.dynsym`
//!
//! Readers find the thread-local by name in the dynamic symbol table. Shared libraries export it
//! already; an **executable** must ask the linker to, in its build script:
//!
//! ```text
//! println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=otel_thread_ctx_v1");
//! ```
//!
//! or with `RUSTFLAGS="-C link-arg=-Wl,--export-dynamic-symbol=otel_thread_ctx_v1"`. Check with
//! `readelf --dyn-syms BINARY | grep otel_thread_ctx_v1` (type `TLS`).
//!
//! Linux only; the record layout is native-endian as the OTEP specifies.

use std::{io, marker::PhantomData, ptr};

unsafe extern "C" {
    fn otel_context_writer_set(record: *const ThreadRecord);
}

/// Attribute bytes a record holds (a whole record stays within the 640 bytes the OTEP
/// recommends).
pub const MAX_ATTRS: usize = 612;

/// An OTEP 4947 thread-context record: byte-packed as the OTEP lays it out.
#[repr(C, packed)]
pub struct ThreadRecord {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    valid: u8,
    trace_flags: u8,
    attrs_size: u16,
    attrs: [u8; MAX_ATTRS],
}

/// The record is too full for another attribute, or the value is longer than 255 bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct AttributeTooLarge;

impl std::fmt::Display for AttributeTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "attribute does not fit the thread-context record")
    }
}

impl std::error::Error for AttributeTooLarge {}

impl ThreadRecord {
    /// A record for one span (W3C trace context bytes).
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8], trace_flags: u8) -> Box<Self> {
        Box::new(Self { trace_id, span_id, valid: 1, trace_flags, attrs_size: 0, attrs: [0; MAX_ATTRS] })
    }

    /// Adds an attribute: `key` indexes the `attribute_keys` given to [`ProcessContext::publish`].
    pub fn push_attr(&mut self, key: u8, value: &str) -> Result<(), AttributeTooLarge> {
        let at = self.attrs_size as usize;
        let len = u8::try_from(value.len()).map_err(|_| AttributeTooLarge)?;
        if at + 2 + value.len() > MAX_ATTRS {
            return Err(AttributeTooLarge);
        }
        self.attrs[at] = key;
        self.attrs[at + 1] = len;
        self.attrs[at + 2..at + 2 + value.len()].copy_from_slice(value.as_bytes());
        self.attrs_size = (at + 2 + value.len()) as u16;
        Ok(())
    }

    /// Makes this the current thread's context until the guard is dropped.
    pub fn attach(&self) -> Attached<'_> {
        // SAFETY: the record outlives the guard, which detaches it before it can be freed.
        unsafe { otel_context_writer_set(self) };
        Attached { _record: PhantomData, _thread: PhantomData }
    }
}

/// The current thread serves the record's span; dropping it detaches the record.
pub struct Attached<'a> {
    _record: PhantomData<&'a ThreadRecord>,
    /// Detaching must happen on the thread that attached: not `Send`.
    _thread: PhantomData<*const ()>,
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        // SAFETY: clearing the pointer is always valid.
        unsafe { otel_context_writer_set(ptr::null()) };
    }
}

// --- OTEP 4719 ---

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    varint(out, (number as u64) << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `AnyValue { string_value }`
fn any_string(s: &str) -> Vec<u8> {
    let mut v = Vec::new();
    field(&mut v, 1, s.as_bytes());
    v
}

fn key_value(out: &mut Vec<u8>, key: &str, any: &[u8]) {
    let mut kv = Vec::new();
    field(&mut kv, 1, key.as_bytes());
    field(&mut kv, 2, any);
    field(out, 1, &kv); // Resource.attributes
}

/// The encoded `opentelemetry.proto.resource.v1.Resource` payload.
fn resource(attributes: &[(&str, &str)], attribute_keys: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in attributes {
        key_value(&mut out, k, &any_string(v));
    }
    key_value(&mut out, "threadlocal.schema_version", &any_string("tls_v1"));
    let mut array = Vec::new();
    for k in attribute_keys {
        field(&mut array, 1, &any_string(k)); // ArrayValue.values
    }
    let mut any = Vec::new();
    field(&mut any, 5, &array); // AnyValue.array_value
    key_value(&mut out, "threadlocal.attribute_key_map", &any);
    out
}

/// A published process context; the mapping stays for the life of the process (or of this
/// value).
pub struct ProcessContext {
    header: *mut u8,
    _payload: Box<[u8]>,
}

// SAFETY: the mapping is owned and never written after publication.
unsafe impl Send for ProcessContext {}

const PAGE: usize = 4096;

impl ProcessContext {
    /// Publishes resource attributes and the thread-context key map (`attribute_keys[i]` names
    /// key index `i` of [`ThreadRecord::push_attr`]).
    pub fn publish(attributes: &[(&str, &str)], attribute_keys: &[&str]) -> io::Result<Self> {
        let payload = resource(attributes, attribute_keys).into_boxed_slice();
        // SAFETY: plain syscalls; every result is checked before use.
        unsafe {
            let fd = libc::memfd_create(c"OTEL_CTX".as_ptr(), libc::MFD_CLOEXEC);
            let header = if fd >= 0 {
                if libc::ftruncate(fd, PAGE as libc::off_t) != 0 {
                    let e = io::Error::last_os_error();
                    libc::close(fd);
                    return Err(e);
                }
                let p = libc::mmap(ptr::null_mut(), PAGE, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0);
                libc::close(fd);
                p
            } else {
                let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
                libc::mmap(ptr::null_mut(), PAGE, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0)
            };
            if header == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let header = header.cast::<u8>();
            libc::madvise(header.cast(), PAGE, libc::MADV_DONTFORK);
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
            let at = (ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64).max(1);
            ptr::write_unaligned(header.add(8).cast::<u32>(), 2);
            ptr::write_unaligned(header.add(12).cast::<u32>(), payload.len() as u32);
            ptr::write_unaligned(header.add(16).cast::<u64>(), at);
            ptr::write_unaligned(header.add(24).cast::<u64>(), payload.as_ptr() as u64);
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            ptr::copy_nonoverlapping(b"OTEL_CTX".as_ptr(), header, 8);
            // Naming may be unsupported (kernel < 5.17 or no CONFIG_ANON_VMA_NAME): ignored.
            libc::prctl(
                libc::PR_SET_VMA,
                libc::PR_SET_VMA_ANON_NAME,
                header as libc::c_ulong,
                PAGE,
                c"OTEL_CTX".as_ptr(),
            );
            Ok(Self { header, _payload: payload })
        }
    }
}

impl Drop for ProcessContext {
    fn drop(&mut self) {
        // SAFETY: our own mapping of PAGE bytes.
        unsafe { libc::munmap(self.header.cast(), PAGE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_packed_and_bounded() {
        let mut r = ThreadRecord::new([1; 16], [2; 8], 1);
        r.push_attr(0, "GET").unwrap();
        r.push_attr(3, "").unwrap();
        let size = r.attrs_size;
        assert_eq!(size, 7);
        assert_eq!(&r.attrs[..7], &[0, 3, b'G', b'E', b'T', 3, 0]);
        assert_eq!(r.push_attr(1, &"x".repeat(256)), Err(AttributeTooLarge));
        while r.push_attr(1, &"y".repeat(200)).is_ok() {}
        assert!(r.attrs_size as usize <= MAX_ATTRS);
        assert_eq!(size_of::<ThreadRecord>(), 640);
    }

    #[test]
    fn publishes_a_named_mapping() {
        let _ctx = ProcessContext::publish(&[("service.name", "unit")], &["k"]).unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(maps.contains("OTEL_CTX"), "{maps}");
    }
}
