"""Score on live states through the real stack: ``nudge features`` built every customer's state,
``nudge load-states`` put them in the live store, the server finalises them at each request's
``now``, and Ingest changes them between two Scores.

On a copy of the SQLite stack's repo (the shared stack keeps serving snapshots to the other
tests): the live answers at the newest snapshot time equal the snapshot server's (the batch
features and the bootstrap states agree on real Feast rows), a cart add a minute before ``now``
changes the next Score, and ``load-states`` run again while events were ingested keeps them."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from nudge.contract.live_record import decode_record, encode_record
from nudge.contract.live_state import Event, apply
from nudge.v1 import ingest_pb2 as ipb
from nudge.v1 import ingest_pb2_grpc, scoring_pb2_grpc
from nudge.v1 import scoring_pb2 as pb
from service.live_stores import LIVE_DB, SqliteStateStore
from tests.support.stack import BIN, SIGNED_UP_ONLY, ServerProcess, Stack, run_cli, timestamp

SAMPLE = 60


@pytest.fixture(scope="module")
def live_stack(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """The stack's repo copied (online store included, no live states), then load-states."""
    repo = tmp_path_factory.mktemp("live") / "repo"
    shutil.copytree(stack.repo, repo, ignore=shutil.ignore_patterns(f"{LIVE_DB}*", "*.jsonl"))
    out = run_cli(str(BIN / "nudge"), "load-states", "--repo", str(repo))
    customers = len(pd.read_parquet(stack.customers, columns=["customer_id"]))
    assert out.startswith(f"{customers:,} records written, 0 unchanged"), out
    return replace(stack, repo=repo)


@pytest.fixture(scope="module")
def live_server(live_stack: Stack) -> Iterator[ServerProcess]:
    with ServerProcess(live_stack) as proc:
        yield proc


def sample(stack: Stack) -> list[str]:
    """The most active customers, a quiet one, and the one with no events at all."""
    counts = pd.read_parquet(stack.events, columns=["customer_id"])["customer_id"].value_counts()
    return [*map(str, counts.index[: SAMPLE - 2]), str(counts.index[-1]), SIGNED_UP_ONLY]


def score_all(server: ServerProcess, ids: list[str], now: datetime) -> list[pb.ScoreResponse]:
    with server.channel() as channel:
        reply = scoring_pb2_grpc.ScoringServiceStub(channel).ScoreBatch(
            pb.ScoreBatchRequest(requests=[pb.ScoreRequest(customer_id=c, now=timestamp(now)) for c in ids]),
            timeout=10,
        )
    assert all(r.WhichOneof("outcome") == "response" for r in reply.results)
    return [r.response for r in reply.results]


def test_live_answers_at_the_snapshot_time_equal_the_snapshot_answers(
    live_server: ServerProcess, server: ServerProcess, stack: Stack
) -> None:
    ids = sample(stack)
    live, snapshot = score_all(live_server, ids, stack.as_of), score_all(server, ids, stack.as_of)
    for got, expected in zip(live, snapshot, strict=True):
        assert got.feature_age_seconds == 0.0, "scored on the live state"
        assert expected.feature_age_seconds == 0.0, "the snapshot row is as of as_of exactly"
        assert got.purchase_propensity == pytest.approx(expected.purchase_propensity, rel=1e-5)
        assert [s.start_time for s in got.top_slots] == [s.start_time for s in expected.top_slots]
        assert [s.probability for s in got.top_slots] == pytest.approx(
            [s.probability for s in expected.top_slots], rel=1e-5
        )
        assert (got.decision, got.time_zone) == (expected.decision, expected.time_zone)


def ingest(server: ServerProcess, *events: ipb.Event) -> list[int]:
    with server.channel() as channel:
        reply = ingest_pb2_grpc.IngestServiceStub(channel).Ingest(
            ipb.IngestRequest(events=events), timeout=10
        )
    return [r.outcome for r in reply.results]


def test_a_cart_add_a_minute_ago_changes_the_next_score(live_server: ServerProcess, stack: Stack) -> None:
    """Between two Scores at the same ``now``, only the cart add happened; it counts at once."""
    customer = sample(stack)[-2]  # quiet: no cart add in the last 30 days
    now = datetime.now(UTC).replace(microsecond=0)
    (before,) = score_all(live_server, [customer], now)
    event = ipb.Event(
        event_id=f"cart-{uuid.uuid4().hex[:8]}",
        customer_id=customer,
        event_type="cart_add",
        event_time=timestamp(now - timedelta(minutes=1)),
    )
    assert ingest(live_server, event) == [ipb.EventResult.OUTCOME_APPLIED]
    (after,) = score_all(live_server, [customer], now)
    assert after.feature_age_seconds == before.feature_age_seconds == 0.0
    assert after.purchase_propensity != before.purchase_propensity


def purchases(customer: str, count: int) -> list[ipb.Event]:
    now = datetime.now(UTC).replace(microsecond=0)
    return [
        ipb.Event(
            event_id=f"buy-{uuid.uuid4().hex[:8]}",
            customer_id=customer,
            event_type="purchase",
            amount=10.0 + i,
            event_time=timestamp(now - timedelta(minutes=count - i)),
        )
        for i in range(count)
    ]


