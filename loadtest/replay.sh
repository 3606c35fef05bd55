#!/usr/bin/env bash
# Replay: the throughput of `nudge ingest` (issue 11's floor: >= 10,000 events/s with the server,
# Redis and the client on the same 2 cores). The stack is loadtest/stack.sh's, built from all but
# the history's last HOLD_OUT_DAYS. Each of REPEATS runs loads the batch live states afresh
# (`nudge load-states` overwrites what the last run ingested; the event log is removed first),
# starts `nudge serve --workers WORKERS` and replays the held-out events through the Ingest API
# into those states; every event must be APPLIED. A last replay of the same file must apply
# nothing (DUPLICATE within the dedupe window, LATE before it). Prints each run's summary and the
# median rate, and writes the runs as JSON.
#
#   loadtest/replay.sh [HOLD_OUT_DAYS=14] [WORKERS=2] [REPEATS=3] [OUT=loadtest/results/replay.json] [INGEST ARGS...]
#
# Run from the repo root after `make install`. INGEST ARGS go to `nudge ingest` (e.g. --in-flight 1).
set -euo pipefail
HOLD_OUT_DAYS=${1:-14}
WORKERS=${2:-2}
REPEATS=${3:-3}
OUT=${4:-loadtest/results/replay.json}
shift $(($# < 4 ? $# : 4))
source "$(dirname "$0")/stack.sh"
build_stack "$HOLD_OUT_DAYS"

for run in $(seq 1 "$REPEATS"); do
    rm -f "$WORK/repo/data/events.log.jsonl"
    "$BIN/nudge" load-states --repo "$WORK/repo"
    start_server "$WORKERS"
    echo "== run $run: replay with nudge serve --workers $WORKERS (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
    "$BIN/nudge" ingest --events "$WORK/data/held_out.parquet" --customers "$WORK/data/customers.parquet" \
        --target "127.0.0.1:$GRPC_PORT" --json "$@" | tee "$WORK/run$run.json"
    [ "$run" -lt "$REPEATS" ] && stop_server
done
echo "== the same file again: nothing may be applied twice"
"$BIN/nudge" ingest --events "$WORK/data/held_out.parquet" --target "127.0.0.1:$GRPC_PORT" --json "$@" \
    | tee "$WORK/again.json"

mkdir -p "$(dirname "$OUT")"
"$BIN/python" - "$WORK" "$REPEATS" "$OUT" <<'CHECK'
import json
import statistics
import sys
from pathlib import Path

work, repeats, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
runs = [json.loads((work / f"run{run}.json").read_text()) for run in range(1, repeats + 1)]
again = json.loads((work / "again.json").read_text())
problems = [f"run {i}: {r['applied']:,} of {r['events']:,} applied" for i, r in enumerate(runs, 1) if r["applied"] != r["events"]]
if again["applied"]:
    problems.append(f"the second replay applied {again['applied']:,} events again")
rates = [r["events_per_second"] for r in runs]
out.write_text(json.dumps({"runs": runs, "again": again, "median_events_per_second": statistics.median(rates)}, indent=2))
print(f"events/s per run: {', '.join(f'{r:,.0f}' for r in rates)}; median {statistics.median(rates):,.0f}")
sys.exit("; ".join(problems) if problems else 0)
CHECK
echo "== load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); JSON report: $OUT"
