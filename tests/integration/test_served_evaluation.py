"""`nudge train`'s ``served`` block: both models at random test instants, features exact vs as
served from the newest weekly snapshot, on a small simulation with pinned dates."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from tests.support.stack import BIN, run_cli, trained_on, utc
from training.served import ViewTable, as_served, random_pairs
from training.train import Limits, TrainResult

CADENCE_DAYS = 7  # nudge features' default
# Small caps, with every send-time test engagement also scored by the served evaluation.
LIMITS = dataclasses.replace(Limits().scaled(0.05), served_engagements=Limits().scaled(0.05).send_time_test)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """simulate (pinned start) → features → feast apply → train, at a small sample scale."""
    root = tmp_path_factory.mktemp("served")
    simulate = ("--customers", "400", "--days", "120", "--seed", "5", "--start", "2024-01-03")
    run_cli(str(BIN / "nudge"), "simulate", *simulate, "--out", str(root / "data"))
    return trained_on(root / "data", root, limits=LIMITS)


def test_served_block_scores_exact_and_served_on_the_same_rows(trained: TrainResult) -> None:
    report = trained.report
    served = json.loads(trained.report_paths[0].read_text())["served"]
    assert served == json.loads(json.dumps(report["served"]))
    p, s = served["propensity"], served["send_time"]
    assert p["n_pairs"] == LIMITS.served_pairs
    assert 0.5 < p["roc_auc_exact"] <= 1 and 0.5 < p["roc_auc_served"] <= 1
    assert p["roc_auc_exact_minus_served"] == pytest.approx(p["roc_auc_exact"] - p["roc_auc_served"])
    assert 0 < p["positive_rate"] < 1
    start, end = (pd.Timestamp(t) for t in p["instants"])
    assert start == pd.Timestamp(report["split"]["propensity_test_cutoffs"][0])
    assert end + pd.Timedelta(days=report["propensity"]["horizon_days"]) == pd.Timestamp(
        report["split"]["data_end"]
    )
    # Instants uniform over the test weeks: the newest stats snapshot is 0-7 days old, ~3.5 on average.
    assert 2 < p["mean_snapshot_age_days"]["customer_stats"] < CADENCE_DAYS - 2
    assert 0 <= p["served_missing_share"]["customer_stats"] < 0.2

    # The send-time engagements are the evaluation's own test rows, and the features exact at an
    # engagement are what the evaluation's point-in-time join reads (the tables' rows just
    # before each engagement): the same hit@3. Snapshot-only serving scores other features.
    assert s["n_engagements"] == report["send_time"]["n_test"]
    assert s["hit_at_3_exact"] == pytest.approx(report["send_time"]["hit_at_3"], abs=1e-3)
    assert 2 * report["send_time"]["baseline_global_hit_at_3"] < s["hit_at_3_served"] <= 1
    assert 0 < s["mean_snapshot_age_days"]["customer_stats"] < CADENCE_DAYS
    assert s["mean_snapshot_age_days"]["customer_time_histograms"] > 0
    assert "features exact vs as served" in trained.report_paths[1].read_text()


def test_as_served_takes_the_newest_row_at_or_before_within_the_ttl() -> None:
    snapshots = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b"],
            "event_timestamp": [utc("2024-01-01"), utc("2024-01-08"), utc("2024-01-01")],
            "x": [1.0, 2.0, 3.0],
        }
    )
    view = ViewTable("v", snapshots, pd.Timedelta(days=30))
    asked = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b", "b", "c"],
            "event_timestamp": [
                utc("2024-01-08"),  # a snapshot exactly at the instant is served
                utc("2024-01-07 23:59:59"),
                utc("2023-12-31"),  # before the customer's first row
                utc("2024-01-31"),  # 30 days old: still within the TTL
                utc("2024-01-31 00:00:01"),  # expired
                utc("2024-01-05"),  # never snapshotted
            ],
        }
    )
    frame, ages = as_served(view, asked)
    assert list(frame.columns) == ["x"]
    np.testing.assert_array_equal(frame["x"], [2.0, 1.0, np.nan, 3.0, np.nan, np.nan])
    np.testing.assert_allclose(ages, [0.0, 7 - 1 / 86_400, np.nan, 30.0, np.nan, np.nan])


def test_random_pairs_are_uniform_over_known_customers_and_instants() -> None:
    known = pd.Series([utc("2024-01-01"), utc("2024-01-15"), utc("2024-02-01")], index=["a", "b", "c"])
    start, end = utc("2024-01-10"), utc("2024-01-20")
    pairs = random_pairs(known, start, end, 30_000, np.random.default_rng(0))
    assert len(pairs) == 30_000
    t = pairs["event_timestamp"]
    assert (t >= start).all() and (t <= end).all() and (t == t.dt.floor("s")).all()
    assert (t > pairs["customer_id"].map(known)).all()
    assert set(pairs["customer_id"]) == {"a", "b"}  # c is known only after the period
    # a is known for all 10 days, b for the last 5: two thirds of the pairs are a's.
    assert (pairs["customer_id"] == "a").mean() == pytest.approx(2 / 3, abs=0.015)
    assert ((t - start) / pd.Timedelta(days=1)).where(pairs["customer_id"] == "a").mean() == pytest.approx(
        5, abs=0.1
    )
