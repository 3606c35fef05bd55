"""Send-time model: 168 local hour-of-week probabilities from the engagement histograms.

The chosen structure, ``SlotMixture``, is an evidence-weighted mixture of distributions:

    p(slot) = Σ_j λ_j(n) · φ_j(slot),    λ(n) = softmax_j(a_j + c_j · log1p(n))

over the customer's own routine, read several ways, and the population:

    φ_week      the customer's hour-of-week histogram itself
    φ_smooth    the same, smoothed over the neighbouring hours (a routine drifts by an hour)
    φ_separable own hour-of-day × own day-of-week (24 + 7 numbers are far better estimated
                from a few dozen engagements than 168 cells)
    φ_hour      own hour-of-day × the population's day-of-week given that hour
    φ_*_smooth  φ_separable and φ_hour with the hour-of-day histogram smoothed over the
                neighbouring hours first (binomial kernel, sd 1 h): routines are smooth in
                the time of day, and a few engagements only hint at the band they come from
    φ_split     as φ_separable_smooth, but with one hour-of-day profile for weekdays and
                another for the weekend (routines shift at the weekend)
    φ_prior     the population's hour-of-week distribution (add-one smoothed)

``n`` is the number of engagements behind the histograms, so the model learns how far to
trust a customer's own routine as evidence accumulates; a customer with no history
(missing inputs, n = 0) gets exactly the population distribution. Fourteen weights (a_j, c_j
of the seven own components; the prior is the reference) are fitted by maximum likelihood after
the prior is counted, so it trains in seconds on any data set, has little to overfit, and
costs about 0.02 ms per customer in onnxruntime. Every slot gets a probability (the prior is
add-one smoothed), so all 168 outputs exist even for a slot no training engagement fell in.

It was chosen over multinomial logistic regression and a small MLP on the same inputs by
hit@3 on the selection period (``nudge train --compare-send-time`` refits those and puts the
comparison in the report): a 168-way classifier must learn from data that "slot s in the
histogram predicts slot s", 168 × 200 weights, where the mixture has that structure built in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline

from nudge.contract.manifest import FeatureInput
from training.labels import HOURS, SLOTS

DAYS = SLOTS // HOURS
WEEK = "customer_time_histograms:hist_hour_of_week"
HOUR = "customer_time_histograms:hist_hour_of_day"
DAY = "customer_time_histograms:hist_day_of_week"
EVIDENCE = "customer_time_histograms:hist_event_count"
COMPONENTS = ("week", "smooth", "separable", "separable_smooth", "split", "hour", "hour_smooth", "prior")
TINY = 1e-12  # a part of the week without engagements has zero mass (and zero days)
WEEKEND = (5, 6)  # Saturday, Sunday: routines differ between weekdays and the weekend
CHUNK = 8192  # rows per block of component arrays
SMOOTHING_KERNEL = (0.25, 0.5, 0.25)  # previous hour, same hour, next hour (circular over the week)
HOUR_KERNEL = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)  # hours -2..+2 (circular over the day)


def _slot_maps(prior: np.ndarray) -> dict[str, np.ndarray]:
    """Fixed matrices that turn histograms into per-slot components by one matmul each."""
    slots = np.arange(SLOTS)
    hour_to_slot = np.zeros((HOURS, SLOTS))
    hour_to_slot[slots % HOURS, slots] = 1.0
    day_to_slot = np.zeros((DAYS, SLOTS))
    day_to_slot[slots // HOURS, slots] = 1.0
    smooth = np.zeros((SLOTS, SLOTS))
    for offset, weight in zip((-1, 0, 1), SMOOTHING_KERNEL, strict=True):
        smooth[(slots + offset) % SLOTS, slots] += weight
    hours = np.arange(HOURS)
    smooth_hour = np.zeros((HOURS, HOURS))
    for offset, weight in zip(range(-2, 3), HOUR_KERNEL, strict=True):
        smooth_hour[(hours + offset) % HOURS, hours] += weight
    weekend = np.isin(np.arange(DAYS), WEEKEND)
    same_part = (weekend[:, None] == weekend[None, :]).astype(np.float64)
    by_day_hour = prior.reshape(DAYS, HOURS)
    day_given_hour = (by_day_hour / by_day_hour.sum(axis=0, keepdims=True)).reshape(SLOTS)
    hour_to_slot_prior = hour_to_slot * day_given_hour[None, :]
    return {
        "hour_to_slot": hour_to_slot,
        "day_to_slot": day_to_slot,
        "smooth": smooth,
        "hour_to_slot_prior": hour_to_slot_prior,
        "smooth_hour_to_slot": smooth_hour @ hour_to_slot,
        "smooth_hour_to_slot_prior": smooth_hour @ hour_to_slot_prior,
        # week -> per slot: the smoothed hour-of-day mass of the slot's part of the week
        # (weekdays or weekend); day -> per slot: the mass of that part of the week
        "part_hours": np.kron(same_part, smooth_hour),
        "part_mass": same_part @ day_to_slot,
    }


class SlotMixture(ClassifierMixin, BaseEstimator):
    """Evidence-weighted mixture over slot distributions (see module docstring).

    ``week``, ``hour``, ``day``: input columns of the three histograms; ``evidence``: the
    column of the engagement count behind them. Other inputs are ignored.
    """

    def __init__(
        self,
        week: Sequence[int] = (),
        hour: Sequence[int] = (),
        day: Sequence[int] = (),
        evidence: int = 0,
        prior_pseudo_count: float = 1.0,
    ) -> None:
        self.week = week
        self.hour = hour
        self.day = day
        self.evidence = evidence
        self.prior_pseudo_count = prior_pseudo_count

    def fit(self, x: np.ndarray, y: np.ndarray) -> SlotMixture:
        """Prior from label frequencies (add-one), then the λ weights by maximum likelihood."""
        y = np.asarray(y, dtype=np.int64)
        self.classes_ = np.arange(SLOTS)
        self.n_features_in_ = x.shape[1]
        counts = np.bincount(y, minlength=SLOTS) + self.prior_pseudo_count
        self.prior_ = counts / counts.sum()
        log_n = self._log_evidence(x)
        at_label = np.vstack(  # (n, J): each component's probability of the row's label
            [
                comps[np.arange(len(ys)), :, ys]
                for comps, ys in zip(self._chunks(x), np.array_split(y, self._splits(x)), strict=True)
            ]
        )

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            weights = _softmax(self._logits(theta, log_n))
            p = np.maximum((weights * at_label).sum(axis=1), 1e-300)
            # d(-mean log p)/d logits_j = -w_j (φ_j(label) − p) / p
            g_logits = -weights * (at_label - p[:, None]) / p[:, None] / len(y)
            grad = np.concatenate(
                [g_logits[:, :-1].sum(axis=0), (g_logits[:, :-1] * log_n[:, None]).sum(axis=0)]
            )
            return float(-np.mean(np.log(p))), grad

        start = np.zeros(2 * (len(COMPONENTS) - 1))
        result = minimize(loss, start, jac=True, method="L-BFGS-B")
        self.theta_ = result.x
        return self

    @staticmethod
    def _logits(theta: np.ndarray, log_n: np.ndarray) -> np.ndarray:
        """Component logits; the last component (the prior) is the reference at 0."""
        own = len(COMPONENTS) - 1
        logits = np.zeros((len(log_n), len(COMPONENTS)))
        logits[:, :own] = theta[:own][None, :] + log_n[:, None] * theta[own:][None, :]
        return logits

    def _log_evidence(self, x: np.ndarray) -> np.ndarray:
        """log1p of the engagement count (missing = 0)."""
        return np.log1p(np.maximum(np.nan_to_num(x[:, self.evidence].astype(np.float64)), 0.0))

    @staticmethod
    def _splits(x: np.ndarray) -> list[int]:
        return list(range(CHUNK, len(x), CHUNK))

    def _chunks(self, x: np.ndarray) -> Iterator[np.ndarray]:
        """Components of CHUNK rows at a time: (rows, J, 168) in float64 is large."""
        for part in np.array_split(x, self._splits(x)):
            yield self._components(part)

    def _components(self, x: np.ndarray) -> np.ndarray:
        """(n, J, 168) component distributions; no history (n = 0) → every component = prior."""
        maps = _slot_maps(self.prior_)
        clean = np.where(np.isnan(x), 0.0, x.astype(np.float64))
        n = np.maximum(clean[:, self.evidence], 0.0)
        week, hour, day = (clean[:, list(cols)] for cols in (self.week, self.hour, self.day))
        by_day = day @ maps["day_to_slot"]
        own = np.stack(
            [
                week,
                week @ maps["smooth"],
                (hour @ maps["hour_to_slot"]) * by_day,
                (hour @ maps["smooth_hour_to_slot"]) * by_day,
                (week @ maps["part_hours"]) * by_day / np.maximum(day @ maps["part_mass"], TINY),
                hour @ maps["hour_to_slot_prior"],
                hour @ maps["smooth_hour_to_slot_prior"],
            ],
            axis=1,
        )
        has = (n > 0)[:, None, None]
        own = np.where(has, own, self.prior_[None, None, :])
        prior = np.broadcast_to(self.prior_, (len(x), 1, SLOTS))
        return np.concatenate([own, prior], axis=1)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        weights = _softmax(self._logits(self.theta_, self._log_evidence(x)))
        parts = np.array_split(weights, self._splits(x))
        return np.vstack([np.einsum("nj,njs->ns", w, c) for w, c in zip(parts, self._chunks(x), strict=True)])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.predict_proba(x).argmax(axis=1))

    def component_weights(self, engagements: Sequence[float]) -> dict[str, list[float]]:
        """λ_j at a few evidence levels: how far the fitted model trusts each component."""
        weights = _softmax(self._logits(self.theta_, np.log1p(np.asarray(engagements, dtype=np.float64))))
        return {name: [round(float(w), 4) for w in weights[:, j]] for j, name in enumerate(COMPONENTS)}


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _mixture_shapes(operator: Any) -> None:
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType

    rows = operator.inputs[0].type.shape[0]
    operator.outputs[0].type = Int64TensorType([rows])
    operator.outputs[1].type = FloatTensorType([rows, SLOTS])


def _mixture_converter(scope: Any, operator: Any, container: Any) -> None:
    """``SlotMixture.predict_proba`` in ONNX operators (float32): gathers, matmuls, a softmax."""
    from onnx import TensorProto
    from skl2onnx.algebra.onnx_ops import (
        OnnxAdd,
        OnnxArgMax,
        OnnxCast,
        OnnxConcat,
        OnnxDiv,
        OnnxGather,
        OnnxGreater,
        OnnxIsNaN,
        OnnxLog,
        OnnxMatMul,
        OnnxMax,
        OnnxMul,
        OnnxReshape,
        OnnxSoftmax,
        OnnxWhere,
    )

    model: SlotMixture = operator.raw_operator
    opv = container.target_opset
    maps = _slot_maps(model.prior_)

    def const(values: Any) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)

    def columns(tensor: Any, idx: Sequence[int]) -> Any:
        return OnnxGather(tensor, np.asarray(list(idx), dtype=np.int64), axis=1, op_version=opv)

    def matmul(tensor: Any, matrix: np.ndarray) -> Any:
        return OnnxMatMul(tensor, const(matrix), op_version=opv)

    x = operator.inputs[0]
    clean = OnnxWhere(OnnxIsNaN(x, op_version=opv), const([0.0]), x, op_version=opv)
    n = OnnxMax(columns(clean, [model.evidence]), const([0.0]), op_version=opv)  # (N, 1)
    week, hour, day = (columns(clean, cols) for cols in (model.week, model.hour, model.day))
    by_day = matmul(day, maps["day_to_slot"])
    own = [
        week,
        matmul(week, maps["smooth"]),
        OnnxMul(matmul(hour, maps["hour_to_slot"]), by_day, op_version=opv),
        OnnxMul(matmul(hour, maps["smooth_hour_to_slot"]), by_day, op_version=opv),
        OnnxDiv(
            OnnxMul(matmul(week, maps["part_hours"]), by_day, op_version=opv),
            OnnxMax(matmul(day, maps["part_mass"]), const([TINY]), op_version=opv),
            op_version=opv,
        ),
        matmul(hour, maps["hour_to_slot_prior"]),
        matmul(hour, maps["smooth_hour_to_slot_prior"]),
    ]
    has = OnnxGreater(n, const([0.0]), op_version=opv)
    prior = const(model.prior_[None, :])
    mixed = [OnnxWhere(has, component, prior, op_version=opv) for component in own]
    prior_rows = OnnxAdd(OnnxMul(week, const([0.0]), op_version=opv), prior, op_version=opv)
    stacked = OnnxReshape(
        OnnxConcat(*mixed, prior_rows, axis=1, op_version=opv),
        np.array([-1, len(COMPONENTS), SLOTS], dtype=np.int64),
        op_version=opv,
    )
    k = len(COMPONENTS) - 1
    log_n = OnnxLog(OnnxAdd(n, const([1.0]), op_version=opv), op_version=opv)
    # logits (N, J): [a + c·log_n, 0] as log_n @ [c, 0] + [a, 0]
    logits = OnnxAdd(
        matmul(log_n, np.append(model.theta_[k:], 0.0)[None, :]),
        const(np.append(model.theta_[:k], 0.0)),
        op_version=opv,
    )
    weights = OnnxReshape(
        OnnxSoftmax(logits, axis=1, op_version=opv),
        np.array([-1, 1, len(COMPONENTS)], dtype=np.int64),
        op_version=opv,
    )
    probs = OnnxReshape(
        OnnxMatMul(weights, stacked, op_version=opv),
        np.array([-1, SLOTS], dtype=np.int64),
        op_version=opv,
        output_names=[operator.outputs[1]],
    )
    label = OnnxCast(
        OnnxArgMax(probs, axis=1, keepdims=0, op_version=opv),
        to=TensorProto.INT64,
        op_version=opv,
        output_names=[operator.outputs[0]],
    )
    probs.add_to(scope, container)
    label.add_to(scope, container)


def register_converter() -> None:
    """Teach skl2onnx to convert ``SlotMixture`` (idempotent)."""
    from skl2onnx import update_registered_converter

    update_registered_converter(
        SlotMixture,
        "NudgeSlotMixture",
        _mixture_shapes,
        _mixture_converter,
        options={"zipmap": [False, True]},
    )


def mixture_for(layout: Sequence[FeatureInput]) -> SlotMixture:
    """A ``SlotMixture`` reading the histogram columns of a manifest layout."""
    spans, column = {}, 0
    for feature in layout:
        spans[feature.ref] = list(range(column, column + feature.size))
        column += feature.size
    missing = [ref for ref in (WEEK, HOUR, DAY, EVIDENCE) if ref not in spans]
    if missing or [len(spans[r]) for r in (WEEK, HOUR, DAY)] != [SLOTS, HOURS, DAYS]:
        raise KeyError(
            f"send-time inputs need {WEEK}[168], {HOUR}[24], {DAY}[7], {EVIDENCE}; missing {missing}"
        )
    return SlotMixture(tuple(spans[WEEK]), tuple(spans[HOUR]), tuple(spans[DAY]), spans[EVIDENCE][0])


@dataclass(frozen=True)
class Candidate:
    """One send-time structure to compare: a name, what it is, how to build it."""

    name: str
    description: str

    def build(self, layout: Sequence[FeatureInput], seed: int) -> Any:
        if self.name == "mixture":
            return mixture_for(layout)
        # The generic classifiers see every input; missing → 0, as for a customer without history.
        impute = SimpleImputer(strategy="constant", fill_value=0.0, keep_empty_features=True)
        if self.name == "linear":
            return make_pipeline(impute, LogisticRegression(max_iter=200))
        if self.name == "mlp":
            return make_pipeline(
                impute,
                MLPClassifier(
                    hidden_layer_sizes=(64,),
                    batch_size=512,
                    max_iter=30,
                    early_stopping=True,
                    n_iter_no_change=3,
                    random_state=seed,
                ),
            )
        raise ValueError(f"unknown send-time candidate {self.name!r}")


MIXTURE = Candidate("mixture", "evidence-weighted mixture of own histograms and the population prior")
ALTERNATIVES = (
    Candidate("linear", "multinomial logistic regression over all inputs (168 classes)"),
    Candidate("mlp", "MLP, one hidden layer of 64 ReLU, over all inputs (168 classes)"),
)


def with_smoothing_prior(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Append one cold-start (all-missing) pseudo-engagement per slot so every slot is a class.

    The mixture smooths its own prior; the generic classifiers only know the classes they saw.
    """
    prior_x = np.full((SLOTS, x.shape[1]), np.nan, dtype=x.dtype)
    return np.vstack([x, prior_x]), np.concatenate([y, np.arange(SLOTS)])


def fit_send_time(
    candidate: Candidate, layout: Sequence[FeatureInput], x: np.ndarray, y: np.ndarray, seed: int
) -> Any:
    """Fit one candidate on engagements ``x`` (manifest layout) with slot labels ``y``."""
    model = candidate.build(layout, seed)
    if candidate is MIXTURE:
        model.fit(x, y)
    else:
        model.fit(*with_smoothing_prior(x, y))
    if not np.array_equal(model.classes_, np.arange(SLOTS)):
        raise AssertionError("send-time classes are not the 168 slots in order")
    return model
