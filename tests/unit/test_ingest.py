"""The Ingest core in-process, over an in-memory store and a real event log file: validation
reasons, dedupe, late events, new customers, time order within a call, compare-and-set retries,
log-before-commit; and the proto conversion (the same paths run through the real server in
tests/integration/test_ingest_api.py, the real stores in tests/integration/test_live_stores.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from nudge.contract.event_log import read_event_log
from nudge.contract.live_record import DEDUPE_WINDOW, MAX_RECENT_IDS, LiveRecord, decode_record, encode_record
from nudge.contract.live_state import Event, apply, finalise, new_state
from nudge.v1 import ingest_pb2
from service.config import Settings
from service.grpc_api import to_events, to_ingest_response
from service.ingest import (
    MAX_ROUNDS,
    Counts,
    EventLog,
    EventResult,
    IngestEvent,
    Ingestor,
    IngestUnavailable,
    Outcome,
)
from tests.support.fakes import MemoryStore
from tests.support.stack import event_log_lines, timestamp

CLOCK = datetime(2026, 3, 27, 9, 30, tzinfo=UTC)
APPLIED, DUPLICATE, REJECTED, LATE = Outcome.APPLIED, Outcome.DUPLICATE, Outcome.REJECTED, Outcome.LATE


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "events.log.jsonl"


def ingestor(store: MemoryStore, log_path: Path, **settings: object) -> Ingestor:
    return Ingestor(store, EventLog(log_path), Settings(**settings))  # type: ignore[arg-type]


def event(event_id: str, minutes_ago: float = 60, customer: str = "c1", **fields: object) -> IngestEvent:
    values: dict[str, object] = {
        "event_id": event_id,
        "customer_id": customer,
        "event_time": CLOCK - timedelta(minutes=minutes_ago),
        "event_type": "site_visit",
    }
    values.update(fields)
    return IngestEvent(**values)  # type: ignore[arg-type]


def outcomes(results: Sequence[EventResult]) -> list[Outcome]:
    return [r.outcome for r in results]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"event_id": ""}, "event_id is empty"),
        ({"event_id": "x" * 129}, "event_id is 129 characters; the limit is 128"),
        ({"customer_id": "  "}, "customer_id is empty"),
        ({"customer_id": "c" * 129}, "customer_id is 129 characters; the limit is 128"),
        ({"event_type": "refund"}, "unknown event_type 'refund'; expected one of purchase, site_visit"),
        ({"event_time": None}, "event_time is missing"),
        ({"event_time": CLOCK + timedelta(seconds=301)}, "event_time is 301 s ahead of the server clock"),
        ({"event_type": "purchase"}, "a purchase needs an amount"),
        ({"event_type": "purchase", "amount": -1.0}, "amount must be finite and >= 0, got -1.0"),
        ({"event_type": "purchase", "amount": math.nan}, "amount must be finite and >= 0, got nan"),
        ({"time_zone": "Mars/Olympus"}, "unknown time_zone 'Mars/Olympus'"),
        ({"time_zone": ""}, "unknown time_zone ''"),
        ({"time_zone": "../../etc/passwd"}, "unknown time_zone"),
        ({"time_zone": "Europe"}, "unknown time_zone 'Europe'"),
        ({"time_zone": "a" * 300}, "unknown time_zone 'aaaa"),
        ({"time_zone": "a\x00b"}, "unknown time_zone"),
    ],
)
def test_invalid_event_is_rejected_with_its_reason_and_the_others_applied(
    store: MemoryStore, log_path: Path, fields: dict[str, object], reason: str
) -> None:
    bad = replace(event("bad"), **fields)  # type: ignore[arg-type]
    results = ingestor(store, log_path).ingest([event("good-1", 61), bad, event("good-2")], clock=CLOCK)
    assert outcomes(results) == [APPLIED, REJECTED, APPLIED]
    assert reason in results[1].reason
    assert [line["event_id"] for line in event_log_lines(log_path)] == ["good-1", "good-2"]


def test_event_within_the_skew_is_applied(store: MemoryStore, log_path: Path) -> None:
    ahead = event("e", event_time=CLOCK + timedelta(seconds=299))
    (result,) = ingestor(store, log_path).ingest([ahead], clock=CLOCK)
    assert result.outcome is APPLIED
    (result,) = ingestor(store, log_path, ingest_max_skew_seconds=0).ingest(
        [event("f", event_time=CLOCK + timedelta(seconds=1))], clock=CLOCK
    )
    assert result.reason == "event_time is 1 s ahead of the server clock; the limit is 0 s"


def test_duplicate_event_id_is_ignored_within_and_across_calls(store: MemoryStore, log_path: Path) -> None:
    core = ingestor(store, log_path)
    first = core.ingest([event("e1", 30), event("e1", 30), event("e2", 20)], clock=CLOCK)
    assert outcomes(first) == [APPLIED, DUPLICATE, APPLIED]
    assert first[1].reason == "event_id already applied for this customer"
    again = core.ingest([event("e1", 30), event("e2", 20), event("e1", 30, customer="c2")], clock=CLOCK)
    assert outcomes(again) == [DUPLICATE, DUPLICATE, APPLIED]  # ids are per customer
    assert Counts.of(first + again) == Counts(applied=3, duplicates=3, rejected=0)
    assert len(store.record("c1").state.window_times[1]) == 2  # site_visit: e1 and e2 once each
    assert [(line["customer_id"], line["event_id"]) for line in event_log_lines(log_path)] == [
        ("c1", "e1"),
        ("c1", "e2"),
        ("c2", "e1"),
    ]


def test_event_older_than_the_newest_applied_is_late_and_not_applied(
    store: MemoryStore, log_path: Path
) -> None:
    core = ingestor(store, log_path)
    core.ingest([event("new", 10)], clock=CLOCK)
    before = store.records["c1"]
    (late,) = core.ingest([event("old", 20)], clock=CLOCK)
    assert late.outcome is LATE
    assert late.reason == (
        "event_time is older than the customer's newest applied event (2026-03-27T09:20:00+00:00); not applied"
    )
    assert store.records["c1"] == before
    assert [line["event_id"] for line in event_log_lines(log_path)] == ["new"]
    # An equal time is in order: applied.
    (tie,) = core.ingest([event("tie", 10)], clock=CLOCK)
    assert tie.outcome is APPLIED
    assert Counts.of([late, tie]) == Counts(applied=1, duplicates=0, rejected=1)  # LATE counts as rejected


def test_a_retried_older_event_is_a_duplicate_not_late(store: MemoryStore, log_path: Path) -> None:
    core = ingestor(store, log_path)
    core.ingest([event("a", 30), event("b", 10)], clock=CLOCK)
    assert outcomes(core.ingest([event("a", 30)], clock=CLOCK)) == [DUPLICATE]


def test_new_customer_takes_the_events_zone_or_the_default_and_says_so(
    store: MemoryStore, log_path: Path
) -> None:
    core = ingestor(store, log_path, default_time_zone="America/New_York")
    results = core.ingest(
        [
            event("b1", 20, customer="berlin"),
            event("b0", 30, customer="berlin", time_zone="Europe/Berlin"),
            event("d1", customer="defaulted"),
            event("d2", 50, customer="defaulted"),
        ],
        clock=CLOCK,
    )
    assert [r.reason for r in results] == [
        "applied",
        "applied; new customer",
        "applied; new customer, time zone defaulted to America/New_York",
        "applied",
    ]
    assert store.record("berlin").state.time_zone == "Europe/Berlin"
    assert store.record("defaulted").state.time_zone == "America/New_York"
    (moved,) = core.ingest([event("b2", 10, customer="berlin", time_zone="Asia/Tokyo")], clock=CLOCK)
    assert moved.reason == "applied; time_zone Asia/Tokyo ignored: the customer's is Europe/Berlin"
    assert store.record("berlin").state.time_zone == "Europe/Berlin"


def test_each_customers_events_are_applied_in_time_order_results_in_request_order(
    store: MemoryStore, log_path: Path
) -> None:
    batch = [
        event("c1-late", 10),
        event("c2-a", 40, customer="c2", event_type="email_open"),
        event("c1-early", 50, event_type="purchase", amount=12.5),
        event("c1-tie-1", 30),
        event("c1-tie-2", 30, event_type="cart_add"),
    ]
    results = ingestor(store, log_path).ingest(batch, clock=CLOCK)
    assert [r.event_id for r in results] == [e.event_id for e in batch]
    assert outcomes(results) == [APPLIED] * 5
    # The stored state is exactly the one the contract's apply makes of the events in time order.
    direct = new_state("c1", "UTC")
    for e in sorted((e for e in batch if e.customer_id == "c1"), key=lambda e: e.event_time or CLOCK):
        apply(direct, Event(e.event_time or CLOCK, e.event_type, e.amount))
    stored = store.record("c1").state
    assert _same(finalise(stored, CLOCK), finalise(direct, CLOCK))
    assert [line["event_id"] for line in event_log_lines(log_path)] == [
        "c1-early",
        "c1-tie-1",
        "c1-tie-2",
        "c1-late",
        "c2-a",
    ]


def _same(a: dict[str, object], b: dict[str, object]) -> bool:
    """Equal features: arrays element by element, the rest (floats, None, text) exactly."""

    def equal(x: object, y: object) -> bool:
        if isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
            return bool(np.array_equal(x, y))
        return x == y

    return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)


def test_event_log_lines_follow_the_batch_event_columns(store: MemoryStore, log_path: Path) -> None:
    ingestor(store, log_path).ingest(
        [
            event("p", 30, event_type="purchase", amount=9.5, time_zone="Europe/Berlin"),
            event("v", 20, amount=3.0),  # an amount on a non-purchase is ignored, as the batch does
        ],
        clock=CLOCK,
    )
    assert event_log_lines(log_path) == [
        {
            "event_id": "p",
            "customer_id": "c1",
            "event_timestamp": "2026-03-27T09:00:00+00:00",
            "event_type": "purchase",
            "amount": 9.5,
            "time_zone": "Europe/Berlin",
            "received_at": "2026-03-27T09:30:00+00:00",
        },
        {
            "event_id": "v",
            "customer_id": "c1",
            "event_timestamp": "2026-03-27T09:10:00+00:00",
            "event_type": "site_visit",
            "amount": None,
            "time_zone": None,
            "received_at": "2026-03-27T09:30:00+00:00",
        },
    ]


def test_a_fragment_a_failed_write_left_never_hides_the_next_events(
    store: MemoryStore, log_path: Path
) -> None:
    """A write cut short (a full disk) leaves part of a line; the next call's events are still
    whole lines, and the batch's reader skips the fragment (its call failed: nothing in it was
    acknowledged) and reads both calls' events, each once."""
    core = ingestor(store, log_path)
    core.ingest([event("first", 30)], clock=CLOCK)
    with log_path.open("a") as f:
        f.write('{"event_id": "torn", "customer_id": "c1", "event_ti')
    core.ingest([event("second", 20), event("third", 10)], clock=CLOCK)
    logged, offset = read_event_log(log_path)
    assert [e.event_id for e in logged] == ["first", "second", "third"]
    assert offset == log_path.stat().st_size
    later, end = read_event_log(log_path, offset)
    assert (later, end) == ([], offset)


