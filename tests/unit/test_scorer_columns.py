"""The scorer's column-wise form (ScoreBatch, score-audience) answers what its per-customer form
(Score) answers: the same reader, models and queries through both, every field compared."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from nudge.contract.live_record import LiveRecord, encode_record
from nudge.contract.live_state import Event, apply, new_state
from nudge.v1 import scoring_pb2 as pb
from service.config import Settings
from service.feature_columns import FeatureColumns, timestamp_column
from service.grpc_api import to_batch_response, to_response
from service.ingest import IngestUnavailable
from service.models import ModelSet
from service.online.live import LiveFeatures
from service.policy import to_datetime
from service.scorer import UNSET, InvalidQuery, Queries, ScoreQuery, Scorer, ScoreResult, Scores
from tests.support.fakes import HISTS, STATS, FakeReader, MemoryStore, tiny_models

NOW = datetime(2026, 3, 28, 23, 10, tzinfo=UTC)  # Europe's spring switch a few hours ahead
US = (NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def histogram(*slots: int) -> np.ndarray:
    h = np.zeros(168, dtype=np.float32)
    h[list(slots)] = 1.0
    return h


def row(
    age: timedelta, zone: object, **values: object
) -> tuple[dict[str, object], dict[str, datetime | None]]:
    features = {f"{STATS}:time_zone": zone, f"{HISTS}:hist_hour_of_week": histogram(30, 140)}
    features |= {f"{STATS}:{name}": value for name, value in values.items()}
    return features, {STATS: NOW - age, HISTS: NOW - age}


CUSTOMERS = {
    "fresh": row(timedelta(hours=2), "Europe/Berlin", purchase_count_30d=2.0, cycle_ratio=0.5),
    "stale": row(timedelta(days=12), "America/New_York", days_since_last_engagement=400.0),
    "cart": row(
        timedelta(hours=6),
        "Asia/Kolkata",
        hours_since_open_interest=2.0,
        open_interest_is_cart=1.0,
        decide_time_hours=5.0,
        purchase_count_30d=-9.0,  # propensity near 0: suppressed
    ),
    "visit": row(
        timedelta(hours=1), "Nowhere/Land", hours_since_open_interest=0.5, open_interest_is_cart=0.0
    ),
    "no-zone": row(timedelta(0), None, days_since_last_engagement=3.0),
}
QUERIES = [
    ScoreQuery("fresh"),
    ScoreQuery("stale", now=NOW - timedelta(hours=1)),
    ScoreQuery("cart", window_end=NOW + timedelta(days=2), quiet_hours=(22, 7)),
    ScoreQuery("visit", window_start=NOW + timedelta(hours=3), channel="SMS"),
    ScoreQuery("no-zone", quiet_hours=(0, 23)),
    ScoreQuery("nobody"),
    ScoreQuery(" "),
    ScoreQuery("fresh", window_end=NOW - timedelta(hours=2)),  # over before it starts: refused
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelSet:
    return tiny_models(tmp_path_factory.mktemp("models"))


def columns(queries: list[ScoreQuery]) -> Queries:
    def us(when: datetime | None) -> int:
        return (
            UNSET if when is None else (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        )

    return Queries(
        customer_ids=[q.customer_id for q in queries],
        now_us=np.array([us(q.now) for q in queries]),
        window_start_us=np.array([us(q.window_start) for q in queries]),
        window_end_us=np.array([us(q.window_end) for q in queries]),
        quiet=np.array([q.quiet_hours or (-1, -1) for q in queries]),
        channel=[q.channel for q in queries],
        error=np.full(len(queries), None, dtype=object),
    )


@pytest.mark.parametrize("quiet", [(0, 0), (21, 8)])
@pytest.mark.parametrize("down", [False, True])
def test_column_answers_equal_per_customer_answers(
    models: ModelSet, quiet: tuple[int, int], down: bool
) -> None:
    settings = Settings(quiet_start_hour=quiet[0], quiet_end_hour=quiet[1], default_time_zone="Europe/Lisbon")
    scorer = Scorer(FakeReader(CUSTOMERS, down=down), models, settings)
    expected = [scorer.score([q], clock=NOW)[0] for q in QUERIES]
    scores = scorer.score_queries(columns(QUERIES), clock=NOW)
    assert [type(r) for r in expected].count(InvalidQuery) == 2
    for i, want in enumerate(expected):
        got = scores.result(i)
        if isinstance(want, InvalidQuery):
            assert isinstance(got, InvalidQuery) and str(got) == str(want)
        else:
            assert isinstance(got, ScoreResult) and got == want, QUERIES[i]
    statuses = {r.feature_status.value for r in expected if isinstance(r, ScoreResult)}
    assert statuses == ({"UNAVAILABLE"} if down else {"FRESH", "STALE", "MISSING"})
    # ScoreBatch's response, built from the columns, holds Score's responses field for field.
    batch = to_batch_response([pb.ScoreRequest(customer_id=q.customer_id) for q in QUERIES], scores)
    for want, entry in zip(expected, batch.results, strict=True):
        if isinstance(want, InvalidQuery):
            assert entry.WhichOneof("outcome") == "error" and entry.error.message == str(want)
        else:
            assert entry.response == to_response(want)


def live_states() -> MemoryStore:
    """Customers with live states: a shopper with a cart add an hour ago, an email reader, and
    one who signed up but never engaged (no histograms' row)."""
    store = MemoryStore()
    shopper = new_state("shopper", "America/Chicago")
    for days in (40, 25, 9):
        apply(shopper, Event(NOW - timedelta(days=days, hours=3), "site_visit"))
        apply(shopper, Event(NOW - timedelta(days=days, hours=1), "purchase", 30.0 + days))
    apply(shopper, Event(NOW - timedelta(hours=1), "cart_add"))
    reader = new_state("reader", "Europe/Berlin")
    for days in range(60, 0, -4):
        apply(reader, Event(NOW - timedelta(days=days, hours=2), "email_send"))
        apply(reader, Event(NOW - timedelta(days=days, hours=1), "email_open"))
        apply(reader, Event(NOW - timedelta(days=days), "push_send"))
    for state in (shopper, reader, new_state("quiet", "Asia/Kathmandu", NOW - timedelta(days=3))):
        store.records[state.customer_id] = encode_record(LiveRecord(state, {}))
    return store


class DownStore(MemoryStore):
    def read(self, customer_ids: object) -> dict[str, bytes]:
        raise IngestUnavailable("the live store is down")


@pytest.mark.parametrize("down", [False, True])
def test_live_states_read_as_columns_answer_as_per_customer(models: ModelSet, down: bool) -> None:
    """ScoreBatch reads live states column-wise (LiveFeatures.read_columns); Score reads them a
    dict per customer. Customers with and without a state, repeated, at two instants."""
    store = DownStore() if down else live_states()
    scorer = Scorer(FakeReader(CUSTOMERS), models, Settings(), LiveFeatures(store))
    queries = [
        ScoreQuery("shopper"),
        ScoreQuery("fresh"),
        ScoreQuery("reader", channel="EMAIL"),
        ScoreQuery("quiet"),
        ScoreQuery("shopper", now=NOW + timedelta(hours=30)),
        ScoreQuery(" "),
        ScoreQuery("reader", window_end=NOW + timedelta(days=3)),
        ScoreQuery("nobody", now=NOW + timedelta(hours=30)),
    ]
    expected = [scorer.score([q], clock=NOW)[0] for q in queries]
    scores = scorer.score_queries(columns(queries), clock=NOW)
    for i, want in enumerate(expected):
        got = scores.result(i)
        assert got == want if isinstance(want, ScoreResult) else str(got) == str(want), queries[i]
    ages = {
        r.feature_age_seconds for r in expected if isinstance(r, ScoreResult) and r.customer_id != "fresh"
    }
    assert ages == {0.0}, "scored on live states (or cold start) at now"
    if not down:
        assert {r.feature_status.value for r in expected if isinstance(r, ScoreResult)} == {
            "FRESH",
            "MISSING",
        }
        assert any(r.plan.reminder for r in expected if isinstance(r, ScoreResult)), "the cart add counts"


@pytest.mark.parametrize("down", [False, True])
def test_live_columns_hold_what_the_per_customer_read_holds(models: ModelSet, down: bool) -> None:
    """The columns ScoreBatch reads equal those made from Score's read of the same customers,
    NaN for NaN: the never-engaged customer's histograms are missing (NaN, no view stamp) there
    too, though the tiny models answer alike either way."""
    store = DownStore() if down else live_states()
    scorer = Scorer(FakeReader(CUSTOMERS), models, Settings(), LiveFeatures(store))
    kinds = scorer.feature_kinds()
    ids = ["shopper", "fresh", "reader", "quiet", "shopper", "nobody"]
    now_us = np.array([US, US, US + 3_600_000_000, US, US + 3_600_000_000, US])
    got = scorer._read_columns(ids, now_us, kinds)
    want = FeatureColumns.from_features(kinds, scorer._read(ids, [to_datetime(us) for us in now_us.tolist()]))
    assert np.array_equal(got.scalars, want.scalars, equal_nan=True)
    assert got.arrays.keys() == want.arrays.keys()
    for ref, column in want.arrays.items():
        assert np.array_equal(got.arrays[ref], column, equal_nan=True), ref
    assert (got.strings, got.available.tolist()) == (want.strings, want.available.tolist())
    assert {v: s.tolist() for v, s in got.stamps.items()} == {v: s.tolist() for v, s in want.stamps.items()}
    assert np.isnan(got.arrays[f"{HISTS}:hist_hour_of_week"][3]).all(), "quiet: never engaged (or store down)"


def test_joined_arrow_rows_score_as_the_readers_answers(models: ModelSet) -> None:
    """The audience's input (record batches of joined rows) and the readers' dicts are the same
    features: the same answers."""
    scorer = Scorer(FakeReader(CUSTOMERS), models, Settings())
    ids = [*CUSTOMERS, "nobody"]
    found = FakeReader(CUSTOMERS).read(ids, NOW)
    kinds = scorer.feature_kinds()
    batch = {"customer_id": ids}
    for ref in kinds.scalars:
        batch[ref] = pa.array([f.values[ref] for f in found], type=pa.float32())
    for ref, _ in kinds.arrays:
        batch[ref] = pa.array([f.values[ref] for f in found], type=pa.list_(pa.float32()))
    for ref in kinds.strings:
        batch[ref] = pa.array([f.values[ref] for f in found], type=pa.string())
    for view in kinds.views:
        batch[timestamp_column(view)] = pa.array(
            [f.event_timestamps[view] for f in found], pa.timestamp("us", "UTC")
        )
    from_arrow = FeatureColumns.from_arrow(kinds, pa.RecordBatch.from_pydict(batch))
    queries = scorer.resolve(columns([ScoreQuery(c, now=NOW) for c in ids]), NOW)
    got = scorer.score_columns(queries, from_arrow)
    for i, customer in enumerate(ids):
        assert got.result(i) == scorer.score([ScoreQuery(customer, now=NOW)], clock=NOW)[0]
    wrong = pa.RecordBatch.from_pydict({**batch, f"{HISTS}:hist_hour_of_week": pa.array([[1.0]] * len(ids))})
    with pytest.raises(ValueError, match="hist_hour_of_week: an array of 1 values, not 168"):
        FeatureColumns.from_arrow(kinds, wrong)
    with pytest.raises(ValueError, match="lack the columns customer_stats:time_zone"):
        FeatureColumns.from_arrow(
            kinds, pa.RecordBatch.from_pydict({k: v for k, v in batch.items() if "time_zone" not in k})
        )


def test_models_run_in_blocks_answer_as_one_run(models: ModelSet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large batches run the models INFER_ROWS rows at a time (onnxruntime keeps the largest
    run's memory): the answers do not change."""
    scorer = Scorer(FakeReader(CUSTOMERS), models, Settings())
    whole = scorer.score_queries(columns(QUERIES), clock=NOW)
    monkeypatch.setattr("service.scorer.INFER_ROWS", 3)
    blocks = scorer.score_queries(columns(QUERIES), clock=NOW)

    def answers(scores: Scores) -> list[object]:
        return [str(r) if isinstance(r, InvalidQuery) else r for r in map(scores.result, range(len(QUERIES)))]

    assert answers(blocks) == answers(whole)


def test_models_side_by_side_answer_as_one_after_the_other(
    models: ModelSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From PARALLEL_ROWS rows on, the send-time model runs on a second thread: the same answers."""
    scorer = Scorer(FakeReader(CUSTOMERS), models, Settings())
    many = QUERIES * 5
    monkeypatch.setattr("service.scorer.PARALLEL_ROWS", len(many))
    beside = scorer.score_queries(columns(many), clock=NOW)
    monkeypatch.setattr("service.scorer.PARALLEL_ROWS", len(many) + 1)
    serial = scorer.score_queries(columns(many), clock=NOW)
    assert scorer._beside._threads  # the second thread did run
    for i in range(len(many)):
        one, other = beside.result(i), serial.result(i)
        assert one == other if isinstance(other, ScoreResult) else str(one) == str(other)
