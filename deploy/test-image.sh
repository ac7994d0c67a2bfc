#!/usr/bin/env bash
# Builds the otelprof image (deploy/Containerfile) on a Debian root made by debootstrap, then
# proves that the DaemonSet's capability list is enough: the image runs with --pid=host, exactly
# the capabilities of deploy/kubernetes/base/daemonset.yaml (read from that file, everything else
# dropped), a read-only root filesystem, no new privileges, no --privileged and the DaemonSet's
# read-only host mounts, and records a profile of two processes on the host that run as another
# user (nobody): the profile must name the functions of one (main;outer;middle;hot_leaf) and the
# kernel's in the other (dd copying byte by byte, mostly in system calls).
#
#   deploy/test-image.sh          # SKIPPED (exit 0) when podman or debootstrap cannot be
#                                 # installed or run here
#   deploy/test-image.sh --ci     # (or CI set) the same, but that is a failure
#
# Idempotent: the Debian root is made once and kept (as a tarball) in $OTELPROF_IMAGE_CACHE
# (default /var/cache/otelprof-image), with podman's storage; later runs rebuild only the image's
# last layer. Runs as root. DEBIAN_MIRROR overrides the mirror (default: deb.debian.org).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

ci=${CI:-}
[[ ${1:-} == --ci ]] && ci=1
cache=${OTELPROF_IMAGE_CACHE:-/var/cache/otelprof-image}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
base=localhost/otelprof-base:$suite
image=localhost/otelprof:test
step() { printf -- '-- %s\n' "$*"; }
unavailable() {
  if [[ -n $ci ]]; then
    echo "deploy/test-image.sh: FAILED: $*" >&2
    exit 1
  fi
  echo "SKIPPED deploy/test-image.sh: $*"
  exit 0
}

