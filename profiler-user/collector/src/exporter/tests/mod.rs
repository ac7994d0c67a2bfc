//! The exporters against real peers in the same process: a tonic server and an axum server as
//! backends that record what they got, files read back, the log captured.

mod backends;
mod debug;
mod file;
mod otlp;
pub(crate) mod support;
