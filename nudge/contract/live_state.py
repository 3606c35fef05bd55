"""A customer's features from a small state updated event by event: the live evaluation.

The batch pipeline (training/features.py, whose docstring holds the definitions) computes a
feature from all of a customer's events before an instant. Here the same definitions are
kept as a bounded per-customer :class:`CustomerState`: :func:`apply` folds in one event (in
time order) and :func:`finalise` evaluates every feature of both feature views at any
instant ``now`` after the newest applied event, from the events strictly before it. The
parity test (tests/unit/test_live_state.py) replays events through both and compares every
feature of every feature service at random instants, DST switches, window and burst edges.

What the state keeps, and why that is enough:

* timestamps, not ages: recency and tenure are ``now`` minus a stored time;
* exactly decayed sums anchored at the last engagement (``h ← h·2^(−Δ/half-life) + x``): the
  decayed count is decayed to ``now`` at read, the histograms are normalised at read (which
  cancels the common decay);
* per event type, the event times (and purchase amounts) no older than the longest window
  (90 days) before the newest applied event: ``now`` is later, so every window
  ``[now − N days, now)`` is inside what is kept;
* running totals for purchase count and amount, and for the gaps between purchase trips the
  first gap and the sums of deviations from it (as the batch computes them, so a regular
  cycle has exactly zero spread);
* the last raw engagement and purchase, which decide whether the next one starts a new
  engagement or trip (burst collapse, chained);
* the latest site_visit/cart_add and the decide-time samples (whole seconds, sorted): a
  median needs them all, so this is the one part that grows with the customer's lifetime
  purchases (4 bytes each, only purchases with a visit within 48 h). The open interest
  (issue 12) needs nothing more: the latest visit, the latest purchase, and the window's
  cart_add times (a visit inside 90 days of ``now`` is inside the kept horizon).

:func:`to_bytes` / :func:`from_bytes` give a compact, versioned encoding for an online store
(one key per customer, updated by read-modify-write).
"""

from __future__ import annotations

import bisect
import functools
import math
import struct
import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from nudge.contract.events import ENGAGEMENT_TYPES, EVENT_TYPES
from nudge.contract.features import HISTOGRAMS_VIEW, STATS_VIEW
from nudge.contract.week import EPOCH_HOUR, HOURS_PER_WEEK, hour_of_week

DAY = 86_400  # seconds; times are integer Unix seconds (events rounded down, instants up)
BURST_GAP = 3_600  # engagements (purchases) at most this far apart are one engagement (trip)
DECIDE_WINDOW = 48 * 3_600
COUNT_HALF_LIFE = 30 * DAY
HIST_HALF_LIFE = 60 * DAY
HORIZON = 90 * DAY  # the longest window: older event times are never needed again

STATS, HISTOGRAMS = STATS_VIEW, HISTOGRAMS_VIEW
_KIND = {name: index for index, name in enumerate(EVENT_TYPES)}
_ENGAGEMENT = frozenset(_KIND[name] for name in ENGAGEMENT_TYPES)
_PURCHASE, _SITE_VISIT, _CART_ADD = _KIND["purchase"], _KIND["site_visit"], _KIND["cart_add"]
_VISITS = frozenset((_SITE_VISIT, _CART_ADD))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)

Instant = int | float | datetime | np.integer


class LateEventError(ValueError):
    """An event older than the newest one applied: this state folds events in time order only."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event of the customer whose state it is applied to.

    ``at``: Unix seconds or a datetime (naive means UTC), rounded down to a whole second as
    the batch pipeline reads event times. ``amount`` matters only for purchases.
    """

    at: Instant
    event_type: str
    amount: float | None = None


@dataclass(slots=True)
class CustomerState:
    """Everything :func:`finalise` needs about one customer; times are Unix seconds."""

    customer_id: str
    time_zone: str
    signup: int | None = None
    first_event: int | None = None
    last_event: int | None = None  # the newest applied: order check and the window horizon
    # Per event type (EVENT_TYPES order), ascending times within HORIZON of last_event.
    window_times: list[list[int]] = field(default_factory=lambda: [[] for _ in EVENT_TYPES])
    window_amounts: list[float] = field(default_factory=list)  # of the window's purchases
    purchase_count: int = 0
    amount_total: float = 0.0
    last_purchase: int | None = None  # raw: a purchase within BURST_GAP of it joins its trip
    tied_purchases: int = 0  # purchases at exactly last_purchase (a visit at that second joins)
    last_trip: int | None = None
    gap_count: int = 0
    gap_first: float = 0.0  # days; deviations are from it, as in the batch
    gap_deviation_sum: float = 0.0
    gap_deviation_squares: float = 0.0
    last_visit: int | None = None  # latest site_visit or cart_add
    decide_seconds: list[int] = field(default_factory=list)  # sorted
    last_engaged: int | None = None  # raw: an engagement within BURST_GAP of it joins it
    last_engagement: int | None = None  # the kept (first) time of the latest engagement
    engagement_count: int = 0
    engagement_decayed: float = 0.0  # at last_engagement
    histogram: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(HOURS_PER_WEEK))


