"""Best channel: fit and evaluate the model of P(message engaged | customer, channel, slot).

Rows are marketing sends. A send is *engaged* when the customer answers it on its channel
(email: an open or a click; sms: a click; push: an open) within ``ATTRIBUTION`` of it and
before their next send on that channel: each response belongs to the customer's latest send
of its channel (the simulator answers within minutes; training/simulate.py).

Every row's inputs are the customer's as of the send, exact at the instant (features from
``training.features.pair_features``: what the live state serves, from the events strictly
before it, the same path as the served evaluation), not joined from the weekly snapshots:

  rates       email_open_rate_90d, sms_click_rate_90d, push_open_rate_90d
  sends       email/sms/push_sends_90d (sends in [t − 90 d, t))
  slot        the exported send-time model's probability of the send's local hour-of-week slot
              (the server's model, through onnxruntime, on the send_time_v1 features at the
              instant), and the slot's local hour of day

The model (nudge/contract/channel_model.py, the served computation) shrinks each channel's
own rate toward the population by its sends (a Beta prior per channel, fitted by maximum
likelihood on the customers' training sends: beta-binomial), then calibrates
[log shrunk rate per channel, log(168 · slot probability), channel × local hour of day]
through a link, optionally with the other channels' log shrunk rates too ("cross-channel").
Both links (cloglog, which is what "a rate times an exposure" gives, and logit), each with and
without cross-channel terms, are fitted on the training sends before the selection period and
scored on it; the one with the lowest log loss is refitted on all training sends. Hour-of-day effects are penalised
toward flat and smooth: a channel gets its own hours only where the data shows them.

Evaluation on the test period (the time split of training/split.py):

  log loss    of every held-out send's predicted engagement at its actual slot, against the
              oracle (the simulator's exact probability) and two baselines: the population
              rate of the send's channel ("global best channel") and the customer's own 90-day
              rate of it ("most-engaged channel"; 0.01..0.99, the population rate without sends)
  hit@1       at random (customer, instant) pairs: the model's best channel at its best slot
              of the next 24 hours vs the oracle's; baselines: the channel with the best
              population rate, and the customer's channel with the highest own 90-day rate
              (ties and customers without sends: the population's). The oracle ranks all three
              channels, opted in or not (the simulator's customers answer on any channel);
              ``among_sent_channels`` repeats it over the channels each customer was sent on in
              the last 90 days, where they have two or more
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nudge.contract.channel_model import (
    CHANNELS,
    FILE_NAME,
    RATE_FEATURES,
    RESPONSES,
    SEND_FEATURES,
    ChannelModel,
)
from nudge.contract.week import local_hour_of_week

if TYPE_CHECKING:
    from training.served import ServedModel
    from training.train import Run

ATTRIBUTION = pd.Timedelta(hours=24)
CANDIDATE_HOURS = 24  # hit@1: the best slot within the next day, hourly
HOUR_SMOOTHING = 30.0  # penalty on squared differences of neighbouring hours' effects
HOUR_RIDGE = 3.0  # penalty on the squared hour effects themselves (flat where data is thin)
CROSS_RIDGE = 3.0  # penalty on the weights of the other channels' evidence
BASELINE_CLIP = (0.01, 0.99)
STREAM = 0xC4A77E1  # mixed into the run's seed: this stage's draws shift no other stage's
LINKS = ("cloglog", "logit")
MIN_SELECTION_ROWS = 200  # fewer sends on either side of the selection gap: cloglog, no cross terms


@dataclass(frozen=True)
class Limits:
    """Row caps (seeded subsamples)."""

    train: int = 60_000
    selection_fit: int = 40_000
    selection: int = 20_000
    test: int = 40_000
    pairs: int = 10_000

    def scaled(self, factor: float) -> Limits:
        return Limits(*(max(1_000, int(getattr(self, f) * factor)) for f in self.__dataclass_fields__))


# ---------------------------------------------------------------------------------------------
# Rows: sends and whether each was engaged with
# ---------------------------------------------------------------------------------------------


def send_outcomes(events: pd.DataFrame, customers: pd.DataFrame) -> pd.DataFrame:
    """Every send: customer_id, sent_at, channel (index into CHANNELS), engaged, slot (local
    hour of week in the customer's zone), in time order."""
    zones = customers.set_index("customer_id")["time_zone"]
    parts = []
    for channel, name in enumerate(CHANNELS):
        sends = events.loc[events["event_type"] == f"{name}_send", ["customer_id", "event_timestamp"]]
        answers = events.loc[events["event_type"].isin(RESPONSES[name]), ["customer_id", "event_timestamp"]]
        sends = sends.assign(sent_at=_utc_ns(sends["event_timestamp"]), channel=channel)
        sends = sends.sort_values("sent_at", kind="stable").reset_index(drop=True)
        engaged = np.zeros(len(sends), bool)
        if len(sends) and len(answers):
            matched = pd.merge_asof(
                answers.assign(at=_utc_ns(answers["event_timestamp"]))[["customer_id", "at"]].sort_values(
                    "at"
                ),
                sends[["customer_id", "sent_at"]].assign(send=np.arange(len(sends))),
                left_on="at",
                right_on="sent_at",
                by="customer_id",
                direction="backward",
                tolerance=ATTRIBUTION,
            )
            engaged[matched["send"].dropna().to_numpy(np.int64)] = True
        parts.append(sends.assign(engaged=engaged).drop(columns="event_timestamp"))
    rows = pd.concat(parts, ignore_index=True).sort_values("sent_at", kind="stable").reset_index(drop=True)
    seconds = rows["sent_at"].astype("int64").to_numpy() // 1_000_000_000
    rows["slot"] = local_hour_of_week(seconds, zones.reindex(rows["customer_id"]).to_numpy())
    return rows


def channel_unavailable(rows: pd.DataFrame) -> dict[str, Any] | None:
    """The report's channel block when the data cannot say which channel works, else None."""
    if len(rows) and rows["engaged"].any():
        return None
    reason = (
        "the data has no marketing sends (email_send, sms_send, push_send)"
        if not len(rows)
        else f"none of the {len(rows):,} sends was engaged with (opened or clicked)"
    )
    return {"status": "n/a", "reason": reason, "n_sends": len(rows), "exported": False}


def _utc_ns(times: pd.Series) -> pd.Series:
    return pd.to_datetime(times, utc=True).astype("datetime64[ns, UTC]")


# ---------------------------------------------------------------------------------------------
# Inputs as of an instant
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    """The channel model's per-customer inputs at (customer, instant) pairs."""

    rates: np.ndarray  # (n, 3), NaN without sends
    sends: np.ndarray  # (n, 3)
    slot_probs: np.ndarray  # (n, 168) the send-time model's


def inputs_at(run: Run, send_time: ServedModel, ids: pd.Series, instants: pd.Series) -> Inputs:
    """Exact features at each (customer, instant), and the send-time model's slot probabilities."""
    from training.feature_tables import KEYS
    from training.features import pair_features, repo_tables

    stats, histograms = pair_features(
        run.events, run.customers, ids, _utc_ns(instants), repo_tables(Path(run.store.repo_path))
    )
    frame = pd.concat([stats, histograms.drop(columns=[k for k, _ in KEYS])], axis=1)
    rates = stats[list(RATE_FEATURES)].to_numpy(np.float64)
    sends = stats[list(SEND_FEATURES)].to_numpy(np.float64)
    return Inputs(rates, np.nan_to_num(sends), send_time.predict(frame, run.store))


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Design:
    """One row per send: its channel, the customer's evidence on every channel, its slot and outcome."""

    channel: np.ndarray  # (n,) index into CHANNELS
    rates: np.ndarray  # (n, 3) the customer's own 90-day rates, NaN without sends
    sends: np.ndarray  # (n, 3) their 90-day sends
    slot_p: np.ndarray  # (n,) the send-time model's probability of the send's slot
    hour: np.ndarray  # (n,) the slot's local hour of day
    y: np.ndarray  # (n,) engaged

    @classmethod
    def of(cls, rows: pd.DataFrame, inputs: Inputs) -> Design:
        slot = rows["slot"].to_numpy(np.int64)
        return cls(
            rows["channel"].to_numpy(np.int64),
            inputs.rates,
            inputs.sends,
            inputs.slot_probs[np.arange(len(rows)), slot],
            slot % 24,
            rows["engaged"].to_numpy(bool),
        )

    def take(self, index: np.ndarray) -> Design:
        return Design(
            *(getattr(self, f)[index] for f in ("channel", "rates", "sends", "slot_p", "hour", "y"))
        )

    @property
    def own_rate(self) -> np.ndarray:
        return self.rates[np.arange(len(self.channel)), self.channel]

    @property
    def own_sends(self) -> np.ndarray:
        return self.sends[np.arange(len(self.channel)), self.channel]

    def predict(self, model: ChannelModel) -> np.ndarray:
        """The served model's probability of each row (its own channel, its own slot)."""
        p = model.probabilities(self.rates, self.sends, self.slot_p[:, None], self.hour[:, None])
        return p[np.arange(len(self.channel)), self.channel, 0]


def fit_prior(successes: np.ndarray, trials: np.ndarray) -> tuple[float, float]:
    """(mean, strength) of the Beta prior of a beta-binomial, by maximum likelihood over customers."""
    from scipy.optimize import minimize
    from scipy.special import betaln

    keep = trials > 0
    x, n = successes[keep].astype(np.float64), trials[keep].astype(np.float64)
    mean0 = float(np.clip(x.sum() / max(n.sum(), 1.0), 1e-4, 1 - 1e-4))

    def loss(theta: np.ndarray) -> float:
        mean, strength = 1.0 / (1.0 + np.exp(-theta[0])), np.exp(theta[1])
        a, b = mean * strength, (1.0 - mean) * strength
        return float(-(betaln(x + a, n - x + b) - betaln(a, b)).sum())

    start = np.array([np.log(mean0 / (1 - mean0)), np.log(10.0)])
    theta = minimize(loss, start, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-6}).x
    strength = float(np.clip(np.exp(theta[1]), 0.1, 1e5))
    return float(1.0 / (1.0 + np.exp(-theta[0]))), strength


