#!/usr/bin/env python3
"""Sends deterministic telemetry with the real OpenTelemetry Python SDK and OTLP exporters, and
writes a manifest of what was sent.

  sdk_send.py --protocol grpc|http/protobuf|http/json --endpoint URL --signals traces,metrics,logs
              --manifest FILE [--compression none|gzip] [--seed N] [--temporality cumulative|delta]
              [--resource-attr KEY=VALUE ...] [--span-attr KEY=VALUE ...]

--endpoint is the base URL: http://127.0.0.1:4317 for grpc, http://127.0.0.1:4318 for the HTTP
protocols (the signal paths /v1/traces, /v1/metrics, /v1/logs are appended).

Traces: 9 spans in 3 trace trees and 2 instrumentation scopes (every kind, parent/child, attributes
of every AnyValue type, events, links with trace state, OK/ERROR/UNSET status). Metrics: a counter
(sum), an up-down counter, an observable gauge, an explicit-bucket histogram and an exponential
histogram (SDK View with ExponentialBucketHistogramAggregation), with attribute sets and exemplars.
Logs: 6 records through the SDK LoggerProvider with severities, string/map/array/int bodies,
attributes, event names and the trace/span ids of the active span. Providers are flushed and shut
down before exit. Span and trace ids come from --seed; timestamps from --base-time-ns (default:
now, whole seconds). --resource-attr adds a string attribute to the resource of every signal and
--span-attr one to every span (both repeatable, none by default), for tests of processors that
look at them (the OTTL end-to-end test's `env` and `card`).

The SDK's own exporters do the sending (OTLPSpanExporter etc. of opentelemetry-exporter-otlp-proto-
grpc/-http). For http/json, which the Python SDK does not have, the HTTP exporters' protobuf request
is converted to OTLP/JSON (lowerCamelCase, hex ids, integer enums) at the transport and sent with
Content-Type: application/json. The manifest is derived from the requests the exporters encoded and
the endpoint acknowledged (captured at the gRPC stub or HTTP transport), canonicalised by
otlp_canon.py; compare.py checks a sink against it. Exits 1 when any export failed.
"""
import argparse
import gzip
import json
import math
import os
import random
import sys
import threading
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from otlp_canon import COMPARABLE, SIGNALS, canonical_items, parse_signals, to_otlp_json  # noqa: E402

from opentelemetry import trace  # noqa: E402
from opentelemetry._logs import SeverityNumber  # noqa: E402
from opentelemetry.exporter.http.transport._base import BaseHTTPTransport  # noqa: E402
from opentelemetry.exporter.http.transport._requests import RequestsHTTPTransport  # noqa: E402
from opentelemetry.sdk._logs import LoggerProvider  # noqa: E402
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor  # noqa: E402
from opentelemetry.sdk.metrics import (  # noqa: E402
    Counter, Histogram, MeterProvider, ObservableCounter, ObservableGauge, ObservableUpDownCounter, UpDownCounter)
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader  # noqa: E402
from opentelemetry.sdk.metrics.view import (  # noqa: E402
    ExplicitBucketHistogramAggregation, ExponentialBucketHistogramAggregation, View)
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.id_generator import IdGenerator  # noqa: E402
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState  # noqa: E402

PROTOCOLS = ("grpc", "http/protobuf", "http/json")


# ---------------------------------------------------------------- capture
class Recorder:
    """The requests the exporters sent and the endpoint accepted, and the exports that failed."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []  # (signal, serialized protobuf request)
        self.failures = []  # (signal, description)

    def sent(self, signal, data):
        with self.lock:
            self.requests.append((signal, data))

    def failed(self, signal, why):
        with self.lock:
            self.failures.append((signal, why))


class _RecordingStub:
    """Wraps a gRPC exporter's stub: records each request that the endpoint acknowledged."""

    def __init__(self, inner, recorder, signal):
        self._inner, self._recorder, self._signal = inner, recorder, signal

    def Export(self, request, **kw):  # noqa: N802 - gRPC stub method name
        response = self._inner.Export(request=request, **kw)
        self._recorder.sent(self._signal, request.SerializeToString())
        return response


