"""The BG/NBD purchase process: the fit recovers known parameters, the posterior behaves as the
model says, and the ONNX columns the served graph computes equal the float64 formulas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.support.bgnbd import LAYOUT, TRUE, as_model_inputs, simulate_bgnbd
from training.propensity_selection import latest_per_customer
from training.purchase_process import (
    PurchaseProcess,
    fit_bgnbd,
    posterior,
    process_inputs,
    source_columns,
)


def test_the_fit_recovers_the_parameters_of_data_drawn_from_the_model() -> None:
    rng = np.random.default_rng(3)
    fitted = fit_bgnbd(*simulate_bgnbd(TRUE, 6000, rng))
    for name in ("r", "alpha", "a", "b"):
        assert getattr(fitted, name) == pytest.approx(getattr(TRUE, name), rel=0.35), name
    # The fitted population predicts how many customers are still buying about right.
    x, t_x, ages = simulate_bgnbd(TRUE, 2000, rng)
    alive_fitted = posterior(fitted, x, t_x, ages, 14.0)[:, 0].mean()
    alive_true = posterior(TRUE, x, t_x, ages, 14.0)[:, 0].mean()
    assert alive_fitted == pytest.approx(alive_true, abs=0.05)


def test_the_posterior_follows_the_model() -> None:
    t = np.full(4, 300.0)
    alive, buy = posterior(
        TRUE, np.array([0.0, 3.0, 3.0, 10.0]), np.array([0.0, 290.0, 100.0, 290.0]), t, 14.0
    ).T
    assert alive[0] == 1.0  # no repeat purchase yet: no dropout chance yet
    assert alive[1] > alive[2]  # the same purchases, the last one longer ago: more likely gone
    assert buy[3] > buy[1]  # more purchases by the same recent day: a faster buyer
    assert np.all((buy > 0.0) & (buy < alive))
    longer = posterior(TRUE, np.array([3.0]), np.array([290.0]), np.array([300.0]), 60.0)[0, 1]
    assert longer > buy[1]


def test_model_inputs_give_the_process_its_x_tx_and_t() -> None:
    inputs = np.array([[0, 100, 5, 0, 3], [0, 40, np.nan, 0, 0], [0, np.nan, np.nan, 0, np.nan]], np.float32)
    x, t_x, t = process_inputs(inputs, source_columns(LAYOUT))
    np.testing.assert_array_equal(x, [2.0, 0.0, 0.0])
    np.testing.assert_array_equal(t_x, [95.0, 0.0, 0.0])
    np.testing.assert_array_equal(t, [100.0, 40.0, 0.0])
    with pytest.raises(KeyError, match="tenure_days"):
        source_columns(LAYOUT[2:])


def test_the_onnx_columns_equal_the_formulas() -> None:
    rng = np.random.default_rng(5)
    x, t_x, ages = simulate_bgnbd(TRUE, 3000, rng)
    inputs = as_model_inputs(x, t_x, ages, rng)
    inputs[:50, 2] = np.nan  # never purchased (the server's missing recency)
    inputs[:50, 4] = 0.0
    inputs[50:60] = np.nan  # a customer the store knows nothing about
    step = PurchaseProcess(source_columns(LAYOUT), TRUE, 14.0).fit(inputs)
    out = step.transform(inputs)
    assert out.shape == (len(inputs), len(LAYOUT) + 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, : len(LAYOUT)], inputs)  # the inputs pass through untouched
    expected = posterior(TRUE, *process_inputs(inputs, step.columns), 14.0)
    np.testing.assert_allclose(out[:, len(LAYOUT) :], expected, atol=1e-5)
    assert np.all(out[:60, len(LAYOUT)] == 1.0)


def test_the_fit_sees_each_customers_latest_allowed_row() -> None:
    rows = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "b", "c"],
            "event_timestamp": pd.to_datetime(
                ["2026-01-01", "2026-01-08", "2026-01-01", "2026-01-15", "2026-01-15"]
            ),
        }
    )
    allowed = np.array([True, True, True, False, False])
    assert sorted(latest_per_customer(rows, allowed)) == [1, 2]
