//! The sending queue: a FIFO of requests bounded in the sizer's unit (requests, items or
//! bytes), as the Collector's in-memory queue. A request counts against the bound from the
//! moment it is offered until its sender is done with it (sent, dropped or given up on), so
//! a dead backend holds at most `capacity` in memory, in the queue and in flight together.
//!
//! `offer` never waits: a full queue says so at once and the exporter refuses the data.

use std::{
    collections::VecDeque,
    sync::{atomic::Ordering, Arc, Mutex, MutexGuard},
};

use tokio::sync::Notify;

use super::config::Sizer;
use super::transport::Request;
use crate::telemetry::Value;

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("the sending queue is full ({size} + {needed} > {capacity})")]
    Full { size: u64, needed: u64, capacity: u64 },
    #[error("the request ({needed}) is larger than the whole sending queue ({capacity})")]
    TooLarge { needed: u64, capacity: u64 },
    #[error("the exporter is shutting down")]
    Closed,
}

struct State {
    items: VecDeque<(Request, u64)>,
    /// Queued plus in flight, in sizer units.
    size: u64,
    closed: bool,
}

pub struct Queue {
    state: Mutex<State>,
    notify: Notify,
    sizer: Sizer,
    capacity: u64,
    size_gauge: Value,
}

/// A request taken for sending; its size is given back to the queue when it is dropped, on
/// every path (sent, failed, cancelled at shutdown, or a panicking sender unwinding).
pub struct Lease {
    queue: Arc<Queue>,
    size: u64,
    pub request: Request,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.queue.release(self.size);
    }
}

impl Queue {
    pub fn new(sizer: Sizer, capacity: u64, size_gauge: Value, capacity_gauge: &Value) -> Arc<Self> {
        capacity_gauge.store(capacity, Ordering::Relaxed);
        size_gauge.store(0, Ordering::Relaxed);
        Arc::new(Self {
            state: Mutex::new(State { items: VecDeque::new(), size: 0, closed: false }),
            notify: Notify::new(),
            sizer,
            capacity,
            size_gauge,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The size of `request` in the sizer's unit; at least 1, so nothing is free.
    pub fn size_of(&self, request: &Request) -> u64 {
        let n = match self.sizer {
            Sizer::Requests => 1,
            Sizer::Items => request.items,
            Sizer::Bytes => request.bytes(),
        };
        n.max(1)
    }

    /// Queues `request` if it fits.
    pub fn offer(&self, request: Request) -> Result<(), OfferError> {
        let needed = self.size_of(&request);
        if needed > self.capacity {
            return Err(OfferError::TooLarge { needed, capacity: self.capacity });
        }
        let mut st = self.lock();
        if st.closed {
            return Err(OfferError::Closed);
        }
        if st.size + needed > self.capacity {
            return Err(OfferError::Full { size: st.size, needed, capacity: self.capacity });
        }
        st.size += needed;
        st.items.push_back((request, needed));
        self.size_gauge.store(st.size, Ordering::Relaxed);
        drop(st);
        self.notify.notify_one();
        Ok(())
    }

    /// The oldest request; waits while the queue is empty. `None` once closed and empty.
    pub async fn pop(self: &Arc<Self>) -> Option<Lease> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                if let Some((request, size)) = st.items.pop_front() {
                    let more = !st.items.is_empty();
                    drop(st);
                    if more {
                        // Another sender may be idle while this one works.
                        self.notify.notify_one();
                    }
                    return Some(Lease { queue: self.clone(), size, request });
                }
                if st.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    fn release(&self, size: u64) {
        let mut st = self.lock();
        st.size = st.size.saturating_sub(size);
        self.size_gauge.store(st.size, Ordering::Relaxed);
    }

    /// No more offers; `pop` hands out what is left, then `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }

    /// Takes everything still queued (after the senders stopped), giving its size back.
    pub fn drain(&self) -> Vec<Request> {
        let mut st = self.lock();
        let items: Vec<(Request, u64)> = st.items.drain(..).collect();
        let freed: u64 = items.iter().map(|(_, s)| s).sum();
        st.size = st.size.saturating_sub(freed);
        self.size_gauge.store(st.size, Ordering::Relaxed);
        items.into_iter().map(|(d, _)| d).collect()
    }

    /// Queued plus in flight, in sizer units.
    pub fn size(&self) -> u64 {
        self.lock().size
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        collector::logs::v1::ExportLogsServiceRequest,
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    };

    use super::*;

    fn logs(n: usize) -> Request {
        Request::data(crate::signal::Data::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs { log_records: vec![LogRecord::default(); n], ..Default::default() }],
                ..Default::default()
            }],
        }))
    }

    #[tokio::test]
    async fn in_flight_requests_count_until_their_lease_ends() {
        let (size, cap) = (Value::default(), Value::default());
        let q = Queue::new(Sizer::Items, 5, size.clone(), &cap);
        assert_eq!(cap.load(Ordering::Relaxed), 5);
        q.offer(logs(3)).unwrap();
        assert_eq!(q.offer(logs(3)), Err(OfferError::Full { size: 3, needed: 3, capacity: 5 }));
        assert_eq!(q.offer(logs(6)), Err(OfferError::TooLarge { needed: 6, capacity: 5 }));
        let lease = q.pop().await.unwrap();
        assert_eq!(lease.request.items, 3);
        assert!(q.offer(logs(3)).is_err(), "the request being sent still counts");
        q.offer(logs(2)).unwrap();
        assert_eq!(size.load(Ordering::Relaxed), 5);
        drop(lease);
        assert_eq!(size.load(Ordering::Relaxed), 2);
        q.close();
        assert_eq!(q.offer(logs(1)), Err(OfferError::Closed));
        assert_eq!(q.drain().len(), 1);
        assert!(q.pop().await.is_none());
        assert_eq!((q.size(), size.load(Ordering::Relaxed)), (0, 0));
    }
}