def fit_priors(rows: pd.DataFrame) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per channel, the Beta prior of the customers' engagement rates from their sends in ``rows``."""
    counts = rows.groupby(["channel", "customer_id"])["engaged"].agg(["sum", "count"])
    means, strengths = [], []
    for channel in range(len(CHANNELS)):
        mine = counts.loc[channel] if channel in counts.index.get_level_values(0) else counts.iloc[:0]
        if mine["sum"].sum() == 0:  # no evidence: a weak prior at a tiny rate
            means.append(1e-3)
            strengths.append(1.0)
            continue
        mean, strength = fit_prior(mine["sum"].to_numpy(), mine["count"].to_numpy())
        means.append(mean)
        strengths.append(strength)
    return tuple(means), tuple(strengths)


def fit_model(
    design: Design,
    prior: tuple[tuple[float, ...], tuple[float, ...]],
    link: str,
    cross: bool = False,
    info: dict[str, Any] | None = None,
) -> ChannelModel:
    """Penalised maximum likelihood of the calibration on ``design`` with a fixed prior; with
    ``cross``, each channel also weighs the customer's evidence on the other channels."""
    from scipy.optimize import minimize

    mean, strength = np.array(prior[0]), np.array(prior[1])
    k = len(CHANNELS)
    skeleton = ChannelModel(
        tuple(mean), tuple(strength), (0.0,) * k, (1.0,) * k, 0.0, ((0.0,) * 24,) * k, link
    )
    log_shrunk = np.log(skeleton.shrunk_rates(design.rates, design.sends))  # (n, 3)
    log_slot = np.log(168.0 * np.fmax(design.slot_p, 1e-6))
    log_slot[np.isnan(design.slot_p)] = 0.0
    c, cell, y = design.channel, design.channel * 24 + design.hour, design.y.astype(np.float64)
    free = np.ones((k, k), bool) if cross else np.eye(k, dtype=bool)  # which weights are fitted
    off = ~np.eye(k, dtype=bool)

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        weights = theta[k : k + k * k].reshape(k, k) * free
        return theta[:k], weights, float(theta[k + k * k]), theta[k + k * k + 1 :].reshape(k, 24)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        intercept, weights, slot_w, hours = unpack(theta)
        eta = intercept[c] + (log_shrunk * weights[c]).sum(axis=1) + slot_w * log_slot + hours.ravel()[cell]
        if link == "cloglog":
            eta = np.clip(eta, -30.0, 4.0)
            mu = np.exp(eta)
            nll = -(y * np.log(-np.expm1(-mu)) - (1.0 - y) * mu).sum()
            grad_eta = (1.0 - y) * mu - y * mu / np.expm1(mu)
        else:
            nll = (np.logaddexp(0.0, eta) - y * eta).sum()
            grad_eta = 1.0 / (1.0 + np.exp(-eta)) - y
        neighbours = np.roll(hours, 1, axis=1) + np.roll(hours, -1, axis=1)
        penalty = (
            HOUR_RIDGE * (hours**2).sum()
            + HOUR_SMOOTHING * ((hours - np.roll(hours, 1, axis=1)) ** 2).sum()
            + CROSS_RIDGE * (weights[off] ** 2).sum()
        )
        weight_grad = np.column_stack([np.bincount(c, grad_eta * log_shrunk[:, j], k) for j in range(k)])
        weight_grad = (weight_grad + 2.0 * CROSS_RIDGE * weights * off) * free
        grad = np.concatenate(
            [
                np.bincount(c, grad_eta, k),
                weight_grad.ravel(),
                [np.dot(grad_eta, log_slot)],
                np.bincount(cell, grad_eta, k * 24)
                + (2.0 * HOUR_RIDGE * hours + 2.0 * HOUR_SMOOTHING * (2.0 * hours - neighbours)).ravel(),
            ]
        )
        return float(nll + penalty), grad

    base = np.log(-np.log1p(-mean)) if link == "cloglog" else np.log(mean / (1.0 - mean))
    start = np.concatenate([base - np.log(mean), np.eye(k).ravel(), [1.0], np.zeros(k * 24)])
    theta = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 1000}).x
    intercept, weights, slot_w, hours = unpack(theta)
    return ChannelModel(
        prior_mean=tuple(float(v) for v in mean),
        prior_strength=tuple(float(v) for v in strength),
        intercept=tuple(float(v) for v in intercept),
        rate_weight=tuple(float(v) for v in np.diag(weights)),
        slot_weight=slot_w,
        hour_effect=tuple(tuple(float(v) for v in row) for row in hours),
        link=link,
        cross_weight=tuple(tuple(float(v) for v in row) for row in weights * off),
        info=dict(info or {}),
    )


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1.0 - 1e-6)
    return float(-(y * np.log(p) + (1.0 - y) * np.log1p(-p)).mean())


