"""Reason tables for the propensity: a binned-mean-Shapley surrogate the server can afford.

What is attributed: the *calibrated* log-odds, logit(P(purchase)). The calibrator is a sigmoid
on the trees' raw score f (``p = expit(-(a f + b))``), so logit(p) = -a f - b is linear in f
and its exact Shapley values are -a times those of f: every contribution here is in calibrated
log-odds, and the contributions of a row add up (exactly, for the Shapley values; about, for
the tables) to logit(p) minus the population's expected logit.

Reference: exact path-dependent TreeSHAP (``shap.TreeExplainer`` on the fitted
``HistGradientBoostingClassifier``; exact Shapley values of the trees' conditional-expectation
game, the expectations taken over the training rows each node saw, missing values following
the trees' learned branch). It costs about a millisecond per row in C++ and needs ``shap``,
so the server uses a surrogate fitted here:

* one table per input column: bin edges = the split thresholds the trees use on that column
  (the model is constant between consecutive thresholds along one column), thinned to at most
  ``MAX_EDGES`` at the sample's quantiles, plus one bin for a missing value (NaN);
* each bin's value = the mean exact Shapley value of that column over the sample rows in the
  bin ("binned mean Shapley": the best per-column step function, in squared error, for
  predicting the column's Shapley value from its own value alone). Empty bins take the value
  interpolated from their non-empty neighbours; a missing bin no sample row falls in is 0.

The tables ignore interactions (a column's Shapley value also depends on the other columns),
which is what they lose against the exact values: the test (tests/integration/test_reasons.py)
measures the agreement of the top reason on held-out rows. Measured on 800 simulated
customers, an interaction-aware variant (a 2-D table per column with its best partner column)
gained 3 to 4 points of top-1 agreement only, not worth the larger artefact.

The JSON written beside the model (``REASONS_FILE``, read by service/reasons.py):

    {"format": REASONS_FORMAT, "model_sha256": <the ONNX file's sha256>, "units": "calibrated log-odds",
     "method": "...", "expected_log_odds": float, "sample_rows": int,
     "columns": [{"ref": "view:feature", "edges": [float32 ...], "values": [len(edges) + 1],
                  "missing": float}, ...]}   # one per input column, in model-input order

A value x falls in bin i when edges[i - 1] < x <= edges[i] (the trees' ``x <= threshold``).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nudge.contract.manifest import REASONS_FILE, REASONS_FORMAT, FeatureInput, input_columns

MAX_EDGES = 63  # + 1 bin above the last edge = 64 value bins per column, plus the missing bin
SAMPLE_ROWS = 5_000  # training rows whose exact Shapley values fit the tables (~10 s of TreeSHAP)
METHOD = (
    "binned mean of exact path-dependent TreeSHAP values (shap.TreeExplainer) of the calibrated "
    "log-odds over a training sample; bins = the trees' split thresholds per column, NaN its own bin"
)


def log_odds_scale(model: Any) -> tuple[float, float]:
    """(-a, -b) of the sigmoid calibrator: calibrated logit(p) = -a f - b for the trees' score f."""
    from training.propensity import calibrated_of

    (member,) = calibrated_of(model).calibrated_classifiers_  # ensemble=False: one calibrated classifier
    (calibrator,) = member.calibrators
    return -float(calibrator.a_), -float(calibrator.b_)


