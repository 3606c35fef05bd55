"""Unit tests of the send-time policy core (service/policy.py): pure, no transport, fast.

Expected datetimes are written out by hand from the zones' published rules; a brute-force
reference built on zoneinfo then checks the vectorised candidate generation on random
windows, and the offset tables are checked against zoneinfo instant by instant.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pytest

from service import zones
from service.policy import (
    Decision,
    PolicyConfig,
    PolicyInputError,
    SendPlan,
    plan_send,
    zone_table,
)

CONFIG = PolicyConfig()
ALL_SLOTS = PolicyConfig(top_k=200)  # more than any window has: top_slots lists every candidate
MON, TUE, WED, THU, SUN = 0, 1, 2, 3, 6
CROSS_CHECK_ZONES = [
    "Australia/Sydney",
    "America/New_York",
    "Europe/London",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/Sao_Paulo",
    "Pacific/Chatham",
    "Australia/Lord_Howe",  # half-hour DST: transitions that are not local hour boundaries
]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def slot(weekday: int, hour: int) -> int:
    return weekday * 24 + hour


def probs(peaks: dict[int, float] | None = None, base: float = 0.001) -> npt.NDArray[np.float32]:
    """Flat probabilities with a few chosen slots raised (float32, as the model emits)."""
    p = np.full(168, base, dtype=np.float32)
    for s, value in (peaks or {}).items():
        p[s] = value
    return p


def plan(
    hour_probs: npt.NDArray[np.floating],
    zone: str | None,
    start: datetime,
    end: datetime,
    *,
    now: datetime | None = None,
    propensity: float = 0.5,
    days: float | None = 3.0,
    quiet: tuple[int, int] | None = None,
    config: PolicyConfig = CONFIG,
) -> SendPlan:
    """plan_send with everyday defaults; now defaults to the window start."""
    return plan_send(
        hour_probs,
        propensity,
        zone=zone,
        now=start if now is None else now,
        window_start=start,
        window_end=end,
        days_since_last_engagement=days,
        config=config,
        quiet_hours=quiet,
    )


def starts(result: SendPlan) -> list[datetime]:
    return [s.start for s in result.top_slots]


# --- DST ---------------------------------------------------------------------------------


def test_new_york_spring_forward_has_no_0200_candidate() -> None:
    # 2026-03-08: 02:00 EST does not happen; 07:00Z is 03:00 EDT.
    flat = plan(probs(), "America/New_York", utc(2026, 3, 8, 5), utc(2026, 3, 8, 9), config=ALL_SLOTS)
    assert starts(flat) == [utc(2026, 3, 8, 5), utc(2026, 3, 8, 6), utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)]

    peaked = probs({slot(SUN, 2): 0.9, slot(SUN, 3): 0.2})
    result = plan(peaked, "America/New_York", utc(2026, 3, 8, 5), utc(2026, 3, 8, 9))
    assert result.decision is Decision.SCHEDULE
    assert result.best_send_time == utc(2026, 3, 8, 7)
    assert result.best_send_time_local == "2026-03-08T03:00:00-04:00"


def test_berlin_spring_forward_has_no_0200_candidate() -> None:
    # 2026-03-29: 01:00Z is 02:00 CET becoming 03:00 CEST.
    window = (utc(2026, 3, 28, 23), utc(2026, 3, 29, 2))
    flat = plan(probs(), "Europe/Berlin", *window, config=ALL_SLOTS)
    assert starts(flat) == [utc(2026, 3, 28, 23), utc(2026, 3, 29, 0), utc(2026, 3, 29, 1)]

    result = plan(probs({slot(SUN, 2): 0.9, slot(SUN, 3): 0.2}), "Europe/Berlin", *window)
    assert result.best_send_time == utc(2026, 3, 29, 1)
    assert result.best_send_time_local == "2026-03-29T03:00:00+02:00"


def test_new_york_fall_back_repeats_0100_and_the_earlier_wins() -> None:
    # 2026-11-01: 05:00Z is 01:00 EDT, 06:00Z is 01:00 EST again.
    window = (utc(2026, 11, 1, 4), utc(2026, 11, 1, 8))
    flat = plan(probs(), "America/New_York", *window, config=ALL_SLOTS)
    assert starts(flat) == [
        utc(2026, 11, 1, 4),
        utc(2026, 11, 1, 5),
        utc(2026, 11, 1, 6),
        utc(2026, 11, 1, 7),
    ]

    result = plan(probs({slot(SUN, 1): 0.3}), "America/New_York", *window)
    assert starts(result)[:2] == [utc(2026, 11, 1, 5), utc(2026, 11, 1, 6)]
    assert result.top_slots[0].probability == result.top_slots[1].probability == pytest.approx(0.3)
    assert result.best_send_time_local == "2026-11-01T01:00:00-04:00"


def test_fall_back_second_occurrence_is_used_once_the_first_has_passed() -> None:
    result = plan(probs({slot(SUN, 1): 0.3}), "America/New_York", utc(2026, 11, 1, 6), utc(2026, 11, 1, 8))
    assert result.best_send_time == utc(2026, 11, 1, 6)
    assert result.best_send_time_local == "2026-11-01T01:00:00-05:00"


# --- day and week boundaries -------------------------------------------------------------


def test_window_crossing_local_midnight_uses_the_next_weekday() -> None:
    # London in summer (+01:00); Wednesday 01:00 is outside the window, Thursday 01:00 inside.
    hour_probs = probs({slot(WED, 1): 0.9, slot(THU, 1): 0.5})
    result = plan(hour_probs, "Europe/London", utc(2026, 7, 15, 21, 30), utc(2026, 7, 16, 3))
    assert result.best_send_time == utc(2026, 7, 16, 0)
    assert result.best_send_time_local == "2026-07-16T01:00:00+01:00"


def test_window_crossing_the_week_boundary_wraps_slot_167_to_0() -> None:
    hour_probs = probs({slot(MON, 0): 0.4, slot(SUN, 23): 0.3, slot(MON, 1): 0.2})
    result = plan(hour_probs, "UTC", utc(2026, 3, 15, 22), utc(2026, 3, 16, 3))
    assert starts(result) == [utc(2026, 3, 16, 0), utc(2026, 3, 15, 23), utc(2026, 3, 16, 1)]
    assert [s.probability for s in result.top_slots] == pytest.approx([0.4, 0.3, 0.2])


def test_week_boundary_is_local_not_utc() -> None:
    # 15:00Z on Sunday is already Monday 00:00 in Tokyo.
    result = plan(probs({slot(MON, 0): 0.4}), "Asia/Tokyo", utc(2026, 3, 15, 13), utc(2026, 3, 15, 18))
    assert result.best_send_time == utc(2026, 3, 15, 15)
    assert result.best_send_time_local == "2026-03-16T00:00:00+09:00"


# --- quiet hours -------------------------------------------------------------------------


def test_wrapping_quiet_hours_exclude_22_to_07_local() -> None:
    # New York summer (-04:00): window Wed 21:00 → Thu 21:00 local.
    hour_probs = probs({slot(WED, 22): 0.95, slot(THU, 3): 0.9, slot(THU, 7): 0.3, slot(THU, 6): 0.8})
    result = plan(hour_probs, "America/New_York", utc(2026, 7, 16, 1), utc(2026, 7, 17, 1), quiet=(22, 7))
    assert result.best_send_time == utc(2026, 7, 16, 11)
    assert result.best_send_time_local == "2026-07-16T07:00:00-04:00"
    zone = ZoneInfo("America/New_York")
    assert all(7 <= s.start.astimezone(zone).hour < 22 for s in result.top_slots)


def test_quiet_hours_are_half_open() -> None:
    hour_probs = probs({slot(TUE, 9): 0.9, slot(TUE, 16): 0.8, slot(TUE, 17): 0.3})
    result = plan(hour_probs, "UTC", utc(2026, 3, 10, 0), utc(2026, 3, 11, 0), quiet=(9, 17))
    assert result.best_send_time == utc(2026, 3, 10, 17)


def test_equal_quiet_hours_mean_none() -> None:
    hour_probs = probs({slot(TUE, 5): 0.9})
    result = plan(hour_probs, "UTC", utc(2026, 3, 10, 0), utc(2026, 3, 11, 0), quiet=(5, 5))
    assert result.best_send_time == utc(2026, 3, 10, 5)


def test_all_hours_quiet_suppresses() -> None:
    # 22:00 → 07:00 EDT, exactly the quiet hours.
    result = plan(probs(), "America/New_York", utc(2026, 7, 16, 2), utc(2026, 7, 16, 11), quiet=(22, 7))
    assert result.decision is Decision.SUPPRESS
    assert "quiet hours 22:00-07:00" in result.reason
    assert result.best_send_time is None and result.best_send_time_local is None
    assert result.top_slots == ()


# --- half- and quarter-hour zones --------------------------------------------------------


def test_kolkata_slots_start_at_half_past_utc() -> None:
    # 04:10Z is Tuesday 09:40 IST; later local hours start at :30 UTC.
    window = (utc(2026, 3, 10, 4, 10), utc(2026, 3, 10, 7, 0))
    flat = plan(probs(), "Asia/Kolkata", *window, config=ALL_SLOTS)
    assert starts(flat) == [
        utc(2026, 3, 10, 4, 10),
        utc(2026, 3, 10, 4, 30),
        utc(2026, 3, 10, 5, 30),
        utc(2026, 3, 10, 6, 30),
    ]

    result = plan(probs({slot(TUE, 12): 0.5}), "Asia/Kolkata", *window)
    assert result.best_send_time == utc(2026, 3, 10, 6, 30)
    assert result.best_send_time_local == "2026-03-10T12:00:00+05:30"


def test_kathmandu_slots_start_at_quarter_past_utc() -> None:
    result = plan(probs({slot(TUE, 12): 0.5}), "Asia/Kathmandu", utc(2026, 3, 10, 4), utc(2026, 3, 10, 8))
    assert result.best_send_time == utc(2026, 3, 10, 6, 15)
    assert result.best_send_time_local == "2026-03-10T12:00:00+05:45"


# --- time zone resolution ----------------------------------------------------------------


@pytest.mark.parametrize(
    "zone", [None, "", "Mars/Olympus", "America", "../../etc/passwd", "a\x00b", "x" * 300]
)
def test_unknown_zone_falls_back_to_default_and_is_flagged(zone: str | None) -> None:
    result = plan(probs({slot(TUE, 12): 0.5}), zone, utc(2026, 3, 10, 0), utc(2026, 3, 11, 0))
    assert (result.time_zone, result.time_zone_defaulted) == ("UTC", True)
    assert result.best_send_time == utc(2026, 3, 10, 12)


def test_configured_default_zone_is_used() -> None:
    config = PolicyConfig(default_zone="Europe/London")
    result = plan(
        probs({slot(WED, 12): 0.5}), "Nowhere/Special", utc(2026, 7, 15), utc(2026, 7, 16), config=config
    )
    assert (result.time_zone, result.time_zone_defaulted) == ("Europe/London", True)
    assert result.best_send_time == utc(2026, 7, 15, 11)


def test_known_zone_is_not_flagged() -> None:
    result = plan(probs(), "Asia/Kolkata", utc(2026, 3, 10, 0), utc(2026, 3, 11, 0))
    assert (result.time_zone, result.time_zone_defaulted) == ("Asia/Kolkata", False)


# --- decisions ---------------------------------------------------------------------------


def test_send_now_when_the_current_hour_is_best() -> None:
    now = utc(2026, 3, 10, 12, 20)
    result = plan(probs({slot(TUE, 12): 0.5}), "UTC", now, now + timedelta(hours=24))
    assert result.decision is Decision.SEND_NOW
    assert result.best_send_time == now
    assert result.best_send_time_local == "2026-03-10T12:20:00+00:00"


def test_schedule_when_a_later_hour_is_best() -> None:
    now = utc(2026, 3, 10, 12, 20)
    result = plan(probs({slot(TUE, 15): 0.5}), "UTC", now, now + timedelta(hours=24))
    assert result.decision is Decision.SCHEDULE
    assert result.best_send_time == utc(2026, 3, 10, 15)
    assert "2026-03-10T15:00:00+00:00" in result.reason


def test_future_window_schedules_at_its_start_even_if_its_first_hour_is_best() -> None:
    start = utc(2026, 3, 10, 12, 20)
    result = plan(
        probs({slot(TUE, 12): 0.5}), "UTC", start, start + timedelta(hours=5), now=utc(2026, 3, 10, 9)
    )
    assert result.decision is Decision.SCHEDULE
    assert result.best_send_time == start


def test_past_part_of_the_window_is_not_a_candidate() -> None:
    now = utc(2026, 3, 10, 12, 20)
    hour_probs = probs({slot(TUE, 11): 0.9, slot(TUE, 12): 0.5})
    result = plan(hour_probs, "UTC", utc(2026, 3, 10, 10), utc(2026, 3, 10, 18), now=now)
    assert result.decision is Decision.SEND_NOW
    assert result.best_send_time == now
    assert all(s.start >= now for s in result.top_slots)


def test_aware_inputs_in_other_offsets_are_accepted_and_answers_are_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    start = datetime(2026, 3, 10, 14, 20, tzinfo=plus2)  # 12:20Z
    result = plan(probs({slot(TUE, 15): 0.5}), "UTC", start, start + timedelta(hours=24))
    assert result.best_send_time == utc(2026, 3, 10, 15)
    assert result.best_send_time is not None and result.best_send_time.tzinfo is UTC


def test_suppress_below_min_propensity() -> None:
    result = plan(probs(), "UTC", utc(2026, 3, 10), utc(2026, 3, 11), propensity=0.019)
    assert result.decision is Decision.SUPPRESS
    assert result.reason.startswith("propensity 0.0190 is below the minimum 0.0200")
    assert result.best_send_time is None
    assert len(result.top_slots) == 3  # the model's view is still reported


def test_propensity_at_the_minimum_is_not_suppressed() -> None:
    result = plan(probs(), "UTC", utc(2026, 3, 10), utc(2026, 3, 11), propensity=0.02)
    assert result.decision is Decision.SEND_NOW


def test_suppress_dormant_customer() -> None:
    result = plan(probs(), "UTC", utc(2026, 3, 10), utc(2026, 3, 11), days=181.0)
    assert result.decision is Decision.SUPPRESS
    assert result.reason.startswith("dormant: no engagement for 181 days")


@pytest.mark.parametrize("days", [None, 0.0, 180.0])
def test_never_engaged_and_recent_customers_are_not_dormant(days: float | None) -> None:
    result = plan(probs(), "UTC", utc(2026, 3, 10), utc(2026, 3, 11), days=days)
    assert result.decision is Decision.SEND_NOW


def test_thresholds_are_configurable() -> None:
    config = PolicyConfig(min_propensity=0.5, max_dormant_days=7)
    low = plan(probs(), "UTC", utc(2026, 3, 10), utc(2026, 3, 11), propensity=0.4, config=config)
    dormant = plan(
        probs(), "UTC", utc(2026, 3, 10), utc(2026, 3, 11), propensity=0.6, days=8.0, config=config
    )
    assert low.decision is dormant.decision is Decision.SUPPRESS
    assert "propensity" in low.reason and "dormant" in dormant.reason


def test_suppress_when_the_window_ended_before_now() -> None:
    result = plan(probs(), "UTC", utc(2026, 3, 10), utc(2026, 3, 11), now=utc(2026, 3, 11, 1))
    assert result.decision is Decision.SUPPRESS
    assert result.reason == "the send window ended before now"
    assert result.top_slots == ()


# --- top-k -------------------------------------------------------------------------------


def test_top_k_is_best_first_inside_the_window_and_allowed() -> None:
    rng = np.random.default_rng(7)
    hour_probs = rng.random(168).astype(np.float32)
    start, end = utc(2026, 3, 10, 5, 45), utc(2026, 3, 13, 2)
    quiet = (20, 8)
    result = plan(hour_probs, "Europe/London", start, end, quiet=quiet, config=PolicyConfig(top_k=5))
    assert len(result.top_slots) == 5
    assert [s.probability for s in result.top_slots] == sorted(
        (s.probability for s in result.top_slots), reverse=True
    )
    assert result.best_send_time == result.top_slots[0].start
    for s in result.top_slots:
        assert start <= s.start < end
        local = s.start.astimezone(ZoneInfo("Europe/London"))
        assert 8 <= local.hour < 20
        assert s.probability == pytest.approx(float(hour_probs[slot(local.weekday(), local.hour)]))


def test_top_k_ties_go_to_the_earliest() -> None:
    result = plan(probs(), "UTC", utc(2026, 3, 10, 6, 30), utc(2026, 3, 11), config=PolicyConfig(top_k=3))
    assert starts(result) == [utc(2026, 3, 10, 6, 30), utc(2026, 3, 10, 7), utc(2026, 3, 10, 8)]


# --- invalid input -----------------------------------------------------------------------

GOOD: dict[str, Any] = {
    "zone": "UTC",
    "now": utc(2026, 3, 10),
    "window_start": utc(2026, 3, 10),
    "window_end": utc(2026, 3, 11),
    "days_since_last_engagement": 3.0,
    "config": CONFIG,
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"window_end": utc(2026, 3, 10)}, "end must be after its start"),
        ({"window_end": utc(2026, 3, 9)}, "end must be after its start"),
        ({"window_end": utc(2026, 3, 17, 0, 0, 1)}, "longer than the maximum"),
        ({"now": datetime(2026, 3, 10)}, "now must be timezone-aware"),
        ({"window_start": datetime(2026, 3, 10)}, "window_start must be timezone-aware"),
        ({"window_end": datetime(2026, 3, 11)}, "window_end must be timezone-aware"),
        ({"window_start": utc(1969, 12, 31), "window_end": utc(1970, 1, 1, 1)}, "between 1970"),
        ({"window_start": utc(2099, 12, 31, 1), "window_end": utc(2100, 1, 1, 1)}, "between 1970"),
        ({"days_since_last_engagement": -1.0}, "days_since_last_engagement"),
        ({"days_since_last_engagement": float("nan")}, "days_since_last_engagement"),
    ],
)
def test_invalid_times_and_features_raise(change: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyInputError, match=message):
        plan_send(probs(), 0.5, **(GOOD | change))


@pytest.mark.parametrize(
    "hour_probs",
    [
        np.full(167, 0.001),
        np.full((2, 84), 0.001),
        [0.001] * 168,
        np.ones(168, dtype=np.int64),
        probs({5: float("nan")}),
        probs({5: -0.1}),
        probs({5: 1.5}),
    ],
)
def test_invalid_hour_probs_raise(hour_probs: Any) -> None:
    with pytest.raises(PolicyInputError, match="hour_probs"):
        plan_send(hour_probs, 0.5, **GOOD)


@pytest.mark.parametrize("propensity", [-0.1, 1.1, float("nan")])
def test_invalid_propensity_raises(propensity: float) -> None:
    with pytest.raises(PolicyInputError, match="propensity"):
        plan_send(probs(), propensity, **GOOD)


@pytest.mark.parametrize("quiet", [(-1, 7), (22, 24), (1.5, 7), (True, 7), ("22", 7), (22,), (1, 2, 3)])
def test_invalid_quiet_hours_raise(quiet: Any) -> None:
    with pytest.raises(PolicyInputError, match="quiet hours"):
        plan_send(probs(), 0.5, **GOOD, quiet_hours=quiet)


def test_policy_input_error_is_a_value_error() -> None:
    assert issubclass(PolicyInputError, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"default_zone": "Mars/Olympus"}, "default_zone"),
        ({"top_k": 0}, "top_k"),
        ({"min_propensity": 1.5}, "min_propensity"),
        ({"max_dormant_days": -1}, "max_dormant_days"),
        ({"max_window": timedelta(days=8)}, "max_window"),
    ],
)
def test_bad_config_is_rejected_at_start_up(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PolicyConfig(**kwargs)


# --- vectorised offsets and candidates vs zoneinfo ---------------------------------------


def zoneinfo_offset_us(zone: ZoneInfo, epoch_s: int) -> int:
    """The reference: zoneinfo's own UTC offset at a Unix time, in microseconds."""
    offset = datetime.fromtimestamp(epoch_s, zone).utcoffset()
    assert offset is not None
    return offset // timedelta(microseconds=1)