# ---------------------------------------------------------------------------------------------
# The training stage and its evaluation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trained:
    """The stage's outcome: the report block, and the model to write (None when n/a)."""

    metrics: dict[str, Any]
    model: ChannelModel | None


def _sample(rows: pd.DataFrame, cap: int, rng: np.random.Generator) -> pd.DataFrame:
    if len(rows) <= cap:
        return rows
    return rows.iloc[np.sort(rng.choice(len(rows), cap, replace=False))]


def train_channel(run: Run, send_time: ServedModel | None, limits: Limits | None = None) -> Trained:
    """Fit on the training period's sends, choose the link on the selection period, evaluate on test."""
    limits = limits or Limits()
    rows = send_outcomes(run.events, run.customers)
    unavailable = channel_unavailable(rows)
    if unavailable is not None:
        return Trained(unavailable, None)
    if send_time is None:
        return Trained(
            {
                "status": "n/a",
                "reason": "no send-time model on this data (no times of day): the channel model ranks "
                "channels at the send-time model's slots",
                "n_sends": len(rows),
                "exported": False,
            },
            None,
        )
    rng = np.random.default_rng([run.seed, STREAM])
    split = run.split
    at = rows["sent_at"]
    train_all = rows[at < split.train_end - ATTRIBUTION]  # outcomes seen before the gap
    test_all = rows[(at >= split.test[0]) & (at < split.data_end - ATTRIBUTION)]
    train_rows = _sample(train_all, limits.train, rng)
    test_rows = _sample(test_all, limits.test, rng)
    pairs = _pairs(run, limits.pairs, rng)
    every = pd.concat(
        [
            train_rows[["customer_id", "sent_at"]].rename(columns={"sent_at": "at"}),
            test_rows[["customer_id", "sent_at"]].rename(columns={"sent_at": "at"}),
            pairs.rename(columns={"event_timestamp": "at"}),
        ],
        ignore_index=True,
    )
    inputs = inputs_at(run, send_time, every["customer_id"], every["at"])
    parts = np.repeat(np.arange(3), [len(train_rows), len(test_rows), len(pairs)])

    def part(p: int) -> Inputs:
        mask = parts == p
        return Inputs(inputs.rates[mask], inputs.sends[mask], inputs.slot_probs[mask])

    train_design = Design.of(train_rows.reset_index(drop=True), part(0))
    test_design = Design.of(test_rows.reset_index(drop=True), part(1))
    run.clock.done(
        "channel training set",
        f"{len(rows):,} sends, sampled {len(train_rows):,} train / {len(test_rows):,} test, "
        f"{len(pairs):,} test instants",
    )

    # The link, chosen on the selection period by models fitted one horizon before it.
    t = train_rows["sent_at"].reset_index(drop=True)
    fit_idx = np.flatnonzero((t < split.selection_fit_end - ATTRIBUTION).to_numpy())
    eval_idx = np.flatnonzero((t >= split.selection_start).to_numpy())
    fit_idx = np.sort(rng.permutation(fit_idx)[: limits.selection_fit])
    eval_idx = np.sort(rng.permutation(eval_idx)[: limits.selection])
    candidates: list[dict[str, Any]] = []
    chosen, chosen_cross = LINKS[0], False  # without sends on both sides of the selection gap
    if len(fit_idx) >= MIN_SELECTION_ROWS and len(eval_idx) >= MIN_SELECTION_ROWS:
        selection_prior = fit_priors(train_all[train_all["sent_at"] < split.selection_fit_end - ATTRIBUTION])
        held = train_design.take(eval_idx)
        for link in LINKS:
            for cross in (False, True):
                fitted = fit_model(train_design.take(fit_idx), selection_prior, link, cross)
                score = log_loss(held.y, held.predict(fitted))
                candidates.append({"link": link, "cross_channel": cross, "validation_log_loss": score})
        best = min(candidates, key=lambda row: row["validation_log_loss"])
        chosen, chosen_cross = best["link"], best["cross_channel"]
    prior = fit_priors(train_all)
    population = train_all.groupby("channel")["engaged"].mean().reindex(range(3)).fillna(0.0).to_numpy()
    model = fit_model(
        train_design,
        prior,
        chosen,
        chosen_cross,
        {
            "trained_on": [split.data_start.isoformat(), split.train_end.isoformat()],
            "n_train": len(train_rows),
            "population_rate": [float(v) for v in population],
        },
    )
    run.clock.done("channel fit", f"{chosen} link on {len(train_rows):,} sends")
    metrics: dict[str, Any] = {
        "n_sends_before_sampling": len(rows),
        "n_train": len(train_rows),
        "n_test": len(test_rows),
        "model": f"per channel: the customer's 90-day rate shrunk toward the population (Beta prior, "
        f"beta-binomial ML) by its sends; {chosen} calibration on [log shrunk rate per channel"
        + (", the other channels' log shrunk rates" if chosen_cross else "")
        + ", log(168 x send-time slot probability), channel x local hour of day (penalised smooth)]",
        "link": chosen,
        "links": candidates,
        "prior_mean": dict(zip(CHANNELS, model.prior_mean, strict=True)),
        "prior_strength_sends": dict(zip(CHANNELS, model.prior_strength, strict=True)),
        "cross_channel": chosen_cross,
        "rate_weight": dict(zip(CHANNELS, model.rate_weight, strict=True)),
        "cross_weight": {
            name: dict(zip(CHANNELS, row, strict=True))
            for name, row in zip(CHANNELS, model.cross_weight, strict=True)
        },
        "slot_weight": model.slot_weight,
        "hour_effect": {
            name: [round(v, 4) for v in row] for name, row in zip(CHANNELS, model.hour_effect, strict=True)
        },
        "population_rate": dict(zip(CHANNELS, population.tolist(), strict=True)),
        "features": "exact at each send / instant (training.features.pair_features: what the live state serves)",
        **_log_losses(run, model, test_rows.reset_index(drop=True), test_design, population),
        **_hit_at_1(run, model, pairs, part(2), population),
    }
    run.clock.done(
        "channel evaluated",
        f"hit@1 {_fmt(metrics['hit_at_1'])} (baselines {_fmt(metrics['baseline_global_hit_at_1'])} global, "
        f"{_fmt(metrics['baseline_customer_hit_at_1'])} own best), log loss {_fmt(metrics['log_loss'])}",
    )
    return Trained(metrics, model)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _pairs(run: Run, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Random (customer, instant) pairs of the test period whose next day is in the data."""
    from training.labels import customer_start
    from training.served import random_pairs

    known = customer_start(run.events, run.customers)
    if run.truth is not None:  # the oracle needs the customer's truth
        known = known[known.index.isin(run.truth["customer_id"])]
    end = run.split.data_end - pd.Timedelta(hours=CANDIDATE_HOURS)
    return random_pairs(known, run.split.test[0], end, n, rng)


def baseline_probabilities(design: Design, population: np.ndarray) -> dict[str, np.ndarray]:
    """The two baselines' P(engaged) for each row: the channel's population rate, and the
    customer's own 90-day rate on it (clipped; the population's without sends)."""
    own = np.where(
        design.own_sends > 0,
        np.clip(np.nan_to_num(design.own_rate, nan=0.0), *BASELINE_CLIP),
        population[design.channel],
    )
    return {"global": population[design.channel], "customer": own}


def _log_losses(
    run: Run, model: ChannelModel, rows: pd.DataFrame, design: Design, population: np.ndarray
) -> dict[str, Any]:
    if not len(rows):
        keys = ("engaged_rate", "mean_predicted", "log_loss", "oracle_log_loss", "ece")
        return {**dict.fromkeys(keys), "baseline_global_log_loss": None, "baseline_customer_log_loss": None}
    p = design.predict(model)
    y = design.y.astype(np.float64)
    scores = {
        "model": p,
        **{f"baseline_{k}": v for k, v in baseline_probabilities(design, population).items()},
    }
    if run.truth is not None:
        from training.simulate import true_engagement_probability

        truth = true_engagement_probability(run.truth, rows["customer_id"], rows["slot"].to_numpy()[:, None])
        scores["oracle"] = truth[np.arange(len(rows)), design.channel, 0]
    out: dict[str, Any] = {
        "engaged_rate": float(y.mean()),
        "mean_predicted": float(p.mean()),
        "log_loss": log_loss(y, p),
        "log_loss_by_channel": {
            name: log_loss(y[design.channel == c], p[design.channel == c])
            if (design.channel == c).any()
            else None
            for c, name in enumerate(CHANNELS)
        },
        "oracle_log_loss": None,
    }
    for name, values in scores.items():
        if name != "model":
            out[f"{name}_log_loss"] = log_loss(y, values)
    from training.evaluate import expected_calibration_error

    out["ece"] = expected_calibration_error(y, p)
    return out


def candidate_slots(
    ids: pd.Series, instants: pd.Series, zones: pd.Series, hours: int = CANDIDATE_HOURS
) -> np.ndarray:
    """(n, hours) local hour-of-week slots of the next ``hours`` whole UTC hours from each instant."""
    seconds = -(-_utc_ns(instants).astype("int64").to_numpy() // 1_000_000_000)
    first = -(-seconds // 3600) * 3600
    starts = first[:, None] + 3600 * np.arange(hours)[None, :]
    zone = zones.reindex(pd.Index(ids)).to_numpy()
    return local_hour_of_week(starts.ravel(), np.repeat(zone, hours)).reshape(len(ids), hours)


def _hit_at_1(
    run: Run, model: ChannelModel, pairs: pd.DataFrame, inputs: Inputs, population: np.ndarray
) -> dict[str, Any]:
    """Best channel at random test instants: the model's and the baselines' against the oracle's."""
    none: dict[str, Any] = {
        "hit_at_1": None,
        "baseline_global_hit_at_1": None,
        "baseline_customer_hit_at_1": None,
        "cold_start_share": None,
        "cold_start_hit_at_1": None,
    }
    if run.truth is None or not len(pairs):
        return {**none, "hit_at_1_note": "needs the simulator's truth (--truth): the oracle's best channel"}
    from training.simulate import true_engagement_probability

    zones = run.customers.set_index("customer_id")["time_zone"]
    slots = candidate_slots(pairs["customer_id"], pairs["event_timestamp"], zones)
    slot_p = np.take_along_axis(inputs.slot_probs, slots, axis=1)
    predicted = model.probabilities(inputs.rates, inputs.sends, slot_p, slots % 24)
    best_slot, best_p = ChannelModel.best_slots(predicted)
    truth = true_engagement_probability(run.truth, pairs["customer_id"], slots)
    true_best = truth.max(axis=2)  # (n, 3): each channel at its truly best candidate slot
    oracle = true_best.argmax(axis=1)
    global_best = int(np.argmax(population))
    own = np.where(inputs.sends > 0, np.nan_to_num(inputs.rates, nan=-1.0), -1.0)
    customer = np.where(own.max(axis=1) >= 0, own.argmax(axis=1), global_best)
    choices = {
        "model": best_p.argmax(axis=1),
        "global": np.full(len(pairs), global_best),
        "customer": customer,
    }
    n = np.arange(len(pairs))
    cold = ChannelModel.cold_start(inputs.sends)
    model_choice = choices["model"]
    hit = {name: float((choice == oracle).mean()) for name, choice in choices.items()}
    engaged = {name: float(true_best[n, choice].mean()) for name, choice in choices.items()}
    return {
        "n_instants": len(pairs),
        "candidates": f"the next {CANDIDATE_HOURS} whole hours from each instant",
        "hit_at_1": hit["model"],
        "baseline_global_hit_at_1": hit["global"],
        "baseline_customer_hit_at_1": hit["customer"],
        "global_best_channel": CHANNELS[global_best],
        "channel_share": {
            method: {name: float((choice == c).mean()) for c, name in enumerate(CHANNELS)}
            for method, choice in {"oracle": oracle, **choices}.items()
        },
        "true_engagement_of_choice": {"oracle": float(true_best.max(axis=1).mean()), **engaged},
        "true_engagement_at_model_slot": float(truth[n, model_choice, best_slot[n, model_choice]].mean()),
        "cold_start_share": float(cold.mean()),
        "cold_start_hit_at_1": float((model_choice[cold] == oracle[cold]).mean()) if cold.any() else None,
        "among_sent_channels": _among_sent(inputs, best_p, true_best, population),
    }


