//! Walking a request's records through their OTTL contexts.
//!
//! Each context struct owns its record and the records above it, so a walk moves them in
//! (`mem::take`), calls the visitor, and moves them back: the resource once per resource
//! entry, the scope once per scope, the item once per item. A visitor that returns `false`
//! drops the record. The per-record `cache` is emptied before each record, as upstream gives
//! every record a fresh one. On an error the walk stops at once: the request is refused whole,
//! so what was moved out is not put back.
//!
//! Metrics the statements make (`copy_metric`, `extract_*`, …) wait in the context's
//! `new_metrics` and are appended to the scope's metric list when the walk leaves the scope, so
//! the group that made them does not visit them (later groups do).
//!
//! A `None` resource or scope is given to the context as an empty one and stays `None` when
//! nothing was written to it. Profiles: the request's dictionary is moved into the
//! [`ProfileContext`] for the whole walk (writes append to it) and back at the end.

use std::mem::take;

use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::ExportMetricsServiceRequest, profiles::v1development::ExportProfilesServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::InstrumentationScope,
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{metric::Data as MetricData, Metric, ResourceMetrics, ScopeMetrics},
    profiles::v1development::{Profile, ResourceProfiles, ScopeProfiles},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use otelprof_ottl::{
    context::{
        DataPoint, DataPointContext, LogContext, MetricContext, ProfileContext, ResourceContext, ScopeContext,
        SpanContext, SpanEventContext,
    },
    Map, RunError,
};

use crate::signal::Data;

/// The visitor: `Ok(false)` drops the record.
pub type Visit<'a, C> = &'a mut dyn FnMut(&mut C) -> Result<bool, RunError>;

/// A resource entry (`ResourceSpans`, …).
pub trait Entry {
    type Scope: ScopeEntry;
    fn resource(&mut self) -> &mut Option<Resource>;
    fn scopes(&mut self) -> &mut Vec<Self::Scope>;
}

/// A scope entry (`ScopeSpans`, …).
pub trait ScopeEntry {
    type Item: Default;
    fn scope(&mut self) -> &mut Option<InstrumentationScope>;
    fn items(&mut self) -> &mut Vec<Self::Item>;
}

macro_rules! entry {
    ($r:ty, $scopes:ident, $s:ty, $items:ident, $item:ty) => {
        impl Entry for $r {
            type Scope = $s;
            fn resource(&mut self) -> &mut Option<Resource> {
                &mut self.resource
            }
            fn scopes(&mut self) -> &mut Vec<$s> {
                &mut self.$scopes
            }
        }
        impl ScopeEntry for $s {
            type Item = $item;
            fn scope(&mut self) -> &mut Option<InstrumentationScope> {
                &mut self.scope
            }
            fn items(&mut self) -> &mut Vec<$item> {
                &mut self.$items
            }
        }
    };
}

entry!(ResourceSpans, scope_spans, ScopeSpans, spans, Span);
entry!(ResourceMetrics, scope_metrics, ScopeMetrics, metrics, Metric);
entry!(ResourceLogs, scope_logs, ScopeLogs, log_records, LogRecord);
entry!(ResourceProfiles, scope_profiles, ScopeProfiles, profiles, Profile);

/// A context over the items directly under a scope (or, for span events and data points, over
/// the item that holds them).
trait ItemContext {
    type Item: Default;
    fn parts(&mut self) -> (&mut Resource, &mut InstrumentationScope, &mut Self::Item, &mut Map);
    /// Items the statements made, to append to the scope being left.
    fn new_items(&mut self) -> Vec<Self::Item> {
        Vec::new()
    }
}

macro_rules! item_context {
    ($c:ty, $field:ident, $item:ty) => {
        item_context!($c, $field, $item,);
    };
    ($c:ty, $field:ident, $item:ty, $($more:tt)*) => {
        impl ItemContext for $c {
            type Item = $item;
            fn parts(&mut self) -> (&mut Resource, &mut InstrumentationScope, &mut $item, &mut Map) {
                (&mut self.resource, &mut self.scope, &mut self.$field, &mut self.cache)
            }
            $($more)*
        }
    };
}

/// The metric contexts' `new_metrics`.
macro_rules! new_metrics {
    () => {
        fn new_items(&mut self) -> Vec<Metric> {
            take(&mut self.new_metrics)
        }
    };
}