def test_the_log_holds_an_event_before_its_state_is_committed(store: MemoryStore, log_path: Path) -> None:
    seen: list[list[str]] = []
    store.before_commit = lambda _cid: seen.append(
        [str(line["event_id"]) for line in event_log_lines(log_path)]
    )
    ingestor(store, log_path).ingest([event("a", 20), event("b", 10, customer="c2")], clock=CLOCK)
    assert seen == [["a", "b"], ["a", "b"]]  # one append (one fsync) for the call, before any commit


def test_a_commit_that_loses_a_race_is_recomputed_and_nothing_is_lost(
    store: MemoryStore, log_path: Path
) -> None:
    """Another writer commits between our read and our compare-and-set: ours is re-read and
    reapplied on top of theirs; an event they applied meanwhile becomes our DUPLICATE."""
    other_log = log_path.with_name("other.jsonl")
    other = ingestor(store, other_log)
    races = iter([["theirs", "shared"]])

    def race(_cid: str) -> None:
        ids = next(races, None)
        if ids is not None:
            other.ingest([event(i, 30) for i in ids], clock=CLOCK)

    store.before_commit = race
    results = ingestor(store, log_path).ingest([event("ours", 20), event("shared", 30)], clock=CLOCK)
    assert outcomes(results) == [APPLIED, DUPLICATE]
    assert list(store.record("c1").recent) == ["theirs", "shared", "ours"]
    assert len(store.record("c1").state.window_times[1]) == 3
    # Logged in the lost round: the log is at-least-once, keyed by (customer, event id).
    assert [line["event_id"] for line in event_log_lines(log_path)] == ["shared", "ours"]
    assert [line["event_id"] for line in event_log_lines(other_log)] == ["theirs", "shared"]


