"""``nudge evaluate-policy``: what nudge's decisions are worth, with the simulator as the world.

    nudge evaluate-policy --plan plan.parquet --truth data/truth.parquet --events data/events.parquet \\
        --customers data/customers.parquet --report models/report.json [--seed 0]

One campaign day: every customer of ``plan.parquet`` (written by ``nudge score-audience`` at
``--as-of T``) who has a truth row gets at most one message in [T, T + the plan's window). Each
policy says whether, on which channel and at which instant; the simulator's truth says what
that is worth, exactly, in expectation:

* **P(engaged)** of a message on channel c sent at an instant whose local hour-of-week slot (in
  the customer's true zone) is s: :func:`training.simulate.true_engagement_probability`, the
  chance the simulator draws each send's open (email, push) or click (sms) with.
* **Purchases within H caused by the message** (H = the propensity horizon of the models'
  report): an engagement starts a Poisson burst of purchases of mass m_c, spread in the
  customer's operational time u (168 × hour_probs[slot] operational hours per real hour) with
  density exp(−u/decay)/decay, so

      E[purchases within H] = P(engaged) × m_c × (1 − exp(−W/decay)) × alive,

  m_email = burst_open + click_given_open × burst_click (an open, and a click with chance
  click_given_open), m_sms = burst_click, m_push = burst_open; W = 168 × (Φ(a + 24 H) − Φ(a))
  the operational hours between the send's local time a (hours since a Monday 00:00) and H
  days later, Φ the customer's cumulative week of hour_probs (exactly 168 H / 7 when H is a
  whole number of weeks); alive = 0 for a customer who went dormant at or before T
  (``churn_timestamp``), else 1. Approximations: the open comes minutes after the send (taken
  as at the send), a DST change inside the H days is ignored, and so is the second-order effect
  of the caused purchase on the customer's own renewal cycle and on dormancy (churn_prob per
  purchase, ~2 %).
* In the simulator a dormant customer still opens and clicks (sends and responses ignore
  dormancy); they just never buy again. So dormancy costs purchases, not engagements.

The policies, each customer's message (channel, instant) in the window:

* ``nudge``: the plan's decision; SUPPRESS → no message, else the best channel (the first of
  the plan's ranked channels; EMAIL at best_send_time when the plan has none) at that channel's
  best send time.
* ``oracle``: the truly best (channel, local hour) of the day for each customer by P(engaged),
  within the hours the plan was allowed (its quiet hours), no suppression;
  ``oracle_matched``: the same, suppressing as many customers as nudge did, those with the
  lowest true value (expected purchases of their best message): suppression compared fairly.
* ``email_10``: everyone by email at 10:00 local.
* ``random``: a random local hour of the day and a random channel (seeded).
* ``modal``: each customer's modal local hour of their opens and clicks before T, on their
  most-engaged channel (most responses before T: email opens, sms clicks, push opens); ties
  and no history → email, 10:00.

Local hours of the policies are the customer's zone of ``--customers``; the truth's own zone
decides the slot the message lands in. Metrics per policy: messages, engagements (total and
per 1,000 messages), purchases within H caused (total and per 1,000), share suppressed,
channel hit@1 (the policy's channel is the oracle's), the channel mix and the share of messages
on a channel the customer never opted into (truth send rate 0; counted like any other here);
for nudge, the cost of suppression: the engagements and purchases the suppressed customers
would have given at nudge's own best (channel, slot). Floors (issue 12): nudge ≥ 1.3 ×
email_10 and ≥ 0.85 × oracle in engagements per 1,000 messages, and channel hit@1 above both
channel baselines (email_10: always email, modal: the customer's most-engaged channel).

The result is the ``policy`` block of report.json; report.html gets a table and a bar chart.
Only simulated data has a truth: a purchases-only data set cannot be evaluated this way.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nudge.contract.channel_model import CHANNEL_NAMES, CHANNELS, RESPONSES
from nudge.contract.week import HOURS_PER_WEEK
from nudge.inputs import UserError, check, missing_input, user_errors
from training.simulate import true_engagement_probability, true_hour_probs

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DEFAULT_CHANNEL, DEFAULT_HOUR = 0, 10  # email at 10:00 local
RESPONSE_EVENTS = {"email_open": 0, "sms_click": 1, "push_open": 2}  # one per engaged message
ENGAGEMENT_EVENTS = tuple(kind for kinds in RESPONSES.values() for kind in kinds)
FLOOR_VS_EMAIL_10 = 1.3
FLOOR_VS_ORACLE = 0.85
TRUTH_COLUMNS = (
    "customer_id",
    "time_zone",
    "hour_probs",
    "churn_timestamp",
    "burst_open",
    "burst_click",
    "burst_decay_hours",
    "click_given_open",
    *(f"response_{c}" for c in CHANNELS),
    *(f"send_rate_{c}" for c in CHANNELS),
)
POLICIES = {  # key: what it is (the report's labels)
    "nudge": "nudge: the plan's decision, best channel at its best send time",
    "oracle": "oracle: the truly best (channel, hour) of the day, no suppression",
    "oracle_matched": "oracle suppressing as many as nudge (lowest true value)",
    "email_10": "everyone by email at 10:00 local",
    "random": "random hour and channel",
    "modal": "modal hour of engagements on the most-engaged channel",
}


# --------------------------------------------------------------------------- the environment


@dataclass(frozen=True)
class Environment:
    """The truth of the customers evaluated (rows in ``customer_ids`` order) at the campaign's T."""

    truth: pd.DataFrame  # the customers' truth rows, in order
    customer_ids: npt.NDArray[np.object_]
    as_of: pd.Timestamp
    horizon_days: float
    mass: FloatArray  # (n, 3) expected purchases an engagement on each channel starts (whole burst)
    decay: FloatArray  # (n,) burst decay, operational hours
    alive: FloatArray  # (n,) 0 when dormant at or before T
    opted_in: BoolArray  # (n, 3) the truth's send rate > 0
    cumulative: FloatArray  # (n, 169) cumulative hour_probs over the week, from 0 to 1

    @classmethod
    def build(
        cls, truth: pd.DataFrame, customer_ids: npt.ArrayLike, as_of: pd.Timestamp, horizon_days: float
    ) -> Environment:
        ids = np.asarray(customer_ids, dtype=object)
        index = pd.Index(truth["customer_id"]).get_indexer(pd.Index(ids))
        if np.any(index < 0):
            raise ValueError(f"customers absent from truth, e.g. {ids[index < 0][0]!r}")
        rows = truth.iloc[index].reset_index(drop=True)
        q = rows["click_given_open"].to_numpy(np.float64)
        burst_open = rows["burst_open"].to_numpy(np.float64)
        burst_click = rows["burst_click"].to_numpy(np.float64)
        churn = pd.to_datetime(rows["churn_timestamp"], utc=True)
        cumulative = np.zeros((len(rows), HOURS_PER_WEEK + 1))
        cumulative[:, 1:] = np.cumsum(true_hour_probs(rows), axis=1)
        cumulative[:, -1] = 1.0
        return cls(
            truth=rows,
            customer_ids=ids,
            as_of=as_of,
            horizon_days=float(horizon_days),
            mass=np.column_stack([burst_open + q * burst_click, burst_click, burst_open]),
            decay=rows["burst_decay_hours"].to_numpy(np.float64),
            alive=(churn.isna() | (churn > as_of)).to_numpy(np.float64),
            opted_in=np.column_stack([rows[f"send_rate_{c}"].to_numpy(np.float64) > 0 for c in CHANNELS]),
            cumulative=cumulative,
        )

    def __len__(self) -> int:
        return len(self.customer_ids)

    def operational_hours(self, local: FloatArray) -> FloatArray:
        """W: operational hours from local time ``local`` (n, k; hours since a Monday 00:00) to H
        days later: 168 × (Φ(a + 24 H) − Φ(a)), Φ the cumulative week (whole weeks count 1)."""
        return HOURS_PER_WEEK * (
            self._week_fraction(local + 24.0 * self.horizon_days) - self._week_fraction(local)
        )

    def _week_fraction(self, local: FloatArray) -> FloatArray:
        weeks = np.floor(local / HOURS_PER_WEEK)
        into = local - weeks * HOURS_PER_WEEK
        slot = np.minimum(into.astype(np.int64), HOURS_PER_WEEK - 1)
        rows = np.arange(len(self))[:, None]
        low, high = self.cumulative[rows, slot], self.cumulative[rows, slot + 1]
        return np.asarray(weeks + low + (high - low) * (into - slot))

    def outcome(self, channel: IntArray, utc_ns: IntArray) -> tuple[FloatArray, FloatArray]:
        """(P(engaged), expected purchases within H) of one message per customer, on ``channel``
        (index into CHANNELS) at ``utc_ns`` (UTC ns); rows with a negative channel are not
        messaged (both 0)."""
        sent = channel >= 0
        local = local_hours(utc_ns, self.zones)
        engaged, purchases = self.outcomes(local[:, None])
        pick = np.maximum(channel, 0)[:, None, None]
        p = np.take_along_axis(engaged, pick, axis=1)[:, 0, 0]
        b = np.take_along_axis(purchases, pick, axis=1)[:, 0, 0]
        return np.where(sent, p, 0.0), np.where(sent, b, 0.0)

    def outcomes(self, local: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(n, 3, k) P(engaged) and expected purchases within H for every channel and every
        local time of ``local`` (n, k; in the customer's true zone, hours since a Monday)."""
        slots = np.floor(local).astype(np.int64) % HOURS_PER_WEEK
        engaged = true_engagement_probability(self.truth, self.customer_ids, slots)
        fires = -np.expm1(-self.operational_hours(local) / self.decay[:, None])  # (n, k)
        purchases = engaged * self.mass[:, :, None] * fires[:, None, :] * self.alive[:, None, None]
        return engaged, purchases

    @property
    def zones(self) -> npt.NDArray[np.object_]:
        return np.asarray(self.truth["time_zone"], dtype=object)


def local_hours(utc_ns: IntArray, zones: npt.ArrayLike) -> FloatArray:
    """Local wall-clock hours since a Monday 00:00 of each instant in its zone (``% 168`` is the
    local hour-of-week slot, Monday 00h = 0)."""
    zones = np.asarray(zones, dtype=object)
    out = np.empty(len(utc_ns))
    monday = pd.Timestamp("1970-01-05").value  # a Monday, naive local
    for zone in pd.unique(zones):
        rows = np.flatnonzero(zones == zone)
        local = pd.DatetimeIndex(utc_ns[rows].astype("datetime64[ns]")).tz_localize("UTC").tz_convert(zone)
        out[rows] = (local.tz_localize(None).asi8 - monday) / 3.6e12
    return out


@dataclass(frozen=True)
class Candidates:
    """Each customer's sendable local hour starts in the window: UTC ns and local hour of day in
    the customer's known zone, padded to a common width (``valid`` marks the real ones)."""

    utc_ns: IntArray  # (n, k)
    hour: IntArray  # (n, k) local hour of day
    valid: BoolArray  # (n, k)

    def at_hour(self, hour: IntArray) -> IntArray:
        """Each customer's candidate at local hour ``hour`` (n,), else the first one after it."""
        distance = np.where(self.valid, (self.hour - hour[:, None]) % 24, 99)
        return np.asarray(np.take_along_axis(self.utc_ns, distance.argmin(axis=1)[:, None], axis=1)[:, 0])


def candidates(
    zones: npt.ArrayLike, start: pd.Timestamp, hours: float, quiet: tuple[int, int] | None = None
) -> Candidates:
    """The local hour starts within [start, start + hours) of each customer's zone (a 15-minute
    grid finds them in every zone used: whole, half- and quarter-hour offsets, DST days), less
    the local quiet hours [start, end) when given."""
    zones = np.asarray(zones, dtype=object)
    grid = start.value + np.arange(int(hours * 4)) * 900 * 10**9
    per_zone: dict[str, tuple[IntArray, IntArray]] = {}
    for zone in pd.unique(zones):
        local = pd.DatetimeIndex(grid.astype("datetime64[ns]")).tz_localize("UTC").tz_convert(zone)
        keep = np.asarray((local.minute == 0) & (local.second == 0))
        hour = np.asarray(local.hour)[keep]
        if quiet is not None and quiet[0] != quiet[1]:
            q0, q1 = quiet
            inside = (hour >= q0) & (hour < q1) if q0 < q1 else (hour >= q0) | (hour < q1)
            keep[np.flatnonzero(keep)[inside]] = False
            hour = np.asarray(local.hour)[keep]
        per_zone[zone] = (grid[keep], hour.astype(np.int64))
    width = max((len(t) for t, _ in per_zone.values()), default=0)
    n = len(zones)
    utc_ns, hour, valid = (
        np.zeros((n, width), np.int64),
        np.zeros((n, width), np.int64),
        np.zeros((n, width), bool),
    )
    for zone, (times, hours_of_day) in per_zone.items():
        rows = np.flatnonzero(zones == zone)
        k = len(times)
        utc_ns[rows, :k], hour[rows, :k], valid[rows, :k] = times, hours_of_day, True
        if k:  # padding repeats the last real candidate (masked out anyway)
            utc_ns[rows, k:], hour[rows, k:] = times[-1], hours_of_day[-1]
    return Candidates(utc_ns, hour, valid)


# --------------------------------------------------------------------------- the policies


@dataclass(frozen=True)
class Messages:
    """One policy's day: per customer a channel (index into CHANNELS, −1: no message) and an instant."""

    channel: IntArray
    utc_ns: IntArray


def oracle(env: Environment, slots: Candidates) -> tuple[Messages, FloatArray]:
    """The truly best (channel, candidate) per customer by P(engaged); and each one's expected
    purchases there (its true value, for matched suppression)."""
    engaged, purchases = env.outcomes(local_hours_matrix(slots.utc_ns, env.zones))
    score = np.where(slots.valid[:, None, :], engaged, -1.0).reshape(len(env), -1)
    best = score.argmax(axis=1)
    channel, column = np.divmod(best, slots.utc_ns.shape[1])
    value = purchases.reshape(len(env), -1)[np.arange(len(env)), best]
    has = slots.valid.any(axis=1)
    return Messages(np.where(has, channel, -1), slots.utc_ns[np.arange(len(env)), column]), value


def local_hours_matrix(utc_ns: IntArray, zones: npt.ArrayLike) -> FloatArray:
    zones = np.asarray(zones, dtype=object)
    n, k = utc_ns.shape
    return local_hours(utc_ns.ravel(), np.repeat(zones, k)).reshape(n, k)


def matched_suppression(messages: Messages, value: FloatArray, count: int) -> Messages:
    """``messages`` without the ``count`` customers of lowest true value (ties: first in order)."""
    drop = np.argsort(value, kind="stable")[:count]
    channel = messages.channel.copy()
    channel[drop] = -1
    return Messages(channel, messages.utc_ns)


def email_at(slots: Candidates, hour: int = DEFAULT_HOUR) -> Messages:
    n = len(slots.utc_ns)
    return Messages(np.zeros(n, np.int64), slots.at_hour(np.full(n, hour)))


def random_messages(slots: Candidates, rng: np.random.Generator) -> Messages:
    n = len(slots.utc_ns)
    count = slots.valid.sum(axis=1)
    column = np.minimum((rng.random(n) * count).astype(np.int64), np.maximum(count - 1, 0))
    return Messages(rng.integers(0, len(CHANNELS), n), slots.utc_ns[np.arange(n), column])


def modal_messages(
    slots: Candidates,
    customer_ids: npt.ArrayLike,
    zones: npt.ArrayLike,
    events: pd.DataFrame,
    as_of: pd.Timestamp,
) -> Messages:
    """Each customer's modal local hour of engagements before T on their most-engaged channel."""
    ids = pd.Index(np.asarray(customer_ids, dtype=object))
    before = events[(events["event_timestamp"] < as_of) & events["event_type"].isin(ENGAGEMENT_EVENTS)]
    position = ids.get_indexer(pd.Index(before["customer_id"]))
    before, position = before[position >= 0], position[position >= 0]
    n = len(ids)
    hour = np.full(n, DEFAULT_HOUR)
    channel = np.full(n, DEFAULT_CHANNEL)
    if len(before):
        stamps = (
            pd.to_datetime(before["event_timestamp"], utc=True).to_numpy("datetime64[ns]").astype(np.int64)
        )
        local = local_hours(stamps, np.asarray(zones, dtype=object)[position])
        counts = np.zeros((n, 24), np.int64)
        np.add.at(counts, (position, (np.floor(local).astype(np.int64) % 24)), 1)
        seen = counts.sum(axis=1) > 0
        unique_max = (counts == counts.max(axis=1, keepdims=True)).sum(axis=1) == 1
        hour = np.where(seen & unique_max, counts.argmax(axis=1), DEFAULT_HOUR)
        responses = before["event_type"].map(RESPONSE_EVENTS)
        answered = responses.notna().to_numpy()
        by_channel = np.zeros((n, len(CHANNELS)), np.int64)
        np.add.at(by_channel, (position[answered], responses[answered].to_numpy(np.int64)), 1)
        top = by_channel.max(axis=1, keepdims=True)
        single = (by_channel == top).sum(axis=1) == 1
        channel = np.where((top[:, 0] > 0) & single, by_channel.argmax(axis=1), DEFAULT_CHANNEL)
    return Messages(channel.astype(np.int64), slots.at_hour(hour.astype(np.int64)))


def nudge_messages(plan: pd.DataFrame) -> tuple[Messages, Messages, BoolArray]:
    """(what nudge sends, what it would send to everyone, suppressed) from the plan's rows."""
    suppressed = (plan["decision"] == "SUPPRESS").to_numpy()
    named = plan["best_channel"].map({c: i for i, c in enumerate(CHANNEL_NAMES)})
    channel = named.fillna(DEFAULT_CHANNEL).to_numpy(np.int64)
    own = pd.to_datetime(plan["best_channel_send_time"], utc=True)
    when = own.where(plan["best_channel"].notna(), pd.to_datetime(plan["best_send_time"], utc=True))
    known = when.notna().to_numpy()
    utc_ns = np.where(known, when.to_numpy("datetime64[ns]").astype(np.int64), 0)
    everyone = Messages(np.where(known, channel, -1), utc_ns)
    return Messages(np.where(suppressed, -1, everyone.channel), utc_ns), everyone, suppressed


# --------------------------------------------------------------------------- metrics


def policy_metrics(
    env: Environment, messages: Messages, best_channel: IntArray, label: str
) -> dict[str, Any]:
    """One policy's row: messages, engagements, purchases, hit@1 of the channel, channel mix."""
    engaged, purchases = env.outcome(messages.channel, messages.utc_ns)
    sent = messages.channel >= 0
    count = int(sent.sum())
    per_1000 = 1000.0 / count if count else float("nan")
    chosen = messages.channel[sent]
    return {
        "label": label,
        "customers": len(env),
        "messages": count,
        "share_suppressed": 1.0 - count / len(env) if len(env) else float("nan"),
        "engagements": float(engaged.sum()),
        "engagements_per_1000": float(engaged.sum() * per_1000),
        "purchases": float(purchases.sum()),
        "purchases_per_1000": float(purchases.sum() * per_1000),
        "channel_hit_at_1": float((chosen == best_channel[sent]).mean()) if count else None,
        "channel_share": {
            name.upper(): float((chosen == i).mean()) if count else 0.0 for i, name in enumerate(CHANNELS)
        },
        "share_not_opted_in": float((~env.opted_in[sent, chosen]).mean()) if count else 0.0,
    }


def evaluate(
    plan: pd.DataFrame,
    truth: pd.DataFrame,
    events: pd.DataFrame,
    customers: pd.DataFrame,
    *,
    as_of: pd.Timestamp,
    window_hours: float,
    horizon_days: float,
    quiet: tuple[int, int] | None = None,
    seed: int = 0,
    channel_report: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``policy`` block: every policy's metrics over the plan's customers with a truth row."""
    scored = plan[plan["error"].isna()] if "error" in plan else plan
    in_truth = scored["customer_id"].isin(pd.Index(truth["customer_id"]))
    scored = scored[in_truth].reset_index(drop=True)
    if scored.empty:
        raise UserError("no customer of the plan has a truth row: is --truth the plan's simulation?")
    env = Environment.build(truth, scored["customer_id"].to_numpy(object), as_of, horizon_days)
    known_zone = (
        scored[["customer_id"]]
        .merge(customers[["customer_id", "time_zone"]].drop_duplicates("customer_id"), how="left")[
            "time_zone"
        ]
        .fillna(pd.Series(env.zones))
        .to_numpy(object)
    )
    day = candidates(known_zone, as_of, window_hours)
    allowed = candidates(known_zone, as_of, window_hours, quiet)
    best, value = oracle(env, allowed)
    sent, everyone, suppressed = nudge_messages(scored)
    rng = np.random.default_rng(seed)
    policies = {
        "nudge": sent,
        "oracle": best,
        "oracle_matched": matched_suppression(best, value, int(suppressed.sum())),
        "email_10": email_at(day),
        "random": random_messages(day, rng),
        "modal": modal_messages(day, env.customer_ids, known_zone, events, as_of),
    }
    rows = {name: policy_metrics(env, m, best.channel, POLICIES[name]) for name, m in policies.items()}
    lost_engaged, lost_purchases = env.outcome(np.where(suppressed, everyone.channel, -1), everyone.utc_ns)
    matched_out = (policies["oracle_matched"].channel < 0) & (best.channel >= 0)
    _, oracle_purchases = env.outcome(np.where(matched_out, best.channel, -1), best.utc_ns)
    n_rate = rows["nudge"]["engagements_per_1000"]
    ratios = {
        "nudge_vs_email_10": n_rate / rows["email_10"]["engagements_per_1000"],
        "nudge_vs_oracle": n_rate / rows["oracle"]["engagements_per_1000"],
        "nudge_vs_oracle_matched": n_rate / rows["oracle_matched"]["engagements_per_1000"],
        "nudge_vs_random": n_rate / rows["random"]["engagements_per_1000"],
        "nudge_vs_modal": n_rate / rows["modal"]["engagements_per_1000"],
    }
    gap = _oracle_gap(env, allowed, sent)
    hit = rows["nudge"]["channel_hit_at_1"]
    baselines_hit = {k: rows[k]["channel_hit_at_1"] for k in ("email_10", "modal")}
    return {
        "what": "one campaign day of messages to the plan's customers, valued by the simulator's truth "
        "(training/policy_eval.py)",
        "as_of": as_of.isoformat(),
        "window_hours": window_hours,
        "quiet_hours": None if quiet is None else list(quiet),
        "horizon_days": horizon_days,
        "seed": seed,
        "n_customers": len(env),
        "n_without_truth": int((~in_truth).sum()),
        "n_dormant": int((env.alive == 0).sum()),
        "policies": rows,
        "suppression": {
            "suppressed": int(suppressed.sum()),
            "share": float(suppressed.mean()),
            "engagements_forgone": float(lost_engaged.sum()),
            "purchases_forgone": float(lost_purchases.sum()),
            "oracle_matched_purchases_forgone": float(oracle_purchases.sum()),
            "suppressed_dormant_share": float((env.alive[suppressed] == 0).mean())
            if suppressed.any()
            else None,
            "what": "purchases within H the suppressed customers would have given had nudge messaged them "
            "at its own best (channel, slot); oracle_matched: the same count of customers of lowest true value",
        },
        "ratios": ratios,
        "oracle_gap": gap,
        "floors": {
            "engagements_vs_email_10": {
                "floor": FLOOR_VS_EMAIL_10,
                "value": ratios["nudge_vs_email_10"],
                "met": bool(ratios["nudge_vs_email_10"] >= FLOOR_VS_EMAIL_10),
            },
            "engagements_vs_oracle": {
                "floor": FLOOR_VS_ORACLE,
                "value": ratios["nudge_vs_oracle"],
                "met": bool(ratios["nudge_vs_oracle"] >= FLOOR_VS_ORACLE),
            },
            "channel_hit_at_1": {
                "value": hit,
                "baselines": baselines_hit,
                "met": bool(hit is not None and all(hit > (b or 0.0) for b in baselines_hit.values())),
                "test_period": _channel_test_period(channel_report),
            },
        },
        "formulas": {
            "engaged": "P(engaged | channel, local slot) = training.simulate.true_engagement_probability",
            "purchases": "P(engaged) × m_c × (1 − exp(−W/burst_decay)) × alive; m_email = burst_open + "
            "click_given_open × burst_click, m_sms = burst_click, m_push = burst_open; W = operational hours "
            "from the send to H days later; alive = 0 when dormant at or before T",
        },
    }


def _oracle_gap(env: Environment, allowed: Candidates, sent: Messages) -> dict[str, Any]:
    """Where nudge's messages fall short of the oracle's, over the customers nudge messages:
    engagements per 1,000 of nudge's (channel, instant), of nudge's channel at its truly best
    allowed hour, of the truly best channel at nudge's instant, and of the oracle's choice."""
    who = sent.channel >= 0
    if not who.any():
        return {}
    engaged, _ = env.outcomes(local_hours_matrix(allowed.utc_ns, env.zones))
    engaged = np.where(allowed.valid[:, None, :], engaged, 0.0)[who]
    channel = sent.channel[who]
    at_instant, _ = env.outcomes(local_hours(sent.utc_ns, env.zones)[:, None])
    at_instant = at_instant[who, :, 0]
    rows = np.arange(int(who.sum()))
    return {
        "messages": int(who.sum()),
        "nudge": float(1000 * at_instant[rows, channel].mean()),
        "nudge_channel_best_hour": float(1000 * engaged[rows, channel].max(axis=1).mean()),
        "best_channel_nudge_hour": float(1000 * at_instant.max(axis=1).mean()),
        "oracle": float(1000 * engaged.reshape(len(rows), -1).max(axis=1).mean()),
    }


def _channel_test_period(c: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The channel block's hit@1 of the training report (random test instants) beside its two
    baselines, for reference; None when the report has no channel model."""
    if not c or c.get("status") == "n/a" or c.get("hit_at_1") is None:
        return None
    model, baselines = c["hit_at_1"], [c.get(f"baseline_{b}_hit_at_1") for b in ("global", "customer")]
    return {
        "model": model,
        "baseline_global": baselines[0],
        "baseline_customer": baselines[1],
        "above_both": bool(all(b is not None and model > b for b in baselines)),
    }


# --------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", type=Path, required=True, help="nudge score-audience's output (.parquet).")
    parser.add_argument("--truth", type=Path, required=True, help="The simulation's truth.parquet.")
    parser.add_argument("--events", type=Path, required=True, help="The simulation's events.parquet.")
    parser.add_argument("--customers", type=Path, required=True, help="The simulation's customers.parquet.")
    parser.add_argument(
        "--report", type=Path, required=True, help="The models' report.json: gets a policy block."
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random policy (default 0).")


def run(args: argparse.Namespace) -> int:
    no_truth = (
        f"--truth {args.truth}: no such file; evaluate-policy needs the simulator's truth (a purchases-only "
        "data set such as CDNOW has none to evaluate decisions against)"
    )
    check(
        missing_input(args.plan, "--plan"),
        None if args.truth.is_file() else no_truth,
        missing_input(args.events, "--events"),
        missing_input(args.customers, "--customers"),
        missing_input(args.report, "--report"),
    )
    with user_errors(pa.ArrowInvalid, json.JSONDecodeError, KeyError, AttributeError):
        frames, metadata, report = _read_inputs(args)
    horizon = report.get("propensity", {}).get("horizon_days")
    if horizon is None:
        raise UserError(f"--report {args.report}: no propensity.horizon_days; give the models' report.json")
    quiet_text = metadata.get("nudge.quiet_hours", "")
    quiet = tuple(int(h) for h in quiet_text.split("-")) if quiet_text else None
    block = evaluate(
        *frames,
        as_of=pd.Timestamp(metadata["nudge.as_of"]).tz_convert("UTC"),
        window_hours=float(metadata.get("nudge.window_hours", "24")),
        horizon_days=float(horizon),
        quiet=None if quiet is None else (quiet[0], quiet[1]),
        seed=args.seed,
        channel_report=report.get("channel"),
    )
    report["policy"] = block
    from training.report import add_policy_section, policy_table

    args.report.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    page = add_policy_section(args.report.with_suffix(".html"), block)
    print(policy_table(block))
    print(f"policy block written to {args.report}; {page} re-rendered")
    return 0


def _read_inputs(
    args: argparse.Namespace,
) -> tuple[tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame], dict[str, str], dict[str, Any]]:
    """(plan, truth, events, customers), the plan's metadata and the report; refuses a truth that
    is not the simulator's and a plan from another version of score-audience."""
    truth_columns = set(pq.read_schema(args.truth).names)
    missing = [c for c in TRUTH_COLUMNS if c not in truth_columns]
    if missing:
        raise UserError(
            f"--truth {args.truth}: not a simulator truth (no {', '.join(missing[:3])}); evaluate-policy "
            "needs the truth of `nudge simulate`"
        )
    plan_schema = pq.read_schema(args.plan)
    metadata = {k.decode(): v.decode() for k, v in (plan_schema.metadata or {}).items()}
    if "nudge.as_of" not in metadata or "best_channel" not in plan_schema.names:
        raise UserError(f"--plan {args.plan}: not written by this version of nudge score-audience")
    report = json.loads(args.report.read_text())
    if not isinstance(report, dict):
        raise UserError(f"--report {args.report}: not a report.json (a JSON object)")
    frames = (
        pd.read_parquet(args.plan),
        pd.read_parquet(args.truth, columns=list(TRUTH_COLUMNS)),
        pd.read_parquet(args.events, columns=["customer_id", "event_timestamp", "event_type"]),
        pd.read_parquet(args.customers, columns=["customer_id", "time_zone"]),
    )
    return frames, metadata, report


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
