//! OpAMP over plain HTTP: the agent POSTs an `AgentToServer` whenever its state changes and
//! otherwise every polling interval; the response body is the server's `ServerToAgent`. A
//! "connection" here is the run of POSTs between two failures: its first POST carries the full
//! state, since the server may have missed the ones that failed.

use std::io::Read;
use std::time::Duration;

use otelprof_proto::opamp as proto;
use prost::Message;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

use crate::codec::{self, DecodeError, MAX_MESSAGE_BYTES};
use crate::conn::{now, stop_requested, Ctx, Ended, Next, StopRx};
use crate::retry::retry_after_of;
use crate::state::Counters;
use crate::{tls, TlsSettings};

/// The request header that names the agent, as the spec requires for HTTP.
pub const INSTANCE_UID_HEADER: &str = "OpAMP-Instance-UID";

struct Failure {
    reason: String,
    retry_after: Option<Duration>,
    oversize: bool,
}

impl Failure {
    fn new(reason: String) -> Self {
        Failure { reason, retry_after: None, oversize: false }
    }
}

/// Runs POSTs until one fails or a stop is requested.
pub(crate) async fn run(
    ctx: &mut Ctx,
    stop: &mut StopRx,
    endpoint: &str,
    headers: &[(String, String)],
    tls: &TlsSettings,
    polling: Duration,
) -> Ended {
    let (client, headers) = match setup(endpoint, headers, tls, ctx.options.connect_timeout) {
        Ok(c) => c,
        Err(e) => return Ended::failed(e),
    };
    let shared = ctx.shared.clone();
    shared.state().mark_full();
    let mut connected = false;
    let mut last_send: Option<Instant> = None;
    loop {
        let pending = shared.state().has_pending();
        if let (false, Some(last)) = (pending, last_send) {
            let poll_at = last + shared.state().poll_interval(polling);
            tokio::select! {
                deadline = stop_requested(stop) => {
                    goodbye(ctx, &client, endpoint, &headers, deadline).await;
                    return Ended::Stopped;
                }
                _ = shared.wake.notified() => continue,
                _ = tokio::time::sleep_until(poll_at) => {}
            }
        }
        let msg = shared.state().next_message();
        if msg.encoded_len() > MAX_MESSAGE_BYTES {
            ctx.refused_oversize("an outgoing message");
            last_send = Some(Instant::now());
            continue;
        }
        let result = tokio::select! {
            r = post(&client, endpoint, &headers, &msg) => r,
            deadline = stop_requested(stop) => {
                goodbye(ctx, &client, endpoint, &headers, deadline).await;
                return Ended::Stopped;
            }
        };
        last_send = Some(Instant::now());
        let body = match result {
            Ok(body) => body,
            Err(f) => {
                if f.oversize {
                    ctx.refused_oversize("a server response");
                }
                return Ended::Failed { reason: f.reason, retry_after: f.retry_after, was_connected: connected };
            }
        };
        Counters::bump(&shared.counters.sent);
        if !connected {
            connected = true;
            ctx.connected();
        }
        if body.is_empty() {
            continue;
        }
        match codec::decode_http(&body) {
            Ok(reply) => {
                if let Next::Unavailable(retry_after) = ctx.handle(reply).await {
                    return Ended::Failed { reason: "server unavailable".into(), retry_after, was_connected: true };
                }
            }
            Err(DecodeError::Oversize(_)) => ctx.refused_oversize("a server response"),
            Err(e) => ctx.decode_failed(&e),
        }
    }
}

/// The HTTP client (with this attempt's TLS files) and the fixed request headers.
fn setup(
    endpoint: &str,
    headers: &[(String, String)],
    tls: &TlsSettings,
    timeout: Duration,
) -> Result<(reqwest::Client, HeaderMap), String> {
    let lower = endpoint.to_ascii_lowercase();
    let mut builder = reqwest::Client::builder().connect_timeout(timeout).timeout(timeout);
    if lower.starts_with("https://") {
        builder = builder.use_preconfigured_tls(tls::client_config(tls).map_err(|e| e.to_string())?);
    } else if !lower.starts_with("http://") {
        return Err(format!("endpoint {endpoint:?} is not http:// or https://"));
    }
    let client = builder.build().map_err(|e| format!("HTTP client: {e}"))?;
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k:?}: {e}"))?;
        let value = HeaderValue::from_str(v).map_err(|e| format!("header {k:?} value: {e}"))?;
        map.append(name, value);
    }
    map.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
    map.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
    Ok((client, map))
}

/// One POST; the (decompressed) response body, at most 64 MiB.
async fn post(
    client: &reqwest::Client,
    endpoint: &str,
    headers: &HeaderMap,
    msg: &proto::AgentToServer,
) -> Result<Vec<u8>, Failure> {
    let uid = <[u8; 16]>::try_from(msg.instance_uid.as_slice())
        .map(|b| uuid::Uuid::from_bytes(b).hyphenated().to_string())
        .unwrap_or_default();
    let mut resp = client
        .post(endpoint)
        .headers(headers.clone())
        .header(INSTANCE_UID_HEADER, uid)
        .body(msg.encode_to_vec())
        .send()
        .await
        .map_err(|e| Failure::new(format!("POST {endpoint}: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        let retry_after = retry_after_of(status.as_u16(), resp.headers(), now());
        return Err(Failure { reason: format!("server answered HTTP {status}"), retry_after, oversize: false });
    }
    let oversize = |n: u64| Failure {
        reason: format!("response of {n} bytes is over the 64 MiB limit"),
        retry_after: None,
        oversize: true,
    };
    if let Some(len) = resp.content_length().filter(|&l| l > MAX_MESSAGE_BYTES as u64) {
        return Err(oversize(len));
    }
    let gzip = resp.headers().get(header::CONTENT_ENCODING).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Failure::new(format!("reading response: {e}")))? {
        if body.len() + chunk.len() > MAX_MESSAGE_BYTES {
            return Err(oversize((body.len() + chunk.len()) as u64));
        }
        body.extend_from_slice(&chunk);
    }
    if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body.as_slice())
            .take(MAX_MESSAGE_BYTES as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| Failure::new(format!("gzip response: {e}")))?;
        if out.len() > MAX_MESSAGE_BYTES {
            return Err(oversize(out.len() as u64));
        }
        body = out;
    }
    Ok(body)
}

/// The last POST, with `agent_disconnect`, within `deadline`; its answer is not used.
async fn goodbye(ctx: &mut Ctx, client: &reqwest::Client, endpoint: &str, headers: &HeaderMap, deadline: Instant) {
    let mut msg = ctx.shared.state().next_message();
    msg.agent_disconnect = Some(proto::AgentDisconnect {});
    match tokio::time::timeout_at(deadline, post(client, endpoint, headers, &msg)).await {
        Ok(Ok(_)) => {
            Counters::bump(&ctx.shared.counters.sent);
            tracing::debug!("OpAMP: disconnected");
        }
        Ok(Err(f)) => tracing::debug!("OpAMP: disconnect message failed: {}", f.reason),
        Err(_) => tracing::debug!("OpAMP: disconnect timed out"),
    }
}
