#!/usr/bin/env python3
"""A real OpAMP server for the agent's integration tests (issue #14).

  server.py [--proto-root REPO_ROOT] [--ws-port 0] [--http-port 0] [--control-port 0]
            [--tls-cert PEM --tls-key PEM [--client-ca PEM]] [--verbose]

At start it generates the Python classes from the vendored protos, REPO_ROOT/proto/opamp/v1/*.proto
with include dir REPO_ROOT/proto (--proto-root REPO_ROOT defaults to this repository's root, found
from this file's location), with grpc_tools.protoc into a temporary directory (protos.py), then
serves, all on 127.0.0.1 (port 0 = the OS picks one):

* OpAMP over WebSocket at ws[s]://127.0.0.1:WS/v1/opamp: binary frames, each a varint header (0)
  followed by the serialized message, both ways. Each AgentToServer gets one ServerToAgent.
* OpAMP over plain HTTP: POST http[s]://127.0.0.1:HTTP/v1/opamp, body AgentToServer
  (application/x-protobuf, Content-Encoding gzip accepted), answer ServerToAgent.
* A JSON control API on http://127.0.0.1:CONTROL (never TLS) for the tests (below).

When all three listen it prints ONE line to stdout, `{"ws": PORT, "http": PORT, "control": PORT}`,
and flushes. SIGTERM/SIGINT stop it (exit 0). --tls-cert/--tls-key put TLS on the WS and HTTP
ports; --client-ca also requires a client certificate signed by that CA (handshake failures are
counted in /state `tls_failures`). Each message and connection then records the client cert it came
over as client_cert_subject ("commonName=otelprof-client-1"), client_cert_cn ("otelprof-client-1")
and client_cert_serial (`openssl x509 -noout -serial`'s hex in lowercase without leading zeros, as
pki.py prints it); all three null without a client cert. pki.py DIR makes a CA,
a server cert and client certs for this (see its docstring).

Every reply but the UNAVAILABLE error response carries capabilities AcceptsStatus|
OffersRemoteConfig|AcceptsEffectiveConfig|OffersConnectionSettings (= 39) and instance_uid = the
agent's (the request's; on a WS push the last one seen on that connection). Malformed requests
(bad header, text frame, undecodable protobuf) are logged to stderr and counted in /state
`malformed`; a WS connection stays open after one; HTTP answers 400.

Control API (JSON in, JSON out):
  GET  /messages            every AgentToServer so far, in order: MessageToDict(preserving_proto_
                            field_name=True) plus transport ("ws"|"http"), received_at (unix s),
                            instance_uid_hex, instance_uid_header (HTTP's OpAMP-Instance-UID, else
                            null), headers (HTTP request / WS handshake), client_cert_subject
                            (TLS client cert subject as "commonName=client,...", else null),
                            client_cert_cn, client_cert_serial (hex; see above; else null).
                            MessageToDict's JSON: uint64/fixed64 as strings ("sequence_num": "3"),
                            bytes as base64, fields at their default value (0, "", false) left out.
                            ?since=N skips the first N.
  GET  /state               last remote_config_status, effective_config ({name: {content_type,
                            body}} with body decoded as UTF-8), health, agent_description,
                            connection_settings_status, capabilities {value, names},
                            sequence_num {uid_hex: last} (ints), agent_disconnect (bool),
                            disconnected_uids, instance_uids, malformed, tls_failures,
                            ws_connected, offered_remote_config_hash, issued_instance_uids,
                            offered_connection_settings_hash (hex of the until_reported offer, else
                            null).
  GET  /connections         [{transport, at, client_cert_subject, client_cert_cn,
                            client_cert_serial}]: one per WS connection whose handshake completed
                            (refused ones too, not a 503 handshake) and one per HTTP request to
                            /v1/opamp, in order, so a test sees which client cert connected even
                            before (or without) a message.
  GET  /refusals            [{transport, at, retry_after_seconds, mode}] of refused requests.
  GET  /replies             every ServerToAgent sent (replies, WS pushes, WS error responses),
                            MessageToDict as above plus transport and sent_at (HTTP 503s have
                            no body and are only in /refusals).
  POST /remote_config       {"files": {NAME: VALUE}, "content_type": "text/yaml"}: sets the
                            offered AgentRemoteConfig. VALUE is text (UTF-8), except for names
                            ending in ".sig", whose string is base64 and the file body is the
                            decoded bytes (content type application/octet-stream); or an object
                            {"text": s} / {"b64": s}, optionally with "content_type".
                            config_hash = SHA-256 over the files in sorted name order, each name
                            (UTF-8) then body bytes, concatenated with no separator:
                            sha256(name1 + body1 + name2 + body2 ...). Returned as {"hash": hex}.
                            Offered like opamp-go: it is put in a reply whenever the agent's last
                            reported remote_config_status.last_remote_config_hash (per instance
                            uid; statuses omitted as unchanged keep the last one) differs from it,
                            APPLIED or FAILED alike; it is also pushed at once to every connected
                            WS client. Sent whatever capabilities the agent declared.
  POST /flags               {"report_full_state": true}: the next reply carries
                            ServerToAgentFlags_ReportFullState.
  POST /connection_settings {"heartbeat_interval_seconds": N?, "own_metrics_endpoint": URL?,
                            "opamp_certificate": CERT?, "until_reported": false}: the next reply
                            carries ConnectionSettingsOffers with opamp.heartbeat_interval_seconds /
                            own_metrics.destination_endpoint / opamp.certificate (any combination);
                            its hash is SHA-256 of the offers serialized (deterministic) without
                            the hash. A one-shot by default; with "until_reported": true it is
                            offered like the remote config, until the agent's connection_settings_
                            status.last_connection_settings_hash (newer protos) matches. A new POST
                            replaces the previous offer. Returns {"pushed": bool, "hash": hex}.
                            CERT (client certificate rotation) is {"cert_file": PATH, "key_file":
                            PATH, "ca_file": PATH?}: server-side PEM files, read when posted (a
                            missing one is a 400), sent as bytes in opamp.certificate {cert,
                            private_key, ca_cert} (TLSCertificate); or inline "cert_pem",
                            "key_pem", "ca_pem" (text; per item a file or inline, not both). cert
                            and key are required, ca optional (ca_cert left empty); the bytes are
                            not checked, so a test can offer a broken certificate.
  POST /new_instance_uid    {"uid_hex": "..."}: the next reply carries agent_identification.
  POST /unavailable         {"count": K, "retry_after_seconds": S, "ws_mode": "message"}: the next
                            K HTTP requests / WS connections (each handshake counts one) are
                            refused (a new POST replaces the count, it does not add). HTTP: 503
                            with Retry-After: S. WS, ws_mode "message" (default): the handshake
                            succeeds, the first AgentToServer is answered with ServerErrorResponse
                            {UNAVAILABLE, retry_info.retry_after_nanoseconds = S*1e9} and the
                            connection is closed (1013); ws_mode "handshake": the upgrade is
                            refused with HTTP 503 + Retry-After.
  POST /disconnect          closes every WS connection (code 1001) to test reconnects.
  POST /reset               clears the recorded messages, replies, refusals and connections
                            (offers and /state stay).
Bad input (JSON, base64, hex, a missing key) gets 400 {"error": ...}; an unknown path 404.
"One-shot" offers (flags, connection settings, new instance uid) go out in the next reply to any
AgentToServer or, if a WS client is connected when they are posted, are pushed to it at once;
either way they are sent once. An AgentToServer with flags AgentToServerFlags_RequestInstanceUid
gets agent_identification with a fresh UUIDv7 (unless /new_instance_uid's is going out anyway).

Signed remote config: the Rust agent verifies an Ed25519 signature over the raw bytes of the config
file (e.g. otelprof.yaml) carried in the file NAME.sig (64 raw signature bytes). Its public key
file is either the raw 32 bytes or PEM SubjectPublicKeyInfo (-----BEGIN PUBLIC KEY-----); sign.py
keygen writes the PEM form (and the raw form beside it), sign.py sign prints the base64 signature
that POST /remote_config takes for NAME.sig.
"""
import argparse
import asyncio
import base64
import gzip
import hashlib
import http.server
import json
import os
import signal
import ssl
import sys
import threading
import time
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import protos  # noqa: E402

