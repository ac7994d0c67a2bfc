//! The one seam between components: [`Consumer::consume`].
//!
//! It is synchronous and must never block: processors transform in place and pass on, the
//! batch processor appends under a short lock, exporters only enqueue. So a receiver's request
//! handler (or the profiler's reporting thread) learns at once whether its data was taken, and
//! turns a refusal into backpressure (HTTP 429/503 + `Retry-After`, gRPC `UNAVAILABLE` +
//! `RetryInfo`) or a permanent error (HTTP 400, gRPC `INVALID_ARGUMENT`).

use std::{sync::Arc, time::Duration};

use crate::signal::Data;

/// Why data was not taken.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConsumeError {
    /// Not now: memory is short or every queue is full. The sender should retry later (after
    /// `retry_after` when given); nothing was kept.
    #[error("refused, retry later: {reason}")]
    Refused { reason: String, retry_after: Option<Duration> },
    /// Never: the data is malformed or not allowed. Retrying the same data cannot succeed.
    #[error("rejected: {0}")]
    Rejected(String),
}

impl ConsumeError {
    pub fn refused(reason: impl Into<String>) -> Self {
        ConsumeError::Refused { reason: reason.into(), retry_after: None }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, ConsumeError::Refused { .. })
    }
}

/// Takes data; see the module docs for the contract.
pub trait Consumer: Send + Sync + 'static {
    fn consume(&self, data: Data) -> Result<(), ConsumeError>;
}

/// Hands the same data to several consumers (a receiver in several pipelines, a pipeline with
/// several exporters). Data is cloned only for all but the last.
///
/// One consumer's refusal does not stop the others: exporters count their own drops. Only when
/// **every** consumer refused is the refusal passed back, so a sender retries (and no consumer
/// receives the data twice because another one was full).
pub struct Fanout {
    consumers: Vec<Arc<dyn Consumer>>,
}

impl Fanout {
    /// A single consumer is returned as it is, without a fan-out in front.
    pub fn build(mut consumers: Vec<Arc<dyn Consumer>>) -> Arc<dyn Consumer> {
        if consumers.len() == 1 {
            if let Some(only) = consumers.pop() {
                return only;
            }
        }
        Arc::new(Fanout { consumers })
    }
}

impl Consumer for Fanout {
    fn consume(&self, data: Data) -> Result<(), ConsumeError> {
        let Some((last, rest)) = self.consumers.split_last() else { return Ok(()) };
        let mut first_err = None;
        let mut taken = 0usize;
        for c in rest {
            match c.consume(data.clone()) {
                Ok(()) => taken += 1,
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        match last.consume(data) {
            Ok(()) => taken += 1,
            Err(e) => first_err = first_err.or(Some(e)),
        }
        match first_err {
            // A rejection is about the data: every consumer would reject it.
            Some(e @ ConsumeError::Rejected(_)) => Err(e),
            Some(e) if taken == 0 => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Consumers for unit tests of components.

    use std::sync::Mutex;

    use super::*;

    /// Keeps everything it is given; refuses when told to.
    #[derive(Default)]
    pub struct Sink {
        pub got: Mutex<Vec<Data>>,
        pub refuse: std::sync::atomic::AtomicBool,
    }

    impl Consumer for Sink {
        fn consume(&self, data: Data) -> Result<(), ConsumeError> {
            if self.refuse.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(ConsumeError::refused("sink full"));
            }
            self.got.lock().map_err(|_| ConsumeError::refused("poisoned"))?.push(data);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;

    use super::{testing::Sink, *};

    #[test]
    fn fanout_refuses_only_when_every_consumer_refused() {
        let (a, b) = (Arc::new(Sink::default()), Arc::new(Sink::default()));
        let f = Fanout::build(vec![a.clone(), b.clone()]);
        let data = || Data::Logs(ExportLogsServiceRequest::default());
        f.consume(data()).unwrap();
        a.refuse.store(true, Ordering::Relaxed);
        f.consume(data()).unwrap();
        b.refuse.store(true, Ordering::Relaxed);
        assert!(f.consume(data()).unwrap_err().is_retryable());
        assert_eq!(a.got.lock().unwrap().len(), 1);
        assert_eq!(b.got.lock().unwrap().len(), 2);
    }
}
