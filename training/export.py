"""ONNX export: convert, prove parity with scikit-learn, write model + manifest.

The exported graph takes one float32 tensor [N, input_width] (``INPUT_NAME``) and returns the
probabilities (``OUTPUT_NAME``) with zipmap disabled, so the server reads a plain array.
Parity is checked on the test set before anything is written: onnxruntime and scikit-learn
must agree within ``PARITY_ATOL`` on every probability, or the export fails.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from nudge.contract.manifest import FeatureInput, Manifest, write_model_dir

INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
PARITY_ATOL = 1e-5
# opset 17 / ai.onnx.ml 3: what onnxruntime >= 1.20 runs, and the tree operators with
# the missing-value tracking HistGradientBoosting needs.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "feast", "numpy")


class ParityError(RuntimeError):
    """onnxruntime and scikit-learn disagree: the model must not be exported."""


@dataclass(frozen=True)
class Exported:
    """A converted model that passed the parity check, ready to be written."""

    onnx_bytes: bytes
    max_abs_diff: float
    latency_ms: float  # median single-row call, one onnxruntime thread (least-contended round)
    probabilities: np.ndarray  # scikit-learn's on the checked rows: the evaluation reuses them


def convert(model: Any, input_width: int) -> bytes:
    """Convert a fitted scikit-learn classifier (no zipmap) or transformer to ONNX with a
    float32 input."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.base import is_classifier

    onx = to_onnx(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, input_width]))],
        options={id(model): {"zipmap": False}} if is_classifier(model) else None,
        target_opset=TARGET_OPSET,
    )
    return bytes(onx.SerializeToString())


def probabilities_only(onnx_bytes: bytes) -> bytes:
    """A converted classifier's graph with one output, the probabilities.

    skl2onnx also emits the predicted label, computed by a few nodes after the probabilities.
    Nothing reads it, but onnxruntime runs every node of a graph on every call, so the graph
    is cut to what ``OUTPUT_NAME`` needs: a Score ran ~6.5 µs faster in process, ~1.6 %
    (docs/benchmarks.md, "Issue 14, stop 23")."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    cut = onnx.utils.Extractor(model).extract_model([INPUT_NAME], [OUTPUT_NAME])
    cut.producer_name, cut.producer_version = model.producer_name, model.producer_version  # still skl2onnx's
    return bytes(cut.SerializeToString())


def export_checked(model: Any, x_test: np.ndarray, name: str) -> Exported:
    """Convert ``model`` and fail loudly unless ONNX matches scikit-learn on ``x_test``.

    scikit-learn is fed the same float32 values the server will send (upcast), so any
    difference is the graph's, not the input's.
    """
    from nudge.contract.onnx import onnx_session

    x32 = np.ascontiguousarray(x_test, dtype=np.float32)
    if not len(x32):
        raise ParityError(f"{name}: no test rows to check parity on")
    onnx_bytes = probabilities_only(convert(model, x32.shape[1]))
    sess = onnx_session(onnx_bytes)  # configured exactly as the server runs it
    onnx_probs = np.asarray(sess.run([OUTPUT_NAME], {INPUT_NAME: x32})[0], dtype=np.float64)
    sk_probs = np.asarray(model.predict_proba(x32.astype(np.float64)))
    if onnx_probs.shape != sk_probs.shape:
        raise ParityError(f"{name}: ONNX output {onnx_probs.shape} != scikit-learn {sk_probs.shape}")
    diff = np.abs(onnx_probs - sk_probs)
    worst = float(diff.max()) if diff.size else 0.0
    if worst > PARITY_ATOL:
        bad = int((diff.max(axis=1) > PARITY_ATOL).sum())
        raise ParityError(
            f"{name}: onnxruntime differs from scikit-learn by up to {worst:.2e} "
            f"(> {PARITY_ATOL:g}) on {bad} of {len(x32)} test rows; refusing to export"
        )
    return Exported(onnx_bytes, worst, single_row_latency_ms(sess, x32), sk_probs)


def single_row_latency_ms(sess: Any, x: np.ndarray, calls: int = 2000, rounds: int = 5) -> float:
    """Median wall time of one single-customer call (what one Score request costs).

    The calls run in ``rounds`` rounds and the least-contended round's median counts: on a
    shared machine a burst of other work inflated one model's median tenfold (0.33 ms against
    0.03 ms the next minute), enough to fail a latency budget that is about the model.
    """
    rows = x[:64]
    feeds = [{INPUT_NAME: rows[i % len(rows)][None, :]} for i in range(calls)]
    for feed in feeds[:100]:
        sess.run([OUTPUT_NAME], feed)
    timings = np.empty(calls)
    for i, feed in enumerate(feeds):
        start = time.perf_counter()
        sess.run([OUTPUT_NAME], feed)
        timings[i] = time.perf_counter() - start
    return float(min(np.median(part) for part in np.array_split(timings, rounds)) * 1e3)


def version_string(created: datetime, onnx_bytes: bytes) -> str:
    """Sortable version: UTC timestamp, then a short content hash to tell same-second runs apart."""
    return f"{created:%Y%m%dT%H%M%SZ}-{hashlib.sha256(onnx_bytes).hexdigest()[:8]}"


def library_versions() -> dict[str, str]:
    """Versions of the libraries that made (and must run) the model."""
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = "not installed"
    return versions


def write_model(
    models_dir: Path,
    name: str,
    exported: Exported,
    *,
    feature_service: str,
    features: tuple[FeatureInput, ...],
    output_width: int,
    created: datetime,
    label: dict[str, Any],
    training: dict[str, Any],
    metrics: dict[str, Any],
) -> Path:
    """Write MODELS/<name>/<version>/{model.onnx, manifest.json}; returns the version dir."""
    version = version_string(created, exported.onnx_bytes)
    manifest = Manifest(
        name=name,
        version=version,
        feature_service=feature_service,
        features=features,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        output_width=output_width,
        onnx_sha256=hashlib.sha256(exported.onnx_bytes).hexdigest(),
        created_at=created.astimezone(UTC).isoformat(timespec="seconds"),
        label=label,
        training=training,
        metrics={
            **metrics,
            "parity_max_abs_diff": exported.max_abs_diff,
            "ort_latency_ms": exported.latency_ms,
        },
        library_versions=library_versions(),
    )
    version_dir = models_dir / name / version
    write_model_dir(version_dir, exported.onnx_bytes, manifest)
    return version_dir