@functools.cache
def _zone(name: str) -> zoneinfo.ZoneInfo:
    """The zone, loaded once per process: ``ZoneInfo`` keeps only a few zones strongly, and
    reloading one from the zone database cost ~0.2 ms per decoded state with 13 zones in use."""
    return zoneinfo.ZoneInfo(name)


def new_state(customer_id: str, time_zone: str, signup: Instant | None = None) -> CustomerState:
    """The state of a customer before any event; ``time_zone`` is an IANA name (checked)."""
    _zone(time_zone)  # raises ZoneInfoNotFoundError on an unknown zone
    return CustomerState(customer_id, time_zone, None if signup is None else whole_seconds(signup, up=False))


def apply(state: CustomerState, event: Event) -> None:
    """Fold one event into the state (in place). Events must come in time order (equal times
    allowed); an older one raises :class:`LateEventError`."""
    t = whole_seconds(event.at, up=False)
    kind = _KIND.get(event.event_type)
    if kind is None:
        raise ValueError(f"unknown event_type {event.event_type!r}; expected one of {', '.join(EVENT_TYPES)}")
    if state.last_event is not None and t < state.last_event:
        raise LateEventError(
            f"customer {state.customer_id}: event at {t} is older than the newest applied ({state.last_event})"
        )
    if state.first_event is None:
        state.first_event = t
    state.last_event = t
    _window_add(state, kind, t, event.amount)
    if kind == _PURCHASE:
        _purchase(state, t, event.amount)
    elif kind in _VISITS:
        _visit(state, t)
    if kind in _ENGAGEMENT:
        _engage(state, t)


def _window_add(state: CustomerState, kind: int, t: int, amount: float | None) -> None:
    """Append the time, and drop times no window can reach any more (of every type, so the
    state is bounded by the last 90 days however the mix of types changes)."""
    state.window_times[kind].append(t)
    if kind == _PURCHASE:
        state.window_amounts.append(_amount(amount))
    cutoff = t - HORIZON
    for index, times in enumerate(state.window_times):
        if times and times[0] < cutoff:
            stale = bisect.bisect_left(times, cutoff)
            del times[:stale]
            if index == _PURCHASE:
                del state.window_amounts[:stale]


def _purchase(state: CustomerState, t: int, amount: float | None) -> None:
    state.purchase_count += 1
    state.amount_total += _amount(amount)
    if state.last_purchase is None or t - state.last_purchase > BURST_GAP:
        _trip(state, t)
    state.tied_purchases = state.tied_purchases + 1 if t == state.last_purchase else 1
    state.last_purchase = t
    waited = _waited(state, t)
    if waited is not None:
        bisect.insort(state.decide_seconds, waited)


def _trip(state: CustomerState, t: int) -> None:
    """A new purchase trip: one more gap, added as the batch adds it (deviation from the first)."""
    if state.last_trip is not None:
        gap = (t - state.last_trip) / DAY
        if state.gap_count == 0:
            state.gap_first = gap
        deviation = gap - state.gap_first
        state.gap_count += 1
        state.gap_deviation_sum += deviation
        state.gap_deviation_squares += deviation * deviation
    state.last_trip = t


def _waited(state: CustomerState, t: int) -> int | None:
    """Seconds from the latest visit (at or before ``t``) to a purchase at ``t``; None beyond 48 h."""
    if state.last_visit is None or t - state.last_visit > DECIDE_WINDOW:
        return None
    return t - state.last_visit