pb = None  # opamp.v1.opamp_pb2, set in main()
MessageToDict = None
OPAMP_PATH = "/v1/opamp"


def log(*args):
    print("opamp-server:", *args, file=sys.stderr, flush=True)


def decode_ws_frame(data):
    """WS payload -> AgentToServer; ValueError if the header is not varint 0 or the body is bad."""
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError("text frame")
    if not data or data[0] != 0:  # the varint 0 is the single byte 0x00
        raise ValueError(f"bad header {bytes(data[:10]).hex()}")
    return parse_a2s(bytes(data[1:]))


def parse_a2s(body):
    msg = pb.AgentToServer()
    try:
        msg.ParseFromString(body)
    except Exception as e:  # google.protobuf.message.DecodeError and friends
        raise ValueError(f"undecodable AgentToServer: {e}") from None
    return msg


def uuid7():
    """16 bytes of a UUIDv7 (48-bit unix ms, version 7, variant 10, random rest)."""
    b = bytearray(int(time.time() * 1000).to_bytes(6, "big") + os.urandom(10))
    b[6] = 0x70 | (b[6] & 0x0F)
    b[8] = 0x80 | (b[8] & 0x3F)
    return bytes(b)


def config_hash(files):
    """sha256(name1 + body1 + name2 + body2 ...) over the files in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode())
        h.update(files[name][0])
    return h.digest()


def file_value(name, value, default_ct):
    """A /remote_config file value -> (body bytes, content type)."""
    if isinstance(value, str):
        if name.endswith(".sig"):
            return base64.b64decode(value, validate=True), "application/octet-stream"
        return value.encode(), default_ct
    if "b64" in value:
        return base64.b64decode(value["b64"], validate=True), value.get("content_type", default_ct)
    return value["text"].encode(), value.get("content_type", default_ct)


class State:
    """Everything recorded and offered; one lock, taken by the WS loop and the HTTP threads."""

    LAST_FIELDS = ("remote_config_status", "effective_config", "health", "agent_description",
                   "connection_settings_status")  # the last one only in newer protos
    CAPS = ("AcceptsStatus", "OffersRemoteConfig", "AcceptsEffectiveConfig", "OffersConnectionSettings")

    def __init__(self):
        self.lock = threading.Lock()
        self.messages, self.refusals, self.replies, self.connections = [], [], [], []
        self.malformed = self.tls_failures = 0
        self.last = {}  # field name -> last AgentToServer submessage / value seen
        # uid hex -> last sequence_num / last reported remote config hash / connection settings hash
        self.seq, self.rc_hash, self.cs_hash = {}, {}, {}
        self.issued_uids = []
        self.disconnected = []
        self.remote_config = None  # pb.AgentRemoteConfig offered
        self.flags = 0
        self.conn_settings = self.new_uid = None  # one-shot offers
        self.cs_offer = None  # connection settings offered until reported (until_reported)
        self.unavailable = {"count": 0, "retry_after_seconds": 0, "ws_mode": "message"}
        self.capabilities = 0
        for c in self.CAPS:
            self.capabilities |= pb.ServerCapabilities.Value("ServerCapabilities_" + c)

    def record(self, msg, transport, headers, uid_header=None, peer=None):
        uid = msg.instance_uid.hex()
        with self.lock:
            rec = MessageToDict(msg, preserving_proto_field_name=True)
            rec.update(transport=transport, received_at=time.time(), instance_uid_hex=uid,
                       instance_uid_header=uid_header, headers=headers, **(peer or peer_info(None)))
            self.messages.append(rec)
            self.seq[uid] = msg.sequence_num
            for f in self.LAST_FIELDS:
                if f in msg.DESCRIPTOR.fields_by_name and msg.HasField(f):
                    self.last[f] = getattr(msg, f)
            if msg.capabilities:
                self.last["capabilities"] = msg.capabilities
            if msg.HasField("remote_config_status"):
                self.rc_hash[uid] = msg.remote_config_status.last_remote_config_hash
            if "connection_settings_status" in msg.DESCRIPTOR.fields_by_name and msg.HasField(
                    "connection_settings_status"):
                self.cs_hash[uid] = msg.connection_settings_status.last_connection_settings_hash
            if msg.HasField("agent_disconnect"):
                self.disconnected.append(uid)

    def reply(self, uid, one_shots=True, agent_flags=0):
        """The ServerToAgent for an agent whose instance uid is UID (bytes, may be empty)."""
        with self.lock:
            out = pb.ServerToAgent(instance_uid=uid, capabilities=self.capabilities)
            rc, cs = self.remote_config, self.cs_offer
            if rc is not None and self.rc_hash.get(uid.hex()) != rc.config_hash:
                out.remote_config.CopyFrom(rc)
            if cs is not None and self.cs_hash.get(uid.hex()) != cs.hash:
                out.connection_settings.CopyFrom(cs)
            if one_shots:
                self.take_one_shots(out)
            if agent_flags & 1 and not out.HasField("agent_identification"):  # RequestInstanceUid
                out.agent_identification.new_instance_uid = uuid7()
                self.issued_uids.append(out.agent_identification.new_instance_uid.hex())
            return out

    def connected(self, transport, peer):
        """Records a WS connection (handshake done) or an HTTP OpAMP request and its client cert."""
        with self.lock:
            self.connections.append({"transport": transport, "at": time.time(), **peer})

    def sent(self, msg, transport):
        with self.lock:
            rec = MessageToDict(msg, preserving_proto_field_name=True)
            rec.update(transport=transport, sent_at=time.time())
            self.replies.append(rec)

    def take_one_shots(self, out):
        out.flags |= self.flags
        if self.conn_settings is not None:
            out.connection_settings.CopyFrom(self.conn_settings)
        if self.new_uid is not None:
            out.agent_identification.new_instance_uid = self.new_uid
            self.issued_uids.append(self.new_uid.hex())
        self.flags, self.conn_settings, self.new_uid = 0, None, None

    def requeue(self, out):
        """Puts the one-shot offers that OUT took back, unless newer ones were posted meanwhile."""
        with self.lock:
            self.flags |= out.flags
            cs = out.connection_settings
            if out.HasField("connection_settings") and self.conn_settings is None and cs != self.cs_offer:
                self.conn_settings = cs
            if out.HasField("agent_identification") and self.new_uid is None:
                self.new_uid = out.agent_identification.new_instance_uid
                self.issued_uids.remove(self.new_uid.hex())

    def refuse(self, transport):
        """Consumes one refusal if any are left: returns (retry_after_seconds, ws_mode) or None."""
        with self.lock:
            u = self.unavailable
            if u["count"] <= 0:
                return None
            u["count"] -= 1
            self.refusals.append({"transport": transport, "at": time.time(),
                                  "retry_after_seconds": u["retry_after_seconds"],
                                  "mode": u["ws_mode"] if transport == "ws" else "http-503"})
            return u["retry_after_seconds"], u["ws_mode"]

    def bad(self, what):
        log("malformed:", what)
        with self.lock:
            self.malformed += 1

    def snapshot(self, ws_connected):
        def d(m):
            return MessageToDict(m, preserving_proto_field_name=True) if m is not None else None

        with self.lock:
            caps = self.last.get("capabilities", 0)
            eff = self.last.get("effective_config")
            rc = self.remote_config
            return {
                "remote_config_status": d(self.last.get("remote_config_status")),
                "effective_config": None if eff is None else {
                    n: {"content_type": f.content_type, "body": f.body.decode("utf-8", "replace")}
                    for n, f in eff.config_map.config_map.items()},
                "health": d(self.last.get("health")),
                "connection_settings_status": d(self.last.get("connection_settings_status")),
                "agent_description": d(self.last.get("agent_description")),
                "capabilities": {"value": caps, "names": [
                    v.name.removeprefix("AgentCapabilities_") for v in pb.AgentCapabilities.DESCRIPTOR.values
                    if v.number and caps & v.number]},
                "sequence_num": dict(self.seq),
                "agent_disconnect": bool(self.disconnected),
                "disconnected_uids": list(self.disconnected),
                "instance_uids": list(self.seq),
                "malformed": self.malformed,
                "tls_failures": self.tls_failures,
                "ws_connected": ws_connected,
                "offered_remote_config_hash": rc.config_hash.hex() if rc is not None else None,
                "offered_connection_settings_hash": self.cs_offer.hash.hex() if self.cs_offer else None,
                "issued_instance_uids": list(self.issued_uids),
            }


class WsServer:
    """OpAMP over WebSocket; lives on the asyncio loop."""

    def __init__(self, state):
        self.state, self.conns, self.loop = state, {}, None  # conn -> last instance uid bytes

    def process_request(self, conn, request):
        if urlparse(request.path).path != OPAMP_PATH:
            return conn.respond(404, "not an OpAMP path\n")
        refused = self.state.refuse("ws")
        conn.refused = refused
        if refused and refused[1] == "handshake":
            resp = conn.respond(503, "unavailable\n")
            resp.headers["Retry-After"] = str(refused[0])
            return resp
        return None

    async def handler(self, conn):
        headers = {k: v for k, v in conn.request.headers.raw_items()}
        peer = peer_info(conn.transport.get_extra_info("peercert"))
        self.state.connected("ws", peer)
        if getattr(conn, "refused", None):
            await self.refuse(conn, conn.refused[0])
            return
        self.conns[conn] = b""
        try:
            async for data in conn:
                try:
                    msg = decode_ws_frame(data)
                except ValueError as e:
                    self.state.bad(f"ws: {e}")
                    continue
                self.conns[conn] = msg.instance_uid
                self.state.record(msg, "ws", headers, peer=peer)
                await self.send(conn, self.state.reply(msg.instance_uid, agent_flags=msg.flags))
        except Exception as e:  # a connection dropped mid-frame etc.: log, never crash
            log("ws connection ended:", repr(e))
        finally:
            self.conns.pop(conn, None)

    async def refuse(self, conn, retry_after):
        try:
            data = await asyncio.wait_for(conn.recv(), 10)
            uid = decode_ws_frame(data).instance_uid
        except Exception as e:
            log("ws refusal: no usable first message:", repr(e))
            uid = b""
        err = pb.ServerToAgent(instance_uid=uid)
        err.error_response.type = pb.ServerErrorResponseType.Value("ServerErrorResponseType_Unavailable")
        err.error_response.error_message = "server unavailable (test)"
        err.error_response.retry_info.retry_after_nanoseconds = int(retry_after * 1_000_000_000)
        try:
            await self.send(conn, err)
            await conn.close(1013, "try again later")
        except Exception as e:
            log("ws refusal:", repr(e))

    async def send(self, conn, msg):
        await conn.send(b"\x00" + msg.SerializeToString())
        self.state.sent(msg, "ws")

    async def push(self, one_shots):
        """Sends a ServerToAgent to every connected client; True if one got it. The one-shot
        offers go to the first client that takes them (back in the queue if a send fails)."""
        sent = False
        for conn, uid in list(self.conns.items()):
            taking = one_shots and not sent
            out = self.state.reply(uid, one_shots=taking)
            try:
                await self.send(conn, out)
                sent = True
            except Exception as e:
                log("ws push failed:", repr(e))
                if taking:
                    self.state.requeue(out)
        return sent

    async def disconnect(self):
        await asyncio.gather(*(c.close(1001, "server closing the connection (test)") for c in list(self.conns)))
        return True

    def run(self, coro_fn, *args):
        """From another thread: runs coro_fn(*args) on the loop, returns its result."""
        return asyncio.run_coroutine_threadsafe(coro_fn(*args), self.loop).result(10)


def peer_info(cert):
    """ssl's getpeercert() dict (None without a verified client cert) -> the client_cert_* fields:
    subject "commonName=x,...", its CN, serial as lowercase hex without leading zeros."""
    if not cert:
        return {"client_cert_subject": None, "client_cert_cn": None, "client_cert_serial": None}
    rdns = [(k, v) for rdn in cert.get("subject", ()) for k, v in rdn]
    serial = cert.get("serialNumber")
    return {"client_cert_subject": ",".join(f"{k}={v}" for k, v in rdns),
            "client_cert_cn": next((v for k, v in rdns if k == "commonName"), None),
            "client_cert_serial": format(int(serial, 16), "x") if serial else None}


def read_pem(spec, what, required):
    """opamp_certificate's WHAT_file (a path read now) or WHAT_pem (inline text) -> bytes."""
    if f"{what}_file" in spec and f"{what}_pem" in spec:
        raise ValueError(f"opamp_certificate: {what}_file and {what}_pem both given")
    if f"{what}_file" in spec:
        with open(spec[f"{what}_file"], "rb") as f:
            return f.read()
    if f"{what}_pem" in spec:
        return spec[f"{what}_pem"].encode()
    if required:
        raise ValueError(f"opamp_certificate needs {what}_file or {what}_pem")
    return None


