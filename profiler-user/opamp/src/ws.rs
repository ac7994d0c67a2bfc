//! OpAMP over WebSocket: one long-lived connection, binary frames both ways, heartbeats when the
//! agent has nothing else to say.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use otelprof_proto::opamp as proto;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::codec::{self, DecodeError, MAX_MESSAGE_BYTES};
use crate::conn::{now, stop_requested, Ctx, Ended, Next, StopRx};
use crate::retry::retry_after_of;
use crate::state::Counters;
use crate::{tls, TlsSettings};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Runs one connection until it fails or a stop is requested.
pub(crate) async fn run(
    ctx: &mut Ctx,
    stop: &mut StopRx,
    endpoint: &str,
    headers: &[(String, String)],
    tls: &TlsSettings,
) -> Ended {
    let timeout = ctx.options.connect_timeout;
    let mut ws = tokio::select! {
        r = tokio::time::timeout(timeout, connect(endpoint, headers, tls)) => match r {
            Ok(Ok(ws)) => ws,
            Ok(Err(ended)) => return ended,
            Err(_) => return Ended::failed(format!("connecting to {endpoint} timed out")),
        },
        _ = stop_requested(stop) => return Ended::Stopped,
    };
    ctx.connected();
    let shared = ctx.shared.clone();
    // The first message on every connection carries the full state.
    shared.state().mark_full();
    let failed = |reason: String| Ended::Failed { reason, retry_after: None, was_connected: true };
    let mut last_send = Instant::now();
    loop {
        let pending = shared.state().has_pending();
        if pending {
            let msg = shared.state().next_message();
            if let Err(e) = send(ctx, &mut ws, &msg).await {
                return failed(e);
            }
            last_send = Instant::now();
            continue;
        }
        let heartbeat = shared.state().heartbeat_interval(ctx.options.default_heartbeat).map(|d| last_send + d);
        tokio::select! {
            deadline = stop_requested(stop) => {
                goodbye(ctx, &mut ws, deadline).await;
                return Ended::Stopped;
            }
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep_until(heartbeat.unwrap_or(last_send)), if heartbeat.is_some() => {
                let msg = shared.state().next_message();
                if let Err(e) = send(ctx, &mut ws, &msg).await {
                    return failed(e);
                }
                last_send = Instant::now();
            }
            incoming = ws.next() => match incoming {
                None => return failed("server closed the connection".into()),
                Some(Err(tungstenite::Error::Capacity(e))) => {
                    ctx.refused_oversize("a server message");
                    close_quietly(&mut ws).await;
                    return failed(format!("server message refused: {e}"));
                }
                Some(Err(e)) => return failed(format!("WebSocket: {e}")),
                Some(Ok(Message::Binary(data))) => match codec::decode_ws(&data) {
                    Ok(msg) => {
                        if let Next::Unavailable(retry_after) = ctx.handle(msg).await {
                            close_quietly(&mut ws).await;
                            return Ended::Failed {
                                reason: "server unavailable".into(),
                                retry_after,
                                was_connected: true,
                            };
                        }
                    }
                    Err(DecodeError::Oversize(_)) => ctx.refused_oversize("a server message"),
                    Err(e) => ctx.decode_failed(&e),
                },
                Some(Ok(Message::Close(frame))) => {
                    return failed(format!(
                        "server closed the connection ({})",
                        frame.map(|f| f.to_string()).unwrap_or_default()
                    ))
                }
                Some(Ok(Message::Text(_))) => ctx.decode_failed(&"text frame"),
                // Pings are answered by tungstenite.
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn send(ctx: &mut Ctx, ws: &mut Ws, msg: &proto::AgentToServer) -> Result<(), String> {
    let frame = codec::encode_ws(msg);
    if frame.len() > MAX_MESSAGE_BYTES {
        ctx.refused_oversize("an outgoing message");
        return Ok(());
    }
    // A server that stops reading would otherwise stall the client (and its heartbeats) forever.
    tokio::time::timeout(ctx.options.connect_timeout, ws.send(Message::Binary(frame.into())))
        .await
        .map_err(|_| "sending timed out".to_string())?
        .map_err(|e| format!("sending: {e}"))?;
    Counters::bump(&ctx.shared.counters.sent);
    Ok(())
}

/// Starts the close handshake before giving up on a connection, without waiting long for it.
async fn close_quietly(ws: &mut Ws) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), ws.close(None)).await;
}

/// The last message (with `agent_disconnect`) and a close frame, within `deadline`.
async fn goodbye(ctx: &mut Ctx, ws: &mut Ws, deadline: Instant) {
    let mut msg = ctx.shared.state().next_message();
    msg.agent_disconnect = Some(proto::AgentDisconnect {});
    let done = tokio::time::timeout_at(deadline, async {
        send(ctx, ws, &msg).await?;
        ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "agent stopping".into() }))
            .await
            .map_err(|e| e.to_string())?;
        // Wait for the server's close frame so the close handshake completes; then drop the
        // socket rather than wait for the server to close TCP.
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
        Ok::<(), String>(())
    })
    .await;
    match done {
        Ok(Ok(())) => tracing::debug!("OpAMP: disconnected"),
        Ok(Err(e)) => tracing::debug!("OpAMP: disconnect incomplete: {e}"),
        Err(_) => tracing::debug!("OpAMP: disconnect timed out"),
    }
}

async fn connect(endpoint: &str, headers: &[(String, String)], tls: &TlsSettings) -> Result<Ws, Ended> {
    let mut request =
        endpoint.into_client_request().map_err(|e| Ended::failed(format!("endpoint {endpoint:?}: {e}")))?;
    for (k, v) in headers {
        let name =
            HeaderName::from_bytes(k.as_bytes()).map_err(|e| Ended::failed(format!("header name {k:?}: {e}")))?;
        let value = HeaderValue::from_str(v).map_err(|e| Ended::failed(format!("header {k:?} value: {e}")))?;
        request.headers_mut().append(name, value);
    }
    let uri = request.uri().clone();
    let secure = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        other => return Err(Ended::failed(format!("endpoint {endpoint:?}: scheme {other:?} is not ws or wss"))),
    };
    let host = uri
        .host()
        .ok_or_else(|| Ended::failed(format!("endpoint {endpoint:?} has no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| Ended::failed(format!("connecting to {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let stream = if secure {
        let config = tls::client_config(tls).map_err(|e| Ended::failed(e.to_string()))?;
        let name = tls.server_name_override.clone().unwrap_or(host);
        let name = ServerName::try_from(name).map_err(|e| Ended::failed(format!("TLS server name: {e}")))?;
        let s = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| Ended::failed(format!("TLS handshake: {e}")))?;
        MaybeTlsStream::Rustls(s)
    } else {
        MaybeTlsStream::Plain(tcp)
    };
    let config =
        WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE_BYTES)).max_frame_size(Some(MAX_MESSAGE_BYTES));
    match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
        Ok((ws, _response)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => {
            let status = resp.status();
            let retry_after = retry_after_of(status.as_u16(), resp.headers(), now());
            Err(Ended::Failed { reason: format!("server answered HTTP {status}"), retry_after, was_connected: false })
        }
        Err(e) => Err(Ended::failed(format!("WebSocket handshake: {e}"))),
    }
}
