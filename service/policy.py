"""Send-time policy: from a customer's 168 hour-of-week probabilities to a send plan.

Pure and transport-free: the gRPC layer converts proto ↔ these types and maps
:class:`PolicyInputError` to INVALID_ARGUMENT; everything here is tested directly. The time
zone work (offset tables, candidate local hours) is in :mod:`service.zones`, done once per zone.

Times inside the module are int64 microseconds since the Unix epoch: exact (no float
rounding at hour boundaries) and cheap to vectorise.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from nudge.contract.channel_model import CHANNEL_NAMES, ChannelModel
from nudge.contract.week import EPOCH_HOUR, HOURS_PER_WEEK
from service.reminders import Interest, ReminderPlan, plan_reminder
from service.zones import (
    TABLE_END_S,
    TABLE_START_S,
    ZoneTable,
    candidate_hours,
    known_zone_table,
    local_time,
    zone_table,
)

ONE_US = timedelta(microseconds=1)  # the unit of every *_us time
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PolicyInputError(ValueError):
    """An input the policy cannot plan for; the transport maps it to INVALID_ARGUMENT."""


class Decision(enum.Enum):
    """What the caller should do with the customer now."""

    SEND_NOW = "SEND_NOW"
    SCHEDULE = "SCHEDULE"
    SUPPRESS = "SUPPRESS"


@dataclass(frozen=True)
class PolicyConfig:
    """Thresholds and limits, fixed at start-up.

    ``min_propensity``: below it a message is not worth sending. ``max_dormant_days``: a
    customer silent for longer is suppressed (a never-engaged customer is not dormant:
    new customers deserve a first message). ``default_zone`` is used, and flagged, when
    the customer's zone is missing or unknown. ``default_decide_hours`` times the reminders
    of customers without decide-time samples of their own (service/reminders.py).
    """

    min_propensity: float = 0.02
    max_dormant_days: float = 180.0
    top_k: int = 3
    default_zone: str = "UTC"
    max_window: timedelta = timedelta(days=7)
    default_decide_hours: float = 24.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_propensity <= 1.0:
            raise ValueError(f"min_propensity must be in [0, 1], got {self.min_propensity}")
        if not self.max_dormant_days >= 0:
            raise ValueError(f"max_dormant_days must be >= 0, got {self.max_dormant_days}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not self.default_decide_hours > 0:
            raise ValueError(f"default_decide_hours must be > 0, got {self.default_decide_hours}")
        if not timedelta(0) < self.max_window <= timedelta(days=7):
            # Longer windows would repeat slots and need more than one week of probabilities.
            raise ValueError(f"max_window must be in (0, 7 days], got {self.max_window}")
        # Fails fast on a bad default zone, and builds its table at start-up, not on a request.
        if known_zone_table(self.default_zone) is None:
            raise ValueError(f"default_zone {self.default_zone!r} is not a known IANA time zone")


class Reminder(NamedTuple):
    """A planned reminder (service/reminders.py) in the answer's terms: datetimes, local time."""

    send_time: datetime
    send_time_local: str
    interest: str
    interest_time: datetime
    decide_hours: float
    decide_defaulted: bool
    reason: str


class ChannelChoice(NamedTuple):
    """One channel's answer: the probability a message on it is engaged with, sent at its best
    allowed slot (``start``, UTC; ``local`` in the customer's zone)."""

    channel: str  # "EMAIL", "SMS" or "PUSH"
    probability: float
    start: datetime
    local: str


class ScoredSlot(NamedTuple):
    """One candidate send slot: when it starts (UTC) and the model's probability for it."""

    start: datetime
    probability: float


@dataclass(frozen=True)
class SendPlan:
    """The policy's answer for one customer.

    ``best_send_time`` is None when the decision is SUPPRESS, so nobody can act on a
    time by mistake; ``top_slots`` still show the model's view of the window. ``codes`` are
    the decision's machine-readable reasons (``reason`` is the sentence); ``reminder`` is set
    when the customer has an open interest to remind them of (never when suppressed);
    ``channels`` ranks the channels best first (only the query's channel when it names one;
    none without a channel model or an allowed hour), ``channels_defaulted`` when the customer
    has no sends to learn from and the ranking is the population's.
    """

    best_send_time: datetime | None
    best_send_time_local: str | None
    time_zone: str
    time_zone_defaulted: bool
    top_slots: tuple[ScoredSlot, ...]
    decision: Decision
    reason: str
    codes: tuple[str, ...] = ()
    reminder: Reminder | None = None
    channels: tuple[ChannelChoice, ...] = ()
    channels_defaulted: bool = False


