"""End to end on a fresh clone: simulate → features → feast apply → materialize → load live
states → train → serve → score a known, a brand-new and an unknown customer over gRPC → stop the server.

Every step is the real command a user would run (printed before it runs, timed after).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pandas as pd
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nudge.inputs import UserError, check, feast_repo_problem, port_problem, positive_int, unwritable_dir

BIN = Path(sys.executable).parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customers", type=positive_int, default=3000, help="Simulated customers.")
    parser.add_argument("--days", type=positive_int, default=120, help="Simulated days of history.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", type=Path, default=Path("data"), help="Where simulated events go.")
    parser.add_argument("--repo", type=Path, default=Path("feature_repo"), help="The Feast repo.")
    parser.add_argument("--models", type=Path, default=Path("models"), help="Where models are exported.")
    parser.add_argument("--port", type=int, default=50071, help="Port of the demo server.")


def step(title: str, argv: list[str], timings: list[tuple[str, float]]) -> None:
    """Run one real command, echoing it, failing the demo if it fails."""
    print(f"\n== {title}\n$ {shlex.join(argv)}", flush=True)
    started = time.monotonic()
    code = subprocess.run(argv, check=False).returncode
    if code != 0:
        raise UserError(f"step '{title}' failed (exit status {code}); its message is above", exit_code=1)
    timings.append((title, time.monotonic() - started))


@contextmanager
def running_server(args: argparse.Namespace, timings: list[tuple[str, float]]) -> Iterator[str]:
    """Start `nudge serve` and wait for SERVING; always stop it (SIGTERM) afterwards."""
    target = f"127.0.0.1:{args.port}"
    argv = [str(BIN / "nudge"), "serve", "--repo", str(args.repo), "--models", str(args.models)]
    argv += ["--port", str(args.port), "--workers", "1", "--plaintext", "true"]
    print(f"\n== serve\n$ {shlex.join(argv)}", flush=True)
    started = time.monotonic()
    server = subprocess.Popen(argv)
    try:
        wait_serving(target, server, timeout=60)
        timings.append(("server start → SERVING", time.monotonic() - started))
        yield target
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_serving(target: str, server: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll grpc.health.v1 until SERVING, the process dies, or the timeout passes."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"server exited with {server.returncode} before SERVING")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise SystemExit(f"server not SERVING after {timeout:.0f}s")


def pick_customers(data: Path) -> tuple[str, str]:
    """A customer with rich history and one who signed up but never did anything."""
    events = pd.read_parquet(data / "events.parquet", columns=["customer_id"])
    customers = pd.read_parquet(data / "customers.parquet")
    counts = events["customer_id"].value_counts()
    silent = customers.loc[~customers["customer_id"].isin(counts.index), "customer_id"]
    known = str(counts.index[len(counts) // 10])
    new = str(silent.iloc[0]) if len(silent) else str(counts.index[-1])
    return known, new


def run(args: argparse.Namespace) -> int:
    # Before minutes of simulating and training, not when the server finally starts.
    check(
        feast_repo_problem(args.repo),
        unwritable_dir(args.data, "--data"),
        unwritable_dir(args.models, "--models"),
        port_problem("127.0.0.1", args.port),
    )
    timings: list[tuple[str, float]] = []
    nudge, feast = str(BIN / "nudge"), str(BIN / "feast")
    data = args.data
    step(
        "simulate",
        [
            nudge,
            "simulate",
            "--customers",
            str(args.customers),
            "--days",
            str(args.days),
            "--seed",
            str(args.seed),
            "--out",
            str(data),
        ],
        timings,
    )
    step(
        "features",
        [
            nudge,
            "features",
            "--events",
            str(data / "events.parquet"),
            "--customers",
            str(data / "customers.parquet"),
            "--repo",
            str(args.repo),
        ],
        timings,
    )
    step("feast apply", [feast, "-c", str(args.repo), "apply"], timings)
    # The simulated history ends at today's 00:00 UTC, so "now" is the natural end time.
    now = datetime.now(UTC).isoformat(timespec="seconds")
    step(
        "feast materialize-incremental",
        [feast, "-c", str(args.repo), "materialize-incremental", now],
        timings,
    )
    step("load live states", [nudge, "load-states", "--repo", str(args.repo)], timings)
    step(
        "train",
        [
            nudge,
            "train",
            "--repo",
            str(args.repo),
            "--out",
            str(args.models),
            "--events",
            str(data / "events.parquet"),
            "--customers",
            str(data / "customers.parquet"),
            "--truth",
            str(data / "truth.parquet"),
        ],
        timings,
    )
    with running_server(args, timings) as target:
        known, new = pick_customers(data)
        print(f"\nknown customer {known}, brand-new customer {new}, unknown customer nobody-42")
        step("score", [nudge, "score", "--target", target, known, new, "nobody-42"], timings)
    print("\n== timings")
    for title, seconds in timings:
        print(f"  {title:<32} {seconds:6.1f} s")
    print(f"  {'total':<32} {sum(s for _, s in timings):6.1f} s")
    return 0
