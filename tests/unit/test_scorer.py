"""The scoring core in-process, with a fake reader and two tiny real ONNX models: every path
of Scorer.score and Scorer.swap in milliseconds (the same paths run through the real stack in
tests/integration/test_server.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from nudge.contract.live_record import LiveRecord, encode_record
from nudge.contract.live_state import CustomerState, Event, apply, finalise, new_state
from service.config import Settings
from service.ingest import IngestUnavailable
from service.models import ModelSet
from service.online.live import LiveFeatures
from service.policy import Decision
from service.scorer import FeatureStatus, InvalidQuery, ScoreQuery, Scorer, ScoreResult, StoreUnavailable
from tests.support.fakes import HISTS, STATS, FakeReader, MemoryStore, tiny_models

NOW = datetime(2026, 3, 27, 9, 30, tzinfo=UTC)  # a Friday, two days before Europe's DST switch
TUESDAY_19H = 1 * 24 + 19  # hour-of-week slot the known customer engages in


def histogram(slot: int) -> np.ndarray:
    h = np.zeros(168, dtype=np.float32)
    h[slot] = 1.0
    h.setflags(write=False)
    return h


def known_row(updated: datetime) -> tuple[dict[str, object], dict[str, datetime | None]]:
    values: dict[str, object] = {
        f"{STATS}:purchase_count_30d": 2.0,
        f"{STATS}:cycle_ratio": 0.5,
        f"{HISTS}:hist_hour_of_week": histogram(TUESDAY_19H),
        f"{STATS}:time_zone": "Europe/Berlin",
        f"{STATS}:days_since_last_engagement": 3.0,
    }
    return values, {STATS: updated, HISTS: updated}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelSet:
    return tiny_models(tmp_path_factory.mktemp("models"))


def scorer(
    models: ModelSet, reader: FakeReader | None = None, live: MemoryStore | None = None, **settings: object
) -> Scorer:
    reader = reader or FakeReader({"known": known_row(NOW - timedelta(hours=6))})
    states = LiveFeatures(live) if live is not None else None
    return Scorer(reader, models, Settings(**settings), states)  # type: ignore[arg-type]


def one(s: Scorer, query: ScoreQuery) -> ScoreResult:
    (result,) = s.score([query], clock=NOW)
    assert isinstance(result, ScoreResult), result
    return result


def test_known_customer_is_scored_from_its_features(models: ModelSet) -> None:
    result = one(scorer(models), ScoreQuery("known", window_end=NOW + timedelta(days=7)))
    assert result.purchase_propensity == pytest.approx(1 / (1 + math.exp(-2.5)), rel=1e-6)
    assert result.feature_status is FeatureStatus.FRESH
    assert result.feature_age_seconds == 6 * 3600
    assert result.horizon_days == 14 and result.models == {"propensity": "v1", "send_time": "v1"}
    plan = result.plan
    assert plan.time_zone == "Europe/Berlin" and not plan.time_zone_defaulted
    assert plan.decision is Decision.SCHEDULE
    assert plan.best_send_time is not None
    local = plan.best_send_time.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.weekday(), local.hour) == (1, 19), "the customer's own hour, in their zone"
    assert plan.best_send_time == datetime(2026, 3, 31, 17, tzinfo=UTC)  # CEST after the switch


def test_old_features_are_stale(models: ModelSet) -> None:
    reader = FakeReader({"known": known_row(NOW - timedelta(days=9))})
    result = one(scorer(models, reader), ScoreQuery("known"))
    assert result.feature_status is FeatureStatus.STALE
    assert result.feature_age_seconds == 9 * 86400


def test_unknown_customer_gets_the_cold_start_answer(models: ModelSet) -> None:
    result = one(scorer(models, default_time_zone="America/New_York"), ScoreQuery("nobody"))
    assert result.feature_status is FeatureStatus.MISSING and result.feature_age_seconds == 0
    assert result.purchase_propensity == pytest.approx(0.5)  # every input missing: sigmoid(0)
    assert result.plan.time_zone == "America/New_York" and result.plan.time_zone_defaulted


def test_store_down_answers_cold_start_or_fails_as_configured(models: ModelSet) -> None:
    down = FakeReader(down=True)
    result = one(scorer(models, down), ScoreQuery("known"))
    assert result.feature_status is FeatureStatus.UNAVAILABLE
    assert result.purchase_propensity == pytest.approx(0.5)
    with pytest.raises(StoreUnavailable):
        scorer(models, down, store_unavailable="fail").score([ScoreQuery("known")], clock=NOW)


def test_an_invalid_query_is_its_own_answer_and_the_rest_share_one_read(models: ModelSet) -> None:
    reader = FakeReader({"known": known_row(NOW)})
    results = scorer(models, reader, max_id_length=10).score(
        [ScoreQuery("known"), ScoreQuery(" "), ScoreQuery("x" * 11), ScoreQuery("nobody")], clock=NOW
    )
    assert [type(r).__name__ for r in results] == [
        "ScoreResult",
        "InvalidQuery",
        "InvalidQuery",
        "ScoreResult",
    ]
    assert "empty" in str(results[1]) and "limit is 10" in str(results[2])
    assert reader.reads == [(("known", "nobody"), NOW)]


def test_one_read_per_distinct_now(models: ModelSet) -> None:
    reader = FakeReader({"known": known_row(NOW)})
    later = NOW + timedelta(hours=1)
    scorer(models, reader).score(
        [ScoreQuery("known"), ScoreQuery("a", now=later), ScoreQuery("b")], clock=NOW
    )
    assert sorted(reader.reads) == [(("a",), later), (("known", "b"), NOW)]


def test_a_window_the_policy_refuses_is_an_invalid_query(models: ModelSet) -> None:
    (result,) = scorer(models).score([ScoreQuery("known", window_end=NOW - timedelta(hours=1))], clock=NOW)
    assert isinstance(result, InvalidQuery) and "window" in str(result)


def test_swap_serves_new_models_and_closes_the_reader_it_replaces(models: ModelSet, tmp_path: Path) -> None:
    first = FakeReader({"known": known_row(NOW)})
    s = scorer(models, first)
    newer = tiny_models(tmp_path, version="v2")
    s.swap(newer)
    assert one(s, ScoreQuery("known")).models == {"propensity": "v2", "send_time": "v2"}
    assert not first.closed, "the reader stays when the new models need nothing more"
    second = FakeReader({"known": known_row(NOW)})
    s.swap(newer, second)
    assert first.closed and not second.closed
    one(s, ScoreQuery("known"))
    assert second.reads and len(first.reads) == 1


# --- live states: features exact at the query's now ---------------------------------------


def shopper(*minutes_ago: float) -> CustomerState:
    """A Berlin customer who opened three emails and bought ``minutes_ago`` before NOW."""
    state = new_state("live", "Europe/Berlin")
    for weeks in (9, 8, 7):
        apply(state, Event(datetime(2026, 1, 6, 18, tzinfo=UTC) + timedelta(weeks=9 - weeks), "email_open"))
    for minutes in sorted(minutes_ago, reverse=True):
        apply(state, Event(NOW - timedelta(minutes=minutes), "purchase", 20.0))
    return state


def with_state(state: CustomerState) -> MemoryStore:
    store = MemoryStore()
    store.records[state.customer_id] = encode_record(LiveRecord(state, {}))
    return store


def test_a_customer_with_a_live_state_is_scored_on_its_features_at_now(models: ModelSet) -> None:
    state = shopper(40 * 1440, 20 * 1440)
    reader = FakeReader()
    result = one(scorer(models, reader, live=with_state(state)), ScoreQuery("live"))
    assert reader.reads == [], "no snapshot read for a customer with a live state"
    exact = finalise(state, NOW)
    snapshot = FakeReader({"live": (exact, {STATS: NOW, HISTS: NOW})})
    expected = one(scorer(models, snapshot), ScoreQuery("live"))
    assert result.purchase_propensity == expected.purchase_propensity
    assert result.plan == expected.plan
    assert (result.feature_status, result.feature_age_seconds) == (FeatureStatus.FRESH, 0.0)


def test_a_purchase_a_minute_ago_changes_the_answer(models: ModelSet) -> None:
    before = one(scorer(models, live=with_state(shopper(40 * 1440, 20 * 1440))), ScoreQuery("live"))
    after = one(scorer(models, live=with_state(shopper(40 * 1440, 20 * 1440, 1))), ScoreQuery("live"))
    # The tiny model is sigmoid(purchase_count_30d + cycle_ratio): one more purchase in 30 days.
    assert after.purchase_propensity > before.purchase_propensity


def test_the_same_state_ages_with_now(models: ModelSet) -> None:
    live = scorer(models, live=with_state(shopper(40 * 1440, 20 * 1440)))
    (today,) = live.score([ScoreQuery("live")], clock=NOW)
    (later,) = live.score([ScoreQuery("live")], clock=NOW + timedelta(days=11))
    assert isinstance(today, ScoreResult) and isinstance(later, ScoreResult)
    # 11 days on, the purchase of 20 days ago has left the 30-day window.
    assert later.purchase_propensity < today.purchase_propensity


def test_customers_without_a_state_are_read_from_the_snapshot(models: ModelSet) -> None:
    reader = FakeReader({"known": known_row(NOW - timedelta(hours=6))})
    s = scorer(models, reader, live=with_state(shopper(60)))
    live, known = s.score([ScoreQuery("live"), ScoreQuery("known")], clock=NOW)
    assert reader.reads == [(("known",), NOW)]
    assert isinstance(live, ScoreResult) and live.feature_age_seconds == 0.0
    assert isinstance(known, ScoreResult) and known.feature_age_seconds == 6 * 3600


def test_an_event_timed_after_now_counts_as_just_before_it() -> None:
    """Ingest accepts events up to its skew ahead of the clock; finalising never fails on them."""
    live = LiveFeatures(with_state(shopper(40 * 1440, -2)))
    ref = f"{STATS}:purchase_count_30d"
    (found,) = live.read(["live"], NOW, [ref]).values()
    assert found.values[ref] == 1.0


class DownStore(MemoryStore):
    def read(self, customer_ids: object) -> dict[str, bytes]:
        raise IngestUnavailable("the live store is down")


def test_live_store_down_answers_cold_start_or_fails_as_configured(models: ModelSet) -> None:
    result = one(scorer(models, live=DownStore()), ScoreQuery("known"))
    assert result.feature_status is FeatureStatus.UNAVAILABLE
    with pytest.raises(StoreUnavailable, match="the live store is down"):
        scorer(models, live=DownStore(), store_unavailable="fail").score([ScoreQuery("known")], clock=NOW)


def test_a_snapshot_rows_open_interest_ages_from_the_snapshot_to_now(models: ModelSet) -> None:
    """On snapshot features (no live state) the reminder still follows the decide time: the
    row's hours since the cart add are as of the snapshot, 6 h before now, so they are counted
    on to now (2 + 6 = 8 h), and the reminder lands around interest + decide time."""
    values, stamps = known_row(NOW - timedelta(hours=6))
    values |= {
        f"{STATS}:hours_since_open_interest": 2.0,
        f"{STATS}:open_interest_is_cart": 1.0,
        f"{STATS}:decide_time_hours": 10.0,
    }
    result = one(
        scorer(models, FakeReader({"known": (values, stamps)})),
        ScoreQuery("known", window_end=NOW + timedelta(days=2)),
    )
    reminder = result.plan.reminder
    assert reminder is not None and reminder.interest == "cart_add"
    assert reminder.interest_time == NOW - timedelta(hours=8)
    assert not reminder.decide_defaulted and reminder.decide_hours == 10.0
    due = reminder.interest_time + timedelta(hours=10)
    assert due - timedelta(hours=1) <= reminder.send_time <= due + timedelta(hours=5)
    assert "reminder_planned" in result.plan.codes
