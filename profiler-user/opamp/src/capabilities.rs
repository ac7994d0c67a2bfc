//! `AgentCapabilities` bits (`opamp.v1.AgentCapabilities`), as `u64` constants because the
//! protocol carries them as one bitmask (`AgentToServer.capabilities`). The values are taken from
//! the generated enum so they cannot drift from the vendored proto.

use otelprof_proto::opamp::AgentCapabilities as C;

/// The agent reports status. Every agent MUST set it.
pub const REPORTS_STATUS: u64 = C::ReportsStatus as u64;
/// The agent accepts remote configuration.
pub const ACCEPTS_REMOTE_CONFIG: u64 = C::AcceptsRemoteConfig as u64;
/// The agent reports its effective configuration.
pub const REPORTS_EFFECTIVE_CONFIG: u64 = C::ReportsEffectiveConfig as u64;
/// The agent accepts package offers.
pub const ACCEPTS_PACKAGES: u64 = C::AcceptsPackages as u64;
/// The agent reports package statuses.
pub const REPORTS_PACKAGE_STATUSES: u64 = C::ReportsPackageStatuses as u64;
/// The agent sends its own traces where the server says.
pub const REPORTS_OWN_TRACES: u64 = C::ReportsOwnTraces as u64;
/// The agent sends its own metrics where the server says.
pub const REPORTS_OWN_METRICS: u64 = C::ReportsOwnMetrics as u64;
/// The agent sends its own logs where the server says.
pub const REPORTS_OWN_LOGS: u64 = C::ReportsOwnLogs as u64;
/// The agent accepts new OpAMP connection settings.
pub const ACCEPTS_OPAMP_CONNECTION_SETTINGS: u64 = C::AcceptsOpAmpConnectionSettings as u64;
/// The agent accepts connection settings for other destinations.
pub const ACCEPTS_OTHER_CONNECTION_SETTINGS: u64 = C::AcceptsOtherConnectionSettings as u64;
/// The agent accepts the restart command.
pub const ACCEPTS_RESTART_COMMAND: u64 = C::AcceptsRestartCommand as u64;
/// The agent reports health.
pub const REPORTS_HEALTH: u64 = C::ReportsHealth as u64;
/// The agent reports the status of the remote configuration.
pub const REPORTS_REMOTE_CONFIG: u64 = C::ReportsRemoteConfig as u64;
/// The agent sends heartbeats (default every 30 s, or as the server offers).
pub const REPORTS_HEARTBEAT: u64 = C::ReportsHeartbeat as u64;
/// The agent reports its available components.
pub const REPORTS_AVAILABLE_COMPONENTS: u64 = C::ReportsAvailableComponents as u64;
/// The agent reports the status of offered connection settings.
pub const REPORTS_CONNECTION_SETTINGS_STATUS: u64 = C::ReportsConnectionSettingsStatus as u64;

/// Every bit the vendored proto defines: the spec says undefined bits MUST be 0, so the client
/// clears the others before sending.
pub const ALL: u64 = REPORTS_STATUS
    | ACCEPTS_REMOTE_CONFIG
    | REPORTS_EFFECTIVE_CONFIG
    | ACCEPTS_PACKAGES
    | REPORTS_PACKAGE_STATUSES
    | REPORTS_OWN_TRACES
    | REPORTS_OWN_METRICS
    | REPORTS_OWN_LOGS
    | ACCEPTS_OPAMP_CONNECTION_SETTINGS
    | ACCEPTS_OTHER_CONNECTION_SETTINGS
    | ACCEPTS_RESTART_COMMAND
    | REPORTS_HEALTH
    | REPORTS_REMOTE_CONFIG
    | REPORTS_HEARTBEAT
    | REPORTS_AVAILABLE_COMPONENTS
    | REPORTS_CONNECTION_SETTINGS_STATUS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_match_the_spec() {
        assert_eq!(REPORTS_STATUS, 0x1);
        assert_eq!(ACCEPTS_OPAMP_CONNECTION_SETTINGS, 0x100);
        assert_eq!(REPORTS_HEARTBEAT, 0x2000);
        assert_eq!(REPORTS_CONNECTION_SETTINGS_STATUS, 0x8000);
        assert_eq!(ALL, 0xffff);
    }
}