# Tools: Debian's podman, runc (crun refuses hosts with cgroup v1 and v2 controllers both in
# use), debootstrap.
need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v cc >/dev/null 2>&1 || need+=(gcc)
if ((${#need[@]})); then
  step "installing ${need[*]}"
  { command -v apt-get >/dev/null 2>&1 && ((EUID == 0)); } || unavailable "${need[*]} missing and apt-get cannot install them"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; } || unavailable "apt-get install ${need[*]} failed"
fi
((EUID == 0)) || unavailable "needs root (podman as root, BPF)"

mkdir -p "$cache"
# No daemon: vfs storage (works on any filesystem), cgroupfs, storage of our own (not the
# machine's default podman store).
podman=(podman --storage-driver vfs --cgroup-manager cgroupfs --runtime runc
  --root "$cache/storage" --runroot /run/otelprof-image)
"${podman[@]}" info >/dev/null 2>&1 || unavailable "podman cannot run here: $("${podman[@]}" info 2>&1 | tail -1)"

# 1. The binary.
target=${CARGO_TARGET_DIR:-$repo/target}
step "cargo build --release -p otelprof"
cargo build --release -q -p otelprof
bin=$target/release/otelprof

# 2. The base image: a minimal Debian root from debootstrap, imported once.
if ! [[ -s $cache/$suite.tar ]]; then
  step "debootstrap --variant=minbase $suite ($mirror)"
  rm -rf "$cache/root.tmp"
  debootstrap --variant=minbase "$suite" "$cache/root.tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || unavailable "debootstrap failed (no mirror?): $(tail -1 "$cache/debootstrap.log")"
  # What a runtime image does not need: package caches and lists, documentation.
  rm -rf "$cache/root.tmp"/var/cache/apt/archives/*.deb "$cache/root.tmp"/var/lib/apt/lists/* \
    "$cache/root.tmp"/usr/share/{doc,man,info,locale}/*
  tar -C "$cache/root.tmp" -c . >"$cache/$suite.tar.tmp"
  mv "$cache/$suite.tar.tmp" "$cache/$suite.tar"
  rm -rf "$cache/root.tmp"
  "${podman[@]}" rmi -f "$base" >/dev/null 2>&1 || true
fi
if ! "${podman[@]}" image exists "$base"; then
  step "podman import $base"
  "${podman[@]}" import -q "$cache/$suite.tar" "$base" >/dev/null
fi

# 3. The image: the Containerfile on a context holding only the binary.
ctx=$cache/context
mkdir -p "$ctx"
cmp -s "$bin" "$ctx/otelprof" || cp "$bin" "$ctx/otelprof"
step "podman build $image"
"${podman[@]}" build -q --network host --build-arg "BASE=$base" -f deploy/Containerfile -t "$image" "$ctx" >/dev/null

# 4. Exactly what the DaemonSet grants, read from it.
ds=deploy/kubernetes/base/daemonset.yaml
caps=$(sed -n 's/^ *add: *\[\(.*\)\] *$/\1/p' "$ds" | tr -d ' ')
drop=$(sed -n 's/^ *drop: *\[\(.*\)\] *$/\1/p' "$ds" | tr -d ' ')
[[ -n $caps && $drop == ALL ]] || { echo "$ds: no 'add: [...]' / 'drop: [ALL]' capability lines" >&2; exit 1; }
grep -q 'hostPID: true' "$ds" && grep -q 'readOnlyRootFilesystem: true' "$ds" \
  && grep -q 'allowPrivilegeEscalation: false' "$ds" && ! grep -q 'privileged: true' "$ds" \
  || { echo "$ds: not the DaemonSet this test mirrors (hostPID, read-only root, no escalation)" >&2; exit 1; }
seccomp=()
grep -q 'seccompProfile: { type: Unconfined }' "$ds" && seccomp=(--security-opt seccomp=unconfined)
mounts=()
while read -r path; do
  mounts+=(-v "$path:$path:ro")
done < <(sed -n 's/^ *hostPath: *{ *path: *\([^ ,}]*\).*/\1/p' "$ds")
echo "capabilities: $caps (all others dropped); ${seccomp[*]:-default seccomp}; host paths, read-only: ${mounts[*]}"

# 5. Workloads on the host, as another user: the known chain (with frame pointers), and dd.
work=$(mktemp -d /tmp/otelprof-image-test.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  ((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cc -O0 -fno-omit-frame-pointer -o "$work/chain" tests/workloads/chain.c
nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
"${nobody[@]}" "$work/chain" 30 &
pids+=($!)
"${nobody[@]}" dd if=/dev/zero of=/dev/null bs=1 status=none &
pids+=($!)
mkdir "$work/out"

# The sandbox this was written on cannot raise resource limits (no CAP_SYS_RESOURCE), and
# podman's defaults raise them: keep the caller's open-files limit and a modest process limit.
limits=(--ulimit "nofile=$(ulimit -n):$(ulimit -n)" --ulimit nproc=4096:4096)
step "podman run --pid=host --cap-drop ALL --cap-add $caps --read-only: otelprof record -p ${pids[0]} -p ${pids[1]}"
"${podman[@]}" run --rm --network host --pid=host --read-only --security-opt no-new-privileges "${seccomp[@]}" \
  --cap-drop ALL --cap-add "$caps" "${limits[@]}" "${mounts[@]}" \
  --tmpfs /var/cache/otelprof:rw,size=300m -v "$work/out:/out" -e NODE_NAME=test-node \
  "$image" record -p "${pids[0]}" -p "${pids[1]}" -d 3 -o /out/chain.folded >"$work/record.log" 2>&1 \
  || { cat "$work/record.log" >&2; echo "FAILED: the image could not record with these capabilities" >&2; exit 1; }
cat "$work/record.log"

# 6. Symbolized user frames of the host process, and named kernel frames.
folded=$work/out/chain.folded
total=$(awk '/^chain;/ {s += $NF} END {print s + 0}' "$folded")
chain=$(awk '/^chain;.*main;outer;middle;hot_leaf/ {s += $NF} END {print s + 0}' "$folded")
frames=$(grep '^dd;' "$folded" | cut -d' ' -f1 | tr ';' '\n' | grep '_\[k\]$' || true)
kernel_named=$(grep -vc '^\[kernel.kallsyms\]+0x' <<<"$frames" || true)
kernel_raw=$(grep -c '^\[kernel.kallsyms\]+0x' <<<"$frames" || true)
[[ -n $frames ]] || kernel_named=0
echo "chain: $total samples, $chain with main;outer;middle;hot_leaf; dd: kernel frames named $kernel_named, unnamed $kernel_raw"
if ((total == 0 || chain * 2 < total)); then
  echo "FAILED: under half of chain's samples have main;outer;middle;hot_leaf" >&2
  head -5 "$folded" >&2
  exit 1
fi
if ((kernel_named == 0 || kernel_raw * 10 > kernel_named)); then
  echo "FAILED: dd's kernel frames are not named (/proc/kallsyms addresses hidden?)" >&2
  grep '^dd;' "$folded" | head -3 >&2
  exit 1
fi

# 7. The same capabilities under the runtime's default seccomp profile, which allows bpf(2) only
#    with SYS_ADMIN: the agent must refuse with a message that names seccomp, not capabilities.
if ((${#seccomp[@]})); then
  step "the same run under podman's default seccomp profile: refused, and the message says why"
  if "${podman[@]}" run --rm --network host --pid=host --read-only --security-opt no-new-privileges \
    --cap-drop ALL --cap-add "$caps" "${limits[@]}" "${mounts[@]}" \
    --tmpfs /var/cache/otelprof:rw,size=300m "$image" record -p "${pids[0]}" -d 1 -o /var/cache/otelprof/x.folded \
    >"$work/seccomp.log" 2>&1; then
    echo "note: the default seccomp profile allowed bpf(2) here; nothing to check" >&2
  elif grep -q 'seccomp filter is active' "$work/seccomp.log"; then
    grep -o 'the kernel refused bpf(2)[^;]*' "$work/seccomp.log" | head -1
  else
    cat "$work/seccomp.log" >&2
    echo "FAILED: refused under default seccomp, but the message does not name seccomp" >&2
    exit 1
  fi
fi
echo "PASSED deploy/test-image.sh: the image records a host process with symbolized frames, capabilities $caps"