def instrument_grpc(exporter, recorder, signal):
    init = exporter._initialize_channel_and_stub  # the exporter re-creates its stub on UNAVAILABLE

    def reinit():
        init()
        exporter._client = _RecordingStub(exporter._client, recorder, signal)

    exporter._initialize_channel_and_stub = reinit
    exporter._client = _RecordingStub(exporter._client, recorder, signal)


def _decompress(data, enc):
    enc = (enc or "").lower()
    return gzip.decompress(data) if enc == "gzip" else zlib.decompress(data) if enc == "deflate" else data


def _compress(data, enc):
    enc = (enc or "").lower()
    return gzip.compress(data) if enc == "gzip" else zlib.compress(data) if enc == "deflate" else data


class RecordingTransport(BaseHTTPTransport):
    """The HTTP exporters' transport: records each request that got a 2xx; in JSON mode rewrites
    the exporter's protobuf body as OTLP/JSON first."""

    def __init__(self, recorder, signal, json_mode):
        self._inner = RequestsHTTPTransport()
        self._recorder, self._signal, self._json = recorder, signal, json_mode

    def request(self, method, url, *, headers=None, timeout=None, data=None):
        headers = dict(headers or {})
        enc = next((v for k, v in headers.items() if k.lower() == "content-encoding"), None)
        body = _decompress(data, enc)
        if self._json:
            msg = SIGNALS[self._signal].request()
            msg.ParseFromString(body)
            for k in [k for k in headers if k.lower() == "content-type"]:
                del headers[k]
            headers["Content-Type"] = "application/json"
            data = _compress(to_otlp_json(msg), enc)
        result = self._inner.request(method, url, headers=headers, timeout=timeout, data=data)
        if result.status_code is not None and 200 <= result.status_code < 300:
            self._recorder.sent(self._signal, body)
        return result

    def close(self):
        self._inner.close()

    def is_connection_error(self, exception):
        return self._inner.is_connection_error(exception)


def check_results(exporter, recorder, signal):
    export = exporter.export

    def checked(*a, **kw):
        result = export(*a, **kw)
        if getattr(result, "name", "") != "SUCCESS":
            recorder.failed(signal, f"export returned {result}")
        return result

    exporter.export = checked


def make_exporter(signal, args, recorder):
    gz = args.compression == "gzip"
    base = args.endpoint.rstrip("/")
    temporality = None
    if args.temporality == "delta":
        temporality = {Counter: AggregationTemporality.DELTA, UpDownCounter: AggregationTemporality.CUMULATIVE,
                       Histogram: AggregationTemporality.DELTA, ObservableCounter: AggregationTemporality.DELTA,
                       ObservableUpDownCounter: AggregationTemporality.CUMULATIVE,
                       ObservableGauge: AggregationTemporality.CUMULATIVE}
    if args.protocol == "grpc":
        from grpc import Compression as GC
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        kw = dict(endpoint=base, insecure=True, compression=GC.Gzip if gz else GC.NoCompression,
                  timeout=args.timeout)
        exp = {"traces": lambda: OTLPSpanExporter(**kw), "logs": lambda: OTLPLogExporter(**kw),
               "metrics": lambda: OTLPMetricExporter(preferred_temporality=temporality, **kw)}[signal]()
        instrument_grpc(exp, recorder, signal)
    else:
        from opentelemetry.exporter.otlp.proto.http import Compression as HC
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        kw = dict(endpoint=base + SIGNALS[signal].http_path, compression=HC.Gzip if gz else HC.NoCompression,
                  timeout=args.timeout,
                  _transport=RecordingTransport(recorder, signal, args.protocol == "http/json"))
        exp = {"traces": lambda: OTLPSpanExporter(**kw), "logs": lambda: OTLPLogExporter(**kw),
               "metrics": lambda: OTLPMetricExporter(preferred_temporality=temporality, **kw)}[signal]()
    check_results(exp, recorder, signal)
    return exp


# ---------------------------------------------------------------- the telemetry
class SeededIds(IdGenerator):
    def __init__(self, seed):
        self._rng = random.Random(seed)

    def generate_span_id(self):
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self):
        return self._rng.getrandbits(128) or 1


EVERY_TYPE = {
    "str": "value ü ✓", "str.empty": "", "bool.true": True, "bool.false": False,
    "int": 42, "int.negative": -7, "int.big": 2**62 + 1, "double": 3.25, "double.negative": -0.5e-3,
    "array.str": ["a", "b", ""], "array.bool": [True, False], "array.int": [1, -2, 3],
    "array.double": [0.5, 1.5e10],
}


