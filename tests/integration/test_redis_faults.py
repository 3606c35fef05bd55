"""Redis killed and restarted under a steady load from a real client (issue 6, part 1).

Every request must be answered within its deadline: during the outage with the population
answer and feature status UNAVAILABLE (the default), or UNAVAILABLE errors when the server is
told to fail fast; after Redis returns, real features are served again within 2 s, with no
restart of nudge. The counts are printed (run with -s to see them)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import redis

from nudge.v1 import scoring_pb2 as pb
from nudge.v1 import scoring_pb2_grpc
from tests.support.stack import RedisServer, ServerProcess, Stack, copy_feature_repo, materialize, start_redis

DEADLINE_S = 1.0


@dataclass
class Tally:
    """What a steady client saw, with the time of each answer."""

    sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    longest_s: float = 0.0
    fresh_at: list[float] = field(default_factory=list)


def steady_load(target: str, ids: list[str], tally: Tally, stop: threading.Event) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        while not stop.is_set():
            cid = ids[tally.sent % len(ids)]
            tally.sent += 1
            started = time.monotonic()
            try:
                reply = stub.Score(pb.ScoreRequest(customer_id=cid), timeout=DEADLINE_S)
                tally.outcomes[pb.FeatureStatus.Name(reply.feature_status)] += 1
                if reply.feature_status == pb.FEATURE_STATUS_FRESH:
                    tally.fresh_at.append(time.monotonic())
            except grpc.RpcError as exc:
                tally.outcomes[exc.code().name] += 1
            tally.longest_s = max(tally.longest_s, time.monotonic() - started)
            time.sleep(0.002)


@pytest.fixture
def killable(stack: Stack, tmp_path: Path) -> Iterator[tuple[RedisServer, Stack, Path]]:
    """A Redis with persistence, the stack's features materialised into it."""
    server = start_redis(data_dir=tmp_path)
    repo = copy_feature_repo(tmp_path / "repo", redis_address=server.address)
    for table in (stack.repo / "data").glob("*.parquet"):
        shutil.copy(table, repo / "data" / table.name)
    materialize(repo)
    redis.Redis(host=server.host, port=server.port).save()
    yield server, Stack(stack.data, repo, stack.models, stack.as_of), tmp_path
    server.stop()


def known_ids(stack: Stack) -> list[str]:
    import pandas as pd

    events = pd.read_parquet(stack.events, columns=["customer_id"])
    return [str(c) for c in events["customer_id"].value_counts().index[:50]]


@pytest.mark.parametrize("mode", ["cold_start", "fail"])
def test_redis_killed_and_restarted_under_load(killable: tuple[RedisServer, Stack, Path], mode: str) -> None:
    server, stack, data_dir = killable
    tally, stop = Tally(), threading.Event()
    with ServerProcess(stack, "--store-unavailable", mode, "--store-timeout-ms", "50") as proc:
        client = threading.Thread(target=steady_load, args=(proc.target, known_ids(stack), tally, stop))
        client.start()
        try:
            time.sleep(1.5)
            before = dict(tally.outcomes)
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait()
            time.sleep(2.0)
            during = Counter(tally.outcomes) - Counter(before)
            restarted = start_redis(port=server.port, data_dir=data_dir)
            back_at = time.monotonic()
            time.sleep(2.5)
        finally:
            stop.set()
            client.join(timeout=10)
        restarted.stop()
    recovered_in = min((t for t in tally.fresh_at if t >= back_at), default=float("inf")) - back_at
    print(
        f"\n[{mode}] sent {tally.sent}, outcomes {dict(tally.outcomes)}, during outage {dict(during)}, "
        f"longest {tally.longest_s * 1000:.0f} ms, fresh again {recovered_in:.2f} s after restart"
    )
    assert before.get("FEATURE_STATUS_FRESH", 0) > 0
    assert sum(tally.outcomes.values()) == tally.sent  # every request answered, one way or the other
    assert tally.longest_s < DEADLINE_S
    assert tally.outcomes["DEADLINE_EXCEEDED"] == 0
    if mode == "cold_start":
        assert set(during) <= {"FEATURE_STATUS_UNAVAILABLE", "FEATURE_STATUS_FRESH"}
        assert during["FEATURE_STATUS_UNAVAILABLE"] > 0
        assert not set(tally.outcomes) - {"FEATURE_STATUS_FRESH", "FEATURE_STATUS_UNAVAILABLE"}
    else:
        assert during["UNAVAILABLE"] > 0
        assert not set(tally.outcomes) - {"FEATURE_STATUS_FRESH", "UNAVAILABLE"}
    assert recovered_in <= 2.0
