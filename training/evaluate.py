"""Metrics for both models, the send-time baselines, and the oracle's scores.

Everything here is plain numpy over probabilities and labels, so the model, the baselines
and the oracle are scored by exactly the same code on exactly the same holdout rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from training.labels import HOURS, SLOTS

ECE_BINS = 10  # equal-width probability bins, the usual definition


def roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC-AUC, or None when the holdout has a single class (AUC is undefined)."""
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |observed rate − mean predicted| over equal-width bins, weighted by bin size."""
    index = np.minimum((p * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    gap = np.abs(
        np.bincount(index, weights=y, minlength=bins) - np.bincount(index, weights=p, minlength=bins)
    )
    return float(gap.sum() / max(counts.sum(), 1))


def calibration_curve(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per non-empty bin: mean predicted, observed rate, count (for the reliability plot)."""
    index = np.minimum((p * bins).astype(int), bins - 1)
    frame = pd.DataFrame({"bin": index, "p": p, "y": y}).groupby("bin")
    return [
        {"predicted": float(g["p"].mean()), "observed": float(g["y"].mean()), "count": len(g)}
        for _, g in frame
    ]


def lift_by_decile(y: np.ndarray, p: np.ndarray) -> list[float]:
    """Positive rate of each score decile (highest first) divided by the overall rate."""
    order = np.argsort(-p, kind="stable")
    rate = y.mean() if len(y) else 0.0
    return [float(chunk.mean() / rate) if rate > 0 else 0.0 for chunk in np.array_split(y[order], 10)]


def propensity_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """ROC-AUC, PR-AUC, Brier and ECE of probabilities ``p`` for binary labels ``y``."""
    both = len(np.unique(y)) == 2
    return {
        "roc_auc": roc_auc(y, p),
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        "brier": float(brier_score_loss(y, p, labels=[0, 1])),
        "ece": expected_calibration_error(y, p),
    }


def hit_at_k(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the k highest-scored classes."""
    if not len(labels):
        return float("nan")
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def hour_of_day(probs: np.ndarray) -> np.ndarray:
    """Hour-of-week probabilities folded onto the 24 local hours of the day."""
    return probs.reshape(len(probs), SLOTS // HOURS, HOURS).sum(axis=1)


def send_time_metrics(probs: np.ndarray, slots: np.ndarray) -> dict[str, float]:
    """hit@1/3/6 over 168 slots, hit@3 over 24 hours of the day, and log loss."""
    picked = probs[np.arange(len(slots)), slots]
    return {
        "hit_at_1": hit_at_k(probs, slots, 1),
        "hit_at_3": hit_at_k(probs, slots, 3),
        "hit_at_6": hit_at_k(probs, slots, 6),
        "hod_hit_at_3": hit_at_k(hour_of_day(probs), slots % HOURS, 3),
        "log_loss": float(-np.mean(np.log(np.clip(picked, 1e-15, 1.0)))),
    }


def slot_frequencies(slots: np.ndarray) -> np.ndarray:
    """Share of engagements in each slot (the global popularity baseline's scores)."""
    counts = np.bincount(slots, minlength=SLOTS).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def past_slot_counts(history: pd.DataFrame, queries: pd.DataFrame) -> np.ndarray:
    """For each query (customer_id, engaged_at): counts of that customer's earlier engagements per slot.

    ``history`` holds every engagement (customer_id, engaged_at, slot), train and test alike:
    the modal baseline, like the model, may use everything before the moment it predicts.
    """
    hist = history.sort_values(["customer_id", "engaged_at"], kind="stable")
    codes, uniques = pd.factorize(hist["customer_id"])
    bounds = np.searchsorted(codes, np.arange(len(uniques) + 1))
    code_of = pd.Series(np.arange(len(uniques)), index=uniques)
    q_codes = code_of.reindex(queries["customer_id"]).to_numpy()
    counts = np.zeros((len(queries), SLOTS))
    times = hist["engaged_at"].to_numpy(dtype="datetime64[ns]")
    slots = hist["slot"].to_numpy()
    q_times = queries["engaged_at"].to_numpy(dtype="datetime64[ns]")
    for i in np.flatnonzero(~np.isnan(q_codes)):
        lo, hi = bounds[int(q_codes[i])], bounds[int(q_codes[i]) + 1]
        before = lo + np.searchsorted(times[lo:hi], q_times[i], side="left")
        counts[i] = np.bincount(slots[lo:before], minlength=SLOTS)
    return counts


def modal_scores(past_counts: np.ndarray, global_freq: np.ndarray) -> np.ndarray:
    """The customer's own most frequent past slots, ties and gaps filled by global popularity."""
    return past_counts + global_freq[None, :] * 1e-3
