//! Processors, in the Collector's shape and config keys: each type has a factory that checks
//! its config (errors name the key path) and builds one processor per pipeline.
//!
//! - [`batch`]: merges requests into batches by size and time (profiles pass through).
//! - [`memory_limiter`]: refuses data, retryably, while the process uses too much memory.
//! - [`resource`]: attribute actions on every resource (insert, update, upsert, delete, hash,
//!   extract, convert).
//! - [`ottl`]: `transform` and `filter`, OTTL statements and conditions (issue #13).
//! - [`resourcedetection`]: adds what is known about the host and the environment to every
//!   resource (`env`, `system` detectors).
//!
//! Shared pieces: [`pdata`] (visit, append and split OTLP requests), [`attraction`] (attribute
//! actions), [`map_resources`] (a processor that only changes resources).

pub mod attraction;
pub mod batch;
pub mod k8sattributes;
pub mod map_resources;
pub mod memory_limiter;
pub mod ottl;
pub mod pdata;
pub mod resource;
pub mod resourcedetection;

use crate::component::ProcessorFactory;

/// Every processor type this crate has.
pub fn factories() -> Vec<Box<dyn ProcessorFactory>> {
    vec![
        Box::new(batch::BatchFactory),
        Box::new(k8sattributes::K8sAttributesFactory),
        Box::new(memory_limiter::MemoryLimiterFactory),
        Box::new(ottl::transform::TransformFactory),
        Box::new(ottl::filter::FilterFactory),
        Box::new(resource::ResourceFactory),
        Box::new(resourcedetection::ResourceDetectionFactory),
    ]
}
