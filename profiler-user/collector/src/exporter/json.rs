//! OTLP/JSON (hex trace and span ids, camelCase keys, 64-bit integers as strings) through
//! opentelemetry-proto's serde support: the body of `otlphttp` with `encoding: json` and each
//! line of the `file` exporter's `format: json`.

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceResponse, metrics::v1::ExportMetricsServiceResponse,
    profiles::v1development::ExportProfilesServiceResponse, trace::v1::ExportTraceServiceResponse,
};
use prost::Message;

use crate::signal::{Data, Signal};

/// `data` as one line of OTLP/JSON (no newline inside).
pub fn encode(data: &Data) -> Result<Vec<u8>, serde_json::Error> {
    match data {
        Data::Traces(r) => serde_json::to_vec(r),
        Data::Metrics(r) => serde_json::to_vec(r),
        Data::Logs(r) => serde_json::to_vec(r),
        Data::Profiles(r) => serde_json::to_vec(r),
    }
}

/// An OTLP/JSON request of `signal`.
pub fn decode(signal: Signal, bytes: &[u8]) -> Result<Data, serde_json::Error> {
    Ok(match signal {
        Signal::Traces => Data::Traces(serde_json::from_slice(bytes)?),
        Signal::Metrics => Data::Metrics(serde_json::from_slice(bytes)?),
        Signal::Logs => Data::Logs(serde_json::from_slice(bytes)?),
        Signal::Profiles => Data::Profiles(serde_json::from_slice(bytes)?),
    })
}

/// An export response's partial success, whatever the signal: (rejected items, message).
/// `json` says how the body is encoded. An empty or undecodable body is a full success, as the
/// OTLP specification lets servers answer with an empty body.
pub fn partial_success(signal: Signal, json: bool, body: &[u8]) -> (i64, String) {
    if body.is_empty() {
        return (0, String::new());
    }
    if json {
        return json_partial_success(body).unwrap_or_default();
    }
    let got = match signal {
        Signal::Traces => ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_spans, p.error_message)),
        Signal::Metrics => ExportMetricsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_data_points, p.error_message)),
        Signal::Logs => ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_log_records, p.error_message)),
        Signal::Profiles => ExportProfilesServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_profiles, p.error_message)),
    };
    got.unwrap_or_default()
}

/// Read as a plain JSON value: OTLP/JSON writes the `rejected<Items>` int64 as a string, which
/// the generated types do not accept, and servers write it either way.
fn json_partial_success(body: &[u8]) -> Option<(i64, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let p = v.get("partialSuccess")?.as_object()?;
    let rejected = p
        .iter()
        .find(|(k, _)| k.starts_with("rejected"))
        .and_then(|(_, n)| n.as_i64().or_else(|| n.as_str().and_then(|s| s.parse().ok())))
        .unwrap_or(0);
    let message = p.get("errorMessage").and_then(|m| m.as_str()).unwrap_or_default().to_string();
    Some((rejected, message))
}