@pytest.mark.parametrize(
    "zone_name", [*CROSS_CHECK_ZONES, "Africa/Casablanca", "Africa/Cairo", "Pacific/Apia"]
)
def test_the_table_from_compiled_transitions_equals_the_daily_scan(zone_name: str) -> None:
    """The table is built from the zone's compiled transitions plus a weekly scan after them;
    it must equal the slow daily scan of the whole range, which finds every transition."""
    assert zones._transitions(zone_name)  # the fast path is the one tested
    starts, offsets = zones._scan_offsets(ZoneInfo(zone_name))
    table = zone_table(zone_name)
    assert list(table.starts) == [s * 1_000_000 for s in starts]
    assert list(table.offsets) == [o * 1_000_000 for o in offsets]


@pytest.mark.parametrize("zone_name", CROSS_CHECK_ZONES)
def test_vectorised_offsets_match_zoneinfo(zone_name: str) -> None:
    table = zone_table(zone_name)
    rng = np.random.default_rng(CROSS_CHECK_ZONES.index(zone_name))
    random_s = rng.integers(0, 4_102_444_800, 5_000)
    # Every transition in the table, and the seconds either side of it.
    changes = np.array(table.starts[1:], dtype=np.int64) // 1_000_000
    instants_s = np.concatenate([random_s, changes - 1, changes, changes + 1])
    expected = [zoneinfo_offset_us(table.zone, int(s)) for s in instants_s]
    assert table.offsets_at(instants_s * 1_000_000).tolist() == expected


