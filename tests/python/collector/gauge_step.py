#!/usr/bin/env python3
"""An application that reports a queue's depth as an OTLP gauge with the real OpenTelemetry
Python SDK (OTLP/HTTP exporter, one export every 200 ms) while it keeps a CPU busy, for the
anomaly connector's end-to-end test.

  gauge_step.py --endpoint http://127.0.0.1:4318 --base-s 4 --step-s 4

The observable gauge `queue.depth` has two series: `queue=email` is 10 or 11 (alternating) for
--base-s seconds, then 200 for --step-s seconds; `queue=sms` is 500 throughout. The service name
comes from OTEL_SERVICE_NAME (the test sets it, so the profiler sees the same name). Prints
`step <unix ns> pid <pid>` when the step begins and exits 0 after a final flush (1 when an export failed).
"""
import argparse
import os
import sys
import time

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader


class Counting(OTLPMetricExporter):
    failed = 0

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        if result != MetricExportResult.SUCCESS:
            Counting.failed += 1
        return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--base-s", type=float, default=4.0)
    ap.add_argument("--step-s", type=float, default=4.0)
    args = ap.parse_args()

    start = time.monotonic()
    calls = [0]

    def depth(_: CallbackOptions):
        calls[0] += 1
        stepped = time.monotonic() - start >= args.base_s
        email = 200.0 if stepped else 10.0 + calls[0] % 2
        return [Observation(email, {"queue": "email"}), Observation(500.0, {"queue": "sms"})]

    exporter = Counting(endpoint=args.endpoint.rstrip("/") + "/v1/metrics")
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=200)
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("gauge_step").create_observable_gauge("queue.depth", callbacks=[depth], unit="{job}")

    said = False
    x = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= args.base_s + args.step_s:
            break
        if not said and elapsed >= args.base_s:
            print(f"step {time.time_ns()} pid {os.getpid()}", flush=True)
            said = True
        # Busy, so the profiler has this process's samples to burst.
        for i in range(20_000):
            x += i
    provider.shutdown()
    sys.exit(1 if Counting.failed else 0)


if __name__ == "__main__":
    main()
