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
import operator
import struct
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

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
    The features are computed from the state's encoding (:func:`finalise_encoded`, what Score
    runs on a stored state), so the parity tests of this function cover that one too.
    """
    return finalise_encoded(to_bytes(state), now)


def finalise_encoded(data: bytes, now: Instant, *, after_newest: bool = False) -> dict[str, object]:
    """:func:`finalise` of the state :func:`to_bytes` encoded, read straight from the bytes
    (:func:`finalise_many` of one state)."""
    (features,) = finalise_many([data], now, after_newest=after_newest)
    return features


def finalise_many(
    encoded: Sequence[bytes], now: Instant, *, after_newest: bool = False
) -> list[dict[str, object]]:
    """:func:`finalise` of each state :func:`to_bytes` encoded, read straight from the bytes.

    Score runs this, so it builds no :class:`CustomerState` (decoding one and converting every
    kept time cost ~70 µs of a ~150 µs read): window counts are binary searches in the stored
    ages, the 90-day amount and the decide-time median read only the values they need, and the
    histograms are normalised in a few array operations. With ``after_newest``, an instant at
    or before a state's newest applied event (one timed ahead of the server clock within
    Ingest's skew) is moved to just after it, so such events count as just before ``now``;
    without, it raises as :func:`finalise` does. The histograms are views of one array shared
    by the call's states. :func:`finalise_columns` is the form for many states.
    """
    s = whole_seconds(now, up=True)
    parsed = [_parse(data, s, after_newest) for data in encoded]
    folded = _folded(encoded, parsed)
    finalised = []
    for i, (data, p) in enumerate(zip(encoded, parsed, strict=True)):
        features: dict[str, object] = dict(zip(_STATS_REFS, _stats(data, p), strict=True))
        if p.engagements:
            features.update((ref, folded[i, start:stop]) for ref, (start, stop) in HISTOGRAM_COLUMNS.items())
            features[_HISTOGRAM_REFS[-1]] = float(p.engagements)
        else:  # null before the first engagement, as no row exists then
            features.update(dict.fromkeys(_HISTOGRAM_REFS))
        finalised.append(features)
    return finalised


@dataclass(frozen=True)
class LiveColumns:
    """:func:`finalise` of n states as columns, row i state i: ``numbers[:, j]`` is feature
    ``NUMBER_REFS[j]`` (float64, NaN where finalise says None), ``time_zones`` the zones,
    ``histograms`` the three histograms side by side (float32, [n, 199]: week, hour of day,
    day of week; zeros where null) and ``engaged`` whether the histograms' row exists (null
    features before the first engagement)."""

    numbers: npt.NDArray[np.float64]
    time_zones: list[str]
    histograms: npt.NDArray[np.float32]
    engaged: npt.NDArray[np.bool_]


def finalise_columns(encoded: Sequence[bytes], now: Instant, *, after_newest: bool = False) -> LiveColumns:
    """:func:`finalise_many` as columns, for many states (ScoreBatch): each state's bytes are
    walked once in Python (header, lengths, decide-time median, the features of its header);
    the window counts and the 90-day amounts of all states come from a few array operations
    over all their kept times, where finalise_many binary-searches each state's sixteen times."""
    s = whole_seconds(now, up=True)
    n = len(encoded)
    if not n:
        return LiveColumns(
            np.empty((0, len(NUMBER_REFS))), [], np.empty((0, _FOLDED), np.float32), np.zeros(0, bool)
        )
    parsed = [_parse(data, s, after_newest) for data in encoded]
    # Every state's kept times in one array (each type's block: its uint32 length, then the
    # ages), each labelled with its (state, type) bin; the lengths go to one extra bin.
    lengths = np.array([p.lengths for p in parsed], dtype=np.int64)
    ages = np.frombuffer(
        b"".join(data[p.blocks[0] : p.amounts_at] for data, p in zip(encoded, parsed, strict=True)), "<u4"
    )
    bins = lengths.size
    sizes = np.stack([np.ones_like(lengths), lengths], axis=2)
    labels = np.stack([np.full_like(lengths, bins), np.arange(bins).reshape(lengths.shape)], axis=2)
    label = np.repeat(labels.ravel(), sizes.ravel())
    # The window [s − N days, s) holds the ages ≤ newest − s + N days (as in _stats).
    base = np.array([p.newest - p.s for p in parsed] + [0], dtype=np.int64)
    beyond = ages.astype(np.int64) - base[label // len(EVENT_TYPES)]
    c7, c30, c90 = (
        np.bincount(label, weights=beyond <= days * DAY, minlength=bins + 1)[:bins].reshape(lengths.shape)
        for days in (7, 30, 90)
    )
    # The 90-day amount: the newest ``recent`` of each state's purchase amounts, summed in order.
    purchases = lengths[:, _PURCHASE]
    amounts = np.frombuffer(
        b"".join(
            data[p.amounts_at : p.amounts_at + 8 * p.lengths[_PURCHASE]]
            for data, p in zip(encoded, parsed, strict=True)
        ),
        "<f8",
    )
    owner = np.repeat(np.arange(n), purchases)
    from_end = np.repeat(np.cumsum(purchases), purchases) - np.arange(len(amounts))  # 1: the newest
    kept = from_end <= c90[owner, _PURCHASE]
    amount_90d = np.bincount(owner[kept], weights=amounts[kept], minlength=n)
    sends_90d = c90[:, _SENDS]
    per_send = sends_90d[:, [0, 0, 1, 2]]  # email opens and clicks per email send, sms ..., push ...
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.where(per_send > 0, c90[:, _RESPONSES] / per_send, np.nan)
    numbers = np.empty((n, len(NUMBER_REFS)))
    numbers[:, _AT_COUNTS] = np.column_stack(
        [
            c7[:, _PURCHASE],
            c30[:, _PURCHASE],
            c90[:, _PURCHASE],
            amount_90d,
            c7[:, _SITE_VISIT],
            c30[:, _SITE_VISIT],
            c30[:, _CART_ADD],
            c30[:, _SENDS].sum(axis=1),
            rates,
            sends_90d,
        ]
    )
    numbers[:, _AT_OWN] = np.array([p.own for p in parsed], dtype=np.float64)
    engagements = np.array([p.engagements for p in parsed])
    engaged = engagements > 0
    numbers[:, _AT_EVENTS] = np.where(engaged, engagements, np.nan)
    folded = _folded(encoded, parsed)
    return LiveColumns(numbers, [p.time_zone for p in parsed], folded, engaged)


class _Parsed(NamedTuple):
    """One encoded state walked at whole second ``s`` (moved past its newest event when
    allowed): where its parts are, and the features its header and decide times give."""

    s: int
    newest: int  # the newest applied event (0: none); kept times are stored as ages before it
    time_zone: str
    lengths: list[int]  # kept times per event type (EVENT_TYPES order)
    blocks: list[int]  # where each type's block (uint32 length, then the ages) starts
    amounts_at: int  # where the purchases' amounts start (right after the last block)
    own: tuple[float | None, ...]  # the features at _AT_OWN, in that order
    histogram_at: int  # where the histogram's nonzero slots (uint8) start, then their weights (float64)
    used: int  # how many nonzero slots
    engagements: int


def _parse(data: bytes, s: int, after_newest: bool) -> _Parsed:
    """Walk one encoded state (see _Parsed). Raises ValueError for an encoding it cannot read,
    and for an instant not after the state's newest event unless ``after_newest``."""
    if not data or data[0] != VERSION:
        raise ValueError(f"live state encoding version {data[:1].hex() or 'none'}: expected {VERSION}")
    (id_length,) = _UINT16.unpack_from(data, 1)
    offset = 3 + id_length  # past the customer id
    (length,) = _UINT16.unpack_from(data, offset)
    time_zone = data[offset + 2 : offset + 2 + length].decode()
    offset += 2 + length
    (
        signup,
        first_event,
        last_event,
        last_purchase,
        _,
        last_visit,
        purchase_count,
        _,
        gap_count,
        amount_total,
        gap_first,
        gap_deviation_sum,
        gap_deviation_squares,
        engagement_decayed,
        _,
        last_engagement,
        engagement_count,
    ) = _HEADER.unpack_from(data, offset)
    offset += _HEADER.size
    if last_event != _NONE and s <= last_event:
        if not after_newest:
            raise ValueError(
                f"customer {data[3 : 3 + id_length].decode()}: finalise at {s} is not after the newest applied event "
                f"({last_event}); events at or after an instant never count"
            )
        s = last_event + 1
    newest = 0 if last_event == _NONE else last_event
    lengths, blocks = [], []
    for _ in EVENT_TYPES:
        (length,) = _UINT32.unpack_from(data, offset)
        lengths.append(length)
        blocks.append(offset)
        offset += 4 + 4 * length
    amounts_at = offset
    offset += 8 * lengths[_PURCHASE]
    (decided,) = _UINT32.unpack_from(data, offset)  # then the decide seconds, ascending
    decide_hours = None
    if decided:
        middle = decided // 2
        if decided % 2:
            (value,) = _UINT32.unpack_from(data, offset + 4 + 4 * middle)
            decide_hours = value / 3_600
        else:
            low, high = struct.unpack_from("<2I", data, offset + 4 * middle)  # [middle − 1], [middle]
            decide_hours = (low / 3_600 + high / 3_600) / 2
    offset += 4 + 4 * decided
    (used,) = _UINT32.unpack_from(data, offset)  # the histogram: its nonzero slots, their values
    histogram_at = offset + 4
    if histogram_at + 9 * used != len(data):
        raise ValueError(f"live state encoding: {len(data) - histogram_at - 9 * used} bytes left over")

    since_last = None if last_purchase == _NONE else (s - last_purchase) / DAY
    gap_mean = gap_first + gap_deviation_sum / gap_count if gap_count >= 1 else None
    gap_std = None
    if gap_count >= 2:
        variance = (gap_deviation_squares - gap_deviation_sum**2 / gap_count) / (gap_count - 1)
        gap_std = math.sqrt(max(variance, 0.0))
    # The open interest: the latest site_visit/cart_add, if within 90 days and no purchase came
    # at or after it (a purchase at its very second converts it). A cart_add at ``last_visit``
    # is still in the window when it counts: within 90 days of ``now``, so within HORIZON.
    interest_hours = is_cart = None
    if (
        last_visit != _NONE
        and last_visit >= s - 90 * DAY
        and not (last_purchase != _NONE and last_purchase >= last_visit)
    ):
        carts = lengths[_CART_ADD]
        interest_hours = (s - last_visit) / 3_600
        newest_cart = _UINT32.unpack_from(data, blocks[_CART_ADD] + 4 * carts)[0] if carts else None
        is_cart = 1.0 if newest_cart is not None and newest - newest_cart == last_visit else 0.0
    engaged_age = None if last_engagement == _NONE else s - last_engagement
    # The earlier of signup and first event (_NONE when neither is known).
    appeared = signup if first_event == _NONE or (signup != _NONE and signup < first_event) else first_event
    own = (
        float(purchase_count),
        since_last,
        _ratio(amount_total, purchase_count),
        gap_mean,
        gap_std,
        None if since_last is None or gap_mean is None else _ratio(since_last, gap_mean),
        decide_hours,
        None if engaged_age is None else engaged_age / DAY,
        0.0 if engaged_age is None else engagement_decayed * math.exp2(-engaged_age / COUNT_HALF_LIFE),
        interest_hours,
        is_cart,
        (s - appeared) / DAY if appeared != _NONE and appeared < s else None,
    )
    return _Parsed(
        s, newest, time_zone, lengths, blocks, amounts_at, own, histogram_at, used, engagement_count
    )


def _stats(data: bytes, p: _Parsed) -> tuple[object, ...]:
    """One state's stats features (in _STATS_REFS order): the window counts by binary search in
    its kept ages, the 90-day amount from the amounts it needs."""
    ages = [
        struct.unpack_from(f"<{length}I", data, at + 4)
        for length, at in zip(p.lengths, p.blocks, strict=True)
    ]
    # The window [s − N days, s) holds the times t ≥ s − N days, i.e. the ages ≤ newest − s + N days.
    base = p.newest - p.s

    def count(kind: int, days: int) -> int:
        kept = ages[kind]  # oldest first: descending ages
        return len(kept) - bisect.bisect_left(kept, -(base + days * DAY), key=operator.neg)

    purchases = p.lengths[_PURCHASE]
    recent = count(_PURCHASE, 90)
    # Summed in order, one at a time (as finalise_columns sums them; sum() compensates from 3.12).
    newest_amounts = struct.unpack_from(f"<{recent}d", data, p.amounts_at + 8 * (purchases - recent))
    amount_90d = functools.reduce(operator.add, newest_amounts, 0.0)
    sends_90d = [count(kind, 90) for kind in _SENDS]
    opened = [count(kind, 90) for kind in _RESPONSES]
    (
        total,
        since_last,
        avg,
        gap_mean,
        gap_std,
        cycle,
        decide,
        engaged_days,
        decayed,
        interest,
        cart,
        tenure,
    ) = p.own
    return (
        float(count(_PURCHASE, 7)),
        float(count(_PURCHASE, 30)),
        float(recent),
        total,
        since_last,
        amount_90d,
        avg,
        gap_mean,
        gap_std,
        cycle,
        decide,
        float(count(_SITE_VISIT, 7)),
        float(count(_SITE_VISIT, 30)),
        float(count(_CART_ADD, 30)),
        float(sum(count(kind, 30) for kind in _SENDS)),
        _ratio(opened[0], sends_90d[0]),  # email opens per email send
        _ratio(opened[1], sends_90d[0]),  # email clicks per email send
        _ratio(opened[2], sends_90d[1]),  # sms clicks per sms send
        _ratio(opened[3], sends_90d[2]),  # push opens per push send
        *map(float, sends_90d),
        engaged_days,
        decayed,
        interest,
        cart,
        tenure,
        p.time_zone,
    )


_SENDS = [_KIND["email_send"], _KIND["sms_send"], _KIND["push_send"]]
_RESPONSES = [_KIND[name] for name in ("email_open", "email_click", "sms_click", "push_open")]
_UINT16, _UINT32 = struct.Struct("<H"), struct.Struct("<I")
# The stats features in finalise's order, each with where finalise_columns takes it from: the
# window counts of all states at once (_COUNTED, in this order too) or _parse (_Parsed.own).
_COUNTED, _OWN = True, False
_STATS = (
    ("purchase_count_7d", _COUNTED),
    ("purchase_count_30d", _COUNTED),
    ("purchase_count_90d", _COUNTED),
    ("purchase_count_total", _OWN),
    ("days_since_last_purchase", _OWN),
    ("amount_total_90d", _COUNTED),
    ("amount_avg", _OWN),
    ("gap_mean_days", _OWN),
    ("gap_std_days", _OWN),
    ("cycle_ratio", _OWN),
    ("decide_time_hours", _OWN),
    ("site_visit_count_7d", _COUNTED),
    ("site_visit_count_30d", _COUNTED),
    ("cart_add_count_30d", _COUNTED),
    ("sends_30d", _COUNTED),
    ("email_open_rate_90d", _COUNTED),
    ("email_click_rate_90d", _COUNTED),
    ("sms_click_rate_90d", _COUNTED),
    ("push_open_rate_90d", _COUNTED),
    ("email_sends_90d", _COUNTED),
    ("sms_sends_90d", _COUNTED),
    ("push_sends_90d", _COUNTED),
    ("days_since_last_engagement", _OWN),
    ("engagement_count_decayed", _OWN),
    ("hours_since_open_interest", _OWN),
    ("open_interest_is_cart", _OWN),
    ("tenure_days", _OWN),
)
_STATS_REFS = (*(f"{STATS}:{name}" for name, _ in _STATS), f"{STATS}:time_zone")
_HISTOGRAM_REFS = tuple(
    f"{HISTOGRAMS}:{name}"
    for name in ("hist_hour_of_week", "hist_hour_of_day", "hist_day_of_week", "hist_event_count")
)
# Every feature :func:`finalise` returns, by reference.
FEATURE_REFS = frozenset(_STATS_REFS + _HISTOGRAM_REFS)
# finalise_columns' numbers: every feature but the time zone and the three histograms.
NUMBER_REFS = (*_STATS_REFS[:-1], _HISTOGRAM_REFS[-1])
# Where in NUMBER_REFS (which starts with _STATS' features): those the window counts give (in
# finalise_columns' order), those _parse gives (_Parsed.own, in order), and the engagement count.
_AT_COUNTS = [i for i, (_, counted) in enumerate(_STATS) if counted]
_AT_OWN = [i for i, (_, counted) in enumerate(_STATS) if not counted]
_AT_EVENTS = len(NUMBER_REFS) - 1


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _folded(encoded: Sequence[bytes], parsed: Sequence[_Parsed]) -> npt.NDArray[np.float32]:
    """Each state's histograms, a row each, from its week's nonzero slots and their weights:
    the week's 168 slots, hour of day (24), day of week (7), normalised as the batch normalises
    them (hour of day and day of week summed from the unnormalised week, then scaled; a week of
    zeros, before the first engagement, stays zeros). All the states' weeks as one matrix: a
    few numpy calls whatever their number."""
    n = len(parsed)
    folded = np.zeros((n, _FOLDED))
    week = folded[:, :HOURS_PER_WEEK]
    if n == 1:  # Score's read: the week straight from the state's bytes, no join (~4 µs less)
        data, p = encoded[0], parsed[0]
        week[0, np.frombuffer(data, np.uint8, p.used, p.histogram_at)] = np.frombuffer(
            data, "<f8", p.used, p.histogram_at + p.used
        )
    else:
        pairs = list(zip(encoded, parsed, strict=True))
        slots = np.frombuffer(
            b"".join(d[p.histogram_at : p.histogram_at + p.used] for d, p in pairs), np.uint8
        )
        weights = np.frombuffer(
            b"".join(d[p.histogram_at + p.used : p.histogram_at + 9 * p.used] for d, p in pairs), "<f8"
        )
        week[np.repeat(np.arange(n), [p.used for p in parsed]), slots] = weights
    day_hour = week.reshape(n, 7, 24)
    day_hour.sum(axis=1, out=folded[:, HOURS_PER_WEEK:_DAY_OF_WEEK])
    day_hour.sum(axis=2, out=folded[:, _DAY_OF_WEEK:])
    folded *= 1.0 / np.maximum(folded[:, _DAY_OF_WEEK:].sum(axis=1, keepdims=True), _TINY)
    return folded.astype(np.float32)


_DAY_OF_WEEK = HOURS_PER_WEEK + 24  # where a folded row's day-of-week sums start
_FOLDED = _DAY_OF_WEEK + 7
# Where each histogram is in LiveColumns.histograms' rows: [start, stop).
HISTOGRAM_COLUMNS = {
    _HISTOGRAM_REFS[0]: (0, HOURS_PER_WEEK),
    _HISTOGRAM_REFS[1]: (HOURS_PER_WEEK, _DAY_OF_WEEK),
    _HISTOGRAM_REFS[2]: (_DAY_OF_WEEK, _FOLDED),
}
_TINY = np.finfo(np.float64).tiny


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
