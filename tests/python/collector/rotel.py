#!/usr/bin/env python3
"""rotel-agent (PyPI `rotel`, a Rust OTLP collector) as a stand-in collector for the harness.

As a module:
    import rotel
    proc = rotel.start(grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0",
                       export_endpoint="http://127.0.0.1:4317", log_path="/tmp/rotel.log")
    ... proc.grpc_port, proc.http_port ...
    rotel.stop(proc)

As a script:
    rotel.py run --export http://127.0.0.1:PORT [--grpc-listen H:P] [--http-listen H:P]
                 [--protocol grpc|http] [--compression gzip|none] [--batch-timeout 200ms] [--log FILE]
        starts rotel-agent in the foreground, prints `COMMAND <the exact command>` and, once both
        receivers accept connections, `READY grpc=<port> http=<port>`; SIGTERM/SIGINT stops it.
    rotel.py selftest [--protocols grpc,http/protobuf,http/json] [--workdir DIR]
        proves the harness end to end: sink.py <- rotel-agent <- sdk_send.py, then compare.py,
        for each protocol (see README.md for which signals rotel carries over http/json).
    rotel.py info
        prints where rotel-agent is and its version.

rotel-agent does not report its ports or print a line when it listens (it logs "Starting Rotel."
before binding), so port 0 is resolved to a free port here, and readiness is a TCP connect to both
receiver ports (polled every 50 ms, bounded by --ready-timeout), failing early if the agent exits.
The agent's ROTEL_* environment variables are removed so that the printed command is the whole
configuration.
"""
import argparse
import importlib.machinery
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def agent_path():
    """The rotel-agent binary: $ROTEL_AGENT, else the one inside the installed `rotel` package."""
    p = os.environ.get("ROTEL_AGENT")
    if not p:
        # This file is also called rotel: look for the package everywhere but beside it.
        path = [d for d in sys.path if os.path.abspath(d or ".") != HERE]
        spec = importlib.machinery.PathFinder.find_spec("rotel", path)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("the `rotel` Python package is not installed "
                               "(pip install -r tests/python/collector/requirements.txt)")
        p = os.path.join(list(spec.submodule_search_locations)[0], "rotel-agent")
    if not os.access(p, os.X_OK):
        raise RuntimeError(f"rotel-agent not found or not executable at {p}")
    return p


