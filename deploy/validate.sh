#!/usr/bin/env bash
# Renders the kustomize base and every overlay (kubectl kustomize, offline) and validates each
# object against the Kubernetes OpenAPI schemas, offline and strictly (unknown fields are errors),
# with PyPI kubernetes-validate (its schemas ship in the package). The agent config inside the
# ConfigMap is checked by the agent's own parser in `cargo test` (profiler-user/otelprof/src/agent).
#
#   deploy/validate.sh        # installs kubernetes-validate (pinned) when missing
set -euo pipefail
cd "$(dirname "$0")/.."

# The oldest and newest Kubernetes minor versions this kubernetes-validate has schemas for that
# we claim: internalTrafficPolicy is GA since 1.26, the CAP_BPF/CAP_PERFMON-era runtimes are newer.
versions=(1.28 1.34)
pin=kubernetes-validate==1.34.1

command -v kubectl >/dev/null 2>&1 || { echo "deploy/validate.sh: kubectl is not installed" >&2; exit 1; }
if ! python3 -c "from importlib.metadata import version; assert version('kubernetes-validate') == '${pin#*==}'" 2>/dev/null; then
  # --break-system-packages only where pip refuses an externally-managed Python (a Debian python3).
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "$pin" \
    || python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --break-system-packages "$pin"
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
for dir in deploy/kubernetes/base deploy/kubernetes/overlays/*/; do
  dir=${dir%/}
  name=$(echo "$dir" | tr / _)
  kubectl kustomize "$dir" >"$out/$name.yaml"
  # One file per object: kubernetes-validate names the file of an object that fails.
  python3 - "$out/$name.yaml" "$out/$name" <<'PY'
import os, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
os.makedirs(sys.argv[2])
for i, d in enumerate(docs):
    with open(os.path.join(sys.argv[2], f"{i:02d}-{d['kind']}-{d['metadata']['name']}.yaml"), "w") as f:
        yaml.safe_dump(d, f)
PY
  for v in "${versions[@]}"; do
    if kubernetes-validate --strict --quiet -k "$v" "$out/$name"/*.yaml; then
      echo "$dir: $(ls "$out/$name" | wc -l) objects valid for Kubernetes $v (strict)"
    else
      echo "$dir: INVALID for Kubernetes $v" >&2
      status=1
    fi
  done
done
exit $status
