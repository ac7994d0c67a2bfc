//! The `batch` processor: merges requests into batches so exporters send fewer, larger
//! requests (better compression, fewer connections).
//!
//! ```yaml
//! processors:
//!   batch:
//!     send_batch_size: 8192      # items that trigger a send (spans, metric points, log records)
//!     timeout: 200ms             # the longest an item waits; 0 sends every request at once
//!     send_batch_max_size: 0     # the most items in one send (0: no limit; else >= send_batch_size)
//! ```
//!
//! A batch is handed on as soon as it holds `send_batch_size` items, cut into sends of at most
//! `send_batch_max_size` items (cut inside resource, scope and metric lists, each item keeping
//! its resource and scope), or `timeout` after its first item arrived, by a timer task of its
//! own. `consume` only takes a short lock: appending moves the request's resource entries, and
//! handing a batch on is an enqueue in the exporters.
//!
//! **When the next component refuses a batch** (every exporter queue is full), the batch is
//! dropped and counted (`otelcol_processor_dropped_{items}`, logged at warn with growing gaps),
//! as the Collector's batch processor does. Data that was taken was acknowledged: its sender
//! cannot retry it any more, and the batch mixes several senders' data, so handing the refusal
//! to whichever sender happened to fill the batch would make it retry data that is partly
//! still pending (duplicates) while the others' data is lost anyway. Keeping refused batches
//! for another try would need a copy of every batch before every send. Instead, after a
//! refusal the processor itself refuses new data (retryable, with `Retry-After`) for the
//! refusal's `retry_after` (else `timeout`, at least 200 ms), so receivers push back on their
//! senders rather than feed a pipeline that can only drop. A rejection (the data is malformed)
//! drops that batch without the pause.
//!
//! **Profiles pass through unbatched**: a profiles request carries a `dictionary` its samples
//! index into, so two requests cannot be concatenated without re-indexing all of it; they are
//! handed on as they come (the profiler's reporter already sends one request per interval).
//!
//! Not supported: `metadata_keys` (client metadata does not travel with the data; setting it is
//! a config error). `metadata_cardinality_limit` is accepted and has no effect without it.
//! Requests without any item are dropped: there is nothing to send.
//!
//! Own metrics, labelled `processor`: `otelcol_processor_batch_batch_size_trigger_send`,
//! `otelcol_processor_batch_timeout_trigger_send`, and the send-size histogram's `_sum` and
//! `_count` series as `otelcol_processor_batch_batch_send_size_{sum,count}` (no buckets), so
//! `rate(…_sum) / rate(…_count)` gives the mean batch size as with the Collector.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, Weak,
    },
    time::Duration,
};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::{sync::Notify, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use super::pdata::{append, split_front};
use crate::{
    component::{BuildProcessor, ComponentError, ComponentId, Host, Processor, ProcessorFactory},
    config::{deserialize_at, ConfigError},
    consumer::{ConsumeError, Consumer},
    health::Liveness,
    signal::{Data, Signal},
    telemetry::{add, ProcessorMetrics, Value},
};

const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_send_batch_size")]
    send_batch_size: u32,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    timeout: Duration,
    #[serde(default)]
    send_batch_max_size: u32,
    #[serde(default)]
    metadata_keys: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    metadata_cardinality_limit: u32,
}

fn default_send_batch_size() -> u32 {
    8192
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

/// The checked settings.
#[derive(Clone, Copy, Debug)]
struct Settings {
    size: u64,
    /// 0: no limit.
    max: u64,
    timeout: Duration,
}

impl Settings {
    /// Items in one send when `items` are pending.
    fn chunk(&self, items: u64) -> u64 {
        if self.max == 0 {
            items
        } else {
            items.min(self.max)
        }
    }

    /// How long new data is refused after the next component refused a batch, when it did not
    /// say.
    fn pause(&self) -> Duration {
        self.timeout.max(DEFAULT_TIMEOUT)
    }
}

pub struct BatchFactory;

impl ProcessorFactory for BatchFactory {
    fn kind(&self) -> &'static str {
        "batch"
    }

    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn create(
        &self,
        id: &ComponentId,
        config: serde_yaml::Value,
        path: &str,
    ) -> Result<Box<dyn BuildProcessor>, ConfigError> {
        let c: Config = deserialize_at(path, config)?;
        if !c.metadata_keys.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.metadata_keys"),
                "not supported: client metadata does not travel with the data in otelprof; remove it",
            ));
        }
        if c.send_batch_max_size != 0 && c.send_batch_max_size < c.send_batch_size {
            return Err(ConfigError::new(
                format!("{path}.send_batch_max_size"),
                format!(
                    "{} is less than send_batch_size ({}): it must be 0 (no limit) or at least send_batch_size",
                    c.send_batch_max_size, c.send_batch_size
                ),
            ));
        }
        let settings =
            Settings { size: c.send_batch_size.into(), max: c.send_batch_max_size.into(), timeout: c.timeout };
        Ok(Box::new(Build { id: id.to_string(), settings }))
    }
}