def _resolve_zone(name: str | None, config: PolicyConfig) -> tuple[ZoneTable, bool]:
    """The customer's zone table and whether the default had to stand in for it."""
    table = None if name is None else known_zone_table(name)
    if table is not None:
        return table, False
    return zone_table(config.default_zone), True


def _validate_quiet_hours(quiet: tuple[int, int]) -> None:
    """Quiet hours are a pair of whole local hours 0-23."""
    if len(quiet) != 2 or not all(
        isinstance(h, int) and not isinstance(h, bool) and 0 <= h <= 23 for h in quiet
    ):
        raise PolicyInputError(f"quiet hours must be two integer local hours 0-23, got {quiet!r}")


@functools.cache
def allowed_hours(quiet: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """For each local hour 0-23, whether sending is allowed (cached: 576 possible pairs).

    Quiet hours are [start, end); start > end wraps midnight (22 → 7 is 22:00-06:59) and
    start == end means none, so a caller can pass on whatever pair it was given.
    """
    start, end = quiet
    hours = np.arange(24)
    quiet_mask = (hours >= start) & (hours < end) if start <= end else (hours >= start) | (hours < end)
    allowed = ~quiet_mask
    allowed.flags.writeable = False
    return allowed


def to_us(moment: datetime, name: str) -> int:
    """Microseconds since the epoch of a timezone-aware datetime."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise PolicyInputError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")
    return (moment - _EPOCH) // ONE_US


def to_datetime(us: int) -> datetime:
    """The UTC datetime of microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=us)


def _validate_window(start_us: int, end_us: int, config: PolicyConfig) -> None:
    """Reject windows that are empty, too long, or beyond the zone tables (1970-2100)."""
    if end_us <= start_us:
        raise PolicyInputError("send window end must be after its start")
    if end_us - start_us > config.max_window // ONE_US:
        raise PolicyInputError(f"send window is longer than the maximum of {config.max_window}")
    if start_us < TABLE_START_S * 1_000_000 or end_us > TABLE_END_S * 1_000_000:
        raise PolicyInputError("send window must lie between 1970-01-01 and 2100-01-01 UTC")


def _validate_features(propensity: float, days_since_last_engagement: float | None) -> None:
    """Reject a propensity or dormancy the policy cannot reason about (NaN fails every check)."""
    if not 0.0 <= propensity <= 1.0:
        raise PolicyInputError(f"propensity must be in [0, 1], got {propensity}")
    if days_since_last_engagement is not None and not days_since_last_engagement >= 0:
        raise PolicyInputError(
            f"days_since_last_engagement must be >= 0 or None, got {days_since_last_engagement}"
        )


def suppress_reason(
    propensity: float,
    days_since_last_engagement: float | None,
    window_over: bool,
    quiet: tuple[int, int] | None,
    any_allowed: bool,
    config: PolicyConfig,
) -> tuple[str, str] | None:
    """Why not to message at all (code, sentence), or None; the first reason that applies wins."""
    if propensity < config.min_propensity:
        return "below_min_propensity", (
            f"propensity {propensity:.4f} is below the minimum {config.min_propensity:.4f}"
        )
    if days_since_last_engagement is not None and days_since_last_engagement > config.max_dormant_days:
        return "dormant", (
            f"dormant: no engagement for {days_since_last_engagement:.0f} days "
            f"(limit {config.max_dormant_days:g})"
        )
    if window_over:
        return "window_over", "the send window ended before now"
    if not any_allowed:
        assert quiet is not None  # only quiet hours can exclude every hour of a live window
        return "all_hours_quiet", (
            f"every hour of the send window is within quiet hours {quiet[0]:02d}:00-{quiet[1]:02d}:00"
        )
    return None


@dataclass(frozen=True, slots=True)
class PlanQuery:
    """One customer's inputs to :func:`plan_send_batch`; each field as in :func:`plan_send`."""

    propensity: float
    zone: str | None
    now: datetime
    window_start: datetime
    window_end: datetime
    days_since_last_engagement: float | None
    quiet_hours: tuple[int, int] | None = None
    interest: Interest | None = None
    # Per channel (CHANNELS order): response rate and sends over 90 days; NaN when unknown.
    channel_rates: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    channel_sends: tuple[float, float, float] = (0.0, 0.0, 0.0)
    channel: str | None = None  # answer for this channel only ("EMAIL", "SMS", "PUSH")


