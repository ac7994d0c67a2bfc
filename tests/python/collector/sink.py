#!/usr/bin/env python3
"""A real OTLP backend for checking what an exporter sends.

  sink.py --grpc-port 0 --http-port 0 --out DIR [--fail-status 503 [--fail-first N]]

Serves OTLP/gRPC (grpcio: TraceService, MetricsService, LogsService and the v1development
ProfilesService; gzip/deflate-compressed requests accepted) and OTLP/HTTP (POST /v1/traces,
/v1/metrics, /v1/logs, /v1development/profiles; application/x-protobuf or application/json,
Content-Encoding gzip/deflate/identity).

Each accepted request is stored as its raw serialized protobuf in DIR/<signal>-<seq>.pb (seq is one
counter for all signals, 6 digits, so names sort in arrival order), next to DIR/<signal>-<seq>.json
with how it came (transport, path, content type, encoding, headers/metadata). Both are written
atomically (temporary file + rename), the .json first. A sink restarted on the same DIR numbers on
after the files already there. OTLP/JSON requests are stored as the
equivalent protobuf. A request that does not decode is refused (HTTP 400 / INVALID_ARGUMENT) and
not stored.

When both servers listen it prints one line `READY grpc=<port> http=<port>` and flushes.
SIGTERM or SIGINT stops it (exit 0).

--fail-status S makes it refuse requests like a backend in trouble: HTTP answers status S, gRPC
answers the matching code (503 UNAVAILABLE, 429 RESOURCE_EXHAUSTED, 400 INVALID_ARGUMENT,
500 INTERNAL, 413 RESOURCE_EXHAUSTED, 504 DEADLINE_EXCEEDED, others UNAVAILABLE). Refused requests
are stored as DIR/refused-<signal>-<seq>.pb. With --fail-first N only the first N requests are refused;
--retry-after S adds an HTTP Retry-After header to refusals.
"""
import argparse
import gzip
import http.server
import json
import os
import re
import signal
import sys
import threading
import zlib
from concurrent import futures

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from otlp_canon import SIGNALS, from_otlp_json  # noqa: E402

