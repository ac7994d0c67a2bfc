//! Extensions: parts of the agent that are not on the data path (`extensions:` in the config,
//! listed in `service.extensions`), as in the Collector.
//!
//! An extension type has a factory that checks its config at parse time, like every other
//! component's, so a mistake in `extensions.opamp` is reported with its key path and position
//! before anything starts. What an extension then does with the agent (OpAMP reconfigures it)
//! is the binary's wiring: the checked config is handed over as [`ExtensionConfig`], and the
//! binary takes its own type back out of it.

use std::any::Any;

use serde_yaml::Value;

use crate::{component::ComponentId, config::ConfigError};

pub mod opamp;

/// An extension's checked config, of the type its factory made.
pub type ExtensionConfig = Box<dyn Any + Send + Sync>;

/// Makes (checks) the config of one extension type.
pub trait ExtensionFactory: Send + Sync {
    /// The type name (`opamp`).
    fn kind(&self) -> &'static str;
    /// Parses and checks `config` (at key path `path`); opens nothing.
    fn create(&self, id: &ComponentId, config: Value, path: &str) -> Result<ExtensionConfig, ConfigError>;
}

/// The extension types built into this crate.
pub fn factories() -> Vec<Box<dyn ExtensionFactory>> {
    vec![Box::new(opamp::OpampFactory)]
}
