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

Two forms of the rule: :func:`plan_reminder` for one customer (a Score's policy, scalar
Python, cheapest for one) and :func:`plan_reminders` for a group of customers sharing the
candidate hours (the column-wise policy of batches and audiences: array operations, no Python
per customer); tests/unit/test_policy_columns.py holds them equal.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

HOUR_US = 3_600_000_000
MIN_SPREAD_US = 3 * HOUR_US
COLD_AFTER_MIN_US = 48 * HOUR_US

FloatArray = npt.NDArray[np.floating[Any]]


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
    starts_us: Sequence[int],
    probabilities: Sequence[float],
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
    first = bisect.bisect_left(starts_us, target - target % HOUR_US)
    if first == len(starts_us):
        return None
    spread = max(decide_us // 2, MIN_SPREAD_US)
    last = bisect.bisect_right(starts_us, target + spread)
    # Most probable within the band (max() keeps the earliest of ties), else the first allowed after it.
    chosen = max(range(first, last), key=probabilities.__getitem__) if last > first else first
    reason = _reason(kind, interest.hours_ago, defaulted, decide_hours)
    return ReminderPlan(starts_us[chosen], interest_us, kind, decide_hours, defaulted, reason)


def _reason(kind: str, hours_ago: float, defaulted: bool, decide_hours: float) -> str:
    """The reminder's sentence."""
    whose = "the population's median decide time" if defaulted else "their median decide time"
    return f"{kind} {hours_ago:.1f} h ago, no purchase since; {whose} is {decide_hours:.1f} h"


# --------------------------------------------------------------------------- column-wise


def open_interest(
    hours_ago: FloatArray, is_cart: FloatArray, decide_hours: FloatArray
) -> tuple[FloatArray, npt.NDArray[np.bool_], FloatArray]:
    """The open interests in customers' feature columns (NaN for null): hours since (NaN: none,
    i.e. no visit or cart add in 90 days, or a purchase after it), whether a cart add, and
    their own decide time (NaN: none, or a negative one)."""
    hours = np.where(hours_ago >= 0, hours_ago, np.nan)
    return hours, is_cart == 1, np.where(decide_hours >= 0, decide_hours, np.nan)


@dataclass(frozen=True)
class Reminders:
    """n customers' reminders as columns: where ``planned``, when to send (``send_us``, the
    start of allowed candidate ``candidate`` of the customer's group) and what it rests on."""

    planned: npt.NDArray[np.bool_]
    send_us: npt.NDArray[np.int64]
    candidate: npt.NDArray[np.int64]
    interest_us: npt.NDArray[np.int64]
    is_cart: npt.NDArray[np.bool_]
    decide_hours: FloatArray
    decide_defaulted: npt.NDArray[np.bool_]
    reason: npt.NDArray[np.object_]

    @classmethod
    def empty(cls, n: int) -> Reminders:
        """No reminder for any of ``n`` customers (rows to fill in)."""
        return cls(
            planned=np.zeros(n, dtype=np.bool_),
            send_us=np.zeros(n, dtype=np.int64),
            candidate=np.zeros(n, dtype=np.int64),
            interest_us=np.zeros(n, dtype=np.int64),
            is_cart=np.zeros(n, dtype=np.bool_),
            decide_hours=np.zeros(n),
            decide_defaulted=np.zeros(n, dtype=np.bool_),
            reason=np.full(n, None, dtype=object),
        )

    def assign(self, rows: npt.NDArray[np.intp], other: Reminders) -> None:
        """Set ``rows`` of these columns to ``other``'s rows (one per entry of ``rows``)."""
        for name in self.__dataclass_fields__:
            getattr(self, name)[rows] = getattr(other, name)


def plan_reminders(
    hours_ago: FloatArray,
    is_cart: npt.NDArray[np.bool_],
    decide_hours: FloatArray,
    now_us: npt.NDArray[np.int64],
    starts_us: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int64],
    probabilities: npt.NDArray[np.floating[Any]],
    default_decide_hours: float,
) -> Reminders:
    """The reminders of m customers, each at its ``now_us`` with the allowed candidate hours of
    its sendable window (row i of ``starts_us``: its ``counts[i]`` candidates ascending, then
    pads larger than any time; ``probabilities`` the send-time model's for each), from their
    open interests as :func:`open_interest` gives them. :func:`plan_reminder`'s rule, with its
    searches as counts over the rows."""
    m, k = starts_us.shape
    has = hours_ago >= 0  # NaN: no interest
    if not has.all():  # the work only for customers with an interest
        rows = np.flatnonzero(has)
        out = Reminders.empty(m)
        out.decide_hours[:] = np.where(decide_hours >= 0, decide_hours, default_decide_hours)
        out.decide_defaulted[:] = ~(decide_hours >= 0)
        out.is_cart[:] = is_cart
        if len(rows):
            part = plan_reminders(
                hours_ago[rows],
                is_cart[rows],
                decide_hours[rows],
                now_us[rows],
                starts_us[rows],
                counts[rows],
                probabilities[rows],
                default_decide_hours,
            )
            out.assign(rows, part)
        return out
    defaulted = ~(decide_hours >= 0)
    decide = np.where(defaulted, default_decide_hours, decide_hours)
    decide_us = np.rint(decide * HOUR_US).astype(np.int64)  # round half to even, as round()
    interest_us = now_us - np.rint(np.where(has, hours_ago, 0.0) * HOUR_US).astype(np.int64)
    cold = now_us - interest_us > np.maximum(2 * decide_us, COLD_AFTER_MIN_US)
    target = np.maximum(interest_us + decide_us, now_us)
    first = (starts_us < (target - target % HOUR_US)[:, None]).sum(axis=1)  # searchsorted, left
    spread = np.maximum(decide_us // 2, MIN_SPREAD_US)
    last = (starts_us <= (target + spread)[:, None]).sum(axis=1)  # searchsorted, right
    planned = has & ~cold & (first < counts)
    chosen = np.minimum(first, k - 1)
    if planned.any():
        # Most probable within the band (ties to the earliest), else the first allowed after it.
        columns = np.arange(k)
        band = (columns >= first[:, None]) & (columns < last[:, None])
        best = np.where(band, probabilities, -np.inf).argmax(axis=1)
        chosen = np.where(last > first, best, chosen)
    reasons = np.full(m, None, dtype=object)
    rows = np.flatnonzero(planned)
    if len(rows):
        kinds = np.where(is_cart[rows], "cart_add", "site_visit").tolist()
        reasons[rows] = [
            _reason(kind, h, bool(d), hours)
            for kind, h, d, hours in zip(
                kinds, hours_ago[rows].tolist(), defaulted[rows].tolist(), decide[rows].tolist(), strict=True
            )
        ]
    return Reminders(
        planned=planned,
        send_us=starts_us[np.arange(m), chosen],
        candidate=chosen,
        interest_us=interest_us,
        is_cart=is_cart,
        decide_hours=decide,
        decide_defaulted=defaulted,
        reason=reasons,
    )
