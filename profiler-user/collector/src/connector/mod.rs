//! Connectors: components that are an exporter at the end of some pipelines and a receiver at
//! the start of others, as the Collector's connectors are. The graph builds one per
//! (connector id, exporting signal, receiving signal) and hands it the first consumers of the
//! pipelines it feeds ([`crate::component::Routes`]).
//!
//! - [`routing`]: sends each resource (or span, metric, data point, log record, profile) to the
//!   pipelines of the first route of its table whose OTTL condition holds, the rest to
//!   `default_pipelines` (issue #13).
//! - [`anomaly`]: the edge anomaly loop fed by a metrics pipeline (gauges and sums chosen by
//!   OTTL conditions), handing its events to logs pipelines (issue #16).

pub mod anomaly;
pub mod routing;

use crate::component::ConnectorFactory;

/// The connector types implemented in this crate.
pub fn factories() -> Vec<Box<dyn ConnectorFactory>> {
    vec![Box::new(routing::RoutingFactory), Box::new(anomaly::AnomalyConnectorFactory)]
}
