//! OTLP/HTTP's two encodings, chosen by `Content-Type`: what a request body decodes to and
//! how responses are written back (a response is always in the request's encoding).

use prost::Message as _;

use super::json;
use crate::signal::{Data, Signal};

/// `application/x-protobuf` or `application/json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From a `Content-Type` value: the media type before any parameters (`; charset=utf-8`),
    /// case-insensitive; `None` for anything else.
    pub fn from_content_type(value: Option<&[u8]>) -> Option<Self> {
        let value = std::str::from_utf8(value?).ok()?;
        let media = value.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Self::Protobuf)
        } else if media.eq_ignore_ascii_case("application/json") {
            Some(Self::Json)
        } else {
            None
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }

    /// Decodes an export request; the error says what is wrong, for the 400 response. prost
    /// refuses strings that are not UTF-8, serde_json refuses JSON that is not.
    pub fn decode(self, signal: Signal, body: &[u8]) -> Result<Data, String> {
        match self {
            Self::Protobuf => Data::decode(signal, body).map_err(|e| e.to_string()),
            Self::Json => json::decode(signal, body),
        }
    }

    /// The body of a successful export: an `Export*ServiceResponse` without `partial_success`
    /// (the Consumer seam takes a request whole or not at all), which is zero bytes in
    /// protobuf and `{}` in JSON, for every signal.
    pub fn success(self) -> Vec<u8> {
        match self {
            Self::Protobuf => Vec::new(),
            Self::Json => b"{}".to_vec(),
        }
    }

    /// A `google.rpc.Status` body, as OTLP/HTTP requires for failures.
    pub fn status(self, code: tonic::Code, message: &str) -> Vec<u8> {
        match self {
            Self::Protobuf => {
                tonic_types::Status { code: code as i32, message: message.to_string(), details: Vec::new() }
                    .encode_to_vec()
            }
            Self::Json => serde_json::json!({ "code": code as i32, "message": message }).to_string().into_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_matched_without_parameters_or_case() {
        assert_eq!(Encoding::from_content_type(Some(b"application/json; charset=utf-8")), Some(Encoding::Json));
        assert_eq!(Encoding::from_content_type(Some(b"Application/X-Protobuf")), Some(Encoding::Protobuf));
        assert_eq!(Encoding::from_content_type(Some(b"text/plain")), None);
        assert_eq!(Encoding::from_content_type(None), None);
        let status =
            tonic_types::Status::decode(&Encoding::Protobuf.status(tonic::Code::InvalidArgument, "bad")[..]).unwrap();
        assert_eq!((status.code, status.message.as_str()), (3, "bad"));
        let json: serde_json::Value =
            serde_json::from_slice(&Encoding::Json.status(tonic::Code::Unavailable, "\"x\"")).unwrap();
        assert_eq!(json, serde_json::json!({"code": 14, "message": "\"x\""}));
    }
}
