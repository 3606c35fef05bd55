"""The feature tables through real Feast: apply, materialise, read online (SQLite and Redis)
and join point-in-time offline (DuckDB), comparing with what the pipeline computed.

Event times are relative to today, so that ``feast materialize-incremental`` (whose first run
starts at now - TTL) picks every snapshot up. Feast is slow to import and apply, so each store
gets one applied repo per module.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from feast import Entity, FeatureService, FeatureStore, FeatureView
from feast.data_source import DataSource

from nudge.cli import main
from tests.support.stack import RedisServer, copy_feature_repo
from training.features import HISTOGRAMS_TABLE, STATS_TABLE

FEAST = Path(sys.executable).with_name("feast")
SERVICES = ("propensity_v1", "send_time_v1", "engagement_v1")
TODAY = pd.Timestamp(datetime.now(UTC)).floor("D")
START = TODAY - pd.Timedelta(days=22)


def when(days: float, hours: float = 0) -> pd.Timestamp:
    """A moment ``days`` (+ ``hours``) after the start of the data."""
    return START + pd.Timedelta(days=days, hours=hours)


# The last event is yesterday, so the newest snapshot is today 00:00 (not in the future).
EVENTS = pd.DataFrame(
    [
        ("alice", when(0, 9), "site_visit", None),
        ("alice", when(0, 11), "purchase", 25.0),
        ("alice", when(3, 18), "email_send", None),
        ("alice", when(3, 19), "email_open", None),
        ("alice", when(9, 20), "purchase", 40.0),
        ("alice", when(16, 8), "cart_add", None),
        ("alice", when(16, 9), "purchase", 15.0),
        ("bob", when(1, 14), "email_send", None),
        ("bob", when(8, 14), "email_send", None),
        ("bob", when(8, 15), "email_click", None),
        ("chen", when(15, 6), "purchase", 9.5),  # appears late: only the newest snapshot (day 22)
        ("chen", when(20, 6), "push_open", None),
        ("dana", when(2, 10), "sms_send", None),  # never engages: no histogram rows
        ("dana", when(21, 10), "sms_send", None),
    ],
    columns=["customer_id", "event_timestamp", "event_type", "amount"],
)
CUSTOMERS = pd.DataFrame(
    {
        "customer_id": ["alice", "bob", "chen", "dana"],
        "time_zone": ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"],
        "signup_timestamp": [None, None, None, when(-5)],
    }
)


@dataclass(frozen=True)
class Applied:
    """A temp copy of the repo with the pipeline's tables, applied and materialised."""

    store: FeatureStore
    stats: pd.DataFrame
    histograms: pd.DataFrame


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """``nudge features`` arguments for the data set above, minus --repo."""
    folder = tmp_path_factory.mktemp("inputs")
    EVENTS.to_parquet(folder / "events.parquet")
    CUSTOMERS.to_parquet(folder / "customers.parquet")
    return [
        "features",
        "--events",
        str(folder / "events.parquet"),
        "--customers",
        str(folder / "customers.parquet"),
    ]


def with_tables(repo: Path, inputs: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the pipeline into the repo; return the tables it wrote, as Feast will read them."""
    assert main([*inputs, "--repo", str(repo)]) == 0
    stats, histograms = (
        pd.read_parquet(repo / "data" / f"{name}.parquet") for name in (STATS_TABLE, HISTOGRAMS_TABLE)
    )
    assert stats["event_timestamp"].max() == TODAY  # the newest snapshot, not in the future
    return stats, histograms


def feast_cli(repo: Path, *args: str) -> None:
    result = subprocess.run([str(FEAST), "-c", str(repo), *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"feast {' '.join(args)}:\n{result.stdout}\n{result.stderr}"


def load_definitions(repo: Path) -> ModuleType:
    """The copy's definitions.py as a module (its source paths point into the copy)."""
    spec = importlib.util.spec_from_file_location("nudge_definitions_copy", repo / "definitions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sqlite_repo(tmp_path_factory: pytest.TempPathFactory, inputs: list[str]) -> Applied:
    """Default config, through the CLI exactly as the README documents it."""
    repo = copy_feature_repo(tmp_path_factory.mktemp("sqlite_repo"))
    tables = with_tables(repo, inputs)
    feast_cli(repo, "apply")
    feast_cli(repo, "materialize-incremental", datetime.now(UTC).isoformat())
    return Applied(FeatureStore(repo_path=str(repo)), *tables)


@pytest.fixture(scope="module")
def redis_repo(
    tmp_path_factory: pytest.TempPathFactory, inputs: list[str], redis_server: RedisServer
) -> Applied:
    """Production config, through the SDK: apply the definitions' objects, then materialise."""
    repo = copy_feature_repo(tmp_path_factory.mktemp("redis_repo"), redis_address=redis_server.address)
    tables = with_tables(repo, inputs)
    store = FeatureStore(repo_path=str(repo))
    kinds = (Entity, DataSource, FeatureView, FeatureService)
    store.apply([value for value in vars(load_definitions(repo)).values() if isinstance(value, kinds)])
    store.materialize(START.to_pydatetime() - timedelta(days=1), datetime.now(UTC))
    return Applied(store, *tables)


def latest(table: pd.DataFrame, customer: str) -> pd.Series | None:
    rows = table[table["customer_id"] == customer]
    return None if rows.empty else rows.sort_values("event_timestamp").iloc[-1]


def is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float | np.floating) and math.isnan(value))


