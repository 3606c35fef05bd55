"""Purchase-propensity model: gradient-boosted trees with a calibration step, and its baseline.

* ``HistGradientBoostingClassifier`` handles missing values natively (a never-purchased
  customer has no recency), so the exported graph needs no imputer.
* Callers use the output as a probability. The calibration step maps the trees' score
  (log-odds) to it and is what ``CalibratedClassifierCV(ensemble=False)`` fits: a map fitted on
  out-of-fold scores (folds grouped by customer, so a customer's weeks never sit on both sides)
  over the final trees, fitted on every training row. Which map (``CALIBRATIONS``: the trees'
  own probabilities, Platt's sigmoid, the sigmoid weighted by recency) is chosen by validation
  every run (training/propensity_selection.py): recency weights helped on the simulator and
  hurt on Complete Journey, whose test period is a season the training year cannot show.
  Measured alternative to out-of-fold scores: trees on an earlier slice and the calibrator on
  a later one. Under drift that costs the trees the most recent weeks (ROC-AUC 0.845 vs 0.852
  on the 20k-customer simulation) without a better ECE (0.021 vs 0.017).
  Sigmoid rather than isotonic: skl2onnx's isotonic conversion differs from scikit-learn by
  up to 0.03 (measured), and the export's 1e-5 parity check is not negotiable.
* The baseline is what the issue asks: logistic regression on recency and frequency alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV, _CalibratedClassifier, _SigmoidCalibration
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from nudge.contract.manifest import FeatureInput

RECENCY = "customer_stats:days_since_last_purchase"
FREQUENCY = "customer_stats:purchase_count_90d"
CALIBRATION_FOLDS = 3
# The recency-weighted calibrator's half-life in days (the trees weigh all rows alike): the model
# is always used after its training period, and the base rate drifts as customers age and churn.
# On one draw of the 20k-customer simulation (train positive rate 0.58, test 0.50) the weights
# took the test ECE from 0.023 to 0.016 at the same ROC-AUC.
CALIBRATION_HALF_LIFE_DAYS = 28.0


@dataclass(frozen=True)
class Calibration:
    """One map from the trees' score to the shipped probability, fitted on out-of-fold scores."""

    name: str
    description: str
    fitted: bool  # False: the trees' own probabilities (the identity sigmoid, nothing fitted)
    recency_weighted: bool


# Simplest first: validation ships the first within noise of the best (training/propensity_selection.py).
CALIBRATIONS = (
    Calibration("trees", "the trees' own probabilities (no calibrator)", False, False),
    Calibration("sigmoid", "sigmoid (Platt) on the out-of-fold scores, rows alike", True, False),
    Calibration(
        "sigmoid+recency",
        f"sigmoid on the out-of-fold scores, rows weighted by recency (half-life {CALIBRATION_HALF_LIFE_DAYS:g} days)",
        True,
        True,
    ),
)
PLATT = CALIBRATIONS[1]

# The trees' settings. Smaller leaves with more rows each than scikit-learn's defaults: on both
# tracks (20k simulated customers, CDNOW at H = 14 d) 15 leaves of >= 400 rows ranked better than
# 31 of >= 100 (ROC-AUC +0.0015 and +0.009, same fit time; docs/benchmarks.md).
TREE_SETTINGS: dict[str, Any] = {
    "learning_rate": 0.1,
    "max_iter": 300,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 400,
    "l2_regularization": 1.0,
    "early_stopping": True,
    "validation_fraction": 0.1,
    "n_iter_no_change": 20,
}


def propensity_trees(seed: int) -> HistGradientBoostingClassifier:
    """The uncalibrated trees of every propensity model (shipped and compared alike)."""
    return HistGradientBoostingClassifier(**TREE_SETTINGS, random_state=seed)


def trainable(x: np.ndarray) -> np.ndarray:
    """``x`` with every all-missing column set to 0.

    scikit-learn's binning fails on a column with no values at all (purchases-only data has
    no open rates). A constant column is never split on, so the trees ignore that input, as
    they must: at serving time it is missing too."""
    return np.where(np.isnan(x).all(axis=0), np.float32(0.0), x)


@dataclass(frozen=True)
class CrossFitted:
    """The trees on every training row and the out-of-fold scores any calibration is fitted on."""

    trees: HistGradientBoostingClassifier
    scores: np.ndarray  # per training row: log-odds of trees that never saw that row's customer

    def calibrated(
        self, calibration: Calibration, y: np.ndarray, cutoffs: pd.Series | None = None
    ) -> CalibratedClassifierCV:
        """The shipped model: these trees behind ``calibration`` fitted on all out-of-fold scores
        (``cutoffs``, the rows' cutoff times, weigh them if the calibration is recency-weighted)."""
        return calibrated_trees(self.trees, fit_calibrator(calibration, self.scores, y, cutoffs))


def cross_fit(x: np.ndarray, y: np.ndarray, customers: np.ndarray, seed: int) -> CrossFitted:
    """Out-of-fold scores (``customers`` groups the folds) and the trees on all rows.

    What ``CalibratedClassifierCV(ensemble=False)`` computes inside its fit, kept here so that
    every calibration candidate is fitted on the same scores without refitting a tree."""
    x = trainable(x)
    # Integer group codes: GroupKFold's np.isin over string ids took ~45 s of a 60 s fit on
    # 200k rows (measured); the codes name the same groups.
    groups = pd.factorize(customers)[0]
    folds = GroupKFold(CALIBRATION_FOLDS, shuffle=True, random_state=seed)
    scores = cross_val_predict(
        propensity_trees(seed), x, y, groups=groups, cv=folds, method="decision_function"
    )
    trees = propensity_trees(seed).fit(x, y)
    snap_thresholds_to_float32(trees)
    return CrossFitted(trees, np.asarray(scores, dtype=np.float64))