item_context!(SpanContext, span, Span);
item_context!(SpanEventContext, span, Span);
item_context!(MetricContext, metric, Metric, new_metrics!(););
item_context!(DataPointContext, metric, Metric, new_metrics!(););
item_context!(LogContext, log, LogRecord);
item_context!(ProfileContext, profile, Profile);

/// Keeps the elements `f` keeps; stops at the first error.
fn retain<T>(list: &mut Vec<T>, mut f: impl FnMut(&mut T) -> Result<bool, RunError>) -> Result<(), RunError> {
    let mut err = None;
    list.retain_mut(|x| {
        if err.is_some() {
            return true;
        }
        f(x).unwrap_or_else(|e| {
            err = Some(e);
            true
        })
    });
    err.map_or(Ok(()), Err)
}

/// Puts `v` back into `slot`, leaving a slot that was `None` so when `v` is still empty.
fn restore<T: Default + PartialEq>(slot: &mut Option<T>, v: T, was_some: bool) {
    *slot = if was_some || v != T::default() { Some(v) } else { None };
}

fn resources_in<E: Entry>(list: &mut Vec<E>, f: Visit<ResourceContext>) -> Result<(), RunError> {
    let mut ctx = ResourceContext::default();
    retain(list, |e| {
        let was = e.resource().is_some();
        ctx.resource = e.resource().take().unwrap_or_default();
        ctx.cache.clear();
        let keep = f(&mut ctx)?;
        restore(e.resource(), take(&mut ctx.resource), was);
        Ok(keep)
    })
}

fn scopes_in<E: Entry>(list: &mut [E], f: Visit<ScopeContext>) -> Result<(), RunError> {
    let mut ctx = ScopeContext::default();
    for e in list {
        let was = e.resource().is_some();
        ctx.resource = e.resource().take().unwrap_or_default();
        retain(e.scopes(), |s| {
            let was = s.scope().is_some();
            ctx.scope = s.scope().take().unwrap_or_default();
            ctx.cache.clear();
            let keep = f(&mut ctx)?;
            restore(s.scope(), take(&mut ctx.scope), was);
            Ok(keep)
        })?;
        restore(e.resource(), take(&mut ctx.resource), was);
    }
    Ok(())
}

fn items_in<E, C>(list: &mut [E], ctx: &mut C, f: Visit<C>) -> Result<(), RunError>
where
    E: Entry,
    C: ItemContext<Item = <E::Scope as ScopeEntry>::Item>,
{
    for e in list {
        let was_r = e.resource().is_some();
        *ctx.parts().0 = e.resource().take().unwrap_or_default();
        for s in e.scopes() {
            let was_s = s.scope().is_some();
            *ctx.parts().1 = s.scope().take().unwrap_or_default();
            retain(s.items(), |item| {
                let (_, _, slot, cache) = ctx.parts();
                *slot = take(item);
                cache.clear();
                let keep = f(ctx)?;
                *item = take(ctx.parts().2);
                Ok(keep)
            })?;
            let new = ctx.new_items();
            s.items().extend(new);
            restore(s.scope(), take(ctx.parts().1), was_s);
        }
        restore(e.resource(), take(ctx.parts().0), was_r);
    }
    Ok(())
}

/// Every resource of `data`.
pub fn resources(data: &mut Data, f: Visit<ResourceContext>) -> Result<(), RunError> {
    match data {
        Data::Traces(r) => resources_in(&mut r.resource_spans, f),
        Data::Metrics(r) => resources_in(&mut r.resource_metrics, f),
        Data::Logs(r) => resources_in(&mut r.resource_logs, f),
        Data::Profiles(r) => resources_in(&mut r.resource_profiles, f),
    }
}

/// Every scope of `data`.
pub fn scopes(data: &mut Data, f: Visit<ScopeContext>) -> Result<(), RunError> {
    match data {
        Data::Traces(r) => scopes_in(&mut r.resource_spans, f),
        Data::Metrics(r) => scopes_in(&mut r.resource_metrics, f),
        Data::Logs(r) => scopes_in(&mut r.resource_logs, f),
        Data::Profiles(r) => scopes_in(&mut r.resource_profiles, f),
    }
}

pub fn spans(r: &mut ExportTraceServiceRequest, f: Visit<SpanContext>) -> Result<(), RunError> {
    items_in(&mut r.resource_spans, &mut SpanContext::default(), f)
}

