//! Handing a decoded request to the pipeline, the same for both transports: the receiver's
//! own metrics are counted here, and nothing is handed on once the receiver has stopped.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use crate::{
    client,
    consumer::{ConsumeError, Consumer},
    signal::Data,
    telemetry::{add, ReceiverMetrics},
};

/// One signal's way into its pipeline(s), for one transport.
pub struct Delivery {
    next: Arc<dyn Consumer>,
    metrics: ReceiverMetrics,
    /// Cleared when the receiver stopped: a request still in flight after the shutdown
    /// deadline is refused (retryable) rather than handed to a pipeline being shut down.
    open: Arc<AtomicBool>,
}

impl Delivery {
    pub fn new(next: Arc<dyn Consumer>, metrics: ReceiverMetrics, open: Arc<AtomicBool>) -> Self {
        Self { next, metrics, open }
    }

    /// Hands `data` on, with its sender as the current [`client`] while the pipeline takes
    /// it; its items count as accepted or refused (requests that failed to decode never get
    /// here: they are not items).
    pub fn deliver(&self, data: Data, sender: client::Info) -> Result<(), ConsumeError> {
        let items = data.items();
        let result = if self.open.load(Ordering::Acquire) {
            client::scope(sender, || self.next.consume(data))
        } else {
            Err(ConsumeError::refused("the receiver is shutting down"))
        };
        match &result {
            Ok(()) => add(&self.metrics.accepted, items),
            Err(_) => add(&self.metrics.refused, items),
        }
        result
    }
}

/// One optional value per signal, indexed by [`crate::signal::Signal::index`].
pub type PerSignal<T> = [Option<T>; 4];