def plan_send(
    hour_probs: npt.NDArray[np.floating],
    propensity: float,
    *,
    zone: str | None,
    now: datetime,
    window_start: datetime,
    window_end: datetime,
    days_since_last_engagement: float | None,
    config: PolicyConfig,
    quiet_hours: tuple[int, int] | None = None,
) -> SendPlan:
    """Plan when (and whether) to message one customer.

    ``hour_probs[weekday * 24 + hour]`` (Monday 00:00 local = 0) is the probability that
    the customer's next engagement falls in that local hour of the week. Candidates are
    the local hours overlapping [max(window_start, now), window_end) outside quiet hours;
    the best is the most probable, ties to the earliest. SEND_NOW when it is the hour in
    progress now, SCHEDULE at its start otherwise, SUPPRESS when propensity is below
    ``config.min_propensity``, the customer is dormant, or no hour is allowed.

    Raises PolicyInputError for inputs that cannot be planned for.
    """
    query = PlanQuery(
        propensity, zone, now, window_start, window_end, days_since_last_engagement, quiet_hours
    )
    checked = check_query(query, hour_probs, probabilities_problem(hour_probs, (HOURS_PER_WEEK,)), config)
    return _plan_one(hour_probs.tolist(), checked, config)


def plan_send_batch(
    hour_probs: npt.NDArray[np.floating],
    queries: Sequence[PlanQuery],
    config: PolicyConfig,
    channel_model: ChannelModel | None = None,
) -> list[SendPlan | PolicyInputError]:
    """:func:`plan_send` for many customers at once (``hour_probs[i]`` is query i's row), and
    with a ``channel_model`` the channels ranked for each (see :class:`SendPlan`).

    The answers are plan_send's, planned one customer at a time (Score plans one; many
    customers at once is the column-wise policy's work, service/policy_columns.py). A customer
    whose input cannot be planned for gets its PolicyInputError in its place.
    """
    problem = probabilities_problem(hour_probs, (len(queries), HOURS_PER_WEEK))
    in_range = None if problem else (hour_probs.min(axis=1) >= 0.0) & (hour_probs.max(axis=1) <= 1.0)
    plans: list[SendPlan | PolicyInputError] = []
    for i, query in enumerate(queries):
        row_problem = problem or (None if in_range is None or in_range[i] else _OUT_OF_RANGE)
        try:
            checked = check_query(query, None, row_problem, config)
        except PolicyInputError as exc:
            plans.append(exc)
            continue
        plans.append(_plan_one(hour_probs[i].tolist(), checked, config, channel_model))
    return plans


_OUT_OF_RANGE = "hour_probs must be floating-point probabilities in [0, 1]"


class _Checked(NamedTuple):
    """A query that passed validation, in the integer µs the planning works in."""

    query: PlanQuery
    now_us: int
    start_us: int  # max(window_start, now): only the future part of the window is sendable
    end_us: int
    table: ZoneTable
    defaulted: bool


def probabilities_problem(hour_probs: object, shape: tuple[int, ...]) -> str | None:
    """What is wrong with the hour_probs array as a whole (shape, dtype), or None."""
    if not isinstance(hour_probs, np.ndarray) or hour_probs.shape != shape:
        got = getattr(hour_probs, "shape", type(hour_probs).__name__)
        return f"hour_probs must be a numpy array of shape {shape}, got {got}"
    if hour_probs.dtype.kind != "f":
        return _OUT_OF_RANGE
    return None


def check_query(
    query: PlanQuery,
    hour_probs: npt.NDArray[np.floating] | None,
    probs_problem: str | None,
    config: PolicyConfig,
) -> _Checked:
    """Validate one query in plan_send's order; ``hour_probs`` (one row) is range-checked here
    when given, else ``probs_problem`` already says whether its row is usable."""
    now_us = to_us(query.now, "now")
    start_us = to_us(query.window_start, "window_start")
    end_us = to_us(query.window_end, "window_end")
    _validate_window(start_us, end_us, config)
    if probs_problem is None and hour_probs is not None:
        in_range = hour_probs.min() >= 0.0 and hour_probs.max() <= 1.0  # NaN fails both
        probs_problem = None if in_range else _OUT_OF_RANGE
    if probs_problem is not None:
        raise PolicyInputError(probs_problem)
    _validate_features(query.propensity, query.days_since_last_engagement)
    if query.quiet_hours is not None:
        _validate_quiet_hours(query.quiet_hours)
    table, defaulted = _resolve_zone(query.zone, config)
    return _Checked(query, now_us, max(start_us, now_us), end_us, table, defaulted)