def assert_same(got: object, expected: object, what: str) -> None:
    """Pipeline value vs Feast value: NaN/None are both missing; float32 tolerance; arrays too."""
    if is_missing(expected):
        assert is_missing(got), f"{what}: {got!r} should be missing"
    elif isinstance(expected, np.ndarray):
        assert got is not None and len(got) == len(expected), what  # type: ignore[arg-type]
        np.testing.assert_allclose(np.asarray(got, np.float32), expected, rtol=1e-6, atol=1e-7, err_msg=what)
    elif isinstance(expected, str):
        assert got == expected, what
    else:
        assert got == pytest.approx(float(expected), rel=1e-6), what  # type: ignore[arg-type]


def check_online(applied: Applied) -> None:
    customers = ["alice", "bob", "chen", "dana", "nobody"]
    for service_name in SERVICES:
        service = applied.store.get_feature_service(service_name)
        got = applied.store.get_online_features(
            features=service, entity_rows=[{"customer_id": c} for c in customers]
        ).to_dict()
        names = [f.name for projection in service.feature_view_projections for f in projection.features]
        assert set(got) == {"customer_id", *names}
        for projection in service.feature_view_projections:
            table = applied.stats if projection.name == STATS_TABLE else applied.histograms
            for index, customer in enumerate(customers):
                row = latest(table, customer)
                for feature in projection.features:
                    expected = None if row is None else row[feature.name]
                    assert_same(
                        got[feature.name][index], expected, f"{service_name} {customer} {feature.name}"
                    )


def test_tables_have_exactly_the_views_columns(sqlite_repo: Applied) -> None:
    for view in sqlite_repo.store.list_feature_views():
        written = pq.read_schema(view.batch_source.path).names  # type: ignore[union-attr]
        # view.features keeps the declared order; a registry view's .schema is unordered and
        # includes the entity column.
        assert written == ["customer_id", "event_timestamp", *(f.name for f in view.features)]


def test_online_features_sqlite(sqlite_repo: Applied) -> None:
    check_online(sqlite_repo)


def test_online_features_redis(redis_repo: Applied) -> None:
    check_online(redis_repo)


def test_historical_features_are_point_in_time(sqlite_repo: Applied) -> None:
    store, stats = sqlite_repo.store, sqlite_repo.stats
    snapshots = sorted(stats["event_timestamp"].unique())
    entity_rows = [
        ("alice", snapshots[1] + pd.Timedelta(hours=5)),
        ("alice", snapshots[1] + pd.Timedelta(hours=5)),  # a duplicate (customer, time) row
        ("alice", snapshots[-1]),  # exactly at a snapshot: that snapshot applies
        ("bob", snapshots[-1] - pd.Timedelta(seconds=1)),  # just before: the previous one
        ("chen", snapshots[0] + pd.Timedelta(days=1)),  # only has later snapshots: nulls
        ("dana", snapshots[-1] + pd.Timedelta(days=2)),
        ("alice", snapshots[-1] + pd.Timedelta(days=40)),  # stats past their 30-day TTL, histograms not
    ]
    entity_df = pd.DataFrame(entity_rows, columns=["customer_id", "event_timestamp"])
    entity_df["row"] = range(len(entity_df))
    service = store.get_feature_service("send_time_v1")
    joined = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    assert len(joined) == len(entity_df)
    records = joined.set_index("row").to_dict("index")
    assert set(records) == set(range(len(entity_df)))
    for row, (customer, moment) in enumerate(entity_rows):
        for projection in service.feature_view_projections:
            table = stats if projection.name == STATS_TABLE else sqlite_repo.histograms
            ttl = store.get_feature_view(projection.name).ttl
            assert ttl is not None
            visible = table[(table["event_timestamp"] <= moment) & (table["event_timestamp"] >= moment - ttl)]
            expected_row = latest(visible, customer)
            for feature in projection.features:
                expected = None if expected_row is None else expected_row[feature.name]
                assert_same(records[row][feature.name], expected, f"row {row} {feature.name}")
    # The cases above are not vacuous: arrays came back whole, and the nulls are where expected.
    assert len(records[0]["hist_hour_of_week"]) == 168 and records[0]["hist_event_count"] >= 1
    assert is_missing(records[4]["hist_event_count"]) and is_missing(records[4]["time_zone"])
    assert is_missing(records[6]["time_zone"]) and len(records[6]["hist_hour_of_week"]) == 168
