#!/usr/bin/env bash
# CI step "image" (optional smoke test): builds the agent as a static binary, packs it
# into a FROM-scratch image with buildah, runs `node-agent --version` inside it, then
# runs the agent from the image on loopback (/healthz, /metrics) and stops it with
# SIGTERM. Registry base images can't be pulled here, so this checks the part of the
# Dockerfile that matters at run time: a static binary that runs on an empty root file
# system as the numeric non-root user. Idempotent; installs buildah/runc with apt if
# missing. The release build takes ~15 min on a 2-core machine (cached afterwards).
#
#   IMAGE_PROFILE   cargo profile (default: release, as the Dockerfile)
#   IMAGE_FEATURES  cargo features (default: ebpf, as the Dockerfile)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
TARGET=x86_64-unknown-linux-gnu
PROFILE=${IMAGE_PROFILE:-release}
FEATURES=${IMAGE_FEATURES-ebpf}
TAG=localhost/node-agent:smoke

log() { printf '==> image: %s\n' "$*"; }

if ! command -v buildah >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 ||
    ! command -v pgrep >/dev/null 2>&1; then
    log "installing buildah, runc and procps (apt)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah runc procps
fi

# 1. Static binary, built exactly as in the Dockerfile's builder stage.
log "cargo build --profile $PROFILE --target $TARGET --features '$FEATURES' (crt-static)"
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" cargo build --locked --package node-agent \
    --profile "$PROFILE" --target "$TARGET" ${FEATURES:+--features "$FEATURES"}
profile_dir=$PROFILE
[[ $PROFILE == dev ]] && profile_dir=debug
BIN=$ROOT/target/$TARGET/$profile_dir/node-agent
if file "$BIN" 2>/dev/null | grep -q 'dynamically linked'; then
    echo "image: $BIN is dynamically linked" >&2
    exit 1
fi

# 2. A private, throw-away buildah setup: own storage (vfs: no kernel overlay needed),
#    runc, chroot isolation (no user namespaces or network setup needed), explicit ulimits.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/node-agent-image.XXXXXX")
ctr=""
cleanup() {
    if [[ -n $ctr ]]; then bh rm "$ctr" >/dev/null 2>&1 || true; fi
    bh rmi -f "$TAG" >/dev/null 2>&1 || true
    # vfs layers are plain directories; nothing stays mounted after rm/rmi.
    rm -rf "$WORK"
}
trap cleanup EXIT
# Explicit limits (the runtime's defaults may exceed what this sandbox may set): the
# wanted value, capped at the hard limit of this shell, which the run cannot raise.
cap_limit() {
    local want=$1 hard=$2
    if [[ $hard == unlimited || $hard -gt $want ]]; then echo "$want"; else echo "$hard"; fi
}
NOFILE=$(cap_limit 65536 "$(ulimit -Hn)")
NPROC=$(cap_limit 4096 "$(ulimit -Hu)")
cat >"$WORK/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$NOFILE:$NOFILE", "nproc=$NPROC:$NPROC"]

[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF=$WORK/containers.conf
bh() {
    buildah --root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs "$@"
}

mkdir -p "$WORK/context"
cp "$BIN" "$WORK/context/node-agent"
cat >"$WORK/context/Containerfile" <<'CONTAINERFILE'
FROM scratch
COPY node-agent /usr/bin/node-agent
USER 65532:65532
ENTRYPOINT ["/usr/bin/node-agent"]
CONTAINERFILE

# 3. Build and run.
log "buildah bud (FROM scratch)"
bh bud --isolation chroot --runtime runc --ulimit "nofile=$NOFILE:$NOFILE" --ulimit "nproc=$NPROC:$NPROC" \
    -t "$TAG" -f "$WORK/context/Containerfile" "$WORK/context"
ctr=$(bh from "$TAG")
log "buildah run $TAG -- node-agent --version"
# `buildah run` takes its ulimits from containers.conf (default_ulimits).
out=$(bh run --isolation chroot --runtime runc "$ctr" -- /usr/bin/node-agent --version)
echo "$out"
if [[ $out != node-agent\ * ]]; then
    echo "image: unexpected --version output: $out" >&2
    exit 1
fi
user=$(bh inspect --format '{{.OCIv1.Config.User}}' "$TAG")
[[ $user == 65532:65532 ]] || { echo "image: USER is '$user', want 65532:65532" >&2; exit 1; }

# 4. Serve from the image: the agent runs as 65532 on an empty root file system, answers
#    /healthz and /metrics on loopback (chroot isolation shares the host network), and
#    stops cleanly on SIGTERM.
http_get() { # PORT PATH -> response on stdout (bash /dev/tcp: no curl needed)
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$2" >&3
    timeout 10 cat <&3
    exec 3<&-
}
# The state and lock directories are hostPaths in the DaemonSet; here, directories the
# image's user owns (the agent refuses to start without a usable state dir).
mkdir -p "$WORK/state" "$WORK/lock"
chown 65532:65532 "$WORK/state" "$WORK/lock"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# exec: $! must be buildah itself (it forwards SIGTERM to the agent), not a subshell.
(exec buildah --root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs \
    run --isolation chroot --runtime runc \
    --volume "$WORK/state:/var/lib/node-agent" --volume "$WORK/lock:/var/run/node-agent" \
    "$ctr" -- /usr/bin/node-agent \
    --web.listen-address="127.0.0.1:$PORT" --collector.disable-defaults --collector.loadavg \
    >"$WORK/agent.log" 2>&1) &
agent_pid=$!
healthy=""
for _ in $(seq 100); do
    if http_get "$PORT" /healthz 2>/dev/null | head -n1 | grep -q ' 200 '; then healthy=1; break; fi
    sleep 0.1
done
metrics=$(http_get "$PORT" /metrics || true)
# SIGTERM the agent itself, as the kubelet would (buildah kills its child on signals
# instead of forwarding them): it is the node-agent process below our buildah.
descendants() { local c; for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done; }
for pid in $(descendants "$agent_pid"); do
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == node-agent ]]; then kill -TERM "$pid"; fi
done
stopped=""
for _ in $(seq 100); do
    if ! kill -0 "$agent_pid" 2>/dev/null; then stopped=1; break; fi
    sleep 0.1
done
if [[ -z $stopped ]]; then kill -KILL "$agent_pid" 2>/dev/null || true; fi
wait "$agent_pid" 2>/dev/null || true
if [[ -z $healthy ]] || ! grep -q '^node_load1 ' <<<"$metrics" || [[ -z $stopped ]] ||
    ! grep -q 'node-agent stopped' "$WORK/agent.log"; then
    echo "image: agent in the image did not serve or stop (healthy=${healthy:-no} stopped=${stopped:-no}); scrape:" >&2
    head -c 2000 <<<"$metrics" >&2
    echo "image: its log:" >&2
    cat "$WORK/agent.log" >&2
    exit 1
fi
log "ok: static binary runs in a scratch image as $user, serves /healthz and /metrics, stops on SIGTERM"
