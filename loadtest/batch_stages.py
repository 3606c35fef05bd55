"""ScoreBatch(100) and Score(1) in-process, stage by stage, on a real stack; A/B over trees.

  .venv/bin/python loadtest/batch_stages.py [--rounds 6] [--repetitions 200] [--store sqlite] TREE [TREE ...]

Builds a throw-away stack in a temporary directory (``nudge simulate``, ``nudge features``,
``feast apply``, ``feast materialize-incremental`` into a redis-server started on a free port,
or with ``--store sqlite`` into the repo's SQLite online store, the store the serving floors
are judged on; ``nudge train``), using the first TREE's code. Then, for each of ``--rounds``
rounds, it measures every TREE (a source checkout, e.g. one exported with ``git archive``) in a process of its own
(``PYTHONPATH=TREE``), alternating the order (ABBA), so drift on a shared machine weighs on
every tree alike. It prints, per tree, the median over rounds of each stage's per-round median
(µs per call), and the ratio of each later tree to the first. Redis is stopped by PID and the
directory removed at exit.

Stages run through the real handler (``ScoringServicer.ScoreBatch`` / ``Score``) on a scorer
built as the server builds it, live states included (``nudge load-states``: every simulated
customer is read from its live state, as a server on that repo reads them). ``to_query`` and
``score`` are timed by wrapping ``grpc_api.to_queries`` / ``to_batch_queries`` and the scorer's
``score`` / ``score_queries``; inside ``score``, ``read`` (round trip and decoding) and
``infer`` (model rows and both ONNX runs) are timed by the scorer's own probe hook;
``respond`` is the rest of the handler (building the response). Only names every tree
has are used, so old and new code are timed by the same script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("parse", "to_query", "read", "infer", "score_other", "score", "respond", "handler", "serialize")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _redis(store: str) -> Iterator[str | None]:
    """A redis-server on a free port, without persistence, stopped by PID afterwards (None and
    no server for the SQLite store)."""
    if store == "sqlite":
        yield None
        return
    port = _free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def _cli(tree: Path, *argv: str) -> None:
    """``nudge ...`` (or ``feast ...``) with ``tree``'s code, failing loudly."""
    feast = argv[0] == "feast"
    command = (
        [str(Path(sys.executable).with_name("feast")), *argv[1:]]
        if feast
        else [sys.executable, "-m", "nudge", *argv]
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)


