"""Both exported models scored as the server scores them, at random instants of the test period.

The propensity model is trained and evaluated at snapshot times, where the snapshot is exact.
The server scores at any instant: with live states (``nudge load-states``) on features exact at
the instant; without them on the newest materialised snapshot row at or before it (none once
older than the view's TTL), up to a cadence stale. (Send-time rows are engagements at any time,
joined point in time to the tables' rows just before each engagement: that evaluation scores
exact features, and this one's exact column reproduces its hit@3 on the same rows.) This
measures the skew with the exported models (the same onnxruntime session the server runs) on
the same (customer, instant) pairs, with features

  exact   at the instant, from the events strictly before it (``training.features.features_at``:
          what the live state serves, parity-tested)
  served  the newest snapshot row of each view's offline table at or before the instant,
          dropped when older than the view's TTL (what a server without live states reads)

* propensity: (customer, instant) pairs drawn uniformly over the customers known at the
  instant and the instants of the test period whose label window (t, t + H] is in the data;
  labelled like the training cutoffs (``training.labels.purchased_within``).
* send time: the send-time evaluation's own test engagements (a seeded sample), each at its
  exact time; the label is the engagement's slot.

Its draws come from their own generator, so every other number of the run stays as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nudge.contract.manifest import FeatureInput
from training.datasets import feature_matrix, model_inputs
from training.evaluate import hit_at_k, roc_auc
from training.export import INPUT_NAME, OUTPUT_NAME
from training.feature_tables import KEYS, is_snapshot
from training.features import pair_features, repo_tables
from training.labels import customer_start, purchased_within

if TYPE_CHECKING:
    from feast import FeatureStore

    from training.train import Run

# Mixed into the run's seed: this evaluation's draws never shift the run's own random stream.
STREAM = 0x5E7ED


@dataclass(frozen=True)
class ServedModel:
    """An exported model and how the server feeds it: its feature service and input layout."""

    service: str
    onnx_bytes: bytes
    features: tuple[FeatureInput, ...]

    def predict(self, frame: pd.DataFrame, store: FeatureStore) -> np.ndarray:
        """Probabilities from the server's onnxruntime session, inputs laid out as the manifest."""
        from nudge.contract.onnx import onnx_session

        x, layout = feature_matrix(frame, model_inputs(store, self.service))
        if layout != self.features:
            raise RuntimeError(f"{self.service}: input layout {layout} is not the model's {self.features}")
        session = onnx_session(self.onnx_bytes)
        return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: x})[0], dtype=np.float64)


@dataclass(frozen=True)
class ViewTable:
    """One feature view's snapshot rows (what a weekly materialisation copies online: its
    whole-second rows, not those just before engagements) and its TTL."""

    name: str
    rows: pd.DataFrame  # customer_id, event_timestamp, the view's features
    ttl: pd.Timedelta | None  # None: rows never expire (Feast's ttl of 0 or none)

    @classmethod
    def of(cls, store: FeatureStore, name: str) -> ViewTable:
        view = store.get_feature_view(name)
        path = getattr(view.batch_source, "path", None)
        if not path:
            raise ValueError(f"{name}'s source is not a file source; cannot read its snapshots")
        rows = pd.read_parquet(path)
        snapshots = rows[is_snapshot(rows["event_timestamp"])]
        return cls(name, snapshots, pd.Timedelta(view.ttl) if view.ttl else None)


