"""The send-time policy column-wise: n customers planned in array operations.

The rules are :mod:`service.policy`'s (read there: candidates, the best hour, SEND_NOW /
SCHEDULE / SUPPRESS and their reasons, reminders, channels); this is their form for many
customers at once. :func:`plan_columns` plans customers given as columns (:class:`PlanInputs`)
into columns (:class:`Plans`): checks, decisions, reminders (:func:`service.reminders.plan_reminders`)
and channel rankings are array operations over groups of customers who share a zone, a sendable
window and quiet hours (an audience or a batch scored as of one time is a handful of such
groups), so a million customers cost numpy work per group, not Python per customer. The Python
left per customer is formatting the sentences (the per-customer policy's own functions make
them) and, for the rare customer whose input is refused, the per-customer checks that name why.

ScoreBatch and ``nudge score-audience`` use it; a single Score keeps the per-customer policy,
which costs less for one customer (0.15 ms against 0.37 ms here, in-process: this form makes
a few hundred numpy calls whatever n is). tests/unit/test_policy_columns.py holds the two
equal on random customers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from nudge.contract.channel_model import CHANNEL_NAMES, ChannelModel
from nudge.contract.week import EPOCH_HOUR, HOURS_PER_WEEK, hour_of_week
from service.policy import (
    ONE_US,
    ChannelChoice,
    Decision,
    PlanQuery,
    PolicyConfig,
    PolicyInputError,
    Reminder,
    ScoredSlot,
    SendPlan,
    allowed_hours,
    check_query,
    decide,
    probabilities_problem,
    suppress_reason,
    to_datetime,
)
from service.reminders import Reminders, plan_reminders
from service.zones import (
    TABLE_END_S,
    TABLE_START_S,
    ZoneTable,
    candidate_hours,
    known_zone_table,
    local_time,
    zone_table,
)

FloatArray = npt.NDArray[np.floating[Any]]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]

# Plans.decision holds each customer's decision as its index here.
DECISIONS = (Decision.SEND_NOW, Decision.SCHEDULE, Decision.SUPPRESS)
_SEND_NOW, _SCHEDULE, _SUPPRESS = range(3)


@dataclass(frozen=True)
class PlanInputs:
    """n customers' inputs to :func:`plan_columns`, one entry per customer in each column.

    Times are µs since the epoch; ``quiet`` holds local (start, end) hours, (-1, -1) for none;
    ``dormant_days`` is NaN for a customer who never engaged (not dormant); the open interest's
    age (hours, as of now) is NaN when there is none, ``decide_hours`` NaN when the customer has
    no decide-time samples; channel rates NaN and sends 0 (or NaN) when unknown; ``channel`` the
    index in CHANNEL_NAMES of the only channel to answer for, -1 for all.
    """

    propensity: FloatArray
    zone: Sequence[str | None]
    now_us: IntArray
    window_start_us: IntArray
    window_end_us: IntArray
    dormant_days: FloatArray
    quiet: IntArray  # (n, 2)
    interest_hours: FloatArray
    interest_is_cart: BoolArray
    decide_hours: FloatArray
    channel_rates: FloatArray  # (n, 3), CHANNELS order
    channel_sends: FloatArray  # (n, 3)
    channel: IntArray

    def __len__(self) -> int:
        return len(self.propensity)


@dataclass(frozen=True)
class Plans:
    """The plans of n customers as columns (row i is customer i); :meth:`send_plan` gives one
    as a :class:`SendPlan`. A row whose ``error`` is set has no plan (its other entries are
    meaningless). ``top_*``, ``channel_*`` have ``top_count`` and ``channel_count`` valid
    entries per row; ``channel_order`` lists channel indices best first, ``channel_p``,
    ``channel_us`` and ``channel_local`` are indexed by channel. Local times are ISO-8601 in
    the customer's zone."""

    error: ObjectArray  # str or None
    decision: npt.NDArray[np.int8]  # index in DECISIONS
    code: ObjectArray  # the decision's reason code
    reason: ObjectArray  # the decision's sentence
    best_us: IntArray
    best_local: ObjectArray  # None when suppressed
    zone: ObjectArray  # the zone planned in
    zone_defaulted: BoolArray
    top_us: IntArray  # (n, top_k)
    top_p: FloatArray
    top_count: IntArray
    reminders: Reminders
    reminder_local: ObjectArray
    channel_count: IntArray  # 0 (no channel model or no allowed hour), 1 (one asked for) or 3
    channel_order: IntArray  # (n, 3)
    channel_p: FloatArray  # (n, 3)
    channel_us: IntArray  # (n, 3)
    channel_local: ObjectArray  # (n, 3)
    channels_defaulted: BoolArray

    def send_plan(self, i: int) -> SendPlan:
        """Row ``i`` (which has no error) as a SendPlan."""
        zone = str(self.zone[i])
        tops = zip(self.top_us[i, : self.top_count[i]].tolist(), self.top_p[i].tolist(), strict=False)
        top_slots = tuple(ScoredSlot(to_datetime(us), p) for us, p in tops)
        decision = DECISIONS[self.decision[i]]
        suppressed = decision is Decision.SUPPRESS
        reminder = None
        if self.reminders.planned[i]:
            r = self.reminders
            reminder = Reminder(
                to_datetime(int(r.send_us[i])),
                str(self.reminder_local[i]),
                "cart_add" if r.is_cart[i] else "site_visit",
                to_datetime(int(r.interest_us[i])),
                float(r.decide_hours[i]),
                bool(r.decide_defaulted[i]),
                str(r.reason[i]),
            )
        channels = tuple(
            ChannelChoice(
                CHANNEL_NAMES[c], float(self.channel_p[i, c]), to_datetime(int(self.channel_us[i, c])), local
            )
            for c in self.channel_order[i, : self.channel_count[i]].tolist()
            if (local := self.channel_local[i, c]) is not None
        )
        return SendPlan(
            None if suppressed else to_datetime(int(self.best_us[i])),
            None if suppressed else self.best_local[i],
            zone,
            bool(self.zone_defaulted[i]),
            top_slots,
            decision,
            str(self.reason[i]),
            (self.code[i], "reminder_planned") if reminder is not None else (self.code[i],),
            reminder,
            channels,
            bool(self.channels_defaulted[i]),
        )