def _among_sent(
    inputs: Inputs, best_p: np.ndarray, true_best: np.ndarray, population: np.ndarray
) -> dict[str, Any]:
    """hit@1 when only the channels the customer was sent on in the last 90 days may be chosen
    (a stand-in for their opt-ins, which the data does not hold), at instants with two or more."""
    sent = inputs.sends > 0
    rows = sent.sum(axis=1) >= 2
    if not rows.any():
        return {
            "n_instants": 0,
            "hit_at_1": None,
            "baseline_global_hit_at_1": None,
            "baseline_customer_hit_at_1": None,
        }
    sent = sent[rows]
    oracle = np.where(sent, true_best[rows], -np.inf).argmax(axis=1)
    own = np.where(sent, np.nan_to_num(inputs.rates[rows], nan=0.0), -np.inf)
    choices = {
        "model": np.where(sent, best_p[rows], -np.inf).argmax(axis=1),
        "global": np.where(sent, population, -np.inf).argmax(axis=1),
        "customer": own.argmax(axis=1),
    }
    hit = {name: float((choice == oracle).mean()) for name, choice in choices.items()}
    return {
        "n_instants": int(rows.sum()),
        "hit_at_1": hit["model"],
        "baseline_global_hit_at_1": hit["global"],
        "baseline_customer_hit_at_1": hit["customer"],
    }


def write_channel_model(models_dir: Path, model: ChannelModel, versions: dict[str, str]) -> dict[str, Any]:
    """Write MODELS/channel_model.json (atomically), stamped with the model versions it was
    trained beside (its slot probabilities are the send-time model's); returns the report's
    record of it."""
    import dataclasses
    import hashlib

    stamped = dataclasses.replace(model, info={**model.info, "trained_with": dict(versions)})
    path = stamped.to_json(Path(models_dir) / FILE_NAME)
    return {
        "path": FILE_NAME,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "trained_with": dict(versions),
    }
