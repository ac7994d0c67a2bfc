//! Liveness of the components that do the agent's work, for `/healthz` and `/readyz`.
//!
//! Every component that works on its own (the sampling loop, the reporting thread, each
//! exporter's sender, and later the embedded collector's receivers, processors and exporters)
//! registers in one [`Health`] registry under a name and reports how it is doing through its
//! [`HealthHandle`]:
//!
//! - a loop that turns regularly registers with [`Liveness::Heartbeat`] and calls
//!   [`HealthHandle::beat`]; it is stalled when it has not beaten within its window;
//! - a thread or task that waits for work registers with [`Liveness::Running`] and runs its body
//!   under [`HealthHandle::watch`] / [`HealthHandle::watch_task`]: a panic, or an end that was
//!   not asked for, marks it failed.
//!
//! The agent is healthy while no component failed or stalled. Why a registry and not one
//! heartbeat: a panic on the reporting thread once left `/healthz` at 200 (the heartbeat came
//! from the sampling loop) while nothing was exported any more. A component's failure is logged
//! once, at `error!`, naming it.
//!
//! ```
//! use otelprof_collector::health::{Health, Liveness};
//!
//! let health = Health::new();
//! let worker = health.register("reporter", Liveness::Running);
//! let joined = std::thread::spawn(move || worker.watch(|| panic!("boom"))).join();
//! assert!(joined.is_err(), "the panic still reaches whoever joins the thread");
//! let problems = health.check().unwrap_err();
//! assert_eq!(problems[0].component, "reporter");
//! assert!(problems[0].reason.contains("boom"));
//! ```

use std::{
    any::Any,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

/// How a component shows it is alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Alive until it fails or ends (a thread or task that may wait long for work).
    Running,
    /// Alive while it calls [`HealthHandle::beat`] at least once per `within` (a loop that
    /// turns on a timer); registering counts as the first beat.
    Heartbeat { within: Duration },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Running,
    /// Ended as asked (shutdown): no longer checked.
    Stopped,
    Failed(String),
}

struct Component {
    name: String,
    liveness: Liveness,
    /// Milliseconds since the registry's start of the last beat.
    last_beat_ms: AtomicU64,
    state: Mutex<State>,
    /// A stall was logged (cleared when it beats again, so a later stall is logged again).
    stall_logged: AtomicBool,
    /// Part of a graph being replaced: its end is expected (see [`Health::retire`]).
    retiring: AtomicBool,
    /// When it registered (Unix ns), for OpAMP's `ComponentHealth.start_time_unix_nano`.
    registered_unix_ns: u64,
}

impl Component {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Registry {
    start: Instant,
    components: Mutex<Vec<Arc<Component>>>,
    /// Set by [`Health::shutting_down`]: components that end now end as asked.
    stopping: AtomicBool,
}

/// A component that is not alive, as [`Health::check`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub component: String,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.component, self.reason)
    }
}

