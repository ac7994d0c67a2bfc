//! A push-style zstd decoder on top of `ruzstd` (pure Rust), for bodies that arrive in chunks.
//!
//! `ruzstd` pulls from a reader, and a reader that runs dry in the middle of a block leaves
//! it in an undefined state. So this side reads the frame and block headers itself (a few
//! bytes each, RFC 8878 §3.1.1) and hands `ruzstd` only complete headers and complete blocks.
//! Each block decodes to at most 128 KiB, so the output limit is checked often; the window
//! `ruzstd` keeps is capped too, so a frame that declares a huge window is refused up front.

use std::io;

use ruzstd::decoding::{errors::FrameDecoderError, BlockDecodingStrategy, FrameDecoder};

use super::decompress::Limited;

/// Windows up to this size are always accepted (zstd's own level 19 uses 8 MiB); larger ones
/// only up to the body limit.
const MIN_MAX_WINDOW: u64 = 8 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting a frame (or nothing more).
    Header,
    /// Inside a skippable frame: this many bytes to drop.
    Skip(u64),
    /// Inside a frame's blocks.
    Blocks { checksum: bool },
}

pub struct ZstdPush {
    decoder: FrameDecoder,
    /// Bytes received but not yet a complete header or block.
    pending: Vec<u8>,
    state: State,
    out: Limited,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl ZstdPush {
    pub fn new(out: Limited) -> Self {
        Self { decoder: FrameDecoder::new(), pending: Vec::new(), state: State::Header, out }
    }

    pub fn output(&self) -> &Limited {
        &self.out
    }

    pub fn push(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(chunk);
        let mut pos = 0;
        let result = self.run(&mut pos);
        self.pending.drain(..pos.min(self.pending.len()));
        result
    }

    /// Consumes whatever complete pieces `pending[pos..]` holds, advancing `pos`.
    fn run(&mut self, pos: &mut usize) -> io::Result<()> {
        loop {
            let avail = &self.pending[*pos..];
            match self.state {
                State::Skip(n) => {
                    let k = (avail.len() as u64).min(n);
                    *pos += k as usize;
                    if k < n {
                        self.state = State::Skip(n - k);
                        return Ok(());
                    }
                    self.state = State::Header;
                }
                State::Header => {
                    let Some(magic) = avail.get(..4) else { return Ok(()) };
                    let magic = u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]);
                    if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
                        let Some(len) = avail.get(4..8) else { return Ok(()) };
                        *pos += 8;
                        self.state = State::Skip(u64::from(u32::from_le_bytes([len[0], len[1], len[2], len[3]])));
                        continue;
                    }
                    if magic != 0xFD2F_B528 {
                        return Err(invalid("not a zstd frame (bad magic number)"));
                    }
                    let Some(&descriptor) = avail.get(4) else { return Ok(()) };
                    let size = frame_header_size(descriptor);
                    let Some(mut header) = avail.get(..size) else { return Ok(()) };
                    // The window need not be larger than the output may be.
                    let max_window = (self.out.limit() as u64).max(MIN_MAX_WINDOW);
                    self.decoder.set_max_window_size(max_window);
                    self.decoder.init(&mut header).map_err(|e| match e {
                        FrameDecoderError::WindowSizeTooBig { requested, .. } => {
                            invalid(format!("the frame's window of {requested} bytes is larger than allowed"))
                        }
                        e => invalid(e),
                    })?;
                    *pos += size;
                    self.state = State::Blocks { checksum: descriptor & 0x04 != 0 };
                }
                State::Blocks { checksum } => {
                    let Some(h) = avail.get(..3) else { return Ok(()) };
                    let header = u32::from(h[0]) | (u32::from(h[1]) << 8) | (u32::from(h[2]) << 16);
                    let last = header & 1 != 0;
                    let block_type = (header >> 1) & 3;
                    let block_size = (header >> 3) as usize;
                    // An RLE block stores its one byte; raw and compressed blocks their size.
                    let content = if block_type == 1 { 1 } else { block_size };
                    let need = 3 + content + if last && checksum { 4 } else { 0 };
                    let Some(mut block) = avail.get(..need) else { return Ok(()) };
                    self.decoder.decode_blocks(&mut block, BlockDecodingStrategy::UptoBlocks(1)).map_err(invalid)?;
                    if !block.is_empty() {
                        return Err(invalid("a block's length disagrees with its content"));
                    }
                    *pos += need;
                    self.decoder.collect_to_writer(&mut self.out)?;
                    if last {
                        if !self.decoder.is_finished() {
                            return Err(invalid("the last block did not end the frame"));
                        }
                        if checksum && self.decoder.get_checksum_from_data() != self.decoder.get_calculated_checksum() {
                            return Err(invalid("content checksum mismatch"));
                        }
                        self.state = State::Header;
                    }
                }
            }
        }
    }

    /// The output, once the body ended; a body that ends inside a frame is truncated.
    pub fn finish(self) -> io::Result<Limited> {
        if self.state != State::Header || !self.pending.is_empty() {
            return Err(invalid("the zstd stream is truncated"));
        }
        Ok(self.out)
    }
}

/// The frame header's size from its descriptor byte (RFC 8878 §3.1.1.1), magic included.
fn frame_header_size(descriptor: u8) -> usize {
    let single_segment = descriptor & 0x20 != 0;
    let dict_id = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let content_size = match descriptor >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    4 + 1 + usize::from(!single_segment) + dict_id + content_size
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        let mut z = ZstdPush::new(Limited::new(1 << 24));
        for c in body.chunks(chunk) {
            z.push(c)?;
        }
        Ok(z.finish()?.into_inner())
    }

    #[test]
    fn frames_and_skippable_frames_in_any_chunking() {
        let a: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 13) as u8).collect();
        let b = b"second frame".to_vec();
        let za = ruzstd::encoding::compress_to_vec(&a[..], ruzstd::encoding::CompressionLevel::Fastest);
        let zb = ruzstd::encoding::compress_to_vec(&b[..], ruzstd::encoding::CompressionLevel::Uncompressed);
        // A skippable frame between the two: magic 0x184D2A5?, length, payload.
        let skip = [&0x184D_2A53u32.to_le_bytes()[..], &3u32.to_le_bytes(), b"xyz"].concat();
        let body = [za, skip, zb].concat();
        for chunk in [1, 2, 5, 1000, body.len()] {
            assert_eq!(decode(&body, chunk).unwrap(), [a.clone(), b.clone()].concat(), "chunk {chunk}");
        }
        assert!(decode(&[], 1).unwrap().is_empty());
    }

    #[test]
    fn header_sizes_follow_the_descriptor() {
        assert_eq!(frame_header_size(0b0010_0000), 6); // single segment, 1-byte content size
        assert_eq!(frame_header_size(0b0000_0000), 6); // window descriptor, nothing else
        assert_eq!(frame_header_size(0b1100_0011), 18); // window, 4-byte dict id, 8-byte size
    }
}
