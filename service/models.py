"""ONNX models as the scoring core uses them: loaded once, checked, fed by feature name.

A ``LoadedModel`` owns one onnxruntime session (created once, one intra-op thread: requests
are tiny and parallelism comes from worker processes) and the column layout that turns a
customer's features, addressed by name, into the float32 row its manifest describes.
``ModelSet`` is the pair the server swaps atomically when a new version arrives.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import onnxruntime as ort

from nudge.contract.channel_model import FILE_NAME as CHANNEL_MODEL_FILE
from nudge.contract.channel_model import ChannelModel, ChannelModelError
from nudge.contract.features import ENGAGEMENT_SERVICE
from nudge.contract.manifest import REASONS_FILE, Manifest, ManifestError, latest_version_dir, load_model_dir
from nudge.contract.onnx import onnx_session
from nudge.contract.week import HOURS_PER_WEEK
from service.reasons import ReasonTables, load_reasons

if TYPE_CHECKING:
    from feast import FeatureStore

PROPENSITY = "propensity"
SEND_TIME = "send_time"
_NAN = math.nan


@dataclass(frozen=True)
class LoadedModel:
    """One model version ready to run: manifest, session, input layout."""

    manifest: Manifest
    session: ort.InferenceSession
    # (feature ref, first column, width) in manifest order, computed once.
    layout: tuple[tuple[str, int, int], ...]
    # The propensity's reason tables (service/reasons.py); None for models written without.
    reasons: ReasonTables | None = None

    @functools.cached_property
    def width(self) -> int:
        """Columns of the input row (arrays expanded), computed once, not per request."""
        return sum(width for _, _, width in self.layout)

    @functools.cached_property
    def scalars(self) -> tuple[tuple[str, ...], slice | np.ndarray]:
        """The one-column features' refs and their columns, in layout order; the columns as a
        slice when they are contiguous (they usually are), the cheapest index to assign to."""
        ones = [(ref, start) for ref, start, width in self.layout if width == 1]
        columns = [start for _, start in ones]
        if columns and columns == list(range(columns[0], columns[0] + len(columns))):
            return tuple(ref for ref, _ in ones), slice(columns[0], columns[0] + len(columns))
        return tuple(ref for ref, _ in ones), np.array(columns, dtype=np.intp)

    @functools.cached_property
    def arrays(self) -> tuple[tuple[str, int, int], ...]:
        """The layout entries of features wider than one column."""
        return tuple(entry for entry in self.layout if entry[2] > 1)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def rows(self, features: Sequence[Mapping[str, object]]) -> np.ndarray:
        """Float32 input rows in manifest order; a missing value (None) stays NaN.

        Scalar features (most of them) go into a row as one list in one numpy assignment:
        per-column assignments cost about 0.2 µs each, and this runs on every request.
        """
        x = np.full((len(features), self.width), np.nan, dtype=np.float32)
        scalar_refs, scalar_columns = self.scalars
        for i, values in enumerate(features):
            if not values:
                continue  # no features at all (cold start): the row stays NaN
            get = values.get
            scalars = [_NAN if (v := get(ref)) is None else v for ref in scalar_refs]
            x[i, scalar_columns] = cast(list[float], scalars)
            for ref, start, width in self.arrays:
                value = get(ref)
                if value is not None:
                    x[i, start : start + width] = cast(np.ndarray, value)
        return x

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The model's probabilities output, [N, output_width]."""
        (out,) = self.session.run([self.manifest.output_name], {self.manifest.input_name: x})
        return np.asarray(out)


def load_model(version_dir: Path) -> LoadedModel:
    """Load a version directory and prove it runs: sha256, shapes, one smoke inference."""
    manifest, onnx_bytes = load_model_dir(version_dir)
    try:
        session = onnx_session(onnx_bytes)
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        raise ManifestError(f"{version_dir}: ONNX model does not load: {exc}") from exc
    layout, start = [], 0
    for feature in manifest.features:
        layout.append((feature.ref, start, feature.size))
        start += feature.size
    reasons = load_reasons(version_dir, manifest) if (version_dir / REASONS_FILE).exists() else None
    model = LoadedModel(manifest, session, tuple(layout), reasons)
    _smoke_test(model, version_dir)
    return model


