#!/usr/bin/env bash
# Issue 14's serving figures for one or more source trees, measured in one run: every tree's
# `nudge serve` up at once on the same stack, the bench commands run against each in rotating
# order (A B C, then C B A, ...), so drift on a shared machine weighs on every tree alike.
#
#   loadtest/ab.sh OUT TREE [TREE ...]        e.g. loadtest/ab.sh /tmp/ab . /tmp/base
#
# TREE is a checkout of this repo (a worktree of an older commit, say); each server runs that
# tree's code (PYTHONPATH) with this checkout's virtualenv. Environment:
#   STORE=sqlite|redis (sqlite)  WORKERS (1)  REPS (3)
#   FEAST=1    also Feast's own gRPC feature server (`feast listen`) on the same store, called
#              in the same runs as Score (nudge bench --feast-peer)
#   BOUND=1    also loadtest/bound_server.py (this checkout's): the fastest answers possible,
#              measured as the trees are (against Feast with FEAST=1, in the open loop with
#              OPEN=1; it is one process whatever WORKERS says)
#   OPEN=1     also the open loop: 1,000 RPS for 20 s over 8 connections, Score only, with the
#              server's CPU per process (--watch-server): with WORKERS > 1 the summary gives each
#              worker's share
# Per rep and server: `nudge bench --duration 6 --rounds 4` (Score vs the no-op Check) and
# `--call ScoreBatch --batch-size 100 --duration 6`. JSON reports go to OUT; a summary (medians
# over reps) is printed at the end. The stack is loadtest/stack.sh's (3,000 simulated customers,
# 120 days, Redis on a free port) plus their live states (`nudge load-states`) and, for
# STORE=sqlite, the same features in a SQLite repo; all of it is removed at exit.
set -euo pipefail
OUT=${1:?usage: loadtest/ab.sh OUT TREE [TREE ...]}
shift
[ $# -ge 1 ] || { echo "usage: loadtest/ab.sh OUT TREE [TREE ...]" >&2; exit 2; }
STORE=${STORE:-sqlite} WORKERS=${WORKERS:-1} REPS=${REPS:-3}
FEAST=${FEAST:-0} BOUND=${BOUND:-0} OPEN=${OPEN:-0}
ROOT=$(pwd)
TREES=()
for tree in "$@"; do TREES+=("$(cd "$tree" && pwd)"); done
source "$(dirname "$0")/stack.sh"
mkdir -p "$OUT"
PIDS=()
trap 'for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; cleanup' EXIT

build_stack
REPO="$WORK/repo"
if [ "$STORE" = sqlite ]; then
    REPO="$WORK/repo-sqlite"
    mkdir -p "$REPO/data"
    cp feature_repo/definitions.py feature_repo/feature_store.yaml "$REPO/"
    "$BIN/nudge" features --events "$WORK/data/events.parquet" --customers "$WORK/data/customers.parquet" --repo "$REPO"
    "$BIN/feast" -c "$REPO" apply >/dev/null
    "$BIN/feast" -c "$REPO" materialize-incremental "$(date -u +%Y-%m-%dT%H:%M:%S)" >/dev/null
fi
"$BIN/nudge" load-states --repo "$REPO"
IDS="$WORK/data/customers.parquet"

# wait_for LOG TEXT COUNT: until LOG holds TEXT COUNT times (120 s at most).
wait_for() {
    for _ in $(seq 1 2400); do
        [ "$(grep -c "$2" "$1" || true)" -ge "$3" ] && return 0
        sleep 0.05
    done
    echo "not ready after 120 s: $1"; cat "$1"; return 1
}

NAMES=() PORTS=()
for i in "${!TREES[@]}"; do
    port=$(free_port) log="$WORK/server-$i.log"
    # From the tree's own directory: python puts the working directory first on sys.path.
    (cd "${TREES[$i]}" && PYTHONPATH="${TREES[$i]}" exec "$ROOT/$BIN/python" -m nudge.cli serve --repo "$REPO" \
        --models "$WORK/models" --port "$port" --workers "$WORKERS" --log-level INFO --plaintext true) >"$log" 2>&1 &
    PIDS+=($!)
    wait_for "$log" "SERVING on" "$WORKERS"
    NAMES+=("tree$i") PORTS+=("$port")
    echo "== tree$i: ${TREES[$i]} ($(git -C "${TREES[$i]}" rev-parse --short HEAD 2>/dev/null || echo '?')) on port $port"
done
if [ "$BOUND" = 1 ]; then
    port=$(free_port) log="$WORK/bound.log"
    "$BIN/python" loadtest/bound_server.py --repo "$REPO" --models "$WORK/models" --port "$port" --ids-from "$IDS" >"$log" 2>&1 &
    PIDS+=($!)
    wait_for "$log" "bound server on" 1
    NAMES+=(bound) PORTS+=("$port")
fi
PEER=()
if [ "$FEAST" = 1 ]; then
    port=$(free_port)
    (cd "$REPO" && exec "$ROOT/$BIN/feast" -c . listen -a "127.0.0.1:$port" -w 4) >"$WORK/feast.log" 2>&1 &
    PIDS+=($!)
    "$BIN/python" -c "import grpc, sys; grpc.channel_ready_future(grpc.insecure_channel(sys.argv[1])).result(timeout=120)" \
        "127.0.0.1:$port"
    PEER=(--feast-peer "127.0.0.1:$port" --feast-models "$WORK/models")
fi
bench() { "$BIN/nudge" bench --target "127.0.0.1:$1" --ids-from "$IDS" --json "${@:2}" >/dev/null; }
for i in "${!NAMES[@]}"; do  # warm-up: each worker meets every time zone and customer once
    bench "${PORTS[$i]}" -c 8 --connections 8 --duration 8 --rounds 1 --no-baseline --warmup 0
done

echo "== measuring: STORE=$STORE WORKERS=$WORKERS REPS=$REPS (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
for rep in $(seq 1 "$REPS"); do
    order=("${!NAMES[@]}")
    if [ $((rep % 2)) -eq 0 ]; then order=($(printf '%s\n' "${order[@]}" | tac)); fi
    for i in "${order[@]}"; do
        name=${NAMES[$i]}
        bench "${PORTS[$i]}" --duration 6 --rounds 4 "${PEER[@]}" --out "$OUT/score-$name-$rep.json"
        bench "${PORTS[$i]}" --call ScoreBatch --batch-size 100 --duration 6 --rounds 1 --no-baseline \
            --out "$OUT/batch-$name-$rep.json"
        if [ "$OPEN" = 1 ]; then
            bench "${PORTS[$i]}" --rps 1000 --duration 20 --connections 8 --rounds 1 --no-baseline --warmup 2s \
                --watch-server "${PIDS[$i]}" --out "$OUT/open-$name-$rep.json"
        fi
        echo "   rep $rep $name done (load average: $(cut -d' ' -f1 /proc/loadavg))"
    done
done

"$BIN/python" - "$OUT" "${NAMES[@]}" <<'SUMMARY'
import json, statistics, sys
from pathlib import Path

out, names = Path(sys.argv[1]), sys.argv[2:]

def reports(kind, name):
    return [json.loads(p.read_text()) for p in sorted(out.glob(f"{kind}-{name}-*.json"))]

def med(values):
    values = [v for v in values if v is not None]
    return f"{statistics.median(values):.3f}" if values else "-"

print(f"{'server':8} {'Score p50':>10} {'Check p50':>10} {'Score/Check':>12} {'Score/Feast':>12} "
      f"{'Batch100 p50':>13} {'open p99':>9} {'open errors':>12}   (ms; medians over reps)")
for name in names:
    score, batch, open_ = reports("score", name), reports("batch", name), reports("open", name)
    print(
        f"{name:8} {med([r['results']['Score']['latency_ms']['p50'] for r in score]):>10} "
        f"{med([r['results']['Check']['latency_ms']['p50'] for r in score]):>10} "
        f"{med([r['ratio_p50'] for r in score]):>12} {med([r.get('peer_ratio_p50') for r in score]):>12} "
        f"{med([r['results']['ScoreBatch']['latency_ms']['p50'] for r in batch]):>13} "
        f"{med([r['results']['Score']['latency_ms']['p99'] for r in open_]):>9} "
        f"{med([r['results']['Score']['errors'] for r in open_]):>12}"
    )
for name in names:  # SO_REUSEPORT gives each connection to one worker: how evenly did they share?
    splits = []
    for r in reports("open", name):
        server = r["server"]
        # The workers: the children that worked (not the idle parent or resource tracker).
        cores = [c for pid, p in server["processes"].items() if int(pid) != server["root_pid"] and (c := p["cpu_cores"])]
        if len(cores) > 1:
            splits.append("/".join(f"{100 * c / sum(cores):.0f}" for c in cores))
    if splits:
        print(f"{name}: open loop, each worker's share of the server's CPU, % per rep: {', '.join(splits)}")
SUMMARY
echo "== load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