def build_stack(tree: Path, work: Path, redis_address: str | None, customers: int) -> dict[str, str]:
    """Simulated data → features → Feast repo on Redis (or, without ``redis_address``, on the
    repo's SQLite online store, live states in SQLite beside it), materialised, live states
    loaded → trained models."""
    repo, data, models = work / "repo", work / "data", work / "models"
    (repo / "data").mkdir(parents=True)
    shutil.copy(tree / "feature_repo" / "definitions.py", repo)
    if redis_address is None:
        shutil.copy(tree / "feature_repo" / "feature_store.yaml", repo)
    else:
        yaml = (tree / "feature_repo" / "feature_store.redis.yaml").read_text()
        (repo / "feature_store.yaml").write_text(yaml.replace("${NUDGE_REDIS}", redis_address))
    _cli(tree, "simulate", "--customers", str(customers), "--days", "120", "--seed", "11", "--out", str(data))
    sources = ["--events", str(data / "events.parquet"), "--customers", str(data / "customers.parquet")]
    _cli(tree, "features", *sources, "--repo", str(repo))
    _cli(tree, "feast", "-c", str(repo), "apply")
    _cli(
        tree,
        "feast",
        "-c",
        str(repo),
        "materialize-incremental",
        datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _cli(tree, "load-states", "--repo", str(repo))
    _cli(tree, "train", "--repo", str(repo), "--out", str(models), *sources)
    return {"repo": str(repo), "models": str(models), "customers": str(data / "customers.parquet")}


def _as_of(customers_parquet: str) -> datetime:
    """The newest snapshot (midnight after the last event), so every customer is FRESH."""
    import pandas as pd

    events = Path(customers_parquet).with_name("events.parquet")
    last = pd.read_parquet(events, columns=["event_timestamp"])["event_timestamp"].max()
    return (last.floor("D") + pd.Timedelta(days=1)).to_pydatetime()


# --------------------------------------------------------------------------- one tree, one round


class _NoDeadline:
    """The one thing the handlers ask of a gRPC context."""

    def time_remaining(self) -> None:
        return None


def _timed(stage: str, clock: dict[str, int], fn: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            clock[stage] += time.perf_counter_ns() - start

    return timed


class _Probe:
    """Times the scorer's read and inference stages through its own probe hook."""

    def __init__(self, clock: dict[str, int]) -> None:
        self.clock = clock

    def feature_fetch(self, read: Callable[..., Any]) -> Callable[..., Any]:
        return _timed("read", self.clock, read)

    def inference(self, infer: Callable[..., Any]) -> Callable[..., Any]:
        return _timed("infer", self.clock, infer)


def measure(stack: dict[str, str], batch_size: int, repetitions: int) -> dict[str, dict[str, float]]:
    """Per call shape, each stage's median (µs) over ``repetitions`` calls (after a warm-up)."""
    from nudge.client.bench import batch_requests, load_ids, score_requests
    from nudge.v1 import scoring_pb2 as pb
    from service import grpc_api
    from service.config import Settings
    from service.online.live import LiveFeatures
    from service.server import build_ingestor, build_scorer

    settings = Settings(repo=Path(stack["repo"]), models=Path(stack["models"]), plaintext=True)
    scorer, store = build_scorer(settings)
    # As the server does: customers with a live state are scored on it.
    scorer.live = LiveFeatures(build_ingestor(settings, store).store)
    clock = dict.fromkeys(STAGES, 0)
    scorer.instrument(_Probe(clock))
    scorer.score = _timed("score", clock, scorer.score)  # type: ignore[method-assign]
    scorer.score_queries = _timed("score", clock, scorer.score_queries)  # type: ignore[method-assign]
    grpc_api.to_queries = _timed("to_query", clock, grpc_api.to_queries)
    grpc_api.to_batch_queries = _timed("to_query", clock, grpc_api.to_batch_queries)
    servicer = grpc_api.ScoringServicer(scorer)
    ids, now = load_ids(None, Path(stack["customers"])), _as_of(stack["customers"])
    shapes: dict[str, tuple[tuple[bytes, ...], Any, Callable[..., Any]]] = {
        f"ScoreBatch({batch_size})": (
            batch_requests(ids, now, batch_size),
            pb.ScoreBatchRequest,
            servicer.ScoreBatch,
        ),
        "Score(1)": (score_requests(ids, now), pb.ScoreRequest, servicer.Score),
    }
    out = {}
    for name, (requests, message, handler) in shapes.items():
        samples: dict[str, list[int]] = {stage: [] for stage in STAGES}
        for rep in range(repetitions + 20):
            raw = requests[rep % len(requests)]
            for stage in clock:
                clock[stage] = 0
            start = time.perf_counter_ns()
            request = message.FromString(raw)
            parsed = time.perf_counter_ns()
            coroutine = handler(request, _NoDeadline())
            try:
                coroutine.send(None)
                raise RuntimeError("the handler awaited something")
            except StopIteration as done:
                response = done.value
            handled = time.perf_counter_ns()
            response.SerializeToString()
            if rep < 20:
                continue  # warm-up
            clock["parse"], clock["handler"] = parsed - start, handled - parsed
            clock["serialize"] = time.perf_counter_ns() - handled
            clock["score_other"] = clock["score"] - clock["read"] - clock["infer"]
            clock["respond"] = clock["handler"] - clock["to_query"] - clock["score"]
            for stage in STAGES:
                samples[stage].append(clock[stage])
        out[name] = {stage: statistics.median(v) / 1000 for stage, v in samples.items()}
    return out


# --------------------------------------------------------------------------- A/B driver


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("trees", nargs="*", type=Path, help="Source trees to compare (default: this one).")
    parser.add_argument("--rounds", type=int, default=6, help="Measurements per tree (default %(default)s).")
    parser.add_argument(
        "--repetitions", type=int, default=200, help="Calls per measurement (default %(default)s)."
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument(
        "--customers", type=int, default=800, help="Simulated customers (default %(default)s)."
    )
    parser.add_argument(
        "--store",
        choices=("redis", "sqlite"),
        default="redis",
        help="Online store and live states: Redis, or SQLite files (default %(default)s).",
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one tree, one round (JSON stack)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure), args.batch_size, args.repetitions)))
        return 0
    trees = [t.resolve() for t in args.trees] or [ROOT]
    with tempfile.TemporaryDirectory(prefix="nudge-stages-") as work, _redis(args.store) as address:
        print(f"building the stack in {work} ({address or 'SQLite'}) ...", file=sys.stderr)
        stack = build_stack(trees[0], Path(work), address, args.customers)
        results: dict[Path, list[dict[str, dict[str, float]]]] = {tree: [] for tree in trees}
        for round_index in range(args.rounds):
            for tree in trees if round_index % 2 == 0 else trees[::-1]:
                print(f"round {round_index + 1}: {tree} (load {_load()})", file=sys.stderr)
                command = [sys.executable, __file__, "--measure", json.dumps(stack)]
                command += ["--repetitions", str(args.repetitions), "--batch-size", str(args.batch_size)]
                env = {**os.environ, "PYTHONPATH": str(tree)}
                run = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, cwd=tree)
                if run.returncode:
                    raise SystemExit(f"measuring {tree} failed (exit {run.returncode})")
                results[tree].append(json.loads(run.stdout.strip().splitlines()[-1]))
    print(
        f"\nµs per call, median over {args.rounds} rounds of per-round medians ({args.repetitions} calls each); load at end {_load()}"
    )
    first = trees[0]
    for shape in results[first][0]:
        header = f"{shape:<16}" + "".join(f"{t.name[:14]:>16}" for t in trees)
        header += "".join(f"{'ratio ' + t.name[:8]:>16}" for t in trees[1:])
        print("\n" + header)
        for stage in STAGES:
            medians = [statistics.median(r[shape][stage] for r in results[t]) for t in trees]
            line = f"{stage:<16}" + "".join(f"{m:>16.1f}" for m in medians)
            line += "".join(f"{m / medians[0]:>16.2f}" if medians[0] else f"{'-':>16}" for m in medians[1:])
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
