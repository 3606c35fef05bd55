"""Send-time models: 168 local hour-of-week probabilities from the engagement histograms.

Two structures are fitted on every run and the one with the best hit@3 on a validation period
of the training data is shipped (``select_structure``, ``SELECTION_RULE``; training/train.py
calls it and the report shows the table): which one wins depends on the data, not on a choice
made once on the simulator.

``SlotMixture`` is an evidence-weighted mixture of distributions:

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
costs about 0.03 ms per customer in onnxruntime. Every slot gets a probability (the prior is
add-one smoothed), so all 168 outputs exist even for a slot no training engagement fell in.

``SlotLogit`` is the discriminative candidate, a multinomial logit over the 168 slots whose
score for a slot adds population slot effects (168 constants), the customer's own components
(five of the φ above, as log(1 + φ/eps)) weighted by how much history there is *and how recent
it is* (days since the last engagement), and the hour-of-day and day-of-week histograms times
a weight per slot (31 × 168: population structure such as "morning customers come on
weekdays", which a fixed mixture cannot learn). Its ~5,600 weights are fitted by penalised
maximum likelihood in 100 L-BFGS iterations: it needs more data than the mixture, and reads
population structure and lapsed customers better. Both read only the send_time_v1 inputs
(the histograms, the engagement count, days since the last engagement); the population
tables are constants inside the ONNX graph, not features.

With ``nudge train --compare-send-time`` two generic classifiers join the comparison
(multinomial logistic regression over all inputs, an MLP): a 168-way classifier must learn
from data that "slot s in the histogram predicts slot s", 168 × 200 weights, where the two
structures above have it built in, and on the simulator both generic ones lose.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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
RECENCY = "customer_stats:days_since_last_engagement"
OWN = ("week", "smooth", "separable", "separable_smooth", "split", "hour", "hour_smooth")
# The own components the logit reads: each costs fit time, and the two left out are near-
# duplicates of separable and hour_smooth (the raw week stays: exact routines need it).
LOGIT_OWN = (0, 1, 2, 4, 6)  # week, smooth, separable, split, hour_smooth
COMPONENTS = (*OWN, "prior")
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


class _HistogramColumns(Protocol):
    """Where the three histograms and the engagement count sit among the model's inputs."""

    week: Sequence[int]
    hour: Sequence[int]
    day: Sequence[int]
    evidence: int