def is_quiet(quiet: tuple[int, int] | None, hour: int) -> bool:
    if quiet is None:
        return False
    if quiet[0] <= quiet[1]:
        return quiet[0] <= hour < quiet[1]
    return hour >= quiet[0] or hour < quiet[1]


def reference_candidates(
    zone_name: str, start: datetime, end: datetime, quiet: tuple[int, int] | None
) -> list[tuple[datetime, int]]:
    """Allowed candidates (start, slot) by brute force, in time order.

    Samples the window start and then every UTC quarter hour (these zones' offsets are whole
    quarter hours since 2024) and starts a new candidate when the local hour changes or local
    time runs backwards (a repeated hour).
    """
    zone = ZoneInfo(zone_name)
    quarter = timedelta(minutes=15)
    t = start.replace(minute=start.minute // 15 * 15, second=0, microsecond=0) + quarter
    samples = [start]
    while t < end:
        samples.append(t)
        t += quarter
    out: list[tuple[datetime, int]] = []
    previous: datetime | None = None
    for t in samples:
        wall = t.astimezone(zone).replace(tzinfo=None)
        hour = wall.replace(minute=0, second=0, microsecond=0)
        new_hour = previous is None or hour != previous.replace(minute=0, second=0, microsecond=0)
        if (new_hour or (previous is not None and wall < previous)) and not is_quiet(quiet, wall.hour):
            out.append((t, slot(wall.weekday(), wall.hour)))
        previous = wall
    return out


@pytest.mark.parametrize("zone_name", CROSS_CHECK_ZONES)
def test_candidates_match_a_brute_force_zoneinfo_reference(zone_name: str) -> None:
    rng = np.random.default_rng(CROSS_CHECK_ZONES.index(zone_name))
    hour_probs = rng.random(168).astype(np.float32)
    lo_us, hi_us = 1_704_067_200_000_000, 1_893_456_000_000_000  # 2024-2030
    # Half the windows start within two days before a transition, so most of those cross it.
    changes = [s for s in zone_table(zone_name).starts if lo_us <= s < hi_us]
    for case in range(40):
        if changes and case % 2:
            start_us = int(rng.choice(changes)) - int(rng.integers(0, 2 * 86_400_000_000))
        else:
            start_us = int(rng.integers(lo_us, hi_us))
        start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=start_us)
        end = start + timedelta(microseconds=int(rng.integers(60_000_000, 7 * 86_400_000_000)))
        quiet = None if case % 3 == 0 else (int(rng.integers(0, 24)), int(rng.integers(0, 24)))
        result = plan(hour_probs, zone_name, start, end, quiet=quiet, config=ALL_SLOTS)
        reference = reference_candidates(zone_name, start, end, quiet)
        expected = sorted(reference, key=lambda c: (-hour_probs[c[1]], c[0]))
        got = [(s.start, s.probability) for s in result.top_slots]
        assert got == [(t, float(hour_probs[s])) for t, s in expected], (start, end, quiet)


def test_a_zone_table_is_built_once() -> None:
    """The default zone's table is asked for on every batch and for every defaulted customer:
    it must come from the cache, not from a new scan (~25 ms)."""
    assert zone_table("Europe/Lisbon") is zone_table("Europe/Lisbon")
    assert zone_table("UTC") is zone_table("UTC")


@pytest.mark.parametrize(
    ("zone_name", "utc"),
    [
        ("Asia/Kolkata", datetime(2026, 12, 4, 9, 30, tzinfo=UTC)),
        ("Europe/Berlin", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),  # the hour the clocks go forward
        ("America/St_Johns", datetime(2026, 11, 1, 4, 30, tzinfo=UTC)),
    ],
)
def test_local_time_is_the_instant_in_its_zone(zone_name: str, utc: datetime) -> None:
    us = (utc - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert zones.local_time(zone_name, us) == utc.astimezone(ZoneInfo(zone_name)).isoformat()
    assert zones.local_time(zone_name, us) is zones.local_time(zone_name, us)  # cached
