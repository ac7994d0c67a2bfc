//! The connection task: connect, exchange messages, and on failure wait (backoff or the
//! server's retry-after) and connect again, until stopped. The transports (`ws`, `http`) run one
//! connection each; what the server says is handled here, the same for both.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use otelprof_proto::opamp as proto;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::retry::{Backoff, LogLimiter, MAX_RETRY_AFTER};
use crate::state::{Counters, Shared};
use crate::{ClientOptions, ServerEvent, Transport};

/// How long a final message may take when every handle was dropped without `stop`.
const DROP_GRACE: Duration = Duration::from_secs(1);

/// How one connection ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// `stop` was called (or every handle dropped); the final message was attempted.
    Stopped,
    /// The connection failed or the server asked to come back later.
    Failed {
        reason: String,
        retry_after: Option<Duration>,
        /// The connection had worked (so the backoff starts over).
        was_connected: bool,
    },
}

impl Ended {
    pub(crate) fn failed(reason: impl Into<String>) -> Self {
        Ended::Failed { reason: reason.into(), retry_after: None, was_connected: false }
    }
}

/// Everything a connection needs besides its transport settings.
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) events: mpsc::Sender<ServerEvent>,
    pub(crate) options: ClientOptions,
    pub(crate) log_server_error: LogLimiter,
    pub(crate) log_decode: LogLimiter,
    pub(crate) log_oversize: LogLimiter,
}

/// The stop signal: `Some(deadline)` once `stop` was called.
pub(crate) type StopRx = watch::Receiver<Option<Instant>>;

/// Resolves when a stop was requested, with the deadline for the final message.
pub(crate) async fn stop_requested(rx: &mut StopRx) -> Instant {
    loop {
        if let Some(deadline) = *rx.borrow_and_update() {
            return deadline;
        }
        if rx.changed().await.is_err() {
            return Instant::now() + DROP_GRACE;
        }
    }
}

/// What the transport does after a server message.
pub(crate) enum Next {
    Continue,
    /// `ServerErrorResponse` UNAVAILABLE: disconnect and come back after this long (or after
    /// the backoff if the server gave no time).
    Unavailable(Option<Duration>),
}

impl Ctx {
    /// Sends an event the agent must see (config, commands): waits for room in the channel.
    /// A closed channel (agent gone) is not an error for the client.
    async fn emit(&self, ev: ServerEvent) {
        let _ = self.events.send(ev).await;
    }

    /// Sends an informational event (connected, failed) without waiting, so a slow agent never
    /// delays reconnecting.
    pub(crate) fn notify(&self, ev: ServerEvent) {
        let _ = self.events.try_send(ev);
    }

    pub(crate) fn connected(&self) {
        Counters::bump(&self.shared.counters.connects);
        tracing::debug!("OpAMP connected");
        self.notify(ServerEvent::Connected);
    }

    pub(crate) fn refused_oversize(&mut self, what: &str) {
        Counters::bump(&self.shared.counters.refused_oversize);
        if let Some(held) = self.log_oversize.allow() {
            tracing::warn!(held_back = held, "OpAMP: refused {what} over 64 MiB");
        }
    }

    pub(crate) fn decode_failed(&mut self, err: &dyn std::fmt::Display) {
        Counters::bump(&self.shared.counters.decode_errors);
        if let Some(held) = self.log_decode.allow() {
            tracing::warn!(held_back = held, "OpAMP: ignoring server message: {err}");
        }
    }

