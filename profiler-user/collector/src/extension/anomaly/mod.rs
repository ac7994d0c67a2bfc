//! The edge anomaly loop (issue #16): sense → analyse → decide → act, in the agent.
//!
//! Started: the [`detect`] detector (EWMA, Z-score, warm-up, floor, ceiling, k-of-n), the
//! [`limit`] caps (cooldown, per-target and node-wide windows), each tested on synthetic
//! series, and the node CPU signal ([`cpu`], `/proc/stat`). Not yet: the `extensions: anomaly:`
//! config, the other signals (the profiler's per-target shares, OTLP gauges selected by OTTL),
//! the actions (`burst` through the profiling receiver's live reconfiguration, `event` log
//! records) and the end-to-end test.

pub mod cpu;
pub mod detect;
pub mod limit;
