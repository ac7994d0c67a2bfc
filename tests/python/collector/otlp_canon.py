"""Shared by sdk_send.py, sink.py and compare.py: the OTLP signal table, the OTLP/JSON mapping and
the canonical, comparable form of traces, metrics and logs.

Everything here works on opentelemetry-proto messages (the independent decoder); nothing depends
on the OpenTelemetry SDK.
"""
import base64
import json

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


class Signal:
    def __init__(self, name, request, response, http_path, grpc_service):
        self.name = name
        self.request = request
        self.response = response
        self.http_path = http_path
        self.grpc_service = grpc_service


SIGNALS = {
    s.name: s
    for s in (
        Signal("traces", trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse,
               "/v1/traces", "opentelemetry.proto.collector.trace.v1.TraceService"),
        Signal("metrics", metrics_service_pb2.ExportMetricsServiceRequest,
               metrics_service_pb2.ExportMetricsServiceResponse, "/v1/metrics",
               "opentelemetry.proto.collector.metrics.v1.MetricsService"),
        Signal("logs", logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse,
               "/v1/logs", "opentelemetry.proto.collector.logs.v1.LogsService"),
        Signal("profiles", profiles_service_pb2.ExportProfilesServiceRequest,
               profiles_service_pb2.ExportProfilesServiceResponse, "/v1development/profiles",
               "opentelemetry.proto.collector.profiles.v1development.ProfilesService"),
    )
}
# The signals that compare.py and sdk_send.py handle (profiles are only stored by the sink).
COMPARABLE = ("traces", "metrics", "logs")


def parse_signals(text, allowed=COMPARABLE):
    out = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in out if s not in allowed]
    if bad or not out:
        raise ValueError(f"bad --signals {text!r}: choose from {','.join(allowed)}")
    return out


# ---------------------------------------------------------------- OTLP/JSON
# OTLP/JSON is the proto3 JSON mapping with three differences (OTLP spec, "JSON Protobuf Encoding"):
# lowerCamelCase keys only, enums as integers only, and traceId/spanId (parentSpanId too) as
# hex strings instead of base64. 64-bit integers may be strings (json_format writes them so).
_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _walk_ids(obj, conv):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in _ID_KEYS and isinstance(v, str):
                obj[k] = conv(v)
            else:
                _walk_ids(v, conv)
    elif isinstance(obj, list):
        for v in obj:
            _walk_ids(v, conv)


def to_otlp_json(msg):
    """Serialises a request message as OTLP/JSON bytes."""
    d = json_format.MessageToDict(msg, use_integers_for_enums=True, preserving_proto_field_name=False)
    _walk_ids(d, lambda s: base64.b64decode(s).hex())
    return json.dumps(d, separators=(",", ":")).encode()


def from_otlp_json(data, cls):
    """Parses OTLP/JSON bytes into a message of class cls (hex ids, camelCase or snake_case keys)."""
    d = json.loads(data)
    _walk_ids(d, lambda s: base64.b64encode(bytes.fromhex(s)).decode())
    msg = cls()
    json_format.ParseDict(d, msg)
    return msg


# ---------------------------------------------------------------- canonical form
def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return {"string": v.string_value}
    if kind == "bool_value":
        return {"bool": v.bool_value}
    if kind == "int_value":
        return {"int": int(v.int_value)}
    if kind == "double_value":
        return {"double": v.double_value}
    if kind == "bytes_value":
        return {"bytes": v.bytes_value.hex()}
    if kind == "array_value":
        return {"array": [any_value(x) for x in v.array_value.values]}
    if kind == "kvlist_value":
        return {"kvlist": attributes(v.kvlist_value.values)}
    raise ValueError(f"unknown AnyValue kind {kind}")


def attributes(kvs):
    out = {}
    for kv in kvs:
        if kv.key in out:
            out[kv.key + " (DUPLICATE KEY)"] = any_value(kv.value)
        else:
            out[kv.key] = any_value(kv.value)
    return out


def resource(r, schema_url):
    return {"attributes": attributes(r.attributes), "dropped_attributes_count": r.dropped_attributes_count,
            "schema_url": schema_url}


def scope(s, schema_url):
    return {"name": s.name, "version": s.version, "attributes": attributes(s.attributes),
            "dropped_attributes_count": s.dropped_attributes_count, "schema_url": schema_url}


def _span(s):
    return {
        "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(), "parent_span_id": s.parent_span_id.hex(),
        "trace_state": s.trace_state, "flags": s.flags, "name": s.name, "kind": s.kind,
        "start_time_unix_nano": s.start_time_unix_nano, "end_time_unix_nano": s.end_time_unix_nano,
        "attributes": attributes(s.attributes), "dropped_attributes_count": s.dropped_attributes_count,
        "events": [{"time_unix_nano": e.time_unix_nano, "name": e.name, "attributes": attributes(e.attributes),
                    "dropped_attributes_count": e.dropped_attributes_count} for e in s.events],
        "dropped_events_count": s.dropped_events_count,
        "links": [{"trace_id": l.trace_id.hex(), "span_id": l.span_id.hex(), "trace_state": l.trace_state,
                   "attributes": attributes(l.attributes), "dropped_attributes_count": l.dropped_attributes_count,
                   "flags": l.flags} for l in s.links],
        "dropped_links_count": s.dropped_links_count,
        "status": {"code": s.status.code, "message": s.status.message},
    }


def _exemplars(ex):
    out = []
    for e in ex:
        kind = e.WhichOneof("value")
        out.append({"filtered_attributes": attributes(e.filtered_attributes), "time_unix_nano": e.time_unix_nano,
                    "value": None if kind is None else {kind[3:]: getattr(e, kind)},
                    "span_id": e.span_id.hex(), "trace_id": e.trace_id.hex()})
    return out


