"""Purchase-propensity model: gradient-boosted trees with a calibration step, and its baseline.

* ``HistGradientBoostingClassifier`` handles missing values natively (a never-purchased
  customer has no recency), so the exported graph needs no imputer.
* Callers use the output as a probability, so a sigmoid (Platt) calibrator maps the trees'
  score to a probability: ``CalibratedClassifierCV(ensemble=False)`` fits it on out-of-fold
  scores (folds grouped by customer, so a customer's weeks never sit on both sides) and the
  final trees on every training row. Measured alternative: trees on an earlier slice and the
  calibrator on a later one. Under drift that costs the trees the most recent weeks (ROC-AUC
  0.845 vs 0.852 on the 20k-customer simulation) without a better ECE (0.021 vs 0.017).
  Sigmoid rather than isotonic: skl2onnx's isotonic conversion differs from scikit-learn by
  up to 0.03 (measured), and the export's 1e-5 parity check is not negotiable.
* The calibrator weighs the training rows by recency (``CALIBRATION_HALF_LIFE_DAYS``), so
  its probabilities track the latest base rate; the trees still learn from every row.
* The baseline is what the issue asks: logistic regression on recency and frequency alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn import config_context
from sklearn.base import ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from nudge.contract.manifest import FeatureInput

RECENCY = "customer_stats:days_since_last_purchase"
FREQUENCY = "customer_stats:purchase_count_90d"
CALIBRATION_FOLDS = 3
# The calibrator weighs training rows by recency (half-life in days; the trees weigh all alike):
# the model is always used after its training period, and the base rate drifts as customers
# age and churn. On one draw of the 20k-customer simulation (train positive rate 0.58, test
# 0.50) this took the test ECE from 0.023 to 0.016 at the same ROC-AUC.
CALIBRATION_HALF_LIFE_DAYS = 28.0


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


def fit_propensity(
    x: np.ndarray,
    y: np.ndarray,
    customers: np.ndarray,
    seed: int,
    calibration_weight: np.ndarray | None = None,
) -> CalibratedClassifierCV:
    """Calibrated trees on all training rows; ``customers`` groups the calibration folds.

    ``calibration_weight`` (optional) weights the rows in the calibrator's fit only; the
    trees always weigh every row alike."""
    x = trainable(x)
    # Integer group codes: GroupKFold's np.isin over string ids took ~45 s of a 60 s fit on
    # 200k rows (measured); the codes name the same groups.
    groups = pd.factorize(customers)[0]
    folds = list(GroupKFold(CALIBRATION_FOLDS, shuffle=True, random_state=seed).split(x, y, groups))
    # Metadata routing sends sample_weight to the calibrator and, as requested here, not to the trees.
    with config_context(enable_metadata_routing=True):
        trees = propensity_trees(seed).set_fit_request(sample_weight=False)
        model = CalibratedClassifierCV(trees, method="sigmoid", cv=folds, ensemble=False).fit(
            x, y, sample_weight=calibration_weight
        )
    for member in model.calibrated_classifiers_:
        snap_thresholds_to_float32(member.estimator)
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