def fit_propensity(
    x: np.ndarray,
    y: np.ndarray,
    customers: np.ndarray,
    seed: int,
    calibration: Calibration = PLATT,
    cutoffs: pd.Series | None = None,
) -> CalibratedClassifierCV:
    """Calibrated trees on all training rows with a given ``calibration`` (the training run
    chooses it by validation instead: training/train.py)."""
    return cross_fit(x, y, customers, seed).calibrated(calibration, y, cutoffs)


def fit_calibrator(
    calibration: Calibration, scores: np.ndarray, y: np.ndarray, cutoffs: pd.Series | None = None
) -> _SigmoidCalibration:
    """``calibration`` fitted on out-of-fold ``scores``: a sigmoid p = 1 / (1 + exp(a f + b)) of the
    trees' log-odds f, so every candidate exports as the same graph (a = -1, b = 0: the trees'
    own probabilities). A recency-weighted one needs the rows' ``cutoffs``."""
    calibrator = _SigmoidCalibration()
    if not calibration.fitted:
        calibrator.a_, calibrator.b_ = -1.0, 0.0
        return calibrator
    weight = None
    if calibration.recency_weighted:
        if cutoffs is None:
            raise ValueError(f"calibration {calibration.name!r} weighs rows by recency: pass their cutoffs")
        weight = recency_weights(cutoffs)
    return calibrator.fit(scores, y, sample_weight=weight)


def calibrated_trees(
    trees: HistGradientBoostingClassifier, calibrator: _SigmoidCalibration
) -> CalibratedClassifierCV:
    """The fitted ``CalibratedClassifierCV(method="sigmoid", ensemble=False)`` of ``trees`` and
    ``calibrator``: the attributes its own fit sets (ONNX export and TreeSHAP read them), built
    from parts so that the calibrator can be chosen after the trees are fitted. The two parts are
    scikit-learn's private classes (stable over the 1.6-1.9 that pyproject allows); the export
    parity tests would catch a change."""
    model = CalibratedClassifierCV(trees, method="sigmoid", ensemble=False)
    model.calibrated_classifiers_ = [
        _CalibratedClassifier(trees, [calibrator], classes=trees.classes_, method="sigmoid")
    ]
    model.classes_ = trees.classes_
    model.n_features_in_ = trees.n_features_in_
    return model


def calibrated_of(model: Any) -> CalibratedClassifierCV:
    """The calibrated trees of a propensity model: the model itself, or its pipeline's last step
    (after the purchase-process columns, training/purchase_process.py)."""
    calibrated: CalibratedClassifierCV = model[-1] if isinstance(model, Pipeline) else model
    return calibrated


def tree_inputs(model: Any, x: np.ndarray) -> np.ndarray:
    """What the trees of ``model`` read for the model inputs ``x`` (the pipeline's columns added)."""
    return np.asarray(model[:-1].transform(x)) if isinstance(model, Pipeline) else x


def trees_of(model: Any) -> HistGradientBoostingClassifier:
    """The fitted trees behind the calibrator (for the uncalibrated score and the round count)."""
    trees: HistGradientBoostingClassifier = calibrated_of(model).calibrated_classifiers_[0].estimator
    return trees


def snap_thresholds_to_float32(model: HistGradientBoostingClassifier) -> None:
    """Round every split threshold down to the nearest float32, in place.

    The server feeds float32 and ONNX compares in float32, while scikit-learn compares in
    float64 against float64 midpoints. For a float32 input x, ``x <= t`` is the same as
    ``x <= float32_floor(t)``, so after snapping both runtimes take the same branch on every
    input and the predictions on float32 data are unchanged.
    """
    for stage in model._predictors:
        for predictor in stage:
            thresholds = predictor.nodes["num_threshold"]
            snapped = thresholds.astype(np.float32)
            above = snapped.astype(np.float64) > thresholds
            snapped[above] = np.nextafter(snapped[above], np.float32(-np.inf))
            predictor.nodes["num_threshold"] = snapped.astype(np.float64)


def fit_recency_frequency_baseline(
    x: np.ndarray, y: np.ndarray, layout: Sequence[FeatureInput]
) -> tuple[Pipeline, list[int]]:
    """Logistic regression on log recency and log frequency (missing recency flagged).

    Returns the model and the input columns it reads.
    """
    columns = column_indices(layout, [RECENCY, FREQUENCY])
    model = make_pipeline(
        FunctionTransformer(_signed_log1p),
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(max_iter=1000),
    ).fit(x[:, columns], y)
    return model, columns


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def column_indices(layout: Sequence[FeatureInput], refs: Sequence[str]) -> list[int]:
    """First input column of each named scalar feature; a missing feature is an error."""
    starts, column = {}, 0
    for feature in layout:
        starts[feature.ref] = column
        column += feature.size
    missing = [ref for ref in refs if ref not in starts]
    if missing:
        raise KeyError(f"features {missing} are not in the model inputs {list(starts)}")
    return [starts[ref] for ref in refs]


def recency_weights(cutoffs: pd.Series, half_life_days: float = CALIBRATION_HALF_LIFE_DAYS) -> np.ndarray:
    """0.5 ** (days before the latest cutoff / half-life): 1 for the latest training rows."""
    age = (cutoffs.max() - cutoffs) / pd.Timedelta(days=1)
    return np.asarray(0.5 ** (age.to_numpy(np.float64) / half_life_days))


def positive_probability(model: ClassifierMixin, x: np.ndarray) -> np.ndarray:
    """P(purchase within the horizon) for each row."""
    return np.asarray(model.predict_proba(x))[:, 1]
