//! Request bodies as they arrive, decompressed chunk by chunk, with the size limit applied to
//! the decompressed bytes (the Collector's `max_request_body_size` counts those too).
//!
//! Why push-style and not "read everything, then inflate": a 1 MiB gzip of zeros expands to
//! 1 GiB. Here each arriving chunk is inflated at once into a buffer that refuses to grow past
//! the limit, so such a body is refused after at most `limit` bytes of output, without
//! reading the rest of it. The compressed bytes are capped at the limit as well, so a stream
//! of empty gzip members cannot keep a connection busy forever.
//!
//! Encodings: `gzip` (also `x-gzip`, several members), `deflate` (zlib-wrapped, as HTTP means
//! it), `zstd` (pure Rust, [`super::zstd`]) and `identity`. `snappy` and `lz4`, which the
//! Collector also accepts, are refused as unsupported: no pure-Rust decoder is available here.

use std::io::{self, Write};

use flate2::write::{MultiGzDecoder, ZlibDecoder};

use super::zstd::ZstdPush;

/// A body's `Content-Encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentEncoding {
    Identity,
    Gzip,
    Deflate,
    Zstd,
}

impl ContentEncoding {
    /// Parses the header; a missing header is `identity`. Stacked encodings (`gzip, zstd`) are
    /// not supported.
    pub fn parse(header: Option<&[u8]>) -> Result<Self, String> {
        let Some(raw) = header else { return Ok(Self::Identity) };
        let value = std::str::from_utf8(raw).map_err(|_| "Content-Encoding is not text".to_string())?.trim();
        Ok(match value.to_ascii_lowercase().as_str() {
            "" | "identity" => Self::Identity,
            "gzip" | "x-gzip" => Self::Gzip,
            "deflate" => Self::Deflate,
            "zstd" => Self::Zstd,
            other => {
                return Err(format!("Content-Encoding `{other}` is not supported (gzip, deflate, zstd, identity)"))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
            Self::Zstd => "zstd",
        }
    }
}

/// Why a body was not taken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than {limit} bytes (after decompression)")]
    TooLarge { limit: usize },
    #[error("the {encoding} body is malformed: {detail}")]
    Malformed { encoding: &'static str, detail: String },
}

/// A buffer that refuses to grow past its limit: the decoders write into it and stop at the
/// first byte too many.
pub struct Limited {
    buf: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl Limited {
    pub fn new(limit: usize) -> Self {
        Self { buf: Vec::new(), limit, exceeded: false }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

impl Write for Limited {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("size limit exceeded"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Decoder {
    Identity(Limited),
    Gzip(MultiGzDecoder<Limited>),
    Deflate(ZlibDecoder<Limited>),
    Zstd(Box<ZstdPush>),
}

/// Takes a body's chunks as they arrive and keeps the decompressed bytes.
pub struct Inflater {
    decoder: Decoder,
    encoding: ContentEncoding,
    limit: usize,
    /// Compressed bytes seen so far.
    raw: usize,
}

impl Inflater {
    pub fn new(encoding: ContentEncoding, limit: usize) -> Self {
        let out = Limited::new(limit);
        let decoder = match encoding {
            ContentEncoding::Identity => Decoder::Identity(out),
            ContentEncoding::Gzip => Decoder::Gzip(MultiGzDecoder::new(out)),
            ContentEncoding::Deflate => Decoder::Deflate(ZlibDecoder::new(out)),
            ContentEncoding::Zstd => Decoder::Zstd(Box::new(ZstdPush::new(out))),
        };
        Self { decoder, encoding, limit, raw: 0 }
    }

    fn too_large(&self) -> BodyError {
        BodyError::TooLarge { limit: self.limit }
    }

    fn malformed(&self, detail: impl std::fmt::Display) -> BodyError {
        BodyError::Malformed { encoding: self.encoding.name(), detail: detail.to_string() }
    }

    /// Decompresses the next chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
        self.raw = self.raw.saturating_add(chunk.len());
        if self.raw > self.limit {
            return Err(self.too_large());
        }
        let (result, exceeded) = match &mut self.decoder {
            Decoder::Identity(out) => (out.write_all(chunk), out.exceeded()),
            Decoder::Gzip(d) => (d.write_all(chunk), d.get_ref().exceeded()),
            Decoder::Deflate(d) => (d.write_all(chunk), d.get_ref().exceeded()),
            Decoder::Zstd(d) => (d.push(chunk), d.output().exceeded()),
        };
        match result {
            Ok(()) => Ok(()),
            Err(_) if exceeded => Err(self.too_large()),
            Err(e) => Err(self.malformed(e)),
        }
    }

    /// The whole decompressed body, once every chunk was pushed; a truncated stream is malformed.
    pub fn finish(self) -> Result<Vec<u8>, BodyError> {
        let limit = self.limit;
        let encoding = self.encoding.name();
        let malformed = |e: io::Error| BodyError::Malformed { encoding, detail: e.to_string() };
        let out = match self.decoder {
            Decoder::Identity(out) => out,
            Decoder::Gzip(mut d) => {
                // A body that ends before the gzip trailer is cut off: say so rather than
                // accept the part that happened to arrive.
                let result = d.try_finish();
                if d.get_ref().exceeded() {
                    return Err(BodyError::TooLarge { limit });
                }
                result.map_err(malformed)?;
                if d.header().is_none() {
                    return Err(BodyError::Malformed { encoding, detail: "no complete gzip header".into() });
                }
                d.finish().map_err(malformed)?
            }
            Decoder::Deflate(mut d) => {
                let result = d.try_finish();
                if d.get_ref().exceeded() {
                    return Err(BodyError::TooLarge { limit });
                }
                result.map_err(malformed)?;
                d.finish().map_err(malformed)?
            }
            Decoder::Zstd(d) => d.finish().map_err(malformed)?,
        };
        Ok(out.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use flate2::{write::GzEncoder, Compression};

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn inflate(encoding: ContentEncoding, body: &[u8], limit: usize, chunk: usize) -> Result<Vec<u8>, BodyError> {
        let mut i = Inflater::new(encoding, limit);
        for c in body.chunks(chunk.max(1)) {
            i.push(c)?;
        }
        i.finish()
    }

    #[test]
    fn every_encoding_round_trips_in_any_chunking() {
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(&data).unwrap();
        let zlib = z.finish().unwrap();
        let zstd = ruzstd::encoding::compress_to_vec(&data[..], ruzstd::encoding::CompressionLevel::Fastest);
        let gz = gzip(&data);
        for chunk in [1, 7, 4096, usize::MAX] {
            assert_eq!(inflate(ContentEncoding::Gzip, &gz, 1 << 20, chunk).unwrap(), data, "gzip/{chunk}");
            assert_eq!(inflate(ContentEncoding::Deflate, &zlib, 1 << 20, chunk).unwrap(), data, "zlib/{chunk}");
            assert_eq!(inflate(ContentEncoding::Zstd, &zstd, 1 << 20, chunk).unwrap(), data, "zstd/{chunk}");
            assert_eq!(inflate(ContentEncoding::Identity, &data, 1 << 20, chunk).unwrap(), data);
        }
        // Two gzip members are one body, as Go's reader takes them.
        let two = [gzip(b"ab"), gzip(b"cd")].concat();
        assert_eq!(inflate(ContentEncoding::Gzip, &two, 100, 3).unwrap(), b"abcd");
    }

    #[test]
    fn the_limit_counts_decompressed_bytes() {
        let zeros = vec![0u8; 1 << 20];
        let gz = gzip(&zeros);
        assert!(gz.len() < zeros.len() / 16, "a compressed body much smaller than its expansion");
        assert_eq!(inflate(ContentEncoding::Gzip, &gz, 1 << 20, 1024).unwrap().len(), 1 << 20);
        assert_eq!(
            inflate(ContentEncoding::Gzip, &gz, (1 << 20) - 1, 1024),
            Err(BodyError::TooLarge { limit: (1 << 20) - 1 })
        );
        let zstd = ruzstd::encoding::compress_to_vec(&zeros[..], ruzstd::encoding::CompressionLevel::Fastest);
        assert!(zstd.len() < 10_000, "{}", zstd.len());
        assert!(matches!(inflate(ContentEncoding::Zstd, &zstd, 1000, 64), Err(BodyError::TooLarge { .. })));
        assert!(matches!(inflate(ContentEncoding::Identity, &zeros, 1000, 4096), Err(BodyError::TooLarge { .. })));
    }

    #[test]
    fn truncated_or_garbage_streams_are_malformed() {
        let data = vec![7u8; 10_000];
        let gz = gzip(&data);
        let zstd = ruzstd::encoding::compress_to_vec(&data[..], ruzstd::encoding::CompressionLevel::Fastest);
        for (enc, body) in [
            (ContentEncoding::Gzip, &gz[..gz.len() - 5]),
            (ContentEncoding::Gzip, &gz[..5]),
            (ContentEncoding::Gzip, b"not gzip at all"),
            (ContentEncoding::Zstd, &zstd[..zstd.len() - 2]),
            (ContentEncoding::Zstd, b"not zstd at all"),
            (ContentEncoding::Deflate, b"not zlib"),
        ] {
            let r = inflate(enc, body, 1 << 20, 3);
            assert!(matches!(r, Err(BodyError::Malformed { .. })), "{enc:?} {} bytes: {r:?}", body.len());
        }
        assert_eq!(ContentEncoding::parse(Some(b" GZIP ")), Ok(ContentEncoding::Gzip));
        assert_eq!(ContentEncoding::parse(None), Ok(ContentEncoding::Identity));
        assert!(ContentEncoding::parse(Some(b"snappy")).is_err());
        assert!(ContentEncoding::parse(Some(b"gzip, zstd")).is_err());
    }
}
