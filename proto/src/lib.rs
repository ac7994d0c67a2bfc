//! Protobuf types generated from the vendored `.proto` files in this folder.
//!
//! - [`pprof`]: `perftools.profiles` from google/pprof's `profile.proto` (Apache-2.0), the format
//!   `go tool pprof`, Pyroscope and Parca read.

/// pprof's `perftools.profiles` package.
pub mod pprof {
    include!(concat!(env!("OUT_DIR"), "/perftools.profiles.rs"));
}
