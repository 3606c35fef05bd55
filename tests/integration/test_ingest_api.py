"""nudge.v1.IngestService through real server processes, on the SQLite and the Redis stack:
per-event outcomes, the event log and the stored state, whole-call errors, health and
reflection, and bearer tokens and metrics covering Ingest as they cover Score."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from nudge.contract.live_record import LiveRecord, decode_record
from nudge.v1 import ingest_pb2 as pb
from nudge.v1 import ingest_pb2_grpc, scoring_pb2, scoring_pb2_grpc
from service.ingest import StateStore
from tests.support.ops import delta, scrape
from tests.support.stack import (
    ServerProcess,
    Stack,
    event_log_lines,
    free_port,
    stack_and_live_store,
    timestamp,
)

INGEST = "nudge.v1.IngestService/Ingest"


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, StateStore, Path]]:
    """A server on each stack with its own event log, and the live state store it writes to."""
    stack, store = stack_and_live_store(request)
    log = tmp_path_factory.mktemp("ingest") / "events.log.jsonl"
    with ServerProcess(stack, "--event-log", str(log), "--max-batch", "3") as server:
        yield server, store, log
    store.close()


def purchase(event_id: str, customer_id: str, **fields: object) -> pb.Event:
    when = datetime.now(UTC) - timedelta(minutes=5)
    values: dict[str, object] = {"event_type": "purchase", "amount": 12.5, "event_time": timestamp(when)}
    return pb.Event(event_id=event_id, customer_id=customer_id, **(values | fields))  # type: ignore[arg-type]


def outcomes(reply: pb.IngestResponse) -> list[tuple[str, str, str]]:
    return [(r.event_id, pb.EventResult.Outcome.Name(r.outcome), r.reason) for r in reply.results]


def test_health_and_reflection_list_the_ingest_service(
    served: tuple[ServerProcess, StateStore, Path],
) -> None:
    server, _, _ = served
    with server.channel() as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="nudge.v1.IngestService"), timeout=2
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert {"nudge.v1.IngestService", "nudge.v1.ScoringService"} <= set(services)


def test_one_good_one_duplicate_one_bad_event(served: tuple[ServerProcess, StateStore, Path]) -> None:
    server, store, log = served
    cid = f"live-{uuid.uuid4().hex[:8]}"
    good = purchase("e1", cid, time_zone="Europe/Berlin")
    bad = purchase("e2", cid, event_type="refund")
    request = pb.IngestRequest(events=[good, good, bad])
    with server.channel() as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        reply = stub.Ingest(request, timeout=10)
        retried = stub.Ingest(request, timeout=10)
    rejected = (
        "unknown event_type 'refund'; expected one of purchase, site_visit, cart_add, email_send, "
        "email_open, email_click, sms_send, sms_click, push_send, push_open"
    )
    assert outcomes(reply) == [
        ("e1", "OUTCOME_APPLIED", "applied; new customer"),
        ("e1", "OUTCOME_DUPLICATE", "event_id already applied for this customer"),
        ("e2", "OUTCOME_REJECTED", rejected),
    ]
    assert (reply.applied, reply.duplicates, reply.rejected) == (1, 1, 1)
    assert [o[1] for o in outcomes(retried)] == ["OUTCOME_DUPLICATE", "OUTCOME_DUPLICATE", "OUTCOME_REJECTED"]
    lines = event_log_lines(log)
    assert [(line["customer_id"], line["event_id"], line["amount"]) for line in lines] == [(cid, "e1", 12.5)]
    record: LiveRecord = decode_record(store.read([cid])[cid])
    assert (record.state.time_zone, record.state.purchase_count, list(record.recent)) == (
        "Europe/Berlin",
        1,
        ["e1"],
    )


def test_malformed_calls_fail_as_a_whole(served: tuple[ServerProcess, StateStore, Path]) -> None:
    server, _, log = served
    before = log.read_text()
    events = [purchase(f"e{i}", "too-many") for i in range(4)]
    with server.channel() as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Ingest(pb.IngestRequest(events=events), timeout=10)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "batch of 4 events exceeds the limit of 3"
        raw = channel.unary_unary(f"/{INGEST}", None, None)
        with pytest.raises(grpc.RpcError) as info:
            raw(b"\xff\xff\xff", timeout=10)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "request is not a valid nudge.v1.IngestRequest"
    assert log.read_text() == before


def test_tokens_and_metrics_cover_ingest(stack: Stack, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("tok-all\ntok-score Score\ntok-ingest Ingest\n")
    port = free_port()
    flags = (
        "--auth-tokens-file",
        str(tokens),
        "--metrics-port",
        str(port),
        "--event-log",
        str(tmp_path / "log"),
    )
    with (
        ServerProcess(stack, *flags, log_path=tmp_path / "server.log") as server,
        server.channel() as channel,
    ):
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        request = pb.IngestRequest(events=[purchase("e1", f"live-{uuid.uuid4().hex[:8]}")])
        before = scrape(port)
        codes = []
        for token in (None, "tok-score", "tok-ingest"):
            metadata = None if token is None else (("authorization", f"Bearer {token}"),)
            try:
                reply = stub.Ingest(request, metadata=metadata, timeout=10)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        score = scoring_pb2_grpc.ScoringServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            score.Score(
                scoring_pb2.ScoreRequest(customer_id="c"), metadata=(("authorization", "Bearer tok-ingest"),)
            )
        after = scrape(port)
    assert codes == [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.OK]
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reply.applied == 1
    for code in ("UNAUTHENTICATED", "PERMISSION_DENIED", "OK"):
        assert delta(before, after, "nudge_grpc_requests_total", method=INGEST, code=code) == 1
    assert delta(before, after, "nudge_ingest_events_total", outcome="APPLIED") == 1
