"""Best-channel training pieces (training/channel.py): which sends were engaged with, the
candidate slots, and that the fits recover what generated synthetic data (the send counts are
the *_sends_90d features, tested with the other features in tests/unit/test_live_state.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from nudge.contract.channel_model import ChannelModel
from training.channel import (
    Design,
    candidate_slots,
    channel_unavailable,
    fit_model,
    fit_prior,
    log_loss,
    send_outcomes,
    train_channel,
)
from training.report import _channel_html, _channel_rows, channel_summary

T0 = pd.Timestamp("2026-03-02 08:00", tz="UTC")  # a Monday; Berlin is UTC+1 then


def frame(rows: list[tuple[str, pd.Timestamp, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "event_timestamp", "event_type"]).assign(amount=np.nan)


CUSTOMERS = pd.DataFrame({"customer_id": ["a", "b"], "time_zone": ["Europe/Berlin", "Asia/Kolkata"]})


def test_a_response_belongs_to_the_latest_send_of_its_channel_within_a_day() -> None:
    h = pd.Timedelta(hours=1)
    events = frame(
        [
            ("a", T0, "email_send"),
            ("a", T0 + 0.1 * h, "email_open"),
            ("a", T0 + 0.2 * h, "email_click"),  # the same send: still one engaged send
            ("a", T0 + 5 * h, "email_send"),  # never answered
            ("a", T0 + 30 * h, "email_send"),
            ("a", T0 + 31 * h, "email_click"),  # a click without a recorded open counts
            ("a", T0, "sms_send"),
            ("a", T0 + 25 * h, "sms_click"),  # over a day later: not this send's
            ("b", T0, "push_send"),
            ("b", T0, "push_open"),  # the same second
            ("b", T0 + h, "email_open"),  # b has no email send: answers nothing
            ("a", T0 + 2 * h, "purchase"),
        ]
    )
    rows = send_outcomes(events, CUSTOMERS)
    got = {(r.customer_id, r.sent_at, r.channel): r.engaged for r in rows.itertuples()}
    assert got == {
        ("a", T0, 0): True,
        ("a", T0 + 5 * h, 0): False,
        ("a", T0 + 30 * h, 0): True,
        ("a", T0, 1): False,
        ("b", T0, 2): True,
    }
    berlin = rows[(rows["customer_id"] == "a") & (rows["sent_at"] == T0)]["slot"]
    assert set(berlin) == {9}  # Monday 09h local
    kolkata = rows.loc[rows["customer_id"] == "b", "slot"].iloc[0]
    assert kolkata == 13  # 08:00 UTC = 13:30 in Kolkata
    assert channel_unavailable(rows) is None
    assert channel_unavailable(rows.iloc[:0])["status"] == "n/a"  # type: ignore[index]
    assert "none of the" in channel_unavailable(rows.assign(engaged=False))["reason"]  # type: ignore[index]


def test_candidates_are_the_next_whole_hours_in_local_time() -> None:
    slots = candidate_slots(
        pd.Series(["a", "b"]),
        pd.Series([T0 + pd.Timedelta(minutes=10), T0]),
        CUSTOMERS.set_index("customer_id")["time_zone"],
        hours=3,
    )
    np.testing.assert_array_equal(slots, [[10, 11, 12], [13, 14, 15]])


def test_the_prior_is_recovered_from_beta_binomial_counts() -> None:
    rng = np.random.default_rng(3)
    p = rng.beta(0.2 * 20, 0.8 * 20, 20_000)
    n = rng.integers(0, 30, p.size)
    mean, strength = fit_prior(rng.binomial(n, p), n)
    assert abs(mean - 0.2) < 0.01 and 14 < strength < 28


@pytest.mark.parametrize("cross", [False, True])
def test_the_calibration_recovers_its_generating_parameters(cross: bool) -> None:
    rng = np.random.default_rng(5)
    n = 60_000
    truth = ChannelModel(
        prior_mean=(0.15, 0.08, 0.11),
        prior_strength=(20.0, 40.0, 30.0),
        intercept=(0.2, -0.1, 0.0),
        rate_weight=(1.0, 0.8, 1.2),
        slot_weight=0.9,
        hour_effect=((0.0,) * 24, (0.0,) * 24, tuple(0.6 * np.cos(2 * np.pi * (np.arange(24) - 20) / 24))),
        cross_weight=((0.0, 0.0, -0.5), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)) if cross else ((0.0,) * 3,) * 3,
    )
    channel = rng.integers(0, 3, n)
    sends = rng.integers(0, 25, (n, 3)).astype(float)
    rates = np.where(
        sends > 0, rng.binomial(sends.astype(int), [0.15, 0.08, 0.11]) / np.maximum(sends, 1), np.nan
    )
    slot_p, hour = rng.dirichlet(np.ones(168), n)[:, 0], rng.integers(0, 24, n)
    y = rng.random(n) < Design(channel, rates, sends, slot_p, hour, np.zeros(n)).predict(truth)
    design = Design(channel, rates, sends, slot_p, hour, y)
    fitted = fit_model(design, (truth.prior_mean, truth.prior_strength), "cloglog", cross=cross)
    assert fitted.slot_weight == pytest.approx(0.9, abs=0.08)
    np.testing.assert_allclose(fitted.rate_weight, truth.rate_weight, atol=0.3)
    push = np.array(fitted.hour_effect[2])
    assert 18 <= int(push.argmax()) <= 22 and push.max() - push.min() > 0.6
    assert np.ptp(fitted.hour_effect[0]) < 0.4  # flat where the data is flat
    assert log_loss(y, design.predict(fitted)) < log_loss(y, np.full(n, y.mean()))
    if cross:
        assert fitted.cross_weight[0][2] < -0.25 and abs(fitted.cross_weight[1][0]) < 0.2
    else:
        assert not np.any(fitted.cross_weight)


def test_data_without_sends_or_send_times_gets_an_n_a_block_and_no_model() -> None:
    """What a purchases-only data set (CDNOW) gets: never a failure, an n/a block and no model."""
    events = frame([("a", T0, "purchase"), ("a", T0 + pd.Timedelta(days=30), "purchase")])
    result = train_channel(SimpleNamespace(events=events, customers=CUSTOMERS), None)  # type: ignore[arg-type]
    assert result.model is None and result.metrics["status"] == "n/a"
    assert "no marketing sends" in result.metrics["reason"]
    assert "n/a" in channel_summary(result.metrics) and "Best channel: n/a" in _channel_html(result.metrics)
    assert _channel_rows(result.metrics) == [("best channel (all metrics)", "n/a", "n/a", "n/a")]
    assert _channel_rows(None) == []  # a report from before the channel model
    # sends, but no send-time model to rank slots with (dates without times of day)
    sent = frame([("a", T0, "email_send"), ("a", T0 + pd.Timedelta(minutes=5), "email_open")])
    result = train_channel(SimpleNamespace(events=sent, customers=CUSTOMERS), None)  # type: ignore[arg-type]
    assert result.model is None and "no send-time model" in result.metrics["reason"]