def as_served(view: ViewTable, instants: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Per (customer_id, event_timestamp) row, the view's newest row at or before the instant
    (all features missing when there is none within the TTL), and its age in days (NaN if none).

    Rows come back in the given order, with the view's feature columns only.
    """
    left = instants[["customer_id", "event_timestamp"]].reset_index(drop=True)
    left = left.assign(_order=np.arange(len(left)), event_timestamp=_utc_ns(left["event_timestamp"]))
    right = view.rows.rename(columns={"event_timestamp": "_snapshot"})
    right["_snapshot"] = _utc_ns(right["_snapshot"])
    joined = pd.merge_asof(
        left.sort_values("event_timestamp", kind="stable"),
        right.sort_values("_snapshot", kind="stable"),
        left_on="event_timestamp",
        right_on="_snapshot",
        by="customer_id",
        direction="backward",
        allow_exact_matches=True,  # a snapshot at the instant counts only events before it
        tolerance=view.ttl,
    ).sort_values("_order")
    ages = (joined["event_timestamp"] - joined["_snapshot"]).dt.total_seconds().to_numpy(np.float64) / 86_400
    features = [c for c in view.rows.columns if c not in dict(KEYS)]
    return joined[features].reset_index(drop=True), ages


def _utc_ns(times: pd.Series) -> pd.Series:
    """One timestamp dtype on both sides of the as-of join (merge_asof refuses mixed units)."""
    return pd.to_datetime(times, utc=True).astype("datetime64[ns, UTC]")


def random_pairs(
    known_since: pd.Series, start: pd.Timestamp, end: pd.Timestamp, n: int, rng: np.random.Generator
) -> pd.DataFrame:
    """``n`` (customer_id, event_timestamp) pairs uniform over {(c, t): known_since[c] < t,
    start <= t <= end}, t in whole seconds: each customer is drawn in proportion to the time
    they are known in the period, then an instant uniform in it (no rejection loop)."""
    first, last = int(start.ceil("s").timestamp()), int(end.floor("s").timestamp())
    known = _utc_ns(known_since).astype(np.int64).to_numpy() // 1_000_000_000  # floor: t > known
    lo = np.maximum(first, known + 1)
    length = np.maximum(last - lo + 1, 0).astype(np.float64)
    if not length.sum():
        raise ValueError(f"no customer is known between {start} and {end}")
    chosen = rng.choice(len(lo), size=n, p=length / length.sum())
    seconds = lo[chosen] + rng.integers(0, length[chosen].astype(np.int64))
    return pd.DataFrame(
        {
            "customer_id": known_since.index.to_numpy()[chosen],
            "event_timestamp": pd.to_datetime(seconds, unit="s", utc=True),
        }
    )


def evaluate_served(
    run: Run,
    propensity: ServedModel,
    send_time: ServedModel | None,
    test_engagements: pd.DataFrame | None,
) -> dict[str, Any]:
    """The report's ``served`` block: exact vs served metrics on the same pairs and engagements.

    ``test_engagements`` are the send-time evaluation's test rows (customer_id, engaged_at, slot);
    both are None when the data has no send-time model (dates without times of day), and the
    block's ``send_time`` part says n/a.
    """
    rng = np.random.default_rng([run.seed, STREAM])
    split = run.split
    end = split.data_end - split.horizon
    pairs = random_pairs(
        customer_start(run.events, run.customers), split.test[0], end, run.limits.served_pairs, rng
    )
    labels = purchased_within(run.events, pairs, split.horizon).to_numpy()
    parts, slots = [pairs], np.zeros(0, dtype=np.int64)
    if test_engagements is not None:
        picked = np.sort(rng.permutation(len(test_engagements))[: run.limits.served_engagements])
        moments = test_engagements.iloc[picked]
        slots = moments["slot"].to_numpy()
        parts.append(
            pd.DataFrame({"customer_id": moments["customer_id"], "event_timestamp": moments["engaged_at"]})
        )
    instants = pd.concat(parts, ignore_index=True)
    instants["event_timestamp"] = _utc_ns(instants["event_timestamp"])

    exact_stats, exact_histograms = pair_features(
        run.events,
        run.customers,
        instants["customer_id"],
        instants["event_timestamp"],
        repo_tables(Path(run.store.repo_path)),
    )
    exact = pd.concat([exact_stats, exact_histograms.drop(columns=[k for k, _ in KEYS])], axis=1)
    served_parts, ages = [], {}
    models = (propensity,) if send_time is None else (propensity, send_time)
    for name in _views(run.store, models):
        frame, ages[name] = as_served(ViewTable.of(run.store, name), instants)
        served_parts.append(frame)
    served = pd.concat(served_parts, axis=1)

    is_pair = np.arange(len(instants)) < len(pairs)
    frames = {"exact": exact, "served": served}
    auc = {
        kind: roc_auc(labels, propensity.predict(f[is_pair], run.store)[:, 1]) for kind, f in frames.items()
    }
    return {
        "what": "the exported models at random instants of the test period, on the same pairs: features "
        "exact at the instant (features_at: what the live state computes) vs as served today (each view's "
        "newest snapshot row at or before the instant; none past the view's TTL)",
        "propensity": {
            "instants": [split.test[0].isoformat(), end.isoformat()],
            "n_pairs": len(pairs),
            "positive_rate": float(labels.mean()),
            "roc_auc_exact": auc["exact"],
            "roc_auc_served": auc["served"],
            "roc_auc_exact_minus_served": _difference(auc["exact"], auc["served"]),
            **_staleness(ages, propensity, run.store, is_pair),
        },
        "send_time": {"status": "n/a", "reason": "no send-time model was trained on this data"}
        if send_time is None
        else _send_time_block(send_time, run.store, frames, ~is_pair, slots, ages),
    }


def _send_time_block(
    model: ServedModel,
    store: FeatureStore,
    frames: dict[str, pd.DataFrame],
    rows: np.ndarray,
    slots: np.ndarray,
    ages: dict[str, np.ndarray],
) -> dict[str, Any]:
    """hit@3 of the send-time model on the test engagements (``rows`` of the instants), features
    exact vs as served."""
    hit = {kind: hit_at_k(model.predict(frame[rows], store), slots, 3) for kind, frame in frames.items()}
    return {
        "n_engagements": len(slots),
        "hit_at_3_exact": hit["exact"],
        "hit_at_3_served": hit["served"],
        "hit_at_3_exact_minus_served": _difference(hit["exact"], hit["served"]),
        **_staleness(ages, model, store, rows),
    }


def _views(store: FeatureStore, models: Sequence[ServedModel]) -> list[str]:
    """The feature views the models' services read, each once, in first-use order."""
    names = (p.name for m in models for p in store.get_feature_service(m.service).feature_view_projections)
    return list(dict.fromkeys(names))


def _staleness(
    ages: dict[str, np.ndarray], model: ServedModel, store: FeatureStore, rows: np.ndarray
) -> dict[str, dict[str, float | None]]:
    """Per view the model reads: mean days since the row served was written, and the share of
    instants with no row within the TTL (the server then sends missing features)."""
    views = _views(store, [model])
    found = {name: ages[name][rows][~np.isnan(ages[name][rows])] for name in views}
    asked = max(int(rows.sum()), 1)
    return {
        "mean_snapshot_age_days": {name: float(a.mean()) if len(a) else None for name, a in found.items()},
        "served_missing_share": {name: (asked - len(a)) / asked for name, a in found.items()},
    }


def _difference(exact: float | None, served: float | None) -> float | None:
    return None if exact is None or served is None else exact - served