def _smoke_test(model: LoadedModel, version_dir: Path) -> None:
    """Run one all-missing row: the cold-start input every model must handle."""
    try:
        out = model.predict(model.rows([{}]))
    except Exception as exc:  # any failure here means the model cannot serve
        raise ManifestError(f"{version_dir}: smoke inference failed: {exc}") from exc
    if out.shape != (1, model.manifest.output_width):
        raise ManifestError(
            f"{version_dir}: output {model.manifest.output_name} has shape {out.shape}, "
            f"manifest says (1, {model.manifest.output_width})"
        )
    if not np.all(np.isfinite(out)):
        raise ManifestError(f"{version_dir}: smoke inference produced non-finite probabilities")


@dataclass(frozen=True)
class ModelSet:
    """The propensity and send-time models served together, and the channel model trained with
    them (None when the data had no sends: the answers then rank no channels)."""

    propensity: LoadedModel
    send_time: LoadedModel
    channel: ChannelModel | None = None

    @functools.cached_property
    def versions(self) -> dict[str, str]:
        """Name → version; every response carries it, so it is built once per model set."""
        return {m.name: m.version for m in (self.propensity, self.send_time)}

    @functools.cached_property
    def horizon_days(self) -> int:
        """The propensity label's horizon, as responses report it."""
        return int(self.propensity.manifest.label.get("horizon_days", 0))

    @property
    def feature_refs(self) -> list[str]:
        """Union of both models' inputs, in first-seen order: one online read serves both."""
        return list(
            dict.fromkeys(self.propensity.manifest.feature_refs + self.send_time.manifest.feature_refs)
        )


def load_latest(models_dir: Path) -> ModelSet:
    """The newest version of each model, loaded and checked."""
    models = ModelSet(
        load_model(latest_version_dir(models_dir, PROPENSITY)),
        load_model(latest_version_dir(models_dir, SEND_TIME)),
        load_channel_model(models_dir),
    )
    validate_pair(models)
    return models


def load_channel_model(models_dir: Path) -> ChannelModel | None:
    """MODELS/channel_model.json (training/channel.py), or None when training wrote none."""
    path = models_dir / CHANNEL_MODEL_FILE
    if not path.exists():
        return None
    try:
        return ChannelModel.from_json(path)
    except ChannelModelError as exc:
        raise ManifestError(str(exc)) from exc


def validate_pair(models: ModelSet) -> None:
    """Each model is in its slot and has the output the scoring core reads."""
    for slot, model, width in (
        (PROPENSITY, models.propensity, 2),
        (SEND_TIME, models.send_time, HOURS_PER_WEEK),
    ):
        if model.name != slot:
            raise ManifestError(f"model {model.name!r} {model.version} found where {slot!r} belongs")
        if model.manifest.output_width != width:
            raise ManifestError(
                f"{slot} {model.version}: output width {model.manifest.output_width}, expected {width}"
            )


def served_refs(store: FeatureStore, service_name: str) -> set[str]:
    """Feature refs ("view:feature") the registry's feature service serves."""
    service = store.get_feature_service(service_name)
    return {f"{p.name_to_use()}:{f.name}" for p in service.feature_view_projections for f in p.features}


def check_served(store: FeatureStore, models: ModelSet, context_refs: Sequence[str] = ()) -> None:
    """Reject models whose manifest names features their feature service does not serve.

    ``context_refs`` are features the core reads beside model inputs (the time zone, the
    channel and interest features): each must be served by the send-time model's feature
    service or by ``engagement_v1`` (nudge/contract/features.py).
    """
    problems = []
    for model in (models.propensity, models.send_time):
        name = model.manifest.feature_service
        try:
            refs = served_refs(store, name)
            if model is models.send_time:
                refs |= served_refs(store, ENGAGEMENT_SERVICE)
        except Exception as exc:  # feast raises its own not-found types
            problems.append(
                f"model {model.name} {model.version}: feature service '{name}' or '{ENGAGEMENT_SERVICE}' "
                f"not in registry ({exc})"
            )
            continue
        missing = [r for r in model.manifest.feature_refs if r not in refs]
        if model is models.send_time:
            missing += [r for r in context_refs if r not in refs]
        if missing:
            problems.append(
                f"model {model.name} {model.version}: feature services '{name}' and '{ENGAGEMENT_SERVICE}' "
                f"do not serve {', '.join(missing)}"
            )
    if problems:
        raise ManifestError("; ".join(problems))
