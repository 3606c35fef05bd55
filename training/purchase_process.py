"""Purchase-process features: each customer's BG/NBD posterior, computed inside the model.

BG/NBD (Fader, Hardie and Lee 2005): while alive, a customer buys at a Poisson rate
λ ~ Gamma(r, α); after each repeat purchase they drop out for good with probability
p ~ Beta(a, b). Given a customer's repeat purchases x, the time t_x of the last one and the
time T since the first purchase (all since their first purchase), the posterior gives

    P(alive)         = 1 / (1 + [x > 0] · a / (b + x − 1) · ((α + T) / (α + t_x))^(r + x))
    P(buy within H)  = P(alive) · (1 − ((α + T) / (α + T + H))^(r + x))

(given alive, λ | data ~ Gamma(r + x, α + T), and a purchase always comes before a dropout,
so the first purchase in the next H days arrives with probability E[1 − e^(−λH)]).
Both read three served features: x = ``purchase_count_total`` − 1, T = ``tenure_days`` (days
since signup or the first event: on purchases-only data, the first purchase) and
t_x = T − ``days_since_last_purchase``. The population's (r, α, a, b) are fitted by maximum
likelihood when the model is trained, on each training customer's latest training cutoff.

Why inside the model rather than in the feature tables: the posterior is a fixed function of
three served features and four numbers fitted with the model, so as ONNX nodes in front of the
trees it is exact at whatever instant the server scores (snapshot row or live state), point in
time by construction, with no second implementation to keep in parity. ``PurchaseProcess``
appends the two columns; training computes them with onnxruntime on the transformer's own
converted nodes, so the trees' thresholds see bit-identical values in training and serving.
Whether the columns are used is decided by validation every run (training/propensity.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln
from sklearn.base import BaseEstimator, TransformerMixin

from nudge.contract.manifest import FeatureInput

COUNT = "customer_stats:purchase_count_total"
RECENCY = "customer_stats:days_since_last_purchase"
TENURE = "customer_stats:tenure_days"
SOURCES = (COUNT, RECENCY, TENURE)
COLUMNS = ("bgnbd_p_alive", "bgnbd_p_purchase")  # appended after the served inputs, in this order


@dataclass(frozen=True)
class BgNbd:
    """The population's BG/NBD parameters (rates per day)."""

    r: float
    alpha: float
    a: float
    b: float

    def describe(self) -> dict[str, float]:
        return {"r": self.r, "alpha_days": self.alpha, "a": self.a, "b": self.b}


