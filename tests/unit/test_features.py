"""The feature pipeline: hand-computed values on tiny event tables, point-in-time correctness,
burst collapsing, local-time histograms (DST and half-hour zones), row-count rules, and a
brute-force oracle over random data that follows the definitions row by row."""

from __future__ import annotations

import itertools
import math
import zoneinfo
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from nudge.cli import main
from tests.support.stack import FEATURE_REPO, copy_feature_repo, utc
from training import features
from training.events import ENGAGEMENT_TYPES, EVENT_TYPES, EventDataError, validate
from training.feature_tables import FeatureTables
from training.features import local_hour_of_week, repo_tables, snapshot_times

DAY = 86_400
# The columns come from the Feast repo's views, the only feature list.
TABLES = repo_tables(FEATURE_REPO)
STATS_FEATURES = tuple(name for name in FeatureTables.features(TABLES.stats) if name != "time_zone")
HISTOGRAM_FEATURES = FeatureTables.features(TABLES.histograms)


def build_feature_tables(
    events: pd.DataFrame, customers: pd.DataFrame, cadence_days: int = 7
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pipeline's tables for the repo's views."""
    return features.build_feature_tables(events, customers, TABLES, cadence_days)


def events_frame(*rows: tuple[str, str, str, float | None]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=["customer_id", "event_timestamp", "event_type", "amount"])


def customers_frame(*rows: tuple[str, str, str | None]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=["customer_id", "time_zone", "signup_timestamp"])


def at(table: pd.DataFrame, customer: str, snapshot: str) -> pd.Series:
    """The one row of a customer at a snapshot."""
    rows = table[(table["customer_id"] == customer) & (table["event_timestamp"] == utc(snapshot))]
    assert len(rows) == 1, f"{len(rows)} rows for {customer} at {snapshot}"
    return rows.iloc[0]


def snapshots_of(table: pd.DataFrame, customer: str) -> list[str]:
    times = table.loc[table["customer_id"] == customer, "event_timestamp"]
    return [str(t.date()) for t in sorted(times)]


def decayed(ages_days: list[float], half_life: float = 30.0) -> float:
    return sum(0.5 ** (age / half_life) for age in ages_days)


# Customer "a" buys in a rhythm; "b" only receives and answers marketing. Snapshots (weekly,
# back from the first midnight after the last event): 2025-01-02, 01-09, 01-16, 01-23.
RHYTHM_EVENTS = events_frame(
    ("a", "2025-01-01 10:00", "site_visit", None),
    ("a", "2025-01-01 12:00", "purchase", 10.0),  # decide 2.0 h
    ("a", "2025-01-01 12:30", "purchase", 6.0),  # same trip, decide 2.5 h
    ("a", "2025-01-05 08:00", "cart_add", None),
    ("a", "2025-01-05 20:00", "purchase", 20.0),  # decide 12 h
    ("a", "2025-01-12 20:00", "purchase", 30.0),  # last visit 7.5 days earlier: no decide time
    ("a", "2025-01-16 00:00", "purchase", 40.0),  # exactly at a snapshot: counts from the next
    ("b", "2025-01-03 09:00", "email_send", None),
    ("b", "2025-01-03 09:30", "email_open", None),
    ("b", "2025-01-03 09:40", "email_click", None),  # same engagement as the open
    ("b", "2025-01-06 09:00", "email_send", None),
    ("b", "2025-01-06 10:00", "sms_send", None),
    ("b", "2025-01-06 10:05", "sms_click", None),
    ("b", "2025-01-07 10:00", "push_send", None),
    ("b", "2025-01-22 10:00", "push_send", None),
)
RHYTHM_CUSTOMERS = customers_frame(("a", "Europe/Berlin", "2024-12-20"), ("b", "Asia/Tokyo", None))


@pytest.fixture(scope="module")
def rhythm() -> tuple[pd.DataFrame, pd.DataFrame]:
    return build_feature_tables(RHYTHM_EVENTS, RHYTHM_CUSTOMERS)


def test_snapshot_rule() -> None:
    def seconds(*texts: str) -> np.ndarray:
        return np.array([utc(text).timestamp() for text in texts], dtype=np.int64)

    def dates(times: np.ndarray) -> list[str]:
        return [str(pd.Timestamp(int(t), unit="s").date()) for t in times]

    # The newest snapshot is the first midnight after the last event; then back every cadence
    # days while after the earliest event.
    assert dates(snapshot_times(seconds("2025-01-01 10:00", "2025-01-15 23:59"), 7)) == [
        "2025-01-02",
        "2025-01-09",
        "2025-01-16",
    ]
    assert dates(snapshot_times(seconds("2025-01-02 00:00", "2025-01-16 00:00"), 7)) == [
        "2025-01-03",
        "2025-01-10",
        "2025-01-17",
    ]
    assert dates(snapshot_times(seconds("2025-01-01 00:00", "2025-01-03 00:00"), 2)) == [
        "2025-01-02",
        "2025-01-04",
    ]
    assert dates(snapshot_times(seconds("2025-01-01 12:00"), 1)) == ["2025-01-02"]
    assert len(snapshot_times(np.zeros(0, np.int64), 7)) == 0


def test_columns_and_types(rhythm: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    stats, histograms = rhythm
    assert list(stats.columns) == ["customer_id", "event_timestamp", *STATS_FEATURES, "time_zone"]
    assert list(histograms.columns) == ["customer_id", "event_timestamp", *HISTOGRAM_FEATURES]
    assert all(stats[name].dtype == np.float32 for name in STATS_FEATURES)
    assert str(stats["event_timestamp"].dtype).endswith("UTC]")
    for name, width in (("hist_hour_of_week", 168), ("hist_hour_of_day", 24), ("hist_day_of_week", 7)):
        for histogram in histograms[name]:
            assert histogram.dtype == np.float32 and len(histogram) == width
            assert histogram.sum() == pytest.approx(1.0, abs=1e-5)


def test_purchase_features_by_hand(rhythm: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    stats, _ = rhythm
    assert snapshots_of(stats, "a") == ["2025-01-02", "2025-01-09", "2025-01-16", "2025-01-23"]
    first = at(stats, "a", "2025-01-02")
    assert first["purchase_count_total"] == 2
    assert first["days_since_last_purchase"] == pytest.approx(11.5 / 24)
    assert first["amount_avg"] == pytest.approx(8.0)
    assert np.isnan(first["gap_mean_days"]) and np.isnan(first["cycle_ratio"])  # one trip: no gap
    assert first["decide_time_hours"] == pytest.approx(2.25)

    mid = at(stats, "a", "2025-01-16")
    expected = {
        "tenure_days": 27.0,
        "purchase_count_7d": 1,
        "purchase_count_30d": 4,
        "purchase_count_90d": 4,
        "purchase_count_total": 4,  # the purchase at exactly 01-16 00:00 is not before the snapshot
        "days_since_last_purchase": 3 + 4 / 24,
        "amount_total_90d": 66.0,
        "amount_avg": 16.5,
        "gap_mean_days": (4 + 8 / 24 + 7) / 2,  # trips 01-01 12:00, 01-05 20:00, 01-12 20:00
        "gap_std_days": abs(7 - (4 + 8 / 24)) / math.sqrt(2),
        "cycle_ratio": (3 + 4 / 24) / ((4 + 8 / 24 + 7) / 2),
        "site_visit_count_7d": 0,
        "site_visit_count_30d": 1,
        "cart_add_count_30d": 1,
        "days_since_last_engagement": 3 + 4 / 24,
        "sends_30d": 0,
        "decide_time_hours": 2.5,  # median of 2.0, 2.5, 12.0
        # engagements 01-01 10:00, 01-01 12:00 (12:30 collapsed), 01-05 08:00, 01-05 20:00, 01-12 20:00
        "engagement_count_decayed": decayed([14 + 14 / 24, 14.5, 10 + 16 / 24, 10 + 4 / 24, 3 + 4 / 24]),
    }
    assert {name: float(mid[name]) for name in expected} == pytest.approx(expected, rel=1e-6)
    assert all(np.isnan(mid[name]) for name in STATS_FEATURES if name.endswith("_rate_90d"))
    assert mid["time_zone"] == "Europe/Berlin"

    last = at(stats, "a", "2025-01-23")
    assert last["purchase_count_total"] == 5
    assert last["purchase_count_7d"] == 1  # 01-16 00:00 is inside [01-16, 01-23)
    assert last["days_since_last_purchase"] == pytest.approx(7.0)
    assert last["gap_mean_days"] == pytest.approx(14.5 / 3)
    assert last["decide_time_hours"] == pytest.approx(2.5)


def test_channel_features_by_hand(rhythm: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    stats, histograms = rhythm
    assert snapshots_of(stats, "b") == ["2025-01-09", "2025-01-16", "2025-01-23"]  # first seen 01-03
    row = at(stats, "b", "2025-01-09")
    assert row["sends_30d"] == 4
    assert row["email_open_rate_90d"] == pytest.approx(0.5)
    assert row["email_click_rate_90d"] == pytest.approx(0.5)  # clicks count even inside a burst
    assert row["sms_click_rate_90d"] == pytest.approx(1.0)
    assert row["push_open_rate_90d"] == 0.0  # sends without opens: a rate of 0, not null
    assert row["tenure_days"] == pytest.approx(6 - 9 / 24)
    assert np.isnan(row["days_since_last_purchase"]) and np.isnan(row["amount_avg"])
    assert row["amount_total_90d"] == 0.0 and row["purchase_count_total"] == 0
    assert at(histograms, "b", "2025-01-09")["hist_event_count"] == 2  # open(+click), sms click


def test_bursts_collapse_in_chains() -> None:
    events = events_frame(
        ("c", "2025-02-03 10:00", "site_visit", None),
        ("c", "2025-02-03 10:50", "email_send", None),  # not an engagement: neither joins nor breaks
        ("c", "2025-02-03 10:59", "cart_add", None),
        ("c", "2025-02-03 11:59", "purchase", 5.0),  # exactly 1 h after the previous: same burst
        ("c", "2025-02-03 13:00", "site_visit", None),  # 61 min later: a new engagement
    )
    stats, histograms = build_feature_tables(events, customers_frame(("c", "UTC", None)))
    row = at(histograms, "c", "2025-02-04")
    assert row["hist_event_count"] == 2
    week = row["hist_hour_of_week"]
    assert set(np.flatnonzero(week)) == {10, 13}  # Monday 10h and 13h
    assert week[13] / week[10] == pytest.approx(0.5 ** (-3 / 24 / 60))  # 3 h newer, 60-day half-life
    assert at(stats, "c", "2025-02-04")["days_since_last_engagement"] == pytest.approx(11 / 24)
    assert at(stats, "c", "2025-02-04")["engagement_count_decayed"] == pytest.approx(
        decayed([14 / 24, 11 / 24]), rel=1e-6
    )


def test_local_hour_of_week_in_dst_and_half_hour_zones() -> None:
    times = np.array(
        [
            utc("2025-03-08 15:00").timestamp(),  # New York, EST: Saturday 10:00
            utc("2025-03-10 15:00").timestamp(),  # New York, EDT since 03-09: Monday 11:00
            utc("2025-03-10 18:15").timestamp(),  # Kolkata +05:30: Monday 23:45
            utc("2025-03-10 18:45").timestamp(),  # Kolkata: Tuesday 00:15
            utc("2025-03-09 23:30").timestamp(),  # UTC: Sunday 23:30
        ],
        dtype=np.int64,
    )
    zones = np.array(["America/New_York"] * 2 + ["Asia/Kolkata"] * 2 + ["UTC"], dtype=object)
    assert local_hour_of_week(times, zones).tolist() == [5 * 24 + 10, 11, 23, 24, 167]


def test_histograms_by_hand_in_local_time() -> None:
    events = events_frame(
        ("ny", "2025-03-08 15:00", "site_visit", None),  # Saturday 10:00 EST
        ("ny", "2025-03-10 15:00", "purchase", 1.0),  # Monday 11:00 EDT
        ("ny", "2025-03-15 12:00", "email_send", None),  # not an engagement; sets the last snapshot
        ("in", "2025-03-10 18:45", "email_open", None),  # Tuesday 00:15 IST
        ("in", "2025-03-11 18:15", "push_open", None),  # Tuesday 23:45 IST
    )
    customers = customers_frame(("ny", "America/New_York", None), ("in", "Asia/Kolkata", None))
    _, histograms = build_feature_tables(events, customers)
    assert snapshots_of(histograms, "ny") == ["2025-03-09", "2025-03-16"]
    assert snapshots_of(histograms, "in") == ["2025-03-16"]

    only = at(histograms, "ny", "2025-03-09")
    assert only["hist_hour_of_week"][130] == 1.0 and only["hist_event_count"] == 1
    both = at(histograms, "ny", "2025-03-16")
    newer = 1 / (1 + 0.5 ** (2 / 60))  # two days apart, 60-day half-life, normalised
    expected_week = np.zeros(168)
    expected_week[[130, 11]] = [1 - newer, newer]
    np.testing.assert_allclose(both["hist_hour_of_week"], expected_week, atol=1e-6)
    np.testing.assert_allclose(both["hist_hour_of_day"][[10, 11]], [1 - newer, newer], atol=1e-6)
    np.testing.assert_allclose(both["hist_day_of_week"][[0, 5]], [newer, 1 - newer], atol=1e-6)
    assert both["hist_event_count"] == 2

    kolkata = at(histograms, "in", "2025-03-16")
    assert set(np.flatnonzero(kolkata["hist_hour_of_week"])) == {24, 47}
    assert kolkata["hist_day_of_week"][1] == pytest.approx(1.0)


def test_row_count_rules() -> None:
    events = events_frame(
        ("active", "2025-01-01 10:00", "site_visit", None),
        ("active", "2025-01-15 10:00", "site_visit", None),  # nothing in the week before 01-09
        ("mailed", "2025-01-03 10:00", "email_send", None),  # never engages
        ("late", "2025-01-20 10:00", "purchase", 3.0),
        ("mailed", "2025-01-22 10:00", "email_send", None),
    )
    customers = customers_frame(
        ("active", "UTC", None),
        ("mailed", "UTC", None),
        ("late", "UTC", None),
        ("signed_up", "UTC", "2025-01-05 12:00"),  # no events: rows from its signup on
        ("future", "UTC", "2025-02-01"),  # signs up after the last snapshot: no rows
        ("never", "UTC", None),  # no signup, no events: never exists
    )
    stats, histograms = build_feature_tables(events, customers)
    assert snapshots_of(stats, "active") == ["2025-01-02", "2025-01-09", "2025-01-16", "2025-01-23"]
    assert snapshots_of(stats, "signed_up") == ["2025-01-09", "2025-01-16", "2025-01-23"]
    assert snapshots_of(stats, "late") == ["2025-01-23"]
    assert set(stats["customer_id"]) == {"active", "mailed", "late", "signed_up"}
    # Histogram rows only where a new engagement arrived since the previous snapshot.
    assert snapshots_of(histograms, "active") == ["2025-01-02", "2025-01-16"]
    assert set(histograms["customer_id"]) == {"active", "late"}
    mailed = at(stats, "mailed", "2025-01-09")
    assert np.isnan(mailed["days_since_last_engagement"]) and mailed["engagement_count_decayed"] == 0.0
    assert mailed["email_open_rate_90d"] == 0.0  # sends without opens
    assert at(stats, "signed_up", "2025-01-09")["tenure_days"] == pytest.approx(3.5)


def test_tenure_starts_at_the_earlier_of_signup_and_first_event() -> None:
    events = events_frame(
        ("x", "2025-01-01 12:00", "purchase", 1.0), ("y", "2025-01-01 12:00", "purchase", 1.0)
    )
    customers = customers_frame(("x", "UTC", "2025-01-01 18:00"), ("y", "UTC", "2024-12-31 12:00"))
    stats, _ = build_feature_tables(events, customers)
    assert at(stats, "x", "2025-01-02")["tenure_days"] == pytest.approx(0.5)
    assert at(stats, "y", "2025-01-02")["tenure_days"] == pytest.approx(1.5)


def test_purchases_only_data_set() -> None:
    events = events_frame(
        ("p", "2025-01-01 08:00", "purchase", 5.0),
        ("p", "2025-01-11 08:00", "purchase", 7.0),
        ("q", "2025-01-04 08:00", "purchase", 9.0),
    )
    customers = customers_frame(("p", "Europe/London", None), ("q", "Australia/Adelaide", None)).drop(
        columns="signup_timestamp"
    )
    stats, histograms = build_feature_tables(events, customers)
    assert snapshots_of(stats, "p") == ["2025-01-05", "2025-01-12"]
    row = at(stats, "p", "2025-01-12")
    assert row["purchase_count_total"] == 2 and row["gap_mean_days"] == pytest.approx(10.0)
    assert row["sends_30d"] == 0 and np.isnan(row["email_open_rate_90d"])
    assert np.isnan(row["decide_time_hours"])
    assert row["days_since_last_engagement"] == pytest.approx(16 / 24)
    assert at(histograms, "p", "2025-01-12")["hist_event_count"] == 2


def test_no_events_gives_empty_tables_with_the_columns() -> None:
    stats, histograms = build_feature_tables(events_frame(), customers_frame(("z", "UTC", "2025-01-01")))
    assert stats.empty and list(stats.columns) == [
        "customer_id",
        "event_timestamp",
        *STATS_FEATURES,
        "time_zone",
    ]
    assert histograms.empty and list(histograms.columns)[2:] == list(HISTOGRAM_FEATURES)


def test_invalid_input_is_refused() -> None:
    with pytest.raises(EventDataError, match="customer_id absent from customers"):
        build_feature_tables(RHYTHM_EVENTS, RHYTHM_CUSTOMERS.iloc[:1])


def test_a_snapshot_never_sees_events_at_or_after_it() -> None:
    """Events at or after a snapshot are deleted: that snapshot's rows must not change."""
    events, customers = random_history(seed=7)
    stats, histograms = build_feature_tables(events, customers, cadence_days=3)
    for snapshot in sorted(stats["event_timestamp"].unique())[2:-1:3]:
        cut_stats, cut_histograms = build_feature_tables(
            events[events["event_timestamp"] < snapshot], customers, cadence_days=3
        )
        for full, cut in ((stats, cut_stats), (histograms, cut_histograms)):
            expected = full[full["event_timestamp"] == snapshot].reset_index(drop=True)
            got = cut[cut["event_timestamp"] == snapshot].reset_index(drop=True)
            assert len(expected) > 0
            assert_tables_close(got, expected)


def test_matches_a_brute_force_oracle() -> None:
    events, customers = random_history(seed=3)
    stats, histograms = build_feature_tables(events, customers, cadence_days=3)
    expected_stats, expected_histograms = oracle(events, customers, stats["event_timestamp"].unique())
    key = ["customer_id", "event_timestamp"]
    assert_tables_close(stats.sort_values(key), expected_stats.sort_values(key))
    assert_tables_close(histograms.sort_values(key), expected_histograms.sort_values(key))


def test_cli_writes_the_tables_the_repo_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    RHYTHM_EVENTS.to_csv(tmp_path / "events.csv", index=False)
    RHYTHM_CUSTOMERS.to_csv(tmp_path / "customers.csv", index=False)
    argv = [
        "features",
        "--events",
        str(tmp_path / "events.csv"),
        "--customers",
        str(tmp_path / "customers.csv"),
    ]
    assert main([*argv, "--repo", str(copy_feature_repo(tmp_path / "repo"))]) == 0
    printed = capsys.readouterr().out
    data = validate(RHYTHM_EVENTS, RHYTHM_CUSTOMERS)
    engaged = len(features.engagements(data.events, data.customers))
    assert f"{7 + engaged} customer_stats rows, {5 + engaged - 2} customer_time_histograms rows" in printed
    expected_stats, expected_histograms = build_feature_tables(RHYTHM_EVENTS, RHYTHM_CUSTOMERS)
    for name, expected in (
        ("customer_stats", expected_stats),
        ("customer_time_histograms", expected_histograms),
    ):
        written = pq.read_table(tmp_path / "repo" / "data" / f"{name}.parquet").to_pandas()
        snapshots = written[written["event_timestamp"].dt.microsecond == 0].reset_index(drop=True)
        assert_tables_close(snapshots, expected)


def test_engagement_rows_are_exact_just_before_each_engagement() -> None:
    """The rows send-time training joins: one per engagement 1 µs before it (two customers'
    first ones have no histogram yet), equal to the features at that instant."""
    events, customers = random_history(seed=5)
    data = validate(events, customers)
    stats, histograms = (
        t.to_pandas()
        for t in features.build_feature_arrow(data.events, data.customers, TABLES, 3, engagement_rows=True)
    )
    engaged = features.engagements(data.events, data.customers)
    stats = stats[stats["event_timestamp"].dt.microsecond != 0].reset_index(drop=True)
    histograms = histograms[histograms["event_timestamp"].dt.microsecond != 0].reset_index(drop=True)
    key = ["customer_id", "event_timestamp"]
    assert sorted(map(tuple, stats[key].to_numpy())) == sorted(
        zip(engaged["customer_id"], engaged["engaged_at"] - pd.Timedelta(microseconds=1), strict=True)
    )
    assert len(histograms) == len(engaged) - engaged["customer_id"].nunique()
    for table, exact_of in ((stats, 0), (histograms, 1)):
        exact = features.features_at(
            events, customers, table["customer_id"], table["event_timestamp"], TABLES
        )
        expected = exact[exact_of].assign(event_timestamp=table["event_timestamp"])
        assert_tables_close(table, expected)


def test_cli_refuses_invalid_data_unless_asked_to_drop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = events_frame(*RHYTHM_EVENTS.itertuples(index=False), ("a", "2025-01-02", "teleport", None))
    bad.to_parquet(tmp_path / "events.parquet")
    RHYTHM_CUSTOMERS.to_parquet(tmp_path / "customers.parquet")
    argv = ["features", "--events", str(tmp_path / "events.parquet")]
    repo = copy_feature_repo(tmp_path / "repo")
    argv += ["--customers", str(tmp_path / "customers.parquet"), "--repo", str(repo)]
    assert main(argv) == 1
    assert "unknown event_type: 1 row (values: 'teleport' x1)" in capsys.readouterr().err
    assert not list((repo / "data").iterdir())
    assert main([*argv, "--drop-invalid"]) == 0
    assert "dropped 1 of 16 rows: unknown event_type: 1" in capsys.readouterr().err
    assert (repo / "data" / "customer_stats.parquet").exists()


def edited_repo(root: Path, old: str, new: str) -> Path:
    """A copy of the feature repo with one edit to its definitions, as an ML engineer makes it."""
    repo = copy_feature_repo(root)
    definitions = (repo / "definitions.py").read_text()
    assert old in definitions
    (repo / "definitions.py").write_text(definitions.replace(old, new))
    return repo


def test_the_columns_are_the_views_fields(tmp_path: Path) -> None:
    """The feature list lives only in feature_repo: a field removed there is not written."""
    repo = edited_repo(tmp_path, 'Field(name="purchase_count_7d", dtype=Float32),', "")
    stats, _ = features.build_feature_tables(RHYTHM_EVENTS, RHYTHM_CUSTOMERS, repo_tables(repo))
    assert "purchase_count_7d" not in stats.columns
    assert list(stats.columns) == [name for name in TABLES.stats.names if name != "purchase_count_7d"]


def test_a_field_without_a_computation_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = edited_repo(
        tmp_path / "repo",
        'Field(name="purchase_count_7d", dtype=Float32),',
        'Field(name="purchase_count_7d", dtype=Float32), Field(name="purchase_count_365d", dtype=Float32),',
    )
    RHYTHM_EVENTS.to_parquet(tmp_path / "events.parquet")
    RHYTHM_CUSTOMERS.to_parquet(tmp_path / "customers.parquet")
    argv = ["features", "--events", str(tmp_path / "events.parquet")]
    argv += ["--customers", str(tmp_path / "customers.parquet"), "--repo", str(repo)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "purchase_count_365d, which nudge features does not compute" in error
    assert len(error.strip().splitlines()) == 1


# --- helpers: random histories and the oracle ------------------------------------------------


def random_history(seed: int, customers: int = 12, days: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bursty random events at minute resolution, some exactly at midnight (snapshot times)."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(customers):
        n = int(rng.integers(0, 40))
        minutes = rng.integers(0, days * 1440, n)
        midnight = rng.random(n) < 0.1
        minutes[midnight] = minutes[midnight] // 1440 * 1440
        burst = rng.random(n) < 0.3  # minutes after another of the customer's events
        if n:
            minutes[burst] = rng.choice(minutes, burst.sum()) + rng.integers(0, 90, burst.sum())
        kinds = rng.choice(EVENT_TYPES, n, p=[0.2, 0.2, 0.1, 0.1, 0.1, 0.05, 0.08, 0.05, 0.07, 0.05])
        for minute, kind in zip(minutes, kinds, strict=True):
            amount = float(rng.integers(1, 50)) if kind == "purchase" else None
            rows.append(
                (f"c{index:02d}", utc("2025-03-01") + pd.Timedelta(minutes=int(minute)), kind, amount)
            )
    zones = ["America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"]
    people = pd.DataFrame(
        {
            "customer_id": [f"c{i:02d}" for i in range(customers)],
            "time_zone": [zones[i % len(zones)] for i in range(customers)],
            "signup_timestamp": [
                utc("2025-02-20") + pd.Timedelta(days=4 * i) if i % 3 else pd.NaT for i in range(customers)
            ],
        }
    )
    return pd.DataFrame(rows, columns=["customer_id", "event_timestamp", "event_type", "amount"]), people


def oracle(
    events: pd.DataFrame, customers: pd.DataFrame, snapshot_times: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The definitions, one customer and one snapshot at a time, in plain Python."""
    stats: list[dict[str, object]] = []
    histograms: list[dict[str, object]] = []
    snapshots = sorted(pd.Timestamp(s) for s in snapshot_times)
    for person in customers.to_dict("records"):
        mine = events[events["customer_id"] == person["customer_id"]].sort_values(
            "event_timestamp", kind="stable"
        )
        history = list(zip(mine["event_timestamp"], mine["event_type"], mine["amount"], strict=True))
        signup = [] if pd.isna(person["signup_timestamp"]) else [person["signup_timestamp"].timestamp()]
        first_seen = min([t.timestamp() for t, _, _ in history] + signup)
        key = {"customer_id": person["customer_id"]}
        engaged_before = 0
        for snapshot in snapshots:
            s = snapshot.timestamp()
            if s <= first_seen:
                continue
            seen = [(t.timestamp(), kind, amount) for t, kind, amount in history if t.timestamp() < s]
            row = oracle_stats(seen, s, first_seen)
            stats.append(key | {"event_timestamp": snapshot, **row, "time_zone": person["time_zone"]})
            engagements = collapse([t for t, kind, _ in seen if kind in ENGAGEMENT_TYPES])
            if len(engagements) > engaged_before:
                histograms.append(
                    key
                    | {"event_timestamp": snapshot}
                    | oracle_histograms(engagements, s, person["time_zone"])
                )
                engaged_before = len(engagements)
    return pd.DataFrame(stats), pd.DataFrame(histograms)


def collapse(times: list[float]) -> list[float]:
    kept: list[float] = []
    for index, t in enumerate(times):
        if index == 0 or t - times[index - 1] > 3600:
            kept.append(t)
    return kept


def oracle_stats(seen: list[tuple[float, str, float]], s: float, first_seen: float) -> dict[str, float]:
    def count(kinds: set[str], days: float) -> int:
        return sum(1 for t, kind, _ in seen if kind in kinds and t >= s - days * DAY)

    def rate(numerator: str, denominator: str) -> float:
        sends = count({denominator}, 90)
        return count({numerator}, 90) / sends if sends else math.nan

    purchases = [(t, amount) for t, kind, amount in seen if kind == "purchase"]
    trips = collapse([t for t, _ in purchases])
    gaps = [(b - a) / DAY for a, b in itertools.pairwise(trips)]
    visits = [t for t, kind, _ in seen if kind in ("site_visit", "cart_add")]
    waits = []
    for t, _ in purchases:
        earlier = [v for v in visits if v <= t]
        if earlier and t - max(earlier) <= 48 * 3600:
            waits.append((t - max(earlier)) / 3600)
    engagements = collapse([t for t, kind, _ in seen if kind in ENGAGEMENT_TYPES])
    since_last = (s - purchases[-1][0]) / DAY if purchases else math.nan
    gap_mean = float(np.mean(gaps)) if gaps else math.nan
    return {
        "tenure_days": (s - first_seen) / DAY,
        "purchase_count_7d": count({"purchase"}, 7),
        "purchase_count_30d": count({"purchase"}, 30),
        "purchase_count_90d": count({"purchase"}, 90),
        "purchase_count_total": len(purchases),
        "days_since_last_purchase": since_last,
        "amount_total_90d": sum(a for t, a in purchases if t >= s - 90 * DAY),
        "amount_avg": float(np.mean([a for _, a in purchases])) if purchases else math.nan,
        "gap_mean_days": gap_mean,
        "gap_std_days": float(np.std(gaps, ddof=1)) if len(gaps) >= 2 else math.nan,
        "cycle_ratio": since_last / gap_mean,
        "site_visit_count_7d": count({"site_visit"}, 7),
        "site_visit_count_30d": count({"site_visit"}, 30),
        "cart_add_count_30d": count({"cart_add"}, 30),
        "days_since_last_engagement": (s - engagements[-1]) / DAY if engagements else math.nan,
        "sends_30d": count({"email_send", "sms_send", "push_send"}, 30),
        "email_open_rate_90d": rate("email_open", "email_send"),
        "email_click_rate_90d": rate("email_click", "email_send"),
        "sms_click_rate_90d": rate("sms_click", "sms_send"),
        "push_open_rate_90d": rate("push_open", "push_send"),
        "decide_time_hours": float(np.median(waits)) if waits else math.nan,
        "engagement_count_decayed": decayed([(s - t) / DAY for t in engagements]),
        "email_sends_90d": count({"email_send"}, 90),
        "sms_sends_90d": count({"sms_send"}, 90),
        "push_sends_90d": count({"push_send"}, 90),
        **oracle_open_interest(seen, s),
    }


def oracle_open_interest(seen: list[tuple[float, str, float]], s: float) -> dict[str, float]:
    """The latest site_visit/cart_add within 90 days, unless a purchase is at or after it."""
    interest = [(t, kind) for t, kind, _ in seen if kind in ("site_visit", "cart_add")]
    newest = max((t for t, _ in interest), default=-math.inf)
    converted = any(t >= newest for t, kind, _ in seen if kind == "purchase")
    if newest < s - 90 * DAY or converted:
        return {"hours_since_open_interest": math.nan, "open_interest_is_cart": math.nan}
    return {
        "hours_since_open_interest": (s - newest) / 3600,
        "open_interest_is_cart": float(any(t == newest and kind == "cart_add" for t, kind in interest)),
    }


def oracle_histograms(engagements: list[float], s: float, zone: str) -> dict[str, object]:
    week = np.zeros(168)
    for t in engagements:
        local = pd.Timestamp(t, unit="s", tz="UTC").to_pydatetime().astimezone(zoneinfo.ZoneInfo(zone))
        week[local.weekday() * 24 + local.hour] += 0.5 ** ((s - t) / DAY / 60)
    week /= week.sum()
    return {
        "hist_hour_of_week": week,
        "hist_hour_of_day": week.reshape(7, 24).sum(axis=0),
        "hist_day_of_week": week.reshape(7, 24).sum(axis=1),
        "hist_event_count": len(engagements),
    }


def assert_tables_close(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same rows in the same order; floats to float32 precision, nulls where nulls, arrays too."""
    assert len(got) == len(expected)
    assert list(got.columns) == list(expected.columns)
    for column in expected.columns:
        left, right = got[column].tolist(), expected[column].tolist()
        if isinstance(right[0] if right else None, np.ndarray):
            for a, b in zip(left, right, strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=column)
        elif column in ("customer_id", "time_zone", "event_timestamp"):
            assert left == right, column
        else:
            np.testing.assert_allclose(
                np.asarray(left, float), np.asarray(right, float), rtol=1e-5, atol=1e-5, err_msg=column
            )