def exact_shapley(model: Any, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact Shapley values [n, input columns] of the calibrated log-odds, and their base value.

    Path-dependent TreeSHAP on the trees (``shap``), scaled by the calibrator's slope; for each
    row ``phi.sum() + base == logit(model.predict_proba(x)[:, 1])`` up to rounding. When the
    trees also read purchase-process columns (derived from three inputs inside the model,
    training/purchase_process.py), those columns' values are credited to the three inputs in
    equal shares: the server sees only the inputs, and the sum is unchanged."""
    with warnings.catch_warnings():
        # shap's plotting colours call matplotlib APIs it deprecates, on import: nothing to act on.
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module=r"shap\.")
        import shap

    from training.propensity import tree_inputs, trees_of

    trees = trees_of(model)
    slope, intercept = log_odds_scale(model)
    explainer = shap.TreeExplainer(trees)
    inputs = np.asarray(tree_inputs(model, x), dtype=np.float64)
    phi = np.asarray(explainer.shap_values(inputs, check_additivity=False))
    base = float(np.ravel(explainer.expected_value)[0])
    width = x.shape[1]
    credited = phi[:, :width].copy()
    sources = derived_from(model)
    if sources:
        credited[:, sources] += phi[:, width:].sum(axis=1, keepdims=True) / len(sources)
    return slope * credited, slope * base + intercept


def derived_from(model: Any) -> list[int]:
    """The input columns the model's purchase-process columns are computed from (none without)."""
    from training.purchase_process import PurchaseProcess

    steps = getattr(model, "steps", [])
    return [c for _, step in steps if isinstance(step, PurchaseProcess) for c in step.columns]


def split_thresholds(model: Any, n_columns: int) -> list[np.ndarray]:
    """The sorted distinct split thresholds of the trees, per input column (the first
    ``n_columns`` of what the trees read)."""
    from training.propensity import trees_of

    trees = trees_of(model)
    found: list[list[np.ndarray]] = [[] for _ in range(trees.n_features_in_)]
    for stage in trees._predictors:
        for predictor in stage:
            nodes = predictor.nodes
            split = ~nodes["is_leaf"].astype(bool)
            for column, threshold in zip(
                nodes["feature_idx"][split], nodes["num_threshold"][split], strict=True
            ):
                found[int(column)].append(threshold)
    return [np.unique(np.asarray(t, dtype=np.float32)) for t in found[:n_columns]]


def quantile_edges(values: np.ndarray, limit: int = MAX_EDGES) -> np.ndarray:
    """Distinct float32 quantiles of the non-missing ``values``: edges for a column the trees'
    own thresholds describe poorly."""
    seen = values[~np.isnan(values)]
    if not len(seen):
        return np.empty(0, dtype=np.float32)
    return np.unique(np.quantile(seen, np.linspace(0, 1, limit + 2)[1:-1]).astype(np.float32))


def thinned(edges: np.ndarray, values: np.ndarray, limit: int = MAX_EDGES) -> np.ndarray:
    """At most ``limit`` of ``edges``: those at (the first at or above) the quantiles of ``values``."""
    if len(edges) <= limit:
        return edges
    seen = values[~np.isnan(values)]
    if not len(seen):
        return edges[np.linspace(0, len(edges) - 1, limit).round().astype(int)]
    quantiles = np.quantile(seen, np.linspace(0, 1, limit + 2)[1:-1])
    at = np.minimum(np.searchsorted(edges, quantiles), len(edges) - 1)
    return edges[np.unique(at)]


def bin_index(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin of each value (``edges[i - 1] < x <= edges[i]``); NaN -> ``len(edges) + 1``."""
    return np.where(np.isnan(values), len(edges) + 1, np.searchsorted(edges, values, side="left"))


def binned_means(edges: np.ndarray, values: np.ndarray, phi: np.ndarray) -> tuple[list[float], float]:
    """Mean of ``phi`` per value bin (empty bins interpolated) and in the missing bin (0 if empty)."""
    n_bins = len(edges) + 2
    bins = bin_index(edges, values)
    counts = np.bincount(bins, minlength=n_bins)
    means = np.bincount(bins, weights=phi, minlength=n_bins) / np.maximum(counts, 1)
    body, filled = means[:-1], counts[:-1] > 0
    if filled.any() and not filled.all():
        at = np.arange(len(body))
        body = np.where(filled, body, np.interp(at, at[filled], body[filled]))
    elif not filled.any():
        body = np.zeros_like(body)
    missing = float(means[-1]) if counts[-1] else 0.0
    return [float(v) for v in body], missing


def fit_reason_tables(
    model: Any,
    x: np.ndarray,
    features: Sequence[FeatureInput],
    seed: int,
    sample_rows: int = SAMPLE_ROWS,
) -> dict[str, Any]:
    """The reason tables (the JSON document of the module docstring, without ``model_sha256``)
    of a fitted propensity model (training/propensity.py), from a seeded sample of its training
    rows ``x``."""
    refs = input_columns(features)
    if x.shape[1] != len(refs):
        raise ValueError(f"x has {x.shape[1]} columns, the features {len(refs)}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(x), min(sample_rows, len(x)), replace=False))
    sample = np.asarray(x[rows], dtype=np.float32)
    phi, base = exact_shapley(model, sample)
    sources = derived_from(model)
    columns = []
    for j, (ref, edges) in enumerate(zip(refs, split_thresholds(model, len(refs)), strict=True)):
        if j in sources:  # credited the derived columns too: its own splits alone may be few
            edges = np.union1d(edges, quantile_edges(sample[:, j]))
        kept = thinned(edges, sample[:, j].astype(np.float64))
        values, missing = binned_means(kept.astype(np.float64), sample[:, j].astype(np.float64), phi[:, j])
        columns.append({"ref": ref, "edges": [float(e) for e in kept], "values": values, "missing": missing})
    return {
        "format": REASONS_FORMAT,
        "units": "calibrated log-odds",
        "method": METHOD,
        "expected_log_odds": base,
        "sample_rows": len(rows),
        "columns": columns,
    }


def write_reason_tables(version_dir: Path, tables: dict[str, Any], onnx_bytes: bytes) -> Path:
    """Write ``tables`` as ``version_dir/REASONS_FILE``, bound to the model by its sha256."""
    document = {**tables, "model_sha256": hashlib.sha256(onnx_bytes).hexdigest()}
    path = version_dir / REASONS_FILE
    path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    return path
