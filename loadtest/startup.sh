#!/usr/bin/env bash
# Start-up: launch `nudge serve --workers WORKERS` LAUNCHES times on a Redis online store and time
# each launch until every worker has logged "SERVING on" (models, registry and store reader
# ready; polled every 50 ms), then read each worker's RSS (VmRSS) and stop the server with
# SIGTERM. Prints one line per launch and the median.
#
#   loadtest/startup.sh [LAUNCHES=3] [WORKERS=2]
#
# Run from the repo root after `make install`; the stack is loadtest/stack.sh's.
set -euo pipefail
LAUNCHES=${1:-3}
WORKERS=${2:-2}
source "$(dirname "$0")/stack.sh"
build_stack

rss_of() { awk '/VmRSS/ {printf "%.0f MB", $2 / 1024}' "/proc/$1/status"; }
times=()
for launch in $(seq 1 "$LAUNCHES"); do
    load=$(cut -d' ' -f1 /proc/loadavg)
    began=$(date +%s.%N)
    start_server "$WORKERS"
    took=$(echo "$(date +%s.%N) - $began" | bc)
    rss=" parent $(rss_of "$SERVER_PID")"
    for pid in $(pgrep -P "$SERVER_PID" || true); do  # the workers, and multiprocessing's helper
        kind=worker
        grep -q resource_tracker "/proc/$pid/cmdline" && kind="resource tracker"
        rss+=", $kind $(rss_of "$pid")"
    done
    printf "launch %d: SERVING after %.2f s (load %s); RSS%s\n" "$launch" "$took" "$load" "$rss"
    times+=("$took")
    stop_server
done
median=$(printf "%s\n" "${times[@]}" | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}')
printf "median of %d launches, --workers %d: %.2f s\n" "$LAUNCHES" "$WORKERS" "$median"