def _opt(msg, field):
    return getattr(msg, field) if msg.HasField(field) else None


def _point(kind, p):
    d = {"attributes": attributes(p.attributes), "start_time_unix_nano": p.start_time_unix_nano,
         "time_unix_nano": p.time_unix_nano, "flags": p.flags}
    if kind in ("gauge", "sum"):
        v = p.WhichOneof("value")
        d["value"] = None if v is None else {v[3:]: getattr(p, v)}  # as_int / as_double
        d["exemplars"] = _exemplars(p.exemplars)
    elif kind == "histogram":
        d.update(count=p.count, sum=_opt(p, "sum"), bucket_counts=list(p.bucket_counts),
                 explicit_bounds=list(p.explicit_bounds), min=_opt(p, "min"), max=_opt(p, "max"),
                 exemplars=_exemplars(p.exemplars))
    elif kind == "exponential_histogram":
        d.update(count=p.count, sum=_opt(p, "sum"), scale=p.scale, zero_count=p.zero_count,
                 positive={"offset": p.positive.offset, "bucket_counts": list(p.positive.bucket_counts)},
                 negative={"offset": p.negative.offset, "bucket_counts": list(p.negative.bucket_counts)},
                 min=_opt(p, "min"), max=_opt(p, "max"), zero_threshold=p.zero_threshold,
                 exemplars=_exemplars(p.exemplars))
    elif kind == "summary":
        d.update(count=p.count, sum=p.sum,
                 quantile_values=[{"quantile": q.quantile, "value": q.value} for q in p.quantile_values])
    return d


def _metric(m):
    kind = m.WhichOneof("data")
    meta = {"name": m.name, "description": m.description, "unit": m.unit, "type": kind,
            "metadata": attributes(m.metadata)}
    data = getattr(m, kind) if kind else None
    if kind in ("sum", "histogram", "exponential_histogram"):
        meta["aggregation_temporality"] = data.aggregation_temporality
    if kind == "sum":
        meta["is_monotonic"] = data.is_monotonic
    points = [_point(kind, p) for p in data.data_points] if data is not None else []
    return meta, points


def _log(r):
    return {"time_unix_nano": r.time_unix_nano, "observed_time_unix_nano": r.observed_time_unix_nano,
            "severity_number": r.severity_number, "severity_text": r.severity_text,
            "body": any_value(r.body) if r.HasField("body") else None, "attributes": attributes(r.attributes),
            "dropped_attributes_count": r.dropped_attributes_count, "flags": r.flags,
            "trace_id": r.trace_id.hex(), "span_id": r.span_id.hex(), "event_name": r.event_name}


def _dumps(x):
    return json.dumps(x, sort_keys=True, separators=(",", ":"))


def canonical_items(signal, req):
    """Returns the items (spans, metric data points, log records) of one request as dicts:
    {"key": str (pairs a sent item with a received one), "resource": {...}, "scope": {...}, "item": {...}}.
    Items of the same key are told apart by their content."""
    out = []
    if signal == "traces":
        for rs in req.resource_spans:
            res = resource(rs.resource, rs.schema_url)
            for ss in rs.scope_spans:
                sc = scope(ss.scope, ss.schema_url)
                for s in ss.spans:
                    it = _span(s)
                    out.append({"key": f"span {it['trace_id']}/{it['span_id']} {it['name']}", "resource": res,
                                "scope": sc, "item": it})
    elif signal == "metrics":
        for rm in req.resource_metrics:
            res = resource(rm.resource, rm.schema_url)
            for sm in rm.scope_metrics:
                sc = scope(sm.scope, sm.schema_url)
                for m in sm.metrics:
                    meta, points = _metric(m)
                    if not points:
                        out.append({"key": f"metric {m.name} (no data points)", "resource": res, "scope": sc,
                                    "item": {"metric": meta, "point": None}})
                    for p in points:
                        out.append({"key": f"metric {m.name} {_dumps(p['attributes'])}", "resource": res,
                                    "scope": sc, "item": {"metric": meta, "point": p}})
    elif signal == "logs":
        for rl in req.resource_logs:
            res = resource(rl.resource, rl.schema_url)
            for sl in rl.scope_logs:
                sc = scope(sl.scope, sl.schema_url)
                for r in sl.log_records:
                    it = _log(r)
                    out.append({"key": f"log t={it['time_unix_nano']} sev={it['severity_number']} "
                                       f"body={_dumps(it['body'])[:60]}", "resource": res, "scope": sc, "item": it})
    else:
        raise ValueError(f"signal {signal} has no canonical form")
    return out


def item_body(x):
    """What must be equal between a sent and a received item (the resource is compared apart)."""
    return _dumps({"scope": x["scope"], "item": x["item"]})


def diff(a, b, path=""):
    """Lines describing how b differs from a."""
    if isinstance(a, dict) and isinstance(b, dict):
        if len(a) == 1 and len(b) == 1 and (set(a) != set(b) or not isinstance(next(iter(a.values())), (dict, list))):
            # an AnyValue (or any one-key value) that changed: show it whole
            return [f"  {path}: sent {_dumps(a)}, received {_dumps(b)}"] if _dumps(a) != _dumps(b) else []
        out = []
        for k in sorted(set(a) | set(b)):
            p = f"{path}.{k}" if path else k
            if k not in b:
                out.append(f"  {p}: missing (sent {_dumps(a[k])})")
            elif k not in a:
                out.append(f"  {p}: unexpected {_dumps(b[k])}")
            else:
                out.extend(diff(a[k], b[k], p))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out.extend(diff(x, y, f"{path}[{i}]"))
        return out
    if a != b or type(a) is not type(b):
        return [f"  {path}: sent {_dumps(a)}, received {_dumps(b)}"]
    return []
