"""Server lifecycle and transport parity through the real stack: drain on SIGTERM, several
worker processes on one port, the Redis store, and gRPC answers equal to the core's."""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from datetime import timedelta

import grpc
import pytest

from nudge.v1 import scoring_pb2 as pb
from nudge.v1 import scoring_pb2_grpc
from service import config
from service.scorer import ScoreQuery, ScoreResult
from service.server import build_scorer
from tests.support.stack import RedisServer, ServerProcess, Stack, timestamp


def customers(stack: Stack, n: int) -> list[str]:
    import pandas as pd

    ids = pd.read_parquet(stack.customers, columns=["customer_id"])["customer_id"]
    return [str(c) for c in ids.iloc[:: max(len(ids) // n, 1)][:n]]


def test_grpc_answers_equal_the_core(stack: Stack, server: ServerProcess) -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    settings = config.from_args(
        parser.parse_args(["--repo", str(stack.repo), "--models", str(stack.models), "--plaintext", "true"])
    )
    scorer, _ = build_scorer(settings)
    ids = [*customers(stack, 20), "nobody"]
    window_end = stack.as_of + timedelta(hours=36)
    core = scorer.score([ScoreQuery(cid, now=stack.as_of, window_end=window_end) for cid in ids])
    with grpc.insecure_channel(server.target) as channel:
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        for cid, expected in zip(ids, core, strict=True):
            assert isinstance(expected, ScoreResult)
            reply = stub.Score(
                pb.ScoreRequest(
                    customer_id=cid,
                    now=timestamp(stack.as_of),
                    window_end=timestamp(stack.as_of + timedelta(hours=36)),
                ),
                timeout=5,
            )
            assert reply.purchase_propensity == pytest.approx(expected.purchase_propensity, abs=1e-7)
            assert pb.Decision.Name(reply.decision) == "DECISION_" + expected.plan.decision.name
            assert reply.time_zone == expected.plan.time_zone
            assert [s.start_time.ToDatetime().isoformat() for s in reply.top_slots] == [
                s.start.replace(tzinfo=None).isoformat() for s in expected.plan.top_slots
            ]
            assert pb.FeatureStatus.Name(reply.feature_status).endswith(expected.feature_status.value)


def test_two_workers_share_the_port_and_stop_on_sigterm(stack: Stack) -> None:
    proc = ServerProcess(stack, workers=2).start()
    try:
        with grpc.insecure_channel(proc.target) as channel:
            stub = scoring_pb2_grpc.ScoringServiceStub(channel)
            for cid in customers(stack, 10):
                assert (
                    stub.Score(
                        pb.ScoreRequest(customer_id=cid, now=timestamp(stack.as_of)), timeout=5
                    ).customer_id
                    == cid
                )
        assert proc.process is not None
        workers = _children(proc.process.pid)
        assert len(workers) == 2, f"expected 2 worker processes, found {workers}"
    finally:
        assert proc.stop() == 0
    assert all(not _alive(pid) for pid in workers)


def test_redis_store_serves_the_same_features(
    stack: Stack, redis_stack: Stack, server: ServerProcess
) -> None:
    ids = customers(stack, 10)
    with ServerProcess(redis_stack) as redis_proc:
        answers = []
        for target in (server.target, redis_proc.target):
            with grpc.insecure_channel(target) as channel:
                stub = scoring_pb2_grpc.ScoringServiceStub(channel)
                answers.append(
                    [
                        stub.Score(pb.ScoreRequest(customer_id=c, now=timestamp(stack.as_of)), timeout=5)
                        for c in ids
                    ]
                )
    # Real features on both sides: two cold-start answers would agree without proving anything.
    assert all(r.feature_status == pb.FEATURE_STATUS_FRESH for r in answers[0])
    for sqlite_reply, redis_reply in zip(*answers, strict=True):
        assert redis_reply.purchase_propensity == pytest.approx(sqlite_reply.purchase_propensity, abs=1e-7)
        assert redis_reply.feature_status == sqlite_reply.feature_status
        assert redis_reply.best_send_time == sqlite_reply.best_send_time


def test_sigterm_lets_an_in_flight_call_finish(redis_stack: Stack, redis_server: RedisServer) -> None:
    """Freeze Redis so a call is stuck in its feature read, SIGTERM the server, thaw Redis:
    the call still completes with real features and the server then exits cleanly."""
    proc = ServerProcess(redis_stack, "--store-timeout-ms", "5000", "--grace-seconds", "10").start()
    cid = customers(redis_stack, 1)[0]
    outcome: dict[str, object] = {}

    def call() -> None:
        with grpc.insecure_channel(proc.target) as channel:
            stub = scoring_pb2_grpc.ScoringServiceStub(channel)
            try:
                outcome["reply"] = stub.Score(
                    pb.ScoreRequest(customer_id=cid, now=timestamp(redis_stack.as_of)), timeout=20
                )
            except grpc.RpcError as exc:
                outcome["error"] = exc

    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(1.0)  # the call is now waiting on the frozen Redis
        assert proc.process is not None
        proc.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    caller.join(timeout=20)
    assert "error" not in outcome, outcome.get("error")
    reply = outcome["reply"]
    assert isinstance(reply, pb.ScoreResponse)
    assert reply.customer_id == cid
    assert reply.feature_status in (pb.FEATURE_STATUS_FRESH, pb.FEATURE_STATUS_STALE)
    assert proc.process.wait(timeout=20) == 0


def _children(pid: int) -> list[int]:
    """Worker processes of a server (multiprocessing's resource tracker is not one)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = [int(p) for p in f.read().split()]
    return [c for c in children if b"spawn_main" in open(f"/proc/{c}/cmdline", "rb").read()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
