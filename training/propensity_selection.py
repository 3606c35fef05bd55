"""Which propensity inputs and calibration to ship, chosen by validation on the data at hand, every run.

The candidates are the same trees (training/propensity.py) on the served features alone, and
with each customer's BG/NBD posterior as two more inputs (training/purchase_process.py). Each is
fitted on the training cutoffs that end one horizon before the selection period (the last part
of the training cutoffs, training/split.py) and scored there; the process's parameters are
fitted on those earlier cutoffs too. The report shows the table; the test period is never used
to choose (its column is only there to show how each candidate would have done).

The calibrations (training/propensity.py) are compared the same way at the cost of a few
one-dimensional fits: each is fitted on the out-of-fold scores of the training cutoffs one
horizon before the selection period and scored on the out-of-fold scores of the selection
period. Those scores come from the shipped model's own folds (by customer, not by time), so
no tree is refitted; the fold trees have seen other customers' selection-period weeks, so the
comparison measures how well each map carries over to later weeks, not the trees' own drift.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from nudge.contract.manifest import FeatureInput
from training.evaluate import expected_calibration_error
from training.propensity import (
    CALIBRATIONS,
    Calibration,
    CrossFitted,
    fit_calibrator,
    positive_probability,
    propensity_trees,
    trainable,
)
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


CALIBRATION_RULE = (
    "the simplest calibration whose log loss on the selection period (the last training cutoffs) is within one "
    "standard error of the lowest (the error of its per-row difference to the lowest), each fitted on the "
    "out-of-fold scores of the cutoffs one horizon before that period"
)

T = TypeVar("T")


@dataclass(frozen=True)
class Selection(Generic[T]):
    """One run's comparison: the candidate to ship and the table the report shows."""

    chosen: T
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
) -> Selection[Candidate]:
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


def select_calibration(
    cross_fitted: CrossFitted,
    y: np.ndarray,
    cutoffs: pd.Series,
    parts: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> Selection[Calibration]:
    """Fit every calibration on the out-of-fold scores of ``parts[0]`` (bool masks over the
    training rows ``y`` and ``cutoffs`` describe: fit, selection), score it on the selection rows
    and choose by ``CALIBRATION_RULE``. For the report only, each is also fitted as it would ship
    (on every training row) and scored on ``test``: the final trees' scores and the labels there.

    Log loss rather than ECE: it is a proper score, so no map gains by drifting away from the
    observed rates, and it needs no bins (ECE, the issue's floor, depends on where the ten bins
    cut); the table shows the ECE beside it. One standard error rather than a fixed rounding for
    a tie: on Complete Journey the trees' own probabilities and the recency-weighted sigmoid
    differed by 1e-5 in validation log loss and by 0.011 in test ECE. The error counts rows as
    independent, though a customer has several cutoffs: it understates the noise, so the rule
    leans, if anything, to the fitted maps."""
    fit, selection = parts
    scores = cross_fitted.scores
    test_scores, y_test = test
    table: dict[str, dict[str, Any]] = {}
    losses: dict[str, np.ndarray] = {}
    for calibration in CALIBRATIONS:
        validation = fit_calibrator(calibration, scores[fit], y[fit], cutoffs[fit]).predict(scores[selection])
        shipped = fit_calibrator(calibration, scores, y, cutoffs).predict(test_scores)
        losses[calibration.name] = row_log_loss(y[selection], validation)
        table[calibration.name] = {
            "description": calibration.description,
            "validation_log_loss": float(losses[calibration.name].mean()),
            "validation_ece": expected_calibration_error(y[selection], validation),
            "test_log_loss": float(row_log_loss(y_test, shipped).mean()),
            "test_ece": expected_calibration_error(y_test, shipped),
        }
    lowest = min(losses.values(), key=np.mean)
    for name, loss in losses.items():
        excess = loss - lowest
        table[name]["validation_excess"] = float(excess.mean())
        table[name]["validation_excess_standard_error"] = float(excess.std() / np.sqrt(len(excess)))
    chosen = next(
        c
        for c in CALIBRATIONS
        if table[c.name]["validation_excess"] <= table[c.name]["validation_excess_standard_error"]
    )
    table[chosen.name]["chosen"] = True
    return Selection(chosen, table)


def row_log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Each row's log loss of probability ``p`` for label ``y`` (p kept 1e-15 from 0 and 1)."""
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return np.where(y == 1, -np.log(p), -np.log1p(-p))
