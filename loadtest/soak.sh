#!/usr/bin/env bash
# Soak: `nudge serve --workers 2` on a Redis online store, open loop at RPS calls per second for
# DURATION seconds, RSS and CPU of the server and its workers sampled every 10 s. Prints the bench
# report (status codes, latency, RSS growth from minute 2 to the end) and writes it as JSON.
#
#   loadtest/soak.sh [DURATION_S=600] [RPS=1000] [OUT=loadtest/results/soak.json]
#
# Run from the repo root after `make install`. Everything it builds (simulated data, a Feast
# repo, models, a redis-server on a free port) lives in a temporary directory and is removed,
# and the processes it starts are stopped by PID, at exit.
set -euo pipefail
DURATION=${1:-600}
RPS=${2:-1000}
OUT=${3:-loadtest/results/soak.json}
BIN=.venv/bin
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nudge-soak.XXXXXX")
free_port() { "$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port)
GRPC_PORT=$(free_port)
REDIS_PID="" SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    [ -n "$REDIS_PID" ] && kill -TERM "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!

echo "== building the stack in $WORK (Redis on port $REDIS_PORT)"
mkdir -p "$WORK/repo/data"
cp feature_repo/definitions.py "$WORK/repo/"
sed "s/\${NUDGE_REDIS}/127.0.0.1:$REDIS_PORT/" feature_repo/feature_store.redis.yaml >"$WORK/repo/feature_store.yaml"
"$BIN/nudge" simulate --customers 3000 --days 120 --seed 7 --out "$WORK/data"
"$BIN/nudge" features --events "$WORK/data/events.parquet" --customers "$WORK/data/customers.parquet" --repo "$WORK/repo"
"$BIN/feast" -c "$WORK/repo" apply >/dev/null
"$BIN/feast" -c "$WORK/repo" materialize-incremental "$(date -u +%Y-%m-%dT%H:%M:%S)" >/dev/null
"$BIN/nudge" train --repo "$WORK/repo" --out "$WORK/models" \
    --events "$WORK/data/events.parquet" --customers "$WORK/data/customers.parquet" >/dev/null

echo "== nudge serve --workers 2 on port $GRPC_PORT"
"$BIN/nudge" serve --repo "$WORK/repo" --models "$WORK/models" --port "$GRPC_PORT" --workers 2 \
    --plaintext true >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 240); do  # each worker logs "SERVING on" once its models are loaded
    [ "$(grep -c "SERVING on" "$WORK/server.log")" -ge 2 ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; exit 1; }
    sleep 0.5
done
[ "$(grep -c "SERVING on" "$WORK/server.log")" -ge 2 ] || { echo "not SERVING after 120 s"; exit 1; }

echo "== soak: $RPS RPS for $DURATION s (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
mkdir -p "$(dirname "$OUT")"
"$BIN/nudge" bench --target "127.0.0.1:$GRPC_PORT" --ids-from "$WORK/data/customers.parquet" \
    --rps "$RPS" --duration "$DURATION" --connections 8 --rounds 1 --no-baseline --warmup 5s \
    --watch-server "$SERVER_PID" --sample-every 10 --rss-growth-from 120 --out "$OUT"
echo "== load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); JSON report: $OUT"
