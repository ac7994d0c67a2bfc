//! Bytes on the wire. WebSocket frames carry a varint header (0 today) before the protobuf;
//! HTTP bodies carry the protobuf alone. Anything over [`MAX_MESSAGE_BYTES`] is refused before
//! decoding, in both directions, so a broken or hostile server cannot make the agent allocate
//! without bound.

use otelprof_proto::opamp as proto;
use prost::Message;

/// The largest message sent or accepted: 64 MiB.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Why an incoming message was not used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("message of {0} bytes is over the 64 MiB limit")]
    Oversize(usize),
    #[error("WebSocket message header {0} is not 0")]
    Header(u64),
    #[error("bad protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

/// A WebSocket binary frame: header 0 then the message.
pub(crate) fn encode_ws(msg: &proto::AgentToServer) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 + msg.encoded_len());
    buf.push(0);
    msg.encode_raw(&mut buf);
    buf
}

pub(crate) fn decode_ws(data: &[u8]) -> Result<proto::ServerToAgent, DecodeError> {
    if data.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::Oversize(data.len()));
    }
    let mut buf = data;
    let header = prost::encoding::decode_varint(&mut buf)?;
    if header != 0 {
        return Err(DecodeError::Header(header));
    }
    Ok(proto::ServerToAgent::decode(buf)?)
}

pub(crate) fn decode_http(data: &[u8]) -> Result<proto::ServerToAgent, DecodeError> {
    if data.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::Oversize(data.len()));
    }
    Ok(proto::ServerToAgent::decode(data)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_round_trip_and_header_check() {
        let msg = proto::ServerToAgent { instance_uid: vec![1; 16], flags: 1, ..Default::default() };
        let mut frame = vec![0];
        frame.extend(msg.encode_to_vec());
        assert_eq!(decode_ws(&frame).ok(), Some(msg.clone()));
        frame[0] = 1;
        assert!(matches!(decode_ws(&frame), Err(DecodeError::Header(1))));
        assert!(decode_ws(&[]).is_err());
        let a2s = proto::AgentToServer { sequence_num: 3, ..Default::default() };
        let enc = encode_ws(&a2s);
        assert_eq!(enc[0], 0);
        assert_eq!(proto::AgentToServer::decode(&enc[1..]).ok(), Some(a2s));
    }
}
