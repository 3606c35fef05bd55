#!/usr/bin/env bash
# Soak: `nudge serve --workers 2` on a Redis online store, open loop at RPS calls per second for
# DURATION seconds, RSS and CPU of the server and its workers sampled every 10 s. Prints the bench
# report (status codes, latency, RSS growth from minute 2 to the end) and writes it as JSON.
#
#   loadtest/soak.sh [DURATION_S=600] [RPS=1000] [OUT=loadtest/results/soak.json]
#
# Run from the repo root after `make install`; the stack is loadtest/stack.sh's (3,000 simulated
# customers, Redis on a free port, all in a temporary directory removed at exit).
set -euo pipefail
DURATION=${1:-600}
RPS=${2:-1000}
OUT=${3:-loadtest/results/soak.json}
source "$(dirname "$0")/stack.sh"
build_stack
echo "== nudge serve --workers 2 on port $GRPC_PORT"
start_server 2

echo "== soak: $RPS RPS for $DURATION s (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
mkdir -p "$(dirname "$OUT")"
"$BIN/nudge" bench --target "127.0.0.1:$GRPC_PORT" --ids-from "$WORK/data/customers.parquet" \
    --rps "$RPS" --duration "$DURATION" --connections 8 --rounds 1 --no-baseline --warmup 5s \
    --watch-server "$SERVER_PID" --sample-every 10 --rss-growth-from 120 --out "$OUT"
echo "== load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); JSON report: $OUT"
