"""Best channel end to end: `nudge train` on a pinned-date simulation with its truth beats both
baselines on channel hit@1 and log loss, writes channel_model.json that the served predictor
loads, and reports it. (Data without sends: tests/unit/test_channel_training.py.)"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from nudge.contract.channel_model import FILE_NAME, ChannelModel
from tests.support.stack import BIN, run_cli, trained_on
from training.train import Limits, TrainResult

# Pinned: 2000 customers from Monday 2026-01-05 for 120 days (seed 11), whatever today is.
CUSTOMERS, DAYS, SEED, START = 2000, 120, 11, "2026-01-05"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    root = tmp_path_factory.mktemp("channel")
    run_cli(
        str(BIN / "nudge"),
        "simulate",
        *("--customers", str(CUSTOMERS), "--days", str(DAYS), "--seed", str(SEED), "--start", START),
        *("--out", str(root)),
    )
    return trained_on(root, root, truth_path=root / "truth.parquet", limits=Limits().scaled(0.25))


def test_channel_hit_at_1_and_log_loss_beat_both_baselines(trained: TrainResult) -> None:
    c = trained.report["channel"]
    assert c["n_train"] >= 10_000 and c["n_test"] >= 5_000 and c["n_instants"] >= 2_000
    assert c["hit_at_1"] > max(c["baseline_global_hit_at_1"], c["baseline_customer_hit_at_1"]) + 0.02
    assert c["log_loss"] < min(c["baseline_global_log_loss"], c["baseline_customer_log_loss"])
    sent = c["among_sent_channels"]  # only the channels each customer is messaged on
    assert sent["n_instants"] > 1000
    assert sent["hit_at_1"] > max(sent["baseline_global_hit_at_1"], sent["baseline_customer_hit_at_1"])
    assert c["oracle_log_loss"] < c["log_loss"]
    assert abs(c["mean_predicted"] - c["engaged_rate"]) < 0.03 and c["ece"] < 0.05
    engaged = c["true_engagement_of_choice"]
    assert engaged["oracle"] >= engaged["model"] > max(engaged["global"], engaged["customer"])
    # the channels' own hours, learned from the data: email by day, push in the evening
    email, push = (np.array(c["hour_effect"][name]) for name in ("email", "push"))
    assert 7 <= int(email.argmax()) <= 14 and (int(push.argmax()) >= 18 or int(push.argmax()) <= 1)
    assert c["link"] in ("cloglog", "logit") and len(c["links"]) == 4


def test_the_written_model_is_what_the_server_loads(trained: TrainResult) -> None:
    models = trained.report_paths[0].parent
    path = models / FILE_NAME
    record = trained.report["channel"]["file"]
    assert record["path"] == FILE_NAME and record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["trained_with"] == trained.report["models"]
    model = ChannelModel.from_json(path)
    assert model.link == trained.report["channel"]["link"]
    assert model.info["trained_with"]["send_time"] == trained.version_dirs["send_time"].name
    p = model.probabilities(
        [[0.3, np.nan, 0.1]], [[10.0, 0.0, 5.0]], np.full((1, 24), 1 / 168), np.arange(24)[None, :]
    )
    assert p.shape == (1, 3, 24) and np.all((p > 0) & (p < 1))
    report = json.loads(trained.report_paths[0].read_text())
    assert report["channel"]["hit_at_1"] == trained.report["channel"]["hit_at_1"]
    page = trained.report_paths[1].read_text()
    assert "<h2>Best channel (test period)</h2>" in page and "hit@1 vs oracle" in page