def key_values(pairs, flag):
    """`KEY=VALUE` arguments as a dict of strings."""
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {p!r}: expected KEY=VALUE")
        out[key] = value
    return out


def resource(args):
    attrs = {"service.name": "otelprof-peer-test", "service.version": "1.0.0",
             "service.instance.id": f"peer-{args.seed}", "peer.run": args.seed,
             "peer.flag": True, "peer.ratio": 0.75, "peer.tags": ["x", "y"]}
    attrs.update(args.resource_attrs)
    return Resource.create(attrs)


class SpanAttributes(SpanProcessor):
    """Sets the --span-attr attributes on every span when it starts."""

    def __init__(self, attrs):
        self._attrs = attrs

    def on_start(self, span, parent_context=None):
        span.set_attributes(self._attrs)


def send_traces(tp, t0):
    tracer = tp.get_tracer("otelprof.peer.traces", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.26.0",
                           attributes={"scope.attr": "s", "scope.num": 7})
    other = tp.get_tracer("otelprof.peer.other")
    ms = 1_000_000

    root = tracer.start_span("GET /checkout", kind=SpanKind.SERVER, start_time=t0,
                             attributes=dict(EVERY_TYPE, **{"http.request.method": "GET", "http.route": "/checkout"}))
    root.add_event("request.received", {"bytes": 512, "ok": True}, timestamp=t0 + 1 * ms)
    root.add_event("no.attributes", timestamp=t0 + 2 * ms)
    ctx = trace.set_span_in_context(root)

    db = tracer.start_span("SELECT orders", context=ctx, kind=SpanKind.CLIENT, start_time=t0 + 3 * ms,
                           attributes={"db.system": "postgresql", "db.rows": 12, "db.cost": 1.5})
    db.add_event("exception", {"exception.type": "TimeoutError", "exception.message": "took too long"},
                 timestamp=t0 + 9 * ms)
    db.set_status(Status(StatusCode.ERROR, "query timed out"))
    db.end(end_time=t0 + 10 * ms)

    work = tracer.start_span("compute total", context=ctx, kind=SpanKind.INTERNAL, start_time=t0 + 11 * ms)
    inner = tracer.start_span("round prices", context=trace.set_span_in_context(work), start_time=t0 + 12 * ms,
                              attributes={"array.double": [1.0, 2.5], "depth": 3})
    inner.end(end_time=t0 + 13 * ms)
    work.set_status(Status(StatusCode.OK))
    work.end(end_time=t0 + 14 * ms)

    external = SpanContext(trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331,
                           is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED),
                           trace_state=TraceState([("vendor", "abc"), ("other", "1")]))
    pub = tracer.start_span("publish orders", context=ctx, kind=SpanKind.PRODUCER, start_time=t0 + 15 * ms,
                            links=[Link(external, {"link.kind": "follows", "link.n": 2})],
                            attributes={"messaging.system": "kafka", "messaging.batch.message_count": 3})
    pub.end(end_time=t0 + 16 * ms)
    root.set_status(Status(StatusCode.OK))
    root.end(end_time=t0 + 20 * ms)

    # A second trace whose consumer links back to the producer span.
    consume = tracer.start_span("process orders", kind=SpanKind.CONSUMER, start_time=t0 + 30 * ms,
                                links=[Link(pub.get_span_context()), Link(db.get_span_context(), {"why": "retry"})])
    with trace.use_span(consume, end_on_exit=False):
        child = tracer.start_span("ack", start_time=t0 + 31 * ms, attributes={"acked": True})
        child.end(end_time=t0 + 32 * ms)
    consume.end(end_time=t0 + 40 * ms)

    # A third trace in another scope, with a remote parent.
    remote = SpanContext(trace_id=0x5B8EFFF798038103D269B633813FC60C, span_id=0xEEE19B7EC3C1B174, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED))
    s = other.start_span("remote child", context=trace.set_span_in_context(trace.NonRecordingSpan(remote)),
                         kind=SpanKind.SERVER, start_time=t0 + 50 * ms, attributes={"peer.empty.array": []})
    s.end(end_time=t0 + 55 * ms)
    ctx_span = other.start_span("log context", start_time=t0 + 60 * ms)
    ctx_span.end(end_time=t0 + 61 * ms)
    return root, ctx_span