    /// Applies one `ServerToAgent`: adopts a new instance UID, notes `ReportFullState` and the
    /// offered heartbeat interval, and hands offers and commands to the agent.
    pub(crate) async fn handle(&mut self, msg: proto::ServerToAgent) -> Next {
        Counters::bump(&self.shared.counters.received);
        if let Some(err) = msg.error_response {
            Counters::bump(&self.shared.counters.server_errors);
            let unavailable = err.r#type == proto::ServerErrorResponseType::Unavailable as i32;
            if let Some(held) = self.log_server_error.allow() {
                tracing::warn!(held_back = held, unavailable, "OpAMP server error: {}", err.error_message);
            }
            if unavailable {
                let wait = match err.details {
                    Some(proto::server_error_response::Details::RetryInfo(r)) if r.retry_after_nanoseconds > 0 => {
                        Some(Duration::from_nanos(r.retry_after_nanoseconds).min(MAX_RETRY_AFTER))
                    }
                    _ => None,
                };
                return Next::Unavailable(wait);
            }
            // Spec: any other field is unset when error_response is set.
            return Next::Continue;
        }
        if let Some(command) = msg.command {
            // Spec: with a command, the other fields are ignored.
            self.emit(ServerEvent::Command(command)).await;
            return Next::Continue;
        }
        if let Some(id) = msg.agent_identification {
            match <[u8; 16]>::try_from(id.new_instance_uid.as_slice()) {
                Ok(uid) => {
                    let changed = self.shared.state().set_instance_uid(uid);
                    if changed {
                        tracing::info!(
                            uid = %uuid::Uuid::from_bytes(uid),
                            "OpAMP server assigned a new instance UID"
                        );
                        self.shared.wake.notify_one();
                        self.emit(ServerEvent::NewInstanceUid(uid)).await;
                    }
                }
                Err(_) if id.new_instance_uid.is_empty() => {}
                Err(_) => tracing::warn!(
                    len = id.new_instance_uid.len(),
                    "OpAMP: ignoring new_instance_uid that is not 16 bytes"
                ),
            }
        }
        if msg.flags & proto::ServerToAgentFlags::ReportFullState as u64 != 0 {
            self.shared.state().mark_full();
            self.shared.wake.notify_one();
        }
        if let Some(rc) = msg.remote_config {
            self.emit(ServerEvent::RemoteConfig(rc)).await;
        }
        if let Some(offers) = msg.connection_settings {
            if let Some(opamp) = offers.opamp {
                // Applied at once, as opamp-go does: 0 turns heartbeats off.
                self.shared.state().offer_heartbeat(opamp.heartbeat_interval_seconds);
                self.emit(ServerEvent::OpampConnectionSettings { settings: opamp, hash: offers.hash.clone() }).await;
            }
            if let Some(metrics) = offers.own_metrics {
                self.emit(ServerEvent::OwnMetrics { settings: metrics, hash: offers.hash.clone() }).await;
            }
        }
        Next::Continue
    }
}

/// The connection task's body.
pub(crate) async fn run(transport: Transport, mut ctx: Ctx, mut stop: StopRx) {
    let mut backoff = Backoff::new(ctx.options.backoff_initial, ctx.options.backoff_max);
    let mut log_fail = LogLimiter::new(Duration::from_secs(60));
    if transport_tls(&transport).insecure_skip_verify {
        tracing::warn!("OpAMP: TLS certificate verification is off (insecure_skip_verify)");
    }
    loop {
        let ended = match &transport {
            Transport::WebSocket { endpoint, headers, tls } => {
                crate::ws::run(&mut ctx, &mut stop, endpoint, headers, tls).await
            }
            Transport::Http { endpoint, headers, tls, polling_interval } => {
                crate::http::run(&mut ctx, &mut stop, endpoint, headers, tls, *polling_interval).await
            }
        };
        let (reason, retry_after) = match ended {
            Ended::Stopped => return,
            Ended::Failed { reason, retry_after, was_connected } => {
                if was_connected {
                    backoff.reset();
                }
                (reason, retry_after)
            }
        };
        Counters::bump(&ctx.shared.counters.connect_failures);
        let wait = retry_after.unwrap_or_else(|| backoff.next_wait());
        if let Some(held) = log_fail.allow() {
            tracing::warn!(
                held_back = held,
                retry_in_ms = wait.as_millis() as u64,
                "OpAMP connection failed: {reason}"
            );
        }
        ctx.notify(ServerEvent::ConnectFailed(reason));
        // A stop during the wait has no connection to say goodbye on.
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop_requested(&mut stop) => return,
        }
    }
}

fn transport_tls(t: &Transport) -> &crate::TlsSettings {
    match t {
        Transport::WebSocket { tls, .. } | Transport::Http { tls, .. } => tls,
    }
}

/// Unix time now, for `Retry-After` dates.
pub(crate) fn now() -> SystemTime {
    SystemTime::now()
}
