"""Real data: the CDNOW purchase log that the ``lifetimes`` wheel ships (the ``train`` extra).

The loader reads the packaged file itself, so a missing package fails here with the install
hint, never a skip: CI must not pass without the real data track. Training on a subset of
CDNOW customers (dates only, every purchase at the importer's noon) checks that such data
yields a full report with send time n/a rather than an exception.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from nudge.cli import main
from nudge.contract.manifest import ManifestError
from service.models import load_latest
from tests.support.stack import BIN, run_cli, trained_on
from training.cdnow import LOCAL_HOUR, TIME_ZONE, cdnow_path, convert, read_cdnow
from training.events import load_event_data
from training.report import summary_table
from training.train import Limits, TrainResult

# The published data set (Fader and Hardie): every purchase of the 1997 Q1 cohort to June 1998.
CDNOW_LINES = 69_659
CDNOW_CUSTOMERS = 23_570
SUBSET = 3_000  # customers for training: about 9,000 purchases, the whole 18 months


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return read_cdnow(cdnow_path())


def test_conversion_keeps_every_purchase_its_amount_and_its_date(raw: pd.DataFrame) -> None:
    assert len(raw) == CDNOW_LINES and raw["customer_id"].nunique() == CDNOW_CUSTOMERS
    events, customers = convert(raw)
    assert len(events) == len(raw) and len(customers) == CDNOW_CUSTOMERS
    assert set(events["event_type"]) == {"purchase"} and set(customers["time_zone"]) == {TIME_ZONE}
    assert (events["customer_id"] == raw["customer_id"]).all()  # ids keep their leading zeros
    assert events["amount"].tolist() == pd.to_numeric(raw["dollar_value"]).tolist()
    local = events["event_timestamp"].dt.tz_convert(TIME_ZONE)
    assert (local.dt.strftime("%Y%m%d") == raw["date"]).all()
    assert (local.dt.hour == LOCAL_HOUR).all() and (local.dt.minute == 0).all()
    assert str(local.min().date()) == "1997-01-01" and str(local.max().date()) == "1998-06-30"


def test_import_command_writes_data_the_pipeline_accepts(raw: pd.DataFrame, tmp_path: Path) -> None:
    assert main(["import-cdnow", "--out", str(tmp_path), "--max-customers", "500"]) == 0
    data = load_event_data(tmp_path / "events.parquet", tmp_path / "customers.parquet")  # validates
    first = sorted(raw["customer_id"].unique())[:500]
    kept = raw[raw["customer_id"].isin(first)]
    assert len(data.customers) == 500 and len(data.events) == len(kept)
    per_customer = data.events.groupby("customer_id")["amount"].sum()
    expected = pd.to_numeric(kept["dollar_value"]).groupby(kept["customer_id"]).sum()
    pd.testing.assert_series_equal(per_customer, expected, check_names=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """A CDNOW subset through the real pipeline: import, features, feast apply, train."""
    root = tmp_path_factory.mktemp("cdnow")
    run_cli(str(BIN / "nudge"), "import-cdnow", "--out", str(root / "data"), "--max-customers", str(SUBSET))
    return trained_on(root / "data", root, horizon_days=30, limits=Limits().scaled(0.1))


def test_dates_only_data_reports_send_time_as_not_applicable(trained: TrainResult) -> None:
    report = trained.report
    p, s = report["propensity"], report["send_time"]
    assert p["roc_auc"] is not None and p["roc_auc"] > p["baseline_roc_auc"] - 0.05 and p["n_test"] > 0
    assert s["status"] == "n/a" and s["local_hours_of_day"] == [LOCAL_HOUR] and not s["exported"]
    assert f"local hour {LOCAL_HOUR}" in s["reason"] and "send_time model" in s["serving"]
    assert report["served"]["send_time"]["status"] == "n/a"
    assert report["served"]["propensity"]["roc_auc_exact"] is not None

    models = trained.version_dirs["propensity"].parent.parent
    assert set(trained.version_dirs) == {"propensity"} and not (models / "send_time").exists()
    assert json.loads((models / "report.json").read_text())["send_time"] == json.loads(json.dumps(s))
    page = (models / "report.html").read_text()
    assert "Send time: n/a" in page and page.count("data:image/png;base64,") == 3
    table = summary_table(report)
    assert "send time (all metrics)" in table and "send time n/a: all " in table


def test_server_loader_names_the_missing_send_time_model(trained: TrainResult) -> None:
    """What a user of dates-only data meets: the server wants a send_time model beside it."""
    with pytest.raises(ManifestError, match="send_time"):
        load_latest(trained.version_dirs["propensity"].parent.parent)