def _visit(state: CustomerState, t: int) -> None:
    """A visit at the very second of the latest purchases precedes them (the batch looks for the
    latest visit at or before a purchase, whatever the order within a second): their decide
    samples become 0."""
    if t == state.last_purchase and t != state.last_visit:
        before = _waited(state, t)
        for _ in range(state.tied_purchases):
            if before is not None:
                state.decide_seconds.remove(before)
            bisect.insort(state.decide_seconds, 0)
    state.last_visit = t


def _engage(state: CustomerState, t: int) -> None:
    """A new engagement unless within BURST_GAP of the previous raw one (chained)."""
    joins = state.last_engaged is not None and t - state.last_engaged <= BURST_GAP
    state.last_engaged = t
    if joins:
        return
    if state.last_engagement is not None:
        age = t - state.last_engagement
        state.engagement_decayed *= math.exp2(-age / COUNT_HALF_LIFE)
        state.histogram *= math.exp2(-age / HIST_HALF_LIFE)
    state.engagement_decayed += 1.0
    state.histogram[_slot(t, state.time_zone)] += 1.0
    state.engagement_count += 1
    state.last_engagement = t


def _slot(t: int, time_zone: str) -> int:
    """The local hour-of-week slot of a UTC time in the customer's zone (DST-correct), by the
    contract's one slot function."""
    offset = datetime.fromtimestamp(t, _zone(time_zone)).utcoffset() or timedelta(0)
    local = t + offset // _SECOND
    return int(hour_of_week(local // 3_600 + EPOCH_HOUR))


def finalise(state: CustomerState, now: Instant) -> dict[str, object]:
    """Every feature of both views at ``now``, from the events strictly before it.

    Keyed by feature reference ("view:feature"); floats, None where undefined (null),
    the time zone as text, histograms as float32 arrays. ``now`` (rounded up to a whole
    second) must be after the newest applied event: an event at or after ``now`` would count.
    """
    s = whole_seconds(now, up=True)
    if state.last_event is not None and s <= state.last_event:
        raise ValueError(
            f"customer {state.customer_id}: finalise at {s} is not after the newest applied event "
            f"({state.last_event}); events at or after an instant never count"
        )
    stats = _purchase_stats(state, s) | _channel_stats(state, s) | _engagement_stats(state, s)
    stats |= _interest_stats(state, s)
    appeared = min((x for x in (state.signup, state.first_event) if x is not None), default=None)
    stats["tenure_days"] = (s - appeared) / DAY if appeared is not None and appeared < s else None
    features: dict[str, object] = {f"{STATS}:{name}": value for name, value in stats.items()}
    features[f"{STATS}:time_zone"] = state.time_zone
    features |= {f"{HISTOGRAMS}:{name}": value for name, value in _histograms(state).items()}
    return features


def _count(times: list[int], s: int, days: int) -> int:
    """Events in ``[s − days, s)``; every kept time is before ``s``."""
    return len(times) - bisect.bisect_left(times, s - days * DAY)


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _purchase_stats(state: CustomerState, s: int) -> dict[str, float | None]:
    purchases = state.window_times[_PURCHASE]
    since_last = None if state.last_purchase is None else (s - state.last_purchase) / DAY
    n = state.gap_count
    gap_mean = state.gap_first + state.gap_deviation_sum / n if n >= 1 else None
    gap_std = None
    if n >= 2:
        total = state.gap_deviation_sum
        variance = (state.gap_deviation_squares - total**2 / n) / (n - 1)
        gap_std = math.sqrt(max(variance, 0.0))
    return {
        "purchase_count_7d": float(_count(purchases, s, 7)),
        "purchase_count_30d": float(_count(purchases, s, 30)),
        "purchase_count_90d": float(_count(purchases, s, 90)),
        "purchase_count_total": float(state.purchase_count),
        "days_since_last_purchase": since_last,
        "amount_total_90d": float(sum(state.window_amounts[len(purchases) - _count(purchases, s, 90) :])),
        "amount_avg": _ratio(state.amount_total, state.purchase_count),
        "gap_mean_days": gap_mean,
        "gap_std_days": gap_std,
        "cycle_ratio": None if since_last is None or gap_mean is None else _ratio(since_last, gap_mean),
        "decide_time_hours": _median_hours(state.decide_seconds),
    }


def _median_hours(seconds: list[int]) -> float | None:
    if not seconds:
        return None
    middle = len(seconds) // 2
    if len(seconds) % 2:
        return seconds[middle] / 3_600
    return (seconds[middle - 1] / 3_600 + seconds[middle] / 3_600) / 2


def _channel_stats(state: CustomerState, s: int) -> dict[str, float | None]:
    def count(days: int, *kinds: str) -> int:
        return sum(_count(state.window_times[_KIND[kind]], s, days) for kind in kinds)

    def rate(numerator: str, denominator: str) -> float | None:
        return _ratio(count(90, numerator), count(90, denominator))

    return {
        "site_visit_count_7d": float(count(7, "site_visit")),
        "site_visit_count_30d": float(count(30, "site_visit")),
        "cart_add_count_30d": float(count(30, "cart_add")),
        "sends_30d": float(count(30, "email_send", "sms_send", "push_send")),
        "email_open_rate_90d": rate("email_open", "email_send"),
        "email_click_rate_90d": rate("email_click", "email_send"),
        "sms_click_rate_90d": rate("sms_click", "sms_send"),
        "push_open_rate_90d": rate("push_open", "push_send"),
        "email_sends_90d": float(count(90, "email_send")),
        "sms_sends_90d": float(count(90, "sms_send")),
        "push_sends_90d": float(count(90, "push_send")),
    }


def _interest_stats(state: CustomerState, s: int) -> dict[str, float | None]:
    """The open interest: the latest site_visit/cart_add, if within 90 days and no purchase
    came at or after it (a purchase at its very second converts it, as a visit at a purchase's
    second precedes it for the decide time). No state of its own: ``last_visit`` and
    ``last_purchase`` are kept for good, and a cart_add at ``last_visit`` is still in the
    window times when it counts: within 90 days of ``now``, so within HORIZON of the newest."""
    visit = state.last_visit
    if (
        visit is None
        or visit < s - 90 * DAY
        or (state.last_purchase is not None and state.last_purchase >= visit)
    ):
        return {"hours_since_open_interest": None, "open_interest_is_cart": None}
    carts = state.window_times[_CART_ADD]
    return {
        "hours_since_open_interest": (s - visit) / 3_600,
        "open_interest_is_cart": 1.0 if carts and carts[-1] == visit else 0.0,
    }


def _engagement_stats(state: CustomerState, s: int) -> dict[str, float | None]:
    if state.last_engagement is None:
        return {"days_since_last_engagement": None, "engagement_count_decayed": 0.0}
    age = s - state.last_engagement
    return {
        "days_since_last_engagement": age / DAY,
        "engagement_count_decayed": state.engagement_decayed * math.exp2(-age / COUNT_HALF_LIFE),
    }


def _histograms(state: CustomerState) -> dict[str, object]:
    """Normalised as the batch normalises (hour of day and day of week from the unnormalised
    week, then scaled); null before the first engagement, as no row exists then."""
    if not state.engagement_count:
        return dict.fromkeys(
            ("hist_hour_of_week", "hist_hour_of_day", "hist_day_of_week", "hist_event_count")
        )
    scale = 1.0 / state.histogram.sum()
    day_hour = state.histogram.reshape(7, 24)
    return {
        "hist_hour_of_week": (state.histogram * scale).astype(np.float32),
        "hist_hour_of_day": (day_hour.sum(axis=0) * scale).astype(np.float32),
        "hist_day_of_week": (day_hour.sum(axis=1) * scale).astype(np.float32),
        "hist_event_count": float(state.engagement_count),
    }


def whole_seconds(at: Instant, *, up: bool) -> int:
    """Whole Unix seconds: events round down (as the batch reads them), instants round up, so
    an event is before an instant exactly when its whole second is."""
    if isinstance(at, datetime):
        moment = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        return -((_EPOCH - moment) // _SECOND) if up else (moment - _EPOCH) // _SECOND
    if isinstance(at, int | np.integer):
        return int(at)
    return math.ceil(at) if up else math.floor(at)


def _amount(amount: float | None) -> float:
    """A purchase's amount (validated data always has one; a missing one adds nothing)."""
    return 0.0 if amount is None or math.isnan(amount) else float(amount)


# --- the encoding: version, header, then the variable parts ------------------------------------

VERSION = 1
_NONE = -(1 << 63)  # an absent time
_HEADER = struct.Struct("<6q3qd4d3q")


def to_bytes(state: CustomerState) -> bytes:
    """A compact encoding: times in windows as uint32 seconds before the newest event, the
    histogram sparse (slot, value) pairs, everything else exact (floats as float64)."""

    def opt(value: int | None) -> int:
        return _NONE if value is None else value

    header = _HEADER.pack(
        opt(state.signup),
        opt(state.first_event),
        opt(state.last_event),
        opt(state.last_purchase),
        opt(state.last_trip),
        opt(state.last_visit),
        state.purchase_count,
        state.tied_purchases,
        state.gap_count,
        state.amount_total,
        state.gap_first,
        state.gap_deviation_sum,
        state.gap_deviation_squares,
        state.engagement_decayed,
        opt(state.last_engaged),
        opt(state.last_engagement),
        state.engagement_count,
    )
    parts = [bytes([VERSION]), _text(state.customer_id), _text(state.time_zone), header]
    newest = state.last_event or 0
    for times in state.window_times:
        parts.append(_uint32s([newest - t for t in times]))
    parts.append(struct.pack(f"<{len(state.window_amounts)}d", *state.window_amounts))
    parts.append(_uint32s(state.decide_seconds))
    used = np.flatnonzero(state.histogram)
    parts.append(struct.pack("<I", len(used)) + used.astype("<u1").tobytes())
    parts.append(state.histogram[used].astype("<f8").tobytes())
    return b"".join(parts)


def from_bytes(data: bytes) -> CustomerState:
    """The state :func:`to_bytes` encoded; refuses an encoding of another version."""
    if not data or data[0] != VERSION:
        raise ValueError(f"live state encoding version {data[:1].hex() or 'none'}: expected {VERSION}")
    reader = _Reader(data, 1)
    customer_id, time_zone = reader.text(), reader.text()
    values = _HEADER.unpack_from(data, reader.offset)
    reader.offset += _HEADER.size

    def opt(value: int) -> int | None:
        return None if value == _NONE else value

    state = new_state(customer_id, time_zone, opt(values[0]))
    state.first_event, state.last_event = opt(values[1]), opt(values[2])
    state.last_purchase, state.last_trip, state.last_visit = opt(values[3]), opt(values[4]), opt(values[5])
    state.purchase_count, state.tied_purchases, state.gap_count = values[6:9]
    state.amount_total, state.gap_first = values[9], values[10]
    state.gap_deviation_sum, state.gap_deviation_squares, state.engagement_decayed = values[11:14]
    state.last_engaged, state.last_engagement = opt(values[14]), opt(values[15])
    state.engagement_count = values[16]
    newest = state.last_event or 0
    state.window_times = [[newest - ago for ago in reader.uint32s()] for _ in EVENT_TYPES]
    state.window_amounts = list(reader.unpack("d", len(state.window_times[_PURCHASE])))
    state.decide_seconds = list(reader.uint32s())
    used = reader.array("<u1")
    state.histogram[used] = reader.raw(len(used), "<f8")
    if reader.offset != len(data):
        raise ValueError(f"live state encoding: {len(data) - reader.offset} bytes left over")
    return state


def _text(value: str) -> bytes:
    encoded = value.encode()
    return struct.pack("<H", len(encoded)) + encoded


def _uint32s(values: list[int]) -> bytes:
    """A length-prefixed list of uint32 (struct, not numpy: these lists are short, and numpy's
    per-call cost dominated the encoding); refuses a value out of range, never wraps."""
    try:
        return struct.pack(f"<I{len(values)}I", len(values), *values)
    except struct.error as exc:
        raise ValueError(f"live state encoding: values out of range for uint32 ({exc})") from exc


@dataclass(slots=True)
class _Reader:
    data: bytes
    offset: int

    def text(self) -> str:
        (length,) = struct.unpack_from("<H", self.data, self.offset)
        self.offset += 2 + length
        return self.data[self.offset - length : self.offset].decode()

    def unpack(self, code: str, length: int) -> tuple[Any, ...]:
        values = struct.unpack_from(f"<{length}{code}", self.data, self.offset)
        self.offset += struct.calcsize(f"<{length}{code}")
        return values

    def uint32s(self) -> tuple[int, ...]:
        (length,) = struct.unpack_from("<I", self.data, self.offset)
        self.offset += 4
        return self.unpack("I", length)

    def array(self, dtype: str) -> npt.NDArray[np.generic]:
        (length,) = struct.unpack_from("<I", self.data, self.offset)
        self.offset += 4
        return self.raw(length, dtype)

    def raw(self, length: int, dtype: str) -> npt.NDArray[np.generic]:
        values = np.frombuffer(self.data, np.dtype(dtype), length, self.offset)
        self.offset += values.nbytes
        return values
