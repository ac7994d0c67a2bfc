//! The agent state the client reports, and which parts of it the server has not seen yet.
//!
//! OpAMP lets a client omit what did not change since its previous message, so the client keeps
//! the current value of every reported part plus a "dirty" bit per part. The first message of a
//! connection (and the one after the server asks with `ReportFullState`) carries everything; a
//! later one carries the dirty parts only. There is no queue: a setter overwrites the value and
//! wakes the sender, so the server always gets the latest state and memory stays bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use otelprof_proto::opamp as proto;
use tokio::sync::Notify;

use crate::capabilities;

const DESCRIPTION: u8 = 1 << 0;
const HEALTH: u8 = 1 << 1;
const EFFECTIVE_CONFIG: u8 = 1 << 2;
const REMOTE_CONFIG_STATUS: u8 = 1 << 3;
const CONNECTION_SETTINGS_STATUS: u8 = 1 << 4;
/// Capabilities and instance UID travel in every message; the bit only says "send one soon".
const ALWAYS_SENT: u8 = 1 << 5;
const ALL: u8 = DESCRIPTION | HEALTH | EFFECTIVE_CONFIG | REMOTE_CONFIG_STATUS | CONNECTION_SETTINGS_STATUS;

/// Current agent state and the bookkeeping for what to send next.
#[derive(Debug)]
pub(crate) struct AgentState {
    pub(crate) instance_uid: [u8; 16],
    description: proto::AgentDescription,
    capabilities: u64,
    health: Option<proto::ComponentHealth>,
    effective_config: Option<proto::EffectiveConfig>,
    remote_config_status: Option<proto::RemoteConfigStatus>,
    connection_settings_status: Option<proto::ConnectionSettingsStatus>,
    dirty: u8,
    full_next: bool,
    next_seq: u64,
    /// `heartbeat_interval_seconds` of the last OpAMP connection settings the server offered.
    offered_heartbeat_secs: Option<u64>,
}

macro_rules! setter {
    ($name:ident, $field:ident, $ty:ty, $bit:expr) => {
        /// Replaces the value; marks it for sending only if it differs from the current one.
        pub(crate) fn $name(&mut self, v: $ty) -> bool {
            if self.$field.as_ref() == Some(&v) {
                return false;
            }
            self.$field = Some(v);
            self.dirty |= $bit;
            true
        }
    };
}

impl AgentState {
    pub(crate) fn new(instance_uid: [u8; 16], description: proto::AgentDescription, capabilities: u64) -> Self {
        AgentState {
            instance_uid,
            description,
            capabilities: capabilities & capabilities::ALL,
            health: None,
            effective_config: None,
            remote_config_status: None,
            connection_settings_status: None,
            dirty: 0,
            full_next: true,
            next_seq: 1,
            offered_heartbeat_secs: None,
        }
    }

    setter!(set_health, health, proto::ComponentHealth, HEALTH);
    setter!(set_effective_config, effective_config, proto::EffectiveConfig, EFFECTIVE_CONFIG);
    setter!(set_remote_config_status, remote_config_status, proto::RemoteConfigStatus, REMOTE_CONFIG_STATUS);
    setter!(
        set_connection_settings_status,
        connection_settings_status,
        proto::ConnectionSettingsStatus,
        CONNECTION_SETTINGS_STATUS
    );

    pub(crate) fn set_description(&mut self, d: proto::AgentDescription) -> bool {
        if self.description == d {
            return false;
        }
        self.description = d;
        self.dirty |= DESCRIPTION;
        true
    }

    pub(crate) fn set_capabilities(&mut self, caps: u64) -> bool {
        let caps = caps & capabilities::ALL;
        if self.capabilities == caps {
            return false;
        }
        self.capabilities = caps;
        self.dirty |= ALWAYS_SENT;
        true
    }

    pub(crate) fn set_instance_uid(&mut self, uid: [u8; 16]) -> bool {
        if self.instance_uid == uid {
            return false;
        }
        self.instance_uid = uid;
        self.dirty |= ALWAYS_SENT;
        true
    }

    /// The next message must carry the full state (new connection, `ReportFullState`).
    pub(crate) fn mark_full(&mut self) {
        self.full_next = true;
    }

    /// Something is waiting to be sent.
    pub(crate) fn has_pending(&self) -> bool {
        self.dirty != 0 || self.full_next
    }

    pub(crate) fn offer_heartbeat(&mut self, secs: u64) {
        self.offered_heartbeat_secs = Some(secs);
    }

