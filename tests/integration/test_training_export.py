"""ONNX export: parity with scikit-learn (and the float32 threshold trap it catches), the
manifest's contents, the server's loader accepting the result, and a corrupted or mismatched
model directory being rejected."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from nudge.contract.manifest import FeatureInput, ManifestError, load_model_dir
from service.models import load_model
from training.evaluate import hit_at_k
from training.export import ParityError, export_checked, write_model
from training.labels import SLOTS
from training.propensity import fit_propensity, snap_thresholds_to_float32
from training.send_time import LOGIT, MIXTURE, SlotLogit, fit_send_time, register_converter

CREATED = datetime(2026, 5, 1, 12, 30, 5, tzinfo=UTC)


def test_float32_thresholds_are_caught_by_the_parity_check_and_snapping_fixes_them() -> None:
    # Two adjacent float32 values whose float64 midpoint (scikit-learn's threshold) rounds *up*
    # to the larger one in float32 (ONNX's threshold): ONNX then sends the larger value left.
    low = np.nextafter(np.float32(1.0), np.float32(2.0))
    high = np.nextafter(low, np.float32(2.0))
    assert np.float32((np.float64(low) + np.float64(high)) / 2) == high
    rng = np.random.default_rng(0)
    x = rng.choice([low, high], size=(400, 1)).astype(np.float32)
    y = (x[:, 0] == high).astype(int) ^ (rng.random(400) < 0.1)
    model = HistGradientBoostingClassifier(max_iter=5, min_samples_leaf=5).fit(x, y)
    with pytest.raises(ParityError, match="refusing to export"):
        export_checked(model, x, "propensity")
    before = model.predict_proba(x)
    snap_thresholds_to_float32(model)
    np.testing.assert_array_equal(model.predict_proba(x), before)  # same model on float32 inputs
    assert export_checked(model, x, "propensity").max_abs_diff <= 1e-5


def synthetic_propensity(rng: np.random.Generator, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    x = rng.gamma(2.0, 3.0, size=(n, 4)).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan  # missing values, as the server sends them
    score = np.nan_to_num(x[:, 0], nan=10.0) * -0.3 + np.nan_to_num(x[:, 1]) * 0.2
    return x, (score + rng.logistic(size=n) > -1.0).astype(int)


@pytest.fixture(scope="module")
def propensity_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One exported propensity model, written once for the tests below."""
    models = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(1)
    x, y = synthetic_propensity(rng)
    model = fit_propensity(x, y, rng.integers(0, 300, len(y)).astype(str), seed=0)
    exported = export_checked(model, x[:500], "propensity")
    features = tuple(FeatureInput(f"customer_stats:f{i}") for i in range(4))
    return write_model(
        models,
        "propensity",
        exported,
        feature_service="propensity_v1",
        features=features,
        output_width=2,
        created=CREATED,
        label={"definition": "purchase in (t, t + 14 d]", "horizon_days": 14},
        training={"split": {"scheme": "by time"}, "seed": 0},
        metrics={"roc_auc": 0.8},
    )