def _plan_one(
    hour_probs: list[float],
    item: _Checked,
    config: PolicyConfig,
    channel_model: ChannelModel | None = None,
) -> SendPlan:
    """One customer's plan, in plain Python over the window's ~24 candidate hours (on so few
    values numpy's per-call cost outweighs its speed); the column-wise policy
    (service/policy_columns.py) is the form for many."""
    table, query, quiet = item.table, item.query, item.query.quiet_hours
    zone = table.zone.key
    window_over = item.start_us >= item.end_us
    # The allowed candidate hours, in time order: UTC start (µs), probability, local hour of day.
    starts: list[int] = []
    probs: list[float] = []
    hours: list[int] = []
    if not window_over:
        candidates, hour_of_epoch = candidate_hours(table, item.start_us, item.end_us)
        allowed = _ALL_HOURS if quiet is None else allowed_hours(quiet).tolist()
        for start, hour in zip(candidates.tolist(), hour_of_epoch.tolist(), strict=True):
            if allowed[hour % 24]:
                starts.append(start)
                probs.append(hour_probs[(hour + EPOCH_HOUR) % HOURS_PER_WEEK])
                hours.append(hour % 24)
    # Most probable first; sorted() is stable, reverse too, so ties stay in time order.
    top = sorted(range(len(probs)), key=probs.__getitem__, reverse=True)[: config.top_k]
    times = {j: to_datetime(starts[j]) for j in top}
    top_slots = tuple(ScoredSlot(times[j], probs[j]) for j in top)
    channels: tuple[tuple[ChannelChoice, ...], bool] = ((), False)
    if channel_model is not None and starts:
        channels = _channels(channel_model, query, probs, hours, starts, zone, times)
    suppress = suppress_reason(
        query.propensity, query.days_since_last_engagement, window_over, quiet, bool(top_slots), config
    )
    if suppress is not None:
        code, reason = suppress
        return SendPlan(
            None, None, zone, item.defaulted, top_slots, Decision.SUPPRESS, reason, (code,), None, *channels
        )
    best = top[0]
    when = local_time(zone, starts[best])
    decision, code, reason = decide(starts[best] == item.now_us, when, probs[best])
    reminder = None
    if query.interest is not None:
        planned = plan_reminder(query.interest, item.now_us, starts, probs, config.default_decide_hours)
        reminder = None if planned is None else _reminder(planned, zone)
    codes = (code, "reminder_planned") if reminder is not None else (code,)
    return SendPlan(
        times[best], when, zone, item.defaulted, top_slots, decision, reason, codes, reminder, *channels
    )


_ALL_HOURS = [True] * 24


def decide(now_is_best: bool, when: str, probability: float) -> tuple[Decision, str, str]:
    """The decision for a customer not suppressed, its code and sentence: SEND_NOW when the best
    allowed hour is the one in progress, else SCHEDULE at its start (``when``, local time)."""
    if now_is_best:
        return (
            Decision.SEND_NOW,
            "best_hour_now",
            f"the current hour is the best allowed (p={probability:.4f})",
        )
    return Decision.SCHEDULE, "best_hour_later", f"best allowed hour starts {when} (p={probability:.4f})"


def _reminder(planned: ReminderPlan, zone: str) -> Reminder:
    send_time = to_datetime(planned.send_us)
    return Reminder(
        send_time,
        local_time(zone, planned.send_us),
        planned.interest,
        to_datetime(planned.interest_us),
        planned.decide_hours,
        planned.decide_defaulted,
        planned.reason,
    )


def _channels(
    model: ChannelModel,
    query: PlanQuery,
    probs: list[float],
    local_hours: list[int],
    starts: list[int],
    zone: str,
    times: dict[int, datetime],
) -> tuple[tuple[ChannelChoice, ...], bool]:
    """The customer's channels ranked by the probability of engagement at the channel's best
    allowed slot, and whether that ranking is the population's (no sends on any channel, as
    ChannelModel.cold_start says). ``times`` caches a candidate's datetime, shared with the plan."""
    index, p = model.best_one(query.channel_rates, query.channel_sends, probs, local_hours)
    choices = []
    for c in sorted(range(len(p)), key=p.__getitem__, reverse=True):  # stable: ties in channel order
        if query.channel is not None and CHANNEL_NAMES[c] != query.channel:
            continue
        j = index[c]
        if j not in times:
            times[j] = to_datetime(starts[j])
        choices.append(ChannelChoice(CHANNEL_NAMES[c], p[c], times[j], local_time(zone, starts[j])))
    return tuple(choices), not any(sends > 0 for sends in query.channel_sends)
