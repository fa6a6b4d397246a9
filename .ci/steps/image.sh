#!/usr/bin/env bash
# CI step "image" (optional smoke test): builds the agent as a static binary, packs it
# into a FROM-scratch image with buildah, and runs `node-agent --version` inside it.
# Registry base images can't be pulled here, so this checks the part of the Dockerfile
# that matters at run time: a static binary that runs on an empty root file system as
# the numeric non-root user. Idempotent; installs buildah/runc with apt if missing.
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

if ! command -v buildah >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
    log "installing buildah and runc (apt)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah runc
fi

# 1. Static binary, built exactly as in the Dockerfile's builder stage.
log "cargo build --profile $PROFILE --target $TARGET --features '$FEATURES' (crt-static)"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --locked --package node-agent \
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
cat >"$WORK/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=65536:65536", "nproc=4096:4096"]

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
bh bud --isolation chroot --runtime runc --ulimit nofile=65536:65536 --ulimit nproc=4096:4096 \
    -t "$TAG" -f "$WORK/context/Containerfile" "$WORK/context"
ctr=$(bh from "$TAG")
log "buildah run $TAG -- node-agent --version"
out=$(bh run --isolation chroot --runtime runc "$ctr" -- /usr/bin/node-agent --version)
echo "$out"
if [[ $out != node-agent\ * ]]; then
    echo "image: unexpected --version output: $out" >&2
    exit 1
fi
user=$(bh inspect --format '{{.OCIv1.Config.User}}' "$TAG")
[[ $user == 65532:65532 ]] || { echo "image: USER is '$user', want 65532:65532" >&2; exit 1; }
log "ok: static binary runs in a scratch image as $user"