    /// How often to send a heartbeat on a WebSocket, `None` for never: only with the
    /// `ReportsHeartbeat` capability; the server's offer wins over `default` and 0 turns it off.
    pub(crate) fn heartbeat_interval(&self, default: Duration) -> Option<Duration> {
        if self.capabilities & capabilities::REPORTS_HEARTBEAT == 0 {
            return None;
        }
        match self.offered_heartbeat_secs {
            None => Some(default),
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(s)),
        }
    }

    /// How often to poll over HTTP: the offered heartbeat interval when non-zero (the spec's
    /// MUST for HTTP clients), else the configured polling interval.
    pub(crate) fn poll_interval(&self, polling: Duration) -> Duration {
        match self.offered_heartbeat_secs {
            Some(s) if s > 0 => Duration::from_secs(s),
            _ => polling,
        }
    }

    /// Builds the next message (full or only what changed), clears the dirty bits and advances
    /// `sequence_num`.
    pub(crate) fn next_message(&mut self) -> proto::AgentToServer {
        let parts = if std::mem::take(&mut self.full_next) { ALL } else { self.dirty };
        self.dirty = 0;
        let sequence_num = self.next_seq;
        self.next_seq += 1;
        let pick = |bit: u8| parts & bit != 0;
        proto::AgentToServer {
            instance_uid: self.instance_uid.to_vec(),
            sequence_num,
            capabilities: self.capabilities,
            agent_description: pick(DESCRIPTION).then(|| self.description.clone()),
            health: self.health.clone().filter(|_| pick(HEALTH)),
            effective_config: self.effective_config.clone().filter(|_| pick(EFFECTIVE_CONFIG)),
            remote_config_status: self.remote_config_status.clone().filter(|_| pick(REMOTE_CONFIG_STATUS)),
            connection_settings_status: self
                .connection_settings_status
                .clone()
                .filter(|_| pick(CONNECTION_SETTINGS_STATUS)),
            ..Default::default()
        }
    }
}

/// What the connection task and the handles share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<AgentState>,
    /// Woken by setters: "there may be something to send".
    pub(crate) wake: Notify,
    pub(crate) counters: Counters,
}

impl Shared {
    /// The state lock. Never held across an await; a panic while holding it cannot leave the
    /// state half-written in a way that matters more than stopping the agent would, so poison is
    /// ignored.
    pub(crate) fn state(&self) -> MutexGuard<'_, AgentState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counters behind [`crate::Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) refused_oversize: AtomicU64,
    pub(crate) server_errors: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> crate::Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let connects = get(&self.connects);
        crate::Stats {
            sent: get(&self.sent),
            received: get(&self.received),
            connects,
            reconnects: connects.saturating_sub(1),
            connect_failures: get(&self.connect_failures),
            refused_oversize: get(&self.refused_oversize),
            server_errors: get(&self.server_errors),
            decode_errors: get(&self.decode_errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AgentState {
        AgentState::new([7; 16], proto::AgentDescription::default(), 0x1_0000_2001)
    }

    #[test]
    fn first_full_then_only_changes() {
        let mut s = state();
        s.set_health(proto::ComponentHealth { healthy: true, ..Default::default() });
        let m = s.next_message();
        assert_eq!(m.sequence_num, 1);
        assert_eq!(m.capabilities, 0x2001, "undefined bits cleared");
        assert!(m.agent_description.is_some() && m.health.is_some());
        assert!(!s.has_pending());
        let m = s.next_message();
        assert_eq!(m.sequence_num, 2);
        assert!(m.agent_description.is_none() && m.health.is_none());
        // Same value again: nothing to send.
        assert!(!s.set_health(proto::ComponentHealth { healthy: true, ..Default::default() }));
        assert!(s.set_effective_config(proto::EffectiveConfig::default()));
        let m = s.next_message();
        assert!(m.effective_config.is_some() && m.health.is_none());
        s.mark_full();
        let m = s.next_message();
        assert!(m.effective_config.is_some() && m.health.is_some());
    }

    #[test]
    fn heartbeat_and_poll_intervals() {
        let mut s = state();
        let d = Duration::from_secs(30);
        assert_eq!(s.heartbeat_interval(d), Some(d));
        s.offer_heartbeat(5);
        assert_eq!(s.heartbeat_interval(d), Some(Duration::from_secs(5)));
        assert_eq!(s.poll_interval(d), Duration::from_secs(5));
        s.offer_heartbeat(0);
        assert_eq!(s.heartbeat_interval(d), None);
        assert_eq!(s.poll_interval(d), d);
        s.set_capabilities(1);
        s.offer_heartbeat(5);
        assert_eq!(s.heartbeat_interval(d), None);
    }
}
