//! The OTEP 4947 thread-context record as a sample carries it.

use profiler_common::{ThreadCtx, THREAD_CTX_MAX_ATTRS};

/// A sample's link to the span its thread was serving, and the record's attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThreadLink {
    /// W3C trace and span IDs; all zero when the record names no span.
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub trace_flags: u8,
    /// (key index into `threadlocal.attribute_key_map`, value), by key index, last occurrence
    /// of a key winning.
    pub attrs: Vec<(u8, String)>,
}

impl ThreadLink {
    /// Decodes a record BPF copied with `valid == 1`.
    pub fn from_record(ctx: &ThreadCtx) -> Self {
        let h = &ctx.header;
        let size = u16::from_ne_bytes([h[26], h[27]]) as usize;
        Self {
            trace_id: h[0..16].try_into().unwrap_or_default(),
            span_id: h[16..24].try_into().unwrap_or_default(),
            trace_flags: h[25],
            attrs: parse_attrs(&ctx.attrs[..size.min(THREAD_CTX_MAX_ATTRS)]),
        }
    }

    /// Whether the record names a span (both IDs set).
    pub fn has_span(&self) -> bool {
        self.trace_id != [0; 16] && self.span_id != [0; 8]
    }
}

/// Parses `attrs-data`: entries {key u8, length u8, value[length]} packed back to back. Stops at
/// an entry the buffer cannot hold; a repeated key keeps its last value; values are UTF-8 (lossy).
pub fn parse_attrs(mut data: &[u8]) -> Vec<(u8, String)> {
    let mut out: Vec<(u8, String)> = Vec::new();
    while data.len() >= 2 {
        let (key, len) = (data[0], data[1] as usize);
        let Some(value) = data.get(2..2 + len) else { break };
        let value = String::from_utf8_lossy(value).into_owned();
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = value,
            None => out.push((key, value)),
        }
        data = &data[2 + len..];
    }
    out.sort_by_key(|(k, _)| *k);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_last_wins_and_truncation_stops() {
        let data = [0, 3, b'G', b'E', b'T', 1, 2, b'/', b'a', 0, 4, b'P', b'O', b'S', b'T', 2, 9, b'x'];
        assert_eq!(parse_attrs(&data), vec![(0, "POST".into()), (1, "/a".into())]);
        assert_eq!(parse_attrs(&[]), vec![]);
        assert_eq!(parse_attrs(&[5]), vec![]);
        assert_eq!(parse_attrs(&[5, 0]), vec![(5, String::new())]);
    }

    #[test]
    fn decodes_a_record() {
        let mut ctx = ThreadCtx { header: [0; 28], attrs: [0; THREAD_CTX_MAX_ATTRS] };
        ctx.header[..16].copy_from_slice(&[0xab; 16]);
        ctx.header[16..24].copy_from_slice(&[0xcd; 8]);
        ctx.header[24] = 1;
        ctx.header[25] = 1;
        ctx.header[26..28].copy_from_slice(&4u16.to_ne_bytes());
        ctx.attrs[..4].copy_from_slice(&[2, 2, b'o', b'k']);
        let link = ThreadLink::from_record(&ctx);
        assert!(link.has_span());
        assert_eq!(link.span_id, [0xcd; 8]);
        assert_eq!(link.trace_flags, 1);
        assert_eq!(link.attrs, vec![(2, "ok".into())]);
        // attrs_size larger than what BPF copies is cut at the copy.
        ctx.header[26..28].copy_from_slice(&u16::MAX.to_ne_bytes());
        assert!(ThreadLink::from_record(&ctx).attrs.contains(&(2, "ok".into())));
    }
}
