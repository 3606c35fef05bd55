"""Hostile input, property-based: whatever a caller sends, the answer is a result or
INVALID_ARGUMENT (never INTERNAL or UNKNOWN), and the server stays up.

Requests are generated field by field over the whole domain of each proto type (ids of any
unicode and length, timestamps with any int64 seconds and int32 nanos, quiet hours any
uint32, channels any int32), with realistic values mixed in so that deep paths (feature read,
inference, policy) run too; raw bytes go to the methods through a generic channel with
identity serializers, both random and as mutations of valid encodings.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nudge.v1 import scoring_pb2 as pb
from nudge.v1 import scoring_pb2_grpc
from tests.support.stack import ServerProcess, Stack

ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
UINT32 = st.integers(min_value=0, max_value=2**32 - 1)
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as ch:
        yield ch


@pytest.fixture(scope="module")
def as_of_seconds(stack: Stack) -> int:
    return int(stack.as_of.timestamp())


def timestamps(as_of: int) -> st.SearchStrategy[Timestamp]:
    """Anything a Timestamp can hold, and often something near the data's as-of time."""
    near = st.builds(
        Timestamp,
        seconds=st.integers(as_of - 3 * 86400, as_of + 8 * 86400),
        nanos=st.integers(0, 999_999_999),
    )
    edges = st.sampled_from([0, -1, 4102444800, 4102444801, -62135596800, 253402300799, 2**62, -(2**63)])
    extreme = st.builds(Timestamp, seconds=st.one_of(INT64, edges), nanos=INT32)
    return st.one_of(near, near, extreme)


def customer_ids() -> st.SearchStrategy[str]:
    known = st.sampled_from(["c000001", "c000002", "c000400", "c000799", "nobody"])
    return st.one_of(known, st.text(max_size=40), st.text(min_size=100, max_size=300))


@st.composite
def score_requests(draw: st.DrawFn, as_of: int) -> pb.ScoreRequest:
    request = pb.ScoreRequest(customer_id=draw(customer_ids()))
    for name in ("now", "window_start", "window_end"):
        if draw(st.booleans()):
            getattr(request, name).CopyFrom(draw(timestamps(as_of)))
    if draw(st.booleans()):
        hours = st.one_of(st.integers(0, 23), UINT32)
        request.quiet_hours.CopyFrom(pb.QuietHours(start_hour=draw(hours), end_hour=draw(hours)))
    request.channel = draw(st.one_of(st.integers(0, 3), INT32))  # type: ignore[assignment]
    return request


def call_raw(channel: grpc.Channel, method: str, body: bytes) -> tuple[grpc.StatusCode, str]:
    call = channel.unary_unary(f"/nudge.v1.ScoringService/{method}", None, None)
    try:
        call(body, timeout=10)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def assert_allowed(code: grpc.StatusCode, details: str) -> None:
    assert code in ALLOWED, f"{code.name}: {details}"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert details, "INVALID_ARGUMENT must say what is wrong"


def test_any_score_request_is_a_result_or_invalid_argument(channel: grpc.Channel, as_of_seconds: int) -> None:
    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    seen: set[grpc.StatusCode] = set()

    @PROPERTY
    @given(request=score_requests(as_of_seconds))
    def check(request: pb.ScoreRequest) -> None:
        try:
            reply = stub.Score(request, timeout=10)
        except grpc.RpcError as exc:
            assert_allowed(exc.code(), exc.details() or "")
            seen.add(exc.code())
            return
        seen.add(grpc.StatusCode.OK)
        assert reply.customer_id == request.customer_id
        assert 0.0 <= reply.purchase_propensity <= 1.0

    check()
    assert seen == ALLOWED, f"the generator should reach both outcomes, saw {seen}"


def test_an_empty_batch_is_an_empty_answer(channel: grpc.Channel) -> None:
    reply = scoring_pb2_grpc.ScoringServiceStub(channel).ScoreBatch(pb.ScoreBatchRequest(), timeout=10)
    assert len(reply.results) == 0


def test_any_batch_is_answered_entry_by_entry(channel: grpc.Channel, as_of_seconds: int) -> None:
    stub = scoring_pb2_grpc.ScoringServiceStub(channel)

    @PROPERTY
    @given(requests=st.lists(score_requests(as_of_seconds), max_size=6))
    def check(requests: list[pb.ScoreRequest]) -> None:
        reply = stub.ScoreBatch(pb.ScoreBatchRequest(requests=requests), timeout=10)
        assert len(reply.results) == len(requests)
        for request, result in zip(requests, reply.results, strict=True):
            if result.HasField("error"):
                assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], result.error.message
                assert result.error.message
            else:
                assert result.response.customer_id == request.customer_id

    check()


@pytest.mark.parametrize("method", ["Score", "ScoreBatch"])
def test_any_bytes_are_a_result_or_invalid_argument(channel: grpc.Channel, method: str) -> None:
    @PROPERTY
    @given(body=st.binary(max_size=600))
    def check(body: bytes) -> None:
        assert_allowed(*call_raw(channel, method, body))

    check()


def test_mutated_valid_encodings_are_a_result_or_invalid_argument(
    channel: grpc.Channel, stack: Stack
) -> None:
    """Near-valid bytes reach further than random ones: a real request with bytes changed,
    inserted or cut (wrong wire types, bad lengths, invalid UTF-8 inside the id...)."""
    window = stack.as_of + timedelta(hours=30)
    valid = pb.ScoreRequest(
        customer_id="c000001",
        now=Timestamp(seconds=int(stack.as_of.timestamp())),
        window_end=Timestamp(seconds=int(window.timestamp())),
        quiet_hours=pb.QuietHours(start_hour=22, end_hour=7),
        channel=pb.CHANNEL_EMAIL,
    ).SerializeToString()

    @PROPERTY
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        body = bytearray(valid)
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(body)))
            edit = data.draw(st.sampled_from(["set", "insert", "cut"]))
            byte = data.draw(st.integers(0, 255))
            if edit == "insert" or at == len(body):
                body.insert(at, byte)
            elif edit == "set":
                body[at] = byte
            else:
                del body[at:]
        assert_allowed(*call_raw(channel, "Score", bytes(body)))

    check()


def test_server_is_still_up(server: ServerProcess, channel: grpc.Channel) -> None:
    assert server.process is not None and server.process.poll() is None
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