/// Every span event. A span whose events are all dropped stays, as upstream's filter keeps it.
pub fn span_events(r: &mut ExportTraceServiceRequest, f: Visit<SpanEventContext>) -> Result<(), RunError> {
    items_in(&mut r.resource_spans, &mut SpanEventContext::default(), &mut |c| {
        let events = take(&mut c.span.events);
        let mut kept = Vec::with_capacity(events.len());
        for ev in events {
            c.event = ev;
            c.cache.clear();
            let keep = f(c)?;
            let ev = take(&mut c.event);
            if keep {
                kept.push(ev);
            }
        }
        c.span.events = kept;
        Ok(true)
    })
}

pub fn logs(
    r: &mut opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest,
    f: Visit<LogContext>,
) -> Result<(), RunError> {
    items_in(&mut r.resource_logs, &mut LogContext::default(), f)
}

pub fn metrics(r: &mut ExportMetricsServiceRequest, f: Visit<MetricContext>) -> Result<(), RunError> {
    items_in(&mut r.resource_metrics, &mut MetricContext::default(), f)
}

fn points_len(m: &Metric) -> usize {
    match &m.data {
        Some(MetricData::Gauge(x)) => x.data_points.len(),
        Some(MetricData::Sum(x)) => x.data_points.len(),
        Some(MetricData::Histogram(x)) => x.data_points.len(),
        Some(MetricData::ExponentialHistogram(x)) => x.data_points.len(),
        Some(MetricData::Summary(x)) => x.data_points.len(),
        None => 0,
    }
}

fn visit_points<P>(
    c: &mut DataPointContext,
    points: Vec<P>,
    wrap: fn(P) -> DataPoint,
    unwrap: fn(DataPoint) -> Option<P>,
    f: Visit<DataPointContext>,
) -> Result<Vec<P>, RunError> {
    let mut kept = Vec::with_capacity(points.len());
    for p in points {
        c.datapoint = wrap(p);
        c.cache.clear();
        let keep = f(c)?;
        if let Some(p) = unwrap(take(&mut c.datapoint)) {
            if keep {
                kept.push(p);
            }
        }
    }
    Ok(kept)
}

/// Every data point of every kind. A metric whose points are all dropped is dropped too.
pub fn data_points(r: &mut ExportMetricsServiceRequest, f: Visit<DataPointContext>) -> Result<(), RunError> {
    macro_rules! kind {
        ($c:ident, $metric:ident, $point:ident) => {{
            let Some(MetricData::$metric(x)) = &mut $c.metric.data else { return Ok(true) };
            let points = take(&mut x.data_points);
            let kept = visit_points(
                $c,
                points,
                DataPoint::$point,
                |d| match d {
                    DataPoint::$point(p) => Some(p),
                    _ => None,
                },
                &mut *f,
            )?;
            if let Some(MetricData::$metric(x)) = &mut $c.metric.data {
                x.data_points = kept;
            }
        }};
    }
    items_in(&mut r.resource_metrics, &mut DataPointContext::default(), &mut |c| {
        let had = points_len(&c.metric);
        match c.metric.data {
            Some(MetricData::Gauge(_)) => kind!(c, Gauge, Number),
            Some(MetricData::Sum(_)) => kind!(c, Sum, Number),
            Some(MetricData::Histogram(_)) => kind!(c, Histogram, Histogram),
            Some(MetricData::ExponentialHistogram(_)) => kind!(c, ExponentialHistogram, ExponentialHistogram),
            Some(MetricData::Summary(_)) => kind!(c, Summary, Summary),
            None => {}
        }
        Ok(had == 0 || points_len(&c.metric) > 0)
    })
}

/// Every profile, with the request's dictionary in the context.
pub fn profiles(r: &mut ExportProfilesServiceRequest, f: Visit<ProfileContext>) -> Result<(), RunError> {
    let was = r.dictionary.is_some();
    let mut ctx = ProfileContext { dictionary: r.dictionary.take().unwrap_or_default(), ..Default::default() };
    let res = items_in(&mut r.resource_profiles, &mut ctx, f);
    restore(&mut r.dictionary, take(&mut ctx.dictionary), was);
    res
}

/// Removes scope entries without items, then resource entries without scopes.
pub fn prune<E: Entry>(list: &mut Vec<E>) {
    for e in list.iter_mut() {
        e.scopes().retain_mut(|s| !s.items().is_empty());
    }
    list.retain_mut(|e| !e.scopes().is_empty());
}