struct Build {
    id: String,
    settings: Settings,
}

impl BuildProcessor for Build {
    fn build(
        &self,
        signal: Signal,
        next: Arc<dyn Consumer>,
        host: &Host,
    ) -> Result<Arc<dyn Processor>, ComponentError> {
        Ok(BatchProcessor::start(&self.id, self.settings, signal, next, host)?)
    }
}

/// Own metrics of one batch processor in one pipeline.
struct Metrics {
    generic: ProcessorMetrics,
    size_trigger: Value,
    timeout_trigger: Value,
    send_size_sum: Value,
    send_size_count: Value,
    dropped: Value,
    /// Refused or rejected sends, for logging with growing gaps.
    drops: AtomicU64,
}

impl Metrics {
    fn new(host: &Host, id: &str, signal: Signal) -> Self {
        let t = &host.telemetry;
        let l = [("processor", id)];
        Metrics {
            generic: t.processor(id, signal),
            size_trigger: t.counter(
                "otelcol_processor_batch_batch_size_trigger_send",
                "Number of times the batch was sent due to a size trigger.",
                &l,
            ),
            timeout_trigger: t.counter(
                "otelcol_processor_batch_timeout_trigger_send",
                "Number of times the batch was sent due to a timeout trigger.",
                &l,
            ),
            send_size_sum: t.gauge(
                "otelcol_processor_batch_batch_send_size_sum",
                "Items in all batches sent (the _sum of the Collector's send-size histogram).",
                &l,
            ),
            send_size_count: t.gauge(
                "otelcol_processor_batch_batch_send_size_count",
                "Batches sent (the _count of the Collector's send-size histogram).",
                &l,
            ),
            dropped: t.counter(
                &format!("otelcol_processor_dropped_{}", signal.items()),
                "Items dropped by the processor because the next component refused them.",
                &l,
            ),
            drops: AtomicU64::new(0),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Trigger {
    Size,
    Timeout,
    Shutdown,
}

/// What is pending in one pipeline.
#[derive(Default)]
struct State {
    pending: Option<Data>,
    items: u64,
    /// When the pending items must be sent.
    deadline: Option<Instant>,
    /// New data is refused until then: the next component refused a batch.
    paused_until: Option<Instant>,
}

/// The batching of one pipeline, shared with its timer task.
struct Batcher {
    id: String,
    settings: Settings,
    next: Arc<dyn Consumer>,
    metrics: Metrics,
    state: Mutex<State>,
    /// Wakes the timer task when a new deadline was set.
    wake: Arc<Notify>,
}

impl Batcher {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn consume(&self, data: Data) -> Result<(), ConsumeError> {
        let n = data.items();
        add(&self.metrics.generic.incoming, n);
        if let Data::Profiles(_) = data {
            self.next.consume(data)?;
            add(&self.metrics.generic.outgoing, n);
            return Ok(());
        }
        if n == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut st = self.lock();
        if let Some(until) = st.paused_until {
            if now < until {
                return Err(ConsumeError::Refused {
                    reason: format!("{}: the next component refuses data; paused", self.id),
                    retry_after: Some(until - now),
                });
            }
            st.paused_until = None;
        }
        let was_empty = st.pending.is_none();
        match st.pending.as_mut() {
            None => st.pending = Some(data),
            Some(p) => {
                if let Err(e) = append(p, data) {
                    return Err(ConsumeError::Rejected(format!("{}: {e}", self.id)));
                }
            }
        }
        st.items += n;
        if was_empty {
            st.deadline = Some(now + self.settings.timeout);
        }
        if self.settings.timeout.is_zero() || self.settings.size == 0 {
            self.send_all(&mut st, Trigger::Size, now);
        } else {
            let mut sent = false;
            while st.items > 0 && st.items >= self.settings.size {
                let chunk = self.settings.chunk(st.items);
                self.send(&mut st, chunk, Trigger::Size, now);
                sent = true;
            }
            // What is left came with this request (every send takes more than was pending).
            if sent && st.items > 0 {
                st.deadline = Some(now + self.settings.timeout);
            }
        }
        if st.pending.is_some() && was_empty {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Sends everything pending, in sends of at most `send_batch_max_size`.
    fn send_all(&self, st: &mut State, trigger: Trigger, now: Instant) {
        while st.items > 0 {
            let chunk = self.settings.chunk(st.items);
            self.send(st, chunk, trigger, now);
        }
    }

    /// Sends the first `n` pending items.
    fn send(&self, st: &mut State, n: u64, trigger: Trigger, now: Instant) {
        let batch = if n >= st.items {
            st.items = 0;
            st.deadline = None;
            st.pending.take()
        } else {
            st.items -= n;
            st.pending.as_mut().and_then(|p| split_front(p, n))
        };
        let Some(batch) = batch else { return };
        match trigger {
            Trigger::Size => add(&self.metrics.size_trigger, 1),
            Trigger::Timeout => add(&self.metrics.timeout_trigger, 1),
            Trigger::Shutdown => {}
        }
        add(&self.metrics.send_size_sum, n);
        add(&self.metrics.send_size_count, 1);
        match self.next.consume(batch) {
            Ok(()) => add(&self.metrics.generic.outgoing, n),
            Err(e) => {
                add(&self.metrics.dropped, n);
                if let ConsumeError::Refused { retry_after, .. } = &e {
                    st.paused_until = Some(now + retry_after.unwrap_or(self.settings.pause()));
                }
                let k = self.metrics.drops.fetch_add(1, Ordering::Relaxed) + 1;
                if k.is_power_of_two() {
                    tracing::warn!(processor = %self.id, items = n, drops = k, "dropped a batch: {e}");
                }
            }
        }
    }

    /// The timer's turn: sends what is due.
    fn flush_due(&self, now: Instant) {
        let mut st = self.lock();
        if st.deadline.is_some_and(|d| d <= now) {
            self.send_all(&mut st, Trigger::Timeout, now);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.lock().deadline
    }
}

/// The timer task: sends the pending batch at its deadline. It ends when stopped (at shutdown,
/// or when the processor is dropped).
async fn run_timer(batcher: Weak<Batcher>, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        let Some(deadline) = batcher.upgrade().map(|b| b.deadline()) else { return };
        let due = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.notified() => {}
            _ = due => {
                if let Some(b) = batcher.upgrade() {
                    b.flush_due(Instant::now());
                }
            }
        }
    }
}

/// The batch processor of one pipeline.
pub struct BatchProcessor {
    batcher: Arc<Batcher>,
    timer: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
}

impl BatchProcessor {
    fn start(
        id: &str,
        settings: Settings,
        signal: Signal,
        next: Arc<dyn Consumer>,
        host: &Host,
    ) -> Result<Arc<Self>, ComponentError> {
        let batcher = Arc::new(Batcher {
            id: id.to_string(),
            settings,
            next,
            metrics: Metrics::new(host, id, signal),
            state: Mutex::new(State::default()),
            wake: Arc::new(Notify::new()),
        });
        let mut timer = None;
        // With no timeout nothing ever waits: no timer.
        if !settings.timeout.is_zero() && settings.size != 0 {
            let runtime = tokio::runtime::Handle::try_current()
                .map_err(|_| ComponentError::new(id, "the batch processor must be built inside the tokio runtime"))?;
            let stop = CancellationToken::new();
            let health = host.health.register(format!("processor/{id}/{signal}"), Liveness::Running);
            let task = runtime.spawn(health.watch_task(run_timer(
                Arc::downgrade(&batcher),
                batcher.wake.clone(),
                stop.clone(),
            )));
            timer = Some((stop, task));
        }
        Ok(Arc::new(BatchProcessor { batcher, timer: Mutex::new(timer) }))
    }
}

impl Drop for BatchProcessor {
    fn drop(&mut self) {
        if let Some((stop, _)) = self.timer.get_mut().unwrap_or_else(|e| e.into_inner()).as_ref() {
            stop.cancel();
        }
    }
}

impl Consumer for BatchProcessor {
    fn consume(&self, data: Data) -> Result<(), ConsumeError> {
        self.batcher.consume(data)
    }
}

#[async_trait]
impl Processor for BatchProcessor {
    /// Stops the timer and sends what is pending; what the next component refuses now is
    /// dropped and counted.
    async fn shutdown(&self) {
        let timer = self.timer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((stop, task)) = timer {
            stop.cancel();
            let _ = task.await;
        }
        let b = &self.batcher;
        let mut st = b.lock();
        st.paused_until = None;
        b.send_all(&mut st, Trigger::Shutdown, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;

    use super::*;
    use crate::{
        consumer::testing::Sink,
        processor::pdata::testing::{log_paths, logs, span_paths, traces},
    };

    fn build(yaml: &str, signal: Signal, sink: &Arc<Sink>, host: &Host) -> Arc<dyn Processor> {
        let id = ComponentId::parse("batch").unwrap();
        let b = BatchFactory.create(&id, serde_yaml::from_str(yaml).unwrap(), "processors.batch").unwrap();
        b.build(signal, sink.clone(), host).unwrap()
    }

    fn sent(sink: &Sink) -> Vec<u64> {
        sink.got.lock().unwrap().iter().map(Data::items).collect()
    }

    fn metric(host: &Host, series: &str) -> u64 {
        let mut out = String::new();
        host.telemetry.render(&mut out);
        out.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{series} not in\n{out}"))
    }

    #[tokio::test(start_paused = true)]
    async fn sends_at_the_size_trigger_in_sends_no_larger_than_the_max_keeping_every_span() {
        let host = Host::new(Duration::from_secs(1));
        let sink = Arc::new(Sink::default());
        let p = build("{send_batch_size: 10, send_batch_max_size: 12, timeout: 1h}", Signal::Traces, &sink, &host);
        let a = traces(0, &[&[3, 2], &[1]]);
        let b = traces(6, &[&[5], &[4, 0, 8]]);
        let c = traces(23, &[&[3]]);
        let mut expected = span_paths(&a);
        expected.extend(span_paths(&b));
        expected.extend(span_paths(&c));
        p.consume(a).unwrap();
        assert!(sent(&sink).is_empty(), "6 < 10 waits");
        p.consume(b).unwrap();
        // 23 pending: 12 (the max), then 11 left, still >= 10: all 11.
        assert_eq!(sent(&sink), [12, 11]);
        p.consume(c).unwrap();
        assert_eq!(sent(&sink), [12, 11]);
        p.shutdown().await;
        assert_eq!(sent(&sink), [12, 11, 3], "shutdown sends what is pending");
        let got: Vec<_> = sink.got.lock().unwrap().iter().flat_map(span_paths).collect();
        assert_eq!(got, expected, "every span once, in order, under its own resource and scope");
        assert_eq!(metric(&host, "otelcol_processor_batch_batch_size_trigger_send_total"), 2);
        assert_eq!(metric(&host, "otelcol_processor_batch_batch_send_size_sum"), 26);
        assert_eq!(metric(&host, "otelcol_processor_batch_batch_send_size_count"), 3);
        assert_eq!(metric(&host, "otelcol_processor_outgoing_items_total"), 26);
    }

    #[tokio::test(start_paused = true)]
    async fn sends_what_waits_once_the_timeout_after_its_first_item_passed() {
        let host = Host::new(Duration::from_secs(1));
        let sink = Arc::new(Sink::default());
        let p = build("{send_batch_size: 100, timeout: 200ms}", Signal::Logs, &sink, &host);
        p.consume(logs(0, &[&[2]])).unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        p.consume(logs(2, &[&[1]])).unwrap();
        tokio::time::sleep(Duration::from_millis(49)).await;
        assert!(sent(&sink).is_empty(), "199 ms after the first item");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(sent(&sink), [3], "at 200 ms, both requests in one batch");
        assert_eq!(metric(&host, "otelcol_processor_batch_timeout_trigger_send_total"), 1);
        // A new first item starts a new wait.
        p.consume(logs(3, &[&[1]])).unwrap();
        tokio::time::sleep(Duration::from_millis(199)).await;
        assert_eq!(sent(&sink), [3]);
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(sent(&sink), [3, 1]);
        let bodies: Vec<String> = sink.got.lock().unwrap().iter().flat_map(log_paths).map(|p| p.2).collect();
        assert_eq!(bodies, ["r0/s0/0", "r0/s0/1", "r0/s0/2", "r0/s0/3"]);
        host.health.shutting_down();
        p.shutdown().await;
        assert_eq!(host.health.check(), Ok(()), "the timer task ended as asked");
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_timeout_sends_every_request_at_once_split_by_the_max() {
        let host = Host::new(Duration::from_secs(1));
        let sink = Arc::new(Sink::default());
        let p = build("{timeout: 0s, send_batch_size: 4, send_batch_max_size: 4}", Signal::Traces, &sink, &host);
        p.consume(traces(0, &[&[3], &[3]])).unwrap();
        assert_eq!(sent(&sink), [4, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_batch_is_dropped_and_counted_and_new_data_is_refused_for_a_while() {
        let host = Host::new(Duration::from_secs(1));
        let sink = Arc::new(Sink::default());
        let p = build("{send_batch_size: 2, timeout: 1s}", Signal::Traces, &sink, &host);
        sink.refuse.store(true, Ordering::Relaxed);
        p.consume(traces(0, &[&[3]])).unwrap();
        assert_eq!(metric(&host, "otelcol_processor_dropped_spans_total"), 3);
        let e = p.consume(traces(3, &[&[1]])).unwrap_err();
        let ConsumeError::Refused { retry_after, .. } = e else { panic!("{e:?}") };
        assert_eq!(retry_after, Some(Duration::from_secs(1)), "paused for the timeout");
        sink.refuse.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        p.consume(traces(3, &[&[2]])).unwrap();
        assert_eq!(sent(&sink), [2]);
    }

    #[tokio::test(start_paused = true)]
    async fn profiles_pass_through_unbatched() {
        let host = Host::new(Duration::from_secs(1));
        let sink = Arc::new(Sink::default());
        let p = build("", Signal::Profiles, &sink, &host);
        let d = Data::Profiles(ExportProfilesServiceRequest::default());
        p.consume(d.clone()).unwrap();
        p.consume(d.clone()).unwrap();
        assert_eq!(sink.got.lock().unwrap().len(), 2);
        sink.refuse.store(true, Ordering::Relaxed);
        assert!(p.consume(d).unwrap_err().is_retryable(), "a refusal goes back to the sender");
    }

    #[test]
    fn config_defaults_and_errors() {
        let id = ComponentId::parse("batch").unwrap();
        let c = |y: &str| BatchFactory.create(&id, serde_yaml::from_str(y).unwrap(), "processors.batch");
        let d: Config = deserialize_at("p", serde_yaml::Value::Null).unwrap();
        assert_eq!((d.send_batch_size, d.timeout, d.send_batch_max_size), (8192, Duration::from_millis(200), 0));
        assert!(c("{send_batch_size: 100, send_batch_max_size: 100}").is_ok());
        let e = c("{send_batch_size: 100, send_batch_max_size: 99}").err().unwrap();
        assert_eq!(e.path, "processors.batch.send_batch_max_size");
        let e = c("{send_batch_max_size: 10}").err().unwrap();
        assert!(e.message.contains("8192"), "{e}");
        assert_eq!(c("{metadata_keys: [tenant]}").err().unwrap().path, "processors.batch.metadata_keys");
        assert_eq!(c("{timeout: fast}").err().unwrap().path, "processors.batch.timeout");
        assert!(c("{size: 1}").err().unwrap().message.contains("unknown field"));
    }
}