def send_metrics(mp, exemplar_span):
    meter = mp.get_meter("otelprof.peer.metrics", "2.0.0", schema_url="https://opentelemetry.io/schemas/1.26.0",
                         attributes={"meter.attr": "m"})
    counter = meter.create_counter("peer.requests", unit="{request}", description="requests served")
    updown = meter.create_up_down_counter("peer.queue.depth", unit="{item}", description="items queued")
    hist = meter.create_histogram("peer.latency", unit="ms", description="explicit buckets")
    exph = meter.create_histogram("peer.size", unit="By", description="exponential buckets")
    fcounter = meter.create_counter("peer.cpu.time", unit="s", description="a double counter")

    def gauge_cb(_options):
        from opentelemetry.metrics import Observation
        yield Observation(21.5, {"room": "lab", "floor": 2})
        yield Observation(-3.0, {"room": "freezer", "floor": -1})

    meter.create_observable_gauge("peer.temperature", callbacks=[gauge_cb], unit="Cel", description="observed")

    get, post = {"method": "GET", "ok": True}, {"method": "POST", "ok": False}
    counter.add(5, get)
    counter.add(2, post)
    counter.add(1, get)
    fcounter.add(0.25, {"cpu": 0})
    fcounter.add(1.5, {"cpu": 1})
    updown.add(10, {"queue": "a"})
    updown.add(-4, {"queue": "a"})
    updown.add(-2, {"queue": "b"})
    for v in (0, 3, 7, 7.5, 20, 99, 250, 1000):
        hist.record(v, {"route": "/checkout"})
    hist.record(12, {"route": "/health"})
    for v in (0, 1, 2, 3, 4, 100, 1000, 1e6, 0.001):
        exph.record(v, {"kind": "payload"})
    with trace.use_span(exemplar_span, end_on_exit=False):  # measurements with exemplars (trace-based filter)
        counter.add(3, get)
        hist.record(42, {"route": "/checkout"})


