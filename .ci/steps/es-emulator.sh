#!/usr/bin/env bash
# CI step: ship records through the Elasticsearch sink into a real ES-compatible server
# and check that every record arrived exactly once (tests/tests/sinks_es_emulator.rs).
#
# Server: `noida-db` (PyPI) if it installs and runs here, else `osmem-server` (PyPI, an
# in-memory OpenSearch-compatible server). Installed idempotently into a venv under
# target/; only the server this script starts is stopped. Exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "$0")/../.."
root=$PWD
venv=${ES_EMULATOR_VENV:-$root/target/es-emulator-venv}
work=$(mktemp -d)
server_pid=""

cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

log() { echo "es-emulator: $*" >&2; }

if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
pip() { "$venv/bin/pip" --disable-pip-version-check -q "$@"; }

free_port() {
    "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until $1 answers HTTP (bounded), or the server process died.
wait_http() {
    for _ in $(seq 1 100); do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            return 1
        fi
        if curl -fsS -o /dev/null "$1/" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

start_noida() {
    pip install noida-db || return 1
    # Run the bundled binary itself, not the Python wrapper, so $! is the server and
    # stopping it stops the server.
    local bin port
    bin=$("$venv/bin/python" -c 'from importlib.resources import files; print(files("noida_db").joinpath("noida-db"))') || return 1
    chmod +x "$bin"
    "$bin" version >/dev/null 2>&1 || { log "noida-db does not run on this host"; return 1; }
    port=$(free_port)
    "$bin" start --only elasticsearch --elasticsearch-port "$port" \
        --data-dir "$work/noida" >"$work/server.log" 2>&1 &
    server_pid=$!
    url="http://127.0.0.1:$port"
    wait_http "$url" || { log "noida-db did not come up:"; cat "$work/server.log" >&2; kill "$server_pid" 2>/dev/null || true; server_pid=""; return 1; }
}

start_osmem() {
    pip install osmem-server || return 1
    local bin
    bin=$("$venv/bin/python" -c 'import osmem_server; print(osmem_server.resolve_binary())') || return 1
    "$bin" -addr 127.0.0.1:0 -no-stdin-watch -parent-pid $$ >"$work/server.log" 2>&1 &
    server_pid=$!
    # The first stdout line is JSON with the URL it bound.
    for _ in $(seq 1 100); do
        url=$(sed -n '1s/.*"url":"\([^"]*\)".*/\1/p' "$work/server.log" 2>/dev/null || true)
        [[ -n "$url" ]] && break
        sleep 0.1
    done
    [[ -n "${url:-}" ]] && wait_http "$url" || { log "osmem-server did not come up:"; cat "$work/server.log" >&2; return 1; }
}

# ES_EMULATOR=osmem skips noida-db (e.g. to exercise the fallback).
url=""
if [[ "${ES_EMULATOR:-}" != osmem ]] && start_noida; then
    log "using noida-db at $url"
elif start_osmem; then
    log "using osmem-server at $url"
else
    log "no ES-compatible server could be started"
    exit 1
fi

ES_EMULATOR_URL=$url cargo test -p node-agent-tests --test sinks_es_emulator -- --ignored
log "ok"
