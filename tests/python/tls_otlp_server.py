#!/usr/bin/env python3
"""An OTLP/HTTP endpoint over TLS that requires a client certificate (mutual TLS), for otelprof's
export tests. Built on Python's own ssl and http.server, independent of otelprof's Rust stack.

Usage: tls_otlp_server.py CERT KEY CLIENT_CA OUT_DIR
Prints the port it listens on, then writes each request body it accepts to OUT_DIR/N.bin along
with the subject of the client certificate in OUT_DIR/N.peer.
"""
import gzip
import http.server
import os
import ssl
import sys

cert, key, client_ca, out = sys.argv[1:5]
count = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        peer = dict(x[0] for x in self.connection.getpeercert()["subject"])
        with open(os.path.join(out, f"{count}.bin"), "wb") as f:
            f.write(body)
        with open(os.path.join(out, f"{count}.peer"), "w") as f:
            f.write(f"{self.path} {peer.get('commonName', '')}")
        count += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.load_verify_locations(client_ca)
ctx.verify_mode = ssl.CERT_REQUIRED
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
