"""The live feature state against the batch pipeline: one definition, two evaluations.

Simulated customers (pinned dates, spanning both directions of the European and US DST
switches) plus hand-built edge cases are replayed event by event through
``nudge.contract.live_state``; at thousands of (customer, instant) pairs -- random, around DST
switches, at and 1 s around window edges (an event + 7/30/90 days) and burst edges (an event
+ 1 h) -- every feature of every feature service, as the Feast repo lists them, must equal
``training.features.features_at`` at the same pair. Also: the encoding round-trips exactly,
the state stays bounded, and out-of-order use is refused.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from nudge.contract import live_state
from nudge.contract.events import ENGAGEMENT_TYPES
from nudge.contract.live_state import (
    DAY,
    HISTOGRAM_COLUMNS,
    NUMBER_REFS,
    Event,
    apply,
    finalise,
    finalise_columns,
    finalise_encoded,
    finalise_many,
    from_bytes,
    new_state,
    to_bytes,
)
from tests.support.stack import FEATURE_REPO, utc
from training import features
from training.features import features_at, repo_tables
from training.simulate import simulate

HOUR = 3_600
START = datetime(2025, 9, 15, tzinfo=UTC)  # pinned: 200 days span both directions of both switches
DAYS = 200
TABLES = repo_tables(FEATURE_REPO)
# Feast's switches in the two zones the hand-built customers live in (UTC).
SWITCHES = {
    "Europe/Berlin": ("2025-10-26 01:00:00", "2026-03-29 01:00:00"),
    "America/New_York": ("2025-11-02 06:00:00", "2026-03-08 07:00:00"),
}


def service_features() -> list[str]:
    """Every feature reference of every feature service in the repo: the list under test."""
    spec = importlib.util.spec_from_file_location("_live_state_definitions", FEATURE_REPO / "definitions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from feast import FeatureService

    refs = {
        f"{projection.name_to_use()}:{feature.name}"
        for service in vars(module).values()
        if isinstance(service, FeatureService)
        for projection in service.feature_view_projections
        for feature in projection.features
    }
    return sorted(refs)


def seconds(text: str) -> int:
    return int(utc(text).timestamp())


def edge_cases() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customers the simulator would produce only by luck: exact burst and trip edges, a visit
    at the very second of a purchase, engagements at DST switches, no events at all."""
    rows: list[tuple[str, int, str, float | None]] = []
    t = seconds("2025-10-01 10:00:00")
    # Chains at exactly 1 h (joins) and 1 h + 1 s (a new engagement / trip).
    for gap in (0, HOUR, HOUR, HOUR + 1, HOUR, HOUR - 1, HOUR + 1, 5 * DAY, HOUR):
        t += gap
        rows.append(("edge_bursts", t, "purchase", 12.5))
        rows.append(("edge_bursts", t, "site_visit", None))  # same second, after: decide time 0
        rows.append(("edge_bursts", t + 600, "email_send", None))
    t = seconds("2025-11-10 08:00:00")
    rows.append(("edge_decide", t, "cart_add", None))
    rows.append(("edge_decide", t + 48 * HOUR, "purchase", 3.0))  # exactly 48 h after: 48 h
    rows.append(("edge_decide", t + 5 * DAY, "site_visit", None))
    rows.append(("edge_decide", t + 7 * DAY + 1, "purchase", 4.0))  # 48 h + 1 s after: none
    # Two events exactly 90 days - 1 s apart: the older is in the window just after the newer.
    rows.append(("edge_horizon", t, "purchase", 2.0))
    rows.append(("edge_horizon", t + 90 * DAY - 1, "purchase", 5.0))
    # The open interest at equal seconds: a cart_add and a site_visit (both orders: a cart
    # either way), a purchase at a visit's second (either order: converted).
    t = seconds("2025-12-01 09:00:00")
    for offset, kind in (
        (0, "cart_add"),
        (0, "site_visit"),
        (2 * HOUR, "purchase"),
        (DAY, "site_visit"),
        (DAY, "cart_add"),
        (DAY + 1_800, "sms_send"),
        (3 * DAY, "site_visit"),
        (3 * DAY, "purchase"),
        (5 * DAY, "purchase"),
        (5 * DAY, "cart_add"),
        (6 * DAY, "site_visit"),
        (6 * DAY + 1, "push_send"),
    ):
        rows.append(("edge_interest", t + offset, kind, 7.0 if kind == "purchase" else None))
    for zone, switches in SWITCHES.items():
        for direction, switch in zip(("back", "forward"), switches, strict=True):
            x = seconds(switch)
            name = f"dst_{zone.split('/')[1]}_{direction}"
            for offset, kind in ((-1, "site_visit"), (HOUR + 1, "email_open"), (2 * HOUR + 2, "push_open")):
                rows.append((f"{name}_before", x + offset, kind, None))
            for offset, kind in ((0, "cart_add"), (1_800, "email_click"), (HOUR + 1_801, "purchase")):
                rows.append((f"{name}_at", x + offset, kind, 9.0 if kind == "purchase" else None))
    events = pd.DataFrame(rows, columns=["customer_id", "t", "event_type", "amount"])
    events["event_timestamp"] = pd.to_datetime(events.pop("t"), unit="s", utc=True)
    zone_of = {
        name: zone for zone in SWITCHES for name in events["customer_id"] if zone.split("/")[1] in name
    }
    people: list[tuple[str, str, pd.Timestamp | None]] = [
        (name, zone_of.get(name, "UTC"), utc("2025-09-01")) for name in events["customer_id"].unique()
    ]
    people += [
        ("signed_up_only", "Asia/Kolkata", utc("2025-11-20 13:45")),  # no events
        ("never_seen", "UTC", None),  # no signup, no events
        ("signs_up_late", "Europe/Berlin", utc("2026-06-01")),  # after the data
    ]
    customers = pd.DataFrame(people, columns=["customer_id", "time_zone", "signup_timestamp"])
    return events[["customer_id", "event_timestamp", "event_type", "amount"]], customers