class HttpServer(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer whose TLS handshake (if any) runs in the request's own thread."""

    daemon_threads = True

    def __init__(self, addr, handler, state, tls=None):
        self.state, self.tls = state, tls
        super().__init__(addr, handler)

    def finish_request(self, request, client_address):
        if self.tls is None:
            return super().finish_request(request, client_address)
        try:
            request = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log("tls handshake failed:", repr(e))
            with self.state.lock:
                self.state.tls_failures += 1
            return None
        try:
            super().finish_request(request, client_address)
        finally:
            request.close()

    def handle_error(self, request, client_address):
        log("http connection error:", repr(sys.exc_info()[1]))


class OpampHttpHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            log("http:", fmt % args)

    def answer(self, code, body=b"", ctype="text/plain", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        st = self.server.state
        try:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        except ValueError:
            st.bad("http: bad Content-Length")
            self.close_connection = True
            return self.answer(400, b"bad Content-Length\n")
        if urlparse(self.path).path != OPAMP_PATH:
            return self.answer(404, b"not an OpAMP path\n")
        peer = peer_info(self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None)
        st.connected("http", peer)
        refused = st.refuse("http")
        if refused:
            return self.answer(503, b"unavailable\n", extra=[("Retry-After", str(refused[0]))])
        try:
            if self.headers.get("Content-Encoding", "identity").lower() == "gzip":
                body = gzip.decompress(body)
            msg = parse_a2s(body)
        except Exception as e:  # ValueError from parse_a2s; gzip's OSError, EOFError, zlib.error
            st.bad(f"http: {e}")
            return self.answer(400, f"{e}\n".encode())
        st.record(msg, "http", dict(self.headers.items()), self.headers.get("OpAMP-Instance-UID"), peer)
        out = st.reply(msg.instance_uid, agent_flags=msg.flags)
        st.sent(out, "http")
        self.answer(200, out.SerializeToString(), "application/x-protobuf")


class ControlHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            log("control:", fmt % args)

    def send_json(self, obj, code=200):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        st, url = self.server.state, urlparse(self.path)
        if url.path == "/messages":
            try:
                since = int(parse_qs(url.query).get("since", ["0"])[0])
            except ValueError:
                return self.send_json({"error": "since must be an integer"}, 400)
            with st.lock:
                return self.send_json(st.messages[since:])
        if url.path in ("/refusals", "/replies", "/connections"):
            with st.lock:
                return self.send_json(list({"/refusals": st.refusals, "/replies": st.replies,
                                            "/connections": st.connections}[url.path]))
        if url.path == "/state":
            return self.send_json(st.snapshot(len(self.server.ws.conns)))
        self.send_json({"error": "unknown path"}, 404)

    def do_POST(self):
        try:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            req = json.loads(raw) if raw.strip() else {}
            res = self.route(urlparse(self.path).path, req)
        except Exception as e:  # bad JSON, bad base64, bad hex ...: the caller's mistake
            return self.send_json({"error": repr(e)}, 400)
        if res is None:
            return self.send_json({"error": "unknown path"}, 404)
        self.send_json(res)

    def route(self, path, req):
        st, ws = self.server.state, self.server.ws
        if path == "/remote_config":
            ct = req.get("content_type", "text/yaml")
            files = {n: file_value(n, v, ct) for n, v in req["files"].items()}
            rc = pb.AgentRemoteConfig(config_hash=config_hash(files))
            for n, (body, fct) in files.items():
                rc.config.config_map[n].body, rc.config.config_map[n].content_type = body, fct
            with st.lock:
                st.remote_config = rc
            ws.run(ws.push, False)
            return {"hash": rc.config_hash.hex()}
        if path in ("/flags", "/connection_settings", "/new_instance_uid"):
            res = {}
            if path == "/connection_settings":
                cs = pb.ConnectionSettingsOffers()
                if "heartbeat_interval_seconds" in req:
                    cs.opamp.heartbeat_interval_seconds = int(req["heartbeat_interval_seconds"])
                if "own_metrics_endpoint" in req:
                    cs.own_metrics.destination_endpoint = req["own_metrics_endpoint"]
                if "opamp_certificate" in req:  # files read here, before the lock
                    spec, cert = req["opamp_certificate"], cs.opamp.certificate
                    cert.SetInParent()  # present even if a test offers empty PEMs
                    cert.cert, cert.private_key = read_pem(spec, "cert", True), read_pem(spec, "key", True)
                    ca = read_pem(spec, "ca", False)
                    if ca is not None:
                        cert.ca_cert = ca
                cs.hash = hashlib.sha256(cs.SerializeToString(deterministic=True)).digest()
                res["hash"] = cs.hash.hex()
            with st.lock:
                if path == "/flags" and req.get("report_full_state"):
                    st.flags |= pb.ServerToAgentFlags.Value("ServerToAgentFlags_ReportFullState")
                if path == "/connection_settings":
                    st.cs_offer, st.conn_settings = (cs, None) if req.get("until_reported") else (None, cs)
                if path == "/new_instance_uid":
                    st.new_uid = bytes.fromhex(req["uid_hex"])
            return {"pushed": ws.run(ws.push, True), **res}
        if path == "/unavailable":
            mode = req.get("ws_mode", "message")
            if mode not in ("message", "handshake"):
                raise ValueError(f"ws_mode {mode!r}")
            with st.lock:
                st.unavailable = {"count": int(req["count"]), "ws_mode": mode,
                                  "retry_after_seconds": int(req.get("retry_after_seconds", 0))}
            return {"ok": True}
        if path == "/disconnect":
            return {"closed": ws.run(ws.disconnect)}
        if path == "/reset":
            with st.lock:
                st.messages.clear()
                st.refusals.clear()
                st.replies.clear()
                st.connections.clear()
            return {"ok": True}
        return None


def tls_context(args):
    if not args.tls_cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.tls_cert, args.tls_key)
    if args.client_ca:
        ctx.load_verify_locations(args.client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def start_http(port, handler, state, ws, verbose, tls=None):
    srv = HttpServer(("127.0.0.1", port), handler, state, tls)
    srv.ws, srv.verbose = ws, verbose
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


async def amain(args):
    from websockets.asyncio.server import serve

    state = State()
    ws = WsServer(state)
    ws.loop = asyncio.get_running_loop()
    tls = tls_context(args)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        ws.loop.add_signal_handler(sig, stop.set)
    async with serve(ws.handler, "127.0.0.1", args.ws_port, ssl=tls, process_request=ws.process_request,
                     max_size=64 << 20, ping_interval=None, close_timeout=2) as wss:
        http_srv = start_http(args.http_port, OpampHttpHandler, state, ws, args.verbose, tls)
        ctl = start_http(args.control_port, ControlHandler, state, ws, args.verbose)
        ports = {"ws": wss.sockets[0].getsockname()[1], "http": http_srv.server_address[1],
                 "control": ctl.server_address[1]}
        print(json.dumps(ports), flush=True)
        await stop.wait()
        log("stopping")
        for s in (http_srv, ctl):
            s.shutdown()
            s.server_close()


def main():
    global pb, MessageToDict
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proto-root", default=protos.REPO_ROOT, metavar="REPO_ROOT",
                    help="repository root holding proto/opamp/v1/*.proto (default: this repo)")
    ap.add_argument("--ws-port", type=int, default=0, help="OpAMP/WebSocket port (0: any)")
    ap.add_argument("--http-port", type=int, default=0, help="OpAMP/HTTP port (0: any)")
    ap.add_argument("--control-port", type=int, default=0, help="JSON control API port (0: any)")
    ap.add_argument("--tls-cert", metavar="PEM", help="server certificate (chain) for the WS and HTTP ports")
    ap.add_argument("--tls-key", metavar="PEM", help="its private key")
    ap.add_argument("--client-ca", metavar="PEM", help="require client certificates signed by this CA")
    ap.add_argument("--verbose", action="store_true", help="log every HTTP request to stderr")
    args = ap.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key) or (args.client_ca and not args.tls_cert):
        ap.error("--tls-cert and --tls-key go together; --client-ca needs them")
    pb = protos.load(args.proto_root)
    from google.protobuf.json_format import MessageToDict as m2d
    MessageToDict = m2d
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
