//! Protobuf types generated from the vendored `.proto` files in this folder.
//!
//! - [`pprof`]: `perftools.profiles` from google/pprof's `profile.proto` (Apache-2.0), the format
//!   `go tool pprof`, Pyroscope and Parca read.
//! - [`opamp`]: `opamp.v1` from open-telemetry/opamp-spec (Apache-2.0), the agent-management
//!   protocol `otelprof-opamp` speaks; see `opamp/README.md` for which copy is vendored.

/// pprof's `perftools.profiles` package.
pub mod pprof {
    include!(concat!(env!("OUT_DIR"), "/perftools.profiles.rs"));
}

/// OpAMP's `opamp.v1` package (`AgentToServer`, `ServerToAgent`, ...), used by the OpAMP client.
// The spec's proto comments become doc comments verbatim; their list indentation is theirs.
#[allow(clippy::doc_overindented_list_items)]
pub mod opamp {
    include!(concat!(env!("OUT_DIR"), "/opamp.v1.rs"));
}
