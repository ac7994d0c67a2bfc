#!/usr/bin/env python3
"""Self-test of server.py and sign.py: `python3 selftest.py [--proto-root REPO_ROOT]`; exit 0 if all pass.

Starts server.py, then acts as an agent with classes generated from the same protos:
WS (reply fields, remote config push + re-offer until reported, flags / connection settings /
new instance uid pushes, malformed frames, agent_disconnect), HTTP (header recorded, one-shots
queued while no WS client is connected, gzip body, 400 on garbage, RequestInstanceUid, connection
settings offered until reported), unavailable (HTTP 503 +
Retry-After, WS ServerErrorResponse + close, WS handshake 503), the control API (/messages,
/state, /refusals, /replies, /reset, /disconnect), a signed config checked with sign.py, garbage on every
port, and that SIGTERM exits 0. When openssl is installed, with pki.py's certificates: mutual TLS
(client cert subject/CN/serial recorded; no cert or another CA's refused), then a client certificate
rotation: a wss client on client1 is offered client2 (opamp_certificate, until_reported), reconnects
with the offered PEMs, reports the hash, and its messages and /connections show client2.
"""
import argparse
import base64
import gzip
import hashlib
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import protos  # noqa: E402

from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

pb = None
UID = bytes.fromhex("0192a0b1c2d3e4f5a6b7c8d9e0f1a2b3")
results = {"passed": 0, "failed": 0}


def check(name, cond, detail=""):
    results["passed" if cond else "failed"] += 1
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f"  {detail}"), flush=True)


class Server:
    def __init__(self, proto_root, *extra):
        self.p = subprocess.Popen([sys.executable, os.path.join(HERE, "server.py"), "--proto-root", proto_root,
                                   *extra], stdout=subprocess.PIPE, text=True)
        self.ports = json.loads(self.p.stdout.readline())

    def ctl(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.ports['control']}{path}", data, method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def wait_state(self, key, want, timeout=10):
        """Polls /state until state[key] == want; returns the last value."""
        end = time.time() + timeout
        while True:
            got = self.ctl("GET", "/state")[key]
            if got == want or time.time() > end:
                return got
            time.sleep(0.05)

    def stop(self):
        self.p.terminate()
        return self.p.wait(10)


def a2s(seq, uid=UID, **fields):
    m = pb.AgentToServer(instance_uid=uid, sequence_num=seq, **fields)
    return m


def ws_send(ws, msg):
    ws.send(b"\x00" + msg.SerializeToString())


def ws_recv(ws, timeout=5):
    data = ws.recv(timeout)
    assert isinstance(data, bytes) and data[0] == 0, data[:4]
    out = pb.ServerToAgent()
    out.ParseFromString(data[1:])
    return out