def test_load_states_again_keeps_what_was_ingested_and_overwrites_drift(
    live_stack: Stack, live_server: ServerProcess
) -> None:
    """The batch file predates the events ingested since: reloading it re-applies them from the
    event log (the records come out byte for byte as Ingest left them); a record that drifted
    from its events is overwritten with the batch's."""
    active, drifted = sample(live_stack)[:2]
    events = purchases(active, 3)
    assert ingest(live_server, *events) == [ipb.EventResult.OUTCOME_APPLIED] * 3
    store = SqliteStateStore(live_stack.repo / "data" / LIVE_DB, 5.0)
    try:
        held = store.read([active, drifted])
        wrong = decode_record(held[drifted])
        apply(wrong.state, Event(wrong.state.last_event or 0, "purchase", 1e6))
        assert store.compare_and_set([(drifted, held[drifted], encode_record(wrong))]) == set()
        out = run_cli(str(BIN / "nudge"), "load-states", "--repo", str(live_stack.repo))
        after = store.read([active, drifted])
    finally:
        store.close()
    customers = len(pd.read_parquet(live_stack.customers, columns=["customer_id"]))
    assert out.startswith(f"1 records written, {customers - 1:,} unchanged"), out
    assert after[active] == held[active]
    batch = pd.read_parquet(live_stack.repo / "data" / "live_states.parquet").set_index("customer_id")
    assert after[drifted] == batch.loc[drifted, "record"]
    assert ingest(live_server, *events) == [ipb.EventResult.OUTCOME_DUPLICATE] * 3


def test_the_next_features_run_reads_the_event_log(
    live_stack: Stack, live_server: ServerProcess, tmp_path: Path
) -> None:
    """What Ingest logged is in the next batch run: a known customer's new purchases, and a
    customer only the log knows, created in the zone the event gave."""
    known = sample(live_stack)[2]
    newcomer = f"new-{uuid.uuid4().hex[:8]}"
    first = purchases(newcomer, 1)[0]
    first.time_zone = "Asia/Tokyo"
    events = [*purchases(known, 2), first]
    assert ingest(live_server, *events) == [ipb.EventResult.OUTCOME_APPLIED] * 3
    repo = tmp_path / "repo"
    shutil.copytree(live_stack.repo, repo, ignore=shutil.ignore_patterns(f"{LIVE_DB}*"))
    events_file, customers_file = str(live_stack.events), str(live_stack.customers)
    run_cli(
        str(BIN / "nudge"),
        "features",
        "--events",
        events_file,
        "--customers",
        customers_file,
        "--repo",
        str(repo),
    )
    records = pd.read_parquet(repo / "data" / "live_states.parquet").set_index("customer_id")["record"]
    assert decode_record(records[known]).state.last_event == events[1].event_time.seconds
    created = decode_record(records[newcomer])
    assert (created.state.time_zone, created.state.purchase_count) == ("Asia/Tokyo", 1)
    assert set(created.recent) == {first.event_id}
    stats = pd.read_parquet(repo / "data" / "customer_stats.parquet", columns=["customer_id"])
    assert newcomer in set(stats["customer_id"]), "the feature tables hold the log's events too"


def history(customer: str, decide: timedelta, now: datetime) -> list[ipb.Event]:
    """A new customer's three visits, each followed by a purchase ``decide`` later, then a cart
    add a minute before ``now`` with no purchase since."""
    events = []
    for k in range(3):
        visit = now - timedelta(days=20 - 5 * k)
        for kind, when in (("site_visit", visit), ("purchase", visit + decide)):
            events.append(
                ipb.Event(
                    event_id=f"{kind}-{uuid.uuid4().hex[:8]}",
                    customer_id=customer,
                    event_type=kind,
                    event_time=timestamp(when),
                    amount=25.0 if kind == "purchase" else None,
                    time_zone="Europe/Berlin",
                )
            )
    cart = ipb.Event(
        event_id=f"cart-{uuid.uuid4().hex[:8]}",
        customer_id=customer,
        event_type="cart_add",
        event_time=timestamp(now - timedelta(minutes=1)),
    )
    return [*events, cart]


def test_reminders_follow_each_customers_decide_time(live_server: ServerProcess) -> None:
    """Through Ingest and Score: a fast decider is reminded within hours, a slow one around
    their 30 h; a purchase after the cart add removes the reminder."""
    now = datetime.now(UTC).replace(microsecond=0)
    fast, slow = (f"remind-{uuid.uuid4().hex[:8]}-{kind}" for kind in ("fast", "slow"))
    events = [*history(fast, timedelta(minutes=10), now), *history(slow, timedelta(hours=30), now)]
    assert set(ingest(live_server, *events)) == {ipb.EventResult.OUTCOME_APPLIED}

    def score(customer: str) -> pb.ScoreResponse:
        with live_server.channel() as channel:
            request = pb.ScoreRequest(
                customer_id=customer, now=timestamp(now), window_end=timestamp(now + timedelta(hours=72))
            )
            return scoring_pb2_grpc.ScoringServiceStub(channel).Score(request, timeout=10)

    quick, patient = score(fast), score(slow)
    for answer, decide in ((quick, 10 / 60), (patient, 30.0)):
        assert answer.decision != pb.DECISION_SUPPRESS, answer.reason
        assert answer.HasField("reminder") and "reminder_planned" in answer.decision_reasons
        assert answer.reminder.interest == "cart_add"
        assert answer.reminder.decide_time_hours == pytest.approx(decide)
        assert not answer.reminder.decide_time_defaulted
    assert quick.reminder.send_time.ToDatetime(UTC) - now <= timedelta(hours=4)
    assert patient.reminder.send_time.ToDatetime(UTC) - now >= timedelta(hours=29)

    bought = ipb.Event(
        event_id=f"buy-{uuid.uuid4().hex[:8]}",
        customer_id=fast,
        event_type="purchase",
        amount=30.0,
        event_time=timestamp(now - timedelta(seconds=10)),
    )
    assert ingest(live_server, bought) == [ipb.EventResult.OUTCOME_APPLIED]
    after = score(fast)
    assert not after.HasField("reminder") and "reminder_planned" not in after.decision_reasons
