//! Receivers: where data enters the collector, one module per receiver type, each with a
//! [`ReceiverFactory`] the pipeline graph looks up by the type in `receivers:` (`otlp`,
//! `otlp/internal`).

use crate::component::ReceiverFactory;

pub mod anomaly;
pub mod otlp;

/// The factory of every receiver type this crate has.
pub fn factories() -> Vec<Box<dyn ReceiverFactory>> {
    vec![Box::new(otlp::OtlpReceiverFactory), Box::new(anomaly::AnomalyReceiverFactory)]
}
