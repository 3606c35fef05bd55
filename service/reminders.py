"""Decide-time reminders: when to remind a customer who showed interest and has not bought.

After a ``site_visit`` or ``cart_add`` with no purchase since (the features
``hours_since_open_interest`` and ``open_interest_is_cart``), a reminder is worth most around
the time this customer usually takes to decide: ``decide_time_hours``, the median of their
visit → purchase latencies. A fast decider (minutes) is reminded within the hour, a slow one
(a day or two) the next day; a customer with no latencies of their own gets the population's
median, and the reminder says so. Pure and transport-free, like the policy it extends: times are
int64 µs since the Unix epoch, candidates are the policy's allowed hours of the send window.

The rule, per customer:

* the target is ``interest time + decide time``, or the start of the sendable window when that
  has passed;
* the reminder goes in the most probable allowed hour (send-time model) among those starting
  from the target's hour to ``spread`` after it (half the decide time, at least 3 h): close to
  the decide time, in an hour the customer reads messages;
* no allowed hour there: the first allowed hour after the target; none in the window: none;
* an interest older than ``max(2 × decide time, 48 h)`` has gone cold: no reminder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

HOUR_US = 3_600_000_000
MIN_SPREAD_US = 3 * HOUR_US
COLD_AFTER_MIN_US = 48 * HOUR_US


@dataclass(frozen=True, slots=True)
class Interest:
    """A customer's open interest: how long ago (hours), whether a cart add, and their own
    decide time (hours; None when they have no visit → purchase latencies yet)."""

    hours_ago: float
    is_cart: bool
    decide_hours: float | None


@dataclass(frozen=True, slots=True)
class ReminderPlan:
    """When to send the reminder (µs since the epoch, an allowed candidate's start) and what
    it rests on."""

    send_us: int
    interest_us: int
    interest: str  # "cart_add" or "site_visit"
    decide_hours: float
    decide_defaulted: bool
    reason: str


def interest_of(hours_ago: object, is_cart: object, decide_hours: object) -> Interest | None:
    """The Interest in a customer's feature values, or None when there is none (null features:
    no visit or cart add in 90 days, or a purchase after it)."""
    if not isinstance(hours_ago, float | int) or not hours_ago >= 0:  # NaN is no interest
        return None
    decide = float(decide_hours) if isinstance(decide_hours, float | int) and decide_hours >= 0 else None
    return Interest(float(hours_ago), bool(is_cart == 1), decide)


def plan_reminder(
    interest: Interest,
    now_us: int,
    starts_us: npt.NDArray[np.int64],
    probabilities: npt.NDArray[np.floating],
    default_decide_hours: float,
) -> ReminderPlan | None:
    """The reminder for one customer, from the allowed candidate hours of the sendable window
    (``starts_us`` ascending, ``probabilities`` the send-time model's for each), or None."""
    defaulted = interest.decide_hours is None
    decide_hours = default_decide_hours if interest.decide_hours is None else interest.decide_hours
    decide_us = round(decide_hours * HOUR_US)
    interest_us = now_us - round(interest.hours_ago * HOUR_US)
    kind = "cart_add" if interest.is_cart else "site_visit"
    if now_us - interest_us > max(2 * decide_us, COLD_AFTER_MIN_US) or not len(starts_us):
        return None
    target = max(interest_us + decide_us, now_us)
    first = int(np.searchsorted(starts_us, target - target % HOUR_US, side="left"))
    if first == len(starts_us):
        return None
    spread = max(decide_us // 2, MIN_SPREAD_US)
    last = int(np.searchsorted(starts_us, target + spread, side="right"))
    # Most probable within the band (ties to the earliest), else the first allowed after it.
    chosen = first + int(np.argmax(probabilities[first:last])) if last > first else first
    whose = "the population's median decide time" if defaulted else "their median decide time"
    reason = f"{kind} {interest.hours_ago:.1f} h ago, no purchase since; {whose} is {decide_hours:.1f} h"
    return ReminderPlan(int(starts_us[chosen]), interest_us, kind, decide_hours, defaulted, reason)
