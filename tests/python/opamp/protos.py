"""Generates and imports the Python classes for the repo's vendored OpAMP protos.

`load(root)` runs grpc_tools.protoc over ROOT/proto/opamp/v1/*.proto (include dir ROOT/proto, plus
grpc_tools' bundled well-known protos) into a fresh temporary directory, imports
`opamp.v1.opamp_pb2` from there and returns it. ROOT defaults to this repository's root (found from
this file's location). The temporary directory is removed at exit.
"""
import atexit
import glob
import importlib
import os
import shutil
import sys
import tempfile

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))


def load(root=REPO_ROOT):
    from grpc_tools import protoc
    import grpc_tools

    proto_root = os.path.join(os.path.abspath(root), "proto")
    files = sorted(glob.glob(os.path.join(proto_root, "opamp", "v1", "*.proto")))
    if not files:
        raise SystemExit(f"no OpAMP protos in {proto_root}/opamp/v1 (expected opamp.proto, anyvalue.proto): "
                         "--proto-root names the repository root")
    out = tempfile.mkdtemp(prefix="opamp-pb2-")
    atexit.register(shutil.rmtree, out, True)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", f"-I{proto_root}", f"-I{well_known}", f"--python_out={out}", *files]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {files}")
    sys.path.insert(0, out)
    try:
        return importlib.import_module("opamp.v1.opamp_pb2")
    finally:
        sys.path.remove(out)
