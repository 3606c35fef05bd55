"""The policy's channel ranking: one channel-model call per group, best slot per channel, the
request's channel only when it names one, the population's ranking flagged for cold starts."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np

from nudge.contract.channel_model import ChannelModel
from service.policy import PlanQuery, PolicyConfig, SendPlan, plan_send_batch

NOW = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday, 06:00 UTC
EVENING = tuple(1.5 if 18 <= h <= 21 else 0.0 for h in range(24))
MODEL = ChannelModel(
    prior_mean=(0.2, 0.05, 0.1),
    prior_strength=(10.0, 10.0, 10.0),
    intercept=(0.0, 0.0, 0.0),
    rate_weight=(1.0, 1.0, 1.0),
    slot_weight=0.0,
    hour_effect=((0.0,) * 24, (0.0,) * 24, EVENING),  # push engages more in the evening
)


def plans(*queries: PlanQuery) -> list[SendPlan]:
    flat = np.full((len(queries), 168), 1.0 / 168)
    out = plan_send_batch(flat, list(queries), PolicyConfig(), MODEL)
    assert all(isinstance(p, SendPlan) for p in out)
    return out  # type: ignore[return-value]


def query(
    rates: tuple[float, float, float], sends: tuple[float, float, float], channel: str | None = None
) -> PlanQuery:
    return PlanQuery(
        propensity=0.5,
        zone="UTC",
        now=NOW,
        window_start=NOW,
        window_end=NOW + timedelta(hours=24),
        days_since_last_engagement=1.0,
        channel_rates=rates,
        channel_sends=sends,
        channel=channel,
    )


def test_channels_ranked_by_engagement_each_at_its_best_hour() -> None:
    sms_lover = query((0.05, 0.9, 0.1), (40.0, 40.0, 40.0))
    (plan,) = plans(sms_lover)
    assert plan.channels[0].channel == "SMS"
    probabilities = [c.probability for c in plan.channels]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < probabilities[-1] < 1
    push = next(c for c in plan.channels if c.channel == "PUSH")
    assert 18 <= push.start.hour <= 21, "push's best slot is in its evening hours"
    assert not plan.channels_defaulted


def test_the_requested_channel_only_and_cold_start_flagged() -> None:
    known = query((0.3, 0.1, 0.2), (10.0, 5.0, 5.0), channel="PUSH")
    cold = query((math.nan, math.nan, math.nan), (0.0, 0.0, 0.0))
    only_push, population = plans(known, cold)
    assert [c.channel for c in only_push.channels] == ["PUSH"]
    assert population.channels_defaulted
    # The population's: push (0.1) at its evening hours beats email (0.2) at any hour.
    assert [c.channel for c in population.channels] == ["PUSH", "EMAIL", "SMS"]


def test_a_customers_own_evidence_moves_their_ranking() -> None:
    (few,) = plans(query((0.0, 1.0, 0.0), (0.0, 1.0, 0.0)))
    (many,) = plans(query((0.0, 1.0, 0.0), (0.0, 50.0, 0.0)))
    sms = [next(c.probability for c in p.channels if c.channel == "SMS") for p in (few, many)]
    assert sms[1] > sms[0], "more sends answered: less shrinkage toward the population"
