"""Decide-time reminders: timed by the customer's own decide time, within allowed hours."""

from __future__ import annotations

import numpy as np

from service.reminders import HOUR_US, Interest, interest_of, plan_reminder

NOW = 1_780_000_000 * 1_000_000 - (1_780_000_000 * 1_000_000) % HOUR_US  # on an hour
# Allowed candidates: the next 48 hours, flat probabilities but for a favourite hour 6 h out.
STARTS = NOW + HOUR_US * np.arange(48, dtype=np.int64)
FLAT = np.full(48, 0.01)


def plan(hours_ago: float, decide: float | None, probs: np.ndarray = FLAT, starts: np.ndarray = STARTS):
    interest = Interest(hours_ago, True, decide)
    return plan_reminder(interest, NOW, starts.tolist(), probs.tolist(), default_decide_hours=20.0)


def test_fast_and_slow_deciders_get_visibly_different_reminders() -> None:
    fast, slow = plan(0.25, 0.5), plan(0.25, 30.0)
    assert fast is not None and slow is not None
    assert fast.send_us - NOW <= 3 * HOUR_US  # within the decide time's hour band
    assert slow.send_us - NOW >= 29 * HOUR_US  # the next day, around their 30 h
    assert not fast.decide_defaulted and "their median decide time is 0.5 h" in fast.reason


def test_the_band_prefers_the_customers_best_hour() -> None:
    probs = FLAT.copy()
    probs[12] = 0.2  # 12 h out; decide time 10 h → band 10 h .. 15 h
    chosen = plan(0.0, 10.0, probs)
    assert chosen is not None and chosen.send_us == NOW + 12 * HOUR_US


def test_quiet_or_missing_hours_push_to_the_first_allowed_after() -> None:
    starts = STARTS[20:]  # hours 0-19 not allowed (quiet)
    chosen = plan(0.0, 2.0, FLAT[20:], starts)
    assert chosen is not None and chosen.send_us == NOW + 20 * HOUR_US


def test_no_reminder_when_cold_or_outside_the_window_or_no_interest() -> None:
    assert plan(49.0, 2.0) is None  # older than max(2 × 2 h, 48 h)
    assert plan(10.0, 30.0, FLAT[:5], STARTS[:5]) is None  # target after the window's last hour
    assert interest_of(None, None, 3.0) is None  # a purchase followed, or no visit in 90 days
    assert interest_of(float("nan"), 1.0, 3.0) is None


def test_population_decide_time_stands_in_and_says_so() -> None:
    chosen = plan(1.0, None)
    assert chosen is not None and chosen.decide_defaulted and chosen.decide_hours == 20.0
    assert chosen.send_us >= NOW + 19 * HOUR_US
    assert "population's median decide time" in chosen.reason
    assert interest_of(3.0, 0.0, None) == Interest(3.0, False, None)
