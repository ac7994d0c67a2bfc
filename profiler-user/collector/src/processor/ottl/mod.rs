//! The OTTL processors, `transform` and `filter`, on all four signals (issue #13). The language
//! is the `otelprof-ottl` crate; this folder is what makes it a Collector component:
//!
//! - [`transform`]: statements that change records, in groups run one after the other over
//!   the whole request.
//! - [`filter`]: conditions that drop records; emptied containers are removed.
//! - `group`: which OTTL contexts a signal has ([`Ctx`]), inferring a statement's context from
//!   its paths, compiling one config entry into a `Group` of one context, and running a group
//!   over a request.
//! - `walk`: moving each record of a request into its context struct and back (the contexts
//!   own their records), keeping or dropping it as the visitor says.
//!
//! Everything is compiled when the config is loaded: a statement that does not parse or
//! type-check is a config error naming the key and the place in the statement
//! (`processors.transform.log_statements[2]: 1:17: unknown function "Sha256"`).
//!
//! A statement's context is inferred from its paths and from its functions: the transform
//! processor's metric functions (`convert_sum_to_gauge()`, `copy_metric(…)`, …) place it in the
//! metric context, and the metrics they make are appended to their scope after the walk.
//!
//! Not done yet: `shared_cache`, the filter's old pre-OTTL `include`/`exclude` shape and the
//! filter's metric-only functions (`HasAttrOnDatapoint`, …).

pub mod filter;
pub mod transform;

pub(crate) mod group;
pub(crate) mod walk;

#[cfg(test)]
mod conformance;

pub use group::Ctx;