@dataclass(frozen=True)
class Data:
    events: pd.DataFrame  # sorted by customer then time, stably (the batch pipeline's order)
    customers: pd.DataFrame


@pytest.fixture(scope="module")
def data() -> Data:
    simulated = simulate(400, DAYS, seed=11, start=START)
    extra_events, extra_customers = edge_cases()
    events = pd.concat([simulated.events.astype({"event_type": str}), extra_events], ignore_index=True)
    customers = pd.concat([simulated.customers, extra_customers], ignore_index=True)
    events["t"] = events["event_timestamp"].astype("int64") // 1_000_000_000
    events = events.sort_values(["customer_id", "t"], kind="stable").reset_index(drop=True)
    return Data(events, customers)


def rows(events: pd.DataFrame) -> Iterator[tuple[str, int, str, float | None]]:
    """(customer, Unix seconds, event type, amount) of each event, in the frame's order."""
    amounts = [None if math.isnan(a) else float(a) for a in events["amount"].to_numpy(np.float64)]
    yield from zip(
        events["customer_id"].astype(str),
        events["t"].astype(int),
        events["event_type"].astype(str),
        amounts,
        strict=True,
    )


def pairs(data: Data, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The (customer, instant) pairs to check: random ones, and the edges where a definition
    could be off by one."""
    ids: list[str] = []
    instants: list[int] = []

    def add(customer: str, *times: int) -> None:
        ids.extend([customer] * len(times))
        instants.extend(times)

    everyone = data.customers["customer_id"].to_numpy()
    lo, hi = int(START.timestamp()) - 10 * DAY, int(START.timestamp()) + (DAYS + 100) * DAY
    for customer, t in zip(rng.choice(everyone, 600), rng.integers(lo, hi, 600), strict=True):
        add(str(customer), int(t))
    for edge in everyone[~np.isin(everyone, data.events["customer_id"].unique())]:
        add(str(edge), *rng.integers(lo, hi, 5).tolist())
    # Windows: an event + 7/30/90 days, exactly and 1 s either side.
    for customer, t, _, _ in rows(data.events.iloc[rng.choice(len(data.events), 120, replace=False)]):
        add(customer, *(t + days * DAY + d for days in (7, 30, 90) for d in (-1, 0, 1)))
    # Bursts: just after an engagement, and at its 1 h edge.
    engaged = data.events[data.events["event_type"].isin(ENGAGEMENT_TYPES)]
    for customer, t, _, _ in rows(engaged.iloc[rng.choice(len(engaged), 120, replace=False)]):
        add(customer, t + 1, t + HOUR - 1, t + HOUR, t + HOUR + 1)
    edges = data.events[~data.events["customer_id"].str.startswith("c")]
    for customer, t, _, _ in rows(edges):
        add(customer, t, t + 1, t + HOUR, t + HOUR + 1, t + HOUR + 2)
    for customer, t, _, _ in rows(edges.groupby("customer_id").tail(1)):  # 90 days after the last
        add(customer, t + 90 * DAY - 1, t + 90 * DAY, t + 90 * DAY + 1)
    # DST: simulated customers in the two zones, around every switch.
    for zone, switches in SWITCHES.items():
        local = data.customers.loc[data.customers["time_zone"] == zone, "customer_id"].to_numpy()
        for switch in switches:
            x = seconds(switch)
            for customer in rng.choice(local, 8, replace=False):
                add(str(customer), x - 1, x, x + 1, x + HOUR, x + 2 * HOUR)
    return np.array(ids, dtype=object), np.array(instants, dtype=np.int64)


def replay(
    data: Data, ids: np.ndarray, instants: np.ndarray
) -> Iterator[tuple[int, dict[str, object], bytes]]:
    """Each pair's live features: the customer's events strictly before the instant applied in
    order, then finalise -- and the same from the state after an encoding round trip, whose
    bytes come third."""
    zones = dict(zip(data.customers["customer_id"], data.customers["time_zone"], strict=True))
    signups = dict(zip(data.customers["customer_id"], data.customers["signup_timestamp"], strict=True))
    order = np.lexsort((instants, ids))
    by_customer = {customer: rows(frame) for customer, frame in data.events.groupby("customer_id")}
    state, customer = None, None
    events: Iterator[tuple[str, int, str, float | None]] = iter(())
    pending = None
    for index in order:
        if ids[index] != customer:
            customer = ids[index]
            signup = signups[customer]
            state = new_state(customer, zones[customer], None if pd.isna(signup) else signup.to_pydatetime())
            events = by_customer.get(customer, iter(()))
            pending = next(events, None)
        assert state is not None
        while pending is not None and pending[1] < instants[index]:
            apply(state, Event(*pending[1:]))
            pending = next(events, None)
        live = finalise(state, int(instants[index]))
        encoded = to_bytes(state)
        assert_identical(finalise(from_bytes(encoded), int(instants[index])), live)
        yield int(index), live, encoded


def assert_identical(got: dict[str, object], expected: dict[str, object]) -> None:
    assert got.keys() == expected.keys()
    for ref, value in expected.items():
        if isinstance(value, np.ndarray):
            other = got[ref]
            assert isinstance(other, np.ndarray) and np.array_equal(other, value), ref
        else:
            assert got[ref] == value, ref


def agrees(live: object, batch: object) -> bool:
    """Within 1e-6 relative (1e-9 absolute near zero); None, NaN and a missing row are null."""
    if live is None:
        return batch is None or (isinstance(batch, float) and math.isnan(batch))
    if isinstance(live, str):
        return live == batch
    if isinstance(live, np.ndarray):
        return (
            isinstance(batch, np.ndarray)
            and live.dtype == np.float32
            and live.shape == batch.shape
            and bool(np.allclose(live, batch, rtol=1e-6, atol=1e-9))
        )
    assert isinstance(live, float)
    return isinstance(batch, float) and math.isclose(live, batch, rel_tol=1e-6, abs_tol=1e-9)


def batch_values(data: Data, ids: np.ndarray, instants: np.ndarray) -> dict[str, list[object]]:
    """The batch pipeline's value of every feature at every pair, by feature reference."""
    stats, histograms = features_at(data.events.drop(columns="t"), data.customers, ids, instants, TABLES)
    for table in (stats, histograms):
        assert table["customer_id"].tolist() == ids.tolist()
        assert (table["event_timestamp"] == pd.to_datetime(instants, unit="s", utc=True)).all()
    values: dict[str, list[object]] = {}
    for view, table in ((features.STATS_TABLE, stats), (features.HISTOGRAMS_TABLE, histograms)):
        for name in table.columns[2:]:
            column = table[name].tolist()
            values[f"{view}:{name}"] = [
                v if isinstance(v, np.ndarray | str) or v is None else float(v) for v in column
            ]
    return values


def test_live_state_matches_batch_at_every_pair(data: Data) -> None:
    refs = service_features()
    ids, instants = pairs(data, np.random.default_rng(5))
    assert (len(ids), len(refs)) == (2_721, 32), "the counts docs/realtime.md states"
    batch = batch_values(data, ids, instants)
    mismatches = []
    for index, live, _ in replay(data, ids, instants):
        for ref in refs:
            if not agrees(live[ref], batch[ref][index]):
                mismatches.append(
                    f"{ids[index]} at {instants[index]}: {ref} live {live[ref]!r} batch {batch[ref][index]!r}"
                )
    assert not mismatches, f"{len(mismatches)} mismatches of {len(ids) * len(refs)}:\n" + "\n".join(
        mismatches[:20]
    )


def test_states_as_columns_equal_each_state_finalised(data: Data) -> None:
    """finalise_columns (ScoreBatch's read) gives every feature finalise_many gives, to the bit,
    for the parity pairs' states read together, and finalise_many of one state (Score's read)
    what it gives among many: at an instant after all of them, and at one before many states'
    newest events (moved past them, as the server reads states)."""
    ids, instants = pairs(data, np.random.default_rng(5))
    encoded = [state for _, _, state in replay(data, ids, instants)]
    for now, after_newest in ((int(instants.max()) + DAY, False), (int(np.median(instants)), True)):
        columns = finalise_columns(encoded, now, after_newest=after_newest)
        assert columns.numbers.shape == (len(encoded), len(NUMBER_REFS))
        together = finalise_many(encoded, now, after_newest=after_newest)
        for i, expected in enumerate(together):
            if i % 7 == 0:  # one state alone (a Score's read) holds what it holds among many
                (alone,) = finalise_many([encoded[i]], now, after_newest=after_newest)
                assert alone.keys() == expected.keys()
                for ref, value in alone.items():
                    want = expected[ref]
                    same = (
                        np.array_equal(np.asarray(value), want)
                        if isinstance(want, np.ndarray)
                        else value == want
                    )
                    assert same, (i, ref, value, want)
            assert columns.time_zones[i] == expected["customer_stats:time_zone"]
            for ref, got in zip(NUMBER_REFS, columns.numbers[i].tolist(), strict=True):
                want = expected[ref]
                assert math.isnan(got) if want is None else got == want, (i, ref, got, want)
            assert columns.engaged[i] == (expected["customer_time_histograms:hist_event_count"] is not None)
            for ref, (start, stop) in HISTOGRAM_COLUMNS.items():
                histogram = expected[ref]
                if histogram is None:
                    assert not columns.engaged[i]
                else:
                    assert isinstance(histogram, np.ndarray)
                    assert np.array_equal(columns.histograms[i, start:stop], histogram), (i, ref)
    assert finalise_columns([], 0).numbers.shape == (0, len(NUMBER_REFS))


def test_the_live_state_at_a_dst_switch_and_within_one_second() -> None:
    """Two edges the parity pairs visit, checked against hand-computed values: engagements
    either side of a DST switch land in their own local hours, and a visit at the very second
    of a purchase gives a decide time of 0."""
    state = new_state("x", "Europe/Berlin")
    x = seconds(SWITCHES["Europe/Berlin"][0])  # 03:00 CEST becomes 02:00 CET
    apply(state, Event(x - 1, "site_visit"))  # Sunday 02:59:59 CEST
    apply(state, Event(x + HOUR + 1, "email_open"))  # Sunday 03:00:01 CET
    week = finalise(state, x + 2 * HOUR)["customer_time_histograms:hist_hour_of_week"]
    assert isinstance(week, np.ndarray) and set(np.flatnonzero(week)) == {6 * 24 + 2, 6 * 24 + 3}
    t = seconds("2025-10-01 10:00:00")
    buyer = new_state("y", "UTC")
    apply(buyer, Event(t - HOUR, "cart_add"))
    apply(buyer, Event(t, "purchase", 1.0))
    apply(buyer, Event(t, "site_visit"))
    assert finalise(buyer, t + 1)["customer_stats:decide_time_hours"] == 0.0


def test_state_stays_bounded() -> None:
    """Three years of a busy customer: windows keep 90 days, and apart from the decide-time
    samples (one per purchase with a visit) the encoding does not grow once the year's slots
    (both sides of the DST switches) are in the histogram."""
    state = new_state("busy", "America/New_York", 0)
    sizes = {}
    t = seconds("2024-01-01 08:00:00")
    for day in range(1, 1_096):
        for offset, kind in (
            (0, "site_visit"),
            (HOUR, "purchase"),
            (3 * HOUR, "email_send"),
            (4 * HOUR, "email_open"),
        ):
            apply(state, Event(t + offset, kind, 5.0))
        t += DAY
        assert state.last_event is not None
        assert all(
            not times or times[0] >= state.last_event - live_state.HORIZON for times in state.window_times
        )
        assert len(state.window_amounts) == len(state.window_times[0])
        if day in (400, 1_095):
            sizes[day] = len(to_bytes(state)) - 4 * len(state.decide_seconds)
    assert max(len(times) for times in state.window_times) <= 91
    assert sizes[1_095] == sizes[400]


def test_out_of_order_use_is_refused() -> None:
    state = new_state("z", "UTC")
    apply(state, Event(1_000, "purchase", 1.0))
    apply(state, Event(1_000, "site_visit"))  # equal times are in order
    with pytest.raises(live_state.LateEventError, match="older than the newest applied"):
        apply(state, Event(999, "site_visit"))
    with pytest.raises(ValueError, match="not after the newest applied event"):
        finalise(state, 1_000)
    with pytest.raises(ValueError, match="unknown event_type"):
        apply(state, Event(2_000, "teleport"))
    with pytest.raises(ValueError, match="version"):
        from_bytes(b"\x07" + to_bytes(state)[1:])


def test_the_encoded_finaliser_refuses_what_it_cannot_read_and_moves_early_instants() -> None:
    """Score finalises stored bytes: another version or trailing bytes are refused, and with
    ``after_newest`` an instant at or before the newest event (timed ahead of the server clock)
    is evaluated just after it."""
    state = new_state("z", "UTC")
    apply(state, Event(1_000, "purchase", 1.0))
    data = to_bytes(state)
    with pytest.raises(ValueError, match="version"):
        finalise_encoded(b"\x07" + data[1:], 2_000)
    with pytest.raises(ValueError, match="left over"):
        finalise_encoded(data + b"\x00", 2_000)
    with pytest.raises(ValueError, match="customer z: finalise at 1000 is not after"):
        finalise_encoded(data, 1_000)
    assert_identical(finalise_encoded(data, 900, after_newest=True), finalise(state, 1_001))


def test_datetimes_round_like_the_batch() -> None:
    """An event's time rounds down and an instant's up, so "strictly before" is decided on
    whole seconds exactly as the batch decides it."""
    state = new_state("w", "UTC", datetime(2025, 1, 1, tzinfo=UTC))
    apply(state, Event(datetime(2025, 1, 2, 0, 0, 0, 900_000, tzinfo=UTC), "site_visit"))
    assert state.last_event == seconds("2025-01-02")
    got = finalise(state, datetime(2025, 1, 2, 0, 0, 0, 1, tzinfo=UTC))
    assert got["customer_stats:days_since_last_engagement"] == pytest.approx(1 / DAY)
    assert got["customer_stats:tenure_days"] == pytest.approx(1 + 1 / DAY)


ENGAGEMENT_NEW = (
    "email_sends_90d",
    "sms_sends_90d",
    "push_sends_90d",
    "hours_since_open_interest",
    "open_interest_is_cart",
)


def both_evaluations(events: list[tuple[int, str]], *instants: int) -> list[dict[str, object]]:
    """The issue-12 features of one UTC customer at each instant, live; checked equal to the
    batch's at the same instants (nulls as None)."""
    frame = pd.DataFrame(
        [
            ("h", pd.Timestamp(t, unit="s", tz="UTC"), kind, 1.0 if kind == "purchase" else None)
            for t, kind in events
        ],
        columns=["customer_id", "event_timestamp", "event_type", "amount"],
    )
    customers = pd.DataFrame(
        [("h", "UTC", utc("2025-01-01"))], columns=["customer_id", "time_zone", "signup_timestamp"]
    )
    stats, _ = features_at(frame, customers, ["h"] * len(instants), np.array(instants), TABLES)
    got = []
    for index, now in enumerate(instants):
        state = new_state("h", "UTC")
        for t, kind in events:
            if t < now:
                apply(state, Event(t, kind, 1.0 if kind == "purchase" else None))
        live = finalise(state, now)
        values = {name: live[f"customer_stats:{name}"] for name in ENGAGEMENT_NEW}
        for name, value in values.items():
            assert agrees(value, float(stats[name].iloc[index])), (name, now)
        got.append(values)
    return got


def test_open_interest_by_hand() -> None:
    t = seconds("2026-01-10 12:00:00")
    visit_then_purchase = [(t, "site_visit"), (t + HOUR, "purchase")]
    (converted,) = both_evaluations(visit_then_purchase, t + 2 * HOUR)
    assert converted["hours_since_open_interest"] is None and converted["open_interest_is_cart"] is None
    cart_after = [*visit_then_purchase, (t + DAY, "cart_add")]
    before, open_cart, edge, beyond = both_evaluations(
        cart_after, t + HOUR + 1, t + DAY + 2 * HOUR, t + 91 * DAY, t + 91 * DAY + 1
    )
    assert before == {
        "email_sends_90d": 0.0,
        "sms_sends_90d": 0.0,
        "push_sends_90d": 0.0,
        "hours_since_open_interest": None,  # the purchase at t + 1 h converted the visit
        "open_interest_is_cart": None,
    }
    assert (open_cart["hours_since_open_interest"], open_cart["open_interest_is_cart"]) == (2.0, 1.0)
    assert edge["hours_since_open_interest"] == 90 * 24  # exactly 90 days: still in [now - 90 d, now)
    assert beyond["hours_since_open_interest"] is None and beyond["open_interest_is_cart"] is None
    # A newer visit makes the open interest a visit; a purchase at its very second converts it,
    # whichever was applied first; a cart_add at the visit's second makes it a cart either way.
    visit = [*cart_after, (t + 2 * DAY, "site_visit")]
    (newer,) = both_evaluations(visit, t + 2 * DAY + 1_800)
    assert (newer["hours_since_open_interest"], newer["open_interest_is_cart"]) == (0.5, 0.0)
    for tie in ("purchase", "cart_add"):
        for order in (
            [*visit, (t + 2 * DAY, tie)],
            [*cart_after, (t + 2 * DAY, tie), (t + 2 * DAY, "site_visit")],
        ):
            (same_second,) = both_evaluations(order, t + 2 * DAY + 1)
            expected = (None, None) if tie == "purchase" else (1 / 3_600, 1.0)
            got = (same_second["hours_since_open_interest"], same_second["open_interest_is_cart"])
            assert got == expected, (tie, order)


def test_sends_90d_by_hand() -> None:
    t = seconds("2026-01-10 12:00:00")
    events = [(t, "email_send"), (t, "email_open"), (t + HOUR, "sms_send"), (t + HOUR, "push_send")]
    events += [(t + DAY, "email_send"), (t + DAY, "push_send")]
    edge, past_edge, later = both_evaluations(events, t + 90 * DAY, t + 90 * DAY + 1, t + 90 * DAY + HOUR + 1)
    sends = ("email_sends_90d", "sms_sends_90d", "push_sends_90d")
    assert [edge[name] for name in sends] == [2.0, 1.0, 2.0]  # t is in [now - 90 d, now)
    assert [past_edge[name] for name in sends] == [1.0, 1.0, 2.0]  # ... and 1 s later it is not
    assert [later[name] for name in sends] == [1.0, 0.0, 1.0]
    assert edge["hours_since_open_interest"] is None  # no visit or cart add at all
    state = new_state("h", "UTC")
    for at, kind in events:
        apply(state, Event(at, kind))
    rate = finalise(state, t + 90 * DAY)["customer_stats:email_open_rate_90d"]
    assert rate == 0.5 and rate * 2.0 == 1.0  # the opens: rate × sends