def _own_components(
    x: np.ndarray, cols: _HistogramColumns, prior: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The customer's own routine read several ways: (n, 7, 168) distributions in the order
    of ``OWN`` (missing inputs read as 0), and the engagement count behind them (n,)."""
    maps = _slot_maps(prior)
    clean = np.where(np.isnan(x), 0.0, x.astype(np.float64))
    n = np.maximum(clean[:, cols.evidence], 0.0)
    week, hour, day = (clean[:, list(c)] for c in (cols.week, cols.hour, cols.day))
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
    return own, n


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
        own, n = _own_components(x, self, self.prior_)
        own = np.where((n > 0)[:, None, None], own, self.prior_[None, None, :])
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


class SlotLogit(ClassifierMixin, BaseEstimator):
    """Conditional multinomial logit over the 168 slots (see module docstring):

        logit(slot) = b_slot + Σ_k θ_k · log(1 + φ_k(slot) / eps) + Σ_j h_j · W_j,slot
        θ_k = A_k · [has history, log1p(engagements), log1p(days since the last one), that unknown]

    ``b``: population slot effects (168 constants in the graph); ``φ_k``: the customer's own
    components (``LOGIT_OWN`` of the mixture's ``OWN``); ``h``: the hour-of-day and
    day-of-week histograms, whose weights ``W`` (31 × 168) learn population structure such as
    "customers whose hours are mornings come on weekdays". Fitted by penalised maximum likelihood (L-BFGS): ``l2``
    on ``W`` and on ``b``'s distance from the log prior. No history: softmax(b).
    """

    def __init__(
        self,
        week: Sequence[int] = (),
        hour: Sequence[int] = (),
        day: Sequence[int] = (),
        evidence: int = 0,
        recency: int = 0,
        eps: float = 0.01,
        l2: float = 1e-4,
        max_iter: int = 100,
        tol: float = 1e-6,
    ) -> None:
        self.week = week
        self.hour = hour
        self.day = day
        self.evidence = evidence
        self.recency = recency
        self.eps = eps
        self.l2 = l2
        self.max_iter = max_iter
        self.tol = tol

    def _design(self, x: np.ndarray, dtype: type) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, K, 168) log components, (n, 4) trust inputs, (n, 31) hour and day histograms."""
        g: np.ndarray = np.empty((len(x), len(LOGIT_OWN), SLOTS), dtype=dtype)
        for start in range(0, len(x), CHUNK):
            own, _ = _own_components(x[start : start + CHUNK], self, self.prior_)
            g[start : start + CHUNK] = np.log1p(own[:, list(LOGIT_OWN)] / self.eps)
        clean = np.where(np.isnan(x), 0.0, x.astype(np.float64))
        n = np.maximum(clean[:, self.evidence], 0.0)
        has = (n > 0).astype(np.float64)
        g *= has[:, None, None].astype(dtype)
        days = np.maximum(clean[:, self.recency], 0.0)
        z = np.stack([has, np.log1p(n), np.log1p(days) * has, np.isnan(x[:, self.recency]) * has], axis=1)
        h = clean[:, [*self.hour, *self.day]]
        return g, z.astype(dtype), h.astype(dtype)

    def parameters(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(b (168,), A (K, 4), W (31, 168)) from the flat parameter vector."""
        k, width = len(LOGIT_OWN), len(self.hour) + len(self.day)
        p = self.coef_
        return p[:SLOTS], p[SLOTS : SLOTS + 4 * k].reshape(k, 4), p[SLOTS + 4 * k :].reshape(width, SLOTS)

    def fit(self, x: np.ndarray, y: np.ndarray) -> SlotLogit:
        y = np.asarray(y, dtype=np.int64)
        self.classes_ = np.arange(SLOTS)
        self.n_features_in_ = x.shape[1]
        counts = np.bincount(y, minlength=SLOTS) + 1.0
        self.prior_ = counts / counts.sum()
        g, z, h = self._design(x, np.float32)  # float32: the (n, K, 168) array is the largest
        rows, k, width = len(y), len(LOGIT_OWN), h.shape[1]
        b0, every = np.log(self.prior_), np.arange(len(y))

        def loss(p: np.ndarray) -> tuple[float, np.ndarray]:
            b, a, w = (
                p[:SLOTS],
                p[SLOTS : SLOTS + 4 * k].reshape(k, 4),
                p[SLOTS + 4 * k :].reshape(width, SLOTS),
            )
            # in place, float32: each (n, 168) pass counts at 50k rows
            logits = np.einsum("nk,nks->ns", (z @ a.T).astype(np.float32), g)
            logits += h @ w.astype(np.float32)
            logits += b.astype(np.float32)
            logits -= logits.max(axis=1, keepdims=True)
            at_label = logits[every, y].astype(np.float64)
            prob = np.exp(logits, out=logits)
            total = prob.sum(axis=1, keepdims=True)
            prob /= total
            nll = float(np.mean(np.log(total[:, 0], dtype=np.float64) - at_label))
            prob[every, y] -= 1.0  # rows × d nll / d logits
            grad_b = prob.sum(axis=0, dtype=np.float64) / rows + self.l2 * (b - b0)
            grad_a = np.einsum("ns,nks->nk", prob, g).T.astype(np.float64) @ z.astype(np.float64) / rows
            grad_w = (h.T @ prob).astype(np.float64) / rows + self.l2 * w
            penalty = 0.5 * self.l2 * (float(np.sum((b - b0) ** 2)) + float(np.sum(w**2)))
            return nll + penalty, np.concatenate([grad_b, grad_a.ravel(), grad_w.ravel()])

        start = np.concatenate([b0, np.zeros(4 * k + width * SLOTS)])
        result = minimize(
            loss, start, jac=True, method="L-BFGS-B", options={"maxiter": self.max_iter, "ftol": self.tol}
        )
        self.coef_ = result.x
        self.n_iter_ = int(result.nit)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        b, a, w = self.parameters()
        out = np.empty((len(x), SLOTS))
        for start in range(0, len(x), CHUNK):
            g, z, h = self._design(x[start : start + CHUNK], np.float64)
            out[start : start + CHUNK] = _softmax(np.einsum("nk,nks->ns", z @ a.T, g) + h @ w + b)
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.predict_proba(x).argmax(axis=1))


def _slot_shapes(operator: Any) -> None:
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType

    rows = operator.inputs[0].type.shape[0]
    operator.outputs[0].type = Int64TensorType([rows])
    operator.outputs[1].type = FloatTensorType([rows, SLOTS])


class _Graph:
    """ONNX building blocks shared by both converters (float32 throughout)."""

    def __init__(self, operator: Any, container: Any, model: _HistogramColumns, prior: np.ndarray) -> None:
        from skl2onnx.algebra import onnx_ops

        self.ops, self.opv, self.operator = onnx_ops, container.target_opset, operator
        self.maps = _slot_maps(prior)
        x = operator.inputs[0]
        self.clean = self.ops.OnnxWhere(
            self.ops.OnnxIsNaN(x, op_version=self.opv), self.const([0.0]), x, op_version=self.opv
        )
        self.n = self.ops.OnnxMax(self.columns([model.evidence]), self.const([0.0]), op_version=self.opv)
        self.has = self.ops.OnnxGreater(self.n, self.const([0.0]), op_version=self.opv)  # (N, 1)
        self.week, self.hour, self.day = (self.columns(c) for c in (model.week, model.hour, model.day))

    @staticmethod
    def const(values: Any) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)

    def columns(self, idx: Sequence[int], source: Any = None) -> Any:
        tensor = self.clean if source is None else source
        return self.ops.OnnxGather(tensor, np.asarray(list(idx), dtype=np.int64), axis=1, op_version=self.opv)

    def matmul(self, tensor: Any, matrix: np.ndarray) -> Any:
        return self.ops.OnnxMatMul(tensor, self.const(matrix), op_version=self.opv)

    def own(self) -> list[Any]:
        """``_own_components`` as seven (N, 168) nodes, in the order of ``OWN``."""
        ops, opv, maps = self.ops, self.opv, self.maps
        week, hour, day = self.week, self.hour, self.day
        by_day = self.matmul(day, maps["day_to_slot"])
        return [
            week,
            self.matmul(week, maps["smooth"]),
            ops.OnnxMul(self.matmul(hour, maps["hour_to_slot"]), by_day, op_version=opv),
            ops.OnnxMul(self.matmul(hour, maps["smooth_hour_to_slot"]), by_day, op_version=opv),
            ops.OnnxDiv(
                ops.OnnxMul(self.matmul(week, maps["part_hours"]), by_day, op_version=opv),
                ops.OnnxMax(self.matmul(day, maps["part_mass"]), self.const([TINY]), op_version=opv),
                op_version=opv,
            ),
            self.matmul(hour, maps["hour_to_slot_prior"]),
            self.matmul(hour, maps["smooth_hour_to_slot_prior"]),
        ]

    def weighted_sum(self, weights: Any, parts: list[Any]) -> Any:
        """Σ_j weights[:, j] · parts[j] for (N, J) weights and J nodes of (N, 168)."""
        ops, opv = self.ops, self.opv
        stacked = ops.OnnxReshape(
            ops.OnnxConcat(*parts, axis=1, op_version=opv),
            np.array([-1, len(parts), SLOTS], dtype=np.int64),
            op_version=opv,
        )
        row = ops.OnnxReshape(weights, np.array([-1, 1, len(parts)], dtype=np.int64), op_version=opv)
        return ops.OnnxReshape(
            ops.OnnxMatMul(row, stacked, op_version=opv),
            np.array([-1, SLOTS], dtype=np.int64),
            op_version=opv,
        )

    def outputs(self, probs: Any, scope: Any, container: Any) -> None:
        """Name ``probs`` (N, 168) the probabilities output, add its argmax as the label."""
        from onnx import TensorProto

        ops, opv = self.ops, self.opv
        named = ops.OnnxIdentity(probs, op_version=opv, output_names=[self.operator.outputs[1]])
        label = ops.OnnxCast(
            ops.OnnxArgMax(probs, axis=1, keepdims=0, op_version=opv),
            to=TensorProto.INT64,
            op_version=opv,
            output_names=[self.operator.outputs[0]],
        )
        named.add_to(scope, container)
        label.add_to(scope, container)


def _mixture_converter(scope: Any, operator: Any, container: Any) -> None:
    """``SlotMixture.predict_proba`` in ONNX operators: gathers, matmuls, a softmax."""
    model: SlotMixture = operator.raw_operator
    g = _Graph(operator, container, model, model.prior_)
    ops, opv = g.ops, g.opv
    prior = g.const(model.prior_[None, :])
    mixed = [ops.OnnxWhere(g.has, component, prior, op_version=opv) for component in g.own()]
    prior_rows = ops.OnnxAdd(ops.OnnxMul(g.week, g.const([0.0]), op_version=opv), prior, op_version=opv)
    k = len(OWN)
    log_n = ops.OnnxLog(ops.OnnxAdd(g.n, g.const([1.0]), op_version=opv), op_version=opv)
    # logits (N, J): [a + c·log_n, 0] as log_n @ [c, 0] + [a, 0]
    logits = ops.OnnxAdd(
        g.matmul(log_n, np.append(model.theta_[k:], 0.0)[None, :]),
        g.const(np.append(model.theta_[:k], 0.0)),
        op_version=opv,
    )
    weights = ops.OnnxSoftmax(logits, axis=1, op_version=opv)
    g.outputs(g.weighted_sum(weights, [*mixed, prior_rows]), scope, container)


def _logit_converter(scope: Any, operator: Any, container: Any) -> None:
    """``SlotLogit.predict_proba`` in ONNX operators: the same components, logs, a softmax."""
    from onnx import TensorProto

    model: SlotLogit = operator.raw_operator
    g = _Graph(operator, container, model, model.prior_)
    ops, opv = g.ops, g.opv

    def log1p(tensor: Any) -> Any:
        return ops.OnnxLog(ops.OnnxAdd(tensor, g.const([1.0]), op_version=opv), op_version=opv)

    def times(a: Any, b: Any) -> Any:
        return ops.OnnxMul(a, b, op_version=opv)

    has = ops.OnnxCast(g.has, to=TensorProto.FLOAT, op_version=opv)
    components = g.own()
    logs = [times(log1p(times(components[k], g.const([1.0 / model.eps]))), has) for k in LOGIT_OWN]
    unknown = ops.OnnxIsNaN(g.columns([model.recency], source=operator.inputs[0]), op_version=opv)
    days = ops.OnnxMax(g.columns([model.recency]), g.const([0.0]), op_version=opv)
    trust = ops.OnnxConcat(
        has,
        log1p(g.n),
        times(log1p(days), has),
        times(ops.OnnxCast(unknown, to=TensorProto.FLOAT, op_version=opv), has),
        axis=1,
        op_version=opv,
    )
    b, a, w = model.parameters()
    own = g.weighted_sum(g.matmul(trust, a.T), logs)
    cross = g.matmul(ops.OnnxConcat(g.hour, g.day, axis=1, op_version=opv), w)
    logits = ops.OnnxAdd(ops.OnnxAdd(own, cross, op_version=opv), g.const(b[None, :]), op_version=opv)
    g.outputs(ops.OnnxSoftmax(logits, axis=1, op_version=opv), scope, container)


def register_converter() -> None:
    """Teach skl2onnx to convert ``SlotMixture`` and ``SlotLogit`` (idempotent)."""
    from skl2onnx import update_registered_converter

    for model, alias, converter in (
        (SlotMixture, "NudgeSlotMixture", _mixture_converter),
        (SlotLogit, "NudgeSlotLogit", _logit_converter),
    ):
        update_registered_converter(model, alias, _slot_shapes, converter, options={"zipmap": [False, True]})


def _spans(layout: Sequence[FeatureInput], refs: Sequence[str]) -> dict[str, list[int]]:
    """Input columns of each named feature in a manifest layout; the histograms must be whole."""
    spans, column = {}, 0
    for feature in layout:
        spans[feature.ref] = list(range(column, column + feature.size))
        column += feature.size
    missing = [ref for ref in refs if ref not in spans]
    if missing or [len(spans[r]) for r in (WEEK, HOUR, DAY)] != [SLOTS, HOURS, DAYS]:
        raise KeyError(
            f"send-time inputs need {WEEK}[168], {HOUR}[24], {DAY}[7], "
            f"{', '.join(refs[3:])}; missing {missing}"
        )
    return spans


def mixture_for(layout: Sequence[FeatureInput]) -> SlotMixture:
    """A ``SlotMixture`` reading the histogram columns of a manifest layout."""
    spans = _spans(layout, (WEEK, HOUR, DAY, EVIDENCE))
    return SlotMixture(tuple(spans[WEEK]), tuple(spans[HOUR]), tuple(spans[DAY]), spans[EVIDENCE][0])


def logit_for(layout: Sequence[FeatureInput]) -> SlotLogit:
    """A ``SlotLogit`` reading the histogram and recency columns of a manifest layout."""
    spans = _spans(layout, (WEEK, HOUR, DAY, EVIDENCE, RECENCY))
    return SlotLogit(
        tuple(spans[WEEK]), tuple(spans[HOUR]), tuple(spans[DAY]), spans[EVIDENCE][0], spans[RECENCY][0]
    )


@dataclass(frozen=True)
class Candidate:
    """One send-time structure to compare: a name, what it is, how to build it."""

    name: str
    description: str

    def build(self, layout: Sequence[FeatureInput], seed: int) -> Any:
        if self.name == "mixture":
            return mixture_for(layout)
        if self.name == "logit":
            return logit_for(layout)
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
LOGIT = Candidate(
    "logit",
    "multinomial logit: population slot effects + own histograms (log) weighted by evidence and "
    "recency + hour-of-day and day-of-week histograms x slot weights",
)
CANDIDATES = (MIXTURE, LOGIT)  # compared on every run
ALTERNATIVES = (  # generic classifiers, compared only with --compare-send-time (slow)
    Candidate("linear", "multinomial logistic regression over all inputs (168 classes)"),
    Candidate("mlp", "MLP, one hidden layer of 64 ReLU, over all inputs (168 classes)"),
)


SELECTION_RULE = (
    "highest hit@3 on the validation period among the candidates within the latency budget; "
    "equal hit@3 (the same number of hits on the same engagements) goes to the lower validation "
    "log loss, then to the earlier candidate in the list (the mixture first)"
)


def choose(
    candidates: Sequence[Candidate], results: Mapping[str, Mapping[str, float]], budget_ms: float
) -> Candidate:
    """The candidate to ship, by ``SELECTION_RULE``, from each one's validation ``results``
    (``hit_at_3``, ``log_loss``, ``ort_latency_ms``)."""
    within = [c for c in candidates if results[c.name]["ort_latency_ms"] <= budget_ms]
    if not within:
        raise RuntimeError(f"no send-time candidate runs within {budget_ms} ms per call: {dict(results)}")
    return min(
        within,
        key=lambda c: (-results[c.name]["hit_at_3"], results[c.name]["log_loss"], candidates.index(c)),
    )


@dataclass(frozen=True)
class Selection:
    """One run's comparison: the candidate to ship and the table the report shows."""

    chosen: Candidate
    table: dict[str, dict[str, Any]]  # candidate → validation metrics, latency, fit time, chosen


def select_structure(
    candidates: Sequence[Candidate],
    layout: Sequence[FeatureInput],
    fit: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    seed: int,
    budget_ms: float,
    progress: Callable[[str, str], None] | None = None,
) -> Selection:
    """Fit every candidate on the ``fit`` engagements (inputs, slots), score its exported model
    on the ``validation`` ones (parity-checked, timed per call), choose by ``SELECTION_RULE``."""
    from training.evaluate import send_time_metrics
    from training.export import export_checked

    register_converter()
    table: dict[str, dict[str, Any]] = {}
    for candidate in candidates:
        started = time.perf_counter()
        model = fit_send_time(candidate, layout, *fit, seed)
        fit_seconds = time.perf_counter() - started
        probe = export_checked(model, validation[0], f"send_time/{candidate.name}")
        table[candidate.name] = {
            **send_time_metrics(probe.probabilities, validation[1]),
            "ort_latency_ms": probe.latency_ms,
            "fit_seconds": round(fit_seconds, 2),
            "description": candidate.description,
        }
        if progress is not None:
            progress(
                f"send-time candidate {candidate.name}",
                f"validation hit@3 {table[candidate.name]['hit_at_3']:.4f}",
            )
    chosen = choose(candidates, table, budget_ms)
    for name, row in table.items():
        row["chosen"] = name == chosen.name
    return Selection(chosen, table)


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
    if candidate in CANDIDATES:  # they smooth their own priors
        model.fit(x, y)
    else:
        model.fit(*with_smoothing_prior(x, y))
    if not np.array_equal(model.classes_, np.arange(SLOTS)):
        raise AssertionError("send-time classes are not the 168 slots in order")
    return model