def process_inputs(x: np.ndarray, columns: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(repeat purchases, t_x, T) in float64 from the (count, recency, tenure) input columns."""
    count, recency, tenure = (np.asarray(x[:, c], dtype=np.float64) for c in columns)
    tenure = np.nan_to_num(tenure, nan=0.0)
    repeats = np.maximum(np.nan_to_num(count, nan=0.0) - 1.0, 0.0)
    last = np.where(np.isnan(recency), 0.0, np.clip(tenure - recency, 0.0, None))
    return repeats, last, tenure


def _negative_log_likelihood(log_params: np.ndarray, x: np.ndarray, t_x: np.ndarray, t: np.ndarray) -> float:
    """Mean negative BG/NBD log-likelihood per customer (Fader, Hardie and Lee 2005, eq. 6)."""
    r, alpha, a, b = np.exp(log_params)
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    beta = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    alive = -(r + x) * np.log(alpha + t)
    dropped = np.where(
        x > 0,
        np.log(a) - np.log(b + np.maximum(x, 1.0) - 1.0) - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    return float(-np.mean(common + beta + np.logaddexp(alive, dropped)))


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, t: np.ndarray) -> BgNbd:
    """Maximum-likelihood (r, α, a, b), one row per customer; fails loudly if it cannot fit."""
    if len(x) < 10:
        raise ValueError(f"BG/NBD needs more customers than {len(x)}")
    # L-BFGS-B on the log-parameters (numerical gradient): Nelder-Mead ran to its 4,000-iteration
    # cap when the population shows no dropout (a, b -> infinity on the flat ridge of the
    # likelihood): 41 s for 20k customers against 0.4 s here, at the same likelihood to 2e-5.
    fit = minimize(
        _negative_log_likelihood, np.zeros(4), args=(x, t_x, t), method="L-BFGS-B",
        options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-8},
    )  # fmt: skip
    params = np.exp(np.clip(fit.x, -30.0, 30.0))
    if not np.isfinite(fit.fun) or not np.all(np.isfinite(params)):
        raise ValueError(f"BG/NBD fit failed: {fit.message}")
    return BgNbd(*(float(v) for v in params))


def posterior(
    params: BgNbd, x: np.ndarray, t_x: np.ndarray, t: np.ndarray, horizon_days: float
) -> np.ndarray:
    """[P(alive), P(buy within H)] per customer in float64: the BG/NBD-only model's scores and
    the reference the ONNX nodes are tested against."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    with np.errstate(over="ignore"):
        odds = a / (b + np.maximum(x, 1.0) - 1.0) * ((alpha + t) / (alpha + t_x)) ** (r + x)
    alive = 1.0 / (1.0 + np.where(x > 0, odds, 0.0))
    buy = alive * (1.0 - ((alpha + t) / (alpha + t + horizon_days)) ** (r + x))
    return np.column_stack([alive, buy])


def source_columns(layout: Sequence[FeatureInput]) -> tuple[int, int, int]:
    """Model-input columns of (count, recency, tenure); KeyError names what is missing."""
    from training.propensity import column_indices

    count, recency, tenure = column_indices(layout, SOURCES)
    return count, recency, tenure


class PurchaseProcess(TransformerMixin, BaseEstimator):
    """Appends ``COLUMNS`` (P(alive), P(buy within H)) to the model inputs.

    The parameters are fitted before (``fit_bgnbd`` on one row per customer, which a pipeline
    step cannot see), so ``fit`` only checks the input width."""

    def __init__(self, columns: tuple[int, int, int], params: BgNbd, horizon_days: float) -> None:
        self.columns = columns
        self.params = params
        self.horizon_days = horizon_days

    def fit(self, x: np.ndarray, y: Any = None) -> PurchaseProcess:
        self.n_features_in_ = x.shape[1]
        self._session: Any = None
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """The inputs with the two posterior columns, computed by onnxruntime on this step's own
        ONNX nodes (float32, exactly what the served graph computes)."""
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        if self._session is None:
            from nudge.contract.onnx import onnx_session
            from training.export import convert

            register_converter()  # so any fitted step converts, here and inside the exported pipeline
            self._session = onnx_session(convert(self, x32.shape[1]))
        (out,) = self._session.run(None, {"input": x32})
        return np.asarray(out)


def _shapes(operator: Any) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    rows, width = operator.inputs[0].type.shape
    operator.outputs[0].type = FloatTensorType([rows, width + len(COLUMNS) if width else None])


def _converter(scope: Any, operator: Any, container: Any) -> None:
    """The posterior above in float32 ONNX operators, appended to the input columns."""
    from skl2onnx.algebra import onnx_ops as ops

    model: PurchaseProcess = operator.raw_operator
    opv = container.target_opset
    p = model.params

    def const(value: float) -> np.ndarray:
        return np.asarray([value], dtype=np.float32)

    def column(index: int) -> Any:
        return ops.OnnxGather(operator.inputs[0], np.asarray([index], dtype=np.int64), axis=1, op_version=opv)

    def fill(tensor: Any, value: Any) -> Any:
        return ops.OnnxWhere(ops.OnnxIsNaN(tensor, op_version=opv), value, tensor, op_version=opv)

    count, recency, tenure = (column(c) for c in model.columns)
    t = fill(tenure, const(0.0))
    x = ops.OnnxMax(
        ops.OnnxSub(fill(count, const(0.0)), const(1.0), op_version=opv), const(0.0), op_version=opv
    )
    t_x = ops.OnnxMax(ops.OnnxSub(t, fill(recency, t), op_version=opv), const(0.0), op_version=opv)
    shape = ops.OnnxAdd(x, const(p.r), op_version=opv)
    alpha_t = ops.OnnxAdd(t, const(p.alpha), op_version=opv)
    ratio = ops.OnnxDiv(alpha_t, ops.OnnxAdd(t_x, const(p.alpha), op_version=opv), op_version=opv)
    odds = ops.OnnxMul(
        ops.OnnxDiv(
            const(p.a),
            ops.OnnxAdd(ops.OnnxMax(x, const(1.0), op_version=opv), const(p.b - 1.0), op_version=opv),
            op_version=opv,
        ),
        ops.OnnxPow(ratio, shape, op_version=opv),
        op_version=opv,
    )
    repeat = ops.OnnxGreater(x, const(0.0), op_version=opv)
    alive = ops.OnnxDiv(
        const(1.0),
        ops.OnnxAdd(const(1.0), ops.OnnxWhere(repeat, odds, const(0.0), op_version=opv), op_version=opv),
        op_version=opv,
    )
    stays = ops.OnnxPow(
        ops.OnnxDiv(alpha_t, ops.OnnxAdd(alpha_t, const(model.horizon_days), op_version=opv), op_version=opv),
        shape,
        op_version=opv,
    )
    buy = ops.OnnxMul(alive, ops.OnnxSub(const(1.0), stays, op_version=opv), op_version=opv)
    out = ops.OnnxConcat(
        operator.inputs[0], alive, buy, axis=1, op_version=opv, output_names=operator.outputs[:1]
    )
    out.add_to(scope, container)


def register_converter() -> None:
    """Teach skl2onnx to convert ``PurchaseProcess`` (idempotent)."""
    from skl2onnx import update_registered_converter

    update_registered_converter(PurchaseProcess, "NudgePurchaseProcess", _shapes, _converter)
