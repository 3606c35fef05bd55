"""The served best-channel predictor (nudge/contract/channel_model.py): shapes, the direction of
every input, cold start, the file format and its refusals."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from nudge.contract.channel_model import CHANNELS, ChannelModel, ChannelModelError

HOURS = np.arange(24)


def model(link: str = "cloglog") -> ChannelModel:
    evening = tuple(float(v) for v in 0.5 * np.cos(2 * np.pi * (HOURS - 20) / 24))
    return ChannelModel(
        prior_mean=(0.15, 0.08, 0.11),
        prior_strength=(30.0, 60.0, 50.0),
        intercept=(0.1, -0.2, 0.0),
        rate_weight=(1.2, 0.9, 1.3),
        slot_weight=1.0,
        hour_effect=((0.0,) * 24, (0.0,) * 24, evening),
        link=link,
        info={"trained_on": "test"},
    )


def inputs(n: int = 5, k: int = 24, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.0, 0.5, (n, 3))
    sends = rng.integers(1, 30, (n, 3)).astype(float)
    slot_p = rng.dirichlet(np.ones(168), n)[:, :k]
    hour = np.tile(np.arange(k) % 24, (n, 1))
    return rates, sends, slot_p, hour


@pytest.mark.parametrize("link", ["cloglog", "logit"])
def test_shape_and_range(link: str) -> None:
    p = model(link).probabilities(*inputs(7, 24))
    assert p.shape == (7, len(CHANNELS), 24)
    assert np.all((p > 0) & (p < 1))
    assert model(link).probabilities(*inputs(0, 24)).shape == (0, 3, 24)


@pytest.mark.parametrize("link", ["cloglog", "logit"])
def test_best_is_the_argmax_of_the_probabilities(link: str) -> None:
    """The serving shortcut (link on the best linear predictor only) gives what the full
    computation gives, missing slot probabilities and cold customers included."""
    rates, sends, slot_p, hour = inputs(50, 24, seed=3)
    rates[:5], sends[:5] = np.nan, 0.0
    slot_p[5:10, :4] = np.nan
    index, best = model(link).best(rates, sends, slot_p, hour)
    expected_index, expected = ChannelModel.best_slots(model(link).probabilities(rates, sends, slot_p, hour))
    assert np.array_equal(index, expected_index)
    np.testing.assert_allclose(best, expected, rtol=1e-12)
    for i in range(len(rates)):  # one customer (a Score) takes the plain-Python form
        rate, sent = tuple(rates[i].tolist()), tuple(sends[i].tolist())  # as the policy passes them
        one_index, one = model(link).best_one(rate, sent, slot_p[i].tolist(), hour[i].tolist())
        assert one_index == expected_index[i].tolist()
        np.testing.assert_allclose(one, expected[i], rtol=1e-12)
        # The same customer alone in a batch: its probabilities to the last bits, but for the
        # customer terms (plain Python there, numpy here).
        alone_index, alone = model(link).best(
            rates[i : i + 1], sends[i : i + 1], slot_p[i : i + 1], hour[i : i + 1]
        )
        assert (alone_index[0].tolist(), alone[0].tolist()) == (one_index, pytest.approx(one, rel=1e-15))


@pytest.mark.parametrize("link", ["cloglog", "logit"])
def test_one_customer_ties_keep_the_first_candidate_as_argmax_does(link: str) -> None:
    """Equal slot probabilities at equal local hours: the first such candidate wins on every
    channel, in both forms (the policy's pads repeat a row's first candidate and must lose)."""
    rates, sends = (0.2, 0.1, 0.3), (10.0, 5.0, 8.0)
    slot_p, hour = [0.01, 0.02, 0.02, float("nan"), 0.02], [3, 20, 20, 20, 20]
    index, _ = model(link).best_one(rates, sends, slot_p, hour)
    batch_index, _ = model(link).best(
        np.array([rates]), np.array([sends]), np.array([slot_p]), np.array([hour])
    )
    assert index == batch_index[0].tolist() == [1, 1, 1]


def test_own_evidence_moves_the_answer_and_more_sends_move_it_further() -> None:
    m = model()
    rates, sends, slot_p, hour = inputs(1)
    low, high = rates.copy(), rates.copy()
    low[0, 0], high[0, 0] = 0.02, 0.6
    few, many = sends.copy(), sends.copy()
    few[0, 0], many[0, 0] = 2.0, 40.0
    p_low_few = m.probabilities(low, few, slot_p, hour)[0, 0]
    p_high_few = m.probabilities(high, few, slot_p, hour)[0, 0]
    p_high_many = m.probabilities(high, many, slot_p, hour)[0, 0]
    p_low_many = m.probabilities(low, many, slot_p, hour)[0, 0]
    assert np.all(p_low_few < p_high_few) and np.all(p_high_few < p_high_many)
    assert np.all(p_low_many < p_low_few)  # a low rate on much evidence: lower still
    # other channels are untouched
    np.testing.assert_array_equal(
        m.probabilities(low, few, slot_p, hour)[0, 1:], m.probabilities(high, many, slot_p, hour)[0, 1:]
    )


def test_likelier_slots_and_the_channels_hours_raise_the_probability() -> None:
    m = model()
    rates, sends, _, _ = inputs(1)
    slot_p = np.array([[0.001, 0.01, 0.05]])
    hour = np.array([[12, 12, 12]])
    p = m.probabilities(rates, sends, slot_p, hour)
    assert np.all(np.diff(p, axis=2) > 0)
    # push's evening effect: 20h beats 8h for push only
    p = m.probabilities(rates, sends, np.full((1, 2), 0.01), np.array([[8, 20]]))
    assert p[0, 2, 1] > p[0, 2, 0] and p[0, 0, 1] == p[0, 0, 0]
    index, best = ChannelModel.best_slots(p)
    assert index.shape == best.shape == (1, 3) and index[0, 2] == 1
    np.testing.assert_array_equal(best, p.max(axis=2))


def test_cross_channel_weights_read_the_other_channels_evidence() -> None:
    crossed = dataclasses.replace(model(), cross_weight=((0.0, 0.0, -0.5), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)))
    rates, sends, slot_p, hour = inputs(1)
    more_push = rates.copy()
    more_push[0, 2] = 0.9
    before, after = (
        crossed.probabilities(rates, sends, slot_p, hour),
        crossed.probabilities(more_push, sends, slot_p, hour),
    )
    assert np.all(after[0, 0] < before[0, 0])  # email weighs push's rate negatively
    np.testing.assert_array_equal(after[0, 1], before[0, 1])  # sms does not
    assert np.all(after[0, 2] > before[0, 2])  # push its own, positively


def test_cold_start_is_the_population_and_flagged() -> None:
    m = model()
    _, sends, slot_p, hour = inputs(3)
    cold_rates, cold_sends = np.full((3, 3), np.nan), np.zeros((3, 3))
    cold_sends[2] = np.nan  # a missing count is no evidence either
    np.testing.assert_array_equal(ChannelModel.cold_start(np.vstack([sends, cold_sends])), [0, 0, 0, 1, 1, 1])
    shrunk = m.shrunk_rates(cold_rates, cold_sends)
    np.testing.assert_allclose(shrunk, np.tile(m.prior_mean, (3, 1)))
    same_slots = np.tile(slot_p[:1], (3, 1))
    p = m.probabilities(cold_rates, cold_sends, same_slots, hour)
    np.testing.assert_allclose(p, np.repeat(p[:1], 3, axis=0))  # one answer: the population's
    # a rate without sends (or a count without a rate) is no evidence
    np.testing.assert_allclose(m.shrunk_rates([[0.9, np.nan, 0.5]], [[0.0, 5.0, np.nan]]), [m.prior_mean])


def test_missing_slot_probability_means_no_opinion() -> None:
    m = model()
    rates, sends, _, _ = inputs(1)
    p = m.probabilities(rates, sends, [[np.nan, 1 / 168, 0.0]], [[3, 3, 3]])
    assert p[0, 0, 0] == p[0, 0, 1] and p[0, 0, 2] < p[0, 0, 1]  # 0 is floored, not log(0)
    assert np.isfinite(p).all()


def test_bad_inputs_are_refused() -> None:
    m = model()
    rates, sends, slot_p, hour = inputs(2)
    with pytest.raises(ValueError, match=r"0\.\.23"):
        m.probabilities(rates, sends, slot_p, hour + 1)
    with pytest.raises(ValueError, match=r"0\.\.23"):
        m.probabilities(rates, sends, slot_p, hour - 1)
    with pytest.raises(ValueError, match=r"\(n, k\)"):
        m.probabilities(rates, sends, slot_p[0], hour[0])
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        m.probabilities(rates[:1], sends[:1], slot_p, hour)
    with pytest.raises(ValueError, match="integers"):
        m.probabilities(rates, sends, slot_p, hour.astype(float))


def test_json_round_trip_and_refusals(tmp_path: Path) -> None:
    m = model("logit")
    path = m.to_json(tmp_path / "channel_model.json")
    loaded = ChannelModel.from_json(path)
    assert loaded == m and loaded.info == {"trained_on": "test"}
    np.testing.assert_array_equal(loaded.probabilities(*inputs()), m.probabilities(*inputs()))
    data = json.loads(path.read_text())
    assert data["format"] == "nudge-channel-model/1" and data["channels"] == ["email", "sms", "push"]
    for change, message in (
        ({"format": "other"}, "format"),
        ({"channels": ["sms", "email", "push"]}, "channels"),
        ({"hour_effect": [[0.0] * 23] * 3}, "hour_effect"),
        ({"prior_mean": [0.1, 0.2]}, "prior_mean"),
        ({"prior_mean": [0.1, 0.2, 1.5]}, "prior_mean"),
        ({"link": "probit"}, "link"),
        ({"cross_weight": [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]}, "cross_weight"),
        ({"slot_weight": None}, "malformed"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**data, **change}))
        with pytest.raises(ChannelModelError, match=message):
            ChannelModel.from_json(bad)
    (tmp_path / "torn.json").write_text(path.read_text()[:50])
    with pytest.raises(ChannelModelError, match="cannot read"):
        ChannelModel.from_json(tmp_path / "torn.json")
    assert dataclasses.replace(m, info={}).info == {}


def test_the_predictor_needs_neither_pandas_nor_sklearn() -> None:
    import subprocess

    code = (
        "import sys; import nudge.contract.channel_model; "
        "print(sorted(m for m in ('pandas', 'sklearn', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
