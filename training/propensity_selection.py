"""Which propensity inputs to ship, chosen by validation on the data at hand, every run.

The candidates are the same trees (training/propensity.py) on the served features alone, and
with each customer's BG/NBD posterior as two more inputs (training/purchase_process.py). Each is
fitted on the training cutoffs that end one horizon before the selection period (the last part
of the training cutoffs, training/split.py) and scored there; the process's parameters are
fitted on those earlier cutoffs too. The report shows the table; the test period is never used
to choose (its column is only there to show how each candidate would have done).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from nudge.contract.manifest import FeatureInput
from training.propensity import positive_probability, propensity_trees, trainable
from training.purchase_process import PurchaseProcess, fit_bgnbd, process_inputs, source_columns


@dataclass(frozen=True)
class Candidate:
    """One set of propensity inputs to compare."""

    name: str
    description: str
    purchase_process: bool


CANDIDATES = (
    Candidate("trees", "gradient-boosted trees on the propensity_v1 features", False),
    Candidate(
        "trees+bgnbd",
        "the same trees with each customer's BG/NBD posterior (P(alive), P(buy within H)) as two more inputs",
        True,
    ),
)
SELECTION_RULE = (
    "highest ROC-AUC on the selection period (the last training cutoffs) for uncalibrated trees fitted on "
    "the cutoffs one horizon before it; ties at 4 decimals go to the earlier, simpler candidate"
)


@dataclass(frozen=True)
class Selection:
    """One run's comparison: the candidate to ship and the table the report shows."""

    chosen: Candidate
    table: dict[str, dict[str, Any]]


def latest_per_customer(rows: pd.DataFrame, mask: np.ndarray) -> np.ndarray:
    """Row indices of each customer's latest cutoff among the ``mask`` rows: the BG/NBD fit
    takes one row per customer, as of the newest cutoff it may see."""
    candidates = rows.loc[mask, ["customer_id", "event_timestamp"]]
    newest = candidates.groupby("customer_id")["event_timestamp"].transform("max")
    latest = candidates[candidates["event_timestamp"] == newest].drop_duplicates("customer_id")
    return latest.index.to_numpy()


def purchase_process_for(
    x: np.ndarray, rows: pd.DataFrame, mask: np.ndarray, layout: Sequence[FeatureInput], horizon_days: float
) -> PurchaseProcess:
    """A fitted ``PurchaseProcess`` step whose parameters come from the ``mask`` rows only."""
    columns = source_columns(layout)
    params = fit_bgnbd(*process_inputs(x[latest_per_customer(rows, mask)], columns))
    return PurchaseProcess(columns, params, horizon_days).fit(x)


def select_propensity(
    x: np.ndarray,
    y: np.ndarray,
    rows: pd.DataFrame,
    parts: tuple[np.ndarray, np.ndarray, np.ndarray],
    layout: Sequence[FeatureInput],
    horizon_days: float,
    seed: int,
) -> Selection:
    """Fit every candidate on ``parts[0]`` (bool masks: fit, selection, test rows), score it on
    the selection rows (and, for the report only, the test rows), choose by ``SELECTION_RULE``."""
    fit, selection, test = parts
    table: dict[str, dict[str, Any]] = {}
    for candidate in CANDIDATES:
        started = time.perf_counter()
        inputs = x
        if candidate.purchase_process:
            inputs = purchase_process_for(x, rows, fit, layout, horizon_days).transform(x)
        trees = propensity_trees(seed).fit(trainable(inputs[fit]), y[fit])
        table[candidate.name] = {
            "description": candidate.description,
            "validation_roc_auc": float(
                roc_auc_score(y[selection], positive_probability(trees, inputs[selection]))
            ),
            "test_roc_auc": float(roc_auc_score(y[test], positive_probability(trees, inputs[test]))),
            "boosting_rounds": int(trees.n_iter_),
            "fit_seconds": round(time.perf_counter() - started, 1),
        }
    chosen = max(
        CANDIDATES, key=lambda c: (round(table[c.name]["validation_roc_auc"], 4), -CANDIDATES.index(c))
    )
    table[chosen.name]["chosen"] = True
    return Selection(chosen, table)
