"""Propensity calibration chosen by validation: each candidate is fitted on the out-of-fold scores
before the selection period and scored on it; the run ships the simplest one within a standard
error of the lowest validation log loss.
The scores below are built so that each candidate must win once (a rule that ignored the
validation scores, always shipping one map, fails two of the three), and the shipped model
is the chosen map over the trees."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from training.propensity import CALIBRATIONS, Calibration, CrossFitted, cross_fit, propensity_trees
from training.propensity_selection import Selection, select_calibration

WEEKS = 40
SELECTION_WEEKS = 10
HORIZON_WEEKS = 2
ROWS_PER_WEEK = 2500


def choose(shift: np.ndarray, slope: float = 1.0, seed: int = 0) -> Selection[Calibration]:
    """Select on weekly cutoffs whose labels follow sigmoid(slope * score + shift[week]): the
    trees' score f is the true log-odds of week 0 when slope = 1 and shift = 0."""
    rng = np.random.default_rng(seed)
    week = np.repeat(np.arange(WEEKS), ROWS_PER_WEEK)
    scores = rng.normal(0.0, 1.5, len(week))
    y = (rng.random(len(week)) < expit(slope * scores + shift[week])).astype(int)
    cutoffs = pd.Series(pd.Timestamp("2024-01-01") + pd.to_timedelta(7 * week, unit="D"))
    first_selected = WEEKS - SELECTION_WEEKS
    parts = (week + HORIZON_WEEKS <= first_selected, week >= first_selected)
    fitted = CrossFitted(propensity_trees(0), scores)
    return select_calibration(fitted, y, cutoffs, parts, (scores[parts[1]], y[parts[1]]))


def test_a_drifting_base_rate_ships_the_recency_weighted_sigmoid() -> None:
    # Customers buy less every week: the latest training weeks say most about the next ones.
    selection = choose(-0.1 * np.arange(WEEKS))
    assert selection.chosen.name == "sigmoid+recency"
    table = selection.table
    assert table["sigmoid+recency"]["validation_ece"] < table["sigmoid"]["validation_ece"]


def dip(depth: float) -> np.ndarray:
    """Weekly shifts: the last eight training weeks buy less by ``depth``, then the rate returns."""
    shift = np.zeros(WEEKS)
    shift[WEEKS - SELECTION_WEEKS - 8 : WEEKS - SELECTION_WEEKS] = -depth
    return shift


def test_a_passing_dip_before_the_selection_period_ships_the_trees_own_probabilities() -> None:
    # Weighting by recency follows the dip, and the trees' scores were right all along.
    selection = choose(dip(0.8))
    assert selection.chosen.name == "trees"
    table = selection.table
    assert table["trees"]["validation_log_loss"] < table["sigmoid"]["validation_log_loss"]
    assert table["sigmoid"]["validation_log_loss"] < table["sigmoid+recency"]["validation_log_loss"]


def test_overconfident_scores_and_a_passing_dip_ship_platts_sigmoid() -> None:
    # The trees' log-odds are twice the truth, so their own probabilities miss; the unweighted
    # sigmoid corrects that and follows the dip less than the recency-weighted one.
    selection = choose(dip(0.3), slope=0.5)
    assert selection.chosen.name == "sigmoid"
    assert [name for name, row in selection.table.items() if row.get("chosen")] == ["sigmoid"]
    assert set(selection.table) == {c.name for c in CALIBRATIONS}
    assert {"validation_log_loss", "validation_ece", "test_log_loss", "test_ece"} <= set(
        selection.table["trees"]
    )


@pytest.mark.parametrize("calibration", CALIBRATIONS, ids=lambda c: c.name)
def test_the_shipped_model_is_the_chosen_map_over_the_trees(calibration: Calibration) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 3)).astype(np.float32)
    y = (rng.random(3000) < expit(2 * x[:, 0])).astype(int)
    cutoffs = pd.Series(pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 60, 3000), unit="D"))
    fitted = cross_fit(x, y, rng.integers(0, 300, 3000).astype(str), seed=0)
    model = fitted.calibrated(calibration, y, cutoffs)
    own = fitted.trees.predict_proba(x)[:, 1]
    shipped = model.predict_proba(x)[:, 1]
    if calibration.fitted:
        assert not np.allclose(shipped, own)
        assert np.array_equal(np.argsort(shipped, kind="stable"), np.argsort(own, kind="stable"))
    else:
        np.testing.assert_allclose(shipped, own, rtol=0, atol=1e-12)
    # the calibrator was fitted on out-of-fold scores, one per row
    assert fitted.scores.shape == (3000,)