def test_endless_contention_fails_the_call_as_unavailable(store: MemoryStore, log_path: Path) -> None:
    core = ingestor(store, log_path)
    rounds = 0

    def meddle(cid: str) -> None:
        nonlocal rounds
        rounds += 1
        store.records[cid] = encode_record(LiveRecord(new_state(cid, "UTC"), {f"other-{rounds}": 0}))

    store.before_commit = meddle
    with pytest.raises(
        IngestUnavailable, match=f"1 customer\\(s\\) changed by other writers in each of {MAX_ROUNDS}"
    ):
        core.ingest([event("a")], clock=CLOCK)
    assert rounds == MAX_ROUNDS


def test_an_unwritable_event_log_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(IngestUnavailable, match="event log"):
        EventLog(tmp_path / "file" / "events.jsonl")


def test_record_round_trip_and_recent_ids_are_bounded(store: MemoryStore, log_path: Path) -> None:
    core = ingestor(store, log_path)
    start = CLOCK - timedelta(days=3)
    old = [event(f"old-{i}", event_time=start + timedelta(seconds=i)) for i in range(10)]
    core.ingest(old, clock=CLOCK)
    many = [event(f"n-{i}", event_time=CLOCK - timedelta(seconds=MAX_RECENT_IDS + 5 - i)) for i in range(300)]
    core.ingest(many[:150], clock=CLOCK)
    core.ingest(many[150:], clock=CLOCK)
    record = store.record("c1")
    assert list(record.recent) == [e.event_id for e in many[-MAX_RECENT_IDS:]]  # the newest, in time order
    assert decode_record(encode_record(record)).recent == record.recent
    # Ties at the newest second are all kept, beyond the cap: they alone prevent a double apply.
    newest = CLOCK + timedelta(minutes=1)
    tied = [event(f"t-{i}", event_time=newest) for i in range(MAX_RECENT_IDS + 10)]
    assert outcomes(core.ingest(tied, clock=CLOCK)) == [APPLIED] * len(tied)
    assert list(store.record("c1").recent) == [e.event_id for e in tied]
    # Older than DEDUPE_WINDOW before the newest: dropped whatever the count.
    later = newest + timedelta(seconds=DEDUPE_WINDOW + 1)
    core.ingest([event("later", event_time=later)], clock=later)
    assert list(store.record("c1").recent) == ["later"]


