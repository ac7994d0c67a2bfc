//! The `opamp` extension: the agent managed by an OpAMP server (issue #14,
//! docs/design/0009-opamp.md).
//!
//! - [`config`]: `extensions.opamp` as the Collector's OpAMP extension has it, plus
//!   `remote_config` (off by default): what a server may change, where remote files may point,
//!   and the optional Ed25519 signature.
//! - [`remote`]: a remote config checked against the policy and merged over the local file.
//! - [`supervisor`]: the OpAMP client and the loop that applies remote configs atomically,
//!   verifies them and rolls back; health and effective config reported.
//! - [`own_metrics`]: the agent's own metrics (the `/metrics` text) pushed as OTLP/HTTP to the
//!   destination a server offers in `connection_settings.own_metrics`.

pub mod config;
pub mod own_metrics;
pub mod remote;
pub mod supervisor;

use serde_yaml::Value;

pub use config::OpampConfig;

use super::{ExtensionConfig, ExtensionFactory};
use crate::{component::ComponentId, config::ConfigError};

/// Makes the `opamp` extension's config.
pub struct OpampFactory;

impl ExtensionFactory for OpampFactory {
    fn kind(&self) -> &'static str {
        "opamp"
    }

    fn create(&self, _id: &ComponentId, config: Value, path: &str) -> Result<ExtensionConfig, ConfigError> {
        Ok(Box::new(OpampConfig::parse(path, config)?))
    }
}