def version(agent=None):
    out = subprocess.run([agent or agent_path(), "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip() or out.stderr.strip()


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _resolve(listen):
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"listen address must be HOST:PORT, got {listen!r}")
    return host, int(port) or free_port(host)


def command(grpc_listen, http_listen, export_endpoint, protocol="grpc", compression="gzip",
            batch_timeout="200ms", retry_initial_backoff="100ms", retry_max_elapsed="30s", extra=()):
    """The rotel-agent command line (listen addresses must have real ports)."""
    return [agent_path(), "start",
            "--otlp-grpc-endpoint", grpc_listen,
            "--otlp-http-endpoint", http_listen,
            "--exporter", "otlp",
            "--otlp-exporter-endpoint", export_endpoint,
            "--otlp-exporter-protocol", protocol,
            "--otlp-exporter-compression", compression,
            "--batch-timeout", batch_timeout,
            "--otlp-exporter-retry-initial-backoff", retry_initial_backoff,
            "--otlp-exporter-retry-max-elapsed-time", retry_max_elapsed,
            *extra]


def _connects(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def start(grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0", export_endpoint="http://127.0.0.1:4317",
          log_path=None, ready_timeout=15.0, quiet=False, **kw):
    """Starts rotel-agent in the foreground and waits until both receivers accept connections.
    Returns the Popen with .grpc_port, .http_port, .log_path and .cmd set. Raises on failure."""
    ghost, gport = _resolve(grpc_listen)
    hhost, hport = _resolve(http_listen)
    cmd = command(f"{ghost}:{gport}", f"{hhost}:{hport}", export_endpoint, **kw)
    if log_path is None:
        fd, log_path = tempfile.mkstemp(prefix="rotel-agent-", suffix=".log")
        os.close(fd)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTEL_")}
    env["NO_COLOR"] = "1"
    if not quiet:
        print("COMMAND " + shlex.join(cmd), file=sys.stderr, flush=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.grpc_port, proc.http_port, proc.log_path, proc.cmd = gport, hport, log_path, cmd
    deadline = time.monotonic() + ready_timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"rotel-agent exited with {proc.returncode} before it was ready; "
                               f"its log ({log_path}):\n{_tail(log_path)}")
        if _connects(ghost, gport) and _connects(hhost, hport):
            return proc
        if time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"rotel-agent did not listen on {ghost}:{gport} and {hhost}:{hport} within "
                               f"{ready_timeout}s; its log:\n{_tail(log_path)}")
        time.sleep(0.05)  # readiness poll: rotel-agent prints no line once it listens


def stop(proc, timeout=10.0):
    """SIGTERM (rotel flushes its batches and exits), SIGKILL after timeout. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _tail(path, n=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return f"(cannot read: {e})"


# ---------------------------------------------------------------- selftest
def _start_sink(out, extra=()):
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "sink.py"), "--out", out, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().split()  # blocks until READY (or EOF if the sink died)
    if len(line) != 3 or line[0] != "READY":
        proc.kill()
        raise RuntimeError(f"sink.py did not start: {line}")
    return proc, int(line[1].split("=")[1]), int(line[2].split("=")[1])


def _run(cmd):
    print("$ " + shlex.join(cmd), flush=True)
    r = subprocess.run(cmd, text=True, capture_output=True)
    sys.stdout.write(r.stdout)
    sys.stdout.write(r.stderr)
    sys.stdout.flush()
    return r.returncode


# What rotel-agent 0.0.1a15 carries intact over OTLP/JSON (README.md, "rotel and OTLP/JSON").
JSON_SIGNALS_THROUGH_ROTEL = "logs"


def selftest(args):
    work = args.workdir or tempfile.mkdtemp(prefix="collector-selftest-")
    os.makedirs(work, exist_ok=True)
    print(f"rotel-agent: {agent_path()} ({version()}); work dir {work}", flush=True)
    failed = []
    for proto in args.protocols.split(","):
        tag = proto.replace("/", "-")
        sink_dir = os.path.join(work, f"sink-{tag}")
        shutil.rmtree(sink_dir, ignore_errors=True)
        signals = args.json_signals if proto == "http/json" and not args.direct else args.signals
        sink, sgrpc, _shttp = _start_sink(sink_dir)
        agent = None
        try:
            if args.direct:
                port = sgrpc if proto == "grpc" else _shttp
            else:
                agent = start(export_endpoint=f"http://127.0.0.1:{sgrpc if args.export_protocol == 'grpc' else _shttp}",
                              protocol=args.export_protocol, log_path=os.path.join(work, f"rotel-{tag}.log"))
                port = agent.grpc_port if proto == "grpc" else agent.http_port
            manifest = os.path.join(work, f"manifest-{tag}.json")
            rc = _run([sys.executable, os.path.join(HERE, "sdk_send.py"), "--protocol", proto,
                       "--endpoint", f"http://127.0.0.1:{port}", "--signals", signals, "--manifest", manifest,
                       "--compression", args.compression])
            if rc == 0:
                rc = _run([sys.executable, os.path.join(HERE, "compare.py"), "--manifest", manifest,
                           "--sink", sink_dir, "--timeout", "15"])
            if rc != 0:
                failed.append(proto)
        finally:
            if agent is not None:
                stop(agent)
            sink.terminate()
            sink.wait(10)
    print(f"selftest: {len(args.protocols.split(',')) - len(failed)} passed, {len(failed)} failed"
          + (f" ({','.join(failed)})" if failed else ""))
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run rotel-agent until SIGTERM")
    r.add_argument("--grpc-listen", default="127.0.0.1:0", help="OTLP/gRPC receiver (port 0: a free one)")
    r.add_argument("--http-listen", default="127.0.0.1:0", help="OTLP/HTTP receiver (port 0: a free one)")
    r.add_argument("--export", required=True, help="OTLP exporter endpoint URL, e.g. http://127.0.0.1:4317")
    r.add_argument("--protocol", choices=("grpc", "http"), default="grpc", help="exporter protocol")
    r.add_argument("--compression", choices=("gzip", "none"), default="gzip", help="exporter compression")
    r.add_argument("--batch-timeout", default="200ms")
    r.add_argument("--log", help="agent log file (default: a temporary file)")
    r.add_argument("--ready-timeout", type=float, default=15.0)
    r.add_argument("extra", nargs="*", help="more rotel-agent flags, after --")
    t = sub.add_parser("selftest", help="sink <- rotel-agent <- sdk_send, then compare")
    t.add_argument("--protocols", default="grpc,http/protobuf,http/json")
    t.add_argument("--signals", default="traces,metrics,logs", help="for grpc and http/protobuf")
    t.add_argument("--json-signals", default=JSON_SIGNALS_THROUGH_ROTEL,
                   help="for http/json through rotel (default: logs, the only signal it carries intact)")
    t.add_argument("--compression", choices=("none", "gzip"), default="none", help="sdk_send's compression")
    t.add_argument("--export-protocol", choices=("grpc", "http"), default="grpc",
                   help="rotel-agent's exporter protocol into the sink")
    t.add_argument("--direct", action="store_true", help="no rotel: sdk_send straight into the sink")
    t.add_argument("--workdir")
    sub.add_parser("info", help="where rotel-agent is and its version")
    args = ap.parse_args()

    try:
        if args.cmd == "info":
            print(f"{agent_path()}\n{version()}")
            return 0
        if args.cmd == "selftest":
            return selftest(args)
        proc = start(args.grpc_listen, args.http_listen, args.export, log_path=args.log,
                     ready_timeout=args.ready_timeout, protocol=args.protocol, compression=args.compression,
                     batch_timeout=args.batch_timeout, extra=args.extra)
    except (RuntimeError, ValueError, OSError) as e:
        print(f"rotel.py: {e}", file=sys.stderr)
        return 1
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    print(f"READY grpc={proc.grpc_port} http={proc.http_port}", flush=True)
    while not stopping and proc.poll() is None:
        time.sleep(0.2)  # waiting for a signal or the agent's exit
    if not stopping:
        print(f"rotel.py: rotel-agent exited with {proc.returncode}; log {proc.log_path}:\n{_tail(proc.log_path)}",
              file=sys.stderr)
        return 1
    rc = stop(proc)
    return 0 if rc in (0, -signal.SIGTERM) else rc


if __name__ == "__main__":
    sys.exit(main())