def send_logs(lp, ctx_span, t0):
    log = lp.get_logger("otelprof.peer.logs", "3.0.0", schema_url="https://opentelemetry.io/schemas/1.26.0",
                        attributes={"logger.attr": True})
    plain = lp.get_logger("otelprof.peer.plain")
    ms = 1_000_000
    with trace.use_span(ctx_span, end_on_exit=False):
        log.emit(timestamp=t0 + 100 * ms, observed_timestamp=t0 + 101 * ms, severity_number=SeverityNumber.INFO,
                 severity_text="INFO", body="order 17 accepted", attributes=dict(EVERY_TYPE))
        log.emit(timestamp=t0 + 102 * ms, observed_timestamp=t0 + 103 * ms, severity_number=SeverityNumber.WARN,
                 severity_text="WARN", body={"msg": "slow", "ms": 812, "tags": ["db", "io"], "nested": {"a": 1.5}},
                 attributes={"component": "db"})
        log.emit(timestamp=t0 + 104 * ms, observed_timestamp=t0 + 105 * ms, severity_number=SeverityNumber.ERROR,
                 severity_text="ERROR", body="failed: ü ✓", attributes={"error": True, "code": 503},
                 event_name="peer.order.failed")
    log.emit(timestamp=t0 + 106 * ms, observed_timestamp=t0 + 107 * ms, severity_number=SeverityNumber.DEBUG2,
             severity_text="debug", body=["a", 1, 2.5, False], attributes={"no.span": True})
    plain.emit(timestamp=t0 + 108 * ms, observed_timestamp=t0 + 109 * ms, severity_number=SeverityNumber.FATAL,
               body=12345)
    plain.emit(timestamp=t0 + 110 * ms, observed_timestamp=t0 + 111 * ms, severity_number=SeverityNumber.TRACE,
               severity_text="TRACE", body="")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", required=True, choices=PROTOCOLS)
    ap.add_argument("--endpoint", required=True, help="base URL, e.g. http://127.0.0.1:4317")
    ap.add_argument("--signals", default=",".join(COMPARABLE), help="comma list of traces,metrics,logs")
    ap.add_argument("--manifest", required=True, help="JSON file written with what was sent")
    ap.add_argument("--compression", choices=("none", "gzip"), default="none")
    ap.add_argument("--temporality", choices=("cumulative", "delta"), default="cumulative")
    ap.add_argument("--seed", type=int, default=1, help="seeds trace and span ids (default 1)")
    ap.add_argument("--base-time-ns", type=int, help="start of the explicit timestamps (default: now)")
    ap.add_argument("--timeout", type=float, default=10.0, help="exporter timeout in seconds")
    ap.add_argument("--resource-attr", action="append", default=[], metavar="KEY=VALUE",
                    help="a string attribute added to the resource (repeatable)")
    ap.add_argument("--span-attr", action="append", default=[], metavar="KEY=VALUE",
                    help="a string attribute set on every span (repeatable)")
    args = ap.parse_args()
    try:
        signals = parse_signals(args.signals)
        args.resource_attrs = key_values(args.resource_attr, "--resource-attr")
        args.span_attrs = key_values(args.span_attr, "--span-attr")
    except ValueError as e:
        ap.error(str(e))
    if not args.endpoint.startswith(("http://", "https://")):
        ap.error("--endpoint must be a URL such as http://127.0.0.1:4317")

    t0 = args.base_time_ns if args.base_time_ns is not None else time.time_ns() // 10**9 * 10**9
    recorder = Recorder()
    res = resource(args)

    # Traces always go through a TracerProvider: the logs' and the exemplars' span contexts come from it.
    tp = TracerProvider(resource=res, id_generator=SeededIds(args.seed))
    if args.span_attrs:
        tp.add_span_processor(SpanAttributes(args.span_attrs))
    if "traces" in signals:
        tp.add_span_processor(BatchSpanProcessor(make_exporter("traces", args, recorder), schedule_delay_millis=60_000))
    ctx_span = send_traces(tp, t0)[1]

    if "metrics" in signals:
        reader = PeriodicExportingMetricReader(make_exporter("metrics", args, recorder),
                                               export_interval_millis=math.inf)  # exported once, at force_flush
        views = [View(instrument_name="peer.size",
                      aggregation=ExponentialBucketHistogramAggregation(max_size=64, max_scale=5)),
                 View(instrument_name="peer.latency",
                      aggregation=ExplicitBucketHistogramAggregation(boundaries=(0, 5, 10, 25, 50, 100, 500)))]
        mp = MeterProvider(resource=res, metric_readers=[reader], views=views)
        send_metrics(mp, ctx_span)
        ok = mp.force_flush(timeout_millis=int(args.timeout * 1000) + 5000)
        mp.shutdown()
        if not ok:
            recorder.failed("metrics", "force_flush timed out")

    if "logs" in signals:
        lp = LoggerProvider(resource=res)
        lp.add_log_record_processor(BatchLogRecordProcessor(make_exporter("logs", args, recorder),
                                                            schedule_delay_millis=60_000))
        send_logs(lp, ctx_span, t0)
        if not lp.force_flush(timeout_millis=int(args.timeout * 1000) + 5000):
            recorder.failed("logs", "force_flush timed out")
        lp.shutdown()

    if not tp.force_flush(timeout_millis=int(args.timeout * 1000) + 5000):
        recorder.failed("traces", "force_flush timed out")
    tp.shutdown()

    items = {s: [] for s in signals}
    requests = {s: 0 for s in signals}
    for sig, data in recorder.requests:
        msg = SIGNALS[sig].request()
        msg.ParseFromString(data)
        items[sig].extend(canonical_items(sig, msg))
        requests[sig] += 1
    manifest = {"version": 1, "protocol": args.protocol, "endpoint": args.endpoint, "compression": args.compression,
                "seed": args.seed, "base_time_ns": t0, "signals": signals, "requests": requests,
                "failures": [list(f) for f in recorder.failures], "items": items}
    tmp = args.manifest + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    os.replace(tmp, args.manifest)

    for s in signals:
        print(f"{s}: {len(items[s])} sent in {requests[s]} requests")
    if recorder.failures:
        for sig, why in recorder.failures:
            print(f"sdk_send: {sig} export failed: {why}", file=sys.stderr)
        return 1
    empty = [s for s in signals if not items[s]]
    if empty:
        print(f"sdk_send: nothing was acknowledged for {','.join(empty)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
