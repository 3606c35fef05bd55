"""Customers drawn from a known BG/NBD, as model inputs: for the purchase-process tests."""

from __future__ import annotations

import numpy as np

from nudge.contract.manifest import FeatureInput
from training.purchase_process import COUNT, RECENCY, TENURE, BgNbd

TRUE = BgNbd(r=0.4, alpha=20.0, a=0.8, b=3.0)
LAYOUT = (
    FeatureInput("customer_stats:amount_avg"),
    FeatureInput(TENURE),
    FeatureInput(RECENCY),
    FeatureInput("customer_stats:purchase_count_90d"),
    FeatureInput(COUNT),
)


def simulate_bgnbd(params: BgNbd, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(repeat purchases x, t_x, T) of ``n`` customers drawn from the BG/NBD itself: born with a
    purchase at 0, then Poisson purchases at rate λ until a dropout after some repeat purchase."""
    rates = rng.gamma(params.r, 1.0 / params.alpha, n)
    drop = rng.beta(params.a, params.b, n)
    ages = rng.uniform(60.0, 540.0, n)
    x, t_x = np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1.0 / rates[i])
            if t > ages[i]:
                break
            x[i], t_x[i] = x[i] + 1, t
            if rng.random() < drop[i]:
                break
    return x, t_x, ages


def as_model_inputs(x: np.ndarray, t_x: np.ndarray, ages: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The five-column model input of ``LAYOUT``: purchases counted with the first, recency in
    days (the first purchase's age for one-time buyers), noise in the other columns."""
    inputs = rng.normal(size=(len(x), len(LAYOUT))).astype(np.float32)
    inputs[:, 1] = ages
    inputs[:, 2] = ages - t_x
    inputs[:, 4] = x + 1
    return inputs
