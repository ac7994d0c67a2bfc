//! The crate's error type: what can go wrong before any byte reaches the server (settings,
//! files, TLS material). Network failures are not errors here: the client retries them and
//! reports them as [`crate::ServerEvent::ConnectFailed`].

use std::path::PathBuf;

/// Why a file could not be used or a setting was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The `instance_uid` file holds neither 32 hex digits (a UUID, hyphens allowed) nor 16 raw
    /// bytes. It is not replaced silently: that would give the agent a new identity.
    #[error("{}: not an instance UID ({reason})", path.display())]
    InvalidInstanceUid {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The TLS material (CA, certificate, key) could not be turned into a client configuration.
    #[error("TLS: {0}")]
    Tls(String),
    /// A setting cannot work (bad URL, header, scheme).
    #[error("invalid OpAMP client settings: {0}")]
    Config(String),
}
