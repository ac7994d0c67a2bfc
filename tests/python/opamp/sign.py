#!/usr/bin/env python3
"""Ed25519 keys and detached signatures for the agent's signed remote config.

  sign.py keygen DIR          writes DIR/opamp-ed25519.pub      (PEM SubjectPublicKeyInfo,
                                                                 "-----BEGIN PUBLIC KEY-----")
                                     DIR/opamp-ed25519.pub.raw  (the same key, raw 32 bytes)
                                     DIR/opamp-ed25519.key      (PEM PKCS#8 private key, mode 0600)
  sign.py sign KEY FILE       prints base64 of the 64-byte Ed25519 signature over FILE's raw bytes
  sign.py verify PUB FILE SIG checks SIG (base64) over FILE with PUB (PEM or raw 32 bytes); exit 0/1

The agent accepts either public key form. Uses the `cryptography` package (pinned in
requirements.txt); falls back to PyNaCl if `cryptography` is missing. Both read and write the same
files: the fixed DER prefixes below are those of RFC 8410's Ed25519 SubjectPublicKeyInfo and
PKCS#8 encodings, followed by the 32 raw key bytes.
"""
import base64
import os
import sys

SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")  # SEQ{SEQ{OID 1.3.101.112}, BIT STRING}
PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")  # ... OCTET STRING{OCTET STRING}


def pem(label, der):
    b64 = base64.b64encode(der).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode()


def unpem(data, prefix):
    """PEM (with the given DER prefix) or raw 32 bytes -> the raw 32 key bytes."""
    if data.lstrip().startswith(b"-----BEGIN"):
        body = b"".join(l for l in data.strip().splitlines() if not l.startswith(b"-----"))
        der = base64.b64decode(body)
        if not der.startswith(prefix) or len(der) != len(prefix) + 32:
            raise SystemExit("not an Ed25519 key in the expected encoding")
        return der[len(prefix):]
    if len(data) != 32:
        raise SystemExit(f"raw key must be 32 bytes, got {len(data)}")
    return data


def backend():
    """(new seed, seed -> public, (seed, msg) -> sig, (public, msg, sig) -> bool)."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        def verify(pub, msg, sig):
            try:
                Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
                return True
            except InvalidSignature:
                return False

        return (lambda: os.urandom(32),
                lambda seed: Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
                    Encoding.Raw, PublicFormat.Raw),
                lambda seed, msg: Ed25519PrivateKey.from_private_bytes(seed).sign(msg),
                verify)
    except ImportError:
        import nacl.exceptions
        import nacl.signing

        def verify(pub, msg, sig):
            try:
                nacl.signing.VerifyKey(pub).verify(msg, sig)
                return True
            except nacl.exceptions.BadSignatureError:
                return False

        return (lambda: os.urandom(32),
                lambda seed: bytes(nacl.signing.SigningKey(seed).verify_key),
                lambda seed, msg: nacl.signing.SigningKey(seed).sign(msg).signature,
                verify)


def main(argv):
    new, public, sign, verify = backend()
    if len(argv) == 2 and argv[0] == "keygen":
        os.makedirs(argv[1], exist_ok=True)
        seed = new()
        pub = public(seed)
        base = os.path.join(argv[1], "opamp-ed25519")
        with open(base + ".pub", "wb") as f:
            f.write(pem("PUBLIC KEY", SPKI_PREFIX + pub))
        with open(base + ".pub.raw", "wb") as f:
            f.write(pub)
        fd = os.open(base + ".key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem("PRIVATE KEY", PKCS8_PREFIX + seed))
        return 0
    if len(argv) == 3 and argv[0] == "sign":
        seed = unpem(open(argv[1], "rb").read(), PKCS8_PREFIX)
        print(base64.b64encode(sign(seed, open(argv[2], "rb").read())).decode())
        return 0
    if len(argv) == 4 and argv[0] == "verify":
        pub = unpem(open(argv[1], "rb").read(), SPKI_PREFIX)
        ok = verify(pub, open(argv[2], "rb").read(), base64.b64decode(argv[3]))
        print("ok" if ok else "BAD signature")
        return 0 if ok else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
