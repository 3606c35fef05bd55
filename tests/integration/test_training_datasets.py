"""Training sets through real Feast (DuckDB offline store) on hand-built feature tables:
point-in-time joins (no value from after an entity row's time), TTL, no lost or reordered
rows, and the float32 layout the manifest describes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import FeatureStore

from nudge.contract.manifest import FeatureInput
from tests.support.stack import BIN, FEATURE_REPO, copy_feature_repo, run_cli, utc
from training.datasets import training_frame
from training.feature_tables import FeatureTables
from training.features import repo_tables

TABLES = repo_tables(FEATURE_REPO)
STATS_FEATURES = [name for name in FeatureTables.features(TABLES.stats) if name != "time_zone"]


def stats_row(customer: str, at: str, purchases: float) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(STATS_FEATURES, 0.0)
    row.update(customer_id=customer, event_timestamp=utc(at), purchase_count_total=purchases, time_zone="UTC")
    return row


def hist_row(customer: str, at: str, slot: int, count: float) -> dict[str, object]:
    week = np.zeros(168, np.float32)
    week[slot] = 1.0
    return {
        "customer_id": customer,
        "event_timestamp": utc(at),
        "hist_hour_of_week": week,
        "hist_hour_of_day": week.reshape(7, 24).sum(axis=0),
        "hist_day_of_week": week.reshape(7, 24).sum(axis=1),
        "hist_event_count": count,
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    repo = copy_feature_repo(tmp_path_factory.mktemp("pit_repo"))
    stats = [
        stats_row("a", "2025-03-03", 1.0),
        stats_row("a", "2025-03-10", 5.0),  # from events before 03-10: usable at 03-10 itself
        stats_row("a", "2025-03-17", 9.0),
        stats_row("old", "2025-01-01", 7.0),  # older than the view's 30-day TTL by March
    ]
    hists = [hist_row("a", "2025-03-03", 10, 2.0), hist_row("a", "2025-03-17", 20, 3.0)]
    pq.write_table(pa.Table.from_pylist(stats, schema=TABLES.stats), repo / "data" / "customer_stats.parquet")
    pq.write_table(
        pa.Table.from_pylist(hists, schema=TABLES.histograms),
        repo / "data" / "customer_time_histograms.parquet",
    )
    run_cli(str(BIN / "feast"), "-c", str(repo), "apply")
    return FeatureStore(repo_path=str(repo))


def column(frame_features: tuple[FeatureInput, ...], ref: str) -> int:
    start = 0
    for feature in frame_features:
        if feature.ref == ref:
            return start
        start += feature.size
    raise KeyError(ref)


def test_propensity_rows_see_only_snapshots_at_or_before_their_time(store: FeatureStore) -> None:
    entity = pd.DataFrame(
        {
            # deliberately unsorted, with a duplicate (customer, time) and unknown customers
            "customer_id": ["a", "a", "nobody", "a", "a", "old", "a"],
            "event_timestamp": [
                utc("2025-03-16 23:59:59"),
                utc("2025-03-09 23:59:59"),
                utc("2025-03-10"),
                utc("2025-03-10"),
                utc("2025-03-10"),
                utc("2025-03-10"),
                utc("2025-03-02"),
            ],
            "label": [1, 2, 3, 4, 5, 6, 7],
        }
    )
    frame = training_frame(store, "propensity_v1", entity)
    purchases = frame.x[:, column(frame.features, "customer_stats:purchase_count_total")]
    # rows come back complete and in entity order (labels still line up)
    assert list(frame.rows["label"]) == [1, 2, 3, 4, 5, 6, 7]
    np.testing.assert_array_equal(purchases[[0, 1, 3, 4]], [5.0, 1.0, 5.0, 5.0])
    assert np.isnan(purchases[2])  # no such customer
    assert np.isnan(purchases[5])  # only a snapshot older than the TTL
    assert np.isnan(purchases[6])  # before the customer's first snapshot
    # the value written at 03-17 (from events up to then) is never seen before 03-17
    assert 9.0 not in purchases


def test_send_time_rows_get_the_histogram_as_of_their_time(store: FeatureStore) -> None:
    entity = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a"],
            "event_timestamp": [utc("2025-03-16 12:00"), utc("2025-03-17"), utc("2025-03-01")],
        }
    )
    frame = training_frame(store, "send_time_v1", entity)
    # arrays expand to their width; the time zone (a string the policy needs) is not an input
    assert [(f.ref, f.size) for f in frame.features] == [
        ("customer_time_histograms:hist_hour_of_week", 168),
        ("customer_time_histograms:hist_hour_of_day", 24),
        ("customer_time_histograms:hist_day_of_week", 7),
        ("customer_time_histograms:hist_event_count", 1),
        ("customer_stats:days_since_last_engagement", 1),
        ("customer_stats:engagement_count_decayed", 1),
    ]
    assert frame.x.dtype == np.float32 and frame.x.shape == (3, 202)
    week = frame.x[:, :168]
    assert week[0].argmax() == 10 and week[0].sum() == 1.0  # 03-03's histogram, not 03-17's
    assert week[1].argmax() == 20
    assert np.isnan(frame.x[2]).all()  # nothing yet: every column missing, row kept
    count = frame.x[:, column(frame.features, "customer_time_histograms:hist_event_count")]
    np.testing.assert_array_equal(count[:2], [2.0, 3.0])


def test_array_features_without_any_value_are_an_error(store: FeatureStore) -> None:
    entity = pd.DataFrame({"customer_id": ["nobody"], "event_timestamp": [utc("2025-03-10")]})
    with pytest.raises(ValueError, match="hist_hour_of_week"):
        training_frame(store, "send_time_v1", entity)