def test_record_of_another_version_is_refused() -> None:
    data = encode_record(LiveRecord(new_state("c1", "UTC"), {"a": 1}))
    with pytest.raises(ValueError, match="live record version 02: expected 1"):
        decode_record(b"\x02" + data[1:])
    with pytest.raises(ValueError, match="1 bytes left over"):
        decode_record(data + b"\x00")


# --------------------------------------------------------------------------- proto ↔ core


def test_proto_events_convert_and_an_impossible_time_is_rejected_in_place() -> None:
    request = ingest_pb2.IngestRequest(
        events=[
            ingest_pb2.Event(
                event_id="a", customer_id="c", event_time=timestamp(CLOCK), event_type="purchase", amount=0.0
            ),
            ingest_pb2.Event(
                event_id="b", customer_id="c", event_time=Timestamp(seconds=-1), event_type="site_visit"
            ),
            ingest_pb2.Event(
                event_id="c", customer_id="c", event_type="site_visit", time_zone="Europe/Berlin"
            ),
        ]
    )
    events, rejected = to_events(request.events)
    assert events == [
        IngestEvent("a", "c", CLOCK, "purchase", amount=0.0),  # a set 0.0 is present, not absent
        IngestEvent("c", "c", None, "site_visit", time_zone="Europe/Berlin"),
    ]
    assert rejected == [
        (
            1,
            EventResult(
                "b", REJECTED, "event_time must be a valid time between 1970-01-01 and 2100-01-01 UTC"
            ),
        )
    ]


def test_response_counts_late_as_rejected() -> None:
    results = [
        EventResult("a", APPLIED, "applied"),
        EventResult("b", DUPLICATE, "dup"),
        EventResult("c", REJECTED, "bad"),
        EventResult("d", LATE, "late"),
    ]
    response = to_ingest_response(results)
    assert [
        (r.event_id, ingest_pb2.EventResult.Outcome.Name(r.outcome), r.reason) for r in response.results
    ] == [
        ("a", "OUTCOME_APPLIED", "applied"),
        ("b", "OUTCOME_DUPLICATE", "dup"),
        ("c", "OUTCOME_REJECTED", "bad"),
        ("d", "OUTCOME_LATE", "late"),
    ]
    assert (response.applied, response.duplicates, response.rejected) == (1, 1, 2)
