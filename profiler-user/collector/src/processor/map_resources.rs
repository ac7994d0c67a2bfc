//! The shape of processors that only change resources (`resource`, `resourcedetection`): apply
//! a function to every resource of every request, of any signal, and pass the request on.

use std::sync::Arc;

use async_trait::async_trait;
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::pdata::for_each_resource;
use crate::{
    component::Processor,
    consumer::{ConsumeError, Consumer},
    signal::Data,
    telemetry::{add, ProcessorMetrics},
};

/// What is done to each resource.
pub type ResourceFn = Arc<dyn Fn(&mut Resource) + Send + Sync>;

/// A processor that applies a [`ResourceFn`] and hands the request to `next`; a refusal from
/// `next` goes back to the caller unchanged.
pub struct MapResources {
    next: Arc<dyn Consumer>,
    metrics: ProcessorMetrics,
    f: ResourceFn,
}

impl MapResources {
    pub fn new(next: Arc<dyn Consumer>, metrics: ProcessorMetrics, f: ResourceFn) -> Self {
        Self { next, metrics, f }
    }
}

impl Consumer for MapResources {
    fn consume(&self, mut data: Data) -> Result<(), ConsumeError> {
        let items = data.items();
        add(&self.metrics.incoming, items);
        for_each_resource(&mut data, |r| (self.f)(r));
        self.next.consume(data)?;
        add(&self.metrics.outgoing, items);
        Ok(())
    }
}

#[async_trait]
impl Processor for MapResources {}