/// The registry of components; cheap to clone (all clones are the same registry).
#[derive(Clone)]
pub struct Health {
    inner: Arc<Registry>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Registry {
                start: Instant::now(),
                components: Mutex::new(Vec::new()),
                stopping: AtomicBool::new(false),
            }),
        }
    }

    fn components(&self) -> MutexGuard<'_, Vec<Arc<Component>>> {
        self.inner.components.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a component; it is alive from now on (a heartbeat component for one window).
    pub fn register(&self, name: impl Into<String>, liveness: Liveness) -> HealthHandle {
        let component = Arc::new(Component {
            name: name.into(),
            liveness,
            last_beat_ms: AtomicU64::new(ms_since(self.inner.start, Instant::now())),
            state: Mutex::new(State::Running),
            stall_logged: AtomicBool::new(false),
            retiring: AtomicBool::new(false),
            registered_unix_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        });
        self.components().push(component.clone());
        HealthHandle { registry: self.inner.clone(), component }
    }

    /// The agent is shutting down: components that end from now on (tasks cancelled at a flush
    /// deadline, threads whose input closed) end as asked, not as failures. Panics still count.
    pub fn shutting_down(&self) {
        self.inner.stopping.store(true, Ordering::Relaxed);
    }

    /// `Ok` while every component is alive, else what is wrong with each that is not. A stall
    /// is logged the first time it is seen.
    pub fn check(&self) -> Result<(), Vec<Problem>> {
        self.check_at(Instant::now())
    }

    /// [`Self::check`] as of `now` (tests move time forward without waiting).
    pub fn check_at(&self, now: Instant) -> Result<(), Vec<Problem>> {
        let now_ms = ms_since(self.inner.start, now);
        let mut problems = Vec::new();
        for c in self.components().iter() {
            match &*c.state() {
                State::Stopped => continue,
                State::Failed(reason) => {
                    problems.push(Problem { component: c.name.clone(), reason: reason.clone() });
                    continue;
                }
                State::Running => {}
            }
            let Liveness::Heartbeat { within } = c.liveness else { continue };
            let silent = Duration::from_millis(now_ms.saturating_sub(c.last_beat_ms.load(Ordering::Relaxed)));
            if silent > within {
                let reason =
                    format!("no heartbeat for {}s (expected every {}s at most)", silent.as_secs(), within.as_secs());
                if !c.stall_logged.swap(true, Ordering::Relaxed) {
                    tracing::error!(component = %c.name, "{} stalled: {reason}; the agent reports unhealthy", c.name);
                }
                problems.push(Problem { component: c.name.clone(), reason });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// The components registered at one moment: a graph's, before the next one is built.
pub struct Generation(Vec<Arc<Component>>);

/// One component's health as OpAMP reports it (`ComponentHealth`).
#[derive(Clone, Debug, PartialEq)]
pub struct ComponentStatus {
    pub name: String,
    pub healthy: bool,
    /// `running`, `stalled` or `failed`.
    pub status: String,
    pub last_error: String,
    pub start_time_unix_nano: u64,
}

impl Health {
    /// The components registered now.
    pub fn generation(&self) -> Generation {
        Generation(self.components().clone())
    }

    /// The components of `generation` are being shut down by a reload: their tasks ending is
    /// expected, not a failure.
    pub fn retire(&self, generation: &Generation) {
        for c in &generation.0 {
            c.retiring.store(true, Ordering::Relaxed);
        }
    }

    /// After a reload: the components of `generation` that ended leave the registry (a failure
    /// of the replaced config no longer makes the agent unhealthy); those still running (kept
    /// receivers) are checked as before.
    pub fn settle(&self, generation: &Generation) {
        let ended: Vec<*const Component> = generation
            .0
            .iter()
            .filter(|c| {
                c.retiring.store(false, Ordering::Relaxed);
                *c.state() != State::Running
            })
            .map(Arc::as_ptr)
            .collect();
        self.components().retain(|c| !ended.contains(&Arc::as_ptr(c)));
    }

    /// Every registered component that is running or failed (stopped ones are left out), for
    /// OpAMP's `ComponentHealth`: the same source as `/healthz`.
    pub fn statuses(&self) -> Vec<ComponentStatus> {
        let problems = self.check().err().unwrap_or_default();
        let components = self.components().clone();
        components
            .iter()
            .filter(|c| *c.state() != State::Stopped)
            .map(|c| {
                let problem = problems.iter().find(|p| p.component == c.name);
                let failed = matches!(&*c.state(), State::Failed(_));
                ComponentStatus {
                    name: c.name.clone(),
                    healthy: problem.is_none(),
                    status: match (problem, failed) {
                        (None, _) => "running",
                        (Some(_), true) => "failed",
                        (Some(_), false) => "stalled",
                    }
                    .to_string(),
                    last_error: problem.map(|p| p.reason.clone()).unwrap_or_default(),
                    start_time_unix_nano: c.registered_unix_ns,
                }
            })
            .collect()
    }
}

fn ms_since(start: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(start).as_millis() as u64
}

/// The text of a panic's payload (`panic!` with a literal or a format string), else a placeholder.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// One component's end of the registry.
#[derive(Clone)]
pub struct HealthHandle {
    registry: Arc<Registry>,
    component: Arc<Component>,
}

impl HealthHandle {
    /// The component's name.
    pub fn name(&self) -> &str {
        &self.component.name
    }

    /// A heartbeat component's sign of life.
    pub fn beat(&self) {
        let now = ms_since(self.registry.start, Instant::now());
        self.component.last_beat_ms.store(now, Ordering::Relaxed);
        if self.component.stall_logged.swap(false, Ordering::Relaxed) {
            tracing::info!(component = %self.component.name, "{} is beating again", self.component.name);
        }
    }

    /// Marks the component failed for good and logs it (once, at `error!`).
    pub fn fail(&self, reason: impl std::fmt::Display) {
        let mut state = self.component.state();
        if matches!(*state, State::Failed(_)) {
            return;
        }
        let reason = reason.to_string();
        tracing::error!(
            component = %self.component.name,
            "{} failed: {reason}; the agent reports unhealthy on /healthz and /readyz",
            self.component.name
        );
        *state = State::Failed(reason);
    }

    /// The component ended as asked; it is no longer checked.
    pub fn stop(&self) {
        let mut state = self.component.state();
        if *state == State::Running {
            *state = State::Stopped;
        }
    }

    /// An end nobody asked for, unless the registry is shutting down, the component's graph
    /// is being replaced, or the component said it [stopped](Self::stop) first.
    fn ended(&self, how: &str) {
        let stopped = *self.component.state() == State::Stopped;
        if stopped || self.registry.stopping.load(Ordering::Relaxed) || self.component.retiring.load(Ordering::Relaxed)
        {
            self.stop();
        } else {
            self.fail(how);
        }
    }

    /// Runs a thread's body: a panic marks the component failed with the panic's message (and
    /// goes on unwinding, so joining the thread still sees it); a return while the registry is
    /// not shutting down is an unexpected end.
    pub fn watch<T>(&self, body: impl FnOnce() -> T) -> T {
        match std::panic::catch_unwind(AssertUnwindSafe(body)) {
            Ok(v) => {
                self.ended("ended unexpectedly");
                v
            }
            Err(payload) => {
                self.fail(format!("panicked: {}", panic_message(&*payload)));
                std::panic::resume_unwind(payload)
            }
        }
    }

    /// [`Self::watch`] for an async task; a task dropped before it finished (cancelled) counts
    /// as an unexpected end unless the registry is shutting down.
    pub async fn watch_task<F: Future>(self, task: F) -> F::Output {
        struct Cancelled(HealthHandle, bool);
        impl Drop for Cancelled {
            fn drop(&mut self) {
                if !self.1 {
                    self.0.ended("cancelled");
                }
            }
        }
        let mut guard = Cancelled(self.clone(), false);
        let out = CatchUnwind(Box::pin(task)).await;
        guard.1 = true;
        match out {
            Ok(v) => {
                self.ended("ended unexpectedly");
                v
            }
            Err(payload) => {
                self.fail(format!("panicked: {}", panic_message(&*payload)));
                std::panic::resume_unwind(payload)
            }
        }
    }
}

/// A future that turns a panic while polling `F` into an `Err` with the panic's payload.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(r: Result<(), Vec<Problem>>) -> Vec<String> {
        r.err().unwrap_or_default().into_iter().map(|p| p.component).collect()
    }

    #[test]
    fn heartbeats_keep_a_loop_alive_and_silence_stalls_it() {
        let h = Health::new();
        let sampling = h.register("sampling", Liveness::Heartbeat { within: Duration::from_secs(30) });
        let now = Instant::now();
        assert_eq!(h.check_at(now), Ok(()), "registering counts as a beat");
        assert_eq!(names(h.check_at(now + Duration::from_secs(31))), ["sampling"]);
        sampling.beat();
        assert_eq!(h.check_at(Instant::now() + Duration::from_secs(29)), Ok(()));
        assert!(h.check_at(Instant::now() + Duration::from_secs(60)).unwrap_err()[0].reason.contains("heartbeat"));
    }

    #[test]
    fn a_panicking_thread_fails_its_component_and_still_reaches_join() {
        let h = Health::new();
        let alive = h.register("sender", Liveness::Running);
        let reporter = h.register("reporter", Liveness::Running);
        let joined = std::thread::spawn(move || reporter.watch(|| panic!("symbolizer bug {}", 7))).join();
        let payload = joined.expect_err("the panic reaches join");
        assert_eq!(panic_message(&*payload), "symbolizer bug 7");
        let problems = h.check().unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].component, "reporter");
        assert_eq!(problems[0].reason, "panicked: symbolizer bug 7");
        assert_eq!(problems[0].to_string(), "reporter: panicked: symbolizer bug 7");
        drop(alive);
        assert_eq!(h.check().unwrap_err().len(), 1, "a handle going away is not a failure");
    }

    #[test]
    fn ends_count_as_failures_unless_shutting_down() {
        let h = Health::new();
        let a = h.register("a", Liveness::Running);
        assert_eq!(a.watch(|| 5), 5);
        assert_eq!(names(h.check()), ["a"], "a worker that returns on its own is gone");
        let h = Health::new();
        let b = h.register("b", Liveness::Running);
        h.shutting_down();
        b.watch(|| ());
        assert_eq!(h.check(), Ok(()), "ending at shutdown is as asked");
        // A failure is permanent and reported once, whatever follows.
        let h = Health::new();
        let c = h.register("c", Liveness::Running);
        c.fail("first");
        c.fail("second");
        c.stop();
        assert_eq!(h.check().unwrap_err()[0].reason, "first");
    }

    #[test]
    fn tasks_are_watched_for_panics_and_cancellation() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let h = Health::new();
            let p = h.register("exporter/otlp", Liveness::Running);
            let joined = tokio::spawn(p.watch_task(async { panic!("queue bug") })).await;
            assert!(joined.unwrap_err().is_panic());
            let c = h.register("exporter/otlphttp", Liveness::Running);
            let task = tokio::spawn(c.watch_task(std::future::pending::<()>()));
            tokio::task::yield_now().await;
            task.abort();
            assert!(task.await.unwrap_err().is_cancelled());
            let problems = h.check().unwrap_err();
            let reasons: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            assert_eq!(reasons, ["exporter/otlp: panicked: queue bug", "exporter/otlphttp: cancelled"]);
            h.shutting_down();
            let s = h.register("exporter/late", Liveness::Running);
            let task = tokio::spawn(s.watch_task(std::future::pending::<()>()));
            tokio::task::yield_now().await;
            task.abort();
            let _ = task.await;
            assert_eq!(h.check().unwrap_err().len(), 2, "cancelled at shutdown: stopped, not failed");
        });
    }
}
