//! The export queue: requests wait here for the sender, within a byte budget.
//!
//! When the backend is slower than the profiler (or down), the oldest requests are dropped to
//! make room and counted in [`ExportStats`]; sampling never waits for the network.

use std::{
    collections::VecDeque,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use prost::Message;
use tokio::sync::Notify;

use super::{export_with_retry, Client, ExportStats, RetryConfig};

#[derive(Default)]
struct State {
    items: VecDeque<(ExportProfilesServiceRequest, usize)>,
    bytes: usize,
    closed: bool,
}

/// A FIFO of export requests holding at most `max_bytes` of encoded protobuf.
pub struct ExportQueue {
    state: Mutex<State>,
    /// Bytes of the request the sender is working on (0: none), so a shutdown that cuts it off
    /// counts it as dropped.
    in_flight: std::sync::atomic::AtomicUsize,
    notify: Notify,
    max_bytes: usize,
    stats: Arc<ExportStats>,
}

impl ExportQueue {
    pub fn new(max_bytes: usize, stats: Arc<ExportStats>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            in_flight: Default::default(),
            notify: Notify::new(),
            max_bytes,
            stats,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drop_counted(&self, bytes: usize) {
        self.stats.dropped_batches.fetch_add(1, Ordering::Relaxed);
        self.stats.dropped_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Queues `req`, dropping the oldest requests while it would not fit. A request larger than
    /// the whole budget is dropped itself.
    pub fn push(&self, req: ExportProfilesServiceRequest) {
        let size = req.encoded_len();
        let mut st = self.lock();
        if size > self.max_bytes {
            drop(st);
            tracing::warn!("export request of {size} bytes exceeds the queue's {} bytes; dropped", self.max_bytes);
            self.drop_counted(size);
            return;
        }
        while st.bytes + size > self.max_bytes {
            let Some((_, old)) = st.items.pop_front() else { break };
            st.bytes -= old;
            self.drop_counted(old);
            tracing::warn!("export queue full ({} bytes): dropped the oldest request ({old} bytes)", self.max_bytes);
        }
        st.items.push_back((req, size));
        st.bytes += size;
        self.stats.queue_bytes.store(st.bytes as u64, Ordering::Relaxed);
        drop(st);
        self.notify.notify_one();
    }

    /// The oldest request; waits while the queue is empty. `None` once closed and empty.
    pub async fn pop(&self) -> Option<ExportProfilesServiceRequest> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                if let Some((req, size)) = st.items.pop_front() {
                    st.bytes -= size;
                    self.stats.queue_bytes.store(st.bytes as u64, Ordering::Relaxed);
                    return Some(req);
                }
                if st.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// No more pushes; `pop` drains what is left, then returns `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }

    /// Drops everything still queued or in flight (after a shutdown deadline), counting it.
    pub fn discard(&self) -> usize {
        let mut n = 0;
        let in_flight = self.in_flight.swap(0, Ordering::Relaxed);
        if in_flight > 0 {
            self.drop_counted(in_flight);
            n += 1;
        }
        let mut st = self.lock();
        n += st.items.len();
        for (_, size) in std::mem::take(&mut st.items) {
            self.drop_counted(size);
        }
        st.bytes = 0;
        self.stats.queue_bytes.store(0, Ordering::Relaxed);
        n
    }
}

/// Sends queued requests one after another until the queue is closed and empty.
pub async fn run_sender(queue: Arc<ExportQueue>, client: Client, retry: RetryConfig, stats: Arc<ExportStats>) {
    while let Some(req) = queue.pop().await {
        queue.in_flight.store(req.encoded_len(), Ordering::Relaxed);
        if let Err(e) = export_with_retry(&client, &req, &retry, &stats).await {
            tracing::warn!("export failed: {e}");
        }
        queue.in_flight.store(0, Ordering::Relaxed);
    }
}

/// Closes the queue and lets `sender` flush it for at most `deadline`; what is left is dropped
/// and counted. Returns the number of requests dropped.
pub async fn shutdown(queue: &ExportQueue, sender: tokio::task::JoinHandle<()>, deadline: Duration) -> usize {
    queue.close();
    let abort = sender.abort_handle();
    match tokio::time::timeout(deadline, sender).await {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            // A panic was logged (and made the agent unhealthy) when it happened; what it left
            // in the queue is lost.
            let n = queue.discard();
            tracing::error!("the export sender ended badly ({e}); dropped {n} queued requests");
            n
        }
        Err(_) => {
            abort.abort();
            let n = queue.discard();
            tracing::warn!("export flush deadline of {deadline:?} passed; dropped {n} queued requests");
            n
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::profiles::v1development::ProfilesDictionary;

    use super::*;

    fn req(strings: usize) -> ExportProfilesServiceRequest {
        ExportProfilesServiceRequest {
            resource_profiles: vec![],
            dictionary: Some(ProfilesDictionary { string_table: vec!["x".repeat(100); strings], ..Default::default() }),
        }
    }

    #[tokio::test]
    async fn drops_the_oldest_and_counts() {
        let stats = Arc::new(ExportStats::default());
        let one = req(10).encoded_len();
        let q = ExportQueue::new(one * 3, stats.clone());
        for n in 1..=5 {
            let mut r = req(10);
            r.dictionary.as_mut().unwrap().string_table[0] = format!("{n:0>100}");
            q.push(r);
        }
        assert_eq!(stats.queue_bytes.load(Ordering::Relaxed), one as u64 * 3, "never above the bound");
        assert_eq!(stats.dropped_batches.load(Ordering::Relaxed), 2);
        assert_eq!(stats.dropped_bytes.load(Ordering::Relaxed), 2 * one as u64);
        let first = q.pop().await.unwrap();
        assert!(first.dictionary.unwrap().string_table[0].ends_with('3'), "the two oldest went");
        q.push(req(1000));
        assert_eq!(stats.dropped_batches.load(Ordering::Relaxed), 3, "larger than the whole budget");
        q.close();
        assert!(q.pop().await.is_some() && q.pop().await.is_some());
        assert!(q.pop().await.is_none(), "closed and empty");
    }
}
