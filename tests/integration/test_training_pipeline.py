"""`nudge train` end to end: on the shared simulated stack (fixed seed) the models learn, the
report keeps its contract and the server's loader accepts the exported pair; a data set with
nothing but purchases trains end to end too."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from service.models import load_latest
from tests.support.stack import Stack, trained_on
from training.train import Limits, TrainResult

REPORT_KEYS = {
    "propensity": {
        "horizon_days",
        "n_train",
        "n_test",
        "positive_rate",
        "roc_auc",
        "pr_auc",
        "brier",
        "ece",
        "baseline_roc_auc",
        "bgnbd_roc_auc",
        "oracle_roc_auc",
    },
    "send_time": {
        "n_train",
        "n_test",
        "hit_at_1",
        "hit_at_3",
        "hit_at_6",
        "log_loss",
        "hod_hit_at_3",
        "baseline_global_hit_at_3",
        "baseline_modal_hit_at_3",
        "oracle_hit_at_3",
    },
}


def test_models_learn_on_a_simulated_population(stack: Stack) -> None:
    report = json.loads((stack.models / "report.json").read_text())
    assert REPORT_KEYS["propensity"] <= set(report["propensity"])
    assert REPORT_KEYS["send_time"] <= set(report["send_time"])
    assert report["split"]["scheme"].startswith("by time")
    p, s = report["propensity"], report["send_time"]
    assert p["n_train"] > 1000 and p["n_test"] > 500 and s["n_test"] > 500
    assert p["roc_auc"] > p["baseline_roc_auc"]
    assert p["brier"] < p["baseline_brier"] and p["ece"] < p["baseline_ece"]
    assert s["hit_at_3"] > 2 * s["baseline_global_hit_at_3"]
    assert s["hit_at_3"] >= s["baseline_modal_hit_at_3"]
    assert p["oracle_roc_auc"] is None and s["oracle_hit_at_3"] is None  # no --truth given
    # every run compares the send-time structures on its validation period and ships the best
    candidates = s["candidates"]
    assert set(candidates) == {"mixture", "logit"}
    assert [name for name, c in candidates.items() if c["chosen"]] == [s["model"]]
    assert candidates[s["model"]]["hit_at_3"] == max(c["hit_at_3"] for c in candidates.values())
    # ... and the propensity inputs (with or without the BG/NBD posterior) the same way
    inputs = p["candidates"]
    assert set(inputs) == {"trees", "trees+bgnbd"}
    assert [name for name, c in inputs.items() if c.get("chosen")] == [p["inputs"]]
    best = max(round(c["validation_roc_auc"], 4) for c in inputs.values())  # ties at 4 decimals: the simpler
    assert round(inputs[p["inputs"]]["validation_roc_auc"], 4) == best
    assert 0.5 < p["bgnbd_roc_auc"] < 1.0 and p["bgnbd"]["r"] > 0 and p["bgnbd"]["alpha_days"] > 0
    # ... and its calibration: the simplest within one standard error of the lowest validation log loss
    calibrations = p["calibration_candidates"]
    assert set(calibrations) == {"trees", "sigmoid", "sigmoid+recency"}
    assert [name for name, c in calibrations.items() if c.get("chosen")] == [p["calibration"]]
    assert min(c["validation_excess"] for c in calibrations.values()) == 0.0
    within = [
        n for n, c in calibrations.items() if c["validation_excess"] <= c["validation_excess_standard_error"]
    ]
    assert p["calibration"] == within[0]
    html = (stack.models / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5
    assert "Propensity inputs compared" in html and "Propensity calibrations compared" in html


def test_exported_pair_loads_in_the_server(stack: Stack) -> None:
    models = load_latest(stack.models)
    assert models.propensity.manifest.feature_service == "propensity_v1"
    assert models.send_time.manifest.feature_service == "send_time_v1"
    assert models.send_time.manifest.output_width == 168
    assert models.send_time.manifest.features[0].ref == "customer_time_histograms:hist_hour_of_week"


@pytest.fixture(scope="module")
def purchases_only(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """The stack's customers with only their purchases: features, apply, train."""
    root = tmp_path_factory.mktemp("purchases_only")
    events = pd.read_parquet(stack.events)
    events[events["event_type"] == "purchase"].to_parquet(root / "events.parquet")
    shutil.copy(stack.customers, root / "customers.parquet")
    return trained_on(root, root, horizon_days=14, limits=Limits().scaled(0.05))


def test_purchases_only_data_trains_end_to_end(purchases_only: TrainResult) -> None:
    p, s = purchases_only.report["propensity"], purchases_only.report["send_time"]
    assert p["roc_auc"] is not None and p["roc_auc"] > 0.6
    assert s["n_train"] > 0 and s["hit_at_3"] > s["baseline_global_hit_at_3"]
    models = load_latest(purchases_only.version_dirs["propensity"].parent.parent)
    assert models.versions == {name: path.name for name, path in purchases_only.version_dirs.items()}


def test_ceiling_refits_the_trained_model_and_adds_inputs(stack: Stack, tmp_path: Path) -> None:
    """`python -m training.ceiling`: its first row is `nudge train`'s own model on the same
    rows (same ROC-AUC as the report), and each richer input set is scored beside the oracle."""
    from training.ceiling import main

    out = tmp_path / "ceiling.json"
    args = ["--repo", str(stack.repo), "--events", str(stack.events), "--customers", str(stack.customers)]
    assert (
        main([*args, "--truth", str(stack.data / "truth.parquet"), "--seeds", "0", "--json", str(out)]) == 0
    )
    result = json.loads(out.read_text())
    report = json.loads((stack.models / "report.json").read_text())["propensity"]
    assert result["rows"] == {"train": report["n_train"], "test": report["n_test"]}
    aucs = result["roc_auc"]
    assert list(aucs) == [
        "feature service",
        "+ observable extras",
        "+ renewal parameters",
        "+ hidden parameters",
    ]
    assert aucs["feature service"]["per_seed"] == [pytest.approx(report["roc_auc"], abs=1e-12)]
    assert all(0.6 < a["median"] <= 1.0 for a in aucs.values())
    assert 0.6 < result["oracle_roc_auc"] <= 1.0