def test_exported_propensity_manifest_and_server_loader(propensity_dir: Path) -> None:
    version_dir = propensity_dir
    manifest, onnx_bytes = load_model_dir(version_dir)
    assert re.fullmatch(r"20260501T123005Z-[0-9a-f]{8}", manifest.version)
    assert version_dir.name == manifest.version and version_dir.parent.name == "propensity"
    assert manifest.name == "propensity" and manifest.feature_service == "propensity_v1"
    assert manifest.feature_refs == [f"customer_stats:f{i}" for i in range(4)]
    assert (manifest.input_name, manifest.output_name, manifest.output_width) == ("input", "probabilities", 2)
    assert manifest.label["horizon_days"] == 14 and manifest.training["split"]["scheme"] == "by time"
    assert manifest.metrics["roc_auc"] == 0.8 and manifest.metrics["parity_max_abs_diff"] <= 1e-5
    assert manifest.metrics["ort_latency_ms"] > 0
    assert {"scikit-learn", "skl2onnx", "onnxruntime", "onnx"} <= set(manifest.library_versions)
    assert manifest.created_at == "2026-05-01T12:30:05+00:00"
    assert len(onnx_bytes) > 0
    loaded = load_model(version_dir)  # the server's loader: sha256, shapes, cold-start smoke run
    # skl2onnx's label output and the nodes only it needs are cut: every call would run them.
    assert [o.name for o in loaded.session.get_outputs()] == ["probabilities"]
    graph = onnx.load_from_string(onnx_bytes)
    assert "ArgMax" not in {node.op_type for node in graph.graph.node} and graph.producer_name == "skl2onnx"
    probs = loaded.predict(loaded.rows([{}, {"customer_stats:f0": 1.0, "customer_stats:f1": 9.0}]))
    assert probs.shape == (2, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_corrupted_or_mismatched_model_dirs_are_rejected(propensity_dir: Path, tmp_path: Path) -> None:
    version_dir = Path(shutil.copytree(propensity_dir, tmp_path / propensity_dir.name))
    model_file, manifest_file = version_dir / "model.onnx", version_dir / "manifest.json"
    good_model, good_manifest = model_file.read_bytes(), manifest_file.read_text()

    model_file.write_bytes(good_model[:-1] + bytes([good_model[-1] ^ 1]))  # one flipped bit
    with pytest.raises(ManifestError, match="sha256"):
        load_model_dir(version_dir)
    model_file.write_bytes(good_model)

    data = json.loads(good_manifest)
    for broken, message in (
        ({**data, "version": "20990101T000000Z-deadbeef"}, "version"),
        ({k: v for k, v in data.items() if k != "input_name"}, "input_name"),
        ({**data, "features": [{"ref": "no-view-separator", "size": 1}]}, "features"),
        ({**data, "onnx_sha256": "0" * 64}, "sha256"),
    ):
        manifest_file.write_text(json.dumps(broken))
        with pytest.raises(ManifestError, match=message):
            load_model_dir(version_dir)
    manifest_file.write_text("{not json")
    with pytest.raises(ManifestError, match="JSON"):
        load_model_dir(version_dir)


def send_time_layout() -> tuple[FeatureInput, ...]:
    return (
        FeatureInput("customer_time_histograms:hist_hour_of_week", 168),
        FeatureInput("customer_time_histograms:hist_hour_of_day", 24),
        FeatureInput("customer_time_histograms:hist_day_of_week", 7),
        FeatureInput("customer_time_histograms:hist_event_count", 1),
        FeatureInput("customer_stats:days_since_last_engagement", 1),
    )


def synthetic_engagements(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Customers with a favourite slot; histograms of their past engagements; the next one."""
    favourite = rng.choice(np.arange(0, 120), size=n)  # slots >= 120 never appear
    past = rng.poisson(4, size=n)
    week = np.zeros((n, SLOTS))
    for i in range(n):
        slots = np.where(rng.random(past[i]) < 0.7, favourite[i], rng.integers(0, 120, past[i]))
        np.add.at(week[i], slots, 1.0)
    week /= np.maximum(week.sum(axis=1, keepdims=True), 1.0)
    x = np.hstack(
        [
            week,
            week.reshape(n, 7, 24).sum(axis=1),
            week.reshape(n, 7, 24).sum(axis=2),
            past[:, None],
            rng.random((n, 1)),
        ]
    ).astype(np.float32)
    x[past == 0] = np.nan  # no history: every input missing
    y = np.where(rng.random(n) < 0.7, favourite, rng.integers(0, 120, n))
    return x, y


def test_send_time_mixture_exports_all_slots_with_a_population_prior_for_cold_start() -> None:
    register_converter()
    rng = np.random.default_rng(2)
    x, y = synthetic_engagements(rng, 3000)
    model = fit_send_time(MIXTURE, send_time_layout(), x, y, seed=0)
    exported = export_checked(model, x[:1000], "send_time")
    assert exported.max_abs_diff <= 1e-5
    probs = model.predict_proba(x[:1000])
    assert probs.shape == (1000, SLOTS)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert (probs[:, 120:] > 0).all()  # slots never seen in training still get probability
    cold = model.predict_proba(np.full((1, x.shape[1]), np.nan, np.float32))[0]
    np.testing.assert_allclose(cold, model.prior_)  # no history: the population distribution
    # with history, the customer's own routine beats the population by far
    warm = ~np.isnan(x[:1000, 0])
    own = hit_at_k(probs[warm], y[:1000][warm], 1)
    population = hit_at_k(np.tile(model.prior_, (int(warm.sum()), 1)), y[:1000][warm], 1)
    assert own > 0.5 > 0.05 > population


def test_send_time_logit_exports_with_parity_including_unknown_recency_and_cold_start() -> None:
    register_converter()
    rng = np.random.default_rng(3)
    x, y = synthetic_engagements(rng, 3000)
    x[:50, -1] = np.nan  # history, but the stats row (recency) is missing: its own input
    model = fit_send_time(LOGIT, send_time_layout(), x, y, seed=0)
    assert isinstance(model, SlotLogit)
    cold_row = np.full((1, x.shape[1]), np.nan, np.float32)
    checked = np.vstack([x[:1000], cold_row])
    exported = export_checked(model, checked, "send_time")
    assert exported.max_abs_diff <= 1e-5
    assert [o.name for o in onnx.load_from_string(exported.onnx_bytes).graph.output] == ["probabilities"]
    probs = exported.probabilities
    assert probs.shape == (1001, SLOTS)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert (probs[:, 120:] > 0).all()  # slots never seen in training still get probability
    b, _, _ = model.parameters()
    np.testing.assert_allclose(probs[-1], np.exp(b) / np.exp(b).sum())  # no history: slot effects
    warm = ~np.isnan(x[:1000, 0])
    assert hit_at_k(probs[:1000][warm], y[:1000][warm], 1) > 0.5