def plan_columns(
    hour_probs: npt.NDArray[np.floating],
    inputs: PlanInputs,
    config: PolicyConfig,
    channel_model: ChannelModel | None = None,
    errors: ObjectArray | None = None,
) -> Plans:
    """Plan n customers at once (``hour_probs[i]`` is customer i's 168 local-hour-of-week
    probabilities, Monday 00:00 local = 0).

    For each customer: candidates are the local hours overlapping [max(window_start, now),
    window_end) outside quiet hours; the best is the most probable, ties to the earliest.
    SEND_NOW when it is the hour in progress now, SCHEDULE at its start otherwise, SUPPRESS when
    propensity is below ``config.min_propensity``, the customer is dormant, the window is over
    or no hour is allowed (the first that applies is the reason). A customer with an open
    interest gets a reminder (service/reminders.py), and with a ``channel_model`` the channels
    are ranked by the probability of engagement at each one's best allowed hour.

    A customer whose input cannot be planned for gets the reason in ``error`` (``errors`` may
    bring reasons found before, which take precedence); the checks run in plan_send's order.
    """
    n = len(inputs)
    error = _checked(hour_probs, inputs, config, errors)
    k = config.top_k
    plans = Plans(
        error=error,
        decision=np.full(n, _SUPPRESS, dtype=np.int8),
        code=np.full(n, None, dtype=object),
        reason=np.full(n, None, dtype=object),
        best_us=np.zeros(n, dtype=np.int64),
        best_local=np.full(n, None, dtype=object),
        zone=np.full(n, None, dtype=object),
        zone_defaulted=np.zeros(n, dtype=np.bool_),
        top_us=np.zeros((n, k), dtype=np.int64),
        top_p=np.zeros((n, k)),
        top_count=np.zeros(n, dtype=np.int64),
        reminders=Reminders.empty(n),
        reminder_local=np.full(n, None, dtype=object),
        channel_count=np.zeros(n, dtype=np.int64),
        channel_order=np.zeros((n, 3), dtype=np.int64),
        channel_p=np.zeros((n, 3)),
        channel_us=np.zeros((n, 3), dtype=np.int64),
        channel_local=np.full((n, 3), None, dtype=object),
        channels_defaulted=np.zeros(n, dtype=np.bool_),
    )
    valid = np.flatnonzero(no_error(error))
    if len(valid):
        _plan_valid(hour_probs, inputs, valid, config, channel_model, plans)
    return plans


