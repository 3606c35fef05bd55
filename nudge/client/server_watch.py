"""Memory and CPU of a server and its worker processes, sampled during a load run.

``nudge bench --watch-server PID`` uses it. Soak runs: a leak shows as RSS that keeps growing
after the warm-up, so the report gives each process's growth from a point in the run (default
minute 2, when caches, pools and allocator arenas have filled) to its end. Capacity: the CPU
the server spent (busy cores, averaged over the run) bounds the request rate a machine can
serve, whatever the latency. Linux only: it reads ``/proc/<pid>/status`` (VmRSS),
``/proc/<pid>/stat`` (CPU ticks) and ``/proc/<pid>/task/*/children``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

PROC = Path("/proc")
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant, root first."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        for children in (PROC / str(pid) / "task").glob("*/children"):
            try:
                todo += [int(c) for c in children.read_text().split()]
            except OSError:  # the thread or process ended while we looked
                continue
    return found


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU ``pid`` has used, or None once it has exited."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is fields[0]
    return (int(fields[11]) + int(fields[12])) * TICK_S


def rss_bytes(pid: int) -> int | None:
    """VmRSS of ``pid``, or None once it has exited."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class ServerWatch:
    """Samples RSS and CPU time of a process tree every ``every_s`` seconds on a daemon thread,
    while in a ``with`` block. The first sample is taken on entry, the last on exit."""

    def __init__(self, root: int, every_s: float, growth_from_s: float) -> None:
        if rss_bytes(root) is None:
            raise ValueError(f"no process {root} to watch (--watch-server)")
        self.root = root
        self.every_s = every_s
        self.growth_from_s = growth_from_s
        self.samples: dict[int, list[tuple[float, int, float]]] = {}  # (seconds, RSS, CPU s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-watch", daemon=True)
        self._start = 0.0

    def __enter__(self) -> ServerWatch:
        self._start = time.monotonic()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def _sample(self) -> None:
        elapsed = time.monotonic() - self._start
        for pid in process_tree(self.root):
            rss, cpu = rss_bytes(pid), cpu_seconds(pid)
            if rss is not None and cpu is not None:
                self.samples.setdefault(pid, []).append((elapsed, rss, cpu))

    def report(self) -> dict[str, Any]:
        """Per process: its samples (seconds, RSS MB), RSS growth from the first sample at or
        after ``growth_from_s`` to the last one (None when the run ended before that point),
        and its CPU in busy cores (CPU seconds / wall seconds between its first and last
        sample); ``cpu_cores`` sums them: the whole server's share of the machine."""
        processes: dict[str, dict[str, Any]] = {}
        for pid, series in self.samples.items():
            later = [rss for t, rss, _ in series if t >= self.growth_from_s]
            growth = None
            if len(later) >= 2:
                growth = round(100 * (later[-1] - later[0]) / later[0], 2)
            wall = series[-1][0] - series[0][0]
            cores = round((series[-1][2] - series[0][2]) / wall, 3) if wall > 0 else None
            processes[str(pid)] = {
                "first_mb": _mb(series[0][1]),
                "last_mb": _mb(series[-1][1]),
                "max_mb": _mb(max(rss for _, rss, _ in series)),
                "growth_pct": growth,
                "cpu_cores": cores,
                "samples": [[round(t, 1), _mb(rss)] for t, rss, _ in series],
            }
        growths = [p["growth_pct"] for p in processes.values() if p["growth_pct"] is not None]
        return {
            "root_pid": self.root,
            "every_s": self.every_s,
            "growth_from_s": self.growth_from_s,
            "max_growth_pct": max(growths) if growths else None,
            "cpu_cores": round(sum(p["cpu_cores"] or 0 for p in processes.values()), 3),
            "processes": processes,
        }


def _mb(n: int) -> float:
    return round(n / 2**20, 1)


def format_server(server: dict[str, Any]) -> list[str]:
    """Text lines for the bench report."""
    lines = [
        f"Server (process {server['root_pid']} and its children, sampled every {server['every_s']:g} s): "
        f"{server['cpu_cores']:.2f} cores busy"
    ]
    for pid, p in server["processes"].items():
        growth = "-" if p["growth_pct"] is None else f"{p['growth_pct']:+.2f} %"
        cores = "-" if p["cpu_cores"] is None else f"{p['cpu_cores']:.2f}"
        lines.append(
            f"  pid {pid}: RSS {p['first_mb']:.1f} → {p['last_mb']:.1f} MB (max {p['max_mb']:.1f}), "
            f"growth from {server['growth_from_s']:g} s to the end {growth}; CPU {cores} cores"
        )
    return lines
