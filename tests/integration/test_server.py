"""The gRPC service through the real stack: real server process, real Feast repo, real models."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pandas as pd
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from nudge.v1 import scoring_pb2 as pb
from nudge.v1 import scoring_pb2_grpc
from tests.support.stack import BIN, SIGNED_UP_ONLY, ServerProcess, Stack, timestamp

UNKNOWN = "nobody-at-all"


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> scoring_pb2_grpc.ScoringServiceStub:
    channel = grpc.insecure_channel(server.target)
    return scoring_pb2_grpc.ScoringServiceStub(channel)


@pytest.fixture(scope="module")
def people(stack: Stack) -> dict[str, str]:
    """The customer with the longest history and one who signed up but has no events at all."""
    counts = pd.read_parquet(stack.events, columns=["customer_id"])["customer_id"].value_counts()
    assert SIGNED_UP_ONLY not in counts.index
    return {"known": str(counts.index[0]), "new": SIGNED_UP_ONLY}


def request(stack: Stack, customer_id: str, **fields: object) -> pb.ScoreRequest:
    return pb.ScoreRequest(customer_id=customer_id, now=timestamp(stack.as_of), **fields)  # type: ignore[arg-type]


def test_health_serving_and_reflection_lists_service(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "nudge.v1.ScoringService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "nudge.v1.ScoringService" in services
    assert "grpc.health.v1.Health" in services


def test_grpcurl_lists_and_calls_through_reflection(
    server: ServerProcess, stack: Stack, people: dict[str, str]
) -> None:
    grpcurl = str(BIN / "grpcurl")
    listing = subprocess.run(
        [grpcurl, "-plaintext", server.target, "list"], capture_output=True, text=True, check=True
    )
    assert "nudge.v1.ScoringService" in listing.stdout.split()
    body = json.dumps({"customer_id": people["known"], "now": stack.as_of.isoformat().replace("+00:00", "Z")})
    call = subprocess.run(
        [grpcurl, "-plaintext", "-d", body, server.target, "nudge.v1.ScoringService/Score"],
        capture_output=True,
        text=True,
        check=True,
    )
    answer = json.loads(call.stdout)  # grpcurl prints the proto's own field names
    assert answer["customer_id"] == people["known"]
    assert 0.0 <= answer["purchase_propensity"] <= 1.0


def test_score_known_customer(
    stub: scoring_pb2_grpc.ScoringServiceStub, stack: Stack, people: dict[str, str]
) -> None:
    reply = stub.Score(request(stack, people["known"]), timeout=5)
    assert reply.customer_id == people["known"]
    assert 0.0 < reply.purchase_propensity < 1.0
    assert reply.horizon_days == 14
    assert reply.feature_status == pb.FEATURE_STATUS_FRESH
    assert 0 <= reply.feature_age_seconds < 8 * 86400
    assert reply.time_zone and not reply.time_zone_defaulted
    assert {m.name for m in reply.models} == {"propensity", "send_time"}
    assert all(m.version for m in reply.models)
    assert len(reply.top_slots) == 3
    probs = [s.probability for s in reply.top_slots]
    assert probs == sorted(probs, reverse=True)
    if reply.decision != pb.DECISION_SUPPRESS:
        best = reply.best_send_time.ToDatetime(tzinfo=UTC)
        assert stack.as_of <= best < stack.as_of + timedelta(hours=24)
        local = datetime.fromisoformat(reply.best_send_time_local)
        assert local == best and local.utcoffset() is not None


def test_brand_new_customer_is_scored_from_profile_alone(
    stub: scoring_pb2_grpc.ScoringServiceStub, stack: Stack, people: dict[str, str]
) -> None:
    """Signed up, no events yet: stats rows exist (tenure, zone), histograms do not."""
    reply = stub.Score(request(stack, people["new"]), timeout=5)
    assert reply.customer_id == people["new"]
    assert reply.feature_status == pb.FEATURE_STATUS_FRESH
    assert 0.0 < reply.purchase_propensity < 1.0
    assert reply.time_zone and not reply.time_zone_defaulted
    assert len(reply.top_slots) == 3


def test_unknown_customer_gets_cold_start_answer(
    stub: scoring_pb2_grpc.ScoringServiceStub, stack: Stack
) -> None:
    reply = stub.Score(request(stack, UNKNOWN), timeout=5)
    assert reply.customer_id == UNKNOWN
    assert reply.feature_status == pb.FEATURE_STATUS_MISSING
    assert reply.feature_age_seconds == 0
    assert 0.0 < reply.purchase_propensity < 1.0
    assert reply.time_zone == "UTC" and reply.time_zone_defaulted
    assert len(reply.top_slots) == 3
    assert reply.decision in (pb.DECISION_SEND_NOW, pb.DECISION_SCHEDULE, pb.DECISION_SUPPRESS)
    assert reply.reason


def test_batch_keeps_order_and_isolates_bad_entries(
    stub: scoring_pb2_grpc.ScoringServiceStub, stack: Stack, people: dict[str, str]
) -> None:
    ids = [people["known"], "", UNKNOWN, "x" * 500, people["new"]]
    reply = stub.ScoreBatch(pb.ScoreBatchRequest(requests=[request(stack, cid) for cid in ids]), timeout=5)
    assert len(reply.results) == len(ids)
    kinds = [r.WhichOneof("outcome") for r in reply.results]
    assert kinds == ["response", "error", "response", "error", "response"]
    assert [r.response.customer_id for r in reply.results if r.HasField("response")] == [
        ids[0],
        ids[2],
        ids[4],
    ]
    assert reply.results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "empty" in reply.results[1].error.message
    assert "limit" in reply.results[3].error.message
    # Each answer is Score's, field for field (channels, reasons and models included).
    for i in (0, 2, 4):
        single = stub.Score(request(stack, ids[i]), timeout=5)
        assert reply.results[i].response == single
    assert reply.results[0].response.channels and reply.results[0].response.propensity_reasons


def invalid_requests(stack: Stack) -> dict[str, pb.ScoreRequest]:
    start = stack.as_of
    return {
        "empty id": request(stack, ""),
        "blank id": request(stack, "   "),
        "id too long": request(stack, "c" * 129),
        "window end before start": request(
            stack,
            "c1",
            window_start=timestamp(start + timedelta(hours=5)),
            window_end=timestamp(start + timedelta(hours=1)),
        ),
        "window too long": request(stack, "c1", window_end=timestamp(start + timedelta(days=30))),
        "quiet hour out of range": request(stack, "c1", quiet_hours=pb.QuietHours(start_hour=25, end_hour=3)),
    }


INVALID_CASES = [
    "empty id",
    "blank id",
    "id too long",
    "window end before start",
    "window too long",
    "quiet hour out of range",
]


@pytest.mark.parametrize("case", INVALID_CASES)
def test_invalid_input_is_invalid_argument(
    stub: scoring_pb2_grpc.ScoringServiceStub, stack: Stack, case: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.Score(invalid_requests(stack)[case], timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details()


def test_batch_over_limit_is_invalid_argument(
    stub: scoring_pb2_grpc.ScoringServiceStub, stack: Stack
) -> None:
    batch = pb.ScoreBatchRequest(requests=[request(stack, f"c{i}") for i in range(1001)])
    with pytest.raises(grpc.RpcError) as info:
        stub.ScoreBatch(batch, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    assert "1001" in details and "1000" in details


def test_short_deadline_is_deadline_exceeded(stub: scoring_pb2_grpc.ScoringServiceStub, stack: Stack) -> None:
    batch = pb.ScoreBatchRequest(requests=[request(stack, f"c{i:06d}") for i in range(1000)])
    with pytest.raises(grpc.RpcError) as info:
        stub.ScoreBatch(batch, timeout=0.0001)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_refuses_to_start_when_registry_lacks_a_manifest_feature(stack: Stack, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(stack.models, models)
    (manifest_path,) = (models / "propensity").glob("*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    manifest["features"][0]["ref"] = "customer_stats:no_such_feature"
    manifest_path.write_text(json.dumps(manifest))
    broken = Stack(stack.data, stack.repo, models, stack.as_of)
    proc = ServerProcess(broken)
    result = subprocess.run(proc.argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "customer_stats:no_such_feature" in result.stderr
    assert "refusing to start" in result.stderr


def test_refuses_to_start_when_onnx_does_not_match_manifest(stack: Stack, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(stack.models, models)
    (model_path,) = (models / "send_time").glob("*/model.onnx")
    model_path.write_bytes(model_path.read_bytes()[:-10] + b"corrupted!")
    result = subprocess.run(
        ServerProcess(Stack(stack.data, stack.repo, models, stack.as_of)).argv,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "sha256" in result.stderr
