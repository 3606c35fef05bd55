"""What operators see, through real server processes: the Prometheus endpoint scraped after
real calls (one process, and two workers summed on one port), JSON logs carrying the
caller's request id and no feature values, and OpenTelemetry spans for the scoring stages."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pandas as pd
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from nudge.v1 import scoring_pb2 as pb
from nudge.v1 import scoring_pb2_grpc
from tests.support.ops import delta, matching, scrape, scrape_until, value
from tests.support.stack import ServerProcess, Stack, free_port, timestamp

SCORE = "nudge.v1.ScoringService/Score"
BATCH = "nudge.v1.ScoringService/ScoreBatch"


def known_customers(stack: Stack, n: int) -> list[str]:
    events = pd.read_parquet(stack.events, columns=["customer_id"])
    return [str(c) for c in events["customer_id"].value_counts().index[:n]]


@pytest.fixture(scope="module")
def observed(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    """One process with metrics, JSON logs and the access log on, logging every call."""
    port = free_port()
    flags = (
        "--metrics-port",
        str(port),
        "--log-format",
        "json",
        "--access-log",
        "true",
        "--access-log-every",
        "1",
    )
    log = tmp_path_factory.mktemp("observed") / "server.log"
    with ServerProcess(stack, *flags, log_path=log) as server:
        yield server, port


def test_metrics_move_with_real_calls(observed: tuple[ServerProcess, int], stack: Stack) -> None:
    server, port = observed
    ids = known_customers(stack, 5)
    before = scrape(port)
    with server.channel() as channel:
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        replies = [
            stub.Score(pb.ScoreRequest(customer_id=c, now=timestamp(stack.as_of)), timeout=5) for c in ids
        ]
        stub.Score(pb.ScoreRequest(customer_id="nobody-at-all", now=timestamp(stack.as_of)), timeout=5)
        with pytest.raises(grpc.RpcError):
            stub.Score(pb.ScoreRequest(customer_id=""), timeout=5)
        batch = [pb.ScoreRequest(customer_id=c, now=timestamp(stack.as_of)) for c in [*ids[:2], ""]]
        stub.ScoreBatch(pb.ScoreBatchRequest(requests=batch), timeout=5)
    after = scrape(port)

    assert delta(before, after, "nudge_grpc_requests_total", method=SCORE, code="OK") == 6
    assert delta(before, after, "nudge_grpc_requests_total", method=SCORE, code="INVALID_ARGUMENT") == 1
    assert delta(before, after, "nudge_grpc_requests_total", method=BATCH, code="OK") == 1
    count = "nudge_grpc_request_duration_seconds_count"
    assert delta(before, after, count, method=SCORE, code="OK") == 6
    inf_bucket = dict(method=SCORE, code="OK", le="+Inf")
    assert delta(before, after, "nudge_grpc_request_duration_seconds_bucket", **inf_bucket) == 6
    assert delta(before, after, "nudge_grpc_request_duration_seconds_sum", method=SCORE, code="OK") > 0

    fresh = sum(r.feature_status == pb.FEATURE_STATUS_FRESH for r in replies) + 2  # + the batch's two
    assert delta(before, after, "nudge_feature_status_total", status="FRESH") == fresh
    assert delta(before, after, "nudge_feature_status_total", status="MISSING") == 1
    assert delta(before, after, "nudge_purchase_propensity_count") == 8  # 6 Score + 2 batch answers
    assert delta(before, after, "nudge_feature_age_seconds_count") == fresh
    # One read and one inference per call that had a valid customer (not the invalid Score).
    assert delta(before, after, "nudge_feature_fetch_seconds_count") == 7
    assert delta(before, after, "nudge_inference_seconds_count") == 7
    assert delta(before, after, "nudge_inference_seconds_sum") > 0

    versions = {m.name: m.version for m in replies[0].models}
    loaded = {labels["model"]: labels["version"] for labels, v in matching(after, "nudge_model_loaded") if v}
    assert loaded == versions
    assert value(after, "process_resident_memory_bytes") > 0


def json_lines(text: str) -> list[dict[str, Any]]:
    entries = []
    for line in text.splitlines():
        if line.strip():
            entries.append(json.loads(line))  # every line is one JSON object
    return entries


def test_json_logs_carry_the_request_id_and_no_feature_values(
    observed: tuple[ServerProcess, int], stack: Stack
) -> None:
    server, _ = observed
    customer = known_customers(stack, 1)[0]
    rid = "req-7c1e-test"
    with server.channel() as channel:
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        reply = stub.Score(
            pb.ScoreRequest(customer_id=customer, now=timestamp(stack.as_of)),
            metadata=(("x-request-id", rid),),
            timeout=5,
        )
        stub.Score(pb.ScoreRequest(customer_id=customer, now=timestamp(stack.as_of)), timeout=5)
    text = server.log()
    entries = json_lines(text)
    mine = [e for e in entries if e.get("request_id") == rid]
    assert len(mine) == 1, mine
    (access,) = mine
    assert access["logger"] == "nudge.access"
    assert access["method"] == SCORE and access["code"] == "OK"
    assert access["duration_ms"] > 0
    assert set(access) <= {
        "ts",
        "level",
        "logger",
        "pid",
        "msg",
        "request_id",
        "method",
        "code",
        "duration_ms",
    }
    # A call without an id gets a generated one.
    generated = [e for e in entries if e.get("logger") == "nudge.access" and e.get("request_id") != rid]
    assert generated and all(re.fullmatch(r"[0-9a-f]{16}", e["request_id"]) for e in generated)
    # Nothing the model saw or said reaches the log.
    for secret in (f"{reply.purchase_propensity}", reply.time_zone, reply.best_send_time_local, customer):
        assert secret and secret not in text


def test_access_log_samples_ok_calls_and_logs_every_refusal(stack: Stack, tmp_path: Path) -> None:
    """By default one OK call in 100 per method is logged (here 1 in 50); every call answered
    with another status is, whatever the sampling: bad requests and calls without a token."""
    token = "tok-access-log"
    env = {"NUDGE_AUTH_TOKENS": token}
    flags = ("--log-format", "json", "--access-log", "true", "--access-log-every", "50")
    with (
        ServerProcess(stack, *flags, env=env, log_path=tmp_path / "server.log") as server,
        server.channel() as channel,
    ):
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        auth = (("authorization", f"Bearer {token}"),)
        customer = known_customers(stack, 1)[0]
        for _ in range(120):
            stub.Score(
                pb.ScoreRequest(customer_id=customer, now=timestamp(stack.as_of)), metadata=auth, timeout=5
            )
        for metadata in (auth, auth, auth, None, None):  # 3 bad requests, 2 without a token
            with pytest.raises(grpc.RpcError):
                stub.Score(pb.ScoreRequest(customer_id=""), metadata=metadata, timeout=5)
        log = server.log()
    lines = [e for e in json_lines(log) if e.get("logger") == "nudge.access" and e["method"] == SCORE]
    codes = sorted(e["code"] for e in lines)
    assert codes == ["INVALID_ARGUMENT"] * 3 + ["OK"] * 2 + ["UNAUTHENTICATED"] * 2, codes


@pytest.fixture(scope="module")
def two_workers(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, int, Path]]:
    root = tmp_path_factory.mktemp("workers")
    port, directory = free_port(), root / "metrics"
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"left over from an earlier run")
    flags = ("--metrics-port", str(port), "--metrics-dir", str(directory))
    with ServerProcess(stack, *flags, workers=2, log_path=root / "server.log") as server:
        yield server, port, directory


def test_two_workers_metrics_sum_on_one_port(
    two_workers: tuple[ServerProcess, int, Path], stack: Stack
) -> None:
    server, port, directory = two_workers
    ids = known_customers(stack, 4)
    before = scrape(port)
    calls = 0
    for _ in range(16):  # new connections: SO_REUSEPORT spreads them over the workers
        with server.channel() as channel:
            stub = scoring_pb2_grpc.ScoringServiceStub(channel)
            for cid in ids:
                stub.Score(pb.ScoreRequest(customer_id=cid, now=timestamp(stack.as_of)), timeout=5)
                calls += 1
    after = scrape_until(port, before, "nudge_grpc_requests_total", calls, method=SCORE, code="OK")

    assert delta(before, after, "nudge_grpc_requests_total", method=SCORE, code="OK") == calls
    assert delta(before, after, "nudge_grpc_request_duration_seconds_count", method=SCORE, code="OK") == calls
    assert delta(before, after, "nudge_purchase_propensity_count") == calls
    assert delta(before, after, "nudge_inference_seconds_count") == calls
    # Both workers serve, and each one's model versions count once.
    loaded = [v for _labels, v in matching(after, "nudge_model_loaded")]
    assert loaded == [2, 2]  # propensity and send_time, each served by both workers
    per_worker = []
    for path in sorted(directory.glob("counter_*.db")):
        families = MultiProcessCollector.merge([str(path)], accumulate=True)
        per_worker.append(
            sum(
                s.value
                for f in families
                for s in f.samples
                if s.name == "nudge_grpc_requests_total" and s.labels.get("method") == SCORE
            )
        )
    assert len(per_worker) == 2, "the stale file from an earlier run must be gone"
    assert all(n > 0 for n in per_worker), per_worker
    assert sum(per_worker) == value(after, "nudge_grpc_requests_total", method=SCORE, code="OK")


def spans(text: str) -> list[dict[str, Any]]:
    """Console-exported spans (pretty-printed JSON objects) among the log lines."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (start := text.find("{\n", at)) != -1:
        try:
            obj, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            at = start + 1
            continue
        if isinstance(obj, dict) and "context" in obj:
            found.append(obj)
        at = end
    return found


def test_tracing_spans_cover_fetch_and_inference_inside_the_rpc(stack: Stack, tmp_path: Path) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
    flags = ("--tracing", "true", "--tracing-exporter", "console")
    with (
        ServerProcess(stack, *flags, log_path=tmp_path / "server.log") as server,
        server.channel() as channel,
    ):
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        request = pb.ScoreRequest(customer_id=known_customers(stack, 1)[0], now=timestamp(stack.as_of))
        stub.Score(request, metadata=(("traceparent", traceparent),), timeout=5)
    found = {s["name"]: s for s in spans(server.log())}
    rpc = found["/nudge.v1.ScoringService/Score"]
    fetch, inference = found["nudge.feature_fetch"], found["nudge.inference"]
    assert rpc["context"]["trace_id"] == "0x" + trace_id  # joined the caller's trace
    for child in (fetch, inference):
        assert child["context"]["trace_id"] == rpc["context"]["trace_id"]
        assert child["parent_id"] == rpc["context"]["span_id"]
    assert inference["attributes"]["nudge.customers"] == 1
    assert set(inference["attributes"]) >= {"nudge.model.propensity", "nudge.model.send_time"}
    assert not any("Health" in name for name in found), "health checks are not traced"