def http_post(port, msg, scheme="http", ctx=None, gz=False, raw=None):
    body = raw if raw is not None else msg.SerializeToString()
    headers = {"Content-Type": "application/x-protobuf", "OpAMP-Instance-UID": UID.hex()}
    if gz:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    req = urllib.request.Request(f"{scheme}://127.0.0.1:{port}/v1/opamp", body, headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            out = pb.ServerToAgent()
            out.ParseFromString(r.read())
            return r.status, r.headers, out
    except urllib.error.HTTPError as e:
        return e.code, e.headers, None


def test_ws(srv, keys):
    ws_url = f"ws://127.0.0.1:{srv.ports['ws']}/v1/opamp"
    caps = pb.AgentCapabilities.Value("AgentCapabilities_ReportsStatus") | pb.AgentCapabilities.Value(
        "AgentCapabilities_AcceptsRemoteConfig")
    eff = pb.EffectiveConfig()
    eff.config_map.config_map["otelprof.yaml"].body = b"sampling_hz: 19\n"
    with connect(ws_url) as ws:
        ws_send(ws, a2s(0, capabilities=caps, effective_config=eff, health=pb.ComponentHealth(healthy=True)))
        r = ws_recv(ws)
        want_caps = 1 | 2 | 4 | 32
        check("ws reply: instance_uid and server capabilities", r.instance_uid == UID and r.capabilities == want_caps,
              r)
        check("ws reply: no remote config before one is set", not r.HasField("remote_config"))

        yaml = b"sampling_hz: 99\n"
        with open(os.path.join(keys, "c.yaml"), "wb") as f:
            f.write(yaml)
        sig = subprocess.run([sys.executable, os.path.join(HERE, "sign.py"), "sign",
                              os.path.join(keys, "opamp-ed25519.key"), os.path.join(keys, "c.yaml")],
                             capture_output=True, text=True, check=True).stdout.strip()
        res = srv.ctl("POST", "/remote_config", {"files": {"otelprof.yaml": yaml.decode(), "otelprof.yaml.sig": sig},
                                                 "content_type": "text/yaml"})
        want = hashlib.sha256(b"otelprof.yaml" + yaml + b"otelprof.yaml.sig" + base64.b64decode(sig)).digest()
        check("remote_config hash rule", res["hash"] == want.hex(), res)
        p = ws_recv(ws)
        files = p.remote_config.config.config_map
        check("ws push: remote config with hash, body, content types",
              p.remote_config.config_hash == want and files["otelprof.yaml"].body == yaml
              and files["otelprof.yaml"].content_type == "text/yaml"
              and files["otelprof.yaml.sig"].content_type == "application/octet-stream", p)
        with open(os.path.join(keys, "got.sig"), "wb") as f:
            f.write(files["otelprof.yaml.sig"].body)
        v = subprocess.run([sys.executable, os.path.join(HERE, "sign.py"), "verify",
                            os.path.join(keys, "opamp-ed25519.pub"), os.path.join(keys, "c.yaml"),
                            base64.b64encode(files["otelprof.yaml.sig"].body).decode()], capture_output=True)
        check("pushed signature verifies with the PEM public key", v.returncode == 0, v)

        ws_send(ws, a2s(1))
        check("remote config re-offered while not reported", ws_recv(ws).HasField("remote_config"))
        status = pb.RemoteConfigStatus(last_remote_config_hash=want, status=pb.RemoteConfigStatuses.Value(
            "RemoteConfigStatuses_APPLIED"))
        ws_send(ws, a2s(2, remote_config_status=status))
        check("remote config not offered once reported", not ws_recv(ws).HasField("remote_config"))
        ws_send(ws, a2s(3))
        check("still not offered when the status is omitted", not ws_recv(ws).HasField("remote_config"))

        srv.ctl("POST", "/flags", {"report_full_state": True})
        p = ws_recv(ws)
        check("ws push: ReportFullState", p.flags & pb.ServerToAgentFlags.Value("ServerToAgentFlags_ReportFullState"))
        srv.ctl("POST", "/connection_settings", {"heartbeat_interval_seconds": 5,
                                                 "own_metrics_endpoint": "http://127.0.0.1:1/v1/metrics"})
        cs = ws_recv(ws).connection_settings
        check("ws push: connection settings with hash", cs.opamp.heartbeat_interval_seconds == 5
              and cs.own_metrics.destination_endpoint == "http://127.0.0.1:1/v1/metrics" and len(cs.hash) == 32, cs)
        srv.ctl("POST", "/new_instance_uid", {"uid_hex": "ab" * 16})
        check("ws push: new instance uid", ws_recv(ws).agent_identification.new_instance_uid == b"\xab" * 16)
        ws_send(ws, a2s(4))
        r = ws_recv(ws)
        check("one-shots are sent once", not r.flags and not r.HasField("connection_settings")
              and not r.HasField("agent_identification"), r)

        ws.send("text frame")
        ws.send(b"\x05garbage")
        ws.send(b"\x00\xff\xff\xff")
        ws_send(ws, a2s(5))
        check("malformed frames skipped, connection still answers", ws_recv(ws).instance_uid == UID)
        check("malformed counted", srv.ctl("GET", "/state")["malformed"] == 3)
        ws_send(ws, a2s(6, agent_disconnect=pb.AgentDisconnect()))
        ws_recv(ws)

    st = srv.ctl("GET", "/state")
    check("state: effective config decoded, capabilities named, seq, disconnect",
          st["effective_config"]["otelprof.yaml"]["body"] == "sampling_hz: 19\n"
          and st["capabilities"]["names"] == ["ReportsStatus", "AcceptsRemoteConfig"]
          and st["sequence_num"] == {UID.hex(): 6} and st["agent_disconnect"] is True
          and st["remote_config_status"]["status"] == "RemoteConfigStatuses_APPLIED" and st["health"]["healthy"], st)

    with connect(ws_url) as ws:
        srv.wait_state("ws_connected", 1)
        srv.ctl("POST", "/disconnect", {})
        try:
            ws.recv(5)
            closed = False
        except ConnectionClosed:
            closed = True
        check("/disconnect closes WS clients", closed)


def test_http(srv):
    port = srv.ports["http"]
    other = bytes(range(16))
    code, _, r = http_post(port, a2s(0, uid=other))
    check("http reply: uid echoed, config offered to an instance that never reported",
          code == 200 and r.instance_uid == other and r.HasField("remote_config"), (code, r))
    srv.wait_state("ws_connected", 0)  # the WS client of /disconnect is gone
    res = srv.ctl("POST", "/flags", {"report_full_state": True})
    check("one-shot not pushed without WS clients", res["pushed"] is False, res)
    _, _, r1 = http_post(port, a2s(1), gz=True)
    _, _, r2 = http_post(port, a2s(2))
    check("http: queued flag in the next reply only, gzip body accepted", r1.flags == 1 and r2.flags == 0, (r1, r2))
    code, _, _ = http_post(port, None, raw=b"\xff\xff\xff")
    check("http: garbage -> 400", code == 400)
    msgs = srv.ctl("GET", "/messages")
    last = msgs[-1]
    check("messages: http record fields", last["transport"] == "http" and last["instance_uid_header"] == UID.hex()
          and last["instance_uid_hex"] == UID.hex() and last["sequence_num"] == "2"
          and last["headers"]["Content-Type"] == "application/x-protobuf", last)
    check("messages: in order, ws first", [m["transport"] for m in msgs[:2]] == ["ws", "ws"]
          and all(a["received_at"] <= b["received_at"] for a, b in zip(msgs, msgs[1:])), msgs[:2])
    check("messages?since", len(srv.ctl("GET", f"/messages?since={len(msgs) - 1}")) == 1)

    _, _, r = http_post(port, a2s(3, flags=pb.AgentToServerFlags.Value("AgentToServerFlags_RequestInstanceUid")))
    new = r.agent_identification.new_instance_uid
    check("RequestInstanceUid -> a UUIDv7", len(new) == 16 and new[6] >> 4 == 7 and new[8] >> 6 == 2
          and srv.ctl("GET", "/state")["issued_instance_uids"][-1] == new.hex(), r)
    replies = srv.ctl("GET", "/replies")
    check("/replies records what was sent", replies[-1]["transport"] == "http"
          and "agent_identification" in replies[-1] and any(x["transport"] == "ws" for x in replies))

    if "connection_settings_status" not in pb.AgentToServer.DESCRIPTOR.fields_by_name:
        print("skip connection settings until_reported: protos without connection_settings_status")
        return
    srv.ctl("POST", "/connection_settings", {"heartbeat_interval_seconds": 9, "until_reported": True})
    _, _, r1 = http_post(port, a2s(4))
    _, _, r2 = http_post(port, a2s(5))
    cs_hash = r1.connection_settings.hash
    applied = pb.ConnectionSettingsStatuses.Value("ConnectionSettingsStatuses_APPLIED")
    status = pb.ConnectionSettingsStatus(last_connection_settings_hash=cs_hash, status=applied)
    _, _, r3 = http_post(port, a2s(6, connection_settings_status=status))
    _, _, r4 = http_post(port, a2s(7))
    check("connection settings until_reported: re-offered, then not once the hash is reported",
          r1.connection_settings.opamp.heartbeat_interval_seconds == 9 and r2.connection_settings.hash == cs_hash
          and not r3.HasField("connection_settings") and not r4.HasField("connection_settings"), (r1, r2, r3, r4))
    st = srv.ctl("GET", "/state")["connection_settings_status"]
    check("state: connection_settings_status", st["status"] == "ConnectionSettingsStatuses_APPLIED", st)


def test_unavailable(srv):
    srv.ctl("POST", "/unavailable", {"count": 2, "retry_after_seconds": 7})
    code, headers, _ = http_post(srv.ports["http"], a2s(10))
    check("unavailable: http 503 + Retry-After", code == 503 and headers["Retry-After"] == "7", (code, headers))
    ws_url = f"ws://127.0.0.1:{srv.ports['ws']}/v1/opamp"
    with connect(ws_url) as ws:
        ws_send(ws, a2s(11))
        r = ws_recv(ws)
        er = r.error_response
        check("unavailable: ws ServerErrorResponse UNAVAILABLE + retry_info",
              er.type == pb.ServerErrorResponseType.Value("ServerErrorResponseType_Unavailable")
              and er.retry_info.retry_after_nanoseconds == 7_000_000_000, r)
        try:
            ws.recv(5)
            closed = None
        except ConnectionClosed as e:
            closed = e.rcvd.code if e.rcvd else None
        check("unavailable: ws closed with 1013", closed == 1013, closed)
    check("after K refusals requests pass", http_post(srv.ports["http"], a2s(12))[0] == 200)
    srv.ctl("POST", "/unavailable", {"count": 1, "retry_after_seconds": 3, "ws_mode": "handshake"})
    try:
        connect(ws_url).close()
        status = None
    except InvalidStatus as e:
        status = (e.response.status_code, e.response.headers.get("Retry-After"))
    check("unavailable: ws handshake 503 + Retry-After", status == (503, "3"), status)
    ref = srv.ctl("GET", "/refusals")
    check("refusals recorded", [(r["transport"], r["mode"]) for r in ref] ==
          [("http", "http-503"), ("ws", "message"), ("ws", "handshake")], ref)
    srv.ctl("POST", "/reset", {})
    check("/reset clears messages and refusals",
          srv.ctl("GET", "/messages") == [] and srv.ctl("GET", "/refusals") == [])


def test_robustness(srv):
    """Garbage on every port, a bad path, a dropped connection: the server answers and lives on."""
    import socket

    for port in srv.ports.values():
        with socket.create_connection(("127.0.0.1", port), 5) as s:
            s.sendall(os.urandom(512) + b"\r\n\r\n")
            s.settimeout(5)
            try:
                s.recv(100)
            except OSError:
                pass
    try:
        connect(f"ws://127.0.0.1:{srv.ports['ws']}/elsewhere").close()
        status = None
    except InvalidStatus as e:
        status = e.response.status_code
    check("ws: other paths get 404", status == 404, status)
    ws = connect(f"ws://127.0.0.1:{srv.ports['ws']}/v1/opamp")
    ws.socket.sendall(b"\x82\x7f")  # a binary frame header cut short, then the TCP connection drops
    ws.socket.close()
    port = srv.ports["http"]
    codes = []
    for headers, body in (({"Content-Length": "x"}, b""), ({"Content-Encoding": "gzip"}, b"\x1f\x8bnot gzip")):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/opamp", body, headers, method="POST")
        try:
            urllib.request.urlopen(req, timeout=5)
        except urllib.error.HTTPError as e:
            codes.append(e.code)
    check("http: bad Content-Length, bad gzip -> 400", codes == [400, 400], codes)
    bad = [("/remote_config", b"{not json"), ("/remote_config", b'{"files": {"a.sig": "!!"}}'),
           ("/new_instance_uid", b'{"uid_hex": "zz"}'), ("/unavailable", b"{}"), ("/nowhere", b"{}")]
    for path, body in bad:
        req = urllib.request.Request(f"http://127.0.0.1:{srv.ports['control']}{path}", body, method="POST")
        try:
            urllib.request.urlopen(req, timeout=5)
            codes.append(200)
        except urllib.error.HTTPError as e:
            codes.append(e.code)
    check("control: bad requests -> 400/404", codes[2:] == [400, 400, 400, 400, 404], codes)
    code, _, r = http_post(port, a2s(20))
    check("still serving after all that", code == 200 and r.instance_uid == UID and srv.p.poll() is None)


def tls_ctx(ca, cert=None, key=None):
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def test_tls(proto_root, d):
    """Mutual TLS with a throwaway PKI from pki.py, then a client certificate rotation offered over
    wss: the client switches from client1 to client2. Skipped if openssl is missing."""
    import shutil

    if not shutil.which("openssl"):
        print("skip TLS checks: no openssl")
        return
    import pki

    k = pki.make(os.path.join(d, "pki"))
    srv = Server(proto_root, "--tls-cert", k["server_cert"], "--tls-key", k["server_key"], "--client-ca", k["ca"])
    try:
        ctx1 = tls_ctx(k["ca"], k["client1_cert"], k["client1_key"])
        code, _, r = http_post(srv.ports["http"], a2s(0), "https", ctx1)
        check("tls: https with a client cert", code == 200 and r.instance_uid == UID, code)
        with connect(f"wss://127.0.0.1:{srv.ports['ws']}/v1/opamp", ssl=ctx1) as ws:
            ws_send(ws, a2s(1))
            check("tls: wss with a client cert", ws_recv(ws).instance_uid == UID)
        msgs = srv.ctl("GET", "/messages")
        check("tls: client cert subject, CN, serial recorded",
              [(m["client_cert_subject"], m["client_cert_cn"], m["client_cert_serial"]) for m in msgs]
              == [("commonName=otelprof-client-1", "otelprof-client-1", k["client1_serial"])] * 2, msgs)
        failures = 0
        for name, ctx in (("no client cert", tls_ctx(k["ca"])),
                          ("a client cert of another CA", tls_ctx(k["ca"], k["bad_cert"], k["bad_key"]))):
            try:
                http_post(srv.ports["http"], a2s(2), "https", ctx)
                refused = False
            except (urllib.error.URLError, ssl.SSLError, ConnectionError):
                refused = True
            failures += 1
            check(f"tls: {name} -> refused, counted", refused and srv.wait_state("tls_failures", failures) == failures)
        test_cert_rotation(srv, k, d)
    finally:
        srv.stop()


def test_cert_rotation(srv, k, d):
    """The server offers client2 (files) to a wss client on client1 until reported; the client
    reconnects with the offered PEMs and reports the hash; the server records client2."""
    srv.ctl("POST", "/reset", {})
    url = f"wss://127.0.0.1:{srv.ports['ws']}/v1/opamp"
    caps = pb.AgentCapabilities.Value("AgentCapabilities_AcceptsOpAMPConnectionSettings")
    with connect(url, ssl=tls_ctx(k["ca"], k["client1_cert"], k["client1_key"])) as ws:
        ws_send(ws, a2s(10, capabilities=caps))
        ws_recv(ws)
        res = srv.ctl("POST", "/connection_settings", {
            "opamp_certificate": {"cert_file": k["client2_cert"], "key_file": k["client2_key"], "ca_file": k["ca"]},
            "heartbeat_interval_seconds": 30, "until_reported": True})
        cs = ws_recv(ws).connection_settings
        files = {}
        for n in ("client2_cert", "client2_key", "ca"):
            with open(k[n], "rb") as f:
                files[n] = f.read()
        cert = cs.opamp.certificate
        bare = pb.ConnectionSettingsOffers()
        bare.CopyFrom(cs)
        bare.ClearField("hash")
        check("cert offer: pushed on wss, PEM bytes of the files, heartbeat, hash",
              res["pushed"] and cert.cert == files["client2_cert"] and cert.private_key == files["client2_key"]
              and cert.ca_cert == files["ca"] and cs.opamp.heartbeat_interval_seconds == 30
              and cs.hash == hashlib.sha256(bare.SerializeToString(deterministic=True)).digest()
              and res["hash"] == cs.hash.hex() == srv.ctl("GET", "/state")["offered_connection_settings_hash"],
              (res, cs))
        ws_send(ws, a2s(11))
        check("cert offer: re-offered until reported", ws_recv(ws).connection_settings.hash == cs.hash)
    for n, b in (("new.pem", cert.cert), ("new.key", cert.private_key)):
        with open(os.path.join(d, n), "wb") as f:
            f.write(b)
    ctx2 = tls_ctx(k["ca"], os.path.join(d, "new.pem"), os.path.join(d, "new.key"))
    applied = pb.ConnectionSettingsStatuses.Value("ConnectionSettingsStatuses_APPLIED")
    with connect(url, ssl=ctx2) as ws:
        ws_send(ws, a2s(12, connection_settings_status=pb.ConnectionSettingsStatus(
            last_connection_settings_hash=cs.hash, status=applied)))
        check("cert offer: not offered once the hash is reported", not ws_recv(ws).HasField("connection_settings"))
    seen = [(m["sequence_num"], m["client_cert_cn"], m["client_cert_serial"]) for m in srv.ctl("GET", "/messages")]
    check("rotation: messages before over client1, after over client2",
          seen == [("10", "otelprof-client-1", k["client1_serial"]), ("11", "otelprof-client-1", k["client1_serial"]),
                   ("12", "otelprof-client-2", k["client2_serial"])], seen)
    conns = [(c["transport"], c["client_cert_subject"]) for c in srv.ctl("GET", "/connections")]
    check("rotation: /connections records each wss connection's client cert",
          conns == [("ws", "commonName=otelprof-client-1"), ("ws", "commonName=otelprof-client-2")], conns)

    with open(k["client1_key"]) as f:
        key1 = f.read()
    res = srv.ctl("POST", "/connection_settings", {"opamp_certificate": {"cert_pem": "not a cert", "key_pem": key1}})
    _, _, r = http_post(srv.ports["http"], a2s(13), "https", ctx2)
    c = r.connection_settings.opamp.certificate
    check("cert offer: inline PEM, unchecked, no ca_cert, one-shot over https",
          c.cert == b"not a cert" and c.private_key == key1.encode() and c.ca_cert == b""
          and r.connection_settings.hash.hex() == res["hash"], r)
    codes = []
    for spec in ({"cert_pem": "x"}, {"cert_file": os.path.join(d, "missing.pem"), "key_pem": "x"},
                 {"cert_pem": "x", "cert_file": k["ca"], "key_pem": "x"}):
        req = urllib.request.Request(f"http://127.0.0.1:{srv.ports['control']}/connection_settings",
                                     json.dumps({"opamp_certificate": spec}).encode(), method="POST")
        try:
            urllib.request.urlopen(req, timeout=5)
            codes.append(200)
        except urllib.error.HTTPError as e:
            codes.append(e.code)
    check("cert offer: no key, a missing file, file and inline both -> 400", codes == [400] * 3, codes)


def main():
    global pb
    ap = argparse.ArgumentParser()
    ap.add_argument("--proto-root", default=protos.REPO_ROOT)
    args = ap.parse_args()
    pb = protos.load(args.proto_root)
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, os.path.join(HERE, "sign.py"), "keygen", d], check=True)
        srv = Server(args.proto_root)
        try:
            test_ws(srv, d)
            test_http(srv)
            test_unavailable(srv)
            test_robustness(srv)
        finally:
            code = srv.stop()
        check("SIGTERM exits 0", code == 0, code)
        test_tls(args.proto_root, d)
    print(f"selftest: {results['passed']} passed, {results['failed']} failed")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
