//! The edge anomaly loop (issue #16): sense → analyse → decide → act, in the agent.
//!
//! Started: the [`detect`] detector (EWMA, Z-score, warm-up, floor, ceiling, k-of-n) and the
//! [`limit`] caps (cooldown, per-target and node-wide windows), each tested on synthetic
//! series. Not yet: the `extensions: anomaly:` config, the signals (`/proc/stat`, the
//! profiler's per-target shares, OTLP gauges selected by OTTL), the actions (`burst` through
//! the profiling receiver's live reconfiguration, `event` log records) and the end-to-end test.

pub mod detect;
pub mod limit;
