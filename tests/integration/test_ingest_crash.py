"""Nothing acknowledged is lost (issue 11): the real server SIGKILLed in the middle of a stream
of Ingest calls, on the SQLite and the Redis stack.

Three client threads stream small calls without pause, each for three customers of its own (one
purchase per customer per call, event times a second apart and rising, an amount per call), so
several calls are in flight at any moment. Soon after 30 calls have been answered (a random
pause of up to two round trips, so the kill lands anywhere in the server's work on a call) the
server process gets SIGKILL. Then every event acknowledged (APPLIED in an answer the client
received) must be in the event log, and, after a restart on the same repo and store, in the
live state: each customer's record holds every acknowledged event id, its purchase count and
amount total are exactly those of the ids it holds (none counted twice), and every id it holds
is in the log. Finally the client retries every call it sent, in order, as the API says is safe:
each event the state already held comes back DUPLICATE (every acknowledged one among them),
every other one APPLIED, and each state ends with exactly the events sent, once each. The counts
are printed (run with -s to see them)."""

from __future__ import annotations

import os
import random
import signal
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from nudge.contract.live_record import MAX_RECENT_IDS, LiveRecord, decode_record
from nudge.v1 import ingest_pb2 as pb
from nudge.v1 import ingest_pb2_grpc
from service.ingest import StateStore
from tests.support.stack import (
    ServerProcess,
    Stack,
    event_log_lines,
    stack_and_live_store,
    timestamp,
)

THREADS = 3
CUSTOMERS_PER_THREAD = 3
KILL_AFTER = 30  # answered calls, all threads together
# Calls per thread at most: a customer's events stay fewer than the ids a record keeps for
# dedupe (and within its day), so a retried event is DUPLICATE exactly when the state holds it.
MAX_CALLS = 200
APPLIED = pb.EventResult.OUTCOME_APPLIED
DUPLICATE = pb.EventResult.OUTCOME_DUPLICATE


@pytest.fixture(params=["sqlite", "redis"])
def live(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, StateStore]]:
    """A stack, and the live state store its servers write to, read directly."""
    stack, store = stack_and_live_store(request)
    yield stack, store
    store.close()


@dataclass
class Stream:
    """One client thread's customers and calls: ``sent[i]`` was answered by ``answers[i]``
    for every i before the call that failed (the last one sent, if any failed)."""

    customers: list[str]
    first: datetime  # the time of the events of call 0
    sent: list[pb.IngestRequest] = field(default_factory=list)
    answers: list[pb.IngestResponse] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # each answered call's round trip
    failure: grpc.StatusCode | None = None
    failed_call_started: float = 0.0  # time.monotonic() when the failed call was sent

    def call(self, k: int) -> pb.IngestRequest:
        when = timestamp(self.first + timedelta(seconds=k))
        return pb.IngestRequest(
            events=[
                pb.Event(
                    event_id=f"e{k}", customer_id=cid, event_time=when, event_type="purchase", amount=k + 0.5
                )
                for cid in self.customers
            ]
        )


