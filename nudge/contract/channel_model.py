"""The best-channel model as the server runs it: pure numpy, loaded from ``channel_model.json``.

P(a message is engaged with | customer, channel, send slot), engaged meaning opened (email,
push) or clicked (sms), for every customer × channel (EMAIL, SMS, PUSH, in ``CHANNELS`` order) ×
candidate slot. Per customer it reads

  rates      (n, 3)  the channel's responses / sends over 90 days (``email_open_rate_90d``,
                     ``sms_click_rate_90d``, ``push_open_rate_90d``); NaN without sends
  sends      (n, 3)  sends over 90 days (``*_sends_90d``): the evidence behind each rate
  slot_probability (n, k)  the send-time model's probability of each candidate slot (of 168)
  local_hour (n, k)  each candidate's local hour of day, 0-23

and computes, per channel c,

  shrunk_c  = (rate_c · sends_c + m_c · s_c) / (sends_c + s_c)     empirical Bayes: the
              customer's own rate shrunk toward the population mean m_c with prior strength s_c
              (a Beta(m_c s_c, (1 − m_c) s_c) prior fitted on the training sends), so a customer
              without sends on c gets m_c
  η         = intercept_c + rate_weight_c · log(shrunk_c) + Σ_{c' ≠ c} cross_weight_cc' · log(shrunk_c')
              + slot_weight · log(168 · slot_probability) + hour_effect_c[local_hour]
  P         = 1 − exp(−exp(η))  (link "cloglog": a response rate times exposure)  or  1 / (1 + exp(−η))
              (link "logit"), clipped to [1e-6, 1 − 1e-6]

A customer without sends on any channel is *cold*: their answer is the population's (every
shrunk rate is m_c), and ``cold_start`` flags them. Training (training/channel.py) fits the
numbers and writes the file; nothing here imports scikit-learn or pandas.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

CHANNELS = ("email", "sms", "push")
# As the API and score-audience name them (the proto's Channel without its prefix).
CHANNEL_NAMES = tuple(name.upper() for name in CHANNELS)
# Which events answer a message on each channel: what "engaged" means for the model.
RESPONSES = {"email": ("email_open", "email_click"), "sms": ("sms_click",), "push": ("push_open",)}
# The customer_stats features the model reads, in CHANNELS order (engagement_v1 serves them).
RATE_FEATURES = ("email_open_rate_90d", "sms_click_rate_90d", "push_open_rate_90d")
SEND_FEATURES = tuple(f"{name}_sends_90d" for name in CHANNELS)
FORMAT = "nudge-channel-model/1"
FILE_NAME = "channel_model.json"
LINKS = ("cloglog", "logit")
SLOTS_PER_WEEK = 168
PROBABILITY_FLOOR = 1e-6
SLOT_PROBABILITY_FLOOR = 1e-6  # a slot the send-time model all but rules out, not log(0)

FloatArray = npt.NDArray[np.float64]


class ChannelModelError(ValueError):
    """A channel_model.json the server must not load."""


@dataclass(frozen=True)
class _Arrays:
    strength: FloatArray  # (3,)
    prior_mass: FloatArray  # (3,) prior mean × strength
    weights: FloatArray  # (3, 3) diag(rate_weight) + cross_weight, transposed: log(shrunk) @ weights
    offset: FloatArray  # (3,) intercept + slot_weight · log 168
    by_hour: FloatArray  # (24, 3) hour effects
    eta_bounds: tuple[float, float]  # the linear predictor's range for P in [1e-6, 1 - 1e-6]


class _Plain(NamedTuple):
    """_Arrays as Python floats, for one customer (:meth:`ChannelModel.best_one`)."""

    prior_mass: list[float]
    strength: list[float]
    weights: list[list[float]]
    offset: list[float]
    by_channel: list[list[float]]  # per channel, the effect of each local hour
    slot_weight: float


@dataclass(frozen=True)
class ChannelModel:
    """The fitted numbers; ``probabilities`` is the served computation."""

    prior_mean: tuple[float, ...]  # m_c: population engagement rate per channel
    prior_strength: tuple[float, ...]  # s_c: sends the prior is worth
    intercept: tuple[float, ...]
    rate_weight: tuple[float, ...]
    slot_weight: float
    hour_effect: tuple[tuple[float, ...], ...]  # 3 channels × 24 local hours
    link: str = "cloglog"
    # the other channels' evidence: row c, column c' (zero diagonal; none when all zero)
    cross_weight: tuple[tuple[float, ...], ...] = ((0.0, 0.0, 0.0),) * 3
    info: dict[str, Any] = field(default_factory=dict)  # provenance: version, training window, ...
    _arrays: _Arrays = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(CHANNELS)
        for name in ("prior_mean", "prior_strength", "intercept", "rate_weight"):
            values = getattr(self, name)
            if len(values) != n or not all(np.isfinite(values)):
                raise ChannelModelError(f"{name} must be {n} finite numbers, got {values!r}")
        if not all(0.0 < m < 1.0 for m in self.prior_mean) or not all(s > 0.0 for s in self.prior_strength):
            raise ChannelModelError("prior_mean must be in (0, 1) and prior_strength > 0")
        hours = np.asarray(self.hour_effect, dtype=np.float64)
        if hours.shape != (n, 24) or not np.isfinite(hours).all():
            raise ChannelModelError(f"hour_effect must be {n} × 24 finite numbers, got shape {hours.shape}")
        cross = np.asarray(self.cross_weight, dtype=np.float64)
        if cross.shape != (n, n) or not np.isfinite(cross).all() or np.diag(cross).any():
            raise ChannelModelError(f"cross_weight must be {n} × {n} finite numbers with a zero diagonal")
        if not np.isfinite(self.slot_weight):
            raise ChannelModelError("slot_weight must be finite")
        if self.link not in LINKS:
            raise ChannelModelError(f"link must be one of {LINKS}, got {self.link!r}")
        floor, ceiling = PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR
        if self.link == "cloglog":
            bounds = (float(np.log(-np.log1p(-floor))), float(np.log(-np.log1p(-ceiling))))
        else:
            bounds = (float(np.log(floor / (1.0 - floor))), float(np.log(ceiling / (1.0 - ceiling))))
        mean = np.asarray(self.prior_mean, dtype=np.float64)
        strength = np.asarray(self.prior_strength, dtype=np.float64)
        arrays = _Arrays(
            strength=strength,
            prior_mass=mean * strength,
            weights=np.ascontiguousarray((np.diag(np.asarray(self.rate_weight, dtype=np.float64)) + cross).T),
            offset=np.asarray(self.intercept, dtype=np.float64) + self.slot_weight * np.log(SLOTS_PER_WEEK),
            by_hour=np.ascontiguousarray(hours.T),
            eta_bounds=bounds,
        )
        object.__setattr__(self, "_arrays", arrays)  # laid out for the computation, built once

    # --- the served computation ------------------------------------------------------------------

    def shrunk_rates(self, rates: npt.ArrayLike, sends: npt.ArrayLike) -> FloatArray:
        """(n, 3) each customer's rate shrunk toward the population by their sends. No sends, a
        missing count or a missing rate is no evidence (fmax drops NaN)."""
        r = np.asarray(rates, dtype=np.float64)
        n = np.fmax(np.asarray(sends, dtype=np.float64) * (r == r), 0.0)  # NaN rate: no sends
        responses = np.fmax(r * n, 0.0)
        responses += self._arrays.prior_mass
        n += self._arrays.strength
        return np.asarray(responses / n)

    def probabilities(
        self,
        rates: npt.ArrayLike,
        sends: npt.ArrayLike,
        slot_probability: npt.ArrayLike,
        local_hour: npt.ArrayLike,
    ) -> FloatArray:
        """P(engaged) of shape (n customers, 3 channels, k candidate slots).

        ``rates``/``sends`` (n, 3) in ``CHANNELS`` order; ``slot_probability``/``local_hour``
        (n, k), local hours integers 0..23. A NaN slot probability counts as 1/168 (no opinion).
        Cost (k = 24, one core): about 2 µs per customer in batches of 100, about 37 µs for a
        single customer (some 30 numpy calls: measured where one ufunc call costs about 1 µs).
        """
        slot_p = np.asarray(slot_probability, dtype=np.float64)
        hour = np.asarray(local_hour)
        if slot_p.ndim != 2 or hour.shape != slot_p.shape:
            raise ValueError(
                f"slot_probability and local_hour must both be (n, k), got {slot_p.shape} and {hour.shape}"
            )
        if hour.dtype.kind not in "iu":
            raise ValueError(f"local_hour must be integers 0..23, got dtype {hour.dtype}")
        shrunk = self.shrunk_rates(rates, sends)
        if shrunk.shape != (slot_p.shape[0], len(CHANNELS)):
            raise ValueError(f"rates and sends must be (n, 3) for n = {slot_p.shape[0]}, got {shrunk.shape}")
        # NaN: no opinion (1/168); the floor keeps a ruled-out slot finite. fmax drops NaN.
        slot_p = np.fmax(slot_p, SLOT_PROBABILITY_FLOOR)
        slot_p[np.isnan(slot_probability)] = 1.0 / SLOTS_PER_WEEK if slot_p.size else 0.0
        slot_term = np.log(slot_p)
        slot_term *= self.slot_weight
        customer = np.log(shrunk) @ self._arrays.weights
        customer += self._arrays.offset
        try:  # an hour above 23 fails the lookup; a negative one would wrap, so is checked
            if hour.size and hour.dtype.kind == "i" and hour.min() < 0:
                raise IndexError
            eta = self._arrays.by_hour[hour].transpose(0, 2, 1)  # (n, 3, k)
        except IndexError:
            raise ValueError("local_hour must be within 0..23") from None
        eta += customer[:, :, None]
        eta += slot_term[:, None, :]
        lo, hi = self._arrays.eta_bounds
        np.minimum(np.maximum(eta, lo, out=eta), hi, out=eta)
        if self.link == "cloglog":  # 1 - exp(-exp(eta))
            np.exp(eta, out=eta)
            np.negative(eta, out=eta)
            np.expm1(eta, out=eta)
            return np.negative(eta, out=eta)
        np.negative(eta, out=eta)  # 1 / (1 + exp(-eta))
        np.exp(eta, out=eta)
        eta += 1.0
        return np.reciprocal(eta, out=eta)

    def best(
        self,
        rates: npt.ArrayLike,
        sends: npt.ArrayLike,
        slot_probability: npt.NDArray[np.floating],
        local_hour: npt.NDArray[np.integer],
    ) -> tuple[npt.NDArray[np.int64], FloatArray]:
        """``best_slots(probabilities(...))`` for the serving path: per customer and channel the
        best candidate and its probability, (n, 3) each. The link is monotone, so the best slot
        is the one with the largest linear predictor and the link runs on those 3n values only,
        in a handful of numpy calls. Inputs as :meth:`probabilities`, already validated by the
        caller: local hours 0..23, (n, k), or (1, k) when every row's candidates are the same
        hours (a group of customers sharing a zone and window). :meth:`best_one` is the form
        for one customer."""
        # NaN: no opinion (1/168); the floor keeps a ruled-out slot finite.
        slot = np.full(slot_probability.shape, 1.0 / SLOTS_PER_WEEK)
        np.fmax(
            slot_probability, SLOT_PROBABILITY_FLOOR, out=slot, where=slot_probability == slot_probability
        )
        np.log(slot, out=slot)
        slot *= self.slot_weight
        eta = self._arrays.by_hour[local_hour] + slot[:, :, None]  # (n, k, 3)
        index = eta.argmax(axis=1)  # (n, 3)
        top = eta.max(axis=1)
        top += np.log(self.shrunk_rates(rates, sends)) @ self._arrays.weights + self._arrays.offset
        return index, self._link(top)

    def _link(self, top: FloatArray) -> FloatArray:
        """P from the linear predictor, clipped to the probability range first (in place)."""
        lo, hi = self._arrays.eta_bounds
        np.minimum(np.maximum(top, lo, out=top), hi, out=top)
        if self.link == "cloglog":
            return -np.expm1(-np.exp(top))
        return 1.0 / (1.0 + np.exp(-top))

    def best_one(
        self,
        rates: Sequence[float],
        sends: Sequence[float],
        slot_probability: Sequence[float],
        local_hour: Sequence[int],
    ) -> tuple[list[int], list[float]]:
        """:meth:`best` of one customer (a Score), the candidates walked in plain Python: on
        ~24 candidates numpy's per-call cost outweighs its speed (a Score's channel ranking in
        situ: ~37 µs through best's ~20 numpy calls, ~30 µs here). The slot probabilities' logarithms and the link run in numpy, one
        call each, as in :meth:`best`; the customer terms in plain Python (equal to best's to
        the last bits: tests/unit/test_channel_model.py)."""
        plain = self._plain
        slot = np.log(
            [1.0 / SLOTS_PER_WEEK if p != p else max(p, SLOT_PROBABILITY_FLOOR) for p in slot_probability]
        )
        slot *= plain.slot_weight
        terms = slot.tolist()
        index, top = [], []
        for effect in plain.by_channel:  # max and list.index take the first of equal values, as argmax
            eta = [effect[hour] + term for hour, term in zip(local_hour, terms, strict=True)]
            top.append(max(eta))
            index.append(eta.index(top[-1]))
        customer = self._customer_terms(rates, sends)
        return index, self._link(np.array([t + u for t, u in zip(top, customer, strict=True)])).tolist()

    def _customer_terms(self, rates: Sequence[float], sends: Sequence[float]) -> list[float]:
        """One customer's part of the linear predictor, per channel: offset + log(shrunk rates)
        @ weights, in plain Python (as :meth:`shrunk_rates` shrinks them: no sends, a missing
        count or rate is no evidence)."""
        plain = self._plain
        logs = [
            math.log(((x * k if k > 0 and x == x else 0.0) + m) / ((k if k > 0 and x == x else 0.0) + t))
            for x, k, m, t in zip(rates, sends, plain.prior_mass, plain.strength, strict=True)
        ]
        weights = plain.weights
        return [
            o + sum(v * w[c] for v, w in zip(logs, weights, strict=True)) for c, o in enumerate(plain.offset)
        ]

    @functools.cached_property
    def _plain(self) -> _Plain:
        """The arrays :meth:`best_one` reads, as Python floats."""
        arrays = self._arrays
        return _Plain(
            arrays.prior_mass.tolist(),
            arrays.strength.tolist(),
            arrays.weights.tolist(),
            arrays.offset.tolist(),
            arrays.by_hour.T.tolist(),
            float(self.slot_weight),
        )

    @staticmethod
    def cold_start(sends: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """(n,) True for customers without sends on any channel: their answer is the population's."""
        n = np.asarray(sends, dtype=np.float64)
        return np.asarray(~(n > 0).any(axis=1))

    @staticmethod
    def best_slots(probabilities: FloatArray) -> tuple[npt.NDArray[np.int64], FloatArray]:
        """Per customer and channel, the index of the best candidate slot and its probability:
        two (n, 3) arrays. Rank channels by the second (descending) for the answer."""
        index = np.argmax(probabilities, axis=2)
        return index, np.take_along_axis(probabilities, index[:, :, None], axis=2)[:, :, 0]

    # --- the file ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        fields = (f.name for f in dataclasses.fields(self) if f.init)
        return {
            "format": FORMAT,
            "channels": list(CHANNELS),
            **{name: getattr(self, name) for name in fields},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "channel model") -> ChannelModel:
        if data.get("format") != FORMAT:
            raise ChannelModelError(f"{source}: format {data.get('format')!r}, expected {FORMAT!r}")
        if tuple(data.get("channels", ())) != CHANNELS:
            raise ChannelModelError(f"{source}: channels {data.get('channels')!r}, expected {list(CHANNELS)}")
        try:
            return cls(
                prior_mean=_floats(data["prior_mean"]),
                prior_strength=_floats(data["prior_strength"]),
                intercept=_floats(data["intercept"]),
                rate_weight=_floats(data["rate_weight"]),
                slot_weight=float(data["slot_weight"]),
                hour_effect=tuple(_floats(row) for row in data["hour_effect"]),
                link=str(data["link"]),
                cross_weight=tuple(_floats(row) for row in data.get("cross_weight", ((0.0,) * 3,) * 3)),
                info=dict(data.get("info") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ChannelModelError):
                raise ChannelModelError(f"{source}: {exc}") from None
            raise ChannelModelError(f"{source}: malformed ({type(exc).__name__}: {exc})") from None

    def to_json(self, path: Path | str) -> Path:
        """Write atomically (temp file + rename): a reloading server never reads half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        os.replace(temporary, path)
        return path

    @classmethod
    def from_json(cls, path: Path | str) -> ChannelModel:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ChannelModelError(f"{path}: cannot read a channel model: {exc}") from None
        if not isinstance(data, dict):
            raise ChannelModelError(f"{path}: not a JSON object")
        return cls.from_dict(data, str(path))


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)
