#!/usr/bin/env python3
"""A throwaway PKI for the OpAMP TLS / client-certificate rotation tests, made with the openssl CLI.

  pki.py [--rsa] DIR

writes into DIR (created if missing; existing files are overwritten):

  ca.pem, ca.key                    test CA "otelprof-test-ca" (self-signed)
  server.pem, server.key            server cert, CN "otelprof-test-server", SAN IP:127.0.0.1, DNS:localhost,
                                    EKU serverAuth, signed by the CA
  client1.pem, client1.key          client cert, CN "otelprof-client-1", EKU clientAuth, signed by the CA
  client2.pem, client2.key          client cert, CN "otelprof-client-2", EKU clientAuth, signed by the CA
  bad-ca.pem, bad-ca.key            a second, unrelated CA "otelprof-other-ca"
  client-bad.pem, client-bad.key    client cert, CN "otelprof-client-bad", signed by the OTHER CA

and prints ONE line of JSON with absolute paths:

  {"dir", "ca", "server_cert", "server_key", "client1_cert", "client1_key", "client2_cert",
   "client2_key", "bad_cert", "bad_key", "bad_ca", "client1_serial", "client2_serial", "bad_serial"}

The *_serial values are the certificates' serial numbers as lowercase hex without leading zeros,
the form server.py records as client_cert_serial. Keys are EC P-256 (--rsa: RSA 2048), all PKCS#8
PEM ("-----BEGIN PRIVATE KEY-----"), unencrypted; certificates are X.509 v3, valid 2 days, with
the extensions rustls/webpki and OpenSSL's strict verification want (CA: basicConstraints critical
CA:TRUE, keyUsage keyCertSign; leaves: CA:FALSE, keyUsage digitalSignature, EKU, SKI/AKI).
Also importable: `pki.make(dir, rsa=False)` returns the same dict.
"""
import argparse
import json
import os
import subprocess
import sys

DAYS = "2"
CA_EXT = ("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
          "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n")
LEAF_EXT = ("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,{ku}\nextendedKeyUsage={eku}\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")


def openssl(d, *args):
    try:
        r = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit("pki.py: the openssl CLI is not installed") from None
    if r.returncode != 0:
        raise SystemExit(f"pki.py: openssl {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def genkey(d, name, rsa):
    alg = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"] if rsa else \
        ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    openssl(d, "genpkey", *alg, "-out", f"{name}.key")  # genpkey writes PKCS#8
    os.chmod(os.path.join(d, f"{name}.key"), 0o600)


def ext_file(d, name, text):
    path = os.path.join(d, f"{name}.ext")
    with open(path, "w") as f:
        f.write(text)
    return path


def make_ca(d, name, cn, rsa):
    genkey(d, name, rsa)
    ext = ext_file(d, name, CA_EXT)
    # not `req -x509`, which adds its config's default extensions: a CSR self-signed with x509 -req
    openssl(d, "req", "-new", "-key", f"{name}.key", "-subj", f"/CN={cn}", "-out", f"{name}.csr")
    openssl(d, "x509", "-req", "-in", f"{name}.csr", "-signkey", f"{name}.key", "-days", DAYS, "-sha256",
            "-extfile", ext, "-out", f"{name}.pem")


def make_leaf(d, name, cn, ca, rsa, server=False):
    genkey(d, name, rsa)
    ku = "digitalSignature,keyEncipherment" if rsa else "digitalSignature"
    text = LEAF_EXT.format(ku=ku, eku="serverAuth" if server else "clientAuth")
    if server:
        text += "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    ext = ext_file(d, name, text)
    openssl(d, "req", "-new", "-key", f"{name}.key", "-subj", f"/CN={cn}", "-out", f"{name}.csr")
    openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", DAYS, "-sha256", "-extfile", ext, "-out", f"{name}.pem")


def serial(d, name):
    out = openssl(d, "x509", "-in", f"{name}.pem", "-noout", "-serial").strip()  # serial=0A1B...
    return format(int(out.split("=", 1)[1], 16), "x")


def make(d, rsa=False):
    d = os.path.abspath(d)
    os.makedirs(d, exist_ok=True)
    make_ca(d, "ca", "otelprof-test-ca", rsa)
    make_ca(d, "bad-ca", "otelprof-other-ca", rsa)
    make_leaf(d, "server", "otelprof-test-server", "ca", rsa, server=True)
    make_leaf(d, "client1", "otelprof-client-1", "ca", rsa)
    make_leaf(d, "client2", "otelprof-client-2", "ca", rsa)
    make_leaf(d, "client-bad", "otelprof-client-bad", "bad-ca", rsa)
    for n in ("server", "client1", "client2"):
        openssl(d, "verify", "-x509_strict", "-CAfile", "ca.pem", f"{n}.pem")
    openssl(d, "verify", "-x509_strict", "-CAfile", "bad-ca.pem", "client-bad.pem")
    p = lambda n: os.path.join(d, n)  # noqa: E731
    return {"dir": d, "ca": p("ca.pem"), "server_cert": p("server.pem"), "server_key": p("server.key"),
            "client1_cert": p("client1.pem"), "client1_key": p("client1.key"),
            "client2_cert": p("client2.pem"), "client2_key": p("client2.key"),
            "bad_cert": p("client-bad.pem"), "bad_key": p("client-bad.key"), "bad_ca": p("bad-ca.pem"),
            "client1_serial": serial(d, "client1"), "client2_serial": serial(d, "client2"),
            "bad_serial": serial(d, "client-bad")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="output directory (created if missing)")
    ap.add_argument("--rsa", action="store_true", help="RSA 2048 keys instead of EC P-256")
    args = ap.parse_args()
    print(json.dumps(make(args.dir, args.rsa)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