@dataclass
class Answered:
    """Calls answered by the first server, all threads together; ``enough`` once KILL_AFTER."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: int = 0
    enough: threading.Event = field(default_factory=threading.Event)

    def one_more(self) -> None:
        with self.lock:
            self.calls += 1
            if self.calls >= KILL_AFTER:
                self.enough.set()


def stream(server: ServerProcess, s: Stream, answered: Answered) -> None:
    """Send calls back to back until one fails (the server is gone) or MAX_CALLS are sent."""
    with server.channel() as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        for k in range(MAX_CALLS):
            request = s.call(k)
            s.sent.append(request)
            started = time.monotonic()
            try:
                answer = stub.Ingest(request, timeout=10)
            except grpc.RpcError as exc:
                s.failure, s.failed_call_started = exc.code(), started
                return
            s.seconds.append(time.monotonic() - started)
            s.answers.append(answer)
            answered.one_more()


Key = tuple[str, str]  # (customer_id, event_id)


def events_of(requests: list[pb.IngestRequest]) -> dict[Key, pb.Event]:
    return {(e.customer_id, e.event_id): e for request in requests for e in request.events}


def acknowledged(s: Stream) -> dict[Key, pb.Event]:
    """The events APPLIED in an answer the client received (asserting the answers said so)."""
    acked: dict[Key, pb.Event] = {}
    for request, answer in zip(s.sent, s.answers, strict=False):
        assert [(r.event_id, r.outcome) for r in answer.results] == [
            (e.event_id, APPLIED) for e in request.events
        ]
        acked |= events_of([request])
    return acked


def held(store: StateStore, customers: list[str]) -> dict[str, LiveRecord]:
    return {cid: decode_record(raw) for cid, raw in store.read(customers).items()}


def ids_held(records: dict[str, LiveRecord]) -> set[Key]:
    return {(cid, event_id) for cid, record in records.items() for event_id in record.recent}


def check_states(records: dict[str, LiveRecord], sent: dict[Key, pb.Event]) -> None:
    """Each state counts exactly the events whose ids it holds: every one once, nothing else."""
    for cid, record in records.items():
        amounts = [sent[cid, event_id].amount for event_id in record.recent]
        assert (record.state.purchase_count, record.state.amount_total) == (len(amounts), sum(amounts)), cid


def test_sigkill_mid_stream_loses_nothing_acknowledged(
    live: tuple[Stack, StateStore], tmp_path: Path
) -> None:
    stack, store = live
    assert MAX_CALLS < MAX_RECENT_IDS
    log = tmp_path / "events.log.jsonl"
    run = uuid.uuid4().hex[:8]
    first = datetime.now(UTC) - timedelta(seconds=MAX_CALLS + 60)  # all in the past, rising
    streams = [
        Stream([f"crash-{run}-{t}-{c}" for c in range(CUSTOMERS_PER_THREAD)], first) for t in range(THREADS)
    ]
    customers = [cid for s in streams for cid in s.customers]
    answered = Answered()

    with ServerProcess(stack, "--event-log", str(log), log_path=tmp_path / "first.log") as server:
        assert server.process is not None
        with ThreadPoolExecutor(THREADS) as pool:
            clients = [pool.submit(stream, server, s, answered) for s in streams]
            assert answered.enough.wait(timeout=60), f"{answered.calls} calls answered in 60 s"
            # Killed at once, the server is always early in its next call (nothing of it logged
            # yet); a random pause of up to two round trips lands the kill anywhere in a call:
            # before its log append, between the append and the commits, between two customers'
            # commits, or after them before the answer is received. Whatever it is, nothing
            # below may fail.
            pause = random.uniform(0.0, 2 * statistics.median(t for s in streams for t in list(s.seconds)))
            time.sleep(pause)
            killed_at = time.monotonic()
            os.kill(server.process.pid, signal.SIGKILL)
            assert server.process.wait(timeout=10) == -signal.SIGKILL
            for client in clients:
                client.result(timeout=30)  # a client's own error surfaces here

    sent = events_of([request for s in streams for request in s.sent])
    acked = {key: e for s in streams for key, e in acknowledged(s).items()}
    assert len(acked) >= KILL_AFTER * CUSTOMERS_PER_THREAD
    # Every client stopped on its last call, failed by the kill; at least one was sent before it.
    assert [s.failure for s in streams] == [grpc.StatusCode.UNAVAILABLE] * THREADS
    assert [len(s.sent) - len(s.answers) for s in streams] == [1] * THREADS
    in_flight = sum(s.failed_call_started < killed_at for s in streams)
    assert in_flight >= 1, "no call was in flight when the server was killed"

    # (a) In the event log, as sent (the log's own times compared as instants).
    def lines() -> dict[Key, tuple[float, datetime]]:
        return {
            (line["customer_id"], line["event_id"]): (
                line["amount"],
                datetime.fromisoformat(line["event_timestamp"]),
            )
            for line in event_log_lines(log)
        }

    logged = lines()
    assert set(logged) <= set(sent)
    for key, e in acked.items():
        assert logged.get(key) == (e.amount, e.event_time.ToDatetime(UTC)), f"acknowledged {key} not logged"

    with ServerProcess(stack, "--event-log", str(log), log_path=tmp_path / "second.log") as server:
        # (b) In the live state after the restart, each event counted once, and in the log.
        before = held(store, customers)
        kept = ids_held(before)
        assert set(acked) <= kept, f"acknowledged but not in the state: {sorted(set(acked) - kept)}"
        assert kept <= set(sent)
        assert kept <= set(logged), "the state holds events the log does not"
        check_states(before, sent)

        with server.channel() as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            retried = [stub.Ingest(request, timeout=10) for s in streams for request in s.sent]

    requests = [request for s in streams for request in s.sent]
    outcomes = {
        (e.customer_id, r.event_id): r.outcome
        for request, answer in zip(requests, retried, strict=True)
        for e, r in zip(request.events, answer.results, strict=True)
    }
    assert {key for key, o in outcomes.items() if o == DUPLICATE} >= set(acked)
    assert outcomes == {key: DUPLICATE if key in kept else APPLIED for key in sent}
    after = held(store, customers)
    assert ids_held(after) == set(sent)
    check_states(after, sent)
    assert set(lines()) == set(sent)
    print(
        f"\n[{type(store).__name__}] sent {len(sent)} events in {len(requests)} calls, "
        f"{len(acked)} acknowledged; killed {pause * 1000:.1f} ms after call {KILL_AFTER} was answered, "
        f"{in_flight} call(s) in flight; unacknowledged but logged {len(set(logged) - set(acked))}, "
        f"held after restart {len(kept - set(acked))}; the retry applied {len(sent) - len(kept)}"
    )
