"""The column-wise policy (service/policy_columns.py) answers what the per-customer policy
(service/policy.py) answers, customer for customer, on random customers drawn to reach every
rule: zones with DST and :30/:45 offsets, unknown zones, windows crossing transitions, over or
in the future, quiet hours (some excluding every hour), suppression by propensity and
dormancy, open interests, channel evidence and a requested channel, and refused inputs."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from nudge.contract.channel_model import CHANNEL_NAMES, ChannelModel
from service.policy import PlanQuery, PolicyConfig, PolicyInputError, SendPlan, plan_send_batch, to_us
from service.policy_columns import PlanInputs, plan_columns
from service.reminders import Interest, Reminders, plan_reminder, plan_reminders

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "UTC",
    "Mars/Olympus",
    None,
]
# Around Europe's and America's autumn switches (2026-10-25, 2026-11-01) and a plain week.
BASES = [
    datetime(2026, 10, 24, 20, 17, tzinfo=UTC),
    datetime(2026, 10, 31, 23, tzinfo=UTC),
    datetime(2026, 5, 5, tzinfo=UTC),
]
MODEL = ChannelModel(
    prior_mean=(0.2, 0.05, 0.1),
    prior_strength=(10.0, 10.0, 10.0),
    intercept=(-1.0, -2.0, -1.5),
    rate_weight=(1.0, 0.8, 1.2),
    slot_weight=0.7,
    hour_effect=tuple(tuple(math.sin(h / 3 + c) for h in range(24)) for c in range(3)),
)
CONFIG = PolicyConfig(top_k=4, min_propensity=0.05, max_dormant_days=90.0, default_zone="Europe/London")


def random_customers(n: int, seed: int) -> tuple[np.ndarray, list[PlanQuery], PlanInputs]:
    """``n`` customers as the per-customer policy's queries and as the columns of the same."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(168, 0.3), size=n).astype(np.float32)
    probs[rng.random(n) < 0.03, 5] = np.nan  # refused: not probabilities
    queries = []
    for i in range(n):
        base = BASES[i % len(BASES)] + timedelta(minutes=int(rng.integers(0, 3000)))
        now = base
        start = base + timedelta(hours=float(rng.choice([0.0, -2.0, 3.5])))
        length = float(rng.choice([0.5, 6.0, 24.0, 72.0, 24.0 * 7 + 1]))  # the last one too long
        end = start + timedelta(hours=length) if rng.random() > 0.03 else now - timedelta(hours=1)
        quiet = [None, (22, 7), (9, 17), (0, 23), (5, 5)][int(rng.integers(0, 5))]
        interest = None
        if rng.random() < 0.5:
            decide = None if rng.random() < 0.3 else float(rng.choice([0.3, 4.0, 30.0]))
            interest = Interest(float(rng.choice([0.0, 1.5, 20.0, 60.0])), bool(rng.random() < 0.5), decide)
        sends = tuple(float(x) if rng.random() < 0.6 else 0.0 for x in rng.integers(0, 40, 3))
        rates = tuple(float(r) if s > 0 else math.nan for r, s in zip(rng.random(3), sends, strict=True))
        queries.append(
            PlanQuery(
                propensity=float(rng.choice([0.01, 0.3, 0.9, 1.5]))
                if rng.random() < 0.3
                else float(rng.random()),
                zone=ZONES[int(rng.integers(0, len(ZONES)))],
                now=now,
                window_start=start,
                window_end=end,
                days_since_last_engagement=None
                if rng.random() < 0.2
                else float(rng.choice([1.0, 100.0, -1.0, 3.0])),
                quiet_hours=quiet,
                interest=interest,
                channel_rates=rates,  # type: ignore[arg-type]
                channel_sends=sends,  # type: ignore[arg-type]
                channel=None if rng.random() < 0.8 else CHANNEL_NAMES[int(rng.integers(0, 3))],
            )
        )
    inputs = PlanInputs(
        propensity=np.array([q.propensity for q in queries]),
        zone=[q.zone for q in queries],
        now_us=np.array([to_us(q.now, "now") for q in queries]),
        window_start_us=np.array([to_us(q.window_start, "start") for q in queries]),
        window_end_us=np.array([to_us(q.window_end, "end") for q in queries]),
        dormant_days=np.array(
            [
                math.nan if q.days_since_last_engagement is None else q.days_since_last_engagement
                for q in queries
            ]
        ),
        quiet=np.array([q.quiet_hours or (-1, -1) for q in queries], dtype=np.int64),
        interest_hours=np.array([q.interest.hours_ago if q.interest else math.nan for q in queries]),
        interest_is_cart=np.array([bool(q.interest and q.interest.is_cart) for q in queries]),
        decide_hours=np.array(
            [
                math.nan if q.interest is None or q.interest.decide_hours is None else q.interest.decide_hours
                for q in queries
            ]
        ),
        channel_rates=np.array([q.channel_rates for q in queries]),
        channel_sends=np.array([q.channel_sends for q in queries]),
        channel=np.array([-1 if q.channel is None else CHANNEL_NAMES.index(q.channel) for q in queries]),
    )
    return probs, queries, inputs