def _checked(
    hour_probs: npt.NDArray[np.floating], inputs: PlanInputs, config: PolicyConfig, given: ObjectArray | None
) -> ObjectArray:
    """Each customer's input problem, or None. Found as arrays; a customer some check refuses
    is then checked by the per-customer policy, whose message (the first check that fails, in
    its order) is the answer, as a Score's would be."""
    n = len(inputs)
    error = np.full(n, None, dtype=object) if given is None else given.copy()
    start, end = inputs.window_start_us, inputs.window_end_us
    problem = probabilities_problem(hour_probs, (n, HOURS_PER_WEEK))
    p, days, quiet = inputs.propensity, inputs.dormant_days, inputs.quiet
    suspect = (
        (end <= start)
        | (end - start > config.max_window // ONE_US)
        | (start < TABLE_START_S * 1_000_000)
        | (end > TABLE_END_S * 1_000_000)
        | ~((p >= 0.0) & (p <= 1.0))
        | (days < 0)
        | ((quiet[:, 0] >= 0) & (quiet.max(axis=1) > 23))
    )
    # NaN fails both; the whole matrix first (one contiguous pass), rows only when it fails.
    if problem is None and n and not (hour_probs.min() >= 0.0 and hour_probs.max() <= 1.0):
        suspect |= ~((hour_probs.min(axis=1) >= 0.0) & (hour_probs.max(axis=1) <= 1.0))
    elif problem is not None:
        suspect[:] = True
    for i in np.flatnonzero(suspect & no_error(error)).tolist():
        days_i = float(days[i])
        query = PlanQuery(
            float(p[i]),
            inputs.zone[i],
            to_datetime(int(inputs.now_us[i])),
            to_datetime(int(start[i])),
            to_datetime(int(end[i])),
            None if math.isnan(days_i) else days_i,
            None if quiet[i, 0] < 0 else (int(quiet[i, 0]), int(quiet[i, 1])),
        )
        try:
            check_query(query, None if problem else hour_probs[i], problem, config)
        except PolicyInputError as exc:
            error[i] = str(exc)
    return error


def no_error(error: ObjectArray) -> BoolArray:
    """Which rows of an error column (a message or None per row) have no error."""
    return np.array([e is None for e in error.tolist()], dtype=np.bool_)


def _zones(
    zones: Sequence[str | None], rows: IntArray, config: PolicyConfig
) -> tuple[list[tuple[ZoneTable, bool]], IntArray]:
    """Each distinct zone name resolved once: (table, defaulted) per code, and each row's code
    (the default zone's table stands in, flagged, for a missing or unknown name)."""
    codes: dict[str | None, int] = {}
    zone_of = np.zeros(len(zones), dtype=np.int64)
    if len(rows) == len(zones):
        zone_of[:] = [codes.setdefault(z, len(codes)) for z in zones]
    else:
        zone_of[rows] = [codes.setdefault(zones[i], len(codes)) for i in rows.tolist()]
    default = zone_table(config.default_zone)
    tables = []
    for name in codes:
        table = None if name is None else known_zone_table(name)
        tables.append((default, True) if table is None else (table, False))
    return tables, zone_of


def _groups(
    rows: IntArray, zone_of: IntArray, start: IntArray, end: IntArray, quiet: IntArray
) -> list[IntArray]:
    """``rows`` split by (zone, sendable window, quiet hours), in order within each group."""
    if len(rows) == 1:
        return [rows]
    keys = (quiet[rows], end[rows], start[rows], zone_of[rows])
    order = np.lexsort(keys)
    sorted_rows = rows[order]
    change = np.zeros(len(rows), dtype=np.bool_)
    for key in keys:
        ordered = key[order]
        change[1:] |= ordered[1:] != ordered[:-1]
    return np.split(sorted_rows, np.flatnonzero(change))


@dataclass(frozen=True)
class _Candidates:
    """The allowed candidate hours of the rows planned, one row each, padded to the longest:
    UTC starts (µs; pads sort after every real one), local hours, hour-of-week slots, how many
    are real, and each one's id among every group's candidates (for its local time)."""

    starts: IntArray  # (m, K)
    hours: IntArray
    slots: IntArray
    count: IntArray  # (m,)
    ids: IntArray  # (m, K)
    every_start: IntArray  # all groups' candidates, by id
    every_table: list[ZoneTable]  # per id


_PAD = np.iinfo(np.int64).max


def _candidates(inputs: PlanInputs, rows: IntArray, config: PolicyConfig, plans: Plans) -> _Candidates:
    """Each row's candidates: found once per group of rows sharing a zone, sendable window and
    quiet hours (:func:`service.zones.candidate_hours`), laid out a group each, then a row
    each by one gather per matrix (ScoreBatch(100) has ~12 groups: per-group assignments into
    the rows' matrices cost ~2 µs each); also sets the rows' zone in ``plans``."""
    tables, zone_of = _zones(inputs.zone, rows, config)
    start = np.maximum(inputs.window_start_us, inputs.now_us)  # only the future part is sendable
    end = inputs.window_end_us
    quiet_code = inputs.quiet[:, 0] * 24 + inputs.quiet[:, 1]  # negative: none
    groups = _groups(rows, zone_of, start, end, quiet_code)
    found = []  # per group: its table and its candidates' UTC starts (µs) and hours since the epoch
    for members in groups:
        first = int(members[0])
        table, defaulted = tables[zone_of[first]]
        starts = epoch_hours = np.empty(0, dtype=np.int64)
        if start[first] < end[first]:
            starts, epoch_hours = candidate_hours(table, int(start[first]), int(end[first]))
            quiet = inputs.quiet[first].tolist()
            if quiet[0] >= 0:
                allowed = allowed_hours((quiet[0], quiet[1]))[epoch_hours % 24]
                starts, epoch_hours = starts[allowed], epoch_hours[allowed]
        found.append((table, defaulted, starts, epoch_hours))
    counts = np.array([len(starts) for _, _, starts, _ in found], dtype=np.int64)
    width = max(1, int(counts.max()))
    group_starts = np.full((len(found), width), _PAD, dtype=np.int64)
    group_hours = np.zeros((len(found), width), dtype=np.int64)  # since the epoch; pads 0
    for g, (_, _, starts, epoch_hours) in enumerate(found):
        group_starts[g, : len(starts)] = starts
        group_hours[g, : len(starts)] = epoch_hours
    real = np.arange(width) < counts[:, np.newaxis]
    ids = np.where(real, (np.cumsum(counts) - counts)[:, np.newaxis] + np.arange(width), 0)
    # Each row's group, in the rows' order (groups hold positions in ``inputs``).
    where = np.empty(len(inputs), dtype=np.int64)
    where[rows] = np.arange(len(rows))
    group_of = np.empty(len(rows), dtype=np.int64)
    group_of[where[np.concatenate(groups)]] = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    plans.zone[rows] = np.array([table.zone.key for table, _, _, _ in found], dtype=object)[group_of]
    plans.zone_defaulted[rows] = np.array([defaulted for _, defaulted, _, _ in found])[group_of]
    return _Candidates(
        starts=group_starts[group_of],
        hours=(group_hours % 24)[group_of],
        slots=np.where(real, hour_of_week(group_hours + EPOCH_HOUR), 0)[group_of],
        count=counts[group_of],
        ids=ids[group_of],
        every_start=group_starts[real],
        every_table=[table for table, _, starts, _ in found for _ in range(len(starts))],
    )


def _plan_valid(
    hour_probs: npt.NDArray[np.floating],
    inputs: PlanInputs,
    rows: IntArray,
    config: PolicyConfig,
    channel_model: ChannelModel | None,
    plans: Plans,
) -> None:
    """Plan ``rows`` (customers whose inputs passed the checks) into ``plans``, all at once over
    the padded matrix of their candidate hours."""
    m = len(rows)
    c = _candidates(inputs, rows, config, plans)
    real = np.arange(c.starts.shape[1]) < c.count[:, None]
    probs = hour_probs[rows[:, np.newaxis], c.slots]  # [customer, candidate]
    # A stable sort on descending probability keeps ties in time order; pads sort last.
    order = np.where(real, -probs, np.inf).argsort(axis=1, kind="stable")[:, : config.top_k]
    top = order.shape[1]
    everyone = np.arange(m)[:, np.newaxis]
    top_p = probs[everyone, order]
    plans.top_us[rows, :top] = c.starts[everyone, order]
    plans.top_p[rows, :top] = top_p
    plans.top_count[rows] = np.minimum(c.count, top)
    best, best_p = order[:, 0], top_p[:, 0]
    best_us, now_us = c.starts[everyone[:, 0], best], inputs.now_us[rows]
    plans.best_us[rows] = best_us
    propensity, dormant = inputs.propensity[rows], inputs.dormant_days[rows]
    window_over = np.maximum(inputs.window_start_us, inputs.now_us)[rows] >= inputs.window_end_us[rows]
    # Why not to message at all (0: none; else 1 + the place of the first of suppress_reason's
    # rules that applies).
    why = np.select(
        [propensity < config.min_propensity, dormant > config.max_dormant_days, window_over, c.count == 0],
        [1, 2, 3, 4],
        0,
    )
    suppressed = why > 0
    decision = np.where(suppressed, _SUPPRESS, np.where(best_us == now_us, _SEND_NOW, _SCHEDULE))
    plans.decision[rows] = decision
    needed = [c.ids[everyone[:, 0], best][~suppressed]]
    shown = c.count > 0  # rows with an allowed hour: they get channels and may get a reminder
    channel_slots = None
    if channel_model is not None and shown.any():
        channel_slots = _channels(channel_model, inputs, rows[shown], probs[shown], c, shown, real, plans)
        needed.append(c.ids[np.flatnonzero(shown)[:, np.newaxis], channel_slots].ravel())
    reminders = plan_reminders(
        np.where(suppressed, np.nan, inputs.interest_hours[rows]),  # never when suppressed
        inputs.interest_is_cart[rows],
        inputs.decide_hours[rows],
        now_us,
        c.starts,
        c.count,
        probs,
        config.default_decide_hours,
    )
    plans.reminders.assign(rows, reminders)
    reminder_ids = c.ids[everyone[:, 0], reminders.candidate]
    needed.append(reminder_ids[reminders.planned])
    local = _local_times(c, np.concatenate(needed))
    best_local = local[c.ids[everyone[:, 0], best]]
    plans.best_local[rows] = _where(~suppressed, best_local)
    plans.reminder_local[rows] = _where(reminders.planned, local[reminder_ids])
    if channel_slots is not None:
        plans.channel_local[rows[shown]] = local[c.ids[np.flatnonzero(shown)[:, np.newaxis], channel_slots]]
    plans.code[rows], plans.reason[rows] = _sentences(
        why, decision, propensity, dormant, best_p, best_local, inputs.quiet[rows], config
    )


def _where(keep: BoolArray, values: ObjectArray) -> ObjectArray:
    """``values`` where ``keep``, None elsewhere."""
    out = values.copy()
    out[~keep] = None
    return out


def _sentences(
    why: IntArray,
    decision: npt.NDArray[np.integer[Any]],
    propensity: FloatArray,
    dormant: FloatArray,
    best_p: FloatArray,
    best_local: ObjectArray,
    quiet: IntArray,
    config: PolicyConfig,
) -> tuple[list[str], list[str]]:
    """Each customer's decision code and sentence, made by the per-customer policy's functions
    (``why``: 0 not suppressed, else 1 + the index of the suppression rule that applies)."""
    codes, sentences = [], []
    p, days, bp, send_now = (
        propensity.tolist(),
        dormant.tolist(),
        best_p.tolist(),
        (decision == _SEND_NOW).tolist(),
    )
    for i, w in enumerate(why.tolist()):
        if w:
            d = None if math.isnan(days[i]) else days[i]
            # suppress_reason applies its rules in order: the inputs make rule ``w`` the first.
            hours = (int(quiet[i, 0]), int(quiet[i, 1])) if w == 4 else None  # only all-quiet says them
            found = suppress_reason(p[i], d, w == 3, hours, w != 4, config)
            assert found is not None
            code, sentence = found
        else:
            _, code, sentence = decide(send_now[i], best_local[i], bp[i])
        codes.append(code)
        sentences.append(sentence)
    return codes, sentences


def _local_times(c: _Candidates, needed: IntArray) -> ObjectArray:
    """The local time (ISO-8601 in its zone) of each ``needed`` candidate id, made once each.
    At least one slot: rows without candidates carry the pad id 0 (their times are masked by
    the callers), which must index even when no row has a candidate."""
    local = np.full(max(1, len(c.every_start)), None, dtype=object)
    chosen = np.unique(needed)
    local[chosen] = [
        local_time(c.every_table[i].zone.key, us)
        for i, us in zip(chosen.tolist(), c.every_start[chosen].tolist(), strict=True)
    ]
    return local


def _channels(
    model: ChannelModel,
    inputs: PlanInputs,
    rows: IntArray,
    probs: FloatArray,
    c: _Candidates,
    shown: BoolArray,
    real: BoolArray,
    plans: Plans,
) -> IntArray:
    """Rank the channels of ``rows`` (customers with an allowed hour) by the probability of
    engagement at each channel's best allowed slot (one model call) into ``plans``; returns
    those slots' candidate indices, (m, 3) in channel order. A row's pads repeat its first
    candidate, so they tie with it and lose (the model's argmax takes the first)."""
    real = real[shown]
    probs = np.where(real, probs, probs[:, :1])
    hours = np.where(real, c.hours[shown], c.hours[shown][:, :1])
    rates, sends = inputs.channel_rates[rows], inputs.channel_sends[rows]
    if len(rows) == 1:  # one customer: the model's plain-Python form, as a Score's
        index, p = model.best_one(rates[0].tolist(), sends[0].tolist(), probs[0].tolist(), hours[0].tolist())
        best, engaged = np.array([index]), np.array([p])
    else:
        best, engaged = model.best(rates, sends, probs, hours)
    order = (-engaged).argsort(axis=1, kind="stable")  # ties in channel order
    wanted = inputs.channel[rows]
    asked = wanted >= 0
    order[asked, 0] = wanted[asked]
    plans.channel_order[rows] = order
    plans.channel_count[rows] = np.where(asked, 1, len(CHANNEL_NAMES))
    plans.channel_p[rows] = engaged
    plans.channel_us[rows] = np.take_along_axis(c.starts[shown], best, axis=1)
    plans.channels_defaulted[rows] = ChannelModel.cold_start(sends)
    return best