GRPC_CODE_FOR_HTTP = {
    503: grpc.StatusCode.UNAVAILABLE,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    400: grpc.StatusCode.INVALID_ARGUMENT,
    500: grpc.StatusCode.INTERNAL,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class Store:
    def __init__(self, out, fail_status, fail_first, retry_after, verbose):
        self.out = out
        self.retry_after = retry_after
        self.fail_status = fail_status
        self.fail_first = fail_first
        self.verbose = verbose
        self.lock = threading.Lock()
        # A restarted sink appends: numbering goes on after the highest seq already in the directory.
        seqs = [int(m.group(1)) for m in map(re.compile(r"^(?:refused-)?[a-z]+-(\d+)\.pb$").match, os.listdir(out)) if m]
        self.seq = max(seqs, default=0)
        self.refused = 0

    def _write(self, name, data):
        tmp = os.path.join(self.out, f".{name}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(self.out, name))

    def should_refuse(self):
        """True when this request must be refused (counts it)."""
        if self.fail_status is None:
            return False
        with self.lock:
            if self.fail_first is not None and self.refused >= self.fail_first:
                return False
            self.refused += 1
            return True

    def save(self, signal_name, payload, meta, refused=False):
        with self.lock:
            self.seq += 1
            seq = self.seq
        base = f"{'refused-' if refused else ''}{signal_name}-{seq:06d}"
        meta = dict(meta, signal=signal_name, seq=seq, bytes=len(payload), refused=refused)
        self._write(base + ".json", (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
        self._write(base + ".pb", payload)
        if self.verbose:
            print(f"{'REFUSED' if refused else 'STORED'} {base}.pb {meta['transport']} {len(payload)} bytes",
                  file=sys.stderr, flush=True)


# ---------------------------------------------------------------- gRPC
def grpc_handler(store, sig):
    def export(request_bytes, context):
        md = {k: (v if isinstance(v, str) else v.hex()) for k, v in context.invocation_metadata()}
        meta = {"transport": "grpc", "path": f"/{sig.grpc_service}/Export", "metadata": md}
        try:
            msg = sig.request()
            msg.ParseFromString(request_bytes)
        except Exception as e:  # noqa: BLE001 - any decode error is the client's
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request does not decode: {e}")
        if store.should_refuse():
            store.save(sig.name, request_bytes, meta, refused=True)
            code = GRPC_CODE_FOR_HTTP.get(store.fail_status, grpc.StatusCode.UNAVAILABLE)
            context.abort(code, f"sink refuses (--fail-status {store.fail_status})")
        store.save(sig.name, request_bytes, meta)
        return sig.response().SerializeToString()

    # No (de)serializers: the handler gets the raw request bytes, exactly as sent.
    return grpc.method_handlers_generic_handler(
        sig.grpc_service, {"Export": grpc.unary_unary_rpc_method_handler(export)})


# ---------------------------------------------------------------- HTTP
def make_http_handler(store):
    by_path = {s.http_path: s for s in SIGNALS.values()}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            if store.verbose:
                sys.stderr.write("http: " + (fmt % args) + "\n")

        def _reply(self, status, body=b"", ctype="text/plain"):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if status >= 400 and store.retry_after is not None:
                self.send_header("Retry-After", str(store.retry_after))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._reply(405, b"POST only\n")

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            sig = by_path.get(self.path.split("?", 1)[0])
            if sig is None:
                return self._reply(404, f"unknown path {self.path}\n".encode())
            enc = (self.headers.get("Content-Encoding") or "identity").strip().lower()
            try:
                if enc == "gzip":
                    body = gzip.decompress(raw)
                elif enc == "deflate":
                    body = zlib.decompress(raw)
                elif enc in ("identity", ""):
                    body = raw
                else:
                    return self._reply(415, f"unsupported Content-Encoding {enc}\n".encode())
            except Exception as e:  # noqa: BLE001
                return self._reply(400, f"bad {enc} body: {e}\n".encode())
            ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            try:
                if ctype == "application/x-protobuf":
                    msg = sig.request()
                    msg.ParseFromString(body)
                    payload = body
                elif ctype == "application/json":
                    payload = from_otlp_json(body, sig.request).SerializeToString()
                else:
                    return self._reply(415, f"unsupported Content-Type {ctype!r}\n".encode())
            except Exception as e:  # noqa: BLE001
                return self._reply(400, f"request does not decode as {ctype}: {e}\n".encode())
            meta = {"transport": "http", "path": self.path, "content_type": ctype, "content_encoding": enc,
                    "wire_bytes": len(raw), "headers": {k.lower(): v for k, v in self.headers.items()}}
            if store.should_refuse():
                store.save(sig.name, payload, meta, refused=True)
                return self._reply(store.fail_status, b"sink refuses (--fail-status)\n")
            store.save(sig.name, payload, meta)
            if ctype == "application/json":
                return self._reply(200, b"{}", "application/json")
            return self._reply(200, sig.response().SerializeToString(), "application/x-protobuf")

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grpc-port", type=int, default=0, help="0 picks a free port (default)")
    ap.add_argument("--http-port", type=int, default=0, help="0 picks a free port (default)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--out", required=True, help="directory for the stored requests (created)")
    ap.add_argument("--fail-status", type=int, help="refuse requests: HTTP status, mapped to a gRPC code")
    ap.add_argument("--fail-first", type=int, help="with --fail-status: refuse only the first N requests")
    ap.add_argument("--retry-after", type=int, help="with --fail-status: HTTP Retry-After seconds on refusals")
    ap.add_argument("--verbose", action="store_true", help="one stderr line per request")
    args = ap.parse_args()
    if args.fail_first is not None and args.fail_status is None:
        ap.error("--fail-first needs --fail-status")
    if args.fail_status is not None and not 400 <= args.fail_status <= 599:
        ap.error("--fail-status must be an HTTP error status (400..599)")

    os.makedirs(args.out, exist_ok=True)
    store = Store(args.out, args.fail_status, args.fail_first, args.retry_after, args.verbose)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.so_reuseport", 0)])
    for sig in SIGNALS.values():
        server.add_generic_rpc_handlers((grpc_handler(store, sig),))
    try:
        grpc_port = server.add_insecure_port(f"{args.host}:{args.grpc_port}")
    except RuntimeError as e:
        sys.exit(f"sink: cannot listen for gRPC on {args.host}:{args.grpc_port}: {e}")
    if grpc_port == 0:
        sys.exit(f"sink: cannot listen for gRPC on {args.host}:{args.grpc_port}")
    try:
        httpd = http.server.ThreadingHTTPServer((args.host, args.http_port), make_http_handler(store))
    except OSError as e:
        sys.exit(f"sink: cannot listen for HTTP on {args.host}:{args.http_port}: {e}")
    httpd.daemon_threads = True
    server.start()
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"READY grpc={grpc_port} http={httpd.server_address[1]}", flush=True)
    while not stop.wait(3600):
        pass
    httpd.shutdown()
    server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