def assert_same(got: SendPlan, expected: SendPlan) -> None:
    """Equal plans; channel probabilities to the last bits (a customer alone in its group has
    the channel model's customer terms in plain Python, here numpy's)."""
    assert [(c.channel, c.start, c.local) for c in got.channels] == [
        (c.channel, c.start, c.local) for c in expected.channels
    ]
    assert [c.probability for c in got.channels] == pytest.approx([c.probability for c in expected.channels])
    assert replace(got, channels=expected.channels) == expected


@pytest.mark.parametrize("seed", [1, 2])
def test_columns_answer_what_each_customer_gets_alone(seed: int) -> None:
    probs, queries, inputs = random_customers(250, seed)
    plans = plan_columns(probs, inputs, CONFIG, MODEL)
    # Alone: each customer planned by the per-customer policy as a Score is.
    alone = [plan_send_batch(probs[i : i + 1], [q], CONFIG, MODEL)[0] for i, q in enumerate(queries)]
    decisions, refused, reminders, asked = set(), 0, 0, 0
    for i, expected in enumerate(alone):
        if isinstance(expected, PolicyInputError):
            assert plans.error[i] == str(expected)
            refused += 1
            continue
        assert plans.error[i] is None, plans.error[i]
        got = plans.send_plan(i)
        assert_same(got, expected)
        decisions.add(got.decision)
        reminders += got.reminder is not None
        asked += queries[i].channel is not None and bool(got.channels)
    assert len(decisions) == 3 and refused >= 5 and reminders >= 15 and asked >= 5


def test_batches_of_one_answer_as_the_customer_alone() -> None:
    """Including a batch whose only customer has no allowed hour (nothing to index)."""
    without_hours = 0
    for seed in range(60):
        probs, (query,), inputs = random_customers(1, 1000 + seed)
        (expected,) = plan_send_batch(probs, [query], CONFIG, MODEL)
        plans = plan_columns(probs, inputs, CONFIG, MODEL)
        if isinstance(expected, PolicyInputError):
            assert plans.error[0] == str(expected)
            continue
        assert_same(plans.send_plan(0), expected)
        without_hours += not expected.top_slots
    assert without_hours >= 3


def test_a_batch_of_customers_together_equals_the_per_customer_batch() -> None:
    """Groups of several customers: the per-customer policy's numpy channel terms, as here."""
    probs, queries, inputs = random_customers(250, 7)
    plans = plan_columns(probs, inputs, CONFIG, MODEL)
    for i, expected in enumerate(plan_send_batch(probs, queries, CONFIG, MODEL)):
        if isinstance(expected, PolicyInputError):
            assert plans.error[i] == str(expected)
        else:
            assert_same(plans.send_plan(i), expected)


def test_reminders_column_wise_equal_one_at_a_time() -> None:
    rng = np.random.default_rng(5)
    hour = 3_600_000_000
    now = 1_780_000_000 * 1_000_000
    rows, k = 200, 30
    counts = rng.integers(0, k + 1, rows)
    starts = np.full((rows, k), np.iinfo(np.int64).max)
    probs = rng.random((rows, k))
    for i, c in enumerate(counts):
        starts[i, :c] = now + hour * np.sort(rng.choice(60, c, replace=False)) - now % hour
    hours_ago = rng.choice([np.nan, 0.0, 2.5, 30.0, 80.0], rows)
    is_cart = rng.random(rows) < 0.5
    decide = rng.choice([np.nan, 0.2, 6.0, 40.0], rows)
    got: Reminders = plan_reminders(
        hours_ago, is_cart, decide, np.full(rows, now), starts, counts, probs, 20.0
    )
    planned = 0
    for i in range(rows):
        interest = (
            None
            if math.isnan(hours_ago[i])
            else Interest(hours_ago[i], bool(is_cart[i]), None if math.isnan(decide[i]) else decide[i])
        )
        one = (
            None
            if interest is None
            else plan_reminder(
                interest, now, starts[i, : counts[i]].tolist(), probs[i, : counts[i]].tolist(), 20.0
            )
        )
        assert got.planned[i] == (one is not None), i
        if one is not None:
            planned += 1
            assert (int(got.send_us[i]), int(got.interest_us[i]), got.reason[i]) == (
                one.send_us,
                one.interest_us,
                one.reason,
            )
            assert (float(got.decide_hours[i]), bool(got.decide_defaulted[i])) == (
                one.decide_hours,
                one.decide_defaulted,
            )
    assert planned >= 30
