# Sourced by loadtest/soak.sh and loadtest/startup.sh: a Redis-backed stack in a temporary
# directory, and `nudge serve` on it. Run from the repo root after `make install`. Everything
# lives in $WORK and is removed, and the processes started are stopped by PID, at exit.
BIN=.venv/bin
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nudge-stack.XXXXXX")
free_port() { "$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port)
GRPC_PORT=$(free_port)
REDIS_PID="" SERVER_PID=""

stop_server() {
    [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=""
}
cleanup() {
    stop_server
    [ -n "$REDIS_PID" ] && kill -TERM "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# build_stack [HOLD_OUT_DAYS=0]: 3,000 simulated customers over 120 days, features materialised
# into a redis-server on a free port, both models trained. With HOLD_OUT_DAYS, the events of the
# history's last days are held out in $WORK/data/held_out.parquet (for `nudge ingest`) and the
# stack is built from the earlier ones only.
build_stack() {
    local hold_out=${1:-0}
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
    REDIS_PID=$!
    echo "== building the stack in $WORK (Redis on port $REDIS_PORT)"
    mkdir -p "$WORK/repo/data"
    cp feature_repo/definitions.py "$WORK/repo/"
    sed "s/\${NUDGE_REDIS}/127.0.0.1:$REDIS_PORT/" feature_repo/feature_store.redis.yaml >"$WORK/repo/feature_store.yaml"
    "$BIN/nudge" simulate --customers 3000 --days 120 --seed 7 --out "$WORK/data"
    if [ "$hold_out" -gt 0 ]; then
        "$BIN/python" - "$WORK/data" "$hold_out" <<'SPLIT'
import sys
from pathlib import Path

import pandas as pd

data, days = Path(sys.argv[1]), int(sys.argv[2])
events = pd.read_parquet(data / "events.parquet")
cut = events["event_timestamp"].max().normalize() - pd.Timedelta(days=days - 1)
events[events["event_timestamp"] >= cut].to_parquet(data / "held_out.parquet", index=False)
events[events["event_timestamp"] < cut].to_parquet(data / "events.parquet", index=False)
print(f"held out {int((events['event_timestamp'] >= cut).sum()):,} events from {cut}")
SPLIT
    fi
    "$BIN/nudge" features --events "$WORK/data/events.parquet" --customers "$WORK/data/customers.parquet" --repo "$WORK/repo"
    "$BIN/feast" -c "$WORK/repo" apply >/dev/null
    "$BIN/feast" -c "$WORK/repo" materialize-incremental "$(date -u +%Y-%m-%dT%H:%M:%S)" >/dev/null
    "$BIN/nudge" train --repo "$WORK/repo" --out "$WORK/models" \
        --events "$WORK/data/events.parquet" --customers "$WORK/data/customers.parquet" >/dev/null
}

# start_server WORKERS: launch `nudge serve` (SERVER_PID) and return once every worker has
# logged "SERVING on" (its models loaded), polling every 50 ms; fails after 120 s.
start_server() {
    local workers=$1
    "$BIN/nudge" serve --repo "$WORK/repo" --models "$WORK/models" --port "$GRPC_PORT" --workers "$workers" \
        --plaintext true >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 2400); do
        [ "$(grep -c "SERVING on" "$WORK/server.log")" -ge "$workers" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; return 1; }
        sleep 0.05
    done
    echo "not SERVING after 120 s"
    return 1
}
